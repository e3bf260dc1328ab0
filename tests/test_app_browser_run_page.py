"""The run page in a real browser (issue 21): the x axis switched by a click, the Chinese sources
drawn as glyphs with their English gloss, and the page in the system's light and dark theme.

Debian's Chromium via Playwright, as tests/test_app_browser.py; skipped only where
/usr/bin/chromium is absent. Set ``TRAINSCOPE_SHOTS=DIR`` to keep the screenshots
(light, dark, the source line) for a person to look at.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from trainscope.app.links import run_url
from trainscope.app.serve import DashboardDidNotStart, local_dashboard
from trainscope.sample_runs import RUNS_DIR

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
ROOT = Path(__file__).resolve().parents[1]
CASE = "lr_too_low"  # cites a Chinese line; every chart
TIMEOUT_MS = 60_000
ALL_DRAWN = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app || app.getAttribute('data-test-script-state') === 'running') return false;
  const charts = [...document.querySelectorAll('[data-testid="stPlotlyChart"]')];
  return charts.length > 4 && charts.every(c => c.querySelector('.main-svg'));
}"""

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"needs Debian's Chromium at {CHROMIUM} (apt-get install -y chromium fonts-noto-cjk); CI installs it",
)


@pytest.fixture
def dashboard(tmp_path):
    try:
        with local_dashboard(os.path.relpath(RUNS_DIR, ROOT), tmp_path / "streamlit.log", 45) as url:
            yield url
    except DashboardDidNotStart as exc:
        pytest.fail(str(exc))


def shots(tmp_path: Path) -> Path:
    keep = os.environ.get("TRAINSCOPE_SHOTS")
    out = Path(keep) if keep else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    return out


def x_titles(page) -> list[str]:
    return page.evaluate(
        "() => [...document.querySelectorAll('.js-plotly-plot .xtitle')].map(t => t.textContent)"
    )


def test_a_click_puts_every_chart_on_relative_time(dashboard, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            page.goto(f"{dashboard}/{run_url(CASE, str(RUNS_DIR))}", timeout=TIMEOUT_MS)
            page.wait_for_function(ALL_DRAWN, timeout=TIMEOUT_MS)
            assert "step" in x_titles(page)
            page.get_by_role("radiogroup", name="X axis").get_by_role(
                "radio", name="relative time", exact=True
            ).click()
            page.wait_for_function(
                "() => [...document.querySelectorAll('.js-plotly-plot .xtitle')]"
                ".some(t => t.textContent.startsWith('relative time'))",
                timeout=TIMEOUT_MS,
            )
            page.wait_for_function(ALL_DRAWN, timeout=TIMEOUT_MS)
            titles = x_titles(page)
            assert "step" not in titles and any(t.startswith("relative time") for t in titles)
            assert "x_axis=relative" in page.url  # the choice is in the link
            assert page.locator("[data-testid='stException']").count() == 0
        finally:
            browser.close()


def test_the_chinese_source_renders_as_glyphs_beside_its_gloss(dashboard, tmp_path):
    from playwright.sync_api import sync_playwright

    fonts = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True).stdout
    assert fonts.strip(), "no CJK font: install fonts-noto-cjk (CI does), or the quotes show as boxes"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            page.goto(f"{dashboard}/{run_url(CASE, str(RUNS_DIR))}", timeout=TIMEOUT_MS)
            source = page.get_by_text("如果loss曲线表现出线性").first
            source.wait_for(timeout=TIMEOUT_MS)
            assert "a loss curve that looks linear" in source.inner_text()
            # A glyph the font lacks is drawn as a box of one fixed width whatever the character;
            # real glyphs of a CJK font are each about one em wide, so a CJK run is as wide as its
            # length in ems, and two different runs of equal length are equally wide.
            widths = page.evaluate(
                """() => {
                  const c = document.createElement('canvas').getContext('2d');
                  const el = [...document.querySelectorAll('[data-testid="stCaptionContainer"]')]
                      .find(e => e.innerText.includes('如果loss'));
                  c.font = getComputedStyle(el).font;
                  return [c.measureText('学习率太低').width, c.measureText('□□□□□').width,
                          c.measureText('M').width];
                }"""
            )
            cjk, boxes, em = widths
            assert cjk > 3 * em  # five glyphs, each about one em
            source.locator("xpath=ancestor::*[@data-testid='stCaptionContainer']").screenshot(
                path=str(shots(tmp_path) / "source.png")
            )
        finally:
            browser.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_page_follows_the_system_theme(dashboard, tmp_path, scheme):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1400}, color_scheme=scheme)
            page.goto(f"{dashboard}/{run_url(CASE, str(RUNS_DIR))}", timeout=TIMEOUT_MS)
            page.wait_for_function(ALL_DRAWN, timeout=TIMEOUT_MS)
            background, tick = page.evaluate(
                """() => [getComputedStyle(document.querySelector('[data-testid="stApp"]')).backgroundColor,
                          getComputedStyle(document.querySelector('.js-plotly-plot .xtick text')).fill]"""
            )

            def luminance(css: str) -> float:
                r, g, b = (int(v) for v in css[css.index("(") + 1 : css.index(")")].split(",")[:3])
                return (0.299 * r + 0.587 * g + 0.114 * b) / 255

            if scheme == "dark":  # the charts' text light on the dark page, never dark on dark
                assert luminance(background) < 0.3 and luminance(tick) > luminance(background) + 0.3
            else:
                assert luminance(background) > 0.7 and luminance(tick) < luminance(background) - 0.3
            page.evaluate("() => document.querySelector('#charts').scrollIntoView()")
            page.wait_for_timeout(500)
            page.screenshot(path=str(shots(tmp_path) / f"run-page-{scheme}.png"))
        finally:
            browser.close()
