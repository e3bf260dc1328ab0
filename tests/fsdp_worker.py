"""Two CPU processes (gloo) training an MLP whose parameters are sharded, with and
without the collector attached on every rank (run by tests/test_collector_fsdp.py):
with FSDP (`fully_shard`: every parameter split across the ranks), hybrid FSDP (every
parameter whole on both), tensor parallelism (the first layer split by rows, the
second by columns, its bias whole on both ranks), and FSDP's older wrapper with and
without `use_orig_params` (flat slices). The watched run also takes each layer's norms
from the whole tensors (gathered: collectives every rank joins here, as no collector
may), for the test to compare with what the readers sum from the ranks' shards.

    python tests/fsdp_worker.py LOG_DIR STORE_FILE OUT_DIR
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainscope.collectors import watch
from trainscope.logformat.noise import NoiseScaleEMA, two_batch_estimate

WORLD = 2
STEPS = 6
EVERY = 2  # sampled steps 0, 2, 4: update ratios and weight norms; noise windows of 2 steps
BATCH = 32
LAYERS = ("0", "2")


def fsdp_model(hybrid: bool = False) -> nn.Module:
    """FSDP: every tensor split across both ranks. Hybrid (HSDP): a mesh of 2 replicas
    of 1 shard each, every tensor whole on both ranks (a weight of 1/2 each)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 33), nn.ReLU(), nn.Linear(33, 10))  # 33 rows: shards of 17 and 16
    mesh = init_device_mesh("cpu", (WORLD, 1), mesh_dim_names=("replicate", "shard")) if hybrid else None
    for layer in (model[0], model[2]):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def tensor_parallel_model() -> nn.Module:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    mesh = init_device_mesh("cpu", (WORLD,))
    return parallelize_module(model, mesh, {"0": ColwiseParallel(), "2": RowwiseParallel()})


def fsdp1_model(flat: bool) -> nn.Module:
    """FSDP's older wrapper, a unit per Linear: each rank holds a flat slice of each
    unit's parameters; with `use_orig_params=True` a slice of each parameter (the bias
    of the first layer all on rank 1, say), else one flat parameter per unit."""
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 33), nn.ReLU(), nn.Linear(33, 10))
    wrap = ModuleWrapPolicy({nn.Linear})
    return FullyShardedDataParallel(
        model, use_orig_params=not flat, auto_wrap_policy=wrap, device_id=torch.device("cpu")
    )


def whole(kind: str, model: nn.Module, name: str, grad: bool) -> torch.Tensor:
    """Layer `name`'s parameters (or gradients) whole, flattened, from every rank's
    shards: collectives every rank joins, as no collector may."""
    if kind == "fsdp1":  # FSDP's own way to the whole parameters, and their gradients
        from torch.distributed.fsdp import FullyShardedDataParallel

        with FullyShardedDataParallel.summon_full_params(model, writeback=False, with_grads=grad):
            params = model.module[int(name)].parameters()
            return torch.cat([(p.grad if grad else p).detach().flatten() for p in params]).clone()
    if kind == "fsdp1_flat":  # the unit's flat slices, gathered (equal sizes, padded with zeros)
        flat = model.module[int(name)]._flat_param
        local = (flat.grad if grad else flat).detach()
        slices = [torch.empty_like(local) for _ in range(WORLD)]
        dist.all_gather(slices, local)
        return torch.cat(slices)
    params = model[int(name)].parameters()
    return torch.cat([(p.grad if grad else p.detach()).full_tensor().flatten() for p in params])


def whole_weight(kind: str, model: nn.Module, name: str, grad: bool) -> torch.Tensor:
    """Layer `name`'s weight (or its gradient) alone, whole: what its histogram counts."""
    if kind == "fsdp1":
        from torch.distributed.fsdp import FullyShardedDataParallel

        with FullyShardedDataParallel.summon_full_params(model, writeback=False, with_grads=grad):
            weight = model.module[int(name)].weight
            return (weight.grad if grad else weight).detach().clone()
    weight = model[int(name)].weight
    return (weight.grad if grad else weight.detach()).full_tensor()


def ranges(kind: str, model: nn.Module, grad: bool) -> dict[str, list[float]]:
    """Each layer's weight (gradient) histogram as the whole tensor would give it: its
    extremes and its number of values."""
    out = {}
    for name in LAYERS:
        t = whole_weight(kind, model, name, grad)
        out[f"hist/{'grad' if grad else 'weight'}/{name}"] = [
            float(t.min()),
            float(t.max()),
            float(t.numel()),
        ]
    return out


def noise_scales(grads: list[torch.Tensor], batch: int) -> dict[int, float]:
    """B_simple from the whole gradients of every step, windows of EVERY steps, as
    collectors/noise_scale.py estimates it (B_small: every rank's batch together)."""
    ema, scales = NoiseScaleEMA(0.9), {}
    for first in range(0, len(grads), EVERY):
        window = grads[first : first + EVERY]
        small = sum(float(g.square().sum()) for g in window) / len(window)
        big = float((torch.stack(window).sum(0) / len(window)).square().sum())
        scales[first + len(window) - 1] = ema.update(
            *two_batch_estimate(small, big, batch, batch * len(window))
        )
    return scales


