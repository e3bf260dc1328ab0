"""Training accuracy of every step, computed at the flush.

Accuracy is five small kernels (`batch_stats.correct_and_valid`): ~100 µs inside a
CPU step of the overhead benchmark's MLP, five launches on a GPU. Measured at once it
was affordable only on statistics steps (every 6th to 8th step of that MLP). Instead the
step's logits and labels are kept by reference, as the loss is (`Packet.borrow`), and
the flush computes the accuracy of every kept step in one batch per shape: a step then
costs a dictionary look-up and an append, and the flush a few kernels.

What is kept is bounded by storage (a view keeps its whole base alive): a tensor over
`MAX_KEPT_BYTES` is not kept (its accuracy is measured at once, on statistics steps, as
before), and once the kept tensors hold `RESOLVE_AT_BYTES` their accuracy is computed
there and then (`full`), before the flush: ImageNet-sized logits are batched a few steps
at a time. A kept tensor changed in place before it is read shows in its version
counter: that step's accuracy is dropped rather than computed from other values. Only
plain tensors are kept: a DTensor's ops can be collectives that the other ranks do not
join. On a device where torch.compile's CUDA graphs run, outputs are overwritten by the
next replay (`collectors.cuda_graphs`): nothing is kept there.

A language model's (batch, tokens, vocabulary) logits are kept once the collector has
learnt whether their labels are the input ids or already shifted (`learn_token_shift`);
before, they have no plan, and no accuracy.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch

from trainscope.collectors import batch_stats
from trainscope.collectors.cuda_graphs import cuda_graphs_run_on
from trainscope.collectors.packets import CHANGED_IN_PLACE, FractionSpec, Packet
from trainscope.logformat import tags as T

# The largest storage kept (1024 examples x 1000 classes of float32), and what the kept
# tensors may hold together before they are read.
MAX_KEPT_BYTES = 4 << 20
RESOLVE_AT_BYTES = 16 << 20
# Distinct (outputs, targets) shapes judged before the judgements are forgotten (a
# language model fed sequences of every length has no end of shapes).
MAX_PLANS = 1024
ACCURACY = FractionSpec(T.TRAIN_ACC)


class DeferredAccuracy:
    """The kept logits and labels of the steps since the last flush."""

    def __init__(self, num_classes: int | None) -> None:
        self._num_classes = num_classes
        self._token_shift: int | None = None  # how a language model's labels pair with its logits, once known
        # (outputs' shape, targets' shape, targets' dtype) -> its plan, or None for a
        # pairing that has no accuracy: shapes repeat, so each is judged once.
        self._plans: dict[tuple[Any, ...], batch_stats.AccuracyPlan | None] = {}
        self._kept: list[tuple[Packet, torch.Tensor, torch.Tensor, int, int, tuple[Any, ...]]] = []
        self._kept_bytes = 0

    @property
    def full(self) -> bool:
        """Whether the kept tensors hold enough memory to be read now (`resolve`)."""
        return self._kept_bytes >= RESOLVE_AT_BYTES

    @property
    def token_shift(self) -> int | None:
        """`batch_stats.UNSHIFTED_LABELS` or `SHIFTED_LABELS` for a language model's
        labels, None until the collector has learnt which."""
        return self._token_shift

    def learn_token_shift(self, shift: int) -> None:
        """How a language model's labels pair with its logits, learnt from its inputs."""
        self._token_shift = shift
        self._plans.clear()  # token pairings were judged without it

    def plan(self, outputs: torch.Tensor, targets: torch.Tensor) -> batch_stats.AccuracyPlan | None:
        """How these logits and labels give their accuracy, judged once per shape: the
        same plan whether the accuracy is kept for the flush or measured at once."""
        plan = self._plans.get((outputs.shape, targets.shape, targets.dtype), False)
        return self._judge(outputs, targets) if plan is False else plan

    def keep(self, packet: Packet, outputs: Any, targets: Any) -> bool:
        """Keep this step's logits and labels for its accuracy at the flush; False where
        they have no accuracy or cannot be kept (measure it now, if at all)."""
        if type(outputs) is not torch.Tensor or type(targets) is not torch.Tensor:
            return False
        key = (outputs.shape, targets.shape, targets.dtype)
        plan = self._plans.get(key, False)  # `plan()` inlined: this runs every step
        if plan is False:
            plan = self._judge(outputs, targets)
        device = outputs.device
        if plan is None or device != targets.device:
            return False
        held = outputs.untyped_storage().nbytes() + targets.untyped_storage().nbytes()
        if held > MAX_KEPT_BYTES or (device.type == "cuda" and cuda_graphs_run_on(device)):
            return False
        kept = outputs.detach()  # shares the version counter; drops the graph
        # What the flush batches by, whole: the plan, the shapes and dtypes, the device.
        group = (plan, key, outputs.dtype, device)
        self._kept.append((packet, kept, targets, kept._version, targets._version, group))
        self._kept_bytes += held
        return True

    def resolve(self) -> list[tuple[Packet, str]]:
        """Add each kept step's ``[correct, valid]`` counts to its packet, computed in one
        batch per shape; return the steps whose tensors changed since they were kept
        (they get none), with why."""
        kept, self._kept, self._kept_bytes = self._kept, [], 0
        lost: list[tuple[Packet, str]] = []
        groups: dict[tuple[Any, ...], list[tuple[Packet, torch.Tensor, torch.Tensor]]] = defaultdict(list)
        for packet, outputs, targets, outputs_version, targets_version, group in kept:
            if outputs._version != outputs_version or targets._version != targets_version:
                lost.append((packet, CHANGED_IN_PLACE))
                continue
            groups[group].append((packet, outputs, targets))
        for (plan, *_), steps in groups.items():
            outputs = torch.stack([outputs for _, outputs, _ in steps])
            targets = torch.stack([targets for _, _, targets in steps])
            counts = batch_stats.correct_and_valid_per_step(
                outputs, targets, plan.classes, plan.dim, plan.shift
            )
            for (packet, _, _), count in zip(steps, counts):
                packet.items.append((ACCURACY, count))
        return lost

    def _judge(self, outputs: torch.Tensor, targets: torch.Tensor) -> batch_stats.AccuracyPlan | None:
        if len(self._plans) >= MAX_PLANS:
            self._plans.clear()
        plan = batch_stats.accuracy_plan(outputs, targets, self._num_classes, self._token_shift)
        self._plans[(outputs.shape, targets.shape, targets.dtype)] = plan
        return plan
