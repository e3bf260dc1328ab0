"""Rule `bad_initialization`: Zero/constant weights, or a weight scale far from He/Xavier, at the start.

The check's docstring says what is measured, why it matters and what to do; the dashboard
and docs/rules.md show it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from trainscope.analyzers.facts import (
    NORM_OR_EMBEDDING_TYPES,
    NORM_TYPES,
    RECURRENT_TYPES,
    finite_number,
    layer_types,
    model_layers,
    ordered_layers,
)
from trainscope.analyzers.findings import Finding, Skip
from trainscope.analyzers.rules.common import (
    cite,
    finding,
    fmt,
    fmt_factor,
    fmt_pct,
    missing_meta_reason,
    quote,
)
from trainscope.analyzers.run import Run
from trainscope.logformat import runjson as R
from trainscope.logformat import tags as T

RULE_ID = "bad_initialization"
NAME = "a bad initialization"  # what the finding is called where it is listed under another
INIT_CONSTANT_SOURCE = cite(
    (
        "000",
        29,
        "将参数零初始化会导致流过网络的数据也是对称的",
        "initializing the parameters to zero makes the data that flows through the network symmetric",
    ),
    (
        "000",
        30,
        "初始化参数应该非常接近于零(但不全等于零),来打破网络的对称性",
        "initial parameters should be very close to zero, but not all exactly zero, to break the network's symmetry",
    ),
)
INIT_SCALE_SOURCE = cite(
    (
        "000",
        37,
        "W=numpy.random.randn(n)/sqrt(n)",
        "weights from a standard normal divided by the square root of the fan-in n",
    ),
    (
        "000",
        41,
        "w=numpy.random.randn(n)*sqrt(2.0/n)",
        "weights from a standard normal times the square root of 2/n, for ReLU",
    ),
    ("001", 37, "He初始化,适用于ReLU:stdev = np.sqrt(2/n)", "He initialization, for ReLU: stdev = sqrt(2/n)"),
)
INIT_LSTM_SOURCE = cite(
    (
        "001",
        55,
        "LSTM 的forget gate的bias,用1.0或者更大的值做初始化",
        "initialize the bias of an LSTM's forget gate to 1.0 or more",
    )
)
INIT_SCALE_FACTOR = 3.0  # warning: weight std more than 3x above or below He/Xavier for its fan-in
# (PyTorch's default init, std = 1/sqrt(3 fan_in), is 0.41x He and 0.58x Xavier: inside the band)
# A scale that far off is judged by what it does to the signal in the first samples:
START_SAMPLES = 3  # ...the first 3 samples of each signal (dead/saturated units, gradient norms)
START_STACK_RATIO = 1e-2  # ...gradient norms across the stack 100x apart at the start (collapse or blow-up)
START_DEAD = 0.5  # ...or > 50% of a layer's units dead at the start, in or after a flagged layer
START_SATURATED = 0.5  # ...or > 50% of its sigmoid/tanh outputs saturated at the start
FORGET_BIAS_TARGET = 1.0  # the LSTM forget-gate bias the notes recommend
FORGET_BIAS_TOLERANCE = 0.5  # info: its mean more than 0.5 away from 1.0


def _fan_out(shape: Any) -> int | None:
    """Fan-out of a Linear (out, in) or Conv (out, in/groups, *kernel) weight."""
    if not isinstance(shape, (list, tuple)) or len(shape) < 2:
        return None
    try:
        return int(shape[0]) * int(math.prod(int(d) for d in shape[2:]))
    except (TypeError, ValueError):
        return None


def _scale_problem(entry: Mapping[str, Any], is_output: bool) -> dict | None:
    """The entry's std against He/Xavier; None when within INIT_SCALE_FACTOR (or a Glorot variant)."""
    std, expected = finite_number(entry.get(R.I_STD)), finite_number(entry.get(R.I_EXPECTED_STD))
    if std is None or expected is None or expected <= 0:
        return None
    ratio = std / expected
    fan_in = finite_number(entry.get(R.I_FAN_IN))
    fan_out = _fan_out(entry.get(R.I_SHAPE))
    # Glorot's sqrt(2/(fan_in+fan_out)) (torch's xavier_normal_) is a legitimate choice too.
    glorot = math.sqrt(2.0 / (fan_in + fan_out)) if fan_in and fan_out else None
    near_glorot = glorot is not None and 1 / INIT_SCALE_FACTOR <= std / glorot <= INIT_SCALE_FACTOR
    if ratio > INIT_SCALE_FACTOR and not near_glorot:
        direction = "large"
    elif ratio < 1 / INIT_SCALE_FACTOR and not near_glorot and not is_output:
        direction = "small"  # a small output layer (e.g. std 0.01) is a common, harmless choice
    else:
        return None
    return {
        "layer": str(entry.get("layer")),
        "std": std,
        "expected_std": expected,
        "expected": str(entry.get("expected", "")),
        "ratio": ratio,
        "fan_in": int(fan_in) if fan_in else None,
        "direction": direction,
        "activation": entry.get("activation"),
    }


