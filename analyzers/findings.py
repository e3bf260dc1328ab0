"""What a rule returns: the contract between the analyzers and everything that shows them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Severity = Literal["critical", "warning", "info"]
SEVERITY_ORDER: dict[str, int] = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class Finding:
    rule: str  # an id from RULES.md
    severity: Severity
    title: str  # one line
    message: str  # what was measured, with numbers
    advice: tuple[str, ...]  # concrete actions, one per entry
    source: str  # the document line the advice rests on
    step: int | None = None  # where it begins
    layer: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)  # numbers, for charts and JSON
    # The rule id of the finding that explains this one (analyzers.causes), None for a root cause.
    caused_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["advice"] = list(self.advice)
        return d


# How a rule's reason begins when its signal is there but still too short (`rules.common.require_points`);
# on a run that has ended (`facts.is_live`) the diagnosis says it as `TOO_FEW_TO_JUDGE`: it will not grow.
WAITING_FOR_DATA = "not enough data yet"
TOO_FEW_TO_JUDGE = "too few to judge"


@dataclass(frozen=True)
class Skipped:
    """A rule that could not judge this run, and why (missing signal, or not enough data yet)."""

    rule: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"rule": self.rule, "reason": self.reason}


class Skip(Exception):
    """Raised by a rule that cannot judge the run: its signal is missing or too short."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
