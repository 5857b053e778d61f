"""The demo's request generator: deterministic, paraphrase families that really match under the
cache's model, documents with versions on the incident schedule, the student's traffic shift."""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from costline.config import Config, LakeConfig
from costline.lake import Lake, open_lake
from costline.processors.buffer import rows_to_tables
from costline.processors.records import LookupRow
from costline.sim.standin_model import CAPABILITY, difficulty
from costline.sim.traffic import (FAQ_FAMILIES, DocEvent, ErrorBurst, ServingRequest, TrafficSpec, doc_events, doc_hash,
                              product_questions, question_of, serving_traffic, warmup_traffic)

SPEC = TrafficSpec(days=4, requests_per_day=600, seed=3, stale_day=2, stale_hours=10, shift_day=3)


def requests(spec: TrafficSpec = SPEC) -> list[ServingRequest]:
    return [r for r in serving_traffic(spec) if isinstance(r, ServingRequest)]


def test_the_same_spec_gives_the_same_stream_and_another_seed_another() -> None:
    assert list(serving_traffic(SPEC)) == list(serving_traffic(SPEC))
    other = requests(dataclasses.replace(SPEC, seed=4))
    assert [r.query for r in other] != [r.query for r in requests()]


def test_requests_are_in_time_order_with_every_document_event_before_the_requests_after_it() -> None:
    items = list(serving_traffic(SPEC))
    reqs = [r for r in items if isinstance(r, ServingRequest)]
    assert len(reqs) == SPEC.days * SPEC.requests_per_day
    assert len({r.request_id for r in reqs}) == len(reqs)
    times = [r.at for r in items]
    assert times == sorted(times)
    assert reqs[0].at >= SPEC.start and reqs[-1].at < SPEC.start + timedelta(days=SPEC.days)
    assert [e for e in items if isinstance(e, DocEvent)] == doc_events(SPEC)


def test_the_mix_has_every_task_type_and_each_tenant_asks_enough_to_judge_its_hourly_hit_rate() -> None:
    reqs = requests(TrafficSpec(days=1, requests_per_day=3000, seed=7))
    kinds = Counter(r.task_type for r in reqs)
    assert set(kinds) == {"faq", "classification", "extraction", "coding", "analysis", "complex_reasoning"}
    assert 0.45 < kinds["faq"] / len(reqs) < 0.55
    per_tenant_hour = Counter((r.tenant, r.at.hour) for r in reqs if r.cacheable)
    assert len(per_tenant_hour) == 3 * 24
    assert sum(per_tenant_hour.values()) / len(per_tenant_hour) > 18  # the demo's alert needs >= 15 lookups


def test_faq_questions_come_from_paraphrase_families_regulars_and_one_offs() -> None:
    faqs = [r for r in requests() if r.cacheable]
    kinds = Counter("family" if r.family else r.subtype for r in faqs)
    assert set(kinds) == {"family", "product", "one-off"}
    for r in faqs:
        if r.family:
            doc, paraphrases = FAQ_FAMILIES[r.tenant][r.family]
            assert r.query in paraphrases and r.doc_id == doc
        else:
            assert r.doc_id == f"{r.tenant}-policy"
    # Families are asked in several wordings, so the cache must match paraphrases.
    wordings = Counter(r.family for r in faqs if r.family and r.query != FAQ_FAMILIES[r.tenant][r.family][1][0])
    assert sum(wordings.values()) > 0.5 * kinds["family"]
    # One-off questions are never asked twice by a tenant.
    one_offs = Counter((r.tenant, r.query) for r in faqs if r.subtype == "one-off")
    assert max(one_offs.values()) == 1
    # Regular questions come back.
    regulars = Counter((r.tenant, r.query) for r in faqs if r.subtype == "product")
    assert max(regulars.values()) > 1


def test_the_stale_document_schedule_and_the_versions_requests_carry() -> None:
    events = doc_events(SPEC)
    changed = SPEC.start + timedelta(days=SPEC.stale_day)
    assert DocEvent(changed, "acme", "acme-policy", "update", 2) in events
    late = DocEvent(changed + timedelta(hours=SPEC.stale_hours), "acme", "acme-policy", "invalidate", 1)
    assert late in events and late.doc_hash == doc_hash("acme-policy", 1)
    # The contrast: globex updates a document and invalidates it at once.
    globex = [e for e in events if e.tenant == "globex"]
    assert [e.kind for e in globex] == ["update", "invalidate"] and globex[0].at == globex[1].at
    for r in requests():
        if r.doc_id == "acme-policy":
            assert r.doc_version == (2 if r.at >= changed else 1)
            assert r.doc_hashes == (doc_hash("acme-policy", r.doc_version),)
        elif r.doc_id == globex[0].doc_id:
            assert r.doc_version == (2 if r.at >= globex[0].at else 1)
        elif not r.cacheable:
            assert r.doc_id is None and r.doc_hashes == ()
    assert doc_hash("acme-policy", 1) != doc_hash("acme-policy", 2) != doc_hash("globex-policy", 2)


