"""What every rule needs besides numbers: required signals, run.json facts, wording, citations.

Rules never guess. A missing signal or too short a series raises `Skip` with a reason
the user can act on; run.json facts (batch size, optimizer, layer order) are read
through the helpers here so that a foreign log without run.json simply has fewer facts.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from analyzers.findings import Finding, Severity, Skip
from analyzers.run import Run, Series
from logformat import runjson as R
from logformat import tags as T

# Module types whose weights are not a plain fan-in matrix: their scale, sparsity and
# gradients follow other laws, so per-layer comparisons and init checks leave them out.
NORM_OR_EMBEDDING_TYPES = frozenset(
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
        "Embedding",
        "EmbeddingBag",
    }
)
RECURRENT_TYPES = frozenset({"LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell"})

# Hyperparameter names under which users commonly log these facts.
_BATCH_SIZE_KEYS = ("batch_size", "train_batch_size", "per_device_train_batch_size", "bs", "batch")
_NUM_CLASSES_KEYS = ("num_classes", "n_classes", "classes", "num_labels", "nclasses", "n_class")
_LR_KEYS = ("lr", "learning_rate", "learningrate")


# --- building runs (tests, benchmarks, what-ifs) ---------------------------------------


def make_run(
    scalars: Mapping[str, Series | tuple[Any, Any]],
    meta: Mapping[str, Any] | None = None,
    name: str = "synthetic",
) -> Run:
    """A `Run` from in-memory arrays: ``{tag: (steps, values)}`` or ``{tag: Series}``."""
    series = {
        tag: s if isinstance(s, Series) else Series.from_lists(s[0], s[1]) for tag, s in scalars.items()
    }
    return Run(name=name, path=name, source="trainscope", scalars=series, meta=dict(meta or {}))


# --- required signals --------------------------------------------------------------------


def missing_reason(signal: str, what: str) -> str:
    return f"needs {signal} ({what}), which this run does not log"


def missing_meta_reason(key: str, what: str) -> str:
    return f"needs run.json {key} ({what}), which this run does not have"


def require_scalar(run: Run, tag: str, what: str) -> Series:
    """The series of `tag`, or `Skip` naming it."""
    series = run.scalar(tag)
    if series is None:
        raise Skip(missing_reason(tag, what))
    return series


def require_layers(run: Run, prefix: str, what: str) -> dict[str, Series]:
    """Per-layer series under `prefix`, or `Skip` naming the family (``grad/norm/*``)."""
    layers = run.layers(prefix)
    if not layers:
        raise Skip(missing_reason(prefix + "*", what))
    return layers


def require_points(have: int, need: int, what: str) -> None:
    """`Skip` with "not enough data yet" unless `have` >= `need`."""
    if have < need:
        raise Skip(f"not enough data yet: {have:,} of {need:,} {what}")


def require_finite_points(series: Series, need: int, what: str) -> None:
    """Like `require_points` on the finite values, but a series that went NaN/Inf says so."""
    finite = np.isfinite(series.values)
    have = int(finite.sum())
    if have >= need:
        return
    if have < len(series):
        first_bad = int(series.steps[np.flatnonzero(~finite)[0]])
        raise Skip(
            f"only {have:,} finite {what} (needs {need:,}): the values are NaN/Inf from step {first_bad:,} "
            "(see nonfinite)"
        )
    require_points(have, need, what)


# --- run.json facts ----------------------------------------------------------------------


def _number(value: Any) -> float | None:
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
        if key in h and _number(h[key]) is not None:
            return _number(h[key])
    return None


def batch_size(run: Run) -> int | None:
    """Batch size from run.json, else from the hyperparameters; None when unknown."""
    value = _number(run.meta.get(R.K_BATCH_SIZE)) if run.meta else None
    if value is None:
        value = _hparam_number(run, _BATCH_SIZE_KEYS)
    return int(value) if value is not None and value >= 1 else None


def data_parallel_ranks(run: Run) -> int:
    """How many ranks' batches make one step's batch (run.json): the batch size is one
    rank's, and under DDP or FSDP every rank trains on a batch of its own. A run from
    before the collector said so counts its world size (DDP was all it measured)."""
    meta = run.meta or {}
    for key in (R.K_DATA_PARALLEL, R.K_WORLD_SIZE):
        value = _number(meta.get(key))
        if value is not None and value >= 1:
            return int(value)
    return 1


def num_classes(run: Run) -> int | None:
    """Number of classes from the hyperparameters (or a top-level run.json key); None when unknown."""
    value = _number(run.meta.get("num_classes")) if run.meta else None
    if value is None:
        value = _hparam_number(run, _NUM_CLASSES_KEYS)
    return int(value) if value is not None and value >= 2 else None


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
    if groups and _number(groups[0].get("lr")) is not None:
        return _number(groups[0].get("lr"))
    return _hparam_number(run, _LR_KEYS)


def weight_decay(run: Run) -> float | None:
    """Largest weight decay over param groups (also from hparams); None when the run does not say."""
    groups = param_groups(run)
    if groups:
        values = [_number(g.get("weight_decay", 0.0)) for g in groups]
        return max((v for v in values if v is not None), default=0.0)
    return _hparam_number(run, ("weight_decay", "wd", "l2"))


def model_layers(run: Run) -> list[Mapping[str, Any]]:
    """run.json's model layer list (in module order), or [] for foreign runs."""
    model = run.meta.get(R.K_MODEL) if run.meta else None
    layers = model.get("layers") if isinstance(model, Mapping) else None
    return [layer for layer in layers if isinstance(layer, Mapping)] if isinstance(layers, list) else []


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


# --- wording -----------------------------------------------------------------------------


def quote(layer: str) -> str:
    """A layer's module name set off from the prose (``0`` alone reads as a number)."""
    return f"`{layer}`"


def functional_relu_consumers(run: Run) -> frozenset[str]:
    """Layers whose dead-unit share was measured at their input (ReLU called as F.relu)."""
    model = run.meta.get(R.K_MODEL) if run.meta else None
    activations = model.get("activations") if isinstance(model, Mapping) else None
    names = activations.get("relu_functional_at_input_of") if isinstance(activations, Mapping) else None
    return frozenset(str(n) for n in names) if isinstance(names, list) else frozenset()


def fmt(x: float) -> str:
    """A number as people read it: 3 significant digits, scientific only when tiny or huge."""
    if x is None or not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    if abs(x) >= 1e5 or abs(x) < 1e-3:
        mantissa, exp = f"{x:.2e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exp)}"
    return f"{x:.3g}"


def fmt_step(step: int | float) -> str:
    return f"{int(step):,}"


def fmt_pct(fraction: float) -> str:
    """0.234 -> "23%"; small fractions keep a decimal ("0.4%")."""
    value = 100.0 * fraction
    return f"{value:.1f}%" if abs(value) < 10 else f"{value:.0f}%"


def fmt_change(ratio: float) -> str:
    """A relative change new/old as people say it: 1.23 -> "+23%", 0.6 -> "-40%", 38.0 -> "38x"."""
    return fmt_factor(ratio) if ratio >= 10 else f"{'+' if ratio >= 1 else '-'}{fmt_pct(abs(ratio - 1))}"


def fmt_factor(factor: float) -> str:
    """12.3 -> "12x"; 2.46 -> "2.5x"; 2.5e7 -> "2.5e7x"."""
    if factor >= 1e5:
        return f"{fmt(factor)}x"
    return f"{factor:.2g}x" if factor < 10 else f"{factor:,.0f}x"


def fmt_points(fraction: float) -> str:
    """An accuracy difference in percentage points: 0.0301 -> "3 points", 0.111 -> "11 points"."""
    return (
        f"{100 * fraction:.0f} points"
        if abs(fraction) >= 0.095 or abs(fraction) < 0.0005
        else f"{100 * fraction:.1f} points"
    )


def sentence(text: str) -> str:
    """First letter upper-cased, the rest untouched (layer names and tags keep their case)."""
    return text[:1].upper() + text[1:]


def cite(*quotes: tuple[str, int, str]) -> str:
    """The source line(s) a rule's advice rests on: ``000 line 67: "…"; 001 line 24: "…"``."""
    return "; ".join(f'{doc} line {line}: "{text}"' for doc, line, text in quotes)


# --- findings ----------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars/arrays become floats/ints/lists, NaN/Inf become None."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def finding(
    rule: str,
    severity: Severity,
    title: str,
    message: str,
    advice: Iterable[str],
    source: str,
    step: int | None = None,
    layer: str | None = None,
    evidence: Mapping[str, Any] | None = None,
) -> Finding:
    """A `Finding` whose evidence is guaranteed JSON-serializable."""
    return Finding(
        rule=rule,
        severity=severity,
        title=title,
        message=message,
        advice=tuple(advice),
        source=source,
        step=None if step is None else int(step),
        layer=layer,
        evidence=jsonable(dict(evidence or {})),
    )
