"""Statistics of one batch (accuracy, inputs, labels), on the device, sync-free.

Targets outside [0, classes) (e.g. cross-entropy's ignore_index -100) are masked,
never used as indices: an out-of-range index on CUDA is a device assert that would
kill the user's run.

A language model's (batch, tokens, vocabulary) logits come with (batch, tokens) labels
that are either its input ids (a Hugging Face model shifts them inside: the logits of
token t predict the label of token t + 1) or already the next tokens (nanoGPT's
``y = ids[:, 1:]``: the logits of token t predict the label of token t). Only the
inputs tell which (`targets_are_inputs`); the accuracy's plan carries the answer as
its `shift`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

from trainscope.logformat import runjson as RJ

# The class dimension of a language model's (batch, tokens, vocabulary) logits.
TOKEN_CLASS_DIM = 2
# How many tokens on from its logits a language model's label sits: 1 where the labels
# are its input ids (unshifted: the model shifts them), 0 where they are already
# shifted (or a tag per token).
UNSHIFTED_LABELS, SHIFTED_LABELS = 1, 0
# What nn.Embedding takes as indices: an input of these dtypes is token ids.
TOKEN_DTYPES = (torch.int32, torch.int64)


class AccuracyPlan(NamedTuple):
    """How a pairing of logits and labels gives its accuracy (see `accuracy_plan`)."""

    dim: int  # the logits' class dimension
    classes: int
    shift: int = 0  # the logits of token t against the label of token t + shift (language models)


def class_dim(outputs: torch.Tensor | None, targets: torch.Tensor | None) -> int | None:
    """The dimension of `outputs` that holds the class scores of `targets`' labels, for
    the shapes `F.cross_entropy(outputs, targets)` takes as given: (batch, classes) with
    (batch,), and (batch, classes, d1, ...) with (batch, d1, ...), a segmenter's pixels.
    None for any other pairing, a language model's (batch, tokens, vocabulary) logits
    among them (`is_token_pairing`), unless its vocabulary happens to be as long as
    its sequences: the shapes then read as a (batch, classes, length) sequence's."""
    if outputs is None or targets is None or outputs.dim() != targets.dim() + 1 or outputs.dim() < 2:
        return None
    if outputs.shape[0] == targets.shape[0] and outputs.shape[2:] == targets.shape[1:]:
        return 1
    return None


def is_token_pairing(outputs: torch.Tensor | None, targets: torch.Tensor | None) -> bool:
    """Whether these are a language model's (batch, tokens, vocabulary) logits with
    (batch, tokens) labels: a pairing whose labels may or may not be shifted by one
    token, which `class_dim` leaves out."""
    return (
        outputs is not None
        and targets is not None
        and outputs.dim() == 3
        and targets.dim() == 2
        and outputs.shape[:2] == targets.shape
        and class_dim(outputs, targets) is None
    )


def logits_class_dim(outputs: torch.Tensor | None, targets: torch.Tensor | None) -> int | None:
    """The class dimension of `outputs` for `targets`' labels, a language model's too."""
    return TOKEN_CLASS_DIM if is_token_pairing(outputs, targets) else class_dim(outputs, targets)


def accuracy_plan(
    outputs: torch.Tensor, targets: torch.Tensor, num_classes: int | None, token_shift: int | None
) -> AccuracyPlan | None:
    """How these logits and labels give an accuracy, or None where they give none: labels
    that are not integers, shapes `F.cross_entropy` does not pair, or a language model's
    whose `token_shift` (`UNSHIFTED_LABELS` or `SHIFTED_LABELS`) is not known: an
    accuracy against the wrong token would read near zero, so none is guessed."""
    if not is_label_tensor(targets):
        return None
    if is_token_pairing(outputs, targets):
        if token_shift is None:
            return None
        dim, shift = TOKEN_CLASS_DIM, token_shift
    else:
        dim, shift = class_dim(outputs, targets), 0
    classes = class_count(outputs, dim, num_classes)
    if dim is None or classes is None:
        return None
    return AccuracyPlan(dim, classes, shift)


