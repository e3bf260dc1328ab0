"""Rule `overfitting`: Validation turns worse while training keeps improving.

The check's docstring says what is measured, why it matters and what to do; the dashboard
and docs/rules.md show it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from trainscope.analyzers.findings import Finding, Skip
from trainscope.analyzers.rules.common import (
    cite,
    finding,
    fmt,
    fmt_pct,
    fmt_points,
    fmt_step,
    missing_reason,
    require_points,
    require_scalar,
    sentence,
)
from trainscope.analyzers.rules.curves import (
    SIGNIFICANT_Z,
    ValidationSet,
    as_fraction,
    centered_median3,
    noise_sigma,
    validation_sets,
)
from trainscope.analyzers.rules.robust import (
    finite_points,
    segment_medians,
    spread_indices,
    theil_sen,
)
from trainscope.analyzers.run import Run, Series
from trainscope.logformat import tags as T

RULE_ID = "overfitting"
NAME = "overfitting"  # what the finding is called where it is listed under another
OVERFIT_SOURCE = cite(
    (
        "000",
        69,
        "当验证集上精确度收敛时,红线和绿线间隔过大很明显训练集上出现了过拟合",
        "when the validation accuracy has converged and the gap between the red and green lines is large, the training set is clearly overfit",
    ),
    (
        "001",
        8,
        "使用L2正则化,dropout技术,扩展数据集等,有效缓解过拟合",
        "L2 regularization, dropout and a larger data set effectively reduce overfitting",
    ),
    (
        "001",
        49,
        "dropout对小数据防止过拟合有很好的效果,值一般设为0.5",
        "dropout works well against overfitting on small data, usually set to 0.5",
    ),
    ("001", 82, "随时存档模型,要有validation", "save the model regularly, and keep a validation set"),
)
OVERFIT_MIN_EVALS = 3  # validations before any verdict: a minimum and two after it
OVERFIT_VAL_RISE = 0.10  # val loss >= 10% above its (3-point median smoothed) minimum...
OVERFIT_EVALS_AFTER = 2  # ...over at least the 2 validations since the minimum...
OVERFIT_RECENT_EVALS = 3  # ..."now" being the median of the last 3 of them...
OVERFIT_MIN_RISE_OF_START = 0.05  # ...the rise >= 5% of the first val loss (0.0078 -> 0.0095 is no trend)...
OVERFIT_NOISE_FLOOR = (
    0.01  # ...and >= 3 standard errors of the val curve's scatter (taken >= 1% of its level)
)
OVERFIT_STEADY_EVALS = 3  # a val loss higher at each of 3+ validations since its minimum is a steady climb...
OVERFIT_STEADY_RISE = 0.05  # ...which counts from a 5% rise
TREND_INEFFICIENCY = 1.3  # a Theil-Sen line's standard error, relative to least squares' on normal noise
OVERFIT_ACC_GAP = 0.10  # or: train accuracy >= 10 points above val accuracy...
OVERFIT_GAP_GROWTH = 0.03  # ...the gap up >= 3 points from its median over the first half of the run...
OVERFIT_ACC_PLATEAU = 0.005  # ...and val accuracy converged: no new best by > 0.5 points in the last 3
GAP_SAMPLE = 64  # the earlier gap is the median over at most 64 validations of the first half


def check(run: Run) -> Iterable[Finding]:
    """The model fits the training set at the expense of the validation set.

    Why it matters: past the point where validation loss is lowest, more training makes
    the model worse on new data.
    Measured: val loss >= 10% above its (3-point median smoothed) minimum, 2+
    validations later ("now" is where a robust line through the validations since the
    minimum ends), or >= 5% when it rose at each of 3+ validations since, while the
    train loss kept falling, the rise standing 3 standard errors above the val curve's
    own scatter and >= 5% of its first value; or train accuracy >= 10 points above val
    accuracy, the gap 3+ points wider than in the first half of the run, and val
    accuracy no longer improving (no new best in the last 3 validations). Needs 3+
    validations.
    What to do: stop at, or restore, the checkpoint of the best validation step (early
    stopping); L2 weight decay; dropout (p=0.5, 0.2 for small models); data
    augmentation; a smaller model.
    """
    sets = validation_sets(run)
    if not sets:
        raise Skip(missing_reason(T.VAL_LOSS, "a validation curve"))
    train = require_scalar(run, T.TRAIN_LOSS, "the training loss")
    judged = [_judge(run, s, train) for s in sets]
    require_points(max(j.counted for j in judged), OVERFIT_MIN_EVALS, "validations")
    fired = [j for j in judged if j.reasons]
    if not fired:
        return []
    first = fired[0]
    best_step, evidence = first.best_step, dict(first.evidence)
    message = sentence("; ".join(first.reasons))
    if len(fired) > 1:
        others = ", ".join(f"`{j.name}`" if j.name else "the run's own validation" for j in fired[1:])
        message += f"; the same on {others}"
        evidence["also_on"] = [j.name for j in fired[1:]]
    if first.name:
        evidence["eval_set"] = first.name
    return [
        finding(
            RULE_ID,
            "warning",
            f"Overfitting since step {fmt_step(best_step)}",
            message + ".",
            (
                f"Stop at, or restore, the checkpoint of step {fmt_step(best_step)} (early stopping on the "
                "validation loss; save a checkpoint at every validation).",
                "Add L2 weight decay (e.g. weight_decay=5e-4 for SGD, or AdamW with 0.01-0.1).",
                "Add dropout before the last layers (p=0.5; 0.2 for small models).",
                "Augment the training data (flips, crops, colour jitter for images), or use a smaller model.",
            ),
            OVERFIT_SOURCE,
            step=best_step,
            evidence=evidence,
        )
    ]


@dataclass
class _Judged:
    """What one validation set shows."""

    name: str
    reasons: list[str] = field(default_factory=list)
    evidence: dict = field(default_factory=dict)
    best_step: int | None = None
    counted: int = 0


def _judge(run: Run, vs: ValidationSet, train: Series) -> _Judged:
    t_steps, t_values = finite_points(train)
    out = _Judged(vs.name)
    if vs.loss is not None:
        v_steps, v_values = finite_points(vs.loss)
        out.counted = max(out.counted, int(v_values.shape[0]))
        if v_values.shape[0] >= OVERFIT_MIN_EVALS:
            found = _val_loss_turned_up(v_steps, v_values, t_steps, t_values)
            if found is not None:
                out.best_step = found["best_step"]
                out.evidence.update(found)
                out.reasons.append(
                    f"{vs.label('loss')} rose {fmt_pct(found['rise'])} from "
                    f"its minimum {fmt(found['best_val_loss'])} at "
                    f"step {fmt_step(out.best_step)} (now about {fmt(found['val_loss_now'])} on its trend, "
                    f"{found['evals_since']} validations later) while train loss fell "
                    f"{fmt_pct(-found['train_change'])}"
                )
    train_acc = run.scalar(T.TRAIN_ACC)
    if vs.acc is not None and train_acc is not None:
        a_steps, a_values = finite_points(vs.acc)
        out.counted = max(out.counted, int(a_values.shape[0]))
        if a_values.shape[0] >= OVERFIT_MIN_EVALS:
            ta_steps, ta_values = finite_points(train_acc)
            found = _acc_gap_grew(a_steps, as_fraction(a_values), ta_steps, as_fraction(ta_values))
            if found is not None:
                out.best_step = found["best_val_acc_step"] if out.best_step is None else out.best_step
                out.evidence.update(found)
                out.reasons.append(
                    f"train accuracy is {fmt_points(found['gap'])} above {vs.label('accuracy')} "
                    f"({fmt_pct(found['train_acc_now'])} vs {fmt_pct(found['val_acc_now'])}; the gap was "
                    f"{fmt_points(found['gap_before'])} earlier) and {vs.label('accuracy')} has not "
                    f"improved since its best {fmt_pct(found['best_val_acc'])} at "
                    f"step {fmt_step(found['best_val_acc_step'])}"
                )
    return out


def _val_loss_turned_up(
    v_steps: np.ndarray, v_values: np.ndarray, t_steps: np.ndarray, t_values: np.ndarray
) -> dict | None:
    smooth = centered_median3(v_values)
    best_i = int(np.argmin(smooth))
    evals_since = v_values.shape[0] - 1 - best_i
    if evals_since < OVERFIT_EVALS_AFTER:
        return None
    best_smooth = float(smooth[best_i])
    # The checkpoint to restore: the best raw validation within the smoothed minimum's neighbourhood.
    lo, hi = max(0, best_i - 1), min(v_values.shape[0], best_i + 2)
    raw_i = lo + int(np.argmin(v_values[lo:hi]))
    # "Now" is where a robust line through the validations since the minimum ends: a median of
    # the last few lags a curve that is still climbing (2.15, 2.23, 2.31, 2.39 reads 2.31).
    since = v_values[best_i:]
    slope, intercept = theil_sen(np.arange(since.shape[0]), since)
    now = intercept + slope * (since.shape[0] - 1)
    # Rising at every validation since the minimum: the last one is where it stands, and a steady
    # climb needs a smaller rise to count (a straight line through an accelerating climb lags).
    steady = since.shape[0] > OVERFIT_STEADY_EVALS and bool(np.all(np.diff(since) > 0))
    if steady:
        now = float(since[-1])
    needed = OVERFIT_STEADY_RISE if steady else OVERFIT_VAL_RISE
    if best_smooth <= 0 or now < best_smooth * (1 + needed):
        return None
    # A rise must stand out of the curve's own scatter and matter against where the curve began.
    level = float(np.median(v_values))
    sigma = max(noise_sigma(v_values), OVERFIT_NOISE_FLOOR * level) if v_values.shape[0] >= 4 else 0.1 * level
    m = since.shape[0]
    end_error = TREND_INEFFICIENCY * sigma * math.sqrt((4 * m - 2) / (m * (m + 1)))
    error = math.hypot(end_error, 1.2533 * sigma / math.sqrt(3))
    if (
        now - best_smooth < SIGNIFICANT_Z * error
        or now - best_smooth < OVERFIT_MIN_RISE_OF_START * v_values[0]
    ):
        return None
    recent = np.arange(v_values.shape[0] - min(OVERFIT_RECENT_EVALS, evals_since), v_values.shape[0])
    train_at = segment_medians(t_steps, t_values, v_steps, which=np.concatenate(([best_i], recent)))
    train_best = train_at[best_i]
    train_now = float(np.nanmedian(train_at[-min(OVERFIT_RECENT_EVALS, evals_since) :]))
    if (
        not np.isfinite(train_best)
        or not np.isfinite(train_now)
        or train_best <= 0
        or train_now >= train_best
    ):
        return None
    return {
        "best_step": int(v_steps[raw_i]),
        "best_val_loss": float(v_values[raw_i]),
        "val_loss_now": now,
        "rise": now / float(v_values[raw_i]) - 1,
        "evals_since": int(evals_since),
        "train_loss_at_best": float(train_best),
        "train_loss_now": train_now,
        "train_change": train_now / float(train_best) - 1,
    }


def _acc_gap_grew(
    a_steps: np.ndarray, a_values: np.ndarray, ta_steps: np.ndarray, ta_values: np.ndarray
) -> dict | None:
    n = a_steps.shape[0]
    which = np.unique(np.concatenate((spread_indices(n // 2 + 1, GAP_SAMPLE), np.arange(max(0, n - 2), n))))
    train_at = segment_medians(ta_steps, ta_values, a_steps, which=which)
    gap = train_at - a_values
    ok = np.isfinite(gap)
    if not ok[-1] or n < OVERFIT_MIN_EVALS:
        return None
    gap_now = float(np.nanmedian(gap[-2:]))
    gap_before = float(np.nanmedian(gap[: n // 2 + 1]))
    recent_best = float(a_values[-3:].max())
    earlier_best = float(a_values[:-3].max()) if n > 3 else -math.inf
    converged = recent_best <= earlier_best + OVERFIT_ACC_PLATEAU
    if gap_now < OVERFIT_ACC_GAP or gap_now - gap_before < OVERFIT_GAP_GROWTH or not converged:
        return None
    best_i = int(np.argmax(a_values))
    return {
        "gap": gap_now,
        "gap_before": gap_before,
        "train_acc_now": float(np.nanmedian(train_at[-2:])),
        "val_acc_now": float(np.median(a_values[-2:])),
        "best_val_acc": float(a_values[best_i]),
        "best_val_acc_step": int(a_steps[best_i]),
    }
