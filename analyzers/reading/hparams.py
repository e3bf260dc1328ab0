"""Hyperparameters from foreign logs: Lightning's ``hparams.yaml``, MLflow params.

Both end up under run.json's keys: the flat dict under `K_HPARAMS` (nested keys joined
with "."), an integer ``batch_size`` also under `K_BATCH_SIZE`, which the rules
read (the noise scale against the batch size, for one), and the one class count the config
names at any depth under `K_NUM_CLASSES` (`class_count`: configs nest it, in ``hparams.yaml``
often inside lists that the flat dict only shows as text, e.g. torchmetrics' ``metrics_params``).

Lightning writes ``hparams.yaml`` with PyYAML's default dumper, so a hyperparameter
that is a Python object becomes a ``!!python/object:...`` or ``!!python/tuple`` node,
which ``yaml.safe_load`` refuses, losing every other value with it. `load_yaml` is
``safe_load`` with one addition: a node with any other tag is read as the plain data
it holds (a tuple as a list, an object as the name of its class), so nothing is
imported, constructed or called.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping
from typing import Any

import yaml

from trainscope.logformat import runjson as RJ

HPARAMS_YAML = "hparams.yaml"
# Keys (the last part of a nested key) whose integer value is the training batch size.
BATCH_SIZE_KEYS = ("batch_size", "train_batch_size")
# Keys (the last part of a nested key, any case) whose integer value is the number of classes.
NUM_CLASSES_KEYS = ("num_classes", "n_classes", "classes", "num_labels", "nclasses", "n_class")
# Mappings and lists `class_count` looks into; a config is dozens, an alias bomb is not walked whole.
MAX_NODES = 10_000
# A value's text beyond this many characters is cut: hyperparameters are shown, not parsed.
MAX_VALUE_CHARS = 500
# Hyperparameters kept per run; a config dumped whole can hold thousands of entries.
MAX_HPARAMS = 1000
# The text of a value that is not a short list of scalars. Bounded in depth and width, not
# only cut afterwards: YAML aliases can make a few lines a structure of 10^8 entries
# ("billion laughs"), which a full repr would expand before anything is cut.
_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel, _SHORT_REPR.maxstring, _SHORT_REPR.maxother = 3, MAX_VALUE_CHARS, MAX_VALUE_CHARS
_SHORT_REPR.maxlist = _SHORT_REPR.maxtuple = _SHORT_REPR.maxdict = _SHORT_REPR.maxset = 16
_PYTHON_TUPLE = "tag:yaml.org,2002:python/tuple"
_SEP = "."


class _PlainDataLoader(yaml.SafeLoader):
    """SafeLoader that reads a node with an unknown tag as plain data instead of failing."""


def _untagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if node.tag == _PYTHON_TUPLE and isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return f"<{node.tag.rsplit(':', 1)[-1]}>"  # an object: its class name only


_PlainDataLoader.add_multi_constructor("", _untagged)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load``, tolerant of Python tags (see the module docstring). Raises
    ``yaml.YAMLError`` (or RecursionError for absurd nesting) on bad input."""
    return yaml.load(text, Loader=_PlainDataLoader)  # a SafeLoader subclass: no object is built


