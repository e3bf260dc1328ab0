"""The collector's settings, each with the reason for its default."""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Any

from trainscope.logformat.schedule import Schedule


@dataclass(frozen=True)
class CollectorConfig:
    # Steps between the per-step statistics (gradient norms; the batch accuracy only of
    # logits too large to keep until the flush) at the least: 1 = every step. Loss,
    # accuracy, learning rate and step time are recorded every step regardless.
    stats_every: int = 1
    # Share of the training time those statistics may take on average after a run's
    # first 200 steps; where they cost more (small models with fast steps) they are
    # spread to every k-th step, k <= 8 (collectors/cadence.py, which also says how
    # their cost is measured). A small share because the collector's whole cost must
    # stay small beside a fast step, and the sampled signals and its bookkeeping need
    # the rest of it (docs/performance.md has the measured split). None: keep to
    # `stats_every` whatever they cost, the same steps in every run (the sample runs do).
    stats_budget: float | None = 0.005
    # Steps between samples of the expensive signals (update ratios, weight norms,
    # activations, input and label statistics). Each sample costs a copy of the
    # weights and a few reductions; 1 in 50 keeps their average cost small while a
    # 1,000-step run still gets 20 samples.
    every: int = 50
    # Steps between weight/gradient histograms: the most expensive sample (several passes
    # over every weight and gradient) and the slowest-moving picture, which no rule
    # reads: a 10,000-step run still gets 20 of them.
    histogram_every: int = 500
    # Buckets per histogram, as TensorBoard's default view.
    histogram_bins: int = 30
    # Consecutive steps whose gradients are averaged for the large-batch side of the
    # gradient-noise-scale estimate; a window starts at every sampled step. Five steps
    # make B_big = 5·B: |G_small|² − |G_big|² keeps 80% of tr(Σ)/B (ten would keep
    # 90%), and each window step is a pass over every gradient, so ten would cost
    # twice as much for a tenth more of the signal.
    noise_window: int = 5
    # Decay of the EMAs of tr(Σ) and |G|² before dividing (McCandlish et al. smooth
    # numerator and denominator separately: their ratio of noisy estimates is biased).
    noise_ema: float = 0.9
    # Device-to-host transfer at most this many steps apart: one copy per flush, not
    # one sync per step.
    flush_steps: int = 100
    # ... or this many seconds apart, so a live dashboard sees a slow run move.
    flush_seconds: float = 2.0
    # Switches for the sampled signals, for runs where even sampled work is too much.
    update_ratios: bool = True
    activations: bool = True
    histograms: bool = True
    noise_scale: bool = True

    def __post_init__(self) -> None:
        for name in (
            "stats_every",
            "every",
            "histogram_every",
            "histogram_bins",
            "noise_window",
            "flush_steps",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"CollectorConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.stats_budget is not None and not self.stats_budget > 0.0:
            raise ValueError(f"CollectorConfig.stats_budget must be > 0 or None, got {self.stats_budget}")
        if not 0.0 <= self.noise_ema < 1.0:
            raise ValueError(f"CollectorConfig.noise_ema must be in [0, 1), got {self.noise_ema}")

    @functools.cached_property
    def schedule(self) -> Schedule:
        """Which steps get what (logformat/schedule.py, which the readers share)."""
        return Schedule(
            self.every, self.noise_window, self.histogram_every, self.histograms, self.noise_scale
        )

    # The schedule's questions, asked of the settings.
    def is_sampled(self, step: int) -> bool:
        return self.schedule.is_sampled(step)

    def is_histogram_step(self, step: int) -> bool:
        return self.schedule.is_histogram_step(step)

    def in_noise_window(self, step: int) -> bool:
        return self.schedule.in_noise_window(step)

    def adds_sampled_work(self, step: int) -> bool:
        return self.schedule.adds_sampled_work(step)

    def next_sampled_work(self, step: int) -> int:
        return self.schedule.next_sampled_work(step)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
