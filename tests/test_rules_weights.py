"""Weight rules: bad_initialization (run.json's init check) and weight_growth (weight norms)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from rules_support import Fires, Quiet, Skips, check

from trainscope.analyzers.rules.bad_initialization import check as bad_initialization
from trainscope.analyzers.rules.common import make_run
from trainscope.analyzers.rules.synthetic import steps
from trainscope.analyzers.rules.weight_growth import check as weight_growth
from trainscope.logformat import tags as T


def entry(layer, fan_in=784, out=256, std=None, mean=0.0, constant=False, kind="Linear", activation="relu"):
    """One init_check entry; `std` defaults to PyTorch's default init, 1/sqrt(3 fan_in)."""
    expected, expected_std = (
        ("he", math.sqrt(2 / fan_in))
        if activation in ("relu", "leaky_relu")
        else ("xavier", math.sqrt(1 / fan_in))
    )
    std = 1 / math.sqrt(3 * fan_in) if std is None else std
    return {
        "layer": layer,
        "param": "weight",
        "type": kind,
        "shape": [out, fan_in],
        "fan_in": fan_in,
        "std": std,
        "mean": mean,
        "constant": constant,
        "activation": activation,
        "expected": expected,
        "expected_std": expected_std,
        "ratio": std / expected_std,
    }


def init_run(*entries):
    return make_run({}, {"init_check": list(entries)})


OUT = entry("out", fan_in=256, out=10, activation=None)

INIT_CASES = [
    pytest.param(init_run(entry("fc1"), OUT), Quiet(), id="pytorch-default-init"),
    pytest.param(
        init_run(
            entry("fc1", std=math.sqrt(2 / 784)),
            entry("out", 256, 10, std=math.sqrt(1 / 256), activation=None),
        ),
        Quiet(),
        id="he-and-xavier",
    ),
    pytest.param(
        init_run(entry("fc1", std=0.0, constant=True), OUT),
        Fires("critical", step=(0, 0), layer="fc1", says=("fc1 (all zeros)", "same gradient")),
        id="zero-hidden-layer",
    ),
    pytest.param(
        init_run(entry("fc1", std=0.0, mean=0.5, constant=True), OUT),
        Fires("critical", layer="fc1", says=("every weight = 0.5",)),
        id="constant-hidden-layer",
    ),
    pytest.param(
        init_run(entry("fc1"), entry("out", 256, 10, std=0.0, constant=True, activation=None)),
        Fires("info", layer="out", says=("output layer out",)),
        id="zero-output-layer-info",
    ),
    pytest.param(
        init_run(entry("fc1", std=1.0), OUT),
        Fires("warning", layer="fc1", says=("fc1 std 1 vs he 0.0505 (20x)",)),
        id="randn-std-1",
    ),
    pytest.param(
        init_run(entry("fc1", std=0.01), OUT),
        Fires("warning", layer="fc1", says=("fc1 std 0.01 vs he 0.0505 (0.198x)",)),
        id="std-0.01-hidden",
    ),
    pytest.param(
        init_run(entry("fc1"), entry("out", 256, 10, std=0.01, activation=None)),
        Quiet(),
        id="small-output-layer-is-fine",
    ),
    pytest.param(
        init_run(entry("fc1", fan_in=2, out=1000, std=math.sqrt(2 / 1002)), OUT),
        Quiet(),
        id="glorot-with-large-fan-out",
    ),
    pytest.param(
        init_run(
            {
                "layer": "bn",
                "param": "weight",
                "type": "BatchNorm2d",
                "shape": [64],
                "fan_in": 1,
                "std": 0.0,
                "mean": 1.0,
                "constant": True,
                "expected_std": 1.0,
                "ratio": 0.0,
            },
            entry("fc1"),
            OUT,
        ),
        Quiet(),
        id="batchnorm-ones-are-by-design",
    ),
    pytest.param(
        init_run(
            entry("fc1"),
            OUT,
            {"layer": "lstm", "param": "forget_gate_bias", "type": "LSTM", "forget_gate_bias_mean": 0.01},
        ),
        Fires("info", layer="lstm", says=("starts with mean 0.01",)),
        id="lstm-forget-bias-0",
    ),
    pytest.param(
        init_run(
            entry("fc1"),
            OUT,
            {"layer": "lstm", "param": "forget_gate_bias", "type": "LSTM", "forget_gate_bias_mean": 1.0},
        ),
        Quiet(),
        id="lstm-forget-bias-1",
    ),
    pytest.param(make_run({}), Skips("needs run.json init_check"), id="foreign-log"),
]


@pytest.mark.parametrize("run, expect", INIT_CASES)
def test_bad_initialization(run, expect):
    check(bad_initialization, run, expect)


def test_bad_initialization_groups_scale_problems_in_one_finding():
    found = bad_initialization(init_run(entry("fc1", std=1.0), entry("fc2", 256, 256, std=1.0), OUT))
    assert len(found) == 1 and found[0].evidence["layers"][1]["layer"] == "fc2"
    assert "target std 0.0505" in found[0].advice[0]


# --- weight_growth -----------------------------------------------------------------------

