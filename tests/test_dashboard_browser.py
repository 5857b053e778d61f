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

import pyarrow as pa
import pytest
from lakes import add_standin_job_views, demo_lake
from test_dashboard_cache_rejections import LOOKUPS, write_lookups

from costline.config import Config, LakeConfig
from costline.dashboards import CHARTS, ChartData, build_dashboard, chart_by_name, render_html
from costline.dashboards.build import STATUS_OK
from costline.lake import LOOKUPS_SCHEMA, Lake, open_lake

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


def _open(browser: object, path: Path, fragment: str = "") -> Opened:
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
    page.goto(path.as_uri() + fragment)
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



# --- labels from the lake that are also names of Object.prototype's members -----------------------------
PROTO_NAMES = ("__proto__", "constructor", "hasOwnProperty", "toString", "valueOf")
LABELS = ("acme", *PROTO_NAMES)
DAYS = ("2026-11-03", "2026-11-04")

# chart -> what it must draw with one row per label and day (counted by hand: 6 labels x 2 days = 12 rows;
# student_vs_teacher draws two y columns per row; the waterfall one bar per stage plus the "actual" total).
PROTO_EXPECTED_POINTS = {
    "cost_per_success": 12,
    "spend_per_app": 12,
    "cache_hit_rate": 12,
    "traffic_mix": 12,
    "cache_rejections": 12,
    "rejected_attempts": 12,
    "student_vs_teacher": 24,
    "tier_match_rate": 12,
    "savings_waterfall": 7,
}

# Per chart kind: the JS that lists the label-bearing names it drew (traces, panels or bars).
DRAWN_LABELS_JS = {
    "lines": "d => d.data.map(t => t.name)",
    "stacked_bar": "d => d.data.map(t => t.name)",
    "band": "d => Object.keys(d.layout).filter(k => /^yaxis\\d*$/.test(k)).map(k => d.layout[k].title.text)",
    "waterfall": "d => d.layout.xaxis.ticktext.slice(1, -1).concat([d.layout.xaxis.ticktext[0].replace(' (all frontier)', '')])",
}


def _proto_rows(name: str) -> tuple[tuple, ...]:
    """One row per label and day: the label in the chart's series/facet/stage column, 1.0 in its numbers but
    cost_usd, the label's place + 1 (the waterfall's levels after each stage: $2, $4 ... $12 over the two days)."""
    chart = chart_by_name(name)
    o = chart.options
    label_col = o.get("series") or o.get("facet") or o.get("stage")
    rows = []
    for day in DAYS:
        for step, label in enumerate(LABELS):
            row = {chart.x: f"{day}T09:00:00", label_col: label, "step": step, "cost_usd": step + 1.0, "lookups": 10,
                   "breach": label == "constructor", "alert_below": 0.5, "avg_7d": 0.9}
            for c in chart.columns:
                row.setdefault(c, 1.0)
            rows.append(tuple(row[c] for c in chart.columns))
    return tuple(rows)


@pytest.fixture(scope="module")
def proto_page(browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Opened]:
    results = [ChartData(chart_by_name(n), "SELECT 1", STATUS_OK, chart_by_name(n).columns, _proto_rows(n))
               for n in PROTO_EXPECTED_POINTS]
    path = tmp_path_factory.mktemp("proto") / "proto.html"
    path.write_text(render_html(results, built_at=NOW, lake="lake"), encoding="utf-8")
    opened = _open(browser, path)
    yield opened
    opened.page.close()


@pytest.mark.parametrize("name", sorted(PROTO_EXPECTED_POINTS))
def test_labels_named_like_object_prototype_members_are_drawn_like_any_other(proto_page, name):
    chart = chart_by_name(name)
    s = proto_page.state()[name]
    assert proto_page.errors == []
    assert s["note"] == "" and s["points"] == PROTO_EXPECTED_POINTS[name], s
    drawn = proto_page.page.evaluate(f"({DRAWN_LABELS_JS[chart.kind]})(document.getElementById('plot-{name}'))")
    for label in LABELS:
        assert any(str(d).startswith(label) for d in drawn), (label, drawn)
    # colours of labels that are not tiers come from the palette: strings, never Object.prototype's functions
    colors = proto_page.page.evaluate(
        f"document.getElementById('plot-{name}').data.map(t => (t.line && t.line.color) || (t.marker && t.marker.color) || '')")
    assert all(isinstance(c, str) for c in colors), colors
    if chart.kind == "waterfall":  # levels $2, $4 ... $12: +$2 (+100% of the first) at each stage, no NaN
        notes = proto_page.page.evaluate(f"document.getElementById('plot-{name}').layout.annotations.map(a => a.text)")
        assert notes == ["$2.00", "+$2.00 (+100%)", "+$2.00 (+100%)", "+$2.00 (+100%)", "+$2.00 (+100%)",
                         "+$2.00 (+100%)", "$12.00 (600%)"], notes


