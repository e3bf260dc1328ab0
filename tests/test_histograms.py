"""Histograms packed on the device against numpy's, and their edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainscope.collectors.histograms import pack_histogram, unpack_histogram


@pytest.mark.parametrize("n", [1, 7, 1000, 100_000])
def test_counts_and_moments_match_numpy(n):
    x = torch.randn(n, generator=torch.Generator().manual_seed(n), dtype=torch.float64).float() * 3 + 1
    h = unpack_histogram(pack_histogram(x, 30).numpy())
    values = x.double().numpy()
    expected, edges = np.histogram(values, bins=30, range=(values.min(), values.max()))
    assert h.min == pytest.approx(values.min()) and h.max == pytest.approx(values.max())
    assert h.num == n and sum(h.bucket) == n
    # A value within float32 rounding of an inner edge may land on either side of it.
    assert np.abs(np.array(h.bucket) - expected).sum() <= max(2, n // 50_000)
    assert h.sum == pytest.approx(values.sum(), rel=1e-5, abs=1e-4)
    assert h.sum_squares == pytest.approx((values**2).sum(), rel=1e-5)
    if n > 1:
        np.testing.assert_allclose(h.bucket_limit, edges[1:], rtol=1e-6)


def test_a_constant_tensor_is_one_bucket_and_a_nan_does_not_raise():
    h = unpack_histogram(pack_histogram(torch.full((5,), 2.0), 4).numpy())
    assert (h.min, h.max, h.num, h.bucket) == (2.0, 2.0, 5.0, [5.0, 0.0, 0.0, 0.0])
    packed = pack_histogram(torch.tensor([1.0, float("nan"), 3.0]), 4)
    assert torch.isnan(packed[:4]).all() and packed[4:].sum() == 3  # counted, and min/max say NaN
