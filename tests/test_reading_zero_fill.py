"""Zero-filled event files (a preallocated file, or a tail padded with zeros by a crash) and
files that are no event files at all: read at memory speed, one line each (issue 22)."""

from __future__ import annotations

import os

import pytest
from reading_helpers import scalar_events, write_events

from trainscope.analyzers.reading import LogDirReader, read_logdir
from trainscope.analyzers.reading import sources as S
from trainscope.logformat import records as R
from trainscope.logformat import tags as T

# Large enough that a CRC attempt per zero byte (what the resync did) is tens of millions of
# attempts; cheap, since the zeros are a sparse hole in the file.
ZERO_TAIL = 96 * 1024 * 1024


def _stale(path) -> None:
    """Make the file look long finished, so that a waiting tail would be reported."""
    old = os.path.getmtime(path) - S.STALE_TAIL_SECONDS - 60
    os.utime(path, (old, old))


def _pad(path, zeros: int) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) + zeros)  # a hole: reads as zeros, costs no disk


def _losses(n: int, start: int = 0) -> list[bytes]:
    return scalar_events({s: {T.TRAIN_LOSS: 1.0 / (s + 1)} for s in range(start, start + n)})


@pytest.fixture()
def crc_attempts(monkeypatch):
    """How many header CRCs the resync computes (one per candidate position)."""
    count = [0]
    real = R._header_crcs_match

    def counting(window, cand):
        count[0] += int(cand.size)
        return real(window, cand)

    monkeypatch.setattr(R, "_header_crcs_match", counting)
    return count


def test_a_zero_filled_tail_costs_no_crc_per_byte_and_one_line(tmp_path, crc_attempts):
    path = write_events(tmp_path / "run", _losses(50))
    size = os.path.getsize(path)
    _pad(path, ZERO_TAIL)
    _stale(path)
    run = read_logdir(tmp_path).runs["run"]
    assert len(run.scalars[T.TRAIN_LOSS]) == 50
    assert crc_attempts[0] < 100, crc_attempts[0]  # was one per zero byte: ~10^8
    assert run.problems == (
        f"{path}: {ZERO_TAIL:,} zero bytes from offset {size:,} (a preallocated or crash-padded file); skipped",
    )


def test_a_sparse_scatter_of_bytes_in_zeros_is_read_at_memory_speed_too(tmp_path, crc_attempts):
    """A nonzero byte every 500 KB defeats a test of "is this window all zeros"; only the
    positions within 11 bytes of a nonzero byte can start a header."""
    path = write_events(tmp_path / "run", _losses(5))
    _pad(path, 16 * 1024 * 1024)
    with open(path, "r+b") as fh:
        for at in range(1024, 16 * 1024 * 1024, 500_000):
            fh.seek(at)
            fh.write(b"\x07")
    run = read_logdir(tmp_path).runs["run"]
    assert len(run.scalars[T.TRAIN_LOSS]) == 5
    assert crc_attempts[0] < 40 * 12, crc_attempts[0]


def test_records_after_a_zero_stretch_are_read(tmp_path):
    """A writer that resumed after the padding: nothing after the zeros is lost."""
    path = write_events(tmp_path / "run", _losses(10))
    _pad(path, 3 * 1024 * 1024 + 5)
    write_events(tmp_path / "run", _losses(10, start=10), header=False)
    run = read_logdir(tmp_path).runs["run"]
    assert run.scalars[T.TRAIN_LOSS].steps.tolist() == list(range(20))
    assert len(run.problems) == 1 and "3,145,733 zero bytes" in run.problems[0]


def test_a_file_of_zeros_read_in_many_chunks_and_polls_is_one_line(tmp_path, monkeypatch):
    """Read in 1 MB chunks (64 MB in use) and over several refreshes as the zeros grow: the
    stretches of each read are one stretch, one line (it was one line per chunk, up to 19)."""
    monkeypatch.setattr(S, "CHUNK_BYTES", 1024 * 1024)
    path = tmp_path / "run" / "events.out.tfevents.1700000000.host.1.0"
    path.parent.mkdir()
    path.write_bytes(b"")
    reader = LogDirReader(tmp_path)
    for _ in range(3):
        _pad(path, 5 * 1024 * 1024 + 3)
        _stale(path)
        run = reader.refresh().runs["run"]
        assert len(run.problems) == 1, run.problems
    assert (
        run.problems[0] == f"{path}: {os.path.getsize(path):,} zero bytes from offset 0 "
        f"(a preallocated or crash-padded file); skipped"
    )


def test_a_file_that_is_not_an_event_file_is_one_line_even_when_stale(tmp_path):
    """It was two contradictory lines: 'ignored' and 'truncated ... waiting for the rest'."""
    path = tmp_path / "run" / "events.out.tfevents.1700000000.host.1.0"
    path.parent.mkdir()
    path.write_text("this is a text file, not TFRecords\n" * 50)
    _stale(path)
    reader = LogDirReader(tmp_path)
    assert reader.refresh().runs["run"].problems == (
        f"{path}: not a TensorBoard event file (no valid record framing); ignored",
    )
    with open(path, "a") as fh:  # still growing: still the one line, and not read again
        fh.write("more text\n" * 10)
    _stale(path)
    assert len(reader.refresh().runs["run"].problems) == 1
