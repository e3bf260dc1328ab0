"""Sample runs: real, small training runs made by the collector, healthy and with one injected fault each.

They are the dashboard's default content, the analyzers' ground truth and the demo
of what the tool catches. Layout of the committed runs::

    sample_runs/runs/<case>/events.out.tfevents.*   the collector's TensorBoard events
    sample_runs/runs/<case>/run.json                the collector's run description
    sample_runs/runs/<case>/case.json               {"fault": "...", "expect": ["<rule id>", ...]}

Commands::

    python -m sample_runs.generate [--out DIR] [--only CASE]   # (re)train and write the runs
    python -m sample_runs.train --case NAME --log-dir DIR      # one case, paced, to watch live

Modules, one job each: `data` (datasets and their preparation), `text` (the
generated text of the language-model runs), `models` (the model zoo and
initialization faults), `cases` (the table of cases), `training` (the training loop
with the collector, and the few faults that live in it), `report` (the numbers that
show a fault),
`generate` and `train` (the command lines), `doc_table` (the docs table).
"""

from pathlib import Path

RUNS_DIR = Path(__file__).resolve().parent / "runs"

__all__ = ["RUNS_DIR"]
