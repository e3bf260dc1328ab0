"""The x axis of a page's charts: step, epoch, wall time or relative time, one choice for the page.

A chart never re-reads the log for another axis: each series keeps its steps, and
`Axis.along` maps them to the chosen axis (the series' own wall times where it logged
them, else the run's step -> x mapping by interpolation), so smoothing and thinning work
unchanged on the mapped positions. Wall time is milliseconds since the Unix epoch
(plotly's date axis reads numbers so); relative time is in one unit for the whole run,
chosen by how long it ran. Pure numpy; no Streamlit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from trainscope.analyzers.reading.assemble import EPOCH_SERIES_NAMES
from trainscope.analyzers.run import Run, Series
from trainscope.app.series import MEMO

STEP, EPOCH, WALL, RELATIVE = "step", "epoch", "wall time", "relative time"
AXES = (STEP, EPOCH, WALL, RELATIVE)
# Relative time in the largest unit that leaves the run at least two of them long.
UNITS = ((3600.0, "hours"), (60.0, "minutes"), (1.0, "seconds"))


def epoch_series(run: Run) -> Series | None:
    """The series counting epochs against steps (Lightning's ``epoch``, the Trainer's ``train/epoch``).

    An axis, not a curve: pages draw it as their x axis, never among the other series."""
    for name in EPOCH_SERIES_NAMES:
        s = run.unmapped.get(name)
        if s is not None and len(s):
            return s
    return None


def _timed(series: Series) -> bool:
    return series.wall_times is not None and len(series) > 0 and len(series.wall_times) == len(series)


def clock(run: Run) -> Series | None:
    """The run's series with the most points that carries wall times: its step -> time mapping."""
    timed = [s for s in (*run.scalars.values(), *run.unmapped.values()) if _timed(s)]
    for s in sorted(timed, key=len, reverse=True):
        if np.isfinite(s.wall_times).any():
            return s
    return None


def choices(run: Run) -> list[str]:
    """The axes this run can be drawn on: step always, epoch where logged, wall and relative time where logged."""
    out = [STEP]
    if epoch_series(run) is not None or run.epoch_axis:
        out.append(EPOCH)
    if clock(run) is not None:
        out += [WALL, RELATIVE]
    return out


@dataclass(frozen=True)
class Axis:
    """One run's x axis as chosen: what to put under each point, made once per page render."""

    run: Run
    name: str = STEP
    clock: Series | None = None  # step -> wall time, where the run logs wall times
    start: float = 0.0  # relative time 0: the first wall time the run logged (seconds)
    per: float = 1.0  # seconds per relative-time unit
    unit: str = "seconds"

    @staticmethod
    def of(run: Run, name: str) -> Axis:
        """`name` for `run`; step where the run cannot be drawn on `name` (nothing logs it)."""
        if name not in choices(run):
            name = STEP
        if name not in (WALL, RELATIVE):
            return Axis(run, name)
        ref = clock(run)
        assert ref is not None
        known = np.isfinite(ref.wall_times)
        start = min(
            float(np.nanmin(s.wall_times))
            for s in (*run.scalars.values(), *run.unmapped.values())
            if _timed(s) and np.isfinite(s.wall_times).any()
        )
        span = float(ref.wall_times[known].max()) - start
        per, unit = next((u for u in UNITS if span >= 2 * u[0]), UNITS[-1])
        return Axis(
            run,
            name,
            Series(ref.steps[known], np.zeros(int(known.sum())), ref.wall_times[known]),
            start,
            per,
            unit,
        )

    def title(self, tag: str | None = None) -> str:
        """``step`` (``epoch`` where the log's steps of `tag` count epochs), ``relative time (minutes)``."""
        if self.name == STEP:
            return self.run.x_axis(tag) if tag is not None else STEP
        if self.name == RELATIVE:
            return f"{RELATIVE} ({self.unit})"
        if self.name == WALL:
            return f"{WALL} (UTC)"
        return EPOCH

    def _seconds(self, steps: np.ndarray, walls: np.ndarray | None) -> np.ndarray:
        assert self.clock is not None
        if walls is not None and len(walls) == len(steps) and np.isfinite(walls).all():
            own = np.asarray(walls, dtype=np.float64)
        else:
            own = np.interp(steps, self.clock.steps, self.clock.wall_times)
        # A clock set back mid-run (resumed on another host) must not fold the curve over itself.
        return np.maximum.accumulate(own) if own.shape[0] else own

    def positions(
        self, steps: np.ndarray, tag: str | None = None, walls: np.ndarray | None = None
    ) -> np.ndarray:
        """Where `steps` (of `tag`, logged at `walls`) fall on this axis."""
        steps = np.asarray(steps)
        if self.name == STEP or (self.name == EPOCH and tag is not None and tag in self.run.epoch_axis):
            return steps
        if self.name == EPOCH:
            epochs = epoch_series(self.run)
            return steps if epochs is None else np.interp(steps, epochs.steps, epochs.values)
        seconds = self._seconds(steps, walls)
        if self.name == WALL:
            return seconds * 1000.0  # plotly's date axis reads numbers as ms since the epoch
        return (seconds - self.start) / self.per

    def along(self, series: Series, tag: str | None = None) -> Series:
        """`series` with its steps replaced by their positions on this axis (values, wall times kept)."""
        if self.name == STEP:
            return series
        epochs = epoch_series(self.run)
        basis = (
            self.name,
            self.start,
            self.per,
            tag is not None and tag in self.run.epoch_axis,
            id(self.clock.steps) if self.clock is not None else None,  # the run's, alive as long as it
            id(epochs.steps) if epochs is not None else None,
        )
        arrays = (series.steps,) if series.wall_times is None else (series.steps, series.wall_times)
        x = MEMO.get(arrays, basis, lambda: self.positions(series.steps, tag, series.wall_times))
        return Series(x, series.values, series.wall_times)

    def at(self, step: int) -> float:
        """Where one step (a finding's) falls on this axis."""
        return float(self.positions(np.array([step]))[0])

    def layout(self) -> dict[str, Any]:
        """Plotly x-axis settings (a date axis for wall time)."""
        return {"type": "date"} if self.name == WALL else {}
