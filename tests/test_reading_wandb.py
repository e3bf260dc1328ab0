"""W&B run folders: real ones the ``wandb`` package wrote, and damaged or odd ones.

The folders under tests/fixtures/wandb/ were written by wandb 0.31 (wandb-core), 0.16
(the Python backend) and 0.9.7 (``wandb-history.jsonl``) with
tests/fixtures/make_wandb_fixtures.py, whose ``logged_row`` is the oracle for the values.
Cases no real run produces on demand (corrupt, odd or typed-only values, repeated steps,
a huge step, a YAML bomb) are made here: history lines in the shape wandb 0.9 wrote, and
transaction logs framed by `frame` below, which follows W&B's writer
(wandb/sdk/internal/datastore.py) and checks itself against the real files.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import math
import os
import shutil
import struct
import zlib

import numpy as np
import pytest

from trainscope.analyzers.reading import protowire
from trainscope.analyzers.reading import wandb as W
from trainscope.logformat import runjson as RJ

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
RUNS = os.path.join(FIXTURES, "wandb")
JSONL, CONFIG, METADATA = "files/wandb-history.jsonl", "files/config.yaml", "files/wandb-metadata.json"


def _generator():
    spec = importlib.util.spec_from_file_location(
        "make_wandb_fixtures", os.path.join(FIXTURES, "make_wandb_fixtures.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _generator()


def fixture_dir(run_id: str) -> str:
    (name,) = [n for n in os.listdir(RUNS) if n.endswith(f"-{run_id}")]
    return os.path.join(RUNS, name)


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def log_file(run_id: str) -> str:
    run_dir = fixture_dir(run_id)
    (name,) = [n for n in os.listdir(run_dir) if n.endswith(".wandb")]
    return os.path.join(run_dir, name)


def expected_series(rows: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """What a reader must make of `rows` logged at steps 0, 1, ...: numbers only (bools
    and strings left out), nested dicts as ``outer/inner``."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for step, row in enumerate(rows):
        for key, value in row.items():
            members = (
                [(f"{key}/{k}", v) for k, v in value.items()] if isinstance(value, dict) else [(key, value)]
            )
            for name, v in members:
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    steps, values = out.setdefault(name, ([], []))
                    steps.append(step)
                    values.append(float(v))
    return out


def assert_series_match(run: W.WandbRun, rows: list[dict]) -> None:
    expected = expected_series(rows)
    assert set(run.series) == set(expected)
    for name, (steps, values) in expected.items():
        series = run.series[name]
        assert series.steps.tolist() == steps, name
        np.testing.assert_array_equal(series.values, values, err_msg=name)  # NaN == NaN here


# --- a transaction-log writer for hand-made cases -------------------------------------------

HEADER = b":W&B" + struct.pack("<H", 0xBEE1) + b"\x00"
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def f_len(number: int, payload: bytes | str) -> bytes:
    payload = payload.encode() if isinstance(payload, str) else payload
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def f_varint(number: int, n: int) -> bytes:
    return varint(number << 3) + varint(n)


def item(
    *path: str,
    json_text: str | None = None,
    number: float | None = None,
    integer: int | None = None,
    boolean: bool | None = None,
    text: str | None = None,
    json_typed: str | None = None,
) -> bytes:
    out = b"".join(f_len(2, p) for p in path)
    if json_text is not None:
        out += f_len(16, json_text)
    if number is not None:
        out += varint(6 << 3 | 1) + struct.pack("<d", number)
    if integer is not None:
        out += f_varint(5, (integer << 1) ^ (integer >> 63))  # zigzag
    if boolean is not None:
        out += f_varint(4, int(boolean))
    if text is not None:
        out += f_len(7, text)
    if json_typed is not None:
        out += f_len(8, json_typed)
    return out


def history(items: list[bytes], step: int | None = None) -> bytes:
    body = b"".join(f_len(1, i) for i in items)
    if step is not None:
        body += f_len(2, f_varint(1, step))
    return f_len(2, body)


def row(step: int, **values: float) -> bytes:
    """A history record as wandb-core writes one: nested keys, JSON values, ``_step``."""
    items = [item(k, json_text=json.dumps(v)) for k, v in values.items()]
    return history(items + [item("_step", json_text=str(step))], step)


