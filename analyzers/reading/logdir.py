"""The incremental log-dir reader: one object per log dir, `refresh()` as often as you like.

`LogDirReader.refresh()` lists only directories whose mtime changed, stats every
known file, reads only the bytes appended since the last call and rebuilds only the
runs that received something. Unchanged runs keep their `Run` object (identity says
"nothing new"), so a caller can cache per-run work such as diagnoses by it. A refresh
of an unchanged 100-run log dir costs a few milliseconds.

Which directories make one run is mostly decided by `discovery` (Keras's train/ and
validation/, Hugging Face output dirs, MLflow and W&B run directories, metric CSV
logs). A CSV log with key columns (``fold``) makes one run per key value, named
``<file>/fold=1``. One case needs the tags and is decided here:
a sub-directory of a run whose own directory holds event files, and whose tags all
fit ``SummaryWriter.add_scalars``' naming (``Loss_train/`` holding tag ``Loss``), is
folded into the parent as ``Loss/train``, which is what a user of add_scalars means.
``SummaryWriter.add_hparams`` writes a side run into a sub-directory named by the time:
the hyperparameters and each metric once. It is folded into the parent too, the
hyperparameters and metric values (``hparam/accuracy``) under their own names, so that
it does not show as a run with nothing logged. A sub-directory with no scalars yet stays
hidden; one with other tags is a run of its own.

A TrainScope run (one with a run.json) that takes in another writer's files (the
Trainer's TensorBoard directory, a checkpoint's trainer_state.json) keeps what its
collector wrote as written: a raw name that the run directory's own event files hold is
theirs alone, and the other sources' points under that name are dropped. The Trainer
writes ``train/loss`` too, as the mean over ``logging_steps`` of the per-step losses
ours holds: merged, it replaced ours at the steps both logged (whichever file was read
last, so a live read and a fresh one differed), and kept under its own name it would be
a second series called ``train/loss``, a smoothing of the first. A canonical tag that one
of ours maps to is read from ours (`build_run`'s ``preferred``), and what only the other
writer logs (``eval/*``, ``train/learning_rate``) comes through as before.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from trainscope.analyzers.reading import discovery as D
from trainscope.analyzers.reading import liveness as L
from trainscope.analyzers.reading.assemble import build_run
from trainscope.analyzers.reading.eventdecode import DecodedEvents
from trainscope.analyzers.reading.series import HistogramColumn, ScalarColumn, merge_series
from trainscope.analyzers.reading.shards import sum_shards
from trainscope.analyzers.reading.sources import (
    CsvLogSource,
    CsvSource,
    EventSource,
    HparamsSource,
    MlflowSource,
    ModelConfigSource,
    ProblemLog,
    RunJsonSource,
    Table,
    TrainerStateSource,
    WandbSource,
    failure_line,
    file_signature,
)
from trainscope.analyzers.reading.tagmap import TagMapper, TagRule
from trainscope.analyzers.run import Run, Series
from trainscope.logformat import runjson as RJ
from trainscope.logformat import tags as T

SOURCE_TRAINSCOPE = "trainscope"
SOURCE_TENSORBOARD = "tensorboard"
SOURCE_LIGHTNING_CSV = "lightning_csv"
SOURCE_HF_TRAINER_STATE = "hf_trainer_state"
SOURCE_CSV_LOG = "csv_log"
SOURCE_MLFLOW = "mlflow"
SOURCE_WANDB = "wandb"
# A run's source is that of the first of its kinds in this order (a Trainer output dir
# with its TensorBoard events is a Hugging Face run).
_SOURCE_OF_KIND = {
    D.KIND_TRAINER_STATE: SOURCE_HF_TRAINER_STATE,
    D.KIND_EVENTS: SOURCE_TENSORBOARD,
    D.KIND_CSV: SOURCE_LIGHTNING_CSV,
    D.KIND_CSV_LOG: SOURCE_CSV_LOG,
    D.KIND_MLFLOW: SOURCE_MLFLOW,
    D.KIND_WANDB: SOURCE_WANDB,
}
_Source = (
    EventSource
    | RunJsonSource
    | CsvSource
    | TrainerStateSource
    | HparamsSource
    | ModelConfigSource
    | CsvLogSource
    | MlflowSource
    | WandbSource
)

# A sub-directory of an event-file run is pending until its first tags decide: an
# add_scalars child (folded as ``Loss/train``), an add_hparams side run (its hyperparameters
# and metric values go to the parent under their own names) or a run of its own.
_PENDING, _CHILD, _HPARAMS, _OWN = "pending", "child", "hparams", "own"
_FOLDED = (_PENDING, _CHILD, _HPARAMS)
# The problem a log dir with no runs (and nothing else wrong) reports, after its path.
NO_RUNS_FOUND = (
    "no runs found (no event files, metrics.csv, trainer_state.json, run.json, metric CSV logs, "
    "MLflow or W&B runs)"
)


def unreadable(path: str | os.PathLike[str]) -> str | None:
    """Why `path` cannot be opened as a log dir ("does not exist", "is not a directory",
    "cannot be read (Permission denied)"); None when it can."""
    if not os.path.exists(path):
        return "does not exist"
    if not os.path.isdir(path):
        return "is not a directory"
    try:
        with os.scandir(path) as entries:
            next(entries, None)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    return None


@dataclass(frozen=True)
class LogDirSnapshot:
    """The runs of a log dir as of one refresh. Immutable; cheap to hand around."""

    path: str
    runs: Mapping[str, Run]  # by name (path relative to the log dir), sorted
    problems: tuple[str, ...]  # log-dir-level: unreadable, no runs, too big
    changed: frozenset[str]  # runs that are new, got data or problems, or disappeared in this refresh
    events: int = 0  # event records read in this refresh
    points: int = 0  # scalar points read in this refresh


@dataclass
class _RunState:
    path: str
    scalars: dict[str, ScalarColumn] = field(default_factory=dict)  # raw name -> points (event files in path)
    # Raw name -> points of event files folded in from other directories (see `_build`).
    folded: dict[str, ScalarColumn] = field(default_factory=dict)
    histograms: dict[str, HistogramColumn] = field(default_factory=dict)
    tables: dict[str, Table] = field(default_factory=dict)  # source path -> what it read
    hparams: dict[str, Any] = field(default_factory=dict)
    not_shown: dict[str, str] = field(default_factory=dict)  # tag -> what it is (event files)
    run_json: dict[str, Any] | None = None
    notes: tuple[str, ...] = ()  # what discovery says of the run's layout
    dirty: bool = True
    runs: dict[str, Run] = field(default_factory=dict)  # by name: one, or one per key of a CSV log
    # A run whose run.json says "running": its files and silence limit (`liveness`), and
    # whether it was last judged killed; rechecked every refresh, rebuilt when that flips.
    watch: tuple[tuple[str, ...], float] | None = None
    killed: bool = False


class LogDirReader:
    """Reads a log dir incrementally. Thread-safe: concurrent refreshes are serialised."""

    def __init__(self, path: str | os.PathLike[str], extra_rules: Iterable[TagRule] = ()) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.mapper = TagMapper(extra=extra_rules)
        self._watcher = D.DirectoryWatcher(self.path, self.mapper)
        self._lock = threading.Lock()
        self._sources: dict[str, _Source] = {}
        self._order: list[str] = []  # source paths in polling order
        self._files: dict[str, D.SourceFile] = {}
        self._states: dict[str, _RunState] = {}
        self._decisions: dict[str, str] = {}  # candidate child dir -> pending/child/own
        # Sources whose reader raised, with the file's signature then: not retried until it changes.
        self._failed: dict[str, tuple[int, int, int] | None] = {}
        self._snapshot = LogDirSnapshot(self.path, {}, (), frozenset())

    @property
    def snapshot(self) -> LogDirSnapshot:
        """The result of the last refresh."""
        return self._snapshot

    def refresh(self, full: bool = False) -> LogDirSnapshot:
        """Read what is new; `full` re-lists every directory (mtimes are otherwise trusted)."""
        with self._lock:
            return self._refresh(full)

    # -- one refresh --------------------------------------------------------------

    def _refresh(self, full: bool) -> LogDirSnapshot:
        problems: list[str] = []
        reason = unreadable(self.path)
        if reason is not None:
            self._snapshot = LogDirSnapshot(
                self.path, {}, (f"{self.path}: {reason}",), frozenset(self._snapshot.runs)
            )
            return self._snapshot
        listing, changed = self._watcher.scan(full)
        problems.extend(listing.problems)
        if changed:
            self._sync(listing)
        events = points = 0
        for path in self._order:
            src = self._sources[path]
            if path in self._failed and self._failed[path] == file_signature(path):
                continue  # it failed as it is now: wait until it changes
            try:
                got_events, got_points = self._poll(path, src)
            except Exception as exc:  # noqa: BLE001 - the fence: one file's failure is one problem line
                self._failed[path] = file_signature(path)
                src.problems = ProblemLog(src.file.path, [failure_line(src.file.path, exc)])
                self._states[self._owner(src.file)].dirty = True
                continue
            self._failed.pop(path, None)
            events += got_events
            points += got_points
        runs: dict[str, Run] = {}
        new: set[str] = set()
        owned: dict[str, list[D.SourceFile]] = {}
        for file in self._files.values():
            owned.setdefault(self._owner(file), []).append(file)
        now = time.time()
        for run_dir in sorted(self._states):
            state = self._states[run_dir]
            if self._hidden(run_dir):
                continue
            if not state.dirty and state.watch is not None:
                paths, limit = state.watch
                written = L.last_write(paths)
                state.dirty = written is not None and (now - written > limit) != state.killed
            if state.dirty:
                try:
                    state.runs = self._build(run_dir, state, owned.get(run_dir, []))
                except Exception as exc:  # noqa: BLE001 - the fence: a run that cannot be built is one line
                    state.runs = self._unbuilt(run_dir, owned.get(run_dir, []), exc)
                state.dirty = False
                new.update(state.runs)
            runs.update(state.runs)
        if not runs and not problems:
            problems.append(f"{self.path}: {NO_RUNS_FOUND}")
        new |= set(self._snapshot.runs) - set(runs)
        runs = dict(sorted(runs.items()))
        self._snapshot = LogDirSnapshot(self.path, runs, tuple(problems), frozenset(new), events, points)
        return self._snapshot

    def _poll(self, path: str, src: _Source) -> tuple[int, int]:
        """Read what is new in one source into its run's state; returns (events, points)."""
        events = points = 0
        state = self._states[self._owner(src.file)]
        if isinstance(src, EventSource):
            for chunk in src.poll():
                events += chunk.events
                points += chunk.points
                self._apply_events(src.file, chunk)
            if src.update_tail_note():
                self._states[self._owner(src.file)].dirty = True
        elif isinstance(src, RunJsonSource):
            got = src.poll()
            if got is not None:
                state.run_json = got[0]
                state.dirty = True
        else:
            table = src.poll()
            if table is not None:
                state.tables[path] = table
                state.dirty = True
        return events, points

    def _sync(self, listing: D.Listing) -> None:
        """Create sources for new files and forget removed ones (and emptied runs)."""
        self._reread_moved(listing)
        touched: set[str] = set()
        for path in list(self._sources):
            if path not in listing.sources:
                touched.add(self._files[path].run_dir)
                del self._sources[path]
                del self._files[path]
                self._failed.pop(path, None)
        for path, file in listing.sources.items():
            if path in self._sources:
                continue
            touched.add(file.run_dir)
            self._files[path] = file
            self._sources[path] = self._source(file)
        # Poll in order of name within a directory: TensorBoard names event files by
        # creation time, so older files are read (and overridden) first.
        self._order = sorted(self._sources, key=lambda p: (os.path.dirname(p), os.path.basename(p)))
        event_runs = {f.run_dir for f in listing.sources.values() if f.kind == D.KIND_EVENTS}
        for run_dir in listing.run_dirs:
            if run_dir not in self._states:
                self._states[run_dir] = _RunState(run_dir)
                parent = os.path.dirname(run_dir)
                if run_dir in event_runs and run_dir != self.path and self._watcher.has_events(parent):
                    self._decisions[run_dir] = _PENDING  # maybe an add_scalars child: see _decide
        for run_dir, state in self._states.items():
            notes = tuple(listing.notes.get(run_dir, ()))
            if notes != state.notes:
                state.notes = notes
                state.dirty = True
        for run_dir in list(self._states):
            if run_dir not in listing.run_dirs:
                del self._states[run_dir]
                self._decisions.pop(run_dir, None)
        for run_dir in touched | {os.path.dirname(d) for d in touched}:
            state = self._states.get(run_dir)
            if state is not None:
                state.tables = {p: t for p, t in state.tables.items() if p in self._sources}
                state.dirty = True

    def _reread_moved(self, listing: D.Listing) -> None:
        """Files that now belong to another run: Trainer's TensorBoard directory, its own
        run until its output dir is known (a run.json of TrainScope's callback, a
        checkpoint), is folded into the output dir's run then, and a second training
        attempt unfolds it. The runs a file leaves and joins hold its points or lack
        them: they start over, every file of theirs read again from its beginning."""
        moved = [
            (old, listing.sources[p]) for p, old in self._files.items() if listing.sources.get(p, old) != old
        ]
        if not moved:
            return
        restart = {self._owner(old) for old, _ in moved} | {new.run_dir for _, new in moved}
        for path, file in list(self._files.items()):
            if file.run_dir in restart or self._owner(file) in restart:
                del self._sources[path]
                del self._files[path]
                self._failed.pop(path, None)
        for run_dir in restart:
            self._states.pop(run_dir, None)

    def _source(self, file: D.SourceFile) -> _Source:
        if file.kind == D.KIND_EVENTS:
            return EventSource(file)
        if file.kind == D.KIND_CSV:
            return CsvSource(file)
        if file.kind == D.KIND_TRAINER_STATE:
            return TrainerStateSource(file)
        if file.kind == D.KIND_HPARAMS:
            return HparamsSource(file)
        if file.kind == D.KIND_HF_CONFIG:
            return ModelConfigSource(file)
        if file.kind == D.KIND_CSV_LOG:
            return CsvLogSource(file, self.mapper)
        if file.kind == D.KIND_MLFLOW:
            return MlflowSource(file)
        if file.kind == D.KIND_WANDB:
            return WandbSource(file)
        return RunJsonSource(file)

    # -- folding add_scalars children -------------------------------------------

    def _owner(self, file: D.SourceFile) -> str:
        """The run directory whose state receives this file's data."""
        run_dir = file.run_dir
        decision = self._decisions.get(run_dir)
        if decision in _FOLDED and file.kind == D.KIND_EVENTS:
            parent = os.path.dirname(run_dir)
            if parent in self._states:
                return parent
        return run_dir

    def _hidden(self, run_dir: str) -> bool:
        decision = self._decisions.get(run_dir)
        if decision not in _FOLDED:
            return False
        kinds = {f.kind for f in self._files.values() if f.run_dir == run_dir}
        return kinds <= {D.KIND_EVENTS}

    def _decide(self, run_dir: str, chunk: DecodedEvents) -> str:
        decision = self._decisions.get(run_dir)
        if decision == _PENDING and chunk.hparams and all(len(s) == 1 for s, _, _ in chunk.scalars.values()):
            # SummaryWriter.add_hparams' side run: the hyperparameters and each metric once
            self._decisions[run_dir] = _HPARAMS
            return _HPARAMS
        if decision != _PENDING or not (chunk.scalars or chunk.histograms):
            return decision or _OWN
        name = os.path.basename(run_dir)
        fits = not chunk.histograms and all(
            name.startswith(_prefix(tag)) and len(name) > len(_prefix(tag)) for tag in chunk.scalars
        )
        decision = _CHILD if fits else _OWN
        self._decisions[run_dir] = decision
        if decision == _OWN:
            self._states[os.path.dirname(run_dir)].dirty = True  # it no longer takes this dir's data
        return decision

    # -- applying data --------------------------------------------------------------

    def _apply_events(self, file: D.SourceFile, chunk: DecodedEvents) -> None:
        decision = self._decide(file.run_dir, chunk)
        state = self._states[self._owner(file)]
        state.dirty = True
        state.hparams.update(chunk.hparams)
        state.not_shown.update(
            (_raw_name(tag, file.side, None), kind) for tag, kind in chunk.not_shown.items()
        )
        suffix = os.path.basename(file.run_dir) if decision == _CHILD else None
        columns = state.scalars if os.path.dirname(file.path) == state.path else state.folded
        for tag, (steps, values, walls) in chunk.scalars.items():
            column = columns.get(name := _raw_name(tag, file.side, suffix))
            if column is None:
                column = columns[name] = ScalarColumn()
            column.append(steps, values, walls)
        for tag, points in chunk.histograms.items():
            column = state.histograms.get(name := _raw_name(tag, file.side, None))
            if column is None:
                column = state.histograms[name] = HistogramColumn()
            for p in points:
                column.add(p.step, p.edges, p.counts)

    def _build(self, run_dir: str, state: _RunState, files: list[D.SourceFile]) -> dict[str, Run]:
        """The run of `run_dir` by name, or one run per key value of a CSV log."""
        kinds = {f.kind for f in files}
        problems: list[str] = list(state.notes)
        for f in sorted(files, key=lambda f: f.path):
            src = self._sources[f.path]
            problems.extend(src.problems.render())
            if isinstance(src, EventSource) and src.tail_note:
                problems.append(src.tail_note)
        tables = sorted(state.tables.items(), key=lambda item: (item[1].order, item[0]))
        meta: dict[str, Any]
        ours = state.run_json is not None or D.KIND_RUN_JSON in kinds  # an unreadable run.json is still ours
        if ours:
            meta = dict(state.run_json or {})
            source = SOURCE_TRAINSCOPE
        else:
            meta = _foreign_meta([t for _, t in tables], state.hparams)
            source = next((_SOURCE_OF_KIND[k] for k in _SOURCE_OF_KIND if k in kinds), SOURCE_TRAINSCOPE)
        rel = os.path.relpath(run_dir, self.path)
        name = "." if rel == os.curdir else rel.replace(os.sep, "/")
        epochs = bool(tables) and not state.scalars and not state.folded and all(t.epochs for _, t in tables)
        parted = next((t.parts for _, t in tables if t.parts is not None), None)
        if parted is not None:  # a CSV log with key columns: one run per key value
            return {
                f"{name}/{label}": self._assemble(
                    f"{name}/{label}", run_dir, source, dict(series), {}, dict(meta), problems, epochs
                )
                for label, series in parted.items()
            }
        own = {tag: c.snapshot() for tag, c in state.scalars.items() if len(c)}
        others = [{tag: c.snapshot() for tag, c in state.folded.items() if len(c)}]
        others += [table.series for _, table in tables]
        raw: dict[str, list[Series]] = {tag: [series] for tag, series in own.items()}
        for series_by_tag in others:
            for tag, series in series_by_tag.items():
                if not (ours and tag in own):
                    raw.setdefault(tag, []).append(series)
        raw_scalars = {tag: merge_series(parts) for tag, parts in raw.items()}
        raw_histograms = {tag: c.snapshot() for tag, c in state.histograms.items() if len(c)}
        foreign = {tag for series_by_tag in others for tag in series_by_tag if tag not in own}
        run = self._assemble(
            name,
            run_dir,
            source,
            raw_scalars,
            raw_histograms,
            meta,
            problems,
            epochs,
            state.not_shown,
            ours,
            foreign,
        )
        state.watch, state.killed = None, False
        if run.meta.get(RJ.K_STATUS) == RJ.STATUS_RUNNING:
            paths = tuple(f.path for f in files)
            loss = run.scalar(T.TRAIN_LOSS)
            state.watch = (paths, L.silence_limit(loss))
            stopped = L.killed(run.meta, loss, L.last_write(paths), time.time())
            if stopped is not None:
                state.killed = True
                run = dataclasses.replace(run, meta={**run.meta, **stopped})
        return {name: run}

    def _unbuilt(self, run_dir: str, files: list[D.SourceFile], exc: Exception) -> dict[str, Run]:
        """A run whose data could not be put together: its name and one problem line."""
        rel = os.path.relpath(run_dir, self.path)
        name = "." if rel == os.curdir else rel.replace(os.sep, "/")
        where = min((f.path for f in files), default=run_dir)
        return {
            name: Run(name=name, path=run_dir, source=SOURCE_TRAINSCOPE, problems=(failure_line(where, exc),))
        }

    def _assemble(
        self,
        name: str,
        run_dir: str,
        source: str,
        raw_scalars: dict[str, Series],
        raw_histograms: dict[str, Any],
        meta: dict[str, Any],
        problems: list[str],
        epochs: bool,
        not_shown: dict[str, str] | None = None,
        ours: bool = False,
        foreign: set[str] | frozenset[str] = frozenset(),
    ) -> Run:
        """`ours`: the run is TrainScope's (a run.json); then every series but those named in
        `foreign` (folded directories', tables') is the collector's, and owns its canonical tag."""
        # A sharded run's parts (also one whose run.json rank 0 never wrote).
        summed = sum_shards(raw_scalars, meta, raw_histograms)
        if summed.problem:
            problems = [*problems, summed.problem]
        return build_run(
            name=name,
            path=run_dir,
            source=source,
            raw_scalars=summed.scalars,
            raw_histograms=summed.histograms,
            mapper=self.mapper,
            meta=summed.meta,
            problems=tuple(problems),
            steps_are_epochs=epochs,
            not_shown=not_shown,
            preferred=frozenset(summed.scalars) - foreign if ours else frozenset(),
        )


