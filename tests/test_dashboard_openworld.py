"""The dashboard over lakes built the way production builds them: OTel SDK spans encoded as OTLP, fed through the
real processor (``Processor.handle`` / ``flush_partition``, its span-time window included), read through the
lake's views. Expected values are worked out by hand in the comments, never with costline's own SQL or pricing.

Covers what a review found: the savings waterfall's days reach the student's idle hosting hours before the first
request and after the last; requests whose span time was nulled are counted in the cost charts' lower-bound note;
``--refresh`` / ``refresh_s`` must be a finite number of seconds (at least 1); traffic_mix gives no NaN share;
look-alike tenant, app and namespace names are quoted with visible escapes; ``costline sql`` takes a chart's SQL
(which starts with ``--``)."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from processor_rig import claimed_processor

from costline.cli import _register_area_commands, cli
from costline.config import DEFAULT_MODELS, Config, HostingPeriod, LakeConfig, ModelPrice, PricingConfig
from costline.dashboards import DashboardError, DashboardServer, chart_by_name
from costline.dashboards.build import bounded_sql, build_page, query_chart
from costline.dashboards.settings import DashboardConfig
from costline.errors import ConfigError
from costline.lake import open_lake
from costline.otlp import encode_sdk_spans_by_trace

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)  # the build's clock and every Kafka record's timestamp
ROOT = Path(__file__).resolve().parents[1]
#: A model priced by hand: 1,000,000 input tokens $1, 1,000,000 output tokens $5.
HAND = ModelPrice("handpriced-budget", "budget", input_per_mtok=1.0, output_per_mtok=5.0)
STUDENT_CALL = dict(model="costline-student", provider="vllm", tier="student", inp=500, out=50)


def H(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 11, day, hour, minute)


# --- a compact span world (OTel SDK) and the real processor ----------------------------------------------------
class World:
    """Spans as an instrumented app sends them: one TracerProvider per service.name, finished spans kept."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.providers: dict[str, TracerProvider] = {}

    def _tracer(self, svc: str) -> Any:
        if svc not in self.providers:
            p = TracerProvider(resource=Resource.create({"service.name": svc}))
            p.add_span_processor(SimpleSpanProcessor(self.exporter))
            self.providers[svc] = p
        return self.providers[svc].get_tracer("handmade")

    def request(self, t: dt.datetime, *, tenant: str, tier: str, svc: str = "app", calls: tuple = (),
                lookup: dict | None = None) -> None:
        """A ``costline.request`` span with its model calls (dicts: model, provider, tier, inp, out) and at most
        one cache lookup (dict of ``costline.cache.*`` attributes: hit, namespace, reject_reason)."""
        ns = lambda x: int(x.replace(tzinfo=dt.UTC).timestamp() * 1e9)  # noqa: E731
        tr, rid = self._tracer(svc), uuid.uuid4().hex
        hit = bool(lookup and lookup.get("hit"))
        root = tr.start_span("costline.request", start_time=ns(t), attributes={
            "costline.request.id": rid, "costline.task_type": "faq", "costline.cache.hit": hit,
            "costline.attempts": len(calls), "costline.escalations": 0, "costline.success": True,
            "costline.tenant": tenant, "costline.tier": tier})
        ctx = otel_trace.set_span_in_context(root)
        at = t + dt.timedelta(milliseconds=1)
        if lookup is not None:
            attrs = {"costline.request.id": rid, "costline.cache.hit": hit,
                     "costline.cache.namespace": lookup.get("namespace", tenant),
                     "costline.cache.similarity": 0.97 if hit else 0.9}
            if lookup.get("reject_reason"):
                attrs["costline.cache.reject_reason"] = lookup["reject_reason"]
            s = tr.start_span("costline.cache.lookup", context=ctx, start_time=ns(at), attributes=attrs)
            at += dt.timedelta(milliseconds=5)
            s.end(end_time=ns(at))
        for c in calls:
            a = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": c.get("provider", "anthropic"),
                 "gen_ai.request.model": c["model"], "costline.request.id": rid,
                 "gen_ai.usage.input_tokens": c["inp"], "gen_ai.usage.output_tokens": c["out"]}
            if c.get("tier"):
                a["costline.tier"] = c["tier"]
            s = tr.start_span(f"chat {c['model']}", context=ctx, kind=SpanKind.CLIENT, start_time=ns(at),
                              attributes=a)
            at += dt.timedelta(milliseconds=200)
            s.end(end_time=ns(at))
        root.end(end_time=ns(at + dt.timedelta(milliseconds=1)))

    def feed(self, config: Config) -> None:
        """Every span so far through the processor (Kafka record timestamp: NOW), then flushed to the lake."""
        for p in self.providers.values():
            p.force_flush()
        proc = claimed_processor(config, wall_clock=lambda: NOW.timestamp())
        for offset, (_trace, value) in enumerate(encode_sdk_spans_by_trace(self.exporter.get_finished_spans())):
            proc.handle(0, offset, None, value, [], now=0.0, timestamp_ms=int(NOW.timestamp() * 1000))
        proc.flush_partition(0)
        assert proc.dlq.sent == []


