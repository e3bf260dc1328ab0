"""Rule `loss_plateau`: the loss has stopped falling while still far from good.

The check's docstring says what is measured, why it matters and what to do; the dashboard
and docs/rules.md show it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from trainscope.analyzers.facts import (
    configured_lr,
    num_classes,
)
from trainscope.analyzers.findings import Finding, Skip
from trainscope.analyzers.rules.common import (
    cite,
    finding,
    fmt,
    fmt_change,
    fmt_factor,
    fmt_pct,
    fmt_points,
    fmt_step,
)
from trainscope.analyzers.rules.curves import (
    MIN_CURVE_POINTS,
    PLATEAU_WINDOW,
    SIGNIFICANT_Z,
    TREND_INEFFICIENCY,
    LossCurve,
    as_fraction,
    chance_loss,
    loss_curve,
    lr_changed_between,
    lr_series,
    noise_sigma,
    require_positive,
    require_shuffled,
    start_level,
    start_points,
    validation_sets,
)
from trainscope.analyzers.rules.initial_loss_off import logs_initial_loss
from trainscope.analyzers.rules.lr_too_low import LR_LOW_SOURCE
from trainscope.analyzers.rules.robust import (
    Curve,
    chunk_medians,
    finite_points,
    robust_sigma,
    tail_start,
    theil_sen,
)
from trainscope.analyzers.rules.underfitting import UNDERFIT_SOURCE
from trainscope.analyzers.rules.updates import (
    UPDATE_RATIO_LOW,
    UPDATE_RATIO_TARGET,
    suggested_lr,
    update_ratios,
    updates_blocked,
)
from trainscope.analyzers.run import Run
from trainscope.logformat import tags as T

RULE_ID = "loss_plateau"
NAME = "a loss plateau"  # what the finding is called where it is listed under another
# evidence["kind"]: which plateau was found (another finding's cause may span the whole run only for the first)
NEVER_LEARNED, STUCK_HIGH, NO_PROGRESS, LATE = "never_learned", "stuck_high", "no_progress", "late"
# never fell in the log, but the log starts after the initial loss: it learned before, then stopped
EARLY = "early_plateau"
PLATEAU_SOURCE = cite(
    ("000", 43, "将LR除以2或5后继续跑", "divide the learning rate by 2 or 5 and keep training"),
    ("001", 185, "loss不降了lr就除10", "when the loss stops falling, divide the learning rate by 10"),
    ("001", 50, "如果cost没有下降,就对学习率减半", "if the cost does not fall, halve the learning rate"),
)
PLATEAU_SMALL_UPDATES = 0.5  # a high plateau with updates below half the healthy ratio: advise raising the lr
PLATEAU_RAISE_CAP = 10.0  # ...by at most 10x
PLATEAU_LIVE_POINTS = 200  # training-loss points before a run still being written can be called stalled
PLATEAU_MAX_DROP = 0.02  # "stopped falling": the smoothed loss fell < 2% across the window...
PLATEAU_RATE_SHARE = 0.25  # ...or falls < 25% as fast as on average (a slow straight line is no plateau)
PLATEAU_MAX_RISE = 0.05  # a loss rising > 5% across the window is not flat either (see lr_too_high)
PLATEAU_HIGH = 0.8  # "far from good": still above 80% of its start (or of ln C for a C-class cross-entropy)
PLATEAU_CONFIDENCE = 2.0  # an ended run is stalled when even the fall + 2 standard errors is that small
NO_LEARNING = 0.1  # "never learned": with that confidence, the loss fell < 10% below where it started...
PLATEAU_LONG = 0.5  # "no progress for most of the run": stalled over the last 50% of it...
PLATEAU_LONG_LEVEL = 0.1  # ...at >= 10% of where it started (a loss that reached ~0 has converged)
LR_CONSTANT = 0.05  # the lr counts as constant when it moved < 5% across the window
LR_DECAYED = 0.1  # the lr below 10% of its peak: the schedule is ending and a flat loss is expected
VAL_STILL_IMPROVING = 0.01  # a late plateau is not reported while val loss still improves by > 1%
ONSET_INSIDE_SHARE = (
    0.9  # the plateau begins where 90%+ of the smoothed points from there on sit at its level
)


@dataclass(frozen=True)
class Window:
    """The recent stretch of the loss and whether it has stopped falling."""

    begin: int  # index of its first raw point
    first: float  # median of its first third
    end: float  # median of its last third
    drop: float  # (first - end) / first
    error: float  # standard error of end - first (the scatter a change must clear to be shown)
    stalled: bool


def check(run: Run) -> Iterable[Finding]:
    """The loss has stopped falling while still far from good.

    Why it matters: a run stuck early at a high loss is not learning (most often the
    learning rate is too high and it bounces in a poor region); a run that stalls
    later at a constant learning rate is usually waiting for a decay, after which the
    loss drops again.
    Measured: on the raw loss against its own point-to-point scatter, so that a sparse
    log of 20 points is judged as well as a dense one. "Never learned" when, with 2
    standard errors to spare, the loss fell < 10% below its first points (or, where the
    loss is too noisy to show it, the training accuracy rose < 10% of its headroom),
    is not falling now nor steadily (it did not surely fall at 25%+ of its average pace
    in the stretch before the last 30%: a fine-tune falling 5-9% in all, until its lr
    is spent, is learning). That says "not learning" only where the start is the
    untrained model's: the log starts within the first 10 steps (as initial_loss_off
    judges it; a per-epoch mean never does), the start is still >= 80% of ln C, the accuracy ends
    within 10% of its headroom above chance (1/C), or the loss rose 10%+ since the log
    began. Otherwise the log opens after the steepest fall, and a loss that held its
    first logged level is an "early plateau" (warning): the model learned before the
    log and stopped, short of inputs or capacity;
    "stalled" when, over the last 30% of the run, the loss fell < 2% (or < 25% of its
    average pace) with 2 standard errors to spare (a run still being written needs the
    resolution to tell a 2% change first). A stall still above 80% of the start (or of
    ln C for a C-class cross-entropy) is "stuck high", a warning, when it was stalled
    before the window too (from where the loss came within its band of the level, 5% or
    3 sigma of its jitter, it did not fall by more than a stall allows plus 2 standard
    errors, nor at 25%+ of its average pace just before the window) and the updates are
    not tiny or blocked (then lr_too_low, dead_relu or vanishing_gradients has the
    cause). A loss still falling until the window is no stuck run: a fine-tune's first
    logged loss is near its floor, so a healthy one ends at 85-90% of it once its lr
    decay flattens the tail. A stall that has lasted the last half of the run at >= 10%
    of the start with validation not improving is a warning too. A later plateau at a constant lr, with validation no longer
    improving, is info; one while the lr has decayed to < 10% of its peak is the
    schedule's end, not a finding.
    What to do: divide the learning rate by 2-10 when the (validation) loss stalls, or
    use a schedule (StepLR, ReduceLROnPlateau, cosine); for an early plateau, give the
    model more inputs or capacity first, then try a higher learning rate.
    """
    loss = loss_curve(run, PLATEAU_LIVE_POINTS)
    require_positive(loss)
    require_shuffled(run)
    series = run.scalar(T.TRAIN_LOSS)
    if not np.isfinite(series.values[-1]):
        raise Skip(f"{T.TRAIN_LOSS} ends NaN/Inf (see nonfinite): a plateau before it says nothing more")
    blocked = _updates_tiny_or_blocked(run)
    never = None if loss.live else _never_learned(loss, run)
    if never is not None and not blocked:
        shown = _not_learning_shown(run, loss, never)
        if shown is None:
            return [_early_plateau_finding(run, loss, never)]
        return [_never_learned_finding(run, loss, {**never, **shown})]
    window = _window(loss, PLATEAU_WINDOW)
    if window is None or not window.stalled:
        return []
    curve = loss.curve
    end = window.end
    chance = chance_loss(run, loss.start)
    high = end >= PLATEAU_HIGH * loss.start or (chance is not None and end >= PLATEAU_HIGH * chance)
    onset = _plateau_onset(curve, end, curve.values[np.searchsorted(curve.steps, loss.steps[window.begin]) :])
    if _fell_before(loss, onset, window.begin, end) or _fell_at_pace_before(loss, window.begin, end):
        # Still falling until the window: the plateau is no older than the window, so it is no
        # stuck run (a fine-tune ends near its first logged loss) but, at most, a late plateau.
        high = False
        onset = max(onset, int(loss.steps[window.begin]))
    total_drop = (loss.start - end) / loss.start
    evidence = {
        "plateau_level": end,
        "start": loss.start,
        "window_drop": window.drop,
        "total_drop": total_drop,
        "since_step": onset,
        "chance_loss": chance,
    }
    lr = configured_lr(run)
    steps_flat = fmt_step(curve.steps[-1] - onset)
    since = int(loss.steps[window.begin])
    decayed = _lr_decayed_since(run, since)
    if high and blocked:
        # The steps are tiny: not a too-high lr bouncing in place but a too-low lr, dead units or
        # vanishing gradients, which lr_too_low / dead_relu / vanishing_gradients report with their cause.
        return []
    if high:
        return [_stuck_high_finding(run, loss, window, onset, evidence, decayed)]
    if decayed is not None:
        return []  # the schedule's end: a flat loss at a learning rate near 0 is what a decay does
    long = _window(loss, PLATEAU_LONG)
    if (
        long is not None
        and long.stalled
        and end >= PLATEAU_LONG_LEVEL * loss.start
        and not _val_still_improving(run, int(loss.steps[long.begin]))
    ):
        return [_long_plateau_finding(loss, long, onset, evidence, lr)]
    increased, decreased = lr_changed_between(run, since, int(curve.steps[-1]), LR_CONSTANT)
    if lr_series(run) is None or increased or decreased or _val_still_improving(run, since):
        return []
    return [
        finding(
            RULE_ID,
            "info",
            f"Loss has {_stalled_verb(window)} at a constant learning rate: time for a decay",
            f"The train loss has {_stalled_verb(window)} at about {fmt(end)} for the last {steps_flat} steps "
            f"({_change_words(window, PLATEAU_WINDOW)}, after falling {fmt_pct(total_drop)} overall), "
            f"with the learning rate constant at {fmt(lr)}.",
            (
                f"Decay the learning rate: divide it by 2-10 now (to about {fmt(lr / 5)}); the loss often "
                "drops right after a decay.",
                "Or use a schedule: ReduceLROnPlateau on the validation loss, StepLR or cosine.",
            ),
            PLATEAU_SOURCE,
            step=onset,
            evidence={"kind": LATE, **evidence},
        )
    ]


def _updates_tiny_or_blocked(run: Run) -> bool:
    """Dead units, zero gradients or tiny update ratios: the cause lies there, not in a bouncing lr."""
    ratios = update_ratios(run)
    return updates_blocked(run) is not None or (ratios is not None and ratios.model < UPDATE_RATIO_LOW)


def _window(loss: LossCurve, share: float) -> Window | None:
    """The last `share` of the raw loss, split in thirds: has it stopped falling?

    A run still being written must resolve a 2% change through the scatter first
    (`Skip` otherwise: more steps will tell). A run that has ended is stalled only when
    the fall, plus `PLATEAU_CONFIDENCE` standard errors, is still below 2% of the level
    or 25% of the run's average pace: too few or too noisy points mean "not shown".
    """
    n = loss.values.shape[0]
    begin = tail_start(n, share, 3)
    thirds = _thirds(loss, begin, n)
    if thirds is None:
        return None
    first, end, error = thirds
    if first <= 0:
        return None  # the loss sits at 0: converged, nothing left to fall
    drop = (first - end) / first
    span = max(int(loss.steps[-1] - loss.steps[begin]), 1)
    average_pace = _average_pace(loss, end)
    if loss.live:
        resolution = 2 * error / first
        if drop < max(PLATEAU_MAX_DROP, resolution) and resolution > PLATEAU_MAX_DROP:
            needed = int(n * (resolution / PLATEAU_MAX_DROP) ** 2)
            raise Skip(
                f"not enough data yet: {n:,} of about {needed:,} {T.TRAIN_LOSS} points needed to tell a "
                f"{fmt_pct(PLATEAU_MAX_DROP)} change from this much step-to-step noise"
            )
        total_drop = (loss.start - end) / loss.start
        stalled = drop < PLATEAU_MAX_DROP and (
            total_drop < PLATEAU_MAX_DROP or drop * first / span < PLATEAU_RATE_SHARE * average_pace
        )
    else:
        # Flat as measured (a fall < 2%, or within the scatter), and surely not falling at a pace that
        # matters: < 2% of the level, or < 25% of the run's average pace (a noisy log cannot show 2%,
        # but it can show "far slower than before").
        allowed = max(PLATEAU_MAX_DROP * first, PLATEAU_RATE_SHARE * average_pace * span)
        flat = first - end < max(PLATEAU_MAX_DROP * first, PLATEAU_CONFIDENCE * error)
        stalled = flat and (first - end) + PLATEAU_CONFIDENCE * error < allowed
    # A rise beyond 5% is not flat either (lr_too_high's case), unless it is within the scatter.
    rising = end - first > max(PLATEAU_MAX_RISE * first, PLATEAU_CONFIDENCE * error)
    return Window(begin, first, end, drop, error, stalled and not rising)


def _thirds(loss: LossCurve, begin: int, stop: int) -> tuple[float, float, float] | None:
    """(median of the first third, of the last third, standard error of their difference) of the
    raw points [begin, stop), or None below 3 points."""
    thirds = chunk_medians(loss.values[begin:stop], 3)
    if thirds.shape[0] < 3:
        return None
    error = math.sqrt(2) * loss.median_error((stop - begin) // 3)
    return float(thirds[0]), float(thirds[2]), error


def _average_pace(loss: LossCurve, level: float) -> float:
    """The run's average fall per step, from its start down to `level` (0 when it is no lower)."""
    total_span = max(int(loss.steps[-1] - loss.steps[0]), 1)
    return max(loss.start - level, 0.0) / total_span


