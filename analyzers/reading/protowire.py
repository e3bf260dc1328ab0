"""The protobuf wire format, read in place: varints and the fields of a message.

Both fast readers decode protobuf bytes without building messages: the event-file
template learner (templates.py) and the W&B transaction log (wandb.py). They walk the
same wire format, so they share this one walker.
"""

from __future__ import annotations

from collections.abc import Iterator

VARINT, I64, LEN, I32 = 0, 1, 2, 5  # the wire types either reader meets


class WireError(ValueError):
    """Bytes that are not the protobuf message they should be."""


def varint(b: bytes, pos: int, end: int) -> tuple[int, int]:
    """The varint at `pos` and the position after it."""
    if pos < end and b[pos] < 0x80:  # one byte: nearly every key and length
        return b[pos], pos + 1
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise WireError("bad varint")
        c = b[pos]
        pos += 1
        result |= (c & 0x7F) << shift
        if not c & 0x80:
            return result, pos
        shift += 7


def field(b: bytes, pos: int, end: int) -> tuple[int, int, int, int]:
    """``(field number, wire type, payload start, payload end)`` of the field at `pos`
    (a varint's payload is the varint itself)."""
    key, pos = varint(b, pos, end)
    wire = key & 7
    if wire == LEN:
        length, start = varint(b, pos, end)
        stop = start + length
    elif wire == VARINT:
        start = pos
        _, stop = varint(b, pos, end)
    elif wire == I64:
        start, stop = pos, pos + 8
    elif wire == I32:
        start, stop = pos, pos + 4
    else:
        raise WireError(f"wire type {wire}")
    if stop > end:
        raise WireError("field runs past its message")
    return key >> 3, wire, start, stop


def fields(b: bytes, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """Yield ``(field number, wire type, payload start, payload end)`` of a message."""
    while pos < end:
        found = field(b, pos, end)
        pos = found[3]
        yield found


def signed(value: int, bits: int = 64) -> int:
    """A varint read as a two's-complement int of `bits` bits (int32/int64 fields)."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value
