"""Finding runs in a log dir, and noticing new ones cheaply.

A run is one of:

- a directory holding TensorBoard event files, a Lightning ``metrics.csv``, a Hugging
  Face ``trainer_state.json`` or a TrainScope ``run.json`` (a Lightning ``hparams.yaml``
  beside them gives the run's hyperparameters, and alone makes no run; a model's
  ``config.json`` gives a Trainer run its number of classes, read only in a directory
  known to be a Trainer's output dir or checkpoint, see below);
- a Keras ``CSVLogger`` file or a plain metric CSV/TSV log of any name (``.csv``,
  ``.tsv``, ``.log``, ``.txt``), recognised by its first line (`metric_csv.parse_header`): the
  file is the run, named by its path;
- an MLflow file-store run directory (``mlruns/<experiment>/<run_id>/``), read whole by
  `mlflow_store` (its ``metrics/``, ``params/``, ``tags/`` and ``artifacts/`` are not
  walked);
- a W&B run folder (``wandb/run-*/``, ``wandb/offline-run-*/``, old ``wandb/dryrun-*/``), read whole by `wandb`.

Some writers spread one run over several directories; those are folded into one run:

- Keras writes ``<run>/train/`` and ``<run>/validation/``: both belong to ``<run>``.
- Hugging Face writes ``trainer_state.json`` into ``<output_dir>/checkpoint-<n>/``:
  every checkpoint belongs to ``<output_dir>``. Its TensorBoard callback writes into
  ``<output_dir>/runs/<name>/`` (or a ``logs/`` beside the checkpoints): when there is
  exactly one such directory, it belongs to ``<output_dir>`` too (the same points as
  the trainer state, and more where the state is older). Several are several training
  attempts: they stay runs of their own and the output dir says so. A directory is
  known for an output dir by a ``trainer_state.json`` in it or in a checkpoint under
  it, or from the first step on, by a run.json that TrainScope's Trainer callback
  wrote (its ``framework`` says so): a run without checkpoints (``save_strategy="no"``)
  is then one run, and a live one does not turn from two runs into one at its first
  checkpoint. A run.json of any other loop folds nothing: its own ``runs/`` stay runs.
  Only a directory with a ``runs/`` or ``logs/`` in it has its run.json read, once
  per version of the file (the collector replaces it whole, which re-lists the
  directory).
- ``SummaryWriter.add_scalars("Loss", {"train": ..})`` writes ``<run>/Loss_train/``;
  whether a sub-directory of a run is such a child depends on its tags, so that is
  decided when it is read (see `logdir`).

Symbolic links to directories are followed (runs gathered for comparison are often
links), each target once, never into a directory that contains the link, and not when
the target lies inside the log dir anyway (W&B's ``latest-run`` points at a run folder
beside it, which must not become a second run).

The tree is re-listed only where a directory's mtime changed (adding or removing an
entry changes it), so a refresh of an unchanged log dir costs one ``stat`` per
directory, plus one per candidate metric log whose first line is still being written.
A directory modified within `RACY_SECONDS` of its listing is listed again on the next
refresh, in case an entry landed within the mtime's granularity.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field

from trainscope.analyzers.reading import metric_csv
from trainscope.analyzers.reading.hf_config import CONFIG_JSON
from trainscope.analyzers.reading.hparams import HPARAMS_YAML
from trainscope.analyzers.reading.lightning_csv import is_lightning_header
from trainscope.analyzers.reading.mlflow_store import is_mlflow_run_dir
from trainscope.analyzers.reading.tagmap import TagMapper
from trainscope.analyzers.reading.wandb import is_wandb_run_dir
from trainscope.logformat.events import is_event_file
from trainscope.logformat.runjson import FRAMEWORK_HF_TRAINER, K_FRAMEWORK, RUN_JSON, read_run_json

METRICS_CSV = "metrics.csv"
TRAINER_STATE = "trainer_state.json"
KERAS_SIDES = ("train", "validation")
_HF_CHECKPOINT = re.compile(r"checkpoint-\d+")
# Where Trainer's TensorBoard callback writes, relative to its output dir:
# runs/<name>/ (its old default logging_dir) or logs/ (the tutorials' logging_dir).
HF_RUNS_DIR = "runs"
HF_LOGS_DIR = "logs"
_WANDB_RUN_DIR = re.compile(r"(?:offline-|dry)?run-.+")  # online, offline, and the old SDK's dry runs
# Listing a directory again while its mtime is this recent guards against missing an
# entry created in the same clock tick as the previous listing.
RACY_SECONDS = 2.0
# A log dir this large is probably not a log dir: stop walking and say so.
MAX_DIRECTORIES = 20_000

KIND_EVENTS = "events"
KIND_CSV = "lightning_csv"
KIND_TRAINER_STATE = "hf_trainer_state"
KIND_RUN_JSON = "run_json"
KIND_HPARAMS = "hparams_yaml"
KIND_HF_CONFIG = "hf_model_config"  # a model's config.json: a source only in a Trainer's directories
KIND_CSV_LOG = "csv_log"  # a metric CSV log: the file is the run
KIND_MLFLOW = "mlflow"  # an MLflow run directory: the directory is the source
KIND_WANDB = "wandb"  # a W&B run folder: the directory is the source
# Kinds whose source is the run directory itself, not a file in it.
DIRECTORY_KINDS = (KIND_MLFLOW, KIND_WANDB)
# Kinds that make a directory a run (hparams.yaml only joins one; a CSV log is its own).
_RUN_MAKING = (KIND_EVENTS, KIND_CSV, KIND_TRAINER_STATE, KIND_RUN_JSON)
# What a Trainer checkpoint holds that its output dir's run reads (checkpoint-<n>/ folds into it).
_CHECKPOINT_KINDS = {KIND_TRAINER_STATE, KIND_HF_CONFIG, KIND_CSV_LOG}


@dataclass
class _Dir:
    mtime_ns: int
    listed_at: float
    files: dict[str, str]  # name -> kind
    subdirs: list[str]
    links: set[str]  # the subdirs that are symbolic links
    layout: str | None = None  # KIND_MLFLOW or KIND_WANDB: the directory is a run read whole
    # Candidate metric logs without a whole first line yet: name -> (size, mtime) when sniffed.
    pending: dict[str, tuple[int, int]] = field(default_factory=dict)
    # Verdicts on candidate metric logs: name -> (inode, kind or None), reused when re-listed.
    sniffed: dict[str, tuple[int, str | None]] = field(default_factory=dict)
    # Whether its run.json was recorded in the Trainer's loop, with the file's (inode, size,
    # mtime) then, reused when re-listed; None where no run.json was read (`_trainer_verdict`).
    trainer: tuple[tuple[int, int, int], bool] | None = None

    @property
    def trainer_output(self) -> bool:
        """Whether run.json says this is a Trainer's output dir."""
        return self.trainer is not None and self.trainer[1]


