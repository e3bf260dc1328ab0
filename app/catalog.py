"""The charts of a run's page: where each sits (its anchor), what healthy looks like on it, which
findings it marks, and what it needs from the log (Cockpit's instruments declare their data the same way).

A chart whose needs the run does not log is left out and listed instead; a finding
links only to charts the run can draw.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainscope.analyzers.reading.assemble import EPOCH_SERIES_NAMES
from trainscope.analyzers.run import Run
from trainscope.app.escape import code
from trainscope.logformat import runjson as RJ
from trainscope.logformat import tags as T

# A need naming run.json's initialization check rather than a tag.
INIT_CHECK = "run.json:" + RJ.K_INIT_CHECK
# A need met by any series the reader could not map to a canonical tag.
UNMAPPED = "unmapped"


@dataclass(frozen=True)
class Chart:
    anchor: str  # the chart's place on the page: findings link to ``#anchor``
    title: str
    healthy: str  # what healthy looks like, one or two sentences
    rules: tuple[str, ...]  # findings of these rules are marked on the chart
    needs: tuple[str, ...]  # it is drawn when the run logs any of these: tags, per-layer prefixes, INIT_CHECK

    def available(self, run: Run) -> bool:
        return any(_logs(run, need) for need in self.needs)

    def signals(self) -> str:
        """What the chart draws, in the log's terms (``grad/norm/<layer>``)."""
        return ", ".join(code(n + "<layer>" if n in PREFIXES else n) for n in self.needs if n != UNMAPPED)


PREFIXES = frozenset(T.PER_LAYER_PREFIXES) | {T.STEP_SECONDS_RANK_PREFIX}


def _logs(run: Run, need: str) -> bool:
    if need == INIT_CHECK:
        return bool(run.meta and run.meta.get(RJ.K_INIT_CHECK))
    if need == UNMAPPED:  # the epoch counter is the page's x axis, not a series of its own
        return any(len(s) for tag, s in run.unmapped.items() if tag not in EPOCH_SERIES_NAMES)
    if need in (T.HIST_WEIGHT_PREFIX, T.HIST_GRAD_PREFIX):
        return any(tag.startswith(need) and len(h.steps) for tag, h in run.histograms.items())
    if need in PREFIXES:
        return bool(run.layers(need))
    return run.scalar(need) is not None


LOSS = Chart(
    anchor="loss",
    title="Loss",
    healthy=(
        "Healthy: the training loss falls fast, then bends into a slow decline, and the validation loss "
        "follows it closely. A straight slow line means too low a learning rate; a rise or wild jumps, "
        "too high; validation turning up while training keeps falling is overfitting."
    ),
    rules=(
        "nonfinite",
        "lr_too_high",
        "lr_too_low",
        "loss_plateau",
        "noisy_batches",
        "overfitting",
        "underfitting",
        "exploding_gradients",
    ),
    needs=(T.TRAIN_LOSS, T.VAL_LOSS),
)
ACCURACY = Chart(
    anchor="accuracy",
    title="Accuracy",
    healthy=(
        "Healthy: train and validation accuracy rise and level off close together. A wide, growing gap is "
        "overfitting; both low and close together is underfitting."
    ),
    rules=("overfitting", "underfitting"),
    needs=(T.TRAIN_ACC, T.VAL_ACC),
)
GRADIENTS = Chart(
    anchor="gradients",
    title="Gradient norms",
    healthy=(
        "Healthy: every layer's gradient norm within an order of magnitude or two of the others, roughly "
        "steady. Early layers orders of magnitude below the late ones (dark top rows in the heatmap) are "
        "vanishing gradients; sudden bright stripes or steady growth are exploding gradients."
    ),
    rules=("vanishing_gradients", "exploding_gradients", "nonfinite"),
    needs=(T.GRAD_GLOBAL_NORM, T.GRAD_NORM_PREFIX),
)
UPDATES = Chart(
    anchor="updates",
    title="Update / weight ratio",
    healthy=(
        "Healthy: each step changes a layer's weights by about 1e-3 of their size (‖Δw‖/‖w‖, inside the "
        "green band). Far above it the learning rate is too high; far below, too low (or the layer gets "
        "no gradient)."
    ),
    rules=("lr_too_high", "lr_too_low", "vanishing_gradients"),
    needs=(T.UPDATE_RATIO_PREFIX,),
)
ACTIVATIONS = Chart(
    anchor="activations",
    title="Dead and saturated units",
    healthy=(
        "Healthy: few ReLU units silent for a whole batch and few sigmoid/tanh outputs stuck at their "
        "flat ends, well below the dotted lines. Above them most of the layer no longer learns."
    ),
    rules=("dead_relu", "saturated_activations"),
    needs=(T.DEAD_FRACTION_PREFIX, T.SATURATED_FRACTION_PREFIX),
)
WEIGHTS = Chart(
    anchor="weights",
    title="Weights",
    healthy=(
        "Healthy: weight norms change slowly and level off. Steady growth to several times the start, "
        "without weight decay, asks for regularization. The table checks each layer's initial scale "
        "against He/Xavier."
    ),
    rules=("weight_growth", "bad_initialization"),
    needs=(T.WEIGHT_NORM_PREFIX, INIT_CHECK),
)
HISTOGRAMS = Chart(
    anchor="histograms",
    title="Weight and gradient distributions",
    healthy=(
        "Healthy: weights keep a bell shape that widens slowly; gradients stay centred on zero and narrow "
        "as training converges. A tall spike at zero, or tails running off to huge values, mean trouble."
    ),
    rules=(),
    needs=(T.HIST_WEIGHT_PREFIX, T.HIST_GRAD_PREFIX),
)
INPUTS = Chart(
    anchor="inputs",
    title="Inputs and labels",
    healthy=(
        "Healthy: the input batch has mean near 0 and standard deviation near 1 (inside the green bands), "
        "and each batch's label entropy stays close to that of all labels seen (1.0 = every class equally "
        "present). Batch entropy far below it means the batches hold few classes: the data is not "
        "shuffled."
    ),
    rules=("unnormalized_inputs", "unshuffled_data"),
    needs=(T.INPUT_MEAN, T.INPUT_STD, T.LABEL_ENTROPY),
)
NOISE = Chart(
    anchor="noise",
    title="Gradient noise scale",
    healthy=(
        "The batch size past which a bigger batch stops helping (B_simple, McCandlish et al. 2018). A "
        "batch far below it trains noisily: most of each step's gradient is noise."
    ),
    rules=("noisy_batches",),
    needs=(T.GRAD_NOISE_SCALE,),
)
SPEED = Chart(
    anchor="speed",
    title="Step time",
    healthy=(
        "Healthy: flat. Steps slowing down over time, or one rank slower than the others, point at the "
        "input pipeline or a straggler."
    ),
    rules=(),
    needs=(T.STEP_SECONDS, T.STEP_SECONDS_RANK_PREFIX),
)
OTHER = Chart(
    anchor="other",
    title="Other logged series",
    healthy=("Series this run logs under names TrainScope does not know; shown as logged, not checked."),
    rules=(),
    needs=(UNMAPPED,),
)


# In page order.
CHARTS = (LOSS, ACCURACY, GRADIENTS, UPDATES, ACTIVATIONS, WEIGHTS, HISTOGRAMS, INPUTS, NOISE, SPEED, OTHER)


def charts_of(rule: str, run: Run) -> list[Chart]:
    """The charts a finding of `rule` shows on in `run`, the most telling first."""
    return [chart for chart in CHARTS if rule in chart.rules and chart.available(run)]
