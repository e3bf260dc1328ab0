"""The tables that set runs side by side (Runs and Compare pages): run names as links, and the
hyperparameters that differ between the listed runs as columns.

A hyperparameter every listed run shares says nothing about why they differ, so only
those whose value differs become columns (a run lacking it differs from one that has
it; a run that records no hyperparameters at all, a log without them, has no say), the
usual suspects first (`FIRST_HPARAMS`), at most `MAX_HPARAM_COLUMNS`. A column of numbers
stays numeric so it sorts by value; a missing value shows as an em dash, never "None".
Pure pandas; the pages add the Streamlit column settings (`column_config`).
"""

from __future__ import annotations

import json
import math
import posixpath
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd
from pandas.io.formats.style import Styler

from trainscope.analyzers.reading.hparams import run_hparams
from trainscope.analyzers.run import Run
from trainscope.app import links

RUN_COLUMN = "run"
MISSING = "—"  # an em dash: what a cell with no value shows
# Hyperparameters shown first when more differ than fit, in this order; then the rest by name.
FIRST_HPARAMS = (
    "lr",
    "learning_rate",
    "batch_size",
    "per_device_train_batch_size",
    "optimizer",
    "optim",
    "weight_decay",
    "momentum",
    "betas",
    "epochs",
    "max_epochs",
    "num_train_epochs",
    "dropout",
    "lr_scheduler_type",
    "warmup_steps",
    "seed",
)
MAX_HPARAM_COLUMNS = 8


def hparams_of(runs: Mapping[str, Run]) -> dict[str, dict[str, Any]]:
    """Each run's hyperparameters (`run_hparams`), by run name."""
    return {name: run_hparams(run.meta or {}) for name, run in runs.items()}


def _key(value: Any) -> str:
    """A value as something to compare and to show: lists and the like as JSON text."""
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)  # the common case, without json's cost (a 1000-run table asks often)
    return json.dumps(value, sort_keys=True, default=str)


def _names_the_run(values: Mapping[str, Any]) -> bool:
    """A hyperparameter holding each run's own name (a ``case`` or ``run_name``) adds no column."""
    return all(v is not None and _key(v) in (n, posixpath.basename(n)) for n, v in values.items())


def differing(
    hparams: Mapping[str, Mapping[str, Any]], limit: int | None = MAX_HPARAM_COLUMNS
) -> tuple[list[str], int]:
    """``(columns, more)``: the hyperparameters whose value differs between the runs, the
    usual suspects first, at most `limit` (None: all); and how many more differ."""
    hparams = {name: h for name, h in hparams.items() if h}  # a run that records none has no say
    if len(hparams) < 2:
        return [], 0
    keys = sorted({k for h in hparams.values() for k in h})
    found = []
    for key in keys:
        values = {name: h.get(key) for name, h in hparams.items()}
        if len({_key(v) for v in values.values()}) > 1 and not _names_the_run(values):
            found.append(key)
    rank = {k: i for i, k in enumerate(FIRST_HPARAMS)}
    found.sort(key=lambda k: (rank.get(k.rsplit(".", 1)[-1], len(rank)), k))
    limit = len(found) if limit is None else limit
    return found[:limit], max(0, len(found) - limit)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def hparam_frame(
    hparams: Mapping[str, Mapping[str, Any]], names: Sequence[str], columns: Sequence[str]
) -> pd.DataFrame:
    """One row per run of `names`, one column per hyperparameter of `columns`: numbers as
    floats (NaN where missing, sortable), anything else as text (None where missing)."""
    data: dict[str, list[Any]] = {}
    for column in columns:
        values = [hparams.get(n, {}).get(column) for n in names]
        if all(v is None or _number(v) for v in values):
            data[column] = [math.nan if v is None else float(v) for v in values]
        else:
            data[column] = [None if v is None else _key(v) for v in values]
    return pd.DataFrame(data, index=range(len(names)), columns=list(columns))


def with_hparams(
    table: pd.DataFrame, runs: Mapping[str, Run], limit: int | None = MAX_HPARAM_COLUMNS
) -> tuple[pd.DataFrame, list[str], int]:
    """`table` (one row per run, a `RUN_COLUMN` of names) with the differing hyperparameters
    appended as columns; also their names and how many more differ than are shown."""
    names = [str(n) for n in table[RUN_COLUMN]]
    hparams = hparams_of({n: runs[n] for n in names})
    columns, more = differing(hparams, limit)
    extra = hparam_frame(hparams, names, [c for c in columns if c not in table.columns])
    return pd.concat([table.reset_index(drop=True), extra], axis=1), list(extra.columns), more


def linked(table: pd.DataFrame, logdir: str) -> tuple[pd.DataFrame, Callable[[str], str]]:
    """`table` with each run name replaced by the link to its page (`links.run_url`), and
    the formatter that shows the name again in the cell (for `Styler.format`)."""
    names = {links.run_url(str(n), logdir): str(n) for n in table[RUN_COLUMN]}
    out = table.assign(**{RUN_COLUMN: list(names)})
    return out, lambda url: names.get(url, url)


def cell(value: Any) -> str:
    """A cell as shown: 4 significant digits for fractions, thousands separated in counts,
    "—" for no value (None, NaN, no text), anything else as its text."""
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if _number(value):
        if float(value).is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:.4g}"
    return str(value)


# The grid draws a float beyond 2**53 (a diverged loss, 1e25) in full and flagged as an unsafe
# integer, whatever its format: a column holding one is shown as text (4 significant digits).
GRID_SAFE = 2.0**53


def grid_safe(table: pd.DataFrame) -> pd.DataFrame:
    """`table` with each numeric column that holds a value beyond `GRID_SAFE` turned to text."""
    huge = [
        c
        for c in table.columns
        if pd.api.types.is_numeric_dtype(table[c])
        and table[c].dtype != bool
        and (table[c].abs() >= GRID_SAFE).any()
    ]
    return table.assign(**{c: table[c].map(cell) for c in huge}) if huge else table


def styled(
    table: pd.DataFrame,
    name_of: Callable[[str], str],
    cell_style: Callable[[str], str],
    labels: Mapping[str, str] | None = None,
) -> Styler:
    """The table as shown: run links showing the runs' labels (`analyzers.run_names`; the
    name itself where `labels` has none), health cells coloured, numbers readable and missing
    values as "—" (the cells keep their values, so columns sort by them)."""
    table = grid_safe(table)
    others = [c for c in table.columns if c != RUN_COLUMN]
    known = labels or {}
    style = table.style.format(lambda url: known.get(name_of(url), name_of(url)), subset=[RUN_COLUMN])
    style = style.format(cell, subset=others)
    if "health" in table.columns:
        style = style.map(cell_style, subset=["health"])
    return style
