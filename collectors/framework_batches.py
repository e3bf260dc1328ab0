"""What a framework hands its callbacks, in the shapes `Collector.step()` takes.

A Lightning or Hugging Face Trainer owns the loop, so the collector's callbacks see a
step only through what the framework passes them: the batch as the data loader made
it, the model's output as its forward returned it, and the metrics the user's code
logged by name. These pure functions pick out the tensors the collector measures
(logits, labels, the input batch, the model's own loss) and the validation results
among the logged metrics; anything they do not recognize gives None (nothing
recorded for it), never an error: a callback must not break the run it watches.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from trainscope.logformat import tags as T

# Keys under which a batch dict holds the labels (Hugging Face's `labels`; the names
# Lightning examples use), and the model's input, tried in this order.
LABEL_KEYS = ("labels", "label", "targets", "target", "y")
INPUT_KEYS = ("input_ids", "pixel_values", "inputs", "input", "x")

# A validation metric's name as Lightning's `self.log` or the HF Trainer writes it:
# val_loss, val/acc, valid_accuracy_epoch, eval_loss, eval_<set>_loss (a named eval
# set), val_loss/dataloader_idx_1 (Lightning's second validation loader).
_VALIDATION_NAME = re.compile(
    r"(?:val|valid|validation|eval|evaluation)[_/.\-]"
    r"(?:(?P<set>[\w.\-]+?)[_/.\-])?"
    r"(?P<metric>loss|acc|accuracy)(?:_epoch)?"
    r"(?:/dataloader_idx_(?P<loader>\d+))?",
    re.IGNORECASE,
)


def logits_of(output: Any) -> torch.Tensor | None:
    """The logits in a model's output: the output itself where it is a tensor, else
    its `logits` (a Hugging Face ModelOutput, or a dict holding them)."""
    if isinstance(output, torch.Tensor):
        return output
    logits = output.get("logits") if isinstance(output, Mapping) else getattr(output, "logits", None)
    return logits if isinstance(logits, torch.Tensor) else None


def loss_of(output: Any) -> torch.Tensor | None:
    """The loss a model computed itself (Hugging Face models given `labels`)."""
    loss = output.get("loss") if isinstance(output, Mapping) else getattr(output, "loss", None)
    return loss if isinstance(loss, torch.Tensor) else None


def split_batch(batch: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(inputs, labels) of a batch: ``(x, y)`` (or ``(x, ..., y)``) as most data loaders
    give it, or a dict with the keys above; None for what is not there."""
    if isinstance(batch, Mapping):
        return _first_tensor(batch, INPUT_KEYS), _first_tensor(batch, LABEL_KEYS)
    if isinstance(batch, (list, tuple)) and len(batch) >= 2:
        inputs, labels = batch[0], batch[-1]
        return (
            inputs if isinstance(inputs, torch.Tensor) else None,
            labels if isinstance(labels, torch.Tensor) else None,
        )
    return None, None


def validation_scalars(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The validation loss and accuracy among logged metrics, under their canonical
    tags (`val/loss`, `val/acc`; `val/loss/<set>` for a named set or a further loader).
    Values stay as given (tensors are recorded without a host sync)."""
    found: dict[str, Any] = {}
    for name, value in metrics.items():
        match = _VALIDATION_NAME.fullmatch(str(name))
        if match is None or not _is_scalar(value):
            continue
        is_loss = match["metric"].lower() == "loss"
        eval_set = match["set"] or (f"dataloader_idx_{match['loader']}" if match["loader"] else None)
        if eval_set is None:
            tag = T.VAL_LOSS if is_loss else T.VAL_ACC
        else:
            tag = T.val_loss_tag(eval_set) if is_loss else T.val_acc_tag(eval_set)
        found.setdefault(tag, value)
    return found


def _first_tensor(batch: Mapping[str, Any], keys: tuple[str, ...]) -> torch.Tensor | None:
    for key in keys:
        value = batch.get(key)
        if isinstance(value, torch.Tensor):
            return value
    return None


def _is_scalar(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.numel() == 1
    return isinstance(value, (int, float)) and not isinstance(value, bool)
