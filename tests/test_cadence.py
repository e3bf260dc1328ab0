"""The cadence of gradient norms and accuracy: every step for the first 200 steps and
wherever they fit in their budget, spread out (at most to every 8th step) where they do
not, and always on the same steps as each other."""

from __future__ import annotations

import json
from itertools import pairwise

import pytest
from collector_helpers import mlp, read_scalars, train

from trainscope.collectors import CollectorConfig, watch
from trainscope.collectors.cadence import FULL_START, MAX_STRIDE, QUIET, STATS, StatsCadence
from trainscope.logformat import tags as T

MS = 1e-3


def steady(
    cadence: StatsCadence, steps: int, step_seconds: float, cost_seconds: float, start: int = 0
) -> list[int]:
    """Run `steps` steps of a fixed duration; the steps that were due (and so recorded)."""
    due = []
    for step in range(start, start + steps):
        if cadence.due(step):
            due.append(step)
            cadence.recorded(step, cost_seconds)
        cadence.step_took(step_seconds)
    return due


def test_without_a_budget_the_schedule_is_fixed():
    assert steady(StatsCadence(every=3, budget=None), 10, 1 * MS, 5 * MS) == [0, 3, 6, 9]
    assert steady(StatsCadence(every=1, budget=None), 4, 1 * MS, 5 * MS) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "every, budget, later",
    [
        (1, 0.01, MAX_STRIDE),  # the budget's widest stride, whatever the steps cost
        (20, 0.01, 20),  # a chosen interval beyond it is kept
        (1, None, 1),  # no budget: `every` throughout
        (3, None, 3),
    ],
)
def test_the_ranks_of_a_sharded_model_keep_one_schedule_whatever_their_steps_take(every, budget, later):
    """Their parts of each norm are summed, so every rank must measure the same steps,
    though each times its own: one fast rank and one slow one get the same schedule."""
    fast, slow = (StatsCadence.same_on_every_rank(every, budget) for _ in range(2))
    steps = FULL_START + 100
    on_fast = steady(fast, steps, 0.5 * MS, 1 * MS)
    assert on_fast == steady(slow, steps, 0.01 * MS, 300 * MS)
    assert on_fast == [s for s in range(steps) if s % (every if s < FULL_START else later) == 0]
    assert fast.stride == later
    for step in range(steps):
        assert fast.next_due(step) == first_due(fast, step), step


@pytest.mark.parametrize(
    "every, cost_ms, stride",
    [
        (1, 0.005, 1),  # 0.5% of a 1 ms step: fits a 1% budget every step
        (1, 0.025, 3),  # 2.5%: every 3rd step
        (1, 0.5, MAX_STRIDE),  # 50%: capped, so that short runs keep enough points
        (5, 0.025, 5),  # never closer than `every`
        (10, 0.5, 10),  # a chosen interval beyond the cap is kept
    ],
)
def test_the_stride_keeps_the_cost_within_the_budget(every, cost_ms, stride):
    cadence = StatsCadence(every=every, budget=0.01)
    due = steady(cadence, FULL_START + 400, 1 * MS, cost_ms * MS)
    assert [s for s in due if s < FULL_START] == list(range(0, FULL_START, every))  # the start: all
    assert cadence.stride == stride
    gaps = {b - a for a, b in pairwise(due[-20:])}
    assert gaps == {stride}


def test_a_pause_between_steps_does_not_count_as_training_time():
    cadence = StatsCadence(every=1, budget=0.01)
    steady(cadence, 100, 1 * MS, 0.045 * MS)
    assert cadence.stride == 5
    cadence.step_took(2.0)  # a validation pass: 2000 steps' worth
    cadence.recorded(100, 0.045 * MS)
    assert cadence.stride == 5  # an unclipped mean would have dropped it to 1


def test_a_step_that_really_slows_down_is_followed():
    cadence = StatsCadence(every=1, budget=0.01)
    assert steady(cadence, 300, 1 * MS, 0.045 * MS)[-2:] == [294, 299]
    due = steady(cadence, 100, 10 * MS, 0.045 * MS, start=300)  # ten times slower from now on
    assert cadence.stride == 1 and due[-3:] == [397, 398, 399]


def with_real_cost(
    cadence: StatsCadence, steps: int, quiet_seconds: float, stats_seconds: float, host_cost: float
) -> None:
    """Steps that take longer when the statistics are taken (by stats_seconds - quiet_seconds),
    of which the host timing around them sees `host_cost`."""
    for step in range(steps):
        if cadence.due(step):
            cadence.recorded(step, host_cost)
            cadence.step_took(stats_seconds, STATS)
        else:
            cadence.step_took(quiet_seconds, QUIET)


