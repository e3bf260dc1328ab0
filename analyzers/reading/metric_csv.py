"""Keras ``CSVLogger`` files and plain metric CSV/TSV logs of hand-written loops.

Such a log has no fixed name (``training.log``, ``history.csv``, ``log.tsv``,
``results/metrics/training_log.csv``), so it is recognised by its header
(`first_line`, `parse_header`): a line naming an x column (``epoch``, or ``step``,
``global_step``, ``iteration``, ``iter``) and at least one metric the tag map knows or
that names a loss or an accuracy. Only files with a log's suffix (`is_candidate`) are
looked at, and only their first `SNIFF_BYTES`, so a dataset CSV, a config, a console
log, images or checkpoints are never taken for runs, and cheaply.

The header is the first line, or follows at most `MAX_PREAMBLE_LINES` lines of preamble
(`_is_preamble`): a title (one field and no delimiter, e.g. ``model_history_log``),
Excel's ``sep=;`` line, ``#`` comments, blank lines.
Only such lines are passed over, and the line after them must pass the same header
check, so a dataset CSV under a title is still no run.

Keras writes ``epoch,accuracy,loss,val_accuracy,val_loss`` (plus ``learning_rate``
when a callback sets it), epochs counted from 0: the steps of such a log count epochs.
Where the log has a step-like column, that is its x-axis instead.

Columns before the x column whose values are identifiers (integers or words) that
repeat over rows, or that tell apart rows of one x value, are keys: a loop over folds
writes ``fold,epoch,train_loss,...`` and each fold is a run of its own, named
``<file>/fold=<value>`` (also when the file holds one fold). A counter or a clock before
the x column (a new value on nearly every row) is no key, nor a column the tag map
knows (``lr``). Empty cells are no point, while the text ``nan`` is a real NaN (as in
`lightning_csv`). A header repeated mid-file (a second attempt appended, a wider
header) applies to the rows after it; later rows win on equal steps.

Files are appended to row by row, so `CsvLogReader` parses only the bytes added since
its last poll (a file that shrank or was replaced is read again from the start); a
last line without its newline is read provisionally and read again once complete.
"""

from __future__ import annotations

import codecs
import csv
import math
import os
import re
from array import array
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from trainscope.analyzers.reading.appended import read_appended_lines
from trainscope.analyzers.reading.series import latest_per_step, merge_series
from trainscope.analyzers.reading.tagmap import TagMapper
from trainscope.analyzers.reading.train_loss import words
from trainscope.analyzers.run import Series

# File name endings a metric CSV log may have.
LOG_SUFFIXES = (".csv", ".tsv", ".log", ".txt")
# Bytes read to decide whether a file is a metric log: its header must end within them.
# The first read is smaller: most files have a newline early, and a directory of text
# files (a dataset) is then cheap to sniff.
SNIFF_FIRST_BYTES = 1024
SNIFF_BYTES = 8192
# Delimiters tried, in order; a .tsv file tries the tab first.
DELIMITERS = (",", "\t", ";")
# x columns, preferred in this order; "epoch" makes the log's steps count epochs.
STEP_COLUMNS = ("step", "global_step", "iteration", "iter")
EPOCH_COLUMN = "epoch"
X_COLUMNS = (*STEP_COLUMNS, EPOCH_COLUMN)
# A header with more columns, or a column name longer than this, is not a metric log's.
MAX_COLUMNS = 1000
MAX_NAME_CHARS = 200
# A key column with more distinct values than this is no key (one run per value).
MAX_PARTS = 100
# Longest key value kept in a run name.
MAX_KEY_CHARS = 64
# Bytes parsed per read; a huge file is read in pieces within one poll.
CHUNK_BYTES = 16 * 1024 * 1024
# An x value beyond this is no step (it would not fit the int64 steps).
MAX_STEP = 2.0**62
# A line longer than this is garbage, not a row: it is dropped, not kept waiting.
MAX_LINE_BYTES = 1024 * 1024
# Lines of preamble (a title, ``sep=;``, ``#`` comments; blank lines not counted) that
# may come before the header: the header is at most the fifth line.
MAX_PREAMBLE_LINES = 4
_EXCEL_SEP_LINE = re.compile(r'"?sep=.?"?', re.IGNORECASE)
_METRIC_WORDS = frozenset({"loss", "losses", "acc", "accuracy"})
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def is_candidate(name: str) -> bool:
    """Whether a file of this name may be a metric log (and is worth sniffing)."""
    return name.lower().endswith(LOG_SUFFIXES)


def _decode(data: bytes) -> str:
    if data.startswith(_UTF16_BOMS):
        return data.decode("utf-16", errors="replace")
    return data.decode("utf-8-sig", errors="replace")


