"""Every rule of RULES.md, listed once, explicitly. Nothing registers itself by import.

One module per rule, named by its id: the module holds `RULE_ID`, its thresholds (named
constants, one comment each), its source, and `check(run)`, whose docstring says what it
detects, why it matters and what to do. Shared measures live beside them: `curves` (the
smoothed loss, chance level, the learning rate), `updates` (update/weight ratios),
`labels` (how mixed a batch's labels are), `robust` (smoothing and trends), `common`
(required signals, wording, citations); run facts (batch size, classes, layers) are in
`analyzers.facts`. `synthetic` builds realistic runs for tests and the benchmark.
"""

from __future__ import annotations

from types import ModuleType
from typing import Callable, Iterable

from analyzers.findings import Finding
from analyzers.run import Run

RuleFn = Callable[[Run], Iterable[Finding]]

from analyzers.rules import (  # noqa: E402
    bad_initialization,
    dead_relu,
    exploding_gradients,
    loss_plateau,
    lr_too_high,
    lr_too_low,
    noisy_batches,
    nonfinite,
    overfitting,
    saturated_activations,
    underfitting,
    unnormalized_inputs,
    unshuffled_data,
    vanishing_gradients,
    weight_growth,
)

# The rule modules in the order of RULES.md.
RULE_MODULES: tuple[ModuleType, ...] = (
    nonfinite,
    lr_too_high,
    lr_too_low,
    loss_plateau,
    noisy_batches,
    overfitting,
    underfitting,
    dead_relu,
    vanishing_gradients,
    exploding_gradients,
    saturated_activations,
    bad_initialization,
    unnormalized_inputs,
    unshuffled_data,
    weight_growth,
)
# (rule id, check) in the order of RULES.md.
ALL_RULES: tuple[tuple[str, RuleFn], ...] = tuple((m.RULE_ID, m.check) for m in RULE_MODULES)
RULES: dict[str, RuleFn] = dict(ALL_RULES)
