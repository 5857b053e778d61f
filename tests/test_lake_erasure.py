"""Erasure and content retention of the local lake: ``Lake.forget`` / ``costline lake forget`` (a tenant's rows
removed), ``Lake.redact`` / ``costline lake redact`` and ``lake compact`` with ``[lake] content_retention_days``
(prompts and answers set to NULL past the retention).

Lakes are written through the real commit protocol (:meth:`Lake.commit_batch`), read back with real DuckDB; every
expected count is worked out by hand from the rows each test writes.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from costline.cli import _register_area_commands, cli
from costline.config import Config, LakeConfig, load_config
from costline.errors import ConfigError, LakeError
from costline.lake import SCHEMAS, Lake, NoLake, open_lake
from costline.lake import _erasure
from costline.lake._erasure import ErasureIncomplete, TableTotal
from costline.lake._files import data_file_name
from costline.tablelake_cli import compact_once

TOPIC = "otlp_spans"
D1, D2, D3 = "2026-11-01", "2026-11-02", "2026-11-03"
NOW = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)  # D1..D3 are 7 to 9 days before it


def _row(table: str, n: int, tenant: str | None, day: str, text: bool = True) -> dict[str, Any]:
    """One row of ``table``, span ``s<n>``, figures derived from ``n`` (so a changed figure shows)."""
    row: dict[str, Any] = {"trace_id": f"t{n}", "span_id": f"s{n}", "request_id": f"r{n}", "tenant": tenant,
                           "ts": datetime.fromisoformat(f"{day}T10:00:00") if day != "1970-01-01" else None,
                           "kafka_partition": 0, "kafka_offset": n, "duration_ms": float(n)}
    if table == "requests":
        row |= {"success": n % 2 == 0, "attempts": n}
    if table == "calls":
        row |= {"input_tokens": 100 + n, "output_tokens": 10 + n, "cost_usd": n / 100, "finish_reasons": ["stop"]}
    if table in ("requests", "calls") and text:
        row |= {"input_messages": f"question {n}", "output_messages": f"answer {n}"}
    if table == "lookups":
        row |= {"hit": True, "similarity": 0.9}
    return row


def _arrow(table: str, rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SCHEMAS[table])


class _Writer:
    """Commits batches to partition 0 as the processor does, offsets counting on."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self.epoch = lake.claim(TOPIC, 0)
        self.next = 0

    def commit(self, tables: dict[str, dict[str, list[dict[str, Any]]]]) -> None:
        first = self.next
        self.next += 10
        self.lake.commit_batch(TOPIC, 0, first, self.next - 1,
                               {t: {d: _arrow(t, rows) for d, rows in by_day.items()} for t, by_day in tables.items()},
                               epoch=self.epoch)


def _three_day_lake(path: Path) -> Lake:
    """acme, globex and tenant-less rows over three days; two batches on D2 (two files a table there).

    requests: D1 s1 acme, s2 globex, s3 NULL | D2 s4 acme, s5 acme (batch 1); s6 acme, s7 NULL (batch 2) | D3 s8 globex
    calls:    D1 s11 acme | D2 s12 globex, s13 NULL (batch 1) | D3 s14 acme
    lookups:  D2 s21 acme, s22 globex (batch 2)
    """
    lake = Lake(path).init()
    w = _Writer(lake)
    w.commit({"requests": {D1: [_row("requests", 1, "acme", D1), _row("requests", 2, "globex", D1),
                                _row("requests", 3, None, D1)],
                           D2: [_row("requests", 4, "acme", D2), _row("requests", 5, "acme", D2)]},
              "calls": {D1: [_row("calls", 11, "acme", D1)],
                        D2: [_row("calls", 12, "globex", D2), _row("calls", 13, None, D2)]}})
    w.commit({"requests": {D2: [_row("requests", 6, "acme", D2), _row("requests", 7, None, D2)],
                           D3: [_row("requests", 8, "globex", D3)]},
              "calls": {D3: [_row("calls", 14, "acme", D3)]},
              "lookups": {D2: [_row("lookups", 21, "acme", D2), _row("lookups", 22, "globex", D2)]}})
    return lake


def _files_rows(lake: Lake, table: str, columns: str = "span_id") -> list[tuple[Any, ...]]:
    """Every row of every file of ``table`` (no one-row-per-span: a row kept twice shows twice), sorted."""
    glob = str(lake.table_dir(table) / "*" / "*.parquet")
    return sorted(duckdb.sql(f"SELECT {columns} FROM read_parquet('{glob}', union_by_name = true)").fetchall(),
                  key=repr)


def _spans(lake: Lake, table: str) -> list[str]:
    return sorted(r[0] for r in _files_rows(lake, table))


