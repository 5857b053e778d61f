"""``costline lake forget`` and the results that hold a tenant's prompts outside the lake's tables: the nightly
jobs' items (``jobs/eval_items``, ``jobs/shadow_items``), the distillation's (``distill_results/distill_items``) and
its exports (``distill/<run>/dataset/*.jsonl``); and the second span of a call in a trace two tenants share.

The jobs run for real (the drift and shadow jobs over a hand-made lake, the anthropic SDK over an httpx
MockTransport: ``tests/test_jobs_open_world.py``'s helpers); older item files are written out here with the
schemas an older costline wrote. Every expected count is worked out by hand in the comments.
"""

from __future__ import annotations

import datetime as dt
import json
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from costline.lake import Lake
from costline.lake import _erasure
from costline.lake._erasure import DayRows, TableTotal
from tests.test_jobs_open_world import T0, make_lake, req_rows
from tests.test_jobs_trace_keys import OLD_SHADOW_ITEMS, query, run_both, shared_id_rows, small
from tests.test_lake_erasure import (
    D1, D2, D3, HAIKU, TOPIC, _arrow, _cli, _files_rows, _provider, _raw_texts, _recorder, _row, _sdk_lake, _snapshot,
    _three_day_lake, _view,
)

#: The eval_items schema of a costline before items had a tenant (with trace_id), written out here, not derived.
OLD_EVAL_ITEMS = pa.schema([
    ("run_id", pa.string()), ("request_id", pa.string()), ("trace_id", pa.string()), ("ts", pa.timestamp("us")),
    ("subtype", pa.string()), ("task_type", pa.string()), ("metric", pa.string()), ("query", pa.string()),
    ("student_answer", pa.string()), ("teacher_answer", pa.string()),
    ("student_score", pa.float64()), ("teacher_score", pa.float64()), ("query_chars", pa.int64()),
])
#: distill_items before it had a tenant.
OLD_DISTILL_ITEMS = pa.schema([
    ("run_id", pa.string()), ("item_id", pa.string()), ("request_id", pa.string()), ("task_type", pa.string()),
    ("subtype", pa.string()), ("metric", pa.string()), ("query", pa.string()), ("student_answer", pa.string()),
    ("teacher_answer", pa.string()), ("student_score", pa.float64()), ("teacher_score", pa.float64()),
    ("gap", pa.float64()), ("content_hash", pa.string()),
])


def _items(path: Path, columns: str = "request_id") -> list[Any]:
    """The rows of one results file, in file order."""
    return [tuple(r[c] for c in columns.split(", ")) if ", " in columns else r[columns]
            for r in pq.read_table(path).to_pylist()]


# -- the jobs write each item's tenant, and forget removes the tenant's ------------------------------------------
def _both_tenants(tier: str, base: int) -> list[Any]:
    """``req-both-<tier>``: one trace, one request id, two request spans (acme's and globex's) and one call."""
    r, c = req_rows(4, rid=f"req-both-{tier}", tier=tier, tenant="acme", query="q both #4 positive",
                    answer="positive", off=base)
    return [r, c, r._replace(span_id=f"{base + 90:016x}", tenant="globex", kafka_offset=r.kafka_offset + 90)]


def test_the_jobs_items_name_their_tenant_and_forget_removes_the_tenants(tmp_path: Path) -> None:
    """Before: eval_items / shadow_items had no tenant column and forget never looked at them."""
    rows = shared_id_rows()
    for tier, base in (("student", 0), ("budget", 5000)):
        rows += req_rows(3, rid=f"req-{tier}-3", tier=tier, tenant=None, query="q none #3 positive",
                         answer="positive", off=base)
        rows += _both_tenants(tier, base)
    cfg = small(make_lake(tmp_path / "lake", rows))
    drift_run, shadow_run = run_both(cfg)
    # per tier: req-dup in acme's trace and in globex's, req-<tier>-1 and -2 (acme), -3 (no tenant), req-both
    # (acme's and globex's spans: not one tenant -> NULL)
    for table, run, tier in (("eval_items", drift_run, "student"), ("shadow_items", shadow_run, "budget")):
        assert sorted(query(cfg, f"SELECT request_id, tenant FROM {table} WHERE run_id = $r", r=run), key=repr) == \
            sorted([("req-dup", "acme"), ("req-dup", "globex"), (f"req-{tier}-1", "acme"), (f"req-{tier}-2", "acme"),
                    (f"req-{tier}-3", None), (f"req-both-{tier}", None)], key=repr)
    jobs = tmp_path / "lake" / "jobs"
    runs = {p: p.read_bytes() for p in (jobs / "eval_runs" / f"{drift_run}.parquet",
                                        jobs / "shadow_runs" / f"{shadow_run}.parquet")}
    eval_file = jobs / "eval_items" / f"{drift_run}.parquet"
    shadow_file = jobs / "shadow_items" / f"{shadow_run}.parquet"

    report = Lake(cfg.lake.path).forget(["acme"])

    # items: acme's req-dup, -1, -2 of each run (their tenant); req-both's request is acme's and globex's: left
    assert report.tables[5:] == (TableTotal("eval_items", 3, 1, 1), TableTotal("shadow_items", 3, 1, 1),
                                 TableTotal("distill_items", 0, 0, 0))
    assert [d for d in report.days if d.table.endswith("_items")] == [
        DayRows("eval_items", T0.date().isoformat(), 3), DayRows("shadow_items", T0.date().isoformat(), 3)]
    assert report.items_left == (_erasure.ItemsLeft(eval_file, 1, "shared"),
                                 _erasure.ItemsLeft(shadow_file, 1, "shared"))
    assert any(line.startswith(f"left: 1 rows of {eval_file} name no tenant") for line in report.lines())
    for table, tier in (("eval_items", "student"), ("shadow_items", "budget")):
        assert sorted(query(cfg, f"SELECT request_id, tenant FROM {table}"), key=repr) == sorted(
            [("req-dup", "globex"), (f"req-{tier}-3", None), (f"req-both-{tier}", None)], key=repr)
    assert {p: p.read_bytes() for p in runs} == runs  # the runs' figures are kept as they were
    # the lake's own rows went too: per tier acme's req-dup, -1, -2 and its span of req-both
    assert report.tables[0] == TableTotal("requests", 8, 1, 1)
    again = _snapshot(Lake(cfg.lake.path))
    assert Lake(cfg.lake.path).forget(["acme"]).rows == 0 and _snapshot(Lake(cfg.lake.path)) == again



