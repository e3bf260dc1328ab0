"""End-of-run advice that is not a detection (analyzers.summary): info lines only, for finished runs."""

from __future__ import annotations

import pytest

from trainscope.analyzers.rules.common import make_run
from trainscope.analyzers.summary import end_of_run_advice


def meta(status="finished", optimizer="Adam", layers=("Linear", "ReLU", "Linear"), activations=None):
    return {
        "status": status,
        "optimizer": {"type": optimizer, "param_groups": [{"lr": 1e-3}]},
        "model": {
            "layers": [{"name": f"m{i}", "type": t} for i, t in enumerate(layers)],
            "activations": activations or {},
        },
    }


@pytest.mark.parametrize(
    "run_meta, topics",
    [
        (meta(), ["ensembles", "sgd_momentum", "bn_relu"]),
        (meta(optimizer="SGD", layers=("Conv2d", "BatchNorm2d", "ReLU")), ["ensembles"]),
        (meta(status="running"), []),
        (meta(status="crashed"), []),
        ({}, []),
    ],
    ids=["adam-without-bn", "sgd-with-bn", "running", "crashed", "foreign-log"],
)
def test_end_of_run_advice_applies_only_where_it_fits(run_meta, topics):
    advice = end_of_run_advice(make_run({}, run_meta))
    assert [a.topic for a in advice] == topics
    assert all(a.severity == "info" and a.source[:3] in ("000", "001") for a in advice)


def test_bn_relu_advice_names_saturating_activations():
    (bn,) = [
        a
        for a in end_of_run_advice(make_run({}, meta(activations={"sigmoid": ["m1"]})))
        if a.topic == "bn_relu"
    ]
    assert "uses sigmoid" in bn.message and bn.to_dict()["topic"] == "bn_relu"
