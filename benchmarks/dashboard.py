"""How fast the dashboard renders: the sample runs, a 100-run log dir, and one 1,000,000-step run.

Writes both log dirs into a temporary directory (TrainScope-shaped event files made
with `logformat.events`, the values from `analyzers.rules.synthetic.healthy_run`),
then renders the pages with Streamlit's AppTest, which runs the app's script as the
server does (reading, diagnosing, smoothing, thinning, building and serialising every
figure) without a browser:

- first render: a fresh server (caches cleared): the Runs page, then one run's page;
- refresh: new steps appended to a run, then the page rerun (what a live tick does),
  and a rerun with nothing new.

``--browser`` also opens a run's page by its link in headless Chromium (Debian's
/usr/bin/chromium, via Playwright) for a sample run, one of the 100 runs and the
1,000,000-step run, and times from navigation to the findings shown, to the first chart
drawn and to the last: first cold (the server reads and diagnoses the log dir), then in
interleaved rounds.

    .venv/bin/python benchmarks/dashboard.py [--runs 100] [--steps 1000000] [--browser]

About a minute on 2 cores, most of it writing the event files.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from trainscope.analyzers.diagnose import diagnose_run
from trainscope.analyzers.reading import LogDirReader
from trainscope.analyzers.rules.synthetic import healthy_run
from trainscope.logformat import runjson as RJ
from trainscope.logformat import tags as T
from trainscope.logformat.events import EventFileWriter, Histogram, summary_record
from trainscope.sample_runs import RUNS_DIR

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_RUN = "lr_far_too_high_nan"  # a sample run with a critical finding and every chart
APP = ROOT / "app" / "main.py"
WRITE_BATCH = 20_000  # records per write
HIST_EVERY = 10_000  # steps between histograms in the long run
REPEATS = 3


def write_run(run_dir: Path, steps: int, seed: int, every: int = 50, start: int = 0) -> None:
    """A healthy run of `steps` steps with every canonical tag (values from `healthy_run`)."""
    scalars, meta = healthy_run(steps + start, batch=64, seed=seed, every=every, per_example=False)
    by_step: dict[int, dict[str, float]] = {}
    every_step = {tag: values for tag, (s, values) in scalars.items() if s.shape[0] == steps + start}
    sampled = {tag: (s, values) for tag, (s, values) in scalars.items() if tag not in every_step}
    for tag, (s, values) in sampled.items():
        for step, value in zip(s.tolist(), values.tolist(), strict=True):
            if step >= start:
                by_step.setdefault(step, {})[tag] = value
    tags = list(every_step)
    columns = np.column_stack([every_step[t] for t in tags]).tolist()
    writer = EventFileWriter(run_dir)
    batch = []
    rng = np.random.default_rng(seed)
    for step in range(start, start + steps):
        values = dict(zip(tags, columns[step], strict=True))
        values.update(by_step.get(step, {}))
        hists = {}
        if step % HIST_EVERY == 0:
            counts, edges = np.histogram(rng.normal(0, 0.1, 4000), bins=30)
            hists[T.hist_weight_tag("classifier")] = Histogram(
                float(edges[0]),
                float(edges[-1]),
                4000.0,
                0.0,
                40.0,
                list(edges[1:]),
                list(counts.astype(float)),
            )
        batch.append(summary_record(step, 1.7e9 + step, values, hists))
        if len(batch) == WRITE_BATCH:
            writer.write(batch)
            batch = []
    writer.write(batch)
    writer.close()
    meta = dict(meta, status=RJ.STATUS_RUNNING)
    RJ.write_run_json(run_dir, meta)


def age_dirs(root: Path) -> None:
    """Make directories look older than the reader's race window (as in a dashboard polling for a while)."""
    old = time.time() - 60
    for dirpath, _, _ in os.walk(root):
        os.utime(dirpath, (old, old))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def render(logdir: Path, run: str, steps: int, label: str) -> None:
    """First render and refreshes of the Runs page and of `run`'s page, printed."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    logging.disable(logging.WARNING)  # AppTest outside a server warns about its missing runtime on every run

    def fresh() -> AppTest:
        st.cache_resource.clear()
        st.cache_data.clear()
        at = AppTest.from_file(str(APP), default_timeout=600)
        at.session_state["logdir"] = str(logdir)
        return at

    firsts, pages = [], []
    for _ in range(REPEATS):
        at = fresh()
        firsts.append(timed(at.run))
        assert not at.exception, at.exception
        at.session_state["run"] = run
        pages.append(timed(lambda at=at: at.switch_page("views/run.py").run()))
        assert not at.exception, at.exception
    idle = [timed(at.run) for _ in range(REPEATS)]
    appended = []
    for i in range(REPEATS):
        write_run(logdir / run, 100, seed=1000 + i, start=steps + 100 * i)  # a new event file: 100 new steps
        appended.append(timed(at.run))
        assert not at.exception, at.exception
    med = statistics.median
    print(f"\n{label}")
    print(f"  first render, Runs page (read + diagnose everything) {med(firsts):6.2f} s")
    print(f"  first render, the run's page (charts)                 {med(pages):6.2f} s")
    print(f"  rerun, nothing new                                    {med(idle):6.2f} s")
    print(f"  rerun after 100 steps were appended (a live tick)     {med(appended):6.2f} s")
    print(f"  (medians of {REPEATS}; first renders: {', '.join(f'{t:.2f}' for t in firsts)} s)")


def breakdown(logdir: Path, run: str) -> None:
    """Where the time goes: reading the log dir, diagnosing every run, drawing `run`'s main figures."""
    from trainscope.app import figures as F

    reader = LogDirReader(logdir)
    read_s = timed(reader.refresh)
    runs = reader.snapshot.runs
    r = runs[run]
    diag_s = timed(lambda: [diagnose_run(each) for each in runs.values()])
    layers = sorted(r.layers(T.GRAD_NORM_PREFIX).items())
    fig_s = timed(
        lambda: (
            F.train_val_figure(
                r.scalar(T.TRAIN_LOSS), r.scalar(T.VAL_LOSS), r.scalar(T.LR), smoothing=0.6
            ).to_json(),
            F.layer_lines_figure(layers, y_title="g", log_y=True).to_json(),
            F.layer_heatmap(layers, value_title="g").to_json(),
        )
    )
    points = sum(len(s) for each in runs.values() for s in each.scalars.values())
    print(
        f"  breakdown: read {read_s:.2f} s ({points:,} points), diagnose {len(runs)} run(s) {diag_s:.2f} s, "
        f"one run's loss and gradient figures built and serialised {fig_s:.2f} s"
    )