def _snapshot(lake: Lake) -> dict[str, bytes]:
    return {str(p.relative_to(lake.path)): p.read_bytes() for p in sorted(lake.path.rglob("*.parquet"))}


# -- forget ----------------------------------------------------------------------------------------------------
def test_forget_removes_every_row_of_the_tenant_and_only_those(tmp_path: Path) -> None:
    lake = _three_day_lake(tmp_path / "lake")
    before_calls = {r[0]: r[1:] for r in _files_rows(lake, "calls", "span_id, input_tokens, output_tokens, cost_usd")}

    report = lake.forget(["acme"])

    assert _spans(lake, "requests") == ["s2", "s3", "s7", "s8"]
    assert _spans(lake, "calls") == ["s12", "s13"]
    assert _spans(lake, "lookups") == ["s22"]
    # requests: s1 (D1), s4 s5 (D2 file 1), s6 (D2 file 2) -> 4 rows, 2 days, 3 files
    # calls: s11 (D1, the file's only call row -> removed), s14 (D3) -> 2 rows, 2 days, 2 files
    # lookups: s21 (D2) -> 1 row, 1 day, 1 file
    assert report.tables[:3] == (TableTotal("requests", 4, 2, 3), TableTotal("calls", 2, 2, 2),
                                 TableTotal("lookups", 1, 1, 1))
    assert report.rows == 7 and report.not_covered == () and report.complete
    assert [(d.table, d.day, d.rows) for d in report.days] == [
        ("requests", D1, 1), ("requests", D2, 3), ("calls", D1, 1), ("calls", D3, 1), ("lookups", D2, 1)]
    # what stays is as it was: the figures of the calls kept
    after_calls = {r[0]: r[1:] for r in _files_rows(lake, "calls", "span_id, input_tokens, output_tokens, cost_usd")}
    assert after_calls == {"s12": before_calls["s12"], "s13": before_calls["s13"]} == {
        "s12": (112, 22, 0.12), "s13": (113, 23, 0.13)}
    # the views read the rewritten files
    con = open_lake(Config(lake=LakeConfig(path=lake.path)), create=False)
    try:
        assert con.execute("SELECT count(*) FROM requests_raw WHERE tenant = 'acme'").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM requests_raw").fetchone()[0] == 4
    finally:
        con.close()
    # a second forget finds nothing and rewrites nothing
    again = _snapshot(lake)
    assert lake.forget(["acme"]).rows == 0 and _snapshot(lake) == again


def test_forget_several_tenants_before_a_date(tmp_path: Path) -> None:
    lake = _three_day_lake(tmp_path / "lake")
    report = lake.forget(["acme", "globex", "acme"], before=date.fromisoformat(D2))
    # only D1: requests s1 acme, s2 globex; calls s11 acme; s3 (NULL) kept
    assert report.tenants == ("acme", "globex")
    assert report.tables[:3] == (TableTotal("requests", 2, 1, 1), TableTotal("calls", 1, 1, 1),
                                 TableTotal("lookups", 0, 0, 0))
    assert _spans(lake, "requests") == ["s3", "s4", "s5", "s6", "s7", "s8"]
    assert _spans(lake, "calls") == ["s12", "s13", "s14"]


def test_forget_includes_the_open_day(tmp_path: Path) -> None:
    """Today's committed files are rewritten too (compaction never touches them)."""
    today = datetime.now(UTC).date().isoformat()
    lake = Lake(tmp_path / "lake").init()
    _Writer(lake).commit({"requests": {today: [_row("requests", 1, "acme", today), _row("requests", 2, "b", today)]}})
    assert lake.compact() == []
    assert lake.forget(["acme"]).tables[0] == TableTotal("requests", 1, 1, 1)
    assert _spans(lake, "requests") == ["s2"]


def test_dry_run_changes_nothing_and_tells_per_day(tmp_path: Path) -> None:
    lake = _three_day_lake(tmp_path / "lake")
    files = _snapshot(lake)
    report = lake.forget(["acme"], dry_run=True)
    assert _snapshot(lake) == files
    assert report.dry_run and report.rows == 7
    lines = report.lines()
    assert "requests 2026-11-02: 3 rows would go" in lines
    assert "requests: would remove 4 rows of 2 day(s), 3 file(s) to rewrite" in lines


def test_a_batch_committed_after_the_forget_started_is_reported_not_covered(tmp_path: Path) -> None:
    """A data file no manifest commits (yet) is left as it is, and named with its rows of the tenant."""
    lake = _three_day_lake(tmp_path / "lake")
    late = lake.table_dir("requests") / f"date={D3}" / data_file_name(0, 20, 29, TOPIC)  # past the last manifest (19)
    pq.write_table(_arrow("requests", [_row("requests", 30, "acme", D3), _row("requests", 31, "acme", D3),
                                       _row("requests", 32, "zeta", D3)]), late)
    late_bytes = late.read_bytes()
    report = lake.forget(["acme"])
    assert [(n.path, n.rows) for n in report.not_covered] == [(late, 2)]
    assert late.read_bytes() == late_bytes
    assert report.tables[0] == TableTotal("requests", 4, 2, 3)  # as without it
    assert any("not covered" in line and "run the forget again" in line for line in report.lines())


