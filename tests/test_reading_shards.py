"""A sharded model's norms, added up from each rank's partial sums (analyzers.reading.shards).

The collector side, on a real FSDP and tensor-parallel run, is in
tests/test_collector_fsdp.py; here the sums' rules, on hand-made series and on event
files that the ranks write at different times, as a live reader sees them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainscope.analyzers.diagnose import diagnose_run
from trainscope.analyzers.reading.logdir import LogDirReader
from trainscope.analyzers.reading.shards import sum_shards
from trainscope.analyzers.rules import ALL_RULES
from trainscope.analyzers.run import HistogramSeries, Series
from trainscope.logformat import runjson as RJ
from trainscope.logformat import tags as T
from trainscope.logformat.events import EventFileWriter, summary_record
from trainscope.logformat.noise import NoiseScaleEMA, two_batch_estimate

SS = T.ShardSquares
GRAD, UPDATE, BEFORE, WEIGHT = SS.GRAD, SS.UPDATE, SS.WEIGHT_BEFORE, SS.WEIGHT


def series(steps: list[int], values: list[float]) -> Series:
    return Series.from_lists(steps, values, [1000.0 + s for s in steps])


def summed(raw: dict[str, Series], meta: dict) -> dict[str, Series]:
    return sum_shards(raw, meta).scalars


def values(out: dict[str, Series], tag: str) -> dict[int, float]:
    return dict(zip(out[tag].steps.tolist(), out[tag].values.tolist()))


def test_a_layer_norm_is_the_root_of_the_ranks_squares_at_the_steps_both_wrote():
    raw = {
        T.shard_tag(0, GRAD, "fc"): series([0, 1, 2], [9.0, 1.0, 4.0]),
        T.shard_tag(1, GRAD, "fc"): series([0, 1], [16.0, 3.0]),  # step 2 not flushed yet
        T.shard_tag(0, GRAD): series([0, 1, 2], [9.0, 1.0, 4.0]),
        T.shard_tag(1, GRAD): series([0, 1], [16.0, 3.0]),
        T.TRAIN_LOSS: series([0, 1, 2], [2.3, 2.2, 2.1]),
    }
    out = summed(raw, {RJ.K_WORLD_SIZE: 2})
    assert values(out, T.grad_norm_tag("fc")) == {0: 5.0, 1: 2.0}
    assert values(out, T.GRAD_GLOBAL_NORM) == {0: 5.0, 1: 2.0}
    assert out[T.TRAIN_LOSS] is raw[T.TRAIN_LOSS]
    assert not any(tag.startswith(T.SHARD_PREFIX) for tag in out)


def test_a_step_one_rank_lacks_is_left_out_wherever_it_falls():
    """A record lost from one rank's file (a corrupt event skipped) leaves a gap in the
    middle: the other steps still add up."""
    raw = {
        T.shard_tag(0, GRAD, "fc"): series([0, 1, 3, 4], [9.0, 9.0, 9.0, 9.0]),
        T.shard_tag(1, GRAD, "fc"): series([0, 2, 3], [16.0, 16.0, 16.0]),
    }
    out = summed(raw, {RJ.K_WORLD_SIZE: 2})
    assert values(out, T.grad_norm_tag("fc")) == {0: 5.0, 3: 5.0}
    assert out[T.grad_norm_tag("fc")].wall_times.tolist() == [1000.0, 1003.0]


def test_a_weight_constant_on_each_rank_but_not_across_them_is_not_constant():
    """Each rank's shard holds one value, a different one per rank: the weight's extremes
    are the least and the greatest over the ranks, not a sum. The run was resumed at
    step 10, where the check was made again; rank 1's part of step 0 is not in the log."""
    parts = {0: (16.0, -8.0, 4.0, -0.5, -0.5), 1: (16.0, 8.0, 4.0, 0.5, 0.5)}
    raw = {
        T.shard_tag(rank, quantity, "fc"): series([0, 10] if rank == 0 else [10], [value] * (2 - rank))
        for rank, moments in parts.items()
        for quantity, value in zip(T.ShardInit.ALL, moments)
    }
    meta = {RJ.K_WORLD_SIZE: 2, RJ.K_INIT_CHECK: [_init_entry("fc", [4, 8])]}
    (entry,) = sum_shards(raw, meta).meta[RJ.K_INIT_CHECK]
    assert entry["constant"] is False and entry["mean"] == 0.0
    assert entry["std"] == pytest.approx(math.sqrt(8.0 / 31))


