"""The dashboard's settings: which log dir, and whether to follow it live.

They come from the command line (``streamlit run app/main.py -- --logdir DIR``) and
then from the sidebar's widgets, whose values Streamlit keeps in session state
under the keys below; every page reads them through `current()`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

import streamlit as st

from trainscope.sample_runs import RUNS_DIR

KEY_LOGDIR = "logdir"
KEY_LIVE = "live"
KEY_INTERVAL = "interval"
# The run being inspected and the runs being compared; also the URL's query parameters
# (``/run?run=overfitting``), so a view can be linked to.
KEY_RUN = "run"
KEY_COMPARE = "compare"

# The pages, relative to app/main.py (for st.navigation and st.switch_page).
RUNS_PAGE = "views/runs.py"
RUN_PAGE = "views/run.py"
COMPARE_PAGE = "views/compare.py"

INTERVAL_MIN, INTERVAL_MAX = 2, 30  # seconds between live refreshes
INTERVAL_DEFAULT = 5


@dataclass(frozen=True)
class Settings:
    logdir: str
    live: bool = False
    interval: int = INTERVAL_DEFAULT  # seconds

    @property
    def run_every(self) -> int | None:
        """How often a page refreshes itself (`st.fragment(run_every=...)`); None when not live."""
        return self.interval if self.live else None


def logdir_from_args(argv: Sequence[str]) -> str:
    """``--logdir DIR`` from the script's arguments; the bundled sample runs without one.

    Unknown arguments are ignored: under test the arguments are the test runner's.
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--logdir", default=None)
    args, _ = parser.parse_known_args(list(argv))
    return args.logdir if args.logdir else str(RUNS_DIR)


def current() -> Settings:
    """The settings as the sidebar last left them."""
    state = st.session_state
    return Settings(
        logdir=str(state.get(KEY_LOGDIR) or RUNS_DIR),
        live=bool(state.get(KEY_LIVE, False)),
        interval=int(state.get(KEY_INTERVAL, INTERVAL_DEFAULT)),
    )
