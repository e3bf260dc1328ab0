"""Rule `overfitting`: Validation turns worse while training keeps improving.

The check's docstring says what is measured, why it matters and what to do; the dashboard
and docs/rules.md show it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from trainscope.analyzers.facts import is_live
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
    longest_tail_run,
    segment_medians,
    spread_indices,
    theil_sen,
    value_at,
)
from trainscope.analyzers.rules.val_metrics import ValMetric, val_metrics
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
OVERFIT_MIN_EVALS = 3  # validations before any verdict: a minimum and two after it (one rise may be wobble)
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
OVERFIT_HELD_EVALS = 4  # or: the last 4+ validations each >= 10% above the minimum's level...
OVERFIT_HELD_WOBBLE = 1.0  # ...and >= 1 sigma of the curve's eval-to-eval wobble above it, not falling back
OVERFIT_METRIC_GAIN = 0.01  # a val metric "still improves": its last values >= 1% better than at the minimum
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
    minimum ends), or >= 5% when it rose at each of 3+ validations since, the rise
    standing 3 standard errors above the val curve's own scatter; or held: each of the
    last 4+ validations >= 10% and >= 1 sigma of the curve's eval-to-eval wobble above
    the minimum's level, their line not falling (on a fixed eval set each evaluation is
    the model's exact loss, so a wobble there is the model moving; four in a row above
    it is where early stopping with patience 4 would stop, Prechelt 1998). Either way
    while the train loss kept falling and the rise >= 5% of the first val loss. Or train
    accuracy >= 10 points above val accuracy, the gap 3+ points wider than in the first
    half of the run, and val accuracy no longer improving (no new best in the last 3
    validations). Needs 3+ validations (one rise after a minimum may be one
    evaluation's wobble). When val accuracy, F1, WER or another val metric still
    improves while the loss rises, the finding says so: the model grows over-confident
    on the examples it still gets wrong while it gets more of them right.
    What to do: stop at, or restore, the checkpoint of the best validation step (early
    stopping), or, when a val metric still improves, keep the checkpoint that is best by
    that metric; L2 weight decay; dropout (p=0.5, 0.2 for small models); data
    augmentation; a smaller model.
    """
    sets = validation_sets(run)
    if not sets:
        raise Skip(missing_reason(T.VAL_LOSS, "a validation curve"))
    train = require_scalar(run, T.TRAIN_LOSS, "the training loss")
    judged = [_judge(run, s, train) for s in sets]
    _require_validations(run, max(j.counted for j in judged))
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
    title = f"Overfitting since step {fmt_step(best_step)}"
    stop = (
        f"Stop at, or restore, the checkpoint of step {fmt_step(best_step)} (early stopping on the "
        "validation loss; save a checkpoint at every validation)."
    )
    if first.improving is not None:
        label = first.improving_label
        title += f" by the val loss; {label} still improves"
        stop = (
            f"Keep the checkpoint with the best {label} (Trainer's metric_for_best_model, Keras' "
            f"ModelCheckpoint(monitor=...)) rather than stopping at step {fmt_step(best_step)}: the loss rises "
            "as the model grows over-confident on the examples it still gets wrong, while it gets more of "
            "them right. Save a checkpoint at every validation."
        )
    return [
        finding(
            RULE_ID,
            "warning",
            title,
            message + ".",
            (
                stop,
                "Add L2 weight decay (e.g. weight_decay=5e-4 for SGD, or AdamW with 0.01-0.1).",
                "Add dropout before the last layers (p=0.5; 0.2 for small models).",
                "Augment the training data (flips, crops, colour jitter for images), or use a smaller model.",
            ),
            OVERFIT_SOURCE,
            step=best_step,
            evidence=evidence,
        )
    ]


def _require_validations(run: Run, have: int) -> None:
    """`Skip` below `OVERFIT_MIN_EVALS` validations: "not enough data yet" only while the run is live.

    A finished run with two validations will never get a third; it is too short to judge,
    not early. Two are never enough: the minimum is then the first evaluation and one
    rise after it cannot be told from one evaluation's wobble, nor shown to persist.
    """
    if have >= OVERFIT_MIN_EVALS:
        return
    if is_live(run):
        require_points(have, OVERFIT_MIN_EVALS, "validations")
    raise Skip(
        f"too few validations to judge: {have:,} of the {OVERFIT_MIN_EVALS} needed (a lowest one and "
        f"{OVERFIT_MIN_EVALS - 1} after it, to tell a rise from one evaluation's wobble)"
    )


@dataclass
class _Judged:
    """What one validation set shows."""

    name: str
    reasons: list[str] = field(default_factory=list)
    evidence: dict = field(default_factory=dict)
    best_step: int | None = None
    counted: int = 0
    improving: ValMetric | None = None  # a val metric still improving while the loss rose
    improving_label: str = ""


