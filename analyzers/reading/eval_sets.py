"""Named evaluation sets: Hugging Face Trainer given several eval datasets.

``Trainer(eval_dataset={"clean": ..., "noisy": ...})`` evaluates each set under the
prefix ``eval_<set>_`` and logs ``eval_<set>_loss``, ``eval_<set>_accuracy`` (its
TensorBoard callback: ``eval/<set>_loss``), and no plain ``eval_loss``. Each set is a
validation curve of its own: ``val/loss/<set>``, ``val/acc/<set>``.

A name of that shape is not enough: TRL logs ``eval_nll_loss`` and
``eval_mean_token_accuracy`` for the one eval set, where ``nll`` and ``mean_token``
are no sets. Trainer logs ``<prefix>_runtime`` after every evaluation, so a set is a
name for which the run also holds ``eval_<set>_runtime``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from trainscope.logformat import tags as T

# eval_<set>_<metric> as trainer_state.json / MLflow hold it, eval/<set>_<metric> as
# Trainer's TensorBoard and W&B callbacks write it.
_SET_METRIC = re.compile(r"eval[_/](?P<set>\w+?)_(?P<metric>loss|accuracy|acc|runtime)", re.IGNORECASE)
_RUNTIME = "runtime"
_LOSS = "loss"


def eval_set_tags(names: Iterable[str]) -> dict[str, str]:
    """Raw name -> per-set canonical tag, for the names that are a named set's loss or accuracy."""
    parsed: dict[str, tuple[str, str]] = {}
    sets: set[str] = set()
    for name in names:
        match = _SET_METRIC.fullmatch(name)
        if match is None:
            continue
        eval_set, metric = match.group("set"), match.group("metric").lower()
        if metric == _RUNTIME:
            sets.add(eval_set)
        else:
            parsed[name] = (eval_set, metric)
    return {
        name: (T.val_loss_tag(eval_set) if metric == _LOSS else T.val_acc_tag(eval_set))
        for name, (eval_set, metric) in parsed.items()
        if eval_set in sets
    }
