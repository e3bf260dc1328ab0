"""The logs people actually have: short, sparse, ended runs judged against their own scatter.

Hugging Face logs every 500 steps (5-60 points), epoch logs hold 10-200 points, and a
run that has ended must get a verdict when its curve shows a fault: "not enough data
yet" is for runs still being written. Each case is a hand-made series shaped like a
kind of real log (a fine-tune whose loss rises with the warm-up, a model that never
learned, a plateau that fills most of the run, a validation curve that climbs over four
epochs), next to the healthy curve it must not be confused with.
"""

from __future__ import annotations

import numpy as np
import pytest
from rules_support import Fires, Quiet, Skips, check

from trainscope.analyzers import facts
from trainscope.analyzers.rules import curves
from trainscope.analyzers.rules.common import make_run
from trainscope.analyzers.rules.loss_plateau import check as loss_plateau
from trainscope.analyzers.rules.lr_too_high import check as lr_too_high
from trainscope.analyzers.rules.lr_too_low import check as lr_too_low
from trainscope.analyzers.rules.overfitting import check as overfitting
from trainscope.analyzers.rules.synthetic import decay, noisy, steps
from trainscope.analyzers.run import Series
from trainscope.logformat import tags as T

LIVE = {"status": "running"}


def run(loss, every=1, lr=None, meta=None, **extra):
    """A run with `loss` logged every `every` steps, `lr` on the same steps, and `extra` {tag: (steps,
    values)}, a tag's slashes written as double underscores."""
    loss = np.asarray(loss, dtype=float)
    at = steps(loss.shape[0], every, start=every)
    scalars = {T.TRAIN_LOSS: (at, loss)}
    if lr is not None:
        scalars[T.LR] = (at, np.asarray(lr, dtype=float))
    scalars.update({tag.replace("__", "/"): value for tag, value in extra.items()})
    return make_run(scalars, meta)


# --- the run facts: live or ended -----------------------------------------------------------


def _walls(seconds_ago: float) -> Series:
    now = 1.9e9
    return Series(np.arange(3), np.ones(3), np.full(3, now - seconds_ago))


@pytest.mark.parametrize(
    "meta, series, live",
    [
        ({"status": "running"}, None, True),
        ({"status": "finished"}, None, False),
        ({"status": "crashed"}, None, False),
        ({}, None, False),  # no status, no wall times: judged as it stands
        ({}, _walls(60), True),  # written a minute ago
        ({}, _walls(3 * 3600), False),  # nothing for hours: over
    ],
)
def test_a_run_is_live_only_while_it_may_still_grow(meta, series, live):
    scalars = {T.TRAIN_LOSS: series} if series is not None else {}
    r = make_run(scalars, meta)
    assert facts.is_live(r, now=1.9e9) is live


# --- the start of a curve, and its scatter ---------------------------------------------------


def test_the_start_is_the_first_point_after_a_steep_drop_and_a_median_otherwise():
    steep = np.concatenate(([0.85, 0.3, 0.045], np.full(147, 1e-4)))
    assert curves.start_level(steep, curves.noise_sigma(steep)) == 0.85
    flat = noisy(np.full(2000, 2.0), 0.3, seed=1)
    flat[0] = 3.5  # one unlucky first batch, within the scatter
    start = curves.start_level(flat, curves.noise_sigma(flat))
    assert 1.8 < start < 2.3


def test_noise_is_the_scatter_around_a_trend_not_the_trend():
    rng = np.random.default_rng(0)
    line = np.linspace(10.0, 1.0, 500) + rng.normal(0, 0.2, 500)
    assert curves.noise_sigma(line) == pytest.approx(0.2, rel=0.2)
    assert np.isnan(curves.noise_sigma(np.array([1.0, 2.0, 3.0])))


# --- lr_too_high -----------------------------------------------------------------------------


