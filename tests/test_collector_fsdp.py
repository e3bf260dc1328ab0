"""FSDP (`fully_shard`): the collector neither breaks nor changes a sharded run.

Each rank holds a shard of every parameter (a DTensor). A norm of one, taken by rank 0
alone, is a collective that the other ranks never join: attached unchanged, the
collector crashed the run at its first statistics step (gloo: "collective mismatch").
So what reads parameters is off and said once; the rest is recorded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from collector_helpers import read_histograms, read_scalars

from logformat import tags as T

fsdp = pytest.importorskip("torch.distributed.fsdp")
pytestmark = pytest.mark.skipif(not hasattr(fsdp, "fully_shard"), reason="needs FSDP2 (fully_shard)")


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory) -> tuple[Path, Path]:
    log_dir = tmp_path_factory.mktemp("fsdp")
    out_dir = tmp_path_factory.mktemp("fsdp_out")
    store = tmp_path_factory.mktemp("fsdp_store") / "store"
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


def test_a_sharded_run_trains_to_the_same_weights_with_the_collector(fsdp_run):
    _, out_dir = fsdp_run
    assert [(out_dir / f"rank{r}.identical").read_text() for r in range(2)] == ["True", "True"]


def test_what_needs_no_parameter_is_recorded_and_the_rest_is_said_once(fsdp_run):
    log_dir, _ = fsdp_run
    scalars = read_scalars(log_dir)
    for tag in (T.TRAIN_LOSS, T.TRAIN_ACC, T.lr_tag(0), T.STEP_SECONDS):
        assert sorted(scalars[tag]) == list(range(6)), tag
    assert sorted(scalars[T.dead_fraction_tag("1")]) == [0, 2, 4]
    assert not any(tag.startswith(("grad/", "update/", "weight/")) for tag in scalars)
    assert read_histograms(log_dir) == {}
    data = json.loads((log_dir / "run.json").read_text())
    assert data["status"] == "finished" and data["init_check"] == []
    assert len(data["collector_errors"]) == 1
    assert data["collector_errors"][0].startswith("sharded parameters: ValueError: the model's parameters are sharded")