@dataclass(frozen=True)
class SourceFile:
    path: str  # the file; for DIRECTORY_KINDS, the run directory
    kind: str
    run_dir: str  # the run it belongs to: a directory, or the file of a CSV log
    side: str | None = None  # "train"/"validation" for a Keras sub-directory


@dataclass
class Listing:
    """What the tree holds now."""

    sources: dict[str, SourceFile] = field(default_factory=dict)  # by path
    run_dirs: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)  # run dir -> lines about its layout


def classify(name: str) -> str | None:
    """The kind of a file known by its name alone (a metric log needs its first line: `_sniff`)."""
    if name == RUN_JSON:
        return KIND_RUN_JSON
    if name == TRAINER_STATE:
        return KIND_TRAINER_STATE
    if name == HPARAMS_YAML:
        return KIND_HPARAMS
    if name == CONFIG_JSON:
        return KIND_HF_CONFIG
    if is_event_file(name):
        return KIND_EVENTS
    return None


class DirectoryWatcher:
    """Keeps a listing of the log dir's tree, re-listing only what changed."""

    def __init__(self, root: str, mapper: TagMapper | None = None) -> None:
        self.root = root
        self._real_root = os.path.realpath(root)
        self.mapper = mapper if mapper is not None else TagMapper()
        self._dirs: dict[str, _Dir] = {}
        self._listing = Listing()

    def scan(self, full: bool = False) -> tuple[Listing, bool]:
        """Return the current listing and whether it changed since the last scan."""
        changed = False
        seen: set[str] = set()
        problems: list[str] = []
        stack = [self.root]
        linked: set[str] = set()  # real paths of symlinked directories already walked
        while stack:
            path = stack.pop()
            if path in seen:
                continue
            if len(seen) >= MAX_DIRECTORIES:
                problems.append(
                    f"{self.root}: more than {MAX_DIRECTORIES} directories; stopped looking for runs"
                )
                break
            seen.add(path)
            entry = self._dirs.get(path)
            try:
                mtime_ns = os.stat(path).st_mtime_ns
            except OSError as exc:
                if path == self.root:
                    problems.append(f"{path}: cannot read ({exc.strerror})")
                continue
            if full or entry is None or entry.mtime_ns != mtime_ns or _racy(entry):
                fresh = self._list(path, mtime_ns, entry, problems)
                if fresh is None:
                    continue
                if (
                    entry is None
                    or fresh.files != entry.files
                    or fresh.subdirs != entry.subdirs
                    or fresh.layout != entry.layout
                    or fresh.trainer_output != entry.trainer_output
                ):
                    changed = True
                entry = self._dirs[path] = fresh
            elif entry.pending and self._resniff(path, entry):
                changed = True
            if entry.layout is not None:
                continue  # read whole by its own reader
            for name in reversed(entry.subdirs):
                child = os.path.join(path, name)
                if name in entry.links and not self._follow(child, linked):
                    continue
                stack.append(child)
        for gone in set(self._dirs) - seen:
            del self._dirs[gone]
            changed = True
        if changed or self._listing.problems != problems:
            self._listing = self._assign(problems)
            changed = True
        return self._listing, changed

    def _list(self, path: str, mtime_ns: int, old: _Dir | None, problems: list[str]) -> _Dir | None:
        listed_at = time.time()
        files: dict[str, str] = {}
        subdirs: list[str] = []
        links: set[str] = set()
        names: list[str] = []
        candidates: list[tuple[str, int]] = []
        try:
            with os.scandir(path) as it:
                for e in it:
                    if e.name.startswith("."):
                        continue  # .git, .ipynb_checkpoints, .trash, hidden temp files
                    names.append(e.name)
                    try:
                        if e.is_dir():
                            subdirs.append(e.name)
                            if e.is_symlink():
                                links.add(e.name)
                        elif e.is_file():
                            kind = classify(e.name)
                            if kind is not None:
                                files[e.name] = kind
                            elif e.name == METRICS_CSV or metric_csv.is_candidate(e.name):
                                candidates.append((e.name, e.inode()))
                    except OSError:
                        continue
        except OSError as exc:
            problems.append(f"{path}: cannot list ({exc.strerror})")
            return None
        subdirs.sort()
        entry = _Dir(mtime_ns, listed_at, {}, subdirs, links, layout=self._layout(path, subdirs, names))
        for name, inode in candidates:
            verdict = old.sniffed.get(name) if old is not None else None
            if verdict is not None and verdict[0] == inode:
                entry.sniffed[name] = verdict
                if verdict[1] is not None:
                    files[name] = verdict[1]
            else:
                self._sniff(path, name, inode, entry, files)
        entry.files = dict(sorted(files.items()))
        entry.trainer = _trainer_verdict(path, entry, old)
        return entry

    @staticmethod
    def _layout(path: str, subdirs: list[str], names: list[str]) -> str | None:
        """KIND_MLFLOW or KIND_WANDB for a directory that is such a run, else None."""
        if is_mlflow_run_dir(names, subdirs):
            return KIND_MLFLOW
        if _WANDB_RUN_DIR.fullmatch(os.path.basename(path)) and is_wandb_run_dir(names):
            return KIND_WANDB
        return None

    def _sniff(self, path: str, name: str, inode: int, entry: _Dir, files: dict[str, str]) -> None:
        """Decide whether a candidate file is a metric log (or a Lightning metrics.csv)."""
        file_path = os.path.join(path, name)
        line = metric_csv.first_line(file_path)
        if line is None:  # nothing but a part of a first line yet: look again when it grows
            try:
                st = os.stat(file_path)
                entry.pending[name] = (st.st_size, st.st_mtime_ns)
            except OSError:
                pass
            return
        kind = None
        if name == METRICS_CSV and is_lightning_header(line):
            kind = KIND_CSV
        elif metric_csv.parse_header(line, self.mapper, name.lower().endswith(".tsv")) is not None:
            kind = KIND_CSV_LOG
        entry.sniffed[name] = (inode, kind)
        if kind is not None:
            files[name] = kind

    def _resniff(self, path: str, entry: _Dir) -> bool:
        """Sniff again the candidates that have grown; True when one became a run."""
        found = False
        for name, seen in list(entry.pending.items()):
            file_path = os.path.join(path, name)
            try:
                st = os.stat(file_path)
            except OSError:
                del entry.pending[name]
                continue
            if (st.st_size, st.st_mtime_ns) == seen:
                continue
            del entry.pending[name]
            files = dict(entry.files)
            self._sniff(path, name, st.st_ino, entry, files)
            if files != entry.files:
                entry.files = dict(sorted(files.items()))
                found = True
        return found

    def _follow(self, link: str, linked: set[str]) -> bool:
        """Walk a symlinked directory once, never one that contains the link (a cycle),
        and not one the walk reaches anyway (inside the log dir, not hidden)."""
        real = os.path.realpath(link)
        here = os.path.realpath(os.path.dirname(link))
        if real in linked or here == real or here.startswith(real + os.sep):
            return False
        if real.startswith(self._real_root + os.sep):
            inside = os.path.relpath(real, self._real_root).split(os.sep)
            if not any(part.startswith(".") for part in inside):
                return False
        linked.add(real)
        return True

    def _assign(self, problems: list[str]) -> Listing:
        """Give every source file its run (folding the Keras and HF layouts)."""
        listing = Listing(problems=problems)
        hf_outputs = self._hf_output_dirs()
        hf_events = self._hf_event_dirs(listing, hf_outputs)
        for path, entry in self._dirs.items():
            if entry.layout is not None:
                listing.run_dirs.add(path)
                listing.sources[path] = SourceFile(path, entry.layout, path)
                continue
            kinds = set(entry.files.values())
            if path in hf_events:
                run_dir, side = hf_events[path], None
            else:
                run_dir, side = self._run_dir_of(path, entry)
            for name, kind in entry.files.items():
                file_path = os.path.join(path, name)
                if kind == KIND_CSV_LOG:
                    listing.run_dirs.add(file_path)
                    listing.sources[file_path] = SourceFile(file_path, kind, file_path)
                elif kind == KIND_HF_CONFIG:
                    if path in hf_outputs or KIND_TRAINER_STATE in kinds:  # a Trainer's, else not ours
                        listing.run_dirs.add(run_dir)
                        listing.sources[file_path] = SourceFile(file_path, kind, run_dir)
                elif kinds & set(_RUN_MAKING):
                    listing.run_dirs.add(run_dir)
                    listing.sources[file_path] = SourceFile(file_path, kind, run_dir, side)
        return listing

    def _hf_output_dirs(self) -> set[str]:
        """Directories known to be a Trainer's output dir: a trainer_state.json in them or
        in a checkpoint under them, or a run.json of TrainScope's Trainer callback."""
        outputs: set[str] = set()
        for path, entry in self._dirs.items():
            if KIND_TRAINER_STATE in entry.files.values():
                parent, name = os.path.split(path)
                outputs.add(parent if _HF_CHECKPOINT.fullmatch(name) and path != self.root else path)
            elif entry.trainer_output:
                outputs.add(path)
        return outputs

    def _hf_event_dirs(self, listing: Listing, outputs: set[str]) -> dict[str, str]:
        """Event directories of Trainer's TensorBoard callback -> their output dir, where
        the output dir has exactly one; a note on the output dir where it has several."""
        found: dict[str, list[str]] = {}
        for path, entry in self._dirs.items():
            if path == self.root or KIND_EVENTS not in entry.files.values():
                continue
            parent, name = os.path.split(path)
            if name == HF_LOGS_DIR and parent in outputs:
                found.setdefault(parent, []).append(path)
            elif os.path.basename(parent) == HF_RUNS_DIR and os.path.dirname(parent) in outputs:
                found.setdefault(os.path.dirname(parent), []).append(path)
        folded: dict[str, str] = {}
        for output, event_dirs in found.items():
            if len(event_dirs) == 1:
                folded[event_dirs[0]] = output
            else:
                names = ", ".join(sorted(os.path.relpath(d, output).replace(os.sep, "/") for d in event_dirs))
                listing.notes[output] = [
                    (
                        f"{output}: {len(event_dirs)} TensorBoard directories of separate training attempts "
                        f"({names}) are runs of their own; none is merged into the output dir's run"
                    )
                ]
        return folded

    def _run_dir_of(self, path: str, entry: _Dir) -> tuple[str, str | None]:
        if path == self.root:
            return path, None
        parent, name = os.path.split(path)
        if name in KERAS_SIDES and KIND_EVENTS in entry.files.values():
            return parent, name
        if _HF_CHECKPOINT.fullmatch(name) and set(entry.files.values()) <= _CHECKPOINT_KINDS:
            return parent, None
        return path, None

    def has_events(self, path: str) -> bool:
        """Whether directory `path` directly holds an event file (as of the last scan)."""
        entry = self._dirs.get(path)
        return entry is not None and KIND_EVENTS in entry.files.values()


def _trainer_verdict(path: str, entry: _Dir, old: _Dir | None) -> tuple[tuple[int, int, int], bool] | None:
    """Whether the run.json of directory `path` was recorded in the Trainer's loop (by
    its ``framework``), with the file's signature; the old verdict while the file is the
    same. Read only where it matters: beside a ``runs/`` or ``logs/`` the Trainer's
    TensorBoard callback may have written (a sub-directory appearing re-lists the
    directory, and this is asked again)."""
    if entry.files.get(RUN_JSON) != KIND_RUN_JSON or not {HF_RUNS_DIR, HF_LOGS_DIR} & set(entry.subdirs):
        return None
    try:
        st = os.stat(os.path.join(path, RUN_JSON))
    except OSError:
        return None
    signature = (st.st_ino, st.st_size, st.st_mtime_ns)
    if old is not None and old.trainer is not None and old.trainer[0] == signature:
        return old.trainer
    data, _ = read_run_json(path)  # an unreadable one is said by its reader; here it folds nothing
    return signature, data is not None and data.get(K_FRAMEWORK) == FRAMEWORK_HF_TRAINER


def _racy(entry: _Dir) -> bool:
    return entry.listed_at - entry.mtime_ns / 1e9 < RACY_SECONDS
