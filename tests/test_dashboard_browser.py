"""The dashboard in a real headless Chromium (Debian's ``chromium``), driven by Playwright.

Playwright only drives the browser: it is pointed at /usr/bin/chromium and never
downloads one. The page is opened from a file:// URL with every non-file request
aborted, so it must draw with no network at all. A screenshot of the demo lake's
dashboard goes to ``test-output/dashboard.png``.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from lakes import add_standin_job_views, demo_lake
from test_dashboard_cache_rejections import LOOKUPS, write_lookups

from costline.config import Config, LakeConfig
from costline.dashboards import CHARTS, build_dashboard
from costline.lake import open_lake

CHROMIUM = os.environ.get("COSTLINE_CHROMIUM", "/usr/bin/chromium")
OUTPUT = Path(__file__).resolve().parents[1] / "test-output"
NOW = dt.datetime(2026, 11, 9, 8, 0, tzinfo=dt.UTC)
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"no Chromium at {CHROMIUM}: apt-get install -y chromium (or set COSTLINE_CHROMIUM)"),
]

# Per chart section: its status, the points the page says it drew, and what is really in the SVG/table.
STATE_JS = """() => Array.from(document.querySelectorAll('section.chart')).map(s => ({
  name: s.dataset.chart, status: s.dataset.status, points: Number(s.dataset.points || 0),
  svgPoints: s.querySelectorAll('.plot .point').length,
  lines: Array.from(s.querySelectorAll('.plot path.js-line')).filter(p => (p.getAttribute('d') || '').length > 2).length,
  rows: s.querySelectorAll('.plot table tbody tr').length,
  note: s.querySelector('.nodata').hidden ? '' : s.querySelector('.nodata').textContent,
  x: (document.getElementById('plot-' + s.dataset.chart).data || []).flatMap(t => t.x || []).map(String),
}))"""


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (it drives /usr/bin/chromium)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield b
        finally:
            b.close()


class Opened:
    def __init__(self, page: object, errors: list[str], foreign: list[str]) -> None:
        self.page, self.errors, self.foreign = page, errors, foreign

    def state(self) -> dict[str, dict]:
        return {s["name"]: s for s in self.page.evaluate(STATE_JS)}  # type: ignore[attr-defined]


def _open(browser: object, path: Path) -> Opened:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})  # type: ignore[attr-defined]
    errors: list[str] = []
    foreign: list[str] = []
    page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))

    def route(r: object) -> None:
        url = r.request.url  # type: ignore[attr-defined]
        if url.startswith(("file:", "data:", "blob:")):
            r.continue_()  # type: ignore[attr-defined]
        else:
            foreign.append(url)
            r.abort()  # type: ignore[attr-defined]

    page.route("**/*", route)
    page.goto(path.as_uri())
    page.wait_for_function("document.body.dataset.drawn", timeout=20_000)
    return Opened(page, errors, foreign)


def _drawn(s: dict) -> int:
    return s["svgPoints"] + s["lines"] + s["rows"]


@pytest.fixture(scope="module")
def demo_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = demo_lake(tmp_path_factory.mktemp("demo") / "lake")
    # the demo traffic records no rejected near-miss: a day of the verified cache's lookups beside it
    write_lookups(config.lake.path, LOOKUPS, partition=9)
    con = open_lake(config)
    try:
        add_standin_job_views(con)  # eval_runs, shadow_runs, alerts: views of later issues
        return build_dashboard(config, tmp_path_factory.mktemp("page") / "dashboard.html", con=con, now=lambda: NOW)
    finally:
        con.close()


def test_demo_dashboard_draws_every_chart_offline_and_the_date_range_filters(browser, demo_page):
    opened = _open(browser, demo_page)
    page = opened.page
    full = opened.state()
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "dashboard.png"), full_page=True)

    assert opened.errors == []
    assert opened.foreign == [], "the page must not reach the network"
    assert set(full) == {c.name for c in CHARTS}
    for name, s in full.items():
        assert s["status"] == "ok", (name, s["note"])
        assert s["points"] > 0 and _drawn(s) > 0, f"{name} drew no data points: {s}"
        assert s["note"] == ""
    assert page.input_value("#date-from") == "2026-11-01" and page.input_value("#date-to") == "2026-11-08"

    # one day: every time series now only holds points of that day, and fewer of them
    page.fill("#date-from", "2026-11-07")
    page.fill("#date-to", "2026-11-07")
    page.wait_for_function("location.hash === '#from=2026-11-07&to=2026-11-07'")
    one = opened.state()
    for name in ("cost_per_success", "cache_hit_rate", "traffic_mix", "student_vs_teacher", "tier_match_rate"):
        assert 0 < one[name]["points"] < full[name]["points"], name
        assert one[name]["x"] and all(x.startswith("2026-11-07") for x in one[name]["x"]), name
    assert one["alerts"]["rows"] == 1  # the firing alert of that day
    assert one["savings_waterfall"]["points"] == full["savings_waterfall"]["points"]  # same stages...
    waterfall_text = page.inner_text("#plot-savings_waterfall")
    page.click("button[data-range='all']")
    page.wait_for_function("location.hash === '#from=2026-11-01&to=2026-11-08'")
    assert page.inner_text("#plot-savings_waterfall") != waterfall_text  # ...other amounts
    assert opened.state()["cache_hit_rate"]["points"] == full["cache_hit_rate"]["points"]

    # a range with no data says so instead of drawing an empty or broken chart
    page.fill("#date-from", "2027-01-01")
    page.fill("#date-to", "2027-01-02")
    page.wait_for_function("location.hash === '#from=2027-01-01&to=2027-01-02'")
    empty = opened.state()
    assert all(s["points"] == 0 and "No data in the selected date range" in s["note"] for s in empty.values())
    assert opened.errors == []
    page.close()


def test_empty_lake_renders_no_data_yet_per_chart_without_errors(browser, tmp_path):
    config = Config(lake=LakeConfig(path=tmp_path / "lake"))
    opened = _open(browser, build_dashboard(config, tmp_path / "empty.html", now=lambda: NOW))
    state = opened.state()
    assert opened.errors == [] and opened.foreign == []
    assert len(state) == len(CHARTS)
    for name, s in state.items():
        assert s["points"] == 0 and s["note"].startswith("No data yet"), (name, s)
    opened.page.close()


def test_chromium_flags_work_without_playwright(tmp_path):
    """The plain `chromium --headless --dump-dom` path (what CI can fall back on) draws the page too."""
    import subprocess

    config = Config(lake=LakeConfig(path=tmp_path / "lake"))
    page = build_dashboard(config, tmp_path / "d.html", now=lambda: NOW)
    profile = tmp_path / "profile"
    proc = subprocess.run(
        [CHROMIUM, "--headless", *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000",
         "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'data-drawn="' in proc.stdout and proc.stdout.count('data-points="0"') == len(CHARTS)
    shutil.rmtree(profile, ignore_errors=True)