@pytest.mark.parametrize("globex", [
    {"success": False},  # failed
    {"cache_hit": True},
    {"tier": "premium", "routed_tier": "premium"},  # served by a tier neither job samples
    {"ts_before": True},  # an hour before the window (the day before it)
])
def test_an_items_tenant_is_named_by_every_span_of_its_request_not_the_sampled_ones(tmp_path: Path,
                                                                                     globex: dict[str, Any]) -> None:
    """req-both-<tier>: acme's span, sampled, and globex's, which the job's filters leave out. The request's spans
    name two tenants: its items name none, and forget globex says they are left. Before: the tenant was taken from
    the sampled spans only ('acme'), and forget globex neither removed nor named them."""
    rows = []
    for tier, base in (("student", 0), ("budget", 5000)):
        r, c = req_rows(4, rid=f"req-both-{tier}", tier=tier, tenant="acme", query="q both #4 positive",
                        answer="positive", off=base)
        shift = {"ts": r.ts - 3_600_000_000} if globex.get("ts_before") else {}
        other = {k: v for k, v in globex.items() if k != "ts_before"}
        rows += [r, c, r._replace(span_id=f"{base + 90:016x}", tenant="globex", kafka_offset=r.kafka_offset + 90,
                                  **other, **shift)]
        rows += req_rows(1, rid=f"req-{tier}-1", tier=tier, query="q acme #1 positive", answer="positive", off=base)
    cfg = small(make_lake(tmp_path / "lake", rows))
    drift_run, shadow_run = run_both(cfg)
    assert sorted(query(cfg, "SELECT request_id, tenant FROM eval_items"), key=repr) == [
        ("req-both-student", None), ("req-student-1", "acme")]
    assert sorted(query(cfg, "SELECT request_id, tenant FROM shadow_items"), key=repr) == [
        ("req-both-budget", None), ("req-budget-1", "acme")]

    report = Lake(cfg.lake.path).forget(["globex"])
    jobs = tmp_path / "lake" / "jobs"
    # no item is globex's alone; each req-both item may hold globex's prompt: said
    assert report.tables[5:7] == (TableTotal("eval_items", 0, 0, 0), TableTotal("shadow_items", 0, 0, 0))
    assert report.items_left == (_erasure.ItemsLeft(jobs / "eval_items" / f"{drift_run}.parquet", 1, "shared"),
                                 _erasure.ItemsLeft(jobs / "shadow_items" / f"{shadow_run}.parquet", 1, "shared"))


# -- files an older costline wrote; --before; a dry run; the distillation's ---------------------------------------
def _items_lake(path: Path) -> Lake:
    """``_three_day_lake`` (requests D1 t1/r1 acme, t2/r2 globex, t3/r3 NULL | D2 t4..t6 acme, t7 NULL | D3 t8
    globex) and, on D3, trace t50 with request id r50 twice: acme's span and globex's."""
    lake = _three_day_lake(path)
    both = [_row("requests", 50, "acme", D3), {**_row("requests", 51, "globex", D3), "trace_id": "t50",
                                                "request_id": "r50"}]
    lake.commit_batch(TOPIC, 0, 20, 29, {"requests": {D3: _arrow("requests", both)}}, epoch=lake.claim(TOPIC, 0))
    return lake