def test_a_burst_of_overload_errors_each_afternoon() -> None:
    bursts = [e for e in serving_traffic(SPEC) if isinstance(e, ErrorBurst)]
    assert [b.at for b in bursts] == [SPEC.start + timedelta(days=d, hours=15) for d in range(SPEC.days)]
    assert all(b.status == 529 and b.count > 9 for b in bursts)


def test_no_incidents_without_their_days() -> None:
    spec = dataclasses.replace(SPEC, stale_day=None, shift_day=None)
    assert all(e.tenant != "acme" for e in doc_events(spec))
    assert all(r.subtype != "sarcasm" for r in requests(spec))


def test_the_student_shift_brings_a_sarcasm_slice_the_student_is_degraded_on() -> None:
    shift = SPEC.start + timedelta(days=SPEC.shift_day)
    classification = [r for r in requests() if r.task_type == "classification"]
    sarcasm = [r for r in classification if r.subtype == "sarcasm"]
    assert sarcasm and all(r.at >= shift for r in sarcasm)
    after = [r for r in classification if r.at >= shift]
    assert 0.35 < len(sarcasm) / len(after) < 0.65
    assert all("sarcasm" in r.query.lower() for r in sarcasm)  # the stand-in's degrade keyword
    # Everything else the student gets is within its capability: only the shift makes it fail.
    assert max(difficulty(r.query) for r in classification if r.subtype != "sarcasm") < CAPABILITY["student"]


def test_long_tasks_are_long_enough_to_skip_the_short_query_rule() -> None:
    reqs = requests()
    assert all(len(r.query) >= 200 for r in reqs if r.task_type in ("analysis", "complex_reasoning"))
    coding = [len(r.query) >= 200 for r in reqs if r.task_type == "coding"]
    assert 0 < sum(coding) < len(coding)  # some short (routed cheap, escalated), some long (routed to mid)


def test_warmup_traffic_is_the_families_and_regulars_of_the_ttl_before_the_start() -> None:
    ttl = 2 * 86_400.0
    warm = warmup_traffic(SPEC, ttl_s=ttl)
    assert warm == warmup_traffic(SPEC, ttl_s=ttl)
    assert warm and all(SPEC.start - timedelta(seconds=ttl) <= r.at < SPEC.start for r in warm)
    assert [r.at for r in warm] == sorted(r.at for r in warm)
    assert all(r.cacheable and r.subtype != "one-off" and r.doc_version == 1 for r in warm)
    regulars = set(product_questions(SPEC.seed)[: SPEC.faq_regulars])
    asked = {r.query.removeprefix("Hi, ").removesuffix(" Thanks.") for r in warm if r.subtype == "product"}
    # Alive with probability rT/(1+rT): most regular questions, not all.
    known = {q for q in regulars if q in asked}
    assert 0.4 * len(regulars) < len(known) < 0.95 * len(regulars)


# --- with the real embedding model -------------------------------------------------------------


@pytest.fixture(scope="module")
def embedder():  # type: ignore[no-untyped-def]
    pytest.importorskip("sentence_transformers")
    from costline.serving.embedding import Embedder

    return Embedder(threads=1).load()


def test_paraphrases_match_within_the_cache_threshold_and_families_stay_apart(embedder) -> None:  # type: ignore[no-untyped-def]
    threshold = 0.93
    for tenant, families in FAQ_FAMILIES.items():
        vectors = {f: embedder.encode(list(p)) for f, (_, p) in families.items()}
        for family, v in vectors.items():
            sims = v[1:] @ v[0]
            assert (sims >= threshold).sum() >= 2, (tenant, family, sims)  # real semantic hits
        names = list(vectors)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                assert float((vectors[a] @ vectors[b].T).max()) < 0.85, (tenant, a, b)


def test_the_wordings_of_a_regular_question_match_it(embedder) -> None:  # type: ignore[no-untyped-def]
    for q in product_questions(7)[:20]:
        v = embedder.encode([q, q.lower().rstrip("?"), f"Hi, {q}", f"{q} Thanks."])
        assert (v[1:] @ v[0]).min() >= 0.93, q


