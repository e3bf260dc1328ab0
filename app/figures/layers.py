"""Per-layer signals: a line per layer (coloured by depth), a layers x steps heatmap on a log colour scale."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from trainscope.analyzers.run import Series
from trainscope.app import series as S
from trainscope.app.figures.common import (
    Marker,
    add_band,
    add_guide,
    add_markers,
    label,
    new_figure,
    ordered_colors,
)
from trainscope.app.figures.curves import Curve, curves_figure

HIGHLIGHT_WIDTH = 3.5  # a layer a finding names is drawn thicker
LINE_WIDTH = 1.5


@dataclass(frozen=True)
class Band:
    """A shaded horizontal band (the healthy range), with a label."""

    low: float
    high: float
    label: str


@dataclass(frozen=True)
class Guide:
    """A dotted horizontal line at `y` (a rule's threshold), with a label."""

    y: float
    label: str


def layer_lines_figure(
    layers: Sequence[tuple[str, Series]],
    *,
    y_title: str,
    x_title: str = "step",
    log_y: bool = False,
    smoothing: float = 0.0,
    markers: Sequence[Marker] = (),
    highlight: Sequence[str] = (),
    band: Band | None = None,
    guides: Sequence[Guide] = (),
) -> go.Figure:
    """One line per layer in model order, from dark (first layer) to light (last).

    Layers named in `highlight` (by a finding) are drawn thicker; `band` shades the
    healthy range and `guides` draw the rules' thresholds.
    """
    colors = ordered_colors(len(layers))
    curves = [Curve(name, s.steps, s.values, colors[i]) for i, (name, s) in enumerate(layers)]
    fig = curves_figure(
        curves, y_title=y_title, x_title=x_title, smoothing=smoothing, log_y=log_y, markers=markers
    )
    wanted = {label(name) for name in highlight}
    for trace in fig.data:
        name = trace.legendgroup or trace.name
        if trace.mode and "lines" in trace.mode and trace.opacity in (None, 1.0):
            trace.line.width = HIGHLIGHT_WIDTH if name in wanted else LINE_WIDTH
    if band is not None:
        add_band(fig, band.low, band.high, band.label, log_y=log_y)
    for guide in guides:
        add_guide(fig, guide.y, guide.label, log_y=log_y)
    return fig


def layer_heatmap(
    layers: Sequence[tuple[str, Series]],
    *,
    value_title: str,
    x_title: str = "step",
    bins: int = S.HEATMAP_BINS,
    markers: Sequence[Marker] = (),
) -> go.Figure:
    """Layers (rows, first layer on top) x time bins (columns), coloured by log10 of each bin's largest value.

    Vanishing gradients show as dark top rows, exploding ones as bright vertical
    stripes. Zeros are drawn in the darkest colour (below every positive value).
    Columns start where the layers were measured (`series.measured_edges`) and each
    measurement holds until a layer's next one, so a log measured every step early and
    every 50th later shows no stripes of missing data; a layer's row stays blank only
    before its first and after its last measurement.
    """
    names = [label(name) for name, _ in layers]
    measured: list[np.ndarray] = []
    for _, s in layers:  # layers measured together share their steps: each distinct set once
        if len(s) and not any(m.shape == s.steps.shape and np.array_equal(m, s.steps) for m in measured):
            measured.append(s.steps)
    edges = S.measured_edges(np.concatenate(measured) if measured else np.array([]), bins)
    bounds = {id(m): S.bin_bounds(m, edges) for m in measured}

    def row(s: Series) -> np.ndarray:
        b = next((bounds[id(m)] for m in measured if m is s.steps), None)
        if b is None:  # a layer sharing another's steps in a copy of its own
            b = S.bin_bounds(s.steps, edges)
        return S.hold(S.bin_max(s.steps, np.abs(s.values), edges, b), S.bin_counts(s.steps, edges, b))

    raw = np.vstack([row(s) for _, s in layers]) if layers else np.zeros((0, 1))
    positive = raw[np.isfinite(raw) & (raw > 0)]
    floor = float(positive.min()) / 10 if positive.shape[0] else 1e-12
    top = float(positive.max()) if positive.shape[0] else 1.0
    z = np.log10(np.where(raw > 0, raw, floor))
    z[np.isnan(raw)] = np.nan
    kmin, kmax = math.floor(math.log10(floor)), math.ceil(math.log10(top))
    ticks = _decade_ticks(kmin, kmax)
    fig = new_figure(x_title, "layer", height=max(260, 40 + 22 * len(names)))
    fig.add_trace(
        go.Heatmap(
            z=z,
            x=edges,  # n + 1 values: the columns' edges, so each spans to the next measurement
            y=names,
            customdata=raw,
            colorscale="Viridis",
            zmin=math.log10(floor),
            zmax=math.log10(top) if top > floor else math.log10(floor) + 1,
            colorbar=dict(title=dict(text=value_title), tickvals=ticks, ticktext=[f"1e{k}" for k in ticks]),
            hovertemplate="layer %{y}<br>"
            + label(x_title)
            + " %{x}<br>"
            + value_title
            + " %{customdata:.3g}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_layout(hovermode="closest")
    add_markers(fig, markers)
    return fig


def _decade_ticks(kmin: int, kmax: int, most: int = 8) -> list[int]:
    every = max(1, math.ceil((kmax - kmin + 1) / most))
    return list(range(kmin, kmax + 1, every))
