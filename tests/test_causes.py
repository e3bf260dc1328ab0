"""The cause graph: each link joins a cause and a symptom when its evidence holds, and only then.

Findings are made by hand (rule, severity, step, layer, evidence as the rules write
them) on a 1,000-step run, so each case states exactly the evidence a link needs; the
sample runs check the graph on real training (tests/test_sample_runs.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from trainscope.analyzers import causes as C
from trainscope.analyzers.causes import LINKS, explain
from trainscope.analyzers.diagnose import diagnose_run
from trainscope.analyzers.findings import Finding
from trainscope.analyzers.rules.common import make_run
from trainscope.analyzers.rules.loss_plateau import EARLY, NEVER_LEARNED
from trainscope.logformat import tags as T

STEPS = np.arange(1000)


def run(lr=None, layers=("0", "2", "4")):
    scalars = {T.TRAIN_LOSS: (STEPS, np.linspace(2.3, 0.5, 1000))}
    if lr is not None:
        scalars[T.LR] = (STEPS, lr)
    meta = {"model": {"layers": [{"name": n, "type": "Linear"} for n in layers]}}
    return make_run(scalars, meta)


def f(rule, severity="warning", step=None, layer=None, **evidence):
    return Finding(rule, severity, rule, "message", (f"advice of {rule}",), "source", step, layer, evidence)


DIVERGED = {"smoothed_end": 3.0}


def linked(cause, symptom, r=None):
    """The symptom's parent after explaining [cause, symptom]: the cause's rule, or None."""
    out = explain([cause, symptom], r or run())
    by_rule = {x.rule: x for x in out.findings}
    return by_rule[symptom.rule].caused_by


# (cause, symptom, run, linked?) for every link: when its evidence holds, and when it does not.
CASES = [
    # lr_too_high -> ...
    ("lr-dead", f("lr_too_high", step=100), f("dead_relu", "critical", 150, "2"), None, True),
    (
        "lr-dead-lr-raised-later",
        f("lr_too_high", step=800),
        f("dead_relu", "critical", 100, "2"),
        run(lr=np.where(STEPS < 700, 0.01, 0.1)),
        False,
    ),
    ("lr-explode", f("lr_too_high", step=100), f("exploding_gradients", step=120), None, True),
    ("lr-explode-came-after", f("lr_too_high", step=300), f("exploding_gradients", step=120), None, False),
    ("lr-nonfinite", f("lr_too_high", step=100), f("nonfinite", "critical", 300), None, True),
    (
        "lr-growth",
        f("lr_too_high", "critical", 0, **DIVERGED),
        f("weight_growth", step=0, layer="2"),
        None,
        True,
    ),
    (
        "lr-growth-small-steps",
        f("lr_too_high", step=0, jump_sigma=0.3),
        f("weight_growth", step=0),
        None,
        False,
    ),
    ("lr-plateau", f("lr_too_high", step=0), f("loss_plateau", step=50), None, True),
    ("lr-underfit", f("lr_too_high", step=0), f("underfitting", step=700), None, True),
    ("lr-saturated", f("lr_too_high", step=400), f("saturated_activations", step=10, layer="2"), None, True),
    ("lr-noisy", f("lr_too_high", step=0, jump_sigma=0.3), f("noisy_batches", step=0), None, True),
    (
        "lr-noisy-slow-creep",
        f("lr_too_high", step=0, rise_window_from_step=0),
        f("noisy_batches", step=0),
        None,
        False,
    ),
    # bad_initialization -> ...
    (
        "init-dead",
        f("bad_initialization", step=0, layer="0"),
        f("dead_relu", "critical", 10, "2"),
        None,
        True,
    ),
    (
        "init-dead-late",
        f("bad_initialization", step=0, layer="0"),
        f("dead_relu", "critical", 600, "2"),
        None,
        False,
    ),
    (
        "init-dead-before-bad-layer",
        f("bad_initialization", step=0, layer="4"),
        f("dead_relu", "critical", 10, "0"),
        None,
        False,
    ),
    (
        "init-vanish",
        f("bad_initialization", step=0, layer="0"),
        f("vanishing_gradients", step=50, layer="0"),
        None,
        True,
    ),
    (
        "init-saturated",
        f("bad_initialization", step=0, layer="0"),
        f("saturated_activations", step=0, layer="2"),
        None,
        True,
    ),
    (
        "init-plateau",
        f("bad_initialization", "critical", 0),
        f("loss_plateau", step=0, kind=NEVER_LEARNED),
        None,
        True,
    ),
    ("init-plateau-late", f("bad_initialization", "critical", 0), f("loss_plateau", step=700), None, False),
    # unnormalized_inputs -> ...
    (
        "inputs-saturated",
        f("unnormalized_inputs", step=0),
        f("saturated_activations", step=30, layer="0"),
        None,
        True,
    ),
    ("inputs-explode", f("unnormalized_inputs", step=0), f("exploding_gradients", step=30), None, True),
    ("inputs-lr", f("unnormalized_inputs", step=0), f("lr_too_high", "critical", 30, **DIVERGED), None, True),
    (
        "inputs-lr-only-big-updates",
        f("unnormalized_inputs", step=0),
        f("lr_too_high", step=30, update_ratio=0.3),
        None,
        False,
    ),
    ("inputs-dead", f("unnormalized_inputs", step=0), f("dead_relu", "critical", 20, "0"), None, True),
    ("inputs-dead-late", f("unnormalized_inputs", step=0), f("dead_relu", "critical", 900, "0"), None, False),
    # unshuffled_data -> ...
    ("order-dead", f("unshuffled_data", step=10), f("dead_relu", "critical", 20, "2"), None, True),
    ("order-noisy", f("unshuffled_data", step=10), f("noisy_batches", step=10), None, True),
    ("order-lr-swings", f("unshuffled_data", step=0), f("lr_too_high", step=500, jump_sigma=0.3), None, True),
    (
        "order-lr-diverged",
        f("unshuffled_data", step=0),
        f("lr_too_high", "critical", 500, **DIVERGED),
        None,
        False,
    ),
    # symptoms of symptoms
    ("explode-nonfinite", f("exploding_gradients", step=200), f("nonfinite", "critical", 210), None, True),
    (
        "explode-lr",
        f("exploding_gradients", step=200),
        f("lr_too_high", "critical", 230, **DIVERGED),
        None,
        True,
    ),
    ("growth-lr-late", f("weight_growth", step=0), f("lr_too_high", "critical", 500, **DIVERGED), None, True),
    (
        "growth-lr-from-the-start",
        f("weight_growth", step=0),
        f("lr_too_high", "critical", 20, **DIVERGED),
        None,
        False,
    ),
    (
        "dead-plateau",
        f("dead_relu", "critical", 20, "2"),
        f("loss_plateau", step=0, kind=NEVER_LEARNED),
        None,
        True,
    ),
    (
        "vanish-early-plateau",  # sat on its plateau from the first logged point: the whole log
        f("vanishing_gradients", step=500),
        f("loss_plateau", step=49, kind=EARLY),
        None,
        True,
    ),
    ("dead-plateau-half-dead", f("dead_relu", "warning", 20, "2"), f("loss_plateau", step=50), None, False),
    ("dead-underfit", f("dead_relu", "critical", 20, "2"), f("underfitting", step=600), None, True),
    (
        "saturated-vanish",
        f("saturated_activations", step=0, layer="0"),
        f("vanishing_gradients", step=400),
        None,
        True,
    ),
    (
        "vanish-plateau",
        f("vanishing_gradients", step=500),
        f("loss_plateau", step=0, kind=NEVER_LEARNED),
        None,
        True,
    ),
    (
        "vanish-plateau-stuck-late",
        f("vanishing_gradients", step=800),
        f("loss_plateau", step=100),
        None,
        False,
    ),
    # real bugs the documents do not name
    ("not-zeroed-explode", f("gradients_not_zeroed", step=0), f("exploding_gradients", step=300), None, True),
    (
        "not-zeroed-explode-came-first",
        f("gradients_not_zeroed", step=600),
        f("exploding_gradients", step=100),
        None,
        False,
    ),
    (
        "not-zeroed-lr-diverged",
        f("gradients_not_zeroed", step=0),
        f("lr_too_high", "critical", 400, **DIVERGED),
        None,
        True,
    ),
    (
        "not-zeroed-lr-only-swings",
        f("gradients_not_zeroed", step=0),
        f("lr_too_high", step=400, jump_sigma=0.3),
        None,
        False,
    ),
    ("not-zeroed-spikes", f("gradients_not_zeroed", step=0), f("loss_spikes", step=200), None, True),
    (
        "not-zeroed-spikes-came-first",
        f("gradients_not_zeroed", step=700),
        f("loss_spikes", step=200),
        None,
        False,
    ),
    (
        "frozen-plateau",
        f("nothing_training", "critical", 0),
        f("loss_plateau", step=0, kind=NEVER_LEARNED),
        None,
        True,
    ),
    (
        "frozen-plateau-stalled-first",
        f("nothing_training", "critical", 600),
        f("loss_plateau", step=100),
        None,
        False,
    ),
    ("frozen-underfit", f("nothing_training", "critical", 0), f("underfitting", step=500), None, True),
    (
        "frozen-underfit-came-first",
        f("nothing_training", "critical", 800),
        f("underfitting", step=100),
        None,
        False,
    ),
    (
        "logits-dead",
        f("activation_on_logits", step=0, layer="4", activation="5", kind="relu"),
        f("dead_relu", "critical", 10, "5"),
        None,
        True,
    ),
    (
        "logits-dead-hidden-layer",
        f("activation_on_logits", step=0, layer="4", activation="5", kind="relu"),
        f("dead_relu", "critical", 10, "1"),
        None,
        False,
    ),
    (
        "logits-plateau-softmax",
        f("activation_on_logits", step=0, layer="4", activation="5", kind="softmax"),
        f("loss_plateau", step=0, kind=NEVER_LEARNED),
        None,
        True,
    ),
    (
        "logits-plateau-relu-mostly-alive",
        f("activation_on_logits", step=0, layer="4", activation="5", kind="relu", dead_output_share=0.1),
        f("loss_plateau", step=0, kind=NEVER_LEARNED),
        None,
        False,
    ),
    (
        "logits-underfit-relu-mostly-dead",
        f("activation_on_logits", "critical", 0, "4", activation="5", kind="relu", dead_output_share=0.8),
        f("underfitting", step=500),
        None,
        True,
    ),
    (
        "logits-underfit-accuracy-held-by-dead-outputs",
        f(
            "activation_on_logits",
            "critical",
            0,
            "4",
            activation="5",
            kind="relu",
            dead_output_share=0.4,
            accuracy_held=True,
        ),
        f("underfitting", step=500),
        None,
        True,
    ),
    (
        "logits-underfit-relu-mostly-alive",
        f("activation_on_logits", step=0, layer="4", activation="5", kind="relu", dead_output_share=0.1),
        f("underfitting", step=500),
        None,
        False,
    ),
    (
        "init-initial-too-large",
        f("bad_initialization", step=0, layers=[{"layer": "4", "direction": "large"}]),
        f("initial_loss_off", step=0),
        None,
        True,
    ),
    (
        "init-initial-too-small",
        f("bad_initialization", step=0, layers=[{"layer": "0", "direction": "small"}]),
        f("initial_loss_off", step=0),
        None,
        False,
    ),
    ("lr-spikes", f("lr_too_high", step=0, jump_sigma=0.3), f("loss_spikes", step=400), None, True),
    (
        "lr-spikes-lr-raised-later",
        f("lr_too_high", step=800),
        f("loss_spikes", step=100),
        run(lr=np.where(STEPS < 700, 0.01, 0.1)),
        False,
    ),
    ("explode-spikes", f("exploding_gradients", step=300), f("loss_spikes", step=300), None, True),
    (
        "explode-spikes-came-after",
        f("exploding_gradients", step=310),
        f("loss_spikes", step=300),
        None,
        False,
    ),
    # ...and where the evidence fails, for the links not covered above.
    ("lr-nonfinite-came-after", f("lr_too_high", step=400), f("nonfinite", "critical", 300), None, False),
    (
        "lr-plateau-lr-raised-later",
        f("lr_too_high", step=800),
        f("loss_plateau", step=100),
        run(lr=np.where(STEPS < 700, 0.01, 0.1)),
        False,
    ),
    (
        "lr-underfit-lr-raised-later",
        f("lr_too_high", step=800),
        f("underfitting", step=300),
        run(lr=np.where(STEPS < 700, 0.01, 0.1)),
        False,
    ),
    (
        "lr-saturated-lr-raised-later",
        f("lr_too_high", step=800),
        f("saturated_activations", step=10),
        run(lr=np.where(STEPS < 700, 0.01, 0.1)),
        False,
    ),
    (
        "init-vanish-late",
        f("bad_initialization", step=0, layer="0"),
        f("vanishing_gradients", step=600),
        None,
        False,
    ),
    (
        "init-saturated-before-bad-layer",
        f("bad_initialization", step=0, layer="4"),
        f("saturated_activations", step=0, layer="0"),
        None,
        False,
    ),
    (
        "inputs-saturated-came-first",
        f("unnormalized_inputs", step=500),
        f("saturated_activations", step=0),
        None,
        False,
    ),
    (
        "inputs-explode-came-first",
        f("unnormalized_inputs", step=500),
        f("exploding_gradients", step=30),
        None,
        False,
    ),
    (
        "order-dead-came-first",
        f("unshuffled_data", step=500),
        f("dead_relu", "critical", 20, "2"),
        None,
        False,
    ),
    ("order-noisy-came-first", f("unshuffled_data", step=500), f("noisy_batches", step=0), None, False),
    (
        "explode-nonfinite-came-after",
        f("exploding_gradients", step=300),
        f("nonfinite", "critical", 210),
        None,
        False,
    ),
    (
        "explode-lr-came-after",
        f("exploding_gradients", step=300),
        f("lr_too_high", "critical", 230, **DIVERGED),
        None,
        False,
    ),
    ("dead-underfit-half-dead", f("dead_relu", "warning", 20, "2"), f("underfitting", step=600), None, False),
    (
        "saturated-vanish-came-after",
        f("saturated_activations", step=900),
        f("vanishing_gradients", step=400),
        None,
        False,
    ),
]


@pytest.mark.parametrize("cause, symptom, r, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_link_holds_only_with_its_evidence(cause, symptom, r, expected):
    assert linked(cause, symptom, r) == (cause.rule if expected else None)


def test_every_link_has_a_case_where_it_holds_and_one_where_it_does_not():
    links = {(link.cause, link.symptom) for link in LINKS}
    assert links <= {(c[1].rule, c[2].rule) for c in CASES if c[4]}
    assert links <= {(c[1].rule, c[2].rule) for c in CASES if not c[4]}


def test_the_links_are_documented():
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[1] / "docs" / "rules.md").read_text(encoding="utf-8")
    for link in LINKS:
        assert f"`{link.cause}` → `{link.symptom}`" in docs and link.why in docs, (link.cause, link.symptom)


def test_two_independent_faults_stay_two_roots():
    """Overfitting and an unnormalized input explain nothing of each other: two roots, two headlines."""
    out = explain([f("overfitting", step=300), f("unnormalized_inputs", step=0)], run())
    assert [x.caused_by for x in out.findings] == [None, None] and out.parents == (None, None)


def test_a_root_is_as_severe_as_the_worst_symptom_it_explains_and_comes_first():
    out = explain(
        [f("dead_relu", "critical", 20, "2"), f("overfitting", step=500), f("lr_too_high", "warning", 10)],
        run(),
    )
    assert [(x.rule, x.severity, x.caused_by) for x in out.findings] == [
        ("lr_too_high", "critical", None),
        ("dead_relu", "critical", "lr_too_high"),
        ("overfitting", "warning", None),
    ]
    assert out.parents == (None, 0, None)


def test_a_chain_hangs_each_symptom_under_its_nearest_cause():
    """unnormalized inputs -> a divergence -> dead units: the dead units hang under the divergence."""
    out = explain(
        [
            f("dead_relu", "critical", 60, "0"),
            f("lr_too_high", "critical", 40, **DIVERGED),
            f("unnormalized_inputs", step=0),
        ],
        run(),
    )
    assert [(x.rule, x.caused_by) for x in out.findings] == [
        ("unnormalized_inputs", None),
        ("lr_too_high", "unnormalized_inputs"),
        ("dead_relu", "lr_too_high"),
    ]
    assert out.parents == (None, 0, 1)


def test_two_findings_that_could_explain_each_other_the_earlier_is_the_cause():
    growth, lr = f("weight_growth", step=0, layer="2"), f("lr_too_high", "critical", 500, **DIVERGED)
    for order in ([growth, lr], [lr, growth]):
        out = explain(order, run())
        assert [(x.rule, x.caused_by) for x in out.findings] == [
            ("weight_growth", None),
            ("lr_too_high", "weight_growth"),
        ]


def test_advice_that_would_treat_only_the_symptom_or_contradict_the_cause_is_dropped():
    lr = f("lr_too_high", "critical", 0, **DIVERGED)
    under = Finding(
        "underfitting", "warning", "u", "m", ("Give the model more capacity: wider layers.",), "s", 700
    )
    dead = Finding(
        "dead_relu",
        "critical",
        "d",
        "m",
        ("Lower the learning rate: one large step can kill a unit.", "Use LeakyReLU(0.01)."),
        "s",
        50,
        "2",
    )
    out = {x.rule: x for x in explain([lr, under, dead], run()).findings}
    assert out["underfitting"].advice == ()
    assert out["dead_relu"].advice == ("Use LeakyReLU(0.01).",)
    assert out["lr_too_high"].advice == lr.advice  # a root keeps all of its own


def test_not_about_the_lr_tells_learning_rate_advice_from_the_rest():
    assert not C.not_about_the_lr("Lower the learning rate (now 0.1): try 0.01.")
    assert not C.not_about_the_lr("Divide the learning rate by 3-10: from 1.5 to about 0.015.")
    assert C.not_about_the_lr("Clip the gradient norm (torch.nn.utils.clip_grad_norm_, max_norm 5-15).")
    assert C.not_about_the_lr("Use LeakyReLU(0.01), PReLU or RReLU.")


def test_diagnosis_lists_roots_and_what_each_explains():
    d = diagnose_run(run())  # a healthy curve: nothing to explain
    assert d.roots == [] and d.findings == ()


def test_a_cause_that_began_before_the_symptom_explains_it_before_one_the_loss_showed_later():
    """Dead units from step 10: an initialization at step 0 explains them, not a learning rate whose
    effect on the loss showed at step 400 (though it was there from the start)."""
    out = explain(
        [
            f("lr_too_high", "critical", 400, **DIVERGED),
            f("bad_initialization", step=0, layer="0"),
            f("dead_relu", "critical", 10, "2"),
        ],
        run(),
    )
    assert {x.rule: x.caused_by for x in out.findings}["dead_relu"] == "bad_initialization"
