"""Where this process sits in a distributed run: only rank 0 writes the shared tags."""

from __future__ import annotations

import sys

import torch.distributed as dist
from torch import nn

from trainscope.collectors.layers import has_dtensor_parameters, has_flat_shards


def rank_and_world_size() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def data_parallel_ranks(model: nn.Module, world_size: int) -> int | None:
    """How many ranks train on examples of their own, so that a step's batch is theirs
    together (what the gradient noise scale needs); None when it cannot be told.

    Under DDP and FSDP's older wrapper every rank; under FSDP's `fully_shard` the size
    of its data-parallel mesh (sharded, or sharded and replicated: HSDP), which with
    tensor parallelism beside it is fewer than the ranks; under tensor parallelism
    alone one (its ranks share their examples).
    """
    ddp = getattr(sys.modules.get("torch.nn.parallel"), "DistributedDataParallel", None)
    if ddp is not None and isinstance(model, ddp):
        group = getattr(model, "process_group", None)
        return group.size() if group is not None else world_size
    if has_flat_shards(model):
        return world_size
    fsdp_module = getattr(sys.modules.get("torch.distributed.fsdp"), "FSDPModule", None)
    sharded = [m for m in model.modules() if fsdp_module is not None and isinstance(m, fsdp_module)]
    if not sharded:  # tensor parallelism alone, or no sharding at all
        return 1 if has_dtensor_parameters(model) else world_size
    try:  # FSDP's own record of its data-parallel mesh (private: looked up with care)
        groups = [m._get_fsdp_state()._fsdp_param_group for m in sharded]  # type: ignore[operator]
        sizes = {group.mesh_info.mesh.size() for group in groups if group is not None}
    except Exception:  # noqa: BLE001  # whatever a torch version changed there
        return None
    return sizes.pop() if len(sizes) == 1 else None
