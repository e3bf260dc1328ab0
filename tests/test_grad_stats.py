"""Per-layer norms against torch's own norm, on both device paths (dot products for CPU
float32/float64, `_foreach_norm` for every other dtype and device), folded on the host
as the writer does."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from trainscope.collectors.grad_stats import MISSING, LayerNorms
from trainscope.collectors.layers import Layer


def layers_of(*shapes_per_layer: tuple[tuple[int, ...], ...], dtype: torch.dtype) -> list[Layer]:
    layers = []
    for i, shapes in enumerate(shapes_per_layer):
        params = [nn.Parameter(torch.zeros(shape, dtype=dtype)) for shape in shapes]
        layers.append(Layer(f"l{i}", nn.Identity(), params, params[0]))
    return layers


def folded(norms: LayerNorms, tensors: list[torch.Tensor | None]) -> tuple[float, np.ndarray]:
    """What the writer gets: the device vector, cast to float32 by the flush, then folded."""
    measured = norms.tensor_norms(tensors)
    assert measured is not None
    fold, values = measured
    return fold.norms(values.float().numpy())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_per_layer_norms_match_torch(dtype):
    gen = torch.Generator().manual_seed(0)
    norms = LayerNorms(layers_of(((30, 20), (30,)), ((5, 30),), ((7,),), dtype=dtype))
    tensors = [(torch.randn(p.shape, generator=gen) * 3).to(dtype) for p in norms.params]
    tensors[0] = tensors[0].t()  # not contiguous: reshaped, not viewed
    global_norm, layer_norms = folded(norms, tensors)

    exact = [t.double() for t in tensors]
    expected_layers = [
        torch.cat([exact[0].reshape(-1), exact[1]]).norm(),
        exact[2].norm(),
        exact[3].norm(),
    ]
    expected_global = torch.cat([t.reshape(-1) for t in exact]).norm().item()
    tol = 1e-6 if dtype in (torch.float32, torch.float64) else 1e-2
    np.testing.assert_allclose(layer_norms, torch.stack(expected_layers).numpy(), rtol=tol, atol=0)
    assert global_norm == pytest.approx(expected_global, rel=tol)


def test_a_layer_without_tensors_is_missing_and_none_at_all_is_none():
    norms = LayerNorms(layers_of(((4,),), ((3,),), dtype=torch.float32))
    global_norm, layer_norms = folded(norms, [torch.full((4,), 2.0), None])
    assert layer_norms.tolist() == [4.0, MISSING] and global_norm == 4.0
    global_norm, layer_norms = folded(norms, [torch.full((4,), 2.0), torch.ones(3)])
    assert layer_norms.tolist() == pytest.approx([4.0, 3**0.5]) and global_norm == pytest.approx(19**0.5)
    assert norms.tensor_norms([None, None]) is None


def test_the_fold_reads_squares_and_norms_alike():
    norms = LayerNorms(layers_of(((4,), (2,)), ((3,),), dtype=torch.float32))
    for dtype in (torch.float32, torch.float16):  # dot products (squares) and _foreach_norm (norms)
        tensors = [torch.full((4,), 2.0, dtype=dtype), None, torch.ones(3, dtype=dtype)]
        fold, values = norms.tensor_norms(tensors)
        assert fold.squared == (dtype == torch.float32)
        global_norm, layer_norms = fold.norms(values.float().numpy())
        assert global_norm == pytest.approx(19**0.5) and layer_norms.tolist() == pytest.approx([4.0, 3**0.5])


def test_update_ratios_fold_three_runs_of_values():
    norms = LayerNorms(layers_of(((4,),), ((3,),), dtype=torch.float32))
    before = [torch.full((4,), 2.0), torch.ones(3)]
    after = [torch.full((4,), 2.5), torch.ones(3)]
    delta = torch._foreach_sub(after, before)
    runs = [norms.tensor_norms(ts) for ts in (delta, before, after)]
    ratios, weights = runs[0][0].update_ratios(torch.cat([values for _, values in runs]).numpy())
    assert ratios.tolist() == pytest.approx([1.0 / 4.0, 0.0])
    assert weights.tolist() == pytest.approx([5.0, 3**0.5])


def test_an_overflowing_square_is_inf_as_with_torch_norm():
    norms = LayerNorms(layers_of(((2,),), dtype=torch.float32))
    global_norm, layer_norms = folded(norms, [torch.tensor([1e20, 1.0])])
    assert np.isinf(layer_norms).all() and np.isinf(global_norm)
    assert torch.isinf(torch.linalg.vector_norm(torch.tensor([1e20, 1.0])))
