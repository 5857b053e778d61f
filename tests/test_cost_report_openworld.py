"""The cost report and the savings waterfall on lakes built the way traffic reaches them: Recorder spans -> OTLP ->
the processor's decode / flatten -> commit (tests/figures_lake.py). Expected figures are computed here by hand from
this file's own price table, never with costline's pricing or SQL."""

from __future__ import annotations

import datetime as dt

import pytest
from figures_lake import lake_from_sdk_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costline.collectors import Recorder, RequestStampingProcessor
from costline.config import Config, HostingPeriod, LakeConfig, ModelPrice, PricingConfig
from costline.dashboards import chart_by_name, query_chart
from costline.jobs.cost_report import build_cost_report, run_cost_report
from costline.jobs.errors import NoDataError
from costline.jobs.store import open_jobs_lake

D0 = dt.datetime(2026, 11, 2)  # naive UTC midnight
# USD per million tokens (input, output): this file's own table
HAIKU, FABLE, EMBED = (0.8, 4.0), (10.0, 50.0), (0.02, 0.0)
MODELS = (ModelPrice("claude-haiku-4-5", "budget", input_per_mtok=HAIKU[0], output_per_mtok=HAIKU[1]),
          ModelPrice("claude-sonnet-4-6", "mid", input_per_mtok=3.0, output_per_mtok=15.0),
          ModelPrice("claude-fable-5", "frontier", input_per_mtok=FABLE[0], output_per_mtok=FABLE[1]))
EMB_MODEL = ModelPrice("text-embedding-3-small", "budget", provider="openai", input_per_mtok=EMBED[0],
                       output_per_mtok=EMBED[1])


def usd(price: tuple[float, float], inp: int, out: int) -> float:
    return (inp * price[0] + out * price[1]) / 1e6


def _ns(t: dt.datetime) -> int:
    return int(t.replace(tzinfo=dt.UTC).timestamp() * 1e9)


