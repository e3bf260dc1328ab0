"""The cause graph: which finding can explain which, and the evidence each link needs.

One fault shows as several findings. A learning rate far too high kills ReLUs, blows
the weights up, stalls the loss and leaves the model at chance, and each rule reports
what it sees; read one by one they look like five faults, and two of the five pieces of
advice ("add capacity", "add weight decay") would not help. `explain` links them: a
symptom whose cause was also found carries ``caused_by`` (the cause's rule id), root
causes come first, each at least as severe as the worst symptom it explains, and a
symptom keeps only the advice that still helps once its cause is treated. A symptom
with no cause found stays a root, so two independent faults in one run stay two roots.

A link holds only with evidence: the cause begins before (or at) the symptom, and
where the link says so, the symptom begins early, sits in or after the cause's layer,
or the cause shows the trait that makes it the cause (oversized updates, a divergence).
When several causes hold for one symptom, the one that began last before it explains
it (the nearest preceding event; one the evidence shows only later, such as a learning
rate whose effect on the loss came late, after those), then the more severe, then the
link listed first.
docs/rules.md lists every link and why it holds.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from trainscope.analyzers.facts import ordered_layers
from trainscope.analyzers.findings import SEVERITY_ORDER, Finding
from trainscope.analyzers.rules import (
    activation_on_logits,
    bad_initialization,
    dead_relu,
    exploding_gradients,
    gradients_not_zeroed,
    initial_loss_off,
    loss_plateau,
    loss_spikes,
    lr_too_high,
    noisy_batches,
    nonfinite,
    nothing_training,
    saturated_activations,
    underfitting,
    unnormalized_inputs,
    unshuffled_data,
    vanishing_gradients,
    weight_growth,
)
from trainscope.analyzers.rules.updates import UPDATE_RATIO_TARGET
from trainscope.analyzers.run import Run
from trainscope.logformat import tags as T

# A cause "begins before" a symptom up to this share of the run after it: sampled signals
# (dead units every 50 steps) and smoothed ones (loss bins) place the same event a little apart.
BEFORE_SLACK = 0.05
# A symptom "from the start" begins within the first 10% of the run (an initialization's doing).
EARLY_SHARE = 0.1
# A learning rate at half its peak or more when a symptom began was already "the" learning rate.
LR_AT_PEAK = 0.5
# Update ratios this far above the healthy ~1e-3 are steps big enough to do the damage.
OVERSIZED_UPDATES = 10 * UPDATE_RATIO_TARGET

Holds = Callable[[Finding, Finding, Run], bool]
KeepAdvice = Callable[[str], bool]


@dataclass(frozen=True)
class Link:
    """`cause` can explain `symptom` when `holds`; `keep` says which of the symptom's advice still helps."""

    cause: str
    symptom: str
    holds: Holds
    keep: KeepAdvice
    why: str  # one sentence for docs/rules.md: why the cause produces the symptom


# --- the evidence a link needs -------------------------------------------------------------


def _span(run: Run) -> tuple[int, int]:
    """(first step, number of steps) the run's findings can lie in."""
    firsts, lasts = [], []
    for series in run.scalars.values():
        if len(series):
            firsts.append(int(series.steps[0]))
            lasts.append(int(series.steps[-1]))
    if not firsts:
        return 0, 1
    return min(firsts), max(1, max(lasts) - min(firsts))


def before(cause: Finding, symptom: Finding, run: Run) -> bool:
    """the cause begins before the symptom (5% of the run of slack)

    Sampled signals (dead units every 50 steps) and smoothed ones (loss bins) place one
    event a little apart.
    """
    if cause.step is None or symptom.step is None:
        return True
    _, span = _span(run)
    return cause.step <= symptom.step + BEFORE_SLACK * span


def strictly_before(cause: Finding, symptom: Finding, run: Run) -> bool:
    """the cause begins at or before the symptom, no slack

    For two signals read every step (the loss, the gradient norm), where the order of
    events is the evidence.
    """
    return cause.step is None or symptom.step is None or cause.step <= symptom.step


# loss_plateau kinds that span the whole log: a cause found anywhere in it is there while they last.
WHOLE_RUN_PLATEAUS = (loss_plateau.NEVER_LEARNED, loss_plateau.EARLY)