def _warmup_finetune(rescued=False, recovers=False):
    """A fine-tune logged every 25 steps: the loss dips to ~0.12, then climbs as the lr warms up to its
    peak and stays up there (recovers: comes back once the lr stops rising; rescued: only as a decay
    brings the lr down)."""
    n = 60
    s = np.arange(1, n + 1) * 25
    lr = np.minimum(s / 500, 1.0) * 1e-4
    loss = np.where(s < 100, 0.8 - 0.68 * s / 100, 0.12 + 0.2 * np.clip((s - 100) / 450, 0, 1))
    if recovers:
        loss = np.where(s > 1000, 0.125, loss)
    if rescued:
        lr = np.where(s > 1000, lr * np.clip(1 - (s - 1000) / 500, 0.05, 1), lr)
        loss = np.where(s > 1300, 0.125, loss)
    return noisy(loss, 0.03, seed=3), lr


LR_HIGH_CASES = [
    pytest.param(
        run([1.24, 2.03, 2.16, 1.99, 1.79], every=500),
        Fires("critical", says=("where it started",)),
        id="five-points-that-climbed-and-stayed-up",
    ),
    pytest.param(
        run(_warmup_finetune()[0], every=25, lr=_warmup_finetune()[1]),
        Fires("warning", says=("as the learning rate rose from", "stayed above", "steps at that rate")),
        id="loss-rose-with-the-warm-up-and-stayed-up-at-the-peak",
    ),
    pytest.param(
        run(_warmup_finetune(recovers=True)[0], every=25, lr=_warmup_finetune(recovers=True)[1]),
        Fires("info", says=("came back down to", "once the rate stopped rising")),
        id="loss-rose-with-the-warm-up-then-recovered-at-the-peak",
    ),
    pytest.param(
        run(_warmup_finetune(rescued=True)[0], every=25, lr=_warmup_finetune(rescued=True)[1]),
        Fires("warning", says=("only once the schedule had lowered the rate",)),
        id="loss-came-back-only-as-the-schedule-lowered-the-lr",
    ),
    pytest.param(
        run(noisy(decay(60, start=2.3, floor=0.4), 0.03), lr=np.minimum(np.arange(60) / 10, 1) * 1e-3),
        Quiet(),
        id="healthy-warm-up-loss-falls",
    ),
    pytest.param(
        run(np.concatenate(([0.85, 0.3, 0.045, 0.01], np.full(146, 0.0)))),
        Quiet(),
        id="steep-drop-to-zero-is-not-a-blow-up",
    ),
    pytest.param(
        run(
            np.concatenate(
                (
                    noisy(decay(300, start=2.6, floor=0.7), 0.3, seed=5),
                    [0.1] * 5,
                    noisy(np.full(145, 0.7), 0.3),
                )
            )
        ),
        Quiet(),
        id="a-lucky-low-stretch-is-no-best-to-diverge-from",
    ),
]


@pytest.mark.parametrize("r, expect", LR_HIGH_CASES)
def test_lr_too_high_on_sparse_logs(r, expect):
    check(lr_too_high, r, expect)


def test_a_loss_recovering_from_a_warm_up_rise_is_not_a_low_lr():
    check(lr_too_low, run(_warmup_finetune()[0], every=25, lr=_warmup_finetune()[1]), Quiet())


# --- loss_plateau ----------------------------------------------------------------------------


def _noisy_probe():
    """28 logs of a model that does not learn: the loss jumps around above its first value, the
    accuracy of each batch of 16 drifts down from its first."""
    rng = np.random.default_rng(7)
    loss = np.concatenate(([2.35], 2.95 + rng.normal(0, 0.4, 27)))
    acc = np.concatenate(([0.375], np.clip(np.linspace(0.15, 0.09, 27) + rng.normal(0, 0.03, 27), 0, 1)))
    return loss, acc


