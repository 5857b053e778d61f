"""The hit-rate rule tells the truth at the edges: lookups whose request span lands late, hours whose data lands
late, a tenant whose lookups stop, and which members a grouped message shows.

Every expected figure is worked out by hand from the rows the test writes (see the comments)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costline import contract as c
from costline.alerts.message import render
from costline.alerts.notify import InMemoryNotifier
from costline.alerts.rules import Condition, Rule, Snapshot, evaluate
from costline.alerts.service import AlertService
from costline.alerts.settings import AlertsConfig, CacheHitRateDropSettings
from costline.alerts.source import AlertSource
from costline.collectors import Recorder, RequestStampingProcessor
from costline.config import Config, LakeConfig
from costline.lake import Lake
from costline.processors.buffer import rows_to_tables
from costline.processors.records import LookupRow, RequestRow

_ids = itertools.count(1)
_offsets = itertools.count(0)


def _us(t: datetime) -> int:
    return int(t.replace(tzinfo=UTC).timestamp() * 1_000_000)


def _lookups(tenant: str | None, hour: datetime, n: int, hits: int, *, span_s: int = 3600) -> list[LookupRow]:
    """``n`` lookups spread over ``[hour, hour + span_s)``, the first ``hits`` of them hits, tagged ``tenant``."""
    out = []
    for i in range(n):
        k = next(_ids)
        out.append(LookupRow(f"l{k}", f"t{k}", None, None, _us(hour + timedelta(seconds=i * span_s // n)), tenant,
                             "default", i < hits, 0.9, 1.0, 0, k))
    return out


def _in_request(hour: datetime, second: int, hit: bool, *, req_tenant: str | None = "acme",
                request_id: str | None = "auto", parent: bool = True) -> tuple[LookupRow, RequestRow]:
    """A tenant-less lookup inside a request span (which names the tenant), as an older recorder wrote it."""
    k = next(_ids)
    rid = f"req{k}" if request_id == "auto" else request_id
    ts = _us(hour + timedelta(seconds=second))
    lookup = LookupRow(f"l{k}", f"t{k}", f"r{k}" if parent else None, rid, ts, None, "default", hit, 0.9, 1.0, 0, k)
    request = RequestRow(rid or f"req{k}", f"t{k}", f"r{k}", ts, req_tenant, "faq", None, "budget", "budget", hit, 1, 0, True,
                         None, 10.0, None, None, 0, k)
    return lookup, request


def _commit(path: Path, **tables: list) -> None:
    first = next(_offsets)
    for _ in range(10):
        last = next(_offsets)
    Lake(path).init().commit_batch("otlp_spans", 0, first, last,
                                   {name: rows_to_tables(name, rows) for name, rows in tables.items() if rows})


# --- 1a: the recorder stamps the request's tenant on its lookup and call spans ------------------------------------


#: (tenant given to the request, tenant on its lookup and call spans)
TENANT_CASES = [
    ("acme", "acme"),
    ("o'brien \"é\" 客户", "o'brien \"é\" 客户"),
    (None, None),   # a request without a tenant: nothing stamped
    ("", None),     # not a tenant: dropped on the request span too
    (123, None),    # not a string: dropped on the request span too
]


def test_lookup_and_call_spans_carry_the_requests_tenant() -> None:
    got = []
    for tenant, _expected in TENANT_CASES:
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(RequestStampingProcessor())
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        rec = Recorder(provider, env={})
        with rec.request(task_type="faq", tenant=tenant) as req:  # type: ignore[arg-type]
            with req.cache_lookup() as lk:
                lk.result(hit=False)
            with rec.call(provider="anthropic", model="claude-haiku-4-5", tier="budget"):
                pass
            rec.start_call(provider="anthropic", model="claude-haiku-4-5").end()
        with rec.cache_lookup() as lk:  # outside any request: whose it is is not known
            lk.result(hit=True)
        spans = exporter.get_finished_spans()
        lookups = [s for s in spans if s.name == c.SPAN_CACHE_LOOKUP]
        calls = [s for s in spans if s.name == "chat claude-haiku-4-5"]
        assert len(lookups) == 2 and len(calls) == 2
        got.append((tenant, [s.attributes.get(c.COSTLINE_TENANT) for s in [lookups[0], *calls, lookups[1]]]))
    assert got == [(tenant, [expected] * 3 + [None]) for tenant, expected in TENANT_CASES]


# --- 1b, 3: the series the rule reads from the lake -----------------------------------------------------------------

H = datetime(2026, 11, 8, 10)


@pytest.fixture(scope="module")
def late_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Hour H: acme's 10 hits and 10 misses, all in request spans (no tenant on the lookups); the requests of the
    last 4 misses are not in the lake yet. The tenant-less app: 10 lookups, 6 hits, no request at all; plus 1 miss
    inside a request span that names no tenant and 1 miss whose lookup names only a parent span (no request id,
    no request row) — both truly tenant-less, so (none) has 12 lookups, 6 hits.
    History (lookups tagged acme / quiet / tenant-less): each of the 7 days before at 10:00 acme 10 lookups 6 hits,
    quiet 100 lookups 60 hits, the app 10 lookups 6 hits; and at H - 1 h acme 20 lookups 5 hits.
    quiet has no lookup in H."""
    path = tmp_path_factory.mktemp("truth") / "lake"
    lookups: list[LookupRow] = []
    requests: list[RequestRow] = []
    for d in range(1, 8):
        day = H - timedelta(days=d)
        lookups += _lookups("acme", day, 10, 6) + _lookups("quiet", day, 100, 60) + _lookups(None, day, 10, 6)
    lookups += _lookups("acme", H - timedelta(hours=1), 20, 5)
    lookups += _lookups(None, H, 10, 6)
    for i in range(20):
        lk, rq = _in_request(H, 60 * i, hit=i < 10)
        lookups.append(lk)
        if i < 16:
            requests.append(rq)
    lk, rq = _in_request(H, 100, hit=False, req_tenant=None)
    lookups.append(lk)
    requests.append(rq)
    lk, _rq = _in_request(H, 200, hit=False, request_id=None)
    lookups.append(lk)
    _commit(path, lookups=lookups, requests=requests)
    return path


