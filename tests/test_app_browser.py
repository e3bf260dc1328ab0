"""The dashboard in a real browser: `streamlit run` on a free local port, headless Chromium via Playwright.

Uses Debian's Chromium (``apt-get install -y chromium``; CI installs it), never a browser
downloaded by ``playwright install``. Skipped only when /usr/bin/chromium is absent.
Set ``TRAINSCOPE_SCREENSHOT=docs/screenshot.png`` to also save the screenshots the README shows
(the findings there, the chart a finding links to as ``docs/screenshot-chart.png``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trainscope.analyzers.diagnose import diagnose_run
from trainscope.analyzers.reading import read_logdir
from trainscope.app.serve import DashboardDidNotStart, local_dashboard
from trainscope.sample_runs import RUNS_DIR

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROOT = Path(__file__).resolve().parents[1]
CASE = "lr_far_too_high_nan"  # a faulty sample run with a critical finding on the loss chart
START_TIMEOUT = 45  # seconds for `streamlit run` to answer its health check
PAGE_TIMEOUT_MS = 30_000

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"needs Debian's Chromium at {CHROMIUM} (apt-get install -y chromium); CI installs it",
)


@pytest.fixture
def dashboard(tmp_path):
    """`streamlit run app/main.py` on a free localhost port, always stopped afterwards."""
    try:
        with local_dashboard(
            os.path.relpath(RUNS_DIR, ROOT), tmp_path / "streamlit.log", START_TIMEOUT
        ) as url:
            yield url
    except DashboardDidNotStart as exc:
        pytest.fail(str(exc))


def test_findings_of_a_faulty_run_show_in_a_browser(dashboard, tmp_path):
    from playwright.sync_api import sync_playwright

    d = diagnose_run(read_logdir(RUNS_DIR).runs[CASE])
    worst = d.findings[0]
    title = worst.title.replace("`", "")  # rule quotes render as inline code

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1400})
            page.goto(f"{dashboard}/run?run={CASE}", timeout=PAGE_TIMEOUT_MS)
            page.get_by_text(title).first.wait_for(timeout=PAGE_TIMEOUT_MS)
            page.get_by_text("What to do").first.wait_for(timeout=PAGE_TIMEOUT_MS)
            page.locator(".js-plotly-plot").first.wait_for(timeout=PAGE_TIMEOUT_MS)
            assert page.locator("[data-testid='stException']").count() == 0
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
            target = os.environ.get("TRAINSCOPE_SCREENSHOT")
            if target:
                page.screenshot(path=str(ROOT / target))

            # The finding's link jumps to its chart, where the step is marked.
            page.get_by_role("link", name="Loss chart ↓").first.click()
            loss = page.locator("#loss")
            loss.wait_for(timeout=PAGE_TIMEOUT_MS)
            page.wait_for_timeout(500)
            box = loss.bounding_box()
            assert box is not None and 0 <= box["y"] < 1400, "the link did not scroll to the loss chart"
            marker = page.locator(".js-plotly-plot .annotation-text", has_text=worst.rule).first
            marker.wait_for(timeout=PAGE_TIMEOUT_MS)
            page.screenshot(path=str(tmp_path / "chart.png"))
            if target:  # and the chart the link led to, beside it: docs/screenshot-chart.png
                page.screenshot(path=str((ROOT / target).with_name(Path(target).stem + "-chart.png")))
        finally:
            browser.close()


def test_a_root_cause_shows_with_its_symptoms_folded_under_it(dashboard, tmp_path):
    """lr_far_too_high_dead: the learning rate is the root; the dead ReLUs it caused open under it."""
    from playwright.sync_api import sync_playwright

    case = "lr_far_too_high_dead"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            page.goto(f"{dashboard}/run?run={case}", timeout=PAGE_TIMEOUT_MS)
            page.get_by_text("Root cause").first.wait_for(timeout=PAGE_TIMEOUT_MS)
            assert page.get_by_text("explains: dead ReLUs").count() >= 1
            page.get_by_text("symptom(s) of this cause").first.click()
            advice = page.get_by_text("Still worth doing once the cause is fixed").first
            advice.wait_for(timeout=PAGE_TIMEOUT_MS)
            assert page.get_by_text("explained by").count() >= 1
            assert page.locator("[data-testid='stException']").count() == 0
            shot = tmp_path / "causes.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()


def _open_run_link(page, grid, row: int):
    """Click the run link of `row` (0 = first) of a runs table; the link opens a new tab.

    The table is drawn on a canvas: the cell is found by its place (row ticks 35 px wide,
    rows and header 35 px high, the pinned run column first)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for _ in range(3):  # a click while the grid redraws (a rerun finishing) lands on nothing
        page.wait_for_timeout(500)
        box = grid.bounding_box()
        assert box is not None
        x, y = box["x"] + 35 + 30, box["y"] + 35 * (row + 1) + 17
        page.mouse.move(x, y)
        page.wait_for_timeout(300)
        try:
            with page.context.expect_page(timeout=5000) as opened:
                page.mouse.click(x, y)
            return opened.value
        except PlaywrightTimeout:
            continue
    pytest.fail("clicking the run's name opened no page")


