"""Rule `noisy_batches`: The per-step loss scatters widely around its trend: the batch is too small.

The check's docstring says what is measured, why it matters and what to do; the dashboard
and docs/rules.md show it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from trainscope.analyzers.facts import (
    batch_size,
    data_parallel_ranks,
)
from trainscope.analyzers.findings import Finding, Skip
from trainscope.analyzers.rules.common import (
    cite,
    finding,
    fmt,
    fmt_factor,
    fmt_pct,
)
from trainscope.analyzers.rules.curves import (
    LossCurve,
    loss_curve,
    require_positive,
    require_shuffled,
)
from trainscope.analyzers.rules.robust import (
    finite_points,
    tail_start,
)
from trainscope.analyzers.run import Run
from trainscope.logformat import tags as T

RULE_ID = "noisy_batches"
NAME = "noisy batches"  # what the finding is called where it is listed under another
NOISY_SOURCE = cite(
    ("000", 68, "曲线的宽度和batch size有关", "the width of the curve depends on the batch size"),
    (
        "001",
        284,
        "一般来说,包含 \u00a016 个到 128 个样例的 batch(2 的幂)是不错的选择",
        "in general a batch of 16 to 128 examples, a power of 2, is a good choice",
    ),
)
NOISY_MIN_POINTS = 200  # training-loss points before judging the width of a run still being written
NOISY_BIN = 50  # the band is measured within stretches of 50 consecutive steps...
NOISY_MIN_BIN = 10  # ...or, on a shorter log, of a quarter of it (10 points at least)
NOISY_MAX_BINS = 2000  # ...at most 2000 of them, evenly spread over the run
NOISY_MIN_PROGRESS = 0.1  # the trend must have fallen >= 10% of its start to measure the band against
NOISY_WIDTH_RATIO = 0.2  # warning: the typical 10-90% band is >= 20% of the trend's whole fall...
NOISY_SMALL_BATCH = 8  # ...and the batch holds < 8 examples (half the 16 at the bottom of the notes' 16-128)
# (a wide band with a normal batch is the examples' own spread, e.g. an underfit model, and a larger batch
# would not help; on the sample runs B_simple does not tell the two apart, since it soars whenever the
# gradient's mean goes to ~0)
NOISY_SCATTER_CV = 1.3  # without the batch size: the per-step loss's std >= 1.3x its mean within a stretch
# (simulated C-class cross-entropy: batches of 1-4 examples scatter at 1.5-3.3, 8 at 1.0-1.2, 32-128 at
# 0.3-0.7;
# a loss logged as a mean over many steps scatters far less and is never taken for a small batch)
NOISE_SCALE_VETO = 2.0  # no warning when the gradient noise scale B_simple < 2x the batch (mostly signal)
NOISE_SCALE_MIN_SAMPLES = 5  # grad/noise_scale samples needed (a two-batch estimate is itself noisy)
NOISY_TARGET_MAX = 64  # a suggested batch is at most 64x the current one


def stretch_length(n: int) -> int:
    """Points per stretch for a log of `n` points: NOISY_BIN, or a quarter of a short log."""
    return max(NOISY_MIN_BIN, min(NOISY_BIN, n // 4))


def _stretches(values: np.ndarray, stretch: int) -> np.ndarray:
    nb = values.shape[0] // stretch
    body = values[values.shape[0] - nb * stretch :].reshape(nb, stretch)
    return body[:: max(1, nb // NOISY_MAX_BINS)]


def loss_band(values: np.ndarray, stretch: int = NOISY_BIN) -> float:
    """Typical 10-90% width of the per-step loss within stretches of `stretch` steps.

    Typical means the median over stretches, so the steep start of the run and rare
    bad stretches do not decide.
    """
    p10, p90 = np.percentile(_stretches(values, stretch), [10, 90], axis=1)
    return float(np.median(p90 - p10))


def scatter_cv(values: np.ndarray, stretch: int) -> float:
    """Typical std/mean of the per-step loss within stretches (the median over stretches)."""
    body = _stretches(values, stretch)
    mean = body.mean(axis=1)
    ok = mean > 0
    if not ok.any():
        return 0.0
    return float(np.median(body[ok].std(axis=1) / mean[ok]))


def check(run: Run) -> Iterable[Finding]:
    """The per-step loss scatters widely around its trend because each batch holds too few examples.

    Why it matters: the width of the loss curve comes from the batch: a batch of a few
    examples gives a noisy gradient estimate, so steps partly cancel out and the
    learning rate cannot be raised.
    Measured within stretches of 50 steps (typical over the run): the band holding the
    middle 80% of per-step losses is >= 20% of how far the trend has fallen, with a
    batch of fewer than 8 examples, half the bottom of the 16-128 the notes recommend
    (warning); under DDP or FSDP the batch of a step is every rank's together. A
    gradient noise scale B_simple = tr(Sigma)/|G|^2 below 2x the batch vetoes it (the
    gradient is then mostly signal). Without the batch size (most foreign logs), the
    scatter itself tells a tiny batch: a per-step loss whose std is >= 1.3x its mean
    within stretches, with the same 20% band, is a batch of a few examples (a C-class
    cross-entropy over 1-4 examples scatters at 1.5-3.3x, over 32-128 at 0.3-0.7x).
    What to do: increase the batch size (the band narrows as 1/sqrt(batch)), toward
    B_simple when it is known, or accumulate gradients; or lower the learning rate.
    (000's translation says "reduce the batch size"; the CS231n text it translates,
    and the physics, say increase it.)
    """
    loss = loss_curve(run, NOISY_MIN_POINTS)
    require_positive(loss)
    require_shuffled(run)
    batch = batch_size(run)
    stretch = stretch_length(loss.values.shape[0])
    if loss.values.shape[0] < 2 * stretch:
        raise Skip(f"too short to judge: the band needs 2 stretches of {stretch} {T.TRAIN_LOSS} points")
    progress = (loss.start - loss.end) / loss.start
    if progress < NOISY_MIN_PROGRESS:
        raise Skip(
            "the loss trend has not fallen yet, so the batch-to-batch scatter has nothing to compare to"
        )
    # The batch size is one rank's; a step's gradient averages every data-parallel rank's.
    noise = _noise_scale(run)
    width = loss_band(loss.values, stretch)
    ratio = width / (loss.start - loss.end)
    band = {
        "start": loss.start,
        "end": loss.end,
        "band_width": width,
        "trend_fall": loss.start - loss.end,
        "width_ratio": ratio,
        "noise_scale": noise,
    }
    if batch is None:
        return _noisy_without_batch(loss, stretch, band)
    ranks = data_parallel_ranks(run)
    step_batch = batch * ranks
    evidence = {**band, "batch_size": batch, "data_parallel_ranks": ranks, "step_batch": step_batch}
    vetoed = noise is not None and noise < NOISE_SCALE_VETO * step_batch
    if ratio < NOISY_WIDTH_RATIO or step_batch >= NOISY_SMALL_BATCH or vetoed:
        return []
    per_batch = f"{batch} example(s) per batch" + (
        f" on each of {ranks} ranks, {step_batch} a step," if ranks > 1 else ""
    )
    message = (
        f"The per-step train loss spreads over a band typically {fmt(width)} wide (10-90% within "
        f"stretches of {stretch} steps), {fmt_pct(ratio)} of the {fmt(loss.start - loss.end)} the trend "
        f"has fallen in all, with {per_batch} (the notes recommend 16-128)"
    )
    if noise is not None:
        message += (
            f"; the gradient noise scale B_simple is about {fmt(noise)} ({fmt_factor(noise / step_batch)})"
        )
    return [
        finding(
            RULE_ID,
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


def _noisy_without_batch(loss: LossCurve, stretch: int, band: dict[str, float | None]) -> list[Finding]:
    """The batch size is not logged: judge the scatter's shape (std against mean) instead.

    `band` is the evidence both judgements share: the band's width against the trend's fall.
    """
    cv = scatter_cv(loss.values, stretch)
    width, ratio = band["band_width"], band["width_ratio"]
    if cv < NOISY_SCATTER_CV or ratio < NOISY_WIDTH_RATIO:
        return []
    evidence = {**band, "scatter_cv": cv, "batch_size": None}
    return [
        finding(
            RULE_ID,
            "warning",
            "Loss is noisy from batch to batch: the batch looks very small",
            f"The per-step train loss scatters with a standard deviation {fmt(cv)}x its mean (typical within "
            f"stretches of {stretch} steps; batches of 32-128 examples scatter at 0.3-0.7x), over a band "
            f"{fmt(width)} wide, {fmt_pct(ratio)} of the {fmt(loss.start - loss.end)} the trend has fallen. "
            "The run does not log its batch size; this scatter is that of a batch of a few examples.",
            (
                "Increase the batch size to 32-128 (the band narrows as 1/sqrt(batch)); scale the learning "
                "rate up with it, or accumulate gradients over several batches.",
                "Or lower the learning rate, which also damps the step-to-step jumps.",
                "Log the batch size (a batch_size hyperparameter) so this can be judged exactly.",
            ),
            NOISY_SOURCE,
            step=int(loss.steps[0]),
            evidence=evidence,
        )
    ]
