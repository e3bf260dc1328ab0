"""Train-vs-validation rules: overfitting and underfitting, on sparse (per-epoch) validation."""

from __future__ import annotations

import numpy as np
import pytest
from rules_support import Fires, Quiet, Skips, check

from trainscope.analyzers.rules.common import make_run
from trainscope.analyzers.rules.overfitting import check as overfitting
from trainscope.analyzers.rules.synthetic import batch_losses, decay, noisy, steps
from trainscope.analyzers.rules.underfitting import check as underfitting
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
    pytest.param(run_of(TRAIN, U_SHAPE[:3]), Quiet(), id="three-falling-validations"),
    pytest.param(
        run_of(TRAIN, U_SHAPE[:2]), Skips("not enough data yet: 2 of 3 validations"), id="two-validations"
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
