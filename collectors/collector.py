"""`watch()`: one call that instruments a PyTorch training loop.

A `Collector` wires four parts, each with one job, and plans each step:

- `plan.plan_step` decides, before step k starts, what it records (a frozen
  `StepPlan`): all of the first 200 steps get the gradient norms, later ones as the
  `StatsCadence` allows (`stats_budget`), every `every`-th step is sampled, and a quiet
  plan (nothing but loss, learning rate and step time) holds until the next step that
  adds something, so those steps are not planned one by one.
- `tap.OptimizerTap` reads gradients, weights and updates through the optimizers' step
  hooks, as the plan says.
- `recorder.StepRecorder` turns `collector.step(loss, ...)` into the step's packet:
  every device value stays a tensor (the loss and the logits kept by reference).
- `flusher.Flusher` copies every pending value to the host in one copy, every
  `flush_steps` steps or `flush_seconds`, and hands them to the writer thread. Nothing
  before the flush reads a device value on the host, so steps never wait for the GPU.
- `run_record.RunRecord` owns run.json and closes the run when the process ends.

Under DDP every rank but 0 records only its step time. A sharded model (FSDP's
`fully_shard`, tensor parallelism) has each rank measure its own shards, on the same
steps (a fixed schedule), as partial sums that the readers add up: a norm of a whole
tensor would be a collective, which a collector must never start.

Hook code runs under an `ErrorGuard`: an error is reported once, never raised.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from torch import nn

from trainscope.collectors.batch_signals import BatchSignals, logits_of
from trainscope.collectors.cadence import StatsCadence
from trainscope.collectors.config import CollectorConfig
from trainscope.collectors.cuda_graphs import cuda_graphs_run_on
from trainscope.collectors.deferred_accuracy import DeferredAccuracy
from trainscope.collectors.distributed import data_parallel_ranks, rank_and_world_size
from trainscope.collectors.flusher import Flusher
from trainscope.collectors.grad_stats import LayerNorms  # noqa: F401 - still found here by code that patches it
from trainscope.collectors.guard import BORROWING, KEEPING_OUTPUTS, ErrorGuard
from trainscope.collectors.histograms import pack_histogram
from trainscope.collectors.model_view import ModelView
from trainscope.collectors.packets import Packet
from trainscope.collectors.plan import StepPlan, plan_step
from trainscope.collectors.recorder import StepRecorder, TensorOrNumber
from trainscope.collectors.run_record import RunRecord
from trainscope.collectors.tap import OptimizerTap
from trainscope.logformat import runjson as RJ
from trainscope.logformat import tags as T


def watch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer] | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    hparams: Mapping[str, Any] | None = None,
    *,
    run_name: str | None = None,
    batch_size: int | None = None,
    num_classes: int | None = None,
    scaler: Any | None = None,
    start_step: int = 0,
    framework: str | None = None,
    config: CollectorConfig | None = None,
    **settings: Any,
) -> Collector:
    """Attach a collector to `model` and `optimizer`, writing a run into `log_dir`.

    `optimizer` may be a list of the optimizers that train the model together (e.g.
    Muon for the matrices, AdamW for the rest): each step's gradients are read when the
    first of them steps, and its updates once the last of them has. Without one (a
    loop that updates the parameters by hand, ``p.data.add_(p.grad, alpha=-lr)``),
    the gradients are read at `step()`, a sampled step's update from a copy of the
    weights taken at the `step()` before, and the learning rate from ``step(lr=...)``.

    `hparams` are recorded as given (a ``batch_size`` entry is used as the batch size).
    `batch_size` matters with gradient accumulation, where a step's batch is larger
    than the tensors passed to `step()`. `scaler` is an AMP GradScaler whose loss scale
    is then recorded. `start_step` is the number of the first step recorded: a run
    resumed from a checkpoint of step N passes N, and its curves go on in the same
    `log_dir` where they stopped. `framework` names the framework whose loop calls
    `step()` (its callback passes it: run.json's ``framework``, by which the readers
    know what that framework writes beside the run). Further keyword arguments are
    `CollectorConfig` fields, e.g. ``every=10``.

    A `log_dir` that cannot be written raises one OSError here, before anything is
    attached.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"watch() takes the model as a torch.nn.Module, got {type(model).__name__}")
    if log_dir is None:
        raise TypeError("watch() needs log_dir, the directory the run is written into")
    given = [] if optimizer is None else optimizer if isinstance(optimizer, (list, tuple)) else [optimizer]
    optimizers = [_hooked_optimizer(each) for each in given]
    if optimizer is not None and not optimizers:
        raise TypeError("watch() takes a torch.optim.Optimizer or a list of them, got an empty list")
    if not (isinstance(start_step, int) and start_step >= 0):
        raise ValueError(f"watch() takes start_step as an int >= 0, got {start_step!r}")
    if config is None:
        config = CollectorConfig(**settings)
    elif settings:
        raise TypeError("pass either config= or CollectorConfig fields, not both")
    hparams = dict(hparams or {})
    _check_writable(Path(log_dir))
    return Collector(
        model,
        optimizers,
        log_dir,
        hparams,
        run_name,
        batch_size,
        num_classes,
        scaler,
        start_step,
        config,
        framework,
    )


