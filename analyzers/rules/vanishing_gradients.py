"""Rule `vanishing_gradients`: the first layers get gradients far smaller than the last.

The check's docstring says what is measured, why it matters and what to do; the dashboard
and docs/rules.md show it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from trainscope.analyzers.facts import (
    NORM_OR_EMBEDDING_TYPES,
    layer_types,
    model_layers,
    ordered_layers,
)
from trainscope.analyzers.findings import Finding, Skip
from trainscope.analyzers.rules.common import (
    cite,
    finding,
    fmt,
    fmt_pct,
    quote,
    require_layers,
    require_points,
    sentence,
)
from trainscope.analyzers.rules.robust import (
    finite_points,
    segment_medians,
    tail_start,
)
from trainscope.analyzers.run import Run, Series
from trainscope.logformat import runjson as R
from trainscope.logformat import tags as T

RULE_ID = "vanishing_gradients"
NAME = "vanishing gradients"  # what the finding is called where it is listed under another
VANISH_SOURCE = cite(
    (
        "000",
        49,
        "当输入的绝对值较大时,其梯度(导数)接近于零,这时参数几乎不再更新,梯度的反向传播过程将被中断,出现梯度消散的现象",
        "when the input is large in magnitude, its gradient, the derivative, is close to zero and the parameters almost stop updating",
    ),
    (
        "001",
        51,
        "sigmoid函数在-4到4的区间里,才有较大的梯度",
        "the sigmoid has a sizeable gradient only between -4 and 4",
    ),
)
VANISH_MIN_POINTS = 50  # gradient-norm points of a layer before any verdict
VANISH_WINDOW = 0.5  # judged on the last half of the run...
VANISH_STRETCHES = 20  # ...cut into 20 stretches of steps
VANISH_RATIO = 1e-3  # first/last layer gradient norm below 1e-3 (AUTOTRAINER's threshold)...
VANISH_SUSTAIN = 0.8  # ...in >= 80% of the stretches
VANISH_UPDATE_RATIO = 1e-6  # or: the first layer's median update/weight ratio below 1e-6...
VANISH_UPDATE_GAP = 1e3  # ...while the last layer's is >= 1000x larger (so it is not just a low lr)
VANISH_LAST_MOVES = 1e-4  # ...and the last layer itself moves at a normal pace (>= 1e-4 per step)
VANISH_UPDATE_MIN_SAMPLES = 5  # update-ratio samples per layer before that route counts


def _comparable_layers(run: Run, layers: Mapping[str, Series]) -> list[str]:
    """Layers in input-to-output order, without norm/embedding layers and layers that never got a gradient."""
    types = layer_types(run)
    trainable = {str(layer.get("name")): layer.get("trainable", True) for layer in model_layers(run)}
    keep = []
    for name in ordered_layers(run, layers):
        if types.get(name) in NORM_OR_EMBEDDING_TYPES or trainable.get(name) is False:
            continue
        values = layers[name].values
        sample = values[
            :: max(1, values.shape[0] // 10_000)
        ]  # a layer that ever gets a gradient shows it here
        if not (np.isfinite(sample) & (sample > 0)).any() and not (np.isfinite(values) & (values > 0)).any():
            continue  # exactly zero gradient: a disconnected or frozen layer, not a vanishing one
        keep.append(name)
    return keep


def _window_medians(series: Series, edges: np.ndarray) -> np.ndarray:
    """Medians of a layer's finite points in each stretch (edges[i-1], edges[i]]."""
    begin = int(np.searchsorted(series.steps, edges[0], side="right"))
    steps, values = series.steps[begin:], series.values[begin:]
    keep = np.isfinite(values)
    if not keep.all():
        steps, values = steps[keep], values[keep]
    return segment_medians(steps, values, edges[1:])


