"""A firing alert whose series stops (the tenant's cache or instrumentation died): the incident closes after
no_data_resolve_s, and what reaches Slack says it closed for lack of data, never the old breach's figures as if
they were the reason it resolved."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from costline.alerts.engine import AlertEngine
from costline.alerts.outbox import Outbox
from costline.alerts.notify import InMemoryNotifier
from costline.alerts.rules import Rule, Snapshot, evaluate
from costline.alerts.settings import AlertsConfig
from costline.alerts.store import AlertStore

T0 = datetime(2026, 11, 8, 11, 1, tzinfo=UTC)  # judges 10:00–11:00


def _row(now: datetime, tenant: str, rate: float) -> dict:
    hour = now.replace(minute=0, second=0, microsecond=0, tzinfo=None) - timedelta(hours=1)
    return {"window_start": hour, "tenant": tenant, "hit_rate": rate, "lookups": 500, "hits": int(rate * 500),
            "avg_7d": 0.60, "lookups_7d": 50000, "avg_7d_hour": 0.60, "lookups_7d_hour": 3500}


def _run(tmp_path: Path, config: AlertsConfig, hours: int, acme_hours: int = 1) -> tuple[AlertStore, list]:
    store = AlertStore(tmp_path / "state.sqlite")
    mem = InMemoryNotifier("slack")
    engine, box = AlertEngine(store, config, targets=("slack",)), Outbox(store, {"slack": mem})
    rule = Rule("cache_hit_rate_drop", config.cache_hit_rate_drop, config.settle_s)
    for h in range(hours):
        now = T0 + timedelta(hours=h)
        rows = [_row(now, "other", 0.60)] + ([_row(now, "acme", 0.30)] if h < acme_hours else [])
        engine.apply({"cache_hit_rate_drop": evaluate(rule, Snapshot(cache=rows), now)}, now)
        box.deliver_due(now)
    return store, mem.sent()


def _all_text(payload: dict) -> str:
    return payload["text"] + "\n" + json.dumps(payload["blocks"], ensure_ascii=False)


def test_the_resolve_of_a_vanished_series_says_it_closed_for_lack_of_data(tmp_path: Path) -> None:
    # acme breaches at 11:01 (30 % vs 60 %, for the hour 10:00–11:00), then has no lookups: at 14:01 the
    # alert has gone 3 h (no_data_resolve_s) without an observation and closes
    store, sent = _run(tmp_path, AlertsConfig(), hours=4)
    assert [(m.op, m.payload["kind"]) for m in sent] == [("post", "firing"), ("post", "resolved"),
                                                         ("update", "resolved")]
    assert "30.0%" in sent[0].payload["text"]  # the firing message had the figures
    for m in sent[1:]:  # the reply in the thread and the edited original
        text = m.payload["text"]
        assert "Closed after 180 min for lack of data." in text
        assert "no lookups for acme since 11:00 UTC — closed for lack of data; check its traffic" in text
        everything = _all_text(dict(m.payload))
        assert "30.0%" not in everything and "60.0%" not in everything  # no stale figure as the current one
        assert "Resolved after" not in everything
    blocks = json.dumps(sent[1].payload["blocks"], ensure_ascii=False)
    assert "closed for lack of data" in blocks and "2026-11-08 10:00–11:00 UTC" in blocks  # the last data
    (row,) = [r for r in store.history() if r["to_state"] == "resolved"]
    assert row["summary"] == "no data: no lookups for acme since 11:00 UTC — closed for lack of data; check its traffic"
    assert row["value"] is None


def test_a_member_closing_for_lack_of_data_while_others_fire_says_so_in_the_update(tmp_path: Path) -> None:
    cfg = AlertsConfig()
    store = AlertStore(tmp_path / "state.sqlite")
    mem = InMemoryNotifier("slack")
    engine, box = AlertEngine(store, cfg, targets=("slack",)), Outbox(store, {"slack": mem})
    rule = Rule("cache_hit_rate_drop", cfg.cache_hit_rate_drop, cfg.settle_s)
    for h in range(4):
        now = T0 + timedelta(hours=h)
        rows = [_row(now, "globex", 0.30)] + ([_row(now, "acme", 0.30)] if h == 0 else [])
        engine.apply({"cache_hit_rate_drop": evaluate(rule, Snapshot(cache=rows), now)}, now)
        box.deliver_due(now)
    kinds = [(m.op, m.payload["kind"]) for m in mem.sent()]
    assert kinds == [("post", "firing"), ("post", "update"), ("update", "firing")]  # + the original, edited
    reply = mem.sent()[1].payload
    assert "• tenant=acme: no lookups for acme since 11:00 UTC — closed for lack of data" in reply["text"]
    assert "closed for lack of data" in json.dumps(reply["blocks"])  # the state word of the member


def test_a_series_that_comes_back_fires_with_fresh_figures(tmp_path: Path) -> None:
    store, sent = _run(tmp_path, AlertsConfig(), hours=6, acme_hours=1)
    assert [m.payload["kind"] for m in sent if m.op == "post"] == ["firing", "resolved"]
    # acme comes back still breaching: a new incident with the figures of the new hour
    cfg = AlertsConfig()
    engine, mem = AlertEngine(store, cfg, targets=("slack",)), InMemoryNotifier("slack")
    now = T0 + timedelta(hours=6)
    rule = Rule("cache_hit_rate_drop", cfg.cache_hit_rate_drop, cfg.settle_s)
    engine.apply({"cache_hit_rate_drop": evaluate(rule, Snapshot(cache=[_row(now, "acme", 0.20)]), now)}, now)
    Outbox(store, {"slack": mem}).deliver_due(now)
    (firing,) = mem.sent()
    assert firing.payload["kind"] == "firing" and "20.0%" in firing.payload["text"]
    assert "lack of data" not in firing.payload["text"]
