"""The whole alerting path over a real lake (Parquet files + DuckDB views), and the CLI."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from click.testing import CliRunner

from costline.alerts.testing import ManualClock as Clock
from costline.alerts.notify import InMemoryNotifier
from costline.alerts.service import AlertService, state_path
from costline.alerts.settings import AlertsConfig
from costline.sim.slack_standin import SlackStandIn
from costline.alerts.view import alerts_view_sql
from costline.config import Config, LakeConfig
from costline.lake import LOOKUPS_SCHEMA, Lake

START = datetime(2026, 11, 1)
INCIDENT = START + timedelta(days=7, hours=10)  # acme's 10:00 hour on day 8


def write_lookups(lake_path: Path, hours: int = 7 * 24 + 13) -> None:
    """acme and globex, 120 lookups an hour at ~45% hits; acme falls to 15% for two hours at INCIDENT."""
    rows: dict[str, list] = {f.name: [] for f in LOOKUPS_SCHEMA}
    for h in range(hours):
        hour = START + timedelta(hours=h)
        for tenant in ("acme", "globex"):
            rate = 0.15 if tenant == "acme" and INCIDENT <= hour < INCIDENT + timedelta(hours=2) else 0.45
            for i in range(120):
                rows["span_id"].append(f"{tenant}{h:05d}{i:03d}")
                rows["trace_id"].append("t" * 32)
                rows["parent_span_id"].append(None)
                rows["request_id"].append(None)
                rows["ts"].append(hour + timedelta(seconds=i * 29))
                rows["tenant"].append(tenant)
                rows["namespace"].append("faq")
                rows["hit"].append(i < round(rate * 120))
                rows["similarity"].append(0.95)
                rows["duration_ms"].append(1.0)
                rows["kafka_partition"].append(0)
                rows["kafka_offset"].append(len(rows["kafka_offset"]))
                rows["data_quality"].append(None)
                rows["reject_reason"].append(None)
                rows["service_name"].append("support-bot")
    table = pa.table(rows, schema=LOOKUPS_SCHEMA)
    lake = Lake(lake_path).init()
    by_day: dict[str, pa.Table] = {}
    days = sorted({t.date().isoformat() for t in rows["ts"]})
    import pyarrow.compute as pc

    for d in days:
        day = datetime.fromisoformat(d)
        mask = pc.and_(pc.greater_equal(table["ts"], pa.scalar(day, pa.timestamp("us"))),
                       pc.less(table["ts"], pa.scalar(day + timedelta(days=1), pa.timestamp("us"))))
        by_day[d] = table.filter(mask)
    lake.commit_batch("otlp_spans", 0, 0, table.num_rows - 1, {"lookups": by_day})


@pytest.fixture(scope="module")
def lake_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("alerts-lake") / "lake"
    write_lookups(path)
    return path


def config_for(tmp_path: Path, lake_path: Path, **alerts: object) -> Config:
    return Config(lake=LakeConfig(path=lake_path),
                  alerts=AlertsConfig(state_path=tmp_path / "state.sqlite", **alerts))  # type: ignore[arg-type]


def test_the_injected_cache_incident_fires_once_and_resolves(tmp_path: Path, lake_path: Path) -> None:
    clock = Clock(INCIDENT.replace(tzinfo=UTC) + timedelta(hours=1, seconds=45))  # 45 s after the window closed
    memory = InMemoryNotifier("slack")
    lines: list[str] = []
    from costline.alerts.notify import ConsoleNotifier

    service = AlertService(config_for(tmp_path, lake_path), now=clock,
                           notifiers={"console": ConsoleNotifier(lines.append), "slack": memory})
    try:
        report = service.tick()
        assert [o.labels["tenant"] for o in report.observations["cache_hit_rate_drop"]
                if o.condition.value == "breach"] == ["acme"]
        assert not report.observations["student_drift"]  # no nightly eval run yet: nothing to judge
        assert [m.payload["kind"] for m in memory.sent()] == ["firing"]  # delivered in the same tick
        assert "tenant=acme" in lines[0]
        for _ in range(2):  # the next hours: still low, then back
            clock.advance(hours=1)
            service.tick()
        assert [m.payload["kind"] for m in memory.sent() if m.op == "post"] == ["firing", "resolved"]
        pipeline = report.observations["pipeline_silent"]
        assert pipeline and pipeline[0].condition.value == "ok"
    finally:
        service.shutdown()
    con = duckdb.connect()
    con.execute(alerts_view_sql(lake_path))
    assert con.execute("SELECT to_state FROM alerts_history WHERE tenant = 'acme' ORDER BY ts").fetchall() == [
        ("firing",), ("resolved",)]
    assert con.execute("SELECT state, fired_at FROM alerts ORDER BY fired_at DESC").fetchall()[-1] == (
        "resolved", INCIDENT + timedelta(hours=1, seconds=45))


def test_pipeline_silent_fires_and_inhibits_when_spans_stop(tmp_path: Path, lake_path: Path) -> None:
    last_hour = START + timedelta(hours=7 * 24 + 13)
    clock = Clock(last_hour.replace(tzinfo=UTC) + timedelta(minutes=30))
    memory = InMemoryNotifier("slack")
    service = AlertService(config_for(tmp_path, lake_path), now=clock, notifiers={"slack": memory})
    try:
        service.tick()
    finally:
        service.shutdown()
    assert [m.payload["title"].split()[2] for m in memory.sent()] == ["pipeline_silent"]


def test_service_to_the_slack_standin_from_config(tmp_path: Path, lake_path: Path) -> None:
    clock = Clock(INCIDENT.replace(tzinfo=UTC) + timedelta(hours=1, minutes=1))
    with SlackStandIn(now=clock.epoch) as slack:
        cfg = config_for(tmp_path, lake_path, console=False)
        cfg = cfg.replace(alerts={"slack": cfg.alerts.slack.__class__(
            token="xoxb-demo", channel="alerts", base_url=slack.base_url, timeout_s=2)})
        service = AlertService(cfg, now=clock)
        try:
            service.tick()
        finally:
            service.shutdown()
        (msg,) = slack.messages("alerts")
        assert "acme" in msg["text"] and msg["metadata"]["event_type"] == "costline_alert"


def test_cli(tmp_path: Path, lake_path: Path) -> None:
    from costline.cli import _register_area_commands, cli

    _register_area_commands()
    toml = tmp_path / "costline.toml"
    toml.write_text(f'[lake]\npath = "{lake_path}"\n[alerts]\nstate_path = "{tmp_path / "s.sqlite"}"\n')
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(cli, ["--config", str(toml), "alerts", *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    out = run("run", "--from", "2026-11-08T10:00:00", "--to", "2026-11-08T13:00:00", "--interval", "3600")
    assert "replayed 4 evaluations" in out and "FIRING" in out
    assert "cache_hit_rate_drop" in run("history")
    out = run("silence", "cache_hit_rate_drop", "--label", "tenant=acme", "--for", "2h", "--reason", "reindex")
    assert "silence #1" in out
    assert "reindex" in run("list", "--silences")
    assert "removed" in run("unsilence", "1")
    assert "sent to console" in run("test-notify", "--timeout", "1")
    for cmd in ("run", "list", "history", "silence", "unsilence", "test-notify", "slack-standin"):
        help_text = run(cmd, "--help")
        assert "Example:" in help_text
    assert state_path(Config()).name == "state.sqlite"