@pytest.mark.parametrize("frozen", [False, True], ids=["live", "frozen"])
def test_lookups_whose_request_is_not_in_yet_are_in_no_series(late_lake: Path, frozen: bool) -> None:
    """acme: 16 lookups, 10 hits (the 4 late misses are left out), not 20/10; (none): 12 lookups, 6 hits, not
    16/6 (the old 16 - 6 = 10 misses read 37.5 %). Baselines: acme's 7 same hours 70 lookups 42 hits = 60 %; its
    168 hours 90 lookups 47 hits; quiet, silent in H, has a row with 0 lookups and its 700-lookup baseline."""
    source = AlertSource(Config(lake=LakeConfig(path=late_lake), alerts=AlertsConfig()))
    now = H + timedelta(hours=1, seconds=45)
    if frozen:
        with source.frozen():
            rows = source.snapshot(now, ["cache_hit_rate_drop"]).cache
    else:
        rows = source.snapshot(now, ["cache_hit_rate_drop"]).cache
    got = {r["tenant"]: (r["lookups"], r["hits"], r["hit_rate"], r["lookups_7d_hour"], r["avg_7d_hour"],
                         r["lookups_7d"], r["avg_7d"]) for r in rows}
    assert got == {
        "acme": (16, 10, pytest.approx(10 / 16), 70, pytest.approx(0.6), 90, pytest.approx(47 / 90)),
        None: (12, 6, pytest.approx(0.5), 70, pytest.approx(0.6), 70, pytest.approx(0.6)),
        "quiet": (0, 0, None, 700, pytest.approx(0.6), 700, pytest.approx(0.6)),
    }
    assert all(r["window_start"] == H for r in rows)


# --- 3: a series whose lookups stop --------------------------------------------------------------------------------

def _row(tenant: str | None, lookups: int, hits: int, base: int | None, base_all: int | None = None) -> dict:
    return {"window_start": H, "tenant": tenant, "lookups": lookups, "hits": hits,
            "hit_rate": hits / lookups if lookups else None,
            "avg_7d": None if base_all is None else 0.6, "lookups_7d": base_all,
            "avg_7d_hour": None if base is None else 0.6, "lookups_7d_hour": base}


ALIVE = _row("other", 100, 60, 700, 16800)


#: (baseline, rows of the closed hour, {tenant label: (condition, the summary's first two clauses)})
STOPPED_CASES = [
    # 700 lookups at 10:00 over 7 days = 100 an hour expected, none came: a breach
    ("hour_of_day", [_row("acme", 0, 0, 700, 16800), ALIVE],
     {"acme": ("breach", "no lookups for acme this hour, the same hour's 7-day average 100 lookups")}),
    # the tenant-less series too, under its own label: 210 / 7 = 30
    ("hour_of_day", [_row(None, 0, 0, 210, 5040), ALIVE],
     {"(none)": ("breach", "no lookups for (none) this hour, the same hour's 7-day average 30 lookups")}),
    # exactly min_lookups_7d (200) is enough (200 / 7 = 28.6, shown 29); 199 is not (too little to expect any)
    ("hour_of_day", [_row("acme", 0, 0, 200, 4800), ALIVE],
     {"acme": ("breach", "no lookups for acme this hour, the same hour's 7-day average 29 lookups")}),
    ("hour_of_day", [_row("acme", 0, 0, 199, 4800), ALIVE], {}),
    # no lookups at this hour in the 7 days: nothing expected
    ("hour_of_day", [_row("acme", 0, 0, None, 4800), ALIVE], {}),
    # rolling: 16,800 lookups over 168 hours = 100 an hour
    ("rolling", [_row("acme", 0, 0, 0, 16800), ALIVE],
     {"acme": ("breach", "no lookups for acme this hour, the 7-day average 100 lookups an hour")}),
    # every series silent (the processor is down): pipeline_silent's job, no tenant is blamed
    ("hour_of_day", [_row("acme", 0, 0, 700, 16800), _row("other", 0, 0, 700, 16800)], {}),
]


