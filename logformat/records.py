"""TFRecord framing of TensorBoard event files, with a C CRC-32C.

Each record is ``uint64 length | uint32 masked_crc(length) | data | uint32 masked_crc(data)``
(little endian). TensorBoard's own fallback writer computes the CRC in pure Python,
which caps it at tens of thousands of records a second; `google_crc32c` does it in C.

`RecordReader` is incremental: it remembers its offset, returns only whole records,
leaves a truncated tail for the next call (a run still being written), and skips a
corrupt record with a message naming the file and offset.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

import google_crc32c
import numpy as np

_HEADER = struct.Struct("<QI")
_FOOTER = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8
# A length beyond this is taken as corruption, not as a record to wait for.
MAX_RECORD_BYTES = 256 * 1024 * 1024
# Verified 12-byte headers remembered per parse: records of one layout share a header.
_HEADER_CACHE_SIZE = 4096
# Bytes scanned per numpy pass when looking for the next valid header after corruption.
_RESYNC_WINDOW = 1 << 20


def masked_crc32c(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def encode_record(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return b"".join((header, _FOOTER.pack(masked_crc32c(header)), data, _FOOTER.pack(masked_crc32c(data))))


@dataclass
class ReadResult:
    records: list[bytes]
    problems: list[str] = field(default_factory=list)
    # File offset of each record's header, parallel to `records` (for messages).
    offsets: list[int] = field(default_factory=list)
    # True when `max_bytes` stopped the read before the end of the file: call again.
    more: bool = False
    # (start, end) file offsets of runs of zero bytes where a record should start: a
    # preallocated or crash-padded file. Skipped at memory speed; not in `problems`, so
    # that a reader can merge the runs of successive reads into one message.
    zero_runs: list[tuple[int, int]] = field(default_factory=list)


class RecordReader:
    """Reads the records of one event file from where the previous call stopped."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.offset = 0
        self._size_seen = -1

    @property
    def size_seen(self) -> int:
        """File size at the last read that reached the end of the file (-1 before any)."""
        return self._size_seen

    def read_new(self, verify_data_crc: bool = True, max_bytes: int | None = None) -> ReadResult:
        """Return the whole records appended since the last call.

        A torn record at the end stays unread until more bytes arrive. A record whose
        header CRC fails is skipped by scanning forward for the next valid header, so
        one bad byte loses one record, not the rest of the file. `max_bytes` bounds the
        memory of one call (a record longer than it is still read whole); `more` then
        says whether the file holds further bytes.
        """
        try:
            size = os.path.getsize(self.path)
        except OSError as exc:
            return ReadResult([], [f"{self.path}: cannot stat ({exc.strerror})"])
        if size == self._size_seen:
            return ReadResult([])
        if size < self.offset:  # file was replaced or truncated: start over
            self.offset = 0
        want = size - self.offset if max_bytes is None else min(max_bytes, size - self.offset)
        try:
            with open(self.path, "rb") as fh:
                while True:
                    fh.seek(self.offset)
                    buf = fh.read(want)
                    records, offsets, problems, consumed, zero_runs = _parse(
                        buf, self.offset, self.path, verify_data_crc
                    )
                    at_end = self.offset + len(buf) >= size
                    if records or problems or zero_runs or at_end:
                        break
                    # Not one whole record fits in the window: widen it to the record.
                    want = max(2 * want, _needed(buf), 16)
        except OSError as exc:
            return ReadResult([], [f"{self.path}: cannot read ({exc.strerror})"])
        self.offset += consumed
        if at_end:
            self._size_seen = size
        return ReadResult(records, problems, offsets, more=not at_end, zero_runs=zero_runs)


def _needed(buf: bytes) -> int:
    """Bytes the record starting at ``buf[0]`` occupies, from its length field."""
    if len(buf) < 8:
        return 16
    return 16 + struct.unpack_from("<Q", buf, 0)[0]


def _parse(
    buf: bytes, base: int, path: str, verify_data_crc: bool
) -> tuple[list[bytes], list[int], list[str], int, list[tuple[int, int]]]:
    """Split `buf` into records; returns ``(records, offsets, problems, bytes consumed, zero runs)``.

    The loop only walks the length fields (a header seen once is not re-verified:
    records of one layout share it); the data CRCs are then computed by a C `map`
    and compared with numpy, which halves the per-record cost of a Python loop.
    """
    problems: list[str] = []
    zero_runs: list[tuple[int, int]] = []
    starts: list[int] = []  # offset of each record's data
    ends: list[int] = []  # offset of each record's data CRC
    known: dict[tuple[int, int], int] = {}  # verified (length, crc) -> length
    unpack_header = _HEADER.unpack_from
    add_start, add_end = starts.append, ends.append
    pos = 0
    n = len(buf)
    while n - pos >= 12:
        header = unpack_header(buf, pos)
        length = known.get(header)
        if length is None:
            length, len_crc = header
            if masked_crc32c(buf[pos : pos + 8]) != len_crc or length > MAX_RECORD_BYTES:
                if length == 0 and len_crc == 0:  # twelve zero bytes: a zero-filled stretch
                    end = _zeros_end(buf, pos)
                    zero_runs.append((base + pos, base + end))
                    pos = _resync(buf, max(pos + 1, end - 11))
                    continue
                problems.append(
                    f"{path}: corrupt record header at offset {base + pos}; skipped to next record"
                )
                pos = _resync(buf, pos + 1)
                continue
            if len(known) < _HEADER_CACHE_SIZE:
                known[header] = length
        end = pos + 12 + length
        if end + 4 > n:
            break  # torn tail: wait for the writer
        add_start(pos + 12)
        add_end(end)
        pos = end + 4
    records = list(map(buf.__getitem__, map(slice, starts, ends)))
    offsets = np.asarray(starts, dtype=np.int64) + (base - 12)  # of each record's header
    if verify_data_crc and records:
        bad = _bad_data_crcs(buf, records, ends)
        if bad.size:
            for i in bad.tolist():
                problems.append(f"{path}: corrupt record data at offset {int(offsets[i])}; record skipped")
            keep = np.ones(len(records), dtype=bool)
            keep[bad] = False
            records = [r for r, k in zip(records, keep.tolist()) if k]
            offsets = offsets[keep]
    return records, offsets.tolist(), problems, pos, zero_runs


