"""Histograms computed on the device, packed as one flat tensor, no host sync.

`torch.histc` needs the range as Python numbers (a sync on CUDA) and `bincount`
sizes its output from the data (another sync); bucket indices from the device-side
min/max plus a 1-D `scatter_add_` avoid both. On CPU there is nothing to sync, and
`bincount` of int32 indices counts a 400k-weight layer in 0.19 ms where int64
indices and `scatter_add_` take 0.29 ms.
"""

from __future__ import annotations

import numpy as np
import torch

from trainscope.logformat.events import Histogram

_HEAD = 4  # min, max, sum, sum of squares


def pack_histogram(x: torch.Tensor, bins: int) -> torch.Tensor:
    """``[min, max, sum, sum_sq, count_0 .. count_{bins-1}]`` as float32 on x's device."""
    x = x.detach().reshape(-1).float()
    lo, hi = torch.aminmax(x)
    scale = bins / (hi - lo).clamp_min(1e-12)
    # Bucket = floor((x - lo) * scale) in one fused pass, then fixed up in place: each
    # temporary the size of x can be a fresh allocation that the CPU page-faults in
    # (a 400k-weight layer: 0.7 ms this way, up to 2.7 ms with the three temporaries
    # of `(x - lo) * scale` then `nan_to_num`).
    bucket = torch.addcmul(-lo * scale, x, scale).nan_to_num_(0.0).clamp_(0, bins - 1)
    if x.is_cpu:
        counts = torch.bincount(bucket.int(), minlength=bins).float()
    else:
        counts = torch.zeros(bins, device=x.device).scatter_add_(0, bucket.long(), torch.ones_like(x))
    return torch.cat([torch.stack([lo, hi, x.sum(), torch.dot(x, x)]), counts])


def packed_size(bins: int) -> int:
    return _HEAD + bins


def unpack_histogram(values: np.ndarray, share: float = 1.0) -> Histogram:
    """`share`: what a sharded model's shard stands for (counts and sums are scaled by it)."""
    lo, hi, total, total_sq = (float(v) for v in values[:_HEAD])
    total, total_sq = total * share, total_sq * share
    counts = values[_HEAD:].astype(np.float64) * share
    edges = np.linspace(lo, hi, counts.shape[0] + 1) if hi > lo else np.full(counts.shape[0] + 1, lo)
    return Histogram(
        min=lo,
        max=hi,
        num=float(counts.sum()),
        sum=total,
        sum_squares=total_sq,
        bucket_limit=edges[1:].tolist(),
        bucket=counts.tolist(),
    )
