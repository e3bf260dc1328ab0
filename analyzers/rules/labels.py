"""How mixed the labels of a batch are, against a shuffled batch: `unshuffled_data` and the loss rules.

Sorted data makes the loss follow the order of the classes, so the loss-curve rules
stand aside while `looks_unshuffled` holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from trainscope.analyzers.facts import batch_size, num_classes
from trainscope.analyzers.findings import Skip
from trainscope.analyzers.rules.common import require_points, require_scalar
from trainscope.analyzers.rules.robust import finite_points, value_at
from trainscope.analyzers.run import Run
from trainscope.logformat import tags as T

UNSHUFFLED_RATIO = 0.5  # warning: mean per-batch label entropy below 50% of what a shuffled batch would have
UNSHUFFLED_MIN_SAMPLES = 5  # label-entropy samples (with a usable yardstick) before any verdict
SEEN_MIN_ENTROPY = 0.1  # samples whose labels-seen-so-far entropy is below 0.1 say nothing (few classes yet)


@dataclass(frozen=True)
class LabelMix:
    """How mixed the batches' labels are against what a shuffled batch would hold."""

    ratio: float  # mean per-batch entropy / mean yardstick
    batch_entropy: float
    expected: float
    samples: int
    first_step: int


def label_mix(run: Run) -> LabelMix:
    """Per-batch label entropy against a shuffled batch's; `Skip` when it cannot be judged."""
    batch_s = require_scalar(run, T.LABEL_ENTROPY, "per-batch label entropy")
    seen_s = require_scalar(run, T.LABEL_ENTROPY_SEEN, "entropy of all labels seen so far")
    steps, entropy = finite_points(batch_s)
    seen = value_at(seen_s.steps, seen_s.values, steps)
    usable = np.isfinite(seen) & (seen >= SEEN_MIN_ENTROPY)
    require_points(int(usable.sum()), UNSHUFFLED_MIN_SAMPLES, "label-entropy samples")
    steps, entropy, seen = steps[usable], entropy[usable], seen[usable]
    batch, classes = batch_size(run), num_classes(run)
    yardstick = seen.copy()
    if batch and classes and batch < classes:
        # A batch of B examples holds at most B classes: ln(B)/ln(C) is its highest normalized entropy.
        yardstick = np.minimum(yardstick, math.log(batch) / math.log(classes))
    expected = float(yardstick.mean())
    if expected < SEEN_MIN_ENTROPY:
        raise Skip(f"batches of {batch} hold too few labels to tell sorted data from shuffled data")
    mean = float(entropy.mean())
    return LabelMix(mean / expected, mean, expected, int(entropy.shape[0]), int(steps[0]))


def looks_unshuffled(run: Run) -> bool:
    """True when `unshuffled_data` would fire: loss-curve rules then have nothing to say about the lr."""
    try:
        return label_mix(run).ratio < UNSHUFFLED_RATIO
    except Skip:
        return False
