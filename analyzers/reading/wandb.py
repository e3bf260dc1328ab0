"""Reading a Weights & Biases run folder, without the ``wandb`` package.

W&B writes one folder per run, ``wandb/run-<time>-<id>/`` (``offline-run-...`` offline,
``dryrun-...`` before wandb 0.10). What it holds depends on the SDK that wrote it:

- ``run-<id>.wandb`` (wandb 0.10 and later, online and offline): the run's transaction
  log, from which ``wandb sync`` uploads everything. It is the only complete record of
  the history, so it is read first.
- ``wandb-history.jsonl`` (before 0.10, at the top of the folder; also looked for under
  ``files/``): one JSON object per logged row. Read only when no ``.wandb`` log gave a row.
- ``files/config.yaml`` (``key: {desc: ..., value: X}``; written when the run is synced or
  online, at the top of the folder before 0.10): the hyperparameters.
- ``files/wandb-metadata.json``: start time, and before 0.10 the run's name and exit code.
- ``files/wandb-summary.json`` (at the top before 0.10; online and synced runs only):
  the last value of each key. Only its ``_step`` is read, to check that the history
  reaches the run's end: the values are in the history at their steps, and a summary
  exists for a killed run too, so it proves nothing about how the run ended.

The transaction log (facts read from wandb/wandb: ``wandb/sdk/internal/datastore.py``,
the Python writer; ``core/pkg/leveldb/record.go`` and ``crc.go`` and
``core/internal/transactionlog/``, the Go writer of wandb-core;
``wandb/proto/wandb_internal.proto``, the messages):

- A 7-byte file header: ``:W&B``, the magic ``0xBEE1`` as a little-endian uint16, and a
  version byte, 0.
- Then LevelDB's log format: 32 KiB blocks (the file header counts towards the first).
  Each chunk has a 7-byte header, ``checksum: uint32 LE``, ``length: uint16 LE``,
  ``type: uint8`` (FULL 1, FIRST 2, MIDDLE 3, LAST 4), then its payload; a record too
  long for the rest of its block is split into FIRST, MIDDLE..., LAST chunks. A block's
  last < 7 bytes are zero padding. The checksum is the standard CRC-32 (zlib's, not
  LevelDB's masked CRC-32C) of the type byte followed by the payload.
- Each record is a protobuf ``Record``: ``history`` = 2, ``config`` = 5, ``run`` = 17,
  ``exit`` = 18 (others are skipped). ``HistoryRecord``: ``item`` = 1 (repeated),
  ``step`` = 2 (``HistoryStep.num`` = 1). ``HistoryItem``: ``key`` = 1, ``nested_key`` = 2
  (repeated), ``value_json`` = 16; wandb 0.31 may also write the value typed
  (``none`` = 3, ``boolean`` = 4, ``integer`` = 5 as sint64, ``number`` = 6 as double,
  ``text`` = 7, ``json`` = 8), used when ``value_json`` is absent. ``RunRecord``:
  ``run_id`` = 1, ``config`` = 4, ``display_name`` = 8, ``start_time`` = 17 (a
  ``google.protobuf.Timestamp``: ``seconds`` = 1, ``nanos`` = 2). ``ConfigRecord``:
  ``update`` = 1, ``remove`` = 2, of ``ConfigItem`` (``key`` = 1, ``nested_key`` = 2,
  ``value_json`` = 16). ``RunExitRecord``: ``exit_code`` = 1, ``not_complete`` = 3.

wandb-core writes history items under ``nested_key`` (``["val", "loss"]`` for
``log({"val": {"loss": x}})``); the older Python backend writes ``key`` and the nested
dict as one JSON value. Both become ``val/loss``. A nested dict with a ``_type`` is a
media value (histogram, image, table) and is skipped whole, even its numeric fields.

How the run ended: an exit record with exit code 0 is ``finished``, another code
``crashed``. wandb-core writes the exit record when the script calls ``finish()`` or
exits, and also, with exit code 0, when its client vanished (a killed script whose
wandb-core lived on); that reads as finished, as W&B shows it. A log without an exit
record leaves the status unknown: the run may still be running, or was killed with
its wandb-core.

Bounded work: the log is read one 32 KiB block at a time and each series grows in
compact arrays, so memory is the series, not the file; a truncated tail (a run still
being written) ends the read quietly; a chunk that fails its checksum costs one
problem line and that record, and reading resumes at the next whole record.

A cut-off log: a log copied (or committed) while the run was writing it ends cleanly at
a block, and reads like a run still being written. The summary's ``_step`` is the run's
last step; when it is well past the history's (`CUT_OFF_SHARE` of the run and more than
`CUT_OFF_MIN_STEPS`) and the run is not live, one problem line says the findings
describe only the part the log holds. A live run's summary may run ahead of its log
(the log is written out a block at a time), so a run is live here as in
`facts.is_live`: no exit record, and its newest wall time (the summary's ``_timestamp``
too) younger than `facts.LIVE_SECONDS`.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import struct
import time
import zlib
from array import array
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
import yaml

from trainscope.analyzers.reading import protowire as W
from trainscope.analyzers.reading.series import latest_per_step
from trainscope.analyzers.run import Series
from trainscope.logformat import runjson as RJ

# --- the run folder ----------------------------------------------------------------------

FILES_DIR = "files"  # where wandb 0.10+ keeps the run's text files
HISTORY_JSONL = "wandb-history.jsonl"
CONFIG_YAML = "config.yaml"
METADATA_JSON = "wandb-metadata.json"
SUMMARY_JSON = "wandb-summary.json"
# The transaction log's name: run-<run id>.wandb.
_LOG_NAME = re.compile(r"run-.+\.wandb")
# Text files read_wandb_run may read, under files/ or at the top of the folder.
_TEXT_FILES = (HISTORY_JSONL, CONFIG_YAML, METADATA_JSON, SUMMARY_JSON)
# A config.yaml, wandb-metadata.json or wandb-summary.json larger than this is not read (they are a few KiB).
MAX_TEXT_FILE_BYTES = 16 * 1024 * 1024
# Config entries that are W&B's own bookkeeping, not hyperparameters.
_CONFIG_INTERNAL = ("_wandb", "wandb_version")
# Keys of config.yaml's wrapper around each value.
_CONFIG_VALUE, _CONFIG_DESC = "value", "desc"
# Nodes a config may have (YAML aliases can make a small file a huge tree).
MAX_CONFIG_NODES = 100_000

# History keys that are W&B's own (``_step``, ``_runtime``, ``_timestamp``) start with this.
_INTERNAL_PREFIX = "_"
_STEP_KEY = ("_step",)
_TIMESTAMP_KEY = ("_timestamp",)
_ABSENT = object()  # a row without ``_step``
# The member that marks a nested dict as a media value (histogram, image, table).
_MEDIA_TYPE = "_type"
# Nested dicts deeper than this are not followed (logged metrics are one or two deep).
MAX_NESTING = 16
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

# A history whose last step is short of the summary's by more than this share of the run,
# and more than this many steps, is a cut-off log (a few rows lost in a killed writer's
# buffer are not worth a line; 94% of a run is).
CUT_OFF_SHARE = 0.05
CUT_OFF_MIN_STEPS = 5

# --- the transaction log's framing (datastore.py, record.go) ------------------------------

_FILE_HEADER = struct.Struct("<4sHB")  # ident, magic, version
_IDENT = b":W&B"
_MAGIC = 0xBEE1
_VERSION = 0
_LOG_HEADER = _FILE_HEADER.pack(_IDENT, _MAGIC, _VERSION)
BLOCK_BYTES = 32 * 1024
_CHUNK = struct.Struct("<IHB")  # checksum, length, type
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4
# A record longer than this (over many chunks) is taken as corruption and skipped.
MAX_RECORD_BYTES = 64 * 1024 * 1024

# --- protobuf (wandb_internal.proto) -------------------------------------------------------

# Record
_REC_HISTORY, _REC_CONFIG, _REC_RUN, _REC_EXIT = 2, 5, 17, 18
# HistoryRecord, HistoryStep
_HIST_ITEM, _HIST_STEP, _STEP_NUM = 1, 2, 1
# HistoryItem / ConfigItem
_ITEM_KEY, _ITEM_NESTED_KEY, _ITEM_VALUE_JSON = 1, 2, 16
_ITEM_BOOLEAN, _ITEM_INTEGER, _ITEM_NUMBER, _ITEM_TEXT, _ITEM_JSON = 4, 5, 6, 7, 8
# RunRecord, Timestamp
_RUN_CONFIG, _RUN_DISPLAY_NAME, _RUN_START_TIME = 4, 8, 17
_TS_SECONDS, _TS_NANOS = 1, 2
# ConfigRecord
_CONFIG_UPDATE, _CONFIG_REMOVE = 1, 2
# RunExitRecord
_EXIT_CODE, _EXIT_NOT_COMPLETE = 1, 3
_DOUBLE = struct.Struct("<d")
# The tags (field number << 3 | wire type, as varints) of an item's strings.
_KEY_TAG = _ITEM_KEY << 3 | W.LEN
_NESTED_KEY_TAG = _ITEM_NESTED_KEY << 3 | W.LEN
_KEY_TAGS = (_KEY_TAG, _NESTED_KEY_TAG)
_VALUE_JSON_TAG = bytes([(_ITEM_VALUE_JSON << 3 | W.LEN) & 0x7F | 0x80, (_ITEM_VALUE_JSON << 3 | W.LEN) >> 7])


# What decoding one record may raise on bytes that are not what they claim to be (bad
# UTF-8 and bad JSON are ValueErrors; an absurd time overflows; deep JSON recurses).
_UNDECODABLE = (ValueError, OverflowError, OSError, struct.error, RecursionError)


@dataclass
class WandbRun:
    """What a W&B run folder says.

    ``series``: by logged key (nested keys joined with ``/``), steps from ``_step``, wall
    times from ``_timestamp``. ``meta``: run.json's keys where the folder says them
    (``hparams``, ``run_name``, ``start_time``, ``status``, and ``status_reason`` with a
    crash's exit code). ``problems``: one line each, prefixed with the file's path.
    """

    series: dict[str, Series] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def is_wandb_run_dir(names: Collection[str]) -> bool:
    """Whether a directory with these entries is a W&B run folder.

    Every SDK since 0.10 writes ``run-<id>.wandb`` into the run folder, online or
    offline; older ones wrote ``wandb-history.jsonl`` there. A ``files/`` sub-directory is
    not enough (many trees have one), and the ``files/`` of a run folder (config.yaml,
    wandb-summary.json) must not look like a run of its own.
    """
    return HISTORY_JSONL in names or any(_LOG_NAME.fullmatch(name) for name in names)


def wandb_signature(run_dir: str) -> tuple:
    """(name, size, mtime) of every file `read_wandb_run` would read: equal signatures mean
    an unchanged run, so a caller re-reads only when this changes."""
    try:
        names = sorted(os.listdir(run_dir))
    except OSError as exc:
        return (("<unlisted>", exc.errno),)
    candidates = [n for n in names if _LOG_NAME.fullmatch(n)]
    candidates += [os.path.join(FILES_DIR, n) for n in _TEXT_FILES] + list(_TEXT_FILES)
    signature = []
    for rel in candidates:
        try:
            st = os.stat(os.path.join(run_dir, rel))
        except OSError:
            continue
        signature.append((rel, st.st_size, st.st_mtime_ns))
    return tuple(signature)


def read_wandb_run(run_dir: str, now: float | None = None) -> WandbRun:
    """Read what the folder holds; never raises (a file that fails is one problem line).

    `now` (seconds since the epoch; the clock when None) decides whether a run without
    an exit record is still live, which a cut-off log's problem line waits for.
    """
    run = WandbRun()
    _guarded(run_dir, run.problems, lambda: _read_folder(run_dir, run, time.time() if now is None else now))
    return run


def _read_folder(run_dir: str, run: WandbRun, now: float) -> None:
    history = _History()
    facts = _Facts()
    try:
        logs = sorted(n for n in os.listdir(run_dir) if _LOG_NAME.fullmatch(n))
    except OSError as exc:
        run.problems.append(f"{run_dir}: cannot list ({exc.strerror})")
        return
    for name in logs:
        path = os.path.join(run_dir, name)
        _guarded(path, run.problems, lambda p=path: _read_log(p, history, facts, run.problems))
    jsonl = _text_file(run_dir, HISTORY_JSONL)
    if history.rows == 0 and jsonl is not None:
        _guarded(jsonl, run.problems, lambda: _read_history_jsonl(jsonl, history, run.problems))
    config = _text_file(run_dir, CONFIG_YAML)
    if config is not None:
        _guarded(config, run.problems, lambda: facts.config.update(_read_config_yaml(config)))
    metadata = _text_file(run_dir, METADATA_JSON)
    if metadata is not None:
        _guarded(metadata, run.problems, lambda: facts.add_metadata(_read_json_object(metadata), metadata))
    summary = _text_file(run_dir, SUMMARY_JSON)
    if summary is not None:
        source = os.path.join(run_dir, logs[-1]) if logs else jsonl or run_dir
        _guarded(
            summary, run.problems, lambda: _check_coverage(summary, source, history, facts, now, run.problems)
        )
    run.series.update(history.series())
    run.meta = facts.meta()
    run.problems.extend(facts.problems)


def _guarded(path: str, problems: list[str], read) -> None:
    """Run one file's reader; whatever it raises becomes one problem line for that file."""
    try:
        read()
    except Exception as exc:  # noqa: BLE001 - a reader must never take the run down
        problems.append(f"{path}: unreadable ({type(exc).__name__}: {exc})")


def _text_file(run_dir: str, name: str) -> str | None:
    """``files/<name>`` (wandb 0.10+), else ``<name>`` at the top (older SDKs), if a file."""
    for path in (os.path.join(run_dir, FILES_DIR, name), os.path.join(run_dir, name)):
        if os.path.isfile(path):
            return path
    return None


# --- history rows -> series ----------------------------------------------------------------


class _History:
    """Each logged key's points, in compact arrays (a long run is millions of points)."""

    def __init__(self) -> None:
        self.columns: dict[str, tuple[array, array, array]] = {}  # steps, values, wall times
        self._by_path: dict[tuple[str, ...], tuple[array, array, array]] = {}
        self.rows = 0
        self.bad_steps = 0
        self.last_step: int | None = None  # of any row, numbers or not
        self.last_wall = -math.inf  # the newest ``_timestamp``; -inf when none

    def add_row(self, items: list[tuple[tuple[str, ...], Any]], logged_step: int | None) -> None:
        """One row: (key path, value) pairs. The step is the row's ``_step``, else the
        step its record carries, else its index among the rows."""
        index = self.rows
        self.rows += 1
        step_value: Any = _ABSENT
        wall: Any = None
        media: set[tuple[str, ...]] = set()
        for path, value in items:  # W&B's own keys and media markers first: any order
            if path[0][:1] == _INTERNAL_PREFIX:
                if path == _STEP_KEY:
                    step_value = value
                elif path == _TIMESTAMP_KEY:
                    wall = value
            elif path[-1] == _MEDIA_TYPE and len(path) > 1:
                media.add(path[:-1])
        if step_value is _ABSENT:
            step = logged_step if logged_step is not None else index
        else:
            step = _as_step(step_value)
            if step is None:
                self.bad_steps += 1
                return
        if self.last_step is None or step > self.last_step:
            self.last_step = step
        wall = _as_number(wall)
        wall = math.nan if wall is None else wall
        if wall > self.last_wall:
            self.last_wall = wall
        for path, value in items:
            if path[0][:1] == _INTERNAL_PREFIX or (media and _under_media(path, media)):
                continue
            number = _as_number(value)
            if number is None:
                continue
            column = self._by_path.get(path)
            if column is None:
                column = self.columns.setdefault("/".join(path), (array("q"), array("d"), array("d")))
                self._by_path[path] = column
            column[0].append(step)
            column[1].append(number)
            column[2].append(wall)

    def series(self) -> dict[str, Series]:
        return {name: _to_series(*arrays) for name, arrays in self.columns.items()}


def _under_media(path: tuple[str, ...], media: set[tuple[str, ...]]) -> bool:
    return any(path[:i] in media for i in range(1, len(path)))


def _to_series(steps: array, values: array, walls: array) -> Series:
    s = np.frombuffer(steps, dtype=np.int64)
    v = np.frombuffer(values, dtype=np.float64)
    w = np.frombuffer(walls, dtype=np.float64)
    if s.shape[0] > 1 and not bool(np.all(s[1:] > s[:-1])):
        s, v, w = latest_per_step(s, v, w)  # a repeated step: its latest value wins
    return Series(s, v, None if bool(np.isnan(w).all()) else w)


def _as_number(value: Any) -> float | None:
    """A logged numeric scalar as a float (NaN and +-Inf kept); None for anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:  # an int beyond float range
        return math.inf if value > 0 else -math.inf


def _as_step(value: Any) -> int | None:
    """A ``_step`` as an int64; None when it is not a whole number in range."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and _INT64_MIN <= value <= _INT64_MAX:
        return value
    return None


def _flatten(path: tuple[str, ...], value: Any, out: list, depth: int = 0) -> None:
    """Append (path, value) pairs; a dict value becomes one pair per member (``val/loss``)."""
    if isinstance(value, dict) and depth < MAX_NESTING:
        for key, member in value.items():
            _flatten(path + (str(key),), member, out, depth + 1)
    else:
        out.append((path, value))


def _json_value(text: str) -> Any:
    """A JSON value; W&B writes non-finite floats as the tokens NaN, Infinity, -Infinity,
    which Python's json reads as floats. Numbers, nearly every value, skip the parser."""
    if text.isdigit() or (text[:1] == "-" and text[1:].isdigit()):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return json.loads(text)


# --- wandb-history.jsonl --------------------------------------------------------------------


def _read_history_jsonl(path: str, history: _History, problems: list[str]) -> None:
    """One row per line, streamed. A last line without its newline is still being written."""
    bad = 0
    with open(path, "rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                bad += line.endswith(b"\n")
                continue
            if not isinstance(row, dict):
                bad += 1
                continue
            items: list = []
            for key, value in row.items():
                _flatten((str(key),), value, items)
            history.add_row(items, None)
    if bad:
        problems.append(f"{path}: {bad} line(s) are not JSON objects; skipped")
    _report_bad_steps(path, history, problems)


def _report_bad_steps(path: str, history: _History, problems: list[str]) -> None:
    if history.bad_steps:
        problems.append(
            f"{path}: {history.bad_steps} row(s) with a _step that is not a whole number; skipped"
        )
        history.bad_steps = 0


# --- config.yaml and wandb-metadata.json -------------------------------------------------------


def _read_small_text(path: str) -> str:
    if os.path.getsize(path) > MAX_TEXT_FILE_BYTES:
        raise ValueError(f"larger than {MAX_TEXT_FILE_BYTES} bytes")
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def _read_config_yaml(path: str) -> dict[str, Any]:
    """Hyperparameters: each ``key: {desc: ..., value: X}`` as ``key: X``."""
    doc = yaml.safe_load(_read_small_text(path))
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise TypeError("not a mapping")
    budget = [MAX_CONFIG_NODES]
    config = {}
    for key, entry in doc.items():
        if isinstance(entry, dict) and _CONFIG_VALUE in entry and set(entry) <= {_CONFIG_VALUE, _CONFIG_DESC}:
            entry = entry[_CONFIG_VALUE]
        config[str(key)] = _plain(entry, budget)
    return config


def _plain(value: Any, budget: list[int]) -> Any:
    """`value` as JSON types (YAML dates become text); bounded, since aliases can make a
    few lines of YAML into an exponentially large tree."""
    budget[0] -= 1
    if budget[0] < 0:
        raise ValueError(f"more than {MAX_CONFIG_NODES} values")
    if isinstance(value, dict):
        return {str(k): _plain(v, budget) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, budget) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _read_json_object(path: str) -> dict[str, Any]:
    doc = json.loads(_read_small_text(path))
    if not isinstance(doc, dict):
        raise TypeError("not a JSON object")
    return doc


# --- wandb-summary.json: does the history reach the run's end? ---------------------------------


def _check_coverage(
    path: str, source: str, history: _History, facts: _Facts, now: float, problems: list[str]
) -> None:
    """One line for `source` (the log the history came from) when the summary's last step
    is well past the history's and the run is not live: the log was cut off, and what
    is found in it holds for its part of the run only."""
    summary = _read_json_object(path)
    run_step = _as_step(summary.get(_STEP_KEY[0]))
    if run_step is None:
        return
    logged = -1 if history.last_step is None else history.last_step
    missing = run_step - logged
    if missing <= CUT_OFF_MIN_STEPS or missing <= CUT_OFF_SHARE * run_step:
        return
    summary_wall = _as_number(summary.get(_TIMESTAMP_KEY[0]))
    newest_wall = history.last_wall if summary_wall is None else max(history.last_wall, summary_wall)
    if _is_live(facts, newest_wall, now):
        return
    if history.last_step is None:
        problems.append(
            f"{source}: history holds no step, the summary's last is {run_step:,}: the log is cut off"
        )
        return
    share = 100 * logged / run_step
    share_text = f"{share:.0f}%" if share >= 1 else "<1%"
    problems.append(
        f"{source}: history ends at step {logged:,} of {run_step:,} ({share_text}) in the summary: "
        "the log is cut off; findings describe only that part"
    )


def _is_live(facts: _Facts, newest_wall: float, now: float) -> bool:
    """`facts.is_live` for a folder not yet a Run: no exit record, and a newest wall time
    younger than `LIVE_SECONDS`; none at all is judged as it stands."""
    # Imported here: facts imports the reading package, which imports this module.
    from trainscope.analyzers.facts import LIVE_SECONDS

    if facts.exit_code is not None or not math.isfinite(newest_wall):
        return False
    return now - newest_wall < LIVE_SECONDS


def _iso_utc(moment: _dt.datetime) -> str:
    """The form run.json's times take (the collector's): UTC, to the second."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)  # W&B writes naive times in UTC
    return moment.astimezone(_dt.timezone.utc).isoformat(timespec="seconds")


class _Facts:
    """Run facts. The log's name, start and exit win over wandb-metadata.json's (read
    after it, filling only what is missing); config.yaml, W&B's own summing-up of the
    config, is laid over the log's config records."""

    def __init__(self) -> None:
        self.config: dict[str, Any] = {}
        self.name: str | None = None
        self.start: str | None = None
        self.exit_code: int | None = None
        self.problems: list[str] = []

    def add_metadata(self, doc: dict[str, Any], path: str) -> None:
        """``startedAt``; before wandb 0.10 also ``name`` and ``exitcode``."""
        if self.name is None and isinstance(doc.get("name"), str) and doc["name"]:
            self.name = doc["name"]
        started = doc.get("startedAt")
        if self.start is None and isinstance(started, str):
            try:
                self.start = _iso_utc(_dt.datetime.fromisoformat(started.replace("Z", "+00:00")))
            except ValueError:
                self.problems.append(f"{path}: startedAt {started[:40]!r} is not a time; ignored")
        code = doc.get("exitcode")
        if self.exit_code is None and isinstance(code, int) and not isinstance(code, bool):
            self.exit_code = code

    def meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {}
        hparams = {k: v for k, v in self.config.items() if k not in _CONFIG_INTERNAL}
        if hparams:
            meta[RJ.K_HPARAMS] = hparams
        if self.name:
            meta[RJ.K_RUN_NAME] = self.name
        if self.start:
            meta[RJ.K_START] = self.start
        if self.exit_code is not None:
            meta[RJ.K_STATUS] = RJ.STATUS_FINISHED if self.exit_code == 0 else RJ.STATUS_CRASHED
            if self.exit_code != 0:
                meta[RJ.K_STATUS_REASON] = f"W&B recorded exit code {self.exit_code}"
        return meta


# --- the transaction log: framing ---------------------------------------------------------------


def _read_log(path: str, history: _History, facts: _Facts, problems: list[str]) -> None:
    undecodable = 0
    with open(path, "rb") as fh:
        for _, payload in _records(fh, path, problems):
            try:
                _apply_record(payload, history, facts)
            except _UNDECODABLE:
                undecodable += 1
    if undecodable:
        problems.append(
            f"{path}: {undecodable} record(s) that pass their checksum could not be decoded; skipped"
        )
    _report_bad_steps(path, history, problems)


def _records(fh: BinaryIO, path: str, problems: list[str]) -> Iterator[tuple[int, bytes]]:
    """Yield (file offset, payload) of each whole record, one 32 KiB block in memory at a time.

    A short last block is where the file ends (a run still being written): a chunk cut
    off there, or a record whose LAST chunk has not arrived, ends the read quietly.
    """
    header = fh.read(_FILE_HEADER.size)
    if not _is_log_header(header, path, problems):
        return
    assembler = _Assembler(path, problems)
    block, block_start, pos = header + fh.read(BLOCK_BYTES - len(header)), 0, len(header)
    while block:
        for at, kind, payload in _chunks(block, pos, block_start, assembler):
            record = assembler.add(at, kind, payload)
            if record is not None:
                yield record
        if len(block) < BLOCK_BYTES:
            return
        block_start += BLOCK_BYTES
        block, pos = fh.read(BLOCK_BYTES), 0


def _is_log_header(header: bytes, path: str, problems: list[str]) -> bool:
    """Whether the file starts as a W&B log; a problem line when it cannot be one (a file
    shorter than the header but agreeing with it is still being started: no problem)."""
    if header == _LOG_HEADER:
        return True
    if _LOG_HEADER.startswith(header):
        return False
    ident, magic, version = _FILE_HEADER.unpack(header) if len(header) == _FILE_HEADER.size else (b"", 0, 0)
    if (ident, magic) == (_IDENT, _MAGIC):
        problems.append(
            f"{path}: W&B transaction log version {version}; this reader knows {_VERSION}; skipped"
        )
    else:
        problems.append(f"{path}: not a W&B transaction log (header {header.hex()}); skipped")
    return False


def _chunks(
    block: bytes, pos: int, block_start: int, assembler: _Assembler
) -> Iterator[tuple[int, int, bytes]]:
    """(file offset, type, payload) of the sound chunks of one block, from `pos`.

    A chunk that fails its checksum is reported and stepped over (its length is trusted:
    if that was the damaged byte, what follows fails too, quietly); one that runs past a
    whole block's end makes the rest of the block unreadable.
    """
    while len(block) - pos >= _CHUNK.size:
        checksum, length, kind = _CHUNK.unpack_from(block, pos)
        at, start, end = block_start + pos, pos + _CHUNK.size, pos + _CHUNK.size + length
        if checksum == 0 and length == 0 and kind == 0:
            return  # zero fill (a preallocated file): nothing more in this block
        if end > len(block):
            if len(block) == BLOCK_BYTES:
                assembler.corrupt(at, "runs past the end of its block")
            return  # else cut off where the file ends
        pos = end
        if not _FULL <= kind <= _LAST or zlib.crc32(block[start - 1 : end]) != checksum:
            assembler.corrupt(at, "fails its checksum")
            continue
        yield at, kind, block[start:end]


class _Assembler:
    """Joins chunks into records. Corruption costs one problem line and the record it
    hit; later chunks that belong to no record are skipped quietly until one starts."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        self.parts: list[bytes] | None = None  # the chunks of a record begun by a FIRST chunk
        self.start = 0  # file offset of that FIRST chunk
        self.size = 0
        self.recovering = False

    def corrupt(self, at: int, why: str) -> None:
        if not self.recovering:
            self.problems.append(f"{self.path}: chunk at byte {at} {why}; its record skipped")
        self.parts, self.recovering = None, True

    def add(self, at: int, kind: int, payload: bytes) -> tuple[int, bytes] | None:
        """The (offset, record) this chunk completes, if any."""
        if kind in (_FULL, _FIRST):
            if self.parts is not None:
                self.corrupt(self.start, "begins a record that never ends")
            self.recovering = False
            if kind == _FULL:
                return at, payload
            self.parts, self.start, self.size = [payload], at, len(payload)
            return None
        if self.parts is None:
            self.corrupt(at, "continues a record that never began")  # quiet while recovering
            return None
        self.parts.append(payload)
        self.size += len(payload)
        if self.size > MAX_RECORD_BYTES:
            self.corrupt(self.start, f"begins a record longer than {MAX_RECORD_BYTES} bytes")
            return None
        if kind == _LAST:
            record, self.parts = b"".join(self.parts), None
            return self.start, record
        return None


# --- the transaction log: records ---------------------------------------------------------------


def _apply_record(b: bytes, history: _History, facts: _Facts) -> None:
    for number, wire, start, end in W.fields(b, 0, len(b)):
        if wire != W.LEN:
            continue
        if number == _REC_HISTORY:
            _history_record(b, start, end, history)
        elif number == _REC_CONFIG:
            _config_record(b, start, end, facts.config)
        elif number == _REC_RUN:
            _run_record(b, start, end, facts)
        elif number == _REC_EXIT:
            _exit_record(b, start, end, facts)


def _history_record(b: bytes, start: int, end: int, history: _History) -> None:
    items: list = []
    step: int | None = None
    pos = start
    while pos < end:  # a loop, not W.fields: this is where the time goes
        number, wire, s, pos = W.field(b, pos, end)
        if number == _HIST_ITEM and wire == W.LEN:
            path, value = _item(b, s, pos)
            if path and type(value) is not dict:
                items.append((path, value))
            elif path:
                _flatten(path, value, items)
        elif number == _HIST_STEP and wire == W.LEN:
            step = 0  # proto3 leaves out a zero
            for n, w, s2, e2 in W.fields(b, s, pos):
                if n == _STEP_NUM and w == W.VARINT:
                    step = W.signed(W.varint(b, s2, e2)[0])
    history.add_row(items, step)


def _item(b: bytes, start: int, end: int) -> tuple[tuple[str, ...], Any]:
    """(key path, value) of a HistoryItem or ConfigItem; the value None when it has none."""
    key = ""
    nested: list[str] = []
    value_json: str | None = None
    typed: Any = None
    pos = start
    while pos < end:
        tag = b[pos]
        # Fast path for the strings every item has: a one-byte key or nested_key tag, or
        # value_json's two-byte tag, each with a one-byte length.
        if tag in _KEY_TAGS or (tag == _VALUE_JSON_TAG[0] and b[pos + 1 : pos + 2] == _VALUE_JSON_TAG[1:]):
            s = pos + (1 if tag in _KEY_TAGS else 2)
            length = b[s] if s < end else 0x80
            if length < 0x80:
                s += 1
            else:
                length, s = W.varint(b, s, end)
            pos = s + length
            if pos > end:
                raise W.WireError("field runs past its message")
            text = b[s:pos].decode("utf-8")
            if tag == _NESTED_KEY_TAG:
                nested.append(text)
            elif tag == _KEY_TAG:
                key = text
            else:
                value_json = text
            continue
        number, wire, s, pos = W.field(b, pos, end)
        if wire == W.LEN:
            if number == _ITEM_JSON:
                typed = _json_value(b[s:pos].decode("utf-8"))
            elif number == _ITEM_TEXT:
                typed = b[s:pos].decode("utf-8")
        elif number == _ITEM_NUMBER and wire == W.I64:
            typed = _DOUBLE.unpack_from(b, s)[0]
        elif number == _ITEM_INTEGER and wire == W.VARINT:
            raw = W.varint(b, s, pos)[0]
            typed = (raw >> 1) ^ -(raw & 1)  # sint64: zigzag
        elif number == _ITEM_BOOLEAN and wire == W.VARINT:
            typed = bool(W.varint(b, s, pos)[0])
    path = tuple(nested) if nested else ((key,) if key else ())
    return path, (_json_value(value_json) if value_json is not None else typed)


def _config_record(b: bytes, start: int, end: int, config: dict[str, Any]) -> None:
    for number, wire, s, e in W.fields(b, start, end):
        if wire != W.LEN or number not in (_CONFIG_UPDATE, _CONFIG_REMOVE):
            continue
        path, value = _item(b, s, e)
        if not path:
            continue
        *parents, last = path
        node = config
        for name in parents:
            child = node.get(name)
            if not isinstance(child, dict):
                if number == _CONFIG_REMOVE:
                    break
                child = node[name] = {}
            node = child
        else:
            if number == _CONFIG_UPDATE:
                node[last] = value
            else:
                node.pop(last, None)


def _run_record(b: bytes, start: int, end: int, facts: _Facts) -> None:
    for number, wire, s, e in W.fields(b, start, end):
        if wire != W.LEN:
            continue
        if number == _RUN_CONFIG:
            _config_record(b, s, e, facts.config)
        elif number == _RUN_DISPLAY_NAME and e > s:
            facts.name = b[s:e].decode("utf-8")
        elif number == _RUN_START_TIME:
            facts.start = _timestamp(b, s, e)


def _timestamp(b: bytes, start: int, end: int) -> str:
    seconds = nanos = 0
    for number, wire, s, e in W.fields(b, start, end):
        if number == _TS_SECONDS and wire == W.VARINT:
            seconds = W.signed(W.varint(b, s, e)[0])
        elif number == _TS_NANOS and wire == W.VARINT:
            nanos = W.signed(W.varint(b, s, e)[0], 32)
    return _iso_utc(_dt.datetime.fromtimestamp(seconds + nanos / 1e9, tz=_dt.timezone.utc))


def _exit_record(b: bytes, start: int, end: int, facts: _Facts) -> None:
    code = 0  # proto3 leaves out a zero
    for number, wire, s, e in W.fields(b, start, end):
        if number == _EXIT_CODE and wire == W.VARINT:
            code = W.signed(W.varint(b, s, e)[0], 32)
        elif number == _EXIT_NOT_COMPLETE and wire == W.VARINT and W.varint(b, s, e)[0]:
            return  # the run stays running (a secondary writer of a shared run)
    facts.exit_code = code
