"""Gradient-norm rules: vanishing_gradients (per layer, in model order) and exploding_gradients."""

from __future__ import annotations

import numpy as np
import pytest
from rules_support import Fires, Quiet, Skips, check

from trainscope.analyzers.rules.common import make_run
from trainscope.analyzers.rules.exploding_gradients import check as exploding_gradients
from trainscope.analyzers.rules.synthetic import noisy, steps
from trainscope.analyzers.rules.vanishing_gradients import check as vanishing_gradients
from trainscope.logformat import tags as T

N = 1000
S = steps(N)


def model(*layers):
    """run.json model section: (name, type) pairs in module order."""
    return {"model": {"layers": [{"name": n, "type": t, "trainable": True} for n, t in layers]}}


def grads(levels, n=N, seed=0):
    """Per-layer gradient norms {layer: level}, log-normal noise, every step."""
    return {
        T.grad_norm_tag(name): (steps(n), noisy(np.full(n, level), 0.3, seed + i))
        for i, (name, level) in enumerate(levels.items())
    }


SIGMOID_NET = model(("fc1", "Linear"), ("fc2", "Linear"), ("fc3", "Linear"), ("out", "Linear"))


def run_of(scalars, meta=None):
    return make_run(scalars, meta)


VANISH_CASES = [
    pytest.param(
        run_of(grads({"fc1": 2e-6, "fc2": 1e-4, "fc3": 1e-2, "out": 0.1}), SIGMOID_NET),
        Fires(
            "warning",
            step=(499, 501),
            layer="fc1",
            says=("first layer `fc1` is 1.96e-5 of the last layer `out`'s (1.99e-6 vs 0.101",),
        ),
        id="first-layer-starved",
    ),
    pytest.param(
        run_of(grads({"out": 0.1, "fc3": 1e-2, "fc2": 1e-4, "fc1": 2e-6}), SIGMOID_NET),
        Fires("warning", layer="fc1"),
        id="order-from-run-json-not-name-order",
    ),
    pytest.param(
        run_of(grads({"fc1": 0.01, "fc2": 0.03, "fc3": 0.05, "out": 0.1}), SIGMOID_NET),
        Quiet(),
        id="healthy-10x-spread",
    ),
    pytest.param(
        run_of(
            grads({"fc1": 2e-6, "fc2": 0.05, "out": 0.1}),
            model(("fc1", "BatchNorm1d"), ("fc2", "Linear"), ("out", "Linear")),
        ),
        Quiet(),
        id="batchnorm-layer-left-out",
    ),
    pytest.param(
        run_of(
            {
                **grads({"fc1": 1e-3, "out": 0.1}),
                **{
                    T.update_ratio_tag(n): (steps(20, 50), np.full(20, r))
                    for n, r in (("fc1", 1e-7), ("out", 1e-3))
                },
            },
            model(("fc1", "Linear"), ("out", "Linear")),
        ),
        Fires("warning", layer="fc1", says=("move by 1e-7 of their norm per step",)),
        id="update-ratio-route",
    ),
    pytest.param(
        run_of(
            {
                **grads({"fc1": 1e-3, "out": 0.1}),
                **{T.update_ratio_tag(n): (steps(20, 50), np.zeros(20)) for n in ("fc1", "out")},
            },
            model(("fc1", "Linear"), ("out", "Linear")),
        ),
        Quiet(),
        id="nothing-moves-is-not-vanishing",
    ),
    pytest.param(
        run_of(grads({"fc1": 2e-6, "out": 0.1}, n=30)), Skips("not enough data yet: 30 of 50"), id="too-short"
    ),
    pytest.param(run_of(grads({"out": 0.1})), Skips("at least 2 weight layers"), id="one-layer"),
    pytest.param(
        run_of({T.TRAIN_LOSS: (S, np.ones(N))}),
        Skips("needs grad/norm/* (per-layer gradient norms)"),
        id="missing",
    ),
]


@pytest.mark.parametrize("run, expect", VANISH_CASES)
def test_vanishing_gradients(run, expect):
    check(vanishing_gradients, run, expect)


def test_vanishing_gradients_names_saturating_activations_in_the_advice():
    meta = {**SIGMOID_NET, "model": {**SIGMOID_NET["model"], "activations": {"sigmoid": ["a1", "a2", "a3"]}}}
    (f,) = vanishing_gradients(run_of(grads({"fc1": 2e-6, "fc2": 1e-4, "fc3": 1e-2, "out": 0.1}), meta))
    assert "sigmoid in 3 layer(s)" in f.advice[0]


# --- exploding_gradients -----------------------------------------------------------------


def _norm(values):
    return {T.GRAD_GLOBAL_NORM: (S, values)}


def _growing_then_nan():
    norm = noisy(np.ones(N), 0.2)
    norm[700:] = np.exp(np.linspace(0, np.log(1e6), N - 700))
    loss = np.ones(N)
    norm[950:] = np.inf
    loss[950:] = np.nan
    return {**_norm(norm), T.TRAIN_LOSS: (S, loss)}


def _record_spikes():
    norm = noisy(np.ones(N), 0.2)
    norm[[300, 550, 800]] = [40.0, 100.0, 300.0]
    return _norm(norm)


def _late_small_batch_spikes():
    """Late in training the median norm is tiny and batches with a mistake are 10-100x it, yet below early
    norms."""
    norm = noisy(np.r_[np.full(200, 5.0), np.full(N - 200, 0.05)], 0.3)
    norm[np.arange(250, N, 37)] = 3.0
    return _norm(norm)


