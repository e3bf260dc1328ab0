"""TrainScope's dashboard: ``trainscope dashboard [LOGDIR]``, or
``streamlit run app/main.py -- --logdir DIR`` with the package installed (`make setup` does).

Without ``--logdir`` it opens on the bundled sample runs. The sidebar picks the log
dir and turns on live refresh; the pages are the runs of the log dir (worst first),
one run inspected (findings with advice, then the charts), and runs compared.
"""

import sys

import streamlit as st

from trainscope.app import sidebar
from trainscope.app.settings import COMPARE_PAGE, RUN_PAGE, RUNS_PAGE, logdir_from_args

st.set_page_config(page_title="TrainScope", page_icon=":material/monitor_heart:", layout="wide")

sidebar.show(default_logdir=logdir_from_args(sys.argv[1:]))

page = st.navigation(
    [
        st.Page(RUNS_PAGE, title="Runs", icon=":material/list:", default=True),
        st.Page(RUN_PAGE, title="Inspect a run", icon=":material/troubleshoot:", url_path="run"),
        st.Page(COMPARE_PAGE, title="Compare runs", icon=":material/compare_arrows:", url_path="compare"),
    ]
)
page.run()
