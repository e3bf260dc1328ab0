"""What the training thread hands to the writer thread.

A `Packet` is one step's values: host numbers (learning rate, step time) as floats,
device numbers as tensors that stay on the device until a flush moves every
pending packet's tensors to the host in one copy. A `Spec` says how many numbers
a tensor holds and what they mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from trainscope.collectors.grad_stats import MISSING, LayerFold
from trainscope.logformat import tags as T


@dataclass(frozen=True)
class ScalarSpec:
    tag: str
    optional: bool = False  # a MISSING value means "not measured": drop it

    size = 1


@dataclass(frozen=True)
class LayerNormSpec:
    """One norm (or squared norm) per parameter tensor, folded by the writer into a
    norm per layer (`tags`) and, if `global_tag` is set, the norm of them all."""

    fold: LayerFold
    tags: tuple[str, ...]
    global_tag: str | None = None
    noise_sample: bool = False  # a step inside a noise window: its |g|² is one of |G_small|²'s samples

    @property
    def size(self) -> int:
        return self.fold.size


@dataclass(frozen=True)
class UpdateSpec:
    """Per-tensor norms of the update Δw, of the weights before it and after it, in
    that order: the writer folds them into ‖Δw‖/‖w‖ (`ratio_tags`) and ‖w‖ (`weight_tags`)
    per layer."""

    fold: LayerFold
    ratio_tags: tuple[str, ...]
    weight_tags: tuple[str, ...]

    @property
    def size(self) -> int:
        return 3 * self.fold.size


@dataclass(frozen=True)
class ShardSquaresSpec:
    """A sharded model's per-tensor norms of this rank's shards, in runs of `fold.size`
    (gradients: one run; an update: update, weights before, weights after), written as
    partial sums: each run's weighted squared norm per layer (`runs[i]`, one tag per
    layer), and the first run's over all tensors (`total_tag`). Readers add them up
    over the ranks (logformat.tags, `SHARD_PREFIX`)."""

    fold: LayerFold
    runs: tuple[tuple[str, ...], ...]
    total_tag: str | None = None

    @property
    def size(self) -> int:
        return len(self.runs) * self.fold.size


@dataclass(frozen=True)
class FractionSpec:
    """[numerator, denominator] counts (e.g. correct and valid labels): the writer divides."""

    tag: str

    size = 2


@dataclass(frozen=True)
class HistogramSpec:
    tag: str
    size: int  # collectors.histograms.packed_size(bins)
    # The part of the whole that a sharded model's shard stands for (`shard_weight`):
    # counts, sum and sum of squares are scaled by it, so that the ranks' add up.
    share: float = 1.0


@dataclass(frozen=True)
class NoiseSpec:
    """|G_big|² of the window that began at `first_step`, with its two batch sizes; the
    writer averages |G_small|² from that window's `noise_sample` gradient norms."""

    b_small: float
    b_big: float
    first_step: int

    size = 1


@dataclass(frozen=True)
class ShardNoiseSpec:
    """A sharded model's part of a noise window's |G_big|² (this rank's shards, weighted
    as in `ShardSquaresSpec`), written under `tags[0]` with the window's batch sizes
    under `tags[1]` and `tags[2]`: the readers add the ranks up and then estimate."""

    tags: tuple[str, str, str]
    b_small: float
    b_big: float

    size = 1


# Why a borrowed value was lost. Changed in place: by the user's code after step().
# Overwritten: its memory was taken back; CUDA graphs (torch.compile with
# mode="reduce-overhead") do that to a graph's outputs when the graph runs again, and
# make reading them raise from then on.
CHANGED_IN_PLACE = "changed in place"
OVERWRITTEN = "overwritten (its memory was reused, as CUDA graphs reuse a graph's outputs)"

Spec = (
    ScalarSpec
    | LayerNormSpec
    | UpdateSpec
    | ShardSquaresSpec
    | ShardNoiseSpec
    | FractionSpec
    | HistogramSpec
    | NoiseSpec
)


def spec_tag(spec: Spec) -> str:
    """The tag that names `spec`'s values in a message (the first, for a tag per layer)."""
    if isinstance(spec, LayerNormSpec):
        return spec.global_tag or (spec.tags[0] if spec.tags else "grad/norm")
    if isinstance(spec, UpdateSpec):
        return spec.ratio_tags[0] if spec.ratio_tags else "update_ratio"
    if isinstance(spec, ShardSquaresSpec):
        return spec.total_tag or (spec.runs[0][0] if spec.runs[0] else "shard")
    if isinstance(spec, ShardNoiseSpec):
        return spec.tags[0]
    if isinstance(spec, NoiseSpec):
        return T.GRAD_NOISE_SCALE
    return spec.tag


@dataclass
class Packet:
    step: int
    wall_time: float
    host: dict[str, float] = field(default_factory=dict)
    items: list[tuple[Spec, torch.Tensor]] = field(default_factory=list)
    specs: list[Spec] = field(default_factory=list)  # set by take_tensors()
    borrowed: list[tuple[int, int]] = field(default_factory=list)  # (index in items, version when borrowed)

    def borrow(self, spec: ScalarSpec, value: torch.Tensor) -> None:
        """Add a one-element tensor by reference instead of a copy, which saves a kernel
        launch a step on a GPU. For a result of the step's graph (the loss): nothing
        updates it in place afterwards, and the collector checks that nothing did
        (`lost_borrowed`) before the copy."""
        self.borrowed.append((len(self.items), value._version))
        self.items.append((spec, value))

    def lost_borrowed(self) -> list[tuple[int, str]]:
        """Where in `items` borrowed values can no longer be trusted, and why
        (CHANGED_IN_PLACE or OVERWRITTEN)."""
        lost = []
        for i, version in self.borrowed:
            value = self.items[i][1]
            if value._version != version:
                lost.append((i, CHANGED_IN_PLACE))
            elif not _readable(value):
                lost.append((i, OVERWRITTEN))
        return lost

    def take_tensors(self, dropped: Sequence[int]) -> list[torch.Tensor]:
        """Hand over the device values (for the one copy), keeping only their specs, so
        that a packet waiting in the writer's queue holds no tensor. The items at
        `dropped` (borrowed values that were lost: their true value is gone) are sent
        as MISSING rather than written wrong."""
        items, self.items, self.borrowed = self.items, [], []
        self.specs = [spec for spec, _ in items]
        tensors = [tensor for _, tensor in items]
        for i in dropped:
            self.specs[i] = ScalarSpec(self.specs[i].tag, optional=True)  # type: ignore[union-attr]
            tensors[i] = torch.full((), MISSING, device=tensors[i].device)
        return tensors


@dataclass
class Batch:
    """Packets whose device values were copied, in order, into `values` (float32, on the host)."""

    packets: list[Packet]
    values: torch.Tensor | None
    ready: torch.cuda.Event | None = None  # set when the copy was asynchronous


def _readable(value: torch.Tensor) -> bool:
    try:
        value.data_ptr()  # raises for memory that CUDA graphs took back
    except RuntimeError:
        return False
    return True
