"""A run's diagnosis as a file to download: JSON in the command line's ``--json`` shape, and Markdown."""

from __future__ import annotations

import json

from analyzers.cli import render_json
from analyzers.diagnose import Diagnosis
from analyzers.formatting import clean, evidence_items, plain, symptom_list, where
from analyzers.reading import LogDirSnapshot
from app.summaries import health, last_step


def diagnosis_json(logdir: str, d: Diagnosis) -> str:
    """``python -m analyzers LOGDIR --json`` restricted to this one run."""
    one = LogDirSnapshot(logdir, {d.run.name: d.run}, (), frozenset())
    return render_json(one, [d])


def diagnosis_markdown(logdir: str, d: Diagnosis) -> str:
    """The findings as causes and symptoms (each root cause, then what it explains), their
    numbers, advice and sources, then what could not be checked."""
    run = d.run
    step = last_step(run)
    lines = [
        f"# TrainScope diagnosis: {_code(run.name)}",
        "",
        f"- log dir: {_code(logdir)}",
        f"- health: {health(d)}",
        f"- source: {run.source}" + (f"; status: {clean(run.status)}" if run.status else ""),
        f"- last step: {step:,}" if step is not None else "- last step: nothing logged yet",
        "",
        f"## Findings ({len(d.findings)})",
        "",
    ]
    if not d.findings:
        lines += ["No findings.", ""]
    for i, f in enumerate(d.findings):
        at = where(f)
        root = i >= len(d.parents) or d.parents[i] is None
        level = "###" if root else "####"
        mark = "" if root else "↳ "
        lines.append(f"{level} {mark}{f.severity.upper()} `{f.rule}`: {_text(f.title)}")
        lines.append("")
        if root and d.explained_by(f):
            lines += [f"Root cause; explains: {_text(symptom_list(d.explained_by(f)))}", ""]
        if f.caused_by:
            lines += [f"Explained by `{_text(f.caused_by)}`.", ""]
        if at:
            lines += [f"*{_text(at)}*", ""]
        lines += [_text(f.message), ""]
        numbers = evidence_items(f)
        if numbers:
            lines.append("Measured: " + ", ".join(f"{_text(k)} = {_text(v)}" for k, v in numbers))
            lines.append("")
        if f.advice:
            lines.append("What to do:")
            lines.append("")
            lines += [f"{i}. {_text(a)}" for i, a in enumerate(f.advice, 1)]
            lines.append("")
        if f.source:
            lines += [f"> Source: {_text(f.source)}", ""]
        lines += [
            "<details><summary>Evidence (JSON)</summary>",
            "",
            "```json",
            json.dumps(plain(f.evidence), indent=2, ensure_ascii=False),
            "```",
            "",
            "</details>",
            "",
        ]
    if d.skipped:
        lines += [f"## Not checked ({len(d.skipped)})", ""]
        lines += [f"- `{s.rule}`: {_text(s.reason)}" for s in d.skipped]
        lines.append("")
    if run.problems:
        lines += ["## Reading problems", ""]
        lines += [f"- {_text(p)}" for p in run.problems]
        lines.append("")
    if run.collector_errors:
        lines += ["## Collector problems", ""]
        lines += [f"- {_text(e)}" for e in run.collector_errors]
        lines.append("")
    return "\n".join(lines)


def _code(text: object) -> str:
    return "`" + clean(text).replace("`", "'") + "`"


def _text(text: object) -> str:
    """Text for a Markdown file: control characters escaped, HTML tags neutralised."""
    return clean(text).replace("<", "&lt;").replace(">", "&gt;")
