"""The charts of a run's page, in the order of `app.catalog`: each under its anchor (findings link
to it), captioned with what healthy looks like, marking the steps where its findings begin.
The charts a run cannot draw are listed together at the end.

Every chart's place is laid out first, saying it is being drawn; then the charts the
findings point at are drawn, then the rest: a reader who follows a finding's link finds
its chart drawn, and no chart's place is ever a blank gap."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from trainscope.analyzers.diagnose import Diagnosis
from trainscope.analyzers.facts import batch_size, data_parallel_ranks, ordered_layers
from trainscope.analyzers.findings import Finding
from trainscope.analyzers.run import Run, Series
from trainscope.app import catalog as C
from trainscope.app import figures as F
from trainscope.app import thresholds as TH
from trainscope.app import xaxis as X
from trainscope.app.catalog import Chart, charts_of
from trainscope.app.csvdata import series_csv
from trainscope.app.escape import code, md
from trainscope.app.figures.common import TRAIN_COLOR, VAL_COLOR
from trainscope.app.frame import guard
from trainscope.app.series import spans
from trainscope.logformat import runjson as RJ
from trainscope.logformat import tags as T

OTHER_DEFAULT, OTHER_COLUMNS, OTHER_HEIGHT = 6, 3, 260  # unknown series: how many at first, per row, how tall
MAX_DEFAULT_LAYERS = 8  # per-layer line charts start with at most this many layers (all are in the heatmap)
SMOOTHING_DEFAULT = 0.6  # TensorBoard's default
LOG_SPAN = 1e3  # a loss spanning more than three decades (a blow-up) starts on a log axis
COLLECTOR_HINT = "TrainScope's collector (`collectors.watch`) records them; most other loggers do not."
DRAWING = ":material/hourglass_top: Drawing this chart…"
KEY_X = "x_axis"  # the page's x axis (step, epoch, wall time, relative time); also the URL's ``?x_axis=``


@dataclass(frozen=True)
class View:
    """How the charts are drawn this time: the page's controls, and this chart's findings."""

    smoothing: float
    log_y: bool  # the loss on a log axis
    layers: tuple[str, ...]  # layers of the per-layer line charts
    axis: X.Axis
    markers: tuple[F.Marker, ...] = ()
    highlight: tuple[str, ...] = ()  # layers the findings name

    def series(self, run: Run, tag: str) -> Series | None:
        """`tag`'s series with its steps placed on the page's x axis."""
        s = run.scalar(tag)
        return self.axis.along(s, tag) if s is not None else None

    def per_layer(self, run: Run, prefix: str) -> list[tuple[str, Series]]:
        """`layer_series` placed on the page's x axis."""
        return [(name, self.axis.along(s, prefix + name)) for name, s in layer_series(run, prefix)]


def markers(chart: Chart, findings: Sequence[Finding], axis: X.Axis) -> tuple[F.Marker, ...]:
    return tuple(
        F.Marker(int(f.step), f.rule, f.severity, None if axis.name == X.STEP else axis.at(int(f.step)))
        for f in findings
        if f.rule in chart.rules and f.step is not None
    )


def drawing_order(charts: Sequence[Chart], findings: Sequence[Finding], run: Run) -> list[Chart]:
    """`charts` in the order they are drawn: those the findings link to first (the most severe
    finding's first, as the findings are ordered), then the others in page order."""
    first: list[Chart] = []
    for f in findings:
        for chart in charts_of(f.rule, run):
            if chart in charts and chart not in first:
                first.append(chart)
    return first + [chart for chart in charts if chart not in first]


