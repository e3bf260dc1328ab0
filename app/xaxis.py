"""The x axis of a page's charts: step, epoch, wall time or relative time, one choice for the page.

A chart never re-reads the log for another axis: each series keeps its steps, and
`Axis.along` maps them to the chosen axis (the series' own wall times where it logged
them, else the run's step -> x mapping by interpolation), so smoothing and thinning work
unchanged on the mapped positions. Wall time is milliseconds since the Unix epoch
(plotly's date axis reads numbers so); relative time is in one unit for the whole run,
chosen by how long it ran. Pure numpy; no Streamlit.

Epoch positions are fractional: a log counting whole epochs (Lightning's ``epoch``: 0, 0, 0,
1, 1, ...) is placed by each step's fraction through its epoch (`epoch_knots`), so a whole
epoch's points never stack on one vertical line.
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


def _whole_epochs(values: np.ndarray) -> bool:
    """Whether an epoch series counts whole epochs, each held over several logged steps (Lightning)
    rather than the fraction done at each step (the Trainer's 0.33, 0.67, ...), which is placed as is."""
    if values.shape[0] < 2 or not np.isfinite(values).all():
        return False
    rise = np.diff(values)
    return bool((values == np.floor(values)).all() and (rise >= 0).all() and (rise == 0).any())


def whole_epoch_knots(steps: np.ndarray, epochs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Steps and their epoch positions (increasing steps) between which `np.interp` places any
    step of a log that counts whole `epochs` at `steps`: epoch plus the fraction of it done.

    A step is counted done when logged (as the Trainer's fractional epoch counts it), so the
    last logged step of epoch e sits at e + 1, where Lightning also logs that epoch's
    validation and epoch-end means: a step of epoch e lies in (e, e + 1], at
    e + (step - end of e - 1) / (steps in e), an epoch ending at its last logged step. (Counted
    from each epoch's first logged step instead, a log of every 5th of 15 steps would put the
    validation at e + 2/3.) Epochs no step was logged in are spread evenly between their
    neighbours. What the log cannot say is
    estimated by the median length of the epochs it holds whole (else the first epoch's logged
    span plus one logging interval): where the first epoch began, and how long the last one
    runs. The last epoch is never shorter than its logged steps, so its points never stack at
    its end; a step past its estimated end (another series logged after the epoch count) is
    put at that end, e + 1, never past it."""
    # 1. each epoch's first and last logged step: the epoch count changes after `last`;
    last = np.r_[np.flatnonzero(np.diff(epochs)), epochs.shape[0] - 1]
    first = np.r_[0, last[:-1] + 1]
    ends, counts, starts = steps[last].astype(np.float64), epochs[last], steps[first].astype(np.float64)
    # 2. an epoch's length in steps where the log holds it whole (all but the first and last);
    whole = np.diff(ends[:-1]) / np.diff(counts[:-1])
    interval = float(np.median(np.diff(steps)))
    length = float(np.median(whole)) if whole.shape[0] else ends[0] - starts[0] + interval
    # 3. the first epoch began `length` before its end, and no later than its first logged step;
    begin = min(ends[0] - length, starts[0] - 1.0)
    # 4. the last epoch ends `length` after the one before it, and no sooner than its last logged step.
    before, done = (ends[-2], counts[-2] + 1.0) if ends.shape[0] > 1 else (begin, counts[0])
    finish = max(before + (counts[-1] + 1.0 - done) * length, ends[-1])
    knot_steps = np.r_[begin, ends[:-1], finish]
    return knot_steps, np.r_[counts[0], counts + 1.0]


def epoch_knots(epochs: Series) -> tuple[np.ndarray, np.ndarray]:
    """Steps and epoch positions between which `np.interp` places a step on the epoch axis,
    computed once per epoch series (`MEMO`): the series itself where it counts fractions of
    epochs, `whole_epoch_knots` where it counts whole epochs."""

    def knots() -> tuple[np.ndarray, np.ndarray]:
        values = np.asarray(epochs.values, dtype=np.float64)
        if not _whole_epochs(values):
            return epochs.steps, epochs.values
        return whole_epoch_knots(np.asarray(epochs.steps), values)

    return MEMO.get((epochs.steps, epochs.values), "epoch knots", knots)


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
            return steps if epochs is None else np.interp(steps, *epoch_knots(epochs))
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
