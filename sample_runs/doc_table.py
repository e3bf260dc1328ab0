"""``python -m sample_runs.doc_table [--runs DIR] [--out FILE]``: the sample-run tables.

One row per committed run: what was injected (case.json), which rules must fire, and
what the analyzers actually say about it (the root causes at warning and critical,
each with the symptoms it explains, and the info-level ones named after them).
Written from the runs as they are, so regenerating the runs and this table keeps
``docs/sample_runs.md`` true. A test checks it is current.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from trainscope.analyzers.diagnose import diagnose_run
from trainscope.analyzers.formatting import symptom_list
from trainscope.analyzers.reading import read_logdir
from trainscope.sample_runs import RUNS_DIR
from trainscope.sample_runs.cases import CASES
from trainscope.sample_runs.report import ALARM_SEVERITIES
from trainscope.sample_runs.training import read_case_json

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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sample_runs.doc_table", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--runs", type=Path, default=RUNS_DIR, help=f"the runs (default: {RUNS_DIR})")
    parser.add_argument("--out", type=Path, help="write here instead of printing")
    args = parser.parse_args(argv)
    text = HEADER + table(args.runs)
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
