"""Links to a view of the dashboard: the page, its run or runs, and the log dir, all in the URL.

A view is whatever its URL says, so a link pasted into another browser (a new session,
with none of this one's sidebar state) opens the same runs of the same log dir. The
query parameters are the keys the pages bind their widgets to (`app.settings`).
Pure functions: no Streamlit calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import parse_qs, urlencode, urlsplit

from trainscope.app.settings import KEY_LOGDIR, KEY_RUN

# The run page's URL path (its st.Page url_path in app/main.py), relative to the app's root.
RUN_PATH = "run"
# Session state: the run a link asked for that the log dir lacks, and the run shown instead;
# the runs a Compare link asked for that it lacks, and the runs compared instead.
KEY_UNKNOWN_RUN = "unknown_run"
KEY_UNKNOWN_COMPARED = "unknown_compared"
# Characters kept as typed in a query value: run names are paths ("lightning/tb/version_0").
_SAFE = "/:~"


def run_url(name: str, logdir: str) -> str:
    """``run?run=NAME&logdir=DIR``: the run page of `name` in `logdir`, relative to the app's root.

    The run comes first, so a column of these links sorts as the run names do."""
    return f"{RUN_PATH}?" + urlencode({KEY_RUN: name, KEY_LOGDIR: logdir}, safe=_SAFE)


def run_of(url: str) -> str | None:
    """The run a `run_url` names (None for any other link)."""
    values = parse_qs(urlsplit(url).query, keep_blank_values=True).get(KEY_RUN)
    return values[-1] if values else None


def unknown_runs(requested: Sequence[str], names: Sequence[str]) -> list[str]:
    """The runs a Compare link asked for that the log dir lacks, in the link's order."""
    return [r for r in requested if r and r not in names]


def unknown_run(requested: str | None, names: Sequence[str]) -> str | None:
    """The run a link asked for when the log dir has no such run (else None), to say so
    rather than silently show another run."""
    if requested is None or requested == "" or requested in names:
        return None
    return requested
