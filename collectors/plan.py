"""What a step records, decided before it starts: a frozen `StepPlan`.

Inside a training step each line of Python costs several times its usual time (the
step's own work has just filled the caches), so the hooks and `step()` only read the
plan's flags. The plan is a pure function of the step number, the settings and the
statistics cadence (which only a statistics step moves); a quiet step, which records
nothing but loss, learning rate and step time, is a plan like any other, and its plan
also says until when the steps stay quiet, so those are not planned one by one.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainscope.collectors.cadence import QUIET, STATS, StatsCadence
from trainscope.collectors.config import CollectorConfig


@dataclass(frozen=True)
class StepPlan:
    step: int
    sampled: bool  # the expensive signals: input and label statistics, activations
    stats: bool  # gradient norms, and accuracy measured at once where it is not kept
    update_ratios: bool  # a copy of the weights before the update, ‖Δw‖/‖w‖ after
    histograms: bool
    noise_window: bool  # the gradients go into the gradient-noise window
    # Nothing but loss, learning rate and step time (and the accuracy kept for the
    # flush), on a path that touches as little as it can: see `quiet_path_fits`.
    quiet: bool
    until: int  # the first step that needs a plan of its own (this one's plan holds before it)

    @property
    def adds_more(self) -> bool:
        """Whether the step does more than the statistics: sampled work, a noise
        window or histograms."""
        return self.sampled or self.histograms or self.noise_window

    @property
    def reads_gradients(self) -> bool:
        """Whether the optimizer's pre-step hook has anything to do."""
        return self.stats or self.adds_more

    @property
    def kind(self) -> str | None:
        """What the cadence compares this step's time as (STATS, QUIET), or None."""
        return None if self.adds_more else STATS if self.stats else QUIET


def plan_step(step: int, config: CollectorConfig, cadence: StatsCadence, quiet_path_fits: bool) -> StepPlan:
    """The plan of `step`. `quiet_path_fits`: whether a step with nothing to read may
    take the quiet path (a single process's run without a GradScaler, whose loss and
    outputs are still kept by reference, with learning rates that are plain numbers)."""
    schedule = config.schedule
    sampled = schedule.is_sampled(step)
    # A sampled step gets the statistics too: the full picture, and a noise window's first |g|².
    stats = cadence.due(step) or sampled
    histograms = schedule.is_histogram_step(step)
    noise_window = schedule.in_noise_window(step)
    reads = stats or sampled or histograms or noise_window
    # Only a statistics step moves the cadence, so a quiet plan holds till the next one.
    until = step + 1 if reads else min(cadence.next_due(step), schedule.next_sampled_work(step))
    return StepPlan(
        step=step,
        sampled=sampled,
        stats=stats,
        update_ratios=config.update_ratios and sampled,
        histograms=histograms,
        noise_window=noise_window,
        quiet=not reads and quiet_path_fits,
        until=until,
    )
