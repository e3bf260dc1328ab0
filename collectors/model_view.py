"""The collector's view of the model: which layers it measures, the activation probe,
and what sharding or the optimizers hide, said once at attach.

The layers are the modules whose parameters the optimizers train. They are mapped at
attach, and again on sampled steps where the parameters being trained changed
(fine-tuning unfreezes layers with `requires_grad_()` or `add_param_group`); a lazy
model (nn.LazyLinear) is mapped once its first forward pass has given its parameters
their shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from trainscope.collectors.activations import ActivationProbe
from trainscope.collectors.guard import ErrorGuard
from trainscope.collectors.init_check import check_initialization, check_sharded_initialization, shard_moments
from trainscope.collectors.layers import (
    Layer,
    ModelMap,
    compiled_wrapper,
    has_dtensor_parameters,
    has_flat_parameters,
    has_flat_shards,
    has_lazy_parameters,
    has_sharded_parameters,
    lazy_model_summary,
    map_model,
    unwrap,
)
from trainscope.logformat import tags as T


class ModelView:
    def __init__(
        self, model: nn.Module, optimizers: list[torch.optim.Optimizer], guard: ErrorGuard, activations: bool
    ) -> None:
        self._guard = guard
        self._optimizers = optimizers
        self._activations = activations
        self.wrapped = model
        self.model = unwrap(model)
        # A loop without an optimizer: the one param group that the layers and `opt/lr`
        # (given to `step(lr=...)`) come from.
        self.hand_group: dict[str, Any] = {"params": list(self.model.parameters()), "lr": None}
        # Sharded parameters (FSDP, tensor parallel): each rank measures its own shards,
        # which the readers add up; under FSDP's older wrapper they are flat (`flat_shards`).
        self.sharded = has_sharded_parameters(model)
        self.flat_shards = has_flat_shards(model) and not has_dtensor_parameters(model)
        # What a plain tensor of a sharded model stands for (`shard_weight`): a flat slice
        # under FSDP's older wrapper, else a tensor whole on every rank (None).
        self.plain_share = 1.0 if self.flat_shards else None
        self.layers: list[Layer] = []
        self.lazy = False
        self.probe: ActivationProbe | None = None
        self._probe_to_rebuild: ModelMap | None = None  # a remap found new sites while the probe was armed

    def attach(self) -> ModelMap:
        """Map the model (a lazy one waits for its shapes) and make the probe."""
        self.lazy = has_lazy_parameters(self.model)
        model_map = ModelMap([], [], lazy_model_summary(self.model)) if self.lazy else self._map()
        self.layers = model_map.layers
        self._trained = self.trained_parameters()
        self._compiled_wrapper = compiled_wrapper(self.wrapped)
        self.probe = self._new_probe(model_map)
        return model_map

    def param_groups(self) -> list[dict[str, Any]]:
        """Every optimizer's param groups, in order: `lr/group<i>` counts across them."""
        if len(self._optimizers) == 1:
            return self._optimizers[0].param_groups
        if not self._optimizers:
            return [self.hand_group]
        return [group for optimizer in self._optimizers for group in optimizer.param_groups]

    def trained_parameters(self) -> tuple[int, int]:
        """How many parameters the optimizers hold, and how many of those require grad:
        what decides which layers there are."""
        held = [p for group in self.param_groups() for p in group["params"]]
        return len(held), sum(p.requires_grad for p in held)

    def changed(self) -> bool:
        """Whether the parameters being trained are no longer those mapped."""
        return not self.sharded and self.trained_parameters() != self._trained

    def remap(self) -> ModelMap | None:
        """Map the model again; None while it is still lazy. The probe is rebuilt at the
        next plan where it is not armed (`rebuild_probe`)."""
        self.lazy = has_lazy_parameters(self.model)
        if self.lazy:
            return None
        self._trained = self.trained_parameters()
        model_map = self._map()
        self.layers = model_map.layers
        # The probe's functional-ReLU candidates are trained layers; a lazy model's sites
        # were waiting for the shapes too.
        self._probe_to_rebuild = model_map
        return model_map

    def rebuild_probe(self) -> ActivationProbe | None:
        """The new probe after a remap, once the old one is not armed; None if none is due."""
        assert self.probe is not None
        if self._probe_to_rebuild is None or self.probe.armed:
            return None
        probe, self._probe_to_rebuild = self._new_probe(self._probe_to_rebuild), None
        probe.continue_from(self.probe)
        self.probe = probe
        return probe

    def init_check(self) -> list[dict[str, Any]]:
        # A sharded weight's statistics would be a collective that only this rank starts:
        # its ranks record their parts (`shard_parts`), and the readers finish.
        check = check_sharded_initialization if self.sharded else check_initialization
        return self._guard.call("init_check", check, self.layers) or []

    def shard_parts(self, rank: int, share: Callable[[torch.Tensor], float]) -> dict[str, float]:
        """A sharded model's initialization check: this rank's part of each checked
        weight, which the readers add up and complete run.json's entries with."""
        return {
            T.shard_tag(rank, quantity, layer): value
            for layer, moments in shard_moments(self.layers, share).items()
            for quantity, value in zip(T.ShardInit.ALL, moments)
        }

    def say_what_cannot_be_measured(self, noise_batch_unknown: bool) -> None:
        """Once, at attach: parameters that cannot be read here, or none to read."""
        if self.sharded:
            self._say_what_sharding_hides(noise_batch_unknown)
        elif not self.layers and not self.lazy and any(p.requires_grad for p in self.model.parameters()):
            which = "the optimizer updates" if len(self._optimizers) == 1 else "the optimizers update"
            problem = ValueError(
                f"{which} none of the model's trainable parameters (the optimizer of another model, or"
                " parameters replaced after the optimizer was made?); nothing per layer is recorded"
            )
            consequence = "Loss, learning rate and step time are still recorded"
            self._guard.report("layers", problem, consequence=consequence)

    def _say_what_sharding_hides(self, noise_batch_unknown: bool) -> None:
        """Each rank measures its own shards and the readers add them up; what cannot be
        measured so is said once."""
        off, why = [], []
        if self.flat_shards:
            off.append("the initialization check")
            why.append("FSDP's FullyShardedDataParallel keeps flat slices, which carry no weight's shape")
            if has_flat_parameters(p for layer in self.layers for p in layer.params):
                off.append("histograms")
                why.append(
                    "without use_orig_params=True its flat parameters hold whole units (measured per unit,"
                    " not per layer) and no weight to take a histogram of"
                )
        if noise_batch_unknown:
            off.append("the gradient noise scale")
            why.append(
                "it needs to know how many ranks' batches make a step's, which FSDP's mesh did not tell"
            )
        if off:
            problem = ValueError(
                f"the model is sharded: {' and '.join(off)} cannot be measured ({'; '.join(why)})"
            )
            consequence = "They are off; the rest is summed from every rank's shards by the readers"
            self._guard.report("sharded parameters", problem, consequence=consequence)

    def _map(self) -> ModelMap:
        return map_model(self.model, self.param_groups())

    def _new_probe(self, model_map: ModelMap) -> ActivationProbe:
        on = self._activations
        return ActivationProbe(
            self.model,
            model_map.sites if on else [],
            self.layers if on else [],
            lambda fn, *a: self._guard.call("activations", fn, *a),
            self._compiled_wrapper,
        )
