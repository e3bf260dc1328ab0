"""Robust, vectorized smoothing and trend estimates shared by the rules.

Per-step training signals are noisy (one minibatch each) and carry outliers (a bad
batch, an AMP overflow step). Every estimate here is a median over bins of
consecutive points, never a mean or a single value, so one odd step cannot make or
break a finding. All of it is numpy on whole arrays: a 1,000,000-step series is cut
into at most a few hundred bins and each bin's median is taken from an evenly
strided sample of at most `MAX_SAMPLE_PER_BIN` of its points, so a rule costs a few
milliseconds however long the run.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from trainscope.analyzers.run import Series

# Points per bin used for a bin's median; beyond this a strided sample is as good and far cheaper.
MAX_SAMPLE_PER_BIN = 256


@dataclass(frozen=True)
class Curve:
    """A smoothed curve: one robust summary per bin of consecutive points."""

    steps: np.ndarray  # int64, the first step of each bin
    values: np.ndarray  # float64, the bin's summary (median unless stated)
    bin_size: int  # points per bin (the first bin may hold fewer)

    def __len__(self) -> int:
        return int(self.values.shape[0])


def finite_points(series: Series) -> tuple[np.ndarray, np.ndarray]:
    """Steps and values of `series` without NaN/Inf (those are `nonfinite`'s business)."""
    keep = np.isfinite(series.values)
    if keep.all():
        return series.steps, series.values
    return series.steps[keep], series.values[keep]


def _layout(n: int, max_bins: int, min_per_bin: int) -> tuple[int, int, int]:
    """(head, k, nb): a short first bin of `head` points, then `nb` full bins of `k` points.

    The short bin sits at the start so that the last bin always ends at the newest
    point (a live run is judged on its latest data), and no point is dropped.
    """
    k = max(min_per_bin, -(-n // max_bins), 1)
    nb = n // k
    head = n - nb * k
    return head, k, nb


def _stride(k: int, max_sample: int) -> int:
    """Stride that leaves at most `max_sample` of `k` points."""
    return max(1, -(-k // max_sample))


def _bin_reduce(
    values: np.ndarray, max_bins: int, min_per_bin: int, reduce: str, max_sample: int
) -> tuple[np.ndarray, int, int]:
    n = values.shape[0]
    head, k, nb = _layout(n, max_bins, min_per_bin)
    body = values[head:].reshape(nb, k)
    if reduce == "median":
        stride = _stride(k, max_sample)
        out = np.median(body[:, ::stride], axis=1)
        first = np.median(values[:head:stride]) if head else None
    elif reduce == "max":
        out = body.max(axis=1)
        first = values[:head].max() if head else None
    elif reduce == "min":
        out = body.min(axis=1)
        first = values[:head].min() if head else None
    else:  # pragma: no cover - programming error
        raise ValueError(reduce)
    if first is not None:
        out = np.concatenate(([first], out))
    return out, head, k


def binned(
    steps: np.ndarray,
    values: np.ndarray,
    max_bins: int = 200,
    min_per_bin: int = 1,
    reduce: str = "median",
    max_sample: int = MAX_SAMPLE_PER_BIN,
) -> Curve:
    """Summarize consecutive points into at most `max_bins` (+1) bins.

    `min_per_bin` > 1 forces smoothing on short series (a bin median of 5 points
    already ignores two outliers). `reduce` is "median", "max" or "min"; a bin's
    median is taken over an evenly strided sample of at most `max_sample` points.
    """
    n = int(values.shape[0])
    if n == 0:
        return Curve(np.zeros(0, np.int64), np.zeros(0), 1)
    out, head, k = _bin_reduce(values, max_bins, min_per_bin, reduce, max_sample)
    starts = steps[head::k][: out.shape[0] - (1 if head else 0)]
    if head:
        starts = np.concatenate((steps[:1], starts))
    return Curve(starts.astype(np.int64), out.astype(np.float64), k)


def trailing_median(x: np.ndarray, window: int) -> np.ndarray:
    """Median of each point's `window` predecessors (itself excluded); NaN before any exists.

    Meant for already-binned curves (a few thousand points at most). Excluding the
    point itself makes it a fair yardstick for "is this point a spike?".
    """
    n = x.shape[0]
    if n == 0:
        return x.astype(np.float64)
    padded = np.concatenate((np.full(window, np.nan), x.astype(np.float64)))
    windows = np.lib.stride_tricks.sliding_window_view(padded[:-1], window)
    out = np.full(n, np.nan)
    have = np.arange(n) >= 1
    if have.any():
        with warnings.catch_warnings():  # all-NaN windows cannot occur past the first point
            warnings.simplefilter("ignore", RuntimeWarning)
            out[have] = np.nanmedian(windows[have], axis=1)
    return out


def chunk_medians(values: np.ndarray, n_chunks: int) -> np.ndarray:
    """Medians of the last `n_chunks` equal consecutive chunks (the oldest remainder is dropped)."""
    k = values.shape[0] // n_chunks
    if k == 0:
        return np.zeros(0)
    body = values[values.shape[0] - k * n_chunks :].reshape(n_chunks, k)
    stride = _stride(k, MAX_SAMPLE_PER_BIN)
    return np.median(body[:, ::stride], axis=1)


def row_percentiles(rows: np.ndarray, qs: tuple[float, ...]) -> list[np.ndarray]:
    """np.percentile(rows, q, axis=1) for each q (linear interpolation), from one sort.

    On many short rows np.percentile partitions each row once per call; one sort of the
    matrix is 5-6x faster for a 1M-point curve cut into rows of 25.
    """
    ordered = np.sort(rows, axis=1)
    last = ordered.shape[1] - 1
    out = []
    for q in qs:
        pos = q / 100 * last
        lo = int(np.floor(pos))
        hi = min(lo + 1, last)
        out.append(ordered[:, lo] + (ordered[:, hi] - ordered[:, lo]) * (pos - lo))
    return out


def robust_sigma(x: np.ndarray) -> float:
    """Standard deviation estimated from the median absolute deviation (outliers do not count)."""
    if x.shape[0] == 0:
        return float("nan")
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def head_median(values: np.ndarray, fraction: float, minimum: int = 1) -> float:
    """Median of the first `fraction` of `values` (at least `minimum` points)."""
    k = max(minimum, int(values.shape[0] * fraction))
    return float(np.median(values[:k]))


def tail_median(values: np.ndarray, fraction: float, minimum: int = 1) -> float:
    """Median of the last `fraction` of `values` (at least `minimum` points)."""
    k = max(minimum, int(values.shape[0] * fraction))
    return float(np.median(values[-k:]))


def tail_start(n: int, fraction: float, minimum: int) -> int:
    """Index where the last `fraction` of `n` points (at least `minimum`) begins."""
    return max(0, n - max(minimum, int(n * fraction)))


def value_at(steps: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The latest value logged at or before each step of `at` (NaN before the first)."""
    idx = np.searchsorted(steps, at, side="right") - 1
    out = np.full(at.shape[0], np.nan)
    ok = idx >= 0
    out[ok] = values[idx[ok]]
    return out


def segment_medians(
    steps: np.ndarray, values: np.ndarray, edges: np.ndarray, which: np.ndarray | None = None
) -> np.ndarray:
    """Median of the points in (edges[i-1], edges[i]] for each i (the first segment is open on the left).

    Used to put a per-step training signal beside a sparse one (validation once per
    epoch): the training value "at" a validation step is the median over the steps
    since the previous validation. Segments with no point are NaN; with `which`, only
    those segments are computed (the others are NaN).
    """
    right = np.searchsorted(steps, edges, side="right")
    left = np.concatenate(([0], right[:-1]))
    out = np.full(edges.shape[0], np.nan)
    for i in range(edges.shape[0]) if which is None else which:  # one per validation
        lo, hi = left[i], right[i]
        if hi > lo:
            out[i] = np.median(values[lo : hi : _stride(hi - lo, MAX_SAMPLE_PER_BIN)])
    return out


def spread_indices(n: int, limit: int) -> np.ndarray:
    """At most `limit` indices evenly spread over range(n), the last one included."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


def state_at(steps: np.ndarray, flags: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The boolean `flags[i]` in force at each step of `at` (it holds from steps[i] on; False before).

    Works on the few change points of `flags`, so looking up a sampled series in a
    1,000,000-step one costs a compare, not a search per sample.
    """
    if steps.shape[0] == 0:
        return np.zeros(at.shape[0], bool)
    starts = np.concatenate(([0], np.flatnonzero(flags[1:] != flags[:-1]) + 1))
    idx = np.searchsorted(steps[starts], at, side="right") - 1
    out = np.zeros(at.shape[0], bool)
    ok = idx >= 0
    out[ok] = flags[starts[idx[ok]]]
    return out


def longest_tail_run(mask: np.ndarray) -> int:
    """How many trailing entries of `mask` are True (the current streak)."""
    if mask.shape[0] == 0 or not mask[-1]:
        return 0
    false_idx = np.flatnonzero(~mask)
    return int(mask.shape[0] - (false_idx[-1] + 1 if false_idx.shape[0] else 0))


def sustained_above(series: Series, threshold: float, sustain: int) -> tuple[int, float, int] | None:
    """(onset step, streak median, streak length) when the last `sustain`+ samples all exceed `threshold`."""
    steps, values = finite_points(series)
    streak = longest_tail_run(values > threshold)
    if streak < sustain:
        return None
    return int(steps[-streak]), float(np.median(values[-streak:])), streak


def max_finite_samples(layers: Mapping[str, Series]) -> int:
    """The most finite samples any one of `layers` has."""
    return max(int(np.isfinite(s.values).sum()) for s in layers.values())


def theil_sen(x: np.ndarray, y: np.ndarray, max_points: int = 400) -> tuple[float, float]:
    """(slope, intercept) of the Theil-Sen line: the median of pairwise slopes, robust to outliers.

    Meant for short series (a few hundred points; longer ones are thinned evenly to
    `max_points`, which keeps the estimate and bounds the pairs at ~80,000).
    """
    if x.shape[0] > max_points:
        keep = spread_indices(x.shape[0], max_points)
        x, y = x[keep], y[keep]
    x = x.astype(np.float64)
    i, j = np.triu_indices(x.shape[0], k=1)
    dx = x[j] - x[i]
    ok = dx != 0
    if not ok.any():
        return 0.0, float(np.median(y))
    slope = float(np.median((y[j] - y[i])[ok] / dx[ok]))
    return slope, float(np.median(y - slope * x))