def show(d: Diagnosis) -> None:
    run = d.run
    st.header("Charts", anchor="charts")
    x_col, smoothing_col, log_col = st.columns([3, 2.5, 1.5], vertical_alignment="bottom")
    smoothing = smoothing_col.slider(
        "Smoothing",
        0.0,
        0.99,
        SMOOTHING_DEFAULT,
        0.01,
        key="smoothing",
        help="Weight of TensorBoard's debiased exponential moving average, applied to the full series before "
        "it is thinned for display. Raw values stay faint behind the smoothed line. 0 turns it off.",
    )
    loss_values = run.scalar(T.TRAIN_LOSS)
    log_y = log_col.toggle(
        "Log-scale loss",
        value=loss_values is not None and spans(loss_values.values, LOG_SPAN),
        key=f"log_y:{run.name}",
        help="The loss on a logarithmic axis; on from the start when it spans several decades (a blow-up)",
    )
    axes = X.choices(run)
    if st.session_state.get(KEY_X) not in axes:
        st.session_state.pop(KEY_X, None)  # e.g. epoch chosen on a run that logs none
    axis_name = x_col.segmented_control(
        "X axis",
        axes,
        default=X.STEP,
        key=KEY_X,
        required=True,
        bind="query-params",
        help="One axis for every chart of the page: the optimizer step, the epoch (where the log counts "
        "epochs), the wall-clock time a point was logged, or the time since the run's first point.",
    )
    axis = X.Axis.of(run, axis_name or X.STEP)
    all_layers = layer_names(run)
    chosen = tuple(all_layers)
    if all_layers:
        flagged = [f.layer for f in d.findings if f.layer in all_layers]
        chosen = tuple(
            st.multiselect(
                "Layers in the per-layer line charts",
                all_layers,
                default=default_layers(all_layers, flagged),
                key=f"layers:{run.name}",
                help="Layers in model order. The heatmap always shows every layer.",
            )
        )
    drawn = {chart: draw for chart, draw in SECTIONS if chart.available(run)}
    absent = [chart for chart, _ in SECTIONS if chart not in drawn and chart is not C.OTHER]
    slots = {}
    for chart in drawn:  # every chart's place first, in page order, saying it is on its way
        st.subheader(chart.title, anchor=chart.anchor)
        st.caption(chart.healthy)
        slots[chart] = st.empty()
        slots[chart].caption(DRAWING)
    not_shown(run)
    if absent:
        st.subheader("Not in this run's log", anchor="absent")
        st.info(
            "This run does not log what these charts draw, so they are left out (and the rules that need "
            "it are listed under *Not checked*):\n\n"
            + "\n".join(f"- **{chart.title}**: {chart.signals()}" for chart in absent)
            + "\n\n"
            + COLLECTOR_HINT,
            icon=":material/visibility_off:",
        )
    for chart in drawing_order(list(drawn), [*d.roots, *d.findings], run):
        view = View(
            smoothing,
            log_y,
            chosen,
            axis,
            markers(chart, d.findings, axis),
            tuple(f.layer for f in d.findings if f.rule in chart.rules and f.layer),
        )
        with slots[chart].container(), guard(f"{chart.title} chart"):
            drawn[chart](run, view)


def not_shown(run: Run) -> None:
    """What the log holds that no chart draws (images, text, audio, the model graph, histograms
    under names no chart reads), listed once, so that its absence from the charts is not
    taken for missing data."""
    if not run.not_shown:
        return
    st.subheader("Logged, not shown", anchor="not-shown")
    st.caption(
        f"This run's log also holds {len(run.not_shown)} thing(s) TrainScope does not draw; "
        "TensorBoard shows them: "
        + ", ".join(f"{code(tag)} ({md(kind)})" for tag, kind in run.not_shown.items())
    )


# -- one function per chart ---------------------------------------------------------


def loss(run: Run, view: View) -> None:
    train, val, lr = view.series(run, T.TRAIN_LOSS), view.series(run, T.VAL_LOSS), view.series(run, T.LR)
    plot(
        F.train_val_figure(
            train,
            val,
            lr,
            x_title=view.axis.title(T.TRAIN_LOSS),
            smoothing=view.smoothing,
            log_y=view.log_y,
            markers=view.markers,
            y_title="loss",
        ),
        "loss",
        view,
        run,
        (T.TRAIN_LOSS, T.VAL_LOSS, T.LR),
    )


def accuracy(run: Run, view: View) -> None:
    train, val = view.series(run, T.TRAIN_ACC), view.series(run, T.VAL_ACC)
    plot(
        F.train_val_figure(
            train,
            val,
            x_title=view.axis.title(T.TRAIN_ACC),
            smoothing=view.smoothing,
            markers=view.markers,
            y_title="accuracy",
        ),
        "accuracy",
        view,
        run,
        (T.TRAIN_ACC, T.VAL_ACC),
    )


