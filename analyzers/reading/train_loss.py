"""Choosing the training loss of a run that names none as one.

Every loss rule reads ``train/loss``. Many logs never write a series the tag map knows
as the training loss: a hand-written loop logs ``mean_loss`` or ``total_loss``, a
multi-task model logs its terms (``recon_loss``, ``kl_loss``) and no total. Leaving
such a run without a training loss skips every loss rule, so the reader picks the
series the training loss most plausibly is:

1. A whole-loss series: a name made of "loss" and aggregate words only (``total_loss``,
   ``loss_total``, ``mean_loss``, ``avg_loss``, ``train_epoch_loss``). Totals come
   before means, means before the rest; then the series with more points.
2. Else the terms of the loss, several series named ``<term>_loss`` on the same steps:
   their sum, as one series named ``sum(a_loss, b_loss)`` (the total up to the terms'
   weights, which the log does not say). The group with the most points wins; the
   terms of an adversarial pair (generator and discriminator) are not summed.
3. Else a single loss-like series, when it is the only one.

Never a validation or test series. `Run.tag_origins` names the series taken (or the
sum), so a reader of a finding can see which curve it rests on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from trainscope.analyzers.reading.tagmap import MEAN_WORDS
from trainscope.analyzers.run import Series

_LOSS_WORDS = frozenset({"loss", "losses"})
# Words that say "held-out data": such a series is never the training loss.
_HELD_OUT_WORDS = frozenset(
    {"val", "valid", "validation", "eval", "evaluation", "dev", "test", "testing", "holdout", "heldout"}
)
# Words that say "the whole loss": a total of the terms ...
_TOTAL_WORDS = frozenset({"total", "overall", "sum", "full", "combined", "all"})
# ... or an average of it (MEAN_WORDS, shared with the tag map's averaged val names) ...
# ... or words that only say where or how often it was logged.
_PLAIN_WORDS = frozenset({"train", "training", "trn", "epoch", "step", "batch", "iter", "iteration"})
_WHOLE_WORDS = _LOSS_WORDS | _TOTAL_WORDS | MEAN_WORDS | _PLAIN_WORDS
# Terms of an adversarial pair pull against each other; their sum is no training loss.
_ADVERSARIAL_WORDS = frozenset(
    {"g", "d", "gen", "disc", "generator", "discriminator", "adv", "adversarial", "critic"}
)
# A camelCase word, an all-capitals word, or a number.
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
SUM_NAME = "sum({})"


def words(name: str) -> frozenset[str]:
    """The lower-case words of a series name (``"train/totalLoss_2"`` -> train, total, loss, 2)."""
    return frozenset(w.lower() for w in _WORD.findall(name))


def is_training_loss_name(name: str) -> bool:
    """Whether a series name says "a training loss, or a term of it" (never held-out data)."""
    ws = words(name)
    return bool(ws & _LOSS_WORDS) and not ws & _HELD_OUT_WORDS


def choose_train_loss(unmapped: Mapping[str, Series]) -> tuple[str, Series] | None:
    """``(origin, series)`` for the training loss among unmapped series, or None.

    `origin` is the name of the series taken, or ``sum(a, b)`` for a sum of terms that
    is not itself among `unmapped`.
    """
    whole: list[tuple[int, int, str]] = []
    terms: list[str] = []
    for name, series in unmapped.items():
        ws = words(name)
        if not (ws & _LOSS_WORDS) or ws & _HELD_OUT_WORDS or not len(series):
            continue
        if ws <= _WHOLE_WORDS:
            tier = 0 if ws & _TOTAL_WORDS else 1 if ws & MEAN_WORDS else 2
            whole.append((tier, -len(series), name))
        else:
            terms.append(name)
    if whole:
        name = min(whole)[2]
        return name, unmapped[name]
    summed = _sum_of_terms(terms, unmapped)
    if summed is not None:
        return summed
    if len(terms) == 1:
        return terms[0], unmapped[terms[0]]
    return None


def _sum_of_terms(terms: list[str], unmapped: Mapping[str, Series]) -> tuple[str, Series] | None:
    if any(words(name) & _ADVERSARIAL_WORDS for name in terms):
        return None
    groups: list[list[str]] = []
    for name in sorted(terms):
        for group in groups:
            if np.array_equal(unmapped[group[0]].steps, unmapped[name].steps):
                group.append(name)
                break
        else:
            groups.append([name])
    groups = [g for g in groups if len(g) >= 2]
    if not groups:
        return None
    best = max(groups, key=lambda g: (len(unmapped[g[0]]), len(g)))
    parts = [unmapped[name] for name in best]
    values = np.sum([p.values for p in parts], axis=0)
    walls = None
    if all(p.wall_times is not None for p in parts):
        walls = np.fmax.reduce([p.wall_times for p in parts], axis=0)  # NaN-tolerant
    return SUM_NAME.format(", ".join(best)), Series(parts[0].steps, values, walls)
