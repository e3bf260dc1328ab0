"""What happens to a series between the log and the screen: smoothing, thinning, binning.

Every point stays on the server; only what a chart can show goes to the browser.
The order matters and is the same everywhere: smooth the full series first, then
thin the raw and the smoothed curve separately for display, so that neither the
smoothing nor the spikes depend on how many points the screen has room for.
Pure numpy (and scipy's linear filter); no Streamlit, no plotly.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np
from scipy.signal import lfilter
from tsdownsample import MinMaxLTTBDownsampler

# Points per trace sent to the browser: about two per pixel of a wide chart. Fewer
# and a long run's curve loses its shape; more and the browser slows, showing nothing more.
DISPLAY_POINTS = 2000
# MinMaxLTTB first keeps the min and max of this many times `n_out` buckets (so every
# spike survives), then picks the visually important points among them (LTTB).
MINMAX_RATIO = 4
# Time bins of a layers x steps heatmap: more than a chart is wide in pixels is wasted.
HEATMAP_BINS = 300

_DOWNSAMPLER = MinMaxLTTBDownsampler()
# Thinned and smoothed series kept per source array: a page redrawn with nothing new (a live
# tick, another x axis, another run and back) builds its figures from them.
MEMO_ENTRIES = 512


class ArrayMemo:
    """Results computed from numpy arrays, kept while those very arrays live.

    Keyed by the arrays' identity (a run that did not change keeps its arrays, `app.data`),
    checked through weak references so a recycled id never returns another array's result;
    the least recently used entries go first past `most`.
    """

    def __init__(self, most: int = MEMO_ENTRIES) -> None:
        self.most = most
        self._entries: OrderedDict[Hashable, tuple[tuple[weakref.ref, ...], Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, arrays: Sequence[np.ndarray], extra: Hashable, compute: Callable[[], Any]) -> Any:
        key = (tuple(id(a) for a in arrays), extra)
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and all(ref() is a for ref, a in zip(hit[0], arrays, strict=True)):
                self._entries.move_to_end(key)
                return hit[1]
        value = compute()
        try:
            refs = tuple(weakref.ref(a) for a in arrays)
        except TypeError:  # not weak-referenceable (a list): not kept
            return value
        with self._lock:
            self._entries[key] = (refs, value)
            while len(self._entries) > self.most:
                self._entries.popitem(last=False)
        return value


MEMO = ArrayMemo()


def ema(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: a debiased exponential moving average.

    ``s_n = a_n / (1 - weight**k_n)`` with ``a_n = weight * a_(n-1) + (1 - weight) * x_n``,
    ``k_n`` counting the finite points so far. Non-finite values are passed through
    unchanged and do not enter the average (as TensorBoard does); a constant series is
    returned as is. ``weight`` 0 returns the values, 0.6 is TensorBoard's default.
    """
    x = np.asarray(values, dtype=np.float64)
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    finite = np.isfinite(x)
    every = bool(finite.all())
    xf = x if every else x[finite]
    if weight == 0.0 or xf.shape[0] == 0 or (every and xf.min() == xf.max()):
        return x.copy()
    # 1. the biased average a_n, a first-order linear filter over the finite points;
    smoothed = lfilter([1.0 - weight], [1.0, -weight], xf)
    # 2. divided by the weight the zero start took away, 1 - weight**k (k = 1, 2, ...): only
    #    the first points need it, past them weight**k is below double precision.
    head = min(xf.shape[0], int(np.ceil(np.log(np.finfo(float).eps) / np.log(weight))) + 1)
    smoothed[:head] /= -np.expm1(np.arange(1, head + 1) * np.log(weight))
    if every:
        return smoothed
    out = x.copy()
    out[finite] = smoothed
    return out


def smoothed(values: np.ndarray, weight: float) -> np.ndarray:
    """`ema`, computed once per series and weight (the same array back each time it is asked)."""
    return MEMO.get((values,), ("ema", weight), lambda: ema(values, weight))


def thinned(x: np.ndarray, y: np.ndarray, n_out: int = DISPLAY_POINTS) -> np.ndarray:
    """`downsample`, computed once per pair of arrays."""
    return MEMO.get((x, y), ("thin", n_out), lambda: downsample(x, y, n_out))


def downsample(x: np.ndarray, y: np.ndarray, n_out: int = DISPLAY_POINTS) -> np.ndarray:
    """Indices of at most `n_out` finite points of (x, y) that draw the same curve, spikes kept.

    MinMaxLTTB (Van Der Donckt et al. 2023): the minimum and maximum of each of
    ``MINMAX_RATIO * n_out`` buckets are kept, then Largest-Triangle-Three-Buckets picks
    among them. A one-step spike is a bucket's maximum, so it is always kept. `x` must
    be increasing (steps are). Non-finite values are left out: show them apart
    (`nonfinite_indices`).
    """
    x = np.ascontiguousarray(x)
    y = np.ascontiguousarray(y, dtype=np.float64)
    finite_mask = np.isfinite(y)
    if finite_mask.all():  # the usual case: no copies
        if y.shape[0] <= n_out:
            return np.arange(y.shape[0])
        return np.asarray(
            _DOWNSAMPLER.downsample(x, y, n_out=n_out, minmax_ratio=MINMAX_RATIO), dtype=np.int64
        )
    finite = np.flatnonzero(finite_mask)
    if finite.shape[0] <= n_out:
        return finite
    picked = _DOWNSAMPLER.downsample(
        np.ascontiguousarray(x[finite]),
        np.ascontiguousarray(y[finite]),
        n_out=n_out,
        minmax_ratio=MINMAX_RATIO,
    )
    return finite[np.asarray(picked, dtype=np.int64)]