def _write_tenant_lookups(lake_path: Path, lookups: list[tuple[dt.datetime, str, bool]]) -> None:
    """``lookups`` rows (ts, tenant, hit), committed through the lake's own path (one day a Parquet file)."""
    cols: dict[str, list] = {f.name: [] for f in LOOKUPS_SCHEMA}
    for i, (ts, tenant, hit) in enumerate(lookups):
        row = {"span_id": f"L{i:06d}", "trace_id": f"{i:032x}", "ts": ts, "tenant": tenant, "namespace": None,
               "hit": hit, "similarity": 0.95, "duration_ms": 3.0, "kafka_partition": 0, "kafka_offset": i}
        for name in cols:
            cols[name].append(row.get(name))
    table = pa.table(cols, schema=LOOKUPS_SCHEMA)
    days = {d.isoformat(): table.filter(pa.array([ts.date() == d for ts, *_ in lookups]))
            for d in sorted({ts.date() for ts, *_ in lookups})}
    Lake(lake_path).init().commit_batch("otlp_spans", 0, 0, len(lookups) - 1, {"lookups": days})


def test_tenants_named_like_object_prototype_members_get_their_cache_panel(browser, tmp_path):
    """Through the lake: each tenant's two lookups (a hit, a miss) at 09:00 are one hourly point of 50%."""
    config = Config(lake=LakeConfig(path=tmp_path / "lake"))
    at = dt.datetime(2026, 11, 3, 9)
    _write_tenant_lookups(config.lake.path, [(at + dt.timedelta(minutes=m), t, m == 0)
                                             for t in LABELS for m in (0, 1)])
    opened = _open(browser, build_dashboard(config, tmp_path / "d.html", now=lambda: NOW))
    s = opened.state()["cache_hit_rate"]
    assert opened.errors == []
    assert s["points"] == 6 and s["note"] == ""
    panels = opened.page.evaluate(f"({DRAWN_LABELS_JS['band']})(document.getElementById('plot-cache_hit_rate'))")
    assert panels == sorted(LABELS)
    ys = opened.page.evaluate("document.getElementById('plot-cache_hit_rate').data"
                              ".filter(t => t.name.endsWith(' hit rate')).map(t => t.y)")
    assert ys == [[0.5]] * 6
    opened.page.close()


# --- the URL's #from=..&to=.. -------------------------------------------------------------------------
@pytest.mark.parametrize("fragment, expected", [
    ("#from=2026-11-07&to=2026-11-07", ("2026-11-07", "2026-11-07")),   # well-formed: used
    ("#from=%", ("2026-11-01", "2026-11-08")),                          # malformed %-escape: ignored
    ("#from=%E0%A4%A&to=2026-11-02", ("2026-11-01", "2026-11-02")),     # cut-short UTF-8 escape
    ("#from=2026-11-07&to=%", ("2026-11-07", "2026-11-08")),
    ("#from=%zz&to=%", ("2026-11-01", "2026-11-08")),
    ("#from=2026-13-45&to=yesterday", ("2026-11-01", "2026-11-08")),     # decodes, but is no day
    ("#__proto__=%&constructor=x&from=2026-11-03", ("2026-11-03", "2026-11-08")),
    ("#from=2026%2D11%2D05", ("2026-11-05", "2026-11-08")),              # escaped, still a day
])
def test_a_bad_date_in_the_url_is_ignored_and_the_page_still_works(browser, demo_page, fragment, expected):
    opened = _open(browser, demo_page, fragment)
    page = opened.page
    assert (page.input_value("#date-from"), page.input_value("#date-to")) == expected
    state = opened.state()
    lo, hi = expected
    for name in ("traffic_mix", "cost_per_success"):
        assert state[name]["points"] > 0, (name, state[name])
        assert all(lo <= x[:10] <= hi for x in state[name]["x"]), name
    # the rest of the page works: a range button redraws and writes a clean hash
    page.click("button[data-range='1']")
    page.wait_for_function("location.hash === '#from=2026-11-08&to=2026-11-08'")
    assert all(x.startswith("2026-11-08") for x in opened.state()["traffic_mix"]["x"])
    assert opened.errors == []
    page.close()


