"""A vectorized decoder for events that share one byte layout.

A training loop writes the same Event over and over: the same tags in the same
order, only the step, the wall time and the numbers change. Events of equal length
are stacked into a ``uint8`` matrix; one of them is parsed by hand to learn where
its numbers sit (a `Template`), and every row that equals it in all other bytes has,
by construction, the same structure, so its numbers are read for all rows at once
with numpy. This is what makes reading 10-100x faster than decoding events one at a
time; anything the template does not recognise (histograms, text, odd encodings) is
left to the generic protobuf decoder, so no value is ever lost.

Why "equal in all other bytes" is enough: protobuf's wire format is a sequence of
(key, payload) pairs; keys and length prefixes are among the compared bytes, the
numbers are fixed-width (fixed32/fixed64), and the step's varint is checked to end
where the template's does. A parser would therefore walk every matching row through
the same positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tensorboard.compat.proto import summary_pb2, tensor_shape_pb2

from trainscope.analyzers.reading import protowire as W
from trainscope.analyzers.reading import tensors as TN

SCALARS_PLUGIN = "scalars"

# Event fields (tensorboard/compat/proto/event.proto).
_EV_WALL_TIME, _EV_STEP, _EV_SUMMARY = 1, 2, 5
# Summary.Value fields (summary.proto).
_V_TAG, _V_SIMPLE, _V_NODE_NAME, _V_TENSOR, _V_METADATA = 1, 2, 7, 8, 9
# TensorProto fields (tensor.proto).
_T_DTYPE, _T_SHAPE, _T_VERSION, _T_CONTENT, _T_FLOAT, _T_DOUBLE = 1, 2, 3, 4, 5, 6

_CONTENT_DTYPES = {TN.DT_FLOAT: "<f4", TN.DT_DOUBLE: "<f8", TN.DT_HALF: "<f2"}


class _Unsupported(Exception):
    """The event is not a plain scalar event: leave it to the generic decoder."""


@dataclass(frozen=True)
class Slot:
    """Where one scalar's bytes sit in the event, and how to read them."""

    tag: str
    offset: int
    dtype: str  # "<f4", "<f8" or "<f2"


@dataclass(frozen=True)
class Template:
    length: int
    wall_offset: int | None  # None: wall_time absent (0.0)
    step_offset: int | None  # None: step absent (0)
    step_len: int
    slots: tuple[Slot, ...]
    row0: np.ndarray  # the event the template was learnt from
    value_columns: np.ndarray  # byte columns that may differ between matching rows
    plugins: tuple[tuple[str, str], ...]  # (tag, plugin) pairs named in the event's metadata


def _scalar_shape(b: bytes, start: int, end: int) -> bool:
    shape = tensor_shape_pb2.TensorShapeProto.FromString(b[start:end])
    return not shape.unknown_rank and all(d.size == 1 for d in shape.dim)


def _tensor_slot(b: bytes, start: int, end: int) -> tuple[int, str]:
    """Offset and dtype of the single number inside a one-element TensorProto."""
    dtype = None
    found: list[tuple[int, int, int]] = []  # (field, payload start, payload end)
    seen: set[int] = set()
    for number, wire, s, e in W.fields(b, start, end):
        if number in seen:
            raise _Unsupported
        seen.add(number)
        if number == _T_DTYPE and wire == W.VARINT:
            dtype, _ = W.varint(b, s, e)
        elif number == _T_SHAPE and wire == W.LEN:
            if not _scalar_shape(b, s, e):
                raise _Unsupported
        elif number == _T_VERSION and wire == W.VARINT:
            pass
        elif number in (_T_CONTENT, _T_FLOAT, _T_DOUBLE) and wire in (W.LEN, W.I32, W.I64):
            found.append((number, s, e))
        else:
            raise _Unsupported
    if len(found) != 1:
        raise _Unsupported
    number, s, e = found[0]
    if number == _T_FLOAT and dtype == TN.DT_FLOAT and e - s == 4:
        return s, "<f4"
    if number == _T_DOUBLE and dtype == TN.DT_DOUBLE and e - s == 8:
        return s, "<f8"
    if number == _T_CONTENT and dtype in _CONTENT_DTYPES:
        kind = _CONTENT_DTYPES[dtype]
        if e - s == np.dtype(kind).itemsize:
            return s, kind
    raise _Unsupported


