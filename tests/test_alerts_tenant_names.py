"""A tenant literally named ``(none)`` and the lookups recorded without a tenant are two series: their own hit rate,
alert key, Slack line, silence and dashboard panel, never one merged series.

Every expected figure is worked out by hand from the lookups the test writes (see the comments)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from scipy.stats import norm

from costline import dashboards
from costline.alerts.notify import InMemoryNotifier
from costline.alerts.rules import Condition, no_data_summary
from costline.alerts.service import AlertService
from costline.alerts.settings import AlertsConfig
from costline.alerts.store import Silence
from costline.config import Config, LakeConfig
from costline.dashboards import query_chart
from costline.lake import Lake, open_lake
from costline.processors.buffer import rows_to_tables
from costline.processors.records import LookupRow

#: The judged hour (02:00 UTC); the tick runs at 03:01, when it has closed and settled.
H = datetime(2026, 11, 8, 2)
NOW = (H + timedelta(hours=1, minutes=1)).replace(tzinfo=UTC)

# tenant id -> ((lookups, hits) of each of the 168 hours before H, (lookups, hits) of H)
TRAFFIC = {
    None: ((60, 36), (60, 18)),      # no costline.tenant: 60 % every hour, 18/60 = 30 % in H
    "(none)": ((50, 40), (50, 20)),  # a real tenant named "(none)": 80 % every hour, 20/50 = 40 % in H
    "acme": ((50, 25), (50, 25)),    # 50 % throughout: nothing to say
}


def _us(t: datetime) -> int:
    return int(t.replace(tzinfo=UTC).timestamp() * 1_000_000)


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> Config:
    path = tmp_path_factory.mktemp("tenant_names") / "lake"
    rows: list[LookupRow] = []
    for tenant, (before, judged) in TRAFFIC.items():
        for h in range(168, -1, -1):
            hour = H - timedelta(hours=h)
            lookups, hits = judged if h == 0 else before
            for i in range(lookups):
                n = len(rows) + 1
                rows.append(LookupRow(f"s{n}", f"t{n}", None, None, _us(hour + timedelta(seconds=i * 3600 // lookups)),
                                      tenant, "default", i < hits, 0.9, 1.0, 0, n))
    Lake(path).init().commit_batch("otlp_spans", 0, 0, len(rows), {"lookups": rows_to_tables("lookups", rows)})
    return Config(lake=LakeConfig(path=path),
                  alerts=AlertsConfig(state_path=path / "_alerts" / "state.sqlite"))


def _p(hits: int, n: int, hits_base: int, n_base: int) -> float:
    """One-sided pooled two-proportion z-test, by hand: P(Z < (p1 - p2) / se)."""
    pooled = (hits + hits_base) / (n + n_base)
    se = (pooled * (1 - pooled) * (1 / n + 1 / n_base)) ** 0.5
    return float(norm.cdf((hits / n - hits_base / n_base) / se))


def test_the_tenant_named_none_and_the_tenantless_lookups_alert_apart(cfg: Config) -> None:
    mem = InMemoryNotifier("slack")
    svc = AlertService(cfg, notifiers={"slack": mem}, export=False, now=lambda: NOW)
    try:
        rep = svc.tick(NOW, rules=["cache_hit_rate_drop"])
        firing = {r["labels"] for r in svc.store.alerts(states=["firing"])}
    finally:
        svc.shutdown()
    got = rep.observations["cache_hit_rate_drop"] or []
    obs = {o.labels["tenant"]: o for o in got}
    assert len(got) == 3 and len({o.fingerprint for o in got}) == 3
    assert set(obs) == {"(none)", '"(none)"', "acme"}

    # tenant-less: the 7 preceding 02:00 hours hold 7 x 60 = 420 lookups, 7 x 36 = 252 hits = 60 %; H 18/60 = 30 %
    less = obs["(none)"]
    assert less.condition == Condition.BREACH
    assert less.value == pytest.approx(0.30) and less.threshold == pytest.approx(0.50)
    assert less.summary == ("cache hit rate of (none) 30.0% vs the same hour's 7-day average 60.0% "
                            "(+30.0 points under)")
    assert less.figures["lookups"] == 60 and less.figures["lookups (02:00, 7 days)"] == 420
    assert less.figures["p-value"] == f"{_p(18, 60, 252, 420):.2g}"  # z = -0.30 / 0.068465 = -4.38

    # the tenant "(none)": 7 x 50 = 350 lookups, 7 x 40 = 280 hits = 80 %; H 20/50 = 40 %
    named = obs['"(none)"']
    assert named.condition == Condition.BREACH
    assert named.value == pytest.approx(0.40) and named.threshold == pytest.approx(0.70)
    assert named.summary == ('cache hit rate of "(none)" 40.0% vs the same hour\'s 7-day average 80.0% '
                             "(+40.0 points under)")
    assert named.figures["lookups"] == 50 and named.figures["lookups (02:00, 7 days)"] == 350
    assert named.figures["p-value"] == f"{_p(20, 50, 280, 350):.2g}"  # z = -0.40 / 0.065465 = -6.11

    assert obs["acme"].condition == Condition.OK  # 25/50 vs 7 x 25 / 7 x 50 = 175/350: 0 points, >= 50 lookups

    # two alerts fire, and the one Slack message names each with its own figure
    assert firing == {'{"tenant": "(none)"}', '{"tenant": "\\"(none)\\""}'}
    (text,) = [m.payload["text"] for m in mem.sent() if m.op == "post"]
    lines = [ln for ln in text.splitlines() if ln.startswith("• ")]
    assert sorted(lines) == sorted([
        "• tenant=(none): cache hit rate of (none) 30.0% vs the same hour's 7-day average 60.0% (+30.0 points under)",
        '• tenant="(none)": cache hit rate of "(none)" 40.0% vs the same hour\'s 7-day average 80.0% '
        "(+40.0 points under)"])

    # each one's dig-in query finds its own series, not the other's
    con = open_lake(cfg)
    try:
        assert con.execute(less.query).fetchall()[-1][:4] == (H, None, 60, 0.3)
        assert con.execute(named.query).fetchall()[-1][:4] == (H, "(none)", 50, 0.4)
    finally:
        con.close()

    # a silence of the tenant-less series mutes that one only, and one of the tenant "(none)" the other only
    t0, t1 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    for matcher, muted in (("(none)", less), ('"(none)"', named)):
        s = Silence(1, "cache_hit_rate_drop", {"tenant": matcher}, t0, t1, "test")
        assert [o for o in got if s.matches(o.rule, o.labels, NOW)] == [muted]

    # an alert closed for lack of data says which series stopped
    assert no_data_summary("cache_hit_rate_drop", less.labels, H, NOW).startswith("no lookups for (none) since")
    assert no_data_summary("cache_hit_rate_drop", named.labels, H, NOW).startswith('no lookups for "(none)" since')


@pytest.mark.parametrize(("tenant", "label"), [
    (None, "(none)"),
    ("(none)", '"(none)"'),
    ("acme", "acme"),
    ("ünïcode tenant", "ünïcode tenant"),
    ("", '""'),
    ('"(none)"', '"\\"(none)\\""'),
    ('"acme', '"\\"acme"'),
    (" (none)", '" (none)"'),
    ("(none)\n", '"(none)\\n"'),
    ("a\\b", "a\\b"),
])
def test_tenant_labels_quote_the_ids_that_could_pass_for_another_series(tenant: str | None, label: str) -> None:
    from costline.alerts.rules import tenant_label

    assert tenant_label(tenant) == label


def test_no_two_tenant_ids_share_a_label() -> None:
    from costline.alerts.rules import tenant_label

    ids = [None, "(none)", '"(none)"', '""', "", " (none)", "(none) ", "acme", '"acme"', '"acme', "a\\b", '"a\\b"']
    assert len({tenant_label(t) for t in ids}) == len(ids)


def test_the_dashboard_draws_the_tenant_named_none_apart_from_the_tenantless_lookups(cfg: Config) -> None:
    """The page names a NULL tenant's panel "(none)": the tenant "(none)" is shown quoted, with its own rows."""
    chart = dashboards.chart_by_name("cache_hit_rate")
    con = open_lake(cfg)
    try:
        rows = query_chart(con, chart, cfg)
    finally:
        con.close()
    i = {c: n for n, c in enumerate(rows.columns)}
    judged = {r[i["tenant"]]: (r[i["lookups"]], r[i["hit_rate"]]) for r in rows.rows
              if r[i["window_start"]].startswith("2026-11-08T02:00")}
    assert judged == {None: (60, pytest.approx(0.30)), '"(none)"': (50, pytest.approx(0.40)),
                      "acme": (50, pytest.approx(0.50))}
