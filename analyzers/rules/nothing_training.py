"""Rule `nothing_training`: every gradient, or every update, is exactly zero: the model does not train.

The check's docstring says what is measured, why it matters and what to do; the dashboard
and docs/rules.md show it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from trainscope.analyzers.facts import NORM_OR_EMBEDDING_TYPES, layer_types, layers_updated, parameter_counts
from trainscope.analyzers.findings import Finding, Skip
from trainscope.analyzers.rules.common import finding, fmt, fmt_pct, fmt_step, missing_reason
from trainscope.analyzers.rules.robust import finite_points, head_median, longest_tail_run, tail_median
from trainscope.analyzers.run import Run, Series
from trainscope.logformat import tags as T

RULE_ID = "nothing_training"
NAME = "nothing training"  # what the finding is called where it is listed under another
NOTHING_SOURCE = (
    "PyTorch docs: torch.nn.utils.clip_grad_norm_ scales every gradient by max_norm / total_norm, so "
    "max_norm=0 zeroes them all; autograd gives no gradient to a tensor computed under torch.no_grad() "
    "or .detach(), or to parameters with requires_grad=False"
)
OPTIMIZER_SOURCE = (
    "PyTorch docs, torch.optim, 'Constructing it': an optimizer is given an iterable of the parameters to "
    "optimize and updates those ('make sure that optimized parameters live in consistent locations when "
    "optimizers are constructed and used')"
)
ZERO_STEPS = 20  # the gradient norm exactly 0 for the last 20 logged steps or more...
ZERO_SHARE = 0.1  # ...and 10% of the run at least: not a few skipped steps
ZERO_SAMPLES = 3  # or every layer's gradient norm, or update ratio, exactly 0 in its last 3 samples or more
# The model's own facts (run.json) say nothing it holds is trained, unless the loss says otherwise:
LEARNED_FALL = 0.2  # the train loss's closing median 20%+ below its opening one: something outside it trains
EDGE_SHARE = 0.2  # the opening and closing windows: a fifth of the logged loss points each
# Which fact says so (evidence "cause").
ALL_FROZEN = "frozen"  # no parameter requires grad
NOT_IN_OPTIMIZER = "not_in_optimizer"  # some do, but the optimizer holds none of them


def check(run: Run) -> Iterable[Finding]:
    """Every gradient or every update is exactly zero for many steps: nothing is training.

    Why it matters: a run that computes losses but never changes its weights burns its
    whole budget for nothing, and shows it only as a flat loss. The usual causes:
    ``clip_grad_norm_(..., max_norm=0)`` meant as "no clipping" (it zeroes every
    gradient), a loss detached from the graph (``.item()``, ``.detach()``, computed under
    ``torch.no_grad()``), every parameter frozen, or an optimizer given other parameters
    than the model's.
    Measured: first, run.json's model summary (the collector's, at attach and whenever
    the trained parameters change): a model with parameters none of which requires grad
    (every parameter frozen), or with some that do but not one layer the optimizer
    updates (the optimizer holds none of this model's parameters: it was built for
    another model, or before the model was re-created or its parameters replaced), with
    no per-layer gradient or update ever logged. The one thing that overrules these facts
    is a train loss whose closing fifth's median is 20%+ below its opening fifth's: a
    model whose weights never change keeps its loss where it started, so a loss that
    fell says something trains that the collector was not shown (a watched submodule,
    an optimizer holding master copies of the weights), and the rule says nothing.
    Then the gradient norm exactly 0 in each of the last 20 logged steps and 10%+ of
    the run; or every layer's gradient norm (as the optimizer gets it, after clipping),
    or every layer's update/weight ratio, exactly 0 in each of its last 3 samples and
    10%+ of them (steps an AMP GradScaler skipped aside). Where the norm passed before
    clipping is not 0 while every layer's is, the clipping zeroed them: said so. Critical.
    What to do: pass ``clip_grad_norm_`` a real threshold (1-10), or do not call it; make
    sure the loss is computed from the model's outputs with autograd on; check
    ``requires_grad`` and what the optimizer was given (``sum(p.numel() for g in
    opt.param_groups for p in g['params'])``); build the optimizer from the model that
    trains, once that model is final.
    """
    untrained = _untrained_model(run)
    if untrained is not None:
        return [untrained]
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


def _untrained_model(run: Run) -> Finding | None:
    """The finding when run.json says none of the model's parameters is trained, else None."""
    parameters, requires_grad = parameter_counts(run)
    updated = layers_updated(run)
    if not parameters or requires_grad is None:
        return None
    if run.layers(T.GRAD_NORM_PREFIX) or run.layers(T.UPDATE_RATIO_PREFIX):
        return None  # some layer was measured: trained at some point, the gradient checks judge it
    if requires_grad == 0:
        cause = ALL_FROZEN
    elif updated is not None and not any(updated):
        cause = NOT_IN_OPTIMIZER
    else:
        return None
    if _loss_fell(run):
        return None
    loss = run.scalar(T.TRAIN_LOSS)
    since = int(loss.steps[0]) if loss is not None and len(loss) else 0
    evidence = {"cause": cause, "parameters": parameters, "trainable_parameters": requires_grad}
    if cause == ALL_FROZEN:
        return finding(
            RULE_ID,
            "critical",
            "Nothing is training: every parameter is frozen (requires_grad=False)",
            f"None of the model's {parameters:,} parameters requires grad (run.json: trainable parameters 0): "
            "every parameter is frozen (requires_grad=False), so backward() gives no weight a gradient and the "
            "optimizer has nothing to update. The loss stays where it started, whatever the learning rate.",
            (
                "Unfreeze what should train: model.requires_grad_(True), or for a fine-tune the head alone. A "
                "freeze loop that picks parameters by name (if 'fc' not in name: ...) must match the model's "
                "own names: print [n for n, p in model.named_parameters() if p.requires_grad] before training.",
                "Check it before the first step: sum(p.numel() for p in model.parameters() if p.requires_grad) "
                "must be above 0.",
            ),
            NOTHING_SOURCE,
            step=since,
            evidence=evidence,
        )
    layers = len(updated or ())
    return finding(
        RULE_ID,
        "critical",
        "Nothing is training: the optimizer holds none of this model's parameters",
        f"{_how_many(requires_grad, parameters)} require grad, but the optimizer updates "
        f"none of its {layers} layers: it holds none of this model's parameters (built for another model, or "
        "before the model was replaced/moved?). The gradients reach the model, the optimizer steps other "
        "tensors, and the model's weights never change.",
        (
            "Build the optimizer from the model that trains, once the model is final: re-creating it "
            "(model = Net()), loading a checkpoint into a new instance or wrapping it in a way that copies its "
            "parameters comes first, then opt = torch.optim.SGD(model.parameters(), ...). In a notebook, run "
            "the optimizer's cell again after the model's.",
            "Check it before the first step: {id(p) for g in opt.param_groups for p in g['params']} & "
            "{id(p) for p in model.parameters()} must not be empty.",
        ),
        OPTIMIZER_SOURCE,
        step=since,
        evidence={**evidence, "layers": layers},
    )


def _how_many(some: int, of: int) -> str:
    return (
        f"All {of:,} of the model's parameters"
        if some == of
        else f"{some:,} of the model's {of:,} parameters"
    )


def _loss_fell(run: Run) -> bool:
    """Whether the train loss's closing median is `LEARNED_FALL` below its opening one."""
    loss = run.scalar(T.TRAIN_LOSS)
    if loss is None:
        return False
    _, values = finite_points(loss)
    if values.shape[0] < 2:
        return False
    start, end = head_median(values, EDGE_SHARE), tail_median(values, EDGE_SHARE)
    return start - end > LEARNED_FALL * abs(start)
