"""Data rules: unnormalized_inputs (input statistics) and unshuffled_data (label entropy per batch)."""

from __future__ import annotations

import numpy as np
import pytest
from rules_support import Fires, Quiet, Skips, check

from trainscope.analyzers.facts import input_kind
from trainscope.analyzers.rules.common import make_run
from trainscope.analyzers.rules.synthetic import steps
from trainscope.analyzers.rules.unnormalized_inputs import check as unnormalized_inputs
from trainscope.analyzers.rules.unshuffled_data import check as unshuffled_data
from trainscope.logformat import runjson as R
from trainscope.logformat import tags as T

EVERY = 50


def inputs(mean, std, n=10, meta=None, seed=0):
    rng = np.random.default_rng(seed)
    s = steps(n, EVERY)
    return make_run(
        {
            T.INPUT_MEAN: (s, mean + rng.normal(0, 0.01 * max(abs(mean), 1), n)),
            T.INPUT_STD: (s, np.full(n, std)),
        },
        meta,
    )


INPUT_CASES = [
    pytest.param(
        inputs(120.0, 70.0),
        Fires("warning", step=(0, 0), says=("mean 120", "std 70", "raw 0-255 pixel")),
        id="raw-pixels",
    ),
    pytest.param(inputs(0.0, 0.02), Fires("warning", says=("std 0.02 (below 0.1)",)), id="tiny-scale"),
    pytest.param(inputs(0.01, 1.0), Quiet(), id="standardized"),
    pytest.param(inputs(0.45, 0.3), Quiet(), id="pixels-in-0-1"),
    pytest.param(
        inputs(3000.0, 2000.0, meta={"model": {"layers": [{"name": "emb", "type": "Embedding"}]}}),
        Skips("embedding"),
        id="token-ids",
    ),
    pytest.param(inputs(120.0, 70.0, n=2), Skips("not enough data yet: 2 of 3"), id="two-samples"),
    pytest.param(
        make_run({}, {R.K_INPUT_KIND: R.INPUT_TOKENS}),
        Skips("input is integer token ids"),
        id="language-model",
    ),
    pytest.param(make_run({}), Skips("needs input/mean"), id="missing"),
]


@pytest.mark.parametrize("run, expect", INPUT_CASES)
def test_unnormalized_inputs(run, expect):
    check(unnormalized_inputs, run, expect)


def test_unnormalized_inputs_suggests_the_measured_shift_and_scale():
    (f,) = unnormalized_inputs(inputs(120.0, 70.0))
    assert "X = (X - 120) / 70" in f.advice[0]


def labels(batch_entropy, seen=0.99, n=20, meta=None):
    s = steps(n, EVERY)
    seen_values = np.full(n, seen) if np.isscalar(seen) else np.asarray(seen, float)
    return make_run(
        {T.LABEL_ENTROPY: (s, np.full(n, batch_entropy)), T.LABEL_ENTROPY_SEEN: (s, seen_values)}, meta
    )


SHUFFLE_CASES = [
    pytest.param(
        labels(0.03),
        Fires("warning", step=(0, 0), says=("0.03 (normalized), 3.0% of the 0.99",)),
        id="sorted-one-class-per-batch",
    ),
    pytest.param(labels(0.3), Fires("warning"), id="two-classes-per-batch"),
    pytest.param(labels(0.93), Quiet(), id="shuffled"),
    pytest.param(
        labels(0.44, meta={"batch_size": 8, "hparams": {"num_classes": 100}}),
        Quiet(),
        id="batch-of-8-cannot-hold-100-classes",
    ),
    pytest.param(
        labels(0.0, seen=np.r_[np.zeros(17), np.full(3, 0.5)]),
        Skips("not enough data yet: 3 of 5"),
        id="too-few-classes-seen-yet",
    ),
    pytest.param(
        labels(0.0, meta={"batch_size": 1, "hparams": {"num_classes": 10}}),
        Skips("batches of 1"),
        id="batch-of-one",
    ),
    pytest.param(make_run({}), Skips("needs data/label_entropy"), id="missing"),
    pytest.param(
        make_run({}, {R.K_INPUT_KIND: R.INPUT_TOKENS}), Skips("targets are tokens"), id="language-model"
    ),
    pytest.param(labels(0.03, meta={R.K_INPUT_KIND: R.INPUT_TOKENS}), Fires("warning"), id="text-classifier"),
]


@pytest.mark.parametrize("run, expect", SHUFFLE_CASES)
def test_unshuffled_data(run, expect):
    check(unshuffled_data, run, expect)


@pytest.mark.parametrize(
    "meta, kind",
    [
        ({R.K_INPUT_KIND: R.INPUT_TOKENS}, R.INPUT_TOKENS),
        ({R.K_INPUT_KIND: R.INPUT_FEATURES}, R.INPUT_FEATURES),
        ({R.K_INPUT_KIND: None}, None),
        ({R.K_INPUT_KIND: "pixels"}, None),
        (None, None),
    ],
)
def test_input_kind_is_run_json_s_or_unknown(meta, kind):
    assert input_kind(make_run({}, meta)) == kind