def gradients(run: Run, view: View) -> None:
    total = view.series(run, T.GRAD_GLOBAL_NORM)
    layers = view.per_layer(run, T.GRAD_NORM_PREFIX)
    left, right = st.columns(2)
    if total is not None:
        with left:
            plot(
                F.curves_figure(
                    [F.Curve("global norm", total.steps, total.values, TRAIN_COLOR, smooth=False)],
                    y_title="gradient norm (all layers)",
                    x_title=view.axis.title(T.GRAD_GLOBAL_NORM),
                    log_y=True,
                    markers=view.markers,
                ),
                "grad_global",
                view,
                run,
                (T.GRAD_GLOBAL_NORM,),
            )
    if layers:
        with right if total is not None else left:
            shown = [(name, s) for name, s in layers if name in view.layers]
            if shown:
                plot(
                    F.layer_lines_figure(
                        shown,
                        y_title="gradient norm per layer",
                        log_y=True,
                        markers=view.markers,
                        highlight=view.highlight,
                    ),
                    "grad_layers",
                    view,
                    run,
                    prefixed(T.GRAD_NORM_PREFIX, [name for name, _ in shown]),
                )
            else:
                st.info("No layer selected above.")
        plot(
            F.layer_heatmap(layers, value_title="gradient norm", markers=view.markers),
            "grad_heatmap",
            view,
            run,
            prefixed(T.GRAD_NORM_PREFIX, [name for name, _ in layers]),
        )
    else:
        st.info(
            f"Per-layer gradient norms ({code(T.GRAD_NORM_PREFIX + '<layer>')}) are not logged: only the "
            "norm of all gradients together. " + COLLECTOR_HINT
        )


def updates(run: Run, view: View) -> None:
    layers = view.per_layer(run, T.UPDATE_RATIO_PREFIX)
    shown = [(name, s) for name, s in layers if name in view.layers] or layers
    target = TH.UPDATE_RATIO_TARGET
    plot(
        F.layer_lines_figure(
            shown,
            y_title="‖Δw‖ / ‖w‖ per step",
            log_y=True,
            markers=view.markers,
            highlight=view.highlight,
            band=F.Band(target / 10, target * 10, f"healthy ≈ {target:g}"),
            guides=[F.Guide(TH.UPDATE_RATIO_HIGH, "too large")],
        ),
        "updates",
        view,
        run,
        prefixed(T.UPDATE_RATIO_PREFIX, [name for name, _ in shown]),
    )


def activations(run: Run, view: View) -> None:
    dead = view.per_layer(run, T.DEAD_FRACTION_PREFIX)
    saturated = view.per_layer(run, T.SATURATED_FRACTION_PREFIX)
    left, right = st.columns(2)
    with left:
        if dead:
            plot(
                F.layer_lines_figure(
                    dead,
                    y_title="share of ReLU units dead for the batch",
                    markers=view.markers,
                    highlight=view.highlight,
                    guides=[F.Guide(TH.DEAD_WARNING, "warning"), F.Guide(TH.DEAD_CRITICAL, "critical")],
                ),
                "dead",
                view,
                run,
                prefixed(T.DEAD_FRACTION_PREFIX, [name for name, _ in dead]),
            )
        else:
            st.info("No ReLU-family layers measured (no dead-unit shares logged).")
    with right:
        if saturated:
            plot(
                F.layer_lines_figure(
                    saturated,
                    y_title="share of outputs at the flat ends",
                    markers=view.markers,
                    highlight=view.highlight,
                    guides=[F.Guide(TH.SATURATED_WARNING, "warning")],
                ),
                "saturated",
                view,
                run,
                prefixed(T.SATURATED_FRACTION_PREFIX, [name for name, _ in saturated]),
            )
        else:
            st.info("No sigmoid/tanh layers measured (no saturation shares logged).")


def weights(run: Run, view: View) -> None:
    norms = view.per_layer(run, T.WEIGHT_NORM_PREFIX)
    init = init_check_table(run)
    if norms:
        shown = [(name, s) for name, s in norms if name in view.layers] or norms
        plot(
            F.layer_lines_figure(
                shown, y_title="weight norm ‖w‖", log_y=True, markers=view.markers, highlight=view.highlight
            ),
            "weights",
            view,
            run,
            prefixed(T.WEIGHT_NORM_PREFIX, [name for name, _ in shown]),
        )
    if init is not None:
        st.markdown("**Initialization check** (when the collector attached)")
        st.dataframe(init, hide_index=True)