def _write(path: Path, schema: pa.Schema, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def _at(day: str) -> dt.datetime:
    return dt.datetime.fromisoformat(f"{day}T10:00:00")


def _old_items(lake: Lake) -> dict[str, Path]:
    from costline.distill.store import write_rows

    root = lake.path
    eval_old = _write(root / "jobs" / "eval_items" / "drift-old.parquet", OLD_EVAL_ITEMS, [
        {"run_id": "drift-old", "request_id": f"r{n}", "trace_id": f"t{n}", "ts": _at(day), "query": f"q{n}"}
        for n, day in ((1, D1), (2, D1), (4, D2), (50, D3), (99, D3), (3, D1))])
    shadow_old = _write(root / "jobs" / "shadow_items" / "shadow-old.parquet", OLD_SHADOW_ITEMS, [
        {"run_id": "shadow-old", "request_id": f"r{n}", "tier": "budget", "match": True} for n in (5, 8, 50, 99)])
    distill_new = write_rows(root, "distill_items", "distill-1", [
        {"run_id": "distill-1", "request_id": rid, "tenant": tenant, "query": f"q {rid}"}
        for rid, tenant in (("r6", "acme"), ("r2", "globex"), ("r7", None), ("r77", "acme"))])
    distill_old = _write(root / "distill_results" / "distill_items" / "distill-old.parquet", OLD_DISTILL_ITEMS,
                         [{"run_id": "distill-old", "request_id": "r6", "query": "q r6"}])
    return {"eval": eval_old, "shadow": shadow_old, "distill": distill_new, "distill_old": distill_old}


def test_forget_finds_the_tenants_items_of_older_files_through_their_request(tmp_path: Path) -> None:
    """eval_items with trace_id but no tenant; shadow_items with neither (request id only); distill_items with a
    tenant and without. Before: none of them was looked at."""
    lake = _items_lake(tmp_path / "lake")
    f = _old_items(lake)
    files = _snapshot(lake)

    dry = lake.forget(["acme"], dry_run=True)
    assert _snapshot(lake) == files
    report = lake.forget(["acme"])

    # eval_items (by trace_id, request_id): r1 (D1) and r4 (D2) are acme's; r2 globex's, r3 no tenant's: kept;
    #   r50's request is acme's and globex's: left; r99 is in no request: left
    # shadow_items (request id only): r5 is acme's (D2, its request's time); r8 globex's; r50 shared; r99 none
    # distill_items: r6 (tenant acme; D2 by its request), r77 (tenant acme, no request: no time), and the old
    #   file's r6 (by its request)
    assert dry.tables[5:] == report.tables[5:] == (
        TableTotal("eval_items", 2, 2, 1), TableTotal("shadow_items", 1, 1, 1), TableTotal("distill_items", 3, 2, 2))
    assert [d for d in report.days if d.table.endswith("_items")] == [
        DayRows("eval_items", D1, 1), DayRows("eval_items", D2, 1), DayRows("shadow_items", D2, 1),
        DayRows("distill_items", D2, 2), DayRows("distill_items", "no time", 1)]
    assert report.items_left == dry.items_left == (
        _erasure.ItemsLeft(f["eval"], 1, "shared"), _erasure.ItemsLeft(f["eval"], 1, "unlinked"),
        _erasure.ItemsLeft(f["shadow"], 1, "shared"), _erasure.ItemsLeft(f["shadow"], 1, "unlinked"))
    assert _items(f["eval"]) == ["r2", "r50", "r99", "r3"]  # the order kept
    assert _items(f["shadow"]) == ["r8", "r50", "r99"]
    assert _items(f["distill"], "request_id, tenant") == [("r2", "globex"), ("r7", None)]
    assert _items(f["distill_old"]) == [] and pq.read_schema(f["distill_old"]).names == OLD_DISTILL_ITEMS.names
    assert pq.read_schema(f["eval"]).names == OLD_EVAL_ITEMS.names
    lines = report.lines()
    assert "eval_items: removed 2 rows of 2 day(s), 1 file(s) rewritten" in lines
    assert any(line.startswith(f"not reachable: 1 rows of {f['shadow']} name no tenant") for line in lines)
    assert "eval_items 2026-11-01: 1 rows would go" in dry.lines()


def test_forget_before_a_date_goes_by_the_items_request_time(tmp_path: Path) -> None:
    """--before: eval_items by its ts (the request's), the others by their request's; an item whose time is
    unknown (its request gone) counts as before any date, as date=1970-01-01 does."""
    lake = _items_lake(tmp_path / "lake")
    f = _old_items(lake)
    report = lake.forget(["acme"], before=date.fromisoformat(D2))
    # eval_items: r1 (D1) only; r4 is D2's; r50 and r99 (D3) are after it: not counted as left either
    # shadow_items: r5's request is D2's: kept; r50 (D3) not counted; r99 (no request, no time): left, counted
    # distill_items: r6's request is D2's: kept (both files); r77 names acme and has no time: gone
    assert report.tables[5:] == (TableTotal("eval_items", 1, 1, 1), TableTotal("shadow_items", 0, 0, 0),
                                 TableTotal("distill_items", 1, 1, 1))
    assert report.items_left == (_erasure.ItemsLeft(f["shadow"], 1, "unlinked"),)
    assert _items(f["eval"]) == ["r2", "r4", "r50", "r99", "r3"]
    assert _items(f["distill"]) == ["r6", "r2", "r7"]


def test_an_item_naming_another_tenant_whose_request_has_the_tenants_spans_is_left_and_said(tmp_path: Path) -> None:
    """Items naming acme of request r50 (t50: acme's span and globex's), as a job that ran before globex's span
    was written (or one of the costline that named the sampled spans' tenant only) wrote them. forget globex
    leaves them (they name acme: acme's to remove) and says so. Before: neither removed nor said."""
    from costline.distill.store import write_rows

    lake = _items_lake(tmp_path / "lake")
    eval_file = _write(lake.path / "jobs" / "eval_items" / "drift-x.parquet",
                       OLD_EVAL_ITEMS.append(pa.field("tenant", pa.string())), [
        {"run_id": "drift-x", "request_id": f"r{n}", "trace_id": f"t{n}", "ts": _at(day), "query": f"q{n}",
         "tenant": tenant} for n, day, tenant in ((50, D3, "acme"), (8, D3, "globex"), (1, D1, "acme"))])
    distill = write_rows(lake.path, "distill_items", "distill-x", [
        {"run_id": "distill-x", "request_id": "r50", "tenant": "acme", "query": "q r50"}])

    report = lake.forget(["globex"])
    # eval_items: r8 names globex: gone; r50 names acme, its request has globex's span too: left, said; r1 is
    #   acme's alone: kept, not said. distill_items: r50 (every request of r50: acme's and globex's): left, said
    assert report.tables[5:] == (TableTotal("eval_items", 1, 1, 1), TableTotal("shadow_items", 0, 0, 0),
                                 TableTotal("distill_items", 0, 0, 0))
    assert report.items_left == (_erasure.ItemsLeft(eval_file, 1, "named"),
                                 _erasure.ItemsLeft(distill, 1, "named_id"))
    assert any(line.startswith(f"left: 1 rows of {eval_file} name another tenant, but their request has spans of "
                               "these tenants too") for line in report.lines())
    assert _items(eval_file) == ["r50", "r1"] and _items(distill) == ["r50"]
    # acme's forget takes them with their tenant
    assert lake.forget(["acme"]).tables[5:] == (TableTotal("eval_items", 2, 2, 1), TableTotal("shadow_items", 0, 0, 0),
                                                TableTotal("distill_items", 1, 1, 1))
    assert _items(eval_file) == [] and _items(distill) == []


def _acme_item_of_a_reused_request_id(path: Path) -> tuple[Lake, Path]:
    """A lake whose request id r2 is globex's (D1, :func:`_items_lake`) and acme's in another trace (D3), and a
    distill_items file (no trace_id) holding acme's item of r2."""
    from costline.distill.store import write_rows

    lake = _items_lake(path)
    lake.commit_batch(TOPIC, 0, 30, 39, {"requests": {D3: _arrow("requests", [
        {**_row("requests", 60, "acme", D3), "request_id": "r2"}])}}, epoch=lake.claim(TOPIC, 0))
    return lake, write_rows(lake.path, "distill_items", "distill-x", [
        {"run_id": "distill-x", "request_id": "r2", "tenant": "acme", "query": "acme's r2"}])


def test_forget_before_a_date_times_an_item_by_its_tenants_request(tmp_path: Path) -> None:
    """distill_items keeps no trace_id: an item naming acme of request id r2 is timed by acme's request r2 (D3),
    not by globex's r2 of D1. Before: by the earliest request r2 of any tenant (D1), so --before D2 removed it."""
    lake, distill = _acme_item_of_a_reused_request_id(tmp_path / "lake")
    report = lake.forget(["acme"], before=date.fromisoformat(D2))
    assert report.tables[7] == TableTotal("distill_items", 0, 0, 0) and _items(distill) == ["r2"]
    report = lake.forget(["acme"], before=date.fromisoformat("2026-11-04"))
    assert [d for d in report.days if d.table == "distill_items"] == [DayRows("distill_items", D3, 1)]
    assert _items(distill) == []


def test_an_item_naming_another_tenant_without_a_trace_id_is_said_as_of_its_request_id(tmp_path: Path) -> None:
    """acme's distill item of request id r2 (no trace_id), which globex used in another trace: forget globex
    cannot tell the item's request from globex's, so it says the request id may be another trace's, not that
    the item's request has globex's spans. Before (7879534): it said that, blaming a span written after the job."""
    lake, distill = _acme_item_of_a_reused_request_id(tmp_path / "lake")
    report = lake.forget(["globex"], dry_run=True)
    assert report.items_left == (_erasure.ItemsLeft(distill, 1, "named_id"),)
    (line,) = [x for x in report.lines() if str(distill) in x]
    assert line.startswith(f"left: 1 rows of {distill} name another tenant and keep no trace id, and a request "
                           "of their request id has spans of these tenants")
    assert "another trace's that used the same request id" in line


def test_the_left_lines_are_said_by_the_forget_that_removes_the_tenants_spans_only(tmp_path: Path) -> None:
    """An item naming no tenant of a request of acme's and globex's is said once: that forget removes acme's span
    of it, and the next one finds the request globex's alone. The line says so (docs/sql.md). Before: it did not."""
    lake = _items_lake(tmp_path / "lake")
    f = _old_items(lake)
    (line,) = [x for x in lake.forget(["acme"]).lines() if x.startswith(f"left: 1 rows of {f['eval']}")]
    assert line.endswith("only the forget that removes these tenants' spans of those requests says so (a later one "
                         "no longer sees them)")
    again = lake.forget(["acme"])
    assert again.items_left == (_erasure.ItemsLeft(f["eval"], 1, "unlinked"),
                                _erasure.ItemsLeft(f["shadow"], 1, "unlinked"))
    assert "r50" in _items(f["eval"])  # still there: the first forget's line was the operator's cue


def test_forget_names_the_distillation_exports_holding_the_tenants_items(tmp_path: Path) -> None:
    """An export's items (dataset/train.jsonl, eval.jsonl: each names its tenant) are what a student was trained
    and judged on, proven by the manifest's hashes: forget names them, never rewrites them."""
    lake = _three_day_lake(tmp_path / "lake")
    dataset = lake.path / "distill" / "distill-x" / "dataset"
    dataset.mkdir(parents=True)
    train, held = dataset / "train.jsonl", dataset / "eval.jsonl"
    train.write_text("".join(json.dumps({"id": i, "tenant": t, "query": f"q{i}"}) + "\n"
                             for i, t in enumerate(["acme", "globex", "acme"])))
    held.write_text(json.dumps({"id": 9, "tenant": "acme"}) + "\n")
    before = train.read_bytes(), held.read_bytes()
    report = lake.forget(["acme"])
    assert report.items_left == (_erasure.ItemsLeft(held, 1, "export"), _erasure.ItemsLeft(train, 2, "export"))
    assert (train.read_bytes(), held.read_bytes()) == before
    assert any(line.startswith(f"not rewritten: {train} (a distillation export) holds 2 items")
               for line in report.lines())
    assert lake.forget(["globex"]).items_left == (_erasure.ItemsLeft(train, 1, "export"),)


def test_cli_forget_prints_the_items(tmp_path: Path) -> None:
    lake = _items_lake(tmp_path / "lake")
    f = _old_items(lake)
    out = _cli({"COSTLINE_LAKE_PATH": str(lake.path)}, "lake", "forget", "--tenant", "acme", "--dry-run")
    assert out.exit_code == 0, out.output
    assert "eval_items: would remove 2 rows of 2 day(s), 1 file(s) to rewrite" in out.output
    assert f"left: 1 rows of {f['eval']} name no tenant" in out.output
    # 7 rows of the tables (as without items) + r50's acme span (D3) + 2 + 1 + 3 items
    assert "would remove 14 rows of tenant(s) 'acme'" in out.output


# -- the second span of a call in a trace two tenants share ------------------------------------------------------
def test_a_second_span_beside_two_tenants_calls_is_left_and_said_why(tmp_path: Path) -> None:
    """One span of the app (inside globex's request, inside acme's: one trace) holds a call of each tenant and an
    SDK's span beside both, at the time of both (no request id: no stamping processor): whose call it is cannot
    be told, so it is left; the line says why, which trace, and what the operator can do."""
    from opentelemetry import trace

    provider, exporter = _provider(stamping=False)
    rec = _recorder(provider)
    app = provider.get_tracer("app")
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic", "gen_ai.request.model": HAIKU,
             "gen_ai.response.model": HAIKU, "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 10,
             "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text",
                                                                               "content": "whose question"}]}])}
    with rec.request(task_type="qa", tenant="acme") as ra, rec.request(task_type="qa", tenant="globex") as rg:
        with app.start_as_current_span("batch") as batch:
            sdk = provider.get_tracer("opentelemetry.instrumentation.anthropic").start_span(
                f"chat {HAIKU}", context=trace.set_span_in_context(batch), attributes=attrs)
            for r in (ra, rg):
                with r.call("anthropic", HAIKU, tier="budget") as c:
                    c.usage(100, 10)
            sdk.end()
    lake, cfg = _sdk_lake(tmp_path, list(exporter.get_finished_spans()))
    assert _view(cfg, "SELECT tenant, count(*) FROM calls GROUP BY ALL") == [("acme", 1), ("globex", 1)]
    (trace_id,) = {r[0] for r in _view(cfg, "SELECT trace_id FROM requests")}

    report = lake.forget(["acme"])
    assert report.tables[1] == TableTotal("calls", 1, 1, 1)  # acme's own call; the SDK's span is left
    assert report.shared == 1 and report.shared_traces == (trace_id,)
    (line,) = [x for x in report.lines() if x.startswith("left: 1 rows of traces shared")]
    assert trace_id in line and "costline lake redact" in line and "RequestStampingProcessor" in line
    assert any("whose question" in t for t in _raw_texts(lake))


