"""Per-layer norms against torch's own norm, on both paths: dot products (CPU float32/float64)
and `_foreach_norm` (every other dtype and device)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from collectors.grad_stats import MISSING, LayerNorms
from collectors.layers import Layer


def layers_of(*shapes_per_layer: tuple[tuple[int, ...], ...], dtype: torch.dtype) -> list[Layer]:
    layers = []
    for i, shapes in enumerate(shapes_per_layer):
        params = [nn.Parameter(torch.zeros(shape, dtype=dtype)) for shape in shapes]
        layers.append(Layer(f"l{i}", nn.Identity(), params, params[0]))
    return layers


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_per_layer_norms_match_torch(dtype):
    gen = torch.Generator().manual_seed(0)
    norms = LayerNorms(layers_of(((30, 20), (30,)), ((5, 30),), ((7,),), dtype=dtype))
    tensors = [(torch.randn(p.shape, generator=gen) * 3).to(dtype) for p in norms.params]
    tensors[0] = tensors[0].t()  # not contiguous: reshaped, not viewed
    global_norm, layer_norms = norms.per_layer(tensors)

    exact = [t.double() for t in tensors]
    expected_layers = [
        torch.cat([exact[0].reshape(-1), exact[1]]).norm(),
        exact[2].norm(),
        exact[3].norm(),
    ]
    expected_global = torch.cat([t.reshape(-1) for t in exact]).norm()
    tol = 1e-6 if dtype in (torch.float32, torch.float64) else 1e-2
    assert layer_norms.dtype == torch.float32
    torch.testing.assert_close(layer_norms.double(), torch.stack(expected_layers), rtol=tol, atol=0)
    torch.testing.assert_close(global_norm.double(), expected_global, rtol=tol, atol=0)


def test_a_layer_without_tensors_is_missing_and_none_at_all_is_none():
    norms = LayerNorms(layers_of(((4,),), ((3,),), dtype=torch.float32))
    global_norm, layer_norms = norms.per_layer([torch.full((4,), 2.0), None])
    assert layer_norms.tolist() == [4.0, MISSING] and global_norm.item() == 4.0
    global_norm, layer_norms = norms.per_layer([torch.full((4,), 2.0), torch.ones(3)])
    assert layer_norms.tolist() == pytest.approx([4.0, 3**0.5])
    assert norms.per_layer([None, None]) is None


def test_an_overflowing_square_is_inf_as_with_torch_norm():
    norms = LayerNorms(layers_of(((2,),), dtype=torch.float32))
    _, layer_norms = norms.per_layer([torch.tensor([1e20, 1.0])])
    assert torch.isinf(layer_norms).all() and torch.isinf(torch.linalg.vector_norm(torch.tensor([1e20, 1.0])))
