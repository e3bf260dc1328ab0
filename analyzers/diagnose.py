"""Apply every rule to a run: the one entry point the CLI and the app call."""

from __future__ import annotations

from dataclasses import dataclass

from trainscope.analyzers.causes import explain
from trainscope.analyzers.facts import is_live
from trainscope.analyzers.findings import (
    SEVERITY_ORDER,
    TOO_FEW_TO_JUDGE,
    WAITING_FOR_DATA,
    Finding,
    Skip,
    Skipped,
)
from trainscope.analyzers.rules import ALL_RULES, RuleFn
from trainscope.analyzers.run import Run
from trainscope.analyzers.summary import Advice, end_of_run_advice


@dataclass(frozen=True)
class Diagnosis:
    run: Run
    findings: tuple[Finding, ...]  # root causes, most severe first, each followed by what it explains
    skipped: tuple[Skipped, ...]
    advice: tuple[Advice, ...] = ()  # end-of-run general advice (info, never a finding)
    parents: tuple[int | None, ...] = ()  # index of the finding that explains each one (None: a root)

    @property
    def worst(self) -> str | None:
        return self.findings[0].severity if self.findings else None

    @property
    def roots(self) -> list[Finding]:
        """The root causes: findings nothing else found explains, most severe first."""
        return [f for i, f in enumerate(self.findings) if self._parent(i) is None]

    def explained_by(self, finding: Finding) -> list[Finding]:
        """The findings `finding` explains, directly or through another (in tree order)."""
        index = next(i for i, f in enumerate(self.findings) if f is finding)
        return [f for i, f in enumerate(self.findings) if i != index and self._descends(i, index)]

    def _parent(self, i: int) -> int | None:
        return self.parents[i] if i < len(self.parents) else None

    def _descends(self, i: int, ancestor: int) -> bool:
        p = self._parent(i)
        while p is not None:
            if p == ancestor:
                return True
            p = self._parent(p)
        return False


def diagnose_run(run: Run, rules: tuple[tuple[str, RuleFn], ...] = ALL_RULES) -> Diagnosis:
    """Run each rule, then link symptoms to their causes (`analyzers.causes`).

    A rule that raises `Skip` is listed as skipped, never as a finding.

    A rule that waits for more data says so only while the run may still grow; on a run
    that has ended its reason reads "too few to judge" (`_ended`): a finished run is never
    told to wait.

    A rule that crashes on odd data is a bug, but it must not hide the other rules'
    findings: it is reported as skipped with the error.
    """
    findings: list[Finding] = []
    skipped: list[Skipped] = []
    live = is_live(run)
    for rule_id, rule in rules:
        try:
            findings.extend(rule(run))
        except Skip as skip:
            skipped.append(Skipped(rule_id, skip.reason if live else _ended(skip.reason)))
        except Exception as exc:  # noqa: BLE001 - one broken rule must not hide the rest
            skipped.append(Skipped(rule_id, f"rule error: {type(exc).__name__}: {exc}"))
    findings.sort(key=lambda f: (SEVERITY_ORDER[f.severity], f.step if f.step is not None else -1))
    tree = explain(findings, run)
    return Diagnosis(run, tree.findings, tuple(skipped), end_of_run_advice(run), tree.parents)


def _ended(reason: str) -> str:
    """A rule's "not enough data yet: 12 of 50 points" as said of a run that will not grow."""
    if reason.startswith(WAITING_FOR_DATA):
        return TOO_FEW_TO_JUDGE + reason[len(WAITING_FOR_DATA) :]
    return reason