def _config(lake: Path, *hosting: HostingPeriod) -> Config:
    return Config(lake=LakeConfig(path=lake), pricing=PricingConfig(models=DEFAULT_MODELS + (HAND,), hosting=hosting))


def _charts(config: Config, *names: str) -> dict[str, Any]:
    con = open_lake(config)
    try:
        return {n: query_chart(con, chart_by_name(n), config, now=lambda: NOW) for n in names}
    finally:
        con.close()


def _col(data: Any, column: str) -> list:
    i = data.columns.index(column)
    return [row[i] for row in data.rows]


# --- 1. the savings waterfall bills the student's hosting before the first request and after the last ----------
# One student request at 10:00 (its call has no token price: the student is paid by the hour), hosting at
# $2.50/hour. Every chart's total is the hosted hours x 2.50, wherever they lie against the request.
HOSTING_CASES = {
    # a GPU left running over a quiet weekend after the last request: 11-06 09:00 -> 11-09 09:00 = 72 h
    "after the last request": (H(6, 10), "2026-11-06T09:00:00Z", "2026-11-09T09:00:00Z", 72 * 2.5),
    # started two days before the first request: 11-04 12:00 -> 11-06 12:00 = 48 h
    "before the first request": (H(6, 10), "2026-11-04T12:00:00Z", "2026-11-06T12:00:00Z", 48 * 2.5),
    # a schedule dated past the build day (11-20): only 11-18 00:00 -> 11-21 00:00 is billed yet = 72 h
    "schedule past the build day": (H(18, 10), "2026-11-18T00:00:00Z", "2026-11-25T00:00:00Z", 72 * 2.5),
}


@pytest.mark.parametrize("case", list(HOSTING_CASES))
def test_the_waterfall_and_the_cost_charts_bill_every_hosted_hour(tmp_path: Path, case: str) -> None:
    at, since, until, hand = HOSTING_CASES[case]
    cfg = _config(tmp_path / "lake", HostingPeriod(2.5, 1, since, until))
    w = World()
    w.request(at, tenant="globex", tier="student", svc="globex-app", calls=(STUDENT_CALL,))
    w.feed(cfg)
    got = _charts(cfg, "savings_waterfall", "spend_per_app", "cost_per_success")
    wf = got["savings_waterfall"]
    student = sum(r[3] for r in wf.rows if r[2] == "student")
    assert student == pytest.approx(hand, abs=1e-9), case
    assert sum(_col(got["spend_per_app"], "cost_usd")) == pytest.approx(hand, abs=1e-9)
    assert sum(_col(got["cost_per_success"], "cost_usd")) == pytest.approx(hand, abs=1e-9)