@pytest.mark.parametrize(
    "stats_ms, stride",
    [
        (
            1.045,
            5,
        ),  # they add 4.5% to the step (cold caches) where their host time says 2.5%: the 4.5% counts
        (1.01, 3),  # they add 1% (their device time overlapped): the host time counts
    ],
)
def test_the_larger_of_host_time_and_added_step_time_counts(stats_ms, stride):
    cadence = StatsCadence(every=1, budget=0.01)
    with_real_cost(cadence, FULL_START + 300, 1 * MS, stats_ms * MS, 0.025 * MS)
    assert cadence.stride == stride


def first_due(cadence: StatsCadence, step: int) -> int:
    return next(s for s in range(step, step + 10 * FULL_START) if cadence.due(s))


@pytest.mark.parametrize(
    "every, budget, recorded_at, cost_ms",
    [
        (3, None, None, 0.0),  # a fixed schedule
        (1, 0.01, None, 0.0),  # nothing recorded yet
        (4, 0.01, 195, 0.5),  # the start's multiples of 4 run into the budgeted part
        (1, 0.01, 250, 0.5),  # the cap: every 8th
        (1, 0.01, 250, 0.025),  # every 3rd
        (10, 0.01, 250, 0.5),  # a chosen interval beyond the cap
    ],
)
def test_next_due_is_the_first_step_that_due_accepts(every, budget, recorded_at, cost_ms):
    """The collector plans nothing for the steps before `next_due`: it must agree with `due`."""
    cadence = StatsCadence(every=every, budget=budget)
    cadence.step_took(1 * MS)
    if recorded_at is not None:
        cadence.recorded(recorded_at, cost_ms * MS)
    for step in [*range(FULL_START + 40), *range(FULL_START + 200, FULL_START + 230)]:
        if recorded_at is None or step > recorded_at:
            assert cadence.next_due(step) == first_due(cadence, step), step


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"every": 10, "histogram_every": 25},  # histograms between samples
        {"every": 7, "noise_window": 12},  # a window longer than the interval
        {"histograms": False, "noise_scale": False},
        {"every": 1},
    ],
)
def test_next_sampled_work_is_the_first_step_that_has_some(settings):
    config = CollectorConfig(**settings)
    for step in range(1000):
        expected = next(s for s in range(step, step + 1000) if config.adds_sampled_work(s))
        assert config.next_sampled_work(step) == expected, step


def test_config_rejects_a_budget_that_is_not_positive():
    with pytest.raises(ValueError, match="stats_budget"):
        CollectorConfig(stats_budget=0.0)
    with pytest.raises(ValueError, match="stats_every"):
        CollectorConfig(stats_every=0)


STEPS = FULL_START + 60


@pytest.mark.parametrize(
    "settings, expected_steps",
    [
        # Any real cost is over a budget this small: after the start, the cap, plus every
        # sampled step (every=10).
        (
            dict(stats_budget=1e-12, every=10),
            [*range(FULL_START), *(FULL_START + s for s in (0, 8, 10, 18, 20, 28, 30, 38, 40, 48, 50, 58))],
        ),
        (
            dict(stats_budget=None, stats_every=4, every=10),
            sorted({*range(0, STEPS, 4), *range(0, STEPS, 10)}),
        ),
        (dict(stats_budget=1e12, every=10), list(range(STEPS))),
    ],
)
def test_norms_are_recorded_on_the_statistics_steps(tmp_path, digits, settings, expected_steps):
    X, y = digits
    train(mlp(), X, y, steps=STEPS, collector=lambda m, o: watch(m, o, tmp_path, **settings))
    scalars = read_scalars(tmp_path)
    for tag in (T.GRAD_GLOBAL_NORM, T.grad_norm_tag("0")):
        assert sorted(scalars[tag]) == expected_steps, tag
    # the loss and learning rate stay on every step, and so does the accuracy, whose
    # logits and labels are kept until the flush (collectors/deferred_accuracy.py)
    for tag in (T.TRAIN_LOSS, T.LR, T.TRAIN_ACC):
        assert sorted(scalars[tag]) == list(range(STEPS)), tag


def test_the_default_budget_spreads_them_on_a_small_fast_model(tmp_path, digits):
    """The digits MLP's step is a few hundred µs, the statistics a sizable share of it."""
    X, y = digits
    made = []
    train(
        mlp(),
        X,
        y,
        steps=FULL_START + 400,
        collector=lambda m, o: made.append(watch(m, o, tmp_path)) or made[0],
    )
    stride = json.loads((tmp_path / "run.json").read_text())["collector"]["stats_stride"]
    assert stride == made[0].stats_stride and 1 < stride <= MAX_STRIDE
    steps = sorted(read_scalars(tmp_path)[T.GRAD_GLOBAL_NORM])
    assert steps[:FULL_START] == list(range(FULL_START))
    later = steps[FULL_START:]
    gaps = [b - a for a, b in pairwise(later)]
    assert max(gaps) <= MAX_STRIDE
    assert len(later) < 400  # spread out...
    assert len(later) >= 400 // MAX_STRIDE  # ...but never below the cap's density
