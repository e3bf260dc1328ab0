"""Canonical tag names of a TrainScope run (see DESIGN.md, "The log dir").

Writers build tags only through these names and functions; readers map foreign
names onto them. Per-layer tags are ``<prefix><layer>`` where ``<layer>`` is the
module's qualified name from ``model.named_modules()``.
"""

from __future__ import annotations

# Every step.
TRAIN_LOSS = "train/loss"
TRAIN_ACC = "train/acc"
LR = "opt/lr"
GRAD_GLOBAL_NORM = "grad/global_norm"
STEP_SECONDS = "time/step_seconds"
# 1.0 when the optimizer did not step (an AMP GradScaler skipped an inf/NaN step,
# or step() was called between accumulation micro-batches); lets `nonfinite` tell
# GradScaler's normal inf signal from a real divergence.
STEP_SKIPPED = "opt/step_skipped"
# The AMP GradScaler's loss scale, when a scaler was given to watch().
LOSS_SCALE = "amp/loss_scale"

# Each validation.
VAL_LOSS = "val/loss"
VAL_ACC = "val/acc"
VAL_PREFIX = "val/"
# One named evaluation set among several (Hugging Face Trainer given a dict of eval
# datasets logs eval_<set>_loss): ``val/loss/<set>``, ``val/acc/<set>``. A run keeps a
# plain val/loss beside them only where its log has one.
VAL_LOSS_SET_PREFIX = "val/loss/"
VAL_ACC_SET_PREFIX = "val/acc/"
PER_SET_PREFIXES = (VAL_LOSS_SET_PREFIX, VAL_ACC_SET_PREFIX)

# Every N steps (sampled).
INPUT_MEAN = "input/mean"
INPUT_STD = "input/std"
LABEL_ENTROPY = "data/label_entropy"
# Entropy of all labels seen so far (normalized the same way): the yardstick for
# the per-batch entropy in `unshuffled_data`.
LABEL_ENTROPY_SEEN = "data/label_entropy_seen"
GRAD_NOISE_SCALE = "grad/noise_scale"

# Per-layer prefixes.
GRAD_NORM_PREFIX = "grad/norm/"
UPDATE_RATIO_PREFIX = "update/ratio/"
WEIGHT_NORM_PREFIX = "weight/norm/"
DEAD_FRACTION_PREFIX = "act/dead_fraction/"
SATURATED_FRACTION_PREFIX = "act/saturated_fraction/"
STEP_SECONDS_RANK_PREFIX = "time/step_seconds/rank"

# Histograms.
HIST_WEIGHT_PREFIX = "hist/weight/"
HIST_GRAD_PREFIX = "hist/grad/"

PER_LAYER_PREFIXES = (
    GRAD_NORM_PREFIX,
    UPDATE_RATIO_PREFIX,
    WEIGHT_NORM_PREFIX,
    DEAD_FRACTION_PREFIX,
    SATURATED_FRACTION_PREFIX,
    HIST_WEIGHT_PREFIX,
    HIST_GRAD_PREFIX,
)


def lr_tag(group: int) -> str:
    """Learning-rate tag of optimizer param group `group` (group 0 is plain ``opt/lr``)."""
    return LR if group == 0 else f"{LR}/group{group}"


def val_loss_tag(eval_set: str) -> str:
    """Validation loss on the named evaluation set `eval_set`."""
    return VAL_LOSS_SET_PREFIX + eval_set


def val_acc_tag(eval_set: str) -> str:
    """Validation accuracy on the named evaluation set `eval_set`."""
    return VAL_ACC_SET_PREFIX + eval_set


def grad_norm_tag(layer: str) -> str:
    return GRAD_NORM_PREFIX + layer


def update_ratio_tag(layer: str) -> str:
    return UPDATE_RATIO_PREFIX + layer


def weight_norm_tag(layer: str) -> str:
    return WEIGHT_NORM_PREFIX + layer


def dead_fraction_tag(layer: str) -> str:
    return DEAD_FRACTION_PREFIX + layer


