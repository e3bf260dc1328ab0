"""Rule `too_good_to_be_true`: training and validation loss fall to ~0 at once, where that is implausible.

The check's docstring says what is measured, why it matters and what to do; the dashboard
and docs/rules.md show it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from trainscope.analyzers.facts import input_kind, num_classes
from trainscope.analyzers.findings import Finding, Skip
from trainscope.analyzers.rules.common import finding, fmt, fmt_pct, fmt_step, missing_reason
from trainscope.analyzers.rules.curves import loss_curve, require_positive
from trainscope.analyzers.rules.robust import finite_points
from trainscope.analyzers.run import Run
from trainscope.logformat import runjson as R
from trainscope.logformat import tags as T

RULE_ID = "too_good_to_be_true"
NAME = "a loss too good to be true"  # what the finding is called where it is listed under another
LEAK_SOURCE = (
    "Kaufman, Rosset, Perlich, Stitelman: Leakage in Data Mining: Formulation, Detection, and "
    "Avoidance (ACM TKDD 6(4), 2012): a model that finds the target in its inputs scores far better "
    "than the task allows"
)
LIVE_POINTS = 50  # training-loss points before a verdict on a run still being written
TINY = 0.01  # "~0": below 1% of where the loss started (of ln C for a C-class cross-entropy)...
EARLY = 0.25  # ...reached within the first 25% of the run...
STAYS = 0.9  # ...and the loss stays there: 90%+ of the points after it below 2x that level
MANY_CLASSES = 20  # ~0 is implausible for a language model or 20+ classes; with fewer, or unknown, info


def check(run: Run) -> Iterable[Finding]:
    """Training and validation loss fall to ~0 within the first quarter of the run: too good to be true.

    Why it matters: a real task leaves some loss: language is not fully predictable,
    images are ambiguous. A loss that drops to ~0 within a few hundred steps on both the
    training and the validation set says the model found the answer in its inputs: a
    language model whose targets were not shifted (it learns to copy the current token),
    labels encoded in a feature, the same examples in both splits.
    Measured: the train loss below 1% of its start (or of ln C) within the first 25% of
    the run and staying there, and the validation loss below 1% of its first value or of
    ln C, the larger (a first evaluation after an epoch may already be low); a validation
    loss that stays up is memorizing, overfitting's case. A warning for a
    language model (token inputs) or a task of 20+ classes, where ~0 is implausible, even
    without a validation curve; info otherwise (a small task can be that easy), and without
    a validation curve a small task is not judged.
    What to do: check that the targets are not in the inputs: shift a language model's
    targets by one token (``y = ids[:, 1:]`` for ``x = ids[:, :-1]``), drop features that
    encode the label, and make sure no example is both in training and validation.
    """
    loss = loss_curve(run, LIVE_POINTS)
    require_positive(loss)
    classes = num_classes(run)
    scale = max(loss.start, math.log(classes)) if classes else loss.start
    tiny = TINY * scale
    below = np.flatnonzero(loss.curve.values < tiny)
    if below.shape[0] == 0:
        return []
    reached = int(loss.curve.steps[below[0]])
    first, last = int(loss.steps[0]), int(loss.steps[-1])
    if reached - first > EARLY * max(last - first, 1):
        return []
    after = loss.values[loss.steps >= reached]
    if float(np.mean(after < 2 * tiny)) < STAYS:
        return []
    val = run.scalar(T.VAL_LOSS)
    val_text = ""
    if val is not None:
        _, v = finite_points(val)
        if v.shape[0] and v[0] > 0:
            val_scale = max(float(v[0]), math.log(classes)) if classes else float(v[0])
            if float(np.median(v[-3:])) >= TINY * val_scale:
                return []  # validation stays well above: memorizing, not a leak (overfitting's case)
            val_text = f", and the validation loss fell to {fmt(float(np.median(v[-3:])))} too"
    tokens = input_kind(run) == R.INPUT_TOKENS
    implausible = tokens or (classes is not None and classes >= MANY_CLASSES)
    if val is None and not implausible:
        raise Skip(missing_reason(T.VAL_LOSS, "a validation curve, to tell a leak from an easy task"))
    level = float(np.median(after))
    what = "a language model" if tokens else (f"{classes} classes" if classes else "this task")
    return [
        finding(
            RULE_ID,
            "warning" if implausible else "info",
            f"Too good to be true: the loss is ~0 from step {fmt_step(reached)}",
            f"The train loss fell from {fmt(loss.start)} to below {fmt(tiny)} ({fmt_pct(TINY)} of "
            f"{'ln C' if classes and scale > loss.start else 'its start'}) by step {fmt_step(reached)}, "
            f"{fmt_pct((reached - first) / max(last - first, 1))} into the run, and has stayed around "
            f"{fmt(level)}{val_text}. "
            + (
                f"For {what} that is implausible unless the answer is in the inputs."
                if implausible
                else f"For {what} that can be an easy task, or the answer in the inputs."
            ),
            (
                "For a language model: shift the targets by one token (x = ids[:, :-1], y = ids[:, 1:]); a "
                "causal model given its own next token as input copies it.",
                "Look for features that encode the label, and for examples that are in both the training "
                "and the validation set.",
            ),
            LEAK_SOURCE,
            step=reached,
            evidence={"start": loss.start, "level": level, "reached_step": reached, "num_classes": classes},
        )
    ]
