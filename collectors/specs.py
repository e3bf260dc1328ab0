"""The specs that say how the writer folds the norms a step read into tags: made once
per pattern of parameters with a gradient, since that pattern rarely changes, and a
sharded model's as this rank's partial sums (`logformat.tags.shard_tag`)."""

from __future__ import annotations

from collections.abc import Sequence

from trainscope.collectors.grad_stats import LayerFold
from trainscope.collectors.layers import Layer
from trainscope.collectors.packets import LayerNormSpec, ShardSquaresSpec, UpdateSpec
from trainscope.logformat import tags as T
from trainscope.logformat.tags import ShardSquares as SS


class LayerSpecs:
    """The specs of one set of measured layers (made again when the layers change)."""

    def __init__(self, layers: Sequence[Layer], sharded: bool, rank: int) -> None:
        self._layers = layers
        self._sharded = sharded
        self._rank = rank
        # One per pattern of parameters with a gradient, inside a noise window or not.
        self._grad: dict[tuple[LayerFold, bool], LayerNormSpec | ShardSquaresSpec] = {}
        self._update: dict[LayerFold, UpdateSpec | ShardSquaresSpec] = {}

    def grad(self, fold: LayerFold, noise_sample: bool = False) -> LayerNormSpec | ShardSquaresSpec:
        spec = self._grad.get((fold, noise_sample))
        if spec is None:
            if self._sharded:
                spec = ShardSquaresSpec(fold, (self.shard_tags(SS.GRAD),), self.shard_tag(SS.GRAD))
            else:
                tags = tuple(T.grad_norm_tag(layer.name) for layer in self._layers)
                spec = LayerNormSpec(fold, tags, T.GRAD_GLOBAL_NORM, noise_sample)
            self._grad[(fold, noise_sample)] = spec
        return spec

    def update(self, fold: LayerFold) -> UpdateSpec | ShardSquaresSpec:
        spec = self._update.get(fold)
        if spec is None:
            if self._sharded:
                runs = (SS.UPDATE, SS.WEIGHT_BEFORE, SS.WEIGHT)
                spec = ShardSquaresSpec(fold, tuple(self.shard_tags(run) for run in runs))
            else:
                ratio_tags = tuple(T.update_ratio_tag(layer.name) for layer in self._layers)
                weight_tags = tuple(T.weight_norm_tag(layer.name) for layer in self._layers)
                spec = UpdateSpec(fold, ratio_tags, weight_tags)
            self._update[fold] = spec
        return spec

    def shard_tag(self, quantity: str, layer: str | None = None) -> str:
        return T.shard_tag(self._rank, quantity, layer)

    def shard_tags(self, quantity: str) -> tuple[str, ...]:
        return tuple(self.shard_tag(quantity, layer.name) for layer in self._layers)
