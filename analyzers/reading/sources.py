"""One object per source of a run, each reading only what changed since its last poll.

Event files are append-only: a `RecordReader` keeps the offset and each poll decodes
the new records. ``metrics.csv`` may be rewritten (a wider header) and
``trainer_state.json``/``run.json``/``hparams.yaml``/``config.json`` are replaced whole, so those are
re-read when their size or mtime changes. A metric CSV log and an MLflow run are read
incrementally by their own readers; a W&B run folder is re-read when its stat-based
signature changes. Everything but event files and run.json yields a `Table`.
Problems are capped per file so that one corrupt file cannot flood the report, and a
parser that fails on a file costs that file only: its exception becomes one problem.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from trainscope.analyzers.reading.discovery import SourceFile
from trainscope.analyzers.reading.eventdecode import DecodedEvents, EventDecoder
from trainscope.analyzers.reading.hf_config import parse_model_config
from trainscope.analyzers.reading.hf_state import parse_trainer_state
from trainscope.analyzers.reading.hparams import parse_hparams_yaml
from trainscope.analyzers.reading.lightning_csv import parse_metrics_csv
from trainscope.analyzers.reading.metric_csv import CsvLogReader
from trainscope.analyzers.reading.mlflow_store import MlflowRunReader
from trainscope.analyzers.reading.tagmap import TagMapper
from trainscope.analyzers.reading.wandb import read_wandb_run, wandb_signature
from trainscope.analyzers.run import Series
from trainscope.logformat.records import RecordReader
from trainscope.logformat.runjson import read_run_json

# Bytes of an event file decoded per step: bounds memory on a huge first read.
CHUNK_BYTES = 64 * 1024 * 1024
# Problems kept per file; the rest are counted.
MAX_PROBLEMS_PER_FILE = 5
# An incomplete last record is reported once the file has not grown for this long.
STALE_TAIL_SECONDS = 10.0
# A whole-file source larger than this is not read (hparams.yaml, trainer_state.json
# and run.json are kilobytes; a config dumped whole may be megabytes).
MAX_WHOLE_FILE_BYTES = 256 * 1024 * 1024


@dataclass
class Table:
    """What a source other than an event file read: series by raw name, run.json keys."""

    series: dict[str, Series] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    order: int = -1  # a run's tables merge in this order (trainer_state.json: its global step)
    # A CSV log with key columns: one run per part (run-name suffix -> series); `series` is empty.
    parts: dict[str, dict[str, Series]] | None = None
    epochs: bool = False  # every step of this table counts epochs


@dataclass
class ProblemLog:
    """A file's problems, at most `MAX_PROBLEMS_PER_FILE` lines plus a count."""

    path: str
    lines: list[str] = field(default_factory=list)
    dropped: int = 0
    # Lines that are rewritten as reading goes on (an event file's zero-filled stretches), by what they are about.
    keyed: dict[str, str] = field(default_factory=dict)

    def add(self, items: list[str]) -> None:
        for line in items:
            if len(self.lines) < MAX_PROBLEMS_PER_FILE:
                self.lines.append(line)
            else:
                self.dropped += 1

    def render(self) -> list[str]:
        keyed = list(self.keyed.values())
        if self.dropped:
            return self.lines + keyed + [f"{self.path}: {self.dropped} more problem(s) not shown"]
        return self.lines + keyed


# A failure's own text is kept to this many characters in its problem line.
MAX_REASON_CHARS = 200


def failure_line(path: str, exc: BaseException) -> str:
    """The one problem line for a file whose reader raised `exc`.

    Every format's parser is called behind this fence (`LogDirReader` polls each source
    through it), so a parser written tomorrow is covered too. The common failures get
    words a user can act on; anything else is named by its type and message.
    """
    if isinstance(exc, RecursionError):
        reason = "nested too deeply to read (deeper than Python's recursion limit)"
    elif isinstance(exc, MemoryError):
        reason = "too large to read into memory"
    elif isinstance(exc, UnicodeError):
        reason = f"not text in the expected encoding ({exc})"
    else:
        reason = f"{type(exc).__name__}: {exc}"
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[: MAX_REASON_CHARS - 1] + "…"
    return f"{path}: unreadable ({reason}); skipped"


