"""Runs: every run of the log dir with its health and most severe finding, the worst first.

Select one row to inspect that run, several to compare them.
"""

import streamlit as st

from app import frame, summaries
from app.escape import md
from app.settings import COMPARE_PAGE, KEY_COMPARE, KEY_RUN, RUN_PAGE

ROW_HEIGHT = 35  # pixels per row of st.dataframe: the table shows every run up to...
TABLE_MAX_HEIGHT = 740  # ...about 20 of them, then scrolls
HEALTH_HELP = (
    "critical or warning: the most severe finding; not enough data yet: a check still waits for more "
    "steps or validations (and nothing worse was found); ok: every check that could run found nothing."
)


def runs_overview() -> None:
    opened = frame.open_logdir()
    if opened is None:
        return

    counts = summaries.counts(opened.diagnoses)
    runs, critical, warning, waiting, ok = st.columns(5)
    runs.metric("Runs", counts.runs)
    critical.metric(":red[:material/error: Critical]", counts.critical)
    warning.metric(":orange[:material/warning: Warning]", counts.warning)
    waiting.metric(":gray[:material/hourglass_top: Not enough data yet]", counts.waiting)
    ok.metric(":green[:material/check_circle: OK]", counts.ok)

    table = summaries.runs_table(opened.diagnoses)
    same = [c for c in ("status", "source") if table[c].nunique() == 1]
    table = table.drop(columns=same)  # a column saying the same for every run says nothing
    picked = st.dataframe(
        table.style.map(summaries.cell_style, subset=["health"]),
        key="runs_table",
        hide_index=True,
        height=min(TABLE_MAX_HEIGHT, ROW_HEIGHT * (len(table) + 1) + 3),
        on_select="rerun",
        selection_mode="multi-row",
        column_config={
            "health": st.column_config.TextColumn("health", help=HEALTH_HELP, width="small"),
            "run": st.column_config.TextColumn("run", help="Path of the run inside the log dir"),
            "most severe finding": st.column_config.TextColumn("most severe finding", width="large"),
            "last step": st.column_config.NumberColumn("last step", format="localized"),
        },
    )
    chosen = [str(table["run"].iloc[i]) for i in picked.selection.rows if i < len(table)]

    if len(chosen) == 1:
        if st.button(f"Inspect {md(chosen[0])}", type="primary", icon=":material/troubleshoot:"):
            st.session_state[KEY_RUN] = chosen[0]
            st.switch_page(RUN_PAGE)
    elif len(chosen) > 1:
        if st.button(f"Compare {len(chosen)} runs", type="primary", icon=":material/compare_arrows:"):
            st.session_state[KEY_COMPARE] = chosen
            st.switch_page(COMPARE_PAGE)
    else:
        st.caption("Select a run (tick its row) to inspect it, or several to compare them.")


st.title("Runs")
frame.live(runs_overview)
