"""What a generated run shows, in numbers: so a case is judged by its curves before it is trusted.

`key_numbers` reads the signals each fault moves (loss start and end, the first loss
against chance level, loss spikes, gradient norms, how long they rise from the start
and how many are exactly 0, update ratios, dead and saturated shares, input
statistics, label entropy, weight growth) from the run as the analyzers read it;
`summary_lines` puts them beside the final train/validation results and the findings
the rules raise.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable

import numpy as np

from trainscope.analyzers.diagnose import Diagnosis
from trainscope.analyzers.facts import num_classes, ordered_layers
from trainscope.analyzers.reading import read_logdir
from trainscope.analyzers.run import Run, Series
from trainscope.logformat import tags as T

# Findings at these severities are the ones case.json's "expect" is about.
ALARM_SEVERITIES = ("critical", "warning")
# A loss spike: a step's loss this many nats above the median of the SPIKE_WINDOW steps before it.
SPIKE_NATS = 3.0
SPIKE_WINDOW = 10


def read_run(run_dir: str | os.PathLike[str]) -> Run:
    """The run in `run_dir`, read as the analyzers and the dashboard read it."""
    snapshot = read_logdir(run_dir)
    if len(snapshot.runs) != 1:
        problems = "; ".join(snapshot.problems)
        raise ValueError(f"{run_dir}: expected one run, found {len(snapshot.runs)} ({problems})")
    return next(iter(snapshot.runs.values()))


def _finite(series: Series | None) -> np.ndarray:
    if series is None:
        return np.zeros(0)
    return series.values[np.isfinite(series.values)]


def _head(values: np.ndarray, share: float = 0.1) -> float:
    """Median of the first `share` of the values (NaN when there are none)."""
    return float(np.median(values[: max(1, int(values.shape[0] * share))])) if values.shape[0] else math.nan


def _tail(values: np.ndarray, share: float = 0.1) -> float:
    """Median of the last `share` of the values (NaN when there are none)."""
    return float(np.median(values[-max(1, int(values.shape[0] * share)) :])) if values.shape[0] else math.nan


def _median(series: Series | None) -> float:
    values = _finite(series)
    return float(np.median(values)) if values.shape[0] else math.nan


def _rises_from_start(values: np.ndarray) -> int:
    """How many steps in a row, from the first, each value is above the one before."""
    falls = np.flatnonzero(np.diff(values) <= 0)
    return int(falls[0]) if falls.shape[0] else max(0, values.shape[0] - 1)


def _spikes(values: np.ndarray) -> tuple[int, float]:
    """(number of spikes, the largest excess in nats): steps whose loss is more than SPIKE_NATS
    above the median of the SPIKE_WINDOW before it."""
    if values.shape[0] <= SPIKE_WINDOW:
        return 0, math.nan
    before = np.lib.stride_tricks.sliding_window_view(values[:-1], SPIKE_WINDOW)
    excess = values[SPIKE_WINDOW:] - np.median(before, axis=1)
    return int((excess > SPIKE_NATS).sum()), float(excess.max())


def key_numbers(run: Run) -> dict[str, float]:
    """The numbers that show each fault, from the run's recorded signals (NaN when not logged)."""
    out: dict[str, float] = {}
    loss = run.scalar(T.TRAIN_LOSS)
    finite_loss = _finite(loss)
    out["loss_start"], out["loss_end"] = _head(finite_loss, 0.05), _tail(finite_loss)
    # The very first loss against chance level ln C: a fresh classifier starts near it.
    out["loss_first"] = float(finite_loss[0]) if finite_loss.shape[0] else math.nan
    classes = num_classes(run)
    out["chance_loss"] = math.log(classes) if classes else math.nan
    out["loss_spikes"], out["loss_spike_max"] = _spikes(finite_loss)
    val_loss = _finite(run.scalar(T.VAL_LOSS))
    out["val_loss_end"] = float(val_loss[-1]) if val_loss.shape[0] else math.nan
    if loss is not None and not np.isfinite(loss.values).all():
        out["first_nonfinite_step"] = float(loss.steps[~np.isfinite(loss.values)][0])
    grad = _finite(run.scalar(T.GRAD_GLOBAL_NORM))
    out["grad_norm_start"], out["grad_norm_end"] = _head(grad), _tail(grad)
    out["grad_norm_max"] = float(grad.max()) if grad.shape[0] else math.nan
    # Gradients that add up (no zero_grad) grow step after step from the start.
    out["grad_norm_rising_steps"] = float(_rises_from_start(grad))
    layers = run.layers(T.GRAD_NORM_PREFIX)
    # Gradients clipped to 0 (clip_grad_norm_(..., 0)): every layer's norm exactly 0, read after clipping.
    layer_norms = [_finite(s) for s in layers.values()]
    points = sum(values.shape[0] for values in layer_norms)
    zeros = sum(int((values == 0).sum()) for values in layer_norms)
    out["grad_layer_zero_share"] = zeros / points if points else math.nan
    order = ordered_layers(run, layers)
    if len(order) >= 2:
        first, last = _tail(_finite(layers[order[0]]), 0.5), _tail(_finite(layers[order[-1]]), 0.5)
        out["grad_first_over_last"] = first / last if last > 0 else math.nan
    ratio_series = [_finite(s) for s in run.layers(T.UPDATE_RATIO_PREFIX).values()]
    ratios = [_tail(values, 0.5) for values in ratio_series]
    out["update_ratio"] = float(np.nanmedian(ratios)) if ratios else math.nan
    # The largest step any layer took, relative to its weights: a model that trains takes some big ones.
    biggest = [float(values.max()) for values in ratio_series if values.shape[0]]
    out["update_ratio_max"] = max(biggest) if biggest else math.nan
    dead = [_tail(_finite(s), 0.3) for s in run.layers(T.DEAD_FRACTION_PREFIX).values()]
    out["dead_fraction_max"] = max(dead) if dead else math.nan
    saturated = [_tail(_finite(s), 0.3) for s in run.layers(T.SATURATED_FRACTION_PREFIX).values()]
    out["saturated_fraction_max"] = max(saturated) if saturated else math.nan
    out["input_mean"], out["input_std"] = _median(run.scalar(T.INPUT_MEAN)), _median(run.scalar(T.INPUT_STD))
    entropy = _finite(run.scalar(T.LABEL_ENTROPY))
    out["label_entropy"] = float(entropy.mean()) if entropy.shape[0] else math.nan
    growth = []
    for series in run.layers(T.WEIGHT_NORM_PREFIX).values():
        values = _finite(series)
        if values.shape[0] >= 2 and values[0] > 0:
            growth.append(float(values[-1] / values[0]))
    out["weight_growth_max"] = max(growth) if growth else math.nan
    return out


