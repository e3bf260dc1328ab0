"""The number of classes of a Hugging Face classifier, from its ``config.json``.

``save_pretrained`` writes the model's config beside ``trainer_state.json``: in the
output dir and in each ``checkpoint-<n>/``. For a classification head, ``id2label``
(or ``num_labels``) is the number of classes C, and the training loss is a C-way
cross-entropy whose chance level is ln C, which `underfitting` judges against. Only
those heads count: every config carries an ``id2label`` (two labels by default, on a
language model too), token classification's loss is dominated by its most frequent
tag (ln C says nothing of it), and a ``problem_type`` of regression or multi-label
classification is no C-way cross-entropy. Discovery hands this file over only from
directories it knows are a Trainer's: a ``config.json`` elsewhere is another tool's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from trainscope.logformat import runjson as RJ

CONFIG_JSON = "config.json"
# Architecture suffixes of heads trained with one C-way cross-entropy per example.
CLASSIFICATION_HEADS = ("ForSequenceClassification", "ForImageClassification", "ForAudioClassification")
# problem_type values under which such a head's loss is not a C-way cross-entropy.
NOT_SINGLE_LABEL = ("regression", "multi_label_classification")


def class_count(config: Mapping[str, Any]) -> int | None:
    """C of a classifier's config (its ``id2label``, else ``num_labels``); None for any
    other head, for a regression or multi-label one, or for fewer than two labels."""
    heads = config.get("architectures")
    if not isinstance(heads, list) or not heads:
        return None
    if not all(isinstance(h, str) and h.endswith(CLASSIFICATION_HEADS) for h in heads):
        return None
    if config.get("problem_type") in NOT_SINGLE_LABEL:
        return None
    labels = config.get("id2label")
    count = len(labels) if isinstance(labels, Mapping) and labels else config.get("num_labels")
    if isinstance(count, int) and not isinstance(count, bool) and count >= 2:
        return count
    return None


def parse_model_config(text: str, path: str) -> tuple[dict[str, Any], list[str]]:
    """``(meta, problems)``: run.json's `K_NUM_CLASSES` for a classifier's config, else
    nothing; a file that is not a JSON object is one problem line."""
    try:
        doc = json.loads(text)
    except ValueError as exc:  # RecursionError (deep nesting) is the source fence's to word
        return {}, [f"{path}: unreadable {CONFIG_JSON} ({exc})"]
    if not isinstance(doc, Mapping):
        return {}, [f"{path}: {CONFIG_JSON} is not a JSON object; ignored"]
    count = class_count(doc)
    return ({RJ.K_NUM_CLASSES: count} if count is not None else {}), []