def _foreign_meta(tables: list[Table], event_hparams: Mapping[str, Any]) -> dict[str, Any]:
    """What a foreign run's sources say of it, under run.json's keys. Tables come in
    their order (a trainer state of a later step last); hyperparameters of every source
    are merged; the status is that of the latest trainer state, since a state saved after
    the one that ended the run (resumed training) has not ended."""
    meta: dict[str, Any] = {}
    hparams: dict[str, Any] = {}
    for table in tables:
        if table.order >= 0 and RJ.K_STATUS not in table.meta:
            meta.pop(RJ.K_STATUS, None)
            meta.pop(RJ.K_STATUS_REASON, None)
        meta.update(table.meta)
        hparams.update(table.meta.get(RJ.K_HPARAMS) or {})
    hparams.update(event_hparams)
    if hparams:
        meta[RJ.K_HPARAMS] = hparams
    return meta


def _prefix(tag: str) -> str:
    """Directory-name prefix ``add_scalars(tag, ...)`` gives its sub-writers."""
    return tag.replace("/", "_") + "_"


def _raw_name(tag: str, side: str | None, child: str | None) -> str:
    if side is not None:
        return f"{side}/{tag}"
    if child is not None:
        return f"{tag}/{child[len(_prefix(tag)) :]}"
    return tag


def read_logdir(path: str | os.PathLike[str], extra_rules: Iterable[TagRule] = ()) -> LogDirSnapshot:
    """Read a log dir once (what the command line does)."""
    return LogDirReader(path, extra_rules).refresh()
