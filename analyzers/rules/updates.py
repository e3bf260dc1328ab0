"""Update/weight ratios and what blocks updates: shared by the learning-rate and plateau rules.

The ratio ||dw||/||w|| of one optimizer step is the most direct measure of the step
size (CS231n: ~1e-3 is healthy); `update_ratios` summarizes it per layer and over the
model, and `suggested_lr` turns it into a first-guess learning rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainscope.analyzers.facts import NORM_OR_EMBEDDING_TYPES, layer_types, ordered_layers
from trainscope.analyzers.rules.common import fmt, quote
from trainscope.analyzers.rules.curves import lr_series
from trainscope.analyzers.rules.robust import finite_points, state_at, tail_start
from trainscope.analyzers.run import Run
from trainscope.logformat import tags as T

UPDATE_RATIO_HIGH = 0.1  # model median ||dw||/||w|| above this: each step rewrites 10% of the weights
UPDATE_RATIO_LOW = 1e-4  # ||dw||/||w|| below this in every layer: steps too small (TheDeepChecker)

UPDATE_RATIO_TARGET = 1e-3  # healthy ||dw||/||w|| per step (CS231n); suggested learning rates aim at it
UPDATE_MIN_SAMPLES = 5  # update-ratio samples a layer needs before it counts
UPDATE_RECENT = 0.5  # judge update ratios on the most recent half of their samples


@dataclass(frozen=True)
class UpdateRatios:
    model: float  # median over layers of each layer's recent median
    largest: float  # the fastest-moving layer's recent median
    per_layer: dict[str, float]
    first_step: int  # first step of the samples judged


def update_ratios(run: Run, min_lr_share: float | None = None) -> UpdateRatios | None:
    """Recent median update/weight ratio per layer and over the model; None when not logged.

    Steps that did not update (ratio exactly 0: a skipped AMP step) are left out, and
    normalization/embedding layers too (their ratio follows other laws). With
    `min_lr_share`, only samples where ``opt/lr`` was at least that share of its peak
    count, so a schedule's decayed tail does not read as "learning rate too low".
    """
    layers = run.layers(T.UPDATE_RATIO_PREFIX)
    if not layers:
        return None
    types = layer_types(run)
    lr = lr_series(run)
    low_lr = None if min_lr_share is None or lr is None else lr[1] < min_lr_share * lr[1].max()
    per_layer: dict[str, float] = {}
    first_steps = []
    for name in ordered_layers(run, layers):
        if types.get(name) in NORM_OR_EMBEDDING_TYPES:
            continue
        steps, values = finite_points(layers[name])
        keep = values > 0
        if low_lr is not None:
            keep &= ~state_at(lr[0], low_lr, steps)
        steps, values = steps[keep], values[keep]
        if values.shape[0] < UPDATE_MIN_SAMPLES:
            continue
        begin = tail_start(values.shape[0], UPDATE_RECENT, UPDATE_MIN_SAMPLES)
        per_layer[name] = float(np.median(values[begin:]))
        first_steps.append(int(steps[begin]))
    if not per_layer:
        return None
    values = list(per_layer.values())
    return UpdateRatios(float(np.median(values)), float(max(values)), per_layer, min(first_steps))


DEAD_BLOCKS = 0.9  # a layer with > 90% dead units in its latest samples blocks the updates
DEAD_BLOCK_SAMPLES = 3  # ...in each of its last 3 samples


def updates_blocked(run: Run) -> str | None:
    """Why the weights cannot move whatever the lr (dead units, zero gradients), or None.

    Tiny update ratios then come from a broken network, not from a small learning
    rate, and `dead_relu` / `vanishing_gradients` say so.
    """
    for name, series in run.layers(T.DEAD_FRACTION_PREFIX).items():
        _, values = finite_points(series)
        if values.shape[0] >= DEAD_BLOCK_SAMPLES and (values[-DEAD_BLOCK_SAMPLES:] > DEAD_BLOCKS).all():
            return f"the ReLU units of {quote(name)} are dead"
    grads = run.layers(T.GRAD_NORM_PREFIX)
    if grads:
        zero = [name for name, s in grads.items() if (s.values[-UPDATE_MIN_SAMPLES:] == 0).all()]
        if 2 * len(zero) >= len(grads):
            return f"{len(zero)} of {len(grads)} layers get exactly zero gradient"
    return None


def suggested_lr(lr: float | None, ratio: float | None, divisor: float) -> tuple[float | None, str]:
    """A first-guess learning rate and how it was obtained.

    With an update/weight ratio: lr x 1e-3 / ratio (the step size scales with lr for
    SGD-like and Adam-like optimizers alike, so this aims the ratio at its healthy
    value); without one: lr / `divisor` (a divisor < 1 multiplies).
    """
    if lr is None or lr <= 0:
        return None, ""
    if ratio is not None and ratio > 0:
        guess = lr * UPDATE_RATIO_TARGET / ratio
        return guess, f"lr x {fmt(UPDATE_RATIO_TARGET)} / update ratio {fmt(ratio)}, a first guess"
    return lr / divisor, ""
