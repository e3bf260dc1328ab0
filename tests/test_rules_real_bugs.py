"""The rules beyond the documents: real bugs users make, each on hand-made series (fires / quiet / skips).

nothing_training, gradients_not_zeroed, activation_on_logits, initial_loss_off,
too_good_to_be_true, loss_spikes. The sample runs check them on real training
(tests/test_sample_runs.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from rules_support import Fires, Quiet, Skips, check

from trainscope.analyzers.rules.activation_on_logits import check as activation_on_logits
from trainscope.analyzers.rules.common import make_run
from trainscope.analyzers.rules.gradients_not_zeroed import check as gradients_not_zeroed
from trainscope.analyzers.rules.initial_loss_off import check as initial_loss_off
from trainscope.analyzers.rules.loss_spikes import check as loss_spikes
from trainscope.analyzers.rules.nothing_training import check as nothing_training
from trainscope.analyzers.rules.synthetic import batch_losses, decay, noisy, steps
from trainscope.analyzers.rules.too_good_to_be_true import check as too_good_to_be_true
from trainscope.logformat import runjson as R

N = 1000
S = steps(N)
LAYERS = ("0", "2", "4")


def run(meta=None, **scalars):
    """A run from {tag: values on every step} or {tag: (steps, values)}; "__" in a name is "/"."""
    data = {}
    for name, value in scalars.items():
        tag = name.replace("__", "/")
        data[tag] = value if isinstance(value, tuple) else (steps(len(value)), np.asarray(value, float))
    return make_run(data, meta)


# --- nothing_training ------------------------------------------------------------------------


def _ratios(values_of, every=10, n=N):
    s = steps(n // every, every)
    return {f"update__ratio__{layer}": (s, values_of(s)) for layer in LAYERS}


def _model(trainable_parameters, updated=(False, False, False), parameters=3000):
    """run.json's model summary: three Linear layers and which of them the optimizer updates."""
    layers = [
        {"name": name, "type": "Linear", "parameters": parameters // len(LAYERS), **flag}
        for name, flag in zip(LAYERS, [{} if u is None else {R.L_TRAINABLE: u} for u in updated], strict=True)
    ]
    return {R.K_MODEL: {R.M_PARAMETERS: parameters, R.M_TRAINABLE: trainable_parameters, R.M_LAYERS: layers}}


FLAT_LOSS = noisy(np.full(N, 2.3), 0.05)

NOTHING_CASES = [
    pytest.param(
        run(_model(0), train__loss=FLAT_LOSS),
        Fires("critical", step=(0, 0), says=("every parameter is frozen (requires_grad=False)", "3,000")),
        id="every-parameter-frozen",
    ),
    pytest.param(
        run(_model(3000), train__loss=FLAT_LOSS),
        Fires("critical", step=(0, 0), says=("optimizer updates none of its 3 layers", "another model")),
        id="optimizer-holds-none-of-the-model",
    ),
    pytest.param(
        run(_model(3000, (False, False, True)), train__loss=FLAT_LOSS),
        Skips("needs grad/global_norm"),
        id="optimizer-holds-the-head",
    ),
    pytest.param(
        run(_model(3000, (False, None, False)), train__loss=FLAT_LOSS),
        Skips("needs grad/global_norm"),
        id="a-layer-that-does-not-say",
    ),
    pytest.param(
        run(_model(0), train__loss=noisy(decay(N), 0.05)),
        Skips("needs grad/global_norm"),
        id="frozen-model-but-the-loss-fell-something-else-trains",
    ),
    pytest.param(
        run(
            _model(0),
            train__loss=FLAT_LOSS,
            **{f"grad__norm__{layer}": (steps(100, 10), np.full(100, 0.3)) for layer in LAYERS},
        ),
        Quiet(),
        id="frozen-at-the-end-after-training",
    ),
    pytest.param(
        run(grad__global_norm=np.where(S < 300, 1.0, 0.0)),
        Fires("critical", step=(300, 300), says=("gradient norm is exactly 0", "70% of the logged steps")),
        id="gradients-zero-since-step-300",
    ),
    pytest.param(
        run(**_ratios(lambda s: np.zeros(s.shape[0]))),
        Fires("critical", says=("update is exactly 0 (3 layers)",)),
        id="every-update-zero",
    ),
    pytest.param(run(grad__global_norm=noisy(np.full(N, 1.0), 0.2)), Quiet(), id="healthy"),
    pytest.param(run(grad__global_norm=np.where(S % 100 == 0, 0.0, 1.0)), Quiet(), id="a-few-zero-steps"),
    pytest.param(
        run(
            grad__global_norm=noisy(np.full(N, 0.5), 0.2),
            **{f"grad__norm__{layer}": (steps(100, 10), np.zeros(100)) for layer in LAYERS},
        ),
        Fires(
            "critical", step=(0, 0), says=("gradient norm is exactly 0 (3 layers)", "the clipping sets them")
        ),
        id="clipped-to-zero-after-the-global-norm",
    ),
    pytest.param(
        run(
            **{
                f"grad__norm__{layer}": (steps(100, 10), np.where(steps(100, 10) < 500, 0.3, 0.0))
                for layer in LAYERS
            }
        ),
        Fires("critical", step=(500, 500), says=("gradient norm is exactly 0 (3 layers)",)),
        id="every-layer-gradient-zero-since-500",
    ),
    pytest.param(
        run(
            **{
                **{f"grad__norm__{layer}": (steps(100, 10), np.full(100, 0.3)) for layer in LAYERS},
                "grad__norm__0": (steps(100, 10), np.zeros(100)),
            }
        ),
        Quiet(),
        id="one-frozen-layer-gradient",
    ),
    pytest.param(
        run(
            **{
                **_ratios(lambda s: np.full(s.shape[0], 1e-3)),
                "update__ratio__0": (steps(100, 10), np.zeros(100)),
            }
        ),
        Quiet(),
        id="one-frozen-layer-is-not-nothing",
    ),
    pytest.param(run(train__loss=decay(N)), Skips("needs grad/global_norm"), id="missing"),
]


@pytest.mark.parametrize("r, expect", NOTHING_CASES)
def test_nothing_training(r, expect):
    check(nothing_training, r, expect)


# --- gradients_not_zeroed --------------------------------------------------------------------

ZEROED_CASES = [
    pytest.param(
        run(grad__global_norm=noisy(0.5 + 0.02 * S, 0.1)),
        Fires("warning", says=("climbed from about", "rising from one stretch")),
        id="norm-grows-linearly",
    ),
    pytest.param(
        run(grad__global_norm=np.minimum(0.5 * (1 + S), 250.0) * (1 + 1e-4 * np.sin(S))),
        Fires("warning", step=(0, 10), says=("(250x)", "changes by a median of under 0.1%")),
        id="sum-frozen-once-the-network-died",
    ),
    pytest.param(
        run(grad__global_norm=np.concatenate((noisy(np.full(500, 1.0), 0.3), np.full(500, 0.01)))),
        Quiet(),
        id="smooth-but-tiny-converged",
    ),
    pytest.param(
        run(grad__global_norm=(steps(50, 100), np.minimum(0.5 * (1 + steps(50, 100)), 250.0))),
        Quiet(),
        id="epoch-averages-are-smooth-anyway",
    ),
    pytest.param(
        run(grad__global_norm=noisy(decay(N, start=3.0, floor=0.5), 0.2)), Quiet(), id="healthy-falls"
    ),
    pytest.param(run(grad__global_norm=noisy(np.full(N, 1.0), 0.3)), Quiet(), id="healthy-flat"),
    pytest.param(
        run(grad__global_norm=noisy(1.0 + 0.002 * S, 0.1)), Quiet(), id="slow-3x-rise-is-not-enough"
    ),
    pytest.param(
        run(grad__global_norm=np.where(S == 700, 500.0, noisy(np.full(N, 1.0), 0.1))), Quiet(), id="one-spike"
    ),
    pytest.param(run(train__loss=decay(N)), Skips("needs grad/global_norm"), id="missing"),
]


@pytest.mark.parametrize("r, expect", ZEROED_CASES)
def test_gradients_not_zeroed(r, expect):
    check(gradients_not_zeroed, r, expect)


# --- activation_on_logits --------------------------------------------------------------------


def model(activations, layers=LAYERS):
    return {"model": {"layers": [{"name": n, "type": "Linear"} for n in layers], "activations": activations}}


LOGITS_CASES = [
    pytest.param(
        run(model({"relu": ["1", "3", "5"]})),
        Fires("warning", layer="4", says=("The output layer `4` is followed by a relu (`5`)",)),
        id="relu-after-the-output",
    ),
    pytest.param(
        run(model({"relu": ["1", "3", "5"]}), act__dead_fraction__5=(steps(10, 10), np.full(10, 0.8))),
        Fires("critical", says=("80% of the output units are zero",)),
        id="relu-after-the-output-with-dead-outputs",
    ),
    pytest.param(
        run(
            {**model({"relu": ["1", "3"], "softmax": ["5"]}), "hparams": {"num_classes": 10}},
            val__acc=(steps(5, 100), np.full(5, 0.1)),
        ),
        Fires("critical", says=("a softmax (`5`)", "val accuracy is stuck at 10%")),
        id="softmax-before-the-loss-stuck-at-chance",
    ),
    pytest.param(
        run(
            {**model({"relu": ["1", "3", "5"]}), R.K_NUM_CLASSES: 10},
            act__dead_fraction__5=(steps(10, 10), np.full(10, 0.4)),
            val__acc=(steps(5, 100), np.array([0.3, 0.45, 0.55, 0.57, 0.58])),
        ),
        Fires("critical", says=("4 of 10 classes can never be predicted", "caps accuracy near 60%")),
        id="dead-outputs-cap-the-accuracy",
    ),
    pytest.param(
        run(
            {**model({"relu": ["1", "3", "5"]}), R.K_NUM_CLASSES: 10},
            act__dead_fraction__5=(steps(10, 10), np.full(10, 0.1)),
            val__acc=(steps(5, 100), np.array([0.3, 0.45, 0.55, 0.57, 0.58])),
        ),
        Fires("warning", says=("10% of the output units are zero",)),
        id="one-dead-output-far-below-its-cap",
    ),
    pytest.param(run(model({"relu": ["1", "3"]})), Quiet(), id="relu-only-between-layers"),
    pytest.param(
        run(model({"relu": ["encoder.1"]}, layers=("encoder.0", "head.out"))),
        Quiet(),
        id="an-activation-in-another-container",
    ),
    pytest.param(run(), Skips("needs run.json model"), id="foreign-log"),
]


@pytest.mark.parametrize("r, expect", LOGITS_CASES)
def test_activation_on_logits(r, expect):
    check(activation_on_logits, r, expect)


# --- initial_loss_off --------------------------------------------------------------------------

C10 = {"hparams": {"num_classes": 10}}

INITIAL_CASES = [
    pytest.param(
        run(C10, train__loss=np.concatenate((np.full(10, 14.0), decay(N - 10, start=3.0)))),
        Fires("warning", step=(0, 0), says=("median of 14", "against ln 10 = 2.3")),
        id="starts-6x-above-chance",
    ),
    pytest.param(run(C10, train__loss=decay(N, start=2.3)), Quiet(), id="starts-at-chance"),
    pytest.param(run(C10, train__loss=decay(N, start=0.5, floor=0.1)), Quiet(), id="fine-tune-starts-low"),
    pytest.param(
        run(train__loss=np.full(N, 14.0)), Skips("needs the number of classes"), id="classes-unknown"
    ),
    pytest.param(
        run(C10, train__loss=(steps(20, 500, start=500), decay(20))),
        Skips("the log starts at step 500"),
        id="log-starts-late",
    ),
]


@pytest.mark.parametrize("r, expect", INITIAL_CASES)
def test_initial_loss_off(r, expect):
    check(initial_loss_off, r, expect)


# --- too_good_to_be_true -----------------------------------------------------------------------


def _to_zero(start=4.0):
    return np.concatenate((np.geomspace(start, 1e-4, 100), noisy(np.full(N - 100, 1e-4), 0.2)))


VAL_S = steps(10, 100, start=99)
LM = {R.K_INPUT_KIND: R.INPUT_TOKENS, R.K_NUM_CLASSES: 60}

TOO_GOOD_CASES = [
    pytest.param(
        run(LM, train__loss=_to_zero(), val__loss=(VAL_S, np.geomspace(3.0, 2e-4, 10))),
        Fires("warning", says=("fell from 4 to below", "the validation loss fell to", "a language model")),
        id="language-model-whose-targets-are-its-inputs",
    ),
    pytest.param(
        run(C10, train__loss=_to_zero(2.3), val__loss=(VAL_S, np.geomspace(2.0, 1e-4, 10))),
        Fires("info", says=("10 classes",)),
        id="a-small-task-can-be-that-easy-info",
    ),
    pytest.param(
        run(LM, train__loss=_to_zero(), val__loss=(VAL_S, np.linspace(3.0, 2.5, 10))),
        Quiet(),
        id="validation-stays-high-memorizing-not-a-leak",
    ),
    pytest.param(run(LM, train__loss=noisy(decay(N, start=4.0, floor=1.2), 0.05)), Quiet(), id="healthy-lm"),
    pytest.param(
        run(C10, train__loss=_to_zero(2.3)), Skips("to tell a leak from an easy task"), id="no-validation"
    ),
]


@pytest.mark.parametrize("r, expect", TOO_GOOD_CASES)
def test_too_good_to_be_true(r, expect):
    check(too_good_to_be_true, r, expect)


# --- loss_spikes -------------------------------------------------------------------------------


def _with_spikes(at, height=5.0, decays=20, base=None, stays=0.0):
    """A flat loss of 1.0 with spikes of `height` at `at`, each decaying over `decays` steps to `stays`
    above the base."""
    values = noisy(np.full(N, 1.0), 0.02, seed=1) if base is None else base.copy()
    for a in at:
        k = np.arange(N - a)
        values[a:] += stays + (height - stays) * np.exp(-k / (decays / 4))
    return values


SPIKE_CASES = [
    pytest.param(
        run(train__loss=_with_spikes([300, 500, 700])),
        Fires("warning", step=(300, 300), says=("3 time(s)", "step 300: 1 -> 5.99 (6x), recovered")),
        id="three-recovered-spikes",
    ),
    pytest.param(
        run(train__loss=_with_spikes([500], stays=1.5)),
        Fires("warning", says=("1 time(s)", "still 2.67 after")),
        id="one-spike-that-does-not-recover",
    ),
    pytest.param(
        run(train__loss=_with_spikes([500])),
        Fires("info", says=("1 time(s)", "(5.9x), recovered.")),
        id="one-recovered-spike",
    ),
    pytest.param(
        run(train__loss=batch_losses(decay(3000, floor=0.05), 8, seed=3)),
        Quiet(),
        id="heavy-tailed-batch-of-8",
    ),
    pytest.param(
        run(train__loss=np.where(S % 97 == 0, 0.3, noisy(decay(N, floor=0.01), 0.3))),
        Quiet(),
        id="blips-of-a-loss-near-0",
    ),
    pytest.param(run(train__loss=noisy(decay(N), 0.05)), Quiet(), id="healthy"),
]


@pytest.mark.parametrize("r, expect", SPIKE_CASES)
def test_loss_spikes(r, expect):
    check(loss_spikes, r, expect)


def test_a_spike_says_the_gradient_norm_at_it():
    loss = _with_spikes([500])
    grad = np.where((S >= 499) & (S <= 501), 40.0, 1.0)
    (found,) = loss_spikes(run(train__loss=loss, grad__global_norm=grad))
    assert "gradient norm 40" in found.message and found.evidence["spikes"][0]["grad_norm"] == 40.0
