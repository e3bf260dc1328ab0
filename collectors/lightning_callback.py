"""`TrainScopeCallback` for the Lightning `Trainer`: what `watch()` records, where the
loop is Lightning's.

    trainer = L.Trainer(callbacks=[TrainScopeCallback()])   # writes into trainer.log_dir

How each of `watch()`'s signals is had inside Lightning's loop:

- Gradients before clipping: `on_before_optimizer_step` runs after the backward pass
  and before `gradient_clip_val` clips; the callback has the collector read them
  there (`Collector.read_gradients`). The optimizer's own step pre-hook would come too
  early (Lightning passes the backward pass to `optimizer.step()` as a closure) or too
  late (under AMP, after clipping).
- Steps the AMP GradScaler skips: its `step()` does not call the optimizer's, so the
  collector's hooks see no step, and it records `opt/step_skipped` as under `watch()`.
- Gradient accumulation: `on_before_optimizer_step` marks the batches that end an
  optimizer step; the collector records once per optimizer step (its step counts
  `trainer.global_step`), with the mean loss of the step's micro-batches and their
  total batch size.
- Accuracy: the module's forward output (where it is logits) and the batch's labels
  (``(x, y)`` or a dict's ``labels``: `framework_batches.split_batch`).
- Validation: the loss and accuracy the LightningModule logs (`self.log("val_loss", ...)`)
  as `val/loss` and `val/acc`, at the end of each validation (not the sanity check).

By default the run goes into `trainer.log_dir`, the directory Lightning's own logger
(TensorBoard or CSV) writes into: one directory holds both, and the readers show it as
one run, the canonical tags taking precedence over the logger's names for the same series.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch

from trainscope.collectors.collector import Collector, watch
from trainscope.collectors.framework_batches import logits_of, split_batch, validation_scalars
from trainscope.logformat import runjson as RJ


class TrainScopeCallback(pl.Callback):
    """Records a Lightning run as `watch()` records a loop of one's own.

    `log_dir`: where the run goes (default: `trainer.log_dir`). `hparams` are added to
    the module's `save_hyperparameters()`. Further keyword arguments are `watch()`'s
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
        self._output_hook: torch.utils.hooks.RemovableHandle | None = None
        self._logits: torch.Tensor | None = None  # the last training forward's output
        self._losses: list[torch.Tensor] = []  # the micro-batches' of the optimizer step in progress
        self._examples = 0  # and their examples
        self._stepping = False  # on_before_optimizer_step ran since the last recorded step

    # ---- Lightning's hooks ------------------------------------------------------

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.collector is not None and not self.collector.closed:
            return
        log_dir = self._log_dir or trainer.log_dir or trainer.default_root_dir
        hparams = {**_module_hparams(pl_module), **self._hparams}
        if trainer.accumulate_grad_batches > 1:
            hparams.setdefault("accumulate_grad_batches", trainer.accumulate_grad_batches)
        try:
            self.collector = watch(
                pl_module,
                list(trainer.optimizers) or None,
                log_dir,
                hparams,
                scaler=getattr(trainer.precision_plugin, "scaler", None),
                start_step=trainer.global_step,
                **self._watch_args,
            )
        except (TypeError, ValueError, OSError) as exc:  # a bad setting, optimizer or log dir: train on
            warnings.warn(f"TrainScope records nothing for this run: {exc}", RuntimeWarning, stacklevel=2)
            return
        self._output_hook = pl_module.register_forward_hook(self._keep_logits)

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self.collector is not None:
            self._stepping = True
            self.collector.read_gradients()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.collector is None or self.collector.closed:
            return
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        inputs, labels = split_batch(batch)
        if isinstance(loss, torch.Tensor):
            self._losses.append(loss)
        self._examples += _examples(labels, inputs)
        if not self._stepping:  # a micro-batch of an accumulated step: its optimizer step is to come
            return
        self.collector.step(
            self._step_loss(trainer.accumulate_grad_batches),
            outputs=self._logits,
            targets=labels,
            inputs=inputs,
            batch_size=self._examples or None,
        )
        self._stepping, self._losses, self._examples, self._logits = False, [], 0, None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.collector is None or trainer.sanity_checking:
            return
        found = validation_scalars(trainer.callback_metrics)
        if found:
            self.collector.log_scalars(found)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close(RJ.STATUS_FINISHED, None)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._close(RJ.STATUS_CRASHED, f"{type(exception).__name__}: {exception}")

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._close(RJ.STATUS_FINISHED, None)  # fit ended without on_train_end (no step to take)

    # ---- helpers ----------------------------------------------------------------

    def _keep_logits(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if module.training:  # not a validation batch's
            self._logits = logits_of(output)

    def _step_loss(self, accumulate: int) -> torch.Tensor | None:
        """The optimizer step's loss: Lightning hands each micro-batch's divided by
        `accumulate_grad_batches` (what its backward took); their mean, undivided."""
        if not self._losses:
            return None
        if len(self._losses) == 1 and accumulate == 1:
            return self._losses[0]  # the common case: no kernel launched
        return torch.stack([loss.detach().float().reshape(()) for loss in self._losses]).mean() * accumulate

    def _close(self, status: str, reason: str | None) -> None:
        if self._output_hook is not None:
            self._output_hook.remove()
            self._output_hook = None
        if self.collector is not None and not self.collector.closed:
            self.collector.close(status, reason)


def _module_hparams(pl_module: pl.LightningModule) -> dict[str, Any]:
    """What the module's `save_hyperparameters()` kept (an AttributeDict), as a dict."""
    return dict(getattr(pl_module, "hparams", None) or {})


def _examples(labels: torch.Tensor | None, inputs: torch.Tensor | None) -> int:
    for tensor in (labels, inputs):
        if tensor is not None and tensor.dim() >= 1:
            return int(tensor.shape[0])
    return 0
