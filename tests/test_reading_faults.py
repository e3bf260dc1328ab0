"""The fence around every reader: whatever one file's parser raises is one problem line for
that file, and every other run of the log dir is read in full (issue 22)."""

from __future__ import annotations

import csv
import importlib

import pytest
from reading_helpers import good_is_intact, scalar_events, write_events

from trainscope.analyzers.reading import LogDirReader, read_logdir
from trainscope.analyzers.reading import assemble as A
from trainscope.analyzers.reading import sources as S
from trainscope.logformat import tags as T

# What each source calls to read its file, and a file of that format.
_READERS = {
    "events": (
        "trainscope.analyzers.reading.eventdecode.EventDecoder.decode",
        "ev/events.out.tfevents.1700000000.h.1.0",
    ),
    "metrics_csv": ("trainscope.analyzers.reading.sources.parse_metrics_csv", "lt/metrics.csv"),
    "csv_log": ("trainscope.analyzers.reading.metric_csv.CsvLogReader.poll", "cl/log.csv"),
    "trainer_state": ("trainscope.analyzers.reading.sources.parse_trainer_state", "hf/trainer_state.json"),
    "hparams_yaml": ("trainscope.analyzers.reading.sources.parse_hparams_yaml", "lt/hparams.yaml"),
    "mlflow": ("trainscope.analyzers.reading.mlflow_store.MlflowRunReader.poll", "mlruns/0/r/meta.yaml"),
    "wandb": (
        "trainscope.analyzers.reading.sources.read_wandb_run",
        "wandb/run-20250101_000000-abc/run-abc.wandb",
    ),
    "run_json": ("trainscope.analyzers.reading.sources.read_run_json", "mine/run.json"),
}
_FILES = {
    "ev/events.out.tfevents.1700000000.h.1.0": None,
    "lt/metrics.csv": "epoch,step,loss\n0,1,1.0\n",
    "lt/hparams.yaml": "lr: 0.1\n",
    "cl/log.csv": "epoch,loss,val_loss\n0,1.0,1.1\n",
    "hf/trainer_state.json": '{"global_step": 1, "log_history": [{"step": 1, "loss": 1.0}]}',
    "mlruns/0/r/meta.yaml": "run_name: r\nstatus: 3\n",
    "mlruns/0/r/metrics/loss": "1700000000000 1.0 0\n",
    "wandb/run-20250101_000000-abc/run-abc.wandb": "",
    "wandb/run-20250101_000000-abc/files/wandb-history.jsonl": '{"_step": 0, "loss": 1.0}\n',
    "mine/run.json": '{"status": "finished"}',
}


def _resolve(dotted: str):
    module, *attrs = dotted.split(".")
    obj = importlib.import_module(module)
    for i, attr in enumerate(attrs):
        obj = (
            getattr(obj, attr)
            if hasattr(obj, attr)
            else importlib.import_module(f"{module}.{'.'.join(attrs[: i + 1])}")
        )
    return obj


def _write_every_format(root) -> None:
    for rel, text in _FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if text is None:
            write_events(path.parent, scalar_events({1: {"loss": 1.0}}), name=path.name)
        else:
            path.write_text(text)
    write_events(root / "mine", scalar_events({1: {T.TRAIN_LOSS: 1.0}}))


