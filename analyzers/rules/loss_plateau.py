"""Rule `loss_plateau`: The loss has stopped falling while still far from good.

The check's docstring says what is measured, why it matters and what to do; the dashboard
and docs/rules.md show it.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from analyzers.facts import (
    configured_lr,
    num_classes,
)
from analyzers.findings import Finding, Skip
from analyzers.rules.common import (
    cite,
    finding,
    fmt,
    fmt_factor,
    fmt_pct,
    fmt_step,
)
from analyzers.rules.curves import (
    PLATEAU_WINDOW,
    chance_loss,
    loss_curve,
    lr_changed_between,
    lr_series,
    require_positive,
    require_shuffled,
)
from analyzers.rules.lr_too_low import LR_LOW_SOURCE
from analyzers.rules.robust import (
    Curve,
    chunk_medians,
    finite_points,
    robust_sigma,
    tail_start,
)
from analyzers.rules.updates import (
    UPDATE_RATIO_LOW,
    UPDATE_RATIO_TARGET,
    suggested_lr,
    update_ratios,
    updates_blocked,
)
from analyzers.run import Run
from logformat import tags as T

RULE_ID = "loss_plateau"
PLATEAU_SOURCE = cite(
    ("000", 43, "将LR除以2或5后继续跑"),
    ("001", 185, "loss不降了lr就除10"),
    ("001", 50, "如果cost没有下降,就对学习率减半"),
)
PLATEAU_SMALL_UPDATES = 0.5  # a high plateau with updates below half the healthy ratio: advise raising the lr
PLATEAU_RAISE_CAP = 10.0  # ...by at most 10x
PLATEAU_MIN_POINTS = 200  # training-loss points before a run can be called stalled
PLATEAU_MAX_DROP = 0.02  # "stopped falling": the smoothed loss fell < 2% across the window...
PLATEAU_RATE_SHARE = 0.25  # ...and falls < 25% as fast as on average (a slow straight line is no plateau)
PLATEAU_MAX_RISE = 0.05  # a loss rising > 5% across the window is not flat either (see lr_too_high)
PLATEAU_HIGH = 0.8  # "far from good": still above 80% of its start (or of ln C for a C-class cross-entropy)
LR_CONSTANT = 0.05  # the lr counts as constant when it moved < 5% across the window
VAL_STILL_IMPROVING = 0.01  # a late plateau is not reported while val loss still improves by > 1%


def check(run: Run) -> Iterable[Finding]:
    """The loss has stopped falling while still far from good.

    Why it matters: a run stuck early at a high loss is not learning (most often the
    learning rate is too high and it bounces in a poor region); a run that stalls
    later at a constant learning rate is usually waiting for a decay, after which the
    loss drops again.
    Measured on the last 30% of the run, once there are enough points to resolve a 2%
    change through the step-to-step noise: the smoothed loss fell < 2% and falls < 25%
    as fast as its average. Still above 80% of its start (or of ln C for a C-class
    cross-entropy) is a warning, unless the updates are tiny or blocked (then
    lr_too_low, dead_relu or vanishing_gradients has the cause); a later plateau at a
    constant lr, with validation no longer improving, is info.
    What to do: divide the learning rate by 2-10 when the (validation) loss stalls, or
    use a schedule (StepLR, ReduceLROnPlateau, cosine).
    """
    loss = loss_curve(run, PLATEAU_MIN_POINTS)
    require_positive(loss)
    require_shuffled(run)
    curve = loss.curve
    begin = tail_start(len(curve), PLATEAU_WINDOW, 6)
    window = curve.values[begin:]
    thirds = chunk_medians(window, 3)
    a, end = float(thirds[0]), float(thirds[2])
    if a <= 0:
        return []  # the loss sits at 0: converged, nothing left to fall
    window_drop = (a - end) / a
    if window_drop >= PLATEAU_MAX_DROP:
        return []  # still falling
    # Can this much data tell a 2% change from noise? Twice the standard error of a third's median.
    points = loss.values[np.searchsorted(loss.steps, curve.steps[begin]) :]
    sigma = robust_sigma(points)
    per_third = points.shape[0] // 3
    resolution = 2 * 1.2533 * sigma / math.sqrt(max(per_third, 1)) / a
    if resolution > PLATEAU_MAX_DROP:
        needed = int(loss.values.shape[0] * (resolution / PLATEAU_MAX_DROP) ** 2)
        raise Skip(
            f"not enough data yet: {loss.values.shape[0]:,} of "
            f"about {needed:,} {T.TRAIN_LOSS} points needed to "
            f"tell a {fmt_pct(PLATEAU_MAX_DROP)} change from this much step-to-step noise"
        )
    total_drop = (loss.start - end) / loss.start
    window_span = max(int(curve.steps[-1] - curve.steps[begin]), 1)
    total_span = max(int(curve.steps[-1] - curve.steps[0]), 1)
    recent_rate = window_drop * a / window_span
    average_rate = (loss.start - end) / total_span
    stalled = -PLATEAU_MAX_RISE < window_drop and (
        total_drop < PLATEAU_MAX_DROP or recent_rate < PLATEAU_RATE_SHARE * average_rate
    )
    if not stalled:
        return []
    chance = chance_loss(run, loss.start)
    high = end >= PLATEAU_HIGH * loss.start or (chance is not None and end >= PLATEAU_HIGH * chance)
    onset = _plateau_onset(curve, end, window)
    evidence = {
        "plateau_level": end,
        "start": loss.start,
        "window_drop": window_drop,
        "total_drop": total_drop,
        "since_step": onset,
        "chance_loss": chance,
    }
    lr = configured_lr(run)
    steps_flat = fmt_step(curve.steps[-1] - onset)
    ratios = update_ratios(run)
    if high and (
        updates_blocked(run) is not None or (ratios is not None and ratios.model < UPDATE_RATIO_LOW)
    ):
        # The steps are tiny: not a too-high lr bouncing in place but a too-low lr, dead units or
        # vanishing gradients, which lr_too_low / dead_relu / vanishing_gradients report with their cause.
        return []
    if high:
        level = f"{fmt_pct(end / loss.start)} of where it started"
        if chance is not None:
            level += f", {fmt_pct(end / chance)} of the chance level ln {num_classes(run)} = {fmt(chance)}"
        message = (
            f"The train loss has stayed at about {fmt(end)} for the last {steps_flat} steps (it changed "
            f"{fmt_pct(-window_drop)} across the last "
            f"{fmt_pct(PLATEAU_WINDOW)} of the run) and is still at {level}"
        )
        source = PLATEAU_SOURCE
        if ratios is not None and ratios.model < PLATEAU_SMALL_UPDATES * UPDATE_RATIO_TARGET:
            # The measured steps are small: a flat region crept across, not a too-high lr bouncing.
            source = f"{LR_LOW_SOURCE}; {PLATEAU_SOURCE}"
            evidence["update_ratio"] = ratios.model
            message += f"; its updates are small (median update/weight ratio {fmt(ratios.model)})"
            guess, how = suggested_lr(lr, ratios.model, 1.0)
            guess = min(guess, PLATEAU_RAISE_CAP * lr) if guess is not None and lr else guess
            evidence["suggested_lr"] = guess
            advice = (
                "Raise the learning rate, or add momentum (0.9): the updates are "
                f"{fmt_factor(ratios.model / UPDATE_RATIO_TARGET)} the healthy ~{fmt(UPDATE_RATIO_TARGET)}, so the "
                "run is creeping across a flat region rather than overshooting"
                + (f"; try {fmt(guess)} ({how})." if guess is not None and how else "."),
                "If the loss then jumps around instead of falling, go the other way: divide the learning "
                "rate by 2-10.",
                "If neither helps, check that the model can learn at all: overfit a single batch of 10-20 "
                "examples first.",
            )
        else:
            advice = (
                (
                    f"Divide the learning rate by 2-10 (now {fmt(lr)}; try {fmt(lr / 5)})."
                    if lr
                    else "Divide the learning rate by 2-10."
                ),
                "If a lower learning rate does not help, check that the model can learn at all: overfit a "
                "single batch of 10-20 examples first.",
            )
        return [
            finding(
                RULE_ID,
                "warning",
                "Loss stuck high: training has stopped making progress",
                message + ".",
                advice,
                source,
                step=onset,
                evidence=evidence,
            )
        ]
    increased, decreased = lr_changed_between(run, int(curve.steps[begin]), int(curve.steps[-1]), LR_CONSTANT)
    if lr_series(run) is None or increased or decreased or _val_still_improving(run, int(curve.steps[begin])):
        return []
    return [
        finding(
            RULE_ID,
            "info",
            "Loss has flattened at a constant learning rate: time for a decay",
            f"The train loss has flattened at about {fmt(end)} for the last {steps_flat} steps "
            f"(it changed {fmt_pct(-window_drop)} across the last {fmt_pct(PLATEAU_WINDOW)} of the run, "
            f"after falling {fmt_pct(total_drop)} overall), with the learning rate constant at {fmt(lr)}.",
            (
                f"Decay the learning rate: divide it by 2-10 now (to about {fmt(lr / 5)}); the loss often "
                "drops right after a decay.",
                "Or use a schedule: ReduceLROnPlateau on the validation loss, StepLR or cosine.",
            ),
            PLATEAU_SOURCE,
            step=onset,
            evidence=evidence,
        )
    ]


def _plateau_onset(curve: Curve, level: float, window: np.ndarray) -> int:
    """First step after which the smoothed loss stays near the plateau level (5%, or 3 sigma of jitter)."""
    tolerance = max(0.05 * abs(level), 3 * robust_sigma(window))
    outside = np.abs(curve.values - level) > tolerance
    idx = np.flatnonzero(outside)
    if idx.shape[0] == 0:
        return int(curve.steps[0])
    return int(curve.steps[min(idx[-1] + 1, len(curve) - 1)])


def _val_still_improving(run: Run, since: int) -> bool:
    val = run.scalar(T.VAL_LOSS)
    if val is None:
        return False
    steps, values = finite_points(val)
    before, after = values[steps < since], values[steps >= since]
    if before.shape[0] == 0 or after.shape[0] == 0:
        return False
    return bool(after.min() < before.min() * (1 - VAL_STILL_IMPROVING))
