"""The step recorder: one step's packet, as its `StepPlan` says.

`step()` hands it the loss (kept by reference: on most steps the collector launches no
kernel at all; copied where CUDA graphs would overwrite it), the learning rates, the
step time, the norm before clipping if given, and the logits and labels, kept by
reference for the accuracy that the flush computes (`DeferredAccuracy`). What the
optimizer tap read joins the packet, and on sampled steps what the activation probe
and the batch showed. Every device value stays a tensor in the pending packet until
the flush. A quiet plan's step goes through the same code: the plan's flags are what
make it short.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from trainscope.collectors.activations import ActivationProbe
from trainscope.collectors.batch_signals import BatchSignals
from trainscope.collectors.deferred_accuracy import DeferredAccuracy
from trainscope.collectors.flusher import Flusher
from trainscope.collectors.guard import BORROWING, KEEPING_OUTPUTS, ErrorGuard
from trainscope.collectors.packets import Packet, ScalarSpec
from trainscope.collectors.plan import StepPlan
from trainscope.collectors.tap import OptimizerTap
from trainscope.logformat import tags as T

Number = float | int
TensorOrNumber = torch.Tensor | Number


class StepRecorder:
    def __init__(
        self,
        guard: ErrorGuard,
        flusher: Flusher,
        tap: OptimizerTap,
        signals: BatchSignals,
        accuracy: DeferredAccuracy,
        param_groups: Callable[[], list[dict[str, Any]]],
        scaler: Any | None,
        rank: int,
        world_size: int,
        graphs_overwrite: Callable[[torch.device], bool],
    ) -> None:
        self._guard = guard
        self._flusher = flusher
        self._tap = tap
        self._signals = signals
        self._accuracy = accuracy
        self._param_groups = param_groups
        self._scaler = scaler
        self._rank_tag = T.step_seconds_rank_tag(rank) if world_size > 1 else None
        # Whether CUDA graphs may replay over a tensor of this device: such a loss is
        # copied, never kept by reference (passed in: collectors/cuda_graphs.py knows).
        self._graphs_overwrite = graphs_overwrite
        self.probe: ActivationProbe | None = None  # set by the collector (it rebuilds it on a remap)
        self._lr_tags: tuple[str, ...] = ()  # `opt/lr` tags of the param groups

    def record(
        self,
        step: int,
        plan: StepPlan,
        seconds: float,
        loss: TensorOrNumber | None,
        outputs: Any = None,
        targets: Any = None,
        inputs: Any = None,
        acc: TensorOrNumber | None = None,
        batch_size: int | None = None,
        grad_norm: TensorOrNumber | None = None,
    ) -> None:
        pending = self._flusher.pending
        if pending:  # a loss changed in place is most likely changed before the next step: look now
            self._flusher.check_borrowed(pending[-1])
        packet = Packet(step, time.time(), {T.STEP_SECONDS: seconds})
        if self._rank_tag is not None:
            packet.host[self._rank_tag] = seconds
        groups = self._param_groups()
        if len(groups) != len(self._lr_tags):
            self._lr_tags = tuple(T.lr_tag(i) for i in range(len(groups)))
        for tag, group in zip(self._lr_tags, groups):
            self.put(packet, tag, group.get("lr"))
        self.put(packet, T.TRAIN_LOSS, loss, self._guard.enabled(BORROWING))
        tap = self._tap
        if not tap.stepped:
            packet.host[T.STEP_SKIPPED] = 1.0
        packet.items.extend(tap.take_reads(plan))
        self.put(
            packet, T.GRAD_GLOBAL_NORM, grad_norm
        )  # the writer prefers it to the norm measured after clipping
        self.put(packet, T.TRAIN_ACC, acc)
        if self._scaler is not None:
            scale = getattr(self._scaler, "_scale", None)
            self.put(
                packet, T.LOSS_SCALE, scale if isinstance(scale, torch.Tensor) else self._scaler.get_scale()
            )
        model_input = None  # what the model's forward got, where the probe watched it
        probe = self.probe
        if plan.sampled and probe is not None and probe.armed:
            for tag, value in probe.disarm().items():
                packet.items.append((ScalarSpec(tag, optional=True), value))
            model_input = probe.take_model_input()
        kept = acc is None and self._guard.call(
            KEEPING_OUTPUTS, self._accuracy.keep, packet, outputs, targets
        )
        if kept and self._accuracy.full:  # large logits: read a few steps' at a time
            self._flusher.resolve_accuracy()
        want_acc = acc is None and plan.stats and not kept
        if want_acc or plan.sampled:
            # Whatever the user passes (tuples, dicts, token ids) must not cost the loss above.
            self._guard.call(
                "batch_stats",
                self._signals.record,
                packet,
                outputs,
                targets,
                inputs,
                model_input,
                want_acc,
                batch_size,
                plan.sampled,
            )
        elif batch_size or not self._signals.batch_size_fixed:
            self._signals.update_batch_size(batch_size, targets, inputs, outputs)
        pending.append(packet)

    def record_rank_step(
        self, step: int, plan: StepPlan | None, seconds: float, batch_size: int | None, *tensors: Any
    ) -> None:
        """Another rank than 0: its step time, and, with a `plan` (a sharded model's
        ranks plan every step), the norms of its shards (with its batch size, for its
        part of the noise scale's batch)."""
        assert self._rank_tag is not None  # rank > 0: several processes
        packet = Packet(step, time.time(), {self._rank_tag: seconds})
        if plan is not None:
            if batch_size or not self._signals.batch_size_fixed:
                self._signals.update_batch_size(batch_size, *tensors)
            packet.items.extend(self._tap.take_reads(plan))
        self._flusher.pending.append(packet)

    def log_scalars(self, values: Mapping[str, TensorOrNumber], step: int) -> None:
        packet = Packet(step, time.time())
        borrow = self._guard.enabled(BORROWING)
        for tag, value in values.items():
            self.put(packet, tag, value, borrow)
        self._flusher.pending.append(packet)

    def put(self, packet: Packet, tag: str, value: TensorOrNumber | None, borrow: bool = False) -> None:
        """A host number goes into the packet as is; a tensor stays on its device until the flush.

        Tensors are copied (schedulers and GradScaler update theirs in place before the
        flush), except, with `borrow`, one that requires grad: a result of the step's graph
        such as the loss, kept by reference (see `Packet.borrow`), unless CUDA graphs may
        overwrite it (see `collectors.cuda_graphs`).
        """
        if value is None:
            return
        if not isinstance(value, torch.Tensor):
            packet.host[tag] = float(value)
            return
        if type(value) is not torch.Tensor and getattr(value, "placements", None) is not None:
            # A DTensor (the norm clip_grad_norm_ returns for a sharded model): its local
            # value is the whole only where every rank holds it; anything else would take
            # a collective that the other ranks do not join.
            if not all(placement.is_replicate() for placement in value.placements):  # type: ignore[attr-defined]
                return
            value = value.to_local()  # type: ignore[attr-defined]
        if value.numel() != 1:
            packet.items.append((scalar_spec(tag), value.detach().float().mean()))
        elif borrow and value.requires_grad and not (value.is_cuda and self._graphs_overwrite(value.device)):
            # detach() drops the graph but shares the version counter that check_borrowed reads
            packet.borrow(scalar_spec(tag), value.detach())
        else:
            packet.items.append((scalar_spec(tag), value.detach().clone()))


@functools.lru_cache(maxsize=1024)
def scalar_spec(tag: str) -> ScalarSpec:
    """One spec per tag, made once: the loss's is needed every step."""
    return ScalarSpec(tag)
