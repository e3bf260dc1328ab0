"""Weight-sized copies that the collector makes on sampled steps, kept between uses on CPU.

On CPU a fresh multi-megabyte tensor is page-faulted in by the kernel on every use:
copying a 0.8M-parameter model's weights inside a training step took 0.65 ms into new
tensors and 0.15 ms into kept ones (2-core machine). On a GPU, PyTorch's caching
allocator already reuses freed blocks, and a kept buffer would hold device memory
through the next forward pass, when the activations need it, so copies there stay
fresh.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class Scratch:
    """One set of buffers shaped like some tensors; each `copy_of` overwrites the last."""

    def __init__(self) -> None:
        self._kept: list[torch.Tensor] = []

    def copy_of(
        self, tensors: Sequence[torch.Tensor], dtype: torch.dtype | None = None
    ) -> list[torch.Tensor]:
        """Copies of `tensors` (cast to `dtype`), valid until the next call."""
        if not all(t.is_cpu for t in tensors):
            if dtype is not None:
                tensors = [t.to(dtype) for t in tensors]
            return torch._foreach_mul(tensors, 1.0)  # new tensors in one call; x * 1.0 == x, NaN and -0.0 too
        if not self._fits(tensors, dtype):
            self._kept = [torch.empty_like(t, dtype=dtype or t.dtype) for t in tensors]
        torch._foreach_copy_(self._kept, tensors)
        return self._kept

    def _fits(self, tensors: Sequence[torch.Tensor], dtype: torch.dtype | None) -> bool:
        return len(self._kept) == len(tensors) and all(
            k.shape == t.shape and k.dtype == (dtype or t.dtype) and k.device == t.device
            for k, t in zip(self._kept, tensors)
        )
