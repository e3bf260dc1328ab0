"""Writing small event files by hand for the reading tests (no torch needed)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2

from trainscope.logformat import tags as T
from trainscope.logformat.events import file_version_record
from trainscope.logformat.records import encode_record

SCALARS = "scalars"
HISTOGRAMS = "histograms"


def metadata(plugin: str, content: bytes = b"") -> summary_pb2.SummaryMetadata:
    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin, content=content)
    )


def shape(*dims: int) -> tensor_shape_pb2.TensorShapeProto:
    return tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]
    )


def simple(tag: str, value: float) -> summary_pb2.Summary.Value:
    return summary_pb2.Summary.Value(tag=tag, simple_value=value)


def tensor_value(
    tag: str, tensor: tensor_pb2.TensorProto, plugin: str | None = SCALARS
) -> summary_pb2.Summary.Value:
    v = summary_pb2.Summary.Value(tag=tag, tensor=tensor)
    if plugin is not None:
        v.metadata.CopyFrom(metadata(plugin))
    return v


def event(step: int | None, values: Iterable[summary_pb2.Summary.Value], wall: float | None = 1.7e9) -> bytes:
    e = event_pb2.Event(summary=summary_pb2.Summary(value=list(values)))
    if step is not None:
        e.step = step
    if wall is not None:
        e.wall_time = wall
    return encode_record(e.SerializeToString())


def scalar_events(values_by_step: Mapping[int, Mapping[str, float]]) -> list[bytes]:
    """One Event per step holding all of that step's scalars (the collector's layout)."""
    return [
        event(step, [simple(t, v) for t, v in scalars.items()], wall=1.7e9 + step)
        for step, scalars in values_by_step.items()
    ]


def write_events(
    run_dir: str,
    records: Iterable[bytes],
    name: str = "events.out.tfevents.1700000000.host.1.0",
    header: bool = True,
) -> str:
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, name)
    with open(path, "ab") as fh:
        if header and fh.tell() == 0:
            fh.write(file_version_record(1.7e9))
        fh.write(b"".join(records))
    return path


def k3_histogram(values: np.ndarray, bins: int = 10) -> np.ndarray:
    counts, edges = np.histogram(values, bins=bins)
    return np.stack([edges[:-1], edges[1:], counts.astype(np.float64)], axis=1)


def write_good_run(logdir: str | os.PathLike[str]) -> None:
    """The run `good`: 10 steps of training loss, to sit beside a bad file."""
    write_events(os.path.join(logdir, "good"), scalar_events({s: {T.TRAIN_LOSS: 1.0} for s in range(10)}))


def good_is_intact(snapshot) -> None:
    """`write_good_run`'s run, read in full and with no problem, whatever stood beside it."""
    good = snapshot.runs["good"]
    assert len(good.scalars[T.TRAIN_LOSS]) == 10 and good.problems == ()
