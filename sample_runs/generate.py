"""``python -m sample_runs.generate [--out DIR] [--only CASE ...]``: train the sample cases, write their runs.

Each case is trained into a fresh temporary directory beside its destination and
then moved into ``DIR/<case>/`` (events file, ``run.json``, ``case.json``), so a
dashboard watching DIR never sees a half-replaced run and a failed case leaves the
old one in place. For each case it prints the final results, the numbers that show
the fault, and what the rules say, marking a case whose expectation is not met.
Default DIR: ``sample_runs/runs/`` (the committed runs; regenerate them when the
collector's format changes).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from trainscope.analyzers.diagnose import diagnose_run
from trainscope.sample_runs import RUNS_DIR
from trainscope.sample_runs.cases import CASES, Case, get_case
from trainscope.sample_runs.report import alarms, read_run, summary_lines
from trainscope.sample_runs.training import TrainResult, train_case


def generate_case(case: Case, out: Path) -> TrainResult:
    """Train `case` and put its run at ``out/<case.name>``, replacing what was there."""
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{case.name}.", dir=out))
    try:
        result = train_case(case, staging)
        target = out / case.name
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
        target.chmod(0o755)  # mkdtemp made it private; the run is meant to be shared
        result.log_dir = target
        return result
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def _final(result: TrainResult) -> dict[str, float] | None:
    last = result.last
    if last is None:
        return None
    return {
        "steps": result.steps,
        "train_loss": last.train_loss,
        "train_acc": last.train_acc,
        "val_loss": last.val_loss,
        "val_acc": last.val_acc,
        "seconds": result.seconds,
    }


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sample_runs.generate", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=RUNS_DIR, help=f"where the runs go (default: {RUNS_DIR})")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="CASE",
        help="generate only this case (repeatable; comma-separated lists work too)",
    )
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    args = parser.parse_args(argv)
    if args.list:
        for case in CASES:
            print(f"{case.name:32s} expect: {', '.join(case.expect) or '(healthy)'}")
        return 0
    names = [n for item in args.only for n in item.split(",") if n]
    try:
        cases = [get_case(n) for n in names] if names else list(CASES)
    except KeyError as exc:
        parser.error(str(exc.args[0]))
    started = time.perf_counter()
    mismatches = []
    for case in cases:
        result = generate_case(case, args.out)
        run = read_run(result.log_dir)
        diagnosis = diagnose_run(run)
        fired = alarms(diagnosis)
        if any(r not in fired for r in case.expect) or (case.healthy and fired):
            mismatches.append(case.name)
        print("\n".join(summary_lines(case.name, case.expect, _final(result), run, diagnosis)), flush=True)
    total = _size(args.out) if args.out.exists() else 0
    print(
        f"\n{len(cases)} case(s) in {time.perf_counter() - started:.1f} s; {args.out} holds "
        f"{total / 1e6:.2f} MB; {len(mismatches)} mismatch(es)"
        + (f": {', '.join(mismatches)}" if mismatches else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
