"""``python -m analyzers.rules.reference [--docs docs/rules.md]``: the rule reference, from the rules.

Each rule's check has a docstring with its summary line, "Why it matters", "Measured"
and "What to do"; its module has its `RULE_ID` and a ``*_SOURCE`` citation. This turns
them into the "Rule by rule" section of ``docs/rules.md``, and `analyzers.causes.LINKS`
into its cause-graph table (each between its markers), so the reference says what the
code does; a test checks it is current.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from trainscope.analyzers.rules import RULE_MODULES

BEGIN = "<!-- rule-reference:begin -->"
END = "<!-- rule-reference:end -->"
GRAPH_BEGIN = "<!-- cause-graph:begin -->"
GRAPH_END = "<!-- cause-graph:end -->"
# The docstring's labelled paragraphs, in the order they are shown.
LABELS = ("Why it matters", "Measured", "What to do")


def _paragraphs(doc: str) -> tuple[str, list[str]]:
    """(summary line, labelled paragraphs joined into single lines)."""
    lines = inspect.cleandoc(doc).splitlines()
    summary, rest = lines[0].strip(), lines[1:]
    paragraphs: list[str] = []
    for line in rest:
        text = line.strip()
        if not text:
            continue
        if any(text.startswith(label) for label in LABELS) or not paragraphs:
            paragraphs.append(text)
        else:
            paragraphs[-1] += " " + text
    return summary, paragraphs


def _bullet(paragraph: str) -> str:
    """``Measured on X: the rest`` -> ``- **Measured on X:** the rest`` (the label up to the first colon)."""
    paragraph = paragraph.replace("``", "`")  # reST literals read as Markdown code
    depth = 0
    for i, char in enumerate(paragraph):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == ":" and depth == 0 and paragraph[i + 1 : i + 2] == " ":
            return f"- **{paragraph[:i]}:** {paragraph[i + 2 :]}"
    return f"- {paragraph}"


def _source(module: ModuleType) -> str | None:
    """The citations the module defines itself (``NAME_SOURCE = cite(...)``), not ones it imports."""
    own = re.findall(r"^([A-Z_]+_SOURCE) = ", inspect.getsource(module), re.M)
    sources = [getattr(module, name) for name in own]
    return "; ".join(dict.fromkeys(sources)) if sources else None


def rule_section(module: ModuleType) -> str:
    """The Markdown of one rule: its id, summary, labelled paragraphs, citations and file."""
    summary, paragraphs = _paragraphs(module.check.__doc__ or "")
    out = [f"#### `{module.RULE_ID}`", "", summary, ""]
    out += [_bullet(p) for p in paragraphs]
    source = _source(module)
    if source:
        out.append(f"- **Cites:** {source}")
    out.append(f"- **Code:** `analyzers/rules/{module.RULE_ID}.py`")
    return "\n".join(out)


def reference() -> str:
    """Every rule's section, in the order of RULES.md."""
    return "\n\n".join(rule_section(m) for m in RULE_MODULES)


def cause_graph() -> str:
    """The cause graph as a table: each link, why it holds, the evidence it needs, the advice kept."""
    from trainscope.analyzers.causes import (
        LINKS,
    )  # the graph imports the rules; this module is imported by tests of both

    rows = [
        "| cause → symptom | why | evidence the link needs | symptom's advice kept |",
        "|---|---|---|---|",
    ]
    for link in LINKS:
        needs = _describe(link.holds)
        rows.append(
            f"| `{link.cause}` → `{link.symptom}` | {link.why} | {needs} | {_first_line(link.keep.__doc__)} |"
        )
    return "\n".join(rows)


def _describe(check: object) -> str:
    """A link's evidence in words: the first docstring line of each check it combines."""
    parts = getattr(check, "parts", None)
    if parts:
        return "; ".join(_describe(p) for p in parts)
    return _first_line(getattr(check, "__doc__", None))


def _first_line(doc: str | None) -> str:
    return inspect.cleandoc(doc).split("\n\n")[0].replace("\n", " ") if doc else ""


def _replace(text: str, begin: str, end: str, body: str) -> str:
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise ValueError(f"no {begin} ... {end} markers")
    return pattern.sub(lambda _: f"{begin}\n\n{body}\n\n{end}", text)


def rewrite(text: str) -> str:
    """`text` with the parts between the markers replaced by the current reference and cause graph."""
    return _replace(_replace(text, BEGIN, END, reference()), GRAPH_BEGIN, GRAPH_END, cause_graph())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", default="docs/rules.md", help="the file whose reference section to rewrite")
    args = parser.parse_args(argv)
    path = Path(args.docs)
    path.write_text(rewrite(path.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