def test_a_committed_batch_still_staged_is_put_in_place_and_forgotten(tmp_path: Path) -> None:
    """A writer that stopped between its manifest and its renames leaves committed rows staged, which recovery
    would put back after the forget: forget finishes the renames first."""
    lake = Lake(tmp_path / "lake").init()
    w = _Writer(lake)
    w.commit({"requests": {D1: [_row("requests", 1, "acme", D1), _row("requests", 2, "b", D1)]}})
    manifest = lake.last_manifest(TOPIC, 0)
    final = lake.path / manifest.files[0]
    final.rename(final.with_name(manifest.staged_name(manifest.files[0])))  # as if the rename never happened
    assert lake.forget(["acme"]).rows == 1
    assert _spans(lake, "requests") == ["s2"]
    assert lake.recover(TOPIC, 0)[0] == 10 and _spans(lake, "requests") == ["s2"]


def test_an_unreadable_file_is_set_aside_and_the_forget_fails_naming_it(tmp_path: Path) -> None:
    lake = _three_day_lake(tmp_path / "lake")
    broken = lake.table_dir("calls") / f"date={D2}" / "c-0123456789ab.parquet"
    broken.write_bytes(b"PAR1 cut short by a crash")
    with pytest.raises(ErasureIncomplete) as err:
        lake.forget(["acme"])
    assert str(broken) + ".unreadable" in str(err.value) and "run the forget again" in str(err.value)
    assert not broken.exists() and broken.with_name(broken.name + ".unreadable").is_file()
    # the rest was forgotten all the same
    assert err.value.report.rows == 7 and _spans(lake, "requests") == ["s2", "s3", "s7", "s8"]
    # while it is still set aside, a forget says so again: its rows were never looked at
    with pytest.raises(ErasureIncomplete, match="c-0123456789ab.parquet.unreadable"):
        lake.forget(["globex"])


def test_a_stale_rewrite_left_by_a_killed_forget_is_removed(tmp_path: Path) -> None:
    lake = _three_day_lake(tmp_path / "lake")
    day = lake.table_dir("requests") / f"date={D1}"
    stale = day / f".{data_file_name(0, 0, 9, TOPIC)}.999999999-1.tmp"  # pid 999999999: no live process
    stale.write_bytes(b"half a rewrite")
    staged_batch = day / f".{data_file_name(0, 40, 49, TOPIC)}.w0123abcd.tmp"  # a batch's own staged file: recovery's
    staged_batch.write_bytes(b"staged")
    lake.forget(["nobody"])
    assert not stale.exists() and staged_batch.exists()


def test_forget_removes_the_tenant_from_the_alerts_files(tmp_path: Path) -> None:
    from costline.alerts.view import HISTORY_SCHEMA, ensure_alerts_dir

    lake = _three_day_lake(tmp_path / "lake")
    history = ensure_alerts_dir(lake.path) / "history" / "history.parquet"
    rows = [{"ts": datetime(2026, 11, d, 9), "rule": "cost", "tenant": t, "to_state": "firing"}
            for d, t in ((1, "acme"), (2, "acme"), (2, None), (3, "globex"))]
    pq.write_table(pa.Table.from_pylist(rows, schema=HISTORY_SCHEMA), history)
    report = lake.forget(["acme"], before=date.fromisoformat(D2))
    assert report.tables[4] == TableTotal("alerts_history", 1, 1, 1)  # only 2026-11-01's acme row is before D2
    assert sorted((r["ts"].day, r["tenant"] or "-") for r in pq.read_table(history).to_pylist()) == [
        (2, "-"), (2, "acme"), (3, "globex")]


def test_forget_refuses_no_tenant_and_a_missing_lake(tmp_path: Path) -> None:
    lake = _three_day_lake(tmp_path / "lake")
    for bad in ([], [""], ["  "]):
        with pytest.raises(LakeError, match="tenant"):
            lake.forget(bad)
    with pytest.raises(NoLake):
        Lake(tmp_path / "typo").forget(["acme"])
    assert not (tmp_path / "typo").exists()


