"""MLflow's file store: what is a run, status, incremental reading of metric files.

The real store (written by mlflow) is read in test_reading_formats.py; these tests copy
its finished run or write the documented shapes by hand around it.
"""

from __future__ import annotations

import glob
import os
import shutil
import time

import pytest

from trainscope.analyzers.reading import LogDirReader, read_logdir
from trainscope.logformat import runjson as RJ
from trainscope.logformat import tags as T

FIXTURE_STORE = os.path.join(os.path.dirname(__file__), "fixtures", "mlflow", "mlruns")


def _finished_run_dir() -> str:
    for meta in glob.glob(os.path.join(FIXTURE_STORE, "*", "*", "meta.yaml")):
        with open(meta) as fh:
            if "run_name: finished" in fh.read():
                return os.path.dirname(meta)
    raise AssertionError("the MLflow fixture has no run named 'finished'")


@pytest.fixture()
def store(tmp_path):
    """A copy of the fixture store: experiment 1 holding the finished run as run ``abc``."""
    exp = tmp_path / "mlruns" / "1"
    shutil.copytree(_finished_run_dir(), exp / "abc")
    (exp / "meta.yaml").write_text("experiment_id: '1'\nlifecycle_stage: active\nname: digits\n")
    (tmp_path / "mlruns" / ".trash").mkdir()
    (tmp_path / "mlruns" / "0").mkdir()
    (tmp_path / "mlruns" / "0" / "meta.yaml").write_text("experiment_id: '0'\nname: Default\n")
    return tmp_path


def _age(root, seconds: float = 60) -> None:
    old = time.time() - seconds
    for dirpath, _, _ in os.walk(root):
        os.utime(dirpath, (old, old))


def test_only_run_directories_are_runs(store):
    # an experiment's meta.yaml, .trash and a deleted run in it are no runs
    trashed = store / "mlruns" / ".trash" / "old"
    shutil.copytree(store / "mlruns" / "1" / "abc", trashed)
    runs = read_logdir(store).runs
    assert list(runs) == ["mlruns/1/abc"]
    assert runs["mlruns/1/abc"].meta[RJ.K_RUN_NAME] == "finished"


def test_appended_metric_lines_and_new_metrics_are_read(store):
    run_dir = store / "mlruns" / "1" / "abc"
    _age(store)
    reader = LogDirReader(store)
    first = reader.refresh().runs["mlruns/1/abc"]
    assert len(first.scalars[T.TRAIN_LOSS]) == 5
    assert reader.refresh().runs["mlruns/1/abc"] is first  # nothing changed: the same object
    with open(run_dir / "metrics" / "train" / "loss", "a") as fh:
        fh.write("1796671200000 0.05 5\n1796671201000 0.04")  # the last line is being written
    run = reader.refresh().runs["mlruns/1/abc"]
    assert run.scalars[T.TRAIN_LOSS].steps.tolist() == list(range(6))
    with open(run_dir / "metrics" / "train" / "loss", "a") as fh:
        fh.write(" 6\n")
    (run_dir / "metrics" / "val").mkdir()  # a name with "/"
    (run_dir / "metrics" / "val" / "top5_accuracy").write_text("1796671200000 0.5 0\n1796671201000 0.75 1\n")
    run = reader.refresh().runs["mlruns/1/abc"]
    assert run.scalars[T.TRAIN_LOSS].values[-1] == 0.04 and run.scalars[T.TRAIN_LOSS].steps[-1] == 6
    assert run.unmapped["val/top5_accuracy"].values.tolist() == [0.5, 0.75]
    assert run.last_wall_time == pytest.approx(1796671201.0)


@pytest.mark.parametrize(
    "status, expected",
    [
        (3, RJ.STATUS_FINISHED),
        (4, RJ.STATUS_CRASHED),
        (5, RJ.STATUS_STOPPED),
        ("FAILED", RJ.STATUS_CRASHED),  # some versions write the name
        (1, None),  # RUNNING is no evidence: a process killed with -9 leaves it so
        (2, None),
        ("null", None),
        ("[1, 2]", None),
    ],
)
def test_status_comes_only_from_an_ended_run(store, status, expected):
    meta = store / "mlruns" / "1" / "abc" / "meta.yaml"
    text = meta.read_text()
    meta.write_text(
        "".join(
            f"status: {status}\n" if line.startswith("status:") else line
            for line in text.splitlines(keepends=True)
        )
    )
    run = read_logdir(store).runs["mlruns/1/abc"]
    assert run.status == expected and run.problems == ()


def test_run_name_from_the_tag_when_meta_has_none(tmp_path):
    run_dir = tmp_path / "0" / "r1"
    (run_dir / "metrics").mkdir(parents=True)
    (run_dir / "tags").mkdir()
    (run_dir / "meta.yaml").write_text("run_id: r1\nstatus: 1\nstart_time: 1700000000000\nend_time: null\n")
    (run_dir / "tags" / "mlflow.runName").write_text("bold-cat-1")
    (run_dir / "metrics" / "loss").write_text(
        "1700000000000 1.0\n1700000001000 0.5\n"
    )  # MLflow < 1.0: no step
    run = read_logdir(tmp_path).runs["0/r1"]
    assert run.meta[RJ.K_RUN_NAME] == "bold-cat-1" and run.status is None
    assert run.meta[RJ.K_START] == "2023-11-14T22:13:20+00:00" and RJ.K_END not in run.meta
    assert run.scalars[T.TRAIN_LOSS].steps.tolist() == [0] and run.scalars[T.TRAIN_LOSS].values.tolist() == [
        0.5
    ]


def test_bad_lines_are_counted_once_per_file(store):
    loss = store / "mlruns" / "1" / "abc" / "metrics" / "lr"
    with open(loss, "a") as fh:
        fh.write("not a line\n1 2 3 4\n1700000000000 x 9\n\n")
    run = read_logdir(store).runs["mlruns/1/abc"]
    assert len(run.scalars[T.LR]) == 5
    assert len(run.problems) == 1 and "lr: 3 line(s) that are not 'timestamp value step'" in run.problems[0]