def _grows_out_of_tiny_init():
    norm = noisy(np.r_[np.exp(np.linspace(np.log(1e-4), 0, 100)), np.ones(N - 100)], 0.2)
    return _norm(norm)


EXPLODE_CASES = [
    pytest.param(
        _growing_then_nan(),
        Fires("critical", step=(600, 800), says=("grew", "became NaN/Inf at step 950")),
        id="exponential-growth-then-nan",
    ),
    pytest.param(
        _record_spikes(),
        Fires("warning", step=(300, 300), says=("spiked 3 times", "largest 300")),
        id="record-breaking-spikes",
    ),
    pytest.param(_norm(noisy(np.ones(N), 0.3)), Quiet(), id="healthy"),
    pytest.param(
        _norm(np.minimum(_record_spikes()[T.GRAD_GLOBAL_NORM][1], 1.0)),
        Skips("sits at the same maximum, 1, on 46% of the steps, as a norm recorded after clipping"),
        id="recorded-after-clipping",
    ),
    pytest.param(
        _norm(np.minimum(_record_spikes()[T.GRAD_GLOBAL_NORM][1], 250.0)),
        Fires("warning", says=("spiked 3 times", "largest 250")),
        id="one-point-at-the-maximum-is-not-clipping",
    ),
    pytest.param(_late_small_batch_spikes(), Quiet(), id="late-spikes-below-early-norms"),
    pytest.param(_grows_out_of_tiny_init(), Quiet(), id="grows-out-of-a-tiny-init"),
    pytest.param(
        {T.GRAD_GLOBAL_NORM: (steps(12), noisy(np.ones(12), 0.3))},
        Skips("too few gradient-norm points to judge: 12 (needs 20)"),
        id="too-short",
    ),
    pytest.param({T.TRAIN_LOSS: (S, np.ones(N))}, Skips("needs grad/global_norm"), id="missing"),
]


@pytest.mark.parametrize("scalars, expect", EXPLODE_CASES)
def test_exploding_gradients(scalars, expect):
    check(exploding_gradients, make_run(scalars), expect)


def test_exploding_gradients_suggests_a_clip_threshold_from_the_typical_norm():
    (f,) = exploding_gradients(make_run(_record_spikes()))
    assert f.evidence["suggested_clip"] == 2.0
    assert "max_norm=2" in f.advice[0]


def test_exploding_gradients_uses_per_layer_norms_without_a_global_norm():
    norm = noisy(np.ones(N), 0.2)
    norm[[300, 550, 800]] = [40.0, 100.0, 300.0]
    scalars = {T.grad_norm_tag("a"): (S, norm / np.sqrt(2)), T.grad_norm_tag("b"): (S, norm / np.sqrt(2))}
    check(exploding_gradients, make_run(scalars), Fires("warning", says=("spiked 3 times",)))


# --- exploding_gradients on short logs, live or ended; NaN/Inf the optimizer skipped --------------

LIVE = {"status": "running"}  # a run still being written: "not enough data yet" is for these


def _fine_tune_norm(n, seed=0):
    """A fine-tune's gradient norm logged every few steps: ~3.5 at the start, settling to ~0.5."""
    return noisy(0.5 + 3.0 * np.exp(-np.arange(n) / (n / 6)), 0.25, seed)


def _short_growth_then_nan(n=30):
    norm = noisy(np.ones(n), 0.2)
    norm[12:] = np.exp(np.linspace(0, np.log(1e5), n - 12))
    norm[-2:] = np.inf
    loss = np.ones(n)
    loss[-2:] = np.nan
    return {T.GRAD_GLOBAL_NORM: (steps(n, 10), norm), T.TRAIN_LOSS: (steps(n, 10), loss)}


def _spikes_then_one_skipped_overflow():
    """Record spikes, then one inf norm with finite norms and losses after it: a step AMP skipped."""
    scalars = _record_spikes()
    norm = scalars[T.GRAD_GLOBAL_NORM][1].copy()
    norm[900] = np.inf
    return {T.GRAD_GLOBAL_NORM: (S, norm), T.TRAIN_LOSS: (S, np.linspace(2.0, 0.5, N))}


EXPLODE_SHORT_CASES = [
    pytest.param(
        make_run({T.GRAD_GLOBAL_NORM: (steps(30, 10), _fine_tune_norm(30))}),
        Quiet(),
        id="ended-30-points-healthy-fine-tune-judged",
    ),
    pytest.param(
        make_run({T.GRAD_GLOBAL_NORM: (steps(20, 10), _fine_tune_norm(20, seed=3))}),
        Quiet(),
        id="ended-20-points-judged",
    ),
    pytest.param(
        make_run({T.GRAD_GLOBAL_NORM: (steps(30, 10), _fine_tune_norm(30))}, LIVE),
        Skips("not enough data yet: 30 of 50"),
        id="live-30-points-waits",
    ),
    pytest.param(
        make_run(_short_growth_then_nan()),
        Fires("critical", step=(60, 130), says=("grew", "became NaN/Inf at step 280")),
        id="ended-30-points-growth-then-nan",
    ),
    pytest.param(
        make_run(_spikes_then_one_skipped_overflow()),
        Fires("warning", says=("spiked 3 times",)),
        id="amp-skipped-overflow-is-not-nan-following",
    ),
]


@pytest.mark.parametrize("run, expect", EXPLODE_SHORT_CASES)
def test_exploding_gradients_on_short_or_skipped_runs(run, expect):
    found = check(exploding_gradients, run, expect)
    assert all("nonfinite_step" not in f.evidence for f in found if f.severity == "warning")