def test_the_plans_are_the_same_requests_routed_by_the_real_rule_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """One traffic generator: sample_traffic's plans carry serving_traffic's requests, and their first
    tier is what the real RulePolicy decides under the demo's rules (written out here by hand)."""
    from costline.serving.routing import router
    from costline.sim import traffic
    from costline.sim.demo_app import demo_serving_config
    from costline.config import Config

    plans = list(traffic.sample_traffic(SPEC))
    reqs = requests()
    assert [(p.request_id, p.start, p.tenant, p.task_type, p.subtype, p.query) for p in plans] == [
        (r.request_id, r.at, r.tenant, r.task_type, r.subtype, r.query) for r in reqs]

    def by_hand(task_type: str, query: str) -> str:  # [serving.router.rules] + the demo's student and analysis
        if task_type == "classification":
            return "student"
        if len(query) < 200:
            return "budget"
        if task_type == "coding" or "explain" in query.lower():
            return "mid"
        if task_type in ("complex_reasoning", "analysis"):
            return "upper"
        return "frontier"

    assert [p.routed_tier for p in plans] == [by_hand(p.task_type, p.query) for p in plans]
    assert {p.routed_tier for p in plans} == {"student", "budget", "mid", "upper"}

    calls: list[tuple[str, str | None]] = []
    real_route = router.RulePolicy.route

    def spy(self: router.RulePolicy, query: str, task_type: str | None, **kw: object) -> router.Decision:
        calls.append((query, task_type))
        return real_route(self, query, task_type, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(router.RulePolicy, "route", spy)
    assert len(list(traffic.sample_traffic(dataclasses.replace(SPEC, days=1, requests_per_day=50)))) == 50
    assert len(calls) == 50  # every plan was routed by the real policy, no copy of its rules
    # and the demo's app routes with the very same rules
    assert demo_serving_config(Config(), standin=dataclasses.make_dataclass("S", ["url", "openai_url"])(
        "http://127.0.0.1:1", "http://127.0.0.1:1/v1")
                               ).serving.router.rules == traffic.demo_rules()


@pytest.mark.parametrize(("a", "b", "same"), [
    # a family's paraphrases are one question, two families two
    ("How do I reset my password?", "I forgot my password, how do I reset it?", True),
    ("how do i reset my password", "How do I reset my password?", True),
    ("How do I reset my password?", "How do I change the email address on my account?", False),
    # a product question under each of its wordings
    ("The toaster came without a manual, should I send it back?",
     "Hi, The toaster came without a manual, should I send it back?", True),
    ("The toaster came without a manual, should I send it back?",
     "the toaster came without a manual, should i send it back", True),
    ("The toaster came without a manual, should I send it back?",
     "The toaster came without a manual, should I send it back? Thanks.", True),
    # one slot changed: another question (subject, problem, ask)
    ("The toaster came without a manual, should I send it back?",
     "The desk fan came without a manual, should I send it back?", False),
    ("The toaster came without a manual, should I send it back?",
     "The toaster smells strongly of plastic, should I send it back?", False),
    ("The toaster came without a manual, should I send it back?",
     "The toaster came without a manual, who should I contact?", False),
])
def test_question_of_says_which_question_of_the_traffic_a_text_asks(a: str, b: str, same: bool) -> None:
    assert (question_of(a) == question_of(b)) is same


def test_every_faq_text_of_the_traffic_is_one_of_its_questions() -> None:
    faqs = [r for r in requests() if r.task_type == "faq"]
    for r in faqs:
        if r.family is not None:
            assert question_of(r.query) == f"family:{r.family}"
    regular = {question_of(r.query) for r in faqs if r.subtype == "product"}
    assert regular <= {q.lower().rstrip("?") for q in product_questions(SPEC.seed)}


# --- the report's "hours under the baseline": the alert's baseline, not always the rolling one ------------------------

#: A lake of cache lookups, hand-counted: 50 hours of history from REPORT_START, then the judged hour RH (day 2,
#: 02:00 UTC). Busy hours are 08-17 UTC (10 a day: 20 in the history), the other 30 are night hours.
REPORT_START = datetime(2026, 11, 1)
RH = REPORT_START + timedelta(days=2, hours=2)
#: tenant -> ((lookups, hits) of a busy hour, of a night hour, of RH)
REPORT_TRAFFIC = {
    # busy hours hit 80 %, nights 40 %, and RH is a normal night (40 %)
    "acme": ((400, 320), (200, 80), (200, 80)),
    # busy hours hit 30 %, nights 80 %, and RH falls to 60 %
    "globex": ((400, 120), (200, 160), (200, 120)),
}


@pytest.fixture(scope="module")
def report_lake(tmp_path_factory: pytest.TempPathFactory) -> Config:
    rows: list[LookupRow] = []
    for tenant, (busy, night, judged) in REPORT_TRAFFIC.items():
        for h in range(51):
            hour = REPORT_START + timedelta(hours=h)
            lookups, hits = judged if hour == RH else busy if 8 <= hour.hour < 18 else night
            for i in range(lookups):
                n = len(rows) + 1
                ts = int((hour + timedelta(seconds=i * 3600 // lookups)).replace(tzinfo=UTC).timestamp() * 1e6)
                rows.append(LookupRow(f"s{n}", f"t{n}", None, None, ts, tenant, "default", i < hits, 0.9, 1.0, 0, n))
    path = tmp_path_factory.mktemp("report") / "lake"
    Lake(path).init().commit_batch("otlp_spans", 0, 0, len(rows), {"lookups": rows_to_tables("lookups", rows)})
    return Config(lake=LakeConfig(path=path))


def _breaches(cfg: Config, sql: str) -> list[tuple]:  # type: ignore[type-arg]
    con = open_lake(cfg)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_the_report_lists_the_hours_under_the_same_hours_average_by_default(report_lake: Config) -> None:
    """RH against the 02:00 hours of days 0 and 1 (the alert's default baseline):
    acme 80/200 = 40 % vs (80 + 80) / 400 = 40 %: nothing;
    globex 120/200 = 60 % vs (160 + 160) / 400 = 80 %: 20 points under; pooled (120 + 320) / 600 = 0.733333,
    se = sqrt(0.733333 x 0.266667 x (1/200 + 1/400)) = 0.038297, z = 0.20 / 0.038297 = 5.22 > 4.01 (p < 3e-5).
    The rolling average (all 50 hours) says the opposite: acme 40 % vs (20 x 320 + 30 x 80) / (20 x 400 + 30 x 200)
    = 8,800 / 14,000 = 62.9 % (z 6.6), globex 60 % vs 7,200 / 14,000 = 51.4 % (over it)."""
    from costline.sim.demo import REPORT_QUERIES

    title, sql = next((t, q) for t, q in REPORT_QUERIES.items() if t.startswith("hours 10+"))
    rows = _breaches(report_lake, sql)
    # every other hour is like the same hour the days before: RH's globex is the only one
    assert [r[:4] for r in rows] == [(RH, "globex", 200, 0.6)]
    assert rows[0][4:] == (0.8, 400, 5.2)
    assert "the same hour's 7-day average" in title and 'baseline = "hour_of_day"' in title


def test_the_report_follows_the_configured_baseline_and_names_it(report_lake: Config) -> None:
    """With baseline = "rolling" RH's acme is 40 % vs 8,800 / 14,000 = 62.9 %: 22.9 points under; pooled
    (80 + 8,800) / 14,200 = 0.625352, se = sqrt(0.625352 x 0.374648 x (1/200 + 1/14,000)) = 0.034470,
    z = 0.228571 / 0.034470 = 6.63; globex's 60 % is over its 51.4 %."""
    from costline.sim.demo import REPORT_QUERIES, report_queries

    alerts = report_lake.alerts
    rolling = report_lake.replace(alerts=dataclasses.replace(
        alerts, cache_hit_rate_drop=dataclasses.replace(alerts.cache_hit_rate_drop, baseline="rolling")))
    title, sql = next((t, q) for t, q in report_queries(rolling).items() if t.startswith("hours 10+"))
    assert 'baseline = "rolling"' in title and "same hour" not in title
    at_rh = [r for r in _breaches(report_lake, sql) if r[0] == RH]
    assert [r[:4] for r in at_rh] == [(RH, "acme", 200, 0.4)]
    assert at_rh[0][4:] == (0.629, 14000, 6.6)
    # the default config's report is the one REPORT_QUERIES holds
    assert report_queries(report_lake) == REPORT_QUERIES


@pytest.mark.parametrize("baseline", ["hour_of_day", "rolling"])
def test_the_report_lists_the_hours_the_demos_alert_pages_for(report_lake: Config, baseline: str) -> None:
    """What the report prints for RH is what the demo's alert (its thresholds, the configured baseline) pages."""
    from costline.alerts.rules import Rule, Snapshot, evaluate
    from costline.alerts.source import CACHE_SQL
    from costline.sim.demo import demo_cache_rule, report_queries

    alerts = report_lake.alerts
    cfg = report_lake.replace(alerts=dataclasses.replace(
        alerts, cache_hit_rate_drop=dataclasses.replace(alerts.cache_hit_rate_drop, baseline=baseline)))
    sql = next(q for t, q in report_queries(cfg).items() if t.startswith("hours 10+"))
    listed = {r[1] for r in _breaches(report_lake, sql) if r[0] == RH}
    con = open_lake(report_lake)
    try:
        cur = con.execute(CACHE_SQL, {"w": RH})
        cols = [d[0] for d in cur.description]
        rows = [dict(zip(cols, r)) for r in cur.fetchall()]
    finally:
        con.close()
    obs = evaluate(Rule("cache_hit_rate_drop", demo_cache_rule(cfg)), Snapshot(cache=rows),
                   (RH + timedelta(hours=1, minutes=1)).replace(tzinfo=UTC))
    paged = {o.labels["tenant"] for o in obs or [] if o.condition.value == "breach"}
    assert listed == paged == ({"globex"} if baseline == "hour_of_day" else {"acme"})
