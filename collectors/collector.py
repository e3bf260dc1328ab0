"""`watch()`: one call that instruments a PyTorch training loop.

How a step is recorded (step k, `every` = sampling interval):

1. Before step k's forward (at the end of step k-1): if k is sampled, arm the
   activation hooks; ask the `StatsCadence` whether k is a statistics step (all of the
   first 200, then every step unless that costs more than `stats_budget` of the step
   time; sampled steps always). A quiet step (nothing but loss, learning rate and
   step time) also says until when the steps stay quiet, and those are not planned.
2. `optimizer.step()` pre-hook (the first optimizer's to step, with several): on
   statistics steps the gradient norm of every parameter tensor (device tensors; the
   writer thread folds them into per-layer and global norms); on sampled steps a copy
   of the weights; on histogram steps gradient histograms; inside a noise window, the
   gradient sum.
3. `optimizer.step()` post-hook, sampled steps (the last optimizer's, with several):
   norms of the update and of the weights (folded into ‖Δw‖/‖w‖ and weight norms);
   on histogram steps weight histograms.
4. `collector.step(loss, ...)`: loss (kept by reference: on most steps the
   collector launches no kernel at all; copied where CUDA graphs would overwrite
   it), learning rate, step time, the norm before clipping if given; the logits and
   labels, kept by reference for the accuracy that the flush computes
   (`DeferredAccuracy`; a language model's once its inputs have shown how its labels
   pair with its logits, `_judge_token_labels`); sampled input/label statistics; all
   device values stay tensors in a pending packet. A quiet step in the common case
   takes a short path of its own (`_record_quiet_step`).
5. Every `flush_steps` steps or `flush_seconds`: one device-to-host copy of every
   pending value, handed to the writer thread. Nothing in 1-4 reads a device value
   on the host, so steps between flushes never wait for the GPU.

Under DDP every rank but 0 records only its step time. A sharded model (FSDP's
`fully_shard`, tensor parallelism) has each rank measure its own shards in 2 and 3,
on the same steps (a fixed schedule), as partial sums that the readers add up: a norm
of a whole tensor would be a collective, which a collector must never start.

Hook code runs under an `ErrorGuard`: an error is reported once, never raised.
"""

from __future__ import annotations

import atexit
import dataclasses
import datetime as _dt
import functools
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Mapping

import torch
from torch import nn

from collectors import batch_stats
from collectors.activations import ActivationProbe
from collectors.cadence import QUIET, STATS, StatsCadence
from collectors.config import CollectorConfig
from collectors.cuda_graphs import cuda_graphs_run_on
from collectors.deferred_accuracy import DeferredAccuracy
from collectors.distributed import data_parallel_ranks, rank_and_world_size
from collectors.grad_stats import LayerFold, LayerNorms, local_shard, shard_weight
from collectors.guard import ErrorGuard
from collectors.histograms import pack_histogram
from collectors.init_check import check_initialization, check_sharded_initialization, shard_moments
from collectors.layers import (
    ModelMap,
    compiled_wrapper,
    has_dtensor_parameters,
    has_flat_parameters,
    has_flat_shards,
    has_lazy_parameters,
    has_sharded_parameters,
    lazy_model_summary,
    map_model,
    unwrap,
)
from collectors.noise_scale import NoiseWindow
from collectors.packets import (
    Batch,
    FractionSpec,
    HistogramSpec,
    LayerNormSpec,
    NoiseSpec,
    Packet,
    ScalarSpec,
    ShardNoiseSpec,
    ShardSquaresSpec,
    Spec,
    UpdateSpec,
    spec_tag,
)
from collectors.scratch import Scratch
from collectors.writer import WriterThread
from logformat import runjson as RJ
from logformat import tags as T
from logformat.tags import ShardHistograms as SH
from logformat.tags import ShardSquares as SS

Number = float | int
TensorOrNumber = torch.Tensor | Number

# The ErrorGuard part that keeps the loss by reference; its error (the loss changed in
# place before the flush) switches it off, and losses are copied from then on.
BORROWING = "loss by reference"
# The part that keeps each step's outputs and targets for its accuracy at the flush
# (collectors/deferred_accuracy.py); switched off the same way, accuracy is then
# measured at once, on statistics steps.
KEEPING_OUTPUTS = "accuracy by reference"
# The part that learns whether a language model's labels are its input ids or already
# shifted; reported (and off) where the input ids cannot be seen.
TOKEN_LABELS = "token accuracy"


