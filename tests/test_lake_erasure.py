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
