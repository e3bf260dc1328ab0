"""Runs: every run of the log dir with its health, its most severe finding and the
hyperparameters that set it apart, the worst first.

A run's name is the link to its page (one click; the link carries the log dir, so it
opens the same run in any browser). Tick rows to compare runs.
"""

import streamlit as st

from trainscope.app import frame, runfilter, summaries, tables
from trainscope.app.escape import code
from trainscope.app.settings import COMPARE_PAGE, KEY_COMPARE, current

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
    shown = set(runfilter.show(list(table["run"]), opened.labels))
    table = table[table["run"].isin(shown)].reset_index(drop=True)
    if table.empty:
        st.info("No run matches the filter.", icon=":material/filter_alt_off:")
        return
    same = [c for c in ("status", "source", "explains") if table[c].nunique() == 1]
    table = table.drop(columns=same)  # a column saying the same for every run says nothing
    table, hparams, more = tables.with_hparams(table, opened.snapshot.runs)
    table, name_of = tables.linked(table, current().logdir)
    picked = st.dataframe(
        tables.styled(table, name_of, summaries.cell_style, opened.labels),
        key="runs_table",
        placeholder=tables.MISSING,  # a missing value, which the grid draws itself (not the Styler)
        hide_index=True,
        height=min(TABLE_MAX_HEIGHT, ROW_HEIGHT * (len(table) + 1) + 3),
        on_select="rerun",
        selection_mode="multi-row",
        column_config=column_config(hparams),
    )
    if more:
        st.caption(f"{more} more hyperparameter(s) differ between these runs; the Compare page lists them.")
    chosen = [name_of(str(table["run"].iloc[i])) for i in picked.selection.rows if i < len(table)]

    if len(chosen) > 1:
        if st.button(f"Compare {len(chosen)} runs", type="primary", icon=":material/compare_arrows:"):
            st.session_state[KEY_COMPARE] = chosen
            st.switch_page(COMPARE_PAGE)
    else:
        st.caption(
            "Click a run's name to open it. Tick rows to compare runs; click a column's header to sort."
        )


def column_config(hparams: list[str]) -> dict:
    """Widths that fit a 1400 px window with the sidebar open: name, health, finding and
    "last logged" in view (about 900 px); what the finding explains, the counts and the
    hyperparameters scroll into view beside the pinned run name."""
    config = {
        "run": st.column_config.LinkColumn(
            "run", help="The run's path inside the log dir; click to open it", width=185, pinned=True
        ),
        "health": st.column_config.TextColumn("health", help=HEALTH_HELP, width=125),
        "most severe finding": st.column_config.TextColumn(
            "most severe finding", help="The top root cause (its symptoms under explains)", width=460
        ),
        "last logged": st.column_config.TextColumn("last logged", width=95),
        "explains": st.column_config.TextColumn("explains", help="Symptoms the finding explains", width=260),
        "critical": st.column_config.NumberColumn("critical", width=60),
        "warnings": st.column_config.NumberColumn("warnings", width=70),
        "last step": st.column_config.Column("last step", width=75),  # a number; text where beyond 2**53
    }
    for name in hparams:
        config[name] = st.column_config.Column(name, help=f"hyperparameter {code(name)}")
    return config


st.title("Runs")
frame.live(runs_overview)
