"""Facts about a run that rules and the dashboard both need: batch size, classes, optimizer, layers.

They come from run.json (the collector's), or from what a foreign log says of itself
under run.json's keys (hyperparameters, batch size), so a log without them simply has
fewer facts: every function here returns None or an empty value rather than guessing.
The app imports these instead of reaching into the rules.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from trainscope.analyzers.reading.hparams import NUM_CLASSES_KEYS
from trainscope.analyzers.run import Run
from trainscope.logformat import runjson as R
from trainscope.logformat import tags as T

# Normalization layers: what follows them is rescaled, whatever scale the layer before had.
NORM_TYPES = frozenset(
    {
        "BatchNorm1d",
        "BatchNorm2d",
        "BatchNorm3d",
        "SyncBatchNorm",
        "LazyBatchNorm1d",
        "LazyBatchNorm2d",
        "LazyBatchNorm3d",
        "LayerNorm",
        "GroupNorm",
        "RMSNorm",
        "InstanceNorm1d",
        "InstanceNorm2d",
        "InstanceNorm3d",
        "LocalResponseNorm",
    }
)
# Module types whose weights are not a plain fan-in matrix: their scale, sparsity and
# gradients follow other laws, so per-layer comparisons and init checks leave them out.
NORM_OR_EMBEDDING_TYPES = NORM_TYPES | frozenset({"Embedding", "EmbeddingBag"})
RECURRENT_TYPES = frozenset({"LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell"})

# Hyperparameter names under which users commonly log these facts.
_BATCH_SIZE_KEYS = ("batch_size", "train_batch_size", "per_device_train_batch_size", "bs", "batch")
_LR_KEYS = ("lr", "learning_rate", "learningrate")


def finite_number(value: Any) -> float | None:
    """`value` as a finite float, or None (a run.json or hyperparameter value may be anything)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def hparams(run: Run) -> Mapping[str, Any]:
    h = run.meta.get(R.K_HPARAMS) if run.meta else None
    return h if isinstance(h, Mapping) else {}


def _hparam_number(run: Run, keys: Sequence[str]) -> float | None:
    h = {str(k).lower(): v for k, v in hparams(run).items()}
    for key in keys:
        if key in h and finite_number(h[key]) is not None:
            return finite_number(h[key])
    return None


def batch_size(run: Run) -> int | None:
    """Batch size from run.json, else from the hyperparameters; None when unknown."""
    value = finite_number(run.meta.get(R.K_BATCH_SIZE)) if run.meta else None
    if value is None:
        value = _hparam_number(run, _BATCH_SIZE_KEYS)
    return int(value) if value is not None and value >= 1 else None


def data_parallel_ranks(run: Run) -> int:
    """How many ranks' batches make one step's batch (run.json): the batch size is one
    rank's, and under DDP or FSDP every rank trains on a batch of its own. A run from
    before the collector said so counts its world size (DDP was all it measured)."""
    meta = run.meta or {}
    for key in (R.K_DATA_PARALLEL, R.K_WORLD_SIZE):
        value = finite_number(meta.get(key))
        if value is not None and value >= 1:
            return int(value)
    return 1


def num_classes(run: Run) -> int | None:
    """Number of classes: run.json's (the collector's, from the logits it saw; for a
    foreign run what its reader found: a Hugging Face classifier's config.json, the one
    count a nested config names, `hparams.class_count`), else a hyperparameter named
    for it; None when unknown."""
    value = finite_number(run.meta.get(R.K_NUM_CLASSES)) if run.meta else None
    if value is None:
        value = _hparam_number(run, NUM_CLASSES_KEYS)
    return int(value) if value is not None and value >= 2 else None


def input_kind(run: Run) -> str | None:
    """What the model's input is, as run.json says: `R.INPUT_TOKENS` (integer token ids)
    or `R.INPUT_FEATURES`; None when unknown (a foreign log, or no input seen)."""
    value = run.meta.get(R.K_INPUT_KIND) if run.meta else None
    return value if value in R.INPUT_KINDS else None


def param_groups(run: Run) -> list[Mapping[str, Any]] | None:
    """The optimizer's param groups from run.json, or None when the run does not say."""
    opt = run.meta.get(R.K_OPTIMIZER) if run.meta else None
    if not isinstance(opt, Mapping):
        return None
    groups = opt.get("param_groups")
    if not isinstance(groups, list) or not groups:
        return None
    return [g for g in groups if isinstance(g, Mapping)] or None


def optimizer_type(run: Run) -> str | None:
    opt = run.meta.get(R.K_OPTIMIZER) if run.meta else None
    kind = opt.get("type") if isinstance(opt, Mapping) else None
    return str(kind) if kind else None


def configured_lr(run: Run) -> float | None:
    """The learning rate last logged (``opt/lr``), else the optimizer's, else the hyperparameters'."""
    series = run.scalar(T.LR)
    if series is not None:
        ok = np.isfinite(series.values)
        if ok.any():
            return float(series.values[ok][-1])
    groups = param_groups(run)
    if groups and finite_number(groups[0].get("lr")) is not None:
        return finite_number(groups[0].get("lr"))
    return _hparam_number(run, _LR_KEYS)


# A logged lr below half its peak: a schedule has lowered it, and advice about "the"
# learning rate means the peak a user sets, not the decayed value of the last step.
SCHEDULE_LOWERED = 0.5