def test_a_rank_whose_parts_end_early_in_a_finished_run_is_named():
    """Its collector stopped measuring (an error on that rank is reported there); the
    sums end where its parts do, and the reader says why, once the run is over."""
    raw = {
        T.shard_tag(0, GRAD): series([0, 1, 2, 3], [1.0] * 4),
        T.shard_tag(1, GRAD): series([0, 1], [1.0] * 2),
    }
    running = sum_shards(raw, {RJ.K_WORLD_SIZE: 2, RJ.K_STATUS: "running"})
    assert running.problem is None  # while it runs, ranks flush at different times
    finished = sum_shards(raw, {RJ.K_WORLD_SIZE: 2, RJ.K_STATUS: "finished"})
    assert values(finished.scalars, T.GRAD_GLOBAL_NORM) == {0: math.sqrt(2.0), 1: math.sqrt(2.0)}
    assert finished.problem == (
        "the parts of rank(s) 1 (step 1) of this sharded run end before the others' (step 3): its norms,"
        " summed over every rank, end there too; that rank's collector stopped measuring (see its output)"
    )


def test_nothing_is_summed_until_every_rank_has_written():
    """A rank that has not flushed yet has no series at all: rank 0's part alone would
    read as the whole, at a fraction of its value."""
    raw = {
        T.shard_tag(0, GRAD, "fc"): series([0, 1], [9.0, 1.0]),
        T.shard_tag(0, GRAD): series([0, 1], [9.0, 1.0]),
    }
    out = summed(raw, {RJ.K_WORLD_SIZE: 2})
    assert T.grad_norm_tag("fc") not in out and T.GRAD_GLOBAL_NORM not in out
    assert values(summed(raw, {RJ.K_WORLD_SIZE: 1}), T.grad_norm_tag("fc")) == {0: 3.0, 1: 1.0}


def test_a_layer_that_some_ranks_hold_is_summed_over_those_once_every_rank_has_written():
    """Pipeline stages: rank 0 holds `a`, rank 1 holds `b`; the model's total needs both."""
    raw = {
        T.shard_tag(0, GRAD, "a"): series([0, 1], [4.0, 1.0]),
        T.shard_tag(1, GRAD, "b"): series([0], [9.0]),
        T.shard_tag(0, GRAD): series([0, 1], [4.0, 1.0]),
        T.shard_tag(1, GRAD): series([0], [9.0]),
    }
    out = summed(raw, {RJ.K_WORLD_SIZE: 2})
    assert values(out, T.grad_norm_tag("a")) == {0: 2.0, 1: 1.0}
    assert values(out, T.grad_norm_tag("b")) == {0: 3.0}
    assert values(out, T.GRAD_GLOBAL_NORM) == {0: pytest.approx(math.sqrt(13.0))}


def test_the_norm_rank_0_was_given_before_clipping_wins_over_the_sum():
    raw = {
        T.shard_tag(0, GRAD): series([0], [1.0]),
        T.shard_tag(1, GRAD): series([0], [3.0]),
        T.GRAD_GLOBAL_NORM: series([0], [7.5]),
    }
    assert values(summed(raw, {RJ.K_WORLD_SIZE: 2}), T.GRAD_GLOBAL_NORM) == {0: 7.5}