def check(run: Run) -> Iterable[Finding]:
    """Weights that start all-zero/constant, or at a scale far from He/Xavier for their fan-in.

    Why it matters: identical weights get identical gradients, so the units of a
    layer never become different (the symmetry is never broken). A scale far off He
    (std = sqrt(2/n), ReLU) or Xavier (std = sqrt(1/n), tanh/sigmoid) makes signals
    shrink or grow layer by layer: vanishing or exploding gradients, saturated units,
    NaN.
    Measured on run.json's init check, made when the collector attached: a constant
    hidden weight matrix is critical (a constant output layer is info); a std more
    than 3x above or below He/Xavier (and not within 3x of Glorot's
    sqrt(2/(fan_in+fan_out)); a small output layer is fine) is a warning; an LSTM
    forget-gate bias more than 0.5 from 1.0 is info. PyTorch's default init (0.41x He,
    0.58x Xavier) passes. Normalization, embedding and recurrent weights are not
    scale-checked. A scale that far off is a warning only when it shows in the signal
    in the first samples (> 50% of a layer's units dead or saturated in or after it,
    gradient norms 100x apart across the stack), or when the run records no such
    signal and no role excuses the layer (followed by a norm layer, in a block that
    holds one, the output layer); otherwise info: GPT-style N(0, 0.02) blocks behind
    LayerNorm and residual connections are small on purpose.
    What to do: He init for ReLU layers, Xavier for tanh/sigmoid; never zeros; LSTM
    forget-gate bias 1.0.
    """
    checks = run.meta.get(R.K_INIT_CHECK) if run.meta else None
    if not isinstance(checks, list) or not checks:
        raise Skip(missing_meta_reason(R.K_INIT_CHECK, "the collector's initialization check"))
    entries = [c for c in checks if isinstance(c, Mapping)]
    weights = [
        c
        for c in entries
        if c.get("param", "weight") == "weight" and str(c.get("type")) not in NORM_OR_EMBEDDING_TYPES
    ]
    output = str(weights[-1].get("layer")) if weights else None
    constant_hidden, constant_output, scale = [], [], []
    for entry in weights:
        name = str(entry.get("layer"))
        if entry.get(R.I_CONSTANT):
            (constant_output if name == output and len(weights) > 1 else constant_hidden).append(entry)
        elif str(entry.get("type")) not in RECURRENT_TYPES:
            problem = _scale_problem(entry, is_output=name == output and len(weights) > 1)
            if problem is not None:
                scale.append(problem)
    found: list[Finding] = []
    if constant_hidden:
        found.append(_constant_finding(constant_hidden, "critical"))
    if constant_output:
        found.append(_constant_finding(constant_output, "info"))
    if scale:
        found.append(_scale_finding(scale, run))
    found.extend(_forget_gate_findings(entries))
    return found


def _describe_constant(entry: Mapping[str, Any]) -> str:
    mean = finite_number(entry.get("mean")) or 0.0
    return f"{entry.get('layer')} ({'all zeros' if mean == 0 else f'every weight = {fmt(mean)}'})"


