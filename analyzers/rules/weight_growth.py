"""Rule `weight_growth`: Weight norms keep growing, with no weight decay to hold them.

The check's docstring says what is measured, why it matters and what to do; the dashboard
and docs/rules.md show it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from trainscope.analyzers.facts import (
    NORM_OR_EMBEDDING_TYPES,
    layer_types,
    optimizer_type,
    ordered_layers,
    weight_decay,
)
from trainscope.analyzers.findings import Finding, Skip
from trainscope.analyzers.rules.common import (
    cite,
    finding,
    fmt,
    fmt_factor,
    fmt_step,
    missing_meta_reason,
    quote,
    require_finite_points,
    require_layers,
)
from trainscope.analyzers.rules.robust import (
    finite_points,
    tail_start,
)
from trainscope.analyzers.run import Run
from trainscope.logformat import runjson as R
from trainscope.logformat import tags as T

RULE_ID = "weight_growth"
NAME = "weight growth"  # what the finding is called where it is listed under another
GROWTH_SOURCE = cite(
    (
        "000",
        62,
        "L2正则化也许是最常用的正则化的形式",
        "L2 regularization is perhaps the most common form of regularization",
    ),
    ("000", 64, "典型的c值是3或4", "typical values of c, the max-norm bound, are 3 or 4"),
)
WEIGHT_MIN_SAMPLES = 10  # weight-norm samples of a layer before any verdict
WEIGHT_GROWTH = 3.0  # info: a layer's weight norm now >= 3x its first sample...
WEIGHT_NEAR_PEAK = 0.95  # ...and at >= 95% of its peak (still up there, not a passing bump)
WEIGHT_RECENT = 0.25  # warning when, over the last 25% of the samples...
WEIGHT_RECENT_GROWTH = 1.25  # ...it still grew >= 25%: growing fast at the end
WEIGHT_NOW_SAMPLES = 3  # "now" is the median of the last 3 samples


def check(run: Run) -> Iterable[Finding]:
    """Weight norms keep rising, several times their start, with no weight decay configured.

    Why it matters: without a penalty nothing stops weights from growing (on separable
    data cross-entropy keeps pushing logits up); large weights make the model
    over-confident, saturate units, and generalize worse.
    Measured on ``weight/norm/<layer>`` when run.json's optimizer (or the
    hyperparameters) has no weight decay: a layer now >= 3x its first sample and
    within 5% of its peak (info); still +25% over the last quarter of its samples
    (warning).
    What to do: L2 weight decay (weight_decay=5e-4 for SGD, AdamW 0.01-0.1), or a
    max-norm constraint (each unit's weight vector norm clamped to c = 3-4).
    """
    layers = require_layers(run, T.WEIGHT_NORM_PREFIX, "per-layer weight norms")
    decay = weight_decay(run)
    if decay is None:
        raise Skip(missing_meta_reason(R.K_OPTIMIZER, "the optimizer settings: is weight decay configured?"))
    if decay > 0:
        return []  # regularized: growth is bounded by the decay
    longest = max(layers.values(), key=len)
    require_finite_points(longest, WEIGHT_MIN_SAMPLES, "weight-norm samples")
    types = layer_types(run)
    grown = []
    for name in ordered_layers(run, layers):
        if types.get(name) in NORM_OR_EMBEDDING_TYPES:
            continue
        steps, values = finite_points(layers[name])
        if values.shape[0] < WEIGHT_MIN_SAMPLES or values[0] <= 0:
            continue
        now = float(np.median(values[-WEIGHT_NOW_SAMPLES:]))
        growth = now / float(values[0])
        if growth < WEIGHT_GROWTH or values[-1] < WEIGHT_NEAR_PEAK * values.max():
            continue
        begin = tail_start(values.shape[0], WEIGHT_RECENT, WEIGHT_NOW_SAMPLES + 1)
        recent = now / float(np.median(values[begin : begin + WEIGHT_NOW_SAMPLES]))
        grown.append(
            {
                "layer": name,
                "start": float(values[0]),
                "now": now,
                "growth": growth,
                "recent_growth": recent,
                "recent_from_step": int(steps[begin]),
            }
        )
    if not grown:
        return []
    fast = [g for g in grown if g["recent_growth"] >= WEIGHT_RECENT_GROWTH]
    worst = max(grown, key=lambda g: g["growth"])
    listed = ", ".join(
        f"{g['layer']} {fmt(g['start'])} -> {fmt(g['now'])} ({fmt_factor(g['growth'])})" for g in grown[:6]
    )
    message = f"Weight norms grew several-fold with no weight decay configured: {listed}"
    if len(grown) > 6:
        message += f" and {len(grown) - 6} more"
    if fast:
        f0 = max(fast, key=lambda g: g["recent_growth"])
        message += (
            f"; still growing fast: {f0['layer']} +{fmt((f0['recent_growth'] - 1) * 100)}% since step "
            f"{fmt_step(f0['recent_from_step'])}"
        )
    kind = optimizer_type(run)
    decay_advice = (
        "Add L2 weight decay: "
        + (
            "AdamW with weight_decay=0.01-0.1"
            if kind and "adam" in kind.lower()
            else "weight_decay=5e-4 in the optimizer (1e-4 to 1e-3 is the usual range)"
        )
        + "."
    )
    return [
        finding(
            RULE_ID,
            "warning" if fast else "info",
            f"Weights keep growing without weight decay ({quote(worst['layer'])}: {fmt_factor(worst['growth'])})",
            message + ".",
            (
                decay_advice,
                "Or constrain each unit's weight vector to a maximum norm c = 3-4 after every step "
                "(torch.renorm or a clamp of the row norms).",
            ),
            GROWTH_SOURCE,
            step=int(layers[worst["layer"]].steps[0]),
            layer=worst["layer"],
            evidence={"layers": grown, "weight_decay": decay},
        )
    ]
