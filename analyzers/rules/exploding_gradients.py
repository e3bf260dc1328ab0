"""Rule `exploding_gradients`: The gradient norm spikes far above its running level, or grows exponentially.

The check's docstring says what is measured, why it matters and what to do; the dashboard
and docs/rules.md show it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from trainscope.analyzers.facts import is_live
from trainscope.analyzers.findings import Finding, Skip
from trainscope.analyzers.rules.common import (
    cite,
    finding,
    fmt,
    fmt_factor,
    fmt_pct,
    fmt_step,
    missing_reason,
    require_finite_points,
    sentence,
)
from trainscope.analyzers.rules.curves import MIN_CURVE_POINTS
from trainscope.analyzers.rules.robust import (
    binned,
    chunk_medians,
    finite_points,
    trailing_median,
)
from trainscope.analyzers.rules.skipped_steps import nonfinite_steps
from trainscope.analyzers.run import Run, Series
from trainscope.logformat import tags as T

RULE_ID = "exploding_gradients"
NAME = "exploding gradients"  # what the finding is called where it is listed under another
EXPLODE_SOURCE = cite(
    ("001", 48, "clip c(梯度裁剪): 限制最大梯度", "clip c, gradient clipping: cap the largest gradient"),
    (
        "001",
        48,
        "如果value超过了阈值,就算一个衰减系系数,让value的值等于阈值: 5,10,15",
        "if the value exceeds the threshold, scale it down to the threshold: 5, 10, 15",
    ),
)
EXPLODE_MIN_POINTS = 50  # gradient-norm points before any verdict while the run is still being written...
EXPLODE_ENDED_POINTS = 5 * MIN_CURVE_POINTS  # ...and on a run that has ended (20): fewer is too few to judge
EXPLODE_WARMUP = 0.05  # the first 5% of the run is the norm settling from its init...
EXPLODE_WARMUP_POINTS = 10  # ...10 points at least (a fifth of a run shorter than 50 points)
SPIKE_FACTOR = 10.0  # a spike: the norm above 10x the median of the stretch before it
SPIKE_WINDOW = 50  # ...that stretch being the previous 50 points (bins, on long runs)
SPIKE_RECORD = 2.0  # ...and above 2x every norm seen before it, warm-up included
# (late in training most batches are fit, the median norm is tiny and a batch with mistakes is 10-100x it,
# small batches above all; yet such batches are no larger than early norms, while exploding norms keep
# breaking records)
SPIKE_MIN_COUNT = 3  # warning: >= 3 separate spikes (one alone is an odd batch)
SPIKE_BINS = 2000  # long runs are searched for spikes on per-bin maxima over at most 2000 bins
GROWTH_WINDOWS = 5  # exponential growth: 5 consecutive windows...
GROWTH_PER_WINDOW = 2.0  # ...each with a median >= 2x the one before (AUTOTRAINER / TheDeepChecker)
GROWTH_ABOVE_TYPICAL = 10.0  # ...ending >= 10x the run's typical norm (growing out of a tiny init is fine)
GROWTH_MIN_WINDOW = 5  # points per window at the finest scale searched...
GROWTH_MIN_WINDOW_FLOOR = 3  # ...a tenth of a run shorter than 50 points, 3 at least
# A norm recorded after clip_grad_norm_ equals max_norm (to ~1e-5) on every clipped step,
# where an unclipped norm, a continuous quantity, reaches its maximum once: so many
# points at the maximum mean the norm was capped and spikes cannot show.
CLIPPED_TOLERANCE = 1e-4  # relative distance to the maximum that counts as "at it"
CLIPPED_MIN_SHARE = 0.02  # points at the maximum, after the warm-up: 2% of them...
CLIPPED_MIN_COUNT = 5  # ...and 5 at least


def global_norm(run: Run) -> Series:
    """``grad/global_norm``, or the norm of the per-layer norms over the steps every layer logged;
    `Skip` when the run logs neither."""
    series = run.scalar(T.GRAD_GLOBAL_NORM)
    if series is not None:
        return series
    layers = run.layers(T.GRAD_NORM_PREFIX)
    if not layers:
        raise Skip(missing_reason(T.GRAD_GLOBAL_NORM, "the gradient norm"))
    # The global norm from per-layer norms, over the steps every layer logged.
    common = None
    for s in layers.values():
        common = s.steps if common is None else np.intersect1d(common, s.steps)
    total = np.zeros(common.shape[0])
    for s in layers.values():
        total += s.values[np.searchsorted(s.steps, common)] ** 2
    return Series(common, np.sqrt(total))


def check(run: Run) -> Iterable[Finding]:
    """The gradient norm spikes far above its running median, or grows exponentially.

    Why it matters: one huge gradient throws the weights far from where training had
    brought them (the loss jumps back up), and exponential growth ends in Inf/NaN.
    Measured on the gradient norm before clipping, after the first 5% of the run (10
    points, a fifth of a short run): 3+ separate spikes above 10x the median of the
    preceding 50 points and above 2x every norm seen before; or 5 consecutive windows
    each with a median >= 2x the previous, ending >= 10x the run's earlier typical norm
    (warning); critical when a NaN/Inf that the optimizer took follows (then one spike
    is enough; an AMP GradScaler's skipped overflow step is not one). Not judged below
    50 points while the run is being written, or 20 once it has ended, nor on a norm
    capped at one value on 2%+ of the steps (recorded after clipping).
    What to do: clip the gradient norm (about 2x the typical norm keeps normal steps
    untouched; 5, 10 or 15 are common thresholds), recording the norm before clipping;
    lower the learning rate; check the initialization.
    """
    series = global_norm(run)
    _require_points(series, is_live(run))
    steps, values = finite_points(series)
    n = values.shape[0]
    warm = min(max(min(EXPLODE_WARMUP_POINTS, n // 5), int(EXPLODE_WARMUP * n)), n - 1)
    _require_unclipped(values[warm:])
    typical = float(np.median(values[warm:]))
    reasons: list[str] = []
    onset: int | None = None
    evidence: dict = {"typical_norm": typical}

    spikes = _spikes(steps, values, warm)
    if spikes is not None and spikes["count"] >= SPIKE_MIN_COUNT:
        onset = spikes["first_step"]
        evidence.update(spikes)
        reasons.append(
            f"the gradient norm spiked {spikes['count']} times to "
            f"more than {fmt_factor(SPIKE_FACTOR)} its running "
            f"median (largest {fmt(spikes['largest'])}, "
            f"{fmt_factor(spikes['largest_factor'])} the median before it, "
            f"at step {fmt_step(spikes['largest_step'])})"
        )
    growth = _exponential_growth(steps, values, warm)
    if growth is not None:
        onset = growth["from_step"] if onset is None else min(onset, growth["from_step"])
        evidence.update(growth)
        reasons.append(
            f"the gradient norm grew {fmt_factor(growth['growth'])} "
            f"from step {fmt_step(growth['from_step'])} to "
            f"{fmt_step(growth['to_step'])} ({GROWTH_WINDOWS} "
            f"windows, each >= {fmt_factor(GROWTH_PER_WINDOW)} the "
            f"one before), to {fmt_factor(growth['end_over_typical'])} "
            f"its earlier typical {fmt(growth['typical'])}"
        )
    bad = nonfinite_steps(run).real
    followed = None
    if onset is not None:
        after = bad[bad >= onset]
        followed = int(after[0]) if after.shape[0] else None
    elif bad.shape[0] and spikes is not None and spikes["count"] >= 1:
        # One spike right before the NaN is enough when the NaN follows it.
        after = bad[bad >= spikes["first_step"]]
        if after.shape[0]:
            onset, followed = spikes["first_step"], int(after[0])
            evidence.update(spikes)
            reasons.append(
                f"the gradient norm spiked to {fmt(spikes['largest'])} "
                f"({fmt_factor(spikes['largest_factor'])} its "
                f"running median) at step {fmt_step(spikes['largest_step'])}"
            )
    if not reasons:
        return []
    message = sentence("; ".join(reasons))
    if followed is not None:
        message += f"; the loss or gradient became NaN/Inf at step {fmt_step(followed)}"
        evidence["nonfinite_step"] = followed
    clip = float(f"{2 * typical:.1g}") if typical > 0 else 5.0
    evidence["suggested_clip"] = clip
    return [
        finding(
            RULE_ID,
            "critical" if followed is not None else "warning",
            "Exploding gradients" + (", then NaN/Inf" if followed is not None else ""),
            message + ".",
            (
                "Clip the gradient norm: "
                f"torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm={fmt(clip)}) "
                f"(about 2x the typical norm {fmt(typical)}; 5, 10 and 15 are common thresholds), and keep "
                "logging the norm before clipping, which it returns (TrainScope: collector.step(grad_norm=...)).",
                "Lower the learning rate (divide by 3-10).",
                "Check the initialization (He for ReLU, Xavier for tanh/sigmoid; no oversized weights).",
            ),
            EXPLODE_SOURCE,
            step=onset,
            evidence=evidence,
        )
    ]


def _require_points(series: Series, live: bool) -> None:
    """`Skip` a norm too short to judge: 50 points while the run is being written (early on, the norm is
    still settling from its init and every wiggle looks like a trend), 20 once it has ended (a finished run
    gets a verdict on what it has; the warm-up and the growth windows scale with its length)."""
    if live:
        require_finite_points(series, EXPLODE_MIN_POINTS, "gradient-norm points")
        return
    have = int(np.isfinite(series.values).sum())
    if have < EXPLODE_ENDED_POINTS and have == len(series):
        raise Skip(f"too few gradient-norm points to judge: {have:,} (needs {EXPLODE_ENDED_POINTS:,})")
    require_finite_points(series, EXPLODE_ENDED_POINTS, "gradient-norm points")


def _require_unclipped(values: np.ndarray) -> None:
    """Skip a norm that was recorded after clipping: capped at max_norm, an explosion
    looks like a healthy run (the rule is defined on the norm before clipping)."""
    ceiling = float(values.max())
    at_ceiling = int(np.count_nonzero(values >= ceiling * (1.0 - CLIPPED_TOLERANCE)))
    if ceiling > 0 and at_ceiling >= max(CLIPPED_MIN_COUNT, CLIPPED_MIN_SHARE * values.shape[0]):
        raise Skip(
            f"the gradient norm sits at the same maximum, {fmt(ceiling)}, on {fmt_pct(at_ceiling / values.shape[0])} "
            "of the steps, as a norm recorded after clipping does, where an explosion cannot show: record the norm "
            "before clipping, which clip_grad_norm_ returns (collector.step(..., grad_norm=that))"
        )


def _spikes(steps: np.ndarray, values: np.ndarray, warm: int) -> dict | None:
    """Separate spikes above SPIKE_FACTOR x the trailing median, after the warm-up."""
    peaks = binned(steps, values, SPIKE_BINS, 1, reduce="max")
    mids = binned(steps, values, SPIKE_BINS, 1, reduce="median", max_sample=32)
    base = trailing_median(mids.values, SPIKE_WINDOW)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = peaks.values / base
    warm_bins = int(np.searchsorted(peaks.steps, steps[min(warm, steps.shape[0] - 1)]))
    candidate = np.zeros(factor.shape[0], bool)
    candidate[warm_bins:] = np.nan_to_num(factor[warm_bins:], nan=0.0) > SPIKE_FACTOR
    # The highest norm seen before each stretch, warm-up included.
    record = np.concatenate(([np.inf], np.maximum.accumulate(peaks.values)[:-1]))
    spike = candidate & (peaks.values > SPIKE_RECORD * record)
    if not spike.any():
        return None
    starts = np.flatnonzero(spike & ~np.concatenate(([False], spike[:-1])))
    idx = np.flatnonzero(spike)
    worst = idx[int(np.argmax(factor[idx]))]
    return {
        "count": int(starts.shape[0]),
        "first_step": int(peaks.steps[starts[0]]),
        "spike_steps": [int(s) for s in peaks.steps[starts[:20]]],
        "largest": float(peaks.values[worst]),
        "largest_factor": float(factor[worst]),
        "largest_step": int(peaks.steps[worst]),
    }


def _exponential_growth(steps: np.ndarray, values: np.ndarray, warm: int) -> dict | None:
    """GROWTH_WINDOWS consecutive windows, each median >= GROWTH_PER_WINDOW x the previous, at any scale."""
    body_steps, body = steps[warm:], values[warm:]
    n = body.shape[0]
    width = n // GROWTH_WINDOWS
    finest = min(GROWTH_MIN_WINDOW, max(GROWTH_MIN_WINDOW_FLOOR, values.shape[0] // 10))
    while width >= finest:
        # Search the finite run's end first: growth that ends in NaN ends where the finite part does.
        meds = chunk_medians(body[n - width * GROWTH_WINDOWS :], GROWTH_WINDOWS)
        if meds.shape[0] == GROWTH_WINDOWS and (meds > 0).all():
            if (meds[1:] / meds[:-1] >= GROWTH_PER_WINDOW).all():
                span = width * GROWTH_WINDOWS
                outside = body[: n - span]
                typical = float(np.median(outside)) if outside.shape[0] >= 10 else float(meds[0])
                if typical > 0 and meds[-1] >= GROWTH_ABOVE_TYPICAL * typical:
                    return {
                        "from_step": int(body_steps[n - span]),
                        "to_step": int(body_steps[-1]),
                        "growth": float(meds[-1] / meds[0]),
                        "window_medians": [float(m) for m in meds],
                        "end_over_typical": float(meds[-1] / typical),
                        "typical": typical,
                    }
        width //= 2
    return None