def test_filter_runs_open_one_by_its_link_switch_the_x_axis_and_share_a_url(dashboard, tmp_path):
    """Issue 21 in a real browser: filter the Runs table, open a run by clicking its name,
    load a Compare link with another log dir in a fresh tab and switch its x axis to epochs,
    and a link to a run the log dir does not hold says so."""
    from playwright.sync_api import sync_playwright

    fixtures = ROOT / "tests" / "fixtures"
    lightning = "lightning/tb/version_0"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(dashboard, timeout=PAGE_TIMEOUT_MS)
            grid = page.locator("[data-testid='stDataFrame']").first
            grid.wait_for(timeout=PAGE_TIMEOUT_MS)
            page.screenshot(path=str(tmp_path / "runs.png"))
            box = page.get_by_role("textbox", name="Filter runs")
            box.fill("LR_TOO")
            box.press("Enter")
            page.get_by_text("2 of 28 runs match").wait_for(timeout=PAGE_TIMEOUT_MS)
            assert "filter=LR_TOO" in page.url  # the filtered view can be linked
            page.wait_for_timeout(500)
            page.screenshot(path=str(tmp_path / "runs-filtered.png"))

            run_page = _open_run_link(page, grid, 0)  # worst first: lr_too_high_oscillating
            run_page.wait_for_load_state()
            assert "run=lr_too_high_oscillating" in run_page.url and "logdir=" in run_page.url
            run_page.get_by_role("heading", name="lr_too_high_oscillating").wait_for(timeout=PAGE_TIMEOUT_MS)
            run_page.get_by_text("What to do").first.wait_for(timeout=PAGE_TIMEOUT_MS)
            run_page.close()

            # A link someone shared: the Compare page of another log dir, opened in a fresh tab.
            shared = browser.new_page(viewport={"width": 1400, "height": 1000})
            shared.goto(
                f"{dashboard}/compare?compare={lightning}&compare=hf_trainer&logdir={fixtures}",
                timeout=PAGE_TIMEOUT_MS,
            )
            shared.locator(".js-plotly-plot").nth(5).wait_for(timeout=PAGE_TIMEOUT_MS)  # six metrics at once
            assert shared.get_by_role("textbox", name="Log dir").input_value() == str(fixtures)
            shared.get_by_role("radiogroup", name="X axis").get_by_role(
                "radio", name="epoch", exact=True
            ).click()
            shared.locator(".js-plotly-plot .xtitle", has_text="epoch").first.wait_for(
                timeout=PAGE_TIMEOUT_MS
            )
            assert "x_axis=epoch" in shared.url
            assert shared.locator("[data-testid='stException']").count() == 0
            shared.wait_for_timeout(500)
            shared.screenshot(path=str(tmp_path / "compare.png"))

            shared.goto(f"{dashboard}/run?run=no_such_run", timeout=PAGE_TIMEOUT_MS)
            shared.get_by_text("No run named").first.wait_for(timeout=PAGE_TIMEOUT_MS)

            # Another log dir typed in the sidebar goes into the URL, so the address bar can be shared.
            shared.goto(dashboard, timeout=PAGE_TIMEOUT_MS)
            box = shared.get_by_role("textbox", name="Log dir")
            box.fill(str(fixtures))
            box.press("Enter")
            shared.wait_for_url("**logdir=**", timeout=PAGE_TIMEOUT_MS)
            shared.locator("code", has_text=str(fixtures)).first.wait_for(
                timeout=PAGE_TIMEOUT_MS
            )  # its runs listed
        finally:
            browser.close()
