"""The collector's overhead benchmark still runs against the collector as it is now.

It reaches into the collector to wait for its writer (so that background writing is
charged to the arm that caused it), which a restructure can move; a smoke run of a few
blocks catches that here rather than on the day someone needs the figures. No timing is
asserted: speed is the benchmark's to measure, not a test's.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_the_overhead_benchmark_runs_a_few_blocks_end_to_end():
    command = [
        sys.executable, str(BENCHMARKS / "collector_overhead.py"),
        "--blocks", "2", "--warmup-blocks", "0", "--naive-blocks", "1", "--block", "10",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "with watch() (defaults)" in result.stdout and "BatchNorm CNN" in result.stdout