def _judge(run: Run, vs: ValidationSet, train: Series) -> _Judged:
    t_steps, t_values = finite_points(train)
    out = _Judged(vs.name)
    loss_rise = None
    if vs.loss is not None:
        v_steps, v_values = finite_points(vs.loss)
        out.counted = max(out.counted, int(v_values.shape[0]))
        if v_values.shape[0] >= OVERFIT_MIN_EVALS:
            loss_rise = _val_loss_turned_up(v_steps, v_values, t_steps, t_values)
            if loss_rise is not None:
                out.best_step = loss_rise["best_step"]
                out.evidence.update(loss_rise)
                out.reasons.append(_loss_reason(vs, loss_rise))
    acc_gap = None
    train_acc = run.scalar(T.TRAIN_ACC)
    if vs.acc is not None and train_acc is not None:
        a_steps, a_values = finite_points(vs.acc)
        out.counted = max(out.counted, int(a_values.shape[0]))
        if a_values.shape[0] >= OVERFIT_MIN_EVALS:
            ta_steps, ta_values = finite_points(train_acc)
            acc_gap = _acc_gap_grew(a_steps, as_fraction(a_values), ta_steps, as_fraction(ta_values))
            if acc_gap is not None:
                out.best_step = acc_gap["best_val_acc_step"] if out.best_step is None else out.best_step
                out.evidence.update(acc_gap)
                out.reasons.append(
                    f"train accuracy is {fmt_points(acc_gap['gap'])} above {vs.label('accuracy')} "
                    f"({fmt_pct(acc_gap['train_acc_now'])} vs {fmt_pct(acc_gap['val_acc_now'])}; the gap was "
                    f"{fmt_points(acc_gap['gap_before'])} earlier) and {vs.label('accuracy')} has not "
                    f"improved since its best {fmt_pct(acc_gap['best_val_acc'])} at "
                    f"step {fmt_step(acc_gap['best_val_acc_step'])}"
                )
    if loss_rise is not None:
        recent = min(OVERFIT_RECENT_EVALS, loss_rise["evals_since"])
        # Val accuracy that has converged (the gap route's finding) is not "still improving".
        improving = _still_improving(
            run, vs, loss_rise["best_step"], recent, skip_accuracy=acc_gap is not None
        )
        if improving is not None:
            out.improving, facts = improving
            out.improving_label = _metric_label(vs, out.improving)
            out.evidence.update(facts)
            out.reasons.insert(
                1,
                f"{out.improving_label} still improves ({_metric_value(out.improving, facts['metric_at_best'])} "
                f"at step {fmt_step(loss_rise['best_step'])}, {_metric_value(out.improving, facts['metric_now'])} "
                "over the last validations)",
            )
    return out


def _loss_reason(vs: ValidationSet, found: dict) -> str:
    """The val loss's rise in words: where it stands on its trend, or the validations held above."""
    rose = (
        f"{vs.label('loss')} rose {fmt_pct(found['rise'])} from its minimum {fmt(found['best_val_loss'])} at "
        f"step {fmt_step(found['best_step'])}"
    )
    fell = f"while train loss fell {fmt_pct(-found['train_change'])}"
    if found["route"] == "held":
        return (
            f"{rose} and stayed up: each of the last {found['held_evals']} validations "
            f"({fmt(found['held_low'])}-{fmt(found['held_high'])}) stands 10%+ above the minimum's level "
            f"{fmt(found['best_level'])} {fell}"
        )
    return (
        f"{rose} (now about {fmt(found['val_loss_now'])} on its trend, {found['evals_since']} validations "
        f"later) {fell}"
    )


def _val_loss_turned_up(
    v_steps: np.ndarray, v_values: np.ndarray, t_steps: np.ndarray, t_values: np.ndarray
) -> dict | None:
    smooth = centered_median3(v_values)
    best_i = int(np.argmin(smooth))
    evals_since = v_values.shape[0] - 1 - best_i
    best_smooth = float(smooth[best_i])
    if evals_since < OVERFIT_EVALS_AFTER or best_smooth <= 0:
        return None
    # The checkpoint to restore: the best raw validation within the smoothed minimum's neighbourhood.
    lo, hi = max(0, best_i - 1), min(v_values.shape[0], best_i + 2)
    raw_i = lo + int(np.argmin(v_values[lo:hi]))
    # The curve's eval-to-eval wobble, taken >= 1% of its level (a guess of 10% below 4 points).
    level = float(np.median(v_values))
    sigma = max(noise_sigma(v_values), OVERFIT_NOISE_FLOOR * level) if v_values.shape[0] >= 4 else 0.1 * level
    route, now = "trend", _trend_end(v_values[best_i:], best_smooth, sigma)
    held = _held_above(v_values[best_i + 1 :], best_smooth, sigma)
    if now is None and held is not None:
        route, now = "held", float(np.median(held))
    # A rise must matter against where the curve began (0.0078 -> 0.0095 is no trend).
    if now is None or now - best_smooth < OVERFIT_MIN_RISE_OF_START * v_values[0]:
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
        "best_level": best_smooth,
        "val_loss_now": now,
        "rise": now / float(v_values[raw_i]) - 1,
        "evals_since": int(evals_since),
        "route": route,
        "held_evals": 0 if held is None else int(held.shape[0]),
        "held_low": None if held is None else float(held.min()),
        "held_high": None if held is None else float(held.max()),
        "train_loss_at_best": float(train_best),
        "train_loss_now": train_now,
        "train_change": train_now / float(train_best) - 1,
    }