def nonfinite_indices(y: np.ndarray, n_out: int = DISPLAY_POINTS) -> np.ndarray:
    """Indices of NaN/Inf values, at most `n_out` (the first always among them, then evenly spread)."""
    bad = np.flatnonzero(~np.isfinite(np.asarray(y, dtype=np.float64)))
    if bad.shape[0] <= n_out:
        return bad
    return bad[np.unique(np.linspace(0, bad.shape[0] - 1, n_out).round().astype(np.int64))]


def bin_edges(lo: float, hi: float, bins: int) -> np.ndarray:
    """`bins` equal bins covering [lo, hi] (a single bin around lo when lo == hi)."""
    if hi <= lo:
        return np.array([lo - 0.5, lo + 0.5])
    return np.linspace(lo, hi, bins + 1)


def measured_edges(positions: np.ndarray, bins: int) -> np.ndarray:
    """Bin edges at the positions where something was measured: one bin per position when there
    are at most `bins`, else `bins` bins holding about as many measured positions each.

    Equal-width bins over a log measured every step for 200 steps and every 50th after
    leave most bins past step 200 empty: white stripes of "missing" data that was never
    meant to be there. Bins that start at measured positions are never empty; each spans
    to the next measurement, which is what the measurement stands for. `positions`
    need not be sorted or unique; the last edge lies just past the last position.
    """
    u = np.asarray(positions, dtype=np.float64)
    if u.shape[0] > 1 and not (np.diff(u) > 0).all():  # one layer's steps are sorted already
        u = np.unique(u)
    u = u[np.isfinite(u)]
    if u.shape[0] == 0:
        return np.array([-0.5, 0.5])
    left = u
    if u.shape[0] > bins:
        left = u[np.unique(np.linspace(0, u.shape[0] - 1, bins + 1).round().astype(np.int64))[:-1]]
    gap = float(np.median(np.diff(u[-50:]))) if u.shape[0] > 1 else 1.0
    return np.r_[left, u[-1] + gap]


def bin_bounds(steps: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Where each bin of `edges` starts in the sorted `steps`, and where the last one ends
    (``len(edges)`` indices): bin i is ``steps[b[i]:b[i + 1]]``. Points before the first edge
    fall in the first bin, points past the last in the last.

    One binary search per edge, not per point: a million steps into 300 bins costs
    microseconds, so each layer of a heatmap bins for free once its steps are bounded.
    """
    bounds = np.searchsorted(np.asarray(steps), edges, side="left")
    bounds[0], bounds[-1] = 0, np.asarray(steps).shape[0]
    return bounds


def bin_counts(steps: np.ndarray, edges: np.ndarray, bounds: np.ndarray | None = None) -> np.ndarray:
    """How many points (finite or not) fall in each bin of `edges` (see `bin_bounds`)."""
    return np.diff(bin_bounds(steps, edges) if bounds is None else bounds)


def hold(values: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """`values` where `measured` > 0; a bin without a measurement holds the one before it (between
    a row's first and last measurement; before and after, NaN stays)."""
    out = np.asarray(values, dtype=np.float64).copy()
    has = np.asarray(measured) > 0
    if not has.any():
        return out
    idx = np.where(has, np.arange(out.shape[0]), 0)
    np.maximum.accumulate(idx, out=idx)
    first, last = int(np.argmax(has)), int(out.shape[0] - 1 - np.argmax(has[::-1]))
    inside = np.zeros(out.shape[0], bool)
    inside[first : last + 1] = True
    fill = inside & ~has
    out[fill] = out[idx[fill]]
    return out


def bin_max(
    steps: np.ndarray, values: np.ndarray, edges: np.ndarray, bounds: np.ndarray | None = None
) -> np.ndarray:
    """The largest finite value in each bin of `edges` (NaN for a bin with none).

    The maximum, not the mean, so that a spike still shows after binning. `steps`
    must be increasing; `bounds` is their `bin_bounds`, when already known.
    """
    values = np.asarray(values, dtype=np.float64)
    bounds = bin_bounds(steps, edges) if bounds is None else bounds
    out = np.full(edges.shape[0] - 1, np.nan)
    finite = np.isfinite(values)
    if not finite.all():
        values = np.where(finite, values, np.nan)  # fmax skips NaN: Inf must not win a bin
    full = np.flatnonzero(np.diff(bounds) > 0)
    if full.shape[0]:
        # steps are sorted, so each bin's points are contiguous: reduce every bin at once.
        out[full] = np.fmax.reduceat(values, bounds[full])
    return out


def spans(values: np.ndarray, factor: float) -> bool:
    """Whether the positive finite values span more than `factor` (max > factor * min): worth a log axis."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v) & (v > 0)]
    return v.shape[0] > 1 and float(v.max()) > factor * float(v.min())