def lr_to_adjust(run: Run) -> tuple[float | None, str]:
    """(the learning rate advice should move, how to name it): the peak of a schedule that has
    lowered it ("peak learning rate"), else the learning rate now ("learning rate")."""
    series = run.scalar(T.LR)
    if series is not None:
        values = series.values[np.isfinite(series.values)]
        if values.shape[0] and values.max() > 0 and values[-1] < SCHEDULE_LOWERED * values.max():
            return float(values.max()), "peak learning rate"
    return configured_lr(run), "learning rate"


def weight_decay(run: Run) -> float | None:
    """Largest weight decay over param groups (also from hparams); None when the run does not say."""
    groups = param_groups(run)
    if groups:
        values = [finite_number(g.get("weight_decay", 0.0)) for g in groups]
        return max((v for v in values if v is not None), default=0.0)
    return _hparam_number(run, ("weight_decay", "wd", "l2"))


def model_layers(run: Run) -> list[Mapping[str, Any]]:
    """run.json's model layer list (in module order), or [] for foreign runs."""
    model = run.meta.get(R.K_MODEL) if run.meta else None
    layers = model.get(R.M_LAYERS) if isinstance(model, Mapping) else None
    return [layer for layer in layers if isinstance(layer, Mapping)] if isinstance(layers, list) else []


def parameter_counts(run: Run) -> tuple[int | None, int | None]:
    """(the model's parameters, those of them that require grad), as run.json's model
    summary counts them; None for a count it does not give (a foreign log, a lazy model
    before its first forward pass)."""
    model = run.meta.get(R.K_MODEL) if run.meta else None
    if not isinstance(model, Mapping):
        return None, None
    return _count(model.get(R.M_PARAMETERS)), _count(model.get(R.M_TRAINABLE))


def _count(value: Any) -> int | None:
    number = finite_number(value)
    return int(number) if number is not None and number >= 0 else None


def layers_updated(run: Run) -> list[bool] | None:
    """For each of run.json's model layers, whether the optimizer updates any of its own
    parameters that require grad (the layer's ``trainable``, collectors/layers.py); None
    when there are no layers or one does not say (a foreign log, an older run.json)."""
    flags = [layer.get(R.L_TRAINABLE) for layer in model_layers(run)]
    if not flags or not all(isinstance(f, bool) for f in flags):
        return None
    return flags


def layer_types(run: Run) -> dict[str, str]:
    return {str(layer.get("name")): str(layer.get("type", "")) for layer in model_layers(run)}


def _natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def ordered_layers(run: Run, names: Iterable[str]) -> list[str]:
    """`names` from the input side to the output side.

    The order of run.json's model layers (module registration order) when known;
    layers it does not list follow, sorted with numbers compared as numbers
    (``layer2`` before ``layer10``): readers hand tags over sorted by name, so the
    order they were logged in is lost.
    """
    names = list(names)
    known = {str(layer.get("name")): i for i, layer in enumerate(model_layers(run))}
    return sorted(names, key=lambda n: (0, known[n], []) if n in known else (1, 0, _natural_key(n)))


def natural_sorted(names: Iterable[str]) -> list[str]:
    """Names sorted with numbers compared as numbers (``layer.2`` before ``layer.10``)."""
    return sorted(names, key=_natural_key)


def functional_relu_consumers(run: Run) -> frozenset[str]:
    """Layers whose dead-unit share was measured at their input (ReLU called as F.relu)."""
    model = run.meta.get(R.K_MODEL) if run.meta else None
    activations = model.get(R.M_ACTIVATIONS) if isinstance(model, Mapping) else None
    names = activations.get(R.M_RELU_FUNCTIONAL) if isinstance(activations, Mapping) else None
    return frozenset(str(n) for n in names) if isinstance(names, list) else frozenset()


# A run whose newest logged point is younger than this may still be written; older,
# with no status, it is judged on what it has. (Wall times come from the data itself,
# never from file times: copied logs get fresh mtimes.)
LIVE_SECONDS = 15 * 60


def newest_wall_time(run: Run) -> float | None:
    """The newest wall time the run's data carries (seconds since the epoch), or None.

    Readers set `Run.last_wall_time`; a run built in memory without it falls back to
    its scalars' own wall times.
    """
    if run.last_wall_time is not None:
        return run.last_wall_time
    newest = None
    for series in run.scalars.values():
        walls = series.wall_times
        if walls is None or not walls.shape[0]:
            continue
        finite = walls[np.isfinite(walls)]
        if finite.shape[0] and (newest is None or float(finite.max()) > newest):
            newest = float(finite.max())
    return newest


def is_live(run: Run, now: float | None = None) -> bool:
    """Whether the run may still be growing: "not enough data yet" is for these only.

    The collector's run.json says so (status ``running``). A foreign log that says
    nothing counts as live while its newest data is less than `LIVE_SECONDS` old;
    without wall times, it is judged as it stands: a finished run must get a verdict.
    """
    status = run.status
    if status == R.STATUS_RUNNING:
        return True
    if status is not None:  # finished, crashed, stopped
        return False
    wall = newest_wall_time(run)
    if wall is None:
        return False
    return (time.time() if now is None else now) - wall < LIVE_SECONDS