def histograms(run: Run, view: View) -> None:
    kinds = {
        "weights": {
            name[len(T.HIST_WEIGHT_PREFIX) :]: h
            for name, h in run.histograms.items()
            if name.startswith(T.HIST_WEIGHT_PREFIX) and len(h.steps)
        },
        "gradients": {
            name[len(T.HIST_GRAD_PREFIX) :]: h
            for name, h in run.histograms.items()
            if name.startswith(T.HIST_GRAD_PREFIX) and len(h.steps)
        },
    }
    kinds = {kind: found for kind, found in kinds.items() if found}
    kind_col, layer_col = st.columns([1, 3])
    kind = kind_col.segmented_control(
        "Distribution of", list(kinds), default=list(kinds)[0], key=f"hist_kind:{run.name}", required=True
    )
    names = ordered_layers(run, kinds[kind])
    layer = layer_col.selectbox("Layer", names, key=f"hist_layer:{run.name}:{kind}")
    plot(
        F.ridgeline_figure(kinds[kind][layer], value_title="weight" if kind == "weights" else "gradient"),
        "histograms",
    )


def inputs(run: Run, view: View) -> None:
    mean, std = view.series(run, T.INPUT_MEAN), view.series(run, T.INPUT_STD)
    batch, seen = view.series(run, T.LABEL_ENTROPY), view.series(run, T.LABEL_ENTROPY_SEEN)
    left, middle, right = st.columns(3)
    limit = TH.INPUT_MAX_ABS_MEAN
    if mean is not None:
        with left:
            plot(
                F.layer_lines_figure(
                    [("input mean", mean)],
                    y_title="input batch mean",
                    markers=view.markers,
                    band=F.Band(-limit, limit, "normalized"),
                ),
                "input_mean",
                view,
                run,
                (T.INPUT_MEAN,),
            )
    if std is not None:
        with middle:
            plot(
                F.layer_lines_figure(
                    [("input std", std)],
                    y_title="input batch std",
                    log_y=True,
                    markers=view.markers,
                    band=F.Band(TH.INPUT_STD_MIN, TH.INPUT_STD_MAX, "normalized"),
                ),
                "input_std",
                view,
                run,
                (T.INPUT_STD,),
            )
    if batch is not None:
        with right:
            lines = [F.Curve("per batch", batch.steps, batch.values, TRAIN_COLOR, smooth=False)]
            if seen is not None:
                lines.append(F.Curve("all labels seen", seen.steps, seen.values, VAL_COLOR, smooth=False))
            plot(
                F.curves_figure(lines, y_title="label entropy / log(classes)", markers=view.markers),
                "labels",
                view,
                run,
                (T.LABEL_ENTROPY, T.LABEL_ENTROPY_SEEN),
            )


def noise(run: Run, view: View) -> None:
    scale = view.series(run, T.GRAD_NOISE_SCALE)
    batch, ranks = batch_size(run), data_parallel_ranks(run)
    # B_simple counts a step's examples: every data-parallel rank's batch together.
    label = f"batch size {batch}" if ranks == 1 else f"batch of a step {batch * ranks} ({ranks} ranks)"
    plot(
        F.layer_lines_figure(
            [("noise scale", scale)],
            y_title="B_simple (examples)",
            log_y=True,
            markers=view.markers,
            guides=[F.Guide(float(batch * ranks), label)] if batch else (),
        ),
        "noise",
        view,
        run,
        (T.GRAD_NOISE_SCALE,),
    )


def speed(run: Run, view: View) -> None:
    step = view.series(run, T.STEP_SECONDS)
    ranks = view.per_layer(run, T.STEP_SECONDS_RANK_PREFIX)
    if ranks:
        plot(
            F.layer_lines_figure(
                [(f"rank {name}", s) for name, s in ranks],
                y_title="seconds per step",
                smoothing=view.smoothing,
            ),
            "speed",
            view,
            run,
            prefixed(T.STEP_SECONDS_RANK_PREFIX, [name for name, _ in ranks]),
        )
    else:
        plot(
            F.curves_figure(
                [F.Curve("step time", step.steps, step.values, TRAIN_COLOR)],
                y_title="seconds per step",
                smoothing=view.smoothing,
            ),
            "speed",
            view,
            run,
            (T.STEP_SECONDS,),
        )


