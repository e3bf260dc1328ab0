"""Bad input: each case is one clear line, and the rest of the log dir still reads."""

from __future__ import annotations

import os

import pytest
from reading_helpers import event, good_is_intact, scalar_events, simple, write_events

from trainscope.analyzers.reading import read_logdir
from trainscope.analyzers.reading import sources as S
from trainscope.logformat import tags as T
from trainscope.logformat.records import encode_record


def test_empty_dir(tmp_path):
    snapshot = read_logdir(tmp_path)
    assert snapshot.runs == {} and len(snapshot.problems) == 1 and "no runs found" in snapshot.problems[0]


def test_not_a_log_dir(tmp_path):
    (tmp_path / "README.txt").write_text("hello")
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "cat.png").write_bytes(os.urandom(100))
    snapshot = read_logdir(tmp_path)
    assert snapshot.runs == {} and "no runs found" in snapshot.problems[0]


def test_missing_path_and_file_path(tmp_path):
    assert "does not exist" in read_logdir(tmp_path / "nope").problems[0]
    (tmp_path / "file").write_text("x")
    assert "is not a directory" in read_logdir(tmp_path / "file").problems[0]


def test_file_that_is_not_an_event_file(healthy):
    bogus = healthy / "bogus"
    bogus.mkdir()
    (bogus / "events.out.tfevents.1700000000.host.1.0").write_text(
        "this is a text file, not TFRecords\n" * 50
    )
    snapshot = read_logdir(healthy)
    good_is_intact(snapshot)
    problems = snapshot.runs["bogus"].problems
    assert len(problems) == 1 and "not a TensorBoard event file" in problems[0] and "bogus" in problems[0]


def test_records_that_are_not_events(healthy):
    write_events(healthy / "odd", [encode_record(b"\xff" * 30), event(1, [simple("loss", 2.0)])])
    snapshot = read_logdir(healthy)
    good_is_intact(snapshot)
    run = snapshot.runs["odd"]
    assert run.scalars[T.TRAIN_LOSS].values.tolist() == [2.0]
    assert len(run.problems) == 1 and "not a TensorBoard Event" in run.problems[0]


def test_garbage_in_the_middle_of_an_event_file(healthy):
    records = scalar_events({s: {"loss": float(s)} for s in range(20)})
    path = write_events(healthy / "mid", records[:10] + [os.urandom(3000)] + records[10:])
    snapshot = read_logdir(healthy)
    good_is_intact(snapshot)
    run = snapshot.runs["mid"]
    assert run.scalars[T.TRAIN_LOSS].steps.tolist() == list(range(20))
    assert (
        len(run.problems) == 1
        and "corrupt record header at offset" in run.problems[0]
        and str(path) in run.problems[0]
    )


def test_truncated_event_file(healthy):
    records = scalar_events({s: {"loss": float(s)} for s in range(20)})
    path = write_events(healthy / "cut", [b"".join(records)[:-7]])
    old = os.path.getmtime(path) - S.STALE_TAIL_SECONDS - 1
    os.utime(path, (old, old))
    snapshot = read_logdir(healthy)
    good_is_intact(snapshot)
    run = snapshot.runs["cut"]
    assert len(run.scalars[T.TRAIN_LOSS]) == 19
    assert len(run.problems) == 1 and "truncated" in run.problems[0]


def test_many_corrupt_records_are_summarised(healthy):
    records = []
    for s in range(40):
        r = bytearray(scalar_events({s: {"loss": 1.0}})[0])
        r[-1] ^= 0xFF  # data CRC
        records.append(bytes(r))
    write_events(healthy / "rotten", records)
    problems = read_logdir(healthy).runs["rotten"].problems
    assert len(problems) == S.MAX_PROBLEMS_PER_FILE + 1
    assert problems[-1].endswith(f"{40 - S.MAX_PROBLEMS_PER_FILE} more problem(s) not shown")


def test_unreadable_run_json(healthy):
    write_events(healthy / "mine", scalar_events({0: {T.TRAIN_LOSS: 1.0}}))
    (healthy / "mine" / "run.json").write_text("{broken")
    snapshot = read_logdir(healthy)
    good_is_intact(snapshot)
    run = snapshot.runs["mine"]
    assert run.source == "trainscope" and run.meta == {} and len(run.scalars[T.TRAIN_LOSS]) == 1
    assert len(run.problems) == 1 and "unreadable run.json" in run.problems[0]


