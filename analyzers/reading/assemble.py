"""Turning a run's raw series (foreign names) into a canonical `Run`.

Each raw name is mapped by the `TagMapper`; Hugging Face's named evaluation sets by
`eval_sets`. Several raw names may claim one canonical tag (``train_loss_step`` and
``loss``; Keras's per-epoch ``epoch_loss`` and per-iteration
``evaluation_loss_vs_iterations``): the training loss picks first (the earliest rule
wins, unless another default candidate on its axis has `CLEARLY_MORE_POINTS` times its
points: Lightning's ``train_loss_epoch`` of 400 one-batch epochs beside the 8 points
``train_loss_step`` got), and every other canonical tag prefers candidates on the same
axis as the training loss, so train and validation curves share one x-axis. Losers
stay in `Run.unmapped` under their own names. A run that names no series as its
training loss gets the one `train_loss` finds most plausible. Where the reader says
which names TrainScope's collector wrote (``preferred``), a canonical tag one of them
maps to is always theirs: another writer beside it (the Trainer's ``eval/loss``) loses,
however many more points it has.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from trainscope.analyzers.reading.eval_sets import eval_set_tags
from trainscope.analyzers.reading.tagmap import EPOCH_AXIS, STEP_AXIS, Kind, TagMapper
from trainscope.analyzers.reading.train_loss import choose_train_loss
from trainscope.analyzers.run import HistogramSeries, Run, Series
from trainscope.logformat import tags as T

# Names of a series counting epochs (Lightning's ``epoch``, Trainer's ``train/epoch``):
# when its values equal its steps, the log's steps are epochs.
EPOCH_SERIES_NAMES = ("epoch", "train/epoch")
# A default candidate with this many times the points of the preferred one (on the same
# axis) wins instead: the preferred series is then too sparse to stand for the tag.
CLEARLY_MORE_POINTS = 4


def _choose(
    raw: Mapping[str, Any], mapper: TagMapper, kind: Kind, preferred: frozenset[str] = frozenset()
) -> tuple[dict[str, Any], dict[str, Any], dict[str, str], set[str]]:
    """``(canonical, unmapped, origins, epoch_tags)`` from raw name -> data; a canonical
    tag that one of the `preferred` names maps to is read from one of those."""
    candidates: dict[str, list[tuple[int, str, str]]] = {}
    stand_ins: set[str] = set()  # names that stand for their tag only where nothing else does
    unmapped: dict[str, Any] = {}
    user_ranks: set[int] = set()
    eval_sets = eval_set_tags(raw) if kind == "scalar" else {}
    for name in raw:
        mapped = mapper.map(name, kind)
        if mapped is None and name in eval_sets:
            candidates.setdefault(eval_sets[name], []).append((len(mapper.rules) + 1, name, STEP_AXIS))
        elif mapped is None:
            unmapped[name] = raw[name]
        else:
            candidates.setdefault(mapped.tag, []).append((mapped.rank, name, mapped.axis))
            if mapped.stand_in:
                stand_ins.add(name)
            if mapper.from_user(mapped):
                user_ranks.add(mapped.rank)
    primary_axis = STEP_AXIS
    if T.TRAIN_LOSS in candidates:
        primary_axis = min(candidates[T.TRAIN_LOSS], key=lambda c: (c[1] not in preferred, c))[2]
    canonical: dict[str, Any] = {}
    origins: dict[str, str] = {}
    epoch_tags: set[str] = set()
    for tag, options in candidates.items():
        if any(c[1] not in stand_ins for c in options):  # a stand-in never beats a curve of the tag's own
            for c in options:
                if c[1] in stand_ins:
                    unmapped[c[1]] = raw[c[1]]
            options = [c for c in options if c[1] not in stand_ins]
        options.sort(key=lambda c: (c[1] not in preferred, c[2] != primary_axis, c[0], c[1]))
        best = options[0]
        if best[0] not in user_ranks:
            points = len(raw[best[1]].steps)
            rivals = [
                c
                for c in options[1:]
                if c[2] == best[2]
                and c[0] not in user_ranks
                and (c[1] in preferred) == (best[1] in preferred)
                and len(raw[c[1]].steps) >= CLEARLY_MORE_POINTS * max(points, 1)
            ]
            if rivals:
                best = max(rivals, key=lambda c: len(raw[c[1]].steps))
        _, name, axis = best
        canonical[tag] = raw[name]
        origins[tag] = name
        if axis == EPOCH_AXIS:
            epoch_tags.add(tag)
        for _, loser, _ in options:
            if loser != name:
                unmapped[loser] = raw[loser]
    return canonical, unmapped, origins, epoch_tags


def _steps_are_epochs(unmapped: Mapping[str, Series]) -> bool:
    for name in EPOCH_SERIES_NAMES:
        s = unmapped.get(name)
        if s is not None and len(s) >= 2 and int(s.steps[-1]) > 1:
            if np.array_equal(s.values, s.steps.astype(np.float64)):
                return True
    return False


def last_wall_time(raw_scalars: Mapping[str, Series]) -> float | None:
    """The newest wall time any point carries (seconds since the epoch), or None."""
    newest = None
    for series in raw_scalars.values():
        walls = series.wall_times
        if walls is None or not len(walls):
            continue
        latest = float(np.fmax.reduce(walls))  # NaN (unknown) only where all are unknown
        if latest > 0 and (newest is None or latest > newest):
            newest = latest
    return newest


def build_run(
    *,
    name: str,
    path: str,
    source: str,
    raw_scalars: Mapping[str, Series],
    raw_histograms: Mapping[str, HistogramSeries],
    mapper: TagMapper,
    meta: Mapping[str, Any],
    problems: tuple[str, ...],
    steps_are_epochs: bool = False,
    not_shown: Mapping[str, str] | None = None,
    preferred: frozenset[str] = frozenset(),
) -> Run:
    """`steps_are_epochs`: the reader knows every step of this log counts epochs
    (a CSV log whose x column is ``epoch``). `not_shown`: what the log holds that is not
    read as a series (images, text, ...); histograms under names no chart reads join it.
    `preferred`: raw scalar names TrainScope's collector wrote; a canonical tag one of them
    maps to is theirs, whatever another log beside them (the Trainer's) offers."""
    scalars, unmapped, origins, epoch_tags = _choose(raw_scalars, mapper, "scalar", preferred)
    histograms, unmapped_hists, hist_origins, _ = _choose(raw_histograms, mapper, "histogram")
    origins.update(hist_origins)
    if T.TRAIN_LOSS not in scalars:
        picked = choose_train_loss(unmapped)
        if picked is not None:
            origin, scalars[T.TRAIN_LOSS] = picked
            origins[T.TRAIN_LOSS] = origin
            unmapped.pop(origin, None)
    if steps_are_epochs or _steps_are_epochs(unmapped):
        epoch_tags = set(scalars) | set(histograms) | set(unmapped) | set(unmapped_hists)
    return Run(
        name=name,
        path=path,
        source=source,
        scalars=dict(sorted(scalars.items())),
        histograms=dict(sorted(histograms.items())),
        unmapped=dict(sorted(unmapped.items())),
        meta=meta,
        problems=problems,
        tag_origins={k: v for k, v in sorted(origins.items()) if k != v},
        epoch_axis=frozenset(epoch_tags),
        unmapped_histograms=dict(sorted(unmapped_hists.items())),
        last_wall_time=last_wall_time(raw_scalars),
        not_shown=dict(sorted({**(not_shown or {}), **{tag: "histogram" for tag in unmapped_hists}}.items())),
    )
