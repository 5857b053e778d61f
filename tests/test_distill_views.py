"""``distill_runs`` / ``distill_items`` are lake views in every session (``costline sql``,
``costline lake views``), also on a lake that has never seen a distillation."""

from __future__ import annotations

import json
import shutil
from datetime import datetime

import duckdb
from click.testing import CliRunner

from costline.cli import _register_area_commands, cli
from costline.lake import Lake


def _run(tmp_path, *args):
    _register_area_commands()
    env = {"COSTLINE_LAKE_PATH": str(tmp_path / "lake"), "COSTLINE_CONFIG": ""}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def _sql(tmp_path, query):
    res = _run(tmp_path, "sql", "--format", "json", query)
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_a_lake_without_distillations_has_empty_distill_views(tmp_path):
    Lake(tmp_path / "lake").init()  # the processor's lake, no distillation run yet
    assert _sql(tmp_path, "SELECT count(*) AS n FROM distill_runs") == [{"n": 0}]
    assert _sql(tmp_path, "SELECT count(*) AS n FROM distill_items") == [{"n": 0}]
    # a lake written before the views existed (no distill_results folder) still opens
    shutil.rmtree(tmp_path / "lake" / "distill_results")
    assert _sql(tmp_path, "SELECT count(*) AS n FROM requests") == [{"n": 0}]
    assert _sql(tmp_path, "SELECT count(*) AS n FROM distill_runs") == [{"n": 0}]


def test_eval_results_show_in_costline_sql_and_in_the_views_database(tmp_path):
    from costline.distill.store import write_rows

    lake = tmp_path / "lake"
    Lake(lake).init()  # distillation writes its results into the processor's lake
    write_rows(lake, "distill_runs", "r1", [
        {"run_id": "r1", "finished_at": datetime(2026, 11, 2, 3), "task_type": "classification",
         "subtype": "sentiment", "n": 30, "gap": 0.02, "threshold": 0.05, "passed": True},
        {"run_id": "r1", "finished_at": datetime(2026, 11, 2, 3), "task_type": "classification",
         "subtype": "topic", "n": 30, "gap": 0.2, "threshold": 0.05, "passed": False},
    ])
    assert _sql(tmp_path, "SELECT subtype, passed FROM distill_runs ORDER BY subtype") == [
        {"subtype": "sentiment", "passed": True}, {"subtype": "topic", "passed": False}]

    res = _run(tmp_path, "lake", "views")
    db = lake / "costline.duckdb"
    assert res.output.strip() == f"duckdb {db}"
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM distill_runs WHERE NOT passed").fetchone() == (1,)
        assert con.execute("SELECT count(*) FROM distill_items").fetchone() == (0,)
    finally:
        con.close()
