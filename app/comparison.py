"""What the Compare page draws: several metrics at once, each with the chosen runs overlaid,
all on one x axis.

Metrics are the canonical tags the runs share first (loss, val loss, accuracy, learning
rate, gradient norm: `DEFAULT_METRICS`), then any other series a run logs. The epoch
counter is never among them: it is an axis (`app.xaxis`). Relative time is in one unit
for every run of the page, so runs of different lengths line up. Pure; no Streamlit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from trainscope.analyzers.reading.assemble import EPOCH_SERIES_NAMES
from trainscope.analyzers.run import Run, Series
from trainscope.app import xaxis
from trainscope.app.figures import Curve
from trainscope.app.figures.common import run_color
from trainscope.logformat import tags as T

# Drawn when the page opens, those the runs log, in this order.
DEFAULT_METRICS = (T.TRAIN_LOSS, T.VAL_LOSS, T.TRAIN_ACC, T.VAL_ACC, T.LR, T.GRAD_GLOBAL_NORM)
# Offered first, in this order; then every other series of the chosen runs by name.
FIRST_METRICS = (*DEFAULT_METRICS, T.STEP_SECONDS)


def series(run: Run, tag: str) -> Series | None:
    """The run's series `tag`: a canonical tag, or a series logged under a name TrainScope does not map."""
    found = run.scalar(tag)
    if found is None:
        other = run.unmapped.get(tag)
        found = other if other is not None and len(other) else None
    return found


def metrics(runs: Sequence[Run]) -> list[str]:
    """Every series any of `runs` logs, `FIRST_METRICS` first; the epoch counter left out (an axis)."""
    tags = {tag for run in runs for tag, s in (*run.scalars.items(), *run.unmapped.items()) if len(s)}
    tags -= set(EPOCH_SERIES_NAMES)
    return [t for t in FIRST_METRICS if t in tags] + sorted(tags - set(FIRST_METRICS))


def default_metrics(offered: Sequence[str]) -> list[str]:
    """The metrics drawn before any is chosen: `DEFAULT_METRICS` that are offered, else the first two."""
    chosen = [t for t in DEFAULT_METRICS if t in offered]
    return chosen or list(offered[:2])


def axes(runs: Sequence[Run], name: str) -> tuple[dict[str, xaxis.Axis], list[str]]:
    """Each run's `name` axis, relative time in one unit for all; and the runs that cannot be
    drawn on `name` (no epoch or no wall times logged), which the page names instead."""
    out: dict[str, xaxis.Axis] = {}
    lacking = []
    for run in runs:
        if name in xaxis.choices(run):
            out[run.name] = xaxis.Axis.of(run, name)
        else:
            lacking.append(run.name)
    if name == xaxis.RELATIVE and out:
        longest = max(
            (float(a.clock.wall_times.max()) - a.start) if a.clock is not None else 0.0 for a in out.values()
        )
        per, unit = next((u for u in xaxis.UNITS if longest >= 2 * u[0]), xaxis.UNITS[-1])
        out = {n: dataclasses.replace(a, per=per, unit=unit) for n, a in out.items()}
    return out, lacking


def curves(
    runs: Sequence[Run], tag: str, placed: dict[str, xaxis.Axis], labels: Mapping[str, str] | None = None
) -> tuple[list[Curve], list[str]]:
    """One curve per run logging `tag`, coloured by the run's place in `runs` (the same colour on
    every chart) and named by its label in `labels` (else its name); and the runs that do not log it."""
    labels = labels or {}
    out, lacking = [], []
    for i, run in enumerate(runs):
        s = series(run, tag)
        axis = placed.get(run.name)
        if s is None:
            lacking.append(run.name)
            continue
        if axis is None:
            continue  # named once, for the axis, not for every chart
        along = axis.along(s, tag)
        keep = np.isfinite(np.asarray(along.steps, dtype=np.float64))
        out.append(
            Curve(labels.get(run.name, run.name), np.asarray(along.steps)[keep], s.values[keep], run_color(i))
        )
    return out, lacking


def x_title(placed: dict[str, xaxis.Axis], runs: Sequence[Run], tag: str) -> str:
    """The x axis title of `tag`'s chart (``epoch`` where a log's steps count epochs)."""
    for run in runs:
        if run.name in placed and series(run, tag) is not None:
            return placed[run.name].title(tag)
    return xaxis.STEP
