"""The jobs', distillation's and alerts' result tables in table mode: Iceberg tables in the span
tables' catalog (real SeaweedFS + SQLite catalog), read by the same views as the local files."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from costline.config import Config
from tests.tablelake_helpers import table_lake_config

pytest.importorskip("pyiceberg")
pytestmark = pytest.mark.objstore


def _job_run(run_id: str, status: str, updated_at: datetime) -> dict:
    return {"run_id": run_id, "job": "drift", "status": status, "rows": 3, "attempt": 1, "updated_at": updated_at}


def test_results_go_to_the_catalog_and_the_views_read_them(objstore, tmp_path: Path) -> None:
    from costline.alerts.store import AlertStore
    from costline.alerts.view import export_history
    from costline.distill.store import write_rows
    from costline.jobs.store import job_store
    from costline.lake import open_lake
    from costline.processors.cli import _lock_down
    from costline.tablelake import TableLake

    cfg = Config(lake=table_lake_config(objstore, tmp_path))
    TableLake(cfg.lake).init()
    store = job_store(cfg).init()
    store.write("eval_runs", "run-1", [{"run_id": "run-1", "subtype": "faq", "n": 10, "gap": 0.5}])
    # a second write of the same name replaces its rows (the local store replaces the file)
    store.write("eval_runs", "run-1", [{"run_id": "run-1", "subtype": "faq", "n": 12, "gap": 0.25},
                                       {"run_id": "run-1", "subtype": "code", "n": 4, "gap": 0.0}])
    store.write("eval_runs", "run-2", [{"run_id": "run-2", "subtype": "faq", "n": 7, "gap": 0.125}])
    store.write("job_runs", "j1.0", [_job_run("j1", "running", datetime(2026, 11, 2, 3, 0))])
    store.write("job_runs", "j1.1", [_job_run("j1", "succeeded", datetime(2026, 11, 2, 3, 5))])
    store.write("route_retrains", "rt-1", [{"retrain_id": "rt-1", "status": "promoted", "tier": "haiku"}])
    assert store.exists("eval_runs", "run-2") and not store.exists("eval_runs", "run-3")
    write_rows(cfg, "distill_runs", "d-1", [{"run_id": "d-1", "subtype": "faq", "passed": True, "gap": 0.5}])
    alerts = AlertStore(tmp_path / "alerts.sqlite")
    with alerts.transaction() as con:  # one episode: firing at 10:00, resolved at 10:30 (epoch seconds, UTC)
        for at, frm, to in [(1793613600.0, "pending", "firing"), (1793615400.0, "firing", "resolved")]:
            con.execute("INSERT INTO history (at, fingerprint, rule, labels, from_state, to_state, value, threshold, "
                        "summary, severity) VALUES (?, 'fp1', 'spend_spike', '{\"tenant\": \"acme\"}', ?, ?, 2.0, 1.0, "
                        "'spend x2', 'page')", (at, frm, to))
    export_history(alerts, cfg)

    # nothing went to the local files
    assert not (cfg.lake.path / "jobs" / "eval_runs" / "run-1.parquet").exists()
    assert not (cfg.lake.path / "distill_results" / "distill_runs" / "d-1.parquet").exists()
    assert not (cfg.lake.path / "alerts" / "history" / "history.parquet").exists()

    con = open_lake(cfg)
    _lock_down(con, cfg)  # `costline sql`'s connection: no files, no network
    assert con.execute("SELECT run_id, subtype, n, gap FROM eval_runs ORDER BY run_id, subtype").fetchall() == [
        ("run-1", "code", 4, 0.0), ("run-1", "faq", 12, 0.25), ("run-2", "faq", 7, 0.125)]
    assert "_name" not in [r[0] for r in con.execute("DESCRIBE eval_runs").fetchall()]
    assert con.execute("SELECT run_id, status FROM job_runs").fetchall() == [("j1", "succeeded")]
    assert con.execute("SELECT retrain_id, tier FROM route_retrains").fetchall() == [("rt-1", "haiku")]
    assert con.execute("SELECT run_id, passed FROM distill_runs").fetchall() == [("d-1", True)]
    assert con.execute("SELECT count(*) FROM shadow_runs").fetchone() == (0,)  # never written: empty, not missing
    assert con.execute("SELECT rule, tenant, state, fired_at, resolved_at FROM alerts").fetchall() == [
        ("spend_spike", "acme", "resolved", datetime(2026, 11, 2, 10, 0), datetime(2026, 11, 2, 10, 30))]
    assert con.execute("SELECT count(*) FROM alerts_history").fetchone() == (2,)


def test_local_mode_keeps_the_local_files(tmp_path: Path) -> None:
    from costline.config import LakeConfig
    from costline.jobs.store import job_store

    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"))
    store = job_store(cfg).init()
    assert store.sink is None
    assert store.write("eval_runs", "run-1", [{"run_id": "run-1"}]) == tmp_path / "lake" / "jobs" / "eval_runs" / "run-1.parquet"
