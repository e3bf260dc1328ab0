"""Rule `lr_too_low`: The learning rate is too low: the loss creeps down slowly and almost linearly.

The check's docstring says what is measured, why it matters and what to do; the dashboard
and docs/rules.md show it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from trainscope.analyzers.facts import (
    lr_to_adjust,
)
from trainscope.analyzers.findings import Finding, Skip
from trainscope.analyzers.rules.common import (
    cite,
    finding,
    fmt,
    fmt_pct,
    fmt_step,
    require_points,
    sentence,
)
from trainscope.analyzers.rules.curves import (
    TREND_BINS,
    loss_curve,
    lr_series,
    require_positive,
    require_shuffled,
    trend_bin_size,
)
from trainscope.analyzers.rules.robust import (
    binned,
    tail_start,
)
from trainscope.analyzers.rules.updates import (
    UPDATE_RATIO_LOW,
    UPDATE_RATIO_TARGET,
    suggested_lr,
    update_ratios,
    updates_blocked,
)
from trainscope.analyzers.run import Run
from trainscope.logformat import tags as T

RULE_ID = "lr_too_low"
NAME = "a learning rate too low"  # what the finding is called where it is listed under another
LR_LOW_SOURCE = cite(
    (
        "000",
        68,
        "如果loss曲线表现出线性(下降缓慢)表明学习率太低",
        "a loss curve that looks linear, falling slowly, means the learning rate is too low",
    )
)
LR_LOW_MIN_POINTS = 100  # training-loss points before a verdict on a run still being written...
LR_LOW_SHAPE_MIN_POINTS = 1000  # ...and before judging its shape (early on, every decay looks linear)
LR_LOW_ENDED_POINTS = 20  # a run that has ended: its shape (an elbow or a straight line) needs 20 points
LR_PEAK_SHARE = 0.5  # update ratios count only where the lr is >= 50% of its peak (a decayed tail is fine)
SLOW_TOTAL_DROP = 0.5  # "slow": the loss has fallen less than 50% from its start
LINEAR_MAX_CURVATURE = 1.5  # "no elbow": the first half fell less than 1.5x what the second half fell
STILL_FALLING = 0.03  # ...and the second half still fell >= 3% of the start (not a plateau)
RATIO_CONTRADICTS = 1e-3  # a shape-only verdict is dropped when update ratios are healthy (>= 1e-3)
WARMUP_TAIL = 0.1  # an lr peak within the last 10% of the run means warm-up is still going
LR_LOW_RECOVERING = (
    1.5  # the loss after the warm-up starting 1.5x above its best before: recovering, not slow
)


def check(run: Run) -> Iterable[Finding]:
    """The learning rate is too low: the loss creeps down almost linearly and slowly.

    Why it matters: with tiny steps a run that could converge in minutes takes hours;
    the loss curve has no "elbow", it is a slow straight line.
    Measured after any warm-up: over 1,000+ points (20 once the run has ended) the loss
    has fallen less than 50%, its first half fell less than 1.5x what its second half
    fell, and it is still falling (unless update ratios are healthy, >= 1e-3); or the
    update/weight ratio of every layer is below 1e-4 (at >= 50% of the peak lr) while
    the loss has fallen less than 50%. Not judged while units are dead or gradients are
    zero (then no lr moves the weights).
    What to do: raise the learning rate 3-10x (first guess from the update ratio: lr x
    1e-3 / ratio, capped at 10x), or run a learning-rate range test.
    """
    loss = loss_curve(run, LR_LOW_MIN_POINTS)
    min_points = LR_LOW_MIN_POINTS if loss.live else LR_LOW_ENDED_POINTS
    require_positive(loss)
    require_shuffled(run)
    blocked = updates_blocked(run)
    if blocked is not None:
        raise Skip(f"{blocked}: the weights cannot move whatever the learning rate")
    steps, values = loss.steps, loss.values
    lr = lr_series(run)
    if lr is not None and lr[1].max() > lr[1][0] * 1.01:
        peak_step = int(lr[0][int(np.argmax(lr[1]))])
        if peak_step >= steps[tail_start(steps.shape[0], WARMUP_TAIL, 1)]:
            raise Skip("the learning rate is still warming up; the loss curve's shape cannot be judged yet")
        keep = steps >= peak_step
        steps, values = steps[keep], values[keep]
        require_points(int(values.shape[0]), min_points, f"{T.TRAIN_LOSS} points after the warm-up")
    curve = binned(steps, values, TREND_BINS, trend_bin_size(values.shape[0]))
    tenth = max(1, len(curve) // 10)
    a = float(np.median(curve.values[:tenth]))
    mid = len(curve) // 2
    m = float(np.median(curve.values[max(0, mid - tenth // 2) : mid - tenth // 2 + tenth]))
    b = float(np.median(curve.values[-tenth:]))
    start = loss.start if lr is None or steps[0] == loss.steps[0] else a
    before = loss.curve.values[loss.curve.steps < steps[0]]
    # After a warm-up that pushed the loss up (lr_too_high's case), the loss comes back down along a
    # line: that is a recovery, not a learning rate too low.
    recovering = before.shape[0] > 0 and a > LR_LOW_RECOVERING * float(before.min())
    total_drop = (start - b) / start
    first_half, second_half = a - m, m - b
    ratios = update_ratios(run, min_lr_share=LR_PEAK_SHARE)
    evidence = {
        "start": start,
        "end": b,
        "total_drop": total_drop,
        "first_half_drop": first_half,
        "second_half_drop": second_half,
        "update_ratio": ratios.model if ratios else None,
    }
    slow = total_drop < SLOW_TOTAL_DROP
    # Any decay looks straight at its very start: a live run must show a long stretch; a finished run
    # is judged on what it did.
    long_enough = values.shape[0] >= (LR_LOW_SHAPE_MIN_POINTS if loss.live else LR_LOW_ENDED_POINTS)
    linear = (
        long_enough
        and not recovering
        and second_half >= STILL_FALLING * start
        and 0 < first_half < LINEAR_MAX_CURVATURE * second_half
    )
    ratio_low = ratios is not None and ratios.largest < UPDATE_RATIO_LOW
    ratio_ok = ratios is not None and ratios.model >= RATIO_CONTRADICTS
    reasons: list[str] = []
    if slow and linear and not ratio_ok:
        reasons.append(
            f"the train loss fell only {fmt_pct(total_drop)} ({fmt(start)} -> {fmt(b)}) over "
            f"{fmt_step(steps[-1] - steps[0])} steps, almost linearly: the second half of that span fell "
            f"{fmt(second_half)}, about as much as the first ({fmt(first_half)}), with no elbow"
        )
    if slow and ratio_low:
        reasons.append(
            f"each step changes the weights by only {fmt(ratios.model)} of their norm (median over layers; "
            f"{fmt(ratios.largest)} in the fastest-moving layer), "
            f"against a healthy ~{fmt(UPDATE_RATIO_TARGET)}"
        )
    if not reasons:
        return []
    current, lr_name = lr_to_adjust(run)
    guess, how = suggested_lr(current, ratios.largest if ratio_low else None, 1 / 3)
    if guess is not None and current:
        guess = min(guess, current * 10)  # a first guess, never more than the 10x the documents advise
    evidence.update(lr=current, suggested_lr=guess)
    lr_advice = f"Raise the {lr_name} 3-10x"
    if guess is not None:
        lr_advice += f": from {fmt(current)} to about {fmt(guess)}" + (
            f" ({how}, capped at 10x)" if how else ""
        )
    return [
        finding(
            RULE_ID,
            "warning",
            "Learning rate looks too low: the loss falls slowly and linearly",
            sentence("; ".join(reasons)) + ".",
            (
                lr_advice + ".",
                "Or run a learning-rate range test: raise the lr exponentially over ~100 steps and pick "
                "about 1/10 of the lr where the loss falls fastest.",
            ),
            LR_LOW_SOURCE,
            step=int(steps[0]),
            evidence=evidence,
        )
    ]
