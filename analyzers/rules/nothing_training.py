"""Rule `nothing_training`: every gradient, or every update, is exactly zero: the model does not train.

The check's docstring says what is measured, why it matters and what to do; the dashboard
and docs/rules.md show it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from trainscope.analyzers.facts import NORM_OR_EMBEDDING_TYPES, layer_types
from trainscope.analyzers.findings import Finding, Skip
from trainscope.analyzers.rules.common import finding, fmt, fmt_pct, fmt_step, missing_reason
from trainscope.analyzers.rules.robust import finite_points, longest_tail_run
from trainscope.analyzers.run import Run, Series
from trainscope.logformat import tags as T

RULE_ID = "nothing_training"
NAME = "nothing training"  # what the finding is called where it is listed under another
NOTHING_SOURCE = (
    "PyTorch docs: torch.nn.utils.clip_grad_norm_ scales every gradient by max_norm / total_norm, so "
    "max_norm=0 zeroes them all; autograd gives no gradient to a tensor computed under torch.no_grad() "
    "or .detach(), or to parameters with requires_grad=False"
)
ZERO_STEPS = 20  # the gradient norm exactly 0 for the last 20 logged steps or more...
ZERO_SHARE = 0.1  # ...and 10% of the run at least: not a few skipped steps
ZERO_SAMPLES = 3  # or every layer's gradient norm, or update ratio, exactly 0 in its last 3 samples or more


def check(run: Run) -> Iterable[Finding]:
    """Every gradient or every update is exactly zero for many steps: nothing is training.

    Why it matters: a run that computes losses but never changes its weights burns its
    whole budget for nothing, and shows it only as a flat loss. The usual causes:
    ``clip_grad_norm_(..., max_norm=0)`` meant as "no clipping" (it zeroes every
    gradient), a loss detached from the graph (``.item()``, ``.detach()``, computed under
    ``torch.no_grad()``), every parameter frozen, or an optimizer given other parameters
    than the model's.
    Measured: the gradient norm exactly 0 in each of the last 20 logged steps and 10%+ of
    the run; or every layer's gradient norm (as the optimizer gets it, after clipping),
    or every layer's update/weight ratio, exactly 0 in each of its last 3 samples and
    10%+ of them (steps an AMP GradScaler skipped aside). Where the norm passed before
    clipping is not 0 while every layer's is, the clipping zeroed them: said so. Critical.
    What to do: pass ``clip_grad_norm_`` a real threshold (1-10), or do not call it; make
    sure the loss is computed from the model's outputs with autograd on; check
    ``requires_grad`` and what the optimizer was given (``sum(p.numel() for g in
    opt.param_groups for p in g['params'])``).
    """
    norm = run.scalar(T.GRAD_GLOBAL_NORM)
    grads, ratios = _trained_layers(run, T.GRAD_NORM_PREFIX), _trained_layers(run, T.UPDATE_RATIO_PREFIX)
    if norm is None and not grads and not ratios:
        raise Skip(
            missing_reason(
                f"{T.GRAD_GLOBAL_NORM}, {T.GRAD_NORM_PREFIX}* or {T.UPDATE_RATIO_PREFIX}*",
                "gradients or updates",
            )
        )
    found = _zero_gradients(run, norm) if norm is not None else None
    if found is None and grads:
        found = _every_layer_zero(grads, "gradient norm")
        if found is not None and norm is not None:
            found = _clipped_to_zero(found, norm)
    if found is None and ratios:
        found = _every_layer_zero(ratios, "update")
    if found is None:
        return []
    since, what, evidence = found
    note = (
        f"; the norm passed before clipping is about {fmt(evidence['norm_before_clipping'])}, so the clipping "
        "sets them to 0"
        if "norm_before_clipping" in evidence
        else ""
    )
    return [
        finding(
            RULE_ID,
            "critical",
            f"Nothing is training: {what} since step {fmt_step(since)}",
            f"{what[0].upper() + what[1:]} since step {fmt_step(since)}{note}: the weights learn nothing "
            "(weight decay at most shrinks them), whatever the loss says.",
            (
                "If the loop calls torch.nn.utils.clip_grad_norm_(params, max_norm=0), that zeroes every "
                "gradient: pass a real threshold (1-10) or drop the call.",
                "Check that the loss comes from the model's outputs with autograd on (not .item(), .detach() "
                "or torch.no_grad()), that the parameters have requires_grad=True, and that the optimizer "
                "was given model.parameters().",
            ),
            NOTHING_SOURCE,
            step=since,
            evidence=evidence,
        )
    ]


def _zero_gradients(run: Run, norm: Series) -> tuple[int, str, dict] | None:
    steps, values = finite_points(norm)
    skipped = run.scalar(T.STEP_SKIPPED)
    if skipped is not None:  # an AMP GradScaler's skipped steps carry no gradient on purpose
        keep = ~np.isin(steps, skipped.steps[skipped.values >= 0.5])
        steps, values = steps[keep], values[keep]
    streak = longest_tail_run(values == 0)
    if streak < ZERO_STEPS or streak < ZERO_SHARE * values.shape[0]:
        return None
    since = int(steps[-streak])
    share = streak / values.shape[0]
    return (
        since,
        f"every gradient norm is exactly 0 ({fmt_pct(share)} of the logged steps)",
        {
            "zero_steps": streak,
            "share": share,
        },
    )


def _trained_layers(run: Run, prefix: str) -> dict[str, Series]:
    """The layers' series under `prefix`, norm layers and embeddings aside (often frozen on purpose)."""
    types = layer_types(run)
    return {
        name: s for name, s in run.layers(prefix).items() if types.get(name) not in NORM_OR_EMBEDDING_TYPES
    }


def _every_layer_zero(layers: dict[str, Series], what: str) -> tuple[int, str, dict] | None:
    starts = []
    for series in layers.values():
        steps, values = finite_points(series)
        streak = longest_tail_run(values == 0)
        if streak < ZERO_SAMPLES or streak < ZERO_SHARE * values.shape[0]:
            return None
        starts.append(int(steps[-streak]))
    return max(starts), f"every layer's {what} is exactly 0 ({len(layers)} layers)", {"layers": len(layers)}


def _clipped_to_zero(found: tuple[int, str, dict], norm: Series) -> tuple[int, str, dict]:
    """Every layer's gradient 0 while the norm passed before clipping is not: the clipping zeroed them."""
    since, what, evidence = found
    steps, values = finite_points(norm)
    before = values[steps >= since]
    if before.shape[0] == 0 or float(np.median(before)) <= 0:
        return found
    return since, what, {**evidence, "norm_before_clipping": float(np.median(before))}
