"""The writer thread: turns batches of packets into TensorBoard events, off the training thread.

The training thread only queues a `Batch`. Waiting for an asynchronous device copy,
protobuf encoding, CRCs and file I/O all happen here, one Event per step.
"""

from __future__ import annotations

import math
import os
import queue
import threading

import numpy as np

from trainscope.collectors.grad_stats import MISSING
from trainscope.collectors.guard import ErrorGuard
from trainscope.collectors.histograms import unpack_histogram
from trainscope.collectors.noise_scale import SmallBatchSquares
from trainscope.collectors.packets import (
    Batch,
    FractionSpec,
    HistogramSpec,
    LayerNormSpec,
    NoiseSpec,
    Packet,
    ScalarSpec,
    ShardNoiseSpec,
    ShardSquaresSpec,
    UpdateSpec,
)
from trainscope.logformat import tags as T
from trainscope.logformat.events import EventFileWriter, Histogram, summary_record
from trainscope.logformat.noise import NoiseScaleEMA, two_batch_estimate

_STOP = object()
# Batches waiting to be written before `submit` blocks: back-pressure, so a writer that
# falls behind (a slow disk) bounds memory instead of queueing without end.
MAX_QUEUED_BATCHES = 64
# A write that fails (a full disk, a quota) is tried again after this many seconds,
# doubling up to the last: space freed by a cleanup job or an operator is used within
# half a minute, and a disk that stays full costs one failed write per half minute.
FIRST_RETRY_SECONDS = 0.5
LAST_RETRY_SECONDS = 30.0
# Encoded events kept in memory while the file cannot be written; past this the oldest
# are dropped (a step's event is ~1 KB: about 64,000 steps, most of a day of a fast run).
MAX_BACKLOG_BYTES = 64 << 20
# The ErrorGuard part that reports, once, a write that failed; it never switches
# writing off: every later batch is still tried.
DISK = "writing the event file"


