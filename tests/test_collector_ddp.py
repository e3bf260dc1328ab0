"""DistributedDataParallel: rank 0 writes the shared tags, every rank its step time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from collector_helpers import read_scalars

from trainscope.logformat import tags as T


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    log_dir = tmp_path_factory.mktemp("ddp")
    store = tmp_path_factory.mktemp("ddp_store") / "store"
    worker = Path(__file__).with_name("ddp_worker.py")
    proc = subprocess.run(
        [sys.executable, str(worker), str(log_dir), str(store)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return log_dir


def test_rank0_writes_shared_tags_and_each_rank_its_step_time(ddp_run):
    files = sorted(p.name for p in ddp_run.iterdir() if "tfevents" in p.name)
    assert len(files) == 2 and files[0].endswith(".rank0") and files[1].endswith(".rank1")
    scalars = read_scalars(ddp_run)
    assert sorted(scalars[T.TRAIN_LOSS]) == list(range(10))
    assert sorted(scalars[T.step_seconds_rank_tag(0)]) == list(range(10))
    assert sorted(scalars[T.step_seconds_rank_tag(1)]) == list(range(10))
    # layer names are the bare model's, not DDP's "module." prefix
    assert T.grad_norm_tag("0") in scalars and not any("module." in tag for tag in scalars)


def test_other_ranks_write_only_their_step_time(ddp_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rank1 = next(p for p in ddp_run.iterdir() if p.name.endswith(".rank1"))
    acc = EventAccumulator(str(rank1), size_guidance={"scalars": 0})
    acc.Reload()
    assert acc.Tags()["scalars"] == [T.step_seconds_rank_tag(1)]


def test_run_json_written_once_by_rank0(ddp_run):
    data = json.loads((ddp_run / "run.json").read_text())
    assert data["world_size"] == 2 and data["status"] == "finished" and data["steps"] == 10
    assert data["data_parallel_ranks"] == 2  # a step's batch is both ranks' batches
    assert [layer["name"] for layer in data["model"]["layers"]] == ["0", "2"]
    assert not list(ddp_run.glob("*.tmp"))


def test_with_a_zero_redundancy_optimizer_the_update_is_read_once_every_rank_has_its_part(ddp_run):
    """`ZeroRedundancyOptimizer` updates each rank's part of the parameters and then
    broadcasts them, all inside `step()`: rank 0's post-step hook sees every
    parameter updated, not only its own part."""
    zero = ddp_run.with_name(ddp_run.name + "_zero")
    direct = json.loads(zero.with_name(zero.name + ".direct.json").read_text())
    scalars = read_scalars(zero)
    ratios = direct[T.update_ratio_tag("0")]
    assert scalars[T.update_ratio_tag("0")] == pytest.approx(
        {s: ratios[str(s)] for s in range(0, 10, 2)}, rel=1e-5
    )
    norms = direct[T.grad_norm_tag("0")]
    assert scalars[T.grad_norm_tag("0")] == pytest.approx({int(s): v for s, v in norms.items()}, rel=1e-5)
    assert json.loads((zero / "run.json").read_text())["collector_errors"] == []
