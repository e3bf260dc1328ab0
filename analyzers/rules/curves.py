"""The training-loss curve as every loss rule reads it: smoothed, its start and end, chance level, the lr.

Shared measures, no verdicts: `loss_curve` (bin medians of the finite loss and a robust
starting level), `chance_loss` (ln C for a C-class cross-entropy), the logged learning
rate and whether it moved, and the accuracy helpers the generalization rules share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from analyzers.facts import num_classes
from analyzers.findings import Skip
from analyzers.rules.common import require_finite_points, require_scalar
from analyzers.rules.labels import looks_unshuffled
from analyzers.rules.robust import Curve, binned, finite_points, value_at
from analyzers.run import Run
from logformat import tags as T

PLATEAU_WINDOW = 0.3  # "recently": the last 30% of the run (plateaus, underfitting)

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
