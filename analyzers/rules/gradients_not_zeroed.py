"""Rule `gradients_not_zeroed`: the gradient norm grows steadily, step after step: gradients accumulate.

The check's docstring says what is measured, why it matters and what to do; the dashboard
and docs/rules.md show it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from trainscope.analyzers.facts import is_live
from trainscope.analyzers.findings import Finding
from trainscope.analyzers.rules.common import (
    finding,
    fmt,
    fmt_factor,
    fmt_pct,
    fmt_step,
    require_finite_points,
)
from trainscope.analyzers.rules.curves import MIN_CURVE_POINTS
from trainscope.analyzers.rules.exploding_gradients import global_norm
from trainscope.analyzers.rules.robust import binned, finite_points
from trainscope.analyzers.run import Run

RULE_ID = "gradients_not_zeroed"
NAME = "gradients never zeroed"  # what the finding is called where it is listed under another
ZERO_GRAD_SOURCE = (
    "PyTorch docs, torch.optim.Optimizer.zero_grad and the 'Zeroing out gradients' recipe: "
    '"PyTorch accumulates the gradients on subsequent backward passes ... it is essential to zero out '
    'the gradients before each optimizer step"'
)
LIVE_POINTS = 100  # gradient-norm points before a verdict on a run still being written
SEGMENTS = 20  # the norm is summarized in 20 consecutive stretches (bin medians)
GROWTH = 8.0  # the last stretch's median >= 8x the first's (an epoch without zero_grad: ~18x)...
RISING_SHARE = 0.8  # ...rising from stretch to stretch >= 80% of the time: a steady climb, not a spike
SKIP_START = 0.05  # the first 5% of the run (the norm settling from its init) is left out
# A sum no batch moves: where the network stops learning (dead units, a saturated loss) the new
# gradients add ~nothing, and an accumulated norm freezes far above where it started.
START_POINTS = 3  # the norm's start: the median of its first 3 points
FROZEN_SHARE = 0.5  # over the last half of the run...
FROZEN_CHANGE = 0.01  # ...the median change from one logged point to the next < 1% (a minibatch's: 10%+)...
FROZEN_POINTS = 20  # ...on 20+ points...
MAX_GAP = 10  # ...logged at most 10 steps apart (epoch averages are smooth for another reason)


def check(run: Run) -> Iterable[Finding]:
    """The gradient norm climbs steadily through the run: the gradients are never zeroed.

    Why it matters: PyTorch adds each backward pass's gradients to what ``.grad``
    already holds; without ``optimizer.zero_grad()`` (or with gradient accumulation
    that never resets) every step applies the sum of all gradients so far. The norm
    grows roughly linearly with the steps (18x over an epoch), the steps grow with it,
    the loss swings and validation gets worse. Neither a spike nor an exponential blow-up,
    so the exploding-gradient checks miss it.
    Where the network stops learning (its units die, the loss saturates) the new
    gradients add almost nothing and the sum stops moving: a norm far above its start
    that no batch changes, which a minibatch gradient never is.
    Measured on the gradient norm (``grad/global_norm``, or the per-layer norms added up)
    after the first 5% of the run, in 20 stretches: the last stretch's median at least 8x
    the first's, and rising from one stretch to the next in 80% of them or more. Or, on a
    norm logged at most 10 steps apart: over the last half of the run (20+ points) it
    changes by a median of < 1% from one point to the next while 8x or more above its
    first 3 points' median.
    What to do: call ``optimizer.zero_grad()`` (or ``model.zero_grad()``) before every
    ``loss.backward()``; with gradient accumulation, zero after each optimizer step, not
    only at the start.
    """
    norm = global_norm(run)
    require_finite_points(norm, LIVE_POINTS if is_live(run) else MIN_CURVE_POINTS * 5, "gradient-norm points")
    steps, values = finite_points(norm)
    climb = _steady_climb(steps, values)
    frozen = None if climb else _frozen_sum(steps, values)
    if climb is None and frozen is None:
        return []
    message, step, evidence = climb or frozen
    return [
        finding(
            RULE_ID,
            "warning",
            f"Gradients accumulate: the gradient norm grew {fmt_factor(evidence['growth'])}"
            + (" step after step" if climb else ", then stopped moving"),
            message,
            (
                "Call optimizer.zero_grad() before every loss.backward() (or set_to_none=True, the default).",
                "With gradient accumulation, zero the gradients right after each optimizer.step(), not once "
                "at the start; divide the loss by the number of accumulated batches.",
            ),
            ZERO_GRAD_SOURCE,
            step=step,
            evidence=evidence,
        )
    ]


def _steady_climb(steps: np.ndarray, values: np.ndarray) -> tuple[str, int, dict] | None:
    """The norm rises from stretch to stretch, 8x over the run: a sum that keeps growing."""
    begin = int(SKIP_START * values.shape[0])
    steps, values = steps[begin:], values[begin:]
    if values.shape[0] < SEGMENTS:
        return None
    curve = binned(steps, values, SEGMENTS, max(1, values.shape[0] // SEGMENTS))
    medians = curve.values
    if medians[0] <= 0:
        return None
    growth = float(medians[-1] / medians[0])
    rising = float(np.mean(np.diff(medians) > 0))
    if growth < GROWTH or rising < RISING_SHARE:
        return None
    first, last = int(curve.steps[0]), int(steps[-1])
    message = (
        f"The gradient norm climbed from about {fmt(float(medians[0]))} to {fmt(float(medians[-1]))} "
        f"({fmt_factor(growth)}) between steps {fmt_step(first)} and {fmt_step(last)}, rising from one "
        f"stretch of the run to the next in {fmt_pct(rising)} of them: a steady climb, as when each "
        "step adds its gradients to all the ones before instead of replacing them."
    )
    evidence = {
        "growth": growth,
        "rising_share": rising,
        "start_norm": float(medians[0]),
        "end_norm": float(medians[-1]),
    }
    return message, first, evidence


def _frozen_sum(steps: np.ndarray, values: np.ndarray) -> tuple[str, int, dict] | None:
    """The norm sits far above its start and no batch moves it: a sum the new gradients no longer change."""
    n = values.shape[0]
    tail = int(FROZEN_SHARE * n)
    if tail < FROZEN_POINTS or n < START_POINTS + tail:
        return None
    if float(np.median(np.diff(steps))) > MAX_GAP:
        return None
    start = float(np.median(values[:START_POINTS]))
    last_steps, last = steps[n - tail :], values[n - tail :]
    if start <= 0 or np.any(last <= 0):
        return None
    level = float(np.median(last))
    change = float(np.median(np.abs(np.diff(np.log(last)))))
    if level < GROWTH * start or change >= FROZEN_CHANGE:
        return None
    rose = int(steps[np.argmax(values >= 2 * start)])  # where the climb began
    message = (
        f"The gradient norm rose from {fmt(start)} at the start to about {fmt(level)} "
        f"({fmt_factor(level / start)}), and over the last half of the run (from step "
        f"{fmt_step(int(last_steps[0]))}) it changes by a median of "
        f"{fmt_pct(change) if change >= 0.001 else 'under 0.1%'} from one logged step "
        "to the next, where each new batch moves a minibatch gradient by 10% or more: the gradient is a "
        "sum over all past steps that the new batches no longer change."
    )
    evidence = {"growth": level / start, "start_norm": start, "end_norm": level, "step_change": change}
    return message, rose, evidence
