"""Reading a Hugging Face ``trainer_state.json`` (Trainer's checkpoint state).

``log_history`` is a list of dicts, each with ``step`` and what was logged at that
step: ``loss``, ``learning_rate``, ``grad_norm``, ``epoch`` during training,
``eval_loss``, ``eval_<metric>`` at evaluation, ``train_runtime``/``train_loss`` at the
end. Keys are renamed as Trainer's TensorBoard callback names them (``eval_loss`` ->
``eval/loss``, ``loss`` -> ``train/loss``), so one mapping table serves both logs.

The end entry is the evidence that training finished (``train()`` returned, also after
early stopping): the state then says ``status: finished``. A checkpoint's state, saved
during training, has no such entry, and says nothing of the run's end.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from trainscope.analyzers.reading.series import series_from_lists
from trainscope.analyzers.run import Series
from trainscope.logformat import runjson as RJ

_EVAL_PREFIX = "eval_"
_TEST_PREFIX = "test_"
STEP_KEY = "step"
# Steps are int64; a step beyond is no step.
_MIN_STEP, _MAX_STEP = -(2**63), 2**63 - 1
# Keys of the entry Trainer logs once, when train() returns.
END_KEYS = ("train_runtime", "train_loss")


def tensorboard_name(key: str) -> str:
    """The tag Trainer's TensorBoardCallback writes for a log key (its ``rewrite_logs``)."""
    if key.startswith(_EVAL_PREFIX):
        return "eval/" + key[len(_EVAL_PREFIX) :]
    if key.startswith(_TEST_PREFIX):
        return "test/" + key[len(_TEST_PREFIX) :]
    return "train/" + key


@dataclass
class TrainerState:
    series: dict[str, Series] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    global_step: int = -1
    problems: list[str] = field(default_factory=list)


def parse_trainer_state(text: str, path: str) -> TrainerState:
    state = TrainerState()
    try:
        doc = json.loads(text)
    except ValueError as exc:  # RecursionError (deep nesting) is the source fence's to word
        state.problems.append(f"{path}: unreadable trainer_state.json ({exc})")
        return state
    if not isinstance(doc, dict) or not isinstance(doc.get("log_history"), list):
        state.problems.append(f"{path}: trainer_state.json has no log_history list")
        return state
    if isinstance(doc.get("global_step"), int):
        state.global_step = doc["global_step"]
        state.meta[RJ.K_STEPS] = doc["global_step"]
    if isinstance(doc.get("train_batch_size"), int):
        state.meta[RJ.K_BATCH_SIZE] = doc["train_batch_size"]
    columns: dict[str, tuple[list[int], list[float]]] = {}
    skipped = 0
    for entry in doc["log_history"]:
        step = entry.get(STEP_KEY) if isinstance(entry, dict) else None
        if not isinstance(step, int) or isinstance(step, bool) or not _MIN_STEP <= step <= _MAX_STEP:
            skipped += 1
            continue
        for key, value in entry.items():
            if key == STEP_KEY or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            steps, values = columns.setdefault(tensorboard_name(key), ([], []))
            steps.append(step)
            values.append(_as_float(value))
    last = doc["log_history"][-1] if doc["log_history"] else None
    if isinstance(last, dict) and any(key in last for key in END_KEYS):
        state.meta[RJ.K_STATUS] = RJ.STATUS_FINISHED
    if skipped:
        state.problems.append(f"{path}: {skipped} log_history entr(ies) without an integer step; skipped")
    for name, (steps, values) in columns.items():
        state.series[name] = series_from_lists(steps, values)
    return state


def _as_float(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:  # an int beyond float range
        return math.inf if value > 0 else -math.inf