def during(cause: Finding, symptom: Finding, run: Run) -> bool:
    """before, or the symptom spans the whole run (a loss that never came down, or that sat on
    its plateau from the first logged point)

    Then a cause found anywhere in the run is there while the symptom lasts.
    """
    return before(cause, symptom, run) or symptom.evidence.get("kind") in WHOLE_RUN_PLATEAUS


def lr_already_high(cause: Finding, symptom: Finding, run: Run) -> bool:
    """during, or the lr was at half its peak or more when the symptom began

    A learning rate is a setting, there from step 0; the loss shows it only later.
    Without a logged lr it is taken as constant, there from the start.
    """
    if during(cause, symptom, run) or symptom.step is None:
        return True
    series = run.scalar(T.LR)
    if series is None:
        return True
    ok = np.isfinite(series.values)
    if not ok.any():
        return True
    steps, values = series.steps[ok], series.values[ok]
    at = int(np.searchsorted(steps, symptom.step, side="right")) - 1
    return at >= 0 and values[at] >= LR_AT_PEAK * float(values.max())


def early(symptom: Finding, run: Run) -> bool:
    """the symptom is there from the start: within the first `EARLY_SHARE` of the run"""
    if symptom.step is None:
        return True
    first, span = _span(run)
    return symptom.step <= first + EARLY_SHARE * span


def _bad_layers(cause: Finding) -> list[str]:
    layers = cause.evidence.get("layers") or []
    names = [entry.get("layer") if isinstance(entry, dict) else entry for entry in layers]
    return [str(n) for n in names if n is not None] or ([cause.layer] if cause.layer else [])


def at_or_after_a_bad_layer(cause: Finding, symptom: Finding, run: Run) -> bool:
    """the symptom's layer is one the cause names, or comes after one

    A signal that starts wrong in one layer passes through every layer after it.
    """
    bad = _bad_layers(cause)
    if symptom.layer is None or not bad:
        return True
    order = ordered_layers(run, set(bad) | {symptom.layer})
    return order.index(symptom.layer) >= min(order.index(b) for b in bad)


def oversized_steps(cause: Finding) -> bool:
    """the cause shows oversized steps (a divergence, a blow-up, or update ratios 10x ~1e-3)"""
    ev = cause.evidence
    ratio = max((ev.get(k) or 0.0) for k in ("update_ratio", "early_update_ratio"))
    return cause.severity == "critical" or ratio >= OVERSIZED_UPDATES or "peak" in ev


def bouncing(cause: Finding) -> bool:
    """the cause shows the loss jumping around, or oversized steps"""
    return "jump_sigma" in cause.evidence or oversized_steps(cause)


def swinging(cause: Finding) -> bool:
    """the symptom is the loss jumping around, with no divergence"""
    return "jump_sigma" in cause.evidence and not diverged(cause)


def diverged(cause: Finding) -> bool:
    """a divergence or blow-up of the loss, not only large update ratios"""
    return "smoothed_end" in cause.evidence or "peak" in cause.evidence or cause.severity == "critical"


def on_the_logits(cause: Finding, symptom: Finding, run: Run) -> bool:
    """the dead units are those of the activation after the output layer

    Dead units in a hidden layer have causes of their own.
    """
    return symptom.layer is not None and symptom.layer == cause.evidence.get("activation")


def init_too_large(cause: Finding) -> bool:
    """a layer starts at a scale far above He/Xavier (too small a scale leaves the loss near ln C)"""
    return any(
        p.get("direction") == "large" for p in cause.evidence.get("layers") or () if isinstance(p, dict)
    )


def squashes_the_logits(cause: Finding) -> bool:
    """the activation bounds the logits (sigmoid, tanh, softmax), a ReLU has killed most of them, or the
    accuracy sits where the dead outputs hold it

    A ReLU that leaves most outputs alive, with an accuracy it does not hold down, still
    lets the right class's logit grow; the loss can fall.
    """
    kind = cause.evidence.get("kind")
    dead = cause.evidence.get("dead_output_share")
    return (
        kind in activation_on_logits.SQUASHING
        or bool(cause.evidence.get("accuracy_held"))
        or (dead is not None and dead > activation_on_logits.DEAD_OUTPUTS)
    )


