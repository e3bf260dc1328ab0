"""Rule `activation_on_logits`: an activation after the output layer, in front of the loss.

The check's docstring says what is measured, why it matters and what to do; the dashboard
and docs/rules.md show it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from trainscope.analyzers.facts import NORM_OR_EMBEDDING_TYPES, model_layers, num_classes
from trainscope.analyzers.findings import Finding, Skip
from trainscope.analyzers.layer_names import weight_shapes
from trainscope.analyzers.rules.common import finding, fmt_pct, missing_meta_reason, quote
from trainscope.analyzers.rules.curves import as_fraction
from trainscope.analyzers.rules.robust import finite_points
from trainscope.analyzers.run import Run
from trainscope.logformat import runjson as R
from trainscope.logformat import tags as T

RULE_ID = "activation_on_logits"
NAME = "an activation on the logits"  # what the finding is called where it is listed under another
LOGITS_SOURCE = (
    'PyTorch docs, torch.nn.CrossEntropyLoss: "The input is expected to contain the unnormalized logits '
    'for each class (which do not need to be positive or sum to 1, in general)"'
)
BINARY_SOURCE = (
    'PyTorch docs, torch.nn.BCEWithLogitsLoss: "This loss combines a Sigmoid layer and the BCELoss in one '
    'single class. This version is more numerically stable than using a plain Sigmoid followed by a BCELoss"'
)
# The activation kinds the collector names (collectors/layers.py) that have no place before a
# cross-entropy: they clip, squash or normalize the logits the loss expects raw.
LOGIT_KILLERS = ("relu", "sigmoid", "tanh", "softmax")
SQUASHING = ("sigmoid", "tanh", "softmax")  # these bound every logit; a ReLU only clips the negative ones
DEAD_OUTPUTS = 0.5  # critical when > 50% of the output units are zero for the whole batch...
STUCK_ACCURACY = 0.1  # ...or val accuracy within 10 points of a k/C level the model cannot leave...
CAP_BELOW = 0.1  # ...or at the cap dead output units set (their classes never predicted): within 10 points
CAP_ABOVE = 0.02  # below it, 2 above (the classes need not be balanced exactly)
BINARY_UNITS = 1  # an output layer of 1 unit is a binary (sigmoid) head: its loss is BCEWithLogitsLoss
_NAME_PART = re.compile(r"(\d+)|(\D+)")


def check(run: Run) -> Iterable[Finding]:
    """An activation sits after the output layer, so the loss gets squashed logits.

    Why it matters: cross-entropy wants raw logits, any real number. A ReLU in front of it
    zeroes every negative logit (a class can no longer be pushed below the others, and
    output units die), a sigmoid or tanh squashes them into a narrow range (the loss cannot
    fall far below ln C), a softmax applies softmax twice. The model trains badly or not at
    all, and the loss curve shows only a symptom.
    Measured on run.json's model summary: an activation module (ReLU, sigmoid, tanh,
    softmax) that comes after the last layer with weights, in the same container (an
    ``nn.Sequential`` ending in ``nn.ReLU()``). Warning; critical when it shows: more than
    half its output units dead on a batch, val accuracy stuck near a multiple of 1/C, or
    val accuracy at the ceiling the dead outputs set (a class whose logit is always 0 is
    never predicted: 4 dead of 10 cap it near 60%).
    What to do: remove the activation after the output layer and give the loss the raw
    logits (``nn.CrossEntropyLoss`` applies log-softmax itself; use ``torch.softmax`` only
    for predictions, outside the loss). An output of one unit (its weight's shape in
    run.json's initialization check) is a binary head: ``nn.BCEWithLogitsLoss`` applies
    the sigmoid itself, so the advice names it instead.
    """
    output = output_layer(run)
    if output is None:
        raise Skip(missing_meta_reason(R.K_MODEL, "the model's layers"))
    after = _activation_after(run, output)
    if after is None:
        return []
    name, kind = after
    dead = _dead_share(run, name)
    accuracy, classes = _val_accuracy(run), num_classes(run)
    stuck = _stuck_accuracy(accuracy, classes) or _capped_accuracy(accuracy, classes, dead)
    severity = "critical" if (dead is not None and dead > DEAD_OUTPUTS) or stuck else "warning"
    message = (
        f"The output layer {quote(output)} is followed by a {kind} ({quote(name)}), so the loss gets "
        f"{'clipped' if kind == 'relu' else 'squashed'} logits instead of raw ones"
    )
    if dead is not None:
        message += f"; {fmt_pct(dead)} of the output units are zero for every example of a batch"
    if stuck:
        message += f"; {stuck}"
    units = _units(run, output)
    binary = units == BINARY_UNITS
    return [
        finding(
            RULE_ID,
            severity,
            f"A {kind} on the logits: the output layer {quote(output)} feeds the loss through {quote(name)}",
            message + ".",
            _binary_advice(name, output) if binary else _advice(name, output),
            BINARY_SOURCE if binary else LOGITS_SOURCE,
            step=0,
            layer=output,
            evidence={
                "output_layer": output,
                "output_units": units,
                "activation": name,
                "kind": kind,
                "dead_output_share": dead,
                "accuracy_held": bool(stuck),
            },
        )
    ]


def output_layer(run: Run) -> str | None:
    """The name of the model's output layer: its last layer with weights (norms and embeddings
    left out), as run.json's model summary lists them in registration order; None without one."""
    layers = [entry for entry in model_layers(run) if str(entry.get("type")) not in NORM_OR_EMBEDDING_TYPES]
    return str(layers[-1].get("name")) if layers else None