# --- the cache chart draws a bounded number of tenants ------------------------------------------------
# 25 tenants t00..t24. 2026-11-03 09:00: t<i> has 10*(i+1) lookups, all hits (t00 10 ... t24 250).
# 2026-11-04 09:00: t00 5 misses and t24 6 misses: both under their band (hit rate 0 against a 7-day average
# of 1.0, with >= 5 lookups). Lookups per tenant over both days: t00 15, t01 20, t02 30, t03 40, t04 50 ...
CAP_DAY1, CAP_DAY2 = dt.datetime(2026, 11, 3, 9), dt.datetime(2026, 11, 4, 9)
CAP_TENANTS = [f"t{i:02d}" for i in range(25)]
TOP20 = [f"t{i:02d}" for i in range(5, 25)]
LEFT_OUT_SQL = ("SELECT tenant, sum(lookups) AS lookups, sum(hits) AS hits, round(sum(hits) / sum(lookups), 3) "
                "AS hit_rate FROM cache_hit_rate_7d{} GROUP BY tenant ORDER BY lookups DESC, tenant OFFSET {}")
# The page carries the rows of the 20 tenants with the most lookups in the window (t05..t24) and counts all 25:
# t00..t04 are not on it, whatever range is selected.
NOTE = ("Showing the {} tenants with the most cache lookups in the selected range; the page carries only the 20 of "
        "the window's 25 tenants with the most cache lookups. List them with: ")


@pytest.fixture(scope="module")
def many_tenants(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, Path]:
    tmp = tmp_path_factory.mktemp("tenants")
    config = Config(lake=LakeConfig(path=tmp / "lake"))
    lookups = [(CAP_DAY1 + dt.timedelta(seconds=j), t, True) for i, t in enumerate(CAP_TENANTS)
               for j in range(10 * (i + 1))]
    lookups += [(CAP_DAY2 + dt.timedelta(seconds=j), "t00", False) for j in range(5)]
    lookups += [(CAP_DAY2 + dt.timedelta(seconds=j), "t24", False) for j in range(6)]
    _write_tenant_lookups(config.lake.path, lookups)
    return config, build_dashboard(config, tmp / "d.html", now=lambda: NOW)


@pytest.mark.parametrize("days, panels, points, under_band, note, where, left_out", [
    # the whole range (the page's default: the window, 2026-11-03..04)
    (None, TOP20, 21, ["t24"], NOTE.format(20),
     (" WHERE window_start >= TIMESTAMP '2026-11-03' AND window_start < TIMESTAMP '2026-11-04' + INTERVAL 1 DAY", 20),
     [("t04", 50, 50), ("t03", 40, 40), ("t02", 30, 30), ("t01", 20, 20), ("t00", 15, 10)]),
    # the first day alone: same top 20, no hour under the band yet (no 7-day average)
    (("2026-11-03", "2026-11-03"), TOP20, 20, [], NOTE.format(20),
     (" WHERE window_start >= TIMESTAMP '2026-11-03' AND window_start < TIMESTAMP '2026-11-03' + INTERVAL 1 DAY", 20),
     [("t04", 50, 50), ("t03", 40, 40), ("t02", 30, 30), ("t01", 20, 20), ("t00", 10, 10)]),
    # the second day: t24 drawn with its red dot; t00 (the 25th by lookups in the window) is not on the page, and
    # the note's query lists it
    (("2026-11-04", "2026-11-04"), ["t24"], 1, ["t24"], NOTE.format(1),
     (" WHERE window_start >= TIMESTAMP '2026-11-04' AND window_start < TIMESTAMP '2026-11-04' + INTERVAL 1 DAY", 1),
     [("t00", 5, 0)]),
])
def test_the_cache_chart_draws_the_20_busiest_tenants_and_says_how_to_list_the_others(
        browser, many_tenants, days, panels, points, under_band, note, where, left_out):
    config, path = many_tenants
    opened = _open(browser, path, f"#from={days[0]}&to={days[1]}" if days else "")
    page = opened.page
    s = opened.state()["cache_hit_rate"]
    plot = "document.getElementById('plot-cache_hit_rate')"
    assert opened.errors == []
    assert s["points"] == points
    assert page.evaluate(f"({DRAWN_LABELS_JS['band']})({plot})") == panels
    assert page.evaluate(f"{plot}.layout.height") == 190 * len(panels) + 60
    assert page.evaluate(f"{plot}.data.filter(t => t.name.endsWith(' under the band')).map(t => t.name)") == \
        [f"{t} under the band" for t in under_band]
    more = page.locator("#more-cache_hit_rate")
    if note is None:
        assert not more.is_visible() and more.inner_text() == ""
        return
    assert more.is_visible()
    command = page.inner_text("#more-sql-cache_hit_rate")
    assert page.evaluate("document.getElementById('more-cache_hit_rate').textContent") == note + command
    sql = LEFT_OUT_SQL.format(*where)
    assert command == f'costline sql --max-rows 0 "{sql}"'
    # the query lists exactly the tenants left out: in DuckDB over the lake, and through `costline sql` itself
    con = open_lake(config)
    try:
        rows = con.execute(sql).fetchall()
    finally:
        con.close()
    assert [(t, n, h) for t, n, h, _rate in rows] == left_out
    import shlex

    from click.testing import CliRunner

    from costline.cli import _register_area_commands, cli

    _register_area_commands()
    argv = shlex.split(command)
    assert argv[:2] == ["costline", "sql"]
    res = CliRunner().invoke(cli, argv[1:], env={"COSTLINE_LAKE_PATH": str(config.lake.path), "COSTLINE_CONFIG": ""})
    assert res.exit_code == 0, res.output
    listed = [t for t in CAP_TENANTS if f" {t} " in f" {res.output} ".replace("\n", " ").replace("|", " ")]
    assert listed == sorted(t for t, *_ in left_out)
    page.close()


