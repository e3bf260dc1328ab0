"""Decoding the records of one event file into scalar and histogram points.

Records are grouped by length; large groups go through the vectorized `templates`
decoder, the rest (and whatever a template does not recognise) through protobuf's
upb decoder one event at a time. Points come out in record order, so "the latest
value of a step wins" means what it says.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError
from tensorboard.compat.proto import event_pb2

from trainscope.analyzers.reading import hf_args
from trainscope.analyzers.reading import templates as TP
from trainscope.analyzers.reading import tensors as TN

HISTOGRAMS_PLUGIN = "histograms"
HPARAMS_PLUGIN = "hparams"
TEXT_PLUGIN = "text"
# What a run logged that the tool reads but does not draw, in words, by TensorBoard plugin
# name (`Run.not_shown`); a plugin not named here is listed under its own name.
NOT_SHOWN_KINDS = {
    "images": "image",
    "image": "image",
    "audio": "audio",
    "text": "text",
    "pr_curves": "PR curve",
    "mesh": "mesh",
    "custom_scalars": "custom-scalar layout",
}
# The key under which a model graph written by ``add_graph`` is listed.
GRAPH_KEY = "(model graph)"
# A length group smaller than this is decoded event by event (a template costs more).
MIN_TEMPLATE_ROWS = 8
# Layouts tried per length group before the rest of the group goes the generic way.
MAX_TEMPLATES_PER_GROUP = 64


@dataclass
class HistogramPoint:
    step: int
    wall_time: float
    edges: np.ndarray
    counts: np.ndarray


@dataclass
class DecodedEvents:
    """What a batch of records held, per tag, in record order."""

    scalars: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    histograms: dict[str, list[HistogramPoint]] = field(default_factory=dict)
    hparams: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    not_shown: dict[str, str] = field(default_factory=dict)  # tag -> what it is (NOT_SHOWN_KINDS)
    events: int = 0  # Event records decoded
    points: int = 0  # scalar values decoded


class _Pieces:
    """Scalar points of one tag collected from several decoders, with record indices."""

    __slots__ = ("order", "steps", "values", "walls")

    def __init__(self) -> None:
        self.order: list[np.ndarray] = []
        self.steps: list[np.ndarray] = []
        self.values: list[np.ndarray] = []
        self.walls: list[np.ndarray] = []

    def add(self, order: np.ndarray, steps: np.ndarray, values: np.ndarray, walls: np.ndarray) -> None:
        self.order.append(order)
        self.steps.append(steps)
        self.values.append(values)
        self.walls.append(walls)

    def merged(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if len(self.order) == 1:
            order, steps, values, walls = self.order[0], self.steps[0], self.values[0], self.walls[0]
        else:
            order = np.concatenate(self.order)
            steps = np.concatenate(self.steps)
            values = np.concatenate(self.values)
            walls = np.concatenate(self.walls)
        if order.size > 1 and not bool(np.all(order[1:] >= order[:-1])):
            perm = np.argsort(order, kind="stable")
            steps, values, walls = steps[perm], values[perm], walls[perm]
        return steps, values, walls


class EventDecoder:
    """Decodes the records of one event file; remembers each tag's plugin between calls.

    TF2 writers may name a tag's plugin (``scalars``, ``histograms``) only in the
    tag's first event, so the plugin seen once applies to the tag's later tensors.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.plugin_of: dict[str, str] = {}

    def decode(self, records: Sequence[bytes], offsets: Sequence[int]) -> DecodedEvents:
        out = DecodedEvents()
        pieces: dict[str, _Pieces] = {}
        generic: list[int] = []
        n = len(records)
        if n:
            lengths = np.fromiter(map(len, records), dtype=np.int64, count=n)
            by_length = np.argsort(lengths, kind="stable")
            cuts = np.flatnonzero(np.diff(lengths[by_length])) + 1
            for group in np.split(by_length, cuts):
                if group.size < MIN_TEMPLATE_ROWS:
                    generic.extend(group.tolist())
                else:
                    generic.extend(self._templated(records, group, pieces))
        generic.sort()
        hist_points: dict[str, list[HistogramPoint]] = out.histograms
        scalar_lists: dict[str, tuple[list[int], list[int], list[float], list[float]]] = {}
        for i in generic:
            self._generic(
                records[i], i, offsets[i] if i < len(offsets) else None, scalar_lists, hist_points, out
            )
        for tag, (order, steps, values, walls) in scalar_lists.items():
            pieces.setdefault(tag, _Pieces()).add(
                np.asarray(order, dtype=np.int64),
                np.asarray(steps, dtype=np.int64),
                np.asarray(values, dtype=np.float64),
                np.asarray(walls, dtype=np.float64),
            )
        for tag, p in pieces.items():
            merged = p.merged()
            out.scalars[tag] = merged
            out.points += int(merged[0].shape[0])
        out.events = n
        return out

    # -- the vectorized path ------------------------------------------------------

    def _templated(
        self, records: Sequence[bytes], group: np.ndarray, pieces: dict[str, _Pieces]
    ) -> list[int]:
        """Decode what templates can in one length group; return the record indices left over."""
        length = len(records[int(group[0])])
        picked = (
            operator.itemgetter(*group.tolist())(records) if group.size > 1 else (records[int(group[0])],)
        )
        matrix = np.frombuffer(b"".join(picked), dtype=np.uint8)
        matrix = matrix.reshape(group.size, length)
        left = np.arange(group.size)
        leftover: list[int] = []
        for _ in range(MAX_TEMPLATES_PER_GROUP):
            if left.size < MIN_TEMPLATE_ROWS:
                break
            first = int(group[left[0]])
            template = TP.build_template(records[first], self.plugin_of)
            if template is None or not self._agrees(template, records[first]):
                leftover.append(first)
                left = left[1:]
                continue
            sub = matrix if left.size == group.size else matrix[left]
            got = TP.extract(template, sub)
            for tag, plugin in template.plugins:
                self.plugin_of[tag] = plugin
            order = group[left[got.rows]]
            for tag, values in got.values:
                pieces.setdefault(tag, _Pieces()).add(order, got.steps, values, got.wall_times)
            keep = np.ones(left.size, dtype=bool)
            keep[got.rows] = False
            left = left[keep]
        leftover.extend(group[left].tolist())
        return leftover

    def _agrees(self, template: TP.Template, record: bytes) -> bool:
        """The template reads its own event exactly as protobuf does (a guard against surprises)."""
        got = TP.extract(template, np.frombuffer(record, dtype=np.uint8).reshape(1, -1))
        if got.rows.size != 1:
            return False
        scalars: dict[str, tuple[list[int], list[int], list[float], list[float]]] = {}
        probe = DecodedEvents()
        saved = dict(self.plugin_of)
        self._generic(record, 0, None, scalars, {}, probe)
        self.plugin_of = saved
        by_tag: dict[str, list[float]] = {}
        for tag, values in got.values:
            by_tag.setdefault(tag, []).append(float(values[0]))
        if probe.problems or by_tag.keys() != scalars.keys():
            return False
        for tag, (_, steps, values, walls) in scalars.items():
            if not np.array_equal(by_tag[tag], values, equal_nan=True):
                return False
            if any(s != int(got.steps[0]) for s in steps):
                return False
            if not np.array_equal(walls, [float(got.wall_times[0])] * len(walls), equal_nan=True):
                return False
        return True

    # -- the generic path ---------------------------------------------------------

    def _generic(
        self,
        record: bytes,
        index: int,
        offset: int | None,
        scalars: dict[str, tuple[list[int], list[int], list[float], list[float]]],
        histograms: dict[str, list[HistogramPoint]],
        out: DecodedEvents,
    ) -> None:
        try:
            event = event_pb2.Event.FromString(record)
        except (DecodeError, ValueError) as exc:
            where = f"offset {offset}" if offset is not None else f"record {index}"
            out.problems.append(f"{self.path}: record at {where} is not a TensorBoard Event ({exc}); skipped")
            return
        what = event.WhichOneof("what")
        if what in ("graph_def", "meta_graph_def"):
            out.not_shown[GRAPH_KEY] = "graph"
        if what != "summary":
            return
        step, wall = event.step, event.wall_time
        for value in event.summary.value:
            tag = value.tag
            if value.HasField("metadata") and value.metadata.plugin_data.plugin_name:
                self.plugin_of[tag] = value.metadata.plugin_data.plugin_name
                if self.plugin_of[tag] == HPARAMS_PLUGIN:
                    out.hparams.update(_hparams(value))
                    continue
            kind = value.WhichOneof("value")
            if kind == "simple_value":
                _append(scalars, tag, index, step, value.simple_value, wall)
            elif kind == "histo":
                hist = TN.legacy_histogram(value.histo)
                if hist is not None:
                    histograms.setdefault(tag, []).append(HistogramPoint(step, wall, *hist))
            elif kind == "tensor":
                self._tensor(value, tag, index, step, wall, scalars, histograms, out)
            elif kind in ("image", "audio"):
                out.not_shown[tag] = kind

    def _tensor(self, value, tag, index, step, wall, scalars, histograms, out: DecodedEvents) -> None:
        plugin = self.plugin_of.get(tag, "")
        if plugin == TEXT_PLUGIN and tag == hf_args.TAG:  # the HF Trainer's arguments: hyperparameters
            out.hparams.update(hf_args.from_text_summary(value.tensor.string_val))
            return
        if plugin not in ("", TP.SCALARS_PLUGIN, HISTOGRAMS_PLUGIN):
            out.not_shown[tag] = NOT_SHOWN_KINDS.get(plugin, plugin)  # text, images, ...: listed, not read
            return
        array = TN.tensor_to_array(value.tensor)
        if array is None:
            return
        if plugin == HISTOGRAMS_PLUGIN:
            hist = TN.tensor_histogram(array)
            if hist is not None:
                histograms.setdefault(tag, []).append(HistogramPoint(step, wall, *hist))
        elif array.size == 1:
            _append(scalars, tag, index, step, float(array.reshape(-1)[0]), wall)


def _append(scalars, tag: str, index: int, step: int, value: float, wall: float) -> None:
    lists = scalars.get(tag)
    if lists is None:
        lists = scalars[tag] = ([], [], [], [])
    lists[0].append(index)
    lists[1].append(step)
    lists[2].append(value)
    lists[3].append(wall)


def _hparams(value) -> dict[str, Any]:
    """Hyperparameters of the hparams plugin's ``session_start_info`` (strings, numbers, bools)."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    try:
        data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
    except (DecodeError, ValueError):
        return {}
    if not data.HasField("session_start_info"):
        return {}
    result: dict[str, Any] = {}
    for name, v in data.session_start_info.hparams.items():
        kind = v.WhichOneof("kind")
        if kind in ("number_value", "string_value", "bool_value"):
            result[name] = getattr(v, kind)
    return result
