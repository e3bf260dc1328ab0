"""The canonical in-memory shape of one run: what every reader produces and every rule reads.

A `Run` is an immutable snapshot. Readers (TensorBoard event files, Lightning CSV,
Hugging Face trainer_state.json, Keras and plain metric CSV logs, MLflow, W&B) map
foreign tag names onto the canonical tags of `logformat.tags`; what they cannot map is
kept in `unmapped`, shown but not diagnosed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trainscope.logformat import runjson as RJ
from trainscope.logformat import tags as T


@dataclass(frozen=True)
class Series:
    """One scalar series: strictly increasing ``steps`` with one value each (latest wins)."""

    steps: np.ndarray  # int64
    values: np.ndarray  # float64; NaN/Inf are kept as logged (a real NaN is a finding)
    wall_times: np.ndarray | None = None  # float64 seconds since the epoch, when known

    def __len__(self) -> int:
        return int(self.steps.shape[0])

    @staticmethod
    def from_lists(steps: Any, values: Any, wall_times: Any = None) -> Series:
        s = np.asarray(steps, dtype=np.int64)
        v = np.asarray(values, dtype=np.float64)
        w = None if wall_times is None else np.asarray(wall_times, dtype=np.float64)
        return Series(s, v, w)


@dataclass(frozen=True)
class HistogramSeries:
    """Histograms of one tag over time; ``edges[i]`` has one more entry than ``counts[i]``."""

    steps: np.ndarray  # int64
    edges: list[np.ndarray]
    counts: list[np.ndarray]


@dataclass(frozen=True)
class Run:
    name: str  # path relative to the log dir ("." for the log dir itself)
    path: str  # absolute path of the run directory
    # "trainscope", "tensorboard", "lightning_csv", "hf_trainer_state", "csv_log", "mlflow", "wandb"
    source: str
    scalars: Mapping[str, Series] = field(default_factory=dict)
    histograms: Mapping[str, HistogramSeries] = field(default_factory=dict)
    unmapped: Mapping[str, Series] = field(default_factory=dict)
    # run.json; for a foreign run, what its log says of itself under run.json's keys
    # (hparams, batch_size, steps), or {}.
    meta: Mapping[str, Any] = field(default_factory=dict)
    problems: tuple[str, ...] = ()  # what could not be read, one line each
    # Foreign name each canonical tag was read from (``{"train/loss": "train_loss_step"}``).
    tag_origins: Mapping[str, str] = field(default_factory=dict)
    # Tags whose steps count epochs, not optimizer steps (Keras ``epoch_*`` summaries,
    # or a log whose ``epoch`` series equals its steps). Empty for TrainScope runs.
    epoch_axis: frozenset[str] = frozenset()
    # Histograms under names that map to no canonical tag (shown, not diagnosed).
    unmapped_histograms: Mapping[str, HistogramSeries] = field(default_factory=dict)
    # The newest wall time (seconds since the epoch) any of the run's points carries:
    # event wall times, MLflow and W&B timestamps. None where the log has no clock
    # (CSV, trainer_state.json). Never a file's mtime: a copied log gets a fresh one.
    last_wall_time: float | None = None
    # What the run logged that the tool does not draw, listed once so that a gap is not
    # taken for missing data: tag -> what it is ("image", "text", "audio", "graph",
    # "histogram" for a histogram under a name no chart reads, or a plugin's name).
    not_shown: Mapping[str, str] = field(default_factory=dict)

    def scalar(self, tag: str) -> Series | None:
        series = self.scalars.get(tag)
        return series if series is not None and len(series) else None

    def layers(self, prefix: str) -> dict[str, Series]:
        """Per-layer series under `prefix` (e.g. ``tags.GRAD_NORM_PREFIX``), by layer name."""
        return {tag[len(prefix) :]: s for tag, s in self.scalars.items() if tag.startswith(prefix) and len(s)}

    def x_axis(self, tag: str) -> str:
        """``"epoch"`` when the steps of `tag` count epochs, else ``"step"``."""
        return "epoch" if tag in self.epoch_axis else "step"

    @property
    def status(self) -> str | None:
        return self.meta.get(RJ.K_STATUS) if self.meta else None

    @property
    def collector_errors(self) -> list[str]:
        """What the collector reported it could not measure (run.json), one line each:
        a part that was switched off, whose tags are then missing from the run."""
        errors = self.meta.get(RJ.K_ERRORS) if self.meta else None
        return [str(e) for e in errors] if isinstance(errors, list) else []

    @property
    def last_step(self) -> int | None:
        loss = self.scalar(T.TRAIN_LOSS)
        return int(loss.steps[-1]) if loss is not None else None