def saturated_fraction_tag(layer: str) -> str:
    return SATURATED_FRACTION_PREFIX + layer


def hist_weight_tag(layer: str) -> str:
    return HIST_WEIGHT_PREFIX + layer


def hist_grad_tag(layer: str) -> str:
    return HIST_GRAD_PREFIX + layer


def step_seconds_rank_tag(rank: int) -> str:
    return f"{STEP_SECONDS_RANK_PREFIX}{rank}"


# Partial sums of a sharded model (FSDP, tensor parallelism), one set
# per rank: each rank can square only the shards it holds, so it records, per layer,
# ``shard/rank<r>/<quantity>/<layer>`` (and per step ``shard/rank<r>/grad_sq``, the
# whole model's), already weighted so that a tensor held whole by several ranks
# (replicated) counts once in the sum over ranks. Readers sum each over the ranks that
# wrote it, at steps where all of them did, into the canonical norms and ratios
# (`analyzers.reading.shards`); the ranks never wait for each other.
SHARD_PREFIX = "shard/rank"


class ShardSquares:
    """What a rank's parts are of (a namespace: these are not tags themselves)."""

    GRAD = "grad_sq"  # ‖g‖² of a statistics step
    UPDATE = "update_sq"  # ‖Δw‖² of a sampled step
    WEIGHT_BEFORE = "weight_before_sq"  # ‖w‖² before that update
    WEIGHT = "weight_sq"  # ‖w‖² after it
    NOISE_BIG = "noise_big_sq"  # |G_big|² of a noise window, at its last step
    # The window's two batch sizes: the same on every rank, so averaged, not summed.
    NOISE_B_SMALL = "noise_b_small"
    NOISE_B_BIG = "noise_b_big"
    ALL = (GRAD, UPDATE, WEIGHT_BEFORE, WEIGHT, NOISE_BIG, NOISE_B_SMALL, NOISE_B_BIG)


class ShardHistograms:
    """A rank's histogram of its shard of a layer's weight or gradient, each on its own
    range; readers merge the ranks' onto the range of them all."""

    WEIGHT = "hist_weight"
    GRAD = "hist_grad"
    ALL = (WEIGHT, GRAD)


class ShardInit:
    """A rank's part of a weight that the initialization check looks at, at attach
    (collectors/init_check.py, `shard_moments`): the count, sum and sum of squares add
    up over the ranks; the minimum and maximum are the least and the greatest."""

    COUNT = "init_count"
    SUM = "init_sum"
    SQUARES = "init_sq"
    MIN = "init_min"
    MAX = "init_max"
    ALL = (COUNT, SUM, SQUARES, MIN, MAX)


def shard_tag(rank: int, quantity: str, layer: str | None = None) -> str:
    """``shard_tag(1, "grad_sq", "0")`` -> ``"shard/rank1/grad_sq/0"``; without a layer,
    the whole model's."""
    tag = f"{SHARD_PREFIX}{rank}/{quantity}"
    return tag if layer is None else f"{tag}/{layer}"


def split_shard_tag(tag: str) -> tuple[int, str, str | None] | None:
    """``"shard/rank1/grad_sq/0"`` -> ``(1, "grad_sq", "0")``; None for other tags."""
    if not tag.startswith(SHARD_PREFIX):
        return None
    rank, _, rest = tag[len(SHARD_PREFIX) :].partition("/")
    quantity, _, layer = rest.partition("/")
    if not rank.isdigit() or quantity not in (*ShardSquares.ALL, *ShardInit.ALL, *ShardHistograms.ALL):
        return None
    return int(rank), quantity, layer or None


def split_layer_tag(tag: str) -> tuple[str, str] | None:
    """``"grad/norm/features.0"`` -> ``("grad/norm/", "features.0")``; None for non-layer tags."""
    for prefix in PER_LAYER_PREFIXES:
        if tag.startswith(prefix) and len(tag) > len(prefix):
            return prefix, tag[len(prefix) :]
    return None
