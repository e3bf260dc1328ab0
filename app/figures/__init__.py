"""Figure builders: pure functions from a run's series to a plotly figure.

No Streamlit here, so each is unit-tested on its own. Every builder smooths on the
full series and thins only for display (`app.series`), draws NaN/Inf as red crosses,
and draws the findings it is given as dashed vertical lines at their steps.
"""

from trainscope.app.figures.common import Marker
from trainscope.app.figures.curves import Curve, compare_figure, curves_figure, train_val_figure
from trainscope.app.figures.histograms import ridgeline_figure
from trainscope.app.figures.layers import Band, Guide, layer_heatmap, layer_lines_figure

__all__ = [
    "Band",
    "Curve",
    "Guide",
    "Marker",
    "compare_figure",
    "curves_figure",
    "layer_heatmap",
    "layer_lines_figure",
    "ridgeline_figure",
    "train_val_figure",
]
