"""A run is called by the name it was given: ``watch(..., run_name=...)``, an MLflow or W&B
run's name. Its folder stays its key (links, the command line's ``"run"``), and is shown
beside the name wherever the two differ.

The collector's run is a real MLP trained on scikit-learn's digits; the MLflow and W&B runs
are the real logs of tests/fixtures; the pages go through Streamlit's AppTest.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_app_runs import clean, shown_cells, start

from trainscope.analyzers.reading import read_logdir
from trainscope.analyzers.run import Run
from trainscope.analyzers.run_names import display_name, display_names, given_name
from trainscope.app import links
from trainscope.app.runfilter import filter_runs
from trainscope.logformat import runjson as RJ

FIXTURES = Path(__file__).resolve().parent / "fixtures"
GIVEN = "lr 0.05, momentum 0.9 [baseline]"  # brackets: Markdown must show them as text


def run(name: str, given: object = None, path: str | None = None) -> Run:
    meta = {} if given is None else {RJ.K_RUN_NAME: given}
    return Run(name=name, path=path or f"/logs/{name}", source="trainscope", meta=meta)


# -- what a run is called (pure) ----------------------------------------------------------


def test_a_given_name_that_repeats_the_folder_adds_nothing():
    assert given_name(run("sweep/a", "a")) is None  # what the collector writes by default
    assert given_name(run("sweep/a", "sweep/a")) is None
    assert given_name(run(".", "exp", path="/logs/exp")) is None  # the log dir is the run
    assert given_name(run("sweep/a")) is None
    assert given_name(run("a", "  ")) is None and given_name(run("a", 3)) is None  # no name, not a name


def test_a_given_name_is_one_line():
    assert given_name(run("a", "first\n  second\tthird")) == "first second third"


def test_each_run_is_called_by_its_given_name_and_twins_by_their_folders():
    runs = [
        run("0/9f3c", "baseline"),
        run("1/77ab", "warmup"),
        run("2/c001", "warmup"),  # two runs given one name
        run("a", "b"),  # the name of another run's folder
        run("b"),
        run("c", "c"),
    ]
    assert display_names(runs) == {
        "0/9f3c": "baseline",
        "1/77ab": "warmup (1/77ab)",
        "2/c001": "warmup (2/c001)",
        "a": "b (a)",
        "b": "b",
        "c": "c",
    }
    assert display_name(run("0/9f3c", "baseline")) == "baseline (0/9f3c)"
    assert display_name(run("c", "c")) == "c"


def test_the_filter_matches_the_given_name_or_the_folder():
    names = ["0/9f3c", "1/77ab", "2/c001"]
    labels = {"0/9f3c": "baseline", "1/77ab": "warmup", "2/c001": "2/c001"}
    assert filter_runs(names, "WARM", labels=labels).names == ["1/77ab"]
    assert filter_runs(names, "9f3c", labels=labels).names == ["0/9f3c"]
    assert filter_runs(names, "^(base|2/)", regex=True, labels=labels).names == ["0/9f3c", "2/c001"]


# -- a collector run given a name, read back by the command line --------------------------


@pytest.fixture(scope="module")
def named(tmp_path_factory, digits) -> Path:
    """A log dir of two collector runs: ``exp1`` given a name, ``exp2`` not."""
    from collector_helpers import mlp, train

    from trainscope.collectors import watch

    X, y = digits
    logdir = tmp_path_factory.mktemp("named")
    train(
        mlp(),
        X,
        y,
        steps=30,
        collector=lambda model, opt: watch(model, opt, log_dir=logdir / "exp1", run_name=GIVEN, every=10),
    )
    train(mlp(1), X, y, steps=30, collector=lambda model, opt: watch(model, opt, log_dir=logdir / "exp2"))
    return logdir


def test_the_command_line_calls_the_run_by_its_name_and_keys_it_by_its_folder(named):
    from collector_helpers import diagnosed_by_the_cli

    report = {r["run"]: r for r in diagnosed_by_the_cli(named)["runs"]}
    assert set(report) == {"exp1", "exp2"}  # the key is still the folder
    assert report["exp1"][RJ.K_RUN_NAME] == GIVEN
    assert report["exp2"][RJ.K_RUN_NAME] is None  # named by its folder only
    text = subprocess.run(
        [sys.executable, "-m", "analyzers", str(named)], capture_output=True, text=True, timeout=120
    ).stdout
    header = next(line for line in text.splitlines() if line.startswith("run exp1 "))
    assert f'named "{GIVEN}"' in header
    assert "named" not in next(line for line in text.splitlines() if line.startswith("run exp2 "))


def test_the_markdown_export_is_titled_by_the_given_name(named):
    from trainscope.analyzers.diagnose import diagnose_run
    from trainscope.app.export import diagnosis_markdown

    snapshot = read_logdir(str(named))
    md = diagnosis_markdown(str(named), diagnose_run(snapshot.runs["exp1"]))
    lines = md.splitlines()
    assert lines[0] == "# TrainScope diagnosis: `lr 0.05, momentum 0.9 [baseline]`"
    assert "- run: `exp1`" in lines
    plain = diagnosis_markdown(str(named), diagnose_run(snapshot.runs["exp2"])).splitlines()
    assert plain[0] == "# TrainScope diagnosis: `exp2`" and not any(
        line.startswith("- run:") for line in plain
    )


# -- the pages ------------------------------------------------------------------------------


def test_the_pages_show_the_given_name_and_link_by_the_folder(named):
    at = clean(start(named))
    urls = list(at.dataframe[0].value["run"])
    assert sorted(links.run_of(u) for u in urls) == ["exp1", "exp2"]  # links keep the key
    cells = shown_cells(at)
    assert GIVEN in cells and "exp2" in cells and "exp1" not in cells

    at.text_input(key="filter").set_value("MOMENTUM").run()  # what the table shows, filtered on
    assert [links.run_of(u) for u in clean(at).dataframe[0].value["run"]] == ["exp1"]

    at.switch_page("views/run.py").run()
    at.selectbox(key="run").set_value("exp1").run()
    clean(at)
    assert GIVEN in at.selectbox(key="run").options  # offered by name, chosen by key
    assert at.title[0].value.replace("\\", "") == GIVEN
    assert any("folder: `exp1`" in c.value for c in at.caption)

    at.switch_page("views/compare.py").run()
    at.multiselect(key="compare").set_value(["exp1", "exp2"]).run()
    assert set(clean(at).multiselect(key="compare").options) == {GIVEN, "exp2"}


def test_mlflow_and_wandb_runs_are_called_by_their_names():
    runs = read_logdir(str(FIXTURES)).runs
    names = display_names(runs.values())
    mlflow = {k: v for k, v in names.items() if k.startswith("mlflow/")}
    wandb = {k: v for k, v in names.items() if k.startswith("wandb/")}
    assert mlflow and wandb
    for key, label in {**mlflow, **wandb}.items():
        given = runs[key].meta.get(RJ.K_RUN_NAME)
        assert given and label.startswith(given), (key, label)  # the name the tracker shows, not an id
        assert label != key


def test_a_browser_shows_the_given_name_on_the_run_and_compare_pages(named, tmp_path):
    """The run page's heading, its run picker and the Compare legend, in headless Chromium."""
    from test_app_browser import CHROMIUM, CHROMIUM_ARGS, PAGE_TIMEOUT_MS, START_TIMEOUT

    if not Path(CHROMIUM).exists():
        pytest.skip(f"needs Debian's Chromium at {CHROMIUM}; CI installs it")
    from playwright.sync_api import sync_playwright

    from trainscope.app.serve import local_dashboard

    with (
        local_dashboard(str(named), tmp_path / "streamlit.log", START_TIMEOUT) as url,
        sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/run?run=exp1", timeout=PAGE_TIMEOUT_MS)
            page.get_by_role("heading", name=GIVEN).wait_for(timeout=PAGE_TIMEOUT_MS)
            page.get_by_text("folder: exp1").first.wait_for(timeout=PAGE_TIMEOUT_MS)
            picker = page.locator("[data-testid='stSelectbox']").first
            assert (
                picker.locator("input").first.input_value() == GIVEN
            )  # the picker lists the run by its name
            page.screenshot(path=str(tmp_path / "run.png"))

            page.goto(f"{url}/compare?compare=exp1&compare=exp2", timeout=PAGE_TIMEOUT_MS)
            page.locator(".js-plotly-plot .legendtext", has_text=GIVEN).first.wait_for(
                timeout=PAGE_TIMEOUT_MS
            )
            assert page.locator("[data-testid='stException']").count() == 0
            page.screenshot(path=str(tmp_path / "compare.png"))
            keep = os.environ.get("TRAINSCOPE_KEEP_SCREENSHOTS")
            if keep:
                for shot in ("run.png", "compare.png"):
                    (Path(keep) / shot).write_bytes((tmp_path / shot).read_bytes())
        finally:
            browser.close()