def _constant_finding(entries: list[Mapping[str, Any]], severity: str) -> Finding:
    names = [str(e.get("layer")) for e in entries]
    listed = ", ".join(_describe_constant(e) for e in entries[:5]) + (
        f" and {len(entries) - 5} more" if len(entries) > 5 else ""
    )
    if severity == "critical":
        message = (
            f"At the start of training, the weights of {listed} are constant. Every unit of such a layer "
            "computes the same output and receives the same gradient, so the units never become different: "
            "the layer acts as a single unit."
        )
        title = f"Constant initial weights in {quote(names[0])}" + (
            f" and {len(names) - 1} more" if len(names) > 1 else ""
        )
    else:
        message = (
            f"The output layer {listed} starts constant. This "
            "is harmless when the layers before it are random "
            "(the gradient differs per output), and some recipes do it on purpose."
        )
        title = f"Output layer {quote(names[0])} starts constant"
    return finding(
        RULE_ID,
        severity,  # type: ignore[arg-type]
        title,
        message,
        (
            "Initialize with small random values, never zeros: torch.nn.init.kaiming_normal_(w, "
            "nonlinearity='relu') for ReLU layers, torch.nn.init.xavier_normal_(w) for tanh/sigmoid.",
            "Biases may start at zero; weights may not.",
        ),
        INIT_CONSTANT_SOURCE,
        step=0,
        layer=names[0],
        evidence={"layers": names, "means": [finite_number(e.get("mean")) for e in entries]},
    )


def _scale_finding(problems: list[dict], run: Run) -> Finding:
    """A warning when the scale shows in the signal at the start, or when there is no signal to
    tell and the layer's role does not excuse it; else info. A layer followed by a norm layer, in a
    block that normalizes (a transformer block's LayerNorm beside it), or the output layer, is
    small or large on purpose in common recipes (GPT-2's N(0, 0.02))."""
    for p in problems:
        p["role"] = _role(run, p["layer"])
    harm = _harm_at_start(run, [p["layer"] for p in problems])
    has_signal = _has_start_signals(run)
    excused = all(p["role"] for p in problems)
    severity = "warning" if harm or (not has_signal and not excused) else "info"
    first = problems[0]
    parts = [
        f"{p['layer']} std {fmt(p['std'])} vs {p['expected'] or 'expected'} {fmt(p['expected_std'])} "
        f"({fmt_factor(p['ratio']) if p['ratio'] >= 1 else fmt(p['ratio']) + 'x'})"
        + (f", {p['role']}" if p["role"] else "")
        for p in problems[:6]
    ]
    more = f" and {len(problems) - 6} more" if len(problems) > 6 else ""
    directions = {p["direction"] for p in problems}
    size = "too large" if directions == {"large"} else ("too small" if directions == {"small"} else "off")
    fan = f"fan_in {first['fan_in']}: " if first["fan_in"] else ""
    message = (
        f"Initial weight std is more than {fmt(INIT_SCALE_FACTOR)}x off He/Xavier for its fan-in: "
        + "; ".join(parts)
        + more
        + "."
    )
    if harm:
        message += f" It shows at the start: {harm}."
    elif has_signal:
        message += (
            " The signal passes all the same at the start: no layer's units dead or saturated, gradient "
            "norms within 100x across the stack, as with a deliberate small init (N(0, 0.02) in GPT-style "
            "models) behind normalization or residual connections."
        )
    else:
        message += " Signals then shrink or grow by about that factor per layer."
    return finding(
        RULE_ID,
        severity,  # type: ignore[arg-type]
        f"Initial weight scale {size} in {quote(first['layer'])}"
        + (f" and {len(problems) - 1} more" if len(problems) > 1 else ""),
        message,
        (
            f"Re-initialize {quote(first['layer'])} ({fan}target std {fmt(first['expected_std'])}): "
            "torch.nn.init.kaiming_normal_(w, nonlinearity='relu') (He, std sqrt(2/fan_in)) for ReLU layers; "
            "torch.nn.init.normal_(w, std=1/math.sqrt(fan_in)) (Xavier as in the notes) or xavier_normal_(w) "
            "for tanh/sigmoid.",
            "Or keep PyTorch's default initialization "
            "(nn.Linear/nn.Conv2d already use a fan-in scaled uniform).",
        )
        if severity == "warning"
        else ("Nothing to change while the signal passes; watch the first steps' gradient norms.",),
        INIT_SCALE_SOURCE,
        step=0,
        layer=first["layer"],
        evidence={"layers": problems, "harm_at_start": harm or None},
    )