@dataclass(frozen=True)
class Header:
    names: tuple[str, ...]
    delimiter: str
    x: int  # index of the x column
    keys: tuple[int, ...]  # columns before x that may be keys

    @property
    def epochs(self) -> bool:
        return self.names[self.x].lower() == EPOCH_COLUMN


def parse_header(line: str, mapper: TagMapper, prefer_tab: bool = False) -> Header | None:
    """The header of a metric log, or None when `line` is not one."""
    if "\x00" in line:
        return None
    for delimiter in ("\t",) + DELIMITERS if prefer_tab else DELIMITERS:
        if delimiter not in line:
            continue
        try:
            cells = next(csv.reader([line], delimiter=delimiter))
        except (csv.Error, StopIteration):
            continue
        header = _header(tuple(c.strip() for c in cells), delimiter, mapper)
        if header is not None:
            return header
    return None


def _header(names: tuple[str, ...], delimiter: str, mapper: TagMapper) -> Header | None:
    if not 2 <= len(names) <= MAX_COLUMNS:
        return None
    for i, name in enumerate(names):
        if not name:
            if i > 0:  # only pandas' unnamed index column may be nameless
                return None
            continue
        if len(name) > MAX_NAME_CHARS or not name.isprintable() or _is_number(name):
            return None
    lower = [n.lower() for n in names]
    x = next((lower.index(c) for c in X_COLUMNS if c in lower), None)
    if x is None:
        return None
    first_x = min(i for i, n in enumerate(lower) if n in X_COLUMNS)
    metrics = [n for i, n in enumerate(names) if i != x and n and n.lower() not in X_COLUMNS]
    if not any(mapper.map(n) is not None or words(n) & _METRIC_WORDS for n in metrics):
        return None
    keys = tuple(i for i in range(first_x) if names[i])
    return Header(names, delimiter, x, keys)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_preamble(line: str) -> bool:
    """Whether a line before the header may be passed over: blank, a ``#`` comment, Excel's
    ``sep=;``, or a title (one printable field without any of the `DELIMITERS`, and some
    word in it: a row of numbers, as in a YOLO label file, is data, not a title)."""
    text = line.strip()
    if not text or text.startswith("#") or _EXCEL_SEP_LINE.fullmatch(text):
        return True
    if len(text) > MAX_NAME_CHARS or not text.isprintable() or any(d in text for d in DELIMITERS):
        return False
    return not all(_is_number(word) for word in text.split())


def first_line(path: str) -> str | None:
    """The file's header candidate, decoded: its first line that is not preamble
    (`_is_preamble`; at most `MAX_PREAMBLE_LINES` of it). None while that line is still
    being written (the file ends inside a line, or is empty); "" when the file cannot be
    read, or has no such line within `SNIFF_BYTES` and the preamble limit (no header then).

    A file that ends, at a line end, with preamble alone is no log either: caption and
    label files of a dataset (one line of words each) must be decided at once, not be
    watched for a header that never comes."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(SNIFF_FIRST_BYTES)
            found = _header_candidate(head, len(head) < SNIFF_FIRST_BYTES)
            if found is None and len(head) == SNIFF_FIRST_BYTES:
                head += fh.read(SNIFF_BYTES - SNIFF_FIRST_BYTES)
                found = _header_candidate(head, len(head) < SNIFF_BYTES)
    except OSError:
        return ""
    if found is None and len(head) >= SNIFF_BYTES:
        return ""  # no header ends within the bytes sniffed
    return found


def _header_candidate(head: bytes, at_end: bool) -> str | None:
    """The first complete line of `head` that is not preamble; "" when there is none (too
    much preamble, or `head` is the whole file and holds preamble alone); None when the
    line may come yet (`head` ends inside a line, is empty, or is not all of the file)."""
    lines = _decode(head).split("\n")
    preamble = 0
    for line in lines[:-1]:  # the last piece has no newline yet
        line = line.rstrip("\r")
        if not _is_preamble(line):
            return line
        if line.strip():
            preamble += 1
            if preamble > MAX_PREAMBLE_LINES:
                return ""
    if lines[-1] or not at_end or len(lines) == 1:
        return None
    return ""


@dataclass
class CsvLog:
    """A metric log's runs: part name (None for the whole file, else ``"fold=1"``) -> series."""

    parts: dict[str | None, dict[str, Series]] = field(default_factory=dict)
    epochs: bool = False  # the steps count epochs
    problems: list[str] = field(default_factory=list)


