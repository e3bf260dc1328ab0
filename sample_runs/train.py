"""``python -m sample_runs.train --case NAME --log-dir DIR [--minutes M]``: one case, paced, to watch live.

The same case definitions as `generate`, trained slowly enough (a few minutes by
default) that a dashboard pointed at DIR shows the curves growing and the findings
appearing as the fault develops. The collector flushes every two seconds, so the
event file is always readable. Ctrl-C stops training and leaves a complete run
(run.json says where it stopped). The default case, ``overfitting``, is a good
live demo: validation loss turns up about a fifth of the way in and the overfitting
finding appears while you watch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from trainscope.sample_runs.cases import CASES, get_case
from trainscope.sample_runs.training import EpochResult, train_case

DEFAULT_CASE = "overfitting"
DEFAULT_MINUTES = 3.0


def _print_epoch(record: EpochResult) -> None:
    print(
        f"epoch {record.epoch:3d}  step {record.step:5d}  train loss {record.train_loss:.4g} "
        f"acc {record.train_acc:.3f}  val loss {record.val_loss:.4g} acc {record.val_acc:.3f}",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sample_runs.train", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--case",
        default=DEFAULT_CASE,
        choices=[c.name for c in CASES],
        metavar="NAME",
        help=f"which sample case to train (default: {DEFAULT_CASE}); "
        "python -m sample_runs.generate --list lists them",
    )
    parser.add_argument(
        "--log-dir", type=Path, required=True, help="where the run goes (a new directory, ideally)"
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=DEFAULT_MINUTES,
        help=f"about how long training should take (default: {DEFAULT_MINUTES:g}); 0 trains at full speed",
    )
    args = parser.parse_args(argv)
    if args.minutes < 0:
        parser.error("--minutes must be >= 0")
    case = get_case(args.case)
    print(f"training {case.name} into {args.log_dir} (about {args.minutes:g} min; Ctrl-C stops cleanly)")
    print(f"fault: {case.fault}", flush=True)
    try:
        result = train_case(case, args.log_dir, duration_seconds=60.0 * args.minutes, on_epoch=_print_epoch)
    except KeyboardInterrupt:
        print(f"\nstopped; the run in {args.log_dir} is complete up to where it stopped")
        return 130
    stopped = f" ({result.stopped})" if result.stopped else ""
    print(f"done: {result.steps} steps in {result.seconds:.0f} s{stopped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
