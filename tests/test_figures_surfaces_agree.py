"""Every surface tells one story: the savings waterfall, tier_hourly, the cost-per-success chart, the traffic mix, the
cost_per_success_rise alert's source and the cost report agree on what a day cost and who answered.

Lakes are built as traffic reaches them (Recorder spans -> OTLP -> the processor's decode / flatten -> commit:
tests/figures_lake.py); late spans are a second commit of the same partition. Expected figures are computed here by
hand from this file's own price table, never with costline's pricing or SQL."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from figures_lake import lake_from_messages, query_lake
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costline.collectors import Recorder, RequestStampingProcessor
from costline.config import Config, HostingPeriod, LakeConfig, ModelPrice, PricingConfig
from costline.dashboards import chart_by_name, query_chart
from costline.jobs.cost_report import build_cost_report, run_cost_report
from costline.jobs.store import JobStore, open_jobs_lake
from costline.otlp import encode_sdk_spans_by_trace

D0 = dt.datetime(2026, 11, 2)  # naive UTC midnight
NOW = dt.datetime(2026, 11, 6, 12, tzinfo=dt.UTC)  # the dashboard's build clock
# USD per million tokens (input, output): this file's own table
HAIKU, SONNET, FABLE = (0.8, 4.0), (3.0, 15.0), (10.0, 50.0)
MODELS = (ModelPrice("claude-haiku-4-5", "budget", input_per_mtok=HAIKU[0], output_per_mtok=HAIKU[1]),
          ModelPrice("claude-sonnet-4-6", "mid", input_per_mtok=SONNET[0], output_per_mtok=SONNET[1]),
          ModelPrice("claude-fable-5", "frontier", input_per_mtok=FABLE[0], output_per_mtok=FABLE[1]))
#: the same table with the frontier twice as dear: a report priced with it is told apart from the lake's computation
DEAR = tuple(ModelPrice(m.model, m.tier, input_per_mtok=2 * m.input_per_mtok, output_per_mtok=2 * m.output_per_mtok)
             if m.tier == "frontier" else m for m in MODELS)


def usd(price: tuple[float, float], inp: int, out: int) -> float:
    return (inp * price[0] + out * price[1]) / 1e6


def _ns(t: dt.datetime) -> int:
    return int(t.replace(tzinfo=dt.UTC).timestamp() * 1e9)


def config(tmp_path, *, models=MODELS, hosting=()) -> Config:
    return Config(lake=LakeConfig(path=tmp_path / "lake"),
                  pricing=PricingConfig(models=models, hosting=hosting, student_usd_per_hour=0.0))


class Traffic:
    """A Recorder on a clock that moves 1 ms per event; :meth:`commit` writes the spans finished since the last
    commit as the next batch of the partition (a later commit: spans that arrived late)."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(RequestStampingProcessor())
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.t = _ns(D0)
        self.rec = Recorder(self.provider, now=self._now)
        self.offset = 0

    def _now(self) -> int:
        self.t += 1_000_000
        return self.t

    def at(self, when: dt.datetime) -> Recorder:
        self.t = _ns(when)
        return self.rec

    def commit(self, cfg: Config, keep=lambda span: True) -> list:
        """Commit the finished spans ``keep`` accepts; returns the others (to commit later, late)."""
        self.provider.force_flush()
        spans = list(self.exporter.get_finished_spans())
        self.exporter.clear()
        self.commit_spans(cfg, [s for s in spans if keep(s)])
        return [s for s in spans if not keep(s)]

    def commit_spans(self, cfg: Config, spans: list) -> None:
        messages = [value for _trace, value in encode_sdk_spans_by_trace(spans)]
        assert lake_from_messages(messages, cfg, first_offset=self.offset) > 0
        self.offset += len(messages)


def budget_request(rec: Recorder, inp: int = 1000, out: int = 200) -> None:
    with rec.request(task_type="faq", tenant="acme") as r:
        with r.call("anthropic", "claude-haiku-4-5", "budget") as c:
            c.usage(inp, out)
        r.accept()


