"""The shared helpers: robust smoothing/trends (`robust`) and wording/run.json facts (`common`)."""

from __future__ import annotations

import numpy as np
import pytest

from trainscope.analyzers import facts as F
from trainscope.analyzers.findings import Skip
from trainscope.analyzers.rules import common as C
from trainscope.analyzers.rules import robust as R
from trainscope.analyzers.run import Series


def test_binned_keeps_the_newest_point_in_a_full_last_bin_and_drops_nothing():
    steps = np.arange(103)
    curve = R.binned(steps, steps.astype(float), max_bins=10)
    assert curve.bin_size == 11 and len(curve) == 10  # a short first bin of 4, then 9 full bins
    assert curve.steps[0] == 0 and curve.steps[1] == 4 and curve.steps[-1] == 92
    assert curve.values[-1] == np.median(np.arange(92, 103))


def test_binned_median_ignores_outliers_and_max_keeps_them():
    values = np.ones(100)
    values[[5, 50]] = 1e6
    assert R.binned(np.arange(100), values, 10).values.max() == 1.0
    assert R.binned(np.arange(100), values, 10, reduce="max").values.max() == 1e6


def test_binned_samples_long_bins_for_speed_but_stays_a_median():
    values = np.random.default_rng(0).normal(5.0, 1.0, 1_000_000)
    curve = R.binned(np.arange(values.shape[0]), values, max_bins=100)
    # 256 evenly strided points per bin: the standard error of each median is ~0.08.
    assert np.allclose(curve.values, 5.0, atol=0.4) and abs(curve.values.mean() - 5.0) < 0.03


def test_trailing_median_excludes_the_point_itself():
    out = R.trailing_median(np.array([1.0, 1.0, 1.0, 100.0, 1.0]), window=3)
    assert np.isnan(out[0]) and out[3] == 1.0 and out[4] == 1.0


@pytest.mark.parametrize(
    "values, n, expected",
    [(np.arange(10.0), 2, [2.0, 7.0]), (np.arange(11.0), 2, [3.0, 8.0]), (np.arange(3.0), 5, [])],
)
def test_chunk_medians_uses_the_latest_points(values, n, expected):
    assert list(R.chunk_medians(values, n)) == expected


def test_robust_sigma_matches_the_std_of_gaussian_noise_and_ignores_outliers():
    x = np.random.default_rng(1).normal(0, 2.0, 10_000)
    x[:100] = 1e9
    assert R.robust_sigma(x) == pytest.approx(2.0, rel=0.05)


def test_segment_medians_put_a_per_step_signal_beside_sparse_validation():
    steps = np.arange(10)
    values = np.arange(10.0)
    assert list(R.segment_medians(steps, values, np.array([3, 9]))) == [1.5, 6.5]
    partial = R.segment_medians(steps, values, np.array([3, 9]), which=np.array([1]))
    assert np.isnan(partial[0]) and partial[1] == 6.5


def test_value_at_and_state_at_look_up_the_latest_value():
    steps = np.array([0, 10, 20])
    assert list(R.value_at(steps, np.array([1.0, 2.0, 3.0]), np.array([-1, 0, 15, 99])))[1:] == [
        1.0,
        2.0,
        3.0,
    ]
    assert list(R.state_at(steps, np.array([False, True, False]), np.array([5, 10, 25]))) == [
        False,
        True,
        False,
    ]


def test_longest_tail_run_counts_the_current_streak():
    assert R.longest_tail_run(np.array([True, False, True, True])) == 2
    assert R.longest_tail_run(np.array([True, True])) == 2
    assert R.longest_tail_run(np.array([True, False])) == 0


@pytest.mark.parametrize(
    "x, text",
    [
        (0.41, "0.41"),
        (1234567.0, "1.23e6"),
        (2e-5, "2e-5"),
        (0.00622, "0.00622"),
        (0.0, "0"),
        (12.345, "12.3"),
    ],
)
def test_fmt_reads_like_a_person_wrote_it(x, text):
    assert C.fmt(x) == text