def _check_writable(run_dir: Path) -> None:
    """One clear error at attach for a folder this process cannot write (read-only,
    another user's, a file in the way), instead of a PermissionError from deep inside
    the writer thread's first file."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir, prefix=".trainscope-"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        message = (
            f"watch() cannot write the run into {run_dir}: {reason}; pass a log_dir this process can write to"
        )
        raise OSError(exc.errno, message) from None


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
        framework: str | None = None,
    ) -> None:
        self.log_dir = Path(log_dir)
        self.rank, self.world_size = rank_and_world_size()
        self.closed = False
        self._guard = guard = ErrorGuard()
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
        self._view = view = ModelView(model, optimizers, guard, config.activations)
        self._step = start_step  # the step being trained now; step() records it
        self._last_step_time = time.perf_counter()  # when step() was last called: time/step_seconds
        self._last_step_end = self._last_step_time  # when it last returned: the cadence's step time
        if view.sharded:
            self._cadence = StatsCadence.same_on_every_rank(config.stats_every, config.stats_budget)
        else:
            self._cadence = StatsCadence(config.stats_every, config.stats_budget)
        # Whether quiet steps may take the quiet path: a single process's run without a
        # GradScaler (whose scale is copied each step).
        self._quiet_path_fits = self.rank == 0 and self.world_size == 1 and scaler is None
        self._plan: StepPlan | None = None  # the plan of the step in progress (None: ranks that plan nothing)

        self._record = RunRecord(self.log_dir, guard, num_classes)
        self._accuracy = DeferredAccuracy(num_classes)
        hinted = batch_size or hparams.get("batch_size")
        self._signals = BatchSignals(
            guard,
            self._accuracy,
            num_classes,
            float(hinted) if isinstance(hinted, (int, float)) else None,
            self._record.note_facts,
        )
        self.log_dir.mkdir(parents=True, exist_ok=True)
        suffix = "" if self.world_size == 1 else f".rank{self.rank}"
        device = _first_device(view.model)
        self._flusher = Flusher(self.log_dir, suffix, config, guard, self._accuracy, device)
        self._tap = OptimizerTap(
            optimizers,
            config,
            guard,
            self.rank,
            view.sharded,
            view.plain_share,
            lambda: self._signals.batch_size,
            self._data_parallel,
            pack_histogram,
        )
        self._recorder = StepRecorder(
            guard,
            self._flusher,
            self._tap,
            self._signals,
            self._accuracy,
            view.param_groups,
            scaler,
            self.rank,
            self.world_size,
            cuda_graphs_run_on,
        )
        # Rank 0 records the run; another rank its step time, and its shards of a sharded model.
        if not (self._is_writer or view.sharded):
            return
        model_map = view.attach()
        self._tap.measure(view.layers)
        if view.lazy:  # its parameters get their shapes in the first forward pass: mapped then
            self._tap.before_read = lambda: guard.call("layers changed", self._remap_layers)
        if view.sharded:
            guard.call("init_check", self._record_shard_parts, start_step)
        self._recorder.probe = view.probe
        self._plan_step(self._step)
        self._record.install_exit_hooks(self.close, crash_hook=self._is_writer)
        if not self._is_writer:
            return
        view.say_what_cannot_be_measured(self._noise_batch_unknown)
        settings = {**self.config.to_dict(), RJ.S_LAYERS: [layer.name for layer in view.layers]}
        facts = {
            RJ.K_BATCH_SIZE: self._signals.batch_size,
            RJ.K_MODEL: model_map.summary,
            RJ.K_INIT_CHECK: view.init_check(),
            RJ.K_DEVICE: str(device),
            RJ.K_WORLD_SIZE: self.world_size,
            RJ.K_DATA_PARALLEL: self._data_parallel,
            RJ.K_COLLECTOR: settings,
            **({RJ.K_FRAMEWORK: framework} if framework is not None else {}),  # none in a loop of one's own
        }
        self._record.start(run_name, hparams, optimizers, facts, start_step)

    # ---- the user's calls -------------------------------------------------------

    def step(
        self,
        loss: TensorOrNumber | None = None,
        *,
        outputs: Any = None,
        targets: torch.Tensor | None = None,
        inputs: torch.Tensor | None = None,
        acc: TensorOrNumber | None = None,
        batch_size: int | None = None,
        grad_norm: TensorOrNumber | None = None,
        lr: float | None = None,
    ) -> None:
        """Record the training step that just ended; call once per optimizer step, after it.

        Without an optimizer (`watch(model, log_dir=...)`), call it once the parameters
        are updated, their gradients still there, with the step's learning rate as `lr`.

        `outputs` are the logits, for the accuracy against `targets`: a tensor, or what a
        model returns around them (a Hugging Face output's ``.logits``, a dict's
        ``"logits"``, a tuple's first tensor of one dimension or more).

        If you clip gradients, pass what `clip_grad_norm_` returned as `grad_norm`: it is
        the norm before clipping, which `grad/global_norm` should show (a clipped norm
        hides an explosion), and the collector sees the gradients only at
        `optimizer.step()`, after clipping. It is then recorded every step, at no cost.
        """
        if self.closed:
            return
        now = time.perf_counter()
        seconds, self._last_step_time = now - self._last_step_time, now
        if not self._optimizers:
            self._view.hand_group["lr"] = lr
            self._guard.call("gradients", self._tap.read_by_hand)
        if outputs is not None and type(outputs) is not torch.Tensor:
            outputs = self._guard.call("finding the logits", logits_of, outputs, self._guard)
        plan = self._plan
        if not self._is_writer:
            record_rank = self._recorder.record_rank_step
            self._guard.call(
                "step", record_rank, self._step, plan, seconds, batch_size, targets, inputs, outputs
            )
        elif plan.quiet and acc is None and grad_norm is None and batch_size is None:  # type: ignore[union-attr]
            self._guard.call(
                "step", self._recorder.record, self._step, plan, seconds, loss, outputs, targets, inputs
            )
        else:
            args = (seconds, loss, outputs, targets, inputs, acc, batch_size, grad_norm)
            self._guard.call("step", self._record_step, *args)
        cost = self._tap.stats_cost + self._signals.stats_cost
        if cost:
            self._cadence.recorded(self._step, cost)
            self._tap.stats_cost = self._signals.stats_cost = 0.0
        self._step += 1
        self._tap.end_step()
        if plan is not None and self._step >= plan.until:
            self._plan_step(self._step)
        if self._flusher.due():
            self.flush()
        if self._is_writer:
            # From return to return, so that a step's own recording (its accuracy) is in its time.
            end = time.perf_counter()
            self._cadence.step_took(end - self._last_step_end, plan.kind)  # type: ignore[union-attr]
            self._last_step_end = end

    def read_gradients(self) -> None:
        """Read the gradients of the step in progress now, before the optimizer steps.

        For a framework whose own hook runs between the backward pass and gradient
        clipping (Lightning's `on_before_optimizer_step`; the framework callbacks call
        it), so that the norms are those before clipping, as in a loop of one's own
        given `grad_norm`. The optimizers' step hooks then read no gradients in this
        step; they still mark that it stepped, and read its update.
        """
        if not self.closed:
            self._tap.read_gradients()

    def log_validation(
        self,
        loss: TensorOrNumber | None = None,
        acc: TensorOrNumber | None = None,
        *,
        step: int | None = None,
        **metrics: TensorOrNumber,
    ) -> None:
        """Record validation results at the last training step (or `step`). Extra metrics go to ``val/<name>``."""
        values = {T.VAL_LOSS: loss, T.VAL_ACC: acc, **{T.VAL_PREFIX + name: v for name, v in metrics.items()}}
        self.log_scalars({tag: v for tag, v in values.items() if v is not None}, step=step)

    def log_scalars(self, values: Mapping[str, TensorOrNumber], *, step: int | None = None) -> None:
        """Record any scalars under the given tags (tensors stay on the device until the next flush)."""
        if self.closed or not self._is_writer:
            return
        at = max(self._step - 1, 0) if step is None else step
        self._guard.call("log_scalars", self._recorder.log_scalars, values, at)

    def flush(self, wait: bool = False) -> None:
        """Move pending values to the host in one copy and hand them to the writer thread;
        with `wait`, return once they are on disk."""
        self._flusher.flush(wait)

    def close(self, status: str = RJ.STATUS_FINISHED, reason: str | None = None) -> None:
        """Write everything, remove every hook, and mark the run finished (or `status`)."""
        if self.closed:
            return
        self.closed = True
        self._tap.remove()
        probe = self._view.probe
        if self._is_writer and probe is not None:
            probe.disarm()
        self._flusher.close()
        if self._is_writer:
            self._guard.call("run.json", self._record.finish, status, reason, self._final_run_json())
        self._record.remove_exit_hooks()

    def __enter__(self) -> Collector:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
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
        return self._flusher.writer.path

    @property
    def stats_stride(self) -> int:
        """Steps between gradient norms and accuracy that `stats_budget` calls for now
        (1: every step); the first 200 steps get them all whatever it says."""
        return self._cadence.stride

    # ---- wiring -------------------------------------------------------------------

    def _record_step(self, *args: Any) -> None:
        """A step whose plan reads more than loss, learning rate and step time, or one
        given more than those: the step recorder, under the plan of the step."""
        assert self._plan is not None
        self._recorder.record(self._step, self._plan, *args)

    def _plan_step(self, step: int) -> None:
        """Decide, before `step` starts, what it records (`plan.plan_step`), and get the
        model ready for it: layers remapped where the trained parameters changed, the
        activation probe armed on sampled steps."""
        view, guard, sampled = self._view, self._guard, self.config.is_sampled(step)
        if sampled and view.changed():
            guard.call("layers changed", self._remap_layers)
        quiet_fits = self._quiet_path_fits and self._quiet_fits()
        self._plan = self._tap.plan = plan_step(step, self.config, self._cadence, quiet_fits)
        probe = view.rebuild_probe()
        if probe is not None:
            self._recorder.probe = probe
        if sampled and self._is_writer and guard.enabled("activations") and view.probe is not None:
            # The probe measures the input batch only for loops that do not pass step() one.
            view.probe.measure_input = not (self._signals.inputs_given and guard.enabled("batch_stats"))
            guard.call("activations", view.probe.arm)
        if not self._optimizers and self._plan.update_ratios:  # by hand: the weights before its update
            guard.call("updates", self._tap.copy_weights_before)

    def _quiet_fits(self) -> bool:
        """Whether a quiet step may take the quiet path now: the loss and the outputs still
        kept by reference, and learning rates that are plain numbers (a tensor is copied)."""
        if not (self._guard.enabled(BORROWING) and self._guard.enabled(KEEPING_OUTPUTS)):
            return False
        return all(type(group.get("lr")) in (float, int) for group in self._view.param_groups())

    def _remap_layers(self) -> None:
        """The trained parameters changed, or a lazy model has its shapes: measure the new
        layers from the next read on, and say so in run.json."""
        was_lazy = self._view.lazy
        model_map = self._view.remap()
        if model_map is None:  # still lazy
            return
        self._tap.measure(self._view.layers)
        self._tap.before_read = None
        data = self._record.data
        if not data:
            return
        if was_lazy:
            data[RJ.K_MODEL] = model_map.summary
            if not self._view.sharded:
                data[RJ.K_INIT_CHECK] = self._view.init_check()
        else:
            data[RJ.K_MODEL][RJ.M_LAYERS] = model_map.summary[RJ.M_LAYERS]
            data[RJ.K_MODEL][RJ.M_TRAINABLE] = model_map.summary[RJ.M_TRAINABLE]
        data[RJ.K_COLLECTOR][RJ.S_LAYERS] = [layer.name for layer in self._view.layers]
        self._record.write()

    def _record_shard_parts(self, step: int) -> None:
        parts = self._view.shard_parts(self.rank, self._tap.share)
        if parts:
            self._flusher.pending.append(Packet(step, time.time(), parts))

    def _final_run_json(self) -> dict[str, Any]:
        data = self._record.data
        data[RJ.K_COLLECTOR][RJ.K_STATS_STRIDE] = self._cadence.stride
        probe = self._view.probe
        if probe is not None and probe.functional_relu_layers:
            data[RJ.K_MODEL][RJ.M_ACTIVATIONS][RJ.M_RELU_FUNCTIONAL] = sorted(probe.functional_relu_layers)
        errors = list(self._guard.errors)
        return {RJ.K_STEPS: self._step, RJ.K_BATCH_SIZE: self._signals.batch_size, RJ.K_ERRORS: errors}


def _hooked_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The optimizer whose `step()` runs the step hooks. A wrapper that subclasses
    Optimizer without calling its `__init__` (Accelerate's `AcceleratedOptimizer`) has
    no hooks of its own, and its `step()` calls the wrapped optimizer's: that one's
    hooks are the ones that run."""
    for _ in range(8):  # wrappers of wrappers, but never a cycle
        if "_optimizer_step_pre_hooks" in getattr(optimizer, "__dict__", {}) and hasattr(
            optimizer, "param_groups"
        ):
            return optimizer
        inner = getattr(optimizer, "optimizer", None)
        if inner is None or inner is optimizer:
            break
        optimizer = inner
    raise TypeError(
        f"watch() takes a torch.optim.Optimizer or a list of them, got {type(optimizer).__name__}: the"
        " collector reads gradients through the optimizers' step hooks"
    )


def _first_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