class WriterThread:
    def __init__(
        self,
        log_dir: str | os.PathLike[str],
        suffix: str,
        guard: ErrorGuard,
        noise_ema: float,
        noise_window: int,
    ) -> None:
        self._file = EventFileWriter(log_dir, suffix)
        self._guard = guard
        self._noise = NoiseScaleEMA(noise_ema)
        self._small_squares = SmallBatchSquares(noise_window)
        self._queue: queue.Queue[object] = queue.Queue(maxsize=MAX_QUEUED_BATCHES)
        # Encoded events that a failed write left, oldest first, and their size; tried
        # again before anything newer, so the file keeps step order.
        self._backlog: list[bytes] = []
        self._backlog_bytes = 0
        self._retry_in = FIRST_RETRY_SECONDS
        self.events_dropped = 0  # past MAX_BACKLOG_BYTES while the file could not be written
        self.events_written = 0
        self._thread = threading.Thread(target=self._run, name="trainscope-writer", daemon=True)
        self._thread.start()

    @property
    def path(self) -> str:
        return self._file.path

    def submit(self, batch: Batch) -> None:
        self._queue.put(batch)

    def wait(self) -> None:
        """Block until every submitted batch is written."""
        if self._thread.is_alive():
            self._queue.join()

    def close(self, timeout: float = 60.0) -> None:
        """Write everything queued, then stop."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)
        self._file.close()

    def _run(self) -> None:
        while True:
            try:  # while a backlog waits, wake up to try it again
                batch = self._queue.get(timeout=self._retry_in if self._backlog else None)
            except queue.Empty:
                self._append([])
                continue
            try:
                if batch is _STOP:
                    self._append([])  # a last try
                    return
                self._guard.call("writer", self._write, batch)
            finally:
                self._queue.task_done()

    def _append(self, records: list[bytes]) -> None:
        """Write the backlog and `records`; where that fails, keep them all for the next
        try (after a backoff), dropping the oldest past MAX_BACKLOG_BYTES."""
        self._backlog += records
        self._backlog_bytes += sum(len(r) for r in records)
        if not self._backlog:
            return
        try:
            self._file.write(self._backlog)
        except OSError as exc:
            if self._guard.enabled(DISK):
                consequence = (
                    f"Events are kept in memory (up to {MAX_BACKLOG_BYTES >> 20} MB) and written once it can be,"
                    f" tried again every {FIRST_RETRY_SECONDS:g}-{LAST_RETRY_SECONDS:g} s"
                )
                self._guard.report(DISK, exc, consequence=consequence)
            self._retry_in = min(2 * self._retry_in, LAST_RETRY_SECONDS)
            while self._backlog_bytes > MAX_BACKLOG_BYTES and len(self._backlog) > 1:
                self._backlog_bytes -= len(self._backlog.pop(0))
                self.events_dropped += 1
            return
        self.events_written += len(self._backlog)
        self._backlog, self._backlog_bytes = [], 0
        self._retry_in = FIRST_RETRY_SECONDS

    def _write(self, batch: Batch) -> None:
        assert isinstance(batch, Batch)
        if batch.ready is not None:
            batch.ready.synchronize()  # blocks this thread only
        values = batch.values.numpy() if batch.values is not None else np.empty(0, np.float32)
        records = []
        offset = 0
        for packet in batch.packets:
            scalars, histograms, offset = self._decode(packet, values, offset)
            records.append(summary_record(packet.step, packet.wall_time, scalars, histograms))
        self._append(records)

    def _decode(
        self, packet: Packet, values: np.ndarray, offset: int
    ) -> tuple[dict[str, float], dict[str, Histogram], int]:
        scalars = dict(packet.host)
        histograms: dict[str, Histogram] = {}
        for spec in packet.specs:
            chunk = values[offset : offset + spec.size]
            offset += spec.size
            if isinstance(spec, ScalarSpec):
                value = float(chunk[0])
                if not (spec.optional and value == MISSING):
                    scalars[spec.tag] = value
            elif isinstance(spec, LayerNormSpec):
                total, layers = spec.fold.norms(chunk)
                if spec.global_tag is not None:  # the norm before clipping wins, if step() was given it
                    scalars.setdefault(spec.global_tag, total)
                if spec.noise_sample:
                    self._small_squares.add(packet.step, total * total)
                _put_layers(scalars, spec.tags, layers)
            elif isinstance(spec, FractionSpec):
                if chunk[1] > 0:  # a batch with no valid label has no accuracy, not 0
                    scalars[spec.tag] = float(chunk[0]) / float(chunk[1])
            elif isinstance(spec, UpdateSpec):
                ratios, weights = spec.fold.update_ratios(chunk)
                _put_layers(scalars, spec.ratio_tags, ratios)
                _put_layers(scalars, spec.weight_tags, weights)
            elif isinstance(spec, ShardSquaresSpec):
                _put_shard_squares(scalars, spec, chunk)
            elif isinstance(spec, ShardNoiseSpec):
                big, b_small, b_big = spec.tags
                scalars[big], scalars[b_small], scalars[b_big] = float(chunk[0]), spec.b_small, spec.b_big
            elif isinstance(spec, HistogramSpec):
                histograms[spec.tag] = unpack_histogram(chunk, spec.share)
            elif isinstance(spec, NoiseSpec):
                small_sq = self._small_squares.mean_since(spec.first_step)
                if small_sq is not None:
                    trace, g2 = two_batch_estimate(small_sq, float(chunk[0]), spec.b_small, spec.b_big)
                    scale = self._noise.update(trace, g2)
                    if math.isfinite(scale):
                        scalars[T.GRAD_NOISE_SCALE] = scale
        return scalars, histograms, offset


def _put_shard_squares(scalars: dict[str, float], spec: ShardSquaresSpec, values: np.ndarray) -> None:
    n = spec.fold.size
    for i, tags in enumerate(spec.runs):
        run = values[i * n : (i + 1) * n]
        squares = spec.fold.layer_squares(run)
        squares[spec.fold.empty] = MISSING
        _put_layers(scalars, tags, squares)
        if i == 0 and spec.total_tag is not None:
            scalars[spec.total_tag] = float(spec.fold.tensor_squares(run).sum())


def _put_layers(scalars: dict[str, float], tags: tuple[str, ...], values: np.ndarray) -> None:
    for tag, value in zip(tags, values.tolist()):
        if value != MISSING:
            scalars[tag] = value
