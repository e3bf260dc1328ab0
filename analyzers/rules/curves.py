"""The training-loss curve as every loss rule reads it: smoothed, its start and end, chance level, the lr.

Shared measures, no verdicts: `loss_curve` (bin medians of the finite loss and a robust
starting level), `chance_loss` (ln C for a C-class cross-entropy), the logged learning
rate and whether it moved, and the accuracy helpers the generalization rules share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from trainscope.analyzers.facts import is_live, num_classes
from trainscope.analyzers.findings import Skip
from trainscope.analyzers.rules.common import require_finite_points, require_scalar
from trainscope.analyzers.rules.labels import looks_unshuffled
from trainscope.analyzers.rules.robust import Curve, binned, finite_points, robust_sigma, theil_sen, value_at
from trainscope.analyzers.run import Run, Series
from trainscope.logformat import tags as T

PLATEAU_WINDOW = 0.3  # "recently": the last 30% of the run (plateaus, underfitting)

TREND_BINS = 200  # resolution of the smoothed loss curve (bins over the whole run)
TREND_MIN_PER_BIN = 5  # each smoothed point is the median of up to 5 logged points...
TREND_POINTS_PER_BIN_STEP = 40  # ...5 from 200 points on, fewer below (a 20-point log is already sparse)
CHANCE_MIN_START = 0.5  # ln C is the yardstick only for a loss starting >= 0.5 ln C (a C-class cross-entropy)
START_POINTS = 20  # the start is the median of the first 5% of the points (20 at most)...
START_PRECISION = 0.02  # ...more on a noisy curve, until that median's standard error is < 2% of it...
START_MAX_SHARE = 0.1  # ...up to the first 10% of the points, while no trend shows across them...
START_DROP_Z = (
    3.0  # ...or the first point alone when it stands > 3 sigma of scatter above that (a steep drop)
)
START_GROWTH = 1.1  # the window grows by 10% a try (a few dozen medians on a 1,000,000-point log)
TREND_INEFFICIENCY = 1.3  # a Theil-Sen line's standard error, relative to least squares' on normal noise
MIN_CURVE_POINTS = 4  # the fewest points any verdict on a curve is taken on: fewer is truly too short
SIGNIFICANT_Z = 3.0  # a change counts when it is >= 3 standard errors (of the medians compared) away from 0


@dataclass(frozen=True)
class LossCurve:
    steps: np.ndarray  # finite training-loss points
    values: np.ndarray
    curve: Curve  # bin medians
    start: float  # the level at the start (first points)
    noise: float  # robust std of the point-to-point scatter around the trend (nan below 4 points)
    live: bool  # the run may still be growing

    @property
    def end(self) -> float:
        """The current level: median of the last 10% of the smoothed curve (3 bins at least)."""
        return float(np.median(self.curve.values[-max(3, len(self.curve) // 10) :]))

    def median_error(self, points: int) -> float:
        """Standard error of a median of `points` consecutive raw points (1.25 sigma / sqrt(n))."""
        return 1.2533 * self.noise / math.sqrt(max(points, 1))


def trend_bin_size(n: int) -> int:
    """Points per smoothed bin for a series of `n` points: 1 for sparse logs, 5 for dense ones."""
    return max(1, min(TREND_MIN_PER_BIN, n // TREND_POINTS_PER_BIN_STEP))


def start_points(n: int) -> int:
    """The fewest first points the start's median takes: 5% of them, 1 to `START_POINTS`."""
    return max(1, min(START_POINTS, n // 20))


def start_window(values: np.ndarray, noise: float) -> int:
    """How many of the first points the start's median takes: as many as the scatter needs.

    Why: a median of 20 points is precise on a clean curve, but where single batches
    swing 0.03-2.9 (a batch of 4) it is off by 20%+ from the level the run starts at,
    and every comparison with the start inherits that ("fell 20%" where it did not
    move). So the window grows from `start_points` until the median's standard error,
    1.25 sigma / sqrt(k), is under `START_PRECISION` of the level, up to
    `START_MAX_SHARE` of the points; sigma is the larger of the whole curve's scatter
    (`noise`) and that of the window itself (a run stuck at a constant prediction is
    quiet later but noisy at first). A clean curve keeps `start_points`, and so does a
    log of fewer than 400 points (its first 5% under `START_POINTS`): sampled that
    sparsely, a curve's bends pass for scatter and would grow the window across them.
    A noisy curve that falls across the grown window has no single start level there
    (a loss dropping from 1.3 to 0.25 within its first 10%): where a robust line
    (Theil-Sen) through the window falls by more than 3 of its standard errors and
    more than that precision, the window stays at `start_points`.
    """
    n = values.shape[0]
    least = start_points(n)
    cap = max(least, int(n * START_MAX_SHARE))
    if not math.isfinite(noise) or least < START_POINTS or cap <= least:
        return least
    k, sigma = least, noise
    while k < cap:
        own = noise_sigma(values[:k])
        sigma = max(noise, own) if math.isfinite(own) else noise
        level = abs(float(np.median(values[:k])))
        if 1.2533 * sigma / math.sqrt(k) <= START_PRECISION * level:
            break
        k = min(cap, max(k + 1, int(k * START_GROWTH)))
    if k == least:
        return least
    level = abs(float(np.median(values[:k])))
    slope, _ = theil_sen(np.arange(k, dtype=np.float64), values[:k])
    error = TREND_INEFFICIENCY * sigma * math.sqrt(12 / min(k, 400))  # the line's change (on <= 400 points)
    if abs(slope) * (k - 1) > max(SIGNIFICANT_Z * error, START_PRECISION * level):
        return least
    return k


def start_level(values: np.ndarray, noise: float) -> float:
    """Where a curve starts: the median of its first points, or its first point after a steep drop.

    The median (over `start_window` points: more on a noisy curve) resists noisy
    batches, but a median over the first points skips a steep first drop (0.85 ->
    0.001 within five logs reads as "started at 0.01"). So the first point alone is the
    start when it stands more than `START_DROP_Z` sigma of the curve's scatter above
    the median of the first `start_points`: no noise makes such a gap.
    """
    n = values.shape[0]
    first = float(values[0])
    if math.isfinite(noise) and first - float(np.median(values[: start_points(n)])) > START_DROP_Z * noise:
        return first
    return float(np.median(values[: start_window(values, noise)]))


def noise_sigma(values: np.ndarray) -> float:
    """Robust std of the point-to-point scatter around a smooth trend (nan below 4 points).

    From second differences, which cancel any locally straight trend: for white noise
    of std s they have std s*sqrt(6). A curved trend sampled sparsely adds to them, so
    the estimate errs high, on the side of "not significant".
    """
    if values.shape[0] < 4:
        return float("nan")
    second = values[2:] - 2 * values[1:-1] + values[:-2]
    return robust_sigma(second[:: max(1, second.shape[0] // 20_000)]) / math.sqrt(6)


def loss_curve(run: Run, live_need: int) -> LossCurve:
    """The finite training loss, smoothed, with its start, noise and whether the run is live.

    `Skip` when the loss is missing, has fewer than `MIN_CURVE_POINTS` points, or has
    fewer than `live_need` while the run is still being written (early on a live run,
    every decay looks linear and every wiggle like a trend). A run that has ended is
    judged on what it has, and each rule weighs its evidence against `noise`.
    """
    series = require_scalar(run, T.TRAIN_LOSS, "the training loss")
    live = is_live(run)
    require_finite_points(series, live_need if live else MIN_CURVE_POINTS, f"{T.TRAIN_LOSS} points")
    steps, values = finite_points(series)
    curve = binned(steps, values, TREND_BINS, trend_bin_size(values.shape[0]))
    noise = noise_sigma(values)
    return LossCurve(steps, values, curve, start_level(values, noise), noise, live)


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


def as_fraction(values: np.ndarray) -> np.ndarray:
    """Accuracy as a fraction: loggers that write percent (0-100) are divided by 100."""
    finite = values[np.isfinite(values)]
    return values / 100.0 if finite.shape[0] and finite.max() > 1.5 else values


def centered_median3(values: np.ndarray) -> np.ndarray:
    """Each point replaced by the median of itself and its two neighbours (ends kept)."""
    if values.shape[0] < 3:
        return values.copy()
    windows = np.lib.stride_tricks.sliding_window_view(values, 3)
    return np.concatenate((values[:1], np.median(windows, axis=1), values[-1:]))


@dataclass(frozen=True)
class ValidationSet:
    """One validation curve pair: the run's own (`name` "") or a named eval set's (``val/loss/<set>``)."""

    name: str
    loss: Series | None
    acc: Series | None

    def label(self, what: str) -> str:
        """``"val loss"``, or ``"val loss on eval set `squad`"``."""
        return f"val {what}" + (f" on eval set `{self.name}`" if self.name else "")


def validation_sets(run: Run) -> list[ValidationSet]:
    """Every validation curve of the run: ``val/loss``/``val/acc`` first, then each named eval set.

    Hugging Face runs evaluated on several sets log ``eval_<set>_loss``; each set is a
    validation curve of its own, and a rule judges each.
    """
    sets = [ValidationSet("", run.scalar(T.VAL_LOSS), run.scalar(T.VAL_ACC))]
    losses, accs = run.layers(T.VAL_LOSS_SET_PREFIX), run.layers(T.VAL_ACC_SET_PREFIX)
    sets += [
        ValidationSet(name, losses.get(name), accs.get(name)) for name in sorted(set(losses) | set(accs))
    ]
    return [s for s in sets if s.loss is not None or s.acc is not None]
