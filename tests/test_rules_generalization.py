"""Train-vs-validation rules: overfitting and underfitting, on sparse (per-epoch) validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rules_support import Fires, Quiet, Skips, check

from trainscope.analyzers.findings import Skip
from trainscope.analyzers.reading import read_logdir
from trainscope.analyzers.rules.common import make_run
from trainscope.analyzers.rules.overfitting import check as overfitting
from trainscope.analyzers.rules.synthetic import batch_losses, decay, noisy, steps
from trainscope.analyzers.rules.underfitting import check as underfitting
from trainscope.analyzers.rules.val_metrics import direction
from trainscope.logformat import tags as T

N = 2400
EPOCH = 200  # one validation every 200 steps: 12 validations
S = steps(N)
V = steps(N // EPOCH, EPOCH, start=EPOCH - 1)


def run_of(train_loss, val_loss=None, train_acc=None, val_acc=None, meta=None):
    scalars = {T.TRAIN_LOSS: (S[: train_loss.shape[0]], train_loss)}
    if val_loss is not None:
        scalars[T.VAL_LOSS] = (V[: val_loss.shape[0]], val_loss)
    if train_acc is not None:
        scalars[T.TRAIN_ACC] = (S[: train_acc.shape[0]], train_acc)
    if val_acc is not None:
        scalars[T.VAL_ACC] = (V[: val_acc.shape[0]], val_acc)
    return make_run(scalars, meta)


TRAIN = batch_losses(decay(N, tau=500, floor=0.02), 64)
U_SHAPE = np.array([1.6, 0.9, 0.6, 0.45, 0.41, 0.43, 0.47, 0.5, 0.55, 0.6, 0.66, 0.72])  # min 0.41 at epoch 5
FALLING_VAL = noisy(decay(N, tau=500, floor=0.08)[V], 0.03, seed=2)
# A fine-tune under a decaying lr: the eval loss wobbles +-10% between evaluations early on
# (wobble 0.05), bottoms out, then climbs ~12% and holds there as the lr runs out. The line
# through it ends under 3 standard errors of that wobble; each of the last 4 stands above.
HELD_UP = np.array([0.70, 0.55, 0.60, 0.50, 0.66, 0.57, 0.53, 0.60, 0.62, 0.625, 0.63, 0.62])
# The same bump, coming back down over the last 4 validations: not overfitting.
BACK_DOWN = np.array([0.70, 0.55, 0.60, 0.50, 0.66, 0.57, 0.53, 0.60, 0.66, 0.65, 0.63, 0.62])
RISING_ACC = np.linspace(0.80, 0.90, 12)  # val accuracy still improving while the loss rises


def _acc_gap():
    train_acc = np.clip(
        1 - decay(N, start=0.9, floor=0.0, tau=300) + np.random.default_rng(0).normal(0, 0.02, N), 0, 1
    )
    val_acc = np.array([0.4, 0.6, 0.7, 0.76, 0.78, 0.79, 0.785, 0.79, 0.78, 0.785, 0.78, 0.78])
    return train_acc, val_acc


OVERFIT_CASES = [
    pytest.param(
        run_of(TRAIN, U_SHAPE),
        Fires(
            "warning",
            step=(999, 999),
            says=(
                "loss rose 76% from its minimum 0.41 at step 999",
                "7 validations later",
                "train loss fell",
            ),
        ),
        id="val-loss-u-shape",
    ),
    pytest.param(
        run_of(TRAIN, train_acc=_acc_gap()[0], val_acc=_acc_gap()[1]),
        Fires(
            "warning",
            says=("accuracy is 22 points above val accuracy", "has not improved since its best 79%"),
        ),
        id="accuracy-gap-grows-after-val-converged",
    ),
    pytest.param(run_of(TRAIN, FALLING_VAL), Quiet(), id="val-keeps-falling"),
    pytest.param(run_of(TRAIN, noisy(np.full(12, 0.4), 0.04, seed=5)), Quiet(), id="val-flat-and-noisy"),
    pytest.param(
        run_of(noisy(np.linspace(0.5, 3.0, N), 0.05), U_SHAPE),
        Quiet(),
        id="train-rises-too-is-divergence-not-overfitting",
    ),
    pytest.param(
        run_of(TRAIN, HELD_UP),
        Fires(
            "warning",
            step=(799, 799),
            says=("rose 25% from its minimum 0.5 at step 799", "each of the last 4 validations (0.62-0.63)"),
            evidence={"route": "held", "held_evals": 4},
        ),
        id="val-loss-held-up-under-3-standard-errors-of-its-wobble",
    ),
    pytest.param(run_of(TRAIN, BACK_DOWN), Quiet(), id="val-loss-bump-coming-back-down"),
    pytest.param(
        run_of(TRAIN, U_SHAPE, val_acc=RISING_ACC),
        Fires("warning", says=("val accuracy still improves (83.6% at step 999, 89.1%",)),
        id="val-accuracy-still-improves-is-said",
    ),
    pytest.param(run_of(TRAIN, U_SHAPE[:3]), Quiet(), id="three-falling-validations"),
    pytest.param(
        run_of(TRAIN, U_SHAPE[:2]),
        Skips("too few validations to judge: 2 of the 3 needed"),
        id="two-validations-on-a-finished-run",
    ),
    pytest.param(
        run_of(TRAIN, U_SHAPE[:2], meta={"status": "running"}),
        Skips("not enough data yet: 2 of 3 validations"),
        id="two-validations-while-live",
    ),
    pytest.param(run_of(TRAIN), Skips("needs val/loss"), id="no-validation"),
]


@pytest.mark.parametrize("run, expect", OVERFIT_CASES)
def test_overfitting(run, expect):
    check(overfitting, run, expect)


def test_overfitting_names_the_step_to_stop_at():
    (f,) = overfitting(run_of(TRAIN, U_SHAPE))
    assert "checkpoint of step 999" in f.advice[0]
    assert f.evidence["best_step"] == 999 and f.evidence["best_val_loss"] == pytest.approx(0.41)
    # A steady climb since the minimum: "now" is the last validation, 0.72.
    assert f.evidence["rise"] == pytest.approx(0.72 / 0.41 - 1, rel=0.05)


def test_overfitting_advice_picks_the_checkpoint_by_the_metric_that_still_improves():
    (f,) = overfitting(run_of(TRAIN, U_SHAPE, val_acc=RISING_ACC))
    assert "val accuracy still improves" in f.title and f.title.startswith("Overfitting since step 999")
    assert f.advice[0].startswith("Keep the checkpoint with the best val accuracy")
    assert f.evidence["metric_still_improving"] == "accuracy"
    (flat,) = overfitting(run_of(TRAIN, U_SHAPE, val_acc=np.full(12, 0.85)))
    assert "still improves" not in flat.message and flat.advice[0].startswith("Stop at")
    # Better than at the loss's minimum, but its best lies 6 validations back: converged, not improving.
    peaked = np.array([0.80, 0.82, 0.84, 0.85, 0.86, 0.88, 0.875, 0.878, 0.876, 0.877, 0.876, 0.877])
    (converged,) = overfitting(run_of(TRAIN, U_SHAPE, val_acc=peaked))
    assert "still improves" not in converged.message


def _trainer_state(tmp_path, eval_loss, wer):
    """A Hugging Face trainer_state.json: a loss every 25 steps, an evaluation every 1,000 with WER."""
    history = [{"step": s, "loss": float(v)} for s, v in zip(range(25, 5001, 25), decay(200, 0.9, 0.001, 30))]
    history += [
        {"step": 1000 * (i + 1), "eval_loss": loss, "eval_wer": w, "eval_runtime": 60.0}
        for i, (loss, w) in enumerate(zip(eval_loss, wer))
    ]
    history.sort(key=lambda e: e["step"])
    history.append({"step": 5000, "train_runtime": 900.0, "train_loss": 0.1})
    (tmp_path / "trainer_state.json").write_text(json.dumps({"global_step": 5000, "log_history": history}))
    return read_logdir(tmp_path).runs["."]


def test_overfitting_reads_an_unmapped_val_metric_and_its_direction(tmp_path):
    """The eval loss climbs from its first evaluation while the word error rate still falls."""
    run = _trainer_state(tmp_path, [0.31, 0.36, 0.40, 0.44, 0.47], [34.6, 33.9, 33.0, 32.4, 32.1])
    (f,) = overfitting(run)
    assert "val `wer` still improves (34.6 at step 1,000, 32.4" in f.message, f.message
    assert f.advice[0].startswith("Keep the checkpoint with the best val `wer`")
    # A WER that rose with the loss is no excuse: lower is better.
    (worse,) = overfitting(_trainer_state(tmp_path, [0.31, 0.36, 0.40, 0.44, 0.47], [34.6, 35, 36, 37, 38]))
    assert "still improves" not in worse.message


@pytest.mark.parametrize(
    "name, better",
    [
        ("wer", False),
        ("accuracy", True),
        ("overall_f1", True),
        ("f1_macro", True),
        ("matthews_correlation", True),
        ("rougeLsum", True),
        ("perplexity", False),
        ("runtime", None),
        ("samples_per_second", None),
        ("T005_f1", None),  # one entity's F1, not the model's
    ],
)
def test_val_metric_direction(name, better):
    assert direction(name) is better


def test_the_held_route_stays_rare_on_flat_noisy_val_curves():
    """Healthy runs on a tiny eval set: 40 validations bottom out and wobble 20% around their floor."""
    rng = np.random.default_rng(11)
    every = steps(40, N // 40, start=N // 40 - 1)
    fired = 0
    for _ in range(100):
        val = (0.3 + np.exp(-every / 300)) * rng.lognormal(0.0, 0.2, every.shape[0])
        try:
            fired += bool(list(overfitting(make_run({T.TRAIN_LOSS: (S, TRAIN), T.VAL_LOSS: (every, val)}))))
        except Skip:
            pass
    assert fired <= 4, fired  # 10%+ above the minimum alone, without the 1-sigma wobble guard: 8


def test_overfitting_accepts_percent_accuracies():
    train_acc, val_acc = _acc_gap()
    check(overfitting, run_of(TRAIN, train_acc=100 * train_acc, val_acc=100 * val_acc), Fires("warning"))


# --- underfitting ------------------------------------------------------------------------

C10 = {"hparams": {"num_classes": 10}, "status": "finished"}


def _poor(train_level=0.55, val_level=0.52, loss_floor=1.3):
    rng = np.random.default_rng(1)
    loss = noisy(decay(N, start=2.3, floor=loss_floor, tau=300), 0.05)
    acc = np.clip(train_level - (train_level - 0.1) * np.exp(-S / 300) + rng.normal(0, 0.03, N), 0, 1)
    val_acc = val_level - (val_level - 0.1) * np.exp(-V / 300)
    val_loss = decay(N, start=2.3, floor=loss_floor * 1.03, tau=300)[V]
    return loss, val_loss, acc, val_acc


UNDERFIT_CASES = [
    pytest.param(
        run_of(*_poor(), meta=C10),
        Fires(
            "warning", says=("accuracy 55% and val accuracy 52% (chance 10%)", "both low", "3.0 points apart")
        ),
        id="both-poor-and-close",
    ),
    pytest.param(
        run_of(_poor()[0], _poor()[1], meta=C10),
        Fires("warning", says=("of the chance level ln 10 = 2.3",)),
        id="loss-route-without-accuracy",
    ),
    pytest.param(run_of(*_poor(0.99, 0.97, 0.03), meta=C10), Quiet(), id="healthy-accuracy"),
    pytest.param(
        run_of(*_poor(0.40, 0.38)),
        Fires("warning", says=("(number of classes unknown)",)),
        id="classes-unknown-below-half-is-poor",
    ),
    # 63% of 7 emotions can be a decent model; without the number of classes it is not "poor".
    pytest.param(run_of(*_poor(0.63, 0.60)), Quiet(), id="classes-unknown-63-percent-is-not-judged-poor"),
    pytest.param(run_of(*_poor(0.55, 0.35), meta=C10), Quiet(), id="poor-but-far-apart-is-not-underfitting"),
    pytest.param(
        run_of(
            noisy(decay(N, tau=3000), 0.05),
            decay(N, tau=3000)[V] * 1.02,
            np.clip(1 - decay(N, tau=3000) / 2.4, 0, 1),
            1 - decay(N, tau=3000)[V] / 2.4,
            meta=C10,
        ),
        Quiet(),
        id="still-improving-fast",
    ),
    pytest.param(
        run_of(noisy(np.full(N, 2.3), 0.02), np.full(12, 2.3), np.full(N, 0.1), np.full(12, 0.1), meta=C10),
        Quiet(),
        id="never-learned-is-loss-plateaus-case",
    ),
    pytest.param(run_of(_poor()[0], _poor()[1]), Skips("number of classes"), id="no-accuracy-no-classes"),
    pytest.param(
        run_of(_poor()[0][:50], _poor()[1], meta={**C10, "status": "running"}),
        Skips("not enough data yet: 50 of 100"),
        id="live-too-short",
    ),
    pytest.param(run_of(_poor()[0], meta=C10), Skips("needs val/loss or val/acc"), id="no-validation"),
]


@pytest.mark.parametrize("run, expect", UNDERFIT_CASES)
def test_underfitting(run, expect):
    check(underfitting, run, expect)
