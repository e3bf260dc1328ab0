"""Shared by the tests/test_rules_*.py files: expected outcomes of a rule and the check that applies them."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest

from trainscope.analyzers.findings import Finding, Skip
from trainscope.analyzers.run import Run


@dataclass(frozen=True)
class Fires:
    """The rule reports one finding (the first, when `count` allows more) with these properties."""

    severity: str
    step: tuple[int, int] | None = None  # inclusive range the finding's step must fall in
    layer: str | None = None
    says: tuple[str, ...] = ()  # substrings of the message
    count: int = 1
    evidence: dict[str, Any] = field(default_factory=dict)  # key -> (lo, hi) range or exact value


@dataclass(frozen=True)
class Quiet:
    """The rule judges the run and finds nothing."""


@dataclass(frozen=True)
class Skips:
    """The rule cannot judge the run and says why (`reason` is a substring)."""

    reason: str


def _cites_a_reference(source: str) -> bool:
    """A rule beyond the documents names the published work it rests on (a paper, a library's docs)."""
    return " line " not in source and len(source) > 40


def check(rule: Callable[[Run], Iterable[Finding]], run: Run, expect: Fires | Quiet | Skips) -> list[Finding]:
    if isinstance(expect, Skips):
        with pytest.raises(Skip) as info:
            list(rule(run))
        assert expect.reason in info.value.reason, info.value.reason
        return []
    found = list(rule(run))
    if isinstance(expect, Quiet):
        assert found == [], [f.message for f in found]
        return found
    assert len(found) == expect.count, [f.message for f in found]
    first = found[0]
    assert first.severity == expect.severity, first.message
    if expect.step is not None:
        assert first.step is not None and expect.step[0] <= first.step <= expect.step[1], (
            first.step,
            first.message,
        )
    if expect.layer is not None:
        assert first.layer == expect.layer
    for text in expect.says:
        assert text in first.message, (text, first.message)
    for key, want in expect.evidence.items():
        got = first.evidence[key]
        if isinstance(want, tuple):
            assert want[0] <= got <= want[1], (key, got)
        else:
            assert got == want, (key, got)
    for f in found:
        json.dumps(f.to_dict(), allow_nan=False)  # evidence is plain JSON
        assert f.advice and all(isinstance(a, str) and a for a in f.advice)
        cites_a_document_line = f.source[:3] in ("000", "001") and '"' in f.source
        assert cites_a_document_line or _cites_a_reference(f.source), f.source
        assert "\n" not in f.title
    return found
