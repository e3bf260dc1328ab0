"""The rules' thresholds that charts draw, imported from the rules so a chart and its rule never disagree."""

from trainscope.analyzers.rules.dead_relu import DEAD_CRITICAL, DEAD_WARNING
from trainscope.analyzers.rules.saturated_activations import SATURATED_WARNING
from trainscope.analyzers.rules.unnormalized_inputs import INPUT_MAX_ABS_MEAN, INPUT_STD_MAX, INPUT_STD_MIN
from trainscope.analyzers.rules.updates import UPDATE_RATIO_HIGH, UPDATE_RATIO_LOW, UPDATE_RATIO_TARGET

__all__ = [
    "DEAD_CRITICAL",
    "DEAD_WARNING",
    "INPUT_MAX_ABS_MEAN",
    "INPUT_STD_MAX",
    "INPUT_STD_MIN",
    "SATURATED_WARNING",
    "UPDATE_RATIO_HIGH",
    "UPDATE_RATIO_LOW",
    "UPDATE_RATIO_TARGET",
]
