"""Activation rules: dead_relu and saturated_activations, on samples taken every 50 steps; the
output's activation, which activation_on_logits reports and saturated_activations leaves out."""

from __future__ import annotations

import numpy as np
import pytest
from rules_support import Fires, Quiet, Skips, check

from trainscope.analyzers.rules.activation_on_logits import check as activation_on_logits
from trainscope.analyzers.rules.common import make_run
from trainscope.analyzers.rules.dead_relu import check as dead_relu
from trainscope.analyzers.rules.saturated_activations import SATURATED_WARNING
from trainscope.analyzers.rules.saturated_activations import check as saturated_activations
from trainscope.analyzers.rules.synthetic import steps
from trainscope.logformat import runjson as R
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


# --- the output's activation: activation_on_logits' fault, not a saturated hidden layer ---------------


def _summary(activations, out_units=None):
    """run.json's model summary of Linear 0, 2, 4 with `activations` between and after them, as
    the collector writes it: only layers with weights, the activation modules by kind."""
    meta = {
        R.K_MODEL: {
            R.M_LAYERS: [{"name": n, "type": "Linear"} for n in ("0", "2", "4")],
            R.M_ACTIVATIONS: activations,
        }
    }
    if out_units is not None:
        meta[R.K_INIT_CHECK] = [{R.I_LAYER: "4", "param": "weight", R.I_SHAPE: [out_units, 32]}]
    return meta


OUTPUT_ACTIVATION_CASES = [
    pytest.param(
        sat(_summary({"relu": ["1", "3"], "sigmoid": ["5"]}), **{"5": [0.2, 0.6, 0.8, 0.9, 0.9, 0.9]}),
        Quiet(),
        id="the-sigmoid-after-the-last-linear-is-the-output",
    ),
    pytest.param(
        sat(
            _summary({"tanh": ["1", "3"], "sigmoid": ["5"]}),
            **{"3": [0.2, 0.6, 0.7, 0.8, 0.8, 0.8], "5": [0.9] * 6},
        ),
        Fires("warning", layer="3", says=("In `3`, 80%",)),
        id="a-saturated-hidden-tanh-still-fires-beside-the-output",
    ),
]


@pytest.mark.parametrize("run, expect", OUTPUT_ACTIVATION_CASES)
def test_saturated_activations_leaves_the_output_activation_out(run, expect):
    check(saturated_activations, run, expect)


@pytest.mark.parametrize(
    "units, loss, source",
    [(1, "nn.BCEWithLogitsLoss", "BCEWithLogitsLoss"), (10, "nn.CrossEntropyLoss", "CrossEntropyLoss")],
)
def test_activation_on_logits_names_the_loss_for_the_output_size(units, loss, source):
    """A one-unit output is a binary head: its raw-logit loss is BCEWithLogitsLoss, not cross-entropy."""
    [found] = activation_on_logits(make_run({}, _summary({"relu": ["1", "3"], "sigmoid": ["5"]}, units)))
    assert loss in found.advice[0] and f"torch.nn.{source}" in found.source
    assert found.evidence["output_units"] == units


def test_sigmoid_before_bce_with_logits_on_digits_is_one_finding(tmp_path, digits):
    """The bug as users write it: nn.Sigmoid closes the model, BCEWithLogitsLoss applies another.
    The output sigmoid saturates (most outputs above 0.99 or below 0.01); that is the same fault
    activation_on_logits reports, not a saturated hidden layer."""
    import torch
    from torch import nn

    from trainscope.analyzers.diagnose import diagnose_run
    from trainscope.analyzers.reading import read_logdir
    from trainscope.collectors import watch

    X, y = digits
    target = (y >= 5).float().unsqueeze(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 1), nn.Sigmoid())
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    collector = watch(model, opt, tmp_path)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        idx = torch.randint(0, len(X), (64,), generator=g)
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(model(X[idx]), target[idx])
        loss.backward()
        opt.step()
        collector.step(loss=loss, inputs=X[idx])
    collector.close()
    run = read_logdir(tmp_path).runs["."]
    saturated = run.scalar(T.saturated_fraction_tag("3")).values
    assert np.all(saturated[-3:] > SATURATED_WARNING)  # the output sigmoid does saturate
    found = {f.rule: f for f in diagnose_run(run).findings}
    assert "saturated_activations" not in found
    assert "BCEWithLogitsLoss" in found["activation_on_logits"].advice[0]
