"""Rule `unnormalized_inputs`: The model's input is far from zero mean and unit variance.

The check's docstring says what is measured, why it matters and what to do; the dashboard
and docs/rules.md show it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from trainscope.analyzers.facts import (
    input_kind,
    model_layers,
)
from trainscope.analyzers.findings import Finding, Skip
from trainscope.analyzers.rules.common import (
    cite,
    finding,
    fmt,
    require_points,
    require_scalar,
)
from trainscope.analyzers.rules.robust import (
    finite_points,
)
from trainscope.analyzers.run import Run
from trainscope.logformat import runjson as R
from trainscope.logformat import tags as T

RULE_ID = "unnormalized_inputs"
NAME = "unnormalized inputs"  # what the finding is called where it is listed under another
INPUT_SOURCE = cite(
    (
        "000",
        11,
        "X-=numpy.mean(X,axis=0) # 即X的每一列都减去该列的均值",
        "subtract from each column of X the column's mean",
    ),
    (
        "000",
        13,
        "X/=numpy.std(X,axis=0) # 数据归一化。",
        "divide by the standard deviation: normalize the data",
    ),
    (
        "001",
        42,
        "zero-center ,这个挺常用的. X -= np.mean(X, axis = 0) # "
        "zero-center X /= np.std(X, axis = 0) # normalize",
        "zero-centering is quite common: subtract the mean, then divide by the standard deviation",
    ),
)
INPUT_MAX_ABS_MEAN = 1.0  # warning: |mean| of the input batch above 1 (raw 0-255 pixels: ~120)
INPUT_STD_MIN = 0.1  # ...or its std below 0.1
INPUT_STD_MAX = 10.0  # ...or above 10
INPUT_MIN_SAMPLES = 3  # input-statistics samples before any verdict (judged on their medians)


def check(run: Run) -> Iterable[Finding]:
    """The model's input is far from zero mean / unit variance (raw 0-255 pixels are the classic case).

    Why it matters: the first layer's gradients scale with its inputs, so inputs of
    ~100 make its steps ~100x larger than the rest of the network's (a long, steep
    valley for one learning rate), and a large mean pushes units into saturation.
    Measured on the medians of ``input/mean`` and ``input/std`` (3+ samples): |mean| > 1,
    or std outside [0.1, 10]. Not judged when the first layer is an embedding (its
    input is token ids, not features).
    What to do: standardize: X -= X.mean(axis=0); X /= X.std(axis=0) (for images,
    transforms.Normalize(mean, std) with the dataset's channel statistics).
    """
    if input_kind(run) == R.INPUT_TOKENS:
        raise Skip("the model's input is integer token ids: an input scale does not apply")
    mean_s = require_scalar(run, T.INPUT_MEAN, "the mean of the input batch")
    std_s = require_scalar(run, T.INPUT_STD, "the std of the input batch")
    layers = model_layers(run)
    if layers and str(layers[0].get("type")).startswith("Embedding"):
        raise Skip("the first layer is an embedding: its input is token ids, not features to normalize")
    m_steps, means = finite_points(mean_s)
    _, stds = finite_points(std_s)
    require_points(int(min(means.shape[0], stds.shape[0])), INPUT_MIN_SAMPLES, "input-statistics samples")
    mean, std = float(np.median(means)), float(np.median(stds))
    problems = []
    if abs(mean) > INPUT_MAX_ABS_MEAN:
        problems.append(f"mean {fmt(mean)} (|mean| above {fmt(INPUT_MAX_ABS_MEAN)})")
    if std < INPUT_STD_MIN:
        problems.append(f"std {fmt(std)} (below {fmt(INPUT_STD_MIN)})")
    elif std > INPUT_STD_MAX:
        problems.append(f"std {fmt(std)} (above {fmt(INPUT_STD_MAX)})")
    if not problems:
        return []
    hint = ""
    if 50 <= mean <= 255 and std > 10:
        hint = " These look like raw 0-255 pixel values."
    return [
        finding(
            RULE_ID,
            "warning",
            "Inputs are not normalized",
            f"The model's input batches have {' and '.join(problems)} "
            f"(medians over {means.shape[0]} samples), "
            f"far from zero mean and unit variance.{hint}",
            (
                f"Standardize the inputs: X = (X - {fmt(mean)}) / {fmt(std)} with this data's statistics "
                "(X -= X.mean(axis=0); X /= X.std(axis=0) per feature, computed on the training set).",
                "For images: transforms.ToTensor() (scales to [0, "
                "1]) then transforms.Normalize(mean, std) with "
                "the per-channel statistics of the training set.",
            ),
            INPUT_SOURCE,
            step=int(m_steps[0]),
            evidence={
                "input_mean": mean,
                "input_std": std,
                "samples": int(means.shape[0]),
                "suggested_shift": mean,
                "suggested_scale": std,
            },
        )
    ]
