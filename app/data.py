"""Data loaders: one incremental reader per log dir, diagnoses cached per `Run` object.

The reader lives in `st.cache_resource`, shared by every session and every rerun;
each refresh reads only what was appended since the last one (a few ms when nothing
changed). A run that did not change is the very same `Run` object as before, so its
diagnosis is kept until the run changes.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import streamlit as st

from trainscope.analyzers.diagnose import Diagnosis, diagnose_run
from trainscope.analyzers.reading import LogDirReader, LogDirSnapshot, unreadable
from trainscope.analyzers.run import Run

MAX_LOGDIRS = 8  # readers kept at once (each holds its runs' data in memory)


@dataclass
class LogDir:
    """One log dir as the dashboard follows it."""

    reader: LogDirReader
    updated_at: float = 0.0  # when a refresh last found new data (time.time())
    _diagnoses: dict[str, Diagnosis] = field(default_factory=dict)  # by run name
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def refresh(self) -> LogDirSnapshot:
        snapshot = self.reader.refresh()
        with self._lock:
            if snapshot.changed or not self.updated_at:
                self.updated_at = time.time()
            for gone in set(self._diagnoses) - set(snapshot.runs):
                del self._diagnoses[gone]
        return snapshot

    def diagnosis(self, run: Run) -> Diagnosis:
        """The run's diagnosis, made again only when the run changed (a new `Run` object)."""
        with self._lock:
            cached = self._diagnoses.get(run.name)
        if cached is not None and cached.run is run:
            return cached
        fresh = diagnose_run(run)
        with self._lock:
            self._diagnoses[run.name] = fresh
        return fresh


@st.cache_resource(max_entries=MAX_LOGDIRS, show_spinner=False)
def log_dir(path: str) -> LogDir:
    """The reader of `path` (absolute), made once and shared."""
    return LogDir(LogDirReader(path))


def resolve(path: str) -> str:
    """The absolute path of a log dir as typed (``~`` expanded)."""
    return os.path.abspath(os.path.expanduser(path.strip()))


def logdir_problem(typed: str) -> str | None:
    """Why the log dir `typed` cannot be opened, in a sentence; None when it can."""
    if not typed.strip():
        return "No log dir given. Enter the directory that holds your runs in the sidebar."
    path = resolve(typed)
    reason = unreadable(path)
    if reason is None:
        return None
    if reason == "is not a directory":
        return f"{typed!r} is a file, not a directory. Enter the directory that holds the runs."
    return f"The log dir {typed!r} {reason} ({path}). Check the path in the sidebar."


def load(path: str) -> tuple[LogDir, LogDirSnapshot]:
    """Refresh the log dir at `path` and return it with its runs."""
    logdir = log_dir(resolve(path))
    return logdir, logdir.refresh()


def diagnoses(logdir: LogDir, snapshot: LogDirSnapshot) -> dict[str, Diagnosis]:
    """Every run's diagnosis, by run name (cached per unchanged run)."""
    return {name: logdir.diagnosis(run) for name, run in snapshot.runs.items()}