def output_activation(run: Run) -> str | None:
    """The activation module after the output layer (the one this rule reports), if any.

    run.json's layers list only modules with weights, so an output ``nn.Sigmoid`` is never
    the last of them; it is the activation after the last one. saturated_activations leaves
    it out: its saturation is this rule's fault, not a hidden layer's.
    """
    output = output_layer(run)
    after = _activation_after(run, output) if output is not None else None
    return after[0] if after else None


def _units(run: Run, layer: str) -> int | None:
    """The number of outputs of `layer` (its weight's first dimension), where run.json has it."""
    shape = weight_shapes(run).get(layer)
    return shape[0] if shape else None


def _advice(name: str, output: str) -> tuple[str, ...]:
    return (
        f"Remove {quote(name)} after {quote(output)}: give nn.CrossEntropyLoss / F.cross_entropy the "
        "raw logits (it applies log-softmax itself).",
        "Apply softmax or argmax only to turn the logits into predictions, outside the loss.",
    )


def _binary_advice(name: str, output: str) -> tuple[str, ...]:
    return (
        f"Remove {quote(name)} after {quote(output)}: give nn.BCEWithLogitsLoss / "
        "F.binary_cross_entropy_with_logits the raw logit (it applies the sigmoid itself, more stably "
        "than nn.Sigmoid followed by nn.BCELoss).",
        "Apply torch.sigmoid (or logit > 0) only to turn the logit into a prediction, outside the loss.",
    )


def _key(name: str) -> tuple[tuple[int, Any], ...]:
    """Natural order of a module name's last part ("5" after "4", "10" after "9"); numbers before words."""
    return tuple((0, int(d)) if d else (1, s) for d, s in _NAME_PART.findall(name.rpartition(".")[2]))


def _activation_after(run: Run, output: str) -> tuple[str, str] | None:
    """(module name, kind) of an activation after `output` in the same container, if any."""
    model = run.meta.get(R.K_MODEL) if run.meta else None
    kinds = model.get(R.M_ACTIVATIONS) if isinstance(model, Mapping) else None
    if not isinstance(kinds, Mapping):
        return None
    parent = output.rpartition(".")[0]
    for kind in LOGIT_KILLERS:
        names = kinds.get(kind)
        for name in names if isinstance(names, list) else []:
            name = str(name)
            if name.rpartition(".")[0] == parent and _key(name) > _key(output):
                return name, kind
    return None


def _dead_share(run: Run, name: str) -> float | None:
    series = run.scalar(T.dead_fraction_tag(name))
    if series is None:
        return None
    _, values = finite_points(series)
    return float(np.median(values[-3:])) if values.shape[0] else None


def _val_accuracy(run: Run) -> np.ndarray | None:
    """The val accuracy as fractions, when there are 3 points or more to judge it by."""
    series = run.scalar(T.VAL_ACC)
    if series is None:
        return None
    _, values = finite_points(series)
    return as_fraction(values) if values.shape[0] >= 3 else None


def _capped_accuracy(accuracy: np.ndarray | None, classes: int | None, dead: float | None) -> str:
    """Val accuracy at the ceiling that dead output units set: a class whose logit is always 0 is never predicted."""
    if not dead or accuracy is None:
        return ""
    now = float(np.median(accuracy[-3:]))
    never = round(dead * classes) if classes else None
    cap = 1 - never / classes if classes and never else 1 - dead
    if not cap - CAP_BELOW <= now <= cap + CAP_ABOVE:
        return ""
    which = f"{never} of {classes} classes" if classes and never else f"{fmt_pct(dead)} of the classes"
    return (
        f"{which} can never be predicted, which caps accuracy near {fmt_pct(cap)}, and val accuracy is "
        f"{fmt_pct(now)}"
    )


def _stuck_accuracy(accuracy: np.ndarray | None, classes: int | None) -> str:
    """Val accuracy that never left a k/C level (a model that can only predict k classes)."""
    if classes is None or accuracy is None:
        return ""
    now = float(np.median(accuracy[-3:]))
    k = round(now * classes)
    tolerance = STUCK_ACCURACY / classes
    flat = float(accuracy.max() - accuracy.min()) < 2 * tolerance  # it never moved off that level
    if flat and k < classes and abs(now - k / classes) < tolerance:
        return f"val accuracy is stuck at {fmt_pct(now)}, about {k}/{classes} classes' worth"
    return ""