EVERY = 50
SGD = {"optimizer": {"type": "SGD", "param_groups": [{"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0}]}}
SGD_WD = {"optimizer": {"type": "SGD", "param_groups": [{"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}]}}


def norms(meta, n=40, **curves):
    s = steps(n, EVERY)
    return make_run(
        {T.weight_norm_tag(name): (s, curve(np.arange(n) / (n - 1))) for name, curve in curves.items()}, meta
    )


GROWTH_CASES = [
    pytest.param(
        norms(SGD, fc=lambda t: 2.0 * (1 + 5 * t**2)),
        Fires("warning", layer="fc", says=("fc 2 -> 11.5 (5.7x)", "still growing fast: fc +38.2%")),
        id="still-growing-fast",
    ),
    pytest.param(
        norms(SGD, fc=lambda t: 2.0 * (1 + 3 * (1 - np.exp(-8 * t)))),
        Fires("info", layer="fc", says=("(4x)",)),
        id="grew-then-levelled-info",
    ),
    pytest.param(norms(SGD, fc=lambda t: 2.0 * (1 + 0.5 * t)), Quiet(), id="modest-growth"),
    pytest.param(norms(SGD, fc=lambda t: 2.0 * (1 + 5 * np.sin(np.pi * t))), Quiet(), id="grew-then-shrank"),
    pytest.param(norms(SGD_WD, fc=lambda t: 2.0 * (1 + 5 * t**2)), Quiet(), id="weight-decay-configured"),
    pytest.param(
        norms({}, fc=lambda t: 2.0 * (1 + 5 * t**2)),
        Skips("needs run.json optimizer"),
        id="optimizer-unknown",
    ),
    pytest.param(
        norms(SGD, n=6, fc=lambda t: 2.0 * (1 + 5 * t**2)),
        Skips("not enough data yet: 6 of 10"),
        id="too-few-samples",
    ),
    pytest.param(make_run({}, SGD), Skips("needs weight/norm/*"), id="missing"),
]


@pytest.mark.parametrize("run, expect", GROWTH_CASES)
def test_weight_growth(run, expect):
    check(weight_growth, run, expect)


def test_weight_growth_reads_weight_decay_from_hparams_for_other_writers():
    run = norms({"hparams": {"weight_decay": 0.0}}, fc=lambda t: 2.0 * (1 + 5 * t**2))
    check(weight_growth, run, Fires("warning"))


# --- a scale judged by its role and by what it does to the signal at the start -----------------


def gpt_block_run(grad_first_over_last=0.5, dead_at_start=0.1, layers_meta=True):
    """A GPT-style block initialized N(0, 0.02) (6x below Xavier for fan_in 64), with LayerNorms
    beside its linear layers, and the start of its signals."""
    names = [
        "h.0.ln_1",
        "h.0.attn.c_attn",
        "h.0.attn.c_proj",
        "h.0.ln_2",
        "h.0.mlp.c_fc",
        "h.0.mlp.c_proj",
        "lm_head",
    ]
    kinds = ["LayerNorm", "Linear", "Linear", "LayerNorm", "Linear", "Linear", "Linear"]
    checks = [
        entry(n, fan_in=64, out=64, std=0.02, activation=None) for n, k in zip(names, kinds) if k == "Linear"
    ]
    meta = {"init_check": checks}
    if layers_meta:
        meta["model"] = {"layers": [{"name": n, "type": k} for n, k in zip(names, kinds)]}
    s = steps(10, 10)
    scalars = {
        T.grad_norm_tag("h.0.attn.c_attn"): (s, np.full(10, grad_first_over_last)),
        T.grad_norm_tag("lm_head"): (s, np.full(10, 1.0)),
        T.dead_fraction_tag("h.0.mlp.c_fc"): (s, np.full(10, dead_at_start)),
    }
    return make_run(scalars, meta)


ROLE_CASES = [
    pytest.param(
        gpt_block_run(),
        Fires("info", says=("in a block with a norm layer", "passes all the same")),
        id="gpt-init-is-info",
    ),
    pytest.param(
        gpt_block_run(grad_first_over_last=1e-4),
        Fires("warning", says=("It shows at the start", "gradient norm is 1e-4x the last layer")),
        id="gpt-init-whose-gradients-collapse",
    ),
    pytest.param(
        gpt_block_run(dead_at_start=0.8),
        Fires("warning", says=("80% of `h.0.mlp.c_fc`'s units are dead in the first samples",)),
        id="small-init-with-dead-units-at-the-start",
    ),
    pytest.param(
        make_run({}, {"init_check": [entry("fc1", fan_in=64, out=64, std=0.02), OUT]}),
        Fires("warning", says=("Signals then shrink or grow",)),
        id="no-signal-no-role-stays-a-warning",
    ),
    pytest.param(
        make_run(
            {},
            {
                "init_check": [entry("fc1", fan_in=64, out=64, std=0.02), OUT],
                "model": {
                    "layers": [
                        {"name": "fc1", "type": "Linear"},
                        {"name": "bn1", "type": "BatchNorm1d"},
                        {"name": "out", "type": "Linear"},
                    ]
                },
            },
        ),
        Fires("info", says=("followed by a norm layer",)),
        id="followed-by-batch-norm-is-info",
    ),
]


@pytest.mark.parametrize("run, expect", ROLE_CASES)
def test_bad_initialization_judges_a_scale_by_role_and_signal(run, expect):
    check(bad_initialization, run, expect)
