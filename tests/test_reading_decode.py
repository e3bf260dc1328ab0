"""Event decoding: the vectorized template path must agree with protobuf on every value."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from reading_helpers import HISTOGRAMS, k3_histogram, metadata, shape, simple, tensor_value
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2

from trainscope.analyzers.reading.eventdecode import EventDecoder
from trainscope.logformat.records import RecordReader

DT_FLOAT, DT_DOUBLE, DT_HALF, DT_STRING = 1, 2, 19, 7


def _event(step, values, wall=1.7e9) -> bytes:
    e = event_pb2.Event(summary=summary_pb2.Summary(value=values))
    if step is not None:
        e.step = step
    if wall is not None:
        e.wall_time = wall
    return e.SerializeToString()


def _reference(records: list[bytes]) -> dict[str, list[tuple[int, float, float]]]:
    """Decode with protobuf alone: tag -> [(step, value, wall)] in record order."""
    plugin_of: dict[str, str] = {}
    out: dict[str, list[tuple[int, float, float]]] = {}
    for rec in records:
        e = event_pb2.Event.FromString(rec)
        for v in e.summary.value:
            if v.metadata.plugin_data.plugin_name:
                plugin_of[v.tag] = v.metadata.plugin_data.plugin_name
            if v.WhichOneof("value") == "simple_value":
                x = v.simple_value
            elif v.WhichOneof("value") == "tensor" and plugin_of.get(v.tag, "scalars") == "scalars":
                t = v.tensor
                if t.tensor_content:
                    x = float(np.frombuffer(t.tensor_content, {1: "<f4", 2: "<f8", 19: "<f2"}[t.dtype])[0])
                elif t.float_val:
                    x = t.float_val[0]
                elif t.double_val:
                    x = t.double_val[0]
                else:
                    x = float(np.array(t.half_val[0], np.uint16).view(np.float16))
            else:
                continue
            out.setdefault(v.tag, []).append((e.step, x, e.wall_time))
    return out


def _decoded(records: list[bytes]) -> dict[str, list[tuple[int, float, float]]]:
    got = EventDecoder("test").decode(records, list(range(len(records))))
    assert not got.problems
    return {tag: list(zip(s.tolist(), v.tolist(), w.tolist())) for tag, (s, v, w) in got.scalars.items()}


def _same(a, b) -> bool:
    if a.keys() != b.keys():
        return False
    for tag in a:
        if len(a[tag]) != len(b[tag]):
            return False
        for (s1, v1, w1), (s2, v2, w2) in zip(a[tag], b[tag]):
            if s1 != s2 or w1 != w2 or not (v1 == v2 or (math.isnan(v1) and math.isnan(v2))):
                return False
    return True


SPECIAL = [0.0, -0.0, 1.0, -1.5, 3.4e38, 1e-45, math.nan, math.inf, -math.inf]


def _random_value(rng: random.Random, tag: str, kind: str) -> summary_pb2.Summary.Value:
    x = rng.choice(SPECIAL) if rng.random() < 0.2 else rng.uniform(-10, 10)
    if kind == "simple":
        return simple(tag, x)
    if kind == "float_val":
        return tensor_value(tag, tensor_pb2.TensorProto(dtype=DT_FLOAT, float_val=[x]))
    if kind == "double_val":
        return tensor_value(tag, tensor_pb2.TensorProto(dtype=DT_DOUBLE, double_val=[x]))
    if kind == "content_f4":
        content = np.array(x, "<f4").tobytes()
        return tensor_value(
            tag, tensor_pb2.TensorProto(dtype=DT_FLOAT, tensor_shape=shape(), tensor_content=content)
        )
    if kind == "content_f8":
        return tensor_value(
            tag, tensor_pb2.TensorProto(dtype=DT_DOUBLE, tensor_content=np.array(x, "<f8").tobytes())
        )
    if kind == "content_f2":
        return tensor_value(
            tag, tensor_pb2.TensorProto(dtype=DT_HALF, tensor_content=np.array(x, "<f2").tobytes())
        )
    assert kind == "half_val"
    bits = int(np.array(x, np.float16).view(np.uint16))
    return tensor_value(tag, tensor_pb2.TensorProto(dtype=DT_HALF, half_val=[bits]))


KINDS = ["simple", "float_val", "double_val", "content_f4", "content_f8", "content_f2", "half_val"]


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("seed", range(6))
def test_template_path_agrees_with_protobuf(seed):
    rng = random.Random(seed)
    tags = [f"t{i}/{'x' * rng.randint(0, 5)}" for i in range(rng.randint(1, 6))]
    kind_of = {t: rng.choice(KINDS) for t in tags}
    records = []
    step = rng.choice([0, 1, 120, 16_380, 2**40])
    for _ in range(400):
        step += rng.choice([1, 1, 1, -3, 0, 200])  # restarts, repeats, jumps over varint widths
        chosen = rng.sample(tags, rng.randint(1, len(tags))) if rng.random() < 0.3 else tags
        values = [_random_value(rng, t, kind_of[t]) for t in chosen]
        wall = None if rng.random() < 0.05 else 1.7e9 + rng.random()
        records.append(_event(max(step, 0) if rng.random() > 0.05 else None, values, wall))
    assert _same(_decoded(records), _reference(records))


def test_one_value_per_event_layout_uses_templates_and_keeps_every_point():
    records = [_event(s, [simple(f"tag{i}", s + i / 10)]) for s in range(300) for i in range(5)]
    got = _decoded(records)
    assert sorted(got) == [f"tag{i}" for i in range(5)]
    assert all(len(points) == 300 for points in got.values())
    assert got["tag3"][7] == (7, pytest.approx(7.3, rel=1e-6), 1.7e9)


def test_metadata_named_only_in_a_tags_first_event():
    """TF2 writers may give the plugin once; later tensors of the tag carry no metadata."""
    hist = k3_histogram(np.arange(100.0))
    first = tensor_pb2.TensorProto(dtype=DT_DOUBLE, tensor_shape=shape(10, 3), tensor_content=hist.tobytes())
    later = tensor_pb2.TensorProto(
        dtype=DT_DOUBLE, tensor_shape=shape(10, 3), tensor_content=(hist * 2).tobytes()
    )
    records = [_event(0, [tensor_value("w", first, plugin=HISTOGRAMS)])]
    records += [_event(s, [tensor_value("w", later, plugin=None)]) for s in range(1, 20)]
    got = EventDecoder("f").decode(records, [])
    assert [p.step for p in got.histograms["w"]] == list(range(20))
    np.testing.assert_array_equal(got.histograms["w"][1].counts, hist[:, 2] * 2)
    np.testing.assert_array_equal(got.histograms["w"][0].edges, np.concatenate(([hist[0, 0]], hist[:, 1])))


def test_legacy_histogram_is_converted_like_tensorboard():
    histo = summary_pb2.HistogramProto(
        min=-1.0,
        max=2.0,
        num=6,
        sum=1.0,
        sum_squares=5.0,
        bucket_limit=[-5.0, 0.0, 1.0, 2.5, 1.7e308],
        bucket=[0, 2, 3, 1, 0],
    )
    got = EventDecoder("f").decode([_event(5, [summary_pb2.Summary.Value(tag="h", histo=histo)])], [0])
    point = got.histograms["h"][0]
    np.testing.assert_array_equal(point.edges, [-1.0, 0.0, 1.0, 2.0])
    np.testing.assert_array_equal(point.counts, [2, 3, 1])


def test_non_numeric_summaries_are_ignored_and_hparams_are_kept():
    from tensorboard.plugins.hparams import plugin_data_pb2

    text = tensor_value(
        "args", tensor_pb2.TensorProto(dtype=DT_STRING, string_val=[b"<b>hi</b>"]), plugin="text"
    )
    info = plugin_data_pb2.HParamsPluginData(version=0)
    info.session_start_info.hparams["lr"].number_value = 0.1
    info.session_start_info.hparams["opt"].string_value = "sgd"
    hp = summary_pb2.Summary.Value(
        tag="_hparams_/session_start_info", metadata=metadata("hparams", info.SerializeToString())
    )
    got = EventDecoder("f").decode([_event(0, [text, hp, simple("loss", 1.0)])], [0])
    assert list(got.scalars) == ["loss"]
    assert got.hparams == {"lr": 0.1, "opt": "sgd"}


def test_record_that_is_not_an_event_is_reported_with_its_offset(tmp_path):
    from trainscope.logformat.records import encode_record

    path = tmp_path / "events.out.tfevents.1"
    path.write_bytes(encode_record(_event(1, [simple("a", 1.0)])) + encode_record(b"\xff\xff\xff\xff"))
    result = RecordReader(path).read_new()
    got = EventDecoder(str(path)).decode(result.records, result.offsets)
    assert got.scalars["a"][1].tolist() == [1.0]
    assert len(got.problems) == 1 and f"offset {result.offsets[1]}" in got.problems[0]