def late_divergence(cause: Finding, symptom: Finding, run: Run) -> bool:
    """the symptom is a divergence that came late, after healthy-sized updates

    Not a learning rate too high from the start, but one that something else made too high.
    """
    ev = symptom.evidence
    return (
        diverged(symptom)
        and "early_update_ratio" not in ev
        and (ev.get("update_ratio") or 0.0) < OVERSIZED_UPDATES
        and symptom.step is not None
        and not early(symptom, run)
    )


def _all(*checks: Holds) -> Holds:
    def holds(c: Finding, s: Finding, r: Run) -> bool:
        return all(check(c, s, r) for check in checks)

    holds.parts = checks  # type: ignore[attr-defined]  # docs/rules.md lists each part's evidence
    return holds


def _cause_is(trait: Callable[[Finding], bool]) -> Holds:
    def holds(c: Finding, s: Finding, r: Run) -> bool:
        return trait(c)

    holds.__doc__ = trait.__doc__
    return holds


def _symptom_is(trait: Callable[[Finding], bool]) -> Holds:
    def holds(c: Finding, s: Finding, r: Run) -> bool:
        return trait(s)

    holds.__doc__ = trait.__doc__
    return holds


def _symptom_early(c: Finding, s: Finding, r: Run) -> bool:
    """the symptom is there from the start (the first 10% of the run)"""
    return early(s, r)


def _severe(c: Finding, s: Finding, r: Run) -> bool:
    """the cause is critical: dead units that block learning, not a quiet half of a layer"""
    return c.severity == "critical"


# --- which advice still helps -------------------------------------------------------------

_CHANGES_LR = re.compile(
    r"\b(lower|divide|reduce|raise|decay)\b[^.]*\blearning rate\b|\blearning rate\b[^.]*\b(lower|higher)\b"
)


def not_about_the_lr(advice: str) -> bool:
    """all but the advice that changes the learning rate (the cause's own says how)"""
    return not _CHANGES_LR.search(advice.lower())


def none(advice: str) -> bool:
    """none: it would treat the symptom, or contradict the cause"""
    return False


def every(advice: str) -> bool:
    """all of it: it still helps once the cause is treated"""
    return True


# --- the graph ---------------------------------------------------------------------------

LR = lr_too_high.RULE_ID
INIT = bad_initialization.RULE_ID
INPUTS = unnormalized_inputs.RULE_ID
ORDER = unshuffled_data.RULE_ID
DEAD = dead_relu.RULE_ID
EXPLODE = exploding_gradients.RULE_ID
VANISH = vanishing_gradients.RULE_ID
SATURATED = saturated_activations.RULE_ID
PLATEAU = loss_plateau.RULE_ID
NONFINITE = nonfinite.RULE_ID
GROWTH = weight_growth.RULE_ID
UNDERFIT = underfitting.RULE_ID
NOISY = noisy_batches.RULE_ID
NOT_ZEROED = gradients_not_zeroed.RULE_ID
FROZEN = nothing_training.RULE_ID
LOGITS = activation_on_logits.RULE_ID
INITIAL = initial_loss_off.RULE_ID
SPIKES = loss_spikes.RULE_ID

