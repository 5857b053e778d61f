"""The lake's commit protocol and its DuckDB views, on hand-made lakes in tmp_path (no broker)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from costline.config import Config, LakeConfig, PricingConfig
from costline.lake import Lake, data_file_name, open_lake, parse_data_file_name, write_views_db
from costline.processors.buffer import rows_to_tables
from costline.processors.records import CallRow, LookupRow, RequestRow

H = dt.datetime(2026, 5, 28, 10, 0)  # the hour most rows fall in (UTC)
RATE = 2.74


def us(t: dt.datetime) -> int:
    return int(t.replace(tzinfo=dt.timezone.utc).timestamp() * 1_000_000)


def req(request_id, trace, span_id, t, tier, *, success=True, tenant="acme", cache_hit=False, attempts=1,
        escalations=0):
    return RequestRow(request_id, trace, span_id, us(t), tenant, "qa", "general", tier, tier, cache_hit, attempts,
                      escalations, success, None, 10.0, None, None, 0, 0)


def call(span_id, trace, t, *, parent=None, request_id=None, tier="mid", model="claude-sonnet-4-6", cost=0.01,
         error=None, inp=100, out=10, provider="anthropic", tenant=None, operation="chat"):
    status = "unknown_model" if cost is None else ("student" if tier == "student" and cost == 0.0 else "priced")
    return CallRow(span_id, trace, parent, request_id, us(t), operation, provider, model, model, tier, inp, out, 0, 0,
                   False, ["stop"], error, cost, status, "2026-06", 5.0, None, None, 0, 0, tenant=tenant)


def lookup(span_id, trace, t, *, hit, parent=None, request_id=None, tenant=None):
    return LookupRow(span_id, trace, parent, request_id, us(t), tenant, "default", hit, 0.9, 1.0, 0, 0)


def commit(lake: Lake, partition: int, first: int, last: int, rows) -> None:
    by_table: dict[str, list] = {"requests": [], "calls": [], "lookups": []}
    for r in rows:
        by_table[{RequestRow: "requests", CallRow: "calls", LookupRow: "lookups"}[type(r)]].append(r)
    lake.commit_batch("otlp_spans", partition, first, last,
                      {t: rows_to_tables(t, rs) for t, rs in by_table.items() if rs})


@pytest.fixture
def cfg(tmp_path) -> Config:
    return Config(lake=LakeConfig(path=tmp_path / "lake"), pricing=PricingConfig(student_usd_per_hour=RATE))


def _scenario(lake: Lake) -> None:
    m = dt.timedelta(minutes=1)
    commit(lake, 0, 0, 9, [
        # R1: mid answered after a failed student attempt; linked by request id
        req("R1", "t1", "s1", H + 5 * m, "mid", attempts=2, escalations=1),
        call("c1a", "t1", H + 2 * m, request_id="R1", tier="student", model="qwen", cost=0.0, error="quality_gate",
             provider="vllm"),
        call("c1b", "t1", H + 4 * m, request_id="R1", tier="mid", cost=0.25, inp=1000, out=200),
        # R2, R3: student-served in hour H (R3 failed): they share the hour's hosting
        req("R2", "t2", "s2", H + 10 * m, "student"),
        call("c2", "t2", H + 9 * m, parent="s2", tier="student", model="qwen", cost=0.0, provider="vllm"),
    ])
    commit(lake, 1, 0, 4, [
        req("R3", "t3", "s3", H + 20 * m, "student", success=False, tenant="globex"),
        # R4: cache hit, no calls
        req("R4", "t4", "s4", H + 30 * m, "cache", cache_hit=True),
        # S1: standalone call (no request span in its trace)
        call("c5", "t5", H + 40 * m, tier="budget", model="claude-haiku-4-5", cost=0.002),
        # S2: standalone unknown-model call that failed
        call("c6", "t6", H + 50 * m, tier="unknown", model="gpt-mystery", cost=None, error="timeout"),
        # a call whose request id names no request: standalone too
        call("c7", "t7", H + 55 * m, request_id="ghost", tier="budget", model="claude-haiku-4-5", cost=0.001),
    ])
    # R5: a late span from the previous day, committed last: lands in its own (event-time) window
    commit(lake, 1, 5, 5, [req("R5", "t8", "s8", H - dt.timedelta(days=1), "student"),
                           call("c8", "t8", H - dt.timedelta(days=1), parent="s8", tier="student",
                                model="qwen", cost=0.0, provider="vllm")])


def test_requests_view_links_and_costs(cfg):
    _scenario(Lake(cfg.lake.path).init())
    con = open_lake(cfg)
    got = {r[0]: r[1:] for r in con.execute(
        "SELECT request_id, tier, success, cost_usd, attempts, escalations, cache_hit, input_tokens, "
        "unpriced_calls, standalone FROM requests").fetchall()}
    assert set(got) == {"R1", "R2", "R3", "R4", "R5", "c5", "c6", "c7"}
    # hour H's hosting is shared by R1 (escalated away from the student) and R2 (answered by it); R3 made
    # no student call (its span says student, no call span says so): it shares nothing
    assert got["R1"] == ("mid", True, pytest.approx(0.25 + RATE / 2, abs=1e-12), 2, 1, False, 1100, 0, False)
    assert got["R2"][2] == pytest.approx(RATE / 2, abs=1e-12)
    assert got["R3"][:3] == ("student", False, 0.0)
    assert got["R4"][:3] == ("cache", True, 0.0)
    assert got["R5"][2] == pytest.approx(RATE, abs=1e-12)  # alone in its hour
    assert got["c5"] == ("budget", True, pytest.approx(0.002, abs=1e-12), 1, 0, False, 100, 0, True)
    assert got["c6"][:2] == ("unknown", False) and got["c6"][7] == 1  # unpriced, visible
    assert got["c7"][0] == "budget" and got["c7"][8] is True


def test_tier_hourly(cfg):
    _scenario(Lake(cfg.lake.path).init())
    rows = open_lake(cfg).execute(
        "SELECT window_start, tier, requests, successes, cost_usd, cost_per_success FROM tier_hourly "
        "ORDER BY window_start, tier").fetchall()
    hour = dt.timedelta(hours=1)
    expected = [
        (H - dt.timedelta(days=1), "student", 1, 1, RATE, RATE),
        # the 23 hours between the two days: nobody used the GPU, it still cost its rate
        *[(H - dt.timedelta(days=1) + i * hour, "student", 0, 0, RATE, None) for i in range(1, 24)],
        (H, "budget", 2, 2, 0.003, 0.0015),
        (H, "cache", 1, 1, 0.0, 0.0),
        (H, "mid", 1, 1, 0.25 + RATE / 2, 0.25 + RATE / 2),
        (H, "student", 2, 1, RATE / 2, RATE / 2),
        (H, "unknown", 1, 0, 0.0, None),
    ]
    assert len(rows) == len(expected)
    for g, e in zip(rows, expected):
        assert g[:4] == e[:4]
        assert g[4] == pytest.approx(e[4], abs=1e-9)
        assert (g[5] is None) == (e[5] is None) and (e[5] is None or g[5] == pytest.approx(e[5], abs=1e-9))


def test_calls_view(cfg):
    _scenario(Lake(cfg.lake.path).init())
    con = open_lake(cfg)
    names = [d[0] for d in con.execute("SELECT * FROM calls LIMIT 0").description]
    assert names[:13] == ["span_id", "trace_id", "ts", "provider", "model", "tier", "input_tokens", "output_tokens",
                          "cache_read_tokens", "cache_creation_tokens", "error_type", "cost_usd", "duration_ms"]
    got = dict(con.execute("SELECT span_id, request_id FROM calls").fetchall())
    assert got == {"c1a": "R1", "c1b": "R1", "c2": "R2", "c5": "c5", "c6": "c6", "c7": "c7", "c8": "R5"}
    assert con.execute("SELECT count(*) FROM calls WHERE cost_usd IS NULL").fetchone() == (1,)


def test_a_standalone_calls_own_tenant_splits_its_spend(cfg):
    """An embeddings call the gateway forwarded has no request span but says its tenant on its own span:
    spend per tenant counts it. A call inside a request belongs to the request's tenant, whatever its own
    span says; a standalone call that says none stays NULL."""
    m = dt.timedelta(minutes=1)
    commit(Lake(cfg.lake.path).init(), 0, 0, 4, [
        call("e1", "te1", H, tier="unknown", model="text-embedding-3-small", provider="openai", cost=0.0002,
             operation="embeddings", tenant="globex", out=0),
        call("e2", "te2", H + m, tier="unknown", model="text-embedding-3-small", provider="openai", cost=0.0003,
             operation="embeddings", out=0),
        req("RA", "ta", "sa", H + 2 * m, "mid", tenant="acme"),
        call("ca", "ta", H + m, parent="sa", cost=0.04, tenant="initech"),
    ])
    con = open_lake(cfg)
    spend = dict(con.execute("SELECT coalesce(tenant, '(none)'), sum(cost_usd) FROM requests GROUP BY ALL").fetchall())
    assert spend == {"globex": pytest.approx(0.0002), "(none)": pytest.approx(0.0003), "acme": pytest.approx(0.04)}
    by_call = dict(con.execute("SELECT span_id, tenant FROM calls").fetchall())
    assert by_call == {"e1": "globex", "e2": None, "ca": "acme"}
    # docs/sql.md's recipe "Spend per tenant and day"
    doc = (Path(__file__).parents[1] / "docs" / "sql.md").read_text(encoding="utf-8")
    recipe = doc.split("Spend per tenant and day", 1)[1].split("```sql", 1)[1].split("```", 1)[0]
    got = {(r[1], r[2]): r[3:] for r in con.execute(recipe).fetchall()}
    assert got == {("globex", "embeddings"): (1, pytest.approx(0.0002), 0),
                   ("(none)", "embeddings"): (1, pytest.approx(0.0003), 0), ("acme", "chat"): (1, pytest.approx(0.04), 0)}


def test_cache_hourly_and_7d_average(cfg):
    lake = Lake(cfg.lake.path).init()
    h = dt.timedelta(hours=1)
    rows = [req("RQ", "tq", "sq", H, "cache", tenant="acme")]
    spec = {  # hour offset: (lookups, hits) for tenant acme
        -169: (10, 10),  # outside the 168 preceding windows
        -168: (10, 0),
        -2: (10, 5),
        -1: (20, 16),
        0: (10, 2),
    }
    n = 0
    for off, (total, hits) in spec.items():
        for i in range(total):
            n += 1
            # half carry the tenant themselves, half get it from their request (same trace, parent span)
            if i % 2:
                rows.append(lookup(f"l{n}", "tq", H + off * h, hit=i < hits, parent="sq"))
            else:
                rows.append(lookup(f"l{n}", f"tx{n}", H + off * h, hit=i < hits, tenant="acme"))
    commit(lake, 0, 0, 0, rows)
    con = open_lake(cfg)
    hourly = con.execute("SELECT window_start, tenant, lookups, hits, hit_rate FROM cache_hourly "
                         "ORDER BY window_start").fetchall()
    assert [(w, t, lk, ht) for w, t, lk, ht, _ in hourly] == [
        (H + off * h, "acme", total, hits) for off, (total, hits) in spec.items()]
    got = {r[0]: r[1:] for r in con.execute(
        "SELECT window_start, hit_rate, avg_7d, lookups FROM cache_hit_rate_7d WHERE tenant = 'acme'").fetchall()}
    assert got[H][0] == pytest.approx(0.2)
    assert got[H][1] == pytest.approx((0 + 5 + 16) / (10 + 10 + 20))  # -169 excluded, -168 included
    assert got[H - 169 * h][1] is None  # no history
    alerts = con.execute("SELECT window_start FROM cache_hit_rate_7d WHERE hit_rate < avg_7d - 0.10").fetchall()
    assert (H,) in alerts


def test_views_work_on_an_empty_lake(cfg):
    con = open_lake(cfg)
    for view in ("requests", "calls", "lookups", "tier_hourly", "cache_hourly", "cache_hit_rate_7d"):
        assert con.execute(f"SELECT count(*) FROM {view}").fetchone() == (0,)


def test_a_connection_opened_before_a_forget_reads_the_rewritten_files(cfg):
    """open_lake's connection keeps the Parquet footers it read (parquet_metadata_cache); a forget rewrites a file
    under the same name within the same second: the open connection must read the new file, not the old footer's
    row groups (by hand: the scenario's globex rows are R3 alone)."""
    lake = Lake(cfg.lake.path).init()
    _scenario(lake)
    con = open_lake(cfg)
    before = sorted(r[0] for r in con.execute("SELECT request_id FROM requests WHERE NOT standalone").fetchall())
    assert before == ["R1", "R2", "R3", "R4", "R5"]
    assert lake.forget(["globex"]).rows >= 1
    after = sorted(r[0] for r in con.execute("SELECT request_id FROM requests WHERE NOT standalone").fetchall())
    assert after == ["R1", "R2", "R4", "R5"]
    assert con.execute("SELECT count(*) FROM requests_raw WHERE tenant = 'globex'").fetchone() == (0,)


def test_views_db_opens_in_a_fresh_duckdb(cfg):
    _scenario(Lake(cfg.lake.path).init())
    path = write_views_db(cfg)
    assert path == cfg.lake.path / "costline.duckdb"
    code = ("import duckdb,sys; c=duckdb.connect(sys.argv[1], read_only=True); "
            "print(c.execute('SELECT count(*) FROM requests').fetchone()[0])")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "8"


# --- commit protocol -------------------------------------------------------------------


def test_data_file_names_round_trip():
    assert data_file_name(3, 101, 150) == "p003-000000000101-000000000150.parquet"
    assert parse_data_file_name("p003-000000000101-000000000150.parquet") == (3, 101, 150)
    assert parse_data_file_name("_empty.parquet") is None


def test_commit_writes_files_then_manifest(cfg):
    lake = Lake(cfg.lake.path).init()
    commit(lake, 2, 10, 19, [req("R", "t", "s", H, "mid"), call("c", "t", H - dt.timedelta(days=1), parent="s")])
    m = lake.last_manifest("otlp_spans", 2)
    assert (m.first_offset, m.last_offset) == (10, 19)
    assert m.files == ("calls/date=2026-05-27/p002-000000000010-000000000019.otlp_spans.parquet",
                       "requests/date=2026-05-28/p002-000000000010-000000000019.otlp_spans.parquet")
    assert all((cfg.lake.path / f).is_file() for f in m.files)
    assert lake.recover("otlp_spans", 2) == (20, [])
    assert lake.recover("otlp_spans", 5) == (None, [])


def test_recover_deletes_orphans_of_a_crashed_batch(cfg):
    lake = Lake(cfg.lake.path).init()
    commit(lake, 1, 0, 9, [req("A", "t", "s", H, "mid")])
    # a crash after renaming the next batch's files but before its manifest:
    commit(lake, 1, 10, 19, [req("B", "t2", "s2", H, "mid")])
    (cfg.lake.path / "_offsets" / "otlp_spans" / "p001" / "000000000019.json").unlink()
    # ... and one in the middle of writing (temporary names), plus another partition's data
    tmp = cfg.lake.path / "requests" / "date=2026-05-28" / ".p001-000000000020-000000000029.otlp_spans.parquet.tmp"
    tmp.write_bytes(b"partial")
    commit(lake, 2, 0, 0, [req("C", "t3", "s3", H, "mid")])
    con = open_lake(cfg)
    assert con.execute("SELECT count(*) FROM requests").fetchone() == (3,)  # .tmp never visible
    next_offset, removed = lake.recover("otlp_spans", 1)
    assert next_offset == 10
    assert sorted(p.name for p in removed) == [".p001-000000000020-000000000029.otlp_spans.parquet.tmp",
                                               "p001-000000000010-000000000019.otlp_spans.parquet"]
    assert sorted(r[0] for r in open_lake(cfg).execute("SELECT request_id FROM requests").fetchall()) == ["A", "C"]


def test_empty_batch_still_moves_the_partition_on(cfg):
    lake = Lake(cfg.lake.path).init()
    lake.commit_batch("otlp_spans", 0, 0, 4, {})  # only DLQ'd / ignored messages
    assert lake.recover("otlp_spans", 0) == (5, [])


def test_old_manifests_are_pruned(cfg):
    lake = Lake(cfg.lake.path, keep_manifests=3).init()
    for i in range(6):
        lake.commit_batch("otlp_spans", 0, i, i, {})
    names = sorted(p.name for p in (cfg.lake.path / "_offsets" / "otlp_spans" / "p000").glob("*.json"))
    assert names == ["000000000003.json", "000000000004.json", "000000000005.json"]


def test_a_span_delivered_twice_upstream_counts_once(cfg: Config) -> None:
    """Exporters and OTLP clients retry, so a trace can reach Kafka twice (at different offsets)."""
    lake = Lake(cfg.lake.path).init()
    m = dt.timedelta(minutes=1)
    trace = [req("R1", "t1", "s1", H + 5 * m, "mid"), call("c1", "t1", H + 4 * m, request_id="R1", cost=0.25),
             lookup("l1", "t1", H + 1 * m, hit=False, request_id="R1")]
    commit(lake, 0, 0, 0, trace)
    commit(lake, 0, 1, 1, trace)  # the same spans again, resent by the exporter
    con = open_lake(cfg)
    try:
        assert con.execute("SELECT count(*), sum(cost_usd) FROM requests").fetchone() == (1, 0.25)
        assert con.execute("SELECT count(*) FROM calls").fetchone() == (1,)
        assert con.execute("SELECT lookups, hits FROM cache_hourly").fetchall() == [(1, 0)]
    finally:
        con.close()


def _view_figures(cfg: Config) -> tuple:
    con = open_lake(cfg)
    try:
        return (
            con.execute("SELECT * FROM tier_hourly ORDER BY ALL").fetchall(),
            con.execute("SELECT * FROM cache_hourly ORDER BY ALL").fetchall(),
            con.execute("SELECT request_id, cost_usd FROM requests ORDER BY ALL").fetchall(),
        )
    finally:
        con.close()


def _manifest(lake: Lake, partition: int, last: int) -> None:
    mdir = lake.offsets_dir("otlp_spans", partition)
    mdir.mkdir(parents=True, exist_ok=True)
    (mdir / f"{last:012d}.json").write_text("{}")


def test_compaction_merges_committed_files_of_closed_days_and_changes_no_figure(cfg: Config) -> None:
    lake = Lake(cfg.lake.path).init()
    _scenario(lake)
    before = _view_figures(cfg)
    # an uncommitted batch of partition 0 (a crash before its manifest): never merged
    commit(lake, 0, 10, 12, [req("R9", "t9", "s9", H + dt.timedelta(minutes=7), "mid")])
    (lake.offsets_dir("otlp_spans", 0) / "000000000012.json").unlink()
    done = lake.compact(before=H.date() + dt.timedelta(days=1))
    merged = {(table, day): files for table, day, files, _rows in done}
    assert merged[("requests", H.date().isoformat())] == 2  # p000-0-9 and p001-0-4; not p000-10-12
    day_dir = lake.table_dir("requests") / f"date={H.date().isoformat()}"
    assert sorted(p.name[:2] for p in day_dir.glob("*.parquet")) == ["c-", "p0"]
    assert lake.recover("otlp_spans", 0)[1]  # recovery still finds and removes the orphan batch
    assert _view_figures(cfg) == before
    assert lake.compact(before=H.date() + dt.timedelta(days=1)) == []  # one file per day: nothing left


def test_compaction_interrupted_before_removing_the_old_files_counts_nothing_twice(cfg: Config) -> None:
    lake = Lake(cfg.lake.path).init()
    _scenario(lake)
    before = _view_figures(cfg)
    day_dir = lake.table_dir("calls") / f"date={H.date().isoformat()}"
    originals = {p: p.read_bytes() for p in day_dir.glob("p*.parquet")}
    lake.compact(before=H.date() + dt.timedelta(days=1))
    for path, data in originals.items():  # as if the process died after the rename
        path.write_bytes(data)
    assert _view_figures(cfg) == before
    lake.compact(before=H.date() + dt.timedelta(days=1))
    assert len(list(day_dir.glob("*.parquet"))) == 1
    assert _view_figures(cfg) == before


def test_compaction_merges_the_files_of_partitions_past_999(cfg: Config) -> None:
    """A topic of 1,000+ partitions names their folders p1000, p1001 ...: their committed files merge too."""
    lake = Lake(cfg.lake.path).init()
    m = dt.timedelta(minutes=1)
    for partition in (7, 1000, 1234):
        commit(lake, partition, 0, 1, [req(f"R{partition}", f"t{partition}", f"s{partition}", H + m, "mid")])
        commit(lake, partition, 2, 3, [req(f"Q{partition}", f"u{partition}", f"v{partition}", H + 2 * m, "mid")])
    done = lake.compact(before=H.date() + dt.timedelta(days=1))
    assert {(table, files) for table, _day, files, _rows in done} == {("requests", 6)}
    day_dir = lake.table_dir("requests") / f"date={H.date().isoformat()}"
    assert [p.name[:2] for p in day_dir.glob("*.parquet")] == ["c-"]


def test_today_is_never_compacted(cfg: Config) -> None:
    lake = Lake(cfg.lake.path).init()
    _scenario(lake)
    assert lake.compact(before=H.date()) == []  # H.date() is "today": still being written


def test_an_older_lakes_schema_file_is_brought_up_to_date(cfg):
    """A lake made before a column existed (here: lookups without reject_reason, calls without
    data_quality) still opens: init rewrites the zero-row schema files, and old rows read NULL there."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from costline.lake import SCHEMAS

    lake = Lake(cfg.lake.path).init()
    old = {"lookups": "reject_reason", "calls": "data_quality"}
    for table, dropped in old.items():
        schema = SCHEMAS[table].remove(SCHEMAS[table].get_field_index(dropped))
        pq.write_table(schema.empty_table(), lake.table_dir(table) / "date=1970-01-01" / "_empty.parquet")
        day = lake.table_dir(table) / "date=2026-05-28"
        day.mkdir(parents=True)
        rows = [lookup("L1", "t1", H, hit=False, tenant="acme")] if table == "lookups" else [
            call("C1", "t2", H, tier="budget", model="claude-haiku-4-5", cost=0.002)]
        batch = pa.Table.from_batches([rows_to_tables(table, rows)["2026-05-28"].to_batches()[0]])
        pq.write_table(batch.drop([dropped]), day / "p000-000000000000-000000000000.parquet")
    con = open_lake(cfg)  # init runs again here
    assert con.execute("SELECT span_id, reject_reason FROM lookups").fetchall() == [("L1", None)]
    assert con.execute("SELECT span_id, data_quality FROM calls").fetchall() == [("C1", None)]


def _flattened(name: str, i: int, attrs: dict):
    """The lake row of span number ``i`` named ``name`` with ``attrs``, in hour H (partition 0, offset ``i``)."""
    from costline.processors.records import MemoPricingTable, flatten_span
    from costline.sim.synth import span

    start = us(H) * 1000 + i
    return flatten_span(span(name, trace_id=bytes([i + 1]) * 16, span_id=bytes([i + 1]) * 8, start_ns=start,
                             end_ns=start + 1000, attributes=attrs), MemoPricingTable(), 0, i)


def test_lookups_carry_why_the_verification_stage_rejected_candidates(cfg):
    """costline.cache.reject_reason reaches the lake, so an analyst can count near-misses per namespace."""
    from costline import contract as c

    lake = Lake(cfg.lake.path).init()
    rows = []
    for i, reason in enumerate(["number,negation", None, "entity"]):
        attrs = {c.COSTLINE_CACHE_HIT: False, c.COSTLINE_CACHE_NAMESPACE: "billing", c.COSTLINE_TENANT: "acme"}
        if reason:
            attrs[c.COSTLINE_CACHE_REJECT_REASON] = reason
        rows.append(_flattened(c.SPAN_CACHE_LOOKUP, i, attrs))
    assert [r.reject_reason for r in rows] == ["number,negation", None, "entity"]
    commit(lake, 0, 0, 2, rows)
    got = open_lake(cfg).execute("""
        SELECT namespace, reason, count(*) FROM (
          SELECT namespace, unnest(string_split(reject_reason, ',')) AS reason FROM lookups
          WHERE reject_reason IS NOT NULL) GROUP BY ALL ORDER BY reason""").fetchall()
    assert got == [("billing", "entity", 1), ("billing", "negation", 1), ("billing", "number", 1)]


def test_every_view_file_is_created_and_every_view_has_a_file(tmp_path: Path) -> None:
    import re
    from importlib import resources

    from costline.lake import VIEWS, views_sql

    files = {p.name.removesuffix(".sql") for p in resources.files("costline.lake").joinpath("views").iterdir()
             if p.name.endswith(".sql")}
    stmts = views_sql(tmp_path, student_usd_per_hour=1.0)
    created = {s.split("CREATE OR REPLACE VIEW ", 1)[1].split()[0] for s in stmts}
    assert created == {"requests_raw", "calls_raw", "lookups_raw", "call_links_all", "lookup_links",
                       "call_links_content"} | (files - {"raw", "links"})
    assert set(VIEWS) <= created
    assert not [s for s in stmts if re.search(r"\{\w+\}", s)], "a placeholder was left unfilled"


def test_requests_say_which_attempts_were_rejected_and_why(cfg):
    """costline.rejected_attempts reaches requests.rejected_attempts, and docs/sql.md's recipe counts escalations by
    the tier and problem that caused them."""
    from costline import contract as c

    lake = Lake(cfg.lake.path).init()
    rows = []
    for i, (routed, rejected) in enumerate([("student", "student:output_format"), ("student", None),
                                            ("budget", "budget:low_confidence,mid:validator"),
                                            ("student", "student:output_format")]):
        attrs = {c.COSTLINE_TENANT: "acme", c.COSTLINE_ROUTED_TIER: routed, c.COSTLINE_TIER: "mid",
                 c.COSTLINE_SUCCESS: True, c.COSTLINE_ATTEMPTS: 1 + (rejected or "").count(":")}
        if rejected:
            attrs[c.COSTLINE_REJECTED_ATTEMPTS] = rejected
        rows.append(_flattened(c.SPAN_REQUEST, i, attrs))
    assert [r.rejected_attempts for r in rows] == ["student:output_format", None,
                                                   "budget:low_confidence,mid:validator", "student:output_format"]
    commit(lake, 0, 0, 3, rows)
    got = open_lake(cfg).execute("""
        SELECT routed_tier, split_part(reason, ':', 1) AS failed_tier, split_part(reason, ':', 2) AS problem,
               count(*) AS attempts, count(DISTINCT request_id) AS requests
        FROM (SELECT request_id, routed_tier, unnest(string_split(rejected_attempts, ',')) AS reason
              FROM requests WHERE rejected_attempts IS NOT NULL)
        GROUP BY ALL ORDER BY attempts DESC, problem""").fetchall()
    assert got == [("student", "student", "output_format", 2, 2), ("budget", "budget", "low_confidence", 1, 1),
                   ("budget", "mid", "validator", 1, 1)]