def test_wording_helpers():
    assert C.fmt_step(1800) == "1,800"
    assert C.fmt_pct(0.234) == "23%" and C.fmt_pct(0.004) == "0.4%"
    assert C.fmt_factor(2.46) == "2.5x" and C.fmt_factor(120.4) == "120x" and C.fmt_factor(2.5e7) == "2.5e7x"
    assert C.fmt_change(1.23) == "+23%" and C.fmt_change(0.6) == "-40%" and C.fmt_change(38.0) == "38x"
    assert C.sentence("val loss of features.0") == "Val loss of features.0"


def test_cite_quotes_document_and_line():
    assert C.cite(("000", 67, "太高的学习率")) == '000 line 67: "太高的学习率"'


def test_jsonable_turns_numpy_and_nan_into_plain_json():
    out = C.jsonable(
        {"a": np.float32(1.5), "b": np.arange(3), "c": float("nan"), "d": (np.int64(2), np.bool_(True))}
    )
    assert out == {"a": 1.5, "b": [0, 1, 2], "c": None, "d": [2, True]}


def test_require_helpers_say_why():
    run = C.make_run({"x": ([0, 1], [1.0, float("nan")])})
    with pytest.raises(Skip, match="needs train/loss"):
        C.require_scalar(run, "train/loss", "the training loss")
    with pytest.raises(Skip, match="not enough data yet: 3 of 50 points"):
        C.require_points(3, 50, "points")
    with pytest.raises(Skip, match="NaN/Inf from step 1"):
        C.require_finite_points(run.scalars["x"], 5, "points")


def test_run_json_facts_come_from_meta_or_hparams():
    run = C.make_run({}, {"hparams": {"Batch_Size": 64, "n_classes": 10, "learning_rate": 0.1}})
    assert F.batch_size(run) == 64 and F.num_classes(run) == 10 and F.configured_lr(run) == 0.1
    run = C.make_run(
        {"opt/lr": ([0, 1], [0.1, 0.05])},
        {"batch_size": 32, "optimizer": {"type": "SGD", "param_groups": [{"lr": 0.3, "weight_decay": 0}]}},
    )
    assert F.batch_size(run) == 32 and F.configured_lr(run) == 0.05 and F.weight_decay(run) == 0.0
    assert F.num_classes(C.make_run({})) is None and F.weight_decay(C.make_run({})) is None


def test_layer_order_follows_run_json_then_names_with_numbers_as_numbers():
    meta = {"model": {"layers": [{"name": "features.0"}, {"name": "features.10"}, {"name": "classifier"}]}}
    run = C.make_run({}, meta)
    assert F.ordered_layers(run, ["extra.10", "classifier", "extra.2", "features.10", "features.0"]) == [
        "features.0",
        "features.10",
        "classifier",
        "extra.2",
        "extra.10",
    ]
    assert F.natural_sorted(["layer.10", "layer.2"]) == ["layer.2", "layer.10"]


def test_make_run_accepts_series_or_arrays():
    run = C.make_run({"a": Series.from_lists([0, 1], [1, 2]), "b": ([0], [3])})
    assert run.scalar("a").values.tolist() == [1.0, 2.0] and run.scalar("b").steps.tolist() == [0]


def test_row_percentiles_are_numpys_from_one_sort():
    rows = np.random.default_rng(0).normal(size=(50, 25))
    for got, q in zip(R.row_percentiles(rows, (10, 50, 90)), (10, 50, 90)):
        np.testing.assert_allclose(got, np.percentile(rows, q, axis=1))


@pytest.mark.parametrize(
    "fraction, said",
    [(0.997, "99.7%"), (0.99996, "99.9%"), (1.0, "100%"), (-0.997, "-99.7%"), (0.994, "99%")],
)
def test_a_share_just_short_of_the_whole_is_not_said_as_the_whole(fraction, said):
    """ "Train loss fell 100%" would say it reached zero; 99.7% is what was measured."""
    from trainscope.analyzers.rules.common import fmt_pct

    assert fmt_pct(fraction) == said