# --- the open world: skewed clocks, look-alike names, an idle hosting day ----------------------------------------
# tenant -> the cache hit-rate panel's name, by hand: JSON-quoted with \uXXXX escapes where a character does not print
TENANT_LABELS = {
    "acme": "acme",
    "acme\u200b": '"acme\\u200b"',             # zero-width space
    "\u202eemca": '"\\u202eemca"',             # right-to-left override
    "ac\u00adme": '"ac\\u00adme"',             # soft hyphen
    "\ufeffacme": '"\\ufeffacme"',             # byte-order mark
    "a\u2066cme\u2069": '"a\\u2066cme\\u2069"',  # bidi isolate
    "acme\u00a0": '"acme\\u00a0"',             # no-break space
    "x\U000e0001": '"x\\udb40\\udc01"',        # a tag character (past U+FFFF: its UTF-16 pair)
    "caf\u00e9 \U0001f389": "caf\u00e9 \U0001f389",  # prints as it is: not quoted
    "(none)": '"(none)"',
}
# service.name -> its spend_per_app series
SERVICE_LABELS = {
    "acme-app": "acme-app",
    "acme-app\u200b": '"acme-app\\u200b"',
    "\u202eppa-emca": '"\\u202eppa-emca"',
    "acme-app\u2060": '"acme-app\\u2060"',     # word joiner
    "(idle student hosting)": '"(idle student hosting)"',
}
# cache namespace -> its cache_rejections series name
NAMESPACE_LABELS = {
    "acme": "acme",
    "acme\u200b": '"acme\\u200b"',
    "\u202eemca": '"\\u202eemca"',
}
SKEWED = (NOW.replace(tzinfo=None) + dt.timedelta(days=3), dt.datetime(1999, 1, 1, 9))
HOSTING = HostingPeriod(2.74, 1, "2026-11-11T00:00:00Z", "2026-11-12T00:00:00Z")  # 11-11: idle hours only


def _open_world(lake: Path, *, dated: bool = True) -> Config:
    cfg = _config(lake, *((HOSTING,) if dated else ()))
    w = World()
    if dated:
        for i, tenant in enumerate(TENANT_LABELS):
            w.request(H(10, 9, i), tenant=tenant, tier="cache", svc="cache-app", lookup={"hit": True})
        for i, svc in enumerate(SERVICE_LABELS):
            w.request(H(10, 10, i), tenant="acme", tier="budget", svc=svc, calls=(dict(model=HAND.model, inp=10, out=10),))
        for i, ns in enumerate(NAMESPACE_LABELS):
            w.request(H(10, 11, i), tenant="acme", tier="budget", svc="acme-app",
                      calls=(dict(model=HAND.model, inp=10, out=10),),
                      lookup={"hit": False, "namespace": ns, "reject_reason": "number"})
    # two requests whose span time the processor nulls: 3 days ahead of their Kafka record, and 1999;
    # each call 1,000,000 in x $1 + 1,000,000 out x $5 = $6, so $12 in all
    for t in SKEWED:
        w.request(t, tenant="skewed", tier="budget", svc="skewed-app",
                  calls=(dict(model=HAND.model, inp=1_000_000, out=1_000_000),))
    w.feed(cfg)
    return cfg


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Config:
    return _open_world(tmp_path_factory.mktemp("openworld") / "lake")


# --- 2. requests in no day are counted in the cost charts' lower-bound note -------------------------------------
@pytest.mark.parametrize("name", ["cost_per_success", "spend_per_app"])
def test_cost_charts_count_the_requests_in_no_day(world: Config, name: str) -> None:
    con = open_lake(world)
    try:  # the premise, off the raw rows: both skewed requests are kept with ts NULL and a ts: flag
        flags = con.execute("SELECT data_quality FROM requests_raw WHERE ts IS NULL ORDER BY 1").fetchall()
    finally:
        con.close()
    assert len(flags) == 2 and all(re.search(r"(^|,)ts:", q) for (q,) in flags)
    data = _charts(world, name)[name]
    assert data.status == "ok"
    assert data.undated == {"requests": 2, "cost_usd": pytest.approx(12.0)}
    # the page carries it with the query that lists them; that query lists exactly those two
    page = build_page(world, now=lambda: NOW)
    payload = json.loads(re.search(r'<script[^>]*id="costline-data"[^>]*>(.*?)</script>', page, re.S).group(1))
    chart = next(c for c in payload["charts"] if c["name"] == name)
    assert chart["undated"] == {"requests": 2, "cost_usd": pytest.approx(12.0)}
    con = open_lake(world)
    try:
        listed = con.execute(chart["options"]["undated_sql"]).fetchall()
    finally:
        con.close()
    assert sorted((r[2], r[-1]) for r in listed) == [("skewed", pytest.approx(6.0))] * 2


