"""Promotions and rollbacks of the routing policy are marked on the cost and tier-match charts."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

from costline.config import Config, LakeConfig
from costline.dashboards.build import build_page
from costline.serving.routing.promote import PromotionEvent, record_event


def _payload(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="costline-data">(.*?)</script>', page, re.S)
    assert m, "the page carries its data"
    return json.loads(m.group(1))


def test_promotion_events_reach_the_cost_and_tier_match_charts(tmp_path: Path) -> None:
    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"))
    before = _payload(build_page(cfg, now=lambda: datetime(2026, 11, 9)))
    assert before["marks"] == {"route_promotions": []}  # no event yet: nothing marked, nothing broken
    record_event(cfg, PromotionEvent("promote-1", datetime(2026, 11, 3, 9, 30), "promote", "p.npz", "a" * 64,
                                     "rules", True, "gate passed"))
    record_event(cfg, PromotionEvent("rollback-1", datetime(2026, 11, 5, 8), "rollback", "p.npz", "b" * 64,
                                     "a" * 64, None, "rolled back"))
    data = _payload(build_page(cfg, now=lambda: datetime(2026, 11, 9)))
    marks = data["marks"]["route_promotions"]
    assert [(m["ts"], m["action"], m["policy"]) for m in marks] == [
        ("2026-11-03T09:30:00", "promote", "aaaaaaaaaaaa"), ("2026-11-05T08:00:00", "rollback", "bbbbbbbbbbbb")]
    marked = {c["name"] for c in data["charts"] if c["options"].get("marks") == "route_promotions"}
    assert marked == {"cost_per_success", "tier_match_rate"}


def test_the_page_draws_the_marks_in_a_real_browser(tmp_path: Path) -> None:
    """Chromium (as tests/test_dashboard_browser.py drives it): a dotted line per event on both charts."""
    import os
    import sys

    import pytest

    chromium = os.environ.get("COSTLINE_CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).exists():
        pytest.skip(f"no Chromium at {chromium}")
    sync_api = pytest.importorskip("playwright.sync_api")
    sys.path.insert(0, str(Path(__file__).parent))
    from lakes import add_standin_job_views, demo_lake

    from costline.dashboards import build_dashboard
    from costline.lake import open_lake

    cfg = demo_lake(tmp_path / "lake", days=2, per_day=150)
    record_event(cfg, PromotionEvent("promote-1", datetime(2026, 11, 1, 12), "promote", "p.npz", "a" * 64,
                                     "rules", True, "gate passed"))
    record_event(cfg, PromotionEvent("rollback-1", datetime(2026, 11, 2, 6), "rollback", "p.npz", "b" * 64,
                                     "a" * 64, None, "rolled back"))
    con = open_lake(cfg)
    try:
        add_standin_job_views(con, days=2)
        page_path = build_dashboard(cfg, tmp_path / "dashboard.html", con=con, now=lambda: datetime(2026, 11, 3))
    finally:
        con.close()
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_path.as_uri())
            page.wait_for_function("document.body.dataset.drawn", timeout=20_000)
            got = page.evaluate("""() => ['cost_per_success', 'tier_match_rate', 'traffic_mix'].map(n => {
                const d = document.getElementById('plot-' + n);
                return [n, ((d.layout || {}).shapes || []).map(s => s.x0 + ' ' + s.line.dash),
                        ((d.layout || {}).annotations || []).map(a => a.text)];
            })""")
        finally:
            browser.close()
    assert errors == []
    want = ["2026-11-01T12:00:00 dot", "2026-11-02T06:00:00 dot"]
    assert got == [["cost_per_success", want, ["promote", "rollback"]],
                   ["tier_match_rate", want, ["promote", "rollback"]],
                   ["traffic_mix", [], []]]