def _fell_before(loss: LossCurve, onset: int, stop: int, level: float) -> bool:
    """Whether the loss was still falling between the plateau's onset and raw point `stop`.

    Why: "stuck" says the loss stopped making progress well before the stalled window.
    Against its start alone that cannot be told from a fine-tune, whose first logged
    loss is already near its floor: the end sits at 85-90% of it after a healthy run.
    What tells them apart is the stretch before the window: a stuck run is flat there
    too, a fine-tune was still falling until its schedule decayed the lr.
    Measured: the window's own test read the other way. The stretch from the onset
    (where the smoothed loss came within its band of the level) to the window fell more
    than a stall allows (2% of its level, or 25% of the run's average pace over its
    span), by `PLATEAU_CONFIDENCE` standard errors. Fewer than 3 points before the
    window count as falling: the loss reached its level only where the window begins.
    """
    fell = _fell_between(loss, int(np.searchsorted(loss.steps, onset)), stop, level)
    return True if fell is None else fell


def _fell_at_pace_before(loss: LossCurve, stop: int, level: float) -> bool:
    """Whether the loss still fell at a fair pace just before raw point `stop` (the window).

    Why: a fine-tune whose whole fall is 5-10% falls < 2% in any stretch of a third of
    the run, so `_fell_before`'s 2% floor reads its slow, steady fall as a stall (and
    its band of 5% of the level puts the onset early). Measured: the run up to `stop`
    surely fell (its Theil-Sen line by `SIGNIFICANT_Z` standard errors: a pace to
    compare with), and the stretch of as many points before `stop` as follow it fell
    by more than 25% of the run's average pace over its span, `PLATEAU_CONFIDENCE`
    standard errors to spare. A loss that dropped early and then stayed flat falls at
    no such pace there; one that never fell has no pace to keep.
    """
    if stop < MIN_CURVE_POINTS:
        return False
    x = (loss.steps[:stop] - loss.steps[0]).astype(np.float64)
    slope, _ = theil_sen(x, loss.values[:stop])
    # The line is fitted on at most 400 points (theil_sen thins longer series).
    error = TREND_INEFFICIENCY * loss.noise * math.sqrt(12 / min(stop, 400))
    if not math.isfinite(error) or -slope * float(x[-1]) <= SIGNIFICANT_Z * error:
        return False
    begin = max(0, 2 * stop - loss.steps.shape[0])
    return bool(_fell_between(loss, begin, stop, level, floor=0.0))


