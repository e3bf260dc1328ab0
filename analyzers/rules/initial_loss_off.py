"""Rule `initial_loss_off`: the first losses of a C-class cross-entropy are far above chance, ln C.

The check's docstring says what is measured, why it matters and what to do; the dashboard
and docs/rules.md show it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from trainscope.analyzers.facts import num_classes
from trainscope.analyzers.findings import Finding, Skip
from trainscope.analyzers.rules.common import finding, fmt, fmt_factor, fmt_step, require_scalar
from trainscope.analyzers.rules.robust import finite_points
from trainscope.analyzers.run import Run
from trainscope.logformat import tags as T

RULE_ID = "initial_loss_off"
NAME = "an initial loss far from chance"  # what the finding is called where it is listed under another
INITIAL_SOURCE = (
    "CS231n, Neural Networks Part 3 (Babysitting the learning process): look for the correct loss at "
    "chance performance, ln C for a softmax over C classes; TheDeepChecker flags |L0 - ln C| >= ln C"
)
FIRST_STEPS = 10  # the initial loss is the median of the points logged within the first 10 steps...
MIN_POINTS = 3  # ...3 of them at least (a log that starts later has no initial loss to judge)
FAR = 1.0  # far: the initial loss more than ln C above ln C (TheDeepChecker's |L0 - ln C| >= ln C)
DIVERGED = 2.0  # the opening ends at the first loss above 2x the first one: the updates took over


def logs_initial_loss(steps: np.ndarray) -> bool:
    """Whether a log's first point can be the untrained model's loss: it was logged within the
    first `FIRST_STEPS` optimizer steps.

    Why: the steepest fall of training comes in its first steps, so a log that starts
    later (Lightning's first point at step 49, a Trainer's at its logging_steps) opens
    after it, and its first value says nothing of where the model started. loss_plateau
    asks the same before it calls a loss that fell little "never learned".
    """
    return steps.shape[0] > 0 and int(steps[0]) <= FIRST_STEPS


def opening_losses(values: np.ndarray) -> np.ndarray:
    """The first losses up to (not including) the first one above `DIVERGED` x the first.

    Why: the untrained model's loss is what the run starts with, before any update counts.
    A run whose learning rate is far too high can start right at chance and blow up within
    a few steps (2.3, 2.0, 2.3, 5.8, 8.4, 12.6, 329 ...); a median over the first steps then
    measures the blow-up, not the start, and blames the initialization for lr_too_high's
    fault. A loss that more than doubles from its first value is no longer the starting
    loss; a bad start shows in the points before that (its loss starts high and falls).
    """
    above = np.flatnonzero(values[1:] > DIVERGED * values[0])
    return values[: above[0] + 1] if above.shape[0] else values


def check(run: Run) -> Iterable[Finding]:
    """The first losses of a C-class cross-entropy are more than twice the chance level ln C.

    Why it matters: an untrained classifier should be unsure, so its cross-entropy starts
    near ln C (2.30 for 10 classes). Far above it, the network starts confidently wrong:
    the output layer is initialized far too large, a loss is computed on the wrong outputs,
    or the labels do not match the outputs. Training spends its first steps undoing the
    start, or never recovers.
    Measured on the points logged within the first 10 steps (3 at least; a log that starts
    later has no initial loss to judge), up to the first one above 2x the first (a loss
    that blows up within a few steps started fine: the updates, not the start, raised it),
    their median against ln C for the run's number of classes (run.json, from the logits
    the collector saw, or a num_classes hyperparameter): more than 2 ln C is a warning.
    What to do: initialize the output layer small (``nn.init.zeros_`` for its bias and
    ``normal_(std=0.01)`` for its weights, or PyTorch's default), feed the loss raw logits
    (no softmax/sigmoid before ``cross_entropy``), and check that the labels index the
    outputs (0..C-1).
    """
    classes = num_classes(run)
    if classes is None:
        raise Skip("needs the number of classes (run.json num_classes or a num_classes hyperparameter)")
    series = require_scalar(run, T.TRAIN_LOSS, "the training loss")
    steps, values = finite_points(series)
    if steps.shape[0] == 0:
        raise Skip(f"{T.TRAIN_LOSS} has no finite value")
    first = values[steps < steps[0] + FIRST_STEPS]
    if not logs_initial_loss(steps) or first.shape[0] < MIN_POINTS:
        raise Skip(f"the log starts at step {fmt_step(int(steps[0]))}, after the initial loss")
    chance = math.log(classes)
    first = opening_losses(first)
    initial = float(np.median(first))
    if initial - chance <= FAR * chance:
        return []
    return [
        finding(
            RULE_ID,
            "warning",
            f"Initial loss {fmt(initial)}, {fmt_factor(initial / chance)} the chance level ln {classes}",
            f"The first {first.shape[0]} losses have a median of {fmt(initial)}, against ln {classes} = "
            f"{fmt(chance)} for an untrained {classes}-class classifier: the network starts confidently "
            "wrong.",
            (
                "Initialize the output layer small: its bias at 0 and its weights at a small std (0.01), or "
                "keep PyTorch's default.",
                "Feed cross_entropy the raw logits (no softmax or sigmoid before it), and check that the "
                f"labels index the outputs (0..{classes - 1}).",
            ),
            INITIAL_SOURCE,
            step=int(steps[0]),
            evidence={"initial_loss": initial, "chance_loss": chance, "num_classes": classes},
        )
    ]