def _role(run: Run, layer: str) -> str | None:
    """Why a layer may start off He/Xavier on purpose: followed by a norm layer, in a block that
    holds one (a transformer block), or the output layer; None when nothing excuses it."""
    layers = model_layers(run)
    names = [str(entry.get("name")) for entry in layers]
    if layer not in names:
        return None
    i = names.index(layer)
    if i + 1 < len(layers) and str(layers[i + 1].get("type")) in NORM_TYPES:
        return "followed by a norm layer"
    norms = [n for n, entry in zip(names, layers) if str(entry.get("type")) in NORM_TYPES]
    parts = layer.split(".")
    for depth in range(len(parts) - 1, 0, -1):
        block = ".".join(parts[:depth]) + "."
        if any(n.startswith(block) for n in norms):
            return "in a block with a norm layer"
    weights = [n for n, entry in zip(names, layers) if str(entry.get("type")) not in NORM_OR_EMBEDDING_TYPES]
    if weights and layer == weights[-1]:
        return "the output layer"
    return None


def _first_values(series_by_layer: Mapping[str, Any]) -> dict[str, float]:
    """Each layer's median over its first `START_SAMPLES` finite samples."""
    out = {}
    for name, series in series_by_layer.items():
        values = series.values[np.isfinite(series.values)][:START_SAMPLES]
        if values.shape[0]:
            out[name] = float(np.median(values))
    return out


def _has_start_signals(run: Run) -> bool:
    return bool(run.layers(T.GRAD_NORM_PREFIX) or run.layers(T.DEAD_FRACTION_PREFIX))


def _harm_at_start(run: Run, flagged: list[str]) -> str:
    """What the flagged layers' scale does to the signal in the first samples, in words ("" for nothing)."""
    order = ordered_layers(run, set(flagged) | set(run.layers(T.DEAD_FRACTION_PREFIX)))
    first_flagged = min((order.index(name) for name in flagged if name in order), default=0)
    after = set(order[first_flagged:])
    for prefix, limit, what in (
        (T.DEAD_FRACTION_PREFIX, START_DEAD, "dead"),
        (T.SATURATED_FRACTION_PREFIX, START_SATURATED, "saturated"),
    ):
        early = _first_values(run.layers(prefix))
        hit = {n: v for n, v in early.items() if v > limit and (n in after or n not in order)}
        if hit:
            worst = max(hit, key=hit.get)
            return f"{fmt_pct(hit[worst])} of {quote(worst)}'s units are {what} in the first samples"
    types = layer_types(run)
    grads = {
        n: v
        for n, v in _first_values(run.layers(T.GRAD_NORM_PREFIX)).items()
        if types.get(n) not in NORM_OR_EMBEDDING_TYPES and v > 0
    }
    stack = ordered_layers(run, grads)
    if len(stack) >= 2:
        ratio = grads[stack[0]] / grads[stack[-1]]
        if ratio < START_STACK_RATIO or ratio > 1 / START_STACK_RATIO:
            return (
                f"the first layer {quote(stack[0])}'s gradient norm is {fmt(ratio)}x the last layer "
                f"{quote(stack[-1])}'s in the first samples"
            )
    return ""


def _forget_gate_findings(entries: list[Mapping[str, Any]]) -> list[Finding]:
    found = []
    for entry in entries:
        if entry.get("param") != "forget_gate_bias":
            continue
        mean = finite_number(entry.get("forget_gate_bias_mean"))
        if mean is None or abs(mean - FORGET_BIAS_TARGET) <= FORGET_BIAS_TOLERANCE:
            continue
        name = str(entry.get("layer"))
        found.append(
            finding(
                RULE_ID,
                "info",
                f"LSTM {quote(name)}: forget-gate bias starts at {fmt(mean)}, not 1.0",
                f"The forget-gate bias of {quote(name)} starts with mean {fmt(mean)} (PyTorch's default is near 0); "
                f"starting it at {fmt(FORGET_BIAS_TARGET)} keeps "
                "the cell state flowing early in training and "
                "often speeds up convergence.",
                (
                    "Set it after creating the LSTM: for each bias_ih_l{k} (and/or bias_hh_l{k}), "
                    "b.data[H:2H].fill_(1.0), where H = hidden_size (PyTorch's gate order is i, f, g, o).",
                ),
                INIT_LSTM_SOURCE,
                step=0,
                layer=name,
                evidence={"forget_gate_bias_mean": mean, "target": FORGET_BIAS_TARGET},
            )
        )
    return found