# Set by the browser once every chart of the page is drawn: the script has finished, no
# chart's place still says it is being drawn, and every plotly chart has its SVG.
ALL_DRAWN = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app || app.getAttribute('data-test-script-state') === 'running') return false;
  if (!document.querySelector('#charts')) return false;
  if ([...document.querySelectorAll('[data-testid="stCaptionContainer"]')]
        .some(e => e.innerText.includes('Drawing this chart'))) return false;
  const charts = [...document.querySelectorAll('[data-testid="stPlotlyChart"]')];
  return charts.length > 0 && charts.every(c => c.querySelector('.main-svg'));
}"""
FIRST_CHART = "() => !!document.querySelector('[data-testid=\"stPlotlyChart\"] .main-svg')"


def browser(cases: list[tuple[str, Path, str]], repeats: int = REPEATS) -> None:
    """Time to findings, to the first chart and to the last chart, in headless Chromium.

    Each case is (label, log dir, run), opened by its link (``/run?run=...&logdir=...``) on
    one server. The first visit of a log dir reads and diagnoses every run in it (cold);
    then the cases are loaded in turn, `repeats` rounds interleaved, so that a slow
    moment of the machine hits every case alike; medians with [min, max].
    """

    from playwright.sync_api import sync_playwright

    from trainscope.app.links import run_url
    from trainscope.app.serve import local_dashboard

    def visit(page, base: str, logdir: Path, run: str) -> tuple[float, float, float]:
        start = time.perf_counter()
        page.goto(f"{base}/{run_url(run, str(logdir))}")
        page.locator("#charts").wait_for(timeout=300_000)  # every finding is above it
        findings = time.perf_counter() - start
        page.wait_for_function(FIRST_CHART, timeout=300_000)
        first = time.perf_counter() - start
        page.wait_for_function(ALL_DRAWN, timeout=300_000, polling=50)
        return findings, first, time.perf_counter() - start

    with (
        tempfile.TemporaryDirectory() as server_dir,
        local_dashboard(cases[0][1], Path(server_dir) / "streamlit.log", 120) as base,
        sync_playwright() as p,
    ):
        b = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
        )
        page = b.new_page(viewport={"width": 1400, "height": 1000})
        print("\nin headless Chromium (1400 px), opened by link; seconds from navigation")
        print(f"  {'':38s} {'findings':>18s} {'first chart':>18s} {'last chart':>18s}")
        for label, logdir, run in cases:
            f, c, last = visit(page, base, logdir, run)
            print(f"  {label + ', cold':38s} {f:18.2f} {c:18.2f} {last:18.2f}")
        times: dict[str, list[tuple[float, float, float]]] = {label: [] for label, _, _ in cases}
        for _ in range(repeats):
            for label, logdir, run in cases:
                times[label].append(visit(page, base, logdir, run))
        for label, _, _run in cases:
            cols = list(zip(*times[label]))
            print(
                f"  {label + ', warm':38s} "
                + " ".join(
                    f"{statistics.median(c):6.2f} [{min(c):.2f}, {max(c):.2f}]".rjust(18) for c in cols
                )
            )
        charts = page.locator('[data-testid="stPlotlyChart"]').count()
        print(f"  (medians of {repeats} interleaved rounds, [min, max]; the last page drew {charts} charts)")
        b.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--run-steps", type=int, default=2_000, help="steps of each of the many runs")
    parser.add_argument("--steps", type=int, default=1_000_000, help="steps of the long run")
    parser.add_argument("--browser", action="store_true", help="also time the long run's page in Chromium")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trainscope-dashboard-") as tmp:
        many, long = Path(tmp) / "many", Path(tmp) / "long"
        t = time.perf_counter()
        for i in range(args.runs):
            write_run(many / f"sweep{i // 10}" / f"run{i:03d}", args.run_steps, seed=i)
        age_dirs(many)
        print(f"wrote {args.runs} runs x {args.run_steps:,} steps in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        write_run(long / "long", args.steps, seed=0)
        age_dirs(long)
        size = sum(f.stat().st_size for f in (long / "long").iterdir()) / 2**20
        print(f"wrote one run of {args.steps:,} steps ({size:.0f} MiB) in {time.perf_counter() - t:.1f} s")

        render(many, "sweep0/run000", args.run_steps, f"{args.runs} runs of {args.run_steps:,} steps")
        breakdown(many, "sweep0/run000")
        render(long, "long", args.steps, f"one run of {args.steps:,} steps")
        breakdown(long, "long")
        if args.browser:
            browser(
                [
                    (f"sample runs: {SAMPLE_RUN}", RUNS_DIR, SAMPLE_RUN),
                    (f"{args.runs} runs: one run's page", many, "sweep0/run000"),
                    (f"{args.steps:,}-step run", long, "long"),
                ]
            )


if __name__ == "__main__":
    main()
