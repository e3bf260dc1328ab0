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

from analyzers.diagnose import diagnose_run
from analyzers.reading import read_logdir
from app.serve import DashboardDidNotStart, local_dashboard
from sample_runs import RUNS_DIR

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
        with local_dashboard(os.path.relpath(RUNS_DIR, ROOT), tmp_path / "streamlit.log", START_TIMEOUT) as url:
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
