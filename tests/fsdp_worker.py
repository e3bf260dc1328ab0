"""Two CPU processes (gloo) training an MLP sharded with FSDP (`fully_shard`), with and
without the collector attached on every rank (run by tests/test_collector_fsdp.py).

    python tests/fsdp_worker.py LOG_DIR STORE_FILE OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collectors import watch

WORLD = 2
STEPS = 6


def train(log_dir: str | None) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    for layer in (model[0], model[2]):
        fully_shard(layer)
    fully_shard(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    X, y = load_digits(return_X_y=True)
    rank = dist.get_rank()
    X = torch.tensor(X / 16.0, dtype=torch.float32)[rank::WORLD]
    y = torch.tensor(y)[rank::WORLD]
    collector = watch(model, opt, log_dir, every=2, histogram_every=2, flush_steps=2) if log_dir else None
    for step in range(STEPS):
        idx = torch.arange(step * 32, step * 32 + 32)
        opt.zero_grad()
        out = model(X[idx])
        loss = F.cross_entropy(out, y[idx])
        loss.backward()
        opt.step()
        if collector is not None:
            collector.step(loss=loss, outputs=out, targets=y[idx], inputs=X[idx])
    if collector is not None:
        collector.close()
    return model


def worker(rank: int, log_dir: str, store: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    plain = train(None)
    watched = train(log_dir)
    same = all(torch.equal(a.to_local(), b.to_local()) for a, b in zip(plain.parameters(), watched.parameters()))
    Path(out_dir, f"rank{rank}.identical").write_text(str(same))
    dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(worker, args=(sys.argv[1], sys.argv[2], sys.argv[3]), nprocs=WORLD, join=True)
