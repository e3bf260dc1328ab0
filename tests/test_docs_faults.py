"""docs/faults.md: every test it names exists, and every promise with words has a test."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAULTS = ROOT / "docs" / "faults.md"
_TEST = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _rows() -> list[str]:
    return [
        line
        for line in FAULTS.read_text().splitlines()
        if line.startswith("| ") and not line.startswith("| fault")
    ]


def test_every_test_named_in_docs_faults_exists():
    named = _TEST.findall(FAULTS.read_text())
    assert len(named) >= 20
    for path, name in named:
        source = (ROOT / path).read_text()
        assert re.search(rf"^def {name}\(", source, re.M), (
            f"{path}::{name} named in docs/faults.md does not exist"
        )


def test_every_promise_names_its_test():
    for row in _rows():
        promise = row.split(" | ")[1].strip()
        if promise != "—":  # a row still to fill
            assert _TEST.search(row), f"no test named for: {row[:80]}"
