"""Hugging Face ``TrainingArguments`` as hyperparameters, from the text the Trainer writes.

The Trainer's TensorBoard callback logs its arguments once, as the text summary
``args/text_summary`` holding ``args.to_json_string()``. That JSON is what is read
here; ``training_args.bin`` is a pickle, and unpickling a file from a log dir runs
whatever code it names, so it is never opened.

Of the 100-odd arguments, `KEYS` are kept: those that change how the model trains.
Paths, hub and logging settings differ from run to run without saying why one run
trained differently from another.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

# The tag of TensorBoardCallback's ``tb_writer.add_text("args", args.to_json_string())``.
TAG = "args/text_summary"
KEYS = (
    "learning_rate",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_train_epochs",
    "max_steps",
    "optim",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "max_grad_norm",
    "lr_scheduler_type",
    "warmup_steps",
    "warmup_ratio",
    "label_smoothing_factor",
    "fp16",
    "bf16",
    "gradient_checkpointing",
    "seed",
)
MAX_TEXT = 1 << 20  # bytes; the arguments are a few KB


def parse(text: str | bytes) -> dict[str, Any]:
    """The training-relevant arguments of ``args.to_json_string()``; {} for anything else."""
    if len(text) > MAX_TEXT:
        return {}
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError, UnicodeDecodeError):
        return {}
    if not isinstance(doc, dict):
        return {}
    return {
        key: doc[key]
        for key in KEYS
        if key in doc and (doc[key] is None or isinstance(doc[key], (bool, int, float, str)))
    }


def from_text_summary(strings: Iterable[bytes]) -> dict[str, Any]:
    """`parse` of a text summary's tensor (its ``string_val``: one JSON document)."""
    out: dict[str, Any] = {}
    for text in strings:
        out.update(parse(text))
    return out
