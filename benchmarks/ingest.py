"""Reading speed of the log-dir reader against TensorBoard's EventAccumulator.

Writes, into a temporary directory, a run of 10 scalar tags x `--steps` steps plus
two layers' histograms every 1,000 steps, in two layouts: one Event per step holding
all ten scalars (how the collector writes), and one Event per value (how
``SummaryWriter.add_scalar`` writes; ``--tensor`` adds its ``new_style=True`` tensor
variant). Each layout is read from scratch by this project's `LogDirReader` (three times,
median) and by EventAccumulator with ``size_guidance`` 0 (keep every point, once), in
one process, and the points are counted to check nothing was dropped. Then a 100-run log dir is refreshed
with no new data, which the dashboard does every few seconds. Last, a sharded model's
run (FSDP: every rank writes its part of each layer's squared gradient norm, which the
reader adds up) against the same run written whole by one rank: the first read, and a
live tick after 100 new steps. Last, an event file that ends in a zero-filled tail
(preallocated or crash-padded) against one ending in random bytes of the same size.

    python benchmarks/ingest.py [--steps 100000] [--tensor] [--runs 100] [--ranks 8 --layers 100]

Needs no torch; about a minute on 2 cores at the defaults.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2

from trainscope.analyzers.reading import LogDirReader
from trainscope.logformat import runjson as RJ
from trainscope.logformat import tags as T
from trainscope.logformat.events import EventFileWriter, Histogram, summary_record
from trainscope.logformat.records import encode_record

TAGS = (
    T.TRAIN_LOSS,
    T.TRAIN_ACC,
    T.LR,
    T.GRAD_GLOBAL_NORM,
    T.STEP_SECONDS,
    T.grad_norm_tag("features.0"),
    T.grad_norm_tag("features.2"),
    T.grad_norm_tag("classifier"),
    T.INPUT_MEAN,
    T.INPUT_STD,
)
LAYERS = ("features.0", "classifier")
HIST_EVERY = 1_000
REPEATS = 3
WRITE_BATCH = 10_000


def _value(step: int, i: int) -> float:
    return math.exp(-step / 30_000) * (1 + i) + 0.01 * math.sin(step + i)


def _histograms(step: int) -> dict[str, Histogram]:
    if step % HIST_EVERY:
        return {}
    rng = np.random.default_rng(step)
    out = {}
    for layer in LAYERS:
        counts, edges = np.histogram(rng.normal(size=2_000), bins=30)
        out[T.hist_weight_tag(layer)] = Histogram(
            float(edges[0]),
            float(edges[-1]),
            2_000.0,
            0.0,
            2_000.0,
            list(edges[1:]),
            list(counts.astype(float)),
        )
    return out


def write_per_step(run_dir: str, steps: int) -> int:
    """One Event per step with all scalars (the collector's layout). Returns events written."""
    writer = EventFileWriter(run_dir)
    batch = []
    for step in range(steps):
        scalars = {tag: _value(step, i) for i, tag in enumerate(TAGS)}
        batch.append(summary_record(step, 1.7e9 + step, scalars, _histograms(step)))
        if len(batch) == WRITE_BATCH:
            writer.write(batch)
            batch = []
    writer.write(batch)
    writer.close()
    return steps + 1


def write_per_value(run_dir: str, steps: int, tensor: bool) -> int:
    """One Event per value, as SummaryWriter.add_scalar writes (optionally new_style tensors)."""
    writer = EventFileWriter(run_dir)
    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
    )
    batch = []
    events = 1
    for step in range(steps):
        for i, tag in enumerate(TAGS):
            if tensor:
                value = summary_pb2.Summary.Value(
                    tag=tag,
                    tensor=tensor_pb2.TensorProto(dtype=1, float_val=[_value(step, i)]),
                    metadata=metadata,
                )
            else:
                value = summary_pb2.Summary.Value(tag=tag, simple_value=_value(step, i))
            event = event_pb2.Event(
                step=step, wall_time=1.7e9 + step, summary=summary_pb2.Summary(value=[value])
            )
            batch.append(encode_record(event.SerializeToString()))
        hists = _histograms(step)
        if hists:
            batch.append(summary_record(step, 1.7e9 + step, {}, hists))
            events += 1
        if len(batch) >= WRITE_BATCH:
            writer.write(batch)
            batch = []
    writer.write(batch)
    writer.close()
    return events + steps * len(TAGS)


