"""The state machine with an injected clock: pending/firing/resolved, hysteresis, groups,
repeat, silences, inhibition, restarts (new objects over the same SQLite file)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from costline.alerts.testing import ManualClock as Clock, obs, outbox_kinds, payload
from costline.alerts.engine import AlertEngine
from costline.alerts.errors import SilenceError
from costline.alerts.settings import AlertsConfig, CacheHitRateDropSettings
from costline.alerts.store import AlertStore
from costline.alerts.view import alerts_view_sql, export_history


def make(tmp_path: Path, clock: Clock, config: AlertsConfig | None = None) -> tuple[AlertStore, AlertEngine]:
    store = AlertStore(tmp_path / "state.sqlite")
    return store, AlertEngine(store, config or AlertsConfig(), targets=("console",), now=clock)


def states(store: AlertStore) -> dict[str, str]:
    import json

    return {json.loads(r["labels"]).get("tenant", r["rule"]): r["state"] for r in store.alerts()}


def test_one_firing_and_one_resolved_message_per_incident(tmp_path: Path) -> None:
    clock = Clock()
    store, engine = make(tmp_path, clock)
    for cond in ["ok", "breach", "breach", "breach", "band", "ok", "ok"]:
        engine.apply({"cache_hit_rate_drop": [obs(cond)]})
        clock.advance(minutes=1)
    assert outbox_kinds(store) == ["firing", "resolved"]
    hist = [(r["from_state"], r["to_state"]) for r in reversed(store.history())]
    assert hist == [("inactive", "firing"), ("firing", "resolved")]
    firing = payload(store.outbox()[0])
    assert "FIRING" in firing["title"] and "cache_hit_rate_drop" in firing["text"]
    assert any("Dig in" in str(b) for b in firing["blocks"])


def test_flapping_inside_the_hysteresis_band_sends_nothing(tmp_path: Path) -> None:
    clock = Clock()
    store, engine = make(tmp_path, clock)
    for cond in ["band", "ok", "band", "ok", "band"] * 4:  # 4..9 points under: never fires
        engine.apply({"cache_hit_rate_drop": [obs(cond)]})
        clock.advance(minutes=1)
    assert outbox_kinds(store) == []
    engine.apply({"cache_hit_rate_drop": [obs("breach")]})
    for cond in ["band", "breach", "band", "breach"] * 4:  # 6..12 points under: stays firing, quietly
        clock.advance(minutes=1)
        engine.apply({"cache_hit_rate_drop": [obs(cond)]})
    assert outbox_kinds(store) == ["firing"]


def test_for_makes_alerts_pending_first(tmp_path: Path) -> None:
    clock = Clock()
    cfg = AlertsConfig(cache_hit_rate_drop=CacheHitRateDropSettings(for_s=300))
    store, engine = make(tmp_path, clock, cfg)
    engine.apply({"cache_hit_rate_drop": [obs("breach")]})
    assert states(store) == {"acme": "pending"}
    clock.advance(minutes=2)
    engine.apply({"cache_hit_rate_drop": [obs("ok")]})  # recovered while pending: nothing sent
    assert states(store) == {"acme": "inactive"}
    engine.apply({"cache_hit_rate_drop": [obs("breach")]})
    clock.advance(minutes=4)
    engine.apply({"cache_hit_rate_drop": [obs("breach")]})
    assert states(store) == {"acme": "pending"} and outbox_kinds(store) == []
    clock.advance(minutes=1)
    engine.apply({"cache_hit_rate_drop": [obs("breach")]})
    assert states(store) == {"acme": "firing"} and outbox_kinds(store) == ["firing"]


def _deliver_all(store: AlertStore) -> None:
    """What a working target does: every queued message marked sent."""
    with store.transaction() as con:
        con.execute("UPDATE outbox SET sent_at = 1 WHERE sent_at IS NULL")


@pytest.mark.parametrize("delivered, kinds", [
    (True, ["firing", "reminder", "reminder"]),  # a reminder each interval, each one sent
    (False, ["firing", "reminder"]),  # the target down: the newer reminder replaces the unsent one (no backlog)
])
def test_repeat_interval_reminds_in_the_thread(tmp_path: Path, delivered: bool, kinds: list[str]) -> None:
    clock = Clock()
    store, engine = make(tmp_path, clock, AlertsConfig(repeat_interval_s=3600))
    engine.apply({"cache_hit_rate_drop": [obs("breach")]})
    for _ in range(12):  # two hours, every 10 minutes
        if delivered:
            _deliver_all(store)
        clock.advance(minutes=10)
        engine.apply({"cache_hit_rate_drop": [obs("breach")]})
    assert outbox_kinds(store) == kinds


def test_group_by_rule_makes_one_thread_for_several_tenants(tmp_path: Path) -> None:
    clock = Clock()
    store, engine = make(tmp_path, clock)
    engine.apply({"cache_hit_rate_drop": [obs("breach", "acme"), obs("breach", "globex")]})
    clock.advance(minutes=1)
    engine.apply({"cache_hit_rate_drop": [obs("ok", "acme"), obs("breach", "globex")]})
    clock.advance(minutes=1)
    engine.apply({"cache_hit_rate_drop": [obs("ok", "acme"), obs("ok", "globex")]})
    assert outbox_kinds(store) == ["firing", "update", "resolved"]
    first = payload(store.outbox()[0])["text"]
    assert "acme" in first and "globex" in first
    assert len({r["incident"] for r in store.outbox()}) == 1


def test_group_by_tenant_makes_separate_incidents(tmp_path: Path) -> None:
    clock = Clock()
    store, engine = make(tmp_path, clock, AlertsConfig(group_by=("rule", "tenant")))
    engine.apply({"cache_hit_rate_drop": [obs("breach", "acme"), obs("breach", "globex")]})
    assert outbox_kinds(store) == ["firing", "firing"]


def test_an_alert_whose_series_vanishes_resolves_after_no_data_resolve_s(tmp_path: Path) -> None:
    clock = Clock()
    store, engine = make(tmp_path, clock)
    engine.apply({"cache_hit_rate_drop": [obs("breach")]})
    clock.advance(hours=2)
    engine.apply({"cache_hit_rate_drop": []})
    engine.apply({"cache_hit_rate_drop": None})  # skipped rule: nothing changes
    assert states(store) == {"acme": "firing"}
    clock.advance(hours=1, seconds=1)
    engine.apply({"cache_hit_rate_drop": []})
    assert states(store) == {"acme": "resolved"}
    assert outbox_kinds(store) == ["firing", "resolved"]
    assert store.history(limit=1)[0]["summary"].startswith("no data")


def test_silence_mutes_and_its_expiry_notifies(tmp_path: Path) -> None:
    clock = Clock()
    store, engine = make(tmp_path, clock)
    s = store.add_silence("cache_hit_rate_drop", {"tenant": "acme"}, starts_at=clock(),
                          ends_at=clock() + timedelta(hours=2), reason="reindexing")
    for _ in range(6):
        engine.apply({"cache_hit_rate_drop": [obs("breach", "acme"), obs("ok", "globex")]})
        clock.advance(minutes=10)
    assert outbox_kinds(store) == []
    assert store.history(limit=1)[0]["muted"] == f"silenced by #{s.id}"
    clock.advance(hours=2)
    engine.apply({"cache_hit_rate_drop": [obs("breach", "acme")]})
    assert outbox_kinds(store) == ["firing"]


def test_silence_by_rule_and_unsilence(tmp_path: Path) -> None:
    clock = Clock()
    store, engine = make(tmp_path, clock)
    s = store.add_silence("*", {}, starts_at=clock(), ends_at=clock() + timedelta(hours=2), reason="maintenance")
    engine.apply({"cache_hit_rate_drop": [obs("breach")]})
    assert outbox_kinds(store) == []
    store.remove_silence(s.id, at=clock())
    clock.advance(minutes=1)
    engine.apply({"cache_hit_rate_drop": [obs("breach")]})
    assert outbox_kinds(store) == ["firing"]
    with pytest.raises(SilenceError):
        store.remove_silence(s.id, at=clock())
    with pytest.raises(SilenceError, match="reason"):
        store.add_silence("x", {}, starts_at=clock(), ends_at=clock() + timedelta(hours=1), reason=" ")


def test_pipeline_silent_inhibits_the_rate_rules(tmp_path: Path) -> None:
    clock = Clock()
    store, engine = make(tmp_path, clock)
    silent = obs("breach", rule="pipeline_silent", value=1800.0)
    engine.apply({"pipeline_silent": [silent], "cache_hit_rate_drop": [obs("breach")]})
    clock.advance(minutes=5)
    engine.apply({"pipeline_silent": [silent], "cache_hit_rate_drop": [obs("breach")]})
    kinds = [(r["kind"], payload(r)["title"]) for r in store.outbox()]
    assert len(kinds) == 1 and "pipeline_silent" in kinds[0][1]
    assert store.history(rule="cache_hit_rate_drop")[0]["muted"] == "inhibited by pipeline_silent"
    clock.advance(minutes=5)
    engine.apply({"pipeline_silent": [obs("ok", rule="pipeline_silent")], "cache_hit_rate_drop": [obs("breach")]})
    assert [r["kind"] for r in store.outbox()] == ["firing", "resolved", "firing"]  # the drop is real after all


def test_restart_mid_incident_neither_resends_nor_forgets(tmp_path: Path) -> None:
    clock = Clock()
    store, engine = make(tmp_path, clock)
    engine.apply({"cache_hit_rate_drop": [obs("breach")]})
    store.close()
    for _ in range(3):  # three restarts, each a fresh store and engine over the same file
        clock.advance(minutes=1)
        store, engine = make(tmp_path, clock)
        engine.apply({"cache_hit_rate_drop": [obs("breach")]})
        store.close()
    store, engine = make(tmp_path, clock)
    engine.apply({"cache_hit_rate_drop": [obs("ok")]})
    assert outbox_kinds(store) == ["firing", "resolved"]
    assert {r["incident"] for r in store.outbox()} == {1}


def test_history_becomes_the_alerts_view(tmp_path: Path) -> None:
    clock = Clock()
    store, engine = make(tmp_path, clock)
    lake = tmp_path / "lake"
    con = duckdb.connect()
    con.execute(alerts_view_sql(lake))  # works before any alert (zero-row schema file)
    assert con.execute("SELECT count(*) FROM alerts").fetchone() == (0,)
    engine.apply({"cache_hit_rate_drop": [obs("breach")]})
    clock.advance(hours=1)
    engine.apply({"cache_hit_rate_drop": [obs("ok", value=0.44)]})
    export_history(store, lake)
    rows = con.execute("SELECT rule, tenant, from_state, to_state, value FROM alerts_history ORDER BY ts").fetchall()
    assert rows == [("cache_hit_rate_drop", "acme", "inactive", "firing", 0.30),
                    ("cache_hit_rate_drop", "acme", "firing", "resolved", 0.44)]
    (ep,) = con.execute("SELECT state, fired_at, resolved_at - fired_at, value FROM alerts").fetchall()
    assert ep[0] == "resolved" and ep[2] == timedelta(hours=1) and ep[3] == 0.30