class Traffic:
    """A Recorder on a clock that moves 1 ms per event, from where :meth:`at` puts it."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(RequestStampingProcessor())
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.t = _ns(D0)
        self.rec = Recorder(self.provider, now=self._now)

    def _now(self) -> int:
        self.t += 1_000_000
        return self.t

    def at(self, when: dt.datetime) -> Recorder:
        self.t = _ns(when)
        return self.rec

    def commit(self, cfg: Config) -> Config:
        self.provider.force_flush()
        assert lake_from_sdk_spans(self.exporter.get_finished_spans(), cfg) > 0
        return cfg


def config(tmp_path, *, models=MODELS, hosting=(), per_hour=0.0) -> Config:
    return Config(lake=LakeConfig(path=tmp_path / "lake"),
                  pricing=PricingConfig(models=models, hosting=hosting, student_usd_per_hour=per_hour))


def report(cfg: Config, since: dt.datetime, until: dt.datetime):
    con = open_jobs_lake(cfg)
    try:
        return build_cost_report(con, cfg, since=since, until=until)
    finally:
        con.close()


def stages(rep) -> dict[str, float]:
    return {s.stage: s.total_cost_usd for s in rep.stages}


def budget_request(rec: Recorder, inp: int = 1000, out: int = 200, task: str = "faq") -> None:
    with rec.request(task_type=task, tenant="acme") as r:
        with r.call("anthropic", "claude-haiku-4-5", "budget") as c:
            c.usage(inp, out)
        r.accept()


def test_embeddings_calls_are_carried_at_their_cost_and_are_no_requests(tmp_path):
    """10 chat requests on Haiku, 10 gateway embeddings calls of 50k tokens, 1 cache hit. Only the chat calls are
    repriced on the frontier; the embeddings cost what they cost in every stage, are no requests, and do not enter
    the average the cache hit is imputed with."""
    cfg = config(tmp_path, models=MODELS + (EMB_MODEL,))
    traffic = Traffic()
    rec = traffic.at(D0 + dt.timedelta(hours=10))
    for _ in range(10):
        budget_request(rec)
        with rec.call("openai", "text-embedding-3-small", operation="embeddings") as c:
            c.span.set_attribute("costline.tenant", "acme")
            c.usage(input_tokens=50_000, output_tokens=0)
    with rec.request(task_type="faq", tenant="acme") as r:
        with r.cache_lookup() as lk:
            lk.result(True, 0.97)
        r.accept()
    rep = report(traffic.commit(cfg), D0, D0 + dt.timedelta(days=1))
    chat_paid, chat_frontier = usd(HAIKU, 1000, 200), usd(FABLE, 1000, 200)  # .0016, .02
    emb = 10 * usd(EMBED, 50_000, 0)  # .01
    want = {"baseline": 10 * chat_frontier + emb + chat_frontier,  # the hit: the chat requests' average
            "routing": 10 * chat_paid + emb + chat_paid,
            "cache": 10 * chat_paid + emb,
            "student": 10 * chat_paid + emb}
    assert stages(rep) == pytest.approx(want)
    assert (rep.requests, rep.cache_hits) == (11, 1)
    assert rep.stages[3].cumulative_saving == pytest.approx(1 - 0.026 / 0.23)


def test_a_rejected_attempt_is_not_repriced_in_the_stages_of_a_world_without_it(tmp_path):
    """A: budget answer rejected (paid), frontier answered. B: student answer rejected, budget answered. C: an agent
    answering in two frontier calls. The all-frontier baseline makes one frontier attempt per request (C's two
    steps both); the routing stage has no student, so B is one budget call."""
    cfg = config(tmp_path)
    traffic = Traffic()
    rec = traffic.at(D0 + dt.timedelta(hours=10))
    with rec.request(task_type="faq", tenant="acme", routed_tier="budget") as r:
        with r.call("anthropic", "claude-haiku-4-5", "budget") as c:
            c.usage(1000, 400)
        r.attempt_rejected("budget", "low_confidence")
        with r.call("anthropic", "claude-fable-5", "frontier") as c:
            c.usage(1000, 400)
        r.accept()
    with rec.request(task_type="faq", tenant="acme", routed_tier="student") as r:
        with r.call("vllm", "costline-student", "student") as c:
            c.usage(1000, 400)
        r.attempt_rejected("student", "validator")
        with r.call("anthropic", "claude-haiku-4-5", "budget") as c:
            c.usage(1000, 400)
        r.accept()
    with rec.request(task_type="agent", tenant="acme", routed_tier="frontier") as r:
        for inp, out in ((2000, 100), (3000, 300)):
            with r.call("anthropic", "claude-fable-5", "frontier") as c:
                c.usage(inp, out)
        r.accept()
    rep = report(traffic.commit(cfg), D0, D0 + dt.timedelta(days=1))
    f, b = usd(FABLE, 1000, 400), usd(HAIKU, 1000, 400)  # .03, .0024
    agent = usd(FABLE, 2000, 100) + usd(FABLE, 3000, 300)  # .025 + .045
    paid = (b + f) + b + agent
    want = {"baseline": f + f + agent, "routing": paid, "cache": paid, "student": paid}
    assert stages(rep) == pytest.approx(want)
    assert rep.stages[1].cumulative_saving == pytest.approx(1 - paid / (2 * f + agent))


def _two_days(tmp_path, models=MODELS):
    """3 budget requests at 01:00 and 3 at 12:00 on each of D0 and D0 + 1 day."""
    traffic = Traffic()
    for day in (D0, D0 + dt.timedelta(days=1)):
        for hour in (1, 12):
            rec = traffic.at(day + dt.timedelta(hours=hour))
            for _ in range(3):
                budget_request(rec)
    return traffic.commit(config(tmp_path, models=models))


def _waterfall(cfg: Config) -> dict[tuple[str, str], float]:
    now = lambda: dt.datetime(2026, 11, 5, 3, tzinfo=dt.UTC)  # noqa: E731
    con = open_jobs_lake(cfg)
    try:
        data = query_chart(con, chart_by_name("savings_waterfall"), cfg, now)
    finally:
        con.close()
    assert data.status == "ok", data.message
    return {(str(day), stage): cost for day, _step, stage, cost in data.rows}


def test_the_waterfall_shows_whole_days_after_a_nightly_report(tmp_path):
    """A nightly report over [D0 02:00, D1 02:00) holds two part-days; the chart still shows D0 and D1 whole. A later
    report that covers D1 whole (priced with a frontier twice as dear) gives D1 its stored figures; D0 stays
    computed from the lake."""
    cfg = _two_days(tmp_path)
    day = (6 * usd(FABLE, 1000, 200), 6 * usd(HAIKU, 1000, 200))  # baseline .12, paid .0096
    run_cost_report(cfg, since=D0 + dt.timedelta(hours=2), until=D0 + dt.timedelta(days=1, hours=2),
                    now=lambda: dt.datetime(2026, 11, 4, 2, 5, tzinfo=dt.UTC))
    got = _waterfall(cfg)
    for d in ("2026-11-02", "2026-11-03"):
        assert got[(d, "baseline")] == pytest.approx(day[0])
        assert got[(d, "routing")] == pytest.approx(day[1])
        assert got[(d, "student")] == pytest.approx(day[1])
    dear = tuple(ModelPrice(m.model, m.tier, input_per_mtok=2 * m.input_per_mtok,
                            output_per_mtok=2 * m.output_per_mtok) if m.tier == "frontier" else m for m in MODELS)
    run_cost_report(config(tmp_path, models=dear), since=D0 + dt.timedelta(days=1), until=D0 + dt.timedelta(days=2),
                    now=lambda: dt.datetime(2026, 11, 4, 3, tzinfo=dt.UTC))
    got = _waterfall(cfg)
    assert sorted({d for d, _ in got}) == ["2026-11-02", "2026-11-03"]
    assert got[("2026-11-02", "baseline")] == pytest.approx(day[0])
    assert got[("2026-11-03", "baseline")] == pytest.approx(2 * day[0])
    assert got[("2026-11-03", "student")] == pytest.approx(day[1])


def test_a_cache_hit_that_still_called_a_model_pays_for_that_call(tmp_path):
    """A frontier request, and one whose cache hit failed the app's check so that it called the frontier too: both
    calls were paid, in the cache and student stages as in tier_hourly."""
    cfg = config(tmp_path)
    traffic = Traffic()
    rec = traffic.at(D0 + dt.timedelta(hours=10))
    for hit in (False, True):
        with rec.request(task_type="faq", tenant="acme") as r:
            if hit:
                with r.cache_lookup() as lk:
                    lk.result(True, 0.93)
                r.attempt_rejected("cache", "validator")
            with r.call("anthropic", "claude-fable-5", "frontier") as c:
                c.usage(2000, 400)
            r.accept()
    rep = report(traffic.commit(cfg), D0, D0 + dt.timedelta(days=1))
    each = usd(FABLE, 2000, 400)  # .04
    assert stages(rep) == pytest.approx(dict.fromkeys(("baseline", "routing", "cache", "student"), 2 * each))
    assert rep.cache_hits == 0


def test_a_window_with_hosting_and_no_request_is_a_report(tmp_path):
    """The GPU is booked for D0 all day; the only request is at 01:00. [22:00, 24:00) has no request but two hosted
    hours: a report of 0 requests with $2.74 x 2 in the student stage. A window with neither is no data."""
    cfg = config(tmp_path, hosting=(HostingPeriod(2.74, since="2026-11-02T00:00:00Z", until="2026-11-03T00:00:00Z"),))
    traffic = Traffic()
    budget_request(traffic.at(D0 + dt.timedelta(hours=1)))
    traffic.commit(cfg)
    rep = report(cfg, D0 + dt.timedelta(hours=22), D0 + dt.timedelta(days=1))
    assert rep.requests == 0 and rep.hosting_usd == pytest.approx(5.48)
    assert stages(rep) == pytest.approx({"baseline": 0.0, "routing": 0.0, "cache": 0.0, "student": 5.48})
    with pytest.raises(NoDataError):
        report(cfg, D0 + dt.timedelta(days=3), D0 + dt.timedelta(days=4))


def test_break_even_is_per_day_the_gpu_was_hosted(tmp_path):
    """Two days, the GPU booked on the first only ($2.74 x 24 = $65.76); 10 student requests of 800 + 200 tokens,
    each saving its Haiku price (800 x .8 + 200 x 4) / 1e6 = $0.00144: 65.76 / 0.00144 = 45,667 a hosted day (not
    half that, averaged over the day the GPU was off)."""
    cfg = config(tmp_path, hosting=(HostingPeriod(2.74, since="2026-11-02T00:00:00Z", until="2026-11-03T00:00:00Z"),))
    traffic = Traffic()
    rec = traffic.at(D0 + dt.timedelta(hours=9))
    for _ in range(10):
        with rec.request(task_type="faq", tenant="acme") as r:
            with r.call("vllm", "costline-student", "student") as c:
                c.usage(800, 200)
            r.accept()
    budget_request(traffic.at(D0 + dt.timedelta(days=1, hours=9)))
    rep = report(traffic.commit(cfg), D0, D0 + dt.timedelta(days=2))
    assert rep.hosting_usd == pytest.approx(65.76)
    assert rep.break_even_requests_per_day == pytest.approx(65.76 / usd(HAIKU, 800, 200))
    assert "45,667 student requests per day the GPU is hosted" in rep.to_text()
