"""Which modules are "layers", what activation follows each, and the model summary.

A layer is a module with trainable parameters of its own that the optimizer updates;
it is named by its qualified name in `model.named_modules()` (wrappers such as
DistributedDataParallel, `torch.compile`'s, FSDP's and activation checkpointing's are
looked through, so names match the bare model).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from trainscope.logformat import runjson as RJ

ROOT_NAME = "_root"

# Activation module types -> kind. ReLU and ReLU6 can die; sigmoid and tanh saturate.
ACTIVATION_KINDS: dict[type[nn.Module], str] = {
    nn.ReLU: "relu",
    nn.ReLU6: "relu",
    nn.LeakyReLU: "leaky_relu",
    nn.PReLU: "prelu",
    nn.RReLU: "rrelu",
    nn.ELU: "elu",
    nn.SELU: "selu",
    nn.CELU: "celu",
    nn.GELU: "gelu",
    nn.SiLU: "silu",
    nn.Mish: "mish",
    nn.Softplus: "softplus",
    nn.Sigmoid: "sigmoid",
    nn.Tanh: "tanh",
    nn.Hardtanh: "hardtanh",
    nn.Softmax: "softmax",
}
DYING_KINDS = frozenset({"relu"})
SATURATING_KINDS = frozenset({"sigmoid", "tanh"})
# Recurrent layers carry their own tanh/sigmoid gates.
_RECURRENT_KIND = {nn.LSTM: "tanh", nn.GRU: "tanh", nn.RNN: "tanh"}


def unwrap(model: nn.Module) -> nn.Module:
    """The user's model inside DataParallel/DistributedDataParallel wrappers and
    `torch.compile`'s module: layers are named as in the model itself (``fc1``, not
    ``_orig_mod.fc1``), so a compiled run's tags match an eager one's (how hooks meet
    compiled code: `collectors.activations`)."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif _is_compiled(model):
            model = model._orig_mod
        else:
            return model


def compiled_wrapper(model: nn.Module) -> nn.Module | None:
    """The outermost `torch.compile(...)` module in `model`'s wrappers, if any: the one
    whose own hooks run before its compiled code (`collectors.activations`)."""
    while True:
        if _is_compiled(model):
            return model
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        else:
            return None


def has_sharded_parameters(model: nn.Module) -> bool:
    """Whether the model's parameters are sharded across ranks: FSDP (its wrapper, or
    `fully_shard`'s DTensors) or tensor parallelism (DTensors). A rank then holds a
    shard of each, and a norm or a histogram of one is either that shard's alone or a
    collective that every rank must join."""
    return has_flat_shards(model) or has_dtensor_parameters(model)


def has_flat_shards(model: nn.Module) -> bool:
    """Whether FSDP's older `FullyShardedDataParallel` wrapper shards the model: each
    rank holds a flat slice of each unit's parameters, plain tensors whose elements are
    on one rank each (with `use_orig_params=True` a slice of each parameter, some of
    them empty on a rank; without, one flat parameter per wrapped unit)."""
    fsdp = sys.modules.get("torch.distributed.fsdp")
    wrapper = getattr(fsdp, "FullyShardedDataParallel", None)
    return wrapper is not None and any(isinstance(module, wrapper) for module in model.modules())


def has_flat_parameters(params: Iterable[torch.Tensor]) -> bool:
    """Whether any of `params` is FSDP's `FlatParameter` (its wrapper without
    `use_orig_params=True`): many layers' parameters in one, measured as one."""
    flat = getattr(sys.modules.get("torch.distributed.fsdp._flat_param"), "FlatParameter", None)
    return flat is not None and any(isinstance(p, flat) for p in params)


def has_dtensor_parameters(model: nn.Module) -> bool:
    """Whether some parameter is a DTensor (FSDP's `fully_shard`, tensor parallelism):
    one whose shards, unlike those of FSDP's older flat parameters, belong to one layer."""
    dtensor = getattr(sys.modules.get("torch.distributed.tensor"), "DTensor", None)
    return dtensor is not None and any(isinstance(p, dtensor) for p in model.parameters())


def type_name(module: nn.Module) -> str:
    """The module's class as its model defines it: FSDP's `fully_shard` gives a module a
    class of its own (`FSDPLinear` for a `Linear`), which the rules would not know."""
    fsdp_module = getattr(sys.modules.get("torch.distributed.fsdp"), "FSDPModule", None)
    cls = type(module)
    if fsdp_module is not None and isinstance(module, fsdp_module):
        cls = next((base for base in cls.__bases__ if not issubclass(base, fsdp_module)), cls)
    return cls.__name__


def has_lazy_parameters(model: nn.Module) -> bool:
    """Whether some parameter waits for the first forward pass to get its shape
    (`nn.LazyLinear` and the other lazy modules): until then there is nothing to map."""
    return any(nn.parameter.is_lazy(p) for p in model.parameters())


