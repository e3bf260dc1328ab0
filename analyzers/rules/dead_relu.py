"""Rule `dead_relu`: A large share of a layer's ReLU units output zero for every example.

The check's docstring says what is measured, why it matters and what to do; the dashboard
and docs/rules.md show it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from trainscope.analyzers.facts import (
    batch_size,
    functional_relu_consumers,
    ordered_layers,
)
from trainscope.analyzers.findings import Finding, Severity, Skip
from trainscope.analyzers.rules.common import (
    cite,
    finding,
    fmt_pct,
    fmt_step,
    quote,
    require_layers,
    require_points,
)
from trainscope.analyzers.rules.curves import noise_sigma, start_level, trend_bin_size
from trainscope.analyzers.rules.robust import (
    binned,
    finite_points,
    max_finite_samples,
    sustained_above,
)
from trainscope.analyzers.run import Run
from trainscope.logformat import tags as T

RULE_ID = "dead_relu"
NAME = "dead ReLUs"  # what the finding is called where it is listed under another
DEAD_SOURCE = cite(
    ("000", 56, "就是它可能会永远“死”掉", "that is, it may 'die' for good"),
    (
        "000",
        59,
        "为了解决ReLU 在负区间的导数为零的问题,人们发明了 Leaky ReLU, "
        "Parametric ReLU, Randomized ReLU 等变体",
        "to fix ReLU's zero derivative for negative inputs, variants such as Leaky ReLU, Parametric ReLU and Randomized ReLU were invented",
    ),
)
DEAD_WARNING = 0.5  # more than 50% of a layer's units output zero for the whole sampled batch...
DEAD_CRITICAL = 0.9  # critical: more than 90%, the layer (almost) fully dead
DEAD_SUSTAIN = 3  # ...in each of the last 3 samples at least (not one odd batch)
DEAD_MIN_BATCH = 16  # below 16 examples a batch cannot tell a dead unit from a merely quiet one
DEAD_EARLY_SAMPLES = 3  # a layer silent in its first 3 samples already was born that way (not killed)...
DEAD_ROSE = 0.2  # ...a share up >= 20 points since then, and never back, was killed by training
DEAD_STALLED = 0.9  # the smoothed train loss still >= 90% of its start...
DEAD_STALLED_SHARE = 0.5  # ...for the first half of the run or more: training stalled with the dead units


def check(run: Run) -> Iterable[Finding]:
    """A large share of a layer's ReLU units output zero for every example: dead, when it costs something.

    Why it matters: a ReLU unit whose input is negative for every example gets zero
    gradient and never recovers; a layer gone (almost) fully dead passes nothing on, and
    units killed by a large step take capacity the model had. But a healthy,
    over-parameterized layer can have more than half its units silent on a batch (a
    trained MNIST CNN's first dense layer, a VAE's encoder): silence alone is not a fault.
    Measured on ``act/dead_fraction/<layer>`` (units zero for the whole sampled batch), in
    each of the last 3 samples: above 90% is critical (the layer is all but gone); above
    50% is a warning when it costs something: a median above 90% since it began, the
    share rose 20+ points after the first samples and never came back (training killed
    them), or the smoothed train loss stayed at 90%+ of its start for the first half of
    the run or more (training stalled); otherwise info, with the numbers. Not judged for
    batches under 16 examples (too few to tell dead from quiet).
    What to do: lower the learning rate (one big step can push a unit's bias far
    negative); He initialization; LeakyReLU/PReLU/RReLU; a small positive bias init.
    """
    layers = require_layers(run, T.DEAD_FRACTION_PREFIX, "share of dead ReLU units per layer")
    batch = batch_size(run)
    if batch is not None and batch < DEAD_MIN_BATCH:
        raise Skip(
            f"batch size {batch} is too small to tell dead units from quiet ones (needs >= {DEAD_MIN_BATCH})"
        )
    require_points(max_finite_samples(layers), DEAD_SUSTAIN, "activation samples")
    found = []
    at_input_of = functional_relu_consumers(run)
    fall, stalled = _loss_fall(run), _stalled_share(run) >= DEAD_STALLED_SHARE
    for name in ordered_layers(run, layers):
        streak = sustained_above(layers[name], DEAD_WARNING, DEAD_SUSTAIN)
        if streak is None:
            continue
        onset, level, count = streak
        critical = sustained_above(layers[name], DEAD_CRITICAL, DEAD_SUSTAIN)
        _, values = finite_points(layers[name])
        early = float(np.median(values[:DEAD_EARLY_SAMPLES]))
        killed = level - early >= DEAD_ROSE
        mostly_gone = level >= DEAD_CRITICAL  # (almost) the whole layer, most of the time
        severity: Severity = (
            "critical"
            if critical is not None
            else ("warning" if killed or stalled or mostly_gone else "info")
        )
        now = float(values[-1])
        units = (
            f"the ReLU units feeding {quote(name)} (F.relu, measured at {quote(name)}'s input)"
            if name in at_input_of
            else f"{quote(name)}'s units"
        )
        message = (
            f"{fmt_pct(level).capitalize()} of {units} (median over the last {count} samples; "
            f"{fmt_pct(now)} in the latest) output zero for every example of the batch since step "
            f"{fmt_step(onset)}"
        )
        if severity == "critical" or mostly_gone:
            message += f", above the {fmt_pct(DEAD_CRITICAL)} threshold: the layer passes almost nothing on"
        elif killed:
            message += (
                f"; in the first samples it was {fmt_pct(early)}: training killed them and they stayed dead"
            )
        elif stalled:
            message += (
                f"; the train loss stayed near its start for {fmt_pct(_stalled_share(run))} of the run: the "
                "silent units cost the model its learning"
            )
        else:
            message += (
                "; the run learns all the same"
                + (f" (the train loss fell {fmt_pct(fall)})" if fall is not None else "")
                + ", so this is an over-parameterized layer "
                "with units it does not need, not a fault"
            )
        found.append(
            finding(
                RULE_ID,
                severity,
                f"Dead ReLUs: {fmt_pct(level)} of {units} never fire"
                if severity != "info"
                else f"Silent ReLUs: {fmt_pct(level)} of {units} never fire, at no visible cost",
                message + ".",
                (
                    "Lower the learning rate: one large step can push a unit's bias so far negative that it "
                    "never fires again.",
                    "Initialize with He (torch.nn.init.kaiming_normal_(w, nonlinearity='relu')) and a small "
                    "positive bias (e.g. 0.01).",
                    "Use LeakyReLU(0.01), PReLU or RReLU, which keep a gradient for negative inputs.",
                )
                if severity != "info"
                else ("Nothing to fix while the run learns; a narrower layer would do the same work.",),
                DEAD_SOURCE,
                step=onset,
                layer=name,
                evidence={
                    "dead_fraction": level,
                    "latest": now,
                    "samples": count,
                    "since_step": onset,
                    "early_dead_fraction": early,
                    "training_stalled": stalled,
                },
            )
        )
    return found


def _stalled_share(run: Run) -> float:
    """The share of the run (from its start) before the smoothed train loss first fell below
    `DEAD_STALLED` of its start: 1.0 when it never did, 0.0 without a loss."""
    series = run.scalar(T.TRAIN_LOSS)
    if series is None:
        return 0.0
    steps, values = finite_points(series)
    if values.shape[0] < 4:
        return 0.0
    start = start_level(values, noise_sigma(values))
    curve = binned(steps, values, 200, trend_bin_size(values.shape[0]))
    below = np.flatnonzero(curve.values < DEAD_STALLED * start)
    if below.shape[0] == 0:
        return 1.0
    span = max(int(steps[-1] - steps[0]), 1)
    return float(curve.steps[below[0]] - steps[0]) / span


def _loss_fall(run: Run) -> float | None:
    """How far the train loss has fallen from its start (0.87 = 87%), or None without a loss."""
    series = run.scalar(T.TRAIN_LOSS)
    if series is None:
        return None
    _, values = finite_points(series)
    if values.shape[0] < 4:
        return None
    start = start_level(values, noise_sigma(values))
    end = float(np.median(values[-max(3, values.shape[0] // 10) :]))
    return 1 - end / start if start > 0 else None
