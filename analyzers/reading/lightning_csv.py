"""Reading a PyTorch Lightning ``metrics.csv`` (CSVLogger).

Lightning writes one row per logging call with columns ``epoch``, ``step`` and one per
metric; a cell is empty when that row did not log the metric. When a new metric
appears it rewrites the file with a wider header; other writers append a new header
line instead, so a header may also appear mid-file and every later row is read with
it. An empty cell means "no value", while the text ``nan`` is a real NaN that the
``nonfinite`` rule must see, so the file is read with the csv module, not with
pandas' defaults (which read both as NaN).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

from trainscope.analyzers.reading.series import series_from_lists
from trainscope.analyzers.run import Series

STEP_COLUMN = "step"
EPOCH_COLUMN = "epoch"


@dataclass
class CsvData:
    series: dict[str, Series] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _number(cell: str) -> float | None:
    """The cell's value; None for an empty cell. Raises ValueError for text."""
    cell = cell.strip()
    if not cell:
        return None
    return float(cell)  # accepts "nan", "inf", "-inf", "1e-3"


def is_lightning_header(line: str) -> bool:
    """Whether the first line of a ``metrics.csv`` is CSVLogger's (it always has ``step``)."""
    try:
        row = next(csv.reader([line]))
    except (csv.Error, StopIteration):
        return False
    return STEP_COLUMN in (c.strip() for c in row)


def _is_header(row: list[str]) -> bool:
    return STEP_COLUMN in row and all(not _looks_numeric(c) for c in row)


def _looks_numeric(cell: str) -> bool:
    try:
        _number(cell)
    except ValueError:
        return False
    return bool(cell.strip())


def _rows(text: str) -> Iterator[list[str] | csv.Error]:
    """The file's rows; the error for a row the csv module refuses (a field over its limit).

    The reader drops the rest of a refused line and goes on with the next, so one
    oversized cell costs its row, not the file. The limit itself is left alone: it is
    process-wide state, and a cell that long is not a metric anyway.
    """
    reader = csv.reader(io.StringIO(text))
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield exc


def parse_metrics_csv(text: str, path: str) -> CsvData:
    """Series per column (the ``step`` column is the x-axis), in file order."""
    data = CsvData()
    columns: dict[str, tuple[list[int], list[float]]] = {}
    header: list[str] | None = None
    bad_cells: dict[str, int] = {}
    rows_without_step = 0
    row_number = 0
    refused: list[str] = []  # why the csv module refused each row it could not split
    for row in _rows(text):
        if isinstance(row, csv.Error):
            refused.append(str(row))
            continue
        if not row:
            continue
        if header is None or (row != header and _is_header(row)):
            header = [c.strip() for c in row]
            continue
        row_number += 1
        cells = dict(zip(header, row))
        step_cell = cells.get(STEP_COLUMN, "")
        try:
            step_value = _number(step_cell)
        except ValueError:
            step_value = None
        if step_value is None or not math.isfinite(step_value):
            rows_without_step += 1
            continue
        step = int(step_value)
        for name, cell in cells.items():
            if name == STEP_COLUMN or not name:
                continue
            try:
                value = _number(cell)
            except ValueError:
                bad_cells[name] = bad_cells.get(name, 0) + 1
                continue
            if value is None:
                continue
            steps, values = columns.setdefault(name, ([], []))
            steps.append(step)
            values.append(value)
    if header is None:
        data.problems.append(f"{path}: empty metrics.csv (no header)")
    elif STEP_COLUMN not in header:
        data.problems.append(f"{path}: no '{STEP_COLUMN}' column; rows cannot be placed on an axis")
    if rows_without_step and header is not None and STEP_COLUMN in header:
        data.problems.append(f"{path}: {rows_without_step} row(s) without a step; skipped")
    if refused:
        data.problems.append(
            f"{path}: {len(refused)} row(s) the csv module cannot split ({refused[0]}); skipped"
        )
    for name, count in sorted(bad_cells.items()):
        data.problems.append(f"{path}: column {name!r} has {count} non-numeric cell(s); skipped")
    for name, (steps, values) in columns.items():
        data.series[name] = series_from_lists(steps, values)
    return data
