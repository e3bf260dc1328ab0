"""What the collector promises when the process or its disk fails (docs/faults.md):
SIGTERM keeps every step and marks the run stopped, then lets the process end as it
would have; a log dir it cannot write is one clear error at attach; a full disk costs
nothing once space returns; outputs= in a model's own wrapping still give accuracy.
Real small models on scikit-learn's digits throughout."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from collector_helpers import mlp, read_scalars

from trainscope.collectors import watch
from trainscope.logformat import runjson as RJ
from trainscope.logformat import tags as T

ROOT = Path(__file__).resolve().parents[1]

# A training loop that runs until it is stopped, printing each step it finished. The
# flush settings keep every step pending: only a flush at SIGTERM writes them.
TRAINING_UNTIL_STOPPED = textwrap.dedent(
    """
    import signal, sys, time
    import torch, torch.nn.functional as F
    from sklearn.datasets import load_digits
    from trainscope.collectors import watch

    log_dir, mode = sys.argv[1], sys.argv[2]
    digits = load_digits()
    X = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    if mode == "own_handler":
        def own(signum, frame):
            with open(log_dir + "/own_handler_ran", "w") as fh:
                fh.write(str(signum))
            sys.exit(3)
        signal.signal(signal.SIGTERM, own)
    flush_steps = 10 if mode == "flush_every_10" else 10**6
    collector = watch(model, opt, log_dir, flush_steps=flush_steps, flush_seconds=1e9)
    step = 0
    while True:
        i = (step * 32) % 1700
        opt.zero_grad()
        loss = F.cross_entropy(model(X[i : i + 32]), y[i : i + 32])
        loss.backward()
        opt.step()
        collector.step(loss=loss)
        step += 1
        print(step, flush=True)
        time.sleep(0.002)
    """
)


def _train_then_terminate(
    tmp_path: Path, mode: str, steps_before: int = 40, signum: int = signal.SIGTERM
) -> tuple[int, int]:
    """Run the loop in a real process, send it `signum` after `steps_before` steps;
    return its exit status and the number of steps it had printed as done."""
    script = tmp_path / "train.py"
    script.write_text(TRAINING_UNTIL_STOPPED)
    log_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(log_dir), mode],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    done = 0
    assert proc.stdout is not None
    for line in proc.stdout:
        done = int(line)
        if done >= steps_before:
            proc.send_signal(signum)
            break
    rest, _ = proc.communicate(timeout=120)
    done = max([done, *(int(line) for line in rest.split())])
    return proc.returncode, done


def _assert_stopped_with_every_step(log_dir: Path, done: int) -> None:
    meta = json.loads((log_dir / RJ.RUN_JSON).read_text())
    assert meta[RJ.K_STATUS] == RJ.STATUS_STOPPED
    assert "SIGTERM" in meta[RJ.K_STATUS_REASON]
    losses = read_scalars(log_dir)[T.TRAIN_LOSS]
    # every step that step() saw, none lost; the one in flight at the signal may be in
    assert sorted(losses) == list(range(len(losses))) and done <= len(losses) <= done + 1
    assert meta[RJ.K_STEPS] == len(losses)


def test_sigterm_keeps_every_step_marks_the_run_stopped_and_ends_the_process(tmp_path):
    status, done = _train_then_terminate(tmp_path, "default")
    assert status == -signal.SIGTERM  # the default behaviour still happens
    _assert_stopped_with_every_step(tmp_path / "run", done)


def test_sigterm_then_runs_the_handler_the_training_script_set(tmp_path):
    status, done = _train_then_terminate(tmp_path, "own_handler")
    assert status == 3 and (tmp_path / "run" / "own_handler_ran").read_text() == str(int(signal.SIGTERM))
    _assert_stopped_with_every_step(tmp_path / "run", done)


def test_sigkill_loses_at_most_the_steps_since_the_last_flush(tmp_path):
    """Nothing runs in a process killed with SIGKILL (or by the OOM killer): what the
    last flush handed to the writer thread is on disk, and run.json still says running
    (the readers tell it stopped from its silence: tests/test_reading_killed_runs.py)."""
    status, done = _train_then_terminate(tmp_path, "flush_every_10", steps_before=45, signum=signal.SIGKILL)
    assert status == -signal.SIGKILL
    losses = read_scalars(tmp_path / "run")[T.TRAIN_LOSS]
    assert sorted(losses) == list(range(len(losses))) and done - 2 * 10 <= len(losses) <= done + 1
    assert len(losses) % 10 == 0  # whole flushes
    assert json.loads((tmp_path / "run" / RJ.RUN_JSON).read_text())[RJ.K_STATUS] == RJ.STATUS_RUNNING


def test_close_gives_sigterm_back_to_the_handler_that_was_there(tmp_path):
    previous = signal.getsignal(signal.SIGTERM)
    model = mlp()
    collector = watch(model, torch.optim.SGD(model.parameters(), lr=0.1), tmp_path)
    assert signal.getsignal(signal.SIGTERM) != previous
    collector.close()
    assert signal.getsignal(signal.SIGTERM) == previous


def _unwritable(tmp_path: Path, how: str) -> Path:
    if how == "a file in the way":
        (tmp_path / "taken").write_text("not a folder")
        return tmp_path / "taken" / "run"
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o500)
    if os.access(folder, os.W_OK):  # root writes anyway
        pytest.skip("this user may write into a read-only folder")
    return folder / "run"


@pytest.mark.parametrize("how", ["a file in the way", "a read-only folder"])
def test_a_log_dir_that_cannot_be_written_is_one_clear_error_at_attach(tmp_path, how):
    log_dir = _unwritable(tmp_path, how)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(OSError) as caught:
        watch(model, opt, log_dir)
    message = str(caught.value)
    assert f"cannot write the run into {log_dir}" in message and "\n" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks  # nothing attached


@pytest.fixture
def small_disk(tmp_path):
    """A real 512 KB filesystem (tmpfs), where this user may mount one."""
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(disk)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip("no small filesystem can be mounted here")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path) -> Path:
    filler = disk / f"filler-{uuid.uuid4().hex}"
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def _train(collector, model, opt, X, y, steps: range) -> None:
    for step in steps:
        i = (step * 32) % 1700
        opt.zero_grad()
        loss = F.cross_entropy(model(X[i : i + 32]), y[i : i + 32])
        loss.backward()
        opt.step()
        collector.step(loss=loss)


def test_a_full_disk_costs_nothing_once_space_returns(small_disk, digits):
    X, y = digits
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    log_dir = small_disk / "run"
    collector = watch(model, opt, log_dir, flush_steps=5, every=10)
    _train(collector, model, opt, X, y, range(0, 20))
    collector.flush(wait=True)
    filler = _fill(small_disk)
    with pytest.warns(RuntimeWarning, match="No space left on device") as caught:
        _train(collector, model, opt, X, y, range(20, 60))
        collector.flush(wait=True)
    filler.unlink()  # space comes back
    _train(collector, model, opt, X, y, range(60, 80))
    collector.close()
    assert len([w for w in caught if "TrainScope" in str(w.message)]) == 1
    assert sorted(read_scalars(log_dir)[T.TRAIN_LOSS]) == list(range(80))
    assert json.loads((log_dir / RJ.RUN_JSON).read_text())[RJ.K_STATUS] == RJ.STATUS_FINISHED
    assert not list(log_dir.glob("*.tmp"))


def test_run_json_on_a_full_disk_leaves_no_temporary_file(small_disk, digits):
    X, y = digits
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    log_dir = small_disk / "run"
    collector = watch(model, opt, log_dir)
    _train(collector, model, opt, X, y, range(5))
    _fill(small_disk)
    with pytest.warns(RuntimeWarning, match="run.json"):
        collector.close()
    assert not list(log_dir.glob("*.tmp"))
    assert (
        json.loads((log_dir / RJ.RUN_JSON).read_text())[RJ.K_STATUS] == RJ.STATUS_RUNNING
    )  # the last whole one


class _ModelOutput(dict):
    """What a Hugging Face model returns: a dict whose values are also attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(name) from exc