# -- the distillation's evaluation writes each item's tenant; older files read it as NULL --------------------------
def test_the_distillation_items_name_their_tenant_and_forget_removes_them(tmp_path: Path) -> None:
    """evaluate_student writes distill_items from the export's held-out items, each of which names its tenant
    ("t" in the run ``_run`` writes). Before: distill_items had no tenant column."""
    from costline.distill.evaluate import evaluate_student

    from tests.test_distill_task_pairs import _cfg, _run

    cfg = _cfg(tmp_path)
    lake = Lake(cfg.lake.path).init()
    run, student = _run(tmp_path / "runs", "r", {("classification", "support"): (3, 0)})
    evaluate_student(cfg, run, student=student)
    items = lake.path / "distill_results" / "distill_items" / "r.parquet"
    assert _items(items, "request_id, tenant") == [(f"r-classification-support-{i}", "t") for i in range(3)]
    report = lake.forget(["t"])
    # the 3 items name t; their requests are in no lake here, so their time is unknown
    assert report.tables[7] == TableTotal("distill_items", 3, 1, 1)
    assert report.days == (DayRows("distill_items", "no time", 3),) and _items(items) == []


def test_the_views_read_the_tenant_of_item_files_without_it_as_null(tmp_path: Path) -> None:
    """Item files of an older costline (their zero-row schema files too) have no tenant column: the views have
    it all the same, NULL. Before: distill_items had no tenant column then."""
    from costline.config import Config, LakeConfig
    from costline.distill.store import open_distill_lake
    from costline.jobs.store import open_jobs_lake

    lake = Lake(tmp_path / "lake").init()
    dist = lake.path / "distill_results" / "distill_items"
    _write(dist / "_empty.parquet", OLD_DISTILL_ITEMS, [])
    _write(dist / "d-old.parquet", OLD_DISTILL_ITEMS, [{"run_id": "d-old", "request_id": "r1"}])
    _write(lake.path / "jobs" / "eval_items" / "_empty.parquet", OLD_EVAL_ITEMS, [])
    _write(lake.path / "jobs" / "eval_items" / "e-old.parquet", OLD_EVAL_ITEMS,
           [{"run_id": "e-old", "request_id": "r2"}])
    cfg = Config(lake=LakeConfig(path=lake.path))
    for opened, table, rid in ((open_distill_lake, "distill_items", "r1"), (open_jobs_lake, "eval_items", "r2")):
        con = opened(cfg)
        try:
            assert con.execute(f"SELECT request_id, tenant FROM {table}").fetchall() == [(rid, None)], table
        finally:
            con.close()


