"""What the framework callbacks pick out of a batch, a model's output and the logged
metrics (`collectors.framework_batches`), table-driven: recognized, or None/left out."""

from __future__ import annotations

import pytest
import torch

from trainscope.collectors.framework_batches import logits_of, loss_of, split_batch, validation_scalars
from trainscope.logformat import tags as T

X, Y = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])


@pytest.mark.parametrize(
    "batch, inputs, labels",
    [
        ((X, Y), X, Y),
        ([X, torch.ones(4), Y], X, Y),  # (x, weights, y): the labels come last
        ({"input_ids": X, "labels": Y}, X, Y),
        ({"x": X, "y": Y}, X, Y),
        ({"pixel_values": X}, X, None),
        (X, None, None),  # a bare tensor: which part is the label cannot be told
        ((X,), None, None),
        (("text", Y), None, Y),
        (None, None, None),
    ],
)
def test_split_batch(batch, inputs, labels):
    got_inputs, got_labels = split_batch(batch)
    assert got_inputs is inputs and got_labels is labels


class ModelOutput(dict):
    """A Hugging Face ModelOutput: a dict whose keys are also attributes."""

    __getattr__ = dict.get


@pytest.mark.parametrize(
    "output, logits, loss",
    [
        (X, X, None),
        (ModelOutput(loss=Y.sum(), logits=X), X, "loss"),
        ({"logits": X}, X, None),
        ((X, Y), None, None),  # a tuple: which element is the logits cannot be told
        ("text", None, None),
    ],
)
def test_logits_and_loss_of(output, logits, loss):
    assert logits_of(output) is logits
    assert (loss_of(output) is output["loss"]) if loss else loss_of(output) is None


@pytest.mark.parametrize(
    "name, tag",
    [
        ("val_loss", T.VAL_LOSS),
        ("val/loss", T.VAL_LOSS),
        ("valid_acc_epoch", T.VAL_ACC),
        ("val_accuracy", T.VAL_ACC),
        ("eval_loss", T.VAL_LOSS),
        ("eval_accuracy", T.VAL_ACC),
        ("eval_squad_loss", T.val_loss_tag("squad")),
        ("eval_de-en_accuracy", T.val_acc_tag("de-en")),
        ("val_loss/dataloader_idx_1", T.val_loss_tag("dataloader_idx_1")),
        ("train_loss", None),
        ("eval_runtime", None),
        ("val_f1", None),
        ("interval_loss", None),
    ],
)
def test_validation_scalars_names(name, tag):
    found = validation_scalars({name: 0.5})
    assert found == ({tag: 0.5} if tag else {})


def test_validation_scalars_keep_tensors_and_skip_what_is_no_number():
    value = torch.tensor(0.25)
    found = validation_scalars(
        {"val_loss": value, "val_acc": torch.ones(3), "eval_loss": True, "eval_accuracy": "x"}
    )
    assert found == {T.VAL_LOSS: value}
    assert found[T.VAL_LOSS] is value  # recorded without a host sync