# fmt: off
LINKS: tuple[Link, ...] = (
    # A learning rate far too high.
    Link(LR, DEAD, lr_already_high, not_about_the_lr,
         "one oversized step pushes a unit's bias so far negative that it never fires again"),
    Link(LR, EXPLODE, strictly_before, not_about_the_lr,
         "steps that overshoot land where the gradients are larger, and each overshoot feeds the next"),
    Link(LR, NONFINITE, strictly_before, not_about_the_lr,
         "steps that overshoot grow the weights and the loss until they overflow"),
    Link(LR, GROWTH, _all(lr_already_high, _cause_is(oversized_steps)), none,
         "oversized steps blow the weights up; weight decay would only slow what the learning rate does"),
    Link(LR, PLATEAU, lr_already_high, none,
         "a learning rate too high bounces the loss around a poor level instead of letting it descend"),
    Link(LR, UNDERFIT, lr_already_high, none,
         "a network the learning rate has wrecked fits nothing, whatever its capacity"),
    Link(LR, SATURATED, lr_already_high, not_about_the_lr,
         "oversized steps drive pre-activations far out, onto the flat ends of sigmoid/tanh"),
    Link(LR, NOISY, _all(lr_already_high, _cause_is(bouncing)), not_about_the_lr,
         "steps that overshoot make the loss jump from step to step, batch or no batch"),
    # An initialization off the mark.
    Link(INIT, DEAD, _all(_symptom_early, at_or_after_a_bad_layer), not_about_the_lr,
         "weights or biases that start off scale leave units that never fire from the first step"),
    Link(INIT, VANISH, _all(_symptom_early, at_or_after_a_bad_layer), every,
         "weights that start too small shrink the backward signal layer by layer"),
    Link(INIT, SATURATED, _all(_symptom_early, at_or_after_a_bad_layer), every,
         "weights that start too large push sigmoid/tanh units onto their flat ends from the start"),
    Link(INIT, PLATEAU, _symptom_early, none,
         "units that start identical, or signals that start dead, give the loss nothing to descend"),
    # Inputs far from zero mean and unit variance.
    Link(INPUTS, SATURATED, before, every,
         "large inputs make large pre-activations: sigmoid/tanh sit at their ends"),
    Link(INPUTS, EXPLODE, before, not_about_the_lr,
         "large inputs make large gradients in the first layer; the same step size then overshoots"),
    Link(INPUTS, LR, _all(before, _symptom_is(diverged)), not_about_the_lr,
         "inputs 5-100x too large scale the gradients up, so the learning rate acts 5-100x too high"),
    Link(INPUTS, DEAD, _all(before, _symptom_early), not_about_the_lr,
         "large inputs make the first steps huge, and units knocked below zero stay there"),
    # Data that arrives sorted.
    Link(ORDER, DEAD, before, not_about_the_lr,
         "a stretch of one-class batches pushes units one way for many steps; a unit pushed below zero "
         "for every input stays there"),
    Link(ORDER, NOISY, before, none,
         "batches of one class pull the model one way, then the next class's batches the other way"),
    Link(ORDER, LR, _all(before, _symptom_is(swinging)), none,
         "the loss swings at every class boundary, which reads as a learning rate bouncing"),
    # Real bugs the documents do not name.
    Link(NOT_ZEROED, EXPLODE, before, not_about_the_lr,
         "gradients added up step after step grow without bound, and the steps with them"),
    Link(NOT_ZEROED, LR, _all(before, _symptom_is(diverged)), none,
         "each step applies the sum of all gradients so far: the loss diverges at any learning rate"),
    Link(NOT_ZEROED, SPIKES, before, none,
         "ever-larger accumulated steps throw the loss up, again and again"),
    Link(FROZEN, PLATEAU, during, none,
         "weights that never change leave the loss where it started"),
    Link(FROZEN, UNDERFIT, during, none,
         "a model that is not trained fits nothing"),
    Link(LOGITS, DEAD, on_the_logits, not_about_the_lr,
         "a ReLU after the output layer zeroes the logits of every class it pushes below zero"),
    Link(LOGITS, PLATEAU, _all(during, _cause_is(squashes_the_logits)), none,
         "squashed logits cannot express a confident prediction: the loss stalls above its floor"),
    Link(LOGITS, UNDERFIT, _cause_is(squashes_the_logits), none,
         "a model whose logits are clipped cannot fit the data, whatever its capacity"),
    Link(INIT, INITIAL, _cause_is(init_too_large), every,
         "weights initialized far too large make large logits: the model starts confidently wrong, far above ln C"),
    Link(LR, SPIKES, lr_already_high, not_about_the_lr,
         "a learning rate at the edge of stability overshoots on some batches: the loss jumps, falls back"),
    Link(EXPLODE, SPIKES, strictly_before, not_about_the_lr,
         "a gradient that spikes makes the step after it overshoot: the loss jumps with it"),
    # Symptoms that cause further symptoms.
    Link(EXPLODE, NONFINITE, strictly_before, every,
         "a gradient that keeps growing overflows to Inf, and an Inf step makes NaN weights"),
    Link(GROWTH, LR, _all(before, late_divergence), every,
         "weights that keep growing without weight decay sharpen the outputs until the same learning rate "
         "overshoots"),
    Link(EXPLODE, LR, strictly_before, not_about_the_lr,
         "gradients that explode make steps that overshoot at any learning rate: the loss diverges"),
    Link(DEAD, PLATEAU, _all(during, _severe), none,
         "dead units pass no gradient: the layers before them stop learning and the loss stalls"),
    Link(DEAD, UNDERFIT, _all(before, _severe), none,
         "a layer with most units dead has the capacity of a far smaller one"),
    Link(SATURATED, VANISH, before, every,
         "a saturated sigmoid/tanh passes almost no gradient back"),
    Link(VANISH, PLATEAU, during, none,
         "layers that get no gradient do not learn, and the loss stalls with them"),
)
# fmt: on


