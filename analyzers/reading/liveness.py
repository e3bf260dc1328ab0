"""Whether a run that says ``running`` still is: a killed process cannot say it stopped.

SIGKILL (the OOM killer, ``kill -9``, a node that vanished) gives the collector no chance
to rewrite run.json, so such a run says ``running`` forever. What it cannot fake is
silence: a live run's collector writes at least every ``flush_steps`` steps or
``flush_seconds`` (100 steps or 2 s by default, whichever comes first), so its files'
newest mtime stays within a few step times of now. The readers call a run stopped once
nothing has been written for much longer than that, and say when it last wrote.

How long is "much longer" (`silence_limit`) is the largest of three bounds, each for a
reason:

- `MIN_SILENCE_SECONDS` (10 min): a fast run's flush window is seconds, but a first
  validation pass or a checkpoint save pauses writing for minutes before the run has
  shown any pause of its own; a false "stopped" during one is worse than a late one.
- `STEP_FACTOR` (1000) times the median step time: ten flush windows of 100 steps;
  a run of 30-second steps may take 8 hours before it is called stopped.
- `PAUSE_FACTOR` (3) times the longest pause between logged points so far: a run that
  already paused 20 minutes for each evaluation is not stopped after 25.

Only the mtime is used for "when did it last write": a copied log dir gets fresh mtimes,
so a copy looks alive for the limit and then stopped, which is what it is.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from trainscope.analyzers.durations import duration
from trainscope.analyzers.run import Series
from trainscope.logformat import runjson as RJ

MIN_SILENCE_SECONDS = 600.0
STEP_FACTOR = 1000.0
PAUSE_FACTOR = 3.0


def silence_limit(loss: Series | None) -> float:
    """Seconds without a write after which a run that says ``running`` is taken as stopped."""
    limit = MIN_SILENCE_SECONDS
    if loss is None or loss.wall_times is None or len(loss) < 2:
        return limit
    walls = loss.wall_times.astype(np.float64)
    steps = loss.steps.astype(np.float64)
    dw, ds = np.diff(walls), np.diff(steps)
    ok = np.isfinite(dw) & (dw >= 0) & (ds > 0)
    if not ok.any():
        return limit
    step_seconds = float(np.median(dw[ok] / ds[ok]))
    longest_pause = float(dw[ok].max())
    return max(limit, STEP_FACTOR * step_seconds, PAUSE_FACTOR * longest_pause)


def last_write(paths: Iterable[str]) -> float | None:
    """The newest mtime among `paths` (seconds since the epoch); None when none can be stat-ed."""
    newest = None
    for path in paths:
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            continue
        newest = mtime if newest is None else max(newest, mtime)
    return newest


def killed(
    meta: Mapping[str, Any], loss: Series | None, written: float | None, now: float
) -> dict[str, Any] | None:
    """run.json keys that say the run stopped (status, reason, end time), or None while it
    may be alive (or says it ended, or nothing says when it last wrote)."""
    if meta.get(RJ.K_STATUS) != RJ.STATUS_RUNNING or written is None:
        return None
    silent = now - written
    limit = silence_limit(loss)
    if silent <= limit:
        return None
    return {
        RJ.K_STATUS: RJ.STATUS_STOPPED,
        RJ.K_STATUS_REASON: (
            f"nothing written for {duration(silent)} (a live run writes well within {duration(limit)}): "
            f"the process was likely killed (SIGKILL, out of memory) before it could say so"
        ),
        RJ.K_END: _dt.datetime.fromtimestamp(written, _dt.timezone.utc).isoformat(timespec="seconds"),
    }