def flatten(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Nested mappings -> one level, keys joined by "."; values kept JSON-friendly and short."""
    flat: dict[str, Any] = {}
    stack: list[tuple[str, Mapping[Any, Any]]] = [("", doc)]
    while stack and len(flat) < MAX_HPARAMS:
        prefix, mapping = stack.pop()
        for key, value in mapping.items():
            name = f"{prefix}{key}"
            if isinstance(value, Mapping):
                stack.append((name + _SEP, value))
            elif len(flat) < MAX_HPARAMS:
                flat[name] = _plain(value)
    return dict(sorted(flat.items()))


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if (
        isinstance(value, (list, tuple))
        and len(value) <= 32
        and all(v is None or isinstance(v, (bool, int, float, str)) for v in value)
    ):
        return [_plain(v) for v in value]
    text = value if isinstance(value, str) else _SHORT_REPR.repr(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "…"


def parse_param(text: str) -> Any:
    """An MLflow param (always text) as the value it was logged from: int, float, bool, None or str."""
    text = text.strip()
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return {"True": True, "False": False, "None": None}.get(text, _plain(text))


def meta_from_hparams(hparams: Mapping[str, Any], doc: Any = None) -> dict[str, Any]:
    """run.json keys for flat hyperparameters: `K_HPARAMS`, `K_BATCH_SIZE` when one is
    named, and `K_NUM_CLASSES` when `class_count` finds one in `doc` (the document they
    were flattened from; else `hparams`)."""
    meta: dict[str, Any] = {RJ.K_HPARAMS: dict(hparams)} if hparams else {}
    count = class_count(hparams if doc is None else doc)
    if count is not None:
        meta[RJ.K_NUM_CLASSES] = count
    for key, value in hparams.items():
        is_count = isinstance(value, int) and not isinstance(value, bool) and value > 0
        if key.rsplit(_SEP, 1)[-1] in BATCH_SIZE_KEYS and is_count:
            meta[RJ.K_BATCH_SIZE] = value
            break
    return meta


def class_count(doc: Any) -> int | None:
    """The number of classes a config names at any depth (mappings, lists; a key's last
    "."-part among `NUM_CLASSES_KEYS`): the one count all such integer values agree on,
    None when there is none or they disagree (a model of 7 classes and a head of 3 say
    nothing certain of the loss's chance level). Values that are not counts (a list of
    class names under ``classes``) are passed over."""
    counts: set[int] = set()
    stack, seen = [doc], 0
    while stack and seen < MAX_NODES:
        node = stack.pop()
        seen += 1
        if isinstance(node, Mapping):
            for key, value in node.items():
                if str(key).rsplit(_SEP, 1)[-1].lower() in NUM_CLASSES_KEYS and _is_count(value):
                    counts.add(int(value))
                elif isinstance(value, (Mapping, list, tuple)):
                    stack.append(value)
        elif isinstance(node, (list, tuple)):
            stack.extend(v for v in node if isinstance(v, (Mapping, list, tuple)))
    return counts.pop() if len(counts) == 1 else None


def _is_count(value: Any) -> bool:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return isinstance(value, int) and not isinstance(value, bool) and value >= 2


def parse_hparams_yaml(text: str, path: str) -> tuple[dict[str, Any], list[str]]:
    """``(meta, problems)`` from the text of a Lightning ``hparams.yaml``; never raises."""
    try:
        doc = load_yaml(text)
    except Exception as exc:  # noqa: BLE001 - any failure of a foreign file is one line
        return {}, [f"{path}: unreadable hparams.yaml ({type(exc).__name__}: {_short(exc)})"]
    if doc is None:
        return {}, []
    if not isinstance(doc, Mapping):
        return {}, [f"{path}: hparams.yaml is not a mapping of names to values; ignored"]
    try:
        return meta_from_hparams(flatten(doc), doc), []
    except Exception as exc:  # noqa: BLE001 - e.g. keys that are not text
        return {}, [f"{path}: unreadable hparams.yaml ({type(exc).__name__}: {_short(exc)})"]


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:200] + "…"


# -- one run's hyperparameters, for the tables that set runs side by side ---------------

# What the collector's optimizer record (run.json `K_OPTIMIZER`) adds, under the name a
# training script most often logs it as; skipped where the run's hyperparameters already
# hold it under one of the other names.
OPTIMIZER_FIELDS = ("lr", "weight_decay", "momentum", "betas")
SAME_HPARAM = {
    "lr": ("lr", "learning_rate"),
    "weight_decay": ("weight_decay", "wd"),
    "momentum": ("momentum",),
    "betas": ("betas", "adam_beta1"),
    "optimizer": ("optimizer", "optim", "optimizer_name"),
    "batch_size": ("batch_size", "per_device_train_batch_size", "train_batch_size"),
}


def run_hparams(meta: Mapping[str, Any]) -> dict[str, Any]:
    """A run's hyperparameters as one flat dict of shown values: run.json's `K_HPARAMS`
    (as logged: TrainScope's ``watch(hparams=...)``, Lightning's ``hparams.yaml``, MLflow
    params, W&B config, TensorBoard's hparams), then what the collector recorded of the
    optimizer (its type, the first parameter group's lr, weight decay, momentum, betas)
    and `K_BATCH_SIZE`, each only where the logged ones do not name it already.

    Why both: a script that logs no hyperparameters still has its optimizer recorded
    by the collector, and a foreign log has no optimizer record at all."""
    logged = meta.get(RJ.K_HPARAMS)
    out = flatten(logged) if isinstance(logged, Mapping) else {}
    have = {key.rsplit(_SEP, 1)[-1].lower() for key in out}

    def add(name: str, value: Any) -> None:
        if value is not None and not have.intersection(SAME_HPARAM.get(name, (name,))):
            out[name] = _plain(value)
            have.add(name)

    optimizer = meta.get(RJ.K_OPTIMIZER)
    if isinstance(optimizer, Mapping):
        add("optimizer", optimizer.get("type") if isinstance(optimizer.get("type"), str) else None)
        groups = optimizer.get("param_groups")
        first = groups[0] if isinstance(groups, list) and groups and isinstance(groups[0], Mapping) else {}
        for name in OPTIMIZER_FIELDS:
            add(name, first.get(name))
    batch = meta.get(RJ.K_BATCH_SIZE)
    if isinstance(batch, float) and batch.is_integer():
        batch = int(batch)  # run.json read back through JSON may hold 32.0
    add("batch_size", batch if isinstance(batch, int) and not isinstance(batch, bool) else None)
    return dict(sorted(out.items()))
