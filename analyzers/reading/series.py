"""Growing a series from appended chunks, and snapshotting it without copying.

A live run is refreshed every few seconds; rebuilding every series from scratch
each time would cost time proportional to the whole run. A `ScalarColumn` keeps
capacity-doubling numpy buffers: a chunk whose steps continue the series is copied
in (amortised O(chunk)); a chunk that goes back (resumed training, a second writer)
is merged so that the latest value of each step wins. Snapshots are read-only views
of the filled part of the buffers: appends write only past that part and a merge
allocates new buffers, so a view handed out never changes.
"""

from __future__ import annotations

import numpy as np

from trainscope.analyzers.run import HistogramSeries, Series

_MIN_CAPACITY = 64


def latest_per_step(
    steps: np.ndarray, values: np.ndarray, walls: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort by step, keeping for each step the value that came last in the input."""
    order = np.argsort(steps, kind="stable")
    s = steps[order]
    last = np.ones(s.shape[0], dtype=bool)
    last[:-1] = s[1:] != s[:-1]
    keep = order[last]
    return steps[keep], values[keep], walls[keep]


def _strictly_increasing(steps: np.ndarray) -> bool:
    return steps.shape[0] < 2 or bool(np.all(steps[1:] > steps[:-1]))


class ScalarColumn:
    """One tag's points: strictly increasing steps, latest value per step."""

    __slots__ = ("_steps", "_values", "_walls", "_n", "_snapshot")

    def __init__(self) -> None:
        self._steps = np.empty(0, dtype=np.int64)
        self._values = np.empty(0, dtype=np.float64)
        self._walls = np.empty(0, dtype=np.float64)
        self._n = 0
        self._snapshot: Series | None = None

    def __len__(self) -> int:
        return self._n

    def append(self, steps: np.ndarray, values: np.ndarray, walls: np.ndarray) -> None:
        if steps.shape[0] == 0:
            return
        self._snapshot = None
        continues = self._n == 0 or steps[0] > self._steps[self._n - 1]
        if continues and _strictly_increasing(steps):
            self._extend(steps, values, walls)
            return
        n = self._n
        merged = latest_per_step(
            np.concatenate((self._steps[:n], steps)),
            np.concatenate((self._values[:n], values)),
            np.concatenate((self._walls[:n], walls)),
        )
        self._steps, self._values, self._walls = (np.array(a) for a in merged)
        self._n = self._steps.shape[0]

    def _extend(self, steps: np.ndarray, values: np.ndarray, walls: np.ndarray) -> None:
        n, k = self._n, steps.shape[0]
        if n + k > self._steps.shape[0]:
            capacity = max(_MIN_CAPACITY, 2 * (n + k))
            for name in ("_steps", "_values", "_walls"):
                old = getattr(self, name)
                new = np.empty(capacity, dtype=old.dtype)
                new[:n] = old[:n]
                setattr(self, name, new)
        self._steps[n : n + k] = steps
        self._values[n : n + k] = values
        self._walls[n : n + k] = walls
        self._n = n + k

    def snapshot(self) -> Series:
        if self._snapshot is None:
            arrays = []
            for buf in (self._steps, self._values, self._walls):
                view = buf[: self._n]
                view.flags.writeable = False
                arrays.append(view)
            self._snapshot = Series(arrays[0], arrays[1], arrays[2])
        return self._snapshot


class HistogramColumn:
    """One tag's histograms by step (latest wins); histograms are few, so a dict does."""

    __slots__ = ("_by_step", "_snapshot")

    def __init__(self) -> None:
        self._by_step: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._snapshot: HistogramSeries | None = None

    def __len__(self) -> int:
        return len(self._by_step)

    def add(self, step: int, edges: np.ndarray, counts: np.ndarray) -> None:
        self._snapshot = None
        self._by_step[int(step)] = (edges, counts)

    def snapshot(self) -> HistogramSeries:
        if self._snapshot is None:
            steps = sorted(self._by_step)
            self._snapshot = HistogramSeries(
                np.asarray(steps, dtype=np.int64),
                [self._by_step[s][0] for s in steps],
                [self._by_step[s][1] for s in steps],
            )
        return self._snapshot


def merge_series(parts: list[Series]) -> Series:
    """One series from several sources of one tag; later parts win on equal steps.

    A step's wall time is the latest known one: trainer_state.json has no clock, so its
    points keep the wall times of the same points in the events beside it."""
    if len(parts) == 1:
        return parts[0]
    walls = [p.wall_times if p.wall_times is not None else np.full(len(p), np.nan) for p in parts]
    all_steps, all_walls = np.concatenate([p.steps for p in parts]), np.concatenate(walls)
    steps, values, wall = latest_per_step(all_steps, np.concatenate([p.values for p in parts]), all_walls)
    known = np.isfinite(all_walls)
    if known.any() and not np.isfinite(wall).all():
        known_steps, known_walls, _ = latest_per_step(all_steps[known], all_walls[known], all_walls[known])
        at = np.minimum(np.searchsorted(known_steps, steps), known_steps.shape[0] - 1)
        fill = ~np.isfinite(wall) & (known_steps[at] == steps)
        wall = np.where(fill, known_walls[at], wall)
    return Series(steps, values, wall)


def series_from_lists(steps: list[int], values: list[float]) -> Series:
    """A series from points in logging order (latest value per step; no wall times)."""
    s = np.asarray(steps, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    if not _strictly_increasing(s):
        s, v, _ = latest_per_step(s, v, v)
    return Series(s, v, None)