def _sdk_span(provider: Any, parent: Any, question: str, response_id: str | None = None,
              scope: str = "opentelemetry.instrumentation.anthropic") -> Any:
    """An SDK instrumentation's call span under ``parent`` (no tenant, no request id), started now, ended by the
    caller; with ``scope``, another instrumentation's (a framework's)."""
    from opentelemetry import trace

    attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic", "gen_ai.request.model": HAIKU,
             "gen_ai.response.model": HAIKU, "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 10,
             "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": question}]}])}
    if response_id:
        attrs["gen_ai.response.id"] = response_id
    return provider.get_tracer(scope).start_span(
        f"chat {HAIKU}", context=trace.set_span_in_context(parent), attributes=attrs)


def test_a_second_span_beside_the_tenants_call_but_of_another_tenants_response_id_is_left(tmp_path: Path) -> None:
    """Under a span of acme's request, an SDK's span beside acme's call, at its time, carries the response id of
    globex's call in the same trace: the views count it as globex's call (one call: trace + response id), so it is
    not acme's to remove, whatever is beside it. Without the veto of its response id, the calls beside it alone
    would have given it to acme."""
    provider, exporter = _provider(stamping=False)
    rec = _recorder(provider)
    app = provider.get_tracer("app")
    with app.start_as_current_span("batch"):
        with rec.request(task_type="qa", tenant="acme") as ra, app.start_as_current_span("step") as step:
            sdk = _sdk_span(provider, step, "globex's question", response_id="msg_x")
            with ra.call("anthropic", HAIKU, tier="budget") as c:
                c.usage(100, 10)
            sdk.end()
        with rec.request(task_type="qa", tenant="globex") as rg:
            with rg.call("anthropic", HAIKU, tier="budget") as c:
                c.usage(100, 10)
                c.response(id="msg_x")
    lake, cfg = _sdk_lake(tmp_path, list(exporter.get_finished_spans()))
    assert sorted(r[0] for r in _view(cfg, "SELECT tenant FROM calls")) == ["acme", "globex"]

    report = lake.forget(["acme"])
    assert report.tables[1] == TableTotal("calls", 1, 1, 1) and report.shared == 1
    assert any("globex's question" in t for t in _raw_texts(lake))


