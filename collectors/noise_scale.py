"""The gradient noise scale B_simple = tr(Σ)/|G|² (McCandlish et al., "An Empirical
Model of Large-Batch Training", 2018, appendix A.1).

B_simple is the batch size past which a larger batch stops buying much: far above
the batch in use, each step's gradient is mostly noise. It is estimated from two
batch sizes without per-example gradients:

1. B_small = B: each step's gradient g_t, with |g_t|² averaged over the steps of a
   window of W steps that recorded a gradient norm: E|G_small|² = |G|² + tr(Σ)/B_small.
   Which steps record one is decided by timing (collectors/cadence.py), never by the
   gradient, so a subset of the window is an unbiased sample; the window's first
   step, a sampled step, always records one.
2. B_big = W·B: the mean of those W gradients, |mean g_t|²: E|G_big|² = |G|² + tr(Σ)/B_big.
3. Solve: |G|² ≈ (B_big|G_big|² − B_small|G_small|²)/(B_big − B_small),
          tr(Σ) ≈ (|G_small|² − |G_big|²)/(1/B_small − 1/B_big).
4. Both are noisy and |G|² can come out negative, so each is smoothed with an EMA
   before dividing (the paper's advice).

The device side (`NoiseWindow`) sums gradients over the window with one foreach add
per step; the writer thread takes the |g_t|² from the gradient norms it already
receives (`SmallBatchSquares`) and does steps 3-4 (`logformat.noise`, which the
readers share for a sharded model, whose ranks' parts they add up first). A window
step thus costs one pass over the gradients, not two.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import numpy as np
import torch

from trainscope.collectors.grad_stats import local_shard
from trainscope.collectors.scratch import Scratch


class NoiseWindow:
    """Accumulates W consecutive gradients on the device."""

    def __init__(self, params: Sequence[torch.nn.Parameter], weights: np.ndarray | None = None) -> None:
        """`params`: the parameters whose gradients (a sharded model's local shards of
        them) are summed; `weights`: each one's share of its squared norm (`LayerNorms`),
        whose weighted sum is then this rank's part of |G_big|²."""
        self._params = list(params)
        # Moved to the device now, at attach: a copy later would wait for the device.
        self._weights: torch.Tensor | None = None
        if weights is not None and self._params:
            device = local_shard(self._params[0].detach()).device  # type: ignore[union-attr]
            self._weights = torch.as_tensor(weights, dtype=torch.float32, device=device)
        self._sum: list[torch.Tensor] | None = None
        self._scratch = Scratch()  # the sum's buffers, kept between windows on CPU
        self.count = 0
        self.batch_size: float = 0.0
        self.first_step = 0

    def add(self, step: int, grads: Sequence[torch.Tensor | None], batch_size: float) -> None:
        with torch.no_grad():
            # float32 sums (a half-precision gradient is cast); under no_grad, no detach needed.
            dense = [
                torch.zeros_like(local_shard(p.detach()), dtype=torch.float32)
                if g is None
                else _dense_float(g)
                for g, p in zip(grads, self._params)
            ]
            if self._sum is None:
                self._sum = self._scratch.copy_of(dense, torch.float32)
                self.first_step = step
            else:
                torch._foreach_add_(self._sum, dense)
            self.count += 1
            self.batch_size += batch_size

    def close(self) -> tuple[torch.Tensor, float, float, int] | None:
        """``(|G_big|² as a 1-element device tensor, B_small, B_big, first step)``; None if
        under 2 steps."""
        if self._sum is None or self.count < 2:
            self.reset()
            return None
        with torch.no_grad():
            n = self.count
            squares = torch.stack(torch._foreach_norm(self._sum, 2)).square()
            if self._weights is not None:
                squares = squares * self._weights
            big_sq = squares.sum() / (n * n)
        b_small = self.batch_size / n
        result = (big_sq, b_small, b_small * n, self.first_step)
        self.reset()
        return result

    def reset(self) -> None:
        self._sum = None
        self.count = 0
        self.batch_size = 0.0


class SmallBatchSquares:
    """|g_t|² of the latest window steps that recorded a gradient norm (writer side)."""

    def __init__(self, window: int) -> None:
        self._recent: deque[tuple[int, float]] = deque(maxlen=window)  # a window has at most `window` steps

    def add(self, step: int, square: float) -> None:
        if math.isfinite(square):
            self._recent.append((step, square))

    def mean_since(self, first_step: int) -> float | None:
        """Mean |g_t|² over the steps from `first_step` on (None if none); then forget them."""
        values = [square for step, square in self._recent if step >= first_step]
        self._recent.clear()
        return sum(values) / len(values) if values else None


def _dense_float(g: torch.Tensor) -> torch.Tensor:
    """A gradient as the sum needs it: float32, and dense (a sparse embedding gradient
    becomes a tensor of the weight's size, as the sum already is)."""
    if g.is_sparse:
        g = g.to_dense()
    return g if g.dtype is torch.float32 else g.float()
