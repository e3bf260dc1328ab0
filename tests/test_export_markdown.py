"""The Markdown export renders text from logs as the characters it is (issue 22): parsed by a
real CommonMark renderer (markdown-it, with GitHub's tables and strikethrough), a run or file
name full of Markdown yields no link, image, HTML, emphasis, table or list."""

from __future__ import annotations

import html

import pytest
from markdown_it import MarkdownIt
from reading_helpers import scalar_events, write_events

from trainscope.analyzers.diagnose import diagnose_run
from trainscope.analyzers.reading import read_logdir
from trainscope.app import export as E
from trainscope.logformat import tags as T

EVIL = "[z](javascript:alert(1)) ![i](x.png) <b>bold</b> *em* __s__ ~~x~~ `c` a | b &amp; $x$ #h"
# Tokens the export itself writes: its headings, list items, emphasis of the "where" line,
# code spans for names, the <details> block around the evidence, the evidence's fence.
OURS = {"html_block"}
FORBIDDEN = {"link_open", "image", "html_inline", "em_open", "strong_open", "s_open", "table_open"}


def _renderer() -> MarkdownIt:
    return MarkdownIt("commonmark").enable(["table", "strikethrough"])


def _inline_tokens(text: str):
    for token in _renderer().parse(text):
        yield token
        yield from token.children or ()


@pytest.fixture()
def evil_run(tmp_path):
    run_dir = tmp_path / EVIL.replace("/", "_")
    write_events(run_dir, scalar_events({s: {T.TRAIN_LOSS: 2.0 + (s % 2) * 0.5} for s in range(40)}))
    bad = run_dir / f"events.out.tfevents.1700000001.{EVIL.replace('/', '_')}.0"
    bad.write_text("not an event file\n" * 10)
    snapshot = read_logdir(tmp_path)
    (run,) = snapshot.runs.values()
    assert EVIL.replace("/", "_") in run.name and len(run.problems) == 1
    return snapshot.path, diagnose_run(run)


def test_names_from_logs_make_no_markdown(evil_run):
    logdir, d = evil_run
    text = E.diagnosis_markdown(logdir, d)
    kinds = {t.type for t in _inline_tokens(text)}
    assert not kinds & FORBIDDEN, kinds & FORBIDDEN
    for token in _inline_tokens(text):
        if token.type == "html_block":
            assert token.content.strip() in ("<details><summary>Evidence (JSON)</summary>", "</details>")
    rendered = _renderer().render(text)
    name = EVIL.replace("/", "_")
    assert html.escape(name, quote=False) in rendered  # the name, as its characters, in the title's code span
    assert "## Reading problems" in text
    problem = next(line for line in text.splitlines() if "not a TensorBoard event file" in line)
    inline = _renderer().parseInline(problem)[0].children
    assert {t.type for t in inline} == {"text"}  # nothing but text


@pytest.mark.parametrize(
    "line",
    [
        "- a list",
        "+ a list",
        "1. a list",
        "3) a list",
        "> a quote",
        "# heading",
        "=====",
        "---",
        "| a | b |",
        "<script>x</script>",
        "[a]: http://example.com",
        "    code by indent",
    ],
)
def test_a_line_of_log_text_is_a_paragraph_of_its_characters(line):
    text = E._text(line)
    tokens = _renderer().parse(text)
    assert [t.type for t in tokens] == ["paragraph_open", "inline", "paragraph_close"], (line, text)
    assert _renderer().render(text) == f"<p>{html.escape(line.strip(), quote=False)}</p>\n"


def test_evidence_with_backticks_cannot_close_its_fence():
    content = 'a "```" run and "````" a longer one'
    fence = E._fence(content)
    assert len(fence) == 5 and fence not in content


def test_prose_keeps_quoted_names_as_code():
    assert E._prose("layer `fc1` is dead; see <b>`[x](y)`") == "layer `fc1` is dead; see \\<b\\>`[x](y)`"


def test_a_layer_named_by_its_index_is_described_in_the_finding_s_heading():
    from trainscope.sample_runs import RUNS_DIR

    run = read_logdir(str(RUNS_DIR)).runs["bad_init_scale"]
    md = E.diagnosis_markdown(str(RUNS_DIR), diagnose_run(run))
    assert "Dead ReLUs: 94% of `9` (ReLU after 8: Linear 64→64)'s units never fire" in md.replace("\\", "")
