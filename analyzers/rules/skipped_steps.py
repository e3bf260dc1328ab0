"""Which NaN/Inf steps training took, and which the optimizer skipped (an AMP GradScaler's overflow steps).

`nonfinite` (is this a divergence?) and `exploding_gradients` (did NaN/Inf follow the
spikes?) ask the same question of the same signals; the one answer lives here so the
two rules never disagree.

An AMP GradScaler finds its loss scale by overflowing: the unscaled gradients are
inf/NaN, it skips ``optimizer.step()`` and halves the scale. Those steps are its normal
signal, not a fault. TrainScope's collector records each skip (``opt/step_skipped``, and
its absence means every step ran); other logs do not, and a Hugging Face Trainer run
with ``fp16=True`` simply logs ``grad_norm: inf`` for the skipped step. There the
curves tell: an update with inf/NaN gradients turns every weight it touches into
NaN/Inf, and every loss and gradient after it with them. So a non-finite gradient norm
that is rare and after which the next loss and the next norm are finite was not
applied: the optimizer skipped it. A non-finite loss is never judged skipped, and
neither are non-finite norms that are frequent or that the log ends on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from trainscope.analyzers.facts import hparams, optimizer_type
from trainscope.analyzers.reading.train_loss import is_training_loss_name
from trainscope.analyzers.run import Run, Series
from trainscope.logformat import runjson as R
from trainscope.logformat import tags as T

# Inferred skips (a log that does not record them): the non-finite gradient-norm points are at most...
INFERRED_SKIP_FEW = 3  # ...3 logged points, or...
INFERRED_SKIP_SHARE = 0.01  # ...1% of the logged norm points on longer logs (GradScaler's settled rate is
# one skip per growth_interval, 2,000 steps by default)...
SCALE_SEARCH_MAX = 16  # ...not counting a streak that opens the log: GradScaler halves its initial scale
# (2**16 by default) on each overflow, so its first steps may all be skipped until the scale fits, 16 at most
# Hyperparameters that say the run trained in float16 under AMP (a GradScaler): supporting evidence only,
# never required (trainer_state.json does not carry the arguments).
FP16_SETTINGS = {
    "fp16": ("true",),  # Hugging Face TrainingArguments
    "use_amp": ("true",),
    "amp": ("true",),
    "mixed_precision": ("fp16",),  # Accelerate
    "precision": ("16", "16-mixed"),  # Lightning
}


@dataclass(frozen=True)
class NonfiniteSteps:
    """The NaN/Inf of a run's loss and gradient-norm signals, split into taken and skipped steps."""

    bad: Mapping[str, np.ndarray]  # signal -> steps where it was NaN/Inf (only signals that were)
    real: np.ndarray  # steps where training took a NaN/Inf (sorted)
    skipped: np.ndarray  # steps with NaN/Inf gradients that the optimizer skipped (sorted)
    inferred: bool  # `skipped` judged from the curves: the log does not record skipped steps


def loss_signals(run: Run) -> dict[str, Series]:
    """``train/loss`` and the training losses the run logs under other names (terms of the loss, a second
    training loss): a NaN in any of them is a NaN in what is being minimized."""
    out = {T.TRAIN_LOSS: run.scalar(T.TRAIN_LOSS)}
    out.update({name: s for name, s in run.unmapped.items() if is_training_loss_name(name) and len(s)})
    return {tag: s for tag, s in out.items() if s is not None}


def norm_signals(run: Run) -> dict[str, Series]:
    """``grad/global_norm`` and the per-layer gradient norms ``grad/norm/*``."""
    out = {T.GRAD_GLOBAL_NORM: run.scalar(T.GRAD_GLOBAL_NORM)}
    out.update({T.GRAD_NORM_PREFIX + name: s for name, s in run.layers(T.GRAD_NORM_PREFIX).items()})
    return {tag: s for tag, s in out.items() if s is not None}


