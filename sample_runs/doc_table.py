"""``python -m sample_runs.doc_table [--runs DIR] [--out FILE] [--readme README.md]``: the sample-run tables.

One row per committed run: what was injected (case.json), which rules must fire, and
what the analyzers actually say about it (the root causes at warning and critical,
each with the symptoms it explains, and the info-level ones named after them).
Written from the runs as they are, so regenerating the runs and this table keeps
``docs/sample_runs.md`` true. `--readme` rewrites the compact table between the
README's markers; a test checks it is current.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from analyzers.diagnose import diagnose_run
from analyzers.formatting import symptom_list
from analyzers.reading import read_logdir
from sample_runs import RUNS_DIR
from sample_runs.cases import CASES
from sample_runs.report import ALARM_SEVERITIES
from sample_runs.training import read_case_json

HEADER = """# Sample runs

Real, small training runs made with the collector, on scikit-learn's bundled digits
(1,797 8x8 images, 10 classes) and, for a tiny GPT-style character model, on 24k
characters of sentences that `sample_runs/text.py` generates (nothing is downloaded):
four healthy runs, two of them standard practice that can look alarming (GPT-2's small
initialization; a wide layer whose units are mostly silent), and one run per injected
fault, each with a healthy twin. They are the dashboard's default content, the
analyzers' ground truth (`tests/test_sample_runs.py` checks that every rule a case
expects fires at warning or critical, and that the healthy runs raise nothing at those
levels) and the demo of what TrainScope catches.

Layout: `sample_runs/runs/<case>/` holds the collector's event file, `run.json`, and
`case.json` = `{"fault": "<what was injected>", "expect": ["<rule id>", ...]}`.
Regenerate with `python -m sample_runs.generate` (deterministic on one machine, about
a minute on one CPU core, about 3.9 MB in all; prints each case's numbers and findings;
`exploding_gradients` and `weight_growth` are chaotic, and on another CPU or torch build
their blow-up may come later or not at all: `--only` regenerates the cases you changed), then
`python -m sample_runs.doc_table --out docs/sample_runs.md`. Watch one case train
live with `python -m sample_runs.train --case overfitting --log-dir runs/live` and
point the dashboard at `runs/`.

"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(runs_dir: Path) -> str:
    """The markdown table for the runs under `runs_dir`, diagnosed now: each root cause, what it explains."""
    snapshot = read_logdir(runs_dir)
    rows = [
        "| Case | What was injected | Must fire | What TrainScope says (root causes at warning/critical, "
        "each with the symptoms it explains; then info) |",
        "|---|---|---|---|",
    ]
    order = {case.name: i for i, case in enumerate(CASES)}  # the table's order: healthy first, then by rule
    for name in sorted(snapshot.runs, key=lambda n: (order.get(n, len(order)), n)):
        run = snapshot.runs[name]
        case = read_case_json(runs_dir / name)
        diagnosis = diagnose_run(run)
        alarms = [f for f in diagnosis.findings if f.severity in ALARM_SEVERITIES]
        lines = []
        for root in diagnosis.roots:
            if root.severity not in ALARM_SEVERITIES:
                continue
            line = f"**{root.rule}** ({root.severity}): {root.title}"
            explained = diagnosis.explained_by(root)
            if explained:
                line += f"<br>&nbsp;&nbsp;↳ explains: {symptom_list(explained)}"
            lines.append(line)
        said = "<br>".join(lines) or "nothing"
        infos = sorted({f.rule for f in diagnosis.findings if f.severity == "info" and f.caused_by is None})
        if infos:
            said += "<br>info: " + ", ".join(infos)
        fired = {f.rule for f in alarms}
        missing = [r for r in case["expect"] if r not in fired]
        expect = ", ".join(f"`{r}`" for r in case["expect"]) or "nothing (healthy)"
        if missing:
            expect += " — **missed: " + ", ".join(missing) + "**"
        elif not case["expect"] and alarms:
            expect += " — **false alarm**"
        rows.append(f"| `{name}` | {_cell(case['fault'])} | {expect} | {_cell(said)} |")
    return "\n".join(rows) + "\n"


README_START = "<!-- sample-runs-table:start (python -m sample_runs.doc_table --readme README.md) -->"
README_END = "<!-- sample-runs-table:end -->"


def compact_table(runs_dir: Path) -> str:
    """Case, what was injected (its headline), the root cause named first, what it explains, other roots."""
    snapshot = read_logdir(runs_dir)
    rows = [
        "| Case | What was injected | Root cause found | Its symptoms "
        "| Other findings (warning / critical) |",
        "|---|---|---|---|---|",
    ]
    order = {case.name: i for i, case in enumerate(CASES)}
    for name in sorted(snapshot.runs, key=lambda n: (order.get(n, len(order)), n)):
        case = read_case_json(runs_dir / name)
        diagnosis = diagnose_run(snapshot.runs[name])
        roots = [f for f in diagnosis.roots if f.severity in ALARM_SEVERITIES]
        headline = case["fault"].split(":", 1)[0]
        if not roots:
            rows.append(f"| `{Path(name).name}` | {_cell(headline)} | nothing: healthy | | |")
            continue
        first, others = roots[0], roots[1:]
        symptoms = symptom_list(diagnosis.explained_by(first)) or "—"
        seen: dict[str, str] = {}
        for f in others:
            seen.setdefault(f.rule, f.severity)
        rest = ", ".join(f"`{rule}` ({severity})" for rule, severity in seen.items()) or "—"
        rows.append(
            f"| `{Path(name).name}` | {_cell(headline)} | `{first.rule}` ({first.severity}) | "
            f"{_cell(symptoms)} | {rest} |"
        )
    return "\n".join(rows) + "\n"


def replace_readme_table(readme: str, table_text: str) -> str:
    """`readme` with the text between the markers replaced by `table_text`."""
    start, end = readme.index(README_START) + len(README_START), readme.index(README_END)
    return readme[:start] + "\n" + table_text + readme[end:]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sample_runs.doc_table", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--runs", type=Path, default=RUNS_DIR, help=f"the runs (default: {RUNS_DIR})")
    parser.add_argument("--out", type=Path, help="write here instead of printing")
    parser.add_argument("--readme", type=Path, help="rewrite the compact table between this file's markers")
    args = parser.parse_args(argv)
    if args.readme is not None:
        readme = args.readme.read_text(encoding="utf-8")
        args.readme.write_text(replace_readme_table(readme, compact_table(args.runs)), encoding="utf-8")
        return 0
    text = HEADER + table(args.runs)
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