def read_ours(run_dir: str) -> tuple[float, int]:
    start = time.perf_counter()
    snapshot = LogDirReader(run_dir).refresh()
    seconds = time.perf_counter() - start
    run = snapshot.runs["."]
    points = sum(len(s) for s in run.scalars.values()) + sum(len(s) for s in run.unmapped.values())
    return seconds, points


def read_event_accumulator(run_dir: str) -> tuple[float, int]:
    from tensorboard.backend.event_processing import event_accumulator as ea

    guidance = {ea.SCALARS: 0, ea.HISTOGRAMS: 0, ea.TENSORS: 0, ea.COMPRESSED_HISTOGRAMS: 0}
    start = time.perf_counter()
    acc = ea.EventAccumulator(run_dir, size_guidance=guidance)
    acc.Reload()
    tags = acc.Tags()
    points = sum(len(acc.Scalars(t)) for t in tags[ea.SCALARS])
    points += sum(len(acc.Tensors(t)) for t in tags[ea.TENSORS])
    return time.perf_counter() - start, points


def bench_layout(root: str, name: str, steps: int) -> None:
    run_dir = os.path.join(root, name)
    t0 = time.perf_counter()
    if name == "per-step":
        events = write_per_step(run_dir, steps)
    else:
        events = write_per_value(run_dir, steps, tensor=name == "per-value-tensor")
    size = sum(os.path.getsize(os.path.join(run_dir, f)) for f in os.listdir(run_dir))
    print(
        f"\n{name}: {events:,} events, {steps * len(TAGS):,} scalar points, {size / 2**20:.1f} MiB "
        f"(written in {time.perf_counter() - t0:.1f} s)"
    )
    # Ours is read REPEATS times (median; a busy machine shows in the spread), the far
    # slower EventAccumulator once.
    ours = [read_ours(run_dir) for _ in range(REPEATS)]
    ours_s, ours_points = statistics.median(t for t, _ in ours), ours[0][1]
    ea_s, ea_points = read_event_accumulator(run_dir)
    expected = steps * len(TAGS)
    for label, seconds, points in (
        ("LogDirReader", ours_s, ours_points),
        ("EventAccumulator", ea_s, ea_points),
    ):
        note = "" if points == expected else f"  (!! {points:,} points, expected {expected:,})"
        print(
            f"  {label:<17} {seconds:7.2f} s  {events / seconds:>11,.0f} events/s  "
            f"{points / seconds:>12,.0f} points/s{note}"
        )
    spread = ", ".join(f"{t:.2f}" for t, _ in ours)
    print(f"  ratio             {ea_s / ours_s:7.1f}x faster  (LogDirReader runs: {spread} s)")


def bench_refresh(root: str, runs: int, steps: int = 200) -> None:
    logdir = os.path.join(root, "many")
    for r in range(runs):
        run_dir = os.path.join(logdir, f"exp{r // 10}", f"run{r:03d}")
        write_per_step(run_dir, steps)
        RJ.write_run_json(run_dir, {RJ.K_SCHEMA: RJ.SCHEMA_VERSION, RJ.K_STATUS: RJ.STATUS_RUNNING})
    # Refresh timings assume directories older than discovery.RACY_SECONDS (as in a
    # dashboard polling every few seconds); age them instead of sleeping.
    old = time.time() - 60
    for dirpath, _, _ in os.walk(logdir):
        os.utime(dirpath, (old, old))
    reader = LogDirReader(logdir)
    t0 = time.perf_counter()
    snapshot = reader.refresh()
    cold = time.perf_counter() - t0
    times = []
    for _ in range(30):
        t0 = time.perf_counter()
        again = reader.refresh()
        times.append(time.perf_counter() - t0)
        assert not again.changed
    target = os.path.join(logdir, "exp0", "run000")
    event_file = next(os.path.join(target, f) for f in os.listdir(target) if "tfevents" in f)
    with open(event_file, "ab") as fh:
        fh.write(summary_record(steps, 1.7e9 + steps, {T.TRAIN_LOSS: 0.5}))
    t0 = time.perf_counter()
    after = reader.refresh()
    append = time.perf_counter() - t0
    print(
        f"\nrefresh of a {len(snapshot.runs)}-run log dir: cold {cold * 1000:.0f} ms; no new data: "
        f"median {statistics.median(times) * 1000:.2f} ms, max {max(times) * 1000:.2f} ms; "
        f"one run appended: {append * 1000:.2f} ms ({sorted(after.changed)} rebuilt)"
    )