def waterfall(cfg: Config, day: str = "2026-11-02") -> dict[str, float]:
    con = open_jobs_lake(cfg)
    try:
        data = query_chart(con, chart_by_name("savings_waterfall"), cfg, lambda: NOW)
    finally:
        con.close()
    assert data.status == "ok", data.message
    return {stage: cost for d, _step, stage, cost in data.rows if str(d) == day}


def store_report(cfg: Config, *, at: dt.datetime, models=DEAR) -> None:
    """A whole-day report of D0 made at ``at``, priced with ``models`` (DEAR: its baseline is twice the lake's)."""
    run_cost_report(config_like(cfg, models), since=D0, until=D0 + dt.timedelta(days=1), now=lambda: at)


def config_like(cfg: Config, models) -> Config:
    return Config(lake=cfg.lake, pricing=PricingConfig(models=models, hosting=cfg.pricing.hosting,
                                                       student_usd_per_hour=0.0))


# -- 1. the waterfall shows a stored day only while the lake's figures of it are the report's ------------------------

PAID, FRONTIER = usd(HAIKU, 1000, 200), usd(FABLE, 1000, 200)  # .0016 paid, .02 on the frontier; DEAR: .04


def test_late_requests_of_a_reported_day_make_the_waterfall_compute_it_afresh(tmp_path):
    """3 budget requests on D0, a whole-day report of D0 made after midnight (priced DEAR: baseline 3 x .04 = .12),
    shown as stored; then 2 requests of D0 land late: the day is 5 requests, baseline 5 x .02 = .10, paid 5 x .0016
    = .008, computed from the lake."""
    cfg = config(tmp_path)
    traffic = Traffic()
    for h in (9, 10, 11):
        budget_request(traffic.at(D0 + dt.timedelta(hours=h)))
    traffic.commit(cfg)
    store_report(cfg, at=dt.datetime(2026, 11, 3, 0, 30, tzinfo=dt.UTC))
    assert waterfall(cfg) == pytest.approx({"baseline": 3 * 2 * FRONTIER, "routing": 3 * PAID, "cache": 3 * PAID,
                                            "student": 3 * PAID})
    # the figures the report was computed from, per day (on each stage's row)
    days = query_lake(cfg, "SELECT DISTINCT day, requests, cache_hits, calls, call_cost_usd, hosting_usd "
                           "FROM cost_report_days")
    assert days == [(dt.date(2026, 11, 2), 3, 0, 3, pytest.approx(3 * PAID), 0.0)]
    for h in (20, 21):
        budget_request(traffic.at(D0 + dt.timedelta(hours=h)))
    traffic.commit(cfg)
    assert waterfall(cfg) == pytest.approx({"baseline": 5 * FRONTIER, "routing": 5 * PAID, "cache": 5 * PAID,
                                            "student": 5 * PAID})


def test_a_late_call_of_a_reported_request_makes_the_waterfall_compute_the_day_afresh(tmp_path):
    """One request: Haiku's answer rejected (1000 + 200: .0016 paid), redone on Fable (1000 + 200: .02). The report
    was made before Fable's call span landed (priced DEAR): it saw one budget call. Once the call lands the day is
    computed: baseline is Fable's answering attempt .02, paid .0016 + .02."""
    cfg = config(tmp_path)
    traffic = Traffic()
    with traffic.at(D0 + dt.timedelta(hours=9)).request(task_type="faq", tenant="acme") as r:
        with r.call("anthropic", "claude-haiku-4-5", "budget") as c:
            c.usage(1000, 200)
        r.attempt_rejected("budget", "validator")
        with r.call("anthropic", "claude-fable-5", "frontier") as c:
            c.usage(1000, 200)
        r.accept()
    late = traffic.commit(cfg, keep=lambda s: "fable" not in s.name)
    assert len(late) == 1
    store_report(cfg, at=dt.datetime(2026, 11, 3, 0, 30, tzinfo=dt.UTC))
    assert waterfall(cfg)["baseline"] == pytest.approx(2 * FRONTIER)  # stored: Haiku's call on a DEAR frontier
    traffic.commit_spans(cfg, late)
    got = waterfall(cfg)
    assert got["baseline"] == pytest.approx(FRONTIER)
    assert got["student"] == pytest.approx(PAID + FRONTIER)