class _Segment:
    """The rows under one header, each cell converted once, when its row arrives."""

    def __init__(self, header: Header) -> None:
        self.header = header
        self.x = array("d")
        self.columns = [c for c, name in enumerate(header.names) if name and c != header.x]
        self.values = {c: array("d") for c in self.columns}
        self.present = {c: bytearray() for c in self.columns}  # 1 where the cell held a number
        self.key_cells: dict[int, list[str]] = {c: [] for c in header.keys}
        self.text_cells: dict[int, int] = {}  # column -> cells that were not numbers

    def add(self, cells: list[str]) -> None:
        n = len(cells)
        self.x.append(_float_or_nan(cells[self.header.x]) if self.header.x < n else math.nan)
        for c in self.columns:
            cell = cells[c] if c < n else ""
            value, ok = math.nan, 0
            if cell:
                try:
                    value, ok = float(cell), 1
                except ValueError:
                    self.text_cells[c] = self.text_cells.get(c, 0) + 1
            self.values[c].append(value)
            self.present[c].append(ok)
        for c, column in self.key_cells.items():
            column.append(cells[c] if c < n else "")

    def mark(self) -> tuple[int, dict[int, int]]:
        return len(self.x), dict(self.text_cells)

    def rollback(self, mark: tuple[int, dict[int, int]]) -> None:
        n, self.text_cells = mark
        del self.x[n:]
        for c in self.columns:
            del self.values[c][n:]
            del self.present[c][n:]
        for column in self.key_cells.values():
            del column[n:]

    def keys(self, mapper: TagMapper, x: np.ndarray) -> list[int]:
        """The key columns: identifiers before the x column that repeat over rows, or that
        tell apart rows sharing an x value (one fold's epoch 1 from another's)."""
        keys = []
        x_repeats = len(set(x.tolist())) < len(x)
        for c, cells in self.key_cells.items():
            if mapper.map(self.header.names[c]) is not None:
                continue  # a metric logged before the x column (lr, loss)
            distinct = set(cells)
            if not cells or "" in distinct or len(distinct) > MAX_PARTS:
                continue
            repeats = len(distinct) == 1 or 2 * len(distinct) <= len(cells)
            separates = x_repeats and len(set(zip(cells, x.tolist()))) == len(cells)
            if not (repeats or separates):
                continue  # nearly every row its own value: a counter or a time, not a key
            if all(_is_identifier(v) for v in distinct):
                keys.append(c)
        return keys

    def collect(self, log: CsvLog, mapper: TagMapper, path: str) -> None:
        """Add this segment's series to `log`, later points winning over earlier segments'."""
        names = self.header.names
        x = np.array(self.x, dtype=np.float64)
        placed = np.isfinite(x) & (np.abs(x) < MAX_STEP)
        if not placed.all():
            log.problems.append(
                f"{path}: {int((~placed).sum())} row(s) without a number in '{names[self.header.x]}'; skipped"
            )
        fractional = bool(np.any(x[placed] != np.round(x[placed])))
        if fractional:
            log.problems.append(
                f"{path}: column '{names[self.header.x]}' is fractional; rows are placed in file order"
            )
        log.epochs = self.header.epochs and not fractional
        keys = self.keys(mapper, x)
        groups: dict[str | None, np.ndarray] = {None: np.flatnonzero(placed)}
        if keys:
            labels: dict[str | None, list[int]] = {}
            for i, values in enumerate(zip(*(self.key_cells[k] for k in keys))):
                if placed[i]:
                    label = "/".join(f"{names[k]}={_key_text(v)}" for k, v in zip(keys, values))
                    labels.setdefault(label, []).append(i)
            groups = {label: np.asarray(rows, dtype=np.int64) for label, rows in labels.items()}
        columns = [c for c in self.columns if c not in keys]
        arrays = {
            c: (np.array(self.values[c], dtype=np.float64), np.array(self.present[c], dtype=bool))
            for c in columns
        }
        for label, rows in groups.items():
            steps = np.arange(len(rows), dtype=np.int64) if fractional else x[rows].astype(np.int64)
            part = log.parts.setdefault(label, {})
            for c in columns:
                values, present = arrays[c]
                has = present[rows]
                if not has.any():
                    continue
                series = _series(steps[has], values[rows][has])
                name = names[c]
                part[name] = merge_series([part[name], series]) if name in part else series
        for c, count in sorted(self.text_cells.items()):
            if c in arrays and arrays[c][1].any():  # a column of text is a note, not a metric
                log.problems.append(f"{path}: column {names[c]!r} has {count} non-numeric cell(s); skipped")


def _series(steps: np.ndarray, values: np.ndarray) -> Series:
    if steps.shape[0] > 1 and not np.all(steps[1:] > steps[:-1]):
        steps, values, _ = latest_per_step(steps, values, values)
    return Series(steps, values, None)


