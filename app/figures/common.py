"""Pieces every chart shares: colours, the empty figure, thinned lines, NaN marks, finding markers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import plotly.colors
import plotly.graph_objects as go

from trainscope.app import series as S

SEVERITY_COLORS = {"critical": "#d62728", "warning": "#ff7f0e", "info": "#1f77b4"}
TRAIN_COLOR = "#1f77b4"
VAL_COLOR = "#ff7f0e"
LR_COLOR = "#7f7f7f"
NONFINITE_COLOR = "#d62728"
HEALTHY_BAND_COLOR = "rgba(44, 160, 44, 0.12)"
THRESHOLD_COLOR = "#d62728"
RUN_COLORS = plotly.colors.qualitative.D3
RAW_OPACITY = 0.25  # raw points drawn faint behind their smoothed curve, as TensorBoard does
CHART_HEIGHT = 360
NONFINITE = "NaN/Inf"  # legend group of the red crosses


@dataclass(frozen=True)
class Marker:
    """A finding drawn on a chart: a dashed vertical line at `step` labelled `label`.

    `at` is where the step falls on the page's x axis (epoch, time) when that is not steps."""

    step: int
    label: str
    severity: str = "warning"
    at: float | None = None


def new_figure(x_title: str, y_title: str, *, log_y: bool = False, height: int = CHART_HEIGHT) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(
        height=height,
        margin=dict(l=10, r=10, t=40, b=10),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0),
        hovermode="x unified",
        # Keep the user's zoom when a live refresh redraws the chart.
        uirevision="keep",
    )
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text=y_title, type="log" if log_y else "linear")
    if log_y:
        fig.update_yaxes(exponentformat="power")
    return fig


def add_line(
    fig: go.Figure,
    x: np.ndarray,
    y: np.ndarray,
    name: str,
    color: str,
    *,
    opacity: float = 1.0,
    width: float = 2.0,
    dash: str | None = None,
    mode: str = "lines",
    showlegend: bool = True,
    legendgroup: str | None = None,
    yaxis: str = "y",
    hoverinfo: str | None = None,
) -> None:
    """A line of (x, y) thinned to `series.DISPLAY_POINTS` (spikes kept); NaN/Inf left out."""
    keep = S.thinned(x, y)
    fig.add_trace(
        go.Scatter(
            x=np.asarray(x)[keep],
            y=np.asarray(y, dtype=np.float64)[keep],
            name=label(name),
            mode=mode,
            opacity=opacity,
            line=dict(color=color, width=width, dash=dash),
            marker=dict(color=color, size=5),
            showlegend=showlegend,
            legendgroup=label(legendgroup) if legendgroup is not None else None,
            yaxis=yaxis,
            hoverinfo=hoverinfo,
        )
    )


def add_nonfinite(
    fig: go.Figure, x: np.ndarray, y: np.ndarray, name: str, *, showlegend: bool = True
) -> None:
    """Red crosses where `y` is NaN or Inf, at the top of the finite values; one legend entry for all."""
    y = np.asarray(y, dtype=np.float64)
    bad = S.nonfinite_indices(y)
    if bad.shape[0] == 0:
        return
    finite = y[np.isfinite(y)]
    top = float(finite.max()) if finite.shape[0] else 1.0
    labels = ["NaN" if np.isnan(v) else ("+Inf" if v > 0 else "-Inf") for v in y[bad]]
    fig.add_trace(
        go.Scatter(
            x=np.asarray(x)[bad],
            y=np.full(bad.shape[0], top),
            name="NaN/Inf",
            legendgroup=NONFINITE,
            showlegend=showlegend,
            mode="markers",
            marker=dict(color=NONFINITE_COLOR, symbol="x", size=9),
            text=labels,
            hovertemplate="%{text}<extra>" + _hover_safe(name) + "</extra>",
        )
    )


def label(text: object) -> str:
    """A name from a log (layer, run, tag) as plotly text: plotly reads a few HTML tags (<a href>, <b>)
    and entities in legends, axis labels and hovers; escaped, they show as typed."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _hover_safe(text: str) -> str:
    """`label`, and hover-template fields (``%{...}``) neutralised too."""
    return label(text).replace("%{", "%&#123;")


def add_markers(fig: go.Figure, markers: Sequence[Marker]) -> None:
    """Each finding's step as a dashed vertical line, labelled at the top; one label per step."""
    by_step: dict[int, list[Marker]] = {}
    for m in markers:
        by_step.setdefault(int(m.step), []).append(m)
    for i, (step, group) in enumerate(sorted(by_step.items())):
        color = SEVERITY_COLORS.get(group[0].severity, SEVERITY_COLORS["warning"])
        x = group[0].at if group[0].at is not None else step
        fig.add_shape(
            type="line",
            x0=x,
            x1=x,
            xref="x",
            y0=0,
            y1=1,
            yref="paper",
            line=dict(color=color, width=1.5, dash="dash"),
        )
        label = ", ".join(dict.fromkeys(m.label for m in group))
        fig.add_annotation(
            x=x,
            xref="x",
            y=1 - 0.09 * (i % 4),
            yref="paper",
            yanchor="top",
            xanchor="left",
            text=f"{label} @ {step:,}",
            showarrow=False,
            font=dict(color=color, size=11),
            # Half-transparent grey: readable over the curves in a light and a dark theme alike.
            bgcolor="rgba(128,128,128,0.18)",
        )


def add_band(fig: go.Figure, low: float, high: float, label: str, *, log_y: bool = False) -> None:
    """A shaded horizontal band from `low` to `high` (the healthy range), labelled inside its top left."""
    fig.add_shape(
        type="rect",
        xref="paper",
        x0=0,
        x1=1,
        yref="y",
        y0=low,
        y1=high,
        fillcolor=HEALTHY_BAND_COLOR,
        line_width=0,
        layer="below",
    )
    fig.add_annotation(
        xref="paper",
        x=0,
        xanchor="left",
        yref="y",
        y=_axis_value(high, log_y),
        yanchor="top",
        text=label,
        showarrow=False,
        font=dict(size=11, color="#2ca02c"),
    )


def add_guide(fig: go.Figure, y: float, label: str, *, log_y: bool = False) -> None:
    """A dotted horizontal line at `y` (a rule's threshold), labelled at its right end."""
    fig.add_shape(
        type="line",
        xref="paper",
        x0=0,
        x1=1,
        yref="y",
        y0=y,
        y1=y,
        line=dict(color=THRESHOLD_COLOR, width=1, dash="dot"),
    )
    fig.add_annotation(
        xref="paper",
        x=1,
        xanchor="right",
        yref="y",
        y=_axis_value(y, log_y),
        yanchor="bottom",
        text=label,
        showarrow=False,
        font=dict(size=11, color=THRESHOLD_COLOR),
    )


def _axis_value(y: float, log_y: bool) -> float:
    """Where `y` is on the axis: plotly places annotations on a log axis by log10 of the value
    (shapes by the value itself)."""
    return float(np.log10(y)) if log_y and y > 0 else y


def ordered_colors(n: int, scale: str = "Viridis") -> list[str]:
    """`n` colours along a sequential scale, first (early layers) dark to last light; never the palest end."""
    if n <= 1:
        return [TRAIN_COLOR]
    return plotly.colors.sample_colorscale(scale, list(np.linspace(0.0, 0.85, n)))


def run_color(i: int) -> str:
    return RUN_COLORS[i % len(RUN_COLORS)]