def lazy_model_summary(model: nn.Module) -> dict[str, Any]:
    """run.json's model summary until the lazy parameters have their shapes."""
    return {RJ.M_CLASS: type_name(model), RJ.M_LAYERS: [], RJ.M_ACTIVATIONS: {}, "lazy": True}


def _is_compiled(model: nn.Module) -> bool:
    # A compiled model means dynamo is loaded; for any other, it need not be imported.
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    return eval_frame is not None and isinstance(model, eval_frame.OptimizedModule)


@dataclass
class Layer:
    name: str
    module: nn.Module
    params: list[nn.Parameter]  # own trainable parameters that the optimizer updates
    weight: nn.Parameter | None  # the `weight` parameter when there is one: histograms and init check
    activation: str | None = None  # kind of the activation module that follows, if any
    channel_dim: int = -1  # where the units of this layer's output sit (1 for conv-like)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.params)


@dataclass
class ActivationSite:
    """An activation module whose output the collector measures on sampled steps."""

    name: str
    module: nn.Module
    kind: str
    channel_dim: int  # unit axis of its output: 1 after conv/batch-norm, else the last


@dataclass
class ModelMap:
    layers: list[Layer]
    sites: list[ActivationSite]
    summary: dict[str, Any] = field(default_factory=dict)


# Attributes under which wrappers keep the module they wrap: FSDP's (FullyShardedDataParallel)
# and activation checkpointing's (`checkpoint_wrapper`). Left out of names, so that a layer
# is named as in the bare model.
_WRAPPED_MODULE_ATTRS = frozenset({"_fsdp_wrapped_module", "_checkpoint_wrapped_module"})


def _bare_name(name: str) -> str:
    """`name` without wrappers' attributes (``layers.0._fsdp_wrapped_module.fc`` -> ``layers.0.fc``)."""
    if "_wrapped_module" not in name:
        return name
    return ".".join(part for part in name.split(".") if part not in _WRAPPED_MODULE_ATTRS)


def _layer_name(name: str) -> str:
    return name or ROOT_NAME


def _is_conv_like(module: nn.Module) -> bool:
    return isinstance(module, (nn.modules.conv._ConvNd, nn.modules.batchnorm._NormBase, nn.GroupNorm))


def _own_parameters(module: nn.Module) -> list[nn.Parameter]:
    """A module's parameters, with those that compute its parametrized tensors
    (`weight_norm`, `spectral_norm` of `torch.nn.utils.parametrizations`: its weight is
    made from `parametrizations.weight.original0/1`). One layer, not two."""
    own = list(module.parameters(recurse=False))
    if parametrize.is_parametrized(module):
        own += list(module.parametrizations.parameters())
    return own


def map_model(model: nn.Module, param_groups: Iterable[Mapping[str, Any]]) -> ModelMap:
    """Find layers (in registration order, which is forward order for ordinary models)
    and the activation modules between them; `param_groups` are the optimizers'."""
    model = unwrap(model)
    in_optimizer = {id(p) for group in param_groups for p in group["params"]}
    layers: list[Layer] = []
    sites: list[ActivationSite] = []
    summary_layers: list[dict[str, Any]] = []
    activations: dict[str, list[str]] = {}
    last_conv_like = False
    for wrapped_name, module in model.named_modules():
        if "parametrizations" in wrapped_name.split("."):
            continue  # counted with the module they parametrize (_own_parameters)
        name = _bare_name(wrapped_name)
        own = _own_parameters(module)
        kind = ACTIVATION_KINDS.get(type(module))
        if kind is not None:
            activations.setdefault(kind, []).append(name)
            if layers and layers[-1].activation is None:
                layers[-1].activation = kind
            if kind in DYING_KINDS or kind in SATURATING_KINDS:
                sites.append(ActivationSite(name, module, kind, 1 if last_conv_like else -1))
        if not own:
            continue
        trainable = [p for p in own if p.requires_grad and id(p) in in_optimizer]
        last_conv_like = _is_conv_like(module)
        summary_layers.append(
            {
                "name": _layer_name(name),
                "type": type_name(module),
                "parameters": sum(p.numel() for p in own),
                RJ.L_TRAINABLE: bool(trainable),
            }
        )
        if not trainable:
            continue
        weight = getattr(module, "weight", None)
        layers.append(
            Layer(
                name=_layer_name(name),
                module=module,
                params=trainable,
                weight=weight if isinstance(weight, nn.Parameter) and weight.requires_grad else None,
                activation=_RECURRENT_KIND.get(type(module)),
                channel_dim=1 if last_conv_like else -1,
            )
        )
    by_name = {layer.name: layer for layer in layers}
    for entry in summary_layers:
        layer = by_name.get(entry["name"])
        entry["activation_after"] = layer.activation if layer else None
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    summary = {
        RJ.M_CLASS: type_name(model),
        RJ.M_PARAMETERS: n_params,
        RJ.M_TRAINABLE: n_trainable,
        RJ.M_LAYERS: summary_layers,
        RJ.M_ACTIVATIONS: activations,
    }
    return ModelMap(layers, sites, summary)
