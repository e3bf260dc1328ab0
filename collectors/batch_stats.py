"""Statistics of one batch (accuracy, inputs, labels), on the device, sync-free.

Targets outside [0, classes) (e.g. cross-entropy's ignore_index -100) are masked,
never used as indices: an out-of-range index on CUDA is a device assert that would
kill the user's run.
"""

from __future__ import annotations

import math

import torch


def class_dim(outputs: torch.Tensor | None, targets: torch.Tensor | None) -> int | None:
    """The dimension of `outputs` that holds the class scores of `targets`' labels, for
    the shapes `F.cross_entropy(outputs, targets)` takes as given: (batch, classes) with
    (batch,), and (batch, classes, d1, ...) with (batch, d1, ...), a segmenter's pixels.
    None for any other pairing. A language model's (batch, tokens, vocabulary) logits
    are among those: whether its labels are already shifted by one token (Hugging Face
    models shift them inside) cannot be seen, and an accuracy against the wrong token
    would read near zero. Pass them flattened, shifted as the loss takes them."""
    if outputs is None or targets is None or outputs.dim() != targets.dim() + 1 or outputs.dim() < 2:
        return None
    if outputs.shape[0] == targets.shape[0] and outputs.shape[2:] == targets.shape[1:]:
        return 1
    return None


def class_count(outputs: torch.Tensor | None, dim: int | None, num_classes: int | None) -> int | None:
    """Number of classes: `num_classes` if given, else the size of `outputs`' class
    dimension `dim` (see `class_dim`)."""
    if num_classes:
        return num_classes
    if outputs is None or dim is None or outputs.shape[dim] < 2:
        return None
    return int(outputs.shape[dim])


def is_label_tensor(targets: torch.Tensor | None) -> bool:
    return targets is not None and not targets.is_floating_point() and not targets.is_complex() and targets.dim() >= 1


def correct_and_valid(outputs: torch.Tensor, targets: torch.Tensor, classes: int, dim: int = 1) -> torch.Tensor:
    """``[correct, valid]`` counts for logits whose dimension `dim` holds the classes
    and integer labels of the other dimensions (a label per example or per pixel), as
    an int64 pair on the device; the writer divides them.

    A target outside [0, classes) (cross-entropy's ignore_index -100) never equals an
    argmax, so it cannot count as correct; it is only left out of the denominator.
    Five kernels and no division: inside a CPU training step each small op costs ~7 µs
    of dispatch.
    """
    return correct_and_valid_per_step(outputs.unsqueeze(0), targets.unsqueeze(0), classes, dim)[0]


def correct_and_valid_per_step(outputs: torch.Tensor, targets: torch.Tensor, classes: int, dim: int = 1) -> torch.Tensor:
    """`correct_and_valid` of each of S steps' logits and labels stacked along a new
    first dimension (`dim` counts in one step's logits): an (S, 2) tensor of counts."""
    # Integer results: autograd records nothing, so no `no_grad` block is needed.
    in_range = targets.clamp(0, classes - 1)  # equals the target where it is valid
    matches = torch.stack((outputs.argmax(dim=dim + 1), in_range)) == targets
    return matches.flatten(2).sum(dim=2).T


def label_counts(targets: torch.Tensor, classes: int) -> torch.Tensor:
    with torch.no_grad():
        t = targets.detach().reshape(-1)
        valid = ((t >= 0) & (t < classes)).float()
        return torch.zeros(classes, device=t.device).scatter_add_(0, t.clamp(0, classes - 1).long(), valid)


def normalized_entropy(counts: torch.Tensor) -> torch.Tensor:
    """Entropy of the label distribution ÷ log(classes): 1 = uniform, 0 = one class."""
    p = counts / counts.sum().clamp_min(1)
    h = -(p * p.clamp_min(1e-30).log()).sum()
    return h / math.log(counts.shape[0])


def input_moments(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (population) standard deviation over every element of the batch."""
    with torch.no_grad():
        x = inputs.detach().float()
        return x.mean(), x.std(correction=0)
