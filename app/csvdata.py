"""A chart's series as CSV: every logged point, not the thinned few the chart draws.

One row per step any of the series logged, one column per series (empty where a series
has no point at that step), and the wall time where the log carries one; NaN and Inf
are written as logged, since a NaN is often what the chart is about.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from trainscope.analyzers.run import Series

STEP_COLUMN, WALL_COLUMN = "step", "wall_time"


def series_frame(named: Sequence[tuple[str, Series]]) -> pd.DataFrame:
    """The series side by side on the union of their steps; ``wall_time`` the first known per step."""
    steps = (
        np.unique(np.concatenate([np.asarray(s.steps) for _, s in named]))
        if named
        else np.array([], np.int64)
    )
    frame = pd.DataFrame({STEP_COLUMN: steps})
    wall = np.full(steps.shape[0], np.nan)
    for name, s in named:
        at = np.searchsorted(steps, s.steps)
        column = np.full(steps.shape[0], np.nan)
        column[at] = s.values
        frame[name] = column
        if s.wall_times is not None and len(s.wall_times) == len(s):
            unknown = np.isnan(wall[at])
            wall[at[unknown]] = np.asarray(s.wall_times, dtype=np.float64)[unknown]
    if np.isfinite(wall).any():
        frame.insert(1, WALL_COLUMN, wall)
    return frame


def series_csv(named: Sequence[tuple[str, Series]]) -> str:
    """`series_frame` as CSV text (wall time in seconds since the Unix epoch)."""
    return series_frame(named).to_csv(index=False, float_format="%.9g", na_rep="")
