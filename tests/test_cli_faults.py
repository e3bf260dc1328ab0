"""``python -m analyzers`` under faults: a reader that goes away, a full disk, bad files (issue 22)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from reading_helpers import scalar_events, write_events

from trainscope.analyzers.reading import sources as S
from trainscope.logformat import tags as T

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args: str, stdout) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "analyzers", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )


@pytest.fixture()
def logdir(tmp_path):
    for r in range(3):
        write_events(
            tmp_path / f"run{r}", scalar_events({s: {T.TRAIN_LOSS: 2.0 - s / 100} for s in range(100)})
        )
    return tmp_path


@pytest.mark.parametrize("fmt", [[], ["--json"]], ids=["text", "json"])
def test_a_reader_that_stops_reading_gets_no_traceback(logdir, fmt):
    """``| head``: the pipe's far end is closed before the first byte (deterministic EPIPE)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = _cli(str(logdir), *fmt, stdout=write_end)
    finally:
        os.close(write_end)
    assert done.stderr == "" and done.returncode == 0


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (ENOSPC on every write)")
def test_a_full_disk_is_one_line_and_status_2(logdir):
    with open("/dev/full", "w") as full:
        done = _cli(str(logdir), stdout=full)
    assert done.returncode == 2
    assert done.stderr == "python -m analyzers: error: cannot write the report (No space left on device)\n"


def test_one_line_per_bad_file(logdir):
    """A text file named like an event file, an event file of zeros, one cut mid-record: each
    one line (they were two, up to 19 and one), the good runs read in full."""
    text = logdir / "text" / "events.out.tfevents.1700000000.host.1.0"
    zeros = logdir / "zeros" / "events.out.tfevents.1700000000.host.1.0"
    cut = logdir / "cut" / "events.out.tfevents.1700000000.host.1.0"
    for path in (text, zeros, cut):
        path.parent.mkdir()
    text.write_text("a log line, not a TFRecord\n" * 100)
    with open(zeros, "wb") as fh:
        fh.truncate(150 * 1024 * 1024)
    cut.write_bytes(b"".join(scalar_events({s: {"loss": 1.0} for s in range(10)}))[:-5])
    old = os.path.getmtime(cut) - S.STALE_TAIL_SECONDS - 60
    for path in (text, zeros, cut):
        os.utime(path, (old, old))
    done = _cli(str(logdir), stdout=subprocess.PIPE)
    problems = [line for line in done.stdout.splitlines() if "problem:" in line]
    assert len(problems) == 3, problems
    assert {p.split(": ", 2)[1] for p in problems} == {str(text), str(zeros), str(cut)}
    assert "summary: 6 run(s)" in done.stdout and "3 reading problem(s)" in done.stdout
    assert done.stdout.count("last step 99") == 3
