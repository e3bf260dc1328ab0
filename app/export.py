"""A run's diagnosis as a file to download: JSON in the command line's ``--json`` shape, and Markdown.

Everything in the Markdown file that comes from a log or quotes one (run and file names,
status, messages, evidence, problems) goes through `_text`, `_prose` or `_code`, so a
renderer (GitHub, an IDE preview) shows it as the characters it is: no link, image,
HTML, emphasis, code, table cell or list comes out of a name like ``[z](javascript:x)``.
"""

from __future__ import annotations

import json
import re

from trainscope.analyzers.cli import render_json
from trainscope.analyzers.diagnose import Diagnosis
from trainscope.analyzers.formatting import clean, evidence_items, plain, symptom_list, where
from trainscope.analyzers.layer_names import titled
from trainscope.analyzers.reading import LogDirSnapshot
from trainscope.analyzers.run_names import given_name
from trainscope.app.summaries import health, last_step


def diagnosis_json(logdir: str, d: Diagnosis) -> str:
    """``python -m analyzers LOGDIR --json`` restricted to this one run."""
    one = LogDirSnapshot(logdir, {d.run.name: d.run}, (), frozenset())
    return render_json(one, [d])


def diagnosis_markdown(logdir: str, d: Diagnosis) -> str:
    """The findings as causes and symptoms (each root cause, then what it explains), their
    numbers, advice and sources, then what could not be checked."""
    run = d.run
    step = last_step(run)
    named = given_name(run)
    lines = [
        f"# TrainScope diagnosis: {_code(named or run.name)}",
        "",
        *([f"- run: {_code(run.name)}"] if named else []),
        f"- log dir: {_code(logdir)}",
        f"- health: {health(d)}",
        f"- source: {_text(run.source)}" + (f"; status: {_text(run.status)}" if run.status else ""),
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
        lines.append(
            f"{level} {mark}{f.severity.upper()} {_code(f.rule)}: {_prose(titled(f.title, f.layer, run))}"
        )
        lines.append("")
        if root and d.explained_by(f):
            lines += [f"Root cause; explains: {_prose(symptom_list(d.explained_by(f)))}", ""]
        if f.caused_by:
            lines += [f"Explained by {_code(f.caused_by)}.", ""]
        if at:
            lines += [f"*{_text(at)}*", ""]
        lines += [_prose(f.message), ""]
        numbers = evidence_items(f)
        if numbers:
            lines.append("Measured: " + ", ".join(f"{_text(k)} = {_text(v)}" for k, v in numbers))
            lines.append("")
        if f.advice:
            lines.append("What to do:")
            lines.append("")
            lines += [f"{i}. {_prose(a)}" for i, a in enumerate(f.advice, 1)]
            lines.append("")
        if f.source:
            lines += [f"> Source: {_prose(f.source)}", ""]
        evidence = json.dumps(plain(f.evidence), indent=2, ensure_ascii=False)
        fence = _fence(evidence)
        lines += [
            "<details><summary>Evidence (JSON)</summary>",
            "",
            f"{fence}json",
            evidence,
            fence,
            "",
            "</details>",
            "",
        ]
    if d.skipped:
        lines += [f"## Not checked ({len(d.skipped)})", ""]
        lines += [f"- {_code(s.rule)}: {_prose(s.reason)}" for s in d.skipped]
        lines.append("")
    if run.problems:
        lines += ["## Reading problems", ""]
        lines += [f"- {_text(p)}" for p in run.problems]
        lines.append("")
    if run.collector_errors:
        lines += ["## Collector problems", ""]
        lines += [f"- {_text(e)}" for e in run.collector_errors]
        lines.append("")
    if run.not_shown:
        lines += ["## Logged, not shown", ""]
        lines += [f"- {_code(tag)} ({_text(kind)})" for tag, kind in run.not_shown.items()]
        lines.append("")
    return "\n".join(lines)


# What starts a Markdown construct anywhere in a line: emphasis and strikethrough, code,
# links and images ([ ] !), HTML and autolinks (< >), entities (&), table cells (|),
# math ($), headings (#), and the escape itself. Backslash-escaping them is CommonMark's
# way to say "this character"; "." "-" "(" ":" stay bare so numbers and prose read as
# they are: they only matter where a line starts, which `_LINE_START` covers.
_INLINE = re.compile(r"([\\`*_{}\[\]<>!|~&$#])")
# Block constructs at the start of a line: a list item (``- ``, ``+ ``, ``1. ``, ``1) ``),
# a quote (``>``), a setext underline (``=``, ``-``). (Leading spaces, an indented code
# block, are dropped: a paragraph drops them anyway.)
_LINE_START = re.compile(r"^(\d{1,9}(?=[.)])|)([-+=>.)])")


def _text(text: object, line_start: bool = True) -> str:
    """Text from a log or quoting one, for a Markdown file: it renders as exactly these
    characters. `line_start`: it may begin a line (not a piece after a code span)."""
    s = _INLINE.sub(r"\\\1", clean(text))
    if not line_start:
        return s
    return _LINE_START.sub(r"\1\\\2", s.lstrip(), count=1)


def _code(text: object) -> str:
    """A name as inline code: nothing inside a code span is interpreted; a backtick in it becomes '."""
    return "`" + clean(text).replace("`", "'") + "`"


def _prose(text: object) -> str:
    """A finding's text: what the rules quote in backticks (names) as code, the rest as text.
    Backticks pair up left to right; an unpaired one stays a character."""
    parts = str(text).split("`")
    if len(parts) % 2 == 0:
        parts[-2:] = [parts[-2] + "`" + parts[-1]]
    return "".join(_text(p, line_start=i == 0) if i % 2 == 0 else _code(p) for i, p in enumerate(parts))


def _fence(content: str) -> str:
    """A code fence longer than any run of backticks in `content`, which cannot close it early."""
    longest = max((len(m) for m in re.findall(r"`+", content)), default=0)
    return "`" * max(3, longest + 1)