def train(
    kind: str,
    log_dir: str | None,
    direct: dict[str, dict[int, float]] | None = None,
    init: dict | None = None,
    hists: dict[int, dict[str, list[float]]] | None = None,
) -> nn.Module:
    if kind.startswith("fsdp1"):
        model = fsdp1_model(flat=kind == "fsdp1_flat")
    else:
        model = tensor_parallel_model() if kind == "tp" else fsdp_model(hybrid=kind == "hsdp")
    if init is not None and not kind.startswith(
        "fsdp1"
    ):  # each checked weight's std and mean at attach, of the whole tensor
        for name in LAYERS:
            weight = model[int(name)].weight.detach().full_tensor()
            init[name] = [float(weight.std()), float(weight.mean())]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    X, y = load_digits(return_X_y=True)
    X, y = torch.tensor(X / 16.0, dtype=torch.float32), torch.tensor(y)
    if kind != "tp":  # data parallel: each rank its own examples; tensor parallel: the same
        rank = dist.get_rank()
        X, y = X[rank::WORLD], y[rank::WORLD]
    settings = {"batch_size": BATCH, "every": EVERY, "histogram_every": EVERY, "flush_steps": 2}
    collector = watch(model, opt, log_dir, **settings) if log_dir else None
    histograms = hists is not None and kind != "fsdp1_flat"  # flat units have no weight to count
    whole_grads = []
    for step in range(STEPS):
        idx = torch.arange(step * BATCH, step * BATCH + BATCH)
        opt.zero_grad()
        out = model(X[idx])
        loss = F.cross_entropy(out, y[idx])
        loss.backward()
        # TP passes the norm clip_grad_norm_ returns (a DTensor); FSDP leaves it to the shards.
        total = torch.nn.utils.clip_grad_norm_(model.parameters(), 1e6) if kind == "tp" else None
        before = {}
        if direct is not None:
            grads = [whole(kind, model, name, grad=True) for name in LAYERS]
            for name, g in zip(LAYERS, grads):
                direct[f"grad/norm/{name}"][step] = float(g.norm())
                before[name] = whole(kind, model, name, grad=False)
            direct["grad/global_norm"][step] = float(torch.cat(grads).norm())
            whole_grads.append(torch.cat(grads).double())
        if histograms and step % EVERY == 0:
            hists[step] = ranges(kind, model, grad=True)  # type: ignore[index]  # read before the update
        opt.step()
        if histograms and step % EVERY == 0:
            hists[step] |= ranges(kind, model, grad=False)  # type: ignore[index]  # and after it
        if direct is not None and step % EVERY == 0:
            for name in LAYERS:
                after = whole(kind, model, name, grad=False)
                direct[f"update/ratio/{name}"][step] = float(
                    (after - before[name]).norm() / before[name].norm()
                )
                direct[f"weight/norm/{name}"][step] = float(after.norm())
        if collector is not None:
            collector.step(loss=loss, outputs=out, targets=y[idx], inputs=X[idx], grad_norm=total)
    if collector is not None:
        collector.close()
    if direct is not None:  # under tensor parallelism the ranks share their examples: one batch in all
        direct["grad/noise_scale"] = noise_scales(whole_grads, BATCH * (1 if kind == "tp" else WORLD))
    return model


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def worker(rank: int, kind: str, log_dir: str, store: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    plain = train(kind, None)
    direct: dict[str, dict[int, float]] = {
        tag: {}
        for name in LAYERS
        for tag in (f"grad/norm/{name}", f"update/ratio/{name}", f"weight/norm/{name}")
    } | {"grad/global_norm": {}}
    init: dict[str, list[float]] = {}
    hists: dict[int, dict[str, list[float]]] = {}
    watched = train(kind, str(Path(log_dir, kind)), direct, init, hists)
    same = all(torch.equal(_local(a), _local(b)) for a, b in zip(plain.parameters(), watched.parameters()))
    Path(out_dir, f"{kind}.rank{rank}.identical").write_text(str(same))
    if rank == 0:
        Path(out_dir, f"{kind}.direct.json").write_text(json.dumps(direct))
        Path(out_dir, f"{kind}.init.json").write_text(json.dumps(init))
        Path(out_dir, f"{kind}.hist.json").write_text(json.dumps(hists))
    dist.barrier()
    dist.destroy_process_group()
    # Everything is written and closed. Skip the interpreter's teardown: after tensor
    # parallelism on gloo it aborted one run in ~25 ("terminate called without an
    # active exception", with every file already written), without the collector too.
    os._exit(0)


if __name__ == "__main__":
    log_dir, store, out_dir = sys.argv[1:4]
    # Each kind in processes of its own: device meshes of one kind left in a process
    # made a later tensor-parallel run crash there (SIGSEGV, one run in ~12).
    for kind in ("fsdp", "hsdp", "tp", "fsdp1", "fsdp1_flat"):
        mp.spawn(worker, args=(kind, log_dir, f"{store}.{kind}", out_dir), nprocs=WORLD, join=True)