def links_of(symptom: str) -> list[Link]:
    return [link for link in LINKS if link.symptom == symptom]


# --- applying it -------------------------------------------------------------------------


@dataclass(frozen=True)
class Explained:
    """Findings in tree order (each root followed by what it explains) and each one's parent index."""

    findings: tuple[Finding, ...]
    parents: tuple[int | None, ...]


def explain(findings: Sequence[Finding], run: Run) -> Explained:
    """Link each finding to the finding that explains it, if any (see the module docstring)."""
    findings = list(findings)
    parent: list[int | None] = [None] * len(findings)
    kept_advice: list[KeepAdvice] = [every] * len(findings)
    candidates: dict[int, list[tuple[int, Link]]] = {}
    for i, symptom in enumerate(findings):
        for link in links_of(symptom.rule):
            for j, cause in enumerate(findings):
                if cause.rule == link.cause and j != i and link.holds(cause, symptom, run):
                    candidates.setdefault(i, []).append((j, link))
    for i, options in candidates.items():
        # Two findings that could each explain the other: the one that began first is the cause.
        options = [
            (j, link) for j, link in options if not _began_after(findings[j], findings[i], candidates, i, j)
        ]
        if not options:
            continue
        j, link = min(options, key=lambda o: _preference(findings[o[0]], findings[i], o[1]))
        if not _is_descendant(j, i, parent):
            parent[i], kept_advice[i] = j, link.keep
    children: dict[int | None, list[int]] = {}
    for i, p in enumerate(parent):
        children.setdefault(p, []).append(i)

    def worst(i: int) -> int:
        return min([SEVERITY_ORDER[findings[i].severity]] + [worst(k) for k in children.get(i, [])])

    order: list[int] = []

    def visit(i: int) -> None:
        order.append(i)
        for k in sorted(children.get(i, []), key=lambda k: _rank(findings[k], worst(k))):
            visit(k)

    for root in sorted(children.get(None, []), key=lambda k: _rank(findings[k], worst(k))):
        visit(root)
    severities = {v: k for k, v in SEVERITY_ORDER.items()}
    out: list[Finding] = []
    for i in order:
        f = findings[i]
        if parent[i] is None:
            f = dataclasses.replace(f, severity=severities[worst(i)])
        else:
            f = dataclasses.replace(
                f,
                caused_by=findings[parent[i]].rule,
                advice=tuple(a for a in f.advice if kept_advice[i](a)),
            )
        out.append(f)
    position = {i: n for n, i in enumerate(order)}
    return Explained(tuple(out), tuple(None if parent[i] is None else position[parent[i]] for i in order))


def _began_after(cause: Finding, symptom: Finding, candidates: dict, i: int, j: int) -> bool:
    """`symptom` (i) is also a candidate cause of `cause` (j), and began strictly earlier."""
    mutual = any(k == i for k, _ in candidates.get(j, []))
    return mutual and _step(symptom) < _step(cause)


def _preference(cause: Finding, symptom: Finding, link: Link) -> tuple[int, int, int, int]:
    """The nearest preceding cause (the latest that began at or before the symptom; one found only
    later, as a learning rate the loss shows late, after those), then the more severe, then the link
    listed first."""
    after = _step(cause) > _step(symptom)
    return (
        int(after),
        _step(cause) if after else -_step(cause),
        SEVERITY_ORDER[cause.severity],
        LINKS.index(link),
    )


def _step(f: Finding) -> int:
    return f.step if f.step is not None else -1


def _rank(f: Finding, worst: int) -> tuple[int, int, int]:
    """Most severe (its whole subtree counted) first, then by step."""
    return (worst, SEVERITY_ORDER[f.severity], f.step if f.step is not None else -1)


def _is_descendant(j: int, i: int, parent: list[int | None]) -> bool:
    """Whether `j` already hangs below `i` (linking them the other way would make a circle)."""
    seen = set()
    while j is not None and j not in seen:
        if j == i:
            return True
        seen.add(j)
        j = parent[j]
    return False