def _globex_call(gateway: Any, app_recorder: Any, response_id: str) -> None:
    """globex's call of the two-tenant tests: answered by the gateway (request ``gw-globex``, its answer id
    ``msg_costline_gw-globex``) when ``gateway`` (a tracer provider) is given, else a costline request and call of
    the app's recorder with ``response_id``."""
    from costline.collectors.recorder import returning

    if gateway is not None:
        with returning(lambda request_id, _a: f"msg_costline_{request_id}"):
            with _recorder(gateway).request(task_type="qa", tenant="globex", request_id="gw-globex") as rg:
                with rg.call("anthropic", HAIKU, tier="budget") as call:
                    call.usage(100, 10)
        return
    with app_recorder.request(task_type="qa", tenant="globex") as rg:
        with rg.call("anthropic", HAIKU, tier="budget") as call:
            call.usage(100, 10)
            call.response(id=response_id)


@pytest.mark.parametrize("wrapped", [False, True], ids=["sdk span", "framework span around it"])
@pytest.mark.parametrize("owner", ["gateway", "other trace"])
def test_a_second_span_beside_the_tenants_call_whose_response_id_is_owned_outside_its_trace_is_left(
        tmp_path: Path, owner: str, wrapped: bool) -> None:
    """A trace of acme's request only: under a span of the app, acme's call and, beside it at its time, an SDK's
    span (no request id) whose response id is owned outside the trace: the answer id globex's gateway request
    gave (the views count the span as that request), or globex's call in another trace at that time (the views
    keep that one: one call). Its prompt is globex's; the trace's owners (globex's, through the response id,
    among them) say it cannot be told: left, counted. Before: the call beside it alone gave it to acme, removed.
    ``wrapped``: the SDK's span inside a framework's span with no response id, beside acme's call; the views
    count the two as one call by the SDK span's response id, so the framework's span is globex's too: left.
    Before (7879534): only the SDK's span was, the framework's span, with globex's prompt, went with acme."""
    from opentelemetry import context as otel_context

    gw, gw_spans = _provider()
    app, app_spans = _provider(stamping=False)
    rec = _recorder(app)
    rid = "msg_costline_gw-globex" if owner == "gateway" else "msg_globex_1"
    with rec.request(task_type="qa", tenant="acme") as ra:
        with app.get_tracer("app").start_as_current_span("step") as step:
            outer = _sdk_span(app, step, "globex's question (framework)",
                              scope="openinference.instrumentation.langchain") if wrapped else None
            sdk = _sdk_span(app, outer or step, "globex's question", response_id=rid)
            token = otel_context.attach(otel_context.Context())  # globex's own trace, at the same time
            try:
                _globex_call(gw if owner == "gateway" else None, rec, rid)
            finally:
                otel_context.detach(token)
            with ra.call("anthropic", HAIKU, tier="budget") as c:
                c.usage(100, 10)
                c.response(id="msg_acme_1")
            sdk.end()
            if outer is not None:
                outer.end()
    lake, cfg = _sdk_lake(tmp_path, [*gw_spans.get_finished_spans(), *app_spans.get_finished_spans()])
    assert sorted(_view(cfg, "SELECT tenant, count(*) FROM calls GROUP BY ALL")) == [("acme", 1), ("globex", 1)]
    # acme's call, globex's, and the spans the views leave out: the SDK's (and the framework's around it)
    left_out = 2 if wrapped else 1
    assert len(_files_rows(lake, "calls")) == 2 + left_out
    (acme_trace,) = {r[0] for r in _view(cfg, "SELECT trace_id FROM requests WHERE tenant = 'acme'")}

    report = lake.forget(["acme"])
    assert report.tables[1] == TableTotal("calls", 1, 1, 1)  # acme's own call only
    assert report.shared == left_out and report.shared_traces == (acme_trace,)
    texts = _raw_texts(lake)
    assert any("globex's question" in t and "(framework)" not in t for t in texts)
    assert any("globex's question (framework)" in t for t in texts) == wrapped