def targets_are_inputs(targets: torch.Tensor, inputs: torch.Tensor, classes: int) -> bool | None:
    """Whether a language model's (batch, tokens) labels are its input ids themselves, as
    a Hugging Face model takes them: the same shape, and every valid label the input id
    at its place (a padded place holds the pad id in the input and ignore_index in the
    labels). Inputs of another shape (already shifted ids, features) are not. None where
    no label is valid: this batch cannot tell. One read of the device, a host sync on a
    GPU: taken once per run."""
    if inputs.shape != targets.shape:
        return False
    inputs = inputs.to(targets.device)  # step(inputs=) may hold them on the host
    valid = (targets >= 0) & (targets < classes)
    same, any_valid = torch.stack((((targets == inputs) | ~valid).all(), valid.any())).tolist()
    return bool(same) if any_valid else None


def input_kind(inputs: Any) -> str | None:
    """What the model's input batch is: token ids (the integers an embedding takes),
    features (floating point), or None (not a tensor, or another dtype: raw uint8
    pixels, booleans)."""
    if not isinstance(inputs, torch.Tensor):
        return None
    if inputs.dtype in TOKEN_DTYPES:
        return RJ.INPUT_TOKENS
    return RJ.INPUT_FEATURES if inputs.is_floating_point() else None


def labels_per_example(targets: torch.Tensor, inputs: torch.Tensor | None) -> bool:
    """Whether `targets` hold one label per example, whose mix across a batch says how
    it was drawn: one dimension, and, where the inputs are token ids, as many labels as
    sequences (a text classifier's). A language model's flattened next tokens are many
    per sequence, and their mix is the language's, sorted data or not."""
    if targets.dim() != 1:
        return False
    if inputs is None or input_kind(inputs) != RJ.INPUT_TOKENS:
        return True
    return targets.shape[0] == inputs.shape[0]


def class_count(outputs: torch.Tensor | None, dim: int | None, num_classes: int | None) -> int | None:
    """Number of classes: `num_classes` if given, else the size of `outputs`' class
    dimension `dim` (see `class_dim`)."""
    if num_classes:
        return num_classes
    if outputs is None or dim is None or outputs.shape[dim] < 2:
        return None
    return int(outputs.shape[dim])


def is_label_tensor(targets: torch.Tensor | None) -> bool:
    return (
        targets is not None
        and not targets.is_floating_point()
        and not targets.is_complex()
        and targets.dim() >= 1
    )


def correct_and_valid(
    outputs: torch.Tensor, targets: torch.Tensor, classes: int, dim: int = 1, shift: int = 0
) -> torch.Tensor:
    """``[correct, valid]`` counts for logits whose dimension `dim` holds the classes
    and integer labels of the other dimensions (a label per example or per pixel), as
    an int64 pair on the device; the writer divides them. A language model's logits
    (`dim` 2) are matched with the labels `shift` tokens on (see `AccuracyPlan`).

    A target outside [0, classes) (cross-entropy's ignore_index -100) never equals an
    argmax, so it cannot count as correct; it is only left out of the denominator.
    Five kernels and no division: inside a CPU training step each small op costs ~7 µs
    of dispatch.
    """
    return correct_and_valid_per_step(outputs.unsqueeze(0), targets.unsqueeze(0), classes, dim, shift)[0]


def correct_and_valid_per_step(
    outputs: torch.Tensor, targets: torch.Tensor, classes: int, dim: int = 1, shift: int = 0
) -> torch.Tensor:
    """`correct_and_valid` of each of S steps' logits and labels stacked along a new
    first dimension (`dim` counts in one step's logits): an (S, 2) tensor of counts."""
    if shift:  # (S, batch, tokens, vocabulary) logits: token t's against the label of t + shift
        outputs, targets = outputs[..., :-shift, :], targets[..., shift:]
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
