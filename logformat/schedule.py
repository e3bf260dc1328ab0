"""Which steps the collector records what on: written once, read by the collector
(what to measure at a step) and by the readers (which steps a sharded run's parts
belong to), as Cockpit keeps "which steps" a plain function of the step.

`every` is the sampling interval (`CollectorConfig.every`): a step is sampled when it
is a multiple of it, and a gradient-noise window opens at each sampled step and spans
its first `noise_window` steps, never past the next sampled step. Nothing here imports
torch: the readers use it too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trainscope.logformat import runjson as RJ


def on_multiple(step: int, interval: int) -> bool:
    """Whether `step` is one of 0, interval, 2·interval, ..."""
    return step % interval == 0


def next_multiple(step: int, interval: int) -> int:
    """The first multiple of `interval` from `step` on."""
    return step + (-step) % interval


@dataclass(frozen=True)
class Schedule:
    """The fixed part of the collector's schedule; the statistics' stride, which adapts
    to their cost, is `collectors.cadence.StatsCadence`'s (it uses `on_multiple` and
    `next_multiple` too)."""

    every: int
    noise_window: int
    histogram_every: int
    histograms: bool = True
    noise_scale: bool = True

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Schedule:
        """From run.json's collector block (`RJ.K_COLLECTOR`); raises KeyError,
        TypeError or ValueError where it lacks `every` or `noise_window` or holds a
        wrong one (without `histogram_every`, no step has histograms)."""
        every = int(settings[RJ.S_EVERY])
        histogram_every = settings.get(RJ.S_HISTOGRAM_EVERY)
        return cls(
            every,
            int(settings[RJ.S_NOISE_WINDOW]),
            int(histogram_every) if histogram_every is not None else every,
            histogram_every is not None and bool(settings.get(RJ.S_HISTOGRAMS, True)),
            bool(settings.get(RJ.S_NOISE_SCALE, True)),
        )

    @property
    def window(self) -> int:
        """Steps in a noise window: it ends before the next sampled step opens one."""
        return min(self.noise_window, self.every)

    def is_sampled(self, step: int) -> bool:
        return on_multiple(step, self.every)

    def is_histogram_step(self, step: int) -> bool:
        return self.histograms and on_multiple(step, self.histogram_every)

    def in_noise_window(self, step: int) -> bool:
        return self.noise_scale and step % self.every < self.window

    def closes_noise_window(self, step: int) -> bool:
        """Whether `step` is the last of its noise window (the window's estimate is due)."""
        return step % self.every == self.window - 1

    def adds_sampled_work(self, step: int) -> bool:
        """Whether `step` is sampled, has histograms or is in a noise window."""
        return self.is_sampled(step) or self.is_histogram_step(step) or self.in_noise_window(step)

    def next_sampled_work(self, step: int) -> int:
        """The first step from `step` on for which `adds_sampled_work` holds: the steps
        before it need no planning (noise windows open at sampled steps)."""
        if self.adds_sampled_work(step):
            return step
        following = next_multiple(step, self.every)
        if self.histograms:
            following = min(following, next_multiple(step, self.histogram_every))
        return following
