"""Where this process sits in a distributed run: only rank 0 writes the shared tags."""

from __future__ import annotations

import sys

import torch.distributed as dist
from torch import nn


def rank_and_world_size() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def examples_split_across_ranks(model: nn.Module, world_size: int) -> bool:
    """Whether each rank of a sharded model trains on examples of its own, so that a
    step's batch is every rank's together (what the gradient noise scale needs): FSDP's
    `fully_shard` with every sharded parameter on one mesh of all the ranks. Under
    tensor parallelism ranks share their examples, and how many share them cannot be
    told from the parameters (a 2-D mesh of FSDP and tensor parallelism, say)."""
    fsdp_module = getattr(sys.modules.get("torch.distributed.fsdp"), "FSDPModule", None)
    if fsdp_module is None or not any(isinstance(module, fsdp_module) for module in model.modules()):
        return False
    meshes = [p.device_mesh for p in model.parameters() if getattr(p, "device_mesh", None) is not None]
    return all(mesh.ndim == 1 and mesh.size() == world_size for mesh in meshes)
