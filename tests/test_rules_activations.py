"""Activation rules: dead_relu and saturated_activations, on samples taken every 50 steps."""

from __future__ import annotations

import numpy as np
import pytest
from rules_support import Fires, Quiet, Skips, check

from trainscope.analyzers.rules.common import make_run
from trainscope.analyzers.rules.dead_relu import check as dead_relu
from trainscope.analyzers.rules.saturated_activations import check as saturated_activations
from trainscope.analyzers.rules.synthetic import steps
from trainscope.logformat import tags as T

EVERY = 50


def shares(prefix, **per_layer):
    """{tag: (steps, values)} for one activation statistic; layer names use "__" for "."."""
    return {
        prefix + name.replace("__", "."): (steps(len(v), EVERY), np.asarray(v, float))
        for name, v in per_layer.items()
    }


def dead(meta=None, **per_layer):
    return make_run(shares(T.DEAD_FRACTION_PREFIX, **per_layer), meta)


def dead_with_loss(loss, meta=None, **per_layer):
    """Dead-unit shares every 50 steps beside a train loss logged every step."""
    return make_run(
        {**shares(T.DEAD_FRACTION_PREFIX, **per_layer), T.TRAIN_LOSS: (steps(len(loss)), loss)}, meta
    )


def sat(meta=None, **per_layer):
    return make_run(shares(T.SATURATED_FRACTION_PREFIX, **per_layer), meta)


HEALTHY = [0.1, 0.15, 0.12, 0.2, 0.18, 0.14, 0.16, 0.15]

DEAD_CASES = [
    pytest.param(
        dead(features__1=[0.1, 0.2, 0.4, 0.6, 0.65, 0.7, 0.72, 0.7]),
        Fires(
            "warning",
            step=(150, 150),
            layer="features.1",
            says=("70% of `features.1`'s units", "since step 150", "in the first samples it was 20%"),
        ),
        id="killed-by-training-warning",
    ),
    pytest.param(
        dead_with_loss(np.linspace(2.3, 0.1, 400), fc=[0.55, 0.53, 0.52, 0.52, 0.54, 0.52, 0.53, 0.52]),
        Fires("info", layer="fc", says=("52% of `fc`'s units", "the run learns all the same", "fell 91%")),
        id="silent-from-the-start-while-it-learns-info",
    ),
    pytest.param(
        dead_with_loss(np.full(400, 2.3), fc=[0.6, 0.62, 0.61, 0.6, 0.63, 0.62, 0.6, 0.61]),
        Fires("warning", layer="fc", says=("stayed near its start for 100% of the run",)),
        id="silent-while-the-loss-never-moves-warning",
    ),
    pytest.param(
        dead(fc=[0.1, 0.95, 0.97, 0.99, 1.0, 1.0]),
        Fires("critical", step=(50, 50), layer="fc", says=("above the 90% threshold",)),
        id="all-dead-critical",
    ),
    pytest.param(dead(fc=[0.1, 0.1, 0.95, 0.1, 0.1, 0.1]), Quiet(), id="one-odd-batch"),
    pytest.param(dead(fc=[0.1, 0.1, 0.1, 0.1, 0.8, 0.9]), Quiet(), id="only-two-samples-so-far"),
    pytest.param(dead(fc=[0.9, 0.9, 0.9, 0.6, 0.3, 0.2]), Quiet(), id="recovered"),
    pytest.param(dead(fc=HEALTHY, conv=HEALTHY), Quiet(), id="healthy"),
    pytest.param(dead(fc=[0.95, 0.95]), Skips("not enough data yet: 2 of 3"), id="two-samples"),
    pytest.param(dead({"batch_size": 4}, fc=[1.0] * 8), Skips("batch size 4 is too small"), id="tiny-batch"),
    pytest.param(make_run({}), Skips("needs act/dead_fraction/*"), id="missing"),
]


@pytest.mark.parametrize("run, expect", DEAD_CASES)
def test_dead_relu(run, expect):
    check(dead_relu, run, expect)


def test_dead_relu_reports_each_dead_layer_in_model_order():
    meta = {"model": {"layers": [{"name": "a", "type": "Linear"}, {"name": "b", "type": "Linear"}]}}
    found = list(dead_relu(dead(meta, b=[0.95] * 5, a=[0.2, 0.2, 0.2, 0.6, 0.6, 0.6])))
    assert [(f.layer, f.severity) for f in found] == [("a", "warning"), ("b", "critical")]


SAT_CASES = [
    pytest.param(
        sat(rnn__h=[0.2, 0.5, 0.7, 0.8, 0.85, 0.8]),
        Fires("warning", step=(100, 100), layer="rnn.h", says=("80% of the sigmoid/tanh outputs",)),
        id="most-outputs-saturated",
    ),
    pytest.param(sat(h=[0.05, 0.1, 0.08, 0.1, 0.12]), Quiet(), id="healthy"),
    pytest.param(sat(h=[0.1, 0.9, 0.1, 0.1, 0.1]), Quiet(), id="one-odd-batch"),
    pytest.param(
        sat(
            {"model": {"layers": [{"name": "fc", "type": "Linear"}, {"name": "head", "type": "Sigmoid"}]}},
            head=[0.9] * 6,
        ),
        Quiet(),
        id="sigmoid-output-layer-is-meant-to-saturate",
    ),
    pytest.param(sat(h=[0.9, 0.9]), Skips("not enough data yet: 2 of 3"), id="two-samples"),
    pytest.param(make_run({}), Skips("needs act/saturated_fraction/*"), id="missing"),
]


@pytest.mark.parametrize("run, expect", SAT_CASES)
def test_saturated_activations(run, expect):
    check(saturated_activations, run, expect)


def test_dead_relu_names_functional_relu_units_by_the_layer_they_feed():
    """The collector measures F.relu outputs at the next layer's input; the message must say so."""
    steps = np.arange(0, 500, 50)
    run = make_run(
        {T.dead_fraction_tag("out"): (steps, np.full(steps.shape, 0.8))},
        meta={"model": {"activations": {"relu_functional_at_input_of": ["out"]}}},
    )
    [found] = dead_relu(run)
    assert "the ReLU units feeding `out` (F.relu, measured at `out`'s input)" in found.title
    assert found.layer == "out"
