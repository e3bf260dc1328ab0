"""Rules read from the training-loss curve and the optimizer's steps.

`nonfinite`, `lr_too_high`, `lr_too_low`, `loss_plateau`, `noisy_batches`. The loss is
judged on its smoothed curve (bin medians, see `robust`), its start (the median of
the first logged points) and relative changes, never on single steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from analyzers.findings import Finding, Skip
from analyzers.rules.common import (
    quote,
    NORM_OR_EMBEDDING_TYPES,
    batch_size,
    cite,
    data_parallel_ranks,
    configured_lr,
    finding,
    fmt,
    fmt_change,
    fmt_factor,
    fmt_pct,
    fmt_step,
    layer_types,
    num_classes,
    ordered_layers,
    require_finite_points,
    require_points,
    require_scalar,
    sentence,
)
from analyzers.rules.data import looks_unshuffled
from analyzers.rules.robust import (
    Curve,
    binned,
    chunk_medians,
    finite_points,
    robust_sigma,
    state_at,
    tail_start,
    value_at,
)
from analyzers.run import Run
from logformat import tags as T
from logformat.runjson import STATUS_FINISHED

# --- the smoothed loss curve, shared by the rules below --------------------------------

TREND_BINS = 200  # resolution of the smoothed loss curve (bins over the whole run)
TREND_MIN_PER_BIN = 5  # each smoothed point is the median of at least 5 logged steps
CHANCE_MIN_START = 0.5  # ln C is the yardstick only for a loss starting >= 0.5 ln C (a C-class cross-entropy)
START_POINTS = 20  # the starting loss is the median of the first 20 logged points (5 on short runs)


@dataclass(frozen=True)
class LossCurve:
    steps: np.ndarray  # finite training-loss points
    values: np.ndarray
    curve: Curve  # bin medians
    start: float  # robust starting level

    @property
    def end(self) -> float:
        """The current level: median of the last 10% of the smoothed curve (3 bins at least)."""
        return float(np.median(self.curve.values[-max(3, len(self.curve) // 10) :]))


def loss_curve(run: Run, need_points: int) -> LossCurve:
    """The finite training loss, smoothed; `Skip` when missing or shorter than `need_points`."""
    series = require_scalar(run, T.TRAIN_LOSS, "the training loss")
    require_finite_points(series, need_points, f"{T.TRAIN_LOSS} points")
    steps, values = finite_points(series)
    curve = binned(steps, values, TREND_BINS, TREND_MIN_PER_BIN)
    head = max(5, min(START_POINTS, values.shape[0] // 20))
    return LossCurve(steps, values, curve, float(np.median(values[:head])))


def require_positive(loss: LossCurve) -> None:
    """Relative changes ("fell 20%") need a loss that starts above 0 and never goes below it."""
    if loss.start <= 0 or float(loss.curve.values.min()) < 0:
        raise Skip(f"{T.TRAIN_LOSS} goes below 0; this rule compares relative changes of a non-negative loss")


def require_shuffled(run: Run) -> None:
    """Sorted batches make the loss follow the class order; then the curve says nothing about the lr."""
    if looks_unshuffled(run):
        raise Skip(
            "the batches look unshuffled (see unshuffled_data): the loss curve follows the order of the "
            "classes, not the learning rate"
        )


def chance_loss(run: Run, start: float) -> float | None:
    """ln(C) when the number of classes C is known and the loss starts at or above half of it.

    A C-class cross-entropy starts near ln(C) (higher with a bad initialization); a
    loss that starts far below it is something else (MSE, a fine-tuned model), and
    chance level says nothing about it.
    """
    classes = num_classes(run)
    if classes is None:
        return None
    level = math.log(classes)
    return level if start >= CHANCE_MIN_START * level else None


def lr_series(run: Run) -> tuple[np.ndarray, np.ndarray] | None:
    series = run.scalar(T.LR)
    if series is None:
        return None
    steps, values = finite_points(series)
    return (steps, values) if values.shape[0] else None


def lr_changed_between(run: Run, first: int, last: int, tolerance: float) -> tuple[bool, bool]:
    """(increased, decreased): did ``opt/lr`` move by more than `tolerance` (relative) in [first, last]?"""
    lr = lr_series(run)
    if lr is None:
        return False, False
    steps, values = lr
    inside = (steps >= first) & (steps <= last)
    if not inside.any():
        return False, False
    at_start = value_at(steps, values, np.array([first]))[0]
    base = values[inside][0] if not np.isfinite(at_start) else at_start
    window = values[inside]
    return bool(window.max() > base * (1 + tolerance)), bool(window.min() < base * (1 - tolerance))


# --- update/weight ratios, shared by lr_too_high and lr_too_low ------------------------

UPDATE_RATIO_TARGET = 1e-3  # healthy ||dw||/||w|| per step (CS231n); suggested learning rates aim at it
UPDATE_MIN_SAMPLES = 5  # update-ratio samples a layer needs before it counts
UPDATE_RECENT = 0.5  # judge update ratios on the most recent half of their samples


@dataclass(frozen=True)
class UpdateRatios:
    model: float  # median over layers of each layer's recent median
    largest: float  # the fastest-moving layer's recent median
    per_layer: dict[str, float]
    first_step: int  # first step of the samples judged


def update_ratios(run: Run, min_lr_share: float | None = None) -> UpdateRatios | None:
    """Recent median update/weight ratio per layer and over the model; None when not logged.

    Steps that did not update (ratio exactly 0: a skipped AMP step) are left out, and
    normalization/embedding layers too (their ratio follows other laws). With
    `min_lr_share`, only samples where ``opt/lr`` was at least that share of its peak
    count, so a schedule's decayed tail does not read as "learning rate too low".
    """
    layers = run.layers(T.UPDATE_RATIO_PREFIX)
    if not layers:
        return None
    types = layer_types(run)
    lr = lr_series(run)
    low_lr = None if min_lr_share is None or lr is None else lr[1] < min_lr_share * lr[1].max()
    per_layer: dict[str, float] = {}
    first_steps = []
    for name in ordered_layers(run, layers):
        if types.get(name) in NORM_OR_EMBEDDING_TYPES:
            continue
        steps, values = finite_points(layers[name])
        keep = values > 0
        if low_lr is not None:
            keep &= ~state_at(lr[0], low_lr, steps)
        steps, values = steps[keep], values[keep]
        if values.shape[0] < UPDATE_MIN_SAMPLES:
            continue
        begin = tail_start(values.shape[0], UPDATE_RECENT, UPDATE_MIN_SAMPLES)
        per_layer[name] = float(np.median(values[begin:]))
        first_steps.append(int(steps[begin]))
    if not per_layer:
        return None
    values = list(per_layer.values())
    return UpdateRatios(float(np.median(values)), float(max(values)), per_layer, min(first_steps))


DEAD_BLOCKS = 0.9  # a layer with > 90% dead units in its latest samples blocks the updates
DEAD_BLOCK_SAMPLES = 3  # ...in each of its last 3 samples


def updates_blocked(run: Run) -> str | None:
    """Why the weights cannot move whatever the lr (dead units, zero gradients), or None.

    Tiny update ratios then come from a broken network, not from a small learning
    rate, and `dead_relu` / `vanishing_gradients` say so.
    """
    for name, series in run.layers(T.DEAD_FRACTION_PREFIX).items():
        _, values = finite_points(series)
        if values.shape[0] >= DEAD_BLOCK_SAMPLES and (values[-DEAD_BLOCK_SAMPLES:] > DEAD_BLOCKS).all():
            return f"the ReLU units of {quote(name)} are dead"
    grads = run.layers(T.GRAD_NORM_PREFIX)
    if grads:
        zero = [name for name, s in grads.items() if (s.values[-UPDATE_MIN_SAMPLES:] == 0).all()]
        if 2 * len(zero) >= len(grads):
            return f"{len(zero)} of {len(grads)} layers get exactly zero gradient"
    return None


def suggested_lr(lr: float | None, ratio: float | None, divisor: float) -> tuple[float | None, str]:
    """A first-guess learning rate and how it was obtained.

    With an update/weight ratio: lr x 1e-3 / ratio (the step size scales with lr for
    SGD-like and Adam-like optimizers alike, so this aims the ratio at its healthy
    value); without one: lr / `divisor` (a divisor < 1 multiplies).
    """
    if lr is None or lr <= 0:
        return None, ""
    if ratio is not None and ratio > 0:
        guess = lr * UPDATE_RATIO_TARGET / ratio
        return guess, f"lr x {fmt(UPDATE_RATIO_TARGET)} / update ratio {fmt(ratio)}, a first guess"
    return lr / divisor, ""


# --- nonfinite -------------------------------------------------------------------------

NONFINITE_SOURCE = cite(
    ("001", 120, "为什么一用relu梯度一会儿就变成Nan"),
    ("001", 24, "但是一定要做。否则可能会减慢收敛速度,影响收敛结果,甚至造成Nan等一系列问题。"),
)
NONFINITE_CONTEXT_STEPS = 20  # the gradient norm "just before" a NaN is the median of the 20 steps before


def nonfinite(run: Run) -> Iterable[Finding]:
    """NaN or Inf in the training loss or a gradient norm.

    Why it matters: one NaN gradient applied by the optimizer turns every weight it
    touches into NaN; training is over from that step on, however long it keeps
    running. An AMP GradScaler is different: inf gradients are how it finds its loss
    scale, and it skips those steps.
    Measured: any NaN/Inf in ``train/loss``, ``grad/global_norm`` or ``grad/norm/*``
    (critical, at the first such step). Where ``opt/step_skipped`` is 1 at all of
    those steps (AMP skipped them), info only.
    What to do: lower the learning rate; clip gradients; check the initialization
    and the inputs (a NaN in the data gives a NaN loss at once).
    """
    signals = {T.TRAIN_LOSS: run.scalar(T.TRAIN_LOSS), T.GRAD_GLOBAL_NORM: run.scalar(T.GRAD_GLOBAL_NORM)}
    grad_layers = run.layers(T.GRAD_NORM_PREFIX)
    signals.update({T.GRAD_NORM_PREFIX + name: s for name, s in grad_layers.items()})
    signals = {tag: s for tag, s in signals.items() if s is not None}
    if not signals:
        raise Skip(f"needs {T.TRAIN_LOSS} or gradient norms, which this run does not log")

    skipped_steps = np.zeros(0, np.int64)
    skip_series = run.scalar(T.STEP_SKIPPED)
    if skip_series is not None:
        skipped_steps = skip_series.steps[skip_series.values >= 0.5]

    bad_steps: dict[str, np.ndarray] = {}
    ends_bad: list[str] = []
    total_points = 0
    for tag, series in signals.items():
        bad = ~np.isfinite(series.values)
        total_points = max(total_points, len(series))
        if bad.any():
            bad_steps[tag] = series.steps[bad]
            if bad[-1]:
                ends_bad.append(tag)
    if not bad_steps:
        return []

    all_bad = np.unique(np.concatenate(list(bad_steps.values())))
    real = all_bad[~np.isin(all_bad, skipped_steps)]
    if real.shape[0] == 0:
        return [_nonfinite_skipped_only(run, all_bad, total_points)]

    first = int(real[0])
    first_tags = [tag for tag, steps in bad_steps.items() if np.isin(first, steps)]
    kinds = _nonfinite_kinds(signals, first_tags, first)
    layers = ordered_layers(
        run, [tag[len(T.GRAD_NORM_PREFIX) :] for tag in first_tags if tag.startswith(T.GRAD_NORM_PREFIX)]
    )
    what = ", ".join(first_tags[:4]) + (f" and {len(first_tags) - 4} more" if len(first_tags) > 4 else "")
    message = f"{what} became {kinds} at step {fmt_step(first)}"
    message += f"; {real.shape[0]:,} logged step(s) non-finite in all"
    if ends_bad:
        message += ", and it is still non-finite at the last logged step"
    before = _norm_before(run, first)
    if before is not None:
        message += (
            f"; just before, the gradient norm was {fmt(before[0])}, {fmt_factor(before[1])} its median "
            f"of {fmt(before[2])}"
        )
    lr = configured_lr(run)
    advice = (
        f"Lower the learning rate (now {fmt(lr)}): try {fmt(lr / 10)}."
        if lr
        else "Lower the learning rate 3-10x.",
        "Clip the gradient norm: torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=5.0) "
        "before optimizer.step().",
        "Check the initialization (He for ReLU, Xavier for tanh/sigmoid) and the inputs "
        "(torch.isfinite(x).all() on a batch; no log(0) or division by zero in the loss).",
    )
    return [
        finding(
            "nonfinite",
            "critical",
            f"Training produced {kinds} at step {fmt_step(first)}",
            message + ".",
            advice,
            NONFINITE_SOURCE,
            step=first,
            layer=layers[0] if layers else None,
            evidence={
                "first_step": first,
                "nonfinite_steps": int(real.shape[0]),
                "signals": sorted(bad_steps),
                "first_signals": first_tags,
                "still_nonfinite": ends_bad,
                "amp_skipped_steps": int(all_bad.shape[0] - real.shape[0]),
                "grad_norm_before": before[0] if before else None,
                "grad_norm_median": before[2] if before else None,
            },
        )
    ]


def _nonfinite_kinds(signals: dict, tags: list[str], step: int) -> str:
    values = [s.values[np.searchsorted(s.steps, step)] for tag, s in signals.items() if tag in tags]
    has_nan = any(np.isnan(v) for v in values)
    has_inf = any(np.isinf(v) for v in values)
    return "NaN and Inf" if has_nan and has_inf else ("NaN" if has_nan else "Inf")


def _norm_before(run: Run, step: int) -> tuple[float, float, float] | None:
    """(norm just before `step`, its factor over the run's median, the median) when it was unusual."""
    series = run.scalar(T.GRAD_GLOBAL_NORM)
    if series is None:
        return None
    steps, values = finite_points(series)
    before = values[steps < step]
    if before.shape[0] < 2 * NONFINITE_CONTEXT_STEPS:
        return None
    recent = float(np.max(before[-3:]))
    median = float(np.median(before[:-NONFINITE_CONTEXT_STEPS]))
    if median <= 0 or recent < 3 * median:
        return None
    return recent, recent / median, median


def _nonfinite_skipped_only(run: Run, steps: np.ndarray, total_points: int) -> Finding:
    scale = run.scalar(T.LOSS_SCALE)
    message = (
        f"{steps.shape[0]:,} step(s) had inf/NaN gradients (first at step {fmt_step(steps[0])}, last at "
        f"{fmt_step(steps[-1])}) and the optimizer skipped them, as an AMP GradScaler does while it "
        "finds its loss scale"
    )
    if scale is not None:
        message += f"; the loss scale is now {fmt(float(scale.values[-1]))}"
    share = steps.shape[0] / max(total_points, 1)
    if share > 0.01:
        message += f". That is {fmt_pct(share)} of the steps: more than usual"
    return finding(
        "nonfinite",
        "info",
        "AMP skipped steps with inf/NaN gradients",
        message + ".",
        (
            "Nothing to do while skips are rare: GradScaler lowers its scale and goes on.",
            "If skips keep coming, look for the overflow: lower the learning rate, clip gradients "
            "(after scaler.unscale_(optimizer)), or compute the loss in float32.",
        ),
        NONFINITE_SOURCE,
        step=int(steps[0]),
        evidence={"skipped_steps": int(steps.shape[0]), "first_step": int(steps[0]), "share": share},
    )


# --- lr_too_high -----------------------------------------------------------------------

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
UPDATE_RATIO_HIGH = 0.1  # model median ||dw||/||w|| above this: each step rewrites 10% of the weights
WILD_LOG_SIGMA = 0.25  # smoothed loss jumping ~25% between bins (robust std of log differences)...
NO_PROGRESS = 0.9  # ...while staying above 90% of its start: "jumps wildly without progress"


def lr_too_high(run: Run) -> Iterable[Finding]:
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
            "lr_too_high",
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


# --- lr_too_low ------------------------------------------------------------------------

LR_LOW_SOURCE = cite(("000", 68, "如果loss曲线表现出线性(下降缓慢)表明学习率太低"))
LR_LOW_MIN_POINTS = 100  # training-loss points before any verdict (update-ratio route)
LR_LOW_SHAPE_MIN_POINTS = (
    1000  # ...and before judging a live run's shape (early on, every decay looks linear)
)
PLATEAU_SMALL_UPDATES = 0.5  # a high plateau with updates below half the healthy ratio: advise raising the lr
PLATEAU_RAISE_CAP = 10.0  # ...by at most 10x
UPDATE_RATIO_LOW = 1e-4  # ||dw||/||w|| below this in every layer: steps too small (TheDeepChecker)
LR_PEAK_SHARE = 0.5  # update ratios count only where the lr is >= 50% of its peak (a decayed tail is fine)
SLOW_TOTAL_DROP = 0.5  # "slow": the loss has fallen less than 50% from its start
LINEAR_MAX_CURVATURE = 1.5  # "no elbow": the first half fell less than 1.5x what the second half fell
STILL_FALLING = 0.03  # ...and the second half still fell >= 3% of the start (not a plateau)
RATIO_CONTRADICTS = 1e-3  # a shape-only verdict is dropped when update ratios are healthy (>= 1e-3)
WARMUP_TAIL = 0.1  # an lr peak within the last 10% of the run means warm-up is still going


def lr_too_low(run: Run) -> Iterable[Finding]:
    """The learning rate is too low: the loss creeps down almost linearly and slowly.

    Why it matters: with tiny steps a run that could converge in minutes takes hours;
    the loss curve has no "elbow", it is a slow straight line.
    Measured after any warm-up: over 1,000+ points (any length once the run has
    finished) the loss has fallen less than 50%, its first half fell less than 1.5x
    what its second half fell, and it is still falling (unless update ratios are
    healthy, >= 1e-3); or the update/weight ratio of
    every layer is below 1e-4 (at >= 50% of the peak lr) while the loss has fallen
    less than 50%. Not judged while units are dead or gradients are zero (then no lr
    moves the weights).
    What to do: raise the learning rate 3-10x (first guess from the update ratio:
    lr x 1e-3 / ratio, capped at 10x), or run a learning-rate range test.
    """
    loss = loss_curve(run, LR_LOW_MIN_POINTS)
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
        require_points(int(values.shape[0]), LR_LOW_MIN_POINTS, f"{T.TRAIN_LOSS} points after the warm-up")
    curve = binned(steps, values, TREND_BINS, TREND_MIN_PER_BIN)
    tenth = max(1, len(curve) // 10)
    a = float(np.median(curve.values[:tenth]))
    mid = len(curve) // 2
    m = float(np.median(curve.values[max(0, mid - tenth // 2) : mid - tenth // 2 + tenth]))
    b = float(np.median(curve.values[-tenth:]))
    start = loss.start if lr is None or steps[0] == loss.steps[0] else a
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
    long_enough = values.shape[0] >= LR_LOW_SHAPE_MIN_POINTS or run.status == STATUS_FINISHED
    linear = (
        long_enough
        and second_half >= STILL_FALLING * start
        and first_half < LINEAR_MAX_CURVATURE * second_half
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
    current = configured_lr(run)
    guess, how = suggested_lr(current, ratios.largest if ratio_low else None, 1 / 3)
    if guess is not None and current:
        guess = min(guess, current * 10)  # a first guess, never more than the 10x the documents advise
    evidence.update(lr=current, suggested_lr=guess)
    lr_advice = "Raise the learning rate 3-10x"
    if guess is not None:
        lr_advice += f": from {fmt(current)} to about {fmt(guess)}" + (
            f" ({how}, capped at 10x)" if how else ""
        )
    return [
        finding(
            "lr_too_low",
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


# --- loss_plateau ----------------------------------------------------------------------

PLATEAU_SOURCE = cite(
    ("000", 43, "将LR除以2或5后继续跑"),
    ("001", 185, "loss不降了lr就除10"),
    ("001", 50, "如果cost没有下降,就对学习率减半"),
)
PLATEAU_MIN_POINTS = 200  # training-loss points before a run can be called stalled
PLATEAU_WINDOW = 0.3  # the recent window: the last 30% of the run
PLATEAU_MAX_DROP = 0.02  # "stopped falling": the smoothed loss fell < 2% across the window...
PLATEAU_RATE_SHARE = 0.25  # ...and falls < 25% as fast as on average (a slow straight line is no plateau)
PLATEAU_MAX_RISE = 0.05  # a loss rising > 5% across the window is not flat either (see lr_too_high)
PLATEAU_HIGH = 0.8  # "far from good": still above 80% of its start (or of ln C for a C-class cross-entropy)
LR_CONSTANT = 0.05  # the lr counts as constant when it moved < 5% across the window
VAL_STILL_IMPROVING = 0.01  # a late plateau is not reported while val loss still improves by > 1%


def loss_plateau(run: Run) -> Iterable[Finding]:
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
                "loss_plateau",
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
            "loss_plateau",
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


# --- noisy_batches ---------------------------------------------------------------------

NOISY_SOURCE = cite(
    ("000", 68, "曲线的宽度和batch size有关"),
    ("001", 284, "一般来说,包含 \u00a016 个到 128 个样例的 batch(2 的幂)是不错的选择"),
)
NOISY_MIN_POINTS = 200  # training-loss points before judging the curve's width
NOISY_BIN = 50  # the band is measured within stretches of 50 consecutive steps...
NOISY_MAX_BINS = 2000  # ...at most 2000 of them, evenly spread over the run
NOISY_MIN_PROGRESS = 0.1  # the trend must have fallen >= 10% of its start to measure the band against
NOISY_WIDTH_RATIO = 0.2  # warning: the typical 10-90% band is >= 20% of the trend's whole fall...
NOISY_SMALL_BATCH = 8  # ...and the batch holds < 8 examples (half the 16 at the bottom of the notes' 16-128)
# (a wide band with a normal batch is the examples' own spread, e.g. an underfit model, and a larger batch
# would not help; on the sample runs B_simple does not tell the two apart, since it soars whenever the
# gradient's mean goes to ~0)
NOISE_SCALE_VETO = 2.0  # no warning when the gradient noise scale B_simple < 2x the batch (mostly signal)
NOISE_SCALE_MIN_SAMPLES = 5  # grad/noise_scale samples needed (a two-batch estimate is itself noisy)
NOISY_TARGET_MAX = 64  # a suggested batch is at most 64x the current one


def loss_band(values: np.ndarray) -> float:
    """Typical 10-90% width of the per-step loss within stretches of NOISY_BIN steps.

    Typical means the median over stretches, so the steep start of the run and rare
    bad stretches do not decide.
    """
    nb = values.shape[0] // NOISY_BIN
    body = values[values.shape[0] - nb * NOISY_BIN :].reshape(nb, NOISY_BIN)
    body = body[:: max(1, nb // NOISY_MAX_BINS)]
    p10, p90 = np.percentile(body, [10, 90], axis=1)
    return float(np.median(p90 - p10))


def noisy_batches(run: Run) -> Iterable[Finding]:
    """The per-step loss scatters widely around its trend because each batch holds too few examples.

    Why it matters: the width of the loss curve comes from the batch: a batch of a few
    examples gives a noisy gradient estimate, so steps partly cancel out and the
    learning rate cannot be raised.
    Measured within stretches of 50 steps (typical over the run): the band holding the
    middle 80% of per-step losses is >= 20% of how far the trend has fallen, with a
    batch of fewer than 8 examples, half the bottom of the 16-128 the notes recommend
    (warning); under DDP or FSDP the batch of a step is every rank's together. A
    gradient noise scale B_simple = tr(Sigma)/|G|^2 below 2x the batch vetoes it (the
    gradient is then mostly signal). Needs the batch size (run.json or the
    hyperparameters).
    What to do: increase the batch size (the band narrows as 1/sqrt(batch)), toward
    B_simple when it is known, or accumulate gradients; or lower the learning rate.
    (000's translation says "reduce the batch size"; the CS231n text it translates,
    and the physics, say increase it.)
    """
    loss = loss_curve(run, NOISY_MIN_POINTS)
    require_positive(loss)
    require_shuffled(run)
    batch = batch_size(run)
    if batch is None:
        raise Skip(
            "needs the batch size (run.json batch_size or a batch_size hyperparameter) to tell a small "
            "batch's noise from the examples' own spread"
        )
    progress = (loss.start - loss.end) / loss.start
    if progress < NOISY_MIN_PROGRESS:
        raise Skip(
            "the loss trend has not fallen yet, so the batch-to-batch scatter has nothing to compare to"
        )
    # The batch size is one rank's; a step's gradient averages every data-parallel rank's.
    ranks = data_parallel_ranks(run)
    step_batch = batch * ranks
    noise = _noise_scale(run)
    width = loss_band(loss.values)
    ratio = width / (loss.start - loss.end)
    evidence = {
        "start": loss.start,
        "end": loss.end,
        "band_width": width,
        "trend_fall": loss.start - loss.end,
        "width_ratio": ratio,
        "batch_size": batch,
        "data_parallel_ranks": ranks,
        "step_batch": step_batch,
        "noise_scale": noise,
    }
    vetoed = noise is not None and noise < NOISE_SCALE_VETO * step_batch
    if ratio < NOISY_WIDTH_RATIO or step_batch >= NOISY_SMALL_BATCH or vetoed:
        return []
    per_batch = f"{batch} example(s) per batch" + (
        f" on each of {ranks} ranks, {step_batch} a step," if ranks > 1 else ""
    )
    message = (
        f"The per-step train loss spreads over a band typically {fmt(width)} wide (10-90% within "
        f"stretches of {NOISY_BIN} steps), {fmt_pct(ratio)} of the {fmt(loss.start - loss.end)} the trend "
        f"has fallen in all, with {per_batch} (the notes recommend 16-128)"
    )
    if noise is not None:
        message += f"; the gradient noise scale B_simple is about {fmt(noise)} ({fmt_factor(noise / step_batch)})"
    return [
        finding(
            "noisy_batches",
            "warning",
            f"Loss is noisy from batch to batch (batch size {step_batch})",
            message + ".",
            _noisy_advice(step_batch, noise, ranks),
            NOISY_SOURCE,
            step=int(loss.steps[0]),
            evidence=evidence,
        )
    ]


def _noise_scale(run: Run) -> float | None:
    series = run.scalar(T.GRAD_NOISE_SCALE)
    if series is None:
        return None
    _, values = finite_points(series)
    if values.shape[0] < NOISE_SCALE_MIN_SAMPLES:
        return None
    # Negative two-batch estimates are noise too: the median of all of them, or None when it is not positive.
    median = float(np.median(values[tail_start(values.shape[0], 0.5, NOISE_SCALE_MIN_SAMPLES) :]))
    return median if median > 0 else None


def _noisy_advice(batch: int, noise: float | None, ranks: int = 1) -> tuple[str, ...]:
    target = max(32, batch * 4)  # inside the 16-128 the notes recommend
    if noise is not None and noise > target:
        target = int(2 ** round(math.log2(min(noise, NOISY_TARGET_MAX * batch))))
    over = f" of a step (all {ranks} ranks together)" if ranks > 1 else ""
    first = (
        f"Increase the batch size{over} from {batch} to about {target:,}"
        + (" (the gradient noise scale estimates the critical batch size)" if noise is not None else "")
        + "; scale the learning rate up with it, or accumulate gradients over several batches."
    )
    return (first, "Or lower the learning rate, which also damps the step-to-step jumps.")
