"""Inspect a run: its findings with advice, then the charts they point to."""

import streamlit as st

from app import frame, summaries
from app.sections import charts, findings, header
from app.settings import KEY_RUN


def inspect_run() -> None:
    opened = frame.open_logdir()
    if opened is None:
        return
    names = summaries.worst_first(opened.diagnoses)
    if st.session_state.get(KEY_RUN) not in names:
        st.session_state.pop(KEY_RUN, None)  # a run that is gone (or a stale link): start on the worst one
    name = st.selectbox(
        "Run",
        names,
        key=KEY_RUN,
        bind="query-params",
        help="Runs of the log dir, the worst first",
    )
    d = opened.diagnoses[name]
    header.show(opened.snapshot.path, d)
    findings.show(d)
    charts.show(d)


frame.live(inspect_run)
