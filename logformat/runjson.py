"""The run.json schema: what a run says about itself beside its event files.

Written by the collector at attach and rewritten (atomically) at close; read by the
analyzers for the checks that need the model (initialization, activation kinds).
"""

from __future__ import annotations

import json
import os
from typing import Any

RUN_JSON = "run.json"
SCHEMA_VERSION = 1

STATUS_RUNNING = "running"
STATUS_FINISHED = "finished"
STATUS_CRASHED = "crashed"
# Ended by the user or a scheduler before it finished (MLflow's KILLED); foreign logs only.
STATUS_STOPPED = "stopped"

# Top-level keys.
K_SCHEMA = "schema_version"
K_RUN_NAME = "run_name"
K_START = "start_time"
K_END = "end_time"
K_STATUS = "status"
K_STATUS_REASON = "status_reason"
K_HPARAMS = "hparams"
# {"type": str, "param_groups": [{hyperparameter: value}]}; with several optimizers the type
# is their names joined by "+" ("Muon+AdamW"), and each group names its optimizer ("optimizer").
K_OPTIMIZER = "optimizer"
K_BATCH_SIZE = "batch_size"
# Classes of the logits the collector saw (or watch(num_classes=...)): chance level ln C for the rules.
K_NUM_CLASSES = "num_classes"
# What the model's input batch is, once the collector has seen one (null before, and for
# inputs of neither kind): integer token ids, which have no scale to normalize and
# whose next-token labels have no class mix to judge shuffling by, or features.
K_INPUT_KIND = "input_kind"
INPUT_TOKENS = "tokens"
INPUT_FEATURES = "features"
INPUT_KINDS = (INPUT_TOKENS, INPUT_FEATURES)
K_MODEL = "model"  # {"class", "parameters", "trainable_parameters", "layers": [...], "activations": {...}}
K_INIT_CHECK = "init_check"  # [{"layer", "shape", "fan_in", "std", "expected", "expected_std", "ratio", "constant", ...}]
K_TORCH = "torch_version"
K_DEVICE = "device"
K_WORLD_SIZE = "world_size"
# Ranks whose batches make up one optimizer step's batch: world_size under DDP and FSDP,
# fewer under tensor parallelism, whose ranks share examples; null when unknown.
K_DATA_PARALLEL = "data_parallel_ranks"
K_COLLECTOR = "collector"  # the collector's settings: sampling interval, histogram interval, ...
K_STATS_STRIDE = "stats_stride"  # in K_COLLECTOR, at close: steps between gradient norms at the end
K_STEPS = "steps"  # training steps recorded (updated at close)
K_ERRORS = "collector_errors"  # hook errors reported during the run


def write_run_json(run_dir: str | os.PathLike[str], data: dict[str, Any]) -> None:
    """Write atomically, so a reader never sees half a file."""
    path = os.path.join(os.fspath(run_dir), RUN_JSON)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=False, default=str, allow_nan=True)
    os.replace(tmp, path)


def read_run_json(run_dir: str | os.PathLike[str]) -> tuple[dict[str, Any] | None, str | None]:
    """Return ``(data, None)``, ``(None, None)`` when absent, or ``(None, reason)`` when unreadable."""
    path = os.path.join(os.fspath(run_dir), RUN_JSON)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"{path}: unreadable run.json ({exc})"
    if not isinstance(data, dict):
        return None, f"{path}: run.json is not a JSON object"
    return data, None
