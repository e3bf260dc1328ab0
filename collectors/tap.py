"""The optimizer tap: what the collector reads through the optimizers' step hooks.

It owns the hook handles, the copy of the weights before a sampled step's update, the
count of optimizers yet to step before the update is read, and the gradient-noise
window. Per step, following the step's `StepPlan`:

- pre-hook (the first optimizer to step, with several): on statistics steps the
  gradient norm of every parameter tensor (device tensors; the writer thread folds
  them into per-layer and global norms); on sampled steps a copy of the weights; on
  histogram steps gradient histograms; inside a noise window, the gradient sum;
- post-hook (the last optimizer to step): the norms of the update and of the
  weights (folded into ‖Δw‖/‖w‖ and weight norms); on histogram steps weight
  histograms.

What it read waits in `current` until `step()` takes it (`take_reads`). Each read
runs under the `ErrorGuard`: an error is reported once, never raised. A sharded
model's ranks each measure their own shards, as partial sums the readers add up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from trainscope.collectors.config import CollectorConfig
from trainscope.collectors.grad_stats import LayerNorms, local_shard, shard_weight
from trainscope.collectors.guard import ErrorGuard
from trainscope.collectors.layers import Layer
from trainscope.collectors.noise_scale import NoiseWindow
from trainscope.collectors.packets import HistogramSpec, NoiseSpec, ShardNoiseSpec, Spec
from trainscope.collectors.plan import StepPlan
from trainscope.collectors.scratch import Scratch
from trainscope.collectors.specs import LayerSpecs
from trainscope.logformat import tags as T
from trainscope.logformat.tags import ShardHistograms as SH
from trainscope.logformat.tags import ShardSquares as SS

Reads = list[tuple[Spec, torch.Tensor]]


class OptimizerTap:
    def __init__(
        self,
        optimizers: list[torch.optim.Optimizer],
        config: CollectorConfig,
        guard: ErrorGuard,
        rank: int,
        sharded: bool,
        plain_share: float | None,
        batch_size: Callable[[], float | None],
        data_parallel: int | None,
        pack_histogram: Callable[[torch.Tensor, int], torch.Tensor],
    ) -> None:
        self._optimizers = optimizers
        self._config = config
        self._guard = guard
        self._rank = rank
        self._sharded = sharded
        # What a plain tensor of a sharded model stands for (`shard_weight`).
        self._plain_share = plain_share
        self._batch_size = batch_size
        self._data_parallel = data_parallel
        self._pack_histogram = pack_histogram  # passed in: the collector picks the packer
        self.plan: StepPlan | None = None  # the plan of the step in progress (None: read nothing)
        # Called before the first gradients are read, while the model is lazy (its
        # parameters get their shapes in the first forward pass): the collector maps it then.
        self.before_read: Callable[[], None] | None = None
        self.current: Reads = []  # device values of the step in progress
        self.stepped = False  # whether an optimizer stepped (its pre-hook ran) in this step
        self.stats_cost = 0.0  # host seconds the statistics took in this step (0: not taken)
        self._gradients_read = False  # whether this step's gradients were read (by the first pre-hook)
        self._gradients_taken = False  # whether they were (by `read_gradients`, or a pre-hook's read)
        self._updates_pending = 0  # optimizers yet to step before the update is read
        self._weights_before: list[torch.Tensor] | None = None
        self._closed = False
        self._handles = []
        for optimizer in optimizers:
            self._handles.append(optimizer.register_step_pre_hook(self._pre_step_hook))
            self._handles.append(optimizer.register_step_post_hook(self._post_step_hook))
        self.measure([])

    def measure(self, layers: list[Layer]) -> None:
        """What measures `layers`: made at attach, and again when the parameters being
        trained change."""
        self._layers = layers
        self.norms = LayerNorms(layers, sharded=self._sharded, plain_share=self._plain_share)
        self.specs = LayerSpecs(layers, self._sharded, self._rank)
        self._snapshot = Scratch()  # the weights before a sampled step's update
        self._noise = NoiseWindow(self.norms.params, self.norms.shard_weights)

    def share(self, param: torch.Tensor) -> float:
        return shard_weight(param, self._plain_share)

    def remove(self) -> None:
        """Remove every hook (safe twice)."""
        self._closed = True
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def take_reads(self, plan: StepPlan) -> Reads:
        """What the hooks read in the step that ends, once they are done."""
        if not self.stepped:
            self.current = []
            self._weights_before = None
            self._updates_pending = 0
            if plan.stats:
                self._read_gradients_now()
        elif self._updates_pending:  # not every optimizer stepped (AMP skipped one): what those did
            self._read_after_update()
        return self.current

    def read_gradients(self) -> None:
        """Read the step's gradients now, for a framework whose own hook runs between the
        backward pass and clipping (see `Collector.read_gradients`); the optimizers'
        pre-hooks then read none in this step."""
        if not self._closed:
            self._gradients_read = True
            self._take_gradients()

    def read_by_hand(self) -> None:
        """A loop without an optimizer, at `step()`: what the pre-hook reads (the step's
        gradients, still there) and what the post-hook reads (the update: the weights now
        against the copy `copy_weights_before` took at the step before)."""
        self.stepped = True
        self._take_gradients()
        if self._updates_pending:
            self._read_after_update()

    def copy_weights_before(self) -> None:
        """A loop without an optimizer: the weights before a sampled step's update, copied
        at the `step()` before it (nothing else runs between the two)."""
        with torch.no_grad():
            self._weights_before = self._snapshot.copy_of(self.norms.weights())

    def end_step(self) -> None:
        self.stepped = self._gradients_read = self._gradients_taken = False
        if self.current:
            self.current = []

    # ---- hooks ------------------------------------------------------------------

    def _pre_step_hook(
        self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any
    ) -> tuple[Any, Any] | None:
        self.stepped = True
        # Most steps: one attribute read. With several optimizers, the first to step reads
        # every gradient, before any weight has moved.
        plan = self.plan
        if plan is not None and plan.reads_gradients and not self._gradients_read and not self._closed:
            self._gradients_read = True
            if len(args) > 1 or kwargs:  # step(closure): the gradients do not exist yet
                return self._guard.call(
                    "gradients", _read_after_first_call, self._take_gradients, args, kwargs
                )
            self._take_gradients()
        return None

    def _take_gradients(self) -> None:
        """The step's gradients, read once: by `read_gradients`, or the first pre-hook."""
        plan = self.plan
        if not self._gradients_taken and plan is not None and plan.reads_gradients:
            self._gradients_taken = True
            self._guard.call("gradients", self._read_gradients, plan)

    def _post_step_hook(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self._updates_pending and not self._closed:  # most steps: one attribute read
            self._updates_pending -= 1
            if self._updates_pending == 0:  # the last optimizer has stepped
                self._read_after_update()

    # ---- reads ------------------------------------------------------------------

    def _read_gradients(self, plan: StepPlan) -> None:
        if self.before_read is not None:
            self.before_read()
        batch_size = self._batch_size()
        in_noise_window = plan.noise_window and bool(batch_size)
        if plan.stats:
            started = time.perf_counter()
            with torch.no_grad():
                measured = self.norms.tensor_norms(self.norms.grads())
            if measured is None:  # no parameter has a gradient: nothing to record
                return
            self.current.append((self.specs.grad(measured[0], in_noise_window), measured[1]))
            self.stats_cost += time.perf_counter() - started
        elif (in_noise_window or plan.update_ratios or plan.histograms) and all(
            p.grad is None for p in self.norms.params
        ):
            return
        if in_noise_window:
            self._guard.call("noise_scale", self._accumulate_noise, plan.step, batch_size)
        if plan.update_ratios and self._optimizers:  # by hand: copied at the step() before
            with torch.no_grad():
                self._weights_before = self._snapshot.copy_of(self.norms.weights())
        if plan.histograms:
            self._guard.call("histograms", self._histograms, True)
        if plan.update_ratios or plan.histograms:
            self._updates_pending = len(self._optimizers) or 1  # by hand: read at step()

    def _read_gradients_now(self) -> None:
        """The optimizer did not step (AMP skipped an inf step, or accumulation):
        record the gradients as they are, so an inf shows, marked as skipped."""
        started = time.perf_counter()
        with torch.no_grad():
            measured = self.norms.tensor_norms(self.norms.grads())
        if measured is not None:
            self.current.append((self.specs.grad(measured[0]), measured[1]))
            self.stats_cost += time.perf_counter() - started

    def _accumulate_noise(self, step: int, batch_size: float) -> None:
        schedule = self._config.schedule
        if schedule.is_sampled(step):
            self._noise.reset()  # a window left open by a skipped last step is not carried over
        self._noise.add(step, self.norms.grads(), batch_size * (self._data_parallel or 1))
        if schedule.closes_noise_window(step):
            window = self._noise.close()
            if window is not None:
                big_sq, b_small, b_big, first_step = window
                if self._sharded:
                    quantities = (SS.NOISE_BIG, SS.NOISE_B_SMALL, SS.NOISE_B_BIG)
                    parts = tuple(self.specs.shard_tag(quantity) for quantity in quantities)
                    self.current.append((ShardNoiseSpec(parts, b_small, b_big), big_sq))
                else:
                    self.current.append((NoiseSpec(b_small, b_big, first_step), big_sq))

    def _read_after_update(self) -> None:
        """The update of a sampled step, and weight histograms on a histogram step."""
        self._updates_pending = 0
        if self._weights_before is not None:
            self._guard.call("updates", self._read_updates)
        if self.plan is not None and self.plan.histograms:
            self._guard.call("histograms", self._histograms, False)

    def _read_updates(self) -> None:
        before, self._weights_before = self._weights_before, None
        assert before is not None
        with torch.no_grad():
            after = self.norms.weights()
            w_before, w_after = self.norms.tensor_norms(before), self.norms.tensor_norms(after)
            torch._foreach_sub_(before, after)  # our copy becomes -Δw: no third weight-sized tensor
            delta = self.norms.tensor_norms(before)
            assert delta and w_before and w_after  # every parameter has a value: one fold for all three
            self.current.append((self.specs.update(delta[0]), torch.cat([delta[1], w_before[1], w_after[1]])))

    def _histograms(self, of_gradients: bool) -> None:
        """A histogram of every layer's weight (or its gradient, where it has one); of a
        sharded model's, this rank's shard of it, on its own range: the readers merge
        the ranks' (`HistogramSpec.share` counts a replicated tensor once)."""
        with torch.no_grad():
            for layer in self._layers:
                weight = layer.weight
                values = (_dense_grad(weight) if of_gradients else weight) if weight is not None else None
                share = 1.0
                if self._sharded and values is not None:
                    values = local_shard(values)
                    share = self.share(weight)  # type: ignore[arg-type]
                if values is None or not values.numel():  # no gradient, or none of the tensor on this rank
                    continue
                if self._sharded:
                    tag = self.specs.shard_tag(SH.GRAD if of_gradients else SH.WEIGHT, layer.name)
                else:
                    tag = T.hist_grad_tag(layer.name) if of_gradients else T.hist_weight_tag(layer.name)
                packed = self._pack_histogram(values, self._config.histogram_bins)
                self.current.append((HistogramSpec(tag, packed.numel(), share), packed))


def _dense_grad(weight: nn.Parameter) -> torch.Tensor | None:
    """A weight's gradient as a histogram counts it: with its zeros, also where it is sparse."""
    grad = weight.grad
    return grad.to_dense() if grad is not None and grad.is_sparse else grad


def _read_after_first_call(
    read: Callable[[], object], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, Any] | None:
    """`optimizer.step(closure)` (L-BFGS; any optimizer may take one) runs the forward and
    backward pass inside the step, possibly several times, so the gradients do not exist
    yet when the step begins. Returns the step's `args` (`args[0]` is the optimizer) and
    `kwargs` with the closure wrapped so that `read` runs once, after its first call: on
    the gradients at the weights the step starts from, as for any other optimizer.
    Without a closure, `read` runs now and None is returned (nothing to change)."""
    closure = args[1] if len(args) > 1 else kwargs.get("closure")
    if closure is None:
        read()
        return None
    pending = [read]

    def closure_then_read() -> Any:
        loss = closure()
        if pending:
            pending.pop()()
        return loss

    if len(args) > 1:
        return (args[0], closure_then_read, *args[2:]), kwargs
    return args, {**kwargs, "closure": closure_then_read}