def test_a_series_whose_lookups_stop_is_a_breach() -> None:
    got = []
    for baseline, rows, _expected in STOPPED_CASES:
        rule = Rule("cache_hit_rate_drop", CacheHitRateDropSettings(baseline=baseline), 30.0)
        obs = evaluate(rule, Snapshot(cache=rows), (H + timedelta(hours=1, minutes=1)).replace(tzinfo=UTC)) or []
        got.append({o.labels["tenant"]: (o.condition.value, ",".join(o.summary.split(",")[:2]))
                    for o in obs if o.labels["tenant"] != "other"})
        assert [o.condition for o in obs if o.labels["tenant"] == "other"] == (
            [Condition.OK] if rows[-1] is ALIVE else [])
    assert got == [expected for _b, _r, expected in STOPPED_CASES]


def test_the_lake_pages_for_a_tenant_whose_lookups_stop(late_lake: Path, tmp_path: Path) -> None:
    """quiet: 700 lookups at 10:00 over the 7 days before, none in H while acme's arrive."""
    cfg = Config(lake=LakeConfig(path=late_lake), alerts=AlertsConfig(state_path=str(tmp_path / "s.sqlite")))
    mem = InMemoryNotifier("slack")
    svc = AlertService(cfg, notifiers={"slack": mem}, export=False)
    try:
        rep = svc.tick((H + timedelta(hours=1, seconds=45)).replace(tzinfo=UTC), rules=["cache_hit_rate_drop"])
    finally:
        svc.shutdown()
    (quiet,) = [o for o in rep.observations["cache_hit_rate_drop"] if o.labels["tenant"] == "quiet"]
    assert quiet.condition is Condition.BREACH
    assert [m.payload["text"].splitlines()[1] for m in mem.sent() if m.op == "post"] == [
        "• tenant=quiet: no lookups for quiet this hour, the same hour's 7-day average 100 lookups, while other "
        "series' lookups arrive: its traffic stopped or no longer reaches the cache; check its client and routing"]


# --- 2: hours whose data lands late are judged once, when they land --------------------------------------------------

D = datetime(2026, 11, 8)


def _at(h: int, m: int = 0, s: int = 40) -> datetime:
    return (D + timedelta(hours=h, minutes=m, seconds=s)).replace(tzinfo=UTC)