def watch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
    log_dir: str | os.PathLike[str],
    hparams: Mapping[str, Any] | None = None,
    *,
    run_name: str | None = None,
    batch_size: int | None = None,
    num_classes: int | None = None,
    scaler: Any | None = None,
    start_step: int = 0,
    config: CollectorConfig | None = None,
    **settings: Any,
) -> "Collector":
    """Attach a collector to `model` and `optimizer`, writing a run into `log_dir`.

    `optimizer` may be a list of the optimizers that train the model together (e.g.
    Muon for the matrices, AdamW for the rest): each step's gradients are read when the
    first of them steps, and its updates once the last of them has.

    `hparams` are recorded as given (a ``batch_size`` entry is used as the batch size).
    `batch_size` matters with gradient accumulation, where a step's batch is larger
    than the tensors passed to `step()`. `scaler` is an AMP GradScaler whose loss scale
    is then recorded. `start_step` is the number of the first step recorded: a run
    resumed from a checkpoint of step N passes N, and its curves go on in the same
    `log_dir` where they stopped. Further keyword arguments are `CollectorConfig`
    fields, e.g. ``every=10``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"watch() takes the model as a torch.nn.Module, got {type(model).__name__}")
    given = optimizer if isinstance(optimizer, (list, tuple)) else [optimizer]
    optimizers = [_hooked_optimizer(each) for each in given]
    if not optimizers:
        raise TypeError("watch() takes a torch.optim.Optimizer or a list of them, got an empty list")
    if not (isinstance(start_step, int) and start_step >= 0):
        raise ValueError(f"watch() takes start_step as an int >= 0, got {start_step!r}")
    if config is None:
        config = CollectorConfig(**settings)
    elif settings:
        raise TypeError("pass either config= or CollectorConfig fields, not both")
    hparams = dict(hparams or {})
    return Collector(model, optimizers, log_dir, hparams, run_name, batch_size, num_classes, scaler, start_step, config)


class Collector:
    """Records a training run; see `watch`. Also a context manager."""

    def __init__(
        self,
        model: nn.Module,
        optimizers: list[torch.optim.Optimizer],
        log_dir: str | os.PathLike[str],
        hparams: dict[str, Any],
        run_name: str | None,
        batch_size: int | None,
        num_classes: int | None,
        scaler: Any | None,
        start_step: int,
        config: CollectorConfig,
    ) -> None:
        self.log_dir = Path(log_dir)
        self.rank, self.world_size = rank_and_world_size()
        self.closed = False
        self._guard = ErrorGuard()
        self._model = unwrap(model)
        # Sharded parameters (FSDP, tensor parallel): each rank measures its own shards,
        # which the readers add up; under FSDP's older wrapper they are flat (`has_flat_shards`).
        self._sharded = has_sharded_parameters(model)
        self._flat_shards = has_flat_shards(model) and not has_dtensor_parameters(model)
        # What a plain tensor of a sharded model stands for (`shard_weight`): a flat slice
        # under FSDP's older wrapper, else a tensor whole on every rank (None).
        self._plain_share = 1.0 if self._flat_shards else None
        self._is_writer = self.rank == 0  # of the shared tags; every rank writes its own
        # How many ranks' batches make a step's: the noise scale's batch, and the rules'.
        self._data_parallel = data_parallel_ranks(model, self.world_size)
        self._noise_batch_unknown = config.noise_scale and self._data_parallel is None
        if self._noise_batch_unknown:
            config = dataclasses.replace(config, noise_scale=False)
        if not self._is_writer:
            config = dataclasses.replace(config, activations=False)
        self.config = config
        self._optimizers = optimizers
        self._scaler = scaler
        self._num_classes = num_classes
        self._seen_classes = num_classes  # what run.json says; set from the logits when not given
        self._input_kind: str | None = None  # what run.json says the model's input is, once seen
        self._accuracy = DeferredAccuracy(num_classes)
        hinted = batch_size or hparams.get("batch_size")
        self._batch_size: float | None = float(hinted) if isinstance(hinted, (int, float)) else None
        self._batch_size_fixed = self._batch_size is not None
        self._step = start_step  # the step being trained now; step() records it
        self._pending: list[Packet] = []
        self._current: list[tuple[Any, torch.Tensor]] = []  # device values of the step in progress
        self._optimizer_stepped = False  # whether an optimizer stepped (its pre-hook ran) in this step
        self._gradients_read = False  # whether this step's gradients were read (by the first pre-hook)
        # Optimizers yet to step before this step's update and weight histograms are read.
        self._updates_pending = 0
        self._weights_before: list[torch.Tensor] | None = None
        self._label_seen: torch.Tensor | None = None
        self._inputs_given = False  # whether the last sampled step's step() got a float input batch (_plan)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._last_step_time = time.perf_counter()  # when step() was last called: time/step_seconds
        self._last_step_end = self._last_step_time  # when it last returned: the cadence's step time
        self._last_flush = time.monotonic()
        self._device = _first_device(self._model)
        if self._sharded:
            self._cadence = StatsCadence.same_on_every_rank(config.stats_every, config.stats_budget)
        else:
            self._cadence = StatsCadence(config.stats_every, config.stats_budget)
        self._stats_due = True  # whether the step in progress gets gradient norms and accuracy
        self._adds_more = True  # whether it also gets sampled signals, a noise-window sum or histograms
        self._reads_gradients = False  # whether its optimizer pre-hook has anything to do
        self._quiet_until = 0  # steps before it add nothing to loss, lr and step time: no planning
        # Whether the step in progress may be recorded by `_record_quiet_step`: a quiet step
        # of a single process's run, without a GradScaler (whose scale is copied each step).
        self._quiet = False
        self._quiet_path_fits = self.rank == 0 and self.world_size == 1 and scaler is None
        self._lr_tags: tuple[str, ...] = ()  # `opt/lr` tags of the param groups, for that path
        self._last_quiet_loss: tuple[torch.Tensor | None, int] = (None, 0)  # and its version
        self._stats_cost = 0.0  # host seconds they took in the step in progress (0: not taken)

        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._writer = WriterThread(
            self.log_dir,
            "" if self.world_size == 1 else f".rank{self.rank}",
            self._guard,
            config.noise_ema,
            config.noise_window,
        )
        for optimizer in optimizers:
            self._handles.append(optimizer.register_step_pre_hook(self._pre_step_hook))
            self._handles.append(optimizer.register_step_post_hook(self._post_step_hook))
        self._run_json: dict[str, Any] = {}
        # Rank 0 records the run; another rank its step time, and its shards of a sharded model.
        self._plans = self._is_writer or self._sharded
        if not self._plans:
            return
        # Lazy modules (nn.LazyLinear) get their parameters' shapes in the first forward
        # pass: mapped then, from the first statistics step (_read_gradients).
        self._lazy = has_lazy_parameters(self._model)
        model_map = ModelMap([], [], lazy_model_summary(self._model)) if self._lazy else self._map()
        self._layers = model_map.layers
        self._trained = self._trained_parameters()
        self._probe_to_rebuild: ModelMap | None = None  # a remap found new sites while the probe was armed
        self._measure_layers()
        if self._sharded:
            self._guard.call("init_check", self._record_shard_moments, start_step)
        self._compiled_wrapper = compiled_wrapper(model)
        self._probe = self._new_probe(model_map)
        self._plan(self._step)
        atexit.register(self._close_at_exit)
        if not self._is_writer:
            return
        self._say_what_cannot_be_measured()
        self._run_json = self._initial_run_json(hparams, run_name, model_map.summary)
        self._check_earlier_run(start_step)
        RJ.write_run_json(self.log_dir, self._run_json)
        self._previous_excepthook = sys.excepthook
        sys.excepthook = self._excepthook

    # ---- the user's calls -------------------------------------------------------

    def step(
        self,
        loss: TensorOrNumber | None = None,
        *,
        outputs: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        inputs: torch.Tensor | None = None,
        acc: TensorOrNumber | None = None,
        batch_size: int | None = None,
        grad_norm: TensorOrNumber | None = None,
    ) -> None:
        """Record the training step that just ended; call once per optimizer step, after it.

        If you clip gradients, pass what `clip_grad_norm_` returned as `grad_norm`: it is
        the norm before clipping, which `grad/global_norm` should show (a clipped norm
        hides an explosion), and the collector sees the gradients only at
        `optimizer.step()`, after clipping. It is then recorded every step, at no cost.
        """
        if self.closed:
            return
        now = time.perf_counter()
        seconds, self._last_step_time = now - self._last_step_time, now
        if self._is_writer:
            quiet = self._quiet and acc is None and grad_norm is None and batch_size is None
            if not (quiet and self._guard.call("step", self._record_quiet_step, seconds, loss, outputs, targets, inputs)):
                self._guard.call(
                    "step", self._record_step, seconds, loss, outputs, targets, inputs, acc, batch_size, grad_norm
                )
        else:
            self._guard.call("step", self._record_rank_step, seconds, batch_size, targets, inputs, outputs)
        if self._stats_cost:
            self._cadence.recorded(self._step, self._stats_cost)
            self._stats_cost = 0.0
        kind = None if self._adds_more else STATS if self._stats_due else QUIET
        self._step += 1
        self._optimizer_stepped = self._gradients_read = False
        if self._current:
            self._current = []
        if self._plans and self._step >= self._quiet_until:
            self._plan(self._step)
        if len(self._pending) >= self.config.flush_steps or time.monotonic() - self._last_flush >= self.config.flush_seconds:
            self.flush()
        if self._is_writer:
            # From return to return, so that a step's own recording (its accuracy) is in its time.
            end = time.perf_counter()
            self._cadence.step_took(end - self._last_step_end, kind)
            self._last_step_end = end

    def log_validation(
        self, loss: TensorOrNumber | None = None, acc: TensorOrNumber | None = None, *, step: int | None = None, **metrics: TensorOrNumber
    ) -> None:
        """Record validation results at the last training step (or `step`). Extra metrics go to ``val/<name>``."""
        values = {T.VAL_LOSS: loss, T.VAL_ACC: acc, **{T.VAL_PREFIX + name: v for name, v in metrics.items()}}
        self.log_scalars({tag: v for tag, v in values.items() if v is not None}, step=step)

    def log_scalars(self, values: Mapping[str, TensorOrNumber], *, step: int | None = None) -> None:
        """Record any scalars under the given tags (tensors stay on the device until the next flush)."""
        if self.closed or not self._is_writer:
            return
        self._guard.call("log_scalars", self._log_scalars, values, step)

    def flush(self, wait: bool = False) -> None:
        """Move pending values to the host in one copy and hand them to the writer thread;
        with `wait`, return once they are on disk."""
        self._last_flush = time.monotonic()
        if self._pending:
            self._guard.call("flush", self._flush)
        if wait:
            self._writer.wait()

    def close(self, status: str = RJ.STATUS_FINISHED, reason: str | None = None) -> None:
        """Write everything, remove every hook, and mark the run finished (or `status`)."""
        if self.closed:
            return
        self.closed = True
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self._is_writer:
            self._probe.disarm()
        self.flush()
        self._writer.close()
        if self._is_writer:
            self._guard.call("run.json", self._final_run_json, status, reason)
            if sys.excepthook == self._excepthook:
                sys.excepthook = self._previous_excepthook
        atexit.unregister(self._close_at_exit)

    def __enter__(self) -> "Collector":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.close(RJ.STATUS_CRASHED, f"{exc_type.__name__}: {exc}")

    @property
    def errors(self) -> list[str]:
        """Errors reported by the collector's hooks (each part reports once)."""
        return list(self._guard.errors)

    @property
    def event_file(self) -> str:
        return self._writer.path

    @property
    def stats_stride(self) -> int:
        """Steps between gradient norms and accuracy that `stats_budget` calls for now
        (1: every step); the first 200 steps get them all whatever it says."""
        return self._cadence.stride

    def _say_what_cannot_be_measured(self) -> None:
        """Once, at attach: parameters that cannot be read here, or none to read."""
        if self._sharded:
            self._say_what_sharding_hides()
        elif not self._layers and not self._lazy and any(p.requires_grad for p in self._model.parameters()):
            which = "the optimizer updates" if len(self._optimizers) == 1 else "the optimizers update"
            problem = ValueError(
                f"{which} none of the model's trainable parameters (the optimizer of another model, or"
                " parameters replaced after the optimizer was made?); nothing per layer is recorded"
            )
            consequence = "Loss, learning rate and step time are still recorded"
            self._guard.report("layers", problem, consequence=consequence)

    def _say_what_sharding_hides(self) -> None:
        """Each rank measures its own shards and the readers add them up; what cannot be
        measured so is said once."""
        off, why = [], []
        if self._flat_shards:
            off.append("the initialization check")
            why.append("FSDP's FullyShardedDataParallel keeps flat slices, which carry no weight's shape")
            if has_flat_parameters(p for layer in self._layers for p in layer.params):
                off.append("histograms")
                why.append(
                    "without use_orig_params=True its flat parameters hold whole units (measured per unit,"
                    " not per layer) and no weight to take a histogram of"
                )
        if self._noise_batch_unknown:
            off.append("the gradient noise scale")
            why.append("it needs to know how many ranks' batches make a step's, which FSDP's mesh did not tell")
        if off:
            problem = ValueError(f"the model is sharded: {' and '.join(off)} cannot be measured ({'; '.join(why)})")
            consequence = "They are off; the rest is summed from every rank's shards by the readers"
            self._guard.report("sharded parameters", problem, consequence=consequence)

    def _record_shard_moments(self, step: int) -> None:
        """A sharded model's initialization check: this rank's part of each checked
        weight, which the readers add up and complete run.json's entries with."""
        parts = {
            self._shard_tag(quantity, layer): value
            for layer, moments in shard_moments(self._layers, self._share).items()
            for quantity, value in zip(T.ShardInit.ALL, moments)
        }
        if parts:
            self._pending.append(Packet(step, time.time(), parts))

    def _check_earlier_run(self, start_step: int) -> None:
        """A log dir that already holds a run: continued (`start_step`), it keeps its start
        time; started over from step 0, both runs' events would read as one run, steps
        repeated, which is said once (a notebook cell run again, say)."""
        earlier, _ = RJ.read_run_json(self.log_dir)
        if not earlier:
            return
        if start_step:
            self._run_json[RJ.K_START] = earlier.get(RJ.K_START, self._run_json[RJ.K_START])
            return
        problem = ValueError(
            f"{self.log_dir} already holds a run ({earlier.get(RJ.K_STATUS)}, {earlier.get(RJ.K_STEPS)} steps): this"
            " run's events join it, and readers show one run with its steps twice; give each run its own"
            " log_dir, or pass start_step= to continue that one"
        )
        self._guard.report("log dir", problem, consequence="Recording goes on")

    def _measure_layers(self) -> None:
        """What measures `self._layers`: made at attach, and again when the parameters
        being trained change."""
        # Under FSDP's older wrapper a plain tensor is a flat slice, each element on one rank.
        self._norms = LayerNorms(self._layers, sharded=self._sharded, plain_share=self._plain_share)
        # One per pattern of parameters with a gradient, inside a noise window or not.
        self._grad_specs: dict[tuple[LayerFold, bool], LayerNormSpec | ShardSquaresSpec] = {}
        self._update_specs: dict[LayerFold, UpdateSpec | ShardSquaresSpec] = {}
        self._snapshot = Scratch()  # the weights before a sampled step's update
        self._noise = NoiseWindow(self._norms.params, self._norms.shard_weights)

    def _trained_parameters(self) -> tuple[int, int]:
        """How many parameters the optimizers hold, and how many of those require grad:
        what decides which layers there are."""
        held = [p for group in self._param_groups() for p in group["params"]]
        return len(held), sum(p.requires_grad for p in held)

    def _map(self) -> ModelMap:
        return map_model(self._model, self._param_groups())

    def _new_probe(self, model_map: ModelMap) -> ActivationProbe:
        on = self.config.activations
        return ActivationProbe(
            self._model,
            model_map.sites if on else [],
            self._layers if on else [],
            lambda fn, *a: self._guard.call("activations", fn, *a),
            self._compiled_wrapper,
        )

    def _remap_layers(self) -> None:
        """Fine-tuning unfreezes layers as it goes (`requires_grad_()`, `add_param_group`):
        checked on sampled steps, so that they are measured from the next one on. And a
        lazy model is mapped once its parameters have their shapes."""
        was_lazy, self._lazy = self._lazy, has_lazy_parameters(self._model)
        if self._lazy:
            return
        self._trained = self._trained_parameters()
        model_map = self._map()
        self._layers = model_map.layers
        self._measure_layers()
        # The probe's functional-ReLU candidates are trained layers; a lazy model's sites
        # were waiting for the shapes too.
        self._probe_to_rebuild = model_map
        if was_lazy:
            self._run_json[RJ.K_MODEL] = model_map.summary
            if not self._sharded:
                checked = self._guard.call("init_check", check_initialization, self._layers)
                self._run_json[RJ.K_INIT_CHECK] = checked or []
        else:
            self._run_json[RJ.K_MODEL]["layers"] = model_map.summary["layers"]
            self._run_json[RJ.K_MODEL]["trainable_parameters"] = model_map.summary["trainable_parameters"]
        self._run_json[RJ.K_COLLECTOR]["layers"] = [layer.name for layer in self._layers]
        RJ.write_run_json(self.log_dir, self._run_json)

    def _param_groups(self) -> list[dict[str, Any]]:
        """Every optimizer's param groups, in order: `lr/group<i>` counts across them."""
        if len(self._optimizers) == 1:
            return self._optimizers[0].param_groups
        return [group for optimizer in self._optimizers for group in optimizer.param_groups]

    # ---- hooks ------------------------------------------------------------------

    def _pre_step_hook(
        self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any
    ) -> tuple[Any, Any] | None:
        self._optimizer_stepped = True
        # Most steps: one attribute read. With several optimizers, the first to step reads
        # every gradient, before any weight has moved.
        if self._reads_gradients and not self._gradients_read and not self.closed:
            self._gradients_read = True
            if len(args) > 1 or kwargs:  # step(closure): the gradients do not exist yet
                read = functools.partial(self._guard.call, "gradients", self._read_gradients)
                return self._guard.call("gradients", _read_after_first_call, read, args, kwargs)
            self._guard.call("gradients", self._read_gradients)
        return None

    def _post_step_hook(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self._updates_pending and not self.closed:  # most steps: one attribute read
            self._updates_pending -= 1
            if self._updates_pending == 0:  # the last optimizer has stepped
                self._read_after_update()

    def _read_gradients(self) -> None:
        if self._lazy:  # the first forward pass has run: the parameters have their shapes
            self._guard.call("layers changed", self._remap_layers)
        step, cfg = self._step, self.config
        in_noise_window = cfg.in_noise_window(step) and bool(self._batch_size)
        sampled, histogram = cfg.update_ratios and cfg.is_sampled(step), cfg.is_histogram_step(step)
        if self._stats_due:
            started = time.perf_counter()
            with torch.no_grad():
                measured = self._norms.tensor_norms(self._norms.grads())
            if measured is None:  # no parameter has a gradient: nothing to record
                return
            self._current.append((self._grad_spec(measured[0], in_noise_window), measured[1]))
            self._stats_cost += time.perf_counter() - started
        elif (in_noise_window or sampled or histogram) and all(p.grad is None for p in self._norms.params):
            return
        if in_noise_window:
            self._guard.call("noise_scale", self._accumulate_noise)
        if sampled:
            with torch.no_grad():
                self._weights_before = self._snapshot.copy_of(self._norms.weights())
        if histogram:
            self._guard.call("histograms", self._histograms, True)
        if sampled or histogram:
            self._updates_pending = len(self._optimizers)

    def _grad_spec(self, fold: LayerFold, noise_sample: bool = False) -> LayerNormSpec | ShardSquaresSpec:
        spec = self._grad_specs.get((fold, noise_sample))
        if spec is None:
            if self._sharded:
                spec = ShardSquaresSpec(fold, (self._shard_tags(SS.GRAD),), self._shard_tag(SS.GRAD))
            else:
                tags = tuple(T.grad_norm_tag(layer.name) for layer in self._layers)
                spec = LayerNormSpec(fold, tags, T.GRAD_GLOBAL_NORM, noise_sample)
            self._grad_specs[(fold, noise_sample)] = spec
        return spec

    def _update_spec(self, fold: LayerFold) -> UpdateSpec | ShardSquaresSpec:
        spec = self._update_specs.get(fold)
        if spec is None:
            if self._sharded:
                runs = (SS.UPDATE, SS.WEIGHT_BEFORE, SS.WEIGHT)
                spec = ShardSquaresSpec(fold, tuple(self._shard_tags(run) for run in runs))
            else:
                ratio_tags = tuple(T.update_ratio_tag(layer.name) for layer in self._layers)
                weight_tags = tuple(T.weight_norm_tag(layer.name) for layer in self._layers)
                spec = UpdateSpec(fold, ratio_tags, weight_tags)
            self._update_specs[fold] = spec
        return spec

    def _share(self, param: torch.Tensor) -> float:
        return shard_weight(param, self._plain_share)

    def _shard_tag(self, quantity: str, layer: str | None = None) -> str:
        return T.shard_tag(self.rank, quantity, layer)

    def _shard_tags(self, quantity: str) -> tuple[str, ...]:
        return tuple(self._shard_tag(quantity, layer.name) for layer in self._layers)

    def _accumulate_noise(self) -> None:
        if self._step % self.config.every == 0:
            self._noise.reset()  # a window left open by a skipped last step is not carried over
        self._noise.add(self._step, self._norms.grads(), self._batch_size * (self._data_parallel or 1))
        if self._step % self.config.every == min(self.config.noise_window, self.config.every) - 1:
            window = self._noise.close()
            if window is not None:
                big_sq, b_small, b_big, first_step = window
                if self._sharded:
                    parts = tuple(self._shard_tag(part) for part in (SS.NOISE_BIG, SS.NOISE_B_SMALL, SS.NOISE_B_BIG))
                    self._current.append((ShardNoiseSpec(parts, b_small, b_big), big_sq))
                else:
                    self._current.append((NoiseSpec(b_small, b_big, first_step), big_sq))

    def _read_after_update(self) -> None:
        """The update of a sampled step, and weight histograms on a histogram step."""
        self._updates_pending = 0
        if self._weights_before is not None:
            self._guard.call("updates", self._read_updates)
        if self.config.is_histogram_step(self._step):
            self._guard.call("histograms", self._histograms, False)

    def _read_updates(self) -> None:
        before, self._weights_before = self._weights_before, None
        assert before is not None
        with torch.no_grad():
            after = self._norms.weights()
            w_before, w_after = self._norms.tensor_norms(before), self._norms.tensor_norms(after)
            torch._foreach_sub_(before, after)  # our copy becomes -Δw: no third weight-sized tensor
            delta = self._norms.tensor_norms(before)
            assert delta and w_before and w_after  # every parameter has a value: one fold for all three
            self._current.append((self._update_spec(delta[0]), torch.cat([delta[1], w_before[1], w_after[1]])))

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
                    share = self._share(weight)  # type: ignore[arg-type]
                if values is None or not values.numel():  # no gradient, or none of the tensor on this rank
                    continue
                if self._sharded:
                    tag = self._shard_tag(SH.GRAD if of_gradients else SH.WEIGHT, layer.name)
                else:
                    tag = T.hist_grad_tag(layer.name) if of_gradients else T.hist_weight_tag(layer.name)
                packed = pack_histogram(values, self.config.histogram_bins)
                self._current.append((HistogramSpec(tag, packed.numel(), share), packed))

    def _plan(self, step: int) -> None:
        """Decide, before `step` starts, what it records: the hooks then only read flags
        (inside a step each line of Python costs several times its usual time)."""
        if step < self._quiet_until:  # as quiet as the step before: the flags stand (step() looks first)
            return
        cfg = self.config
        sampled = cfg.is_sampled(step)
        if sampled and not self._sharded and self._trained_parameters() != self._trained:
            self._guard.call("layers changed", self._remap_layers)
        # A sampled step gets the statistics too: the full picture, and a noise window's first |g|².
        self._stats_due = self._cadence.due(step) or sampled
        self._adds_more = cfg.adds_sampled_work(step)
        self._reads_gradients = self._stats_due or self._adds_more
        self._quiet = not self._reads_gradients and self._quiet_path_fits and self._plan_quiet_path()
        if not self._reads_gradients:
            # Only a statistics step moves the cadence, so this holds till the next one.
            self._quiet_until = min(self._cadence.next_due(step), cfg.next_sampled_work(step))
        if self._probe_to_rebuild is not None and not self._probe.armed:
            probe, self._probe_to_rebuild = self._new_probe(self._probe_to_rebuild), None
            probe.continue_from(self._probe)
            self._probe = probe
        if sampled and self._is_writer and self._guard.enabled("activations"):
            # The probe measures the input batch only for loops that do not pass step() one.
            self._probe.measure_input = not (self._inputs_given and self._guard.enabled("batch_stats"))
            self._guard.call("activations", self._probe.arm)

    def _plan_quiet_path(self) -> bool:
        """Whether the quiet steps from here on may take `_record_quiet_step`: not where
        the loss or the outputs are no longer kept by reference. Also names the learning
        rates it records."""
        if not (self._guard.enabled(BORROWING) and self._guard.enabled(KEEPING_OUTPUTS)):
            return False
        groups = len(self._param_groups())
        if groups != len(self._lr_tags):
            self._lr_tags = tuple(T.lr_tag(i) for i in range(groups))
        return True

    # ---- recording --------------------------------------------------------------

    def _record_step(
        self,
        seconds: float,
        loss: TensorOrNumber | None,
        outputs: torch.Tensor | None,
        targets: torch.Tensor | None,
        inputs: torch.Tensor | None,
        acc: TensorOrNumber | None,
        batch_size: int | None,
        grad_norm: TensorOrNumber | None,
    ) -> None:
        step, cfg = self._step, self.config
        if self._pending:  # a loss changed in place is most likely changed before the next step: look now
            self._check_borrowed(self._pending[-1])
        borrow = self._guard.enabled(BORROWING)
        packet = Packet(step, time.time(), {T.STEP_SECONDS: seconds})
        if self.world_size > 1:
            packet.host[T.step_seconds_rank_tag(self.rank)] = seconds
        items = packet.items
        for i, group in enumerate(self._param_groups()):
            _put(packet, T.lr_tag(i), group.get("lr"))
        _put(packet, T.TRAIN_LOSS, loss, borrow)
        if not self._optimizer_stepped:
            packet.host[T.STEP_SKIPPED] = 1.0
        items.extend(self._optimizer_reads())
        _put(packet, T.GRAD_GLOBAL_NORM, grad_norm)  # the writer prefers it to the norm measured after clipping
        if acc is not None:
            _put(packet, T.TRAIN_ACC, acc)
        if self._scaler is not None:
            scale = getattr(self._scaler, "_scale", None)
            _put(packet, T.LOSS_SCALE, scale if isinstance(scale, torch.Tensor) else self._scaler.get_scale())
        model_input = None  # what the model's forward got, where the probe watched it
        if cfg.is_sampled(step) and self._probe.armed:
            for tag, value in self._probe.disarm().items():
                items.append((ScalarSpec(tag, optional=True), value))
            model_input = self._probe.take_model_input()
        kept = acc is None and self._guard.call(KEEPING_OUTPUTS, self._accuracy.keep, packet, outputs, targets)
        if kept and self._accuracy.full:  # large logits: read a few steps' at a time
            self._report_lost_outputs(self._guard.call(KEEPING_OUTPUTS, self._accuracy.resolve))
        want_acc = acc is None and self._stats_due and not kept
        if want_acc or cfg.is_sampled(step):
            # Whatever the user passes (tuples, dicts, token ids) must not cost the loss above.
            self._guard.call(
                "batch_stats", self._batch_stats, packet, outputs, targets, inputs, model_input, want_acc, batch_size
            )
        elif batch_size or not self._batch_size_fixed:
            self._update_batch_size(batch_size, targets, inputs, outputs)
        self._pending.append(packet)

    def _record_quiet_step(self, seconds: float, loss: Any, outputs: Any, targets: Any, inputs: Any) -> bool:
        """`_record_step` of a quiet step in the common case (the loss a tensor of the
        step's graph, the optimizer stepped), in as little code as it takes; False, with
        nothing recorded, for any other case.

        Most steps are quiet, and their `step()` runs right after the training step's
        own work has filled the caches: there each call and each object touched costs
        several times what it costs warm (`_record_step` took 30-45 µs inside the
        overhead benchmark's MLP step and 6 µs in a loop of its own).
        """
        if type(loss) is not torch.Tensor or not loss.requires_grad or not self._optimizer_stepped:
            return False
        last_loss, last_version = self._last_quiet_loss
        if last_loss is not None and last_loss._version != last_version:
            # Changed after its step(): `_record_step` reports it (`_check_borrowed`), and
            # losses are copied from then on.
            self._quiet, self._last_quiet_loss = False, (None, 0)
            return False
        if loss.numel() != 1 or (loss.is_cuda and cuda_graphs_run_on(loss.device)):
            return False
        groups = self._param_groups()
        if len(groups) != len(self._lr_tags):
            return False
        host = {T.STEP_SECONDS: seconds}
        for tag, group in zip(self._lr_tags, groups):
            lr = group.get("lr")
            if type(lr) is not float and type(lr) is not int:  # a tensor is copied (`_put`)
                return False
            host[tag] = lr
        loss = loss.detach()  # drops the graph; shares the version counter
        version = loss._version
        self._last_quiet_loss = (loss, version)
        packet = Packet(self._step, time.time(), host, items=[(_LOSS_SPEC, loss)], borrowed=[(0, version)])
        # Under its own part, as in `_record_step`: an error there costs the accuracy, not the step.
        kept = self._guard.call(KEEPING_OUTPUTS, self._accuracy.keep, packet, outputs, targets)
        if kept and self._accuracy.full:
            self._report_lost_outputs(self._guard.call(KEEPING_OUTPUTS, self._accuracy.resolve))
        if not self._batch_size_fixed:
            self._update_batch_size(None, targets, inputs, outputs)
        self._pending.append(packet)
        return True

    def _record_rank_step(self, seconds: float, batch_size: int | None, *tensors: Any) -> None:
        """Another rank than 0: its step time, and the norms of its shards of a sharded
        model (with its batch size, for its part of the noise scale's batch)."""
        packet = Packet(self._step, time.time(), {T.step_seconds_rank_tag(self.rank): seconds})
        if self._sharded:
            if batch_size or not self._batch_size_fixed:
                self._update_batch_size(batch_size, *tensors)
            packet.items.extend(self._optimizer_reads())
        self._pending.append(packet)

    def _optimizer_reads(self) -> list[tuple[Spec, torch.Tensor]]:
        """What the optimizer hooks read in the step that ends, once they are done."""
        if not self._optimizer_stepped:
            self._current = []
            self._weights_before = None
            self._updates_pending = 0
            if self._stats_due:
                self._read_gradients_now()
        elif self._updates_pending:  # not every optimizer stepped (AMP skipped one): what those did
            self._read_after_update()
        return self._current

    def _batch_stats(
        self,
        packet: Packet,
        outputs: Any,
        targets: Any,
        inputs: Any,
        model_input: torch.Tensor | None,
        want_acc: bool,
        batch_size: int | None,
    ) -> None:
        """Accuracy measured at once (`want_acc`: not kept for the flush), the facts
        run.json keeps (classes, what the input is), and on sampled steps the input and
        label statistics. `model_input` is what the model's forward got, where the probe
        watched it; `inputs` (step()'s) takes its place where given."""
        outputs = outputs if isinstance(outputs, torch.Tensor) else None
        targets = targets if isinstance(targets, torch.Tensor) else None
        inputs = inputs if isinstance(inputs, torch.Tensor) else None
        seen_input = model_input if inputs is None else inputs
        sampled = self.config.is_sampled(packet.step)
        self._update_batch_size(batch_size, targets, inputs, outputs)
        dim = batch_stats.logits_class_dim(outputs, targets)
        classes = batch_stats.class_count(outputs, dim, self._num_classes)
        labels_ok = classes is not None and batch_stats.is_label_tensor(targets)
        self._note_facts(batch_stats.input_kind(seen_input), classes if labels_ok else None)
        items = packet.items
        if want_acc and labels_ok:
            if dim == batch_stats.TOKEN_CLASS_DIM and self._accuracy.token_shift is None:
                self._guard.call(TOKEN_LABELS, self._judge_token_labels, targets, seen_input, classes, sampled)
            plan = self._accuracy.plan(outputs, targets)
            if plan is not None:
                started = time.perf_counter()
                counts = batch_stats.correct_and_valid(outputs, targets, plan.classes, plan.dim, plan.shift)
                items.append((FractionSpec(T.TRAIN_ACC), counts))
                self._stats_cost += time.perf_counter() - started
        if not sampled:
            return
        self._inputs_given = inputs is not None and inputs.is_floating_point()
        if self._inputs_given:  # overrides what the forward hook saw
            mean, std = batch_stats.input_moments(inputs)
            items.append((ScalarSpec(T.INPUT_MEAN), mean))
            items.append((ScalarSpec(T.INPUT_STD), std))
        if labels_ok and batch_stats.labels_per_example(targets, seen_input):  # what the batch's class mix is about
            counts = batch_stats.label_counts(targets, classes)
            seen = counts if self._label_seen is None else self._label_seen + counts
            self._label_seen = seen
            items.append((ScalarSpec(T.LABEL_ENTROPY), batch_stats.normalized_entropy(counts)))
            items.append((ScalarSpec(T.LABEL_ENTROPY_SEEN), batch_stats.normalized_entropy(seen)))

    def _judge_token_labels(
        self, targets: torch.Tensor, seen_input: torch.Tensor | None, classes: int, sampled: bool
    ) -> None:
        """Learn, once per run, whether a language model's (batch, tokens) labels are its
        input ids (Hugging Face's models shift them inside) or already the next tokens
        (nanoGPT's ``y = ids[:, 1:]``, or a tag per token, or per frame of features),
        from the first step whose input is seen: step()'s `inputs`, or the model's forward
        on a sampled step. Where a sampled step shows none (the model called with a dict,
        say), it cannot be seen: that is said once, and such logits get no accuracy
        rather than one against a guessed token."""
        if seen_input is not None:
            same = batch_stats.targets_are_inputs(targets, seen_input, classes)
            if same is not None:  # None: no valid label in this batch to tell by
                self._accuracy.learn_token_shift(batch_stats.UNSHIFTED_LABELS if same else batch_stats.SHIFTED_LABELS)
            return
        if sampled:
            problem = ValueError(
                "the model's input is not seen (its first argument or input_ids= is no tensor, and step() got"
                " no inputs=): whether the labels of its (batch, tokens, vocabulary) logits are its input ids"
                " or already shifted by one token cannot be told"
            )
            consequence = (
                f"No {T.TRAIN_ACC} is recorded for them; pass inputs= (the input ids) to step(), or the logits"
                " and labels flattened and shifted as your loss takes them"
            )
            self._guard.report(TOKEN_LABELS, problem, consequence=consequence)

    def _read_gradients_now(self) -> None:
        """The optimizer did not step (AMP skipped an inf step, or accumulation):
        record the gradients as they are, so an inf shows, marked as skipped."""
        started = time.perf_counter()
        with torch.no_grad():
            measured = self._norms.tensor_norms(self._norms.grads())
        if measured is not None:
            self._current.append((self._grad_spec(measured[0]), measured[1]))
            self._stats_cost += time.perf_counter() - started

    def _note_facts(self, input_kind: str | None, classes: int | None) -> None:
        """Facts the rules need, into run.json at once: what the model's input is (token
        ids or features), and the number of classes the logits have (chance level ln C).
        Written when first seen, or when they change, not on every step; None: not seen."""
        changed: dict[str, Any] = {}
        if input_kind is not None and input_kind != self._input_kind:
            self._input_kind = changed[RJ.K_INPUT_KIND] = input_kind
        if classes is not None and classes != self._seen_classes:
            self._seen_classes = changed[RJ.K_NUM_CLASSES] = classes
        if changed and self._is_writer and self._run_json:
            self._run_json.update(changed)
            self._guard.call("run.json", RJ.write_run_json, self.log_dir, self._run_json)

    def _update_batch_size(self, given: int | None, *tensors: Any) -> None:
        if given:
            self._batch_size = float(given)
        elif not self._batch_size_fixed:
            for t in tensors:
                if isinstance(t, torch.Tensor) and t.dim() >= 1:
                    self._batch_size = float(t.shape[0])
                    return

    def _log_scalars(self, values: Mapping[str, TensorOrNumber], step: int | None) -> None:
        packet = Packet(max(self._step - 1, 0) if step is None else step, time.time())
        borrow = self._guard.enabled(BORROWING)
        for tag, value in values.items():
            _put(packet, tag, value, borrow)
        self._pending.append(packet)

    def _flush(self) -> None:
        packets, self._pending = self._pending, []
        self._report_lost_outputs(self._guard.call(KEEPING_OUTPUTS, self._accuracy.resolve))
        tensors: list[torch.Tensor] = []
        for packet in packets:
            tensors += packet.take_tensors(self._check_borrowed(packet))
        if not tensors:
            self._writer.submit(Batch(packets, None))
            return
        with torch.no_grad():
            try:
                # Four calls for any number of tensors (cat promotes mixed dtypes; after
                # cat along dim 0, reshape gives each tensor's values in order), where a
                # reshape and a cast per tensor cost ~1 ms a flush on a 2-core CPU.
                flat = torch.cat(torch.atleast_1d(tensors)).reshape(-1).float()
            except RuntimeError:  # tensors on several devices, of unlike shapes, or one that cannot be read
                flat = self._gather_one_by_one(packets, tensors)
        if flat is None:
            self._writer.submit(Batch(packets, None))
        elif flat.device.type == "cuda":
            host = torch.empty(flat.shape, dtype=torch.float32, pin_memory=True)
            host.copy_(flat, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record()
            self._writer.submit(Batch(packets, host, ready))
        else:
            self._writer.submit(Batch(packets, flat.cpu()))

    def _gather_one_by_one(self, packets: list[Packet], tensors: list[torch.Tensor]) -> torch.Tensor | None:
        """The flush's slow path: each value moved to one device on its own, so that a
        value that cannot be read (memory taken back, a tensor without data) costs only
        itself: it is left out, with its spec, and reported once per tag. Flushing the
        rest goes on; before, one such value lost the flush and every flush after it."""
        gathered: list[torch.Tensor] = []
        values = iter(tensors)
        for packet in packets:
            kept = []
            for spec in packet.specs:
                value = next(values)
                try:
                    gathered.append(value.reshape(-1).to(device=self._device, dtype=torch.float32, non_blocking=True))
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
            self._guard.report(part, problem, consequence="Such values are left out; everything else is written")

    def _report_lost_outputs(self, lost: list[tuple[Packet, str]] | None) -> None:
        if lost and self._guard.enabled(KEEPING_OUTPUTS):
            packet, why = lost[0]
            message = f"the outputs or targets given to step() at step {packet.step} were {why} before they were read"
            consequence = f"That step has no {T.TRAIN_ACC}; it is measured at once, on statistics steps, from now on"
            self._guard.report(KEEPING_OUTPUTS, RuntimeError(message), consequence)

    def _check_borrowed(self, packet: Packet) -> list[int]:
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

    # ---- run.json -------------------------------------------------------------

    def _initial_run_json(self, hparams: dict[str, Any], run_name: str | None, summary: dict[str, Any]) -> dict[str, Any]:
        # A sharded weight's statistics would be a collective that only this rank starts:
        # its ranks record their parts (`_record_shard_moments`), and the readers finish.
        if self._sharded:
            init_check = self._guard.call("init_check", check_sharded_initialization, self._layers) or []
        else:
            init_check = self._guard.call("init_check", check_initialization, self._layers) or []
        return {
            RJ.K_SCHEMA: RJ.SCHEMA_VERSION,
            RJ.K_RUN_NAME: run_name or self.log_dir.name,
            RJ.K_START: _now_iso(),
            RJ.K_END: None,
            RJ.K_STATUS: RJ.STATUS_RUNNING,
            RJ.K_STATUS_REASON: None,
            RJ.K_HPARAMS: _jsonable(hparams),
            RJ.K_OPTIMIZER: {
                "type": "+".join(type(optimizer).__name__ for optimizer in self._optimizers),
                "param_groups": [
                    {k: _jsonable(v) for k, v in group.items() if k != "params"}
                    | ({"optimizer": type(optimizer).__name__} if len(self._optimizers) > 1 else {})
                    for optimizer in self._optimizers
                    for group in optimizer.param_groups
                ],
            },
            RJ.K_BATCH_SIZE: self._batch_size,
            RJ.K_NUM_CLASSES: self._seen_classes,
            RJ.K_INPUT_KIND: self._input_kind,
            RJ.K_MODEL: summary,
            RJ.K_INIT_CHECK: init_check,
            RJ.K_TORCH: torch.__version__,
            RJ.K_DEVICE: str(self._device),
            RJ.K_WORLD_SIZE: self.world_size,
            RJ.K_DATA_PARALLEL: self._data_parallel,
            RJ.K_COLLECTOR: {**self.config.to_dict(), "layers": [layer.name for layer in self._layers]},
            RJ.K_STEPS: 0,
            RJ.K_ERRORS: [],
        }

    def _final_run_json(self, status: str, reason: str | None) -> None:
        data = self._run_json
        data[RJ.K_END] = _now_iso()
        data[RJ.K_STATUS] = status
        data[RJ.K_STATUS_REASON] = reason
        data[RJ.K_STEPS] = self._step
        data[RJ.K_BATCH_SIZE] = self._batch_size
        data[RJ.K_ERRORS] = list(self._guard.errors)
        data[RJ.K_COLLECTOR][RJ.K_STATS_STRIDE] = self._cadence.stride
        if self._probe.functional_relu_layers:
            data[RJ.K_MODEL]["activations"]["relu_functional_at_input_of"] = sorted(self._probe.functional_relu_layers)
        RJ.write_run_json(self.log_dir, data)

    def _excepthook(self, exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        try:
            self.close(RJ.STATUS_CRASHED, f"{exc_type.__name__}: {exc}")
        finally:
            self._previous_excepthook(exc_type, exc, tb)

    def _close_at_exit(self) -> None:
        self.close(RJ.STATUS_FINISHED, "closed at interpreter exit (close() was not called)")


def _hooked_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The optimizer whose `step()` runs the step hooks. A wrapper that subclasses
    Optimizer without calling its `__init__` (Accelerate's `AcceleratedOptimizer`) has
    no hooks of its own, and its `step()` calls the wrapped optimizer's: that one's
    hooks are the ones that run."""
    for _ in range(8):  # wrappers of wrappers, but never a cycle
        if "_optimizer_step_pre_hooks" in getattr(optimizer, "__dict__", {}) and hasattr(optimizer, "param_groups"):
            return optimizer
        inner = getattr(optimizer, "optimizer", None)
        if inner is None or inner is optimizer:
            break
        optimizer = inner
    raise TypeError(
        f"watch() takes a torch.optim.Optimizer or a list of them, got {type(optimizer).__name__}: the"
        " collector reads gradients through the optimizers' step hooks"
    )


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


def _put(packet: Packet, tag: str, value: TensorOrNumber | None, borrow: bool = False) -> None:
    """A host number goes into the packet as is; a tensor stays on its device until the flush.

    Tensors are copied (schedulers and GradScaler update theirs in place before the
    flush), except, with `borrow`, one that requires grad: a result of the step's graph
    such as the loss, kept by reference (see `Packet.borrow`), unless CUDA graphs may
    overwrite it (see `collectors.cuda_graphs`).
    """
    if value is None:
        return
    if isinstance(value, torch.Tensor):
        if type(value) is not torch.Tensor and getattr(value, "placements", None) is not None:
            # A DTensor (the norm clip_grad_norm_ returns for a sharded model): its local
            # value is the whole only where every rank holds it; anything else would take
            # a collective that the other ranks do not join.
            if not all(placement.is_replicate() for placement in value.placements):  # type: ignore[attr-defined]
                return
            value = value.to_local()  # type: ignore[attr-defined]
        if value.numel() != 1:
            packet.items.append((_scalar_spec(tag), value.detach().float().mean()))
        elif borrow and value.requires_grad and not (value.is_cuda and cuda_graphs_run_on(value.device)):
            # detach() drops the graph but shares the version counter that _check_borrowed reads
            packet.borrow(_scalar_spec(tag), value.detach())
        else:
            packet.items.append((_scalar_spec(tag), value.detach().clone()))
    else:
        packet.host[tag] = float(value)


@functools.lru_cache(maxsize=1024)
def _scalar_spec(tag: str) -> ScalarSpec:
    """One spec per tag, made once: the loss's is needed every step."""
    return ScalarSpec(tag)


_LOSS_SPEC = _scalar_spec(T.TRAIN_LOSS)  # for the quiet path, without the cache's call


def _first_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return repr(value)