def _value_slot(b: bytes, start: int, end: int, plugin_of: dict[str, str]) -> tuple[Slot, str]:
    tag = None
    plugin = ""
    offset = kind = None
    tensor = None
    seen: set[int] = set()
    for number, wire, s, e in W.fields(b, start, end):
        if number in seen:
            raise _Unsupported
        seen.add(number)
        if number == _V_TAG and wire == W.LEN:
            tag = b[s:e].decode("utf-8")
        elif number == _V_SIMPLE and wire == W.I32:
            offset, kind = s, "<f4"
        elif number == _V_NODE_NAME and wire == W.LEN:
            pass
        elif number == _V_METADATA and wire == W.LEN:
            plugin = summary_pb2.SummaryMetadata.FromString(b[s:e]).plugin_data.plugin_name
        elif number == _V_TENSOR and wire == W.LEN:
            tensor = (s, e)
        else:
            raise _Unsupported
    if tag is None or (offset is None) == (tensor is None):
        raise _Unsupported
    if tensor is not None:
        # A one-element numeric tensor is a scalar unless a plugin says otherwise
        # (TF2 writers may name the plugin only in a tag's first event).
        if (plugin or plugin_of.get(tag, SCALARS_PLUGIN)) != SCALARS_PLUGIN:
            raise _Unsupported
        offset, kind = _tensor_slot(b, *tensor)
    return Slot(tag, offset, kind), plugin


def build_template(event: bytes, plugin_of: dict[str, str]) -> Template | None:
    """Learn the layout of `event`; None when it is not a pure scalar event."""
    try:
        return _build(event, plugin_of)
    except Exception:  # noqa: BLE001 - malformed or unusual bytes: the generic decoder judges them
        return None


def _build(b: bytes, plugin_of: dict[str, str]) -> Template | None:
    n = len(b)
    wall = step = None
    step_len = 0
    summary = None
    seen: set[int] = set()
    for number, wire, s, e in W.fields(b, 0, n):
        if number in seen:
            raise _Unsupported
        seen.add(number)
        if number == _EV_WALL_TIME and wire == W.I64:
            wall = s
        elif number == _EV_STEP and wire == W.VARINT:
            step, step_len = s, e - s
        elif number == _EV_SUMMARY and wire == W.LEN:
            summary = (s, e)
        else:
            raise _Unsupported
    if summary is None:
        return None
    slots: list[Slot] = []
    plugins: list[tuple[str, str]] = []
    for number, wire, s, e in W.fields(b, *summary):
        if number != 1 or wire != W.LEN:
            raise _Unsupported
        slot, plugin = _value_slot(b, s, e, plugin_of)
        slots.append(slot)
        if plugin:
            plugins.append((slot.tag, plugin))
    if not slots:
        return None
    columns: list[int] = []
    if wall is not None:
        columns.extend(range(wall, wall + 8))
    if step is not None:
        columns.extend(range(step, step + step_len))
    for slot in slots:
        columns.extend(range(slot.offset, slot.offset + np.dtype(slot.dtype).itemsize))
    return Template(
        length=n,
        wall_offset=wall,
        step_offset=step,
        step_len=step_len,
        slots=tuple(slots),
        row0=np.frombuffer(b, dtype=np.uint8),
        value_columns=np.asarray(columns, dtype=np.intp),
        plugins=tuple(plugins),
    )


@dataclass
class Extracted:
    rows: np.ndarray  # indices (into the matrix) of the rows that matched
    steps: np.ndarray  # int64
    wall_times: np.ndarray  # float64
    values: list[tuple[str, np.ndarray]]  # (tag, float64 values), one per slot


def matching_rows(template: Template, matrix: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows of `matrix` (N x length) laid out like the template."""
    diff = np.bitwise_xor(matrix, template.row0)
    diff[:, template.value_columns] = 0
    match = ~diff.any(axis=1)
    if template.step_offset is not None and template.step_len:
        s, k = template.step_offset, template.step_len
        step_bytes = matrix[:, s : s + k]
        match &= (step_bytes[:, -1] & 0x80) == 0
        if k > 1:
            match &= ((step_bytes[:, :-1] & 0x80) != 0).all(axis=1)
    return match


def extract(template: Template, matrix: np.ndarray) -> Extracted:
    """Read the numbers of the rows of `matrix` that match `template`."""
    rows = np.flatnonzero(matching_rows(template, matrix))
    # One gather of every value column (a pass over the rows), then cheap slices of it.
    compact = (
        matrix[rows[:, None], template.value_columns] if rows.size else matrix[:0, template.value_columns]
    )
    where = {int(c): i for i, c in enumerate(template.value_columns)}

    def column(offset: int, dtype: str) -> np.ndarray:
        start = where[offset]
        width = np.dtype(dtype).itemsize
        return np.ascontiguousarray(compact[:, start : start + width]).view(dtype)[:, 0].astype(np.float64)

    count = rows.size
    walls = np.zeros(count) if template.wall_offset is None else column(template.wall_offset, "<f8")
    steps = np.zeros(count, dtype=np.uint64)
    if template.step_offset is not None:
        first = where[template.step_offset]
        for i in range(template.step_len):
            byte = compact[:, first + i].astype(np.uint64) & np.uint64(0x7F)
            steps |= byte << np.uint64(7 * i)
    values = [(slot.tag, column(slot.offset, slot.dtype)) for slot in template.slots]
    return Extracted(rows, steps.view(np.int64), walls, values)