def test_empty_event_file_is_a_run_without_data(tmp_path):
    (tmp_path / "events.out.tfevents.1700000000.host.1.0").write_bytes(b"")
    run = read_logdir(tmp_path).runs["."]
    assert run.scalars == {} and run.problems == ()


def test_tag_that_is_not_utf8_is_reported(healthy):
    from tensorboard.compat.proto import event_pb2, summary_pb2

    good = event_pb2.Event(
        step=1, summary=summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="XX", simple_value=1.0)])
    )
    data = good.SerializeToString().replace(b"XX", b"\xff\xfe")
    write_events(healthy / "bytes", [encode_record(data)])
    run = read_logdir(healthy).runs["bytes"]
    assert run.scalars == {} and len(run.problems) == 1


# -- every parser of a foreign format: one file's failure is that file's problem ----------

_STATE = '{"global_step": 2, "log_history": [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.9}]}'
# format -> (path of the file under test, its valid text, other files its run needs)
FOREIGN_FILES = {
    "csv_log": ("log.csv", "epoch,loss,val_loss\n0,1.0,1.1\n1,0.9,1.0\n", {}),
    "keras_log": ("training.log", "epoch,accuracy,loss\n0,0.5,1.0\n1,0.6,0.9\n", {}),
    "mlflow_metric": (
        "mlruns/0/r/metrics/loss",
        "1700000000000 1.0 0\n1700000001000 0.9 1\n",
        {"mlruns/0/r/meta.yaml": "run_name: r\nstatus: 3\n"},
    ),
    "mlflow_meta": (
        "mlruns/0/r/meta.yaml",
        "run_name: r\nstatus: 3\nstart_time: 1700000000000\n",
        {"mlruns/0/r/metrics/loss": "1700000000000 1.0 0\n"},
    ),
    "mlflow_param": (
        "mlruns/0/r/params/lr",
        "0.1",
        {"mlruns/0/r/meta.yaml": "status: 3\n", "mlruns/0/r/metrics/loss": "1700000000000 1.0 0\n"},
    ),
    "hparams_yaml": (
        "v0/hparams.yaml",
        "lr: 0.1\nbatch_size: 32\n",
        {"v0/metrics.csv": "epoch,step,loss\n0,1,1.0\n"},
    ),
    "trainer_state": ("trainer_state.json", _STATE, {}),
    "wandb_history": (
        "wandb/run-20250101_000000-abc/files/wandb-history.jsonl",
        '{"_step": 0, "loss": 1.0}\n',
        {"wandb/run-20250101_000000-abc/run-abc.wandb": ""},
    ),
}


def _bad(kind: str, valid: str) -> bytes:
    import random

    data = valid.encode()
    if kind == "garbage":
        return random.Random(0).randbytes(5000)
    if kind == "truncated":
        return data[: len(data) // 2 + 3]
    if kind == "huge_field":
        return data[:-1] + b"9" * 5_000_000 + b"\n" + data
    if kind == "deep_nesting":
        return b"[" * 200_000 + b"]" * 200_000
    if kind == "empty":
        return b""
    if kind == "utf16":
        return valid.encode("utf-16")
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["garbage", "truncated", "huge_field", "deep_nesting", "empty", "utf16"])
@pytest.mark.parametrize("fmt", sorted(FOREIGN_FILES))
def test_a_bad_foreign_file_costs_only_itself(healthy, fmt, kind):
    rel, valid, others = FOREIGN_FILES[fmt]
    bad = healthy / "bad"
    for other, text in others.items():
        (bad / other).parent.mkdir(parents=True, exist_ok=True)
        (bad / other).write_text(text)
    (bad / rel).parent.mkdir(parents=True, exist_ok=True)
    (bad / rel).write_bytes(_bad(kind, valid))
    snapshot = read_logdir(healthy)  # never raises
    good_is_intact(snapshot)
    for name, run in snapshot.runs.items():
        assert name == "good" or name.startswith("bad")
        assert len(run.problems) <= S.MAX_PROBLEMS_PER_FILE + 1
        assert all(str(bad) in p for p in run.problems), run.problems
    assert snapshot.problems == ()
