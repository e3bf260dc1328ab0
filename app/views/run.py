"""Inspect a run: its findings with advice, then the charts they point to."""

import streamlit as st

from trainscope.app import frame, links, summaries
from trainscope.app.escape import code
from trainscope.app.sections import charts, findings, header
from trainscope.app.settings import KEY_RUN


def inspect_run() -> None:
    opened = frame.open_logdir()
    if opened is None:
        return
    names = summaries.worst_first(opened.diagnoses)
    unknown = links.unknown_run(
        st.query_params.get(KEY_RUN), names
    )  # a link to a run not (or no longer) here
    if st.session_state.get(KEY_RUN) not in names:
        st.session_state.pop(KEY_RUN, None)  # a run that is gone (or a stale link): start on the worst one
    name = st.selectbox(
        "Run",
        names,
        format_func=opened.label,
        key=KEY_RUN,
        bind="query-params",
        help="Runs of the log dir, the worst first",
    )
    if unknown is not None:  # said until another run is picked, not only until the next refresh
        st.session_state[links.KEY_UNKNOWN_RUN] = (unknown, name)
    asked, shown = st.session_state.get(links.KEY_UNKNOWN_RUN) or (None, None)
    if shown == name:
        st.warning(
            f"No run named {code(asked)} in this log dir; showing {code(opened.label(name))}, its worst run."
        )
    else:
        st.session_state.pop(links.KEY_UNKNOWN_RUN, None)
    d = opened.diagnoses[name]
    header.show(opened.snapshot.path, d, opened.label(name))
    findings.show(d)
    charts.show(d)


frame.live(inspect_run)
