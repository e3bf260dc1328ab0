"""Two-process DistributedDataParallel training on CPU (gloo), each rank with a collector:
with SGD into LOG_DIR, then with `ZeroRedundancyOptimizer` (each rank updates its part
of the parameters, then they are broadcast) into LOG_DIR_zero, whose update ratios and
gradient norms of layer 0, taken directly, go to LOG_DIR_zero.direct.json.

Run as ``python ddp_worker.py LOG_DIR STORE_FILE``; used by test_collector_ddp.py.
"""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from trainscope.collectors import watch
from trainscope.logformat import tags as T

WORLD = 2
STEPS = 10


def worker(rank: int, log_dir: str, store: str) -> None:
    # A file to meet at, not a TCP port: a free port picked beforehand can be taken by
    # another process before rank 0 listens on it.
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(
        nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    )
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
    train_with_zero(f"{log_dir}_zero", X, y)
    dist.barrier()
    dist.destroy_process_group()
    # Everything is written and closed. Skip the interpreter's teardown: gloo's aborted
    # ~1 run in 10 on a loaded machine ("terminate called without an active exception"),
    # as it does after tensor parallelism without any collector (tests/fsdp_worker.py).
    os._exit(0)


def train_with_zero(log_dir: str, X: torch.Tensor, y: torch.Tensor) -> None:
    from torch.distributed.optim import ZeroRedundancyOptimizer

    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(
        nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    )
    opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=torch.optim.SGD, lr=0.1)
    collector = watch(model, opt, log_dir, every=2)
    direct: dict[str, dict[int, float]] = {T.grad_norm_tag("0"): {}, T.update_ratio_tag("0"): {}}
    layer = model.module[0]
    for step in range(STEPS):
        idx = torch.arange(step * 32, step * 32 + 32)
        opt.zero_grad()
        loss = F.cross_entropy(model(X[idx]), y[idx])
        loss.backward()
        before = [p.detach().clone() for p in layer.parameters()]
        direct[T.grad_norm_tag("0")][step] = float(
            torch.cat([p.grad.flatten() for p in layer.parameters()]).norm()
        )
        opt.step()
        delta = torch.cat([(p.detach() - b).flatten() for p, b in zip(layer.parameters(), before)])
        direct[T.update_ratio_tag("0")][step] = float(
            delta.norm() / torch.cat([b.flatten() for b in before]).norm()
        )
        collector.step(loss=loss)
    collector.close()
    if dist.get_rank() == 0:
        with open(f"{log_dir}.direct.json", "w") as fh:
            json.dump(direct, fh)


if __name__ == "__main__":
    mp.spawn(worker, args=(sys.argv[1], sys.argv[2]), nprocs=WORLD, join=True)
