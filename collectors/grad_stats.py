"""Per-layer L2 norms, split between the device and the writer thread.

Every step the device computes one number per parameter tensor, in as few kernel
launches as it can (on CPU a BLAS dot per tensor; elsewhere one `torch._foreach_norm`),
and stacks them into one vector that waits for the next flush. Summing them per
layer, the global norm and ratios of norms are done later on the host, by a
`LayerFold`, in float64: inside a training step each small tensor op costs ~7 µs on a
2-core CPU (11-22 µs of launch on the H200 machine's host), and folding on the device
took four of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from collectors.layers import Layer

# Written for "not measured" (e.g. a layer that got no gradient this step): norms and
# fractions are never negative, so the writer can drop it without mistaking a real NaN.
MISSING = -1.0


@dataclass(frozen=True, eq=False)
class LayerFold:
    """How the per-tensor values of one step fold into per-layer norms.

    The i-th measured tensor belongs to layer `owners[i]`, or, for a tensor that
    several layers share (tied weights: an embedding and the output layer), to each
    layer `owners[j]` with `tensor_of[j] == i`; `squared` says whether the device
    sent squared norms (dot products) or norms. `size` is the number of tensors.
    """

    owners: np.ndarray
    n_layers: int
    squared: bool
    tensor_of: np.ndarray | None = None  # None: one layer per tensor, owners[i] for tensor i
    empty: np.ndarray = field(init=False)  # layers with no measured tensor: MISSING

    def __post_init__(self) -> None:
        object.__setattr__(self, "empty", np.bincount(self.owners, minlength=self.n_layers) == 0)

    @property
    def size(self) -> int:
        return len(self.owners) if self.tensor_of is None else int(self.tensor_of.max(initial=-1)) + 1

    def tensor_squares(self, values: np.ndarray) -> np.ndarray:
        """Squared norm of each tensor, in float64."""
        v = values.astype(np.float64)
        return v if self.squared else v * v

    def layer_squares(self, values: np.ndarray) -> np.ndarray:
        """Squared norm of each layer, in float64 (0 for an `empty` layer)."""
        sq = self.tensor_squares(values)
        if self.tensor_of is not None:
            sq = sq[self.tensor_of]
        return np.bincount(self.owners, weights=sq, minlength=self.n_layers)

    def norms(self, values: np.ndarray) -> tuple[float, np.ndarray]:
        """``(global_norm, layer_norms)``, with MISSING for `empty` layers. The global
        norm counts a shared tensor once."""
        layer = np.sqrt(self.layer_squares(values))
        layer[self.empty] = MISSING
        return float(np.sqrt(self.tensor_squares(values).sum())), layer

    def update_ratios(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(‖Δw‖/‖w_before‖, ‖w_after‖)`` per layer from three runs of per-tensor values
        (update, weights before, weights after); MISSING for `empty` layers."""
        n = self.size
        delta, before, after = (np.sqrt(self.layer_squares(values[i * n : (i + 1) * n])) for i in range(3))
        ratios = delta / np.maximum(before, 1e-30)
        ratios[self.empty] = MISSING
        after[self.empty] = MISSING
        return ratios, after


class LayerNorms:
    """Norms of per-parameter tensors, aggregated per layer."""

    def __init__(self, layers: Sequence[Layer]) -> None:
        # Each tensor once, with every layer that holds it: a tied weight is measured
        # once, shown under each of its layers, and counted once in the global norm.
        index: dict[int, int] = {}
        self.params: list[torch.Tensor] = []
        self._owners: list[list[int]] = []
        for i, layer in enumerate(layers):
            for p in layer.params:
                if id(p) not in index:
                    index[id(p)] = len(self.params)
                    self.params.append(p)
                    self._owners.append([])
                self._owners[index[id(p)]].append(i)
        self.n_layers = len(layers)
        self._folds: dict[tuple[tuple[int, ...], bool], LayerFold] = {}

    def _fold(self, present: tuple[int, ...], squared: bool) -> LayerFold:
        fold = self._folds.get((present, squared))
        if fold is None:
            owners = [(k, layer) for k, i in enumerate(present) for layer in self._owners[i]]
            tensor_of = None if len(owners) == len(present) else np.array([k for k, _ in owners], dtype=np.int64)
            layers = np.array([layer for _, layer in owners], dtype=np.int64)
            fold = self._folds[(present, squared)] = LayerFold(layers, self.n_layers, squared, tensor_of)
        return fold

    def tensor_norms(self, tensors: Sequence[torch.Tensor | None]) -> tuple[LayerFold, torch.Tensor] | None:
        """One number per tensor (aligned with `self.params`) stacked on the device, and the
        fold that turns them into layer norms on the host.

        None entries (no gradient) are left out; a layer with none at all gets MISSING.
        Returns None when every entry is None.
        """
        present = tuple(i for i, t in enumerate(tensors) if t is not None)
        if not present:
            return None
        chosen = [_dense_values(tensors[i]) for i in present]
        if all(_plain_cpu(t) for t in chosen):
            return self._fold(present, True), torch.stack([_square_sum(t) for t in chosen])
        # Sent as norms, squared on the host: one kernel fewer than squaring them here.
        norms = torch._foreach_norm(chosen, 2, dtype=torch.float32)
        try:
            stacked = torch.stack(norms)
        except RuntimeError:  # parameters on several devices: gather the norms on the first
            stacked = torch.stack([n.to(norms[0].device, non_blocking=True) for n in norms])
        return self._fold(present, False), stacked

    def grads(self) -> list[torch.Tensor | None]:
        return [p.grad for p in self.params]


def _dense_values(t: torch.Tensor) -> torch.Tensor:
    """A sparse gradient (`nn.Embedding(sparse=True)`) holds a row once per lookup: its
    norm is that of its values with the repeats summed (`coalesce`, which on a GPU waits
    for the device: statistics steps of sparse models only)."""
    return t.coalesce().values() if t.is_sparse else t


def _plain_cpu(t: torch.Tensor) -> bool:
    return t.is_cpu and t.layout is torch.strided and (t.dtype is torch.float32 or t.dtype is torch.float64)


def _square_sum(t: torch.Tensor) -> torch.Tensor:
    """‖t‖² via a BLAS dot product, in t's dtype (`stack` promotes a float64 one, the
    flush casts to float32). On CPU the dots beat `_foreach_norm`'s threaded reduction:
    with it instead, training steps on 2 cores took 0.7% (the benchmark's MLP) and 4%
    (its CNN) longer."""
    flat = t.reshape(-1)
    return torch.dot(flat, flat)