PLATEAU_CASES = [
    pytest.param(
        run(_noisy_probe()[0], every=50, train__acc=(steps(28, 50, start=50), _noisy_probe()[1])),
        Fires("warning", says=("has not come down", "the training accuracy did not rise either")),
        id="noisy-probe-loss-and-accuracy-never-improved",
    ),
    pytest.param(run(_noisy_probe()[0], every=50), Quiet(), id="the-same-loss-alone-is-too-noisy-to-tell"),
    pytest.param(
        run(
            np.concatenate((decay(18, start=54, floor=14, tau=4), noisy(np.full(342, 14.0), 0.25, seed=2))),
            every=50,
        ),
        Fires("warning", says=("has not improved since", "of the run")),
        id="fell-early-then-flat-for-most-of-the-run",
    ),
    pytest.param(
        run(noisy(decay(40, start=2056, floor=450, tau=12), 0.01)), Quiet(), id="sparse-exponential-decay"
    ),
    pytest.param(
        run(
            noisy(np.concatenate((np.linspace(0.69, 0.40, 7), np.linspace(0.40, 0.33, 11))), 0.08, seed=4),
            every=20,
        ),
        Quiet(),
        id="short-noisy-still-falling",
    ),
    pytest.param(run(np.linspace(4.63, 3.97, 8), every=500), Quiet(), id="eight-points-falling-slowly"),
    pytest.param(
        run(np.concatenate((noisy(np.full(300, 2.0), 0.05), [np.nan] * 5))),
        Skips("ends NaN/Inf"),
        id="ends-nan-is-nonfinites-case",
    ),
    pytest.param(
        run(noisy(np.full(120, 2.0), 0.05), meta=LIVE), Skips("not enough data yet: 120 of 200"), id="live"
    ),
]


@pytest.mark.parametrize("r, expect", PLATEAU_CASES)
def test_loss_plateau_on_sparse_logs(r, expect):
    check(loss_plateau, r, expect)


# --- overfitting -----------------------------------------------------------------------------


def _train_falling(n=400):
    return noisy(decay(n, start=1.0, floor=0.4, tau=150), 0.02)


OVERFIT_CASES = [
    pytest.param(
        run(
            _train_falling(),
            val__loss=(np.array([99, 199, 299, 399]), np.array([2.150, 2.188, 2.264, 2.385])),
        ),
        Fires("warning", says=("rose 11% from its minimum 2.15",)),
        id="four-epochs-climbing-steadily",
    ),
    pytest.param(
        run(
            _train_falling(),
            val__loss=(
                steps(15, 25, start=24),
                np.array(
                    [
                        0.27,
                        0.26,
                        0.25,
                        0.24,
                        0.245,
                        0.25,
                        0.23,
                        0.25,
                        0.23,
                        0.27,
                        0.22,
                        0.209,
                        0.22,
                        0.25,
                        0.239,
                    ]
                ),
            ),
        ),
        Quiet(),
        id="flat-noisy-band-is-not-a-rise",
    ),
    pytest.param(
        run(
            _train_falling(),
            val__loss=(
                steps(10, 40, start=39),
                np.array([0.11, 0.07, 0.024, 0.015, 0.0099, 0.011, 0.0078, 0.0095, 0.008, 0.0105]),
            ),
        ),
        Quiet(),
        id="tiny-values-near-zero-are-no-trend",
    ),
]


@pytest.mark.parametrize("r, expect", OVERFIT_CASES)
def test_overfitting_on_sparse_logs(r, expect):
    check(overfitting, r, expect)


# --- nonfinite on losses logged under other names ---------------------------------------------


