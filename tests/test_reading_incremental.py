"""LogDirReader.refresh(): only new bytes, torn tails, corruption, new runs, speed."""

from __future__ import annotations

import os
import statistics
import threading
import time

import pytest
from reading_helpers import scalar_events, write_events

from trainscope.analyzers.reading import LogDirReader
from trainscope.analyzers.reading import sources as S
from trainscope.logformat import runjson as RJ
from trainscope.logformat import tags as T


def _losses(steps) -> dict:
    return {s: {T.TRAIN_LOSS: 1.0 / (s + 1), T.GRAD_GLOBAL_NORM: 0.5} for s in steps}


def test_refresh_reads_only_what_was_appended(tmp_path):
    path = write_events(tmp_path, scalar_events(_losses(range(100))))
    reader = LogDirReader(tmp_path)
    first = reader.refresh()
    assert first.points == 200 and first.changed == {"."}
    old = first.runs["."].scalars[T.TRAIN_LOSS]
    quiet = reader.refresh()
    assert quiet.points == 0 and quiet.changed == frozenset() and quiet.runs["."] is first.runs["."]
    with open(path, "ab") as fh:
        fh.write(b"".join(scalar_events(_losses(range(100, 130)))))
    after = reader.refresh()
    assert after.points == 60 and after.changed == {"."}
    loss = after.runs["."].scalars[T.TRAIN_LOSS]
    assert loss.steps.tolist() == list(range(130))
    # the earlier snapshot is untouched: snapshots are immutable
    assert len(old) == 100 and old.steps[-1] == 99 and not old.steps.flags.writeable


def test_truncated_tail_is_waited_for_then_completed(tmp_path, monkeypatch):
    records = scalar_events(_losses(range(10)))
    whole = b"".join(records)
    cut = len(whole) - len(records[-1]) // 2
    path = write_events(tmp_path, [whole[:cut]])
    reader = LogDirReader(tmp_path)
    run = reader.refresh().runs["."]
    assert len(run.scalars[T.TRAIN_LOSS]) == 9 and run.problems == ()
    # a writer that stopped mid-record for a while gets one clear line ...
    old = time.time() - S.STALE_TAIL_SECONDS - 5
    os.utime(path, (old, old))
    run = reader.refresh().runs["."]
    assert len(run.problems) == 1 and "not a whole record" in run.problems[0] and "waiting" in run.problems[0]
    # ... which goes away when the record is completed
    with open(path, "ab") as fh:
        fh.write(whole[cut:])
    run = reader.refresh().runs["."]
    assert run.scalars[T.TRAIN_LOSS].steps.tolist() == list(range(10)) and run.problems == ()


def test_corrupt_record_is_skipped_with_file_and_offset(tmp_path):
    path = write_events(tmp_path, scalar_events(_losses(range(5))))
    reader = LogDirReader(tmp_path)
    reader.refresh()
    offset = os.path.getsize(path)
    bad = bytearray(scalar_events(_losses([5]))[0])
    bad[20] ^= 0xFF  # inside the data: the record's CRC fails
    with open(path, "ab") as fh:
        fh.write(bytes(bad) + b"".join(scalar_events(_losses(range(6, 9)))))
    run = reader.refresh().runs["."]
    assert run.scalars[T.TRAIN_LOSS].steps.tolist() == [0, 1, 2, 3, 4, 6, 7, 8]
    assert run.problems == (f"{path}: corrupt record data at offset {offset}; record skipped",)


def test_new_runs_and_new_event_files_are_picked_up(tmp_path):
    write_events(tmp_path / "a", scalar_events(_losses(range(3))))
    reader = LogDirReader(tmp_path)
    assert list(reader.refresh().runs) == ["a"]
    write_events(tmp_path / "b" / "deep", scalar_events(_losses(range(4))))
    snap = reader.refresh()
    assert list(snap.runs) == ["a", "b/deep"] and snap.changed == {"b/deep"}
    write_events(
        tmp_path / "a", scalar_events(_losses(range(3, 6))), name="events.out.tfevents.1700009999.host.2.0"
    )
    snap = reader.refresh()
    assert snap.runs["a"].scalars[T.TRAIN_LOSS].steps.tolist() == list(range(6)) and snap.changed == {"a"}
    RJ.write_run_json(tmp_path / "b" / "deep", {RJ.K_STATUS: RJ.STATUS_RUNNING})
    assert reader.refresh().runs["b/deep"].source == "trainscope"