def alarms(diagnosis: Diagnosis) -> dict[str, str]:
    """Rule id -> the most severe warning/critical severity it raised."""
    out: dict[str, str] = {}
    for f in diagnosis.findings:  # most severe first
        if f.severity in ALARM_SEVERITIES:
            out.setdefault(f.rule, f.severity)
    return out


def _fmt(value: float) -> str:
    return f"{value:.3g}" if math.isfinite(value) else str(value)


def format_numbers(numbers: dict[str, float]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in numbers.items() if not math.isnan(v))


def summary_lines(
    name: str,
    expect: Iterable[str],
    final: dict[str, float] | None,
    run: Run,
    diagnosis: Diagnosis,
) -> list[str]:
    """A few lines per case: final results, key numbers, what fired, and whether that matches case.json."""
    expect = list(expect)
    fired = alarms(diagnosis)
    missing = [r for r in expect if r not in fired]
    verdict = "ok" if (not missing and (expect or not fired)) else "MISMATCH"
    lines = [f"== {name} [{verdict}]"]
    if final:
        lines.append("   final: " + ", ".join(f"{k}={_fmt(v)}" for k, v in final.items()))
    lines.append("   numbers: " + format_numbers(key_numbers(run)))
    lines.append("   expect: " + (", ".join(expect) or "(healthy: nothing at warning/critical)"))
    fired_text = ", ".join(f"{r} ({s})" for r, s in fired.items())
    lines.append("   fired: " + (fired_text or "nothing at warning/critical"))
    infos = sorted({f.rule for f in diagnosis.findings if f.severity == "info"})
    if infos:
        lines.append("   info: " + ", ".join(infos))
    if missing:
        lines.append("   MISSING: " + ", ".join(missing))
    return lines