def write_every_8th(
    run_dir: str, suffix: str, steps: int, start: int, values: Callable[[int], dict[str, float]]
) -> int:
    """One Event per 8th step (a sharded run's statistics steps past its start) into a
    new file; returns the points written."""
    writer = EventFileWriter(run_dir, suffix)
    records, points = [], 0
    for step in range(start, start + steps, 8):
        scalars = values(step)
        records.append(summary_record(step, 1.7e9 + step, scalars))
        points += len(scalars)
    writer.write(records)
    writer.close()
    return points


def write_sharded(run_dir: str, steps: int, ranks: int, layers: int, start: int = 0) -> int:
    """Every rank its part of each layer's squared gradient norm; rank 0 the loss too."""

    def parts(rank: int, step: int) -> dict[str, float]:
        squares = {
            T.shard_tag(rank, T.ShardSquares.GRAD, f"layers.{i}"): _value(step, i) ** 2 / ranks
            for i in range(layers)
        }
        squares[T.shard_tag(rank, T.ShardSquares.GRAD)] = sum(squares.values())
        return squares | ({T.TRAIN_LOSS: _value(step, 0)} if rank == 0 else {})

    return sum(
        write_every_8th(run_dir, f".rank{rank}", steps, start, lambda step, rank=rank: parts(rank, step))
        for rank in range(ranks)
    )


def write_whole(run_dir: str, steps: int, layers: int, start: int = 0) -> int:
    """The same run written whole by one rank."""

    def norms(step: int) -> dict[str, float]:
        layer_norms = {T.grad_norm_tag(f"layers.{i}"): _value(step, i) for i in range(layers)}
        whole = math.sqrt(sum(v * v for v in layer_norms.values()))
        return layer_norms | {T.GRAD_GLOBAL_NORM: whole, T.TRAIN_LOSS: _value(step, 0)}

    return write_every_8th(run_dir, "", steps, start, norms)


def bench_sharded(root: str, steps: int, ranks: int, layers: int) -> None:
    timings: dict[str, tuple[float, float]] = {}
    for kind in ("sharded", "whole"):
        run_dir = os.path.join(root, kind, "run")
        os.makedirs(run_dir)
        world = ranks if kind == "sharded" else 1
        RJ.write_run_json(
            run_dir, {RJ.K_SCHEMA: RJ.SCHEMA_VERSION, RJ.K_STATUS: RJ.STATUS_RUNNING, RJ.K_WORLD_SIZE: world}
        )
        points = (
            write_sharded(run_dir, steps, ranks, layers)
            if kind == "sharded"
            else write_whole(run_dir, steps, layers)
        )
        reader = LogDirReader(os.path.dirname(run_dir))
        t0 = time.perf_counter()
        first = reader.refresh().runs["run"]
        cold = time.perf_counter() - t0
        assert len(first.layers(T.GRAD_NORM_PREFIX)) == layers
        if kind == "sharded":
            write_sharded(run_dir, 100, ranks, layers, start=steps)
        else:
            write_whole(run_dir, 100, layers, start=steps)
        t0 = time.perf_counter()
        after = reader.refresh().runs["run"]
        tick = time.perf_counter() - t0
        assert int(after.scalar(T.grad_norm_tag("layers.0")).steps[-1]) >= steps
        timings[kind] = (cold, tick)
        print(
            f"\n{kind} run, {ranks if kind == 'sharded' else 1} rank(s), {layers} layers, {steps:,} steps "
            f"(statistics every 8th): {points:,} points; first read {cold:.2f} s, a tick of 100 new steps {tick * 1000:.0f} ms"
        )
    (cold_s, tick_s), (cold_w, tick_w) = timings["sharded"], timings["whole"]
    print(f"  sharded / whole: first read {cold_s / cold_w:.1f}x, live tick {tick_s / tick_w:.1f}x")