def test_a_report_made_before_its_day_ended_is_not_shown_for_that_day(tmp_path):
    """A report over D0 whole made at D0 20:00 (priced DEAR) may have missed the rest of the day: the waterfall
    computes D0 (baseline 2 x .02), even though no span came after it."""
    cfg = config(tmp_path)
    traffic = Traffic()
    for h in (9, 10):
        budget_request(traffic.at(D0 + dt.timedelta(hours=h)))
    traffic.commit(cfg)
    store_report(cfg, at=dt.datetime(2026, 11, 2, 20, tzinfo=dt.UTC))
    assert waterfall(cfg) == pytest.approx({"baseline": 2 * FRONTIER, "routing": 2 * PAID, "cache": 2 * PAID,
                                            "student": 2 * PAID})


def test_a_stored_report_without_the_days_figures_is_computed_from_the_lake(tmp_path):
    """A report stored before cost_report_days held the figures it was computed from (its file has only report_id,
    generated_at, day, step, stage, cost_usd) cannot be checked: the waterfall computes its day (2 x .02), not its
    stored $9.99."""
    cfg = config(tmp_path)
    traffic = Traffic()
    for h in (9, 10):
        budget_request(traffic.at(D0 + dt.timedelta(hours=h)))
    traffic.commit(cfg)
    store = JobStore(cfg.lake.path).init()
    made = dt.datetime(2026, 11, 3, 2)
    store.write("cost_reports", "cost-old", [{"report_id": "cost-old", "generated_at": made, "since": D0,
                                              "until": D0 + dt.timedelta(days=1), "days": 1.0, "step": n,
                                              "stage": stage, "requests": 2, "total_cost_usd": 9.99}
                                             for n, stage in enumerate(("baseline", "routing", "cache", "student"), 1)])
    old = pa.table({"report_id": ["cost-old"] * 4, "generated_at": pa.array([made] * 4, pa.timestamp("us")),
                    "day": pa.array([D0.date()] * 4, pa.date32()), "step": [1, 2, 3, 4],
                    "stage": ["baseline", "routing", "cache", "student"], "cost_usd": [9.99] * 4})
    pq.write_table(old, store.table_dir("cost_report_days") / "cost-old.parquet")
    assert waterfall(cfg) == pytest.approx({"baseline": 2 * FRONTIER, "routing": 2 * PAID, "cache": 2 * PAID,
                                            "student": 2 * PAID})


# -- 2. a request stamped as served by the cache that made a paid call is no cache answer, on every surface ----------

MID = usd(SONNET, 1000, 1000)  # .018
BUDGET = usd(HAIKU, 1000, 1000)  # .0048


def _stamped_cache(tmp_path, calls) -> Config:
    """One plain budget request at 09:00 (1000 + 1000: .0048), and at 09:01 a request whose lookup hit and that the
    app stamps served_by("cache") after ``calls``: (model, tier, tokens or None, failed)."""
    cfg = config(tmp_path)
    traffic = Traffic()
    with traffic.at(D0 + dt.timedelta(hours=9)).request(task_type="faq", tenant="acme") as r:
        with r.call("anthropic", "claude-haiku-4-5", "budget") as c:
            c.usage(1000, 1000)
        r.accept()
    with traffic.at(D0 + dt.timedelta(hours=9, minutes=1)).request(task_type="faq", tenant="acme") as r:
        with r.cache_lookup(namespace="acme") as lk:
            lk.result(True, 0.97)
        for model, tier, tokens, failed in calls:
            with r.call("anthropic", model, tier) as c:
                if tokens:
                    c.usage(*tokens)
                if failed:
                    c.error("overloaded_error")
        r.served_by("cache")
        r.accept()
    traffic.commit(cfg)
    return cfg