def _trend_end(since: np.ndarray, best_smooth: float, sigma: float) -> float | None:
    """Where the validations since the minimum (`since[0]`) stand now, when that is a clear rise.

    "Now" is where a robust line through them ends: a median of the last few lags a
    curve that is still climbing (2.15, 2.23, 2.31, 2.39 reads 2.31). Rising at every
    validation since the minimum, the last one is where it stands, and a steady climb
    needs a smaller rise to count (a straight line through an accelerating climb lags).
    The rise must stand `SIGNIFICANT_Z` standard errors of the curve's scatter clear.
    """
    slope, intercept = theil_sen(np.arange(since.shape[0]), since)
    now = intercept + slope * (since.shape[0] - 1)
    steady = since.shape[0] > OVERFIT_STEADY_EVALS and bool(np.all(np.diff(since) > 0))
    if steady:
        now = float(since[-1])
    needed = OVERFIT_STEADY_RISE if steady else OVERFIT_VAL_RISE
    if now < best_smooth * (1 + needed):
        return None
    m = since.shape[0]
    end_error = TREND_INEFFICIENCY * sigma * math.sqrt((4 * m - 2) / (m * (m + 1)))
    error = math.hypot(end_error, 1.2533 * sigma / math.sqrt(3))
    return None if now - best_smooth < SIGNIFICANT_Z * error else float(now)


def _held_above(after: np.ndarray, best_smooth: float, sigma: float) -> np.ndarray | None:
    """The last validations, when `OVERFIT_HELD_EVALS`+ in a row each stand clearly above the minimum.

    On a fixed eval set each evaluation is the model's exact loss there: its wobble is
    the model moving, not sampling noise, and a test of the trend's end against 3
    standard errors of it misses a rise that holds (0.232 -> 0.283-0.294 at each of the
    last 4 validations, wobble 0.024). Holding is evidence of its own: were the model
    back at the minimum's level, each validation would clear it by 1 sigma of the
    wobble with odds of about 1 in 6, four in a row about 1 in 1,300. The smoothed
    minimum of a noisy curve sits below its true level, so on flat val curves whose
    wobble is 10-30% of their level (tiny eval sets) this route adds about 1 point of
    false alarms to the trend's 0-2.5% (synthetic, 200 runs per case). A stretch whose
    line falls is coming back down (a bump, not overfitting) and does not count.
    """
    floor = best_smooth + max(OVERFIT_VAL_RISE * best_smooth, OVERFIT_HELD_WOBBLE * sigma)
    held = longest_tail_run(after >= floor)
    if held < OVERFIT_HELD_EVALS:
        return None
    stretch = after[-held:]
    slope, _ = theil_sen(np.arange(held), stretch)
    return stretch if slope >= 0 else None


def _still_improving(
    run: Run, vs: ValidationSet, best_step: int, recent: int, skip_accuracy: bool
) -> tuple[ValMetric, dict] | None:
    """The first val metric (accuracy, then F1, WER, ...) still improving while the loss rose.

    Still improving: "now" (the median of its last `recent` values after `best_step`) is
    better by `OVERFIT_METRIC_GAIN` of its value there, and one of those last values is
    its best yet (a metric that peaked long ago and stayed flat has converged). Then the
    loss overstates the harm, and the checkpoint to keep is the metric's best, not the loss's.
    """
    for metric in val_metrics(run, vs):
        if skip_accuracy and metric.name == "accuracy":
            continue
        steps, values = finite_points(metric.series)
        at_best = float(value_at(steps, values, np.array([best_step]))[0])
        later = values[steps > best_step]
        if not np.isfinite(at_best) or later.shape[0] == 0 or later.shape[0] >= values.shape[0]:
            continue
        now = float(np.median(later[-recent:]))
        signed = values if metric.higher_is_better else -values
        record = float(signed[-recent:].max()) > float(signed[:-recent].max())
        if record and metric.better(now, at_best) >= OVERFIT_METRIC_GAIN:
            return metric, {
                "metric_still_improving": metric.name,
                "metric_at_best": at_best,
                "metric_now": now,
            }
    return None


def _metric_label(vs: ValidationSet, metric: ValMetric) -> str:
    return vs.label("accuracy") if metric.name == "accuracy" else vs.label(f"`{metric.name}`")


def _metric_value(metric: ValMetric, value: float) -> str:
    """Accuracy as a percentage (percent logs included); any other metric as logged."""
    if metric.name == "accuracy":
        return f"{100 * float(as_fraction(np.array([value]))[0]):.1f}%"  # 91.7% -> 94.1%, not 92% -> 94%
    return fmt(value)


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
