"""Curves over steps: train vs val (learning rate on a second axis), any scalars, runs compared."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from trainscope.analyzers.run import Series
from trainscope.app import series as S
from trainscope.app.figures.common import (
    CHART_HEIGHT,
    LR_COLOR,
    NONFINITE,
    RAW_OPACITY,
    TRAIN_COLOR,
    VAL_COLOR,
    Marker,
    add_line,
    add_markers,
    add_nonfinite,
    new_figure,
    run_color,
)

# A curve with at most this many points is drawn with a dot on each (validations, epochs).
DOTS_UP_TO = 60
# The learning rate gets a log axis when it spans more than this factor (a decay schedule).
LR_LOG_SPAN = 20.0


@dataclass(frozen=True)
class Curve:
    """One named series to draw. `smooth`: raw faint plus smoothed; else drawn as logged."""

    name: str
    steps: np.ndarray
    values: np.ndarray
    color: str
    smooth: bool = True


def curves_figure(
    curves: Sequence[Curve],
    *,
    y_title: str,
    x_title: str = "step",
    smoothing: float = 0.6,
    log_y: bool = False,
    markers: Sequence[Marker] = (),
    secondary: Curve | None = None,
    secondary_title: str = "",
    height: int = CHART_HEIGHT,
) -> go.Figure:
    """Curves on one axis, each smoothed on its full length and then thinned for display.

    A smoothed curve is drawn solid over its raw values (faint); NaN/Inf show as red
    crosses; `secondary` (the learning rate) goes on a right-hand axis; `markers` are
    the findings' steps.
    """
    fig = new_figure(x_title, y_title, log_y=log_y, height=height)
    for curve in curves:
        steps, values = np.asarray(curve.steps), np.asarray(curve.values, dtype=np.float64)
        mode = "lines+markers" if steps.shape[0] <= DOTS_UP_TO else "lines"
        if curve.smooth and smoothing > 0 and steps.shape[0] > 1:
            add_line(
                fig,
                steps,
                values,
                f"{curve.name} (raw)",
                curve.color,
                opacity=RAW_OPACITY,
                width=1,
                mode=mode,
                showlegend=False,
                legendgroup=curve.name,
                hoverinfo="skip",
            )
            add_line(
                fig, steps, S.smoothed(values, smoothing), curve.name, curve.color, legendgroup=curve.name
            )
        else:
            add_line(fig, steps, values, curve.name, curve.color, mode=mode, legendgroup=curve.name)
        add_nonfinite(
            fig, steps, values, curve.name, showlegend=not any(t.legendgroup == NONFINITE for t in fig.data)
        )
    if secondary is not None and len(secondary.steps):
        add_line(
            fig,
            secondary.steps,
            secondary.values,
            secondary.name,
            secondary.color,
            width=1.5,
            dash="dot",
            yaxis="y2",
        )
        fig.update_layout(
            yaxis2=dict(
                title=dict(text=secondary_title),
                overlaying="y",
                side="right",
                showgrid=False,
                type="log" if S.spans(secondary.values, LR_LOG_SPAN) else "linear",
                rangemode="tozero",
                tickmode="auto",
            )
        )
    add_markers(fig, markers)
    return fig


def train_val_figure(
    train: Series | None,
    val: Series | None,
    lr: Series | None = None,
    *,
    x_title: str = "step",
    smoothing: float = 0.6,
    log_y: bool = False,
    markers: Sequence[Marker] = (),
    y_title: str = "loss",
) -> go.Figure:
    """Training (raw faint, smoothed solid) against validation (as measured), learning rate on the right.

    For loss and for accuracy alike; either of train and val may be missing.
    """
    return curves_figure(
        _train_val(train, val),
        y_title=y_title,
        x_title=x_title,
        smoothing=smoothing,
        log_y=log_y,
        markers=markers,
        secondary=Curve("learning rate", lr.steps, lr.values, LR_COLOR, smooth=False)
        if lr is not None
        else None,
        secondary_title="learning rate",
    )


def compare_figure(
    runs: Sequence[tuple[str, Series]],
    *,
    y_title: str,
    x_title: str = "step",
    smoothing: float = 0.6,
    log_y: bool = False,
) -> go.Figure:
    """The same metric of several runs overlaid, one colour per run (in the order given)."""
    curves = [Curve(name, s.steps, s.values, run_color(i)) for i, (name, s) in enumerate(runs)]
    return curves_figure(curves, y_title=y_title, x_title=x_title, smoothing=smoothing, log_y=log_y)


def _train_val(train: Series | None, val: Series | None) -> list[Curve]:
    curves = []
    if train is not None:
        curves.append(Curve("train", train.steps, train.values, TRAIN_COLOR))
    if val is not None:
        # Validation is measured on the whole validation set: drawn as measured, not smoothed.
        curves.append(Curve("val", val.steps, val.values, VAL_COLOR, smooth=False))
    return curves