def check(run: Run) -> Iterable[Finding]:
    """The earliest layers get gradients orders of magnitude smaller than the last ones.

    Why it matters: each sigmoid/tanh layer multiplies the backward signal by at most
    0.25 / 1, and far less when saturated; after a few layers the first layers receive
    almost nothing and stop learning while the last ones still train.
    Measured on the last half of the run: the first/last layer gradient-norm ratio is
    below 1e-3 in >= 80% of 20 stretches; or the first layer's update/weight ratio is
    below 1e-6 while the last layer's is >= 1000x larger (and >= 1e-4). Layer order is
    run.json's module order (for foreign logs: by name, numbers compared as numbers);
    normalization and embedding layers, frozen layers, and stretches where the first
    layer gets exactly zero gradient (cut off by dead units: dead_relu's case) are left
    out.
    What to do: ReLU-family activations instead of sigmoid/tanh; He/Xavier
    initialization; batch normalization; residual connections.
    """
    layers = require_layers(run, T.GRAD_NORM_PREFIX, "per-layer gradient norms")
    order = _comparable_layers(run, layers)
    if len(order) < 2:
        raise Skip(f"needs gradient norms of at least 2 weight layers; this run has {len(order)}")
    first, last = order[0], order[-1]
    have = min(len(layers[first]), len(layers[last]))
    require_points(have, VANISH_MIN_POINTS, f"{T.GRAD_NORM_PREFIX}* points")

    last_steps = layers[last].steps
    start = int(last_steps[tail_start(last_steps.shape[0], VANISH_WINDOW, 1)])
    edges = np.linspace(start - 1, int(last_steps[-1]), VANISH_STRETCHES + 1).astype(np.int64)
    per_layer = {name: _window_medians(layers[name], edges) for name in order}
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = per_layer[first] / per_layer[last]
    # A stretch where the first layer gets exactly zero gradient is cut off (dead units upstream:
    # dead_relu's case), not vanishing.
    ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
    evidence: dict = {
        "layers": order,
        "median_grad_norm": [
            float(np.nanmedian(per_layer[n])) if np.isfinite(per_layer[n]).any() else None for n in order
        ],
        "first_layer": first,
        "last_layer": last,
    }
    reasons: list[str] = []
    if ratio.shape[0] >= VANISH_STRETCHES // 2:
        below = float((ratio < VANISH_RATIO).mean())
        median_ratio = float(np.median(ratio))
        evidence.update(grad_ratio=median_ratio, share_below=below)
        if below >= VANISH_SUSTAIN and median_ratio < VANISH_RATIO:
            reasons.append(
                f"the gradient norm of the first layer {quote(first)} is {fmt(median_ratio)} of the last layer "
                f"{quote(last)}'s ({fmt(evidence['median_grad_norm'][0])} "
                f"vs {fmt(evidence['median_grad_norm'][-1])}, "
                f"below {fmt(VANISH_RATIO)} in {fmt_pct(below)} of the last half of the run)"
            )
    updates = _update_gap(run, first, last)
    if updates is not None:
        evidence.update(first_update_ratio=updates[0], last_update_ratio=updates[1])
        if 0 < updates[0] < VANISH_UPDATE_RATIO and updates[1] >= max(
            VANISH_UPDATE_GAP * updates[0], VANISH_LAST_MOVES
        ):
            reasons.append(
                f"the first layer's weights move by {fmt(updates[0])} of their norm per step, the last "
                f"layer's by {fmt(updates[1])}"
            )
    if not reasons:
        return []
    saturating = _saturating_activations(run)
    advice = [
        "Use ReLU-family activations (ReLU, LeakyReLU, GELU) instead of sigmoid/tanh"
        + (f" (this model has {saturating})" if saturating else "")
        + ".",
        "Initialize with He (kaiming_normal_, for ReLU) or Xavier (xavier_normal_, for tanh/sigmoid).",
        "Add batch normalization after the linear/conv layers, or residual connections around blocks.",
    ]
    return [
        finding(
            RULE_ID,
            "warning",
            f"Vanishing gradients: {quote(first)} gets almost no gradient",
            sentence("; ".join(reasons)) + ".",
            advice,
            VANISH_SOURCE,
            step=start,
            layer=first,
            evidence=evidence,
        )
    ]


def _update_gap(run: Run, first: str, last: str) -> tuple[float, float] | None:
    ratios = run.layers(T.UPDATE_RATIO_PREFIX)
    if first not in ratios or last not in ratios:
        return None
    out = []
    for name in (first, last):
        _, values = finite_points(ratios[name])
        if values.shape[0] < VANISH_UPDATE_MIN_SAMPLES:
            return None
        out.append(float(np.median(values[tail_start(values.shape[0], VANISH_WINDOW, 1) :])))
    return out[0], out[1]


def _saturating_activations(run: Run) -> str:
    model = run.meta.get(R.K_MODEL) if run.meta else None
    kinds = model.get(R.M_ACTIVATIONS) if isinstance(model, Mapping) else None
    if not isinstance(kinds, Mapping):
        return ""
    found = [
        f"{kind} in {len(names)} layer(s)"
        for kind, names in kinds.items()
        if str(kind).lower() in ("sigmoid", "tanh", "hardsigmoid", "hardtanh", "softsign") and names
    ]
    return ", ".join(found)
