"""Rule `lr_too_high`: the loss diverges, blows up, climbs or bounces without progress.

The check's docstring says what is measured, why it matters and what to do; the dashboard
and docs/rules.md show it.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from analyzers.facts import (
    configured_lr,
)
from analyzers.findings import Finding, Skip
from analyzers.rules.common import (
    cite,
    finding,
    fmt,
    fmt_change,
    fmt_factor,
    fmt_pct,
    fmt_step,
    quote,
    sentence,
)
from analyzers.rules.curves import (
    TREND_MIN_PER_BIN,
    LossCurve,
    chance_loss,
    loss_curve,
    lr_changed_between,
    require_shuffled,
)
from analyzers.rules.robust import (
    chunk_medians,
    finite_points,
    robust_sigma,
    tail_start,
)
from analyzers.rules.updates import (
    UPDATE_RATIO_HIGH,
    UPDATE_RATIO_TARGET,
    suggested_lr,
    update_ratios,
)
from analyzers.run import Run
from logformat import tags as T

RULE_ID = "lr_too_high"
LR_HIGH_SOURCE = cite(
    ("000", 67, "太高的学习率,loss曲线会很奇怪,很容易会出现参数爆炸现象"),
    ("000", 67, "高学习率,一开始loss会下降很快,但很容易跌入局部最小值"),
)
LR_HIGH_MIN_POINTS = 50  # training-loss points before any verdict on the loss curve
DIVERGE_FACTOR = 4.0  # smoothed loss above 4x its best: diverged (fastai lr_find's stopping rule)
DIVERGE_MIN_UNDONE = 0.25  # ...and the rise undid >= 25% of the progress (not a rise from ~0 to ~0)
END_ABOVE_START = 1.2  # a smoothed loss ending 20% above where it started has diverged too
DIVERGE_SUSTAIN_BINS = 3  # the last 3 smoothed points must all be diverged, not one bad stretch
BLOWUP_STEPS = 3  # a blow-up: 3 consecutive steps all above DIVERGE_FACTOR x the start
RISE_ONSET = 1.5  # the divergence "begins" where the smoothed loss first exceeds 1.5x its best after it
RISE_WINDOW = 0.25  # "loss rises while gradient norms grow" is judged on the last 25% of the run
RISE_FACTOR = 1.25  # loss up >= 25% across that window...
GRAD_GROWTH_FACTOR = 2.0  # ...while the gradient norm at least doubled, and the lr was not raised
WILD_LOG_SIGMA = 0.25  # smoothed loss jumping ~25% between bins (robust std of log differences)...
NO_PROGRESS = 0.9  # ...while staying above 90% of its start: "jumps wildly without progress"


def check(run: Run) -> Iterable[Finding]:
    """The learning rate is too high: the loss diverges, blows up, climbs, or jumps around without progress.

    Why it matters: steps overshoot the valley they should descend; the loss rises or
    explodes ("parameter explosion"), ReLUs die, or the loss bounces at a high level.
    Measured: the smoothed loss ends 4x above its best (undoing >= 25% of the
    progress) or 20% above its start, or blows up to 4x its start for 3+ steps in a
    row without coming back (critical); over the last 25% of the run the loss rose
    25% while the gradient norm doubled and the lr was not raised; the smoothed loss
    jumps ~25% between stretches while staying near its start; the median
    update/weight ratio over layers is above 0.1 (healthy: ~1e-3) (warning).
    What to do: divide the learning rate by 3-10 (first guess from the update ratio:
    lr x 1e-3 / ratio); add warm-up; clip gradients.
    """
    loss = loss_curve(run, LR_HIGH_MIN_POINTS)
    require_shuffled(run)
    reasons: list[str] = []
    evidence: dict = {"start": loss.start, "end": loss.end}
    diverged = False
    step: int | None = None
    values = loss.curve.values
    positive = loss.start > 0 and float(values.min()) >= 0

    if positive:
        best_i = int(np.argmin(values))
        best = float(values[best_i])
        tail = values[-DIVERGE_SUSTAIN_BINS:]
        undone = (tail.min() - best) / max(loss.start - best, 1e-12)
        above_best = bool((tail > DIVERGE_FACTOR * best).all()) and undone >= DIVERGE_MIN_UNDONE
        above_start = bool((tail > END_ABOVE_START * loss.start).all())
        evidence.update(best=best, best_step=int(loss.curve.steps[best_i]))
        if len(values) > DIVERGE_SUSTAIN_BINS and (above_best or above_start):
            diverged = True
            after = np.flatnonzero(values[best_i:] > RISE_ONSET * best)
            step = int(loss.curve.steps[best_i + after[0]]) if after.shape[0] else int(loss.curve.steps[-1])
            times_best = f"{fmt_factor(float(tail[-1]) / best)} its best, " if best > 0 else ""
            # The smoothed level the message cites; "end" is the robust level of the last raw steps.
            evidence.update(smoothed_end=float(tail[-1]))
            reasons.append(
                f"the smoothed train loss climbed from its best {fmt(best)} at step "
                f"{fmt_step(loss.curve.steps[best_i])} to {fmt(float(tail[-1]))} "
                f"({times_best}{fmt_factor(float(tail[-1]) / loss.start)} where it started)"
            )
        # A blow-up: BLOWUP_STEPS consecutive steps all above DIVERGE_FACTOR x the start (one odd batch
        # cannot make one).
        raw = loss.values
        floor = raw[: raw.shape[0] - BLOWUP_STEPS + 1].copy()
        for k in range(1, BLOWUP_STEPS):
            np.minimum(floor, raw[k : raw.shape[0] - BLOWUP_STEPS + 1 + k], out=floor)
        peak_i = int(np.argmax(floor))
        peak = float(floor[peak_i])
        if not diverged and peak >= DIVERGE_FACTOR * loss.start:
            chance = chance_loss(run, loss.start)
            recovered = loss.end < NO_PROGRESS * min(loss.start, chance or math.inf)
            diverged = not recovered
            step = int(loss.steps[np.flatnonzero(floor >= DIVERGE_FACTOR * loss.start)[0]])
            evidence.update(peak=peak, peak_step=step, recovered=recovered)
            went_bad = _nonfinite_after(run, int(loss.steps[-1]))
            if went_bad is not None:
                after = f" and then became NaN/Inf at step {fmt_step(went_bad)}"
            elif recovered:
                after = f" before coming back down to {fmt(loss.end)}"
            else:
                after = f" and never recovered: it is now {fmt(loss.end)}"
            reasons.append(
                f"the train loss blew up to {fmt(peak)} (for "
                f"{BLOWUP_STEPS}+ steps in a row) at step {fmt_step(step)} "
                f"({fmt_factor(peak / loss.start)} where it started, {fmt(loss.start)}){after}"
            )
        rise = _rise_with_grad_growth(run, loss)
        if rise is not None:
            step = rise["rise_window_from_step"] if step is None else step
            evidence.update(rise)
            reasons.append(
                f"over the last {fmt_pct(RISE_WINDOW)} of the run the "
                f"loss changed {fmt_change(1 + rise['loss_rise'])} "
                f"while the gradient norm grew {fmt_factor(rise['grad_growth'])}"
            )
        if not diverged and len(values) >= 8 and values[len(values) // 2 :].min() > 0:
            half = np.log(values[len(values) // 2 :])
            jumps = robust_sigma(np.diff(half)) / math.sqrt(2)
            if jumps >= WILD_LOG_SIGMA and loss.end >= NO_PROGRESS * loss.start:
                step = int(loss.curve.steps[len(values) // 2]) if step is None else step
                evidence.update(jump_sigma=jumps)
                reasons.append(
                    f"the smoothed loss jumps by about {fmt_pct(math.exp(jumps) - 1)} between neighbouring "
                    f"stretches and is still at {fmt_pct(loss.end / loss.start)} of where it started"
                )

    ratios = update_ratios(run)
    if ratios is not None:
        evidence.update(update_ratio=ratios.model, update_ratio_per_layer=ratios.per_layer)
    if ratios is not None and ratios.model > UPDATE_RATIO_HIGH:
        step = ratios.first_step if step is None else step
        worst = max(ratios.per_layer, key=ratios.per_layer.get)
        reasons.append(
            f"each step changes the weights by {fmt(ratios.model)} of their norm (median over layers; "
            f"{quote(worst)}: {fmt(ratios.per_layer[worst])}), against a healthy ~{fmt(UPDATE_RATIO_TARGET)}"
        )
    if not positive and ratios is None:
        raise Skip(f"{T.TRAIN_LOSS} reaches 0 or below and the run logs no update ratios")
    if not reasons:
        return []

    lr = configured_lr(run)
    guess, how = suggested_lr(lr, ratios.model if ratios and ratios.model > UPDATE_RATIO_HIGH else None, 10.0)
    evidence.update(lr=lr, suggested_lr=guess)
    lr_advice = "Divide the learning rate by 3-10"
    if guess is not None:
        lr_advice += f": from {fmt(lr)} to about {fmt(guess)}" + (f" ({how})" if how else "")
    severity = "critical" if diverged else "warning"
    title = "Learning rate too high: the loss diverged" if diverged else "Learning rate looks too high"
    return [
        finding(
            RULE_ID,
            severity,
            title,
            sentence("; ".join(reasons)) + ".",
            (
                lr_advice + ".",
                "Add a warm-up: ramp the learning rate up from ~1/10 over the first few hundred steps.",
                "Clip the gradient norm (torch.nn.utils.clip_grad_norm_, max_norm 5-15).",
            ),
            LR_HIGH_SOURCE,
            step=step,
            evidence=evidence,
        )
    ]


def _nonfinite_after(run: Run, last_finite: int) -> int | None:
    """The step where the training loss turned NaN/Inf for good (after its last finite value), if it did."""
    series = run.scalar(T.TRAIN_LOSS)
    later = series.steps > last_finite
    return int(series.steps[later][0]) if later.any() else None


def _rise_with_grad_growth(run: Run, loss: LossCurve) -> dict | None:
    """Loss up RISE_FACTOR over the last RISE_WINDOW while the gradient norm grew GRAD_GROWTH_FACTOR."""
    grad = run.scalar(T.GRAD_GLOBAL_NORM)
    if grad is None:
        return None
    begin = tail_start(loss.values.shape[0], RISE_WINDOW, 3 * TREND_MIN_PER_BIN)
    first_step, last_step = int(loss.steps[begin]), int(loss.steps[-1])
    window = loss.values[begin:]
    thirds = chunk_medians(window, 3)
    if thirds.shape[0] < 3 or thirds[0] <= 0:
        return None
    loss_rise = float(thirds[2] / thirds[0] - 1)
    g_steps, g_values = finite_points(grad)
    inside = g_values[(g_steps >= first_step) & (g_steps <= last_step)]
    g_thirds = chunk_medians(inside, 3)
    if g_thirds.shape[0] < 3 or g_thirds[0] <= 0:
        return None
    growth = float(g_thirds[2] / g_thirds[0])
    increased, _ = lr_changed_between(run, first_step, last_step, 0.01)
    if loss_rise + 1 >= RISE_FACTOR and growth >= GRAD_GROWTH_FACTOR and not increased:
        return {"rise_window_from_step": first_step, "loss_rise": loss_rise, "grad_growth": growth}
    return None