def records_skips(run: Run) -> bool:
    """Whether the log says which steps the optimizer skipped: it logs ``opt/step_skipped``, or it is
    TrainScope's collector watching an optimizer, which writes that tag only when a step is skipped."""
    if run.scalar(T.STEP_SKIPPED) is not None:
        return True
    collector = run.meta.get(R.K_COLLECTOR) if run.meta else None
    return isinstance(collector, Mapping) and optimizer_type(run) not in (None, R.BY_HAND)


def nonfinite_steps(run: Run) -> NonfiniteSteps:
    """Every NaN/Inf of the run's loss and gradient-norm signals, judged taken or skipped (module docstring)."""
    losses, norms = loss_signals(run), norm_signals(run)
    bad = {
        tag: s.steps[~np.isfinite(s.values)]
        for tag, s in {**losses, **norms}.items()
        if not np.isfinite(s.values).all()
    }
    empty = np.zeros(0, np.int64)
    loss_bad = _union([bad[tag] for tag in losses if tag in bad])
    norm_bad = _union([bad[tag] for tag in norms if tag in bad])
    if records_skips(run):
        series = run.scalar(T.STEP_SKIPPED)
        logged = series.steps[series.values >= 0.5] if series is not None else empty
        all_bad = _union([loss_bad, norm_bad])
        skipped = all_bad[np.isin(all_bad, logged)]
        return NonfiniteSteps(bad, all_bad[~np.isin(all_bad, logged)], skipped, inferred=False)
    skipped = _inferred_skips(norm_bad, norms, losses)
    real = _union([loss_bad, norm_bad[~np.isin(norm_bad, skipped)]])
    return NonfiniteSteps(bad, real, skipped, inferred=True)


def fp16_setting(run: Run) -> str | None:
    """The run's own word that it trained in float16 under AMP (``fp16=True``, ``precision=16-mixed``, a
    logged loss scale), for a message to quote; None when it does not say."""
    if run.scalar(T.LOSS_SCALE) is not None:
        return f"it logs the AMP loss scale ({T.LOSS_SCALE})"
    for key, value in hparams(run).items():
        if str(value).strip().lower() in FP16_SETTINGS.get(str(key).lower(), ()):
            return f"its arguments set {key}={value}"
    return None


def _union(arrays: list[np.ndarray]) -> np.ndarray:
    return np.unique(np.concatenate(arrays)).astype(np.int64) if arrays else np.zeros(0, np.int64)


def _inferred_skips(
    norm_bad: np.ndarray, norms: Mapping[str, Series], losses: Mapping[str, Series]
) -> np.ndarray:
    """The non-finite gradient-norm steps the optimizer cannot have applied, on a log that does not record
    skips: all of them when they are few (a streak opening the log, GradScaler finding its scale, aside)
    and each streak of them is followed by a finite norm and a finite loss (where a loss is logged after
    it); none otherwise (one applied NaN poisons every later step, so a judgement that fails for one streak
    speaks for the others)."""
    empty = np.zeros(0, np.int64)
    if norm_bad.shape[0] == 0:
        return empty
    logged = _union([s.steps for s in norms.values()])
    where = np.searchsorted(logged, norm_bad)
    past_opening = np.flatnonzero(where != np.arange(where.shape[0]))  # not among the log's first points
    opening = int(past_opening[0]) if past_opening.shape[0] else where.shape[0]
    if opening > SCALE_SEARCH_MAX:
        return empty
    if norm_bad.shape[0] - opening > max(INFERRED_SKIP_FEW, INFERRED_SKIP_SHARE * logged.shape[0]):
        return empty
    streak_ends = norm_bad[np.r_[np.diff(where) > 1, True]]
    for end in streak_ends:
        if not (logged > end).any():  # the log ends non-finite: nothing says the step was not taken
            return empty
        for s in losses.values():
            later = np.flatnonzero(s.steps > end)
            if later.shape[0] and not np.isfinite(s.values[later[0]]):
                return empty
    return norm_bad
