"""Mapping foreign tag names onto the canonical tags of `logformat.tags`.

A table of `TagRule`s, tried in order: the first rule whose pattern matches the
whole foreign name gives its canonical tag. When several foreign tags of one run map
to the same canonical tag, the one matched by the earlier rule wins and the others
stay unmapped (shown, not diagnosed). A user extends the table by passing rules of
their own (`TagMapper(extra=...)`, or ``--map PATTERN=TAG`` on the command line);
they are tried before the defaults.

Names seen by the mapper are the tags as logged, except that sub-runs folded into
their parent run carry their directory: Keras's ``validation/epoch_loss`` and
``train/epoch_loss``; ``add_scalars("Loss", {"train": ...})``'s ``Loss/train``.
A name no rule matches is tried again without a trailing qualifier in parentheses
that only says how it was averaged or its unit (`_without_qualifier`:
``Test loss (avg on test)``, ``Val accuracy (%)``).

A run's validation curve may be named after a "test" set (a loop that evaluates on
its test split each epoch): those rules rank below every validation rule, so a run
that logs both keeps its val curve and shows the test one unmapped. Top-1 accuracy
(``val_top1``, ``acc1``, ``Acc@1``) named after a split is accuracy; top-5 never is.
A validation curve whose name adds only words that say how it was averaged
(``average_val_loss``, ``val_loss_per_token``) is that curve, ranked below the plain
names; a name with any other word (``val_loss_std``, ``best_val_loss``) is not.

`axis` says what a rule's steps count: "step" (optimizer steps, the default) or
"epoch" (Keras's ``epoch_*`` summaries). The run records epoch-indexed tags, and a
run prefers, for its other tags, rules on the same axis as its training loss, so that
train and validation curves are compared on one axis.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from trainscope.logformat import tags as T

Kind = Literal["scalar", "histogram"]
Axis = Literal["step", "epoch"]
Target = str | Callable[[re.Match[str]], str | None]

STEP_AXIS: Axis = "step"
EPOCH_AXIS: Axis = "epoch"

# Canonical scalar tags that are not per-layer: every upper-case string constant of
# logformat.tags except the prefixes, so a tag added there is canonical here too.
CANONICAL_SCALARS = frozenset(
    value
    for name, value in vars(T).items()
    if name.isupper() and isinstance(value, str) and not name.endswith("_PREFIX")
)
_SCALAR_PREFIXES = (
    *(p for p in T.PER_LAYER_PREFIXES if p not in (T.HIST_WEIGHT_PREFIX, T.HIST_GRAD_PREFIX)),
    *T.PER_SET_PREFIXES,
)
_HIST_PREFIXES = (T.HIST_WEIGHT_PREFIX, T.HIST_GRAD_PREFIX)
_LR_GROUP = re.compile(re.escape(T.LR) + r"/group[1-9]\d*")
_RANK = re.compile(re.escape(T.STEP_SECONDS_RANK_PREFIX) + r"\d+")


def is_canonical(tag: str, kind: Kind = "scalar") -> bool:
    """Whether `tag` is one of the canonical names of its kind (see DESIGN.md)."""
    if kind == "histogram":
        return any(tag.startswith(p) and len(tag) > len(p) for p in _HIST_PREFIXES)
    if tag in CANONICAL_SCALARS or _LR_GROUP.fullmatch(tag) or _RANK.fullmatch(tag):
        return True
    return any(tag.startswith(p) and len(tag) > len(p) for p in _SCALAR_PREFIXES)


@dataclass(frozen=True)
class TagRule:
    """``pattern`` (a regular expression matched against the whole foreign name) -> ``target``.

    ``target`` is a canonical tag, may use the pattern's groups (``r"grad/norm/\\1"``),
    or is a function of the match returning the tag (or None for "no match").
    """

    pattern: str
    target: Target
    kind: Kind = "scalar"
    axis: Axis = STEP_AXIS
    ignore_case: bool = True
    # Stands for `target` only where nothing else does: a "test" curve is the validation
    # curve of a run that has no val curve of its own, never beside one (see `assemble`).
    stand_in: bool = False

    def __post_init__(self) -> None:
        re.compile(self.pattern)  # fail early on a bad pattern
        if (
            isinstance(self.target, str)
            and "\\" not in self.target
            and not is_canonical(self.target, self.kind)
        ):
            raise ValueError(f"{self.target!r} is not a canonical {self.kind} tag (see logformat.tags)")


@dataclass(frozen=True)
class Mapped:
    tag: str  # canonical tag
    rank: int  # index of the rule that matched: lower wins a conflict
    axis: Axis
    stand_in: bool = False  # the rule's `TagRule.stand_in`


def _lightning_lr_group(match: re.Match[str]) -> str | None:
    group = int(match.group(1)) - 1  # LearningRateMonitor counts param groups from 1
    return T.lr_tag(group) if group >= 0 else None


# Building blocks of the hand-written names: a split word, a separator, a metric word.
_SEP = r"[/_\-. ]"
_TRAIN = r"(?:train|training|trn)"
_VAL = r"(?:val|valid|validation|eval|evaluation|dev)"
_TEST = r"(?:test|testing)"
_LOSS = r"loss"
_ACC = r"(?:acc|accuracy)"
# Named after a split, top-1 accuracy is accuracy too (timm's eval_top1, torchvision's
# and timm's acc1, Acc@1); top-5 is not. Alone, "top1" or "acc1" names no split: unmapped.
_SPLIT_ACC = r"(?:acc|accuracy|acc@?1|top-?1(?:[_-]?acc(?:uracy)?)?)"
_LR_WORD = r"(?:lr|learning[_ ]?rate)"
# Words that say "an average of the curve", not another statistic of it (std, min, best):
# a hand-written loop's ``average_val_loss``, and the training loss's fallback
# (reading.train_loss) reads its ``mean_loss`` by the same words.
MEAN_WORDS = frozenset({"mean", "avg", "average", "running", "smoothed", "smooth", "ema"})
# In a validation curve's name, words that only say how it was averaged: a mean word,
# once per epoch, or per token or sample (an LM's loss per token is its loss).
_UNIT = r"(?:token|tok|sample|example|item)s?"
_AVERAGED = rf"(?:{'|'.join(sorted(MEAN_WORDS, key=lambda w: (-len(w), w)))}|epoch|per{_SEP}?{_UNIT})"


def _either_order(split: str, metric: str, suffix: str = "") -> str:
    """``split<sep>metric`` or ``metric<sep>split``, e.g. ``train_loss`` and ``Loss/train``."""
    return rf"(?:{split}{_SEP}?{metric}|{metric}{_SEP}{split}){suffix}"


def _averaged(split: str, metric: str) -> str:
    """`split` and `metric` once each, in either order, with words of `_AVERAGED` before,
    between or after them: ``average_val_loss``, ``val_avg_loss``, ``Loss/val_mean``.
    Any other word (``val_loss_std``, ``best_val_loss``, ``val_acc_top5``) is no match."""
    words = rf"(?:{_SEP}?{_AVERAGED})*"
    first = rf"(?:{_AVERAGED}{_SEP}?)*"
    return rf"{first}(?:{split}{words}{_SEP}?{metric}|{metric}{words}{_SEP}{split}){words}"


# In order of preference. Lightning: `self.log("train_loss", on_step=True, on_epoch=True)`
# writes train_loss_step (per step) and train_loss_epoch (a per-epoch mean, ranked
# below it: it wins only where it has clearly more points, see `assemble`);
# validation metrics are per-epoch means already (val_loss, val_loss_epoch).
DEFAULT_RULES: tuple[TagRule, ...] = (
    # Keras with update_freq="batch": per-iteration curves beat per-epoch ones.
    TagRule(r"train/batch_loss", T.TRAIN_LOSS),
    TagRule(rf"train/batch_{_ACC}", T.TRAIN_ACC),
    TagRule(r"validation/evaluation_loss_vs_iterations", T.VAL_LOSS),
    TagRule(rf"validation/evaluation_{_ACC}_vs_iterations", T.VAL_ACC),
    # Training loss and accuracy per step (Lightning, Hugging Face, hand-written).
    TagRule(_either_order(_TRAIN, _LOSS, r"(?:[_/](?:step|batch))?"), T.TRAIN_LOSS),
    TagRule(_either_order(_TRAIN, _SPLIT_ACC, r"(?:[_/](?:step|batch))?"), T.TRAIN_ACC),
    # Validation loss and accuracy (Lightning val_loss, HF eval/loss, Loss/validation ...).
    TagRule(_either_order(_VAL, _LOSS, r"(?:_epoch)?"), T.VAL_LOSS),
    TagRule(_either_order(_VAL, _SPLIT_ACC, r"(?:_epoch)?"), T.VAL_ACC),
    # A bare "loss" or "accuracy" is the training one in Lightning and Keras logs
    # (Keras's CSVLogger writes loss, accuracy, val_loss, val_accuracy).
    TagRule(r"(?:batch_|step_)?loss(?:_step)?", T.TRAIN_LOSS),
    TagRule(rf"(?:batch_|step_)?{_ACC}(?:_step)?", T.TRAIN_ACC),
    # Lightning's per-epoch means of the training loss and accuracy.
    TagRule(_either_order(_TRAIN, _LOSS, r"_epoch"), T.TRAIN_LOSS),
    TagRule(r"loss_epoch", T.TRAIN_LOSS),
    TagRule(_either_order(_TRAIN, _SPLIT_ACC, r"_epoch"), T.TRAIN_ACC),
    TagRule(rf"{_ACC}_epoch", T.TRAIN_ACC),
    # Learning rate: Lightning's LearningRateMonitor (lr-SGD, lr-Adam/pg2), HF, hand-written.
    TagRule(r"lr-[A-Za-z]\w*", T.LR, ignore_case=False),
    TagRule(r"lr-[A-Za-z]\w*/pg(\d+)", _lightning_lr_group, ignore_case=False),
    TagRule(rf"(?:{_TRAIN}{_SEP})?(?:opt{_SEP}|optim{_SEP}|optimizer{_SEP})?{_LR_WORD}", T.LR),
    # Gradient norms: HF train/grad_norm, Lightning's grad_norm() utility, hand-written.
    TagRule(r"(?:train/)?grad(?:ient)?_?norm(?:/total|_total)?", T.GRAD_GLOBAL_NORM),
    TagRule(r"grad_2(?:\.0)?_norm_total", T.GRAD_GLOBAL_NORM),
    # Per-layer norms logged per parameter: the weight's norm stands for its layer's.
    TagRule(
        r"(?:grad_2(?:\.0)?_norm|grad_norm|gradient_norm|grad_norms)/(.+)\.weight", T.GRAD_NORM_PREFIX + r"\1"
    ),
    TagRule(r"(?:weight_norm|weight_norms|param_norm)/(.+)\.weight", T.WEIGHT_NORM_PREFIX + r"\1"),
    # Keras per-epoch summaries (train/ and validation/ sub-directories), step = epoch.
    TagRule(r"train/epoch_loss", T.TRAIN_LOSS, axis=EPOCH_AXIS),
    TagRule(rf"train/epoch_{_ACC}", T.TRAIN_ACC, axis=EPOCH_AXIS),
    TagRule(r"validation/epoch_loss", T.VAL_LOSS, axis=EPOCH_AXIS),
    TagRule(rf"validation/epoch_{_ACC}", T.VAL_ACC, axis=EPOCH_AXIS),
    TagRule(r"train/epoch_learning_rate", T.LR, axis=EPOCH_AXIS),
    # Validation curves named with words that say how they were averaged (a hand-written
    # loop's ``average_val_loss``), below every other val rule: a plain val_loss wins.
    TagRule(_averaged(_VAL, _LOSS), T.VAL_LOSS),
    TagRule(_averaged(_VAL, _SPLIT_ACC), T.VAL_ACC),
    # A loop that evaluates on a set it calls "test" each epoch (SummaryWriter's
    # ``Test loss``, Lightning's test_loss) has that as its validation curve. A stand-in:
    # beside a val curve of its own, however sparse, the test curve stays unmapped.
    TagRule(_either_order(_TEST, _LOSS, r"(?:_epoch)?"), T.VAL_LOSS, stand_in=True),
    TagRule(_either_order(_TEST, _SPLIT_ACC, r"(?:_epoch)?"), T.VAL_ACC, stand_in=True),
    TagRule(_averaged(_TEST, _LOSS), T.VAL_LOSS, stand_in=True),
    TagRule(_averaged(_TEST, _SPLIT_ACC), T.VAL_ACC, stand_in=True),
    # Histograms of `model.named_parameters()` as most scripts log them.
    TagRule(r"(?:grad|grads|gradients)/(.+)\.weight", T.HIST_GRAD_PREFIX + r"\1", kind="histogram"),
    TagRule(r"(.+)\.weight[./_]grad", T.HIST_GRAD_PREFIX + r"\1", kind="histogram"),
    TagRule(
        r"(?:weight|weights|param|params|parameters)/(.+)\.weight",
        T.HIST_WEIGHT_PREFIX + r"\1",
        kind="histogram",
    ),
    TagRule(r"(.+)\.weight", T.HIST_WEIGHT_PREFIX + r"\1", kind="histogram"),
)


# A trailing qualifier in parentheses, as hand-written SummaryWriter tags carry one:
# ``Test loss (avg on test)``, ``Val accuracy (%)``. It may say how the value was
# averaged, over what, its unit, and repeat the name's own split; any other word
# (``Loss (std)``, ``loss (val)``) may change what the name means, and keeps it as it is.
_QUALIFIED = re.compile(r"(?P<name>.*[^\s(])\s*\((?P<note>[^()]*)\)")
_QUALIFIER_WORDS = frozenset(
    {"avg", "average", "averaged", "mean", "on", "over", "per", "of", "the", "across", "in", "whole"}
    | {"full", "all", "epoch", "epochs", "batch", "batches", "step", "steps", "set", "data", "dataset"}
    | {"%", "percent"}
)
_SPLITS = tuple(re.compile(rf"(?<![a-z]){split}(?![a-z])", re.IGNORECASE) for split in (_TRAIN, _VAL, _TEST))


def _without_qualifier(tag: str) -> str | None:
    """``Test loss (avg on test)`` -> ``Test loss``; None when `tag` ends in no qualifier
    that may be dropped (see `_QUALIFIER_WORDS`)."""
    match = _QUALIFIED.fullmatch(tag)
    if match is None:
        return None
    name, note = match.group("name", "note")
    named = [split for split in _SPLITS if split.search(name)]
    for word in re.findall(r"[^\W_]+|%", note.lower()):
        if word not in _QUALIFIER_WORDS and not any(split.fullmatch(word) for split in named):
            return None
    return name


def parse_rule(text: str) -> TagRule:
    """``"PATTERN=TAG"`` (the command line's ``--map``) -> a rule; the kind follows from TAG."""
    pattern, sep, target = text.rpartition("=")
    if not sep or not pattern or not target:
        raise ValueError(f"expected PATTERN=TAG, got {text!r}")
    kind: Kind = "histogram" if target.startswith((T.HIST_WEIGHT_PREFIX, T.HIST_GRAD_PREFIX)) else "scalar"
    try:
        return TagRule(pattern, target, kind=kind)
    except re.error as exc:
        raise ValueError(f"bad pattern {pattern!r}: {exc}") from exc


class TagMapper:
    """Maps foreign names; remembers its answers (a run has few distinct tags)."""

    def __init__(self, extra: Iterable[TagRule] = (), defaults: Iterable[TagRule] = DEFAULT_RULES) -> None:
        self.rules: tuple[TagRule, ...] = tuple(extra) + tuple(defaults)
        self._user = len(tuple(extra))
        self._compiled = [re.compile(r.pattern, re.IGNORECASE if r.ignore_case else 0) for r in self.rules]
        self._cache: dict[tuple[str, Kind], Mapped | None] = {}

    def from_user(self, mapped: Mapped) -> bool:
        """Whether `mapped` came from one of the user's rules (which always win a conflict)."""
        return mapped.rank < self._user

    def map(self, tag: str, kind: Kind = "scalar") -> Mapped | None:
        key = (tag, kind)
        if key in self._cache:
            return self._cache[key]
        result = self._map(tag, kind)
        if len(self._cache) < 100_000:
            self._cache[key] = result
        return result

    def _map(self, tag: str, kind: Kind) -> Mapped | None:
        mapped = self._match(tag, kind)
        if mapped is None and kind == "scalar":
            plain = _without_qualifier(tag)
            if plain is not None:
                mapped = self._match(plain, kind)
        return mapped

    def _match(self, tag: str, kind: Kind) -> Mapped | None:
        for rank, (rule, regex) in enumerate(zip(self.rules, self._compiled)):
            if rank == self._user and is_canonical(tag, kind):
                return Mapped(tag, rank, STEP_AXIS)  # canonical names map to themselves
            if rule.kind != kind:
                continue
            match = regex.fullmatch(tag)
            if match is None:
                continue
            target = rule.target(match) if callable(rule.target) else match.expand(rule.target)
            if target and is_canonical(target, kind):
                return Mapped(target, rank if rank < self._user else rank + 1, rule.axis, rule.stand_in)
        if self._user == len(self.rules) and is_canonical(tag, kind):
            return Mapped(tag, len(self.rules), STEP_AXIS)
        return None
