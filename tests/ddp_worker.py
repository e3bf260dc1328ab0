"""Two-process DistributedDataParallel training on CPU (gloo), each rank with a collector.

Run as ``python ddp_worker.py LOG_DIR PORT``; used by test_collector_ddp.py.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from collectors import watch

WORLD = 2
STEPS = 10


def worker(rank: int, log_dir: str, store: str) -> None:
    # A file to meet at, not a TCP port: a free port picked beforehand can be taken by
    # another process before rank 0 listens on it.
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X / 16.0, dtype=torch.float32)[rank::WORLD]
    y = torch.tensor(y)[rank::WORLD]
    collector = watch(model, opt, log_dir, {"batch_size": 32}, every=2)
    for step in range(STEPS):
        idx = torch.arange(step * 32, step * 32 + 32)
        opt.zero_grad()
        out = model(X[idx])
        loss = F.cross_entropy(out, y[idx])
        loss.backward()
        opt.step()
        collector.step(loss=loss, outputs=out, targets=y[idx], inputs=X[idx])
    collector.close()
    dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(worker, args=(sys.argv[1], sys.argv[2]), nprocs=WORLD, join=True)
