"""What every page does around its content: open the log dir (or say why not), say how fresh
the data is, refresh itself while live, and keep one broken chart from taking the page down."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import streamlit as st

from trainscope.analyzers.diagnose import Diagnosis
from trainscope.analyzers.durations import duration
from trainscope.analyzers.reading import NO_RUNS_FOUND, LogDirSnapshot
from trainscope.analyzers.run_names import display_names
from trainscope.app import data
from trainscope.app.escape import code, md
from trainscope.app.settings import current

NO_RUNS = (
    "No runs found in {path}. A run is a directory holding TensorBoard event files "
    "(`events.out.tfevents.*`), a Lightning `metrics.csv` or a Hugging Face `trainer_state.json`. "
    "Point `watch(model, optimizer, log_dir=...)` at a directory inside it and the run appears here "
    "(turn on *Live* in the sidebar to follow it), or enter another log dir in the sidebar."
)


@dataclass(frozen=True)
class Opened:
    """A log dir as of this refresh: its reader, its runs and their diagnoses."""

    logdir: data.LogDir
    snapshot: LogDirSnapshot
    diagnoses: dict[str, Diagnosis]
    labels: dict[str, str]  # what each run is called on the page, by run name (`analyzers.run_names`)

    def label(self, name: str) -> str:
        """What the run `name` is called on the page (the name itself for a run not listed)."""
        return self.labels.get(name, name)


def live(body: Callable[[], None]) -> None:
    """Show `body`; while *Live* is on, it reruns by itself every few seconds (only it, not the page)."""
    st.fragment(body, run_every=current().run_every)()


def open_logdir() -> Opened | None:
    """Refresh the log dir and diagnose what changed; on any trouble show why and return None."""
    settings = current()
    problem = data.logdir_problem(settings.logdir)
    if problem is not None:
        st.error(md(problem))
        return None
    try:
        logdir, snapshot = data.load(settings.logdir)
        diagnoses = data.diagnoses(logdir, snapshot)
    except Exception as exc:  # noqa: BLE001 - the page says what went wrong instead of a traceback
        st.error(f"Could not read the log dir {code(settings.logdir)}: {md(type(exc).__name__)}: {md(exc)}")
        with st.expander("Details"):
            st.text(traceback.format_exc())
        return None
    for problem in snapshot.problems:
        if not problem.endswith(NO_RUNS_FOUND):  # said below, with how runs get there
            st.warning(md(problem), icon=":material/warning:")
    if not snapshot.runs:
        st.info(NO_RUNS.format(path=code(settings.logdir)), icon=":material/folder_open:")
        return None
    freshness(logdir, settings.logdir, len(snapshot.runs))
    return Opened(logdir, snapshot, diagnoses, display_names(snapshot.runs.values()))


def freshness(logdir: data.LogDir, path: str, runs: int) -> None:
    """``runs/ · 3 run(s) · updated 4 s ago · live: checking every 5 s``"""
    settings = current()
    updated = f"updated {duration(time.time() - logdir.updated_at)} ago"
    follow = f"live: checking every {settings.interval} s" if settings.live else "live off"
    st.caption(f"{code(path)} · {runs} run(s) · {updated} · {follow}")


@contextmanager
def guard(what: str) -> Iterator[None]:
    """Show an error in place of `what` if drawing it fails; the rest of the page goes on."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001
        st.error(f"The {md(what)} could not be drawn: {md(type(exc).__name__)}: {md(exc)}")
