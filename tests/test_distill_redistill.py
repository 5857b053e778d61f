"""Re-distillation on drift: the flagged subtypes' fresh traffic is exported (opt-in) — only exported —
and the student_drift alert says so; nothing happens otherwise."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from datetime import datetime, timedelta
from pathlib import Path

import anthropic
import openai

sys.path.insert(0, str(Path(__file__).parent))

from distill_world import labelled_plans, world_config  # noqa: E402

UNTIL = datetime(2026, 11, 2)
AT = datetime(2026, 11, 2, 2, 17)  # the injected clock: when the nightly run exports


def _exports(cfg):
    from costline.lake import open_lake

    con = open_lake(cfg)
    try:
        cur = con.execute("SELECT * FROM distill_exports ORDER BY run_id, subtype")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]
    finally:
        con.close()


def test_drifted_subtypes_are_exported_only_when_opted_in(tmp_path):
    from lakes import lake_from_plans

    from costline.distill.redistill import on_drift

    cfg = world_config(tmp_path, tenants=("*",), redistill_on_drift=True)
    lake_from_plans(labelled_plans(120), cfg)
    assert on_drift(cfg.replace(distill={"redistill_on_drift": False}), ["sentiment"], UNTIL) is None
    assert on_drift(cfg, [], UNTIL) is None
    assert _exports(cfg) == []
    run_id = on_drift(cfg, ["sentiment"], UNTIL, drift_run_id="drift@1", now=lambda: AT)
    assert run_id is not None
    run = tmp_path / "lake" / "distill" / run_id
    manifest = json.loads((run / "dataset" / "manifest.json").read_text())
    assert list(manifest["counts"]) == ["sentiment"] and manifest["params"]["subtypes"] == ["sentiment"]
    assert manifest["until"] == UNTIL.isoformat() and manifest["created_at"] == AT.isoformat()
    # an export, nothing else: no teacher answers, no adapter, no promotion
    assert sorted(p.name for p in run.iterdir()) == ["dataset"]
    (row,) = _exports(cfg)
    c = manifest["counts"]["sentiment"]
    assert row == {"run_id": run_id, "exported_at": AT, "trigger": "drift", "drift_run_id": "drift@1",
                   "task_type": "classification", "subtype": "sentiment", "train": c["train"], "eval": c["eval"],
                   "window_since": UNTIL - timedelta(days=1), "window_until": UNTIL}
    # a subtype with no traffic: nothing to export, and the drift job is not disturbed
    assert on_drift(cfg, ["no-such-subtype"], UNTIL) is None


def _eval_row(run_id, subtype, gap):
    return {"run_id": run_id, "finished_at": UNTIL, "subtype": subtype, "gap": gap, "gap_ci_low": gap - 0.02,
            "gap_ci_high": gap + 0.02, "threshold": 0.05, "n": 100}


def test_the_student_drift_alert_names_the_re_distillation_export():
    from costline.alerts.rules import Condition, Snapshot, evaluate, rules_from_config
    from costline.config import Config

    (rule,) = rules_from_config(Config().alerts, ["student_drift"])
    evals = [_eval_row("drift@2", "sarcasm", 0.3), _eval_row("drift@2", "intent", 0.0)]
    exports = [{"run_id": "distill-x", "drift_run_id": "drift@2", "subtype": "sarcasm"},
               {"run_id": "distill-old", "drift_run_id": "drift@1", "subtype": "intent"}]  # an earlier drift run
    obs = {o.labels["subtype"]: o for o in evaluate(rule, Snapshot(eval_runs=evals, redistills=exports), UNTIL)}
    assert obs["sarcasm"].condition is Condition.BREACH
    assert obs["sarcasm"].summary.endswith("; fresh traffic exported for re-distillation as run distill-x")
    assert "costline distill teacher --run distill-x" in obs["sarcasm"].figures["re-distillation"]
    assert "re-distillation" not in obs["intent"].summary and "re-distillation" not in obs["intent"].figures
    plain = evaluate(rule, Snapshot(eval_runs=evals), UNTIL)
    assert all("re-distillation" not in o.summary for o in plain)


def test_nightly_drift_exports_the_drifted_subtype_and_the_alert_says_so(tmp_path, caplog):
    """The drift job through `nightly` against the stand-in (student degraded on sarcasm), then the
    job alert rules: the alert text names the export; no teacher call is made for the export."""
    from lakes import demo_plans, lake_from_plans

    from costline.config import CaptureConfig, Config, LakeConfig
    from costline.distill.settings import DistillConfig
    from costline.jobs.scheduler import default_runners, nightly
    from costline.serving.settings import StandInConfig
    from costline.sim.standin import StandInServer

    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"), capture=CaptureConfig(message_content=True),
                 distill=DistillConfig(redistill_on_drift=True, near_duplicate_threshold=0.0, window_days=1,
                                       tenants=("*",)))
    lake_from_plans(demo_plans(days=2, per_day=300, shift_day=1, stale_day=None), cfg)
    # a small lake: few evaluated queries (26 sarcasm ones, all answered wrong), judged from 20 by the drift job
    d = dataclasses.replace(cfg.jobs.drift, regenerate_student=True, mmd_permutations=0, min_per_subtype=5, min_n=20)
    alert = dataclasses.replace(cfg.alerts.student_drift, min_n=5)
    cfg = cfg.replace(jobs=dataclasses.replace(cfg.jobs, drift=d),
                      alerts=dataclasses.replace(cfg.alerts, student_drift=alert))
    day1, day2 = UNTIL, UNTIL + timedelta(days=1)
    clock = {"at": day1}
    with StandInServer(StandInConfig(port=0, latency_scale=0.0, degrade_keywords=("sarcasm",))) as srv:
        client = anthropic.Anthropic(base_url=srv.url, api_key="x", max_retries=0)
        student = openai.OpenAI(base_url=srv.openai_url, api_key="x", max_retries=0)
        runners = default_runners(client=client, student=student, batch=True, sleep=lambda s: None,
                                  now=lambda: clock["at"])
        first = nightly(cfg, until=day1, runners=runners, jobs=("drift",), now=lambda: clock["at"])
        assert [o.status for o in first] == ["succeeded"] and _exports(cfg) == []  # nothing flagged yet
        clock["at"] = day2 + timedelta(hours=2)
        paid_before = len(srv.log.paid())
        with caplog.at_level(logging.WARNING):
            second = nightly(cfg, until=day2, runners=runners, jobs=("drift",), now=lambda: clock["at"], notify=True)
        drift_paid = len(srv.log.paid()) - paid_before
    assert [o.status for o in second] == ["succeeded"]
    (row,) = _exports(cfg)
    assert (row["subtype"], row["trigger"], row["drift_run_id"]) == ("sarcasm", "drift", second[0].result_id)
    assert row["exported_at"] == clock["at"] and row["window_until"] == day2
    run = tmp_path / "lake" / "distill" / row["run_id"]
    assert sorted(p.name for p in run.iterdir()) == ["dataset"]  # exported only: no teacher, no training
    assert drift_paid > 0 and not list(run.glob("teacher*"))
    alerts = [r.getMessage() for r in caplog.records if "student_drift" in r.getMessage()]
    assert alerts and f"fresh traffic exported for re-distillation as run {row['run_id']}" in alerts[-1]