# --- the start level: a window sized by the scatter ----------------------------------------------------


def _start_median(values):
    from trainscope.analyzers.rules.curves import noise_sigma, start_window

    return float(np.median(values[: start_window(values, noise_sigma(values))]))


def test_a_noisy_flat_start_is_measured_over_as_many_points_as_its_scatter_needs():
    """Batches of 4 swing a flat loss 0.03-3: 20 points' median is off by up to 55% over 20 seeds
    (a fake "fell 30%"); the window grown to the scatter stays within 20% of the true level."""
    from trainscope.analyzers.rules.curves import START_MAX_SHARE
    from trainscope.analyzers.rules.synthetic import batch_losses

    worst, worst_20 = 0.0, 0.0
    for seed in range(20):
        values = batch_losses(np.full(4000, 0.72), 4, seed=seed, classes=4)
        level = float(np.median(values))
        worst = max(worst, abs(_start_median(values) / level - 1))
        worst_20 = max(worst_20, abs(float(np.median(values[:20])) / level - 1))
    assert worst_20 > 0.3 and worst < 0.2
    values = batch_losses(np.full(4000, 0.72), 4, classes=4)
    from trainscope.analyzers.rules.curves import noise_sigma, start_window

    assert start_window(values, noise_sigma(values)) == int(4000 * START_MAX_SHARE)  # capped at 10%


def test_a_clean_falling_curve_keeps_its_first_20_points_as_the_start():
    from trainscope.analyzers.rules.curves import noise_sigma, start_level, start_window
    from trainscope.analyzers.rules.synthetic import noisy

    values = noisy(2.3 * np.exp(-np.arange(2000) / 400) + 0.1, 0.05)
    assert start_window(values, noise_sigma(values)) == 20
    # as before: its 20 points' median, or its first point where it stands above them (a steep drop)
    assert start_level(values, noise_sigma(values)) in (float(values[0]), float(np.median(values[:20])))


def test_a_noisy_curve_falling_steeply_in_its_first_tenth_is_not_averaged_across_the_fall():
    """A median over the first 10% of a loss dropping 1.5 -> 0.25 there would start it near 0.6."""
    from trainscope.analyzers.rules.curves import noise_sigma, start_level, start_window
    from trainscope.analyzers.rules.synthetic import noisy

    values = noisy(1.3 * np.exp(-np.arange(2000) / 150) + 0.2, 0.5)
    assert start_window(values, noise_sigma(values)) == 20
    assert start_level(values, noise_sigma(values)) > 1.2


def test_a_sparse_noisy_log_keeps_its_first_5_percent():
    """Below 400 points a curve's bends pass for scatter: the window does not grow across them."""
    from trainscope.analyzers.rules.curves import noise_sigma, start_points, start_window
    from trainscope.analyzers.rules.synthetic import batch_losses

    values = batch_losses(np.full(300, 0.72), 4, classes=4)
    assert start_window(values, noise_sigma(values)) == start_points(300) == 15


def test_a_flat_noisy_loss_reads_as_fallen_10_percent_far_less_often():
    """The start against the end of a flat loss: with 20 points, 1 seed in 4 'fell' 10%+."""
    from trainscope.analyzers.rules.curves import TREND_BINS, noise_sigma, start_level, trend_bin_size
    from trainscope.analyzers.rules.synthetic import noisy

    fell = fell_20 = 0
    for seed in range(100):
        values = noisy(np.full(2000, 2.3), 0.5, seed=seed)
        curve = R.binned(np.arange(2000), values, TREND_BINS, trend_bin_size(2000))
        end = float(np.median(curve.values[-max(3, len(curve) // 10) :]))
        start = start_level(values, noise_sigma(values))
        fell += start - end >= 0.1 * start
        head = float(np.median(values[:20]))
        fell_20 += head - end >= 0.1 * head
    assert fell_20 >= 20 and fell <= 12