# --- the default view: the window up to the build day, whatever one skewed clock stamped -------------------------
def test_a_skewed_span_does_not_stretch_the_default_view_and_lower_bounds_are_marked(browser, tmp_path):
    """A week of Sonnet requests (2026-11-01..07, one an hour at $0.01), on 2026-11-07 three of them on a model the
    pricing table does not know, and one request each stamped 2000-01-01 and 2099-06-01 (clients' clocks). Built
    2026-11-08 01:00: the page opens on 2026-11-01..2026-11-08 (2000 is before the window, so not embedded; 2099 is
    embedded but outside the view, and counted); the unpriced day is marked a lower bound."""
    from test_dashboard_charts import _call, _hand_lake, _request

    requests, calls = [], []
    for i in range(7 * 24):
        t = dt.datetime(2026, 11, 1) + dt.timedelta(hours=i, minutes=3)
        requests.append(_request(f"r{i}", t, "mid", "app"))
        unknown = i >= 7 * 24 - 3
        calls.append(_call(f"c{i}", f"r{i}", t, model="claude-sonnet-5" if unknown else "claude-sonnet-4-6",
                           cost=None if unknown else 0.01, status="unknown_model" if unknown else "priced"))
    for name, t in (("early", dt.datetime(2000, 1, 1, 0, 5)), ("late", dt.datetime(2099, 6, 1, 12))):
        requests.append(_request(name, t, "mid", "app"))
        calls.append(_call(f"c-{name}", name, t))
    config = _hand_lake(tmp_path, requests, calls)
    opened = _open(browser, build_dashboard(config, tmp_path / "d.html",
                                            now=lambda: dt.datetime(2026, 11, 8, 1, tzinfo=dt.UTC)))
    page = opened.page
    assert opened.errors == []
    assert (page.input_value("#date-from"), page.input_value("#date-to")) == ("2026-11-01", "2026-11-08")
    for name in ("cost_per_success", "spend_per_app"):
        lo, hi = page.evaluate(f"document.getElementById('plot-{name}')._fullLayout.xaxis.range")
        assert lo >= "2026-10-31" and hi <= "2026-11-09", (name, lo, hi)
    note = page.inner_text("#range-note")
    # the 2099 day: a row each in cost per success, spend per app and traffic mix, 4 stages of the waterfall
    assert page.is_visible("#range-note") and note.startswith("7 rows lie outside the range shown (7 after 2026-11-08")
    # the 2026-11-07 bar and point are lower bounds: a note under each chart, and the reason on hover
    for name in ("spend_per_app", "cost_per_success"):
        caveat = page.inner_text(f"#caveat-{name}")
        assert "3 calls of models the pricing table does not know" in caveat, (name, caveat)
        assert "cost_usd IS NULL OR NOT isfinite(cost_usd)" in caveat
    texts = page.evaluate("document.getElementById('plot-spend_per_app').data.flatMap(t => t.text || [])")
    assert sorted(t for t in texts if t) == [
        "lower bound: 3 calls of models the pricing table does not know (priced $0)"]
    page.click("button[data-range='all']")
    page.wait_for_function("location.hash === '#from=2026-11-01&to=2099-06-01'")
    assert not page.is_visible("#range-note")
    page.close()
