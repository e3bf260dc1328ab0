"""Whether torch.compile's CUDA graphs run on a device, which decides whether the loss
may be kept by reference until the flush.

With ``mode="reduce-overhead"`` torch.compile records the compiled code as CUDA graphs
(PyTorch's "CUDA graph trees"), and every replay writes its outputs into the same
memory as the last one. A loss computed inside the compiled region (a Hugging Face
model returns its loss from `forward`) is such an output: kept by reference, it would
be overwritten when the next step's forward runs, and reading it then raises. So on a
device where a graph tree exists, losses are copied at `step()` (one small kernel).

This reads PyTorch internals (torch 2.1 to 2.13 keep the trees per thread and device,
in `torch._inductor.cudagraph_trees`). Should they change, the answer is "no", and the
collector still notices a loss taken back before the flush (`Packet.lost_borrowed`):
that one value is dropped, reported once, and losses are copied from then on.
"""

from __future__ import annotations

import sys

import torch


def cuda_graphs_run_on(device: torch.device) -> bool:
    """Whether a CUDA graph tree of torch.compile exists on `device` in this thread."""
    trees = sys.modules.get("torch._inductor.cudagraph_trees")
    if trees is None or device.type != "cuda":  # nothing compiled with CUDA graphs yet
        return False
    try:
        container = trees.get_obj(trees.local, "tree_manager_containers").get(device.index)
        return container is not None and container.tree_manager is not None
    except Exception:  # noqa: BLE001 - internals of another torch version: see the module's docstring
        return False
