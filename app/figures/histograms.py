"""Distributions over time: a ridgeline of histograms, like TensorBoard's "offset" histogram view."""

from __future__ import annotations

import numpy as np
import plotly.colors
import plotly.graph_objects as go

from trainscope.analyzers.run import HistogramSeries
from trainscope.app.figures.common import new_figure

MAX_RIDGES = 20  # histograms drawn at most: evenly spread over the run, the last one always among them
RIDGE_HEIGHT = 1.6  # a ridge's peak height in row spacings: neighbours overlap a little, as in a ridgeline
RIDGE_SCALE = "Blues"


def ridgeline_figure(hist: HistogramSeries, *, value_title: str, max_ridges: int = MAX_RIDGES) -> go.Figure:
    """One ridge per sampled step, earliest at the top, latest in front at the bottom.

    Each ridge is that step's histogram as a density, scaled to its own peak so the
    shape shows whatever the count; the colour darkens with time.
    """
    n = len(hist.steps)
    rows = (
        np.unique(np.linspace(0, n - 1, min(n, max_ridges)).round().astype(np.int64))
        if n
        else np.array([], int)
    )
    fig = new_figure(value_title, "step", height=max(300, 80 + 26 * len(rows)))
    colors = plotly.colors.sample_colorscale(RIDGE_SCALE, list(np.linspace(0.35, 1.0, max(len(rows), 2))))
    tickvals, ticktext = [], []
    for rank, i in enumerate(rows):
        x, density = _density(
            np.asarray(hist.edges[i], dtype=np.float64), np.asarray(hist.counts[i], dtype=np.float64)
        )
        if x.shape[0] == 0:
            continue
        base = float(len(rows) - 1 - rank)
        peak = float(density.max()) if density.max() > 0 else 1.0
        y = base + RIDGE_HEIGHT * density / peak
        step = int(hist.steps[i])
        fig.add_trace(
            go.Scatter(
                x=np.r_[x[0], x, x[-1]],
                y=np.r_[base, y, base],
                mode="lines",
                fill="toself",
                line=dict(color=colors[rank], width=1),
                fillcolor=_with_alpha(colors[rank], 0.55),
                name=f"step {step:,}",
                showlegend=False,
                hovertemplate=f"step {step:,}<br>{value_title} %{{x:.3g}}<extra></extra>",
            )
        )
        tickvals.append(base)
        ticktext.append(f"{step:,}")
    fig.update_yaxes(tickvals=tickvals, ticktext=ticktext, showgrid=False, zeroline=False)
    fig.update_layout(hovermode="closest")
    return fig


def _density(edges: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bin centres and count per unit width; infinite outer edges (TensorBoard's catch-alls) clipped."""
    if counts.shape[0] == 0 or edges.shape[0] != counts.shape[0] + 1:
        return np.array([]), np.array([])
    edges = edges.copy()
    finite = np.isfinite(edges) & (np.abs(edges) < 1e300)
    if not finite.any():
        return np.array([]), np.array([])
    inner = edges[finite]
    width = float(np.median(np.diff(inner))) if inner.shape[0] > 1 else 1.0
    edges[~finite & (edges < 0)] = inner.min() - width
    edges[~finite & (edges > 0)] = inner.max() + width
    widths = np.diff(edges)
    density = np.where(widths > 0, counts / np.where(widths > 0, widths, 1.0), 0.0)
    return (edges[:-1] + edges[1:]) / 2, density


def _with_alpha(color: str, alpha: float) -> str:
    r, g, b = plotly.colors.unlabel_rgb(plotly.colors.convert_colors_to_same_type(color, "rgb")[0][0])
    return f"rgba({int(r)}, {int(g)}, {int(b)}, {alpha})"