def test_hours_that_land_after_an_outage_are_judged_once(tmp_path: Path) -> None:
    """acme: 100 lookups an hour at 60 % for 7 days; the processor stops after 09:59; hours 10 and 11 are broken
    (20 %), 12 and 13 fine. The 10:00 hour lands first alone (nothing after it yet: not judged), then 11, 12 and a
    first slice of 13 (10 lookups, 6 hits). The tick after judges 10 and 11 (20 % vs 60 %: breach) oldest first,
    then 12 (60 %: ok): one page for 10:00, naming the hour, then its resolve. The next tick judges no past hour."""
    path = tmp_path / "lake"
    history = []
    for h in range(1, 24 * 7 + 1):
        history += _lookups("acme", D + timedelta(hours=10) - timedelta(hours=h), 100, 60)
    _commit(path, lookups=history)
    cfg = Config(lake=LakeConfig(path=path), alerts=AlertsConfig(state_path=str(tmp_path / "s.sqlite")))
    mem = InMemoryNotifier("slack")
    svc = AlertService(cfg, notifiers={"slack": mem}, export=False)
    rule = ["cache_hit_rate_drop"]
    try:
        first = svc.tick(_at(10), rules=rule)            # judges 09:00 (60 %): the newest hour judged
        assert [o.condition for o in first.observations["cache_hit_rate_drop"]] == [Condition.OK]
        outage = [svc.tick(_at(11), rules=rule), svc.tick(_at(12), rules=rule), svc.tick(_at(13, 5), rules=rule)]
        assert [(r.observations["cache_hit_rate_drop"], r.late) for r in outage] == [([], [])] * 3
        _commit(path, lookups=_lookups("acme", D + timedelta(hours=10), 100, 20))
        alone = svc.tick(_at(13, 6), rules=rule)         # 10:00 in, nothing later yet: not complete, wait
        assert alone.late == []
        _commit(path, lookups=_lookups("acme", D + timedelta(hours=11), 100, 20)
                + _lookups("acme", D + timedelta(hours=12), 100, 60)
                + _lookups("acme", D + timedelta(hours=13), 10, 6, span_s=600))
        landed = svc.tick(_at(13, 7), rules=rule)
        again = svc.tick(_at(13, 8), rules=rule)
        replayed = svc.replay(_at(13, 9), _at(13, 9))  # a backfill step judges its own closed hour only, as before
    finally:
        svc.shutdown()
    assert [(w, [(o.labels["tenant"], o.condition.value, round(o.value, 3)) for o in obs])
            for _r, w, obs in landed.late] == [
        (D + timedelta(hours=10), [("acme", "breach", 0.2)]),
        (D + timedelta(hours=11), [("acme", "breach", 0.2)]),
    ]
    assert [(o.window, o.condition.value) for o in landed.observations["cache_hit_rate_drop"]] == [
        ("2026-11-08 12:00–13:00 UTC", "ok")]
    assert again.late == []
    assert [(r.late, [o.window for o in r.observations["cache_hit_rate_drop"]]) for r in replayed] == [
        ([], ["2026-11-08 12:00–13:00 UTC"])]
    posts = [(m.payload["kind"], m.payload["text"].splitlines()[1]) for m in mem.sent() if m.op == "post"]
    assert posts == [
        ("firing", "• tenant=acme: cache hit rate of acme 20.0% vs the same hour's 7-day average 60.0% (+40.0 points "
                   "under) [hour 2026-11-08 10:00–11:00 UTC, judged late: its data reached the lake after the hour "
                   "closed, at 13:07 UTC]"),
        ("resolved", "Resolved after 0 min."),
    ]


# --- 4: a grouped message shows the worst members -------------------------------------------------------------------

def _member(tenant: str, rate: float, threshold: float, *, excess: bool = True, state: str = "firing") -> dict:
    obs = {"rule": "cache_hit_rate_drop", "summary": f"{tenant} at {rate:.0%}", "value": rate,
           "threshold": threshold, "figures": {}, "window": "", "query": ""}
    if excess:
        obs["excess"] = threshold - rate
    return {"labels": {"tenant": tenant}, "state": state, "observation": obs}


@pytest.mark.parametrize("with_excess", [True, False], ids=["excess", "from value and threshold"])
def test_a_grouped_message_shows_its_worst_members(with_excess: bool) -> None:
    """10 members at 40 % under a 40 % threshold except t9 at 5 %, t3 at 10 %, t6 at 20 %: those three come first
    (35, 30, 20 points past), then the 0-point ones by name; 2 are left out."""
    rates = {f"t{i}": 0.40 for i in range(10)} | {"t9": 0.05, "t3": 0.10, "t6": 0.20}
    members = [_member(t, r, 0.40, excess=with_excess) for t, r in rates.items()]
    msg = render("firing", rule="cache_hit_rate_drop", group_labels={"rule": "cache_hit_rate_drop"},
                 severity="warning", incident=1, members=members, at=datetime(2026, 11, 8, 11))
    assert msg["text"].splitlines()[1:] == [
        "• tenant=t9: t9 at 5%", "• tenant=t3: t3 at 10%", "• tenant=t6: t6 at 20%",
        "• tenant=t0: t0 at 40%", "• tenant=t1: t1 at 40%", "• tenant=t2: t2 at 40%", "• tenant=t4: t4 at 40%",
        "• tenant=t5: t5 at 40%", "… and 2 more"]


def test_a_rising_rules_members_are_ordered_by_how_far_over() -> None:
    """cost per success: $0.03 over a $0.01 threshold is 200 % over, $0.5 over $0.4 is 25 %: the first leads.
    A stopped-traffic member (no value, no threshold, but an excess) and a recovered one: firing first."""
    def cost(tier: str, value: float, threshold: float, state: str = "firing") -> dict:
        return {"labels": {"tier": tier}, "state": state, "observation": {
            "rule": "cost_per_success_rise", "summary": tier, "value": value, "threshold": threshold}}
    members = [cost("recovered", 9.0, 0.1, state="resolved"), cost("big", 0.5, 0.4), cost("small", 0.03, 0.01),
               {"labels": {"tier": "blank"}, "state": "firing", "observation": {"summary": "blank"}}]
    msg = render("update", rule="cost_per_success_rise", group_labels={}, severity="warning", incident=1,
                 members=members, at=datetime(2026, 11, 8, 11))
    assert msg["text"].splitlines()[1:] == [
        "• tier=small: small", "• tier=big: big", "• tier=blank: blank", "• tier=recovered: recovered"]
