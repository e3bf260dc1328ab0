"""`summary_record` encodes scalars by hand: the bytes must parse, with protobuf and with
TensorBoard's own reader, to exactly the Event protobuf would have built."""

from __future__ import annotations

import math

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.proto import event_pb2, summary_pb2

from trainscope.logformat.events import EventFileWriter, Histogram, summary_record
from trainscope.logformat.records import RecordReader, encode_record

SCALARS = {
    "train/loss": 2.302585,
    "train/acc": 0.0,  # proto3 leaves zeros out, but a oneof member is always written
    "grad/norm/features.0": -1.5e-12,
    "grad/global_norm": math.inf,
    "x/nan": math.nan,
    "overflow": 1e39,  # beyond float32: inf, as protobuf stores it
    "underflow": -1e39,
    "tags/ünïcödé/層": 7,
    "t" * 200: 0.5,  # a tag longer than 127 bytes: two-byte length
}
HISTOGRAM = Histogram(
    min=-1.0, max=2.0, num=3.0, sum=1.5, sum_squares=5.0, bucket_limit=[0.0, 2.0], bucket=[1.0, 2.0]
)


def parse(record: bytes) -> event_pb2.Event:
    event = event_pb2.Event()
    event.ParseFromString(record[12:-4])  # after the length and its CRC, before the data CRC
    return event


def protobuf_event(step: int, wall_time: float, scalars: dict, histograms: dict) -> event_pb2.Event:
    values = [summary_pb2.Summary.Value(tag=tag, simple_value=v) for tag, v in scalars.items()]
    values += [
        summary_pb2.Summary.Value(
            tag=tag,
            histo=summary_pb2.HistogramProto(
                min=h.min,
                max=h.max,
                num=h.num,
                sum=h.sum,
                sum_squares=h.sum_squares,
                bucket_limit=h.bucket_limit,
                bucket=h.bucket,
            ),
        )
        for tag, h in histograms.items()
    ]
    return event_pb2.Event(step=step, wall_time=wall_time, summary=summary_pb2.Summary(value=values))


@pytest.mark.parametrize("step", [0, 1, 127, 128, 300, 2**40, -5])
@pytest.mark.parametrize("histograms", [{}, {"hist/weight/0": HISTOGRAM}], ids=["scalars", "with-histogram"])
def test_hand_encoding_equals_protobuf(step, histograms):
    record = summary_record(step, 1.7e9 + 0.25, SCALARS, histograms)
    theirs = protobuf_event(step, 1.7e9 + 0.25, SCALARS, histograms)
    assert record == encode_record(theirs.SerializeToString())  # byte for byte (NaN != NaN as values)
    values = {v.tag: v for v in parse(record).summary.value}
    assert all(values[tag].WhichOneof("value") == "simple_value" for tag in SCALARS)
    assert values["overflow"].simple_value == math.inf and values["underflow"].simple_value == -math.inf


def test_an_empty_step_and_tensorboard_reads_the_file(tmp_path):
    writer = EventFileWriter(tmp_path)
    writer.write(
        [summary_record(s, 1.7e9 + s, {"train/loss": 1.0 / (s + 1), "opt/lr": 0.1}) for s in range(50)]
    )
    writer.write([summary_record(50, 1.7e9 + 50, {}, {"hist/grad/0": HISTOGRAM})])
    writer.close()
    read = RecordReader(writer.path).read_new(verify_data_crc=True)
    assert len(read.records) == 52 and read.problems == []  # with the file version record; CRCs hold
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    losses = acc.Scalars("train/loss")
    assert [e.step for e in losses] == list(range(50))
    assert [e.value for e in losses] == pytest.approx([1.0 / (s + 1) for s in range(50)], rel=1e-6)
    assert acc.Histograms("hist/grad/0")[0].histogram_value.bucket == [1.0, 2.0]
