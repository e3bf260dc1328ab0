"""Advice that is not a detection: end-of-run info lines the documents recommend in general.

RULES.md, "Advice that is not a detection": when a run has finished, the summary may
add info lines (checkpoint averaging / ensembles, SGD+momentum versus Adam, batch
norm + ReLU as a default). They are not findings: they carry no rule id, never raise
a run's severity, and appear only for finished runs where they apply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

from trainscope.analyzers.facts import model_layers, optimizer_type
from trainscope.analyzers.rules.common import cite
from trainscope.analyzers.run import Run
from trainscope.logformat import runjson as R

ENSEMBLE_SOURCE = cite(
    (
        "000",
        74,
        "在不同的检查点的单一网络随时间(例如在每个阶段)和使用这些形成了一个整体",
        "take one network's checkpoints over time, for example each epoch, and use them as an ensemble",
    ),
    (
        "001",
        137,
        "训练单个模型时, 平均不同时期的 checkpoints 的结果, 也可以有提升.",
        "when training a single model, averaging the results of checkpoints from different epochs can help too",
    ),
)
SGD_SOURCE = cite(
    (
        "001",
        103,
        "adam收敛虽快但是得到的解往往没有sgd+momentum得到的解更好,如果不考虑时间成本的话还是用sgd吧。",
        "Adam converges faster, but its solutions are often worse than SGD with momentum: if time does not matter, use SGD",
    )
)
BN_RELU_SOURCE = cite(
    (
        "001",
        72,
        "relu+bn。这套好基友组合是万精油,可以满足95%的情况",
        "ReLU plus batch norm: this pair is a cure-all that covers 95% of cases",
    )
)

ADAPTIVE_OPTIMIZERS = ("adam", "adamw", "nadam", "radam", "adamax", "adagrad", "adadelta", "rmsprop")
BATCH_NORM_TYPES = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm")
SATURATING_KINDS = ("sigmoid", "tanh")


@dataclass(frozen=True)
class Advice:
    """One end-of-run info line: general advice from the documents, not a detection."""

    topic: str  # "ensembles", "sgd_momentum", "bn_relu"
    title: str
    message: str
    source: str
    severity: str = "info"  # always info: never raises a run's severity

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def end_of_run_advice(run: Run) -> tuple[Advice, ...]:
    """The general advice that applies to `run`; empty unless the run has finished."""
    if run.status != R.STATUS_FINISHED:
        return ()
    lines = [
        Advice(
            "ensembles",
            "Average checkpoints or ensemble models for a last gain",
            "Averaging the predictions of checkpoints saved at different epochs of this run (or of a few "
            "models trained with different seeds) usually adds accuracy at no training cost; averaging "
            "the weights of the last checkpoints (SWA) is a cheaper variant.",
            ENSEMBLE_SOURCE,
        )
    ]
    kind = optimizer_type(run)
    if kind and kind.lower() in ADAPTIVE_OPTIMIZERS:
        lines.append(
            Advice(
                "sgd_momentum",
                f"Try SGD with momentum instead of {kind} when time allows",
                f"{kind} converges fast, but SGD with momentum 0.9 (and a decaying learning rate) often "
                "reaches a solution that generalizes better; or switch to SGD for the last epochs.",
                SGD_SOURCE,
            )
        )
    layers = model_layers(run)
    if layers and not any(str(layer.get("type")) in BATCH_NORM_TYPES for layer in layers):
        saturating = _saturating_layers(run)
        lines.append(
            Advice(
                "bn_relu",
                "Batch normalization + ReLU is a strong default",
                "This model has no batch normalization"
                + (f" and uses {saturating}" if saturating else "")
                + "; BatchNorm after each linear/conv layer followed by ReLU trains faster and more stably "
                "in most cases.",
                BN_RELU_SOURCE,
            )
        )
    return tuple(lines)


def _saturating_layers(run: Run) -> str:
    model = run.meta.get(R.K_MODEL) if run.meta else None
    kinds = model.get(R.M_ACTIVATIONS) if isinstance(model, Mapping) else None
    if not isinstance(kinds, Mapping):
        return ""
    used = [str(kind) for kind, names in kinds.items() if str(kind).lower() in SATURATING_KINDS and names]
    return " and ".join(used)
