"""The flusher: pending packets, their one device-to-host copy, and the writer thread.

Every `flush_steps` steps or `flush_seconds`, every pending device value is copied
to the host in one copy and handed to the writer thread (collectors/writer.py), so
the steps between flushes never wait for the device. Before the copy it checks the
values kept by reference (the loss, the outputs kept for the accuracy): one changed
in place or overwritten since is dropped and reported once, never written wrong.
"""

from __future__ import annotations

import os
import time

import torch

from trainscope.collectors.config import CollectorConfig
from trainscope.collectors.deferred_accuracy import DeferredAccuracy
from trainscope.collectors.guard import BORROWING, KEEPING_OUTPUTS, ErrorGuard
from trainscope.collectors.packets import Batch, Packet, Spec, spec_tag
from trainscope.collectors.writer import WriterThread
from trainscope.logformat import tags as T


class Flusher:
    def __init__(
        self,
        log_dir: str | os.PathLike[str],
        suffix: str,
        config: CollectorConfig,
        guard: ErrorGuard,
        accuracy: DeferredAccuracy,
        device: torch.device,
    ) -> None:
        self.pending: list[Packet] = []
        self._config = config
        self._guard = guard
        self._accuracy = accuracy
        self._device = device
        self._last_flush = time.monotonic()
        self.writer = WriterThread(log_dir, suffix, guard, config.noise_ema, config.noise_window)

    def due(self) -> bool:
        return (
            len(self.pending) >= self._config.flush_steps
            or time.monotonic() - self._last_flush >= self._config.flush_seconds
        )

    def flush(self, wait: bool = False) -> None:
        """Move pending values to the host in one copy and hand them to the writer
        thread; with `wait`, return once they are on disk."""
        self._last_flush = time.monotonic()
        if self.pending:
            self._guard.call("flush", self._flush)
        if wait:
            self.writer.wait()

    def close(self) -> None:
        self.flush()
        self.writer.close()

    def resolve_accuracy(self) -> None:
        """Read the kept outputs now (they hold much memory): their counts join their packets."""
        self.report_lost_outputs(self._guard.call(KEEPING_OUTPUTS, self._accuracy.resolve))

    def check_borrowed(self, packet: Packet) -> list[int]:
        """Where `packet`'s borrowed values were lost (changed in place, or overwritten);
        the first such is reported (once), and from then on such values are copied."""
        lost = packet.lost_borrowed()
        if lost and self._guard.enabled(BORROWING):
            index, why = lost[0]
            tag = packet.items[index][0].tag  # type: ignore[union-attr]  # Packet.borrow takes ScalarSpecs
            message = (
                f"{tag} of step {packet.step} was {why} after it was recorded; that value is"
                " dropped, and such values are copied from now on"
            )
            self._guard.report(BORROWING, RuntimeError(message))
        return [index for index, _ in lost]

    def report_lost_outputs(self, lost: list[tuple[Packet, str]] | None) -> None:
        if lost and self._guard.enabled(KEEPING_OUTPUTS):
            packet, why = lost[0]
            message = f"the outputs or targets given to step() at step {packet.step} were {why} before they were read"
            consequence = (
                f"That step has no {T.TRAIN_ACC}; it is measured at once, on statistics steps, from now on"
            )
            self._guard.report(KEEPING_OUTPUTS, RuntimeError(message), consequence)

    def _flush(self) -> None:
        packets, self.pending = self.pending, []
        self.resolve_accuracy()
        tensors: list[torch.Tensor] = []
        for packet in packets:
            tensors += packet.take_tensors(self.check_borrowed(packet))
        if not tensors:
            self.writer.submit(Batch(packets, None))
            return
        with torch.no_grad():
            try:
                # Four calls for any number of tensors (cat promotes mixed dtypes; after
                # cat along dim 0, reshape gives each tensor's values in order), where a
                # reshape and a cast per tensor would be four kernels each.
                flat = torch.cat(torch.atleast_1d(tensors)).reshape(-1).float()
            except RuntimeError:  # tensors on several devices, of unlike shapes, or one that cannot be read
                flat = self._gather_one_by_one(packets, tensors)
        if flat is None:
            self.writer.submit(Batch(packets, None))
        elif flat.device.type == "cuda":
            host = torch.empty(flat.shape, dtype=torch.float32, pin_memory=True)
            host.copy_(flat, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record()
            self.writer.submit(Batch(packets, host, ready))
        else:
            self.writer.submit(Batch(packets, flat.cpu()))

    def _gather_one_by_one(self, packets: list[Packet], tensors: list[torch.Tensor]) -> torch.Tensor | None:
        """The flush's slow path: each value moved to one device on its own, so that a
        value that cannot be read (memory taken back, a tensor without data) costs only
        itself: it is left out, with its spec, and reported once per tag, and flushing
        the rest goes on."""
        gathered: list[torch.Tensor] = []
        values = iter(tensors)
        for packet in packets:
            kept = []
            for spec in packet.specs:
                value = next(values)
                try:
                    gathered.append(
                        value.reshape(-1).to(device=self._device, dtype=torch.float32, non_blocking=True)
                    )
                    kept.append(spec)
                except RuntimeError as exc:
                    self._report_unreadable(spec, packet.step, exc)
            packet.specs = kept
        return torch.cat(gathered) if gathered else None

    def _report_unreadable(self, spec: Spec, step: int, exc: RuntimeError) -> None:
        tag = spec_tag(spec)
        part = f"reading {tag}"
        if self._guard.enabled(part):
            problem = RuntimeError(f"{tag} of step {step} could not be read at the flush ({exc})")
            self._guard.report(
                part, problem, consequence="Such values are left out; everything else is written"
            )