SONNET_CALL = ("claude-sonnet-4-6", "mid", (1000, 1000), False)
HAIKU_CALL = ("claude-haiku-4-5", "budget", (1000, 1000), False)


#: (the calls of the cache-stamped request, the tier it answered on, what its calls cost, the report's cache hits)
STAMPED_CACHE_CASES = [
    # the cached answer rejected, the question redone on mid: mid answered and is paid for
    ((SONNET_CALL,), "mid", MID, 0),
    # budget's answer rejected too, then mid: the answering call is the last that succeeded
    ((HAIKU_CALL, SONNET_CALL), "mid", BUDGET + MID, 0),
    # a call that failed but was billed (tokens counted): no cache answer; its tier is the last call's
    ((("claude-sonnet-4-6", "mid", (1000, 1000), True),), "mid", MID, 0),
    # a call that failed and cost nothing: still the cache's answer, as the cost report counts it
    ((("claude-sonnet-4-6", "mid", None, True),), "cache", 0.0, 1),
    # no call at all: the cache's answer
    ((), "cache", 0.0, 1),
]


def test_a_stamped_cache_request_takes_the_cost_reports_classification(tmp_path):
    for n, (calls, tier, cost, report_hits) in enumerate(STAMPED_CACHE_CASES):
        cfg = _stamped_cache(tmp_path / str(n), calls)
        got = query_lake(cfg, "SELECT tier, call_cost_usd FROM requests ORDER BY ts")
        assert got == [("budget", pytest.approx(BUDGET)), (tier, pytest.approx(cost))], calls
        con = open_jobs_lake(cfg)
        try:
            rep = build_cost_report(con, cfg, since=D0, until=D0 + dt.timedelta(days=1))
        finally:
            con.close()
        assert rep.cache_hits == report_hits, calls
        assert rep.stages[-1].total_cost_usd == pytest.approx(BUDGET + cost), calls


def test_tier_hourly_the_charts_and_the_alert_source_agree_on_a_stamped_cache_request_that_paid(tmp_path):
    """The reviewer's case: budget .0048, and a cache-stamped request redone on mid, .018. The day is .0228 on every
    surface, mid has one success at .018, and no surface counts a cache answer (the cost report counts 0 hits)."""
    from costline.alerts.source import TIERS_SQL

    cfg = _stamped_cache(tmp_path, (SONNET_CALL,))
    hourly = query_lake(cfg, "SELECT tier, requests, successes, cost_usd FROM tier_hourly ORDER BY tier")
    assert hourly == [("budget", 1, 1, pytest.approx(BUDGET)), ("mid", 1, 1, pytest.approx(MID))]
    con = open_jobs_lake(cfg)
    try:
        charts = {name: query_chart(con, chart_by_name(name), cfg, lambda: NOW)
                  for name in ("cost_per_success", "traffic_mix")}
        alert = con.execute(TIERS_SQL, {"w": D0 + dt.timedelta(hours=9)}).fetchall()
        cols = [c[0] for c in con.description]
    finally:
        con.close()
    cps = [dict(zip(charts["cost_per_success"].columns, r)) for r in charts["cost_per_success"].rows]
    assert {r["tier"]: (r["successes"], r["cost_usd"]) for r in cps} == {
        "budget": (1, pytest.approx(BUDGET)), "mid": (1, pytest.approx(MID))}
    assert sum(r["cost_usd"] for r in cps) == pytest.approx(0.0228)
    mix = [dict(zip(charts["traffic_mix"].columns, r)) for r in charts["traffic_mix"].rows]
    assert sorted((r["tier"], r["requests"]) for r in mix) == [("budget", 1), ("mid", 1)]
    # what the cost_per_success_rise alert reads (it leaves the cache tier out): mid's .018 in the 09:00 hour
    by_tier = {r[cols.index("tier")]: r for r in alert}
    assert by_tier["mid"][cols.index("cost_usd")] == pytest.approx(MID)
    assert "cache" not in by_tier


