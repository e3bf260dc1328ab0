"""Rule `dead_relu`: A large share of a layer's ReLU units output zero for every example.

The check's docstring says what is measured, why it matters and what to do; the dashboard
and docs/rules.md show it.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from analyzers.facts import (
    batch_size,
    functional_relu_consumers,
    ordered_layers,
)
from analyzers.findings import Finding, Severity, Skip
from analyzers.rules.common import (
    cite,
    finding,
    fmt_pct,
    fmt_step,
    quote,
    require_layers,
    require_points,
)
from analyzers.rules.robust import (
    max_finite_samples,
    sustained_above,
)
from analyzers.run import Run
from logformat import tags as T

RULE_ID = "dead_relu"
NAME = "dead ReLUs"  # what the finding is called where it is listed under another
DEAD_SOURCE = cite(
    ("000", 56, "就是它可能会永远“死”掉"),
    (
        "000",
        59,
        "为了解决ReLU 在负区间的导数为零的问题,人们发明了 Leaky ReLU, "
        "Parametric ReLU, Randomized ReLU 等变体",
    ),
)
DEAD_WARNING = 0.5  # warning: more than 50% of a layer's units output zero for the whole sampled batch
DEAD_CRITICAL = 0.9  # critical: more than 90%
DEAD_SUSTAIN = 3  # ...in each of the last 3 samples at least (not one odd batch)
DEAD_MIN_BATCH = 16  # below 16 examples a batch cannot tell a dead unit from a merely quiet one


def check(run: Run) -> Iterable[Finding]:
    """A large share of a layer's ReLU units output zero for every example: they are dead.

    Why it matters: a ReLU unit whose input is negative for every example gets zero
    gradient and never recovers; past half the layer, the model has lost most of its
    capacity there.
    Measured on ``act/dead_fraction/<layer>`` (units zero for the whole sampled
    batch): above 50% (warning) or 90% (critical) in each of the last 3 samples. Not
    judged for batches under 16 examples (too few to tell dead from quiet).
    What to do: lower the learning rate (one big step can push a unit's bias far
    negative); He initialization; LeakyReLU/PReLU/RReLU; a small positive bias init.
    """
    layers = require_layers(run, T.DEAD_FRACTION_PREFIX, "share of dead ReLU units per layer")
    batch = batch_size(run)
    if batch is not None and batch < DEAD_MIN_BATCH:
        raise Skip(
            f"batch size {batch} is too small to tell dead units from quiet ones (needs >= {DEAD_MIN_BATCH})"
        )
    require_points(max_finite_samples(layers), DEAD_SUSTAIN, "activation samples")
    found = []
    at_input_of = functional_relu_consumers(run)
    for name in ordered_layers(run, layers):
        streak = sustained_above(layers[name], DEAD_WARNING, DEAD_SUSTAIN)
        if streak is None:
            continue
        onset, level, count = streak
        critical = sustained_above(layers[name], DEAD_CRITICAL, DEAD_SUSTAIN)
        severity: Severity = "critical" if critical is not None else "warning"
        now = float(layers[name].values[np.isfinite(layers[name].values)][-1])
        units = (
            f"the ReLU units feeding {quote(name)} (F.relu, measured at {quote(name)}'s input)"
            if name in at_input_of
            else f"{quote(name)}'s units"
        )
        found.append(
            finding(
                RULE_ID,
                severity,
                f"Dead ReLUs: {fmt_pct(now)} of {units} never fire",
                f"{fmt_pct(level).capitalize()} of {units} (median over the last {count} samples; "
                f"{fmt_pct(now)} in the latest) output zero for every example of the batch since step "
                f"{fmt_step(onset)}, above the "
                f"{fmt_pct(DEAD_CRITICAL if critical else DEAD_WARNING)} threshold.",
                (
                    "Lower the learning rate: one large step can push a unit's bias so far negative that it "
                    "never fires again.",
                    "Initialize with He (torch.nn.init.kaiming_normal_(w, nonlinearity='relu')) and a small "
                    "positive bias (e.g. 0.01).",
                    "Use LeakyReLU(0.01), PReLU or RReLU, which keep a gradient for negative inputs.",
                ),
                DEAD_SOURCE,
                step=onset,
                layer=name,
                evidence={"dead_fraction": level, "latest": now, "samples": count, "since_step": onset},
            )
        )
    return found
