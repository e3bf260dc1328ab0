"""The validation metrics a run logs beside its loss, and which way each of them is better.

Readers map a validation's loss and accuracy onto canonical tags and keep the rest of a
log's names unmapped: Hugging Face Trainer's ``eval_wer``/``eval_f1`` (``eval/wer`` in its
TensorBoard files), Keras' ``val_precision``, a Lightning module's ``val_f1`` or
``val/top1``. Models are often picked by such a metric, not by the loss, and the two can
disagree: a classifier's cross-entropy rises as it grows over-confident on the examples it
still gets wrong while it gets more of them right (Guo et al., "On Calibration of Modern
Neural Networks", ICML 2017). A rule that judges the loss says so when the metric disagrees.

Only names whose direction is standard are taken (accuracy, F1, WER, ROUGE, ...); anything
else (runtime, throughput, a loss component, a running maximum such as ``max_val_acc``)
is left alone, because a metric read the wrong way round would invert the advice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from trainscope.analyzers.rules.curves import ValidationSet
from trainscope.analyzers.run import Run, Series

# Metric names (lower case) whose direction every library agrees on.
HIGHER_IS_BETTER = frozenset(
    {
        "acc",
        "accuracy",
        "top1",
        "top5",
        "top1_acc",
        "top5_acc",
        "f1",
        "fscore",
        "f1_score",
        "precision",
        "recall",
        "auc",
        "roc_auc",
        "auroc",
        "average_precision",
        "mcc",
        "matthews_correlation",
        "rouge1",
        "rouge2",
        "rougel",
        "rougelsum",
        "bleu",
        "sacrebleu",
        "chrf",
        "meteor",
        "exact_match",
        "iou",
        "miou",
        "dice",
        "map",
        "map50",
        "r2",
        "pearson",
        "spearman",
        "spearmanr",
        "pearsonr",
    }
)
LOWER_IS_BETTER = frozenset(
    {"wer", "cer", "ter", "perplexity", "ppl", "mae", "mse", "rmse", "error", "error_rate"}
)
AVERAGING = ("overall", "macro", "micro", "weighted", "mean", "avg")  # overall_f1, f1_macro: still F1
_VAL_NAME = re.compile(r"(?:eval|val|valid|validation)[_/.](?P<metric>\w+)", re.IGNORECASE)


@dataclass(frozen=True)
class ValMetric:
    """One validation metric: its name as logged (``wer``, ``accuracy``), values, and direction."""

    name: str
    series: Series
    higher_is_better: bool

    def better(self, new: float, old: float) -> float:
        """How much better `new` is than `old`, relative to `old` (negative when worse)."""
        if old == 0:
            return 0.0
        change = (new - old) / abs(old)
        return change if self.higher_is_better else -change


def direction(metric: str) -> bool | None:
    """True when a higher `metric` is better, False when lower is, None when unknown."""
    name = metric.lower()
    for avg in AVERAGING:
        name = name.removeprefix(avg + "_").removesuffix("_" + avg)
    if name in HIGHER_IS_BETTER:
        return True
    if name in LOWER_IS_BETTER:
        return False
    return None


def val_metrics(run: Run, vs: ValidationSet) -> list[ValMetric]:
    """The metrics of validation set `vs`: its accuracy first, then the unmapped ones of known direction.

    A named eval set's metrics are ``eval/<set>_<metric>``; the run's own are
    ``eval/<metric>`` (``val_<metric>``, ...), where a name left with a prefix that is not
    a set (``eval/T005_f1``, one entity's F1) has no known direction and is skipped.
    """
    found = [ValMetric("accuracy", vs.acc, True)] if vs.acc is not None else []
    for raw, series in sorted(run.unmapped.items()):
        match = _VAL_NAME.fullmatch(raw)
        if match is None:
            continue
        metric = match.group("metric")
        if vs.name:
            if not metric.startswith(vs.name + "_"):
                continue
            metric = metric[len(vs.name) + 1 :]
        better = direction(metric)
        if better is not None:
            found.append(ValMetric(metric, series, better))
    return found