@pytest.mark.parametrize(
    "error",
    [
        RecursionError("deep"),
        MemoryError(),
        csv.Error("field larger than field limit"),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
        KeyError("surprise"),
    ],
    ids=lambda e: type(e).__name__,
)
@pytest.mark.parametrize("fmt", sorted(_READERS))
def test_whatever_a_reader_raises_is_one_line_for_its_file(healthy, monkeypatch, fmt, error):
    """Every reader, present and future, is called behind one fence in `LogDirReader`: even an
    exception no parser anticipates costs its own file only."""
    _write_every_format(healthy)
    target, rel = _READERS[fmt]

    real = _resolve(target)

    bad = f"{healthy}/{rel.split('/')[0]}/"

    def boom(*args, **kwargs):
        paths = [
            str(a if isinstance(a, str) else getattr(a, "path", None) or getattr(a, "run_dir", ""))
            for a in args
        ]
        if any(p.startswith(bad) or p + "/" == bad for p in paths):
            raise error
        return real(*args, **kwargs)  # the same reader for another run's file

    monkeypatch.setattr(target, boom)
    snapshot = read_logdir(healthy)  # never raises
    good_is_intact(snapshot)
    lines = [p for run in snapshot.runs.values() for p in run.problems]
    assert len(lines) == 1, lines
    assert "unreadable" in lines[0] and rel.split("/")[0] in lines[0]
    assert snapshot.problems == ()


def test_a_failed_file_is_not_retried_until_it_changes(healthy, monkeypatch):
    """A parser that fails on a file fails the same way on the next refresh: the dashboard's
    refresh does not pay for it again, nor mark the run changed."""
    (healthy / "lt").mkdir()
    (healthy / "lt" / "metrics.csv").write_text("epoch,step,loss\n0,1,1.0\n")
    calls = []

    def boom(text, path):
        calls.append(path)
        raise RecursionError

    monkeypatch.setattr(S, "parse_metrics_csv", boom)
    reader = LogDirReader(healthy)
    reader.refresh()
    assert "lt" not in reader.refresh().changed and len(calls) == 1
    with open(healthy / "lt" / "metrics.csv", "a") as fh:
        fh.write("0,2,0.9\n")
    reader.refresh()
    assert len(calls) == 2


def test_a_run_that_cannot_be_assembled_is_one_line(healthy, monkeypatch):
    """Past the parsers, putting a run together (tag mapping, shards) is fenced per run too."""
    write_events(healthy / "odd", scalar_events({1: {"loss": 1.0}}))
    real = A.build_run

    def build(**kwargs):
        if kwargs["name"] == "odd":
            raise ZeroDivisionError("division by zero")
        return real(**kwargs)

    monkeypatch.setattr("trainscope.analyzers.reading.logdir.build_run", build)
    snapshot = read_logdir(healthy)
    good_is_intact(snapshot)
    odd = snapshot.runs["odd"]
    assert odd.scalars == {} and len(odd.problems) == 1 and "ZeroDivisionError" in odd.problems[0]


# -- the inputs of the issue, on the real parsers -------------------------------------------


def test_a_metrics_csv_field_over_the_csv_limit_costs_its_row(healthy):
    """A cell over the csv module's 131,072-character limit raised `_csv.Error` and lost the
    whole file; now the row goes, with one line, and the rows beside it are read."""
    (healthy / "lt").mkdir()
    huge = "9" * (csv.field_size_limit() + 10)
    (healthy / "lt" / "metrics.csv").write_text(f"epoch,step,loss\n0,1,1.0\n0,2,{huge}\n0,3,0.8\n")
    snapshot = read_logdir(healthy)
    good_is_intact(snapshot)
    run = snapshot.runs["lt"]
    assert run.scalars[T.TRAIN_LOSS].steps.tolist() == [1, 3]
    assert len(run.problems) == 1 and "1 row(s)" in run.problems[0] and "field limit" in run.problems[0]


@pytest.mark.parametrize("rel", ["hf/trainer_state.json", "mine/run.json"])
def test_json_nested_100000_deep_is_one_clear_line(healthy, rel):
    path = healthy / rel
    path.parent.mkdir(parents=True)
    path.write_text('{"log_history": ' + "[" * 100_000 + "]" * 100_000 + "}")
    if rel.startswith("mine"):
        write_events(healthy / "mine", scalar_events({1: {T.TRAIN_LOSS: 1.0}}))
    snapshot = read_logdir(healthy)
    good_is_intact(snapshot)
    (run,) = [r for name, r in snapshot.runs.items() if name != "good"]
    assert len(run.problems) == 1 and "nested too deeply" in run.problems[0] and str(path) in run.problems[0]
