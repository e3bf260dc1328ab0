"""The norms of a sharded model, added up from what each of its ranks recorded.

Under FSDP or tensor parallelism a rank holds a shard of each parameter; a norm of the
whole tensor would be a collective that every rank must join at the same moment, which
a collector must never start. So each rank records its shards' squared norms, weighted
so that they add up over the ranks to the whole
(``shard/rank<r>/<quantity>[/<layer>]``, logformat.tags), and the sum is done here,
followed by what the collector's writer would have done with whole tensors: square
roots, ratios, and the gradient noise scale's estimate (logformat.noise).

A sum counts only at steps where every rank that holds the tensor has written its
part: ranks flush on their own, and a live reader sees the last steps of one rank
before another's. Until every rank has written some part, every part is expected of
all `world_size` ranks; after that, of the ranks that write it (a pipeline stage holds
only its own layers).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from trainscope.analyzers.run import HistogramSeries, Series
from trainscope.logformat import runjson as RJ
from trainscope.logformat import tags as T
from trainscope.logformat.noise import NoiseScaleEMA, two_batch_estimate
from trainscope.logformat.schedule import Schedule
from trainscope.logformat.tags import ShardHistograms as SH
from trainscope.logformat.tags import ShardInit as SI
from trainscope.logformat.tags import ShardSquares as SS

_Key = tuple[str, str | None]  # (quantity, layer or None for the whole model)
V = TypeVar("V", Series, HistogramSeries)


@dataclass(frozen=True)
class Summed:
    scalars: dict[str, Series]
    histograms: dict[str, HistogramSeries]
    meta: dict[str, Any]
    problem: str | None = None  # ranks whose parts are not in the log yet, one line


def sum_shards(
    raw: Mapping[str, Series],
    meta: Mapping[str, Any],
    raw_histograms: Mapping[str, HistogramSeries] | None = None,
) -> Summed:
    """`raw` with the ranks' parts replaced by the canonical tags they add up to:
    ``grad/norm/<layer>``, ``grad/global_norm`` (unless rank 0 wrote it itself, from the
    norm ``clip_grad_norm_`` returned), ``update/ratio/<layer>``, ``weight/norm/<layer>``
    and ``grad/noise_scale``; `raw_histograms` with the ranks' histograms merged into
    ``hist/weight/<layer>`` and ``hist/grad/<layer>``; and `meta` (the run's run.json: its
    world size, the collector's noise window, the initialization check) with the
    check's entries completed from the ranks' parts (those still waiting for a rank's
    part left out)."""
    out, parts = _split_off_parts(raw)
    histograms, histogram_parts = _split_off_parts(raw_histograms or {})
    ranks = {rank for by_rank in (*parts.values(), *histogram_parts.values()) for rank in by_rank}
    # Each rank's last statistics step: where the sums can reach.
    last_steps = {rank: int(s.steps[-1]) for rank, s in parts.get((SS.GRAD, None), {}).items() if len(s)}
    if not ranks:
        return Summed(out, histograms, dict(meta))
    world_size = meta.get(RJ.K_WORLD_SIZE)
    world_size = world_size if isinstance(world_size, int) else None
    everyone_wrote = world_size is not None and len(ranks) >= world_size
    expected = max(world_size or 0, len(ranks))
    for (quantity, layer), by_rank in histogram_parts.items():
        merged = _merge_histograms(list(by_rank.values()), len(by_rank) if everyone_wrote else expected)
        if layer is not None and len(merged.steps):
            tag = T.hist_grad_tag(layer) if quantity == SH.GRAD else T.hist_weight_tag(layer)
            histograms.setdefault(tag, merged)
    totals = {
        (quantity, layer): _add_up(
            list(by_rank.values()),
            len(by_rank) if everyone_wrote else expected,
            _REDUCE.get(quantity, np.add),
        )
        for (quantity, layer), by_rank in parts.items()
    }
    for (quantity, layer), total in totals.items():
        if not len(total):
            continue
        if quantity == SS.GRAD:
            tag = T.GRAD_GLOBAL_NORM if layer is None else T.grad_norm_tag(layer)
            out.setdefault(tag, _root(total))
        elif quantity == SS.UPDATE and layer is not None:
            ratio = (
                _ratio(total, totals[(SS.WEIGHT_BEFORE, layer)])
                if (SS.WEIGHT_BEFORE, layer) in totals
                else None
            )
            if ratio is not None and len(ratio):
                out[T.update_ratio_tag(layer)] = ratio
        elif quantity == SS.WEIGHT and layer is not None:
            out[T.weight_norm_tag(layer)] = _root(total)
    noise = _noise_scale(totals, raw.get(T.STEP_SKIPPED), meta.get(RJ.K_COLLECTOR))
    if noise is not None and len(noise):
        out[T.GRAD_NOISE_SCALE] = noise
    problem = _missing_ranks(ranks, world_size) or _stopped_ranks(last_steps, meta.get(RJ.K_STATUS))
    return Summed(dict(sorted(out.items())), histograms, _complete_init_check(meta, totals), problem)


def _split_off_parts(raw: Mapping[str, V]) -> tuple[dict[str, V], dict[_Key, dict[int, V]]]:
    """The entries that are no rank's part, and the parts by (quantity, layer) and rank."""
    rest: dict[str, V] = {}
    parts: dict[_Key, dict[int, V]] = {}
    for name, value in raw.items():
        split = T.split_shard_tag(name)
        if split is None:
            rest[name] = value
        else:
            rank, quantity, layer = split
            parts.setdefault((quantity, layer), {})[rank] = value
    return rest, parts


def _missing_ranks(ranks: set[int], world_size: int | None) -> str | None:
    missing = sorted(set(range(world_size)) - ranks) if world_size is not None else []
    if not missing:
        return None
    return (
        f"rank(s) {', '.join(map(str, missing))} of this sharded run ({world_size} ranks) have written no part"
        " of its norms yet: gradient norms, update ratios, weight norms and the noise scale are summed over"
        " every rank, and wait for them"
    )


def _stopped_ranks(last_steps: Mapping[int, int], status: Any) -> str | None:
    """A rank whose parts end before the others' in a run that is over: its collector
    stopped measuring (an error there is reported in that rank's output), and the sums
    end where it did. While the run goes on, ranks flush at different times."""
    if status not in (RJ.STATUS_FINISHED, RJ.STATUS_CRASHED) or not last_steps:
        return None
    end = max(last_steps.values())
    stopped = {rank: step for rank, step in sorted(last_steps.items()) if step < end}
    if not stopped:
        return None
    which = ", ".join(f"{rank} (step {step})" for rank, step in stopped.items())
    return (
        f"the parts of rank(s) {which} of this sharded run end before the others' (step {end}): its norms,"
        " summed over every rank, end there too; that rank's collector stopped measuring (see its output)"
    )


# How the ranks' parts of a quantity combine; any other is summed. The batch sizes of
# a noise window are the same on every rank (averaged, so a rank's rounding does not
# count twice); a weight's extremes at attach are the least and the greatest.
_REDUCE = {SS.NOISE_B_SMALL: None, SS.NOISE_B_BIG: None, SI.MIN: np.minimum, SI.MAX: np.maximum}


def _add_up(parts: list[Series], contributors: int, reduce: np.ufunc | None) -> Series:
    """`reduce` (np.add, np.minimum, np.maximum; None: the mean) over `parts` at the steps
    where `contributors` of them have a value."""
    if len(parts) < contributors:
        return Series(np.empty(0, np.int64), np.empty(0), None)
    shared = _shared_steps(parts)
    if shared is not None:  # the usual case, and a live dashboard's every tick: no sort needed
        combined = (reduce or np.add).reduce([s.values[:shared] for s in parts])
        walls = None
        if all(s.wall_times is not None for s in parts):
            walls = np.maximum.reduce([s.wall_times[:shared] for s in parts])  # type: ignore[index]
        return Series(parts[0].steps[:shared], combined if reduce else combined / len(parts), walls)
    steps = np.concatenate([s.steps for s in parts])
    unique, inverse, counts = np.unique(steps, return_inverse=True, return_counts=True)
    values = np.concatenate([s.values for s in parts])
    if reduce is None or reduce is np.add:
        sums = np.bincount(inverse, weights=values, minlength=len(unique))
        if reduce is None:
            sums = sums / counts
    else:
        sums = np.full(len(unique), np.inf if reduce is np.minimum else -np.inf)
        reduce.at(sums, inverse, values)
    walls = None
    if all(s.wall_times is not None for s in parts):  # when the last part was written
        walls = np.full(len(unique), -np.inf)
        np.maximum.at(walls, inverse, np.concatenate([s.wall_times for s in parts]))  # type: ignore[misc]
    done = counts >= contributors
    return Series(unique[done], sums[done], None if walls is None else walls[done])


def _merge_histograms(pieces: list[HistogramSeries], contributors: int) -> HistogramSeries:
    """The ranks' histograms of a layer, at each step all `contributors` wrote one,
    merged onto the range of them all with as many buckets as the finest: each rank's
    buckets spread evenly over their width (its count, sum and range are exact; where
    a bucket falls inside a merged one is approximate, to a bucket's width)."""
    if len(pieces) < contributors:
        return HistogramSeries(np.empty(0, np.int64), [], [])
    at_step: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    for piece in pieces:
        for step, edges, counts in zip(piece.steps.tolist(), piece.edges, piece.counts):
            at_step.setdefault(step, []).append(
                (np.asarray(edges, np.float64), np.asarray(counts, np.float64))
            )
    steps, all_edges, all_counts = [], [], []
    for step in sorted(at_step):
        if len(at_step[step]) < contributors:
            continue
        edges, counts = _merge_buckets(at_step[step])
        steps.append(step)
        all_edges.append(edges)
        all_counts.append(counts)
    return HistogramSeries(np.asarray(steps, np.int64), all_edges, all_counts)


def _merge_buckets(pieces: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    low, high = min(e[0] for e, _ in pieces), max(e[-1] for e, _ in pieces)
    bins = max(len(c) for _, c in pieces)
    if not high > low:  # every value the same
        return np.full(bins + 1, low), np.bincount([0], [sum(float(c.sum()) for _, c in pieces)], bins)
    edges = np.linspace(low, high, bins + 1)
    merged = np.zeros(bins)
    for e, c in pieces:
        below = np.concatenate([[0.0], np.cumsum(c)])  # how many values lie below each of the piece's edges
        if e[-1] > e[0]:
            cumulative = np.interp(edges, e, below)
        else:  # a rank whose values are all one
            cumulative = np.where(edges > e[0], below[-1], 0.0)
        cumulative[0], cumulative[-1] = 0.0, below[-1]
        merged += np.diff(cumulative)
    return edges, merged


def _shared_steps(parts: list[Series]) -> int | None:
    """How many steps every part has, if the parts agree on their first steps (the
    ranks keep one schedule; the slower ones are not as far yet); None if they differ."""
    shared = min(len(s) for s in parts)
    head = parts[0].steps[:shared]
    return shared if all(np.array_equal(s.steps[:shared], head) for s in parts[1:]) else None


def _root(squares: Series) -> Series:
    return Series(squares.steps, np.sqrt(np.maximum(squares.values, 0.0)), squares.wall_times)


def _ratio(update: Series, before: Series) -> Series:
    """‖Δw‖/‖w‖ at the steps both have, as the collector divides for a whole tensor."""
    steps, i, j = np.intersect1d(update.steps, before.steps, assume_unique=True, return_indices=True)
    ratio = np.sqrt(np.maximum(update.values[i], 0.0)) / np.maximum(
        np.sqrt(np.maximum(before.values[j], 0.0)), 1e-30
    )
    return Series(steps, ratio, None if update.wall_times is None else update.wall_times[i])


def _complete_init_check(meta: Mapping[str, Any], totals: Mapping[_Key, Series]) -> dict[str, Any]:
    """run.json's initialization check with each sharded weight's std, mean and
    constancy filled in from the ranks' parts (count, sum, sum of squares, extremes)."""
    entries = meta.get(RJ.K_INIT_CHECK)
    if not isinstance(entries, list) or not any(
        isinstance(e, Mapping) and e.get(RJ.I_FROM_SHARDS) for e in entries
    ):
        return dict(meta)
    completed = []
    for entry in entries:
        if not (isinstance(entry, Mapping) and entry.get(RJ.I_FROM_SHARDS)):
            completed.append(entry)
            continue
        moments = [totals.get((quantity, str(entry.get(RJ.I_LAYER)))) for quantity in SI.ALL]
        if any(m is None or not len(m) for m in moments):
            continue  # a rank's part not read yet
        n, total, squares, low, high = (float(m.values[-1]) for m in moments)  # type: ignore[union-attr]
        if n < 2:
            continue
        std = math.sqrt(max(squares - total * total / n, 0.0) / (n - 1))
        expected = entry.get(RJ.I_EXPECTED_STD)
        ratio = std / expected if isinstance(expected, (int, float)) and expected > 0 else None
        measured = {RJ.I_STD: std, RJ.I_MEAN: total / n, RJ.I_CONSTANT: low == high, RJ.I_RATIO: ratio}
        completed.append({**entry, **measured})
    return {**meta, RJ.K_INIT_CHECK: completed}


def _noise_scale(totals: Mapping[_Key, Series], skipped: Series | None, settings: Any) -> Series | None:
    """B_simple at the last step of each noise window, as the collector's writer
    estimates it for a whole model (collectors/noise_scale.py): |G_small|² is the mean
    of the summed |g|² of the window's steps that the optimizer took, |G_big|² the
    summed part of each rank, and the two are smoothed in window order."""
    small = totals.get((SS.GRAD, None))
    big, b_small, b_big = (
        totals.get((quantity, None)) for quantity in (SS.NOISE_BIG, SS.NOISE_B_SMALL, SS.NOISE_B_BIG)
    )
    if small is None or big is None or b_small is None or b_big is None or not isinstance(settings, Mapping):
        return None
    try:
        window = Schedule.from_settings(settings).window
        ema = NoiseScaleEMA(float(settings[RJ.S_NOISE_EMA]))
    except (KeyError, TypeError, ValueError):
        return None
    taken = np.isfinite(small.values)
    if skipped is not None:
        taken &= ~np.isin(small.steps, skipped.steps[skipped.values > 0])
    small_steps, small_values = small.steps[taken], small.values[taken]
    ends = np.intersect1d(np.intersect1d(big.steps, b_small.steps), b_big.steps)
    first = np.searchsorted(small_steps, ends - window + 1)
    last = np.searchsorted(small_steps, ends, side="right")
    at = [np.searchsorted(series.steps, ends) for series in (big, b_small, b_big)]
    steps, scales = [], []
    for k, (end, lo, hi) in enumerate(zip(ends.tolist(), first.tolist(), last.tolist())):
        if hi <= lo:  # no |g|² of this window was written (or all were skipped steps)
            continue
        big_sq, bs, bb = (float(series.values[i[k]]) for series, i in zip((big, b_small, b_big), at))
        scale = ema.update(*two_batch_estimate(float(small_values[lo:hi].mean()), big_sq, bs, bb))
        if math.isfinite(scale):
            steps.append(end)
            scales.append(scale)
    return Series.from_lists(steps, scales)