def _fell_between(
    loss: LossCurve, begin: int, stop: int, level: float, floor: float = PLATEAU_MAX_DROP
) -> bool | None:
    """Whether the raw points [begin, stop) fell more than a stall allows, with
    `PLATEAU_CONFIDENCE` standard errors to spare; None below 3 points.

    A stall allows a fall of `floor` (2%) of the level, or 25% of the run's average pace
    (from its start down to `level`) over the stretch: the window's stall test read the
    other way.
    """
    thirds = _thirds(loss, begin, stop)
    if thirds is None:
        return None
    first, end, error = thirds
    span = max(int(loss.steps[min(stop, loss.steps.shape[0] - 1)] - loss.steps[begin]), 1)
    allowed = max(floor * first, PLATEAU_RATE_SHARE * _average_pace(loss, level) * span)
    return (first - end) - PLATEAU_CONFIDENCE * error > allowed


def _never_learned(loss: LossCurve, run: Run) -> dict | None:
    """The loss is no lower than where it started, and surely fell < `NO_LEARNING` over the run.

    Measured: the rest of the run (its median) sits < 10% below the start (the first
    points), and a robust straight line through every point (Theil-Sen) falls < 10%
    over the run even with `PLATEAU_CONFIDENCE` standard errors added: all the points
    weigh in, so a noisy log of 25 points can show it. Where the loss is too noisy for
    that, a training accuracy whose line surely rose < 10% of its headroom (1 - its
    start) says the same. And it is not falling now: the last third is not
    significantly below the middle third (a slow, steady fall is lr_too_low's case).
    Nor is it falling steadily: in the stretch before the last 30% (as many points as
    those) it did not surely fall at 25% of its average pace or more. A small fall that
    goes on is learning, however small in %: a fine-tune's first logged loss is near its
    floor, and under a decaying lr it falls 5-10% in all, still falling until the lr is
    spent. A loss that "fell little and stopped" is flat there.
    """
    n = loss.values.shape[0]
    rest = loss.values[start_points(n) :]
    if rest.shape[0] < 3:
        return None
    level = float(np.median(rest))
    fall = loss.start - level
    if fall >= NO_LEARNING * loss.start:
        return None
    x = (loss.steps - loss.steps[0]).astype(np.float64)
    slope, _ = theil_sen(x, loss.values)
    trend_fall = -slope * float(x[-1])
    # Standard error of a fitted line's rise over its span: sigma * sqrt(12 / n) for evenly spread points,
    # 1.3x for the Theil-Sen line's lower efficiency.
    error = TREND_INEFFICIENCY * loss.noise * math.sqrt(12 / n)
    loss_shows = math.isfinite(error) and trend_fall + PLATEAU_CONFIDENCE * error < NO_LEARNING * loss.start
    accuracy = None if loss_shows else _accuracy_never_rose(run)
    if not loss_shows and accuracy is None:
        return None
    thirds = chunk_medians(loss.values, 3)
    if thirds.shape[0] == 3:
        third_error = math.sqrt(2) * loss.median_error(n // 3)
        if thirds[1] - thirds[2] >= max(SIGNIFICANT_Z * third_error, PLATEAU_MAX_DROP * thirds[1]):
            return None
    if _fell_at_pace_before(loss, tail_start(n, PLATEAU_WINDOW, 3), level):
        return None
    found = {
        "start": loss.start,
        "level": level,
        "fall": fall / loss.start,
        "trend_fall": trend_fall / loss.start,
    }
    return {**found, "points": n, **(accuracy or {})}


def _not_learning_shown(run: Run, loss: LossCurve, never: dict) -> dict | None:
    """What shows that a loss that never fell in the log is a model not learning, or None.

    Why: "never learned" compares the loss with its start, which is the untrained
    model's only when the log holds it. A log that starts after the first steps
    (Lightning's first point at step 49, a Trainer's at its logging_steps; see
    initial_loss_off) or logs per-epoch means opens after the steepest fall, where a
    model that learned fast and plateaued early (short of inputs or capacity) looks
    like one that never learned, and needs other advice.
    Shown (`shown_by`) when the log starts within the first steps ("initial"); when its
    start is still >= 80% of the chance level ln C, a C-class cross-entropy that has
    barely left it ("chance_loss"); when the accuracy ends within 10% of its headroom
    above chance, 1/C ("chance_accuracy"); or when the loss rose 10%+ above where the
    log began ("rose"): an early plateau holds its level, a loss going the wrong way is
    not learning now, whatever came before.
    """
    if run.x_axis(T.TRAIN_LOSS) != "epoch" and logs_initial_loss(loss.steps):
        return {"shown_by": "initial"}
    chance = chance_loss(run, loss.start)
    if chance is not None and loss.start >= PLATEAU_HIGH * chance:
        return {"shown_by": "chance_loss"}
    accuracy = _accuracy_now(run)
    classes = num_classes(run)
    if accuracy is not None and classes is not None:
        chance_acc = 1.0 / classes
        if accuracy[1] - chance_acc < NO_LEARNING * (1 - chance_acc):
            return {
                "shown_by": "chance_accuracy",
                "accuracy_of": accuracy[0],
                "accuracy": accuracy[1],
                "chance_acc": chance_acc,
            }
    if never["fall"] <= -NO_LEARNING:
        return {"shown_by": "rose"}
    return None


def _accuracy_now(run: Run) -> tuple[str, float] | None:
    """("validation" or "training", the accuracy the run ends at), as a fraction, or None.

    The validation accuracy (median of its last 3), else the training accuracy (of its
    last 10%, 5 points at least): what the model reached, which the loss alone cannot
    place when the log starts late.
    """
    sets = [s for s in validation_sets(run) if s.acc is not None]
    for label, series, share, least in (
        ("validation", sets[0].acc if sets else None, 0.0, 3),
        ("training", run.scalar(T.TRAIN_ACC), 0.1, 5),
    ):
        if series is None:
            continue
        _, values = finite_points(series)
        if values.shape[0]:
            values = as_fraction(values)
            return label, float(np.median(values[tail_start(values.shape[0], share, least) :]))
    return None


def _accuracy_never_rose(run: Run) -> dict | None:
    """Train accuracy whose robust line surely rose < `NO_LEARNING` of its headroom, or None."""
    series = run.scalar(T.TRAIN_ACC)
    if series is None:
        return None
    steps, values = finite_points(series)
    if values.shape[0] < MIN_CURVE_POINTS:
        return None
    values = as_fraction(values)
    # The start of the error rate 1 - accuracy: after a steep first rise, the first point alone.
    start = 1 - start_level(1 - values, noise_sigma(values))
    x = (steps - steps[0]).astype(np.float64)
    slope, _ = theil_sen(x, values)
    rise = slope * float(x[-1])
    error = TREND_INEFFICIENCY * noise_sigma(values) * math.sqrt(12 / values.shape[0])
    if not math.isfinite(error) or rise + PLATEAU_CONFIDENCE * error >= NO_LEARNING * (1 - start):
        return None
    return {"train_acc_start": start, "train_acc_trend_rise": rise}


def _never_learned_finding(run: Run, loss: LossCurve, never: dict) -> Finding:
    chance = chance_loss(run, loss.start)
    span = fmt_step(loss.steps[-1] - loss.steps[0])
    message = (
        f"The train loss has not come down: it started at {fmt(loss.start)} and has stayed around "
        f"{fmt(never['level'])} over {span} steps ({never['points']:,} logged points; "
        f"{fmt_change(never['level'] / loss.start)} from the start)"
    )
    if chance is not None:
        share = fmt_pct(never["level"] / chance)
        message += f", at {share} of the chance level ln {num_classes(run)} = {fmt(chance)}"
    if "train_acc_trend_rise" in never:
        message += (
            f"; the training accuracy did not rise either: it started at {fmt_pct(never['train_acc_start'])} "
            f"and its trend moved {fmt_points(never['train_acc_trend_rise'])} over the run"
        )
    if never.get("shown_by") == "chance_accuracy":
        message += (
            f"; the {never['accuracy_of']} accuracy ends at {fmt_pct(never['accuracy'])}, at chance "
            f"(1/{num_classes(run)} = {fmt_pct(never['chance_acc'])})"
        )
    val = _val_change(run)
    if val is not None:
        message += f"; the validation loss moved {fmt_change(val)} over the run"
    evidence = {"kind": NEVER_LEARNED, **never, "chance_loss": chance, "val_loss_change": val}
    more, advice, source = _stuck_advice(run, evidence, _lr_decayed_since(run, int(loss.steps[0])))
    return finding(
        RULE_ID,
        "warning",
        "The loss never came down: the model is not learning",
        message + more + ".",
        advice,
        source,
        step=int(loss.steps[0]),
        evidence=evidence,
    )


def _early_plateau_finding(run: Run, loss: LossCurve, never: dict) -> Finding:
    """The loss never fell in a log that starts after the initial loss: an early plateau.

    Where the log opens after the first steps, the model may have done its learning
    before it, as a model short of inputs or capacity does within its first hundred
    steps; then a lower lr and a bug hunt are the wrong advice. The accuracy, where
    logged, says how far it got: with the number of classes known, against chance.
    """
    first = int(loss.steps[0])
    span = fmt_step(loss.steps[-1] - loss.steps[0])
    opening = (
        "its first point is the mean over the first epoch"
        if run.x_axis(T.TRAIN_LOSS) == "epoch"
        else f"its first point is at step {fmt_step(first)}"
    )
    message = (
        f"The train loss has stayed around {fmt(never['level'])} since its first logged point "
        f"({fmt(loss.start)}; {fmt_change(never['level'] / loss.start)} over {span} steps, "
        f"{never['points']:,} logged points). The log starts after the initial loss ({opening}), so "
        "what the model learned before it is not in the log"
    )
    evidence = {"kind": EARLY, **never, "first_step": first}
    accuracy = _accuracy_now(run)
    classes = num_classes(run)
    learned = False
    if accuracy is not None:
        label, value = accuracy
        evidence.update(accuracy_of=label, accuracy=value)
        message += f"; the {label} accuracy ends at {fmt_pct(value)}"
        if classes is not None:
            # _not_learning_shown found it more than 10% of its headroom above chance.
            learned = True
            evidence["chance_acc"] = 1.0 / classes
            message += (
                f", above chance (1/{classes} = {fmt_pct(1.0 / classes)}): the model learned early and "
                "has not improved since"
            )
        else:
            message += " (the number of classes is unknown: compare it with chance, 1/C, or the largest class's share)"
    lr = configured_lr(run)
    capacity = (
        "The loss stopped where this model gets on these inputs: give it more to work with, more or better "
        "input features, or more capacity (wider or deeper layers), and regularize less."
    )
    advice = (
        capacity,
        "Then tune the learning rate: the loss reached this level before the first logged point, so a "
        + (f"higher one (now {fmt(lr)}; try {fmt(3 * lr)})" if lr else "higher one (2-3x)")
        + " or a longer run with a schedule may go further; if the loss then jumps around, divide it by "
        "2-10 instead.",
    )
    if not learned:
        advice += (
            "If the accuracy is at chance, the model learned nothing: overfit a single batch of 10-20 "
            "examples to find out why (labels misaligned with inputs, a loss on the wrong outputs, frozen "
            "parameters).",
        )
    return finding(
        RULE_ID,
        "warning",
        "Early plateau: the loss has not improved since the log began",
        message + ".",
        advice,
        f"{UNDERFIT_SOURCE}; {PLATEAU_SOURCE}",
        step=first,
        evidence=evidence,
    )


def _stuck_high_finding(
    run: Run, loss: LossCurve, window: Window, onset: int, evidence: dict, decayed: dict | None
) -> Finding:
    evidence = {"kind": STUCK_HIGH, **evidence}
    chance = evidence["chance_loss"]
    end = window.end
    level = f"{fmt_pct(end / loss.start)} of where it started"
    if chance is not None:
        level += f", {fmt_pct(end / chance)} of the chance level ln {num_classes(run)} = {fmt(chance)}"
    message = (
        f"The train loss has {_stalled_verb(window, 'stayed')} at about {fmt(end)} for the last "
        f"{fmt_step(loss.curve.steps[-1] - onset)} steps ({_change_words(window, PLATEAU_WINDOW)}) "
        f"and is still at {level}"
    )
    more, advice, source = _stuck_advice(run, evidence, decayed)
    return finding(
        RULE_ID,
        "warning",
        "Loss stuck high: training has stopped making progress",
        message + more + ".",
        advice,
        source,
        step=onset,
        evidence=evidence,
    )


def _stuck_advice(run: Run, evidence: dict, decayed: dict | None) -> tuple[str, tuple[str, ...], str]:
    """(message addendum, advice, source) for a loss stuck high: raise the lr when the updates are
    small, look at the peak when the schedule already decayed it, else divide it."""
    lr = configured_lr(run)
    ratios = update_ratios(run)
    check_learnable = (
        "If a lower learning rate does not help, check that the model can learn at all: overfit a "
        "single batch of 10-20 examples first (if it cannot, look for a bug: labels misaligned with "
        "inputs, a loss on the wrong outputs, frozen or detached parameters)."
    )
    if ratios is not None and ratios.model < PLATEAU_SMALL_UPDATES * UPDATE_RATIO_TARGET:
        # The measured steps are small: a flat region crept across, not a too-high lr bouncing.
        evidence["update_ratio"] = ratios.model
        guess, how = suggested_lr(lr, ratios.model, 1.0)
        guess = min(guess, PLATEAU_RAISE_CAP * lr) if guess is not None and lr else guess
        evidence["suggested_lr"] = guess
        advice = (
            "Raise the learning rate, or add momentum (0.9): the updates are "
            f"{fmt_factor(ratios.model / UPDATE_RATIO_TARGET)} the healthy ~{fmt(UPDATE_RATIO_TARGET)}, "
            "so the "
            "run is creeping across a flat region rather than overshooting"
            + (f"; try {fmt(guess)} ({how})." if guess is not None and how else "."),
            "If the loss then jumps around instead of falling, go the other way: divide the learning "
            "rate by 2-10.",
            "If neither helps, check that the model can learn at all: overfit a single batch of 10-20 "
            "examples first.",
        )
        more = f"; its updates are small (median update/weight ratio {fmt(ratios.model)})"
        return more, advice, f"{LR_LOW_SOURCE}; {PLATEAU_SOURCE}"
    if decayed is not None:
        more = (
            f"; the learning rate has decayed to {fmt(decayed['lr'])} "
            f"({fmt_pct(decayed['lr'] / decayed['peak'])} of its peak {fmt(decayed['peak'])})"
        )
        advice = (
            f"The loss did not fall at the peak learning rate {fmt(decayed['peak'])} either: try a peak "
            "3-10x lower, with a warm-up.",
            check_learnable,
        )
        return more, advice, PLATEAU_SOURCE
    advice = (
        f"Divide the learning rate by 2-10 (now {fmt(lr)}; try {fmt(lr / 5)})."
        if lr
        else "Divide the learning rate by 2-10.",
        check_learnable,
    )
    return "", advice, PLATEAU_SOURCE


def _long_plateau_finding(
    loss: LossCurve, long: Window, onset: int, evidence: dict, lr: float | None
) -> Finding:
    # The window proved the last half flat, whatever the onset's estimate on a noisy curve says.
    onset = min(onset, int(loss.steps[long.begin]))
    flat_steps = int(loss.steps[-1] - onset)
    total = max(int(loss.steps[-1] - loss.steps[0]), 1)
    evidence = {
        "kind": NO_PROGRESS,
        **evidence,
        "flat_share": flat_steps / total,
        "long_window_drop": long.drop,
    }
    return finding(
        RULE_ID,
        "warning",
        f"No progress for {fmt_pct(flat_steps / total)} of the run",
        f"The train loss fell from {fmt(loss.start)} to about {fmt(long.end)} by step {fmt_step(onset)} and "
        f"has not improved since: {fmt_step(flat_steps)} steps, {fmt_pct(flat_steps / total)} of the run "
        f"({_change_words(long, PLATEAU_LONG)}), with no validation "
        "curve improving meanwhile.",
        (
            (
                f"Decay the learning rate when the loss stalls: divide it by 2-10 (now {fmt(lr)}), or use "
                "ReduceLROnPlateau / a cosine schedule."
                if lr
                else "Decay the learning rate when the loss stalls: divide it by 2-10, or use "
                "ReduceLROnPlateau / a cosine schedule."
            ),
            "If a decay does not move it either, the model has reached its capacity on this data: a larger "
            "model, or stop training at the plateau's start and save the compute.",
        ),
        PLATEAU_SOURCE,
        step=onset,
        evidence=evidence,
    )


def _change_words(window: Window, share: float) -> str:
    """What the loss did across a stalled window of the last `share` of the run, as measured.

    "it changed -0.4% across ..." within the 2% a stall allows; beyond that, "rose" or
    "fell" with the size, and "within the scatter" where noise alone could make it: a
    stalled window may rise 24% on a noisy log, and that must not read as "flattened".
    """
    change = fmt_change(window.end / window.first)
    where = f"across the last {fmt_pct(share)} of the run"
    if abs(window.drop) < PLATEAU_MAX_DROP:
        return f"it changed {change} {where}"
    verb = "rose" if window.drop < 0 else "fell"
    within = abs(window.end - window.first) < PLATEAU_CONFIDENCE * window.error
    return f"it {verb} {change.lstrip('+-')} {where}" + (", within the scatter" if within else "")


def _stalled_verb(window: Window, flat: str = "flattened") -> str:
    """`flat` for a window that moved < 2%; "stopped falling" for one that rose more (within the scatter)."""
    return "stopped falling" if window.drop <= -PLATEAU_MAX_DROP else flat


def _lr_decayed_since(run: Run, since: int) -> dict | None:
    """The logged lr fell below `LR_DECAYED` of its peak at or after `since`: {lr, peak}, else None."""
    lr = lr_series(run)
    if lr is None or lr[1].max() <= 0:
        return None
    steps, values = lr
    peak = float(values.max())
    now = float(values[-1])
    if steps[-1] < since or now >= LR_DECAYED * peak:
        return None
    return {"lr": now, "peak": peak}


def _val_change(run: Run) -> float | None:
    """Last over first validation loss (medians of up to 3 at each end), or None."""
    sets = [s for s in validation_sets(run) if s.loss is not None]
    if not sets:
        return None
    _, values = finite_points(sets[0].loss)
    if values.shape[0] < 2 or values[0] <= 0:
        return None
    k = max(1, min(3, values.shape[0] // 3))
    first = float(np.median(values[:k]))
    return float(np.median(values[-k:])) / first if first > 0 else None


def _plateau_onset(curve: Curve, level: float, window: np.ndarray) -> int:
    """First step from which the smoothed loss stays near the plateau level (5%, or 3 sigma of jitter).

    "Stays" allows a tenth of the later points outside the band: on a noisy log one odd
    stretch must not move the onset to the end of the run.
    """
    tolerance = max(0.05 * abs(level), 3 * robust_sigma(window))
    inside = np.abs(curve.values - level) <= tolerance
    # Share of the points from each index on that are inside the band.
    later_inside = np.cumsum(inside[::-1])[::-1] / np.arange(len(curve), 0, -1)
    ok = np.flatnonzero(inside & (later_inside >= ONSET_INSIDE_SHARE))
    return int(curve.steps[ok[0]]) if ok.shape[0] else int(curve.steps[-1])


def _val_still_improving(run: Run, since: int) -> bool:
    """Whether a validation loss (the run's own or any eval set's) reached a new best since `since`."""
    for vs in validation_sets(run):
        if vs.loss is None:
            continue
        steps, values = finite_points(vs.loss)
        before, after = values[steps < since], values[steps >= since]
        if before.shape[0] and after.shape[0] and after.min() < before.min() * (1 - VAL_STILL_IMPROVING):
            return True
    return False