def file_signature(path: str) -> tuple[int, int, int] | None:
    """(mtime, size, inode) of `path`, None when it cannot be stat-ed: "has it changed"."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


class EventSource:
    """An event file: new records since the last poll, decoded."""

    def __init__(self, file: SourceFile) -> None:
        self.file = file
        self.reader = RecordReader(file.path)
        self.decoder = EventDecoder(file.path)
        self.problems = ProblemLog(file.path)
        self.records_read = 0
        self.tail_note: str | None = None
        # A file whose first bytes are no record framing is not read further: its one
        # line says so, and no later "truncated, waiting" note contradicts it.
        self.ignored = False
        self.zero_runs: list[list[int]] = []  # merged [start, end) runs of zero bytes

    def poll(self) -> list[DecodedEvents]:
        chunks: list[DecodedEvents] = []
        while not self.ignored:
            result = self.reader.read_new(max_bytes=CHUNK_BYTES)
            problems = list(result.problems)
            if problems and self.records_read == 0 and not result.records and _starts_corrupt(problems):
                problems = [
                    f"{self.file.path}: not a TensorBoard event file (no valid record framing); ignored"
                ]
                self.ignored = True
            decoded = (
                self.decoder.decode(result.records, result.offsets) if result.records else DecodedEvents()
            )
            decoded.problems[:0] = problems
            self.problems.add(decoded.problems)
            self.records_read += len(result.records)
            zeros = self._add_zero_runs(result.zero_runs)
            if result.records or decoded.problems or zeros:
                chunks.append(decoded)
            if not result.more:
                break
        return chunks

    def _add_zero_runs(self, runs: list[tuple[int, int]]) -> bool:
        """Merge the zero runs of one read into the file's (the read of a long run in
        chunks, or the bytes kept back at a chunk's end, continue the run before it) and
        keep them as one line; True when there were any."""
        for start, end in runs:
            if self.zero_runs and start <= self.zero_runs[-1][1]:
                self.zero_runs[-1][1] = max(self.zero_runs[-1][1], end)
            else:
                self.zero_runs.append([start, end])
        if runs:
            self.problems.keyed["zeros"] = _zeros_line(self.file.path, self.zero_runs)
        return bool(runs)

    def update_tail_note(self, now: float | None = None) -> bool:
        """Note an incomplete last record that has waited `STALE_TAIL_SECONDS`; True if the note changed."""
        note = None
        pending = self.reader.size_seen - self.reader.offset
        if self.ignored or (self.zero_runs and self.zero_runs[-1][1] >= self.reader.size_seen):
            pending = 0  # said already: not an event file, or zeros up to the end
        if pending > 0:
            try:
                idle = (now if now is not None else time.time()) - os.stat(self.file.path).st_mtime
            except OSError:
                idle = 0.0
            if idle >= STALE_TAIL_SECONDS:
                note = (
                    f"{self.file.path}: last {pending} byte(s) from offset {self.reader.offset} are not a whole "
                    f"record (truncated file, or a writer that stopped mid-record); waiting for the rest"
                )
        changed = note != self.tail_note
        self.tail_note = note
        return changed


def _zeros_line(path: str, runs: list[list[int]]) -> str:
    """One line for all the zero-filled stretches of an event file."""
    total = sum(end - start for start, end in runs)
    where = (
        f"from offset {runs[0][0]:,}"
        if len(runs) == 1
        else f"in {len(runs)} stretches from offset {runs[0][0]:,}"
    )
    return f"{path}: {total:,} zero bytes {where} (a preallocated or crash-padded file); skipped"


def _starts_corrupt(problems: list[str]) -> bool:
    return problems[0].endswith("corrupt record header at offset 0; skipped to next record")


class _WholeFileSource:
    """A file re-read whole when its (mtime, size, inode) changes."""

    def __init__(self, file: SourceFile) -> None:
        self.file = file
        self._signature: tuple[int, int, int] | None = None
        self.problems = ProblemLog(file.path)

    def _changed(self) -> bool:
        sig = file_signature(self.file.path)
        if sig == self._signature:
            return False
        self._signature = sig
        return sig is not None

    def _text(self) -> str | None:
        try:
            size = os.path.getsize(self.file.path)
            if size > MAX_WHOLE_FILE_BYTES:
                problem = f"{self.file.path}: {size} bytes, too large; skipped"
                self.problems = ProblemLog(self.file.path, [problem])
                return None
            with open(self.file.path, encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except OSError as exc:
            self.problems = ProblemLog(self.file.path, [f"{self.file.path}: cannot read ({exc.strerror})"])
            return None

    def poll(self) -> Table | None:
        """The file's table when it changed since the last poll, else None."""
        if not self._changed():
            return None
        text = self._text()
        if text is None:
            return Table()
        self.problems = ProblemLog(self.file.path)
        try:
            table, problems = self._parse(text)
        except Exception as exc:  # noqa: BLE001 - a foreign file must never stop the reader
            table, problems = Table(), [failure_line(self.file.path, exc)]
        self.problems.add(problems)
        return table

    def _parse(self, text: str) -> tuple[Table, list[str]]:
        raise NotImplementedError


