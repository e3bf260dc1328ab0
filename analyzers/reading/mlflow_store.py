"""Reading a run of MLflow's file store (``mlruns/<experiment_id>/<run_id>/``).

A run directory holds ``meta.yaml`` (``run_name``, ``status``, ``start_time`` and
``end_time`` in milliseconds), ``metrics/<name>`` (one line ``timestamp value step`` per
logged value, timestamps in milliseconds; a name with "/" is a sub-directory),
``params/<name>`` (one value per file), ``tags/<name>`` (``mlflow.runName`` among them)
and ``artifacts/``. An experiment directory has a ``meta.yaml`` too, but no
``metrics/``: it is no run (`is_mlflow_run_dir`).

MLflow appends to metric files and never rewrites them, so `MlflowRunReader` keeps an
offset per metric file and parses only appended lines; a poll of an unchanged run
stats each of its metric directories and files once. Values are written with
Python's ``str(float)``: ``nan`` and ``inf`` are real values. The run's status is
evidence of how it ended (FINISHED, FAILED, KILLED); RUNNING is not (a killed process
leaves it so), and sets nothing.
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trainscope.analyzers.reading.appended import read_appended_lines
from trainscope.analyzers.reading.hparams import load_yaml, meta_from_hparams, parse_param
from trainscope.analyzers.reading.series import ScalarColumn
from trainscope.analyzers.run import Series
from trainscope.logformat import runjson as RJ

META_YAML = "meta.yaml"
METRICS_DIR = "metrics"
PARAMS_DIR = "params"
TAGS_DIR = "tags"
# The sub-directories of a run that this module reads (the walk of the log dir skips them).
STORE_DIRS = (METRICS_DIR, PARAMS_DIR, TAGS_DIR)
RUN_NAME_TAG = "mlflow.runName"
# meta.yaml's keys.
_K_RUN_NAME = "run_name"
_K_STATUS = "status"
_K_START = "start_time"
_K_END = "end_time"
# MLflow's RunStatus numbers (meta.yaml holds the number; some versions the name) ...
_STATUS_NAMES = {1: "RUNNING", 2: "SCHEDULED", 3: "FINISHED", 4: "FAILED", 5: "KILLED"}
# ... and the ones that say how a run ended, as run.json's status.
_ENDED = {"FINISHED": RJ.STATUS_FINISHED, "FAILED": RJ.STATUS_CRASHED, "KILLED": RJ.STATUS_STOPPED}
# meta.yaml, a param or a tag larger than this is not MLflow's: skipped with a problem.
MAX_SMALL_FILE_BYTES = 1024 * 1024
# Bytes of a metric file parsed per read; a huge file is read in pieces within one poll.
CHUNK_BYTES = 16 * 1024 * 1024
# A metric line longer than this is garbage: dropped instead of kept waiting for its end.
MAX_LINE_BYTES = 4096
# Walking metrics/ stops this deep (a name with many "/" is rare; a loop is not).
MAX_METRIC_DEPTH = 32
# A directory modified this recently before its listing is listed again on the next poll,
# in case a metric file landed within the mtime's granularity (as `discovery` does).
RACY_SECONDS = 2.0
# Steps are int64.
_MIN_STEP, _MAX_STEP = -(2**63), 2**63 - 1


def is_mlflow_run_dir(files: Collection[str], subdirs: Collection[str]) -> bool:
    """Whether a directory holding these files and sub-directories is an MLflow run."""
    return META_YAML in files and METRICS_DIR in subdirs


@dataclass(frozen=True)
class _Listing:
    mtime_ns: int
    listed_at: float
    files: list[str]
    subdirs: list[str]


@dataclass
class MlflowRun:
    series: dict[str, Series] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


class _MetricFile:
    """One metric file: its offset and the points read so far."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.ident: tuple[int, int] | None = None
        self.seen: tuple[int, int] | None = None
        self.offset = 0
        self.column = ScalarColumn()
        self.bad_lines = 0