WRAPPINGS = {
    "dict": lambda loss, out: {"logits": out, "hidden": out.detach()},
    "tuple with the loss first": lambda loss, out: (loss, out),
    "model output": lambda loss, out: _ModelOutput(loss=loss, logits=out),
}


@pytest.mark.parametrize("wrapping", sorted(WRAPPINGS))
def test_outputs_in_a_model_s_own_wrapping_give_the_accuracy(tmp_path, digits, wrapping):
    X, y = digits
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    collector = watch(model, opt, tmp_path)
    expected = {}
    for step in range(30):
        xb, yb = X[step * 32 : step * 32 + 32], y[step * 32 : step * 32 + 32]
        opt.zero_grad()
        out = model(xb)
        loss = F.cross_entropy(out, yb)
        loss.backward()
        opt.step()
        expected[step] = (out.argmax(1) == yb).float().mean().item()
        collector.step(loss=loss, outputs=WRAPPINGS[wrapping](loss, out), targets=yb)
    collector.close()
    assert read_scalars(tmp_path)[T.TRAIN_ACC] == pytest.approx(expected, abs=1e-6)
    assert collector.errors == []


def test_outputs_without_clear_logits_are_said_once(tmp_path, digits):
    X, y = digits
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    collector = watch(model, opt, tmp_path)
    with pytest.warns(RuntimeWarning, match="outputs= as dict, with no logits") as caught:
        for step in range(10):
            xb, yb = X[step * 32 : step * 32 + 32], y[step * 32 : step * 32 + 32]
            opt.zero_grad()
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            loss.backward()
            opt.step()
            collector.step(loss=loss, outputs={"a": out, "b": out}, targets=yb)
    collector.close()
    assert len([w for w in caught if "TrainScope" in str(w.message)]) == 1
    scalars = read_scalars(tmp_path)
    assert T.TRAIN_ACC not in scalars and sorted(scalars[T.TRAIN_LOSS]) == list(range(10))
