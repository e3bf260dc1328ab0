"""The whole lines appended to a line-based log since the last read.

The metric-CSV and MLflow readers follow files that their writers append to while a
run trains: each poll reads from where the last one stopped, in bounded chunks, and
hands on whole lines only (the writer may be mid-line). This is that loop, once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO


def read_appended_lines(
    fh: BinaryIO,
    offset: int,
    feed: Callable[[bytes, int], None],
    chunk_bytes: int,
    max_line_bytes: int,
) -> tuple[int, bytes, int]:
    """Call ``feed(block, at)`` on each block of whole lines from `offset` on, `at` the block's offset.

    Returns the offset after the last whole line, the incomplete last line (left for the
    next read), and how many lines were dropped for running past `max_line_bytes`
    without a newline: garbage that must not hold the reader forever.
    """
    fh.seek(offset)
    pending = b""
    dropped = 0
    while chunk := fh.read(chunk_bytes):
        data = pending + chunk
        end = data.rfind(b"\n") + 1
        feed(data[:end], offset)
        offset += end
        pending = data[end:]
        if len(pending) > max_line_bytes:
            offset += len(pending)
            dropped += 1
            pending = b""
    return offset, pending, dropped