# -- forget and compaction at once -------------------------------------------------------------------------------
def test_a_compaction_waits_for_a_forget_in_another_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both rewrite D2's files: without one lock the merge would keep acme's rows or keep rows twice."""
    lake = _three_day_lake(tmp_path / "lake")
    lake.commit_batch(TOPIC, 0, 20, 29, {"requests": {D2: _arrow("requests", [_row("requests", 9, "zeta", D2)])}},
                      epoch=lake.claim(TOPIC, 0))  # a third D2 file: after the forget, D2 holds s7's and s9's
    in_forget, go_on = threading.Event(), threading.Event()
    real = _erasure._forget_file

    def slow(p: Any, table: str, path: Path, matches: str) -> int:
        in_forget.set()
        assert go_on.wait(10)
        return real(p, table, path, matches)

    monkeypatch.setattr(_erasure, "_forget_file", slow)
    results: dict[str, Any] = {}
    forgetting = threading.Thread(target=lambda: results.setdefault("forget", Lake(lake.path).forget(["acme"])))
    compacting = threading.Thread(target=lambda: results.setdefault(
        "compact", Lake(lake.path).compact(before=date(2026, 12, 1))))
    forgetting.start()
    assert in_forget.wait(10)
    compacting.start()
    time.sleep(0.5)
    assert compacting.is_alive(), "the compaction ran while the forget held its files"
    go_on.set()
    forgetting.join(10)
    compacting.join(10)
    # the forget ran first (the compaction waited): of D2's requests s4 s5 | s6 s7 | s9, s7 and s9 are kept, then
    # their two files merged
    assert results["forget"].rows == 7
    assert _spans(lake, "requests") == ["s2", "s3", "s7", "s8", "s9"]  # each row once, acme's gone
    assert results["compact"] == [("requests", D2, 2, 2)]


# -- redact ----------------------------------------------------------------------------------------------------
def test_redact_nulls_the_content_of_days_past_the_retention_and_keeps_every_figure(tmp_path: Path) -> None:
    lake = _three_day_lake(tmp_path / "lake")
    figures = "span_id, tenant, ts, success, attempts, duration_ms, kafka_offset"
    call_figures = "span_id, tenant, ts, input_tokens, output_tokens, cost_usd, finish_reasons"
    before = (_files_rows(lake, "requests", figures), _files_rows(lake, "calls", call_figures),
              _files_rows(lake, "lookups", "*"))

    # 8 days: cutoff 2026-11-02, so D1 only (D2's rows of after 12:00 would be under 8 days old)
    report = lake.redact(8, now=lambda: NOW)

    assert report.cutoff == date(2026, 11, 2)
    assert report.tables == (TableTotal("requests", 3, 1, 1), TableTotal("calls", 1, 1, 1))
    content = "span_id, input_messages, output_messages"
    assert _files_rows(lake, "requests", content) == [
        ("s1", None, None), ("s2", None, None), ("s3", None, None), ("s4", "question 4", "answer 4"),
        ("s5", "question 5", "answer 5"), ("s6", "question 6", "answer 6"), ("s7", "question 7", "answer 7"),
        ("s8", "question 8", "answer 8")]
    assert _files_rows(lake, "calls", content)[:2] == [("s11", None, None), ("s12", "question 12", "answer 12")]
    assert (_files_rows(lake, "requests", figures), _files_rows(lake, "calls", call_figures),
            _files_rows(lake, "lookups", "*")) == before
    # idempotent: nothing left to redact, nothing rewritten
    files = _snapshot(lake)
    again = lake.redact(8, now=lambda: NOW)
    assert again.rows == 0 and all(t.files == 0 for t in again.tables) and _snapshot(lake) == files


def test_redact_dry_run_and_a_shorter_retention(tmp_path: Path) -> None:
    lake = _three_day_lake(tmp_path / "lake")
    files = _snapshot(lake)
    # 7 days: cutoff 2026-11-03 -> D1 and D2: requests 3 + 4 rows (3 files), calls 1 + 2 rows (2 files)
    report = lake.redact(7, now=lambda: NOW, dry_run=True)
    assert report.tables == (TableTotal("requests", 7, 2, 3), TableTotal("calls", 3, 2, 2))
    assert "requests 2026-11-02: 4 rows' content would be set to NULL" in report.lines()
    assert _snapshot(lake) == files


@pytest.mark.parametrize("days", [0, -1, 1.5, True])
def test_redact_needs_a_retention_of_at_least_a_day(tmp_path: Path, days: Any) -> None:
    lake = _three_day_lake(tmp_path / "lake")
    with pytest.raises(LakeError, match="content retention"):
        lake.redact(days, now=lambda: NOW)


def test_compact_applies_the_retention_when_it_is_set(tmp_path: Path) -> None:
    lake = _three_day_lake(tmp_path / "lake")
    kept = Config(lake=LakeConfig(path=lake.path))
    compact_once(kept, before=date(2026, 11, 3))  # 0: content kept forever; D2's two files merged
    assert _files_rows(lake, "requests", "count(input_messages)") == [(8,)]
    lines = compact_once(Config(lake=LakeConfig(path=lake.path, content_retention_days=1)), now=NOW.timestamp)
    # every day is over a day old: the 8 requests' and 4 calls' content goes, in 3 + 3 files (D2 merged above)
    assert _files_rows(lake, "requests", "count(input_messages)") == [(0,)]
    assert _files_rows(lake, "calls", "count(output_messages)") == [(0,)]
    assert "requests: redacted 8 rows of 3 day(s), 3 file(s) rewritten" in lines
    assert _spans(lake, "requests") == ["s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8"]


# -- config and CLI ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "ok"), [("30", 30), ("0", 0), ("-1", None), ("1.5", None), ("thirty", None)])
def test_content_retention_days_is_validated_on_load(tmp_path: Path, value: str, ok: int | None) -> None:
    env = {"COSTLINE_LAKE_CONTENT_RETENTION_DAYS": value}
    if ok is None:
        with pytest.raises(ConfigError, match="(?i)content_retention_days"):  # the key or its variable
            load_config(None, env=env)
    else:
        assert load_config(None, env=env).lake.content_retention_days == ok


def _cli(env: dict[str, str], *args: str) -> Any:
    _register_area_commands()
    return CliRunner().invoke(cli, list(args), env={"COSTLINE_CONFIG": "", **env})


def test_cli_forget_prints_what_it_removed_and_what_the_topic_keeps(tmp_path: Path) -> None:
    lake = _three_day_lake(tmp_path / "lake")
    env = {"COSTLINE_LAKE_PATH": str(lake.path)}
    out = _cli(env, "lake", "forget", "--tenant", "nobody")
    assert out.exit_code == 0, out.output
    assert "removed 0 rows of tenant(s) 'nobody'" in out.output
    assert "retention.ms" in out.output and "'otlp_spans'" in out.output
    out = _cli(env, "lake", "forget", "--tenant", "acme", "--tenant", "globex", "--before", D2)
    assert out.exit_code == 0, out.output
    assert "requests: removed 2 rows of 1 day(s), 1 file(s) rewritten" in out.output


def test_cli_forget_fails_naming_a_file_it_set_aside(tmp_path: Path) -> None:
    lake = _three_day_lake(tmp_path / "lake")
    broken = lake.table_dir("requests") / f"date={D1}" / "c-0123456789ab.parquet"
    broken.write_bytes(b"")
    out = _cli({"COSTLINE_LAKE_PATH": str(lake.path)}, "lake", "forget", "--tenant", "acme")
    assert out.exit_code == 1
    assert "c-0123456789ab.parquet.unreadable" in out.output and "removed 7 rows" in out.output


def test_cli_redact_uses_the_configured_retention(tmp_path: Path) -> None:
    lake = _three_day_lake(tmp_path / "lake")
    env = {"COSTLINE_LAKE_PATH": str(lake.path)}
    out = _cli(env, "lake", "redact")
    assert out.exit_code == 2 and "content_retention_days is 0" in out.output
    out = _cli({**env, "COSTLINE_LAKE_CONTENT_RETENTION_DAYS": "1"}, "lake", "redact", "--dry-run")
    assert out.exit_code == 0, out.output
    assert "calls: would redact 4 rows of 3 day(s), 3 file(s) to rewrite" in out.output
    assert _files_rows(lake, "calls", "count(input_messages)") == [(4,)]


def test_the_lock_file_is_the_only_file_maintenance_adds(tmp_path: Path) -> None:
    lake = _three_day_lake(tmp_path / "lake")
    lake.forget(["nobody"])
    assert sorted(p.name for p in lake.path.iterdir() if p.is_file()) == [".maintenance.lock"]
    assert os.path.getsize(lake.path / ".maintenance.lock") == 0


# -- the tenant's calls and lookups whose own row names no tenant --------------------------------------------------
# Spans through the real path: costline's Recorder (and the real openai SDK with OpenInference's instrumentation),
# encoded, decoded and committed as the processor does (tests/figures_lake.py).
HAIKU = "claude-haiku-4-5"


def _sdk_lake(tmp_path: Path, spans: list[Any]) -> tuple[Lake, Config]:
    from figures_lake import lake_from_sdk_spans

    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"))
    lake_from_sdk_spans(spans, cfg)
    return Lake(cfg.lake.path), cfg


def _view(cfg: Config, sql: str) -> list[tuple[Any, ...]]:
    con = open_lake(cfg, create=False)
    try:
        return sorted(con.execute(sql).fetchall(), key=repr)
    finally:
        con.close()


def _raw_texts(lake: Lake) -> list[str]:
    """Every prompt and answer left in the calls files (raw rows: the ones the views leave out included)."""
    return sorted(t for row in _files_rows(lake, "calls", "input_messages, output_messages") for t in row if t)


def _provider(*, stamping: bool = True) -> tuple[Any, Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from costline.collectors import RequestStampingProcessor

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    if stamping:  # costline's documented setup: foreign spans get the request's id
        provider.add_span_processor(RequestStampingProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _recorder(provider: Any) -> Any:
    from costline.collectors import Recorder
    from costline.config import CaptureConfig

    return Recorder(provider, capture=CaptureConfig(message_content=True), env={})


def _sdk_call(provider: Any, question: str, *, response_id: str | None = None, parent: Any = None,
              scope: str = "opentelemetry.instrumentation.anthropic") -> None:
    """A call span as an SDK instrumentation writes one (no costline.tenant), with its prompt and answer; in the
    current span, or under ``parent``."""
    from opentelemetry import trace

    import json

    attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic", "gen_ai.request.model": HAIKU,
             "gen_ai.response.model": HAIKU, "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 10,
             "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": question}]}]),
             "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [
                 {"type": "text", "content": f"answer to {question}"}], "finish_reason": "stop"}])}
    if response_id:
        attrs["gen_ai.response.id"] = response_id
    context = None if parent is None else trace.set_span_in_context(parent)
    with provider.get_tracer(scope).start_as_current_span(f"chat {HAIKU}", context=context, attributes=attrs):
        pass


def test_forget_removes_the_calls_an_sdk_reported_inside_the_tenants_requests(tmp_path: Path) -> None:
    """The reviewer's repro: the real openai SDK traced by OpenInference inside costline requests; its spans name
    no tenant, the calls view takes the request's. Before: calls removed 0, and acme's two prompts became two
    standalone requests of no tenant."""
    httpx = pytest.importorskip("httpx")
    openai = pytest.importorskip("openai")
    instrumentor = pytest.importorskip("openinference.instrumentation.openai").OpenAIInstrumentor

    answered = iter(range(1, 10))

    def reply(request: Any) -> Any:
        n = next(answered)
        return httpx.Response(200, json={
            "id": f"chatcmpl-{n}", "object": "chat.completion", "created": 1700000000, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": f"the answer {n}"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}})

    provider, exporter = _provider()
    instrumentor().instrument(tracer_provider=provider)
    try:
        client = openai.OpenAI(api_key="sk-test", http_client=httpx.Client(transport=httpx.MockTransport(reply)))
        rec = _recorder(provider)
        for tenant, question in [("acme", "acme secret one"), ("acme", "acme secret two"), ("globex", "globex q")]:
            with rec.request(task_type="qa", tenant=tenant):
                client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": question}])
    finally:
        instrumentor().uninstrument()
    lake, cfg = _sdk_lake(tmp_path, list(exporter.get_finished_spans()))
    assert _view(cfg, "SELECT tenant, count(*) FROM calls GROUP BY ALL") == [("acme", 2), ("globex", 1)]
    assert _files_rows(lake, "calls", "tenant") == [(None,), (None,), (None,)]  # no call names its tenant

    dry = lake.forget(["acme"], dry_run=True)
    assert dry.tables[:3] == (TableTotal("requests", 2, 1, 1), TableTotal("calls", 2, 1, 1),
                              TableTotal("lookups", 0, 0, 0))
    report = lake.forget(["acme"])
    assert report.tables == dry.tables and report.shared == 0
    assert _view(cfg, "SELECT tenant, standalone FROM requests") == [("globex", False)]
    assert _view(cfg, "SELECT tenant, count(*) FROM calls GROUP BY ALL") == [("globex", 1)]
    assert not any("acme" in t for t in _raw_texts(lake)) and len(_files_rows(lake, "calls")) == 1


def test_forget_removes_the_calls_of_a_calls_file_without_a_tenant_column(tmp_path: Path) -> None:
    """A calls file written before calls had a tenant column: its calls are the tenant's through their request.
    Before: the file was skipped ("none to remove")."""
    provider, exporter = _provider()
    rec = _recorder(provider)
    for tenant in ("acme", "globex"):
        with rec.request(task_type="qa", tenant=tenant) as r:
            with r.cache_lookup("faq") as lk:
                lk.result(False, 0.5)
            with r.call("anthropic", HAIKU, tier="budget") as c:
                c.usage(1000, 100)
                c.content([f"secret of {tenant}"], [f"answer for {tenant}"])
    lake, cfg = _sdk_lake(tmp_path, list(exporter.get_finished_spans()))
    (old,) = [f for f in lake.table_dir("calls").glob("date=*/p*.parquet")]
    pq.write_table(pq.read_table(old).drop(["tenant"]), old)  # as an older costline wrote it
    assert _view(cfg, "SELECT tenant, input_messages LIKE '%secret of acme%' FROM calls") == [
        ("acme", True), ("globex", False)]

    report = lake.forget(["acme"])
    # requests: acme's; calls: acme's call (the file has no tenant column); lookups: acme's (its own tenant)
    assert report.tables[:3] == (TableTotal("requests", 1, 1, 1), TableTotal("calls", 1, 1, 1),
                                 TableTotal("lookups", 1, 1, 1))
    assert _view(cfg, "SELECT tenant, standalone FROM requests") == [("globex", False)]
    texts = _raw_texts(lake)
    assert len(texts) == 2 and "answer for globex" in texts[0] and "secret of globex" in texts[1]
    assert len(_files_rows(lake, "calls")) == 1 and pq.read_schema(old).names.count("tenant") == 0


def test_forget_removes_an_apps_span_of_a_call_the_gateway_answered_for_the_tenant(tmp_path: Path) -> None:
    """An app behind the gateway exports its own span of each call, in a trace of its own, with the answer's id the
    gateway gave it: the views count it as the gateway's request (the app's span is left out), whose tenant is
    acme. The app's span holds the prompt: it goes too. Before: it stayed (its row names no tenant)."""
    from costline.collectors.recorder import returning

    gateway, gw_spans = _provider()
    app, app_spans = _provider(stamping=False)
    rec = _recorder(gateway)
    for tenant in ("acme", "globex"):
        with returning(lambda request_id, _answer: f"msg_costline_{request_id}"):
            with rec.request(task_type="qa", tenant=tenant, request_id=f"gw-{tenant}") as r:
                with r.call("anthropic", HAIKU, tier="budget") as c:
                    c.usage(100, 10)
        _sdk_call(app, f"{tenant} asks the gateway", response_id=f"msg_costline_gw-{tenant}")
    lake, cfg = _sdk_lake(tmp_path, [*gw_spans.get_finished_spans(), *app_spans.get_finished_spans()])
    # the app's two spans are no calls of their own
    assert _view(cfg, "SELECT tenant, standalone FROM requests") == [("acme", False), ("globex", False)]
    assert len(_files_rows(lake, "calls")) == 4

    report = lake.forget(["acme"])
    # calls: the gateway's call of acme's request (its tenant) and the app's span of it (by the answer id)
    assert report.tables[:2] == (TableTotal("requests", 1, 1, 1), TableTotal("calls", 2, 1, 1))
    assert report.shared == 0
    assert _raw_texts(lake) == ['[{"role": "assistant", "parts": [{"type": "text", "content": "answer to globex asks '
                                'the gateway"}], "finish_reason": "stop"}]',
                                '[{"role": "user", "parts": [{"type": "text", "content": "globex asks the gateway"}]}]']
    assert _view(cfg, "SELECT tenant, standalone FROM requests") == [("globex", False)]


