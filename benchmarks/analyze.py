"""How long the rules take on a long run: a 1,000,000-step run with every canonical tag, in memory.

    .venv/bin/python benchmarks/analyze.py [--steps 1000000] [--layers 10] [--repeat 3]

Every-step tags (loss, accuracy, lr, global and per-layer gradient norms, step time,
skipped steps) have one value per step; sampled tags (update ratios, weight norms,
activation shares, input and label statistics, gradient noise scale) one every 50
steps; validation one every 1,000. The curves are a realistic healthy run (an
exponentially decaying loss with minibatch noise), so every rule does its full work.
Prints the best time per rule over `--repeat` runs and the total; the target is under
a second for all rules together.
"""

from __future__ import annotations

import argparse
import math
import time

from trainscope.analyzers.findings import Skip
from trainscope.analyzers.rules import ALL_RULES
from trainscope.analyzers.rules.common import make_run
from trainscope.analyzers.rules.synthetic import healthy_run
from trainscope.analyzers.run import Run

SAMPLE_EVERY = 50  # the collector's default sampling interval
VAL_EVERY = 1000  # one validation per "epoch"


def build_run(steps: int, n_layers: int, seed: int = 0) -> Run:
    """A healthy `steps`-step run with every canonical tag and a run.json-like meta."""
    scalars, meta = healthy_run(
        steps,
        batch=128,
        seed=seed,
        n_layers=n_layers,
        every=SAMPLE_EVERY,
        val_every=VAL_EVERY,
        per_example=False,  # log-normal minibatch noise: drawing 128 examples per step would take minutes
    )
    return make_run(scalars, meta, name=f"bench-{steps}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    t0 = time.perf_counter()
    run = build_run(args.steps, args.layers)
    points = sum(len(s) for s in run.scalars.values())
    print(
        f"built a {args.steps:,}-step run: {len(run.scalars)} tags, {points:,} points "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    best: dict[str, float] = {}
    outcome: dict[str, str] = {}
    for _ in range(args.repeat):
        for rule_id, rule in ALL_RULES:
            start = time.perf_counter()
            try:
                found = list(rule(run))
                outcome[rule_id] = ", ".join(f.severity for f in found) or "quiet"
            except Skip as skip:
                outcome[rule_id] = f"skipped: {skip.reason}"
            elapsed = time.perf_counter() - start
            best[rule_id] = min(best.get(rule_id, math.inf), elapsed)
    width = max(len(r) for r in best)
    for rule_id, seconds in best.items():
        print(f"  {rule_id:<{width}}  {1000 * seconds:8.1f} ms   {outcome[rule_id]}")
    total = sum(best.values())
    print(
        f"  {'total':<{width}}  {1000 * total:8.1f} ms   ({'under' if total < 1 else 'OVER'} the 1 s target)"
    )


if __name__ == "__main__":
    main()
