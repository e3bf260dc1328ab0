"""Rule `saturated_activations`: Most sigmoid/tanh outputs sit at the flat ends of the curve.

The check's docstring says what is measured, why it matters and what to do; the dashboard
and docs/rules.md show it.
"""

from __future__ import annotations

from collections.abc import Iterable

from trainscope.analyzers.facts import (
    model_layers,
    ordered_layers,
)
from trainscope.analyzers.findings import Finding
from trainscope.analyzers.rules.activation_on_logits import output_activation
from trainscope.analyzers.rules.common import (
    cite,
    finding,
    fmt_pct,
    fmt_step,
    quote,
    require_layers,
    require_points,
)
from trainscope.analyzers.rules.robust import (
    max_finite_samples,
    sustained_above,
)
from trainscope.analyzers.run import Run
from trainscope.logformat import tags as T

RULE_ID = "saturated_activations"
NAME = "saturated activations"  # what the finding is called where it is listed under another
SATURATED_SOURCE = cite(
    (
        "001",
        51,
        "除了gate之类的地方,需要把输出限制成0-1之外,尽量不要用sigmoid",
        "except where the output must lie in 0 to 1, such as gates, avoid sigmoid",
    ),
    (
        "000",
        49,
        "当输入的绝对值较大时,其梯度(导数)接近于零,这时参数几乎不再更新",
        "when the input is large in magnitude, its gradient, the derivative, is close to zero and the parameters almost stop updating",
    ),
)
SATURATED_WARNING = 0.5  # warning: most (> 50%) sigmoid/tanh outputs sit at the flat ends
SATURATED_SUSTAIN = 3  # ...in each of the last 3 samples at least
OUTPUT_ACTIVATIONS = frozenset({"Sigmoid", "Tanh", "Softmax", "LogSoftmax", "Hardsigmoid", "Hardtanh"})


def _output_modules(run: Run) -> set[str]:
    """The output's squashing modules, whose saturation is no hidden layer's fault.

    A sigmoid head is meant to saturate, so is a sigmoid wrongly placed in front of a loss that
    applies its own (activation_on_logits reports that one). run.json's layers list only modules
    with weights, so the collector's output activation is the one after the last of them; a model
    summary that lists the activation module itself as the last layer is read as it says.
    """
    layers = model_layers(run)
    found = {name} if (name := output_activation(run)) else set()
    if layers and str(layers[-1].get("type")) in OUTPUT_ACTIVATIONS:
        found.add(str(layers[-1].get("name")))
    return found


def check(run: Run) -> Iterable[Finding]:
    """Most sigmoid/tanh outputs sit at the flat ends of the curve, where the gradient is ~0.

    Why it matters: sigmoid's slope is at most 0.25 and almost zero outside [-4, 4]; a
    saturated layer passes almost no gradient back, so it and everything before it
    stop learning.
    Measured on ``act/saturated_fraction/<layer>`` (sigmoid outputs below 0.01 or
    above 0.99, tanh |y| > 0.99): above 50% in each of the last 3 samples. The model's
    output sigmoid/tanh, the activation after its last layer with weights, is left out:
    confident predictions are supposed to sit at the ends, and one in front of a loss that
    applies its own is activation_on_logits' finding (one fault, reported once).
    What to do: ReLU-family activations (keep sigmoid for gates and outputs only);
    normalize the inputs; Xavier initialization; batch normalization before the
    activation.
    """
    layers = require_layers(
        run, T.SATURATED_FRACTION_PREFIX, "share of saturated sigmoid/tanh outputs per layer"
    )
    require_points(max_finite_samples(layers), SATURATED_SUSTAIN, "activation samples")
    output = _output_modules(run)
    found = []
    for name in ordered_layers(run, layers):
        if name in output:
            continue
        streak = sustained_above(layers[name], SATURATED_WARNING, SATURATED_SUSTAIN)
        if streak is None:
            continue
        onset, level, count = streak
        found.append(
            finding(
                RULE_ID,
                "warning",
                f"Saturated activations in {quote(name)}: {fmt_pct(level)} at the flat ends",
                f"In {quote(name)}, {fmt_pct(level)} of the sigmoid/tanh "
                f"outputs (median over the last {count} samples) "
                "sit at the flat ends of the curve since step "
                f"{fmt_step(onset)}, where the slope is almost 0, "
                f"above the {fmt_pct(SATURATED_WARNING)} threshold.",
                (
                    "Use ReLU-family activations here; keep sigmoid only for gates and the output.",
                    "Normalize the inputs (zero mean, unit variance) so pre-activations start near 0.",
                    "Initialize with Xavier (torch.nn.init.xavier_normal_), "
                    "or add batch normalization before "
                    "the activation.",
                ),
                SATURATED_SOURCE,
                step=onset,
                layer=name,
                evidence={
                    "saturated_fraction": level,
                    "samples": count,
                    "since_step": onset,
                    "threshold": SATURATED_WARNING,
                },
            )
        )
    return found
