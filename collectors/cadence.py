"""Which steps get the per-step statistics: the gradient norms (and batch accuracy
where the logits are too large to keep until the flush: collectors/deferred_accuracy.py).

They cost a pass over every gradient plus a few small kernels: on a small model with
a fast CPU step that is a visible share of the step (more inside the step than in a
loop of its own, since the step's own work has just left the caches cold), on a
launch-bound GPU step a few kernel launches, and on a model whose step takes 100 ms
nothing measurable (docs/performance.md has the readings). No fixed interval suits
all of them, so the collector measures what recording them costs and spreads them
out just enough to stay within a share of the training
time (`stats_budget`): every step where they fit, every k-th step where they do not.
The first steps of a run always get them: that is where a bad initialization or
learning rate shows, and a short run spends little time on them in absolute terms.

Their cost is measured twice. Host time, timed around them, is known from the first
step, but it can be less than what they cost the run: inside a real CPU step they read
the gradients back from caches the step has since filled, and on a GPU their kernels'
device time is not in it. So, once the statistics are spread out, the cadence also
compares the time of steps with them against steps without them (steps with nothing
else added: no sampled signals, noise window or histograms), and counts whichever of
the two costs is larger.
"""

from __future__ import annotations

import math

from trainscope.logformat.schedule import next_multiple, on_multiple

# Every step for the first 200 steps, whatever they cost: the gradient rules need 50
# points before they judge, and the start of a run is where it goes wrong first.
FULL_START = 200
# Then at least every 8th step whatever they cost: a long run keeps a dense curve, and
# a noise window (collectors/noise_scale.py) more than its first step's |g|² (every
# 16th left a 10-step window one: B_simple came out 20% high on a known answer).
MAX_STRIDE = 8
# Decay of the running means of the cost and of the step time: ~10 steps of memory,
# so a slow first step (allocation, warm-up) is forgotten within a few dozen steps.
EMA_DECAY = 0.9
# A step counts as at most this many times the running mean: a pause between steps
# (validation, checkpointing, a stalled data loader) is not training time that the
# statistics may spend. A step that really got slower still raises the mean 10% a step.
STEP_OUTLIER = 2.0
# Steps of each kind (with and without the statistics) before their difference in
# step time is trusted as the statistics' cost, and the decay of the two means: step
# times vary by several times that difference, so both average over ~50 steps (a
# shorter memory let the noise raise the cost, as the larger of the two measures, by
# half on the benchmark's CNN).
MIN_COMPARED = 20
COMPARE_DECAY = 0.98

# The kinds of step that `step_took` compares; any other step (sampled, in a noise
# window, with histograms) does more than the statistics and is left out.
STATS = "stats"
QUIET = "quiet"


class StatsCadence:
    """Says whether a step is due for the per-step statistics and learns what they cost.

    `every`: the shortest interval (1 = every step). `budget`: the share of the step
    time they may take on average after the first `FULL_START` steps, or None to keep
    to `every` whatever they cost (a fixed schedule: the same steps in every run), and
    after the first `FULL_START` steps to `later_every` if given (the ranks of a sharded
    model, which must measure the same steps, keep to the budget's widest stride).
    """

    def __init__(self, every: int, budget: float | None, later_every: int | None = None) -> None:
        self.every = every
        self.budget = budget
        self.later_every = every if later_every is None else later_every
        self.stride = every if budget is not None else self.later_every
        self._last: int | None = None
        self._cost: float | None = None  # host seconds one recording takes (running mean)
        self._step_seconds: float | None = None  # seconds one training step takes (running mean)
        self._with = _RunningMean()  # seconds of a step with the statistics and nothing else
        self._without = _RunningMean()  # ... and of a step with nothing at all

    @classmethod
    def same_on_every_rank(cls, every: int, budget: float | None) -> StatsCadence:
        """For the ranks of a sharded model, whose parts of each norm are summed and so
        must be taken on the same steps. A budget would time each rank's steps on its
        own; instead, after the first `FULL_START` steps, its widest stride (a sharded
        model's steps are long, but each rank writes its own part of every layer, so
        a run's log grows with its ranks). Without a budget, `every` throughout."""
        return cls(every, None, every if budget is None else max(every, MAX_STRIDE))

    def due(self, step: int) -> bool:
        if step < FULL_START:
            return on_multiple(step, self.every)
        if self.budget is None:
            return on_multiple(step, self.later_every)
        return self._last is None or step - self._last >= self.stride

    def next_due(self, step: int) -> int:
        """The first step from `step` on that `due` accepts; it holds until `recorded` is
        called again (nothing else moves the schedule)."""
        if step < FULL_START:
            following = next_multiple(step, self.every)
            if following < FULL_START:
                return following
            step = FULL_START
        if self.budget is None:
            return next_multiple(step, self.later_every)
        return step if self._last is None else max(step, self._last + self.stride)

    def recorded(self, step: int, cost_seconds: float) -> None:
        """Statistics were taken at `step`, in `cost_seconds` of host time."""
        self._last = step
        self._cost = _mean(self._cost, cost_seconds)
        self._update_stride()

    def step_took(self, seconds: float, kind: str | None = None) -> None:
        """A training step took `seconds`, all of the collector's work in it included;
        `kind` is STATS or QUIET for the steps to compare, None for any other."""
        if self._step_seconds is not None:
            seconds = min(seconds, STEP_OUTLIER * self._step_seconds)
        self._step_seconds = _mean(self._step_seconds, seconds)
        if kind == STATS:
            self._with.add(seconds)
        elif kind == QUIET:
            self._without.add(seconds)

    @property
    def cost(self) -> float | None:
        """Seconds the statistics cost a step: the larger of their host time and, once
        enough steps of both kinds were seen, the step-time difference they make."""
        if self._cost is None or min(self._with.count, self._without.count) < MIN_COMPARED:
            return self._cost
        return max(self._cost, self._with.value - self._without.value)

    def _update_stride(self) -> None:
        cost = self.cost
        if self.budget is None or not self._step_seconds or cost is None:
            return
        needed = math.ceil(cost / (self.budget * self._step_seconds))
        self.stride = max(self.every, min(MAX_STRIDE, needed))


class _RunningMean:
    def __init__(self) -> None:
        self.value = 0.0
        self.count = 0

    def add(self, value: float) -> None:
        self.value = _mean(self.value if self.count else None, value, COMPARE_DECAY)
        self.count += 1


def _mean(mean: float | None, value: float, decay: float = EMA_DECAY) -> float:
    return value if mean is None else decay * mean + (1.0 - decay) * value
