"""The README and the docs stay true: the first commands, the sample-run table, the rule reference."""

from __future__ import annotations

from pathlib import Path

from trainscope.sample_runs import RUNS_DIR
from trainscope.sample_runs.doc_table import HEADER, table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_starts_with_the_two_commands():
    text = README.read_text(encoding="utf-8")
    first_block = text.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["make dashboard", "make test"]
    assert "make test" in (README.parent / ".ci" / "run").read_text()


def test_sample_run_doc_is_what_the_analyzers_say_now():
    current = (README.parent / "docs" / "sample_runs.md").read_text(encoding="utf-8")
    assert current == HEADER + table(RUNS_DIR), (
        "docs/sample_runs.md is stale: run python -m sample_runs.doc_table --out docs/sample_runs.md"
    )


def test_the_readme_counts_the_sample_runs_there_are():
    from trainscope.sample_runs.cases import CASES

    text = README.read_text(encoding="utf-8")
    assert f"showing the {len(CASES)} bundled sample runs" in text
    assert f"`sample_runs/runs/` holds {len(CASES)} real training runs" in text
    assert len(CASES) == sum(1 for d in RUNS_DIR.iterdir() if d.is_dir())


def test_the_rule_reference_is_what_the_rules_say_now():
    """docs/rules.md's rule-by-rule section comes from each rule's docstring, id and citations."""
    from trainscope.analyzers.rules.reference import rewrite

    docs = README.parent / "docs" / "rules.md"
    text = docs.read_text(encoding="utf-8")
    assert rewrite(text) == text, "docs/rules.md is stale: run python -m analyzers.rules.reference"


def test_the_readme_is_read_in_two_minutes():
    assert len(README.read_bytes()) <= 10_000


def test_every_file_the_readme_links_to_is_there():
    import re

    text = README.read_text(encoding="utf-8")
    links = set(re.findall(r"\]\(((?:docs|benchmarks)/[^)#\s]+)", text))
    assert {"docs/collector.md", "docs/performance.md", "docs/rules.md"} <= links
    assert [link for link in links if not (README.parent / link).exists()] == []