def other(run: Run, view: View) -> None:
    epochs = X.epoch_series(run)  # the epoch count is an x axis, not a curve among the others
    tags = sorted(t for t, s in run.unmapped.items() if len(s) and s is not epochs)
    if not tags:
        st.caption("Only the epoch count, which the page offers as its x axis.")
        return
    picked = st.multiselect("Series", tags, default=tags[:OTHER_DEFAULT], key=f"other:{run.name}")
    columns = st.columns(OTHER_COLUMNS)
    for i, tag in enumerate(picked):  # small multiples: unrelated series, each on its own scale
        series = view.axis.along(run.unmapped[tag], tag)
        with columns[i % OTHER_COLUMNS]:
            plot(
                F.curves_figure(
                    [F.Curve(tag, series.steps, series.values, TRAIN_COLOR)],
                    y_title=tag,
                    x_title=view.axis.title(tag),
                    smoothing=view.smoothing,
                    height=OTHER_HEIGHT,
                ),
                f"other:{tag}",
                view,
                run,
                (tag,),
            )


SECTIONS: tuple[tuple[Chart, Callable[[Run, View], None]], ...] = (
    (C.LOSS, loss),
    (C.ACCURACY, accuracy),
    (C.GRADIENTS, gradients),
    (C.UPDATES, updates),
    (C.ACTIVATIONS, activations),
    (C.WEIGHTS, weights),
    (C.HISTOGRAMS, histograms),
    (C.INPUTS, inputs),
    (C.NOISE, noise),
    (C.SPEED, speed),
    (C.OTHER, other),
)


# -- helpers ------------------------------------------------------------------------


def plot(
    fig: go.Figure, key: str, view: View | None = None, run: Run | None = None, tags: Sequence[str] = ()
) -> None:
    """Show `fig` on the page's x axis, with its series (as logged, every point) as a CSV download."""
    if view is not None and view.axis.name != X.STEP:
        fig.update_xaxes(title_text=view.axis.title(), **view.axis.layout())
    st.plotly_chart(fig, key=key, config={"displaylogo": False})
    if run is not None and tags:
        found = [(tag, run.scalars.get(tag) if tag in run.scalars else run.unmapped.get(tag)) for tag in tags]
        found = [(tag, s) for tag, s in found if s is not None and len(s)]
        if found:
            st.download_button(
                "CSV",
                lambda: series_csv(found),
                file_name=f"{run.name.replace('/', '_')}-{key}.csv",
                mime="text/csv",
                icon=":material/download:",
                type="tertiary",
                key=f"csv:{key}",
                on_click="ignore",
                help="This chart's series as logged (every point, not only those drawn): step, wall time, values",
            )


def prefixed(prefix: str, names: Sequence[str]) -> list[str]:
    return [prefix + name for name in names]


def layer_series(run: Run, prefix: str) -> list[tuple[str, Series]]:
    """The run's per-layer series under `prefix`, in model order."""
    found = run.layers(prefix)
    return [(name, found[name]) for name in ordered_layers(run, found)]


def layer_names(run: Run) -> list[str]:
    """Every layer with a per-layer line chart signal, in model order."""
    names: set[str] = set()
    for prefix in (T.GRAD_NORM_PREFIX, T.UPDATE_RATIO_PREFIX, T.WEIGHT_NORM_PREFIX):
        names.update(run.layers(prefix))
    return ordered_layers(run, names)


def default_layers(names: Sequence[str], flagged: Sequence[str], most: int = MAX_DEFAULT_LAYERS) -> list[str]:
    """All layers when few; else the first and last, those a finding names, and evenly spread others."""
    if len(names) <= most:
        return list(names)
    keep = {names[0], names[-1], *flagged}
    for i in np.linspace(0, len(names) - 1, most).round().astype(int):
        if len(keep) >= most:
            break
        keep.add(names[i])
    return [name for name in names if name in keep]


def init_check_table(run: Run) -> pd.DataFrame | None:
    """run.json's initialization check as a table, or None."""
    rows = run.meta.get(RJ.K_INIT_CHECK) if run.meta else None
    if not isinstance(rows, list) or not rows:
        return None
    columns = ["layer", "param", "type", "shape", "std", "expected", "expected_std", "ratio", "constant"]
    table = pd.DataFrame([r for r in rows if isinstance(r, dict)])
    table = table[[c for c in columns if c in table.columns]]
    if "shape" in table.columns:
        table["shape"] = table["shape"].map(
            lambda s: " x ".join(map(str, s)) if isinstance(s, list) else str(s)
        )
    return table.astype({c: str for c in ("layer", "param", "type", "expected") if c in table.columns})