@pytest.mark.parametrize(("beside", "stamping", "left", "shared"), [
    # the SDK's span inside costline's call span: whose it is is that call's -> acme's two go, globex's stays
    (False, False, ["globex shared"], 0),
    # beside it, under a span of the app, no request id: in trace 2, which both tenants share, each SDK span is beside
    # (same parent, same time) its tenant's call only -> acme's go, globex's stays (before: both left, counted 2)
    (True, False, ["globex shared"], 0),
    # the documented setup (RequestStampingProcessor): each SDK span links to its request -> acme's go
    (True, True, ["globex shared"], 0),
])
def test_a_second_span_of_a_call_in_a_trace_two_tenants_share(tmp_path: Path, beside: bool, stamping: bool,
                                                              left: list[str], shared: int) -> None:
    """costline's call span and an SDK's span of the same call (the views keep costline's): the SDK's span names no
    tenant and holds the prompt. Trace 1 holds acme's request only; trace 2 one of acme's and one of globex's, under
    a span of the app. Before: every SDK span stayed."""
    provider, exporter = _provider(stamping=stamping)
    rec = _recorder(provider)
    app = provider.get_tracer("app")

    def request(tenant: str, question: str) -> None:
        with rec.request(task_type="qa", tenant=tenant) as r, app.start_as_current_span("step") as step:
            with r.call("anthropic", HAIKU, tier="budget") as c:
                c.usage(100, 10)
                _sdk_call(provider, question, parent=step if beside else None)  # at the same time

    request("acme", "acme alone")
    with app.start_as_current_span("handle batch"):
        request("acme", "acme shared")
        request("globex", "globex shared")
    lake, cfg = _sdk_lake(tmp_path, list(exporter.get_finished_spans()))
    assert _view(cfg, "SELECT tenant, count(*) FROM calls GROUP BY ALL") == [("acme", 2), ("globex", 1)]
    assert len(_files_rows(lake, "calls")) == 6  # 3 of costline's, 3 of the SDK's (left out by the views)

    report = lake.forget(["acme"])
    # calls: costline's two (their tenant) and the SDK's of acme not left
    assert report.tables[1] == TableTotal("calls", 5 - len(left), 1, 1)
    assert report.shared == shared
    assert any(f"left: {shared} rows of traces shared" in line for line in report.lines()) == bool(shared)
    assert sorted(t for t in _raw_texts(lake) if t.startswith('[{"role": "user"')) == [
        f'[{{"role": "user", "parts": [{{"type": "text", "content": "{q}"}}]}}]' for q in left]


