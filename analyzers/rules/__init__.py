"""Every rule, listed once, explicitly: the fifteen of RULES.md, then the rules beyond the documents.

Nothing registers itself by import.

One module per rule, named by its id: the module holds `RULE_ID`, its thresholds (named
constants, one comment each), its source, and `check(run)`, whose docstring says what it
detects, why it matters and what to do. Shared measures live beside them: `curves` (the
smoothed loss, chance level, the learning rate), `updates` (update/weight ratios),
`labels` (how mixed a batch's labels are), `robust` (smoothing and trends),
`skipped_steps` (whether a NaN/Inf step was taken or skipped by AMP), `val_metrics` (the
validation metrics a log names, and which way is better), `common` (required signals,
wording, citations); run facts (batch size, classes, layers) are in
`analyzers.facts`. `synthetic` builds realistic runs for tests and the benchmark.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import ModuleType

from trainscope.analyzers.findings import Finding
from trainscope.analyzers.run import Run

RuleFn = Callable[[Run], Iterable[Finding]]

from trainscope.analyzers.rules import (  # noqa: E402
    activation_on_logits,
    bad_initialization,
    dead_relu,
    exploding_gradients,
    gradients_not_zeroed,
    initial_loss_off,
    loss_plateau,
    loss_spikes,
    lr_too_high,
    lr_too_low,
    noisy_batches,
    nonfinite,
    nothing_training,
    overfitting,
    saturated_activations,
    too_good_to_be_true,
    underfitting,
    unnormalized_inputs,
    unshuffled_data,
    vanishing_gradients,
    weight_growth,
)

# The rule modules: the fifteen of RULES.md in its order, then the rules beyond the documents.
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
    # Real bugs the documents do not name, each resting on a published reference.
    nothing_training,
    gradients_not_zeroed,
    activation_on_logits,
    initial_loss_off,
    too_good_to_be_true,
    loss_spikes,
)
# (rule id, check) in that order.
ALL_RULES: tuple[tuple[str, RuleFn], ...] = tuple((m.RULE_ID, m.check) for m in RULE_MODULES)
RULES: dict[str, RuleFn] = dict(ALL_RULES)
