"""The collector's settings, each with the reason for its default."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class CollectorConfig:
    # Steps between the per-step statistics (gradient norms; the batch accuracy only of
    # logits too large to keep until the flush) at the least: 1 = every step. Loss,
    # accuracy, learning rate and step time are recorded every step regardless.
    stats_every: int = 1
    # Share of the training time those statistics may take on average after a run's
    # first 200 steps; where they cost more (small models with fast steps) they are
    # spread to every k-th step, k <= 8 (collectors/cadence.py, which also says how
    # their cost is measured). 0.5%: the collector's 5% must also hold the sampled
    # signals and its bookkeeping, up to 4.5% together on the overhead benchmark's MLP
    # (a 2-core CPU; with 1%, that run measured 1.03-1.06 from one run to the next).
    # None: keep to `stats_every` whatever they cost, the same steps in every run (the
    # sample runs do).
    stats_budget: float | None = 0.005
    # Steps between samples of the expensive signals (update ratios, weight norms,
    # activations, input and label statistics). Each sample costs a copy of the
    # weights and a few reductions; 1 in 50 keeps their average cost small while a
    # 1,000-step run still gets 20 samples. On the overhead benchmark's 0.8M-parameter
    # MLP (a 2-core CPU) they came to ~2% of the step time with histograms every 200th
    # step, of which the noise window 1.0% and the histograms 0.6%.
    every: int = 50
    # Steps between weight/gradient histograms: the most expensive sample (several passes
    # over every weight and gradient: on the overhead benchmark's MLP a histogram step
    # took ~2.5 ms more than a sampled step, where a training step takes 3.4 ms) and
    # the slowest-moving picture, which no rule reads: a 10,000-step run still gets
    # 20 of them.
    histogram_every: int = 500
    # Buckets per histogram, as TensorBoard's default view.
    histogram_bins: int = 30
    # Consecutive steps whose gradients are averaged for the large-batch side of the
    # gradient-noise-scale estimate; a window starts at every sampled step. Five steps
    # make B_big = 5·B: |G_small|² − |G_big|² keeps 80% of tr(Σ)/B (ten would keep
    # 90%) while each window step is a pass over every gradient (ten of them took
    # 2.4% of the overhead benchmark's MLP step on CPU, five half that).
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
        for name in ("stats_every", "every", "histogram_every", "histogram_bins", "noise_window", "flush_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"CollectorConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.stats_budget is not None and not self.stats_budget > 0.0:
            raise ValueError(f"CollectorConfig.stats_budget must be > 0 or None, got {self.stats_budget}")
        if not 0.0 <= self.noise_ema < 1.0:
            raise ValueError(f"CollectorConfig.noise_ema must be in [0, 1), got {self.noise_ema}")

    def is_sampled(self, step: int) -> bool:
        return step % self.every == 0

    def is_histogram_step(self, step: int) -> bool:
        return self.histograms and step % self.histogram_every == 0

    def in_noise_window(self, step: int) -> bool:
        return self.noise_scale and step % self.every < min(self.noise_window, self.every)

    def adds_sampled_work(self, step: int) -> bool:
        """Whether `step` is sampled, has histograms or is in a noise window."""
        return self.is_sampled(step) or self.is_histogram_step(step) or self.in_noise_window(step)

    def next_sampled_work(self, step: int) -> int:
        """The first step from `step` on for which `adds_sampled_work` holds: the steps
        before it need no planning (noise windows open at sampled steps)."""
        if self.adds_sampled_work(step):
            return step
        following = step + (-step) % self.every
        if self.histograms:
            following = min(following, step + (-step) % self.histogram_every)
        return following

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
