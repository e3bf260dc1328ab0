"""All rules together: the registry, precision on healthy runs (finished and live), one injected fault
at a time, and robustness on odd data. "A healthy run that raises a warning is a bug."
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re

import numpy as np
import pytest

from trainscope.analyzers.diagnose import diagnose_run
from trainscope.analyzers.findings import Skip
from trainscope.analyzers.rules import ALL_RULES, RULE_MODULES, curves, labels, updates
from trainscope.analyzers.rules.common import make_run
from trainscope.analyzers.rules.synthetic import batch_losses, decay, healthy_run, noisy
from trainscope.logformat import tags as T

RULE_IDS = (
    "nonfinite",
    "lr_too_high",
    "lr_too_low",
    "loss_plateau",
    "noisy_batches",
    "overfitting",
    "underfitting",
    "dead_relu",
    "vanishing_gradients",
    "exploding_gradients",
    "saturated_activations",
    "bad_initialization",
    "unnormalized_inputs",
    "unshuffled_data",
    "weight_growth",
)


BEYOND_THE_DOCUMENTS = (
    "nothing_training",
    "gradients_not_zeroed",
    "activation_on_logits",
    "initial_loss_off",
    "too_good_to_be_true",
    "loss_spikes",
)


def test_all_rules_are_listed_once_in_rules_md_order_then_the_ones_beyond_the_documents():
    assert tuple(rule_id for rule_id, _ in ALL_RULES) == RULE_IDS + BEYOND_THE_DOCUMENTS


def test_a_rule_beyond_the_documents_cites_a_published_reference_not_a_document_line():
    for module in RULE_MODULES[len(RULE_IDS) :]:
        sources = [v for k, v in vars(module).items() if k.endswith("_SOURCE") and isinstance(v, str)]
        assert sources and not any(" line " in s for s in sources), module.RULE_ID


@pytest.mark.parametrize("rule_id, rule", ALL_RULES)
def test_every_rule_documents_what_why_and_what_to_do(rule_id, rule):
    doc = rule.__doc__ or ""
    assert "Why it matters" in doc and "What to do" in doc and "Measured" in doc, rule_id


def test_every_threshold_is_a_named_constant():
    """Thresholds are UPPER_CASE module constants with a comment; spot-check that they exist as numbers."""
    for module in RULE_MODULES:
        constants = {k: v for k, v in vars(module).items() if re.fullmatch(r"[A-Z][A-Z0-9_]+", k)}
        numbers = [k for k, v in constants.items() if isinstance(v, (int, float))]
        assert len(numbers) >= 1, module.__name__


def _diagnose(scalars, meta):
    d = diagnose_run(make_run(scalars, meta))
    errors = [s for s in d.skipped if s.reason.startswith("rule error")]
    assert not errors, errors
    json.dumps([f.to_dict() for f in d.findings], allow_nan=False)
    return d


def _alarms(d):
    return [(f.rule, f.severity, f.message) for f in d.findings if f.severity != "info"]


HEALTHY_GRID = list(itertools.product((8, 32, 128), (None, 1500), ("constant", "step", "warmup_cosine")))


@pytest.mark.parametrize("batch, tau, schedule", HEALTHY_GRID)
def test_healthy_finished_runs_raise_no_warning(batch, tau, schedule):
    scalars, meta = healthy_run(3000, batch, tau, schedule, seed=batch)
    assert _alarms(_diagnose(scalars, meta)) == []


@pytest.mark.parametrize("batch, schedule", [(16, "constant"), (64, "cosine"), (128, "warmup_cosine")])
@pytest.mark.parametrize("cut", (40, 120, 400, 900, 1800))
def test_healthy_live_runs_raise_no_warning_at_any_point(batch, schedule, cut):
    scalars, meta = healthy_run(3000, batch, 1500, schedule, seed=cut)
    part = {tag: (s[s < cut], v[s < cut]) for tag, (s, v) in scalars.items() if (s < cut).any()}
    assert _alarms(_diagnose(part, {**meta, "status": "running"})) == []


# --- one fault at a time -------------------------------------------------------------------

N = 3000


def _set(scalars, tag, values):
    steps_, _ = scalars[tag]
    scalars[tag] = (steps_, values(steps_) if callable(values) else values)


def _per_layer(scalars, prefix, fn):
    for tag in [t for t in scalars if t.startswith(prefix)]:
        steps_, values = scalars[tag]
        scalars[tag] = (steps_, fn(steps_, values))


def inject_nonfinite(sc, meta):
    _set(sc, T.TRAIN_LOSS, np.where(np.arange(N) >= 2000, np.nan, sc[T.TRAIN_LOSS][1]))


def inject_lr_too_high(sc, meta):
    _per_layer(sc, T.UPDATE_RATIO_PREFIX, lambda s, v: v * 100)


def inject_lr_too_low(sc, meta):
    _set(sc, T.TRAIN_LOSS, noisy(2.3 - 0.1 * np.arange(N) / N, 0.01))
    _per_layer(sc, T.UPDATE_RATIO_PREFIX, lambda s, v: v / 200)


def inject_loss_plateau(sc, meta):
    _set(sc, T.TRAIN_LOSS, noisy(np.full(N, 2.0), 0.03))
    _per_layer(sc, T.UPDATE_RATIO_PREFIX, lambda s, v: v * 10)


def inject_noisy_batches(sc, meta):
    meta["batch_size"] = 2
    _set(sc, T.TRAIN_LOSS, batch_losses(decay(N, floor=0.3), 2))


def inject_overfitting(sc, meta):
    _set(sc, T.VAL_LOSS, lambda s: 0.4 + 1.5 * (s / N - 0.4) ** 2 + 2.0 * np.exp(-s / 100))


def inject_underfitting(sc, meta):
    trend = decay(N, floor=1.3, tau=300)
    _set(sc, T.TRAIN_LOSS, noisy(trend, 0.05))
    _set(sc, T.VAL_LOSS, lambda s: trend[s] * 1.03)
    _set(sc, T.TRAIN_ACC, np.clip(0.55 - 0.45 * np.exp(-np.arange(N) / 300), 0, 1))
    _set(sc, T.VAL_ACC, lambda s: 0.52 - 0.42 * np.exp(-s / 300))


def inject_dead_relu(sc, meta):
    _set(sc, T.dead_fraction_tag("features.2"), lambda s: np.where(s > 500, 0.8, 0.2))


def inject_vanishing(sc, meta):
    steps_, values = sc[T.grad_norm_tag("features.0")]
    sc[T.grad_norm_tag("features.0")] = (steps_, values * 1e-5)


def inject_exploding(sc, meta):
    norm = sc[T.GRAD_GLOBAL_NORM][1].copy()
    norm[[1000, 1700, 2400]] = [50.0, 150.0, 500.0]
    _set(sc, T.GRAD_GLOBAL_NORM, norm)


def inject_saturated(sc, meta):
    steps_ = sc[T.dead_fraction_tag("features.0")][0]
    sc[T.saturated_fraction_tag("features.0")] = (steps_, np.full(steps_.shape[0], 0.8))


def inject_bad_init(sc, meta):
    meta["init_check"][0] = {**meta["init_check"][0], "std": 1.0, "ratio": 1.0 / math.sqrt(2 / 128)}
    # A scale 8x He shows in the signal from the start: most units of the layer after it dead.
    _set(sc, T.dead_fraction_tag("features.2"), lambda s: np.where(s < 200, 0.8, 0.15))


def inject_unnormalized(sc, meta):
    _set(sc, T.INPUT_MEAN, lambda s: np.full(s.shape[0], 120.0))
    _set(sc, T.INPUT_STD, lambda s: np.full(s.shape[0], 70.0))


def inject_unshuffled(sc, meta):
    _set(sc, T.LABEL_ENTROPY, lambda s: np.full(s.shape[0], 0.05))


def inject_weight_growth(sc, meta):
    _per_layer(sc, T.WEIGHT_NORM_PREFIX, lambda s, v: v[0] * (1 + 6 * (s / N) ** 2))


FAULTS = [
    ("nonfinite", inject_nonfinite),
    ("lr_too_high", inject_lr_too_high),
    ("lr_too_low", inject_lr_too_low),
    ("loss_plateau", inject_loss_plateau),
    ("noisy_batches", inject_noisy_batches),
    ("overfitting", inject_overfitting),
    ("underfitting", inject_underfitting),
    ("dead_relu", inject_dead_relu),
    ("vanishing_gradients", inject_vanishing),
    ("exploding_gradients", inject_exploding),
    ("saturated_activations", inject_saturated),
    ("bad_initialization", inject_bad_init),
    ("unnormalized_inputs", inject_unnormalized),
    ("unshuffled_data", inject_unshuffled),
    ("weight_growth", inject_weight_growth),
]


def test_every_rule_has_an_injected_fault():
    assert [rule for rule, _ in FAULTS] == list(RULE_IDS)


@pytest.mark.parametrize("rule_id, inject", FAULTS, ids=[rule for rule, _ in FAULTS])
def test_an_injected_fault_is_caught_by_its_rule(rule_id, inject):
    scalars, meta = healthy_run(N, 64, None, "constant", seed=7)
    inject(scalars, meta)
    d = _diagnose(scalars, meta)
    caught = [f for f in d.findings if f.rule == rule_id and f.severity in ("warning", "critical")]
    assert caught, (rule_id, [(f.rule, f.severity) for f in d.findings], d.skipped)


# --- odd data --------------------------------------------------------------------------------


def _odd_runs():
    full, meta = healthy_run(300, 32, None, "constant")
    yield "empty", {}, {}
    yield "one-point", {tag: (s[:1], v[:1]) for tag, (s, v) in full.items()}, meta
    yield "all-nan", {tag: (s, np.full(s.shape[0], np.nan)) for tag, (s, v) in full.items()}, meta
    yield "all-zero", {tag: (s, np.zeros(s.shape[0])) for tag, (s, v) in full.items()}, meta
    yield "negative", {tag: (s, -np.abs(v)) for tag, (s, v) in full.items()}, meta
    yield "huge", {tag: (s, v * 1e300) for tag, (s, v) in full.items()}, meta
    yield (
        "garbage-meta",
        full,
        {
            "hparams": "x",
            "optimizer": [1],
            "model": {"layers": "y"},
            "init_check": [1, None],
            "batch_size": "big",
            "status": 3,
        },
    )


@pytest.mark.parametrize("name, scalars, meta", list(_odd_runs()), ids=[r[0] for r in _odd_runs()])
def test_rules_skip_or_judge_odd_data_but_never_crash(name, scalars, meta):
    run = make_run(scalars, meta)
    for rule_id, rule in ALL_RULES:
        try:
            found = list(rule(run))
        except Skip as skip:
            assert skip.reason, rule_id
            continue
        json.dumps([f.to_dict() for f in found], allow_nan=False)


# --- sources ---------------------------------------------------------------------------------

SEEDS = os.environ.get("TRAINSCOPE_SEEDS", "/work/shared/seeds")


@pytest.mark.skipif(not os.path.isdir(SEEDS), reason="the seed documents are not on this machine")
def test_every_cited_line_is_quoted_word_for_word():
    docs = {
        name[:3]: open(os.path.join(SEEDS, name), encoding="utf-8").read().splitlines()
        for name in os.listdir(SEEDS)
        if name.endswith(".txt")
    }
    from trainscope.analyzers import summary
    from trainscope.analyzers.rules.common import quotes

    cited = 0
    for module in (*RULE_MODULES, curves, labels, updates, summary):
        for name, value in vars(module).items():
            if name.endswith("_SOURCE"):
                for doc, line, text, _gloss in quotes(value):  # cite()'s text read back
                    assert text in docs[doc][int(line) - 1], (name, doc, line, text)
                    cited += 1
    assert cited >= 30
