"""Which series is the training loss when several claim it, or when none is named so."""

from __future__ import annotations

import numpy as np
import pytest
from reading_helpers import scalar_events, write_events

from trainscope.analyzers.reading import read_logdir
from trainscope.analyzers.reading.train_loss import choose_train_loss
from trainscope.analyzers.run import Series
from trainscope.logformat import tags as T


def _series(steps, scale: float = 1.0) -> Series:
    steps = np.asarray(list(steps), dtype=np.int64)
    return Series(steps, scale / (1.0 + steps), None)


EVERY_STEP = range(100)
EVERY_10 = range(0, 100, 10)


@pytest.mark.parametrize(
    "series, origin",
    [
        # a whole-loss name: totals first, then means, then the rest; ties: more points
        ({"total_loss": EVERY_STEP, "recon_loss": EVERY_STEP}, "total_loss"),
        ({"loss_total": EVERY_STEP}, "loss_total"),
        ({"mean_loss": EVERY_STEP, "avg_loss": EVERY_10}, "mean_loss"),
        ({"avg_loss": EVERY_10}, "avg_loss"),
        ({"epoch_train_loss": EVERY_10, "total_loss": EVERY_10}, "total_loss"),
        ({"totalLoss": EVERY_STEP}, "totalLoss"),
        ({"mean_loss_epoch": EVERY_10, "mean_loss_step": EVERY_STEP}, "mean_loss_step"),
        # terms on the same steps and no total: their sum
        ({"recon_loss": EVERY_STEP, "kl_loss": EVERY_STEP}, "sum(kl_loss, recon_loss)"),
        # Lightning's _step and _epoch copies of each term: the group with more points
        (
            {
                "a_loss_step": EVERY_STEP,
                "b_loss_step": EVERY_STEP,
                "a_loss_epoch": EVERY_10,
                "b_loss_epoch": EVERY_10,
            },
            "sum(a_loss_step, b_loss_step)",
        ),
        # a single term is the loss
        ({"mse_loss": EVERY_STEP, "val_mse_loss": EVERY_10}, "mse_loss"),
        # never a validation or test series
        ({"val_total_loss": EVERY_10, "test_loss": EVERY_10}, None),
        ({"eval/mean_loss": EVERY_10}, None),
        # terms on different steps cannot be added; an adversarial pair is not a total
        ({"recon_loss": EVERY_STEP, "kl_loss": EVERY_10}, None),
        ({"g_loss": EVERY_STEP, "d_loss": EVERY_STEP}, None),
        ({"accuracy_top5": EVERY_STEP, "lossless_ratio": EVERY_STEP}, None),
    ],
)
def test_choose_train_loss(series, origin):
    unmapped = {name: _series(steps, 1.0 + i) for i, (name, steps) in enumerate(series.items())}
    picked = choose_train_loss(unmapped)
    assert (picked[0] if picked else None) == origin
    if picked and picked[0].startswith("sum("):
        parts = [unmapped[n] for n in picked[0][4:-1].split(", ")]
        np.testing.assert_allclose(picked[1].values, sum(p.values for p in parts))


def test_a_run_without_a_named_training_loss_gets_the_sum_of_its_terms(tmp_path):
    write_events(
        tmp_path,
        scalar_events(
            {s: {"recon_loss": 1.0 / (s + 1), "kl_loss": 0.1, "val_recon_loss": 2.0} for s in range(20)}
        ),
    )
    run = read_logdir(tmp_path).runs["."]
    assert run.tag_origins[T.TRAIN_LOSS] == "sum(kl_loss, recon_loss)"
    np.testing.assert_allclose(
        run.scalars[T.TRAIN_LOSS].values, [1.0 / (s + 1) + 0.1 for s in range(20)], rtol=1e-6
    )
    assert {"recon_loss", "kl_loss", "val_recon_loss"} <= set(run.unmapped)  # the terms stay visible
    assert run.scalars[T.TRAIN_LOSS].wall_times is not None


def test_a_named_training_loss_is_never_replaced(tmp_path):
    write_events(tmp_path, scalar_events({s: {"loss": 1.0, "total_loss": 2.0} for s in range(5)}))
    run = read_logdir(tmp_path).runs["."]
    assert run.tag_origins[T.TRAIN_LOSS] == "loss" and "total_loss" in run.unmapped


def test_a_csv_log_whose_loss_is_a_mean(tmp_path):
    (tmp_path / "history.csv").write_text("epoch,mean_loss,val_loss\n0,1.0,1.1\n1,0.8,0.9\n")
    run = read_logdir(tmp_path).runs["history.csv"]
    assert run.tag_origins[T.TRAIN_LOSS] == "mean_loss" and "mean_loss" not in run.unmapped
    assert run.x_axis(T.TRAIN_LOSS) == "epoch"


@pytest.mark.parametrize(
    "step_every, epoch_every, origin",
    [
        # one batch per epoch: the per-epoch series has 50x the points of the per-step one
        (50, 1, "train_loss_epoch"),
        # the usual case: the per-step series has the points
        (5, 20, "train_loss_step"),
        # a little more is not clearly more: the preferred rule stands
        (10, 6, "train_loss_step"),
    ],
)
def test_of_two_series_on_one_axis_the_one_with_clearly_more_points(
    tmp_path, step_every, epoch_every, origin
):
    """Lightning's self.log("train_loss", on_step=True, on_epoch=True) with log_every_n_steps."""
    values: dict[int, dict[str, float]] = {}
    for s in range(400):
        if s % step_every == step_every - 1:
            values.setdefault(s, {})["train_loss_step"] = 1.0
        if s % epoch_every == epoch_every - 1:
            values.setdefault(s, {})["train_loss_epoch"] = 2.0
    write_events(tmp_path, scalar_events(dict(sorted(values.items()))))
    run = read_logdir(tmp_path).runs["."]
    assert run.tag_origins[T.TRAIN_LOSS] == origin
    loser = ({"train_loss_step", "train_loss_epoch"} - {origin}).pop()
    assert loser in run.unmapped


def test_a_user_rule_wins_even_with_fewer_points(tmp_path):
    from trainscope.analyzers.reading import TagRule

    write_events(
        tmp_path,
        scalar_events(
            {s: {"objective": 1.0, **({"loss": 2.0} if s else {})} for s in range(50)}
            | {s: {"loss": 2.0} for s in range(50, 400)}
        ),
    )
    snapshot = read_logdir(tmp_path, extra_rules=[TagRule("objective", T.TRAIN_LOSS)])
    assert snapshot.runs["."].tag_origins[T.TRAIN_LOSS] == "objective"
