"""The cache hit-rate rule over a real lake: the same-hour-of-day baseline (a tenant's nights are judged against its
nights), the rolling one on request, lookups recorded without a tenant, and the setting's validation.

Every expected figure below is worked out by hand from the traffic the test writes (see the comments)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from costline.alerts.notify import InMemoryNotifier
from costline.alerts.rules import Condition, Rule, Snapshot, evaluate
from costline.alerts.service import AlertService
from costline.alerts.settings import AlertsConfig, CacheHitRateDropSettings
from costline.config import Config, LakeConfig, load_config
from costline.errors import ConfigError
from costline.lake import Lake, open_lake
from costline.processors.buffer import rows_to_tables
from costline.processors.records import LookupRow

#: The judged hour: 02:00 UTC, a night hour. The tick runs at 03:01 (the 02:00–03:00 hour has closed and settled).
H = datetime(2026, 11, 8, 2)
NOW = (H + timedelta(hours=1, minutes=1)).replace(tzinfo=UTC)


def _us(t: datetime) -> int:
    return int(t.replace(tzinfo=UTC).timestamp() * 1_000_000)


def _diurnal(t: datetime) -> tuple[int, int]:
    """(lookups, hits) of a normal hour: 08–18 UTC busy, 200 lookups at 70 %; otherwise 60 lookups at 40 %."""
    return (200, 140) if 8 <= t.hour < 18 else (60, 24)


def _flat(t: datetime) -> tuple[int, int]:
    return 60, 36  # 60 % around the clock


# tenant -> (shape of the 168 hours before H, (lookups, hits) of H itself)
TRAFFIC = {
    "acme": (_diurnal, (60, 24)),     # tonight like every night: 40 %
    "globex": (_diurnal, (60, 12)),   # a real drop: 20 % where its nights are 40 %
    None: (_flat, (60, 18)),          # no costline.tenant on the spans: 30 % where it is always 60 %
}


def _build_lake(path: Path) -> Config:
    rows: list[LookupRow] = []
    n = 0

    def add(tenant: str | None, hour: datetime, lookups: int, hits: int) -> None:
        nonlocal n
        for i in range(lookups):
            n += 1
            rows.append(LookupRow(f"s{n}", f"t{n}", None, None, _us(hour + timedelta(seconds=i * 3600 // lookups)),
                                  tenant, "default", i < hits, 0.9, 1.0, 0, n))

    for tenant, (shape, judged) in TRAFFIC.items():
        for h in range(1, 169):
            add(tenant, H - timedelta(hours=h), *shape(H - timedelta(hours=h)))
        add(tenant, H, *judged)
    Lake(path).init().commit_batch("otlp_spans", 0, 0, len(rows), {"lookups": rows_to_tables("lookups", rows)})
    return Config(lake=LakeConfig(path=path), alerts=AlertsConfig())


_STATES = 0


@pytest.fixture(scope="module")
def lake_cfg(tmp_path_factory: pytest.TempPathFactory) -> Config:
    return _build_lake(tmp_path_factory.mktemp("baselines") / "lake")


def _tick(cfg: Config, settings: CacheHitRateDropSettings | None = None) -> tuple[dict, list[str]]:
    """One tick of the alert service over the lake, from a fresh state file (nothing sent before)."""
    global _STATES
    _STATES += 1
    cfg = Config(lake=cfg.lake, alerts=AlertsConfig(cache_hit_rate_drop=settings or CacheHitRateDropSettings(),
                                                   state_path=cfg.lake.path / f"_alerts/state{_STATES}.sqlite"))
    mem = InMemoryNotifier("slack")
    svc = AlertService(cfg, notifiers={"slack": mem}, export=False, now=lambda: NOW)
    try:
        rep = svc.tick(NOW, rules=["cache_hit_rate_drop"])
    finally:
        svc.shutdown()
    obs = {o.labels["tenant"]: o for o in rep.observations["cache_hit_rate_drop"] or []}
    return obs, [m.payload["text"] for m in mem.sent() if m.op == "post"]


def test_the_view_has_the_same_hour_baseline_beside_the_rolling_one(lake_cfg: Config) -> None:
    """At 02:00 the 7 preceding 02:00 hours are all night hours: 7 x 60 = 420 lookups, 7 x 24 = 168 hits = 40 %.
    The rolling window's 168 hours hold each hour of day 7 times: 70 busy hours (7 x 10) and 98 night hours:
    lookups 70 x 200 + 98 x 60 = 19,880, hits 70 x 140 + 98 x 24 = 12,152, 12,152 / 19,880 = 0.611268…"""
    con = open_lake(lake_cfg)
    got = con.execute("SELECT tenant, hit_rate, avg_7d, lookups_7d, avg_7d_hour, lookups_7d_hour "
                      "FROM cache_hit_rate_7d WHERE window_start = ? ORDER BY tenant NULLS LAST", [H]).fetchall()
    assert [(t, lk7, lk7h) for t, _, _, lk7, _, lk7h in got] == [
        ("acme", 19880, 420), ("globex", 19880, 420), (None, 10080, 420)]
    acme, globex, none = got
    assert acme[1] == pytest.approx(0.40) and acme[4] == pytest.approx(0.40)
    assert acme[2] == pytest.approx(12152 / 19880) and acme[2] == pytest.approx(0.611268, abs=1e-6)
    assert globex[1] == pytest.approx(0.20) and globex[4] == pytest.approx(0.40)
    assert none[1] == pytest.approx(0.30) and none[2] == pytest.approx(0.60) and none[4] == pytest.approx(0.60)
    # a busy hour's same-hour baseline is made of busy hours only: 10:00 the day before H, 7 x 200 at 70 %
    busy = con.execute("SELECT avg_7d_hour, lookups_7d_hour FROM cache_hit_rate_7d "
                       "WHERE tenant = 'acme' AND window_start = ?", [H - timedelta(hours=16)]).fetchone()
    # 2026-11-07 10:00 has 10:00 hours on 6 days before it in the lake (the data starts 2026-11-01 02:00)
    assert busy == (pytest.approx(0.70), 6 * 200)


def test_a_normal_night_pages_nobody_and_a_real_drop_at_night_does(lake_cfg: Config) -> None:
    obs, sent = _tick(lake_cfg)
    # acme: 40 % vs its nights' 40 %: 0 points under, enough data on both sides -> OK
    assert obs["acme"].condition == Condition.OK
    assert obs["acme"].summary == "cache hit rate of acme 40.0% vs the same hour's 7-day average 40.0% (+0.0 points under)"
    # globex: 20 % vs 40 %: 20 points; z-test 12/60 vs 168/420: pooled 180/480 = 0.375,
    # se = sqrt(0.375 x 0.625 x (1/60 + 1/420)) = 0.066815, z = -0.2 / 0.066815 = -2.993, p = 0.0014 < 0.01
    g = obs["globex"]
    assert g.condition == Condition.BREACH
    assert g.summary == ("cache hit rate of globex 20.0% vs the same hour's 7-day average 40.0% "
                         "(+20.0 points under)")
    assert g.figures["same hour's 7-day average"] == "40.0%" and g.figures["lookups (02:00, 7 days)"] == 420
    assert g.figures["p-value"] == "0.0014"
    assert g.figures["all hours' 7-day average"] == "61.1%"
    assert g.threshold == pytest.approx(0.30)
    (text,) = sent
    assert "tenant=globex" in text and "tenant=acme" not in text


def test_lookups_without_a_tenant_alert_as_their_own_series(lake_cfg: Config) -> None:
    """30 % vs 60 %: 30 points; 18/60 vs 252/420: pooled 270/480 = 0.5625, se = sqrt(0.5625 x 0.4375 x
    (1/60 + 1/420)) = 0.068465, z = -4.38, p = 6e-06."""
    obs, sent = _tick(lake_cfg)
    none = obs["(none)"]
    assert none.condition == Condition.BREACH
    assert none.summary == "cache hit rate of (none) 30.0% vs the same hour's 7-day average 60.0% (+30.0 points under)"
    assert "WHERE tenant IS NULL" in none.query
    assert any("tenant=(none)" in t for t in sent)
    con = open_lake(lake_cfg)
    assert con.execute(none.query).fetchall()[-1][:4] == (H, None, 60, 0.3)  # the query finds the series


def test_the_rolling_baseline_on_request_pages_the_normal_night(lake_cfg: Config) -> None:
    """With baseline = "rolling" acme's normal night is 40 % vs 61.1 %: 21.1 points under; 24/60 vs 12,152/19,880:
    pooled 12,176/19,940 = 0.61063, se = sqrt(0.61063 x 0.38937 x (1/60 + 1/19,880)) = 0.063045, z = -3.35,
    p = 0.0004: what the same-hour baseline exists to avoid."""
    obs, _ = _tick(lake_cfg, CacheHitRateDropSettings(baseline="rolling"))
    a = obs["acme"]
    assert a.condition == Condition.BREACH
    assert a.summary == "cache hit rate of acme 40.0% vs 7-day average 61.1% (+21.1 points under)"
    assert a.figures["lookups (7 days)"] == 19880 and "all hours' 7-day average" not in a.figures


W = datetime(2026, 11, 8, 10)


def _row(**kw: object) -> dict:
    row = {"window_start": W, "tenant": "acme", "hit_rate": 0.20, "lookups": 100, "hits": 20,
           "avg_7d": 0.60, "lookups_7d": 16800, "avg_7d_hour": 0.40, "lookups_7d_hour": 700}
    row.update(kw)
    return row


def _judge(row: dict, **settings: object) -> object:
    rule = Rule("cache_hit_rate_drop", CacheHitRateDropSettings(**settings), 30.0)  # type: ignore[arg-type]
    (o,) = evaluate(rule, Snapshot(cache=[row]), datetime(2026, 11, 8, 11, 1, tzinfo=UTC))
    return o


def test_the_minimum_data_checks_apply_to_the_baseline_in_use() -> None:
    # 150 lookups in the 7 same hours (< min_lookups_7d 200): too little to judge, though the 7 days hold 16,800
    assert _judge(_row(lookups_7d_hour=150)).condition == Condition.BAND
    # ... and the rolling baseline with 150 lookups in 168 hours is as little, however many the same hours hold
    assert _judge(_row(lookups_7d=150), baseline="rolling").condition == Condition.BAND
    assert _judge(_row(lookups_7d=150)).condition == Condition.BREACH  # the same-hour baseline has 700
    # history, but none at 10:00: no same-hour baseline -> the state is kept (not "no data": there were lookups)
    o = _judge(_row(avg_7d_hour=None, lookups_7d_hour=None))
    assert o.condition == Condition.BAND and "no same-hour baseline" in o.summary
    # no history at all: nothing to judge against, as before
    rule = Rule("cache_hit_rate_drop", CacheHitRateDropSettings(), 30.0)
    assert evaluate(rule, Snapshot(cache=[_row(avg_7d=None, lookups_7d=None, avg_7d_hour=None,
                                               lookups_7d_hour=None)]),
                    datetime(2026, 11, 8, 11, 1, tzinfo=UTC)) == []


def test_a_row_without_the_same_hour_columns_is_judged_on_the_rolling_baseline_and_says_so() -> None:
    row = _row()
    del row["avg_7d_hour"], row["lookups_7d_hour"]
    o = _judge(row)
    assert o.summary == "cache hit rate of acme 20.0% vs 7-day average 60.0% (+40.0 points under)"


@pytest.mark.parametrize("value", ["daily", "HOUR_OF_DAY", ""])
def test_an_unknown_baseline_is_refused_naming_the_key_and_the_choices(tmp_path: Path, value: str) -> None:
    path = tmp_path / "costline.toml"
    path.write_text(f'[alerts.cache_hit_rate_drop]\nbaseline = "{value}"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    msg = str(info.value)
    assert "[alerts.cache_hit_rate_drop] baseline" in msg and '"hour_of_day"' in msg and '"rolling"' in msg
    assert repr(value) in msg


def test_the_default_baseline_is_the_same_hour_and_rolling_loads(tmp_path: Path) -> None:
    assert CacheHitRateDropSettings().baseline == "hour_of_day"
    path = tmp_path / "costline.toml"
    path.write_text('[alerts.cache_hit_rate_drop]\nbaseline = "rolling"\n', encoding="utf-8")
    assert load_config(path, env={}).alerts.cache_hit_rate_drop.baseline == "rolling"
    assert load_config(path, env={"COSTLINE_ALERTS_CACHE_HIT_RATE_DROP_BASELINE": "hour_of_day"}
                       ).alerts.cache_hit_rate_drop.baseline == "hour_of_day"