def test_not_covered_counts_the_tenants_untenanted_calls_of_a_late_batch(tmp_path: Path) -> None:
    """A batch committed after the forget started whose calls name no tenant (an SDK's spans in acme's request):
    the tenant's calls are found again over the files there by then, so the batch is reported, not passed over."""
    provider, exporter = _provider()
    rec = _recorder(provider)
    with rec.request(task_type="qa", tenant="acme"):
        _sdk_call(provider, "acme late")
    with rec.request(task_type="qa", tenant="globex"):
        _sdk_call(provider, "globex late")
    late_spans = list(exporter.get_finished_spans())
    lake = Lake(tmp_path / "lake").init()
    w = _Writer(lake)
    w.commit({"requests": {D1: [_row("requests", 1, "acme", D1)]}})
    # the late batch: written as the processor writes it, its manifest not (yet) there
    from figures_lake import lake_from_sdk_spans

    scratch = Config(lake=LakeConfig(path=tmp_path / "scratch"))
    lake_from_sdk_spans(late_spans, scratch)
    for table in ("requests", "calls"):
        (src,) = Lake(scratch.lake.path).table_dir(table).glob("date=*/p*.parquet")
        dest = lake.table_dir(table) / src.parent.name / data_file_name(0, 20, 29, TOPIC)
        dest.parent.mkdir(parents=True, exist_ok=True)
        src.rename(dest)
    report = lake.forget(["acme"])
    late_calls = lake.table_dir("calls").glob(f"date=*/{data_file_name(0, 20, 29, TOPIC)}")
    # requests: acme's request of the late batch; calls: the SDK's span in it (no tenant column value)
    assert sorted((n.path, n.rows) for n in report.not_covered) == sorted(
        [(next(lake.table_dir("requests").glob(f"date=*/{data_file_name(0, 20, 29, TOPIC)}")), 1),
         (next(late_calls), 1)])
    assert report.tables[0] == TableTotal("requests", 1, 1, 1)


