"""Rule `lr_too_high`: the loss diverges, blows up, climbs or bounces without progress.

The check's docstring says what is measured, why it matters and what to do; the dashboard
and docs/rules.md show it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from trainscope.analyzers.facts import NORM_OR_EMBEDDING_TYPES, layer_types, lr_to_adjust, num_classes
from trainscope.analyzers.findings import Finding, Skip
from trainscope.analyzers.rules.common import (
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
from trainscope.analyzers.rules.curves import (
    MIN_CURVE_POINTS,
    SIGNIFICANT_Z,
    TREND_MIN_PER_BIN,
    LossCurve,
    centered_median3,
    chance_loss,
    loss_curve,
    lr_changed_between,
    lr_series,
    require_shuffled,
    start_points,
)
from trainscope.analyzers.rules.robust import (
    chunk_medians,
    finite_points,
    robust_sigma,
    tail_start,
    value_at,
)
from trainscope.analyzers.rules.updates import (
    UPDATE_RATIO_HIGH,
    UPDATE_RATIO_TARGET,
    suggested_lr,
    update_ratios,
)
from trainscope.analyzers.run import Run
from trainscope.logformat import tags as T

RULE_ID = "lr_too_high"
NAME = "a learning rate too high"  # what the finding is called where it is listed under another
LR_HIGH_SOURCE = cite(
    (
        "000",
        67,
        "太高的学习率,loss曲线会很奇怪,很容易会出现参数爆炸现象",
        "with too high a learning rate the loss curve looks strange and the parameters easily blow up",
    ),
    (
        "000",
        67,
        "高学习率,一开始loss会下降很快,但很容易跌入局部最小值",
        "with a high learning rate the loss falls fast at first but easily settles in a local minimum",
    ),
)
LR_HIGH_LIVE_POINTS = 50  # training-loss points before a verdict on the curve of a run still being written
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
EARLY_SHARE = 0.1  # "the first steps": the first 10% of the run (3 samples at least)...
EARLY_UPDATE_RATIO = (
    0.1  # ...where updates moved the weights by >= 10% of their norm (100x the healthy ~1e-3)...
)
EARLY_WEIGHT_GROWTH = 10.0  # ...and some layer's weights grew >= 10x: then the network was wrecked...
DEAD_AFTER = 0.9  # ...if the loss stayed >= 90% of its start (or of chance, ln C) from then on
MAX_DIVISOR = 100.0  # ...whose suggested lr is at most 100x below the current one
WARMUP_LR_RISE = 2.0  # warm-up: the lr at least doubled after the loss was at its best...
WARMUP_LOSS_RISE = 1.5  # ...and the smoothed loss then rose to >= 1.5x that best...
WARMUP_MIN_RISE = 0.1  # ...by >= 10% of where the loss started (a rise from ~0 to ~0 is nothing)...
WARMUP_SUSTAIN = 3  # ...for 3+ consecutive smoothed points, each significantly above the best...
WARMUP_AT_PEAK = 0.5  # ...while the lr was >= 50% of its peak: the peak lr, not a passing bump
WARMUP_RECOVERED = 1.2  # the loss ending within 20% of that best again: the rise was transient


def check(run: Run) -> Iterable[Finding]:
    """The learning rate is too high: the loss diverges, blows up, climbs, or jumps around without progress.

    Why it matters: steps overshoot the valley they should descend; the loss rises or
    explodes ("parameter explosion"), ReLUs die, or the loss bounces at a high level.
    Measured: the smoothed loss ends 4x above its best (undoing >= 25% of the
    progress) or 20% above its start, or blows up to 4x its start for 3+ steps in a
    row without coming back, or in the first 10% of the run updates moved the weights by
    10%+ of their norm (median over layers), some layer's weights grew 10x, and the loss
    stayed at its start (or at chance, ln C) ever after, the network wrecked without a
    blow-up (critical); over the last 25% of the run the loss rose
    25% while the gradient norm doubled and the lr was not raised; the smoothed loss
    jumps ~25% between stretches while staying near its start; the median
    update/weight ratio over layers is above 0.1 (healthy: ~1e-3) (warning); or,
    read against the logged lr, the smoothed loss rose to 1.5x its best (by 10%+ of its
    start) as the lr at least doubled, and stayed there for 3+ points at the peak lr
    (warning; info when it came back down at the peak: a warm-up too short; still a
    warning when it came down only as the schedule lowered the lr). A rise or a divergence
    must stand 3 standard errors above the curve's own scatter, so a sparse log (HF
    logging every 500 steps) is judged on its few points and a noisy one needs more.
    What to do: divide the learning rate by 3-10 (first guess from the update ratio:
    lr x 1e-3 / ratio); add warm-up; clip gradients.
    """
    loss = loss_curve(run, LR_HIGH_LIVE_POINTS)
    require_shuffled(run)
    reasons: list[str] = []
    evidence: dict = {"start": loss.start, "end": loss.end}
    diverged = False
    step: int | None = None
    values = loss.curve.values
    positive = loss.start > 0 and float(values.min()) >= 0
    transient = False
    warm: dict | None = None

    if positive:
        # The best is a level the loss held (3 neighbouring stretches), not one lucky stretch.
        held = centered_median3(values)
        best_i = int(np.argmin(held))
        best = float(held[best_i])
        tail = values[-DIVERGE_SUSTAIN_BINS:]
        undone = (tail.min() - best) / max(loss.start - best, 1e-12)
        above_best = bool((tail > DIVERGE_FACTOR * best).all()) and undone >= DIVERGE_MIN_UNDONE
        above_start = bool((tail > END_ABOVE_START * loss.start).all())
        # Sparse or noisy curves: the rise must stand out of the scatter (start: the first points).
        tail_error = loss.median_error(DIVERGE_SUSTAIN_BINS * loss.curve.bin_size)
        rose_over, over_points = (
            (loss.start, start_points(loss.values.shape[0])) if above_start else (best, loss.curve.bin_size)
        )
        error = math.hypot(tail_error, loss.median_error(over_points))
        # A climb to 4x is no scatter, however few the points (a sparse log's scatter estimate
        # errs high on a curve that bends this much).
        level = float(np.median(tail))
        significant = level - rose_over >= SIGNIFICANT_Z * error or level > DIVERGE_FACTOR * rose_over
        evidence.update(best=best, best_step=int(loss.curve.steps[best_i]))
        if len(values) > DIVERGE_SUSTAIN_BINS and (above_best or above_start) and significant:
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
        warm = None if diverged else _rise_during_warmup(run, loss)
        if warm is not None:
            transient = warm["recovered"]
            step = warm["rise_step"] if step is None else step
            evidence.update(warm)
            reasons.append(
                f"the train loss rose from its best {fmt(warm['best'])} at step "
                f"{fmt_step(warm['best_step'])} "
                f"to {fmt(warm['peak'])} ({fmt_factor(warm['peak'] / warm['best'])}) as the learning rate "
                f"rose from {fmt(warm['lr_at_best'])} to {fmt(warm['peak_lr'])}, and stayed above "
                f"{fmt(warm['held_level'])} for {fmt_step(warm['held_steps'])} steps at that rate"
                + (
                    f"; it came back down to {fmt(loss.end)} once the rate stopped rising"
                    if warm["recovered"]
                    else f"; it came back down to {fmt(loss.end)} only once the schedule had lowered "
                    "the rate "
                    f"to {fmt(warm['lr_when_back'])}"
                    if warm["rescued_by_schedule"]
                    else f"; it is now {fmt(loss.end)}"
                )
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

    died = None if diverged or not positive else _died_early(run, loss)
    if died is not None:
        diverged = True  # a network killed by its first steps is as lost as one that blew up
        step = died["first_step"] if step is None else step
        evidence.update(died)
        reasons.append(
            f"in the first {fmt_step(died['window_steps'])} steps each update moved the weights by up to "
            f"{fmt(died['early_update_ratio'])} of their norm (median over layers; healthy ~"
            f"{fmt(UPDATE_RATIO_TARGET)}) and {quote(died['grown_layer'])}'s weights grew "
            f"{fmt_factor(died['weight_growth'])}; since then the loss has stayed at about "
            f"{fmt(died['level'])}"
            + (f", the chance level ln {died['classes']} = {fmt(died['chance'])}" if died["chance"] else "")
            + ", though it never blew up"
        )
    ratios = update_ratios(run)
    if ratios is not None and ratios.model > UPDATE_RATIO_HIGH:
        # Only where it says "too high": a healthy or tiny ratio beside this verdict would read against it.
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

    lr, lr_name = lr_to_adjust(run)
    high_ratio = (
        died["early_update_ratio"]
        if died
        else (ratios.model if ratios and ratios.model > UPDATE_RATIO_HIGH else None)
    )
    guess, how = suggested_lr(lr, high_ratio, 10.0)
    if guess is not None and lr and died:
        guess = max(guess, lr / MAX_DIVISOR)  # the first steps of a wrecked network are no linear measure
    evidence.update(lr=lr, suggested_lr=guess)
    lr_advice = f"Divide the {lr_name} by 3-10"
    if guess is not None:
        lr_advice += f": from {fmt(lr)} to about {fmt(guess)}" + (f" ({how})" if how else "")
    only_warmup = warm is not None and len(reasons) == 1
    severity = "critical" if diverged else ("info" if only_warmup and transient else "warning")
    title = "Learning rate too high: the loss diverged" if diverged else "Learning rate looks too high"
    warmup_advice = "Add a warm-up: ramp the learning rate up from ~1/10 over the first few hundred steps."
    if only_warmup:
        title = (
            "The loss rose during the learning-rate warm-up"
            if transient
            else "Peak learning rate too high: the loss rose as the warm-up raised it"
        )
        warmup_advice = (
            "Lengthen the warm-up (2-3x as many steps) so the loss can follow the rising rate."
            if transient
            else "Lower the peak learning rate, and lengthen the warm-up."
        )
    return [
        finding(
            RULE_ID,
            severity,
            title,
            sentence("; ".join(reasons)) + ".",
            (
                lr_advice + ".",
                warmup_advice,
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


def _rise_during_warmup(run: Run, loss: LossCurve) -> dict | None:
    """The loss rose well above its best as the logged learning rate climbed, and stayed up at the peak lr.

    A warm-up ramps the lr from small to its peak; a loss that rises with it (instead
    of falling) says the peak is more than the model tolerates, most often in
    fine-tuning, where the start is already good.
    """
    lr = lr_series(run)
    if lr is None or lr[1].shape[0] < 2 or lr[1].max() <= 0:
        return None
    curve = loss.curve
    lr_at = value_at(lr[0], lr[1], curve.steps)
    peak_lr = float(lr[1].max())
    peak_step = int(lr[0][int(np.argmax(lr[1]))])
    # The warm-up: before the lr first reaches its peak, while it is still below half of it.
    before_peak = np.isfinite(lr_at) & (lr_at <= peak_lr / WARMUP_LR_RISE) & (curve.steps < peak_step)
    if not before_peak.any():
        return None
    best_i = int(np.flatnonzero(before_peak)[np.argmin(curve.values[before_peak])])
    best = float(curve.values[best_i])
    if best <= 0:
        return None
    error = math.hypot(loss.median_error(curve.bin_size), loss.median_error(curve.bin_size))
    level = max(WARMUP_LOSS_RISE * best, best + WARMUP_MIN_RISE * loss.start, best + SIGNIFICANT_Z * error)
    held = (curve.values > level) & (lr_at >= WARMUP_AT_PEAK * peak_lr)
    held[: best_i + 1] = False
    run_end, run_len = _longest_run(held)
    if run_len < WARMUP_SUSTAIN:
        return None
    first = run_end - run_len + 1
    rise_i = best_i + 1 + int(np.flatnonzero(curve.values[best_i + 1 :] > level)[0])
    recovered = bool(loss.end <= WARMUP_RECOVERED * best)
    # Back down only once the schedule lowered the rate: the schedule hid a peak lr that was too high.
    back = np.flatnonzero(curve.values[run_end + 1 :] <= WARMUP_RECOVERED * best)
    rescued = recovered and back.shape[0] > 0 and lr_at[run_end + 1 + back[0]] < WARMUP_AT_PEAK * peak_lr
    return {
        "best": best,
        "best_step": int(curve.steps[best_i]),
        "lr_at_best": float(lr_at[best_i]),
        "peak_lr": peak_lr,
        "peak": float(curve.values[first : run_end + 1].max()),
        "held_level": level,
        "held_steps": int(curve.steps[run_end] - curve.steps[first]),
        "rise_step": int(curve.steps[rise_i]),
        "recovered": recovered and not rescued,
        "rescued_by_schedule": bool(rescued),
        "lr_when_back": float(lr_at[run_end + 1 + back[0]]) if rescued else None,
    }


def _longest_run(mask: np.ndarray) -> tuple[int, int]:
    """(index of the last entry, length) of the longest stretch of True in `mask`."""
    best_end, best_len, length = -1, 0, 0
    for i, flag in enumerate(mask.tolist()):
        length = length + 1 if flag else 0
        if length > best_len:
            best_end, best_len = i, length
    return best_end, best_len


def _died_early(run: Run, loss: LossCurve) -> dict | None:
    """Huge early updates blew the weights up and the loss never left its start (or chance) afterwards.

    A learning rate far too high need not make the loss explode: the first steps can
    push the weights tens of times larger and knock the ReLUs dead, after which the
    network outputs the same thing for every input and the loss sits at chance (ln C)
    without ever exceeding its start. The update ratios and weight norms of those first
    steps say what happened.
    """
    ratios = run.layers(T.UPDATE_RATIO_PREFIX)
    norms = run.layers(T.WEIGHT_NORM_PREFIX)
    if not ratios or not norms:
        return None
    first = int(loss.steps[0])
    window = max(int(EARLY_SHARE * (int(loss.steps[-1]) - first)), 1)
    skip = {name for name, kind in layer_types(run).items() if kind in NORM_OR_EMBEDDING_TYPES}
    early_max = []
    for name, series in ratios.items():
        if name in skip:
            continue
        steps, values = finite_points(series)
        inside = values[steps <= first + window]
        if inside.shape[0] < 3:
            inside = values[:3]
        if inside.shape[0]:
            early_max.append(float(inside.max()))
    if not early_max or float(np.median(early_max)) < EARLY_UPDATE_RATIO:
        return None
    growth, grown = 0.0, None
    for name, series in norms.items():
        steps, values = finite_points(series)
        if name in skip or values.shape[0] < 2 or values[0] <= 0:
            continue
        inside = values[steps <= first + window]
        factor = float(inside.max() if inside.shape[0] > 1 else values[:3].max()) / float(values[0])
        if factor > growth:
            growth, grown = factor, name
    if grown is None or growth < EARLY_WEIGHT_GROWTH:
        return None
    after = loss.values[loss.steps > first + window]
    if after.shape[0] < MIN_CURVE_POINTS:
        return None
    level = float(np.median(after))
    chance = chance_loss(run, loss.start)
    if level < DEAD_AFTER * min(loss.start, chance or math.inf):
        return None
    return {
        "first_step": first,
        "window_steps": window,
        "early_update_ratio": float(np.median(early_max)),
        "weight_growth": growth,
        "grown_layer": grown,
        "level": level,
        "chance": chance,
        "classes": num_classes(run) if chance else None,
    }
