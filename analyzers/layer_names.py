"""A layer named as a reader recognises it: ``fc1 (Linear 9216→128)``, ``9 (ReLU after 8: Linear 128→128)``.

Findings and charts carry a layer's module name, which in an ``nn.Sequential`` is just its
index (``9``). run.json's model summary holds each parametrized layer's type and the
initialization check its weight's shape; the activation modules are listed by kind. This
turns them into a short description. Foreign logs have no model summary: their names stay
as logged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from trainscope.analyzers.facts import layer_types
from trainscope.analyzers.run import Run
from trainscope.logformat import runjson as RJ

# run.json activation kinds as PyTorch spells the module.
ACTIVATION_NAMES = {
    "relu": "ReLU",
    "leaky_relu": "LeakyReLU",
    "gelu": "GELU",
    "silu": "SiLU",
    "elu": "ELU",
    "tanh": "Tanh",
    "sigmoid": "Sigmoid",
    "softmax": "Softmax",
}


def weight_shapes(run: Run) -> dict[str, list[int]]:
    """Each layer's weight shape from run.json's initialization check (``[out, in, ...]``)."""
    rows = run.meta.get(RJ.K_INIT_CHECK) if run.meta else None
    shapes: dict[str, list[int]] = {}
    for row in rows if isinstance(rows, list) else []:
        shape = row.get(RJ.I_SHAPE) if isinstance(row, Mapping) else None
        if isinstance(shape, list) and row.get("param", "weight") == "weight":
            shapes.setdefault(
                str(row.get(RJ.I_LAYER)), [int(n) for n in shape if isinstance(n, (int, float))]
            )
    return shapes


def dimensions(kind: str, shape: Sequence[int]) -> str:
    """A weight shape as the layer's in→out: ``Linear [128, 9216]`` -> ``9216→128``,
    ``Conv2d [32, 16, 3, 3]`` -> ``16→32, 3×3``, anything else its sizes joined by ×."""
    if len(shape) == 2 and kind != "Embedding":
        return f"{shape[1]}→{shape[0]}"
    if len(shape) > 2 and kind.startswith(("Conv", "ConvTranspose")):
        return f"{shape[1]}→{shape[0]}, " + "×".join(map(str, shape[2:]))
    return "×".join(map(str, shape))


def _activation_kind(run: Run, name: str) -> str | None:
    model = run.meta.get(RJ.K_MODEL) if run.meta else None
    kinds = model.get(RJ.M_ACTIVATIONS) if isinstance(model, Mapping) else None
    if not isinstance(kinds, Mapping):
        return None
    for kind, names in kinds.items():
        if kind != RJ.M_RELU_FUNCTIONAL and isinstance(names, list) and name in map(str, names):
            return ACTIVATION_NAMES.get(str(kind), str(kind))
    return None


def _before(name: str, layers: Mapping[str, Any]) -> str | None:
    """The parametrized sibling just before `name` in a numbered container (``8`` for ``9``)."""
    prefix, _, last = name.rpartition(".")
    if not last.isdigit():
        return None
    siblings = [
        int(other.rpartition(".")[2])
        for other in layers
        if other.rpartition(".")[0] == prefix and other.rpartition(".")[2].isdigit()
    ]
    earlier = [i for i in siblings if i < int(last)]
    return f"{prefix}.{max(earlier)}" if earlier and prefix else (str(max(earlier)) if earlier else None)


def describe(run: Run, name: str) -> str | None:
    """``Linear 9216→128`` for the layer `name`, ``ReLU after 8: Linear 128→128`` for an
    activation module; None where run.json does not know the layer."""
    types, shapes = layer_types(run), weight_shapes(run)
    if name in types:
        kind = types[name]
        return f"{kind} {dimensions(kind, shapes[name])}" if shapes.get(name) else kind or None
    kind = _activation_kind(run, name)
    if kind is None:
        return None
    before = _before(name, types)
    if before is None:
        return kind
    return f"{kind} after {before}: {describe(run, before)}"


def layer_label(run: Run, name: str) -> str:
    """``fc1 (Linear 9216→128)``; the name alone where run.json does not know the layer."""
    what = describe(run, name)
    return f"{name} ({what})" if what else name


def titled(title: str, layer: str | None, run: Run) -> str:
    """A finding's `title` with its `layer` described where the title first names it, so a
    reader of any report (text, Markdown, the page) knows which layer an index means:
    ``Dead ReLUs: 94% of `9` (ReLU after 8: Linear 64→64)'s units never fire``."""
    what = describe(run, layer) if layer is not None else None
    quoted = f"`{layer}`"
    if not what or quoted not in title:
        return title
    return title.replace(quoted, f"{quoted} ({what.replace('`', '')})", 1)