@pytest.mark.parametrize("case", ["gateway", "other trace", "framework between", "same trace", "linked"])
def test_a_left_out_span_inside_the_tenants_call_or_request_with_another_tenants_response_id_is_left(
        tmp_path: Path, case: str) -> None:
    """An SDK's span (no tenant, no request id) with globex's prompt, left out by the views as a second span of
    a call of globex's: its response id is the answer id of globex's gateway request, or that of globex's call in
    another trace at that time, or (``same trace``) that of globex's call in acme's trace; ``framework between``:
    as ``gateway``, with a framework's span (no response id, globex's prompt too) between acme's call and it.
    Those sit inside acme's call span; ``linked``: the SDK's span sits under acme's request span (its request
    is acme's), with the response id of globex's call in the trace. Each is globex's call to the views, so a
    forget of acme leaves it, counted. Before: the call it is inside (or the request it sits under) gave it to
    acme, and globex's prompt was removed."""
    from opentelemetry import context as otel_context
    from opentelemetry import trace


    gw, gw_spans = _provider()
    app, app_spans = _provider(stamping=False)
    rec = _recorder(app)
    rid = "msg_costline_gw-globex" if case in ("gateway", "framework between") else "msg_globex_1"
    left: list[Any] = []
    with rec.request(task_type="qa", tenant="acme") as ra:
        parent = trace.get_current_span()  # acme's request span
        with ra.call("anthropic", HAIKU, tier="budget") as c:
            if case != "linked":
                parent = trace.get_current_span()  # acme's call span
            if case == "framework between":
                parent = _sdk_span(app, parent, "globex's question (framework)",
                                   scope="openinference.instrumentation.langchain")
                left.append(parent)
            left.append(_sdk_span(app, parent, "globex's question", response_id=rid))
            token = otel_context.attach(otel_context.Context()) if case in ("gateway", "framework between",
                                                                            "other trace") else None
            try:  # globex's: in its own trace at the same time, or in this one
                _globex_call(gw if case in ("gateway", "framework between") else None, rec, rid)
            finally:
                if token is not None:
                    otel_context.detach(token)
            for span in reversed(left):
                span.end()
            c.usage(100, 10)
            c.response(id="msg_acme_1")
    lake, cfg = _sdk_lake(tmp_path, [*gw_spans.get_finished_spans(), *app_spans.get_finished_spans()])
    assert sorted(_view(cfg, "SELECT tenant, count(*) FROM calls GROUP BY ALL")) == [("acme", 1), ("globex", 1)]
    assert len(_files_rows(lake, "calls")) == 2 + len(left)

    report = lake.forget(["acme"])
    assert report.tables[1] == TableTotal("calls", 1, 1, 1)  # acme's own call only
    assert report.shared == len(left)
    assert sum("globex's question" in t for t in _raw_texts(lake)) == len(left)