def test_a_cost_chart_with_only_undated_requests_says_so(tmp_path: Path) -> None:
    cfg = _open_world(tmp_path / "lake", dated=False)
    data = _charts(cfg, "spend_per_app")["spend_per_app"]
    assert data.status == "empty"
    assert "2 requests costing $12.0000" in data.message and "WHERE ts IS NULL" in data.message


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="no Chromium at /usr/bin/chromium: apt-get install -y chromium")
def test_the_page_notes_the_requests_in_no_day_under_both_cost_charts(world: Config, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    path = tmp_path / "d.html"
    path.write_text(build_page(world, now=lambda: NOW), encoding="utf-8")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page()
            page.goto(path.as_uri())
            page.wait_for_function("document.body.dataset.drawn", timeout=20_000)
            for name in ("cost_per_success", "spend_per_app"):
                note = page.locator(f"#caveat-{name}")
                assert note.is_visible(), name
                assert "2 requests costing $12.0000 are in no day" in note.inner_text()
                code = page.inner_text(f"#caveat-undated-sql-{name}")
                assert code.startswith("costline sql --max-rows 0 \"SELECT") and "WHERE ts IS NULL" in code
        finally:
            browser.close()


# --- 4. no NaN share on a day of idle hosting only --------------------------------------------------------------
def test_traffic_mix_share_is_null_not_nan_on_an_idle_hosting_day(world: Config) -> None:
    con = open_lake(world)
    try:
        rows = con.execute(bounded_sql(chart_by_name("traffic_mix"), world, now=lambda: NOW)).fetchall()
    finally:
        con.close()
    by_day = {(str(r[0]), r[1]): (r[2], r[3]) for r in rows}
    # 11-11: the student's 24 idle hours, no request: no share to give
    assert by_day[("2026-11-11", "student")] == (0, None)
    # 11-10: 10 cache requests, 5 + 3 budget ones: 10/18 and 8/18
    assert by_day[("2026-11-10", "cache")] == (10, pytest.approx(10 / 18))
    assert by_day[("2026-11-10", "budget")] == (8, pytest.approx(8 / 18))
    assert not any(isinstance(r[3], float) and math.isnan(r[3]) for r in rows)


# --- 5. look-alike names are quoted with visible escapes ---------------------------------------------------------
@pytest.mark.parametrize("chart,column,labels", [
    ("cache_hit_rate", "tenant", TENANT_LABELS),
    ("spend_per_app", "service", SERVICE_LABELS),
    ("cache_rejections", "namespace", NAMESPACE_LABELS),
], ids=["tenant", "service", "namespace"])
def test_look_alike_names_are_quoted_with_escapes(world: Config, chart: str, column: str, labels: dict) -> None:
    data = _charts(world, chart)[chart]
    assert data.status == "ok", data.message
    shown = set(_col(data, column))
    for name, label in labels.items():
        assert label in shown, (name, label, shown)
        if label != name:
            assert json.loads(label) == name  # still JSON: it reads back as the name it stands for
    if chart == "spend_per_app":
        # and nothing else: the cache requests' app and the idle hosting hours (the skewed app is in no day)
        assert shown == set(labels.values()) | {"cache-app", "(idle student hosting)"}


# --- 3. --refresh / refresh_s: a finite number of seconds, at least 1 ---------------------------------------------
BAD_REFRESH = ["nan", "inf", "-inf", "1e-9", "0.5", "0", "-1"]


def _cli(*args: str, env: dict | None = None) -> Any:
    _register_area_commands()
    return CliRunner().invoke(cli, list(args), env={"COSTLINE_CONFIG": "", **(env or {})}, catch_exceptions=False)


@pytest.mark.parametrize("value", BAD_REFRESH)
def test_bad_refresh_is_refused_by_the_cli(tmp_path: Path, value: str) -> None:
    res = _cli("dashboard", "--serve", "--port", "0", "--refresh", value,
               env={"COSTLINE_LAKE_PATH": str(tmp_path / "no-lake")})
    assert res.exit_code == 2, res.output
    assert "--refresh" in res.output and "at least 1" in res.output


@pytest.mark.parametrize("value", BAD_REFRESH)
def test_bad_refresh_is_refused_by_the_server(tmp_path: Path, value: str) -> None:
    with pytest.raises(DashboardError, match=r"--refresh.*at least 1"):
        DashboardServer(Config(lake=LakeConfig(path=tmp_path)), port=0, refresh_s=float(value))
    with pytest.raises(DashboardError, match=r"\[dashboard\] refresh_s.*at least 1"):
        DashboardServer(Config(lake=LakeConfig(path=tmp_path), dashboard=DashboardConfig(refresh_s=float(value))),
                        port=0)
    for fine in (1, 1.5, 60):  # a second or more is taken
        with DashboardServer(Config(lake=LakeConfig(path=tmp_path)), port=0, refresh_s=fine, build=lambda: "p") as s:
            assert s.refresh_s == float(fine)


# NaN, infinity, 0 and below were refused by the config before; these were taken, then broke every page.
@pytest.mark.parametrize("value", ["1e-9", "0.5"])
def test_a_refresh_under_a_second_is_refused_in_the_config(tmp_path: Path, value: str) -> None:
    from costline.config import load_config

    toml = tmp_path / "c.toml"
    toml.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"refresh_s.*at least 1"):
        load_config(toml, env={"COSTLINE_DASHBOARD_REFRESH_S": value})