def exit_record(code: int = 0, not_complete: bool = False) -> bytes:
    body = (f_varint(1, code) if code else b"") + (f_varint(3, 1) if not_complete else b"")
    return f_len(18, body)


def frame(records: list[bytes], block: int = W.BLOCK_BYTES) -> bytes:
    """Records in W&B's framing: FULL, or FIRST/MIDDLE.../LAST across 32 KiB blocks."""
    out = bytearray(HEADER)
    for record in records:
        first = True
        while True:
            left = block - len(out) % block
            if left < 7:
                out += bytes(left)
                continue
            part, record = record[: left - 7], record[left - 7 :]
            last = not record
            kind = (FULL if last else FIRST) if first else (LAST if last else MIDDLE)
            out += struct.pack("<IHB", zlib.crc32(bytes([kind]) + part), len(part), kind) + part
            first = False
            if last:
                break
    return bytes(out)


def is_history(record: bytes) -> bool:
    return any(number == 2 for number, *_ in protowire.fields(record, 0, len(record)))


def chunks(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, payload length, type) of every whole chunk of a framed log."""
    found, pos = [], len(HEADER)
    while pos + 7 <= len(data):
        if W.BLOCK_BYTES - pos % W.BLOCK_BYTES < 7:
            pos += W.BLOCK_BYTES - pos % W.BLOCK_BYTES
            continue
        _, length, kind = struct.unpack_from("<IHB", data, pos)
        if pos + 7 + length > len(data):
            break
        found.append((pos, length, kind))
        pos += 7 + length
    return found


def write_run(tmp_path, data: bytes | None = None, files: dict[str, str] | None = None) -> str:
    """A run folder with ``run-test.wandb`` holding `data` (none when None), and text
    files by path relative to the folder."""
    run_dir = tmp_path / "run-20260101_000000-test"
    (run_dir / "files").mkdir(parents=True, exist_ok=True)
    if data is not None:
        (run_dir / "run-test.wandb").write_bytes(data)
    for rel, text in (files or {}).items():
        (run_dir / rel).write_text(text)
    return str(run_dir)


# --- which folders are W&B runs --------------------------------------------------------------


@pytest.mark.parametrize(
    "names, expected",
    [
        (["run-pypd7lzd.wandb", "files", "logs", "tmp"], True),  # wandb 0.10+
        (["run-pypd7lzd.wandb"], True),
        (["wandb-history.jsonl", "config.yaml", "wandb-summary.json"], True),  # wandb 0.9
        (["config.yaml", "wandb-summary.json", "wandb-metadata.json", "output.log"], False),  # a run's files/
        (["files", "logs"], False),
        (["events.out.tfevents.1700000000.host.1.0", "run.json"], False),
        (["notes.wandb", "run-.wandb"], False),
        ([], False),
    ],
)
def test_is_wandb_run_dir(names, expected):
    assert W.is_wandb_run_dir(names) is expected
    assert W.is_wandb_run_dir(set(names)) is expected


def test_every_fixture_folder_is_a_run_and_its_files_folder_is_not():
    for name in os.listdir(RUNS):
        run_dir = os.path.join(RUNS, name)
        assert W.is_wandb_run_dir(os.listdir(run_dir)), name
        files = os.path.join(run_dir, "files")
        if os.path.isdir(files):
            assert not W.is_wandb_run_dir(os.listdir(files)), name


# --- real runs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "run_id, steps, status",
    [
        ("tsfinish", GEN.STEPS, RJ.STATUS_FINISHED),  # wandb-core, run.finish()
        ("tscrash", GEN.CRASH_STEPS, RJ.STATUS_CRASHED),  # wandb-core, run.finish(exit_code=1)
        ("tslegacy", GEN.STEPS, RJ.STATUS_FINISHED),  # wandb 0.16's Python backend
        ("tsjsonl", GEN.STEPS, RJ.STATUS_FINISHED),  # wandb 0.9.7: wandb-history.jsonl, exitcode 0
    ],
)
def test_real_runs_read_exactly_what_was_logged(run_id, steps, status):
    run = W.read_wandb_run(fixture_dir(run_id))
    assert run.problems == []
    assert_series_match(run, GEN.logged_rows(steps))
    assert run.meta[RJ.K_STATUS] == status
    assert run.meta[RJ.K_RUN_NAME] == f"fixture-{run_id}"
    assert run.meta[RJ.K_HPARAMS] == GEN.CONFIG  # _wandb (and 0.9's wandb_version) dropped
    start = dt.datetime.fromisoformat(run.meta[RJ.K_START])
    walls = run.series["train/loss"].wall_times
    assert walls is not None and np.all(np.diff(walls) >= 0)
    assert start.timestamp() - 1 <= walls[0] <= start.timestamp() + 600


def test_real_run_special_values_are_kept_and_non_numbers_left_out():
    run = W.read_wandb_run(fixture_dir("tsfinish"))
    loss, grad = run.series["train/loss"], run.series["grad_norm"]
    assert math.isnan(loss.values[GEN.NAN_STEP])
    assert grad.values[GEN.INF_STEP] == math.inf and grad.values[GEN.NEG_INF_STEP] == -math.inf
    assert run.series["val/loss"].steps.tolist() == [3, 7, 11]
    assert not {"phase", "is_best", "_step", "_runtime", "_timestamp"} & set(run.series)
    assert not any(name.startswith("weights") for name in run.series)  # the histogram


def test_crashed_run_says_its_exit_code():
    run = W.read_wandb_run(fixture_dir("tscrash"))
    assert run.meta[RJ.K_STATUS] == RJ.STATUS_CRASHED and "exit code 1" in run.meta[RJ.K_STATUS_REASON]


def test_killed_run_is_a_prefix_without_status():
    """wandb-core and its script killed: the first 32 KiB block, ending in the FIRST chunk
    of a record whose rest was never written."""
    data = read_bytes(log_file("tskilled"))
    assert len(data) == W.BLOCK_BYTES and chunks(data)[-1][2] == FIRST
    run = W.read_wandb_run(fixture_dir("tskilled"))
    assert run.problems == [] and RJ.K_STATUS not in run.meta
    n = len(run.series["train/loss"])
    assert 0 < n < GEN.KILLED_STEPS
    assert_series_match(run, GEN.logged_rows(n))
    assert run.meta[RJ.K_HPARAMS] == GEN.CONFIG


def test_config_yaml_of_the_old_client_unwraps_desc_and_value():
    text = read_bytes(os.path.join(fixture_dir("tsjsonl"), "config.yaml")).decode()
    assert "desc:" in text and "wandb_version" in text
    assert W.read_wandb_run(fixture_dir("tsjsonl")).meta[RJ.K_HPARAMS] == GEN.CONFIG


def test_frame_writes_what_wandb_writes():
    """`frame` reproduces a real log byte for byte from its records, so the hand-made
    logs below are framed as W&B frames them."""
    data = read_bytes(log_file("tsfinish"))
    payloads = [data[pos + 7 : pos + 7 + length] for pos, length, _ in chunks(data)]
    assert frame(payloads) == data


# --- a log still being written, or damaged -------------------------------------------------------


@pytest.mark.parametrize("run_id, stride", [("tsfinish", 23), ("tslegacy", 23), ("tskilled", 257)])
def test_truncated_anywhere_reads_a_prefix_quietly(tmp_path, run_id, stride):
    data = read_bytes(log_file(run_id))
    full = W.read_wandb_run(fixture_dir(run_id))
    cuts = sorted(set(range(12)) | set(range(12, len(data), stride)) | {len(data) - 1})
    seen = -1
    for cut in cuts:
        run = W.read_wandb_run(write_run(tmp_path / str(cut), data[:cut]))
        assert run.problems == [], cut
        rows = len(run.series.get("epoch", ()))
        assert rows >= seen, cut  # more bytes never read fewer rows
        seen = rows
        for name, series in run.series.items():
            whole = full.series[name]
            assert len(series) <= len(whole)
            assert series.steps.tolist() == whole.steps[: len(series)].tolist(), (cut, name)
            np.testing.assert_array_equal(series.values, whole.values[: len(series)])


def test_flipped_byte_costs_one_record_and_one_line(tmp_path):
    data = bytearray(read_bytes(log_file("tsfinish")))
    full = W.read_wandb_run(fixture_dir("tsfinish"))
    histories = [
        (pos, length)
        for pos, length, _ in chunks(bytes(data))
        if is_history(data[pos + 7 : pos + 7 + length])
    ]
    pos, length = histories[len(histories) // 2]
    data[pos + 7 + length // 2] ^= 0x40
    run = W.read_wandb_run(write_run(tmp_path, bytes(data)))
    assert len(run.problems) == 1 and "checksum" in run.problems[0] and "run-test.wandb" in run.problems[0]
    lost = set(full.series["epoch"].steps.tolist()) - set(run.series["epoch"].steps.tolist())
    assert len(lost) == 1 and max(run.series["epoch"].steps) == GEN.STEPS - 1  # later rows read
    assert run.meta[RJ.K_STATUS] == RJ.STATUS_FINISHED  # the exit record after it too


def test_corrupt_length_loses_the_rest_of_its_block_only(tmp_path):
    records = [row(s, loss=float(s)) for s in range(3000)]  # about 4 blocks
    data = bytearray(frame(records + [exit_record()]))
    pos = chunks(bytes(data))[10][0]
    data[pos + 4 : pos + 6] = struct.pack("<H", 60000)  # a length past its block
    run = W.read_wandb_run(write_run(tmp_path, bytes(data)))
    assert len(run.problems) == 1 and "past the end of its block" in run.problems[0]
    steps = run.series["loss"].steps
    assert steps[:10].tolist() == list(range(10)) and steps[-1] == 2999
    assert 2000 < len(steps) < 3000 and run.meta[RJ.K_STATUS] == RJ.STATUS_FINISHED


def test_records_across_blocks_and_their_truncation(tmp_path):
    """A record of FIRST, MIDDLE and LAST chunks (a 70 KB string value), cut anywhere."""
    big = history(
        [
            item("note", json_text=json.dumps("x" * 70_000)),
            item("loss", json_text="0.5"),
            item("_step", json_text="1"),
        ]
    )
    data = frame([row(0, loss=1.0), big, row(2, loss=0.25), exit_record()])
    assert [kind for _, _, kind in chunks(data)] == [FULL, FIRST, MIDDLE, LAST, FULL, FULL]
    run = W.read_wandb_run(write_run(tmp_path / "whole", data))
    assert run.problems == [] and run.series["loss"].values.tolist() == [1.0, 0.5, 0.25]
    for cut in range(100, len(data), 4999):
        part = W.read_wandb_run(write_run(tmp_path / str(cut), data[:cut]))
        loss = part.series["loss"].values.tolist()
        assert part.problems == [] and loss == [1.0, 0.5, 0.25][: len(loss)], cut


@pytest.mark.parametrize(
    "data, problem",
    [
        (b"", None),  # the file exists, its header does not yet
        (HEADER[:4], None),
        (HEADER, None),
        (np.random.default_rng(0).bytes(70_000), "not a W&B transaction log"),
        (b"\x18\x00\x00\x00\x00\x00\x00\x00" + bytes(64), "not a W&B transaction log"),  # a TFRecord
        (b"wandb: this is a text file\n" * 100, "not a W&B transaction log"),
        (HEADER[:6] + b"\x01" + bytes(100), "version 1"),  # a format this reader does not know
    ],
)
def test_empty_or_foreign_log_files(tmp_path, data, problem):
    run = W.read_wandb_run(write_run(tmp_path, data))
    assert run.series == {} and RJ.K_STATUS not in run.meta
    if problem is None:
        assert run.problems == []
    else:
        assert len(run.problems) == 1 and problem in run.problems[0]


def test_random_bytes_after_a_valid_header(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(5):
        data = HEADER + rng.bytes(3 * W.BLOCK_BYTES + 123)
        run = W.read_wandb_run(write_run(tmp_path / str(i), data))
        assert run.series == {} and len(run.problems) <= 4  # at most one line per block


def test_undecodable_record_is_counted(tmp_path):
    data = frame([row(0, loss=1.0), b"\x12\xff\xff\xff", row(1, loss=2.0)])
    run = W.read_wandb_run(write_run(tmp_path, data))
    assert run.series["loss"].values.tolist() == [1.0, 2.0]
    assert len(run.problems) == 1 and "1 record(s)" in run.problems[0]


# --- odd values ------------------------------------------------------------------------------------


def test_typed_values_and_odd_steps_in_the_binary_log(tmp_path):
    """wandb 0.31's typed history values (no value_json), a step only in HistoryStep, a
    row with no step at all, a huge ``_step`` and a repeated step."""
    records = [
        history(
            [
                item("a", number=1.5),
                item("b", integer=-7),
                item("flag", boolean=True),
                item("txt", text="hi"),
                item("j", json_typed='{"c": 2, "d": "no"}'),
                item("_step", integer=0),
            ]
        ),
        history([item("a", number=math.nan)], step=5),  # no _step item: the record's step
        history([item("a", json_text="Infinity")]),  # no step at all: its row index, 2
        history([item("a", json_text="1"), item("_step", json_text=str(2**70))]),  # skipped
        history([item("a", json_text="9"), item("_step", json_text="5")]),  # step 5 again: latest wins
        history([item("big", json_text="1" + "0" * 400), item("_step", json_text="6")]),
        history(
            [
                item("m", "_type", json_text='"image-file"'),
                item("m", "width", json_text="28"),
                item("_step", json_text="7"),
            ]
        ),  # media: skipped, numbers and all
    ]
    run = W.read_wandb_run(write_run(tmp_path, frame(records)))
    assert run.series["a"].steps.tolist() == [0, 2, 5]
    np.testing.assert_array_equal(run.series["a"].values, [1.5, math.inf, 9.0])
    assert run.series["b"].values.tolist() == [-7.0]
    assert run.series["j/c"].values.tolist() == [2.0]
    assert run.series["big"].values.tolist() == [math.inf]
    assert set(run.series) == {"a", "b", "j/c", "big"}
    assert len(run.problems) == 1 and "1 row(s) with a _step" in run.problems[0]


HISTORY_LINES = [
    # wandb 0.9's wandb-history.jsonl rows, and odd ones.
    '{"loss": 1.0, "acc": 0.5, "_step": 0, "_runtime": 1.0, "_timestamp": 1700000000.0}',
    '{"loss": NaN, "val": {"loss": Infinity, "acc": -Infinity}, "_step": 1}',
    '{"loss": 2.0, "img": {"_type": "image-file", "width": 28, "height": 28}, "_step": 2}',
    '{"loss": 3.0, "_step": 2}',  # step 2 again: the latest value wins
    '{"loss": 1e400, "n": 100000000000000000000000000000000000000000000000000, "_step": 3}',
    '{"loss": 4.0, "_step": 1.5}',  # not a whole step: skipped
    '{"loss": 5.0, "_step": 100000000000000000000000}',  # beyond int64: skipped
    '{"loss": 6.0, "_step": "7"}',  # a string step: skipped
    '{"loss": 7.0, "list": [1, 2], "none": null, "flag": false, "text": "x"}',  # no _step: row index 8
    "[1, 2, 3]",  # not an object
    "this is not JSON",
    '{"loss": 8.0, "_step": 9}',
    '{"loss": 9.0, "_st',  # being written: no newline yet
]


def test_history_jsonl_odd_rows(tmp_path):
    text = "\n".join(HISTORY_LINES)
    run = W.read_wandb_run(write_run(tmp_path, None, files={JSONL: text}))
    loss = run.series["loss"]
    assert loss.steps.tolist() == [0, 1, 2, 3, 8, 9]
    np.testing.assert_array_equal(loss.values, [1.0, math.nan, 3.0, math.inf, 7.0, 8.0])
    assert loss.wall_times is not None and loss.wall_times[0] == 1.7e9 and np.isnan(loss.wall_times[1])
    assert run.series["val/loss"].values.tolist() == [math.inf] and run.series["val/acc"].values.tolist() == [
        -math.inf
    ]
    assert run.series["n"].values.tolist() == [1e50]
    assert set(run.series) == {"loss", "acc", "val/loss", "val/acc", "n"}
    assert run.problems == [
        f"{tmp_path}/run-20260101_000000-test/files/wandb-history.jsonl: 2 line(s) are not JSON objects; skipped",
        f"{tmp_path}/run-20260101_000000-test/files/wandb-history.jsonl: 3 row(s) with a _step that is not a whole number; skipped",
    ]


def test_binary_history_is_preferred_over_jsonl(tmp_path):
    run_dir = write_run(tmp_path, frame([row(0, loss=1.0)]), files={JSONL: '{"other": 1, "_step": 0}\n'})
    assert set(W.read_wandb_run(run_dir).series) == {"loss"}
    empty = write_run(tmp_path / "empty", HEADER, files={JSONL: '{"other": 1, "_step": 0}\n'})
    assert set(W.read_wandb_run(empty).series) == {"other"}  # no rows in the log: the jsonl


# --- config, metadata, exit -----------------------------------------------------------------------


def test_config_yaml_of_a_synced_run(tmp_path):
    """wandb 0.22's files/config.yaml (no desc), laid over the log's config records."""
    yaml_text = (
        "_wandb:\n  value:\n    cli_version: 0.22.2\nbatch_size:\n  value: 256\noptimizer:\n  value: adamw\n"
    )
    config = f_len(
        17,
        f_len(
            4, f_len(1, f_len(1, "lr") + f_len(16, "0.1")) + f_len(1, f_len(1, "batch_size") + f_len(16, "8"))
        ),
    )
    run = W.read_wandb_run(write_run(tmp_path, frame([config]), files={CONFIG: yaml_text}))
    assert run.meta[RJ.K_HPARAMS] == {"lr": 0.1, "batch_size": 256, "optimizer": "adamw"}


def test_config_records_update_and_remove_nested_keys(tmp_path):
    def config_item(*path, value=None):
        return b"".join(f_len(2, p) for p in path) + (f_len(16, value) if value is not None else b"")

    records = [
        f_len(
            5,
            f_len(1, config_item("opt", "lr", value="0.1"))
            + f_len(1, config_item("opt", "name", value='"sgd"')),
        ),
        f_len(5, f_len(2, config_item("opt", "name")) + f_len(1, config_item("seed", value="3"))),
        f_len(5, f_len(2, config_item("missing", "deeper"))),
    ]
    run = W.read_wandb_run(write_run(tmp_path, frame(records)))
    assert run.meta[RJ.K_HPARAMS] == {"opt": {"lr": 0.1}, "seed": 3}


# Five levels of ten aliases each: 100,000 leaves from five lines.
YAML_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcd", "bcde")
)


@pytest.mark.parametrize(
    "yaml_text, problem",
    [
        ("lr: {value: 0.1}\nname: !!python/object:os.system {}\n", "could not determine a constructor"),
        (YAML_BOMB, "more than"),
        ("- just\n- a list\n", "not a mapping"),
        ("lr: [unclosed\n", "unreadable"),
    ],
)
def test_bad_config_yaml_is_one_line_and_the_rest_reads(tmp_path, yaml_text, problem):
    run = W.read_wandb_run(write_run(tmp_path, frame([row(0, loss=1.0)]), files={CONFIG: yaml_text}))
    assert run.series["loss"].values.tolist() == [1.0] and RJ.K_HPARAMS not in run.meta
    assert len(run.problems) == 1 and problem in run.problems[0] and "config.yaml" in run.problems[0]


def test_yaml_values_that_are_not_json_become_text(tmp_path):
    run = W.read_wandb_run(write_run(tmp_path, None, files={CONFIG: "day:\n  value: 2024-01-02\n"}))
    assert run.meta[RJ.K_HPARAMS] == {"day": "2024-01-02"}


@pytest.mark.parametrize(
    "records, status",
    [
        ([exit_record(0)], RJ.STATUS_FINISHED),
        ([exit_record(137)], RJ.STATUS_CRASHED),
        ([exit_record(-1)], RJ.STATUS_CRASHED),  # a negative int32: ten varint bytes
        ([exit_record(0, not_complete=True)], None),  # a secondary writer: the run goes on
        ([], None),
    ],
)
def test_exit_record_decides_the_status(tmp_path, records, status):
    run = W.read_wandb_run(write_run(tmp_path, frame([row(0, loss=1.0)] + records)))
    assert run.meta.get(RJ.K_STATUS) == status and run.problems == []


def test_summary_alone_is_no_status_and_metadata_exitcode_is(tmp_path):
    summary = '{"loss": 1.0, "_step": 0, "_wandb": {"runtime": 3}}'
    run = W.read_wandb_run(
        write_run(tmp_path, frame([row(0, loss=1.0)]), files={"files/wandb-summary.json": summary})
    )
    assert RJ.K_STATUS not in run.meta
    metadata = '{"startedAt": "2024-05-06T07:08:09.123456", "exitcode": 2, "name": "old"}'
    run = W.read_wandb_run(write_run(tmp_path / "m", None, files={METADATA: metadata}))
    assert run.meta == {
        RJ.K_START: "2024-05-06T07:08:09+00:00",
        RJ.K_STATUS: RJ.STATUS_CRASHED,
        RJ.K_STATUS_REASON: "W&B recorded exit code 2",
        RJ.K_RUN_NAME: "old",
    }


# --- a log cut off short of its summary -------------------------------------------------------------

SUMMARY = "files/wandb-summary.json"
CUT_LINE = "history ends at step {last:,} of {run_step:,} ({share}) in the summary: the log is cut off; findings describe only that part"


def copy_with_summary(tmp_path, run_id: str, summary: str | bytes) -> str:
    """A real run folder with the ``files/wandb-summary.json`` an online or synced run has
    (offline runs write none)."""
    run_dir = str(tmp_path / os.path.basename(fixture_dir(run_id)))
    shutil.copytree(fixture_dir(run_id), run_dir)
    os.makedirs(os.path.join(run_dir, "files"), exist_ok=True)
    with open(os.path.join(run_dir, SUMMARY), "wb") as fh:
        fh.write(summary.encode() if isinstance(summary, str) else summary)
    return run_dir


def synced_summary(run: W.WandbRun, steps: int, seconds_later: float) -> tuple[str, float]:
    """The summary W&B keeps for a run that logged `steps` rows: the last row's values,
    ``_step``, ``_timestamp`` (`seconds_later` than the log's last wall time), ``_runtime``."""
    last_wall = max(float(s.wall_times.max()) for s in run.series.values())
    summary = dict(GEN.logged_rows(steps)[-1])
    summary.update(_step=steps - 1, _timestamp=last_wall + seconds_later, _runtime=seconds_later + 2.5)
    summary["_wandb"] = {"runtime": int(seconds_later + 2)}
    return json.dumps(summary, allow_nan=True), summary["_timestamp"]


def last_step(run: W.WandbRun) -> int:
    return max(int(s.steps[-1]) for s in run.series.values())


def test_a_log_cut_off_short_of_its_summary_is_one_problem_line(tmp_path):
    """wandb-core and its script killed after 60 steps, the log holding the first block
    only; the summary says step 59. Not live: one line, and the history read as before."""
    alone = W.read_wandb_run(fixture_dir("tskilled"))
    text, summary_wall = synced_summary(alone, GEN.KILLED_STEPS, 1.0)
    run_dir = copy_with_summary(tmp_path, "tskilled", text)
    run = W.read_wandb_run(run_dir, now=summary_wall + 16 * 60)
    last, run_step = last_step(alone), GEN.KILLED_STEPS - 1
    assert last_step(run) == last < run_step - 5
    share = f"{100 * last / run_step:.0f}%"
    log = os.path.join(run_dir, os.path.basename(log_file("tskilled")))
    assert run.problems == [f"{log}: " + CUT_LINE.format(last=last, run_step=run_step, share=share)]
    assert run.meta == alone.meta and set(run.series) == set(alone.series)
    for name, series in alone.series.items():
        np.testing.assert_array_equal(run.series[name].values, series.values)


def test_a_live_run_s_summary_may_run_ahead_of_its_log(tmp_path):
    """No exit record and a summary written a minute ago: the log is still being written
    out a block at a time. The same summary without a fresh wall time is a cut-off log."""
    alone = W.read_wandb_run(fixture_dir("tskilled"))
    text, summary_wall = synced_summary(alone, GEN.KILLED_STEPS, 1.0)
    run_dir = copy_with_summary(tmp_path, "tskilled", text)
    assert W.read_wandb_run(run_dir, now=summary_wall + 60).problems == []
    assert len(W.read_wandb_run(run_dir, now=summary_wall + 15 * 60 + 1).problems) == 1


def test_an_exit_record_ends_the_run_however_fresh(tmp_path):
    """A finished run whose summary is far past its log: cut off, even at once."""
    alone = W.read_wandb_run(fixture_dir("tsfinish"))
    text, summary_wall = synced_summary(alone, 1000, 1.0)
    run = W.read_wandb_run(copy_with_summary(tmp_path, "tsfinish", text), now=summary_wall)
    assert len(run.problems) == 1 and "history ends at step 11 of 999 (1%)" in run.problems[0]


@pytest.mark.parametrize("steps", [GEN.STEPS, GEN.STEPS + 5])
def test_a_summary_that_agrees_with_the_history_is_no_problem(tmp_path, steps):
    """Its last step, or a few steps past it (rows lost in a killed writer's buffer)."""
    alone = W.read_wandb_run(fixture_dir("tsfinish"))
    text, summary_wall = synced_summary(alone, steps, 1.0)
    run = W.read_wandb_run(copy_with_summary(tmp_path, "tsfinish", text), now=summary_wall + 86400)
    assert run.problems == []


def test_the_old_client_s_own_summary_agrees_with_its_history():
    """wandb 0.9.7 wrote wandb-summary.json beside wandb-history.jsonl: ``_step`` 11."""
    run_dir = fixture_dir("tsjsonl")
    with open(os.path.join(run_dir, "wandb-summary.json")) as fh:
        assert json.load(fh)["_step"] == last_step(W.read_wandb_run(run_dir)) == GEN.STEPS - 1
    assert W.read_wandb_run(run_dir, now=2e9).problems == []


@pytest.mark.parametrize("summary", ['{"_step": 11, "train/loss": 0.1', "[11]", b'\xff{"_step": 11}'])
def test_a_corrupt_summary_is_one_line_and_the_run_is_read(tmp_path, summary):
    run_dir = copy_with_summary(tmp_path, "tsfinish", summary)
    run = W.read_wandb_run(run_dir)
    assert len(run.problems) == 1
    assert run.problems[0].startswith(os.path.join(run_dir, SUMMARY) + ": unreadable")
    alone = W.read_wandb_run(fixture_dir("tsfinish"))
    assert run.meta == alone.meta and set(run.series) == set(alone.series)


def test_a_summary_without_a_whole_step_is_not_a_check(tmp_path):
    for step in ('"12000"', "1.5", "null", "true"):
        run_dir = copy_with_summary(tmp_path / step, "tsfinish", f'{{"_step": {step}}}')
        assert W.read_wandb_run(run_dir, now=2e9).problems == []


def test_never_raises(tmp_path):
    missing = W.read_wandb_run(str(tmp_path / "nowhere"))
    assert missing.series == {} and len(missing.problems) == 1 and "cannot list" in missing.problems[0]
    run_dir = write_run(tmp_path, None, files={METADATA: "{not json"})
    os.mkdir(os.path.join(run_dir, "run-dir.wandb"))  # a directory with a log's name
    run = W.read_wandb_run(run_dir)
    assert len(run.problems) == 2 and all("unreadable" in p for p in run.problems)


# --- cheap change detection and bounded reading ------------------------------------------------------


def test_signature_changes_with_the_files_read(tmp_path):
    run_dir = write_run(tmp_path, frame([row(0, loss=1.0)]))
    first = W.wandb_signature(run_dir)
    assert first == W.wandb_signature(run_dir) and [entry[0] for entry in first] == ["run-test.wandb"]
    with open(os.path.join(run_dir, "run-test.wandb"), "ab") as fh:
        fh.write(b"\x00")
    grown = W.wandb_signature(run_dir)
    assert grown != first
    with open(os.path.join(run_dir, "files", "config.yaml"), "w") as fh:
        fh.write("lr: {value: 1}\n")
    assert [entry[0] for entry in W.wandb_signature(run_dir)] == ["run-test.wandb", "files/config.yaml"]
    with open(os.path.join(run_dir, "files", "wandb-summary.json"), "w") as fh:
        fh.write("{}")  # read for its last step
    assert [entry[0] for entry in W.wandb_signature(run_dir)][-1] == "files/wandb-summary.json"
    assert W.wandb_signature(str(tmp_path / "nowhere"))  # no exception


def test_the_log_is_read_a_block_at_a_time(tmp_path):
    records = [row(s, loss=float(s), acc=0.5) for s in range(5000)]
    data = frame(records)
    path = tmp_path / "run-big.wandb"
    path.write_bytes(data)
    reads: list[int] = []

    class Recording:
        def __init__(self, fh):
            self.fh = fh

        def read(self, n):
            reads.append(n)
            return self.fh.read(n)

    with open(path, "rb") as fh:
        count = sum(1 for _ in W._records(Recording(fh), str(path), []))
    assert count == 5000 and max(reads) <= W.BLOCK_BYTES and len(reads) <= len(data) // W.BLOCK_BYTES + 3


def test_copied_fixture_reads_like_the_original(tmp_path):
    """The reader depends on the folder's contents, not its name or place."""
    copy = tmp_path / "elsewhere"
    shutil.copytree(fixture_dir("tsfinish"), copy)
    assert W.read_wandb_run(str(copy)).meta == W.read_wandb_run(fixture_dir("tsfinish")).meta
