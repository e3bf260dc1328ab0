"""What to call a run: the name it was given, where that says more than its folder.

A run is keyed by its folder (its path in the log dir): links, the command line's
``"run"`` and the app's URLs use that key, and it never changes. But a run is often given
a name the folder does not carry: ``watch(..., run_name="lr 3e-4, warmup")``, an MLflow
run's ``run_name`` (its folder is a hex id), a W&B run's display name (its folder is
``run-<date>-<id>``). People know their runs by those names, so that is what the report
and the dashboard show, with the folder beside it wherever the two differ. Two runs given
the same name (or a name that is another run's folder) are told apart by their folders.
"""

from __future__ import annotations

import posixpath
from collections import Counter
from collections.abc import Iterable

from trainscope.analyzers.run import Run
from trainscope.logformat import runjson as RJ


def given_name(run: Run) -> str | None:
    """The name the run's log gives it (run.json's ``run_name``, MLflow's or W&B's run
    name), when it says something its folder does not; else None."""
    value = run.meta.get(RJ.K_RUN_NAME) if run.meta else None
    if not isinstance(value, str) or not value.strip():
        return None
    value = " ".join(value.split())  # one line, whatever the log holds
    folder = posixpath.basename(run.name) if run.name not in ("", ".") else posixpath.basename(run.path)
    return None if value in (run.name, folder) else value


def display_names(runs: Iterable[Run]) -> dict[str, str]:
    """Each run's label by its key (`Run.name`): its given name, else its folder; a given name
    that two runs share, or that is another run's folder, is followed by the folder."""
    runs = list(runs)
    given = {run.name: given_name(run) for run in runs}
    shared = Counter(g for g in given.values() if g is not None)
    folders = set(given)
    out: dict[str, str] = {}
    for key, name in given.items():
        if name is None:
            out[key] = key
        elif shared[name] > 1 or name in folders:
            out[key] = f"{name} ({key})"
        else:
            out[key] = name
    return out


def display_name(run: Run) -> str:
    """One run's label on its own (a report of that run alone): its given name with the
    folder after it, or the folder."""
    name = given_name(run)
    return run.name if name is None else f"{name} ({run.name})"