# --- 6. costline sql takes a chart's SQL, which starts with a comment ----------------------------------------------
@pytest.fixture(scope="module")
def world_toml(world: Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    toml = tmp_path_factory.mktemp("cfg") / "c.toml"
    toml.write_text(f'[lake]\npath = "{world.lake.path}"\n[[pricing.hosting]]\nusd_per_hour = 2.74\n'
                    f'since = "{HOSTING.since}"\nuntil = "{HOSTING.until}"\n', encoding="utf-8")
    return toml


@pytest.mark.parametrize("shape", ["query alone", "options after", "options before", "after --"])
def test_costline_sql_runs_a_charts_sql(world_toml: Path, shape: str) -> None:
    printed = _cli("--config", str(world_toml), "dashboard", "--sql", "traffic_mix")
    assert printed.exit_code == 0 and printed.output.startswith("-- ")
    q = printed.output
    args = {"query alone": [q], "options after": [q, "--format", "csv"], "options before": ["--format", "csv", q],
            "after --": ["--format", "csv", "--", q]}[shape]
    res = _cli("--config", str(world_toml), "sql", *args)
    assert res.exit_code == 0, res.output
    if shape != "query alone":
        assert "2026-11-11,student,0,\n" in res.output  # the idle hosting day (share NULL)


@pytest.mark.parametrize("args,expected_code,expected", [
    (["-- a comment\nSELECT 1 AS x", "--format", "csv"], 0, "x\n1\n"),
    (["--format", "csv", "--\tcomment\nSELECT 2 AS y"], 0, "y\n2\n"),
    (["-- nothing but a comment"], 1, "no statement to run"),
])
def test_costline_sql_tells_a_query_from_an_option(world_toml: Path, args: list, expected_code: int,
                                                   expected: str) -> None:
    res = _cli("--config", str(world_toml), "sql", *args)
    assert res.exit_code == expected_code, res.output
    assert expected in res.output
    # options still parse as before around it: an unknown one is refused, --opt=value is an option
    assert _cli("--config", str(world_toml), "sql", "--bogus", "SELECT 1").exit_code == 2
    assert _cli("--config", str(world_toml), "sql", "--format=csv", "SELECT 3 AS z").output == "z\n3\n"


def test_docs_give_the_chart_sql_command_that_works() -> None:
    text = (ROOT / "docs" / "dashboard.md").read_text(encoding="utf-8")
    assert 'costline sql "$(cat dashboards/' not in text
    assert 'costline sql -- "$(costline dashboard --sql <name>)"' in text
