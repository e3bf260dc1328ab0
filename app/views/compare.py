"""Compare runs: several metrics at once (loss, val loss, accuracy, learning rate, gradient
norm), each with the chosen runs overlaid on one x axis; then their health and the
hyperparameters that differ, side by side."""

import numpy as np
import pandas as pd
import streamlit as st

from trainscope.app import comparison, frame, links, runfilter, summaries, tables, xaxis
from trainscope.app import figures as F
from trainscope.app.escape import code
from trainscope.app.sections.charts import LOG_SPAN, SMOOTHING_DEFAULT
from trainscope.app.series import spans
from trainscope.app.settings import KEY_COMPARE, current
from trainscope.logformat import tags as T

DEFAULT_RUNS = 3  # runs compared when none were chosen
VALUE_COLUMNS = ("final train loss", "best val loss", "best val acc")  # shown with 4 significant digits
CHART_COLUMNS = 2  # charts side by side
KEY_METRICS = "metrics"
KEY_X = "x_axis"  # as on the run page: ``?x_axis=epoch``


def compare_runs() -> None:
    opened = frame.open_logdir()
    if opened is None:
        return
    names = summaries.worst_first(opened.diagnoses)
    unknown = links.unknown_runs(st.query_params.get_all(KEY_COMPARE), names)  # a link to runs not here
    if KEY_COMPARE in st.session_state:  # chosen before (here, or on the Runs page): drop runs that are gone
        st.session_state[KEY_COMPARE] = [n for n in st.session_state[KEY_COMPARE] if n in names]
    matching = runfilter.show(names, opened.labels)
    kept = st.session_state.get(KEY_COMPARE) or []
    chosen = st.multiselect(
        "Runs",
        [n for n in names if n in matching or n in kept],  # chosen runs stay, whatever the filter
        default=None if KEY_COMPARE in st.session_state else matching[:DEFAULT_RUNS],
        format_func=opened.label,
        key=KEY_COMPARE,
        bind="query-params",
    )
    if unknown:  # said until the choice changes, not only until the next refresh
        st.session_state[links.KEY_UNKNOWN_COMPARED] = (unknown, chosen)
    asked, compared = st.session_state.get(links.KEY_UNKNOWN_COMPARED) or ([], None)
    if compared == chosen:
        st.warning(f"No run named {', '.join(code(n) for n in asked)} in this log dir.")
    else:
        st.session_state.pop(links.KEY_UNKNOWN_COMPARED, None)
    if not chosen:
        st.info("Choose runs to compare.")
        return
    runs = [opened.snapshot.runs[n] for n in chosen]
    offered = comparison.metrics(runs)
    if not offered:
        st.info("The chosen runs log no scalar signals yet.")
        return

    shown = st.multiselect(
        "Metrics",
        offered,
        default=comparison.default_metrics(offered),
        key=KEY_METRICS,
        bind="query-params",
    )
    x_col, smoothing_col = st.columns([3, 2], vertical_alignment="bottom")
    axis_name = (
        x_col.segmented_control(
            "X axis",
            [a for a in xaxis.AXES if any(a in xaxis.choices(r) for r in runs)],
            default=xaxis.STEP,
            key=KEY_X,
            bind="query-params",
            help="One axis for every chart. Epoch where a run logs it; wall and relative time where "
            "its log keeps the time of each point.",
        )
        or xaxis.STEP
    )
    smoothing = smoothing_col.slider("Smoothing", 0.0, 0.99, SMOOTHING_DEFAULT, 0.01, key="compare_smoothing")
    placed, off_axis = comparison.axes(runs, axis_name)
    if off_axis:
        off = ", ".join(code(opened.label(n)) for n in off_axis)
        st.caption(f"Not drawn on {axis_name} (their log has none): {off}")

    for start in range(0, len(shown), CHART_COLUMNS):
        for column, tag in zip(st.columns(CHART_COLUMNS), shown[start : start + CHART_COLUMNS]):
            with column, frame.guard(f"{tag} chart"):
                chart(runs, tag, placed, smoothing, opened.labels)
    table(opened, chosen)


def chart(runs: list, tag: str, placed: dict, smoothing: float, labels: dict[str, str]) -> None:
    """One metric, the runs overlaid; the runs that do not log it named under it."""
    curves, lacking = comparison.curves(runs, tag, placed, labels)
    st.markdown(f"**{code(tag)}**")
    if curves:
        wide = any(spans(c.values, LOG_SPAN) for c in curves)
        fig = F.curves_figure(
            curves,
            y_title=tag,
            x_title=comparison.x_title(placed, runs, tag),
            smoothing=smoothing,
            log_y=wide,
        )
        first = next(iter(placed.values()), None)
        if first is not None:
            fig.update_xaxes(**first.layout())
        st.plotly_chart(fig, key=f"compare_chart:{tag}", config={"displaylogo": False})
    if lacking:
        st.caption(f"Not logged by: {', '.join(code(labels.get(n, n)) for n in lacking)}")


def table(opened: frame.Opened, chosen: list[str]) -> None:
    """Health, progress, best values and every hyperparameter that differs, one row per run."""
    frame_ = side_by_side(opened.diagnoses, chosen)
    frame_, hparams, _ = tables.with_hparams(frame_, opened.snapshot.runs, limit=None)
    last = ["most severe finding", "explains"]  # the numbers and what differs first, in view
    frame_ = frame_[[c for c in frame_.columns if c not in last] + last]
    frame_, name_of = tables.linked(frame_, current().logdir)
    st.dataframe(
        tables.styled(frame_, name_of, summaries.cell_style, opened.labels),
        hide_index=True,
        placeholder=tables.MISSING,  # a missing value, which the grid draws itself (not the Styler)
        column_config={
            "health": st.column_config.TextColumn("health", width=130),
            "run": st.column_config.LinkColumn("run", width=170, pinned=True, help="Click to open the run"),
            "most severe finding": st.column_config.TextColumn("most severe finding", width=360),
            "explains": st.column_config.TextColumn("explains", help="Symptoms the finding explains"),
            **{c: st.column_config.Column(c, width=105) for c in VALUE_COLUMNS},  # text where huge
            **{h: st.column_config.Column(h, help=f"hyperparameter {code(h)}") for h in hparams},
        },
    )


def side_by_side(diagnoses: dict, names: list[str]) -> pd.DataFrame:
    rows = []
    for name in names:
        d = diagnoses[name]
        run = d.run
        rows.append(
            {
                "run": name,
                "health": summaries.health(d),
                "most severe finding": summaries.finding_and_symptoms(d)[0],
                "explains": summaries.finding_and_symptoms(d)[1],
                "last step": summaries.last_step(run),
                VALUE_COLUMNS[0]: last_finite(run.scalar(T.TRAIN_LOSS)),
                VALUE_COLUMNS[1]: best(run.scalar(T.VAL_LOSS), np.nanmin),
                VALUE_COLUMNS[2]: best(run.scalar(T.VAL_ACC), np.nanmax),
            }
        )
    return pd.DataFrame(
        rows, columns=["run", "health", "most severe finding", "last step", *VALUE_COLUMNS, "explains"]
    )


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