def test_a_removed_run_disappears(tmp_path):
    import shutil

    write_events(tmp_path / "a", scalar_events(_losses(range(3))))
    write_events(tmp_path / "b", scalar_events(_losses(range(3))))
    reader = LogDirReader(tmp_path)
    assert list(reader.refresh().runs) == ["a", "b"]
    shutil.rmtree(tmp_path / "b")
    snap = reader.refresh()
    assert list(snap.runs) == ["a"] and snap.changed == {"b"}


def _many_runs(root, n: int = 100) -> None:
    for r in range(n):
        run_dir = root / f"group{r // 10}" / f"run{r:03d}"
        write_events(run_dir, scalar_events(_losses(range(50))))
        RJ.write_run_json(run_dir, {RJ.K_STATUS: RJ.STATUS_RUNNING})
    old = time.time() - 60  # as a dashboard sees them: not modified within the last seconds
    for dirpath, _, _ in os.walk(root):
        os.utime(dirpath, (old, old))


def test_refresh_without_new_data_in_a_100_run_dir_is_fast(tmp_path):
    _many_runs(tmp_path)
    reader = LogDirReader(tmp_path)
    assert len(reader.refresh().runs) == 100
    times = []
    for _ in range(20):
        start = time.perf_counter()
        snap = reader.refresh()
        times.append(time.perf_counter() - start)
        assert snap.changed == frozenset()
    assert statistics.median(times) < 0.050, times


def test_concurrent_refreshes_are_serialised(tmp_path):
    _many_runs(tmp_path, 20)
    reader = LogDirReader(tmp_path)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(10):
                assert len(reader.refresh().runs) == 20
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@pytest.mark.parametrize("chunk", [300, 10_000])
def test_bounded_chunks_lose_nothing(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(S, "CHUNK_BYTES", chunk)
    write_events(tmp_path, scalar_events(_losses(range(500))))
    run = LogDirReader(tmp_path).refresh().runs["."]
    assert run.scalars[T.TRAIN_LOSS].steps.tolist() == list(range(500))


def test_symlinked_runs_are_followed_without_cycles(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    write_events(elsewhere / "run", scalar_events(_losses(range(3))))
    logdir = tmp_path / "logdir"
    logdir.mkdir()
    os.symlink(elsewhere / "run", logdir / "linked")
    os.symlink(logdir, logdir / "loop")  # a cycle back to the log dir
    runs = LogDirReader(logdir).refresh().runs
    assert list(runs) == ["linked"] and len(runs["linked"].scalars[T.TRAIN_LOSS]) == 3


def test_a_symlink_to_a_run_inside_the_log_dir_is_no_second_run(tmp_path):
    """W&B's wandb/latest-run, or a "best" link beside the runs: the target is read once."""
    write_events(tmp_path / "runs" / "a", scalar_events(_losses(range(3))))
    os.symlink(tmp_path / "runs" / "a", tmp_path / "runs" / "best")
    hidden = tmp_path / ".archive" / "old"
    write_events(hidden, scalar_events(_losses(range(2))))
    os.symlink(hidden, tmp_path / "old")  # the walk skips hidden directories: the link is the way in
    assert list(LogDirReader(tmp_path).refresh().runs) == ["old", "runs/a"]


def test_refresh_of_an_unchanged_log_dir_of_every_format_rebuilds_nothing(tmp_path):
    import shutil

    fixtures = os.path.join(os.path.dirname(__file__), "fixtures")
    for name in ("keras_csv", "plain_csv", "mlflow", "hf_eval_sets", "lightning"):
        shutil.copytree(os.path.join(fixtures, name), tmp_path / name)
    old = time.time() - 60
    for dirpath, _, _ in os.walk(tmp_path):
        os.utime(dirpath, (old, old))
    reader = LogDirReader(tmp_path)
    first = reader.refresh()
    assert len(first.runs) == 12
    again = reader.refresh()
    assert again.changed == frozenset() and all(again.runs[name] is run for name, run in first.runs.items())