def test_a_nan_in_a_term_of_the_loss_is_a_nan_in_the_objective():
    """A physics-informed model logs its loss terms beside the total; a NaN in a term is the run's NaN.
    A NaN in a held-out series is not a training NaN."""
    from dataclasses import replace

    from trainscope.analyzers.rules.nonfinite import check as nonfinite

    base = run(decay(200, start=2.0, floor=0.3))
    term = Series.from_lists(np.arange(200), np.where(np.arange(200) >= 150, np.nan, 0.1))
    (found,) = nonfinite(replace(base, unmapped={"dynamics_loss_step": term}))
    assert found.severity == "critical" and found.step == 150 and "dynamics_loss_step" in found.message
    assert nonfinite(replace(base, unmapped={"test_loss": term})) == []


def test_each_named_eval_set_is_a_validation_curve_of_its_own():
    """HF runs evaluated on several sets log eval_<set>_loss, read as val/loss/<set>: each is judged."""
    evals = np.array([99, 199, 299, 399])
    rising = np.array([2.150, 2.188, 2.264, 2.385])
    falling = np.array([2.2, 2.0, 1.9, 1.85])
    r = run(
        _train_falling(),
        val__loss__clean=(evals, falling),
        val__loss__noisy=(evals, rising),
    )
    (found,) = overfitting(r)
    assert "Val loss on eval set `noisy` rose 11%" in found.message and found.evidence["eval_set"] == "noisy"
    assert overfitting(run(_train_falling(), val__loss__clean=(evals, falling))) == []


def test_advice_moves_the_peak_learning_rate_of_a_schedule_not_its_decayed_tail():
    """A divergence found after the schedule decayed the lr: "divide 2.5e-4" would be no advice at all."""
    lr = np.array([1.5e-3, 3e-3, 2e-3, 1.2e-3, 2.5e-4])
    (found,) = lr_too_high(run([1.24, 2.03, 2.16, 1.99, 1.79], every=500, lr=lr))
    assert found.advice[0].startswith("Divide the peak learning rate by 3-10: from 0.003 to about 3e-4")
    (found,) = lr_too_high(run([1.24, 2.03, 2.16, 1.99, 1.79], every=500, lr=np.full(5, 3e-3)))
    assert found.advice[0].startswith("Divide the learning rate by 3-10: from 0.003")


def test_five_points_that_blow_up_sixtyfold_are_a_divergence():
    (found,) = lr_too_high(run([2.3, 2.1, 5.0, 40.0, 145.0], every=10))
    assert found.severity == "critical" and "where it started" in found.message


# --- a network killed by its first steps, without a blow-up ------------------------------------


def _wrecked_early(loss_after=2.31, growth=1400.0):
    """What a digits MLP at SGD lr 1.5 (momentum 0.9) records: updates of 6-300% of the weights in the
    first steps, weight norms 1,000x up by step 20, then a loss at ln 10 for the rest of the run."""
    s = steps(45, 10)
    ratios = np.where(s <= 20, [0.06, 0.7, 0.06] + [0.0] * 42, 0.008)[: s.shape[0]]
    norms = np.where(s == 0, 6.5, 6.5 * growth)
    n = 450
    loss = np.concatenate(([2.31, 2.2, 2.18, 1.5, 2.1], noisy(np.full(n - 5, loss_after), 0.02)))
    extra = {}
    for layer in ("0", "2", "4"):
        extra[f"update__ratio__{layer}"] = (s, ratios)
        extra[f"weight__norm__{layer}"] = (s, norms)
    return run(loss, meta={"hparams": {"num_classes": 10, "lr": 1.5}}, **extra)


def test_a_network_wrecked_in_its_first_steps_is_a_learning_rate_far_too_high():
    (found,) = lr_too_high(_wrecked_early())
    assert found.severity == "critical"
    assert "the chance level ln 10 = 2.3, though it never blew up" in found.message
    assert found.evidence["early_update_ratio"] >= 0.1 and found.evidence["weight_growth"] > 1000
    assert "from 1.5 to about" in found.advice[0]
    # Weights that grew but a loss that then learned: no verdict of this kind.
    assert all("never blew up" not in f.message for f in lr_too_high(_wrecked_early(loss_after=0.5)))
