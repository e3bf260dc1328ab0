"""A run whose process was killed (SIGKILL, the OOM killer) still says ``running`` in run.json:
the readers say it stopped, and when, once nothing has been written for much longer than its
step time (issue 22). Real files, real mtimes; one run killed for real."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time

import pytest
from reading_helpers import event, simple, write_events

from trainscope.analyzers.reading import LogDirReader, read_logdir
from trainscope.analyzers.reading import liveness as L
from trainscope.analyzers.run import Series
from trainscope.logformat import runjson as RJ
from trainscope.logformat import tags as T

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _age(run_dir, seconds: float) -> float:
    """Set every file of the run `seconds` into the past; returns that mtime."""
    then = time.time() - seconds
    for name in os.listdir(run_dir):
        os.utime(os.path.join(run_dir, name), (then, then))
    return then


def _running_run(
    run_dir, step_seconds: float, steps: int = 50, pause_at: int | None = None, pause: float = 0.0
):
    os.makedirs(run_dir, exist_ok=True)
    RJ.write_run_json(run_dir, {RJ.K_SCHEMA: RJ.SCHEMA_VERSION, RJ.K_STATUS: RJ.STATUS_RUNNING})
    wall, records = 1.7e9, []
    for s in range(steps):
        wall += step_seconds + (pause if s == pause_at else 0.0)
        records.append(event(s, [simple(T.TRAIN_LOSS, 1.0 / (s + 1))], wall=wall))
    write_events(run_dir, records)


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="seconds")


@pytest.mark.parametrize(
    ("step_seconds", "pause", "silent", "stopped"),
    [
        (0.05, 0.0, 60, False),  # a fast run: quiet for a minute, alive (a checkpoint save)
        (0.05, 0.0, L.MIN_SILENCE_SECONDS - 30, False),  # under the floor: alive
        (0.05, 0.0, L.MIN_SILENCE_SECONDS + 30, True),  # past the floor
        (30.0, 0.0, 3 * 3600, False),  # 30 s steps: 3 h is 360 steps, under 1000 steps
        (30.0, 0.0, 10 * 3600, True),  # 1,200 steps of nothing
        (0.05, 1200.0, 2400, False),  # it paused 20 min (an evaluation) before: 40 min is not 3x that
        (0.05, 1200.0, 4000, True),
    ],
)
def test_a_running_run_silent_far_longer_than_its_steps_is_stopped(
    tmp_path, step_seconds, pause, silent, stopped
):
    _running_run(tmp_path / "r", step_seconds, pause_at=20 if pause else None, pause=pause)
    then = _age(tmp_path / "r", silent)
    run = read_logdir(tmp_path).runs["r"]
    if stopped:
        assert run.status == RJ.STATUS_STOPPED and run.meta[RJ.K_END] == _iso(then)
        assert "likely killed" in run.meta[RJ.K_STATUS_REASON]
    else:
        assert run.status == RJ.STATUS_RUNNING and RJ.K_END not in run.meta


def test_a_run_that_says_it_ended_is_left_alone(tmp_path):
    _running_run(tmp_path / "r", 0.05)
    data, _ = RJ.read_run_json(tmp_path / "r")
    RJ.write_run_json(tmp_path / "r", {**data, RJ.K_STATUS: RJ.STATUS_FINISHED})
    _age(tmp_path / "r", 86400)
    assert read_logdir(tmp_path).runs["r"].status == RJ.STATUS_FINISHED


def test_the_live_reader_flips_the_status_without_new_data_and_back_when_it_writes(tmp_path):
    """The dashboard's reader: the verdict is rechecked every refresh (a stat per file), the run
    rebuilt only when it flips."""
    _running_run(tmp_path / "r", 0.05)
    reader = LogDirReader(tmp_path)
    assert reader.refresh().runs["r"].status == RJ.STATUS_RUNNING
    assert "r" not in reader.refresh().changed
    _age(tmp_path / "r", 2 * L.MIN_SILENCE_SECONDS)
    snapshot = reader.refresh()
    assert snapshot.runs["r"].status == RJ.STATUS_STOPPED and "r" in snapshot.changed
    assert "r" not in reader.refresh().changed
    now = time.time()
    os.utime(tmp_path / "r" / "run.json", (now, now))  # it wrote again: it was not dead
    assert reader.refresh().runs["r"].status == RJ.STATUS_RUNNING


def test_silence_limit_is_the_largest_of_its_three_bounds():
    steps = [0, 1, 2, 3]
    assert L.silence_limit(None) == L.MIN_SILENCE_SECONDS
    assert L.silence_limit(Series.from_lists(steps, [1] * 4, [0, 2, 4, 6])) == L.STEP_FACTOR * 2
    assert (
        L.silence_limit(Series.from_lists(steps, [1] * 4, [0, 0.1, 1000.1, 1000.2])) == L.PAUSE_FACTOR * 1000
    )


_TRAIN_UNTIL_KILLED = """
import sys, torch
from sklearn.datasets import load_digits
from trainscope.collectors import watch
X, y = load_digits(return_X_y=True)
X, y = torch.tensor(X / 16.0, dtype=torch.float32), torch.tensor(y)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
collector = watch(model, opt, log_dir=sys.argv[1])
step = 0
while True:
    i = (step * 64) % 1700
    out = model(X[i:i + 64])
    loss = torch.nn.functional.cross_entropy(out, y[i:i + 64])
    opt.zero_grad(); loss.backward(); opt.step()
    collector.step(loss=loss, outputs=out, targets=y[i:i + 64])
    step += 1
    if step == 300:
        print("ready", flush=True)
"""


def test_a_run_killed_with_sigkill_reads_running_then_stopped(tmp_path):
    pytest.importorskip("torch")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-c", _TRAIN_UNTIL_KILLED, str(tmp_path / "run")],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(1.0)  # past the collector's flush window
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    run = read_logdir(tmp_path).runs["run"]
    assert run.status == RJ.STATUS_RUNNING and len(run.scalars[T.TRAIN_LOSS]) >= 200  # just now: may be alive
    then = _age(tmp_path / "run", L.silence_limit(run.scalar(T.TRAIN_LOSS)) + 60)
    run = read_logdir(tmp_path).runs["run"]
    assert run.status == RJ.STATUS_STOPPED and run.meta[RJ.K_END] == _iso(then)
