"""Rule `nonfinite`: NaN or Inf in the training loss or a gradient norm.

The check's docstring says what is measured, why it matters and what to do; the dashboard
and docs/rules.md show it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from trainscope.analyzers.facts import (
    lr_to_adjust,
    ordered_layers,
)
from trainscope.analyzers.findings import Finding, Skip
from trainscope.analyzers.rules.common import (
    cite,
    finding,
    fmt,
    fmt_factor,
    fmt_pct,
    fmt_step,
)
from trainscope.analyzers.rules.robust import (
    finite_points,
)
from trainscope.analyzers.rules.skipped_steps import (
    INFERRED_SKIP_FEW,
    fp16_setting,
    loss_signals,
    nonfinite_steps,
    norm_signals,
)
from trainscope.analyzers.run import Run
from trainscope.logformat import tags as T

RULE_ID = "nonfinite"
NAME = "NaN/Inf values"  # what the finding is called where it is listed under another
NONFINITE_SOURCE = cite(
    (
        "001",
        120,
        "为什么一用relu梯度一会儿就变成Nan",
        "why do the gradients turn into NaN soon after switching to ReLU",
    ),
    (
        "001",
        24,
        "但是一定要做。否则可能会减慢收敛速度,影响收敛结果,甚至造成Nan等一系列问题。",
        "but do it, the initialization: otherwise convergence may slow down, the result suffer, and NaN and other problems follow",
    ),
)
NONFINITE_CONTEXT_STEPS = 20  # the gradient norm "just before" a NaN is the median of the 20 steps before
SKIPS_USUAL_SHARE = 0.01  # skips on > 1% of the logged steps (and more than a few) are more than usual


def check(run: Run) -> Iterable[Finding]:
    """NaN or Inf in the training loss or a gradient norm.

    Why it matters: one NaN gradient applied by the optimizer turns every weight it
    touches into NaN; training is over from that step on, however long it keeps
    running. An AMP GradScaler is different: inf gradients are how it finds its loss
    scale, and it skips those steps.
    Measured: any NaN/Inf in ``train/loss``, ``grad/global_norm`` or ``grad/norm/*``,
    or in a training loss the run logs under another name (a term of the loss,
    ``dynamics_loss``) (critical, at the first such step). Info only where every one
    of them was a skipped step: ``opt/step_skipped`` is 1 there (TrainScope's
    collector records it), or, in a log that does not record skips (a Hugging Face
    Trainer's ``grad_norm: inf`` under ``fp16=True``), the gradient norm alone was
    non-finite, on at most 3 logged points (1% on long logs) besides up to 16 that open
    the log (GradScaler halving its initial scale until it fits), and the next loss
    and norm after each are finite: an applied inf/NaN update would have made every
    later loss NaN, so the optimizer did not take it.
    What to do: lower the learning rate; clip gradients; check the initialization
    and the inputs (a NaN in the data gives a NaN loss at once).
    """
    signals = {**loss_signals(run), **norm_signals(run)}
    if not signals:
        raise Skip(f"needs {T.TRAIN_LOSS} or gradient norms, which this run does not log")
    judged = nonfinite_steps(run)
    if not judged.bad:
        return []
    bad_steps = judged.bad
    ends_bad = [tag for tag in bad_steps if not np.isfinite(signals[tag].values[-1])]
    real = judged.real
    if real.shape[0] == 0:
        total_points = max(len(s) for s in signals.values())
        kinds = _nonfinite_kinds(signals, list(bad_steps), judged.skipped)
        return [_nonfinite_skipped_only(run, judged.skipped, kinds, total_points, judged.inferred)]

    first = int(real[0])
    first_tags = [tag for tag, steps in bad_steps.items() if np.isin(first, steps)]
    kinds = _nonfinite_kinds(signals, first_tags, first)
    layers = ordered_layers(
        run, [tag[len(T.GRAD_NORM_PREFIX) :] for tag in first_tags if tag.startswith(T.GRAD_NORM_PREFIX)]
    )
    what = ", ".join(first_tags[:4]) + (f" and {len(first_tags) - 4} more" if len(first_tags) > 4 else "")
    message = f"{what} became {kinds} at step {fmt_step(first)}"
    message += f"; {real.shape[0]:,} logged step(s) non-finite in all"
    if ends_bad:
        message += ", and it is still non-finite at the last logged step"
    before = _norm_before(run, first)
    if before is not None:
        message += (
            f"; just before, the gradient norm was {fmt(before[0])}, {fmt_factor(before[1])} its median "
            f"of {fmt(before[2])}"
        )
    lr, lr_name = lr_to_adjust(run)
    advice = (
        f"Lower the {lr_name}: from {fmt(lr)} to about {fmt(lr / 10)}."
        if lr
        else "Lower the learning rate 3-10x.",
        "Clip the gradient norm: torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=5.0) "
        "before optimizer.step().",
        "Check the initialization (He for ReLU, Xavier for tanh/sigmoid) and the inputs "
        "(torch.isfinite(x).all() on a batch; no log(0) or division by zero in the loss).",
    )
    return [
        finding(
            RULE_ID,
            "critical",
            f"Training produced {kinds} at step {fmt_step(first)}",
            message + ".",
            advice,
            NONFINITE_SOURCE,
            step=first,
            layer=layers[0] if layers else None,
            evidence={
                "first_step": first,
                "nonfinite_steps": int(real.shape[0]),
                "signals": sorted(bad_steps),
                "first_signals": first_tags,
                "still_nonfinite": ends_bad,
                "amp_skipped_steps": int(judged.skipped.shape[0]),
                "grad_norm_before": before[0] if before else None,
                "grad_norm_median": before[2] if before else None,
            },
        )
    ]


def _nonfinite_kinds(signals: dict, tags: list[str], steps: int | np.ndarray) -> str:
    """ "NaN", "Inf" or "NaN and Inf": what `tags` hold at `steps` (one step or several)."""
    values = np.concatenate([s.values[np.isin(s.steps, steps)] for tag, s in signals.items() if tag in tags])
    has_nan = bool(np.isnan(values).any())
    has_inf = bool(np.isinf(values).any())
    return "NaN and Inf" if has_nan and has_inf else ("NaN" if has_nan else "Inf")


def _norm_before(run: Run, step: int) -> tuple[float, float, float] | None:
    """(norm just before `step`, its factor over the run's median, the median) when it was unusual."""
    series = run.scalar(T.GRAD_GLOBAL_NORM)
    if series is None:
        return None
    steps, values = finite_points(series)
    before = values[steps < step]
    if before.shape[0] < 2 * NONFINITE_CONTEXT_STEPS:
        return None
    recent = float(np.max(before[-3:]))
    median = float(np.median(before[:-NONFINITE_CONTEXT_STEPS]))
    if median <= 0 or recent < 3 * median:
        return None
    return recent, recent / median, median


def _nonfinite_skipped_only(
    run: Run, steps: np.ndarray, kinds: str, total_points: int, inferred: bool
) -> Finding:
    scale = run.scalar(T.LOSS_SCALE)
    where = f"first at step {fmt_step(steps[0])}, last at {fmt_step(steps[-1])}"
    if steps.shape[0] == 1:
        where = f"at step {fmt_step(steps[0])}"
    if inferred:
        message = (
            f"The gradient norm was {kinds} on {steps.shape[0]:,} logged step(s) ({where}), and the loss and "
            "the gradient norm logged after are finite: the optimizer skipped the step, as an AMP GradScaler "
            "does when the scaled gradients overflow (an update with inf/NaN gradients would have made every "
            "later loss NaN)"
        )
        fp16 = fp16_setting(run)
        if fp16:
            message += f"; the run trained in float16: {fp16}"
    else:
        message = (
            f"{steps.shape[0]:,} step(s) had inf/NaN gradients ({where}) and the optimizer skipped them, "
            "as an AMP GradScaler does while it finds its loss scale"
        )
    if scale is not None:
        message += f"; the loss scale is now {fmt(float(scale.values[-1]))}"
    share = steps.shape[0] / max(total_points, 1)
    if share > SKIPS_USUAL_SHARE and steps.shape[0] > INFERRED_SKIP_FEW:
        message += f". That is {fmt_pct(share)} of the steps: more than usual"
    return finding(
        RULE_ID,
        "info",
        "AMP skipped steps with inf/NaN gradients",
        message + ".",
        (
            "Nothing to do while skips are rare: GradScaler lowers its scale and goes on.",
            "If skips keep coming, look for the overflow: lower the learning rate, clip gradients "
            "(after scaler.unscale_(optimizer)), or compute the loss in float32.",
        ),
        NONFINITE_SOURCE,
        step=int(steps[0]),
        evidence={
            "skipped_steps": int(steps.shape[0]),
            "first_step": int(steps[0]),
            "share": share,
            "inferred": inferred,
        },
    )