def _tail_file(run_dir: str, tail: str, mib: int) -> str:
    """A run of 100 steps whose event file then ends in `mib` MiB of zeros (a sparse hole,
    as a preallocated or crash-padded file reads) or of random bytes."""
    os.makedirs(run_dir)
    writer = EventFileWriter(run_dir, ".tail")
    writer.write([summary_record(s, 1.7e9 + s, {T.TRAIN_LOSS: 1.0 / (s + 1)}) for s in range(100)])
    writer.close()
    path = writer.path
    with open(path, "r+b") as fh:
        if tail == "zeros":
            fh.truncate(os.path.getsize(path) + mib * 2**20)
        else:
            fh.seek(0, os.SEEK_END)
            rng = np.random.default_rng(0)
            for _ in range(mib):
                fh.write(rng.integers(0, 256, 2**20, dtype=np.uint8).tobytes())
    return path


def bench_zero_tail(root: str, mib: int, repeats: int = 5) -> None:
    """A zero-filled tail against random bytes of the same size, read from scratch in turn
    (interleaved, so a busy machine slows both alike); median and range of each."""
    dirs = {tail: os.path.join(root, f"tail-{tail}", "run") for tail in ("zeros", "random")}
    for tail, run_dir in dirs.items():
        _tail_file(run_dir, tail, mib)
    times: dict[str, list[float]] = {tail: [] for tail in dirs}
    for _ in range(repeats):
        for tail, run_dir in dirs.items():
            t0 = time.perf_counter()
            snapshot = LogDirReader(os.path.dirname(run_dir)).refresh()
            times[tail].append(time.perf_counter() - t0)
            assert len(snapshot.runs["run"].scalars[T.TRAIN_LOSS]) == 100
    med = {tail: statistics.median(t) for tail, t in times.items()}
    print(
        f"\nan event file ending in {mib} MiB of zeros (preallocated, crash-padded) vs of random bytes, "
        f"read from scratch, {repeats} interleaved reads each:"
    )
    for tail, t in times.items():
        print(
            f"  {tail:<7} median {med[tail]:6.2f} s  ({min(t):.2f}-{max(t):.2f} s)  "
            f"{mib / med[tail]:7,.0f} MiB/s"
        )
    print(f"  zeros take {med['zeros'] / med['random']:.2f}x the time of random bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--tensor", action="store_true", help="also the new_style tensor layout")
    parser.add_argument("--runs", type=int, default=100, help="runs in the refresh benchmark")
    parser.add_argument("--ranks", type=int, default=8, help="ranks of the sharded run")
    parser.add_argument("--layers", type=int, default=100, help="layers of the sharded run")
    parser.add_argument("--tail-mib", type=int, default=256, help="MiB of the zero-filled and random tails")
    parser.add_argument("--only-tail", action="store_true", help="only the zero-tail comparison")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trainscope-ingest-") as root:
        if args.only_tail:
            bench_zero_tail(root, args.tail_mib)
            return
        layouts = ["per-step", "per-value"] + (["per-value-tensor"] if args.tensor else [])
        for name in layouts:
            bench_layout(root, name, args.steps)
        bench_refresh(root, args.runs)
        bench_sharded(root, args.steps, args.ranks, args.layers)
        bench_zero_tail(root, args.tail_mib)


if __name__ == "__main__":
    main()
