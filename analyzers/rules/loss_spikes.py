"""Rule `loss_spikes`: the per-step loss jumps far above its running level, then comes back (or not).

The check's docstring says what is measured, why it matters and what to do; the dashboard
and docs/rules.md show it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from trainscope.analyzers.findings import Finding
from trainscope.analyzers.rules.common import finding, fmt, fmt_factor, fmt_step
from trainscope.analyzers.rules.curves import loss_curve, require_positive
from trainscope.analyzers.rules.robust import finite_points, row_percentiles, value_at
from trainscope.analyzers.run import Run
from trainscope.logformat import tags as T

RULE_ID = "loss_spikes"
NAME = "loss spikes"  # what the finding is called where it is listed under another
SPIKE_SOURCE = (
    "Chowdhery et al., PaLM (2022), section 5.1: loss spikes during training, handled by restarting "
    "before the spike and skipping the batches; Groeneveld et al., OLMo (2024); MosaicML Composer's "
    "loss-spike callback"
)
LIVE_POINTS = 200  # per-step loss points before a verdict on a run still being written
WINDOW = 25  # the running level is the median of the 25 points before each one, its spread their 10-90% band
SPIKE_SPREADS = 5.0  # a spike: >= 5 spreads above that level (a small batch's heavy tail stays below)...
SPIKE_FACTOR = 1.5  # ...and >= 1.5x the level...
SPIKE_OF_START = 0.5  # ...and >= 50% of where the loss started (a 30x blip of a loss at ~0 is no spike)...
PERSIST = 3  # ...and an event, not one odd batch: the next 3 points' median still 2 spreads above the level
PERSIST_SPREADS = 2.0
RECOVERED = 1.5  # recovered: the median of the 25 points after the spike within 1.5x the level before
MANY = 3  # a warning with 3+ spikes, or one that did not recover; info for fewer that all recovered
ROUGH_SPREADS = 2.5  # the cheap first pass keeps points half a spike's height above the stretch before
MAX_CANDIDATES = 100_000  # points the exact test looks at, at most (the cheap pass leaves far fewer)


@dataclass(frozen=True)
class Spike:
    step: int
    peak: float
    level: float  # the running level before it
    after: float  # the median of the points after it
    grad_norm: float | None  # the gradient norm at its step, when logged

    @property
    def recovered(self) -> bool:
        return self.after <= RECOVERED * self.level


def check(run: Run) -> Iterable[Finding]:
    """The per-step loss jumps far above its running level and comes back, fully or partly.

    Why it matters: a spike is one bad step: a batch of outliers or corrupted labels, a
    learning rate too high for that moment, an overflow. Large-model training reports
    them as its most common instability (PaLM, OLMo); each one undoes progress, and one
    that does not recover leaves the run worse than before it.
    Measured on the per-step train loss against the 25 points before each point: a
    spike is 5 times their 10-90% band above their median and 1.5x that median, at least
    half of where the loss started (so the heavy tail of a loss near 0 is no spike), and
    still 2 bands above over the next 3 points (a small batch's one odd example drops back
    at once); points in a row count as one. Recovered: the next 25 points' median within 1.5x the level
    before. A warning with 3+ spikes or one that did not recover; info otherwise. Each
    spike is reported with its step, height, recovery and the gradient norm at it.
    What to do: lower the learning rate or lengthen the warm-up; clip the gradient norm;
    for a spike that does not recover, restart from the checkpoint before it and skip the
    batches around it; look at the batches of the spike steps for corrupted data.
    """
    loss = loss_curve(run, LIVE_POINTS)
    require_positive(loss)
    spikes = _spikes(run, loss.steps, loss.values, loss.start)
    if not spikes:
        return []
    lasting = [s for s in spikes if not s.recovered]
    severity = "warning" if lasting or len(spikes) >= MANY else "info"
    worst = max(spikes, key=lambda s: s.peak / s.level)
    listed = "; ".join(
        f"step {fmt_step(s.step)}: {fmt(s.level)} -> {fmt(s.peak)} ({fmt_factor(s.peak / s.level)})"
        + (", recovered" if s.recovered else f", still {fmt(s.after)} after")
        + (f", gradient norm {fmt(s.grad_norm)}" if s.grad_norm is not None else "")
        for s in spikes[:6]
    ) + (f"; and {len(spikes) - 6} more" if len(spikes) > 6 else "")
    return [
        finding(
            RULE_ID,
            severity,
            f"{len(spikes)} loss spike(s)"
            + (f", {len(lasting)} not recovered" if lasting else ", all recovered"),
            f"The per-step train loss jumped far above its running level {len(spikes)} time(s): {listed}.",
            (
                "Lower the learning rate or lengthen the warm-up; clip the gradient norm "
                "(torch.nn.utils.clip_grad_norm_, max_norm 1-5).",
                "For a spike that does not recover: restart from the checkpoint before it and skip the "
                "batches around it (PaLM's remedy).",
                "Look at the batches of the spike steps: corrupted labels or outliers often are the trigger.",
            ),
            SPIKE_SOURCE,
            step=spikes[0].step,
            evidence={
                "spikes": [
                    {
                        "step": s.step,
                        "peak": s.peak,
                        "level": s.level,
                        "after": s.after,
                        "grad_norm": s.grad_norm,
                    }
                    for s in spikes
                ],
                "largest_factor": worst.peak / worst.level,
                "not_recovered": len(lasting),
            },
        )
    ]


def _spikes(run: Run, steps: np.ndarray, values: np.ndarray, start: float) -> list[Spike]:
    n = values.shape[0]
    if n <= 2 * WINDOW:
        return []
    # A cheap first pass on whole stretches of WINDOW points (a 1M-step run in milliseconds): a point
    # can be a spike only if it is high against the start and against the stretch before its own.
    nb = n // WINDOW
    body = values[: nb * WINDOW].reshape(nb, WINDOW)
    p10, p50, p90 = row_percentiles(body, (10, 50, 90))
    own = np.minimum(np.arange(WINDOW, n) // WINDOW, nb) - 1  # the stretch that ends before each point
    rough = (values[WINDOW:] >= SPIKE_OF_START * start) & (
        values[WINDOW:] >= p50[own] + ROUGH_SPREADS * (p90[own] - p10[own])
    )
    rough_idx = np.flatnonzero(rough)[:MAX_CANDIDATES] + WINDOW
    # The exact test on the candidates alone: the level and spread of the WINDOW points before each.
    before = values[rough_idx[:, None] - np.arange(WINDOW, 0, -1)[None, :]]
    low, level, high = row_percentiles(before, (10, 50, 90))
    spread = high - low
    point = values[rough_idx]
    following = values[np.minimum(rough_idx[:, None] + np.arange(1, PERSIST + 1)[None, :], n - 1)]
    persists = np.median(following, axis=1) >= level + PERSIST_SPREADS * spread  # one bad batch drops back
    hit = (point >= level + SPIKE_SPREADS * spread) & (point >= SPIKE_FACTOR * level) & persists
    idx = rough_idx[hit]
    level_at = dict(zip(idx.tolist(), level[hit].tolist()))
    grad = run.scalar(T.GRAD_GLOBAL_NORM)
    grad_points = finite_points(grad) if grad is not None else None
    spikes: list[Spike] = []
    i = 0
    while i < idx.shape[0]:
        j = i
        while j + 1 < idx.shape[0] and idx[j + 1] == idx[j] + 1:  # points in a row: one spike
            j += 1
        first, last = int(idx[i]), int(idx[j])
        peak_i = first + int(np.argmax(values[first : last + 1]))
        after = values[last + 1 : last + 1 + WINDOW]
        g = None
        if grad_points is not None:
            at = value_at(*grad_points, np.array([steps[peak_i]]))[0]
            g = float(at) if np.isfinite(at) else None
        spikes.append(
            Spike(
                step=int(steps[first]),
                peak=float(values[peak_i]),
                level=float(level_at[first]),
                after=float(np.median(after)) if after.shape[0] else float(values[last]),
                grad_norm=g,
            )
        )
        i = j + 1
    return spikes