def test_update_ratios_and_weight_norms_divide_the_sums_not_the_parts():
    raw = {
        T.shard_tag(0, UPDATE, "fc"): series([0, 50], [0.01, 0.04]),
        T.shard_tag(1, UPDATE, "fc"): series([0, 50], [0.03, 0.05]),
        T.shard_tag(0, BEFORE, "fc"): series([0, 50], [36.0, 50.0]),
        T.shard_tag(1, BEFORE, "fc"): series([0, 50], [64.0, 50.0]),
        T.shard_tag(0, WEIGHT, "fc"): series([0, 50], [30.0, 60.0]),
        T.shard_tag(1, WEIGHT, "fc"): series([0, 50], [6.0, 40.0]),
    }
    out = summed(raw, {RJ.K_WORLD_SIZE: 2})
    assert values(out, T.update_ratio_tag("fc")) == {0: pytest.approx(0.02), 50: pytest.approx(0.03)}
    assert values(out, T.weight_norm_tag("fc")) == {0: 6.0, 50: 10.0}
    assert out[T.weight_norm_tag("fc")].wall_times.tolist() == [1000.0, 1050.0]


def test_a_nan_in_one_rank_s_shard_makes_the_whole_norm_nan():
    raw = {
        T.shard_tag(0, GRAD, "fc"): series([0], [float("nan")]),
        T.shard_tag(1, GRAD, "fc"): series([0], [1.0]),
    }
    assert np.isnan(summed(raw, {RJ.K_WORLD_SIZE: 2})[T.grad_norm_tag("fc")].values[0])


def test_the_noise_scale_is_estimated_from_the_sums_of_each_window():
    """Windows of 2 steps closing at 1 and 51 (every=50): |G_small|² is the mean of the
    summed |g|² of the window's steps, leaving out a step the optimizer skipped (AMP),
    and the two windows are smoothed in order, as the collector's writer does."""
    meta = {RJ.K_WORLD_SIZE: 2, RJ.K_COLLECTOR: {"every": 50, "noise_window": 5, "noise_ema": 0.9}}
    small = {0: (3.0, 5.0), 1: (2.0, 6.0), 50: (4.0, 4.0), 51: (1e9, 1e9)}  # step 51 skipped
    raw = (
        {
            T.shard_tag(rank, GRAD): series(list(small), [pair[rank] for pair in small.values()])
            for rank in (0, 1)
        }
        | {T.shard_tag(rank, SS.NOISE_BIG): series([1, 51], [2.0 + rank, 1.5 + rank]) for rank in (0, 1)}
        | {
            T.shard_tag(rank, part): series([1, 51], [value, value])
            for rank in (0, 1)
            for part, value in ((SS.NOISE_B_SMALL, 64.0), (SS.NOISE_B_BIG, 128.0))
        }
        | {T.STEP_SKIPPED: series([51], [1.0])}
    )
    ema = NoiseScaleEMA(0.9)
    first = ema.update(*two_batch_estimate((8.0 + 8.0) / 2, 5.0, 64.0, 128.0))
    second = ema.update(*two_batch_estimate(8.0, 4.0, 64.0, 128.0))
    noise = summed(raw, meta)[T.GRAD_NOISE_SCALE]
    assert noise.steps.tolist() == [1, 51]
    assert noise.values.tolist() == pytest.approx([first, second])
    assert T.GRAD_NOISE_SCALE not in summed(raw, {RJ.K_WORLD_SIZE: 2})  # no settings: no window to go by


