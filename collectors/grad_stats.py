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

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from trainscope.collectors.layers import Layer

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
    # Each tensor's share of its squared norm, for the shards of a sharded model (a
    # tensor replicated on k ranks counts 1/k on each); None: 1 each.
    weights: np.ndarray | None = None
    empty: np.ndarray = field(init=False)  # layers with no measured tensor: MISSING

    def __post_init__(self) -> None:
        object.__setattr__(self, "empty", np.bincount(self.owners, minlength=self.n_layers) == 0)

    @property
    def size(self) -> int:
        return len(self.owners) if self.tensor_of is None else int(self.tensor_of.max(initial=-1)) + 1

    def tensor_squares(self, values: np.ndarray) -> np.ndarray:
        """Squared norm of each tensor (times its weight), in float64."""
        v = values.astype(np.float64)
        sq = v if self.squared else v * v
        return sq if self.weights is None else sq * self.weights

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
    """Norms of per-parameter tensors, aggregated per layer.

    With `sharded` (FSDP, tensor parallelism), what is measured is this rank's shard
    of each tensor, never the whole: a norm of the whole is a collective that the
    other ranks would have to join.
    Each shard's squared norm is weighted so that summed over the ranks it gives the
    whole tensor's once (`shard_weight`); the readers do that sum.
    """

    def __init__(
        self, layers: Sequence[Layer], sharded: bool = False, plain_share: float | None = None
    ) -> None:
        """`plain_share`: the weight of a plain (not DTensor) tensor of a sharded model:
        1 where plain tensors are shards (FSDP's older wrapper: each element on one
        rank), by default 1/world size (a plain tensor taken to be whole on every rank)."""
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
        self.sharded = sharded
        # Each tensor's share of its squared norm (`shard_weight`); None: not sharded.
        self.shard_weights = (
            np.array([shard_weight(p, plain_share) for p in self.params]) if sharded else None
        )
        self._folds: dict[tuple[tuple[int, ...], bool], LayerFold] = {}

    def _fold(self, present: tuple[int, ...], squared: bool) -> LayerFold:
        fold = self._folds.get((present, squared))
        if fold is None:
            owners = [(k, layer) for k, i in enumerate(present) for layer in self._owners[i]]
            tensor_of = (
                None if len(owners) == len(present) else np.array([k for k, _ in owners], dtype=np.int64)
            )
            layers = np.array([layer for _, layer in owners], dtype=np.int64)
            weights = None if self.shard_weights is None else self.shard_weights[list(present)]
            fold = self._folds[(present, squared)] = LayerFold(
                layers, self.n_layers, squared, tensor_of, weights
            )
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
        if self.sharded:
            return [local_shard(p.grad) for p in self.params]
        return [p.grad for p in self.params]

    def weights(self) -> list[torch.Tensor]:
        """The parameters' values (this rank's shards, if sharded), without autograd."""
        if self.sharded:
            return [local_shard(p.detach()) for p in self.params]  # type: ignore[misc]  # never partial
        return [p.detach() for p in self.params]


def shard_weight(param: torch.Tensor, plain_share: float | None = None) -> float:
    """The share of a parameter's squared norm that this rank's shard stands for, such
    that the ranks' shares add up to the whole once: 1 for a tensor split across the
    ranks, 1/k for one that k ranks hold whole (`Replicate` on a mesh dimension of k
    ranks; tensor parallelism leaves some biases so). A plain tensor counts
    `plain_share`, by default as whole on every rank (a module left out of
    `fully_shard`)."""
    placements = getattr(param, "placements", None)
    if placements is None:
        if plain_share is not None:
            return plain_share
        world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        return 1.0 / world
    mesh = param.device_mesh  # type: ignore[attr-defined]
    copies = math.prod(mesh.size(dim) for dim, placement in enumerate(placements) if placement.is_replicate())
    return 1.0 / copies


def local_shard(t: torch.Tensor | None) -> torch.Tensor | None:
    """This rank's part of a DTensor (a plain tensor as it is). None where the local
    part is not a shard of the tensor but a summand of it (a `Partial` placement: the
    whole is the sum of the ranks' parts, whose squares do not add up)."""
    placements = getattr(t, "placements", None)
    if placements is None:
        return t
    if any(placement.is_partial() for placement in placements):
        return None
    return t.to_local()  # type: ignore[union-attr]


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
