"""The data of the sample runs: scikit-learn's bundled datasets and a generated text, prepared per case.

Nothing is downloaded: `load_digits` (1,797 8x8 grey images, 10 classes),
`load_breast_cancer` (569 x 30 features, 2 classes) and `load_wine` (178 x 13, 3
classes) ship inside scikit-learn, and ``"text"`` is the sentences of
`sample_runs.text`, for a character language model. A case names its dataset and
how it prepares it (`DataSpec`); the faults that live in the data (raw pixel values,
a tiny training subset, classes in sorted order) are preparations here, applied to
the training split only, so the validation split always says how the model really
does. The one exception is the language model's targets (`DataSpec.shift_targets`):
that bug lives where a user builds every batch, training and validation alike, which
is why validation cannot catch it.

A language model's split holds windows of `block_size` token ids as ``x`` (N, T) and
the token each position must predict as ``y`` (N, T): the next one (``y[:, t] =
x[:, t + 1]`` in the text), nanoGPT's ``get_batch`` made into a fixed set of windows
so that an epoch means what it means for the other datasets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from trainscope.sample_runs.text import generate_text

Dataset = Literal["digits", "breast_cancer", "wine", "text"]
# How the features reach the model:
#   "standard": per-feature zero mean / unit variance, statistics from the training split (the right way);
#   "raw":      the values as loaded (digits: 0-16 intensities; the "forgot to normalize" fault);
#   "raw255":   digits' 0-16 intensities scaled to 0-255, as if read from 8-bit image files (the same fault).
Scaling = Literal["standard", "raw", "raw255"]

VAL_FRACTION = 0.2  # held-out share for validation, stratified by class
DIGITS_MAX = 16.0  # load_digits stores intensities 0..16
TEXT_VAL_FRACTION = 0.1  # the language model validates on the text's last 10%, as nanoGPT does


@dataclass(frozen=True)
class DataSpec:
    dataset: Dataset = "digits"
    scaling: Scaling = "standard"
    # Keep only this many training examples (stratified); None keeps the whole training split.
    train_subset: int | None = None
    # Order the training examples by class and never shuffle: each batch then holds one or two classes.
    sorted_by_class: bool = False
    # "text" only: tokens per window (the model's context length); windows start every block_size // 2 tokens.
    block_size: int = 32
    # "text" only: the targets are the inputs shifted by one token (predict the next one). False makes
    # them equal to the inputs, the "forgot to shift" bug: a causal model then only has to copy.
    shift_targets: bool = True


@dataclass(frozen=True)
class Split:
    """Training and validation tensors: float32 features, int64 class labels; or, for
    a language model, int64 token windows (N, T) and the (N, T) token ids they must predict."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    num_classes: int

    @property
    def num_features(self) -> int:
        return int(self.x_train.shape[1])


def _raw(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets  # imported here: only generating runs needs scikit-learn

    loaders: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
        "digits": datasets.load_digits,
        "breast_cancer": datasets.load_breast_cancer,
        "wine": datasets.load_wine,
    }
    x, y = loaders[dataset](return_X_y=True)
    return x.astype(np.float64), y.astype(np.int64)


def stratified_indices(
    y: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(kept, rest): `fraction` of each class in `kept`, both in a random order.

    Stratified so that even a tiny subset holds every class in its true proportion.
    """
    kept, rest = [], []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        k = max(1, int(round(fraction * members.shape[0])))
        kept.append(members[:k])
        rest.append(members[k:])
    return rng.permutation(np.concatenate(kept)), rng.permutation(np.concatenate(rest))


def _scale(
    x_train: np.ndarray, x_val: np.ndarray, scaling: Scaling, dataset: Dataset
) -> tuple[np.ndarray, np.ndarray]:
    if scaling == "standard":
        mean, std = x_train.mean(axis=0), x_train.std(axis=0)
        std = np.where(std > 0, std, 1.0)  # digits has always-blank border pixels
        return (x_train - mean) / std, (x_val - mean) / std
    if scaling == "raw":
        return x_train, x_val
    if dataset != "digits":
        raise ValueError("raw255 scaling is defined for the digits images only")
    factor = 255.0 / DIGITS_MAX
    return x_train * factor, x_val * factor


def encode(text: str) -> tuple[torch.Tensor, str]:
    """(token ids, vocabulary): one token per character, ids in the vocabulary's sorted order."""
    vocab = "".join(sorted(set(text)))
    index = {ch: i for i, ch in enumerate(vocab)}
    return torch.tensor([index[ch] for ch in text], dtype=torch.int64), vocab


def lm_windows(
    ids: torch.Tensor, block_size: int, shift_targets: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y): windows of `block_size` ids starting every ``block_size // 2`` ids, and their
    targets: the window one token later (`shift_targets`), or the window itself."""
    stride = max(1, block_size // 2)
    starts = range(0, ids.shape[0] - block_size, stride)  # leaves the one id the last shifted target needs
    x = torch.stack([ids[s : s + block_size] for s in starts])
    if not shift_targets:
        return x, x.clone()
    return x, torch.stack([ids[s + 1 : s + 1 + block_size] for s in starts])


def _load_text(spec: DataSpec) -> Split:
    if spec.scaling != "standard" or spec.train_subset is not None or spec.sorted_by_class:
        raise ValueError(
            "the text dataset takes block_size and shift_targets; the other DataSpec fields are for features"
        )
    ids, vocab = encode(generate_text())
    cut = int(ids.shape[0] * (1 - TEXT_VAL_FRACTION))
    x_train, y_train = lm_windows(ids[:cut], spec.block_size, spec.shift_targets)
    x_val, y_val = lm_windows(ids[cut:], spec.block_size, spec.shift_targets)
    return Split(x_train, y_train, x_val, y_val, num_classes=len(vocab))


def load(spec: DataSpec, seed: int) -> Split:
    """The case's data, prepared as `spec` says; the same `seed` gives the same split."""
    if spec.dataset == "text":
        return _load_text(spec)  # one fixed text and split: the seed only orders the batches
    x, y = _raw(spec.dataset)
    rng = np.random.default_rng(seed)
    val_idx, train_idx = stratified_indices(y, VAL_FRACTION, rng)
    if spec.train_subset is not None:
        keep, _ = stratified_indices(y[train_idx], spec.train_subset / train_idx.shape[0], rng)
        train_idx = train_idx[keep]
    if spec.sorted_by_class:
        train_idx = train_idx[np.argsort(y[train_idx], kind="stable")]
    x_train, x_val = _scale(x[train_idx], x[val_idx], spec.scaling, spec.dataset)
    return Split(
        x_train=torch.tensor(x_train, dtype=torch.float32),
        y_train=torch.tensor(y[train_idx]),
        x_val=torch.tensor(x_val, dtype=torch.float32),
        y_val=torch.tensor(y[val_idx]),
        num_classes=int(y.max()) + 1,
    )