def test_a_live_reader_shows_a_step_once_every_rank_has_flushed_it(tmp_path):
    RJ.write_run_json(tmp_path, {RJ.K_SCHEMA: RJ.SCHEMA_VERSION, RJ.K_STATUS: "running", RJ.K_WORLD_SIZE: 2})
    files = [EventFileWriter(tmp_path, f".rank{rank}") for rank in (0, 1)]

    def flush(rank: int, steps: range, square: float) -> None:
        files[rank].write(
            [summary_record(s, 1000.0 + s, {T.shard_tag(rank, GRAD, "fc"): square}) for s in steps]
        )

    reader = LogDirReader(tmp_path)
    flush(0, range(4), 9.0)
    run = reader.refresh().runs["."]
    assert run.scalar(T.grad_norm_tag("fc")) is None  # rank 1 has written nothing yet, and that is said
    assert run.problems == (
        (
            "rank(s) 1 of this sharded run (2 ranks) have written no part of its norms yet: gradient norms, update"
            " ratios, weight norms and the noise scale are summed over every rank, and wait for them"
        ),
    )
    flush(1, range(2), 16.0)
    run = reader.refresh().runs["."]
    norm = run.scalar(T.grad_norm_tag("fc"))
    assert norm.steps.tolist() == [0, 1] and norm.values.tolist() == [5.0, 5.0] and run.problems == ()
    flush(1, range(2, 4), 16.0)
    assert reader.refresh().runs["."].scalar(T.grad_norm_tag("fc")).steps.tolist() == [0, 1, 2, 3]
    for f in files:
        f.close()


def _init_entry(layer: str, shape: list[int]) -> dict:
    fan_in = shape[1]
    return {
        "layer": layer,
        "param": "weight",
        "type": "Linear",
        "shape": shape,
        "fan_in": fan_in,
        "activation": "relu",
        "expected": "he",
        "expected_std": math.sqrt(2 / fan_in),
        "from_shards": True,
    }


def test_a_sharded_model_s_zero_initialized_layer_is_found_from_the_ranks_parts(tmp_path):
    """The classic FSDP mistake: a model built on the meta device, moved with
    `to_empty()` and never initialized. Rank 0 wrote run.json's entries; each rank its
    part of each weight at attach (count, sum, sum of squares, extremes). A layer whose
    parts are still missing is left out rather than judged on half the weight."""
    entries = [_init_entry("fc1", [64, 32]), _init_entry("fc2", [32, 64]), _init_entry("fc3", [10, 32])]
    RJ.write_run_json(
        tmp_path,
        {
            RJ.K_SCHEMA: RJ.SCHEMA_VERSION,
            RJ.K_STATUS: "running",
            RJ.K_WORLD_SIZE: 2,
            RJ.K_INIT_CHECK: entries,
        },
    )
    rng = np.random.default_rng(0)
    whole = rng.normal(0.0, math.sqrt(2 / 64), size=(32, 64))  # fc2: He-scaled, split by rows
    halves = {0: whole[:16].ravel(), 1: whole[16:].ravel()}
    for rank in (0, 1):
        fc2 = halves[rank]
        parts = {
            **{T.shard_tag(rank, q, "fc1"): v for q, v in zip(T.ShardInit.ALL, (1024.0, 0.0, 0.0, 0.0, 0.0))},
            **{
                T.shard_tag(rank, q, "fc2"): v
                for q, v in zip(T.ShardInit.ALL, (fc2.size, fc2.sum(), fc2 @ fc2, fc2.min(), fc2.max()))
            },
        }
        if rank == 0:  # fc3's part of rank 1 is not written yet
            parts[T.shard_tag(rank, T.ShardInit.COUNT, "fc3")] = 160.0
        writer = EventFileWriter(tmp_path, f".rank{rank}")
        writer.write([summary_record(0, 1000.0, parts | {T.TRAIN_LOSS: 2.3} if rank == 0 else parts)])
        writer.close()
    run = LogDirReader(tmp_path).refresh().runs["."]
    completed = {entry["layer"]: entry for entry in run.meta[RJ.K_INIT_CHECK]}
    assert sorted(completed) == ["fc1", "fc2"]
    assert completed["fc1"]["constant"] is True and completed["fc1"]["std"] == 0.0
    assert completed["fc2"]["constant"] is False
    assert completed["fc2"]["std"] == pytest.approx(whole.std(ddof=1), rel=1e-6)  # event values are float32
    assert completed["fc2"]["mean"] == pytest.approx(whole.mean(), abs=1e-7)
    assert completed["fc2"]["ratio"] == pytest.approx(whole.std(ddof=1) / math.sqrt(2 / 64), rel=1e-6)
    diagnosis = diagnose_run(run, tuple((rule, fn) for rule, fn in ALL_RULES if rule == "bad_initialization"))
    (found,) = diagnosis.findings
    assert found.severity == "critical" and found.layer == "fc1"


