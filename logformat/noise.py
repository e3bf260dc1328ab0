"""The gradient noise scale's last two steps (collectors/noise_scale.py has all four):
solving for tr(Σ) and |G|² from two batch sizes, and smoothing them before dividing.

Shared by the collector's writer thread and the readers: for a sharded model each rank
records only its shards' parts of |G_small|² and |G_big|², and the estimate can only
be made once the readers have added them up (analyzers/reading/shards.py).
"""

from __future__ import annotations

import math


def two_batch_estimate(small_sq: float, big_sq: float, b_small: float, b_big: float) -> tuple[float, float]:
    """``(tr(Σ), |G|²)`` from the two batch sizes (step 3)."""
    g2 = (b_big * big_sq - b_small * small_sq) / (b_big - b_small)
    trace = (small_sq - big_sq) / (1.0 / b_small - 1.0 / b_big)
    return trace, g2


class NoiseScaleEMA:
    """Step 4: debiased EMAs of tr(Σ) and |G|², then their ratio."""

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self._trace = 0.0
        self._g2 = 0.0
        self._n = 0

    def update(self, trace: float, g2: float) -> float:
        if not (math.isfinite(trace) and math.isfinite(g2)):
            return math.nan
        self._n += 1
        self._trace = self.decay * self._trace + (1 - self.decay) * trace
        self._g2 = self.decay * self._g2 + (1 - self.decay) * g2
        debias = 1 - self.decay**self._n
        trace_hat, g2_hat = self._trace / debias, self._g2 / debias
        return trace_hat / g2_hat if g2_hat > 0 else math.nan
