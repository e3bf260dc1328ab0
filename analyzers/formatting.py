"""Turning findings into text: shared by the command line and the dashboard's exports.

`plain` makes any evidence JSON-safe, `clean` makes text from a log safe for a
terminal, `where` and `evidence_text` say where a finding is and what it measured in
one line each.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from trainscope.analyzers.findings import Finding
from trainscope.analyzers.rules import RULE_MODULES
from trainscope.logformat.runjson import json_safe

# What each rule's finding is called in a list of symptoms ("dead ReLUs"), by rule id.
RULE_NAMES = {m.RULE_ID: m.NAME for m in RULE_MODULES}


def plain(value: Any) -> Any:
    """JSON-safe copy: numpy to Python, non-finite floats to strings ("NaN", "Infinity")."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return json_safe(value)  # the project's one policy (logformat/runjson.py)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def clean(text: object) -> str:
    """Text from a log, safe for a terminal: control characters escaped."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)


def where(f: Finding) -> str:
    """``"step 1,200, layer features.0"``; empty when the finding has neither."""
    parts = []
    if f.step is not None:
        parts.append(f"step {f.step:,}")
    if f.layer is not None:
        parts.append(f"layer {clean(f.layer)}")
    return ", ".join(parts)


def evidence_items(f: Finding) -> list[tuple[str, str]]:
    """The evidence's single numbers and short texts as (key, formatted value); lists and tables left out."""
    items = []
    for key, value in f.evidence.items():
        value = plain(value)
        if isinstance(value, float):
            items.append((clean(key), f"{value:.4g}"))
        elif isinstance(value, (int, str, bool)) and len(str(value)) <= 40:
            items.append((clean(key), clean(value)))
    return items


def evidence_text(f: Finding) -> str:
    """``"start=2.31, end=0.41"``: `evidence_items` in one line."""
    return ", ".join(f"{key}={value}" for key, value in evidence_items(f))


def symptom_list(symptoms: list[Finding]) -> str:
    """``"dead ReLUs in 3 layers, weight growth, underfitting"``: what a root cause explains, by rule,
    in the order first found, with the number of layers where a rule found it in several."""
    by_rule: dict[str, list[Finding]] = {}
    for f in symptoms:
        by_rule.setdefault(f.rule, []).append(f)
    parts = []
    for rule, found in by_rule.items():
        name = RULE_NAMES.get(rule, rule)
        layers = {f.layer for f in found if f.layer is not None}
        parts.append(f"{name} in {len(layers)} layers" if len(layers) > 1 else name)
    return ", ".join(parts)