def _histogram(values: np.ndarray, step: int = 0) -> HistogramSeries:
    counts, edges = np.histogram(values, bins=30)
    return HistogramSeries(np.array([step]), [edges], [counts.astype(np.float64)])


def test_the_ranks_histograms_merge_onto_the_range_of_them_all():
    """Two halves of a weight, each counted on its own range (as each rank does), merge
    into the whole's count and range exactly, and each bucket to within a bucket of
    what counting the whole at once gives."""
    rng = np.random.default_rng(0)
    whole = np.concatenate([rng.normal(-1.0, 0.5, 5000), rng.normal(1.0, 0.2, 3000)])
    halves = {0: whole[:5000], 1: whole[5000:]}
    raw = {
        T.shard_tag(rank, T.ShardHistograms.WEIGHT, "fc"): _histogram(part) for rank, part in halves.items()
    }
    merged = sum_shards({}, {RJ.K_WORLD_SIZE: 2}, raw).histograms[T.hist_weight_tag("fc")]
    (edges,), (counts,) = merged.edges, merged.counts
    direct, direct_edges = np.histogram(whole, bins=30)
    assert edges.tolist() == pytest.approx(direct_edges.tolist())
    assert counts.sum() == pytest.approx(8000)
    assert np.abs(counts - direct).max() < 0.1 * direct.max()  # spread within a source bucket's width
    assert np.abs(counts - direct).sum() < 0.05 * 8000


def test_a_rank_whose_values_are_all_one_merges_into_the_bucket_that_holds_it():
    raw = {
        T.shard_tag(0, T.ShardHistograms.GRAD, "fc"): HistogramSeries(
            np.array([0]), [np.full(31, 0.0)], [np.r_[40.0, np.zeros(29)]]
        ),
        T.shard_tag(1, T.ShardHistograms.GRAD, "fc"): _histogram(np.linspace(-1.0, 1.0, 60)),
    }
    merged = sum_shards({}, {RJ.K_WORLD_SIZE: 2}, raw).histograms[T.hist_grad_tag("fc")]
    (edges,), (counts,) = merged.edges, merged.counts
    assert (edges[0], edges[-1]) == (-1.0, 1.0) and counts.sum() == pytest.approx(100.0)
    assert counts[15] == pytest.approx(40.0 + 2.0, abs=1.0)  # the zeros land in the bucket from 0 to 1/15
    one_rank = {
        T.shard_tag(0, T.ShardHistograms.GRAD, "fc"): raw[T.shard_tag(0, T.ShardHistograms.GRAD, "fc")]
    }
    assert (
        T.hist_grad_tag("fc") not in sum_shards({}, {RJ.K_WORLD_SIZE: 2}, one_rank).histograms
    )  # rank 1 awaited


def test_a_sharded_run_without_run_json_is_summed_over_the_ranks_that_wrote(tmp_path):
    """Rank 0 died before writing run.json: its world size is unknown, so the ranks
    that wrote are all there is to wait for."""
    for rank, square in ((0, 9.0), (1, 16.0)):
        writer = EventFileWriter(tmp_path, f".rank{rank}")
        writer.write(
            [summary_record(s, 1000.0 + s, {T.shard_tag(rank, GRAD, "fc"): square}) for s in range(3)]
        )
        writer.close()
    run = LogDirReader(tmp_path).refresh().runs["."]
    assert run.scalar(T.grad_norm_tag("fc")).values.tolist() == [5.0, 5.0, 5.0]
    assert not run.unmapped