def test_the_tenants_sdk_span_inside_its_call_goes_in_a_trace_where_another_tenants_id_is_owned_outside(
        tmp_path: Path) -> None:
    """A batch trace serving acme and globex: acme's costline call holds an SDK span with acme's prompt and the call's
    own response id; globex's part went through the gateway (an app span with globex's gateway answer id, answered in
    the gateway's own trace). The SDK span is acme's call's second span: a forget of acme removes it (and the call),
    and leaves globex's app span. Before: the trace's id owned outside turned the near rule off for every span of
    the trace, and the trace's owners (acme and globex) left acme's prompt as shared."""
    from opentelemetry import context as otel_context
    from opentelemetry import trace


    gw, gw_spans = _provider()
    app, app_spans = _provider(stamping=False)
    rec = _recorder(app)
    with app.get_tracer("app").start_as_current_span("batch"):
        with rec.request(task_type="qa", tenant="acme") as ra:
            with ra.call("anthropic", HAIKU, tier="budget") as c:
                _sdk_span(app, trace.get_current_span(), "acme's question (sdk)", response_id="msg_acme_1").end()
                c.usage(100, 10)
                c.response(id="msg_acme_1")
        with rec.request(task_type="qa", tenant="globex"):
            g = _sdk_span(app, trace.get_current_span(), "globex's question (app)", response_id="msg_costline_gw-globex")
            token = otel_context.attach(otel_context.Context())  # the gateway's own trace
            try:
                _globex_call(gw, rec, "msg_costline_gw-globex")
            finally:
                otel_context.detach(token)
            g.end()
    lake, cfg = _sdk_lake(tmp_path, [*gw_spans.get_finished_spans(), *app_spans.get_finished_spans()])
    # the SDK span is acme's call's second span; globex's: the gateway's call (its app span under its request is the
    # gateway request's answer, which makes that request a part of globex's: docs/telemetry.md)
    assert sorted(_view(cfg, "SELECT tenant, count(*) FROM calls GROUP BY ALL")) == [("acme", 1), ("globex", 1)]

    report = lake.forget(["acme"])
    assert report.tables[1] == TableTotal("calls", 2, 1, 1)  # acme's call and its SDK span
    assert report.shared == 0
    texts = _raw_texts(lake)
    assert not any("acme's question" in t for t in texts)
    assert any("globex's question (app)" in t for t in texts)
