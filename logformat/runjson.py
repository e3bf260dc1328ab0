"""The run.json schema: what a run says about itself beside its event files.

Written by the collector at attach and rewritten (atomically) at close; read by the
analyzers for the checks that need the model (initialization, activation kinds).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

RUN_JSON = "run.json"
SCHEMA_VERSION = 1

STATUS_RUNNING = "running"
STATUS_FINISHED = "finished"
STATUS_CRASHED = "crashed"
# Ended by the user or a scheduler before it finished: SIGTERM (K_STATUS_REASON names
# the signal), or MLflow's KILLED.
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
# Its type where no optimizer steps: a loop that updates the parameters itself (`watch(model)`).
BY_HAND = "by hand"
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
# Whose loop the run was recorded in, where a framework's callback recorded it (absent for
# watch() in a loop of one's own). FRAMEWORK_HF_TRAINER: the Trainer's, whose run dir is its
# output_dir (by default), so the readers fold the Trainer's own TensorBoard directory
# beside it (runs/<name>/ or logs/) into the run from the first step, not from the first
# checkpoint's trainer_state.json on.
K_FRAMEWORK = "framework"
FRAMEWORK_HF_TRAINER = "transformers.Trainer"


# Keys inside K_MODEL (the model summary, collectors/layers.py).
M_CLASS = "class"
M_PARAMETERS = "parameters"
M_TRAINABLE = "trainable_parameters"
M_LAYERS = "layers"  # [{"name", "type", "parameters", "trainable", "activation_after"}]
# In an M_LAYERS entry: whether the optimizer updates any of the layer's own parameters that
# require grad (every layer false while some parameter requires grad: the optimizer holds none).
L_TRAINABLE = "trainable"
M_ACTIVATIONS = "activations"  # {activation kind: [names of the layers it follows]}
# In M_ACTIVATIONS, at close: layers whose input showed a ReLU applied as a function.
M_RELU_FUNCTIONAL = "relu_functional_at_input_of"

# Keys of a K_INIT_CHECK entry (collectors/init_check.py; the readers complete a sharded
# model's from its ranks' parts, analyzers/reading/shards.py).
I_LAYER = "layer"
I_SHAPE = "shape"
I_FAN_IN = "fan_in"
I_EXPECTED = "expected"  # "he" or "xavier"
I_EXPECTED_STD = "expected_std"
I_STD = "std"
I_MEAN = "mean"
I_CONSTANT = "constant"
I_RATIO = "ratio"  # std / expected_std
I_FROM_SHARDS = "from_shards"  # a sharded model's entry, measured by the readers

# Keys of K_COLLECTOR that the readers use: `CollectorConfig`'s fields of the same names
# (a test holds them equal), and the layers measured.
S_EVERY = "every"
S_NOISE_WINDOW = "noise_window"
S_NOISE_EMA = "noise_ema"
S_HISTOGRAM_EVERY = "histogram_every"
S_HISTOGRAMS = "histograms"
S_NOISE_SCALE = "noise_scale"
S_LAYERS = "layers"


def json_safe(value: Any) -> Any:
    """The project's one policy for numbers JSON cannot hold: a non-finite float becomes
    the string "NaN", "Infinity" or "-Infinity" (what Python's json would write bare,
    which strict parsers refuse), numpy scalars and arrays become Python numbers and
    lists, mappings get string keys, and anything else its `str`. Readers take the
    strings back with `float()`."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays, without importing numpy
    if callable(tolist) and type(value).__module__ == "numpy":
        return json_safe(tolist())
    return str(value)


def write_run_json(run_dir: str | os.PathLike[str], data: dict[str, Any]) -> None:
    """Write atomically, so a reader never sees half a file; an OSError (a full disk)
    leaves the run.json that was there and no temporary file."""
    path = os.path.join(os.fspath(run_dir), RUN_JSON)
    tmp = f"{path}.{os.getpid()}.tmp"
    text = json.dumps(json_safe(data), indent=2, allow_nan=False).encode("utf-8")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(text)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        # A full disk: no half-written temporary file is left beside run.json.
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


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
