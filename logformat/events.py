"""Building and naming TensorBoard event files.

All of one step's scalars (and histograms) go into one Event: a Summary may hold
many values and every TensorBoard reader accepts it, at a fraction of the cost of
one Event per value.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import socket
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tensorboard.compat.proto import event_pb2, summary_pb2

from trainscope.logformat.records import encode_record

FILE_VERSION = "brain.Event:2"
EVENT_FILE_MARKER = "tfevents"


@dataclass(frozen=True)
class Histogram:
    """A histogram in TensorBoard's legacy layout: ``bucket_limit`` are right edges."""

    min: float
    max: float
    num: float
    sum: float
    sum_squares: float
    bucket_limit: Sequence[float]
    bucket: Sequence[float]


def event_file_name(suffix: str = "") -> str:
    """``events.out.tfevents.<time>.<host>.<pid>.<n><suffix>`` as TensorBoard names them."""
    return f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.0{suffix}"


def is_event_file(name: str) -> bool:
    return EVENT_FILE_MARKER in name and not name.endswith((".tmp", ".lock"))


def file_version_record(wall_time: float) -> bytes:
    return encode_record(event_pb2.Event(wall_time=wall_time, file_version=FILE_VERSION).SerializeToString())


def summary_record(
    step: int,
    wall_time: float,
    scalars: Mapping[str, float],
    histograms: Mapping[str, Histogram] | None = None,
) -> bytes:
    """One Event holding every scalar (as ``simple_value``) and histogram of a step.

    The scalars are encoded by hand, in the Event's protobuf wire format: building
    protobuf messages took ~10 µs for a step of 13 scalars (this takes ~2.5), held by
    the collector's writer thread, and so the GIL, once per training step. Histograms
    (rare) go through protobuf; serialized Summaries concatenate into one.
    """
    prefixes, layout = _scalar_layout(tuple(scalars))
    values = scalars.values()
    try:
        summary = layout.pack(*itertools.chain.from_iterable(zip(prefixes, values)))
    except OverflowError:  # beyond float32's range: inf, as protobuf stores it
        values = [math.copysign(math.inf, v) if abs(v) > _FLOAT32_MAX else v for v in values]
        summary = layout.pack(*itertools.chain.from_iterable(zip(prefixes, values)))
    if histograms:
        summary += _histogram_summary(histograms)
    head = _WALL_TIME.pack(0x09, wall_time) + (b"\x10" + _varint(step & _UINT64) if step else b"")
    return encode_record(head + b"\x2a" + _varint(len(summary)) + summary)


_WALL_TIME = struct.Struct("<Bd")  # Event.wall_time: field 1, 64-bit
_UINT64 = (1 << 64) - 1  # a negative int64 is a 10-byte varint of its two's complement
_FLOAT32_MAX = 3.4028234663852886e38


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


@functools.lru_cache(maxsize=256)
def _scalar_layout(tags: tuple[str, ...]) -> tuple[tuple[bytes, ...], struct.Struct]:
    """Per tag, the bytes of a Summary.value (field 1) holding a Value with that tag
    (field 1) up to its simple_value (field 2, 32-bit); and one Struct that packs them
    all with their floats. A run's steps share a few tag sets, so this is cached."""
    prefixes = []
    for tag in tags:
        name = tag.encode()
        value = b"\x0a" + _varint(len(name)) + name + b"\x15"
        prefixes.append(b"\x0a" + _varint(len(value) + 4) + value)
    return tuple(prefixes), struct.Struct("<" + "".join(f"{len(p)}sf" for p in prefixes))


def _histogram_summary(histograms: Mapping[str, Histogram]) -> bytes:
    values = [
        summary_pb2.Summary.Value(
            tag=tag,
            histo=summary_pb2.HistogramProto(
                min=h.min,
                max=h.max,
                num=h.num,
                sum=h.sum,
                sum_squares=h.sum_squares,
                bucket_limit=list(h.bucket_limit),
                bucket=list(h.bucket),
            ),
        )
        for tag, h in histograms.items()
    ]
    return summary_pb2.Summary(value=values).SerializeToString()


class EventFileWriter:
    """Appends records to one event file; not thread-safe (one writer thread owns it).

    Unbuffered, straight to the file descriptor, so that a write that fails (a full
    disk) is all or nothing: what it wrote of itself is cut off again, no torn record
    is left before the next try, and nothing waits in a buffer to fail later."""

    def __init__(self, log_dir: str | os.PathLike[str], suffix: str = "") -> None:
        os.makedirs(log_dir, exist_ok=True)
        self.path = os.path.join(os.fspath(log_dir), event_file_name(suffix))
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        # The file's first record; on a full disk it goes with the first write that succeeds.
        self._header: list[bytes] = [file_version_record(time.time())]
        try:
            self.write([])
        except OSError:
            pass

    def write(self, records: Sequence[bytes]) -> None:
        """Append `records`, all of them or (raising the OSError) none."""
        assert self._fd is not None, "written after close()"
        start = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            write_all(self._fd, b"".join([*self._header, *records]))
            self._header = []
        except OSError:
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                pass  # the reader resyncs past a torn record; the error above is what counts
            raise

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def write_all(fd: int, data: bytes) -> None:
    """`os.write` until all of `data` is written (a write may take only part of it)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