class CsvLogReader:
    """Reads one metric log incrementally (see the module docstring). `poll` never raises."""

    def __init__(self, path: str, mapper: TagMapper) -> None:
        self.path = path
        self.mapper = mapper
        self._tsv = path.lower().endswith(".tsv")
        self._ident: tuple[int, int] | None = None  # (device, inode) of the file read
        self._seen: tuple[int, int] | None = None  # (size, mtime) at the last poll
        self._reset()

    def _reset(self) -> None:
        self._offset = 0  # bytes consumed, whole lines only
        self._utf16 = False
        self._segments: list[_Segment] = []
        self._dropped = 0  # lines that were no row of a header
        self._preamble = 0  # lines of preamble passed over before the first header

    def poll(self) -> CsvLog | None:
        """The log as of now when the file changed since the last poll, else None."""
        try:
            return self._poll()
        except Exception as exc:  # noqa: BLE001 - a foreign file must never stop the reader
            self._reset()
            return CsvLog(problems=[f"{self.path}: unreadable metric log ({type(exc).__name__}: {exc})"])

    def _poll(self) -> CsvLog | None:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            self._seen = None
            return CsvLog(problems=[f"{self.path}: cannot read ({exc.strerror})"])
        ident, seen = (st.st_dev, st.st_ino), (st.st_size, st.st_mtime_ns)
        if ident != self._ident or st.st_size < self._offset:
            self._reset()
            self._ident = ident
        elif seen == self._seen:
            return None
        self._seen = seen
        with open(self.path, "rb") as fh:
            if self._offset == 0:
                self._utf16 = fh.read(2) in _UTF16_BOMS
            tail = self._read_utf16(fh) if self._utf16 else self._read_appended(fh)
        return self._build(tail)

    def _read_appended(self, fh: BinaryIO) -> str:
        """Feed the whole lines appended since the last poll; return the incomplete last line."""

        def feed(block: bytes, at: int) -> None:
            for line in block.decode("utf-8-sig" if at == 0 else "utf-8", errors="replace").split("\n"):
                self._feed(line)

        self._offset, pending, dropped = read_appended_lines(
            fh, self._offset, feed, CHUNK_BYTES, MAX_LINE_BYTES
        )
        self._dropped += dropped
        return pending.decode("utf-8", errors="replace")

    def _read_utf16(self, fh: BinaryIO) -> str:
        """UTF-16 does not split at newline bytes: read the whole file again each time."""
        self._segments, self._dropped, self._preamble = [], 0, 0
        fh.seek(0)
        lines = fh.read().decode("utf-16", errors="replace").split("\n")
        for line in lines[:-1]:
            self._feed(line)
        return lines[-1]

    def _feed(self, line: str) -> None:
        line = line.rstrip("\r")
        if not line.strip():
            return
        segment = self._segments[-1] if self._segments else None
        if segment is None and self._preamble < MAX_PREAMBLE_LINES and _is_preamble(line):
            self._preamble += 1  # a title or a comment above the header, as `first_line` passes over
            return
        cells = self._cells(line, segment) if segment is not None else None
        if segment is None or (cells is not None and _not_a_number(cells, segment.header.x)):
            header = parse_header(line, self.mapper, self._tsv)
            if header is not None:  # a first header, or a new one (a wider log, a second attempt)
                self._segments.append(_Segment(header))
                return
        if segment is None or cells is None:
            self._dropped += 1
        else:
            segment.add(cells)

    @staticmethod
    def _cells(line: str, segment: _Segment) -> list[str] | None:
        try:
            return [c.strip() for c in next(csv.reader([line], delimiter=segment.header.delimiter))]
        except (csv.Error, StopIteration):
            return None

    def _build(self, tail: str) -> CsvLog:
        log = CsvLog()
        if not self._segments:
            if self._offset:
                log.problems.append(f"{self.path}: no metric header at the top of the file; nothing read")
            return log
        last = self._segments[-1]
        mark = None
        cells = self._cells(tail.rstrip("\r"), last) if tail.strip() else None
        whole_row = cells is not None and len(cells) == len(last.header.names)
        if whole_row and not _not_a_number(cells, last.header.x):
            mark = last.mark()  # the row being written: read now, again once complete
            last.add(cells)
        try:
            for segment in self._segments:
                segment.collect(log, self.mapper, self.path)
        finally:
            if mark is not None:
                last.rollback(mark)
        if self._dropped:
            log.problems.append(
                f"{self.path}: {self._dropped} line(s) that are no row of the header; skipped"
            )
        return log


def _not_a_number(cells: list[str], col: int) -> bool:
    return col < len(cells) and bool(cells[col]) and not _is_number(cells[col])


def _float_or_nan(cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        return math.nan


def _is_identifier(value: str) -> bool:
    """An integer or a word: a fold, a seed, a model's name; not a measured number."""
    if len(value) > MAX_KEY_CHARS or not value.isprintable():
        return False
    try:
        number = float(value)
    except ValueError:
        return True
    return math.isfinite(number) and number == int(number)


def _key_text(value: str) -> str:
    """A key's value as it appears in a run name: ``1.0`` -> ``1``; no "/" (a path separator)."""
    try:
        return str(int(float(value)))
    except (ValueError, OverflowError):
        return value.replace("/", "_")