class MlflowRunReader:
    """Reads one MLflow run directory incrementally. `poll` never raises."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        self._reset()

    def _reset(self) -> None:
        self._metrics: dict[str, _MetricFile] = {}  # metric name -> file state
        self._dirs: dict[str, _Listing] = {}  # directory -> its listing
        self._small: dict[str, tuple[tuple[int, int, int] | None, Any]] = {}  # path -> (signature, value)
        self._problems: dict[str, str] = {}  # path -> problem with that file

    def poll(self) -> MlflowRun | None:
        """The run as of now when anything changed since the last poll, else None."""
        try:
            changed = self._poll_small() | self._poll_metrics()
        except Exception as exc:  # noqa: BLE001 - a foreign store must never stop the reader
            self._reset()  # start over on the next poll
            problem = f"{self.run_dir}: unreadable MLflow run ({type(exc).__name__}: {exc})"
            return MlflowRun(problems=[problem])
        return self._snapshot() if changed else None

    # -- meta.yaml, params, tags ----------------------------------------------------------

    def _poll_small(self) -> bool:
        changed = self._read_small(os.path.join(self.run_dir, META_YAML), _parse_meta)
        changed |= self._read_small(os.path.join(self.run_dir, TAGS_DIR, RUN_NAME_TAG), str.strip)
        params = os.path.join(self.run_dir, PARAMS_DIR)
        if self._walk(params):  # params never change once logged: read the new ones
            for name in self._files_under(params):
                changed |= self._read_small(os.path.join(params, name), parse_param)
            changed = True
        return changed

    def _read_small(self, path: str, parse: Callable[[str], Any]) -> bool:
        try:
            st = os.stat(path)
            signature: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            signature = None
        if path in self._small and self._small[path][0] == signature:
            return False
        value, problem = None, None
        if signature is not None:
            if signature[1] > MAX_SMALL_FILE_BYTES:
                problem = f"{path}: {signature[1]} bytes, too large for MLflow's; skipped"
            else:
                try:
                    with open(path, encoding="utf-8", errors="replace") as fh:
                        value = parse(fh.read())
                except Exception as exc:  # noqa: BLE001 - one line per unreadable file
                    problem = f"{path}: unreadable ({type(exc).__name__}: {exc})"
        self._small[path] = (signature, value)
        if problem:
            self._problems[path] = problem
        else:
            self._problems.pop(path, None)
        return True

    # -- metrics ---------------------------------------------------------------------

    def _list(self, path: str) -> bool:
        """Re-list `path` when its mtime changed (or recently had); True when its entries did."""
        try:
            mtime = os.stat(path).st_mtime_ns
        except OSError:
            return self._dirs.pop(path, None) is not None
        known = self._dirs.get(path)
        if known is not None and known.mtime_ns == mtime and known.listed_at - mtime / 1e9 >= RACY_SECONDS:
            return False
        listed_at = time.time()
        files, subdirs = [], []
        try:
            with os.scandir(path) as it:
                for e in it:
                    if not e.name.startswith("."):
                        (subdirs if e.is_dir() else files).append(e.name)
            self._problems.pop(path, None)
        except OSError as exc:
            self._problems[path] = f"{path}: cannot list ({exc.strerror})"
        fresh = _Listing(mtime, listed_at, sorted(files), sorted(subdirs))
        self._dirs[path] = fresh
        return known is None or (known.files, known.subdirs) != (fresh.files, fresh.subdirs)

    def _files_under(self, root: str) -> list[str]:
        """Files under `root` by their path relative to it ("/"-separated), from the listings."""
        out: list[str] = []
        stack = [(root, "", 0)]
        while stack:
            path, rel, depth = stack.pop()
            entry = self._dirs.get(path)
            if entry is None:
                continue
            out.extend(rel + name for name in entry.files)
            if depth < MAX_METRIC_DEPTH:
                stack.extend((os.path.join(path, d), f"{rel}{d}/", depth + 1) for d in entry.subdirs)
        return out

    def _walk(self, root: str) -> bool:
        """Stat every directory under `root` once, re-listing those whose mtime changed;
        True when any did (or disappeared)."""
        changed = False
        seen: set[str] = set()
        stack = [(root, 0)]
        while stack:
            path, depth = stack.pop()
            seen.add(path)
            changed |= self._list(path)
            entry = self._dirs.get(path)
            if entry is not None and depth < MAX_METRIC_DEPTH:
                stack.extend((os.path.join(path, d), depth + 1) for d in entry.subdirs)
        for gone in [d for d in self._dirs if (d == root or d.startswith(root + os.sep)) and d not in seen]:
            del self._dirs[gone]
            changed = True
        return changed

    def _poll_metrics(self) -> bool:
        root = os.path.join(self.run_dir, METRICS_DIR)
        changed = self._walk(root)
        names = set(self._files_under(root))
        for gone in set(self._metrics) - names:
            del self._metrics[gone]
            changed = True
        for name in sorted(names):
            state = self._metrics.get(name)
            if state is None:
                state = self._metrics[name] = _MetricFile()
            changed |= self._read_metric(os.path.join(root, *name.split("/")), state)
        return changed

    def _read_metric(self, path: str, state: _MetricFile) -> bool:
        try:
            st = os.stat(path)
        except OSError:
            return False
        ident, seen = (st.st_dev, st.st_ino), (st.st_size, st.st_mtime_ns)
        if ident != state.ident or st.st_size < state.offset:
            state.reset()  # replaced or truncated: read it again
            state.ident = ident
        elif seen == state.seen:
            return False
        state.seen = seen
        try:
            with open(path, "rb") as fh:
                state.offset, _, dropped = read_appended_lines(
                    fh,
                    state.offset,
                    lambda block, _at: _parse_lines(block, state),
                    CHUNK_BYTES,
                    MAX_LINE_BYTES,
                )
                state.bad_lines += dropped
        except OSError as exc:
            self._problems[path] = f"{path}: cannot read ({exc.strerror})"
            return True
        self._problems.pop(path, None)
        return True

    def _snapshot(self) -> MlflowRun:
        run = MlflowRun()
        for name, state in sorted(self._metrics.items()):
            if len(state.column):
                run.series[name] = state.column.snapshot()
            if state.bad_lines:
                run.problems.append(
                    f"{os.path.join(self.run_dir, METRICS_DIR, name)}: {state.bad_lines} line(s) that are not "
                    f"'timestamp value step'; skipped"
                )
        meta_yaml = self._small.get(os.path.join(self.run_dir, META_YAML), (None, None))[1]
        params_dir = os.path.join(self.run_dir, PARAMS_DIR)
        params = {
            name: self._small[os.path.join(params_dir, name)][1]
            for name in self._files_under(params_dir)
            if os.path.join(params_dir, name) in self._small
        }
        run.meta = meta_from_hparams(dict(sorted(params.items())))
        run.meta.update(meta_yaml or {})
        tag_name = self._small.get(os.path.join(self.run_dir, TAGS_DIR, RUN_NAME_TAG), (None, None))[1]
        if tag_name and RJ.K_RUN_NAME not in run.meta:
            run.meta[RJ.K_RUN_NAME] = tag_name
        run.problems.extend(problem for _, problem in sorted(self._problems.items()))
        return run


def _parse_lines(data: bytes, state: _MetricFile) -> None:
    """Append the points of whole ``timestamp value [step]`` lines to `state`."""
    steps: list[int] = []
    values: list[float] = []
    walls: list[float] = []
    for line in data.split(b"\n"):
        parts = line.split()
        if not parts:
            continue
        try:
            if len(parts) not in (2, 3):
                raise ValueError(line[:50])
            wall = int(parts[0]) / 1000.0
            value = float(parts[1])
            step = int(parts[2]) if len(parts) == 3 else 0  # MLflow < 1.0 wrote no step
            if not _MIN_STEP <= step <= _MAX_STEP:
                raise OverflowError(step)
        except (ValueError, OverflowError):
            state.bad_lines += 1
            continue
        steps.append(step)
        values.append(value)
        walls.append(wall)
    if steps:
        state.column.append(
            np.asarray(steps, dtype=np.int64),
            np.asarray(values, dtype=np.float64),
            np.asarray(walls, dtype=np.float64),
        )


def _parse_meta(text: str) -> dict[str, Any]:
    """run.json keys from a run's meta.yaml: name, status (where it is evidence), times."""
    doc = load_yaml(text)
    if not isinstance(doc, dict):
        raise TypeError("meta.yaml is not a mapping")
    meta: dict[str, Any] = {}
    if isinstance(doc.get(_K_RUN_NAME), str) and doc[_K_RUN_NAME]:
        meta[RJ.K_RUN_NAME] = doc[_K_RUN_NAME]
    status = doc.get(_K_STATUS)
    name = _STATUS_NAMES.get(status) if isinstance(status, int) else status
    if isinstance(name, str) and name.upper() in _ENDED:
        meta[RJ.K_STATUS] = _ENDED[name.upper()]
        meta[RJ.K_STATUS_REASON] = f"MLflow run status {name.upper()}"
    for key, out in ((_K_START, RJ.K_START), (_K_END, RJ.K_END)):
        stamp = _iso_from_ms(doc.get(key))
        if stamp is not None:
            meta[out] = stamp
    return meta


def _iso_from_ms(value: Any) -> str | None:
    """Milliseconds since the epoch -> run.json's ISO 8601 time (UTC, seconds), or None."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        return None
    try:
        return _dt.datetime.fromtimestamp(value / 1000.0, _dt.timezone.utc).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return None
