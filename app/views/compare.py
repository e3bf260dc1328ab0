"""Compare runs: the same metric of several runs overlaid, and their health side by side."""

import numpy as np
import pandas as pd
import streamlit as st

from app import figures as F
from app import frame, summaries
from app.escape import code
from app.sections.charts import LOG_SPAN, SMOOTHING_DEFAULT
from app.series import spans
from app.settings import KEY_COMPARE
from logformat import tags as T

# Metrics offered first, in this order; then every other signal the chosen runs share.
FIRST_METRICS = (T.TRAIN_LOSS, T.VAL_LOSS, T.TRAIN_ACC, T.VAL_ACC, T.LR, T.GRAD_GLOBAL_NORM, T.STEP_SECONDS)
DEFAULT_RUNS = 3  # runs compared when none were chosen
VALUE_COLUMNS = ("final train loss", "best val loss", "best val acc")  # shown with 4 significant digits


def compare_runs() -> None:
    opened = frame.open_logdir()
    if opened is None:
        return
    names = summaries.worst_first(opened.diagnoses)
    if KEY_COMPARE in st.session_state:  # chosen before (here, or on the Runs page): drop runs that are gone
        st.session_state[KEY_COMPARE] = [n for n in st.session_state[KEY_COMPARE] if n in names]
    chosen = st.multiselect(
        "Runs",
        names,
        default=None if KEY_COMPARE in st.session_state else names[:DEFAULT_RUNS],
        key=KEY_COMPARE,
        bind="query-params",
    )
    if not chosen:
        st.info("Choose runs to compare.")
        return
    runs = [opened.snapshot.runs[n] for n in chosen]
    metrics = available_metrics(runs)
    if not metrics:
        st.info("The chosen runs log no scalar signals yet.")
        return
    metric_col, smoothing_col, log_col = st.columns([3, 2, 1], vertical_alignment="bottom")
    metric = metric_col.selectbox("Metric", metrics, key="compare_metric")
    smoothing = smoothing_col.slider("Smoothing", 0.0, 0.99, SMOOTHING_DEFAULT, 0.01, key="compare_smoothing")
    having = [(run.name, run.scalar(metric)) for run in runs if run.scalar(metric) is not None]
    wide = any(spans(s.values, LOG_SPAN) for _, s in having)
    log_y = log_col.toggle("Log scale", value=wide, key=f"compare_log_y:{metric}")

    with frame.guard("comparison chart"):
        st.plotly_chart(
            F.compare_figure(
                having, y_title=metric, x_title=runs[0].x_axis(metric), smoothing=smoothing, log_y=log_y
            ),
            key="compare_chart",
            config={"displaylogo": False},
        )
    lacking = [run.name for run in runs if run.scalar(metric) is None]
    if lacking:
        st.caption(f"Not logged by: {', '.join(code(n) for n in lacking)}")
    table = side_by_side(opened.diagnoses, chosen)
    # Values as text with 4 significant digits: the grid shows a float beyond 2**53 (a
    # diverged loss, 1e25) in full and flagged as unsafe, whatever number format it is given.
    shown = table.assign(**{c: table[c].map(significant) for c in VALUE_COLUMNS})
    st.dataframe(
        shown.style.map(summaries.cell_style, subset=["health"]),
        hide_index=True,
        column_config={c: st.column_config.TextColumn(c, width="small") for c in VALUE_COLUMNS},
    )


def available_metrics(runs: list) -> list[str]:
    tags = {tag for run in runs for tag, s in run.scalars.items() if len(s)}
    return [t for t in FIRST_METRICS if t in tags] + sorted(tags - set(FIRST_METRICS))


def side_by_side(diagnoses: dict, names: list[str]) -> pd.DataFrame:
    rows = []
    for name in names:
        d = diagnoses[name]
        run = d.run
        rows.append(
            {
                "run": name,
                "health": summaries.health(d),
                "most severe finding": summaries.headline(d),
                "last step": summaries.last_step(run),
                VALUE_COLUMNS[0]: last_finite(run.scalar(T.TRAIN_LOSS)),
                VALUE_COLUMNS[1]: best(run.scalar(T.VAL_LOSS), np.nanmin),
                VALUE_COLUMNS[2]: best(run.scalar(T.VAL_ACC), np.nanmax),
            }
        )
    return pd.DataFrame(rows)


def significant(value: float | None) -> str:
    return "–" if value is None or pd.isna(value) else f"{value:.4g}"


def last_finite(series) -> float | None:
    if series is None:
        return None
    finite = series.values[np.isfinite(series.values)]
    return float(finite[-1]) if finite.shape[0] else None


def best(series, pick) -> float | None:
    if series is None:
        return None
    finite = series.values[np.isfinite(series.values)]
    return float(pick(finite)) if finite.shape[0] else None


st.title("Compare runs")
frame.live(compare_runs)
