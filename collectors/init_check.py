"""The initialization check of every layer, done once at attach.

Compares each weight's standard deviation with what He (`sqrt(2/fan_in)`, for the
ReLU family) or Xavier (`sqrt(1/fan_in)`, for tanh/sigmoid) initialization would
give, and flags constant (e.g. all-zero) weights, which keep units symmetric so the
network cannot learn (RULES.md, bad_initialization). The analyzers judge; this only
measures.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from trainscope.collectors.grad_stats import local_shard
from trainscope.collectors.layers import Layer, type_name
from trainscope.logformat import runjson as RJ

_HE_KINDS = frozenset({"relu", "leaky_relu", "prelu", "rrelu", "elu", "selu", "celu", "gelu", "silu", "mish"})
_XAVIER_KINDS = frozenset({"tanh", "sigmoid", "hardtanh", "softplus", "softmax"})
# Normalization and lookup weights are not drawn for a fan-in: BatchNorm's weight is
# constant 1 by design.
_UNCHECKED = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.Embedding, nn.EmbeddingBag)


def expected_init(activation: str | None) -> str:
    """ "he" or "xavier"; a layer with no activation module after it (functional
    activations, output layers) is held to He, the common default."""
    return "xavier" if activation in _XAVIER_KINDS else "he"


@torch.no_grad()
def check_layer(layer: Layer) -> list[dict[str, Any]]:
    module = layer.module
    if isinstance(module, _UNCHECKED):
        return []
    out: list[dict[str, Any]] = []
    if isinstance(module, nn.LSTM):
        return _check_lstm(layer)
    weight = _checked_weight(layer)
    if weight is None:
        return out
    w = weight.detach().float()
    entry = _weight_entry(layer, list(w.shape))
    std = float(w.std())
    entry.update(
        {
            RJ.I_STD: std,
            RJ.I_MEAN: float(w.mean()),
            RJ.I_CONSTANT: bool(w.max() == w.min()),
            RJ.I_RATIO: std / entry[RJ.I_EXPECTED_STD],
        }
    )
    out.append(entry)
    return out


def _checked_weight(layer: Layer) -> torch.Tensor | None:
    """The weight whose scale is checked (an LSTM's are checked apart)."""
    weight = layer.weight
    if (
        isinstance(layer.module, (*_UNCHECKED, nn.LSTM))
        or weight is None
        or weight.dim() < 2
        or weight.numel() < 2
    ):
        return None
    return weight


def _weight_entry(layer: Layer, shape: list[int]) -> dict[str, Any]:
    """An entry without what is measured (std, mean, constant, ratio)."""
    fan_in = math.prod(shape[1:])
    kind = expected_init(layer.activation)
    return {
        RJ.I_LAYER: layer.name,
        "param": "weight",
        "type": type_name(layer.module),
        RJ.I_SHAPE: shape,
        RJ.I_FAN_IN: fan_in,
        "activation": layer.activation,
        RJ.I_EXPECTED: kind,
        RJ.I_EXPECTED_STD: math.sqrt((2.0 if kind == "he" else 1.0) / fan_in),
    }


def check_sharded_initialization(layers: list[Layer]) -> list[dict[str, Any]]:
    """The entries of a sharded model's check, waiting for what is measured: the
    readers compute it from every rank's `shard_moments` (``"from_shards": True``)."""
    return [
        _weight_entry(layer, list(weight.shape)) | {RJ.I_FROM_SHARDS: True}
        for layer in layers
        if (weight := _checked_weight(layer)) is not None
    ]


@torch.no_grad()
def shard_moments(
    layers: list[Layer], share: Callable[[torch.Tensor], float]
) -> dict[str, tuple[float, ...]]:
    """This rank's part of each checked weight, per layer: its count, sum and sum of
    squares (times `share`, the part of the whole that this rank's shard stands for,
    so that they add up over the ranks), its minimum and maximum (±inf when this rank
    holds none of it). A sync with the device, once, at attach."""
    moments = {}
    for layer in layers:
        weight = _checked_weight(layer)
        if weight is None:
            continue
        w = local_shard(weight.detach()).double().reshape(-1)  # type: ignore[union-attr]  # never partial
        k = share(weight)
        if w.numel():
            low, high = float(w.min()), float(w.max())
        else:
            low, high = math.inf, -math.inf
        moments[layer.name] = (k * w.numel(), k * float(w.sum()), k * float(w.dot(w)), low, high)
    return moments


def _check_lstm(layer: Layer) -> list[dict[str, Any]]:
    """Weights as any layer (fan-in = input size, tanh/Xavier); plus the forget-gate
    bias, which 001 recommends starting at 1.0 (PyTorch's gate order is i, f, g, o)."""
    module = layer.module
    out: list[dict[str, Any]] = []
    hidden = module.hidden_size
    gate_bias: dict[str, torch.Tensor] = {}
    for pname, p in module.named_parameters(recurse=False):
        w = p.detach().float()
        if pname.startswith("weight_ih") and w.numel() > 1:
            fan_in = int(w.shape[1])
            std = float(w.std())
            expected_std = math.sqrt(1.0 / fan_in)
            out.append(
                {
                    RJ.I_LAYER: layer.name,
                    "param": pname,
                    "type": "LSTM",
                    RJ.I_SHAPE: list(w.shape),
                    RJ.I_FAN_IN: fan_in,
                    RJ.I_STD: std,
                    RJ.I_MEAN: float(w.mean()),
                    RJ.I_CONSTANT: bool(w.max() == w.min()),
                    "activation": "tanh",
                    RJ.I_EXPECTED: "xavier",
                    RJ.I_EXPECTED_STD: expected_std,
                    RJ.I_RATIO: std / expected_std,
                }
            )
        elif pname.startswith("bias_"):
            # bias_ih_l0 and bias_hh_l0 add up inside layer 0's gate; key on "l0", "l0_reverse", ...
            key = pname.split("_", 2)[2]
            gate_bias[key] = gate_bias.get(key, 0) + w[hidden : 2 * hidden]
    if gate_bias:
        forget = torch.stack(list(gate_bias.values()))
        out.append(
            {
                RJ.I_LAYER: layer.name,
                "param": "forget_gate_bias",
                "type": "LSTM",
                "forget_gate_bias_mean": float(forget.mean()),
            }
        )
    return out


def check_initialization(layers: list[Layer]) -> list[dict[str, Any]]:
    return [entry for layer in layers for entry in check_layer(layer)]