class CsvSource(_WholeFileSource):
    """A Lightning ``metrics.csv``."""

    def _parse(self, text: str) -> tuple[Table, list[str]]:
        data = parse_metrics_csv(text, self.file.path)
        return Table(series=data.series), data.problems


class TrainerStateSource(_WholeFileSource):
    """A Hugging Face ``trainer_state.json``."""

    def _parse(self, text: str) -> tuple[Table, list[str]]:
        state = parse_trainer_state(text, self.file.path)
        return Table(series=state.series, meta=state.meta, order=state.global_step), state.problems


class ModelConfigSource(_WholeFileSource):
    """A Hugging Face model's ``config.json`` in a Trainer's output dir: its number of classes."""

    def _parse(self, text: str) -> tuple[Table, list[str]]:
        meta, problems = parse_model_config(text, self.file.path)
        return Table(meta=meta), problems


class HparamsSource(_WholeFileSource):
    """A Lightning ``hparams.yaml``: hyperparameters only."""

    def _parse(self, text: str) -> tuple[Table, list[str]]:
        meta, problems = parse_hparams_yaml(text, self.file.path)
        return Table(meta=meta), problems


class CsvLogSource:
    """A Keras CSVLogger file or a plain metric CSV log (appended rows read incrementally)."""

    def __init__(self, file: SourceFile, mapper: TagMapper) -> None:
        self.file = file
        self.reader = CsvLogReader(file.path, mapper)
        self.problems = ProblemLog(file.path)

    def poll(self) -> Table | None:
        log = self.reader.poll()
        if log is None:
            return None
        self.problems = ProblemLog(self.file.path)
        self.problems.add(log.problems)
        if set(log.parts) <= {None}:
            return Table(series=log.parts.get(None, {}), epochs=log.epochs)
        return Table(parts={k: v for k, v in log.parts.items() if k is not None}, epochs=log.epochs)


class MlflowSource:
    """An MLflow file-store run directory (metric files read incrementally)."""

    def __init__(self, file: SourceFile) -> None:
        self.file = file
        self.reader = MlflowRunReader(file.path)
        self.problems = ProblemLog(file.path)

    def poll(self) -> Table | None:
        run = self.reader.poll()
        if run is None:
            return None
        self.problems = ProblemLog(self.file.path)
        self.problems.add(run.problems)
        return Table(series=run.series, meta=run.meta)


class WandbSource:
    """A W&B run folder, re-read whole when its signature changes."""

    def __init__(self, file: SourceFile) -> None:
        self.file = file
        self._signature: tuple | None = None
        self.problems = ProblemLog(file.path)

    def poll(self) -> Table | None:
        try:
            signature = wandb_signature(self.file.path)
        except Exception:  # noqa: BLE001 - unreadable now: try again on the next poll
            signature = None
        if signature is not None and signature == self._signature:
            return None
        self._signature = signature
        run = read_wandb_run(self.file.path)
        self.problems = ProblemLog(self.file.path)
        self.problems.add(list(run.problems))
        return Table(series=dict(run.series), meta=dict(run.meta))


class RunJsonSource(_WholeFileSource):
    def poll(self) -> tuple[dict[str, Any] | None, str | None] | None:  # type: ignore[override]
        """``(data, problem)`` when run.json changed, else None."""
        if not self._changed():
            return None
        try:
            data, problem = read_run_json(os.path.dirname(self.file.path))
        except Exception as exc:  # noqa: BLE001 - e.g. JSON nested deeper than the parser's recursion
            data, problem = None, failure_line(self.file.path, exc)
        self.problems = ProblemLog(self.file.path, [problem] if problem else [])
        return data, problem