def test_a_cache_answer_that_cost_something_is_in_the_cost_per_success_chart(tmp_path):
    """Three cache answers: two that cost nothing, one whose lookup embedded the question with a call of its own
    (50,000 tokens at $0.02 per million: $0.001). The chart shows the cache at $0.001 over its 3 successes; its
    costs add up to tier_hourly's ($0.001). A day of cache answers that cost nothing has no cache row."""
    emb = ModelPrice("text-embedding-3-small", "budget", provider="openai", input_per_mtok=0.02, output_per_mtok=0.0)
    cfg = config(tmp_path, models=MODELS + (emb,))
    traffic = Traffic()
    for day, embeds in ((0, (False, False, True)), (1, (False,))):
        for i, embed in enumerate(embeds):
            with traffic.at(D0 + dt.timedelta(days=day, hours=9, minutes=i)).request(task_type="faq",
                                                                                   tenant="acme") as r:
                with r.cache_lookup(namespace="acme") as lk:
                    lk.result(True, 0.97)
                if embed:
                    with r.call("openai", "text-embedding-3-small", operation="embeddings") as c:
                        c.usage(input_tokens=50_000, output_tokens=0)
                r.served_by("cache")
                r.accept()
    traffic.commit(cfg)
    con = open_jobs_lake(cfg)
    try:
        chart = query_chart(con, chart_by_name("cost_per_success"), cfg, lambda: NOW)
    finally:
        con.close()
    rows = [dict(zip(chart.columns, r)) for r in chart.rows]
    assert [(str(r["day"]), r["tier"], r["successes"]) for r in rows] == [("2026-11-02", "cache", 3)]
    assert rows[0]["cost_usd"] == pytest.approx(0.001)
    assert rows[0]["cost_per_success"] == pytest.approx(0.001 / 3)
    assert query_lake(cfg, "SELECT sum(cost_usd) FROM tier_hourly") == [(pytest.approx(0.001),)]


# -- 3. the report's summary: "1 day", hosted days to two decimals ----------------------------------------------------

#: (the range's start after D0 and its length, what its summary says); the GPU is hosted from 05:00 to the end of
#: D0: 19 of 24 hours, 19 / 24 = 0.791666... days; 2 student requests / 0.7917 = 2.53 a hosted day
SUMMARY_CASES = [
    (0, 1, ("(1 day; 0 cache hits, 2 on the student)", "(3 per day hosted; hosted 0.79 of 1 day)")),
    (0, 2, ("(2 days; 0 cache hits, 2 on the student)", "(3 per day hosted; hosted 0.79 of 2 days)")),
    (0, 1.5, ("(1.5 days; 0 cache hits, 2 on the student)", "hosted 0.79 of 1.5 days)")),
    (0, 25 / 24, ("(1.04 days; 0 cache hits", "hosted 0.79 of 1.04 days)")),  # 25 hours: 1.041666... days
    # [09:00, 09:05): 5 / 1440 = 0.003472... days, not "0 days"
    (9 / 24, 5 / 1440, ("(0.0035 days; 0 cache hits, 2 on the student)",)),
]


def test_the_summary_says_days_in_words_and_hosted_days_to_two_decimals(tmp_path):
    cfg = config(tmp_path, hosting=(HostingPeriod(2.74, since="2026-11-02T05:00:00Z", until="2026-11-03T00:00:00Z"),))
    traffic = Traffic()
    rec = traffic.at(D0 + dt.timedelta(hours=9))
    for _ in range(2):
        with rec.request(task_type="faq", tenant="acme") as r:
            with r.call("vllm", "costline-student", "student") as c:
                c.usage(800, 200)
            r.accept()
    traffic.commit(cfg)
    con = open_jobs_lake(cfg)
    try:
        for start, days, wants in SUMMARY_CASES:
            since = D0 + dt.timedelta(days=start)
            rep = build_cost_report(con, cfg, since=since, until=since + dt.timedelta(days=days))
            for want in wants:
                assert want in rep.to_text() and want in rep.to_markdown(), (days, rep.to_text().splitlines()[-1])
    finally:
        con.close()
