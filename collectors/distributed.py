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
    `fully_shard` whose data-parallel mesh (sharded, or sharded and replicated: HSDP)
    spans every rank. Under tensor parallelism ranks share their examples, and how
    many share them cannot be told from the parameters alone."""
    fsdp_module = getattr(sys.modules.get("torch.distributed.fsdp"), "FSDPModule", None)
    modules = [m for m in model.modules() if fsdp_module is not None and isinstance(m, fsdp_module)]
    if not modules:
        return False
    try:  # FSDP's own record of its data-parallel mesh (private: looked up with care)
        groups = [m._get_fsdp_state()._fsdp_param_group for m in modules]  # type: ignore[operator]
        meshes = [group.mesh_info.mesh for group in groups if group is not None]
    except Exception:  # noqa: BLE001  # whatever a torch version changed there: the parameters' meshes, 1-D
        meshes = [p.device_mesh for p in model.parameters() if getattr(p, "device_mesh", None) is not None]
        meshes = [mesh for mesh in meshes if mesh.ndim == 1]
    return bool(meshes) and all(mesh.size() == world_size for mesh in meshes)
