"""A run in one line: its health badge, its most severe finding, where it has got to.

Pure functions of a `Diagnosis`: they summarise what the analyzers found and add no
judgement of their own.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from trainscope.analyzers.diagnose import Diagnosis
from trainscope.analyzers.durations import duration
from trainscope.analyzers.findings import TOO_FEW_TO_JUDGE, WAITING_FOR_DATA
from trainscope.analyzers.formatting import symptom_list
from trainscope.analyzers.run import Run

CRITICAL, WARNING, OK, WAITING = "critical", "warning", "ok", "not enough data yet"
HEALTH_ORDER = {CRITICAL: 0, WARNING: 1, WAITING: 2, OK: 3}
# Material icons and Streamlit colour names for badges; (background, text) colours for table cells.
HEALTH_ICON = {
    CRITICAL: ":material/error:",
    WARNING: ":material/warning:",
    WAITING: ":material/hourglass_top:",
    OK: ":material/check_circle:",
}
HEALTH_COLOR = {CRITICAL: "red", WARNING: "orange", WAITING: "gray", OK: "green"}
HEALTH_CELL = {  # a translucent tint and a mid-tone text: readable on the light and the dark theme alike
    CRITICAL: ("rgba(239, 68, 68, 0.18)", "#dc2626"),
    WARNING: ("rgba(249, 115, 22, 0.18)", "#ea580c"),
    WAITING: ("rgba(128, 128, 128, 0.18)", "#808690"),
    OK: ("rgba(34, 197, 94, 0.18)", "#16a34a"),
}


def health(d: Diagnosis) -> str:
    """critical / warning from the worst finding; else "not enough data yet" while a rule
    still waits for data (or nothing at all is logged yet); else ok. Info findings never
    raise a run's health."""
    if d.worst in (CRITICAL, WARNING):
        return d.worst
    if not any(len(s) for s in d.run.scalars.values()):
        return WAITING
    if any(s.reason.startswith(WAITING_FOR_DATA) for s in d.skipped):
        return WAITING
    return OK


def headline(d: Diagnosis) -> str:
    """The top root cause's title and what it explains; else why the run is ok or still waiting."""
    title, explains = finding_and_symptoms(d)
    return f"{title} (explains: {explains})" if explains else title


def finding_and_symptoms(d: Diagnosis) -> tuple[str, str]:
    """`headline` in two parts, for a table that gives each its column: the top root
    cause's title (or why the run is ok or waiting), and the symptoms it explains ("" if none)."""
    state = health(d)
    if state in (CRITICAL, WARNING):
        root = d.roots[0]
        text = root.title.replace("`", "")  # plain text: the rules' quotes around names dropped
        explained = d.explained_by(root)
        return text, symptom_list(explained) if explained else ""
    return _calm(d), ""


def _calm(d: Diagnosis) -> str:
    """Why a run without a warning is calm: nothing logged yet, checks still waiting, or nothing found."""
    if not any(len(s) for s in d.run.scalars.values()):
        return "nothing logged yet"
    waiting = [s.rule for s in d.skipped if s.reason.startswith(WAITING_FOR_DATA)]
    if waiting:
        return f"no problem so far; {len(waiting)} check(s) wait for more data ({', '.join(waiting[:3])}" + (
            ", …)" if len(waiting) > 3 else ")"
        )
    short = [s.rule for s in d.skipped if s.reason.startswith(TOO_FEW_TO_JUDGE)]
    if short:
        return (
            f"no problem found; {len(short)} check(s) had too little data to judge ({', '.join(short[:3])}"
            + (", …)" if len(short) > 3 else ")")
        )
    return "no problem found"


def cell_style(state: str) -> str:
    """CSS for a table cell holding a health."""
    background, color = HEALTH_CELL.get(state, ("", ""))
    return f"background-color: {background}; color: {color}; font-weight: 600" if background else ""


def last_step(run: Run) -> int | None:
    """The last step of any series of the run."""
    return max((int(s.steps[-1]) for s in run.scalars.values() if len(s)), default=None)


def last_logged(run: Run) -> float | None:
    """When the run last logged a point (seconds since the epoch), where the log says."""
    newest = None
    for s in run.scalars.values():
        if s.wall_times is None or not len(s):
            continue
        finite = s.wall_times[np.isfinite(s.wall_times)]
        if finite.shape[0]:
            newest = max(newest or 0.0, float(finite.max()))
    return newest


def worst_first(diagnoses: Mapping[str, Diagnosis]) -> list[str]:
    """Run names, the worst run first (then by name)."""
    return sorted(diagnoses, key=lambda name: (HEALTH_ORDER[health(diagnoses[name])], name))


@dataclass(frozen=True)
class Counts:
    runs: int
    critical: int
    warning: int
    waiting: int
    ok: int


def counts(diagnoses: Mapping[str, Diagnosis]) -> Counts:
    states = [health(d) for d in diagnoses.values()]
    return Counts(
        len(states), states.count(CRITICAL), states.count(WARNING), states.count(WAITING), states.count(OK)
    )


def runs_table(diagnoses: Mapping[str, Diagnosis], now: float | None = None) -> pd.DataFrame:
    """One row per run, worst first: health, name, most severe finding, findings, progress, source."""
    now = time.time() if now is None else now
    rows = []
    for name in worst_first(diagnoses):
        d = diagnoses[name]
        by_severity = {s: sum(f.severity == s for f in d.findings) for s in (CRITICAL, WARNING, "info")}
        logged = last_logged(d.run)
        finding, explains = finding_and_symptoms(d)
        rows.append(
            {
                "health": health(d),
                "run": name,
                "most severe finding": finding,
                "last logged": f"{duration(now - logged)} ago" if logged is not None else "",
                "explains": explains,
                "critical": by_severity[CRITICAL],
                "warnings": by_severity[WARNING],
                "last step": last_step(d.run),
                "status": d.run.status or "",
                "source": d.run.source,
            }
        )
    # What a 1400 px window shows beside the sidebar first; the rest scrolls into view.
    columns = [
        "health",
        "run",
        "most severe finding",
        "last logged",
        "explains",
        "critical",
        "warnings",
        "last step",
        "status",
        "source",
    ]
    return pd.DataFrame(rows, columns=columns)
