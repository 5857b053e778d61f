"""The alert state stays bounded: a series seen in band leaves no row, only changed rows are written, inactive and
resolved alerts, closed groups and old history are pruned after a documented retention; and the pipeline_silent
dig-in query reads the same two hours whatever the session's time zone."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import duckdb
import pytest

from costline.alerts.engine import AlertEngine
from costline.alerts.notify import ConsoleNotifier
from costline.alerts.outbox import Outbox
from costline.alerts.rules import Snapshot, _cache_hit_rate_drop, _pipeline_silent
from costline.alerts.settings import AlertsConfig, CacheHitRateDropSettings, PipelineSilentSettings
from costline.alerts.store import AlertStore, to_epoch
from costline.alerts.testing import T0, obs, outbox_kinds

H = timedelta(hours=1)
S = timedelta(seconds=1)
D = timedelta(days=1)
RULE = "cache_hit_rate_drop"


def _engine(tmp_path, for_s: float = 0.0, **rules) -> AlertEngine:
    cfg = AlertsConfig(cache_hit_rate_drop=dataclasses.replace(CacheHitRateDropSettings(), for_s=for_s))
    cfg = dataclasses.replace(cfg, **rules)
    return AlertEngine(AlertStore(tmp_path / "state.sqlite"), cfg)


def _alert(store: AlertStore, tenant: str, rule: str = RULE):
    fp = obs("ok", tenant, rule=rule).fingerprint
    rows = store.query("SELECT * FROM alerts WHERE fingerprint = ?", (fp,))
    return rows[0] if rows else None


# (after T0, condition of acme's observation or None: the rule ran and acme was not in it,
#  expected state or None: no row, expected transitions, row written at this tick)
SCENARIOS = {
    "in band or fine with no state: no row; a breach then fires": (0.0, [
        (0 * H, "band", None, [], False),
        (1 * H, "ok", None, [], False),
        (2 * H, "breach", "firing", [("inactive", "firing")], True),
    ]),
    "pending, back to fine, then unobserved: not rewritten": (7200.0, [
        (0 * H, "breach", "pending", [("inactive", "pending")], True),
        (1 * H, "breach", "pending", [], True),  # observed: its observation and last_observed_at change
        (2 * H, "ok", "inactive", [("pending", "inactive")], True),
        (3 * H, None, "inactive", [], False),
    ]),
    "firing, vanishes, closes for lack of data after 3 h": (0.0, [
        (0 * H, "breach", "firing", [("inactive", "firing")], True),
        (1 * H, None, "firing", [], False),
        (2 * H, None, "firing", [], False),
        (3 * H, None, "resolved", [("firing", "resolved")], True),
        (4 * H, None, "resolved", [], False),
    ]),
    "band keeps firing, fine resolves, band keeps resolved": (0.0, [
        (0 * H, "breach", "firing", [("inactive", "firing")], True),
        (1 * H, "band", "firing", [], True),
        (2 * H, "ok", "resolved", [("firing", "resolved")], True),
        (3 * H, "band", "resolved", [], True),
        (4 * H, None, "resolved", [], False),
    ]),
    # retention of cache_hit_rate_drop: 7 days baseline + 3 h no_data_resolve_s = 171 h after it was last seen
    "resolved and unseen: kept 171 h, then dropped; a new breach starts afresh": (0.0, [
        (0 * H, "breach", "firing", [("inactive", "firing")], True),
        (1 * H, "ok", "resolved", [("firing", "resolved")], True),
        (172 * H, None, "resolved", [], False),
        (172 * H + S, None, None, [], False),
        (200 * H, "breach", "firing", [("inactive", "firing")], True),
    ]),
}


@pytest.mark.parametrize("for_s, steps", list(SCENARIOS.values()), ids=list(SCENARIOS))
def test_state_transitions_with_an_injected_clock(tmp_path, for_s, steps):
    engine = _engine(tmp_path, for_s=for_s)
    fp = obs("ok", "acme").fingerprint
    for after, cond, state, transitions, written in steps:
        at = T0 + after
        res = engine.apply({RULE: [] if cond is None else [obs(cond, "acme")]}, now=at)
        row = _alert(engine.store, "acme")
        got = (None if row is None else row["state"], [(f, t) for x, f, t in res.transitions if x == fp],
               row is not None and row["updated_at"] == to_epoch(at))
        assert got == (state, transitions, written), f"at T0 + {after}"


@pytest.mark.parametrize("rule, settings, retention", [
    ("cache_hit_rate_drop", {}, 7 * D + 3 * H),  # 7-day baseline + no_data_resolve_s 3 h
    ("student_drift", {}, 7 * D + 3 * D),  # 7 nightly runs + no_data_resolve_s 3 days
    ("routing_tier_match_drop", {"baseline_runs": 14}, 14 * D + 3 * D),  # 14 nightly runs + 3 days
])
def test_a_resolved_alert_is_kept_for_its_rules_retention(tmp_path, rule, settings, retention):
    cfg = AlertsConfig()
    cfg = dataclasses.replace(cfg, **{rule: dataclasses.replace(getattr(cfg, rule), **settings)})
    engine = AlertEngine(AlertStore(tmp_path / "state.sqlite"), cfg)
    engine.apply({rule: [obs("breach", rule=rule)]}, now=T0)
    engine.apply({rule: [obs("ok", rule=rule)]}, now=T0 + H)
    engine.apply({rule: []}, now=T0 + H + retention)
    assert [r["state"] for r in engine.store.alerts()] == ["resolved"]
    engine.apply({rule: []}, now=T0 + H + retention + S)
    assert engine.store.alerts() == []


def _cache_row(window: datetime, tenant: str, lookups: int, hits: int, **kw) -> dict:
    return dict(window_start=window, tenant=tenant, lookups=lookups, hits=hits, hit_rate=hits / lookups, **kw)


def test_a_flood_of_one_off_tenants_leaves_only_the_alerts_that_matter(tmp_path):
    engine = _engine(tmp_path)
    store = engine.store
    s = CacheHitRateDropSettings()
    # two hours of 10,000 made-up tenants, one lookup each now and one in the week before (no same-hour baseline:
    # the rule says "too little history", BAND), beside a steady real tenant
    for h in range(2):
        now = T0 + h * H
        w = (now - H).replace(minute=0, second=0, microsecond=0, tzinfo=None)
        rows = [_cache_row(w, "acme", 500, 250, avg_7d=0.5, lookups_7d=80000, avg_7d_hour=0.5, lookups_7d_hour=3000)]
        rows += [_cache_row(w, f"junk-{h}-{i}", 1, 0, avg_7d=0.0, lookups_7d=1, avg_7d_hour=None, lookups_7d_hour=0)
                 for i in range(10_000)]
        observations = _cache_hit_rate_drop(s, Snapshot(cache=rows), now, 0.0)
        assert len(observations) == 10_001
        engine.apply({RULE: observations}, now=now)
        assert store.query("SELECT count(*) FROM alerts")[0][0] == 0
    # 300 one-off tenants that did fire once and resolved; one that keeps firing; one silenced; a firing alert of a
    # rule that is then not evaluated at all (its view went away)
    t1 = T0 + 2 * H
    store.add_silence(RULE, {"tenant": "quiet"}, starts_at=t1, ends_at=t1 + 30 * D, reason="load test")
    junk = [f"fired-{i}" for i in range(300)]
    engine.apply({RULE: [obs("breach", t) for t in [*junk, "stuck", "quiet"]],
                  "dlq_growing": [obs("breach", rule="dlq_growing")]}, now=t1)
    engine.apply({RULE: [obs("ok", t) for t in [*junk, "quiet"]] + [obs("breach", "stuck")]}, now=t1 + H)
    assert store.query("SELECT count(*) FROM alerts")[0][0] == 303
    for k in range(2, 180, 24):  # a tick a day, only the stuck tenant seen
        engine.apply({RULE: [obs("breach", "stuck")]}, now=t1 + k * H)
    engine.apply({RULE: [obs("breach", "stuck")]}, now=t1 + H + 171 * H + S)
    left = {(r["rule"], r["labels"], r["state"]) for r in store.alerts()}
    assert left == {(RULE, '{"tenant": "stuck"}', "firing"), (RULE, '{"tenant": "quiet"}', "resolved"),
                    ("dlq_growing", "{}", "firing")}
    assert [s.reason for s in store.silences()] == ["load test"]
    assert [r["open"] for r in store.query("SELECT open FROM groups ORDER BY rule")] == [1, 1]


def test_a_junk_tenant_that_fires_still_fires_and_resolves_then_its_state_goes(tmp_path):
    engine = _engine(tmp_path)
    store = engine.store
    lines: list[str] = []
    outbox = Outbox(store, {"console": ConsoleNotifier(lines.append)}, now=lambda: T0)
    s = CacheHitRateDropSettings()

    def hour(now: datetime, hits: int) -> None:
        w = (now - H).replace(minute=0, second=0, microsecond=0, tzinfo=None)
        rows = [_cache_row(w, "junk-1", 500, hits, avg_7d=0.5, lookups_7d=80000, avg_7d_hour=0.5,
                           lookups_7d_hour=3000)]
        engine.apply({RULE: _cache_hit_rate_drop(s, Snapshot(cache=rows), now, 0.0)}, now=now)
        outbox.deliver_due(now)

    hour(T0, 50)  # 10 % against 50 %: fires
    assert _alert(store, "junk-1")["state"] == "firing"
    hour(T0 + H, 250)  # back to 50 %: resolves
    assert _alert(store, "junk-1")["state"] == "resolved"
    assert outbox_kinds(store) == ["firing", "resolved"]
    assert [r["to_state"] for r in store.history(rule=RULE)] == ["resolved", "firing"]
    assert [tuple(r) for r in store.query("SELECT incident, open FROM groups")] == [(1, 0)]
    # past its retention the alert goes; the closed group stays while its sent messages are kept (7 days)...
    later = T0 + H + 171 * H + S
    engine.apply({RULE: []}, now=later)
    assert store.alerts() == []
    assert len(store.query("SELECT * FROM groups")) == 1
    # ...and goes once the outbox pruned them
    outbox.prune(later)
    engine.apply({RULE: []}, now=later + H)
    assert store.query("SELECT * FROM groups") == []
    # history is kept (90 days)
    assert [r["to_state"] for r in store.history(rule=RULE)] == ["resolved", "firing"]
    # the same tenant breaching again opens a new incident, as a new series
    hour(later + 2 * H, 50)
    assert _alert(store, "junk-1")["state"] == "firing"
    assert outbox_kinds(store)[-1] == "firing"


# (rows at 90 days + 1 s before the tick, rows at exactly 90 days before, rows 1 day before, ids kept):
# newer than 90 days always kept, and the newest 1000 whatever their age; ids in insertion order, oldest first
HISTORY_CASES = [
    (1500, 0, 0, range(501, 1501)),
    (1500, 0, 1200, range(1501, 2701)),
    (1500, 0, 400, range(901, 1901)),
    (600, 600, 0, range(201, 1201)),
]


@pytest.mark.parametrize("n_old, n_edge, n_new, kept", HISTORY_CASES)
def test_history_keeps_90_days_and_at_least_the_newest_1000(tmp_path, n_old, n_edge, n_new, kept):
    engine = _engine(tmp_path)
    now = T0 + 200 * D
    ages = [90 * D + S] * n_old + [90 * D] * n_edge + [D] * n_new
    with engine.store.transaction() as con:
        con.executemany("INSERT INTO history (at, fingerprint, rule, labels, from_state, to_state) "
                        "VALUES (?, 'f', ?, '{}', 'inactive', 'firing')", [(to_epoch(now - a), RULE) for a in ages])
    engine.apply({RULE: []}, now=now)
    assert [r["id"] for r in engine.store.query("SELECT id FROM history ORDER BY id")] == list(kept)
    assert len(engine.store.history()) == 100  # `alerts history` still has its page (default 50)


def test_pipeline_silent_query_reads_the_last_two_utc_hours_in_any_session_time_zone(tmp_path):
    now = datetime.now(UTC).replace(tzinfo=None)  # DuckDB's now(); every row is 30+ minutes from the 2 h edge
    ages_min = [10, 30, 60, 90]  # inside the last 2 hours: 4 calls
    ages_min += [150, 300, 420, 600]  # outside: 2.5, 5, 7 and 10 hours ago
    (o,) = _pipeline_silent(PipelineSilentSettings(), Snapshot(spans_known=True, last_span_at=now - H), now, 30.0)
    con = duckdb.connect(str(tmp_path / "t.duckdb"))
    con.execute("CREATE TABLE calls_raw (ts TIMESTAMP)")
    con.execute("CREATE TABLE requests_raw (ts TIMESTAMP)")
    con.executemany("INSERT INTO calls_raw VALUES (?)", [(now - timedelta(minutes=m),) for m in ages_min])
    con.executemany("INSERT INTO requests_raw VALUES (?)", [(now - timedelta(minutes=m),) for m in ages_min])
    first, query = o.query.split(";\n")
    for zone in ("UTC", "Asia/Kolkata", "America/Los_Angeles"):
        con.execute(f"SET TimeZone = '{zone}'")
        con.execute(first).fetchall()
        assert sum(n for _minute, n in con.execute(query).fetchall()) == 4, zone
