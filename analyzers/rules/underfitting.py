"""Rule `underfitting`: Train and validation are both poor and close together: the model cannot fit the data.

The check's docstring says what is measured, why it matters and what to do; the dashboard
and docs/rules.md show it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from trainscope.analyzers.facts import (
    num_classes,
)
from trainscope.analyzers.findings import Finding, Skip
from trainscope.analyzers.rules.common import (
    cite,
    finding,
    fmt,
    fmt_pct,
    fmt_points,
    missing_reason,
    require_points,
    sentence,
)
from trainscope.analyzers.rules.curves import (
    PLATEAU_WINDOW,
    as_fraction,
    chance_loss,
    loss_curve,
    validation_sets,
)
from trainscope.analyzers.rules.robust import (
    chunk_medians,
    finite_points,
    tail_start,
)
from trainscope.analyzers.run import Run
from trainscope.logformat import tags as T

RULE_ID = "underfitting"
NAME = "underfitting"  # what the finding is called where it is listed under another
UNDERFIT_SOURCE = cite(
    (
        "000",
        69,
        "当两线间隔很小且准确率都很低时,说明模型学习能力太低,需要增加模型的capacity",
        "when the two lines are close together and both accuracies are low, the model learns too little: increase its capacity",
    )
)
UNDERFIT_LIVE_POINTS = 100  # training-loss points before a verdict on a run still being written
UNDERFIT_LIVE_EVALS = 3  # validations before a verdict on a run still being written...
UNDERFIT_MIN_EVALS = 2  # ...and on one that has ended
UNDERFIT_MAX_SKILL = 0.7  # "low": accuracy < 70% of the way from chance (1/C) to 100%...
UNDERFIT_POOR_WITHOUT_C = 0.5  # ...or, with the number of classes unknown, below 50% (poor for any C)
UNDERFIT_CHANCE_LOSS = 0.5  # "high": a C-class cross-entropy still >= 50% of the chance level ln C
UNDERFIT_CLOSE_ACC = 0.08  # "close together": train accuracy at most 8 points above val accuracy
UNDERFIT_CLOSE_LOSS = 0.10  # ...or val loss at most 10% above train loss
UNDERFIT_MIN_PROGRESS = 0.10  # it learns, just not enough: train loss fell >= 10% (else see loss_plateau)...
UNDERFIT_MIN_SKILL = 0.1  # ...and accuracy, where logged, is >= 10% of the way from chance to 100%
UNDERFIT_AT_BEST = 1.2  # ...and its train loss ends within 20% of its best (it is stuck, not getting worse)
UNDERFIT_STALL = 0.05  # "training ends": the train loss fell < 5% over the last 30% of the run...
UNDERFIT_RATE_SHARE = 0.25  # ...or falls there at < 25% of its average pace over the run (a slow creep)


def check(run: Run) -> Iterable[Finding]:
    """Train and validation are both poor and close together: the model cannot fit the data.

    Why it matters: when even the training set is fit badly, regularization or more data
    will not help; the model lacks capacity.
    Measured: "poor" against chance: accuracy less than 70% of the way from chance (1/C)
    to 100% (below 50% when C is unknown), or (without accuracy) a C-class cross-entropy
    still above half of ln C; "close": train accuracy at most 8 points above val (or val
    loss at most 10% above train). Judged only when the train loss has stalled near its
    best (< 5% over the last 30% of the run, or < 25% of its average pace) and the model
    learned something (loss fell 10%+, accuracy 10%+ of the way above chance; a loss
    that never moves is loss_plateau's case).
    What to do: more capacity (wider or deeper layers); less regularization (lower
    dropout and weight decay); then train longer.
    """
    sets = validation_sets(run)  # the run's own validation, else its first named eval set
    val_loss, val_acc = (sets[0].loss, sets[0].acc) if sets else (None, None)
    if val_loss is None and val_acc is None:
        raise Skip(missing_reason(f"{T.VAL_LOSS} or {T.VAL_ACC}", "a validation curve"))
    loss = loss_curve(run, UNDERFIT_LIVE_POINTS)
    val = val_acc if val_acc is not None else val_loss
    need = UNDERFIT_LIVE_EVALS if loss.live else UNDERFIT_MIN_EVALS
    require_points(int(np.isfinite(val.values).sum()), need, "validations")
    classes = num_classes(run)
    chance_acc = 1.0 / classes if classes else 0.0
    chance = chance_loss(run, loss.start)
    train_acc = run.scalar(T.TRAIN_ACC)
    evidence: dict = {"train_loss": loss.end, "num_classes": classes}

    if val_acc is not None and train_acc is not None:
        _, ta = finite_points(train_acc)
        _, va = finite_points(val_acc)
        ta, va = as_fraction(ta), as_fraction(va)
        train_now = float(np.median(ta[tail_start(ta.shape[0], 0.1, 5) :]))
        val_now = float(np.median(va[-3:]))
        skill = max(train_now - chance_acc, val_now - chance_acc) / (1 - chance_acc)
        # 63% may be poor for 2 classes and good for 1,000: without C only "below half" is poor.
        poor = skill < UNDERFIT_MAX_SKILL if classes else max(train_now, val_now) < UNDERFIT_POOR_WITHOUT_C
        close = train_now - val_now <= UNDERFIT_CLOSE_ACC
        evidence.update(train_acc=train_now, val_acc=val_now, chance_acc=chance_acc, skill=skill)
        chance_text = f"chance {fmt_pct(chance_acc)}" if classes else "number of classes unknown"
        what = (
            f"train accuracy {fmt_pct(train_now)} and val accuracy {fmt_pct(val_now)} ({chance_text}) are "
            f"both low and {fmt_points(abs(train_now - val_now))} apart"
        )
    elif chance is not None and val_loss is not None:
        _, vl = finite_points(val_loss)
        val_now = float(np.median(vl[-2:]))
        poor = min(loss.end, val_now) >= UNDERFIT_CHANCE_LOSS * chance
        close = val_now <= loss.end * (1 + UNDERFIT_CLOSE_LOSS)
        evidence.update(val_loss=val_now, chance_loss=chance)
        what = (
            f"train loss {fmt(loss.end)} and val loss {fmt(val_now)} are both still "
            f"{fmt_pct(min(loss.end, val_now) / chance)} of the chance level ln {classes} = {fmt(chance)}, "
            f"and close together"
        )
    else:
        raise Skip(
            f"needs {T.TRAIN_ACC} and {T.VAL_ACC}, or the number of classes (hparams num_classes) with a "
            "cross-entropy loss, to tell a poor model from a good one"
        )
    progress = (loss.start - loss.end) / loss.start if loss.start > 0 else 0.0
    begin = tail_start(len(loss.curve), PLATEAU_WINDOW, 6)
    thirds = chunk_medians(loss.curve.values[begin:], 3)
    recent_drop = float((thirds[0] - thirds[2]) / thirds[0]) if thirds[0] > 0 else 0.0
    finished = not loss.live
    window_span = max(int(loss.curve.steps[-1] - loss.curve.steps[begin]), 1)
    total_span = max(int(loss.curve.steps[-1] - loss.curve.steps[0]), 1)
    recent_rate = (thirds[0] - thirds[2]) / window_span
    average_rate = (loss.start - thirds[2]) / total_span
    # Finished or not, a loss still falling at a good part of its average pace says "train longer",
    # not "too small".
    ended = recent_drop < UNDERFIT_STALL or recent_rate < UNDERFIT_RATE_SHARE * average_rate
    evidence.update(progress=progress, recent_drop=recent_drop, finished=finished)
    learned = progress >= UNDERFIT_MIN_PROGRESS and evidence.get("skill", 1.0) >= UNDERFIT_MIN_SKILL
    best = float(loss.curve.values.min())
    at_best = loss.end <= UNDERFIT_AT_BEST * best  # a loss that climbed back up is lr_too_high's case
    evidence.update(best_train_loss=best)
    if not (poor and close and ended and learned and at_best):
        return []
    how_ended = (
        f"the train loss fell only {fmt_pct(max(recent_drop, 0.0))} "
        f"over the last {fmt_pct(PLATEAU_WINDOW)} of the "
        "run" + (", which has ended" if finished else "")
    )
    return [
        finding(
            RULE_ID,
            "warning",
            "Underfitting: train and validation are both poor",
            sentence(what) + f"; {how_ended}.",
            (
                "Give the model more capacity: wider layers (e.g. 2x the units/channels) or more layers.",
                "Train longer only together with more capacity: at this size the loss has stopped falling.",
                "Regularize less: lower dropout and weight decay.",
            ),
            UNDERFIT_SOURCE,
            step=int(loss.curve.steps[begin]),
            evidence=evidence,
        )
    ]