def _zeros_end(buf: bytes, start: int) -> int:
    """Offset of the first nonzero byte at or after `start` (len(buf) when none), found at
    memory speed: a window that is all zeros is passed over whole."""
    arr = np.frombuffer(buf, dtype=np.uint8)
    pos = start
    while pos < len(buf):
        window = arr[pos : pos + _RESYNC_WINDOW]
        if window.any():
            return pos + int(np.argmax(window != 0))
        pos += window.shape[0]
    return len(buf)


def _bad_data_crcs(buf: bytes, records: list[bytes], ends: list[int]) -> np.ndarray:
    """Indices of the records whose stored data CRC does not match their data."""
    crcs = np.fromiter(map(google_crc32c.value, records), dtype=np.uint64, count=len(records))
    masked = (((crcs >> np.uint64(15)) | (crcs << np.uint64(17))) + np.uint64(_MASK_DELTA)) & np.uint64(
        0xFFFFFFFF
    )
    arr = np.frombuffer(buf, dtype=np.uint8)
    at = np.asarray(ends, dtype=np.int64)
    stored = np.zeros(at.shape[0], dtype=np.uint64)
    for i in range(4):
        stored |= arr[at + i].astype(np.uint64) << np.uint64(8 * i)
    return np.flatnonzero(masked != stored)


def _crc_table() -> np.ndarray:
    poly = 0x82F63B78  # CRC-32C (Castagnoli), reflected
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ poly, table >> 1).astype(np.uint32)
    return table


_CRC_TABLE = _crc_table()


def _header_candidates(window: np.ndarray) -> np.ndarray:
    """Positions ``p`` in `window` whose 12 bytes form a valid record header.

    A length below 2**32 has four zero high bytes, which rules out almost every
    position of garbage at once; the masked CRC-32C of the few left is computed for all
    of them together with a lookup table, so a megabyte of garbage costs milliseconds
    instead of a Python loop per byte. Zeros are the opposite case (a preallocated or
    crash-padded tail): every position has zero high bytes, but twelve zero bytes are
    never a valid header (the masked CRC of eight zeros is not 0), so a header must
    start at most 11 bytes before a nonzero byte. Counting the nonzero bytes runs at
    memory speed; where they are few, only the positions near them are tried.
    """
    m = window.shape[0] - 11
    if m <= 0:
        return np.empty(0, dtype=np.int64)
    nonzero = int(np.count_nonzero(window))
    if nonzero == 0:
        return np.empty(0, dtype=np.int64)
    if nonzero * 12 < m:  # mostly zeros: try only the starts within reach of a nonzero byte
        near = np.flatnonzero(window)[:, None] - np.arange(12)
        cand = np.unique(near[(near >= 0) & (near < m)])
        cand = cand[(window[cand + 4] | window[cand + 5] | window[cand + 6] | window[cand + 7]) == 0]
    else:
        zero_high = (window[4 : 4 + m] == 0) & (window[5 : 5 + m] == 0) & (window[6 : 6 + m] == 0)
        zero_high &= window[7 : 7 + m] == 0
        cand = np.flatnonzero(zero_high)
    if cand.size == 0:
        return cand
    return cand[_header_crcs_match(window, cand)]


def _header_crcs_match(window: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """For each candidate start, whether the masked CRC-32C of its 8 length bytes is the
    stored one (one CRC attempt per candidate; the tests count them)."""
    crc = np.full(cand.size, 0xFFFFFFFF, dtype=np.uint32)
    for i in range(8):
        crc = _CRC_TABLE[(crc ^ window[cand + i]) & 0xFF] ^ (crc >> 8)
    crc ^= np.uint32(0xFFFFFFFF)
    masked = (((crc >> 15) | (crc << 17)) + np.uint32(_MASK_DELTA)).astype(np.uint32)
    stored = np.zeros(cand.size, dtype=np.uint32)
    for i in range(4):
        stored |= window[cand + 8 + i].astype(np.uint32) << np.uint32(8 * i)
    return masked == stored


def _resync(buf: bytes, start: int) -> int:
    """Offset of the next position whose 12 bytes form a valid record header."""
    n = len(buf)
    arr = np.frombuffer(buf, dtype=np.uint8)
    pos = start
    while pos <= n - 12:
        stop = min(n, pos + _RESYNC_WINDOW + 11)
        for cand in _header_candidates(arr[pos:stop]):
            p = pos + int(cand)
            if _HEADER.unpack_from(buf, p)[0] <= MAX_RECORD_BYTES:
                return p
        pos = stop - 11
    return max(start, n - 11)
