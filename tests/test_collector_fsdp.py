"""Sharded models (FSDP in its three forms, tensor parallelism): the collector neither
breaks nor changes the run, and what the readers add up from the ranks' parts equals
what the whole tensors give.

Each rank holds a shard of every parameter. A norm of one, taken by rank 0 alone, is a
collective that the other ranks never join: attached unchanged, the collector crashed
the run at its first statistics step (gloo: "collective mismatch"). Then, for a while,
what reads parameters was off. Now each rank measures its own shards and the readers
add the ranks up: norms, update ratios, the noise scale, the initialization check and
histograms; only what FSDP's older wrapper's flat slices hide is off, and said once.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from collector_helpers import read_scalars

from trainscope.analyzers.reading.logdir import read_logdir
from trainscope.logformat import tags as T

fsdp = pytest.importorskip("torch.distributed.fsdp")
pytestmark = pytest.mark.skipif(not hasattr(fsdp, "fully_shard"), reason="needs FSDP2 (fully_shard)")

DTENSOR_KINDS = ["fsdp", "hsdp", "tp"]
KINDS = [*DTENSOR_KINDS, "fsdp1", "fsdp1_flat"]
SAMPLED = [0, 2, 4]


@pytest.fixture(scope="module")
def sharded_runs(tmp_path_factory) -> tuple[Path, Path]:
    log_dir = tmp_path_factory.mktemp("sharded")
    out_dir = tmp_path_factory.mktemp("sharded_out")
    store = tmp_path_factory.mktemp("sharded_store") / "store"
    worker = Path(__file__).with_name("fsdp_worker.py")
    proc = subprocess.run(
        [sys.executable, str(worker), str(log_dir), str(store), str(out_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return log_dir, out_dir


@pytest.mark.parametrize("kind", KINDS)
def test_a_sharded_run_trains_to_the_same_weights_with_the_collector(sharded_runs, kind):
    _, out_dir = sharded_runs
    assert [(out_dir / f"{kind}.rank{r}.identical").read_text() for r in range(2)] == ["True", "True"]


@pytest.mark.parametrize("kind", KINDS)
def test_layer_norms_summed_from_the_ranks_shards_equal_the_whole_tensors(sharded_runs, kind):
    """FSDP splits every tensor (33 rows: 17 and 16); hybrid FSDP (2 replicas of 1
    shard) keeps every tensor whole on both ranks; tensor parallelism splits the first
    layer by rows and the second by columns, and keeps the second's bias whole on both
    ranks. What is whole on both ranks must count once, not twice. FSDP's older
    wrapper holds flat slices, each element on one rank (a whole bias on one of them),
    and without `use_orig_params` one flat parameter per unit, here one per layer.
    The gradient noise scale is estimated from the sums too, with the batch of both
    ranks under data parallelism (every kind of FSDP) and of one under tensor
    parallelism, whose ranks share their examples."""
    log_dir, out_dir = sharded_runs
    direct = json.loads((out_dir / f"{kind}.direct.json").read_text())
    run = read_logdir(log_dir / kind).runs["."]
    for tag, expected in direct.items():
        series = run.scalar(tag)
        assert series is not None, tag
        assert series.steps.tolist() == [int(step) for step in expected], tag
        assert series.values.tolist() == pytest.approx(list(expected.values()), rel=1e-5), tag
    assert {tag for tag in direct if tag.startswith("update/")} == {
        T.update_ratio_tag(name) for name in ("0", "2")
    }
    assert not any(tag.startswith(T.SHARD_PREFIX) for tag in [*run.scalars, *run.unmapped])


@pytest.mark.parametrize("kind", DTENSOR_KINDS)
def test_the_initialization_check_is_completed_from_the_ranks_parts(sharded_runs, kind):
    """run.json holds what rank 0 knows (shapes, fan-in, the expected std); the readers
    add the ranks' parts up into each weight's std, mean and constancy."""
    log_dir, out_dir = sharded_runs
    init = json.loads((out_dir / f"{kind}.init.json").read_text())
    written = json.loads((log_dir / kind / "run.json").read_text())["init_check"]
    assert [entry["layer"] for entry in written] == ["0", "2"]
    assert all(entry["from_shards"] and "std" not in entry for entry in written)
    assert [entry["shape"] for entry in written] == (
        [[32, 64], [10, 32]] if kind == "tp" else [[33, 64], [10, 33]]
    )
    # fully_shard gives each module a class of its own (FSDPLinear): the model's is recorded
    assert [entry["type"] for entry in written] == ["Linear", "Linear"]
    layers = json.loads((log_dir / kind / "run.json").read_text())["model"]["layers"]
    assert [layer["type"] for layer in layers] == ["Linear", "Linear"]
    entries = read_logdir(log_dir / kind).runs["."].meta["init_check"]
    for entry in entries:
        std, mean = init[entry["layer"]]
        assert entry["std"] == pytest.approx(std, rel=1e-5) and entry["mean"] == pytest.approx(mean, abs=1e-7)
        assert entry["constant"] is False and entry["ratio"] == pytest.approx(
            std / entry["expected_std"], rel=1e-5
        )


def test_each_rank_writes_its_own_shards_partial_sums(sharded_runs):
    log_dir, _ = sharded_runs
    scalars = read_scalars(log_dir / "fsdp")  # TensorBoard's own reader: both ranks' files
    for rank in (0, 1):
        assert sorted(scalars[T.shard_tag(rank, T.ShardSquares.GRAD, "0")]) == list(range(6))
        assert sorted(scalars[T.shard_tag(rank, T.ShardSquares.UPDATE, "2")]) == SAMPLED
    grad_0 = [scalars[T.shard_tag(rank, T.ShardSquares.GRAD, "0")][0] for rank in (0, 1)]
    assert all(part > 0 for part in grad_0)  # each its own shard's share, not the whole twice
    assert T.GRAD_GLOBAL_NORM not in scalars and T.grad_norm_tag("0") not in scalars  # the readers' sum


def test_what_needs_no_parameter_is_recorded_and_nothing_is_reported_off(sharded_runs):
    log_dir, _ = sharded_runs
    scalars = read_scalars(log_dir / "fsdp")
    for tag in (T.TRAIN_LOSS, T.TRAIN_ACC, T.lr_tag(0), T.STEP_SECONDS, T.step_seconds_rank_tag(1)):
        assert sorted(scalars[tag]) == list(range(6)), tag
    assert sorted(scalars[T.dead_fraction_tag("1")]) == SAMPLED
    data = json.loads((log_dir / "fsdp" / "run.json").read_text())
    assert data["status"] == "finished" and data["collector_errors"] == []


@pytest.mark.parametrize(
    "kind, ranks", [("fsdp", 2), ("hsdp", 2), ("tp", 1), ("fsdp1", 2), ("fsdp1_flat", 2)]
)
def test_run_json_says_how_many_ranks_batches_make_a_step(sharded_runs, kind, ranks):
    """Data parallel (every kind of FSDP): both ranks' batches; tensor parallel: the
    ranks share one batch. The noise scale's B_small is that many batches (compared
    with whole-tensor estimates above), and the rules read it."""
    log_dir, _ = sharded_runs
    assert json.loads((log_dir / kind / "run.json").read_text())["data_parallel_ranks"] == ranks


@pytest.mark.parametrize("kind", [*DTENSOR_KINDS, "fsdp1"])
def test_histograms_merged_from_the_ranks_count_every_value_once_over_the_whole_range(sharded_runs, kind):
    """Each rank counts its shard on its own range; the readers merge them onto the
    range of them all. The count and the range are the whole tensor's exactly (a
    replicated tensor's counts halved on each rank), the buckets to a bucket's width."""
    log_dir, out_dir = sharded_runs
    expected = json.loads((out_dir / f"{kind}.hist.json").read_text())
    histograms = read_logdir(log_dir / kind).runs["."].histograms
    for step, tags in expected.items():
        for tag, (low, high, count) in tags.items():
            series = histograms[tag]
            i = series.steps.tolist().index(int(step))
            edges, counts = series.edges[i], series.counts[i]
            assert (edges[0], edges[-1]) == (pytest.approx(low, rel=1e-6), pytest.approx(high, rel=1e-6)), tag
            assert counts.sum() == pytest.approx(count), tag
            assert len(counts) == 30 and (counts >= -1e-9).all(), tag
    assert not any(tag.startswith(T.SHARD_PREFIX) for tag in histograms)


@pytest.mark.parametrize("kind", ["fsdp1", "fsdp1_flat"])
def test_under_fsdp_s_older_wrapper_what_flat_slices_hide_is_said_once(sharded_runs, kind):
    """Its slices carry no weight's shape: no initialization check. Without
    use_orig_params, its flat parameters hold whole units: no weight histograms."""
    log_dir, _ = sharded_runs
    data = json.loads((log_dir / kind / "run.json").read_text())
    assert data["init_check"] == []
    (error,) = data["collector_errors"]
    assert error.startswith("sharded parameters: ValueError: the model is sharded: the initialization check")
    assert ("histograms" in error) == (kind == "fsdp1_flat")
    assert (read_logdir(log_dir / kind).runs["."].histograms == {}) == (kind == "fsdp1_flat")
