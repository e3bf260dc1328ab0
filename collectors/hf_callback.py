"""`TrainScopeCallback` for the Hugging Face `Trainer`: what `watch()` records, where the
loop is the Trainer's.

    trainer = Trainer(model, args, ..., callbacks=[TrainScopeCallback()])   # writes into args.output_dir

How each of `watch()`'s signals is had inside the Trainer's loop (transformers 5):

- Gradients before clipping: the Trainer clips (`max_grad_norm`, 1.0 by default) right
  after the last backward pass of a step, and its first callback after that,
  `on_pre_optimizer_step`, already sees clipped gradients. So the callback has the
  collector read them at the end of that backward pass: a hook on one parameter's
  gradient queues the read to run once autograd has finished (as DDP queues its
  bucket flush), on the backward pass after which Accelerate syncs the gradients
  (`GradientState.sync_gradients`: the last micro-batch of an accumulated step).
  Under a GradScaler (fp16) the gradients are still scaled then; they are read at the
  optimizer's step instead, after clipping.
- Steps the GradScaler skips: the optimizer's hooks see no step, as under `watch()`.
- Loss and accuracy: the model's own output (`loss`, `logits`) and the `labels` and
  `input_ids` it was called with, on the step's micro-batches.
- Validation: `eval_loss`, `eval_accuracy` (from `compute_metrics`) and a named eval
  set's `eval_<set>_loss` as `val/loss`, `val/acc`, `val/loss/<set>`.

run.json says the run was recorded in the Trainer's loop (``framework``): the readers
then know the run dir for a Trainer output dir from its first step, and fold the
Trainer's own TensorBoard directory beside it (``runs/<name>/``) into the one run,
with or without a checkpoint's trainer_state.json.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from trainscope.collectors.collector import Collector, watch
from trainscope.collectors.framework_batches import (
    INPUT_KEYS,
    LABEL_KEYS,
    logits_of,
    loss_of,
    validation_scalars,
)
from trainscope.logformat import runjson as RJ

# The TrainingArguments a run's diagnosis turns on, recorded as its hyperparameters
# (all ~150 of them would bury these in the runs table).
TRAINING_ARGS = (
    "learning_rate",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "weight_decay",
    "max_grad_norm",
    "lr_scheduler_type",
    "warmup_steps",
    "num_train_epochs",
    "max_steps",
    "optim",
    "seed",
)


class TrainScopeCallback(TrainerCallback):
    """Records a Hugging Face Trainer run as `watch()` records a loop of one's own.

    `log_dir`: where the run goes (default: the Trainer's `output_dir`). `hparams` are
    added to the TrainingArguments it records. Further keyword arguments are `watch()`'s
    (``run_name``, ``num_classes``, ``every=...`` and the other `CollectorConfig` fields).
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str] | None = None,
        hparams: Mapping[str, Any] | None = None,
        **watch_args: Any,
    ) -> None:
        self._log_dir = log_dir
        self._hparams = dict(hparams or {})
        self._watch_args = watch_args
        self.collector: Collector | None = None
        self._handles: list[Any] = []
        self._losses: list[torch.Tensor | None] = []  # each micro-batch's loss, this step
        self._summed = False  # whether those are shares of the step's loss that add up
        # The last micro-batch's logits, labels and input ids (earlier ones' are let go).
        self._last: dict[str, torch.Tensor | None] = {}
        self._read_queued = False  # the end-of-backward read is queued for the backward pass in progress

    # ---- the Trainer's events ---------------------------------------------------

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        model, optimizer = kwargs.get("model"), kwargs.get("optimizer")
        if self.collector is not None and not self.collector.closed:
            return
        hparams = {name: getattr(args, name, None) for name in TRAINING_ARGS} | self._hparams
        try:
            self.collector = watch(
                model,
                optimizer,
                self._log_dir or args.output_dir,
                hparams,
                batch_size=args.per_device_train_batch_size * args.gradient_accumulation_steps,
                start_step=state.global_step,
                scaler=getattr(optimizer, "scaler", None),
                framework=RJ.FRAMEWORK_HF_TRAINER,
                **self._watch_args,
            )
        except (TypeError, ValueError, OSError) as exc:  # a bad setting, optimizer or log dir: train on
            warnings.warn(f"TrainScope records nothing for this run: {exc}", RuntimeWarning, stacklevel=2)
            return
        self._handles.append(model.register_forward_hook(self._keep_output, with_kwargs=True))
        if getattr(optimizer, "scaler", None) is None:
            trainable = next((p for p in model.parameters() if p.requires_grad), None)
            if trainable is not None:
                self._handles.append(trainable.register_post_accumulate_grad_hook(self._queue_read))

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.collector is None or self.collector.closed:
            return
        losses, last = self._losses, self._last
        self._losses, self._last = [], {}
        self._read_queued = False  # a backward pass that raised never ran its queued read
        self.collector.step(
            _step_loss(losses, self._summed),
            outputs=last.get("logits"),
            targets=last.get("labels"),
            inputs=last.get("inputs"),
        )

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        found = validation_scalars(kwargs.get("metrics") or {})
        if self.collector is not None and found:
            self.collector.log_scalars(found)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self.collector is not None:
            self.collector.close()

    # ---- hooks ------------------------------------------------------------------

    def _keep_output(self, module: torch.nn.Module, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        if not module.training:  # an evaluation batch
            return
        inputs = next((kwargs[k] for k in INPUT_KEYS if isinstance(kwargs.get(k), torch.Tensor)), None)
        if inputs is None and args and isinstance(args[0], torch.Tensor):
            inputs = args[0]
        labels = next((kwargs[k] for k in LABEL_KEYS if isinstance(kwargs.get(k), torch.Tensor)), None)
        self._losses.append(loss_of(output))
        # The Trainer passes the step's token count to a model that takes it: each
        # micro-batch's loss is then its share of the step's, and they add up.
        self._summed = kwargs.get("num_items_in_batch") is not None
        self._last = {"logits": logits_of(output), "labels": labels, "inputs": inputs}

    def _queue_read(self, param: torch.Tensor) -> None:
        """During the backward pass: once it ends, read the gradients, if the optimizer
        steps after it (the last micro-batch), before the Trainer clips them."""
        if self._read_queued or self.collector is None or not _syncs_gradients():
            return
        self._read_queued = True
        torch.autograd.Variable._execution_engine.queue_callback(self._read_now)

    def _read_now(self) -> None:
        """Runs inside autograd's backward call, where an error would end the training
        step: none leaves it (the collector reports its own once; this is for the rest)."""
        self._read_queued = False
        try:
            if self.collector is not None:
                self.collector.read_gradients()
        except Exception as exc:  # noqa: BLE001 - the run must go on
            if self._handles:
                warnings.warn(
                    f"TrainScope stops reading gradients before clipping: {exc!r}",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self._handles.pop().remove()  # the gradient hook, added last


def _step_loss(losses: list[torch.Tensor | None], summed: bool) -> torch.Tensor | None:
    """The step's loss from its micro-batches' (the mean, or the sum of their shares);
    None where a micro-batch's model computed none (a loss of the user's own)."""
    if not losses or any(loss is None for loss in losses):
        return None
    if len(losses) == 1:
        return losses[0]  # the common case: no kernel launched
    total = torch.stack([loss.detach().float().reshape(()) for loss in losses]).sum()  # type: ignore[union-attr]
    return total if summed else total / len(losses)


def _syncs_gradients() -> bool:
    """Whether the backward pass in progress is the last before the optimizer steps:
    Accelerate, which the Trainer runs on, keeps that in a state shared process-wide."""
    from accelerate.state import GradientState

    return bool(GradientState().sync_gradients)