# -- dry runs on a lake that cannot be written; the exit status of a forget that left rows ---------------------------
def _read_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The maintenance lock cannot be opened for writing, as on a read-only mount (EROFS)."""
    import errno

    from costline.lake import _lake

    def refused(path: Any, mode: int = 0o644) -> Any:
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(_lake, "exclusive_lock", refused)


@pytest.mark.parametrize("lock_file", [True, False])
def test_a_dry_run_reads_a_lake_whose_lock_cannot_be_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             lock_file: bool) -> None:
    lake = _three_day_lake(tmp_path / "lake")
    if lock_file:  # a lake some compaction ran on: the lock is taken shared, read-only
        lake.forget(["nobody"])
    files = _snapshot(lake)
    _read_only(monkeypatch)
    with pytest.raises(LakeError, match="cannot take the maintenance lock"):
        lake.forget(["acme"])  # a real forget needs the lock
    report = lake.forget(["acme"], dry_run=True)
    assert report.rows == 7 and _snapshot(lake) == files
    assert any("without the lock" in line for line in report.lines()) == (not lock_file)
    redacted = lake.redact(8, now=lambda: NOW, dry_run=True)
    assert redacted.rows == 4 and any("without the lock" in line for line in redacted.lines()) == (not lock_file)
    out = _cli({"COSTLINE_LAKE_PATH": str(lake.path)}, "lake", "forget", "--tenant", "acme", "--dry-run")
    assert out.exit_code == 0, out.output
    assert "would remove 7 rows of tenant(s) 'acme'" in out.output


def test_cli_forget_exits_3_when_it_left_rows_committed_meanwhile(tmp_path: Path) -> None:
    lake = _three_day_lake(tmp_path / "lake")
    late = lake.table_dir("requests") / f"date={D3}" / data_file_name(0, 20, 29, TOPIC)
    pq.write_table(_arrow("requests", [_row("requests", 30, "acme", D3)]), late)
    env = {"COSTLINE_LAKE_PATH": str(lake.path)}
    out = _cli(env, "lake", "forget", "--tenant", "acme", "--dry-run")
    assert out.exit_code == 0, out.output  # a dry run changes nothing: nothing to run again
    out = _cli(env, "lake", "forget", "--tenant", "acme")
    assert out.exit_code == 3, out.output
    assert "not covered" in out.output and "run the forget again" in out.output
    out = _cli(env, "lake", "forget", "--tenant", "globex")  # the late file holds no row of globex
    assert out.exit_code == 0, out.output
