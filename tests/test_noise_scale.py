"""The gradient noise scale against a case with a known answer.

Linear regression, x ~ N(0, I_d), y = x·w* + σε, per-example loss ½(x·w − y)², weights
held still (lr = 0) at w = w* + δ. The per-example gradient g = x(x·δ − σε) has
  G = E[g] = δ,   E|g|² = (d+2)|δ|² + dσ²   (Gaussian fourth moments),
so tr(Σ) = E|g|² − |G|² = (d+1)|δ|² + dσ² and B_simple = tr(Σ)/|G|² = d+1 + dσ²/|δ|².
"""

from __future__ import annotations

import math

import pytest
import torch
from collector_helpers import read_scalars

from trainscope.collectors import watch
from trainscope.collectors.noise_scale import SmallBatchSquares
from trainscope.logformat import tags as T
from trainscope.logformat.noise import NoiseScaleEMA, two_batch_estimate

D, SIGMA, BATCH = 10, 3.0, 8
EXPECTED = D + 1 + D * SIGMA**2  # |δ| = 1: B_simple = 101


def test_two_batch_estimate_recovers_exact_moments():
    g2, trace = 2.0, 50.0
    small = g2 + trace / 8
    big = g2 + trace / 80
    est_trace, est_g2 = two_batch_estimate(small, big, 8, 80)
    assert est_trace == pytest.approx(trace) and est_g2 == pytest.approx(g2)


def test_ema_is_debiased_and_ignores_nonfinite():
    ema = NoiseScaleEMA(0.9)
    assert ema.update(10.0, 2.0) == pytest.approx(5.0)  # no pull towards the zero start
    assert math.isnan(ema.update(math.inf, 1.0))
    assert ema.update(10.0, 2.0) == pytest.approx(5.0)


def test_small_batch_squares_are_those_of_the_closing_window_only():
    squares = SmallBatchSquares(window=5)
    squares.add(3, 100.0)  # a window abandoned after one step (its last step was skipped)
    squares.add(10, 2.0)
    squares.add(11, math.inf)  # an overflowing AMP step is not a sample
    squares.add(13, 4.0)
    assert squares.mean_since(10) == pytest.approx(3.0)
    assert squares.mean_since(20) is None  # a window without a recorded norm has no estimate
    for step in range(20, 40):
        squares.add(step, float(step))
    assert squares.mean_since(30) == pytest.approx(37.0)  # only the last `window` are kept


@pytest.mark.parametrize(
    "settings",
    [
        dict(noise_window=10),  # norms on every step where they fit the budget: tiny steps, a subset
        dict(noise_window=5, stats_budget=None),  # the default window, |G_small|² from every step
        dict(noise_window=10, stats_budget=None, stats_every=4),  # a fixed subset of each window
    ],
)
def test_collector_estimates_known_noise_scale(tmp_path, settings):
    gen = torch.Generator().manual_seed(0)
    w_star = torch.randn(D, generator=gen)
    delta = torch.randn(D, generator=gen)
    delta /= delta.norm()
    model = torch.nn.Linear(D, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_((w_star + delta)[None])
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    collector = watch(model, opt, tmp_path, every=10, noise_ema=0.99, batch_size=BATCH, **settings)
    for _ in range(8000):
        x = torch.randn(BATCH, D, generator=gen)
        y = x @ w_star + SIGMA * torch.randn(BATCH, generator=gen)
        opt.zero_grad()
        loss = 0.5 * (model(x).squeeze(1) - y).square().mean()
        loss.backward()
        opt.step()
        collector.step(loss=loss)
    collector.close()
    estimates = read_scalars(tmp_path)[T.GRAD_NOISE_SCALE]
    assert len(estimates) >= 790  # a window whose smoothed |G|² is still <= 0 has no estimate
    final = estimates[max(estimates)]
    print(f"B_simple {final:.1f} vs {EXPECTED:.0f}")
    assert final == pytest.approx(EXPECTED, rel=0.2), f"B_simple {final:.1f}, expected {EXPECTED:.0f}"
