"""The line-follow loop the metric-CSV and MLflow readers share: whole lines only, in chunks, garbage bounded."""

from __future__ import annotations

import io

from trainscope.analyzers.reading.appended import read_appended_lines


def _read(data: bytes, offset: int = 0, chunk: int = 4, max_line: int = 100):
    blocks: list[tuple[bytes, int]] = []
    end, pending, dropped = read_appended_lines(
        io.BytesIO(data), offset, lambda block, at: blocks.append((block, at)), chunk, max_line
    )
    return b"".join(b for b, _ in blocks), [at for _, at in blocks], end, pending, dropped


def test_whole_lines_across_chunks_and_the_last_line_left_for_the_next_read():
    lines, ats, end, pending, dropped = _read(b"a,1\nbb,22\ncc,3")
    assert lines == b"a,1\nbb,22\n" and pending == b"cc,3" and end == 10 and dropped == 0
    assert ats[0] == 0 and ats == sorted(ats)  # each block says where it starts (a BOM only at 0)


def test_a_read_goes_on_from_where_the_last_one_stopped():
    lines, ats, end, pending, _ = _read(b"a,1\nbb,22\ncc,3\n", offset=10)
    assert lines == b"cc,3\n" and ats[0] == 10 and end == 15 and pending == b""


def test_a_line_longer_than_the_bound_is_dropped_not_kept_waiting():
    lines, _, end, pending, dropped = _read(b"x" * 50 + b"\nok\n", max_line=10)
    assert dropped >= 1 and b"ok\n" in lines and b"x" * 11 not in lines
    assert end == 54 and pending == b""
