"""The dashboard's job and alert charts on a lake the real nightly jobs and alert rules filled.

Three simulated days go through the real drift and shadow jobs (against the stand-in teacher and
student) and the job-end alert rules, as ``costline demo`` runs them. Each chart is then checked
against values computed here from the jobs' item-level Parquet files, read with pyarrow and
aggregated in Python: no costline view or chart SQL is involved in the expectation.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from lakes import demo_plans, lake_from_plans

import costline.dashboards as dashboards
from costline.alerts import evaluate_job_rules
from costline.alerts.notify import InMemoryNotifier
from costline.config import CaptureConfig, Config, LakeConfig
from costline.dashboards.build import STATUS_OK, query_chart
from costline.lake import open_lake

START = dt.datetime(2026, 11, 1)
DAYS = 3  # the traffic shift (the student degrades on sarcasm) starts on day 2


@pytest.fixture(scope="module")
def nights(tmp_path_factory: pytest.TempPathFactory):
    from costline.sim.nightly_demo import run_nightly_demo

    path = tmp_path_factory.mktemp("nightly") / "lake"
    cfg = Config(lake=LakeConfig(path=path), capture=CaptureConfig(message_content=True))
    lake_from_plans(demo_plans(days=DAYS, per_day=300, stale_day=None, shift_day=2), cfg)
    lines: list[str] = []
    outcomes = run_nightly_demo(cfg, start=START, days=DAYS, echo=lines.append)
    # the job-end alert rules, as `costline jobs nightly --notify` evaluates them after the last night;
    # the demo samples 10+ requests per subtype, not the 100 the rule asks of production evals
    alerts = dataclasses.replace(cfg.alerts, student_drift=dataclasses.replace(cfg.alerts.student_drift, min_n=10))
    cfg = cfg.replace(alerts=alerts)
    evaluate_job_rules(cfg, now=(START + dt.timedelta(days=DAYS)).replace(tzinfo=dt.UTC),
                       notifiers={"memory": InMemoryNotifier("memory")})
    return cfg, lines, outcomes


def _items(lake: Path, table: str) -> list[dict]:
    files = sorted((lake / "jobs" / table).glob("*.parquet"))
    assert files, f"the jobs wrote no {table}"
    return [row for f in files for row in pq.read_table(f).to_pylist()]


def _chart(cfg: Config, name: str) -> list[dict]:
    con = open_lake(cfg)
    try:
        data = query_chart(con, dashboards.chart_by_name(name), cfg)
    finally:
        con.close()
    assert data.status == STATUS_OK, data.message
    return [dict(zip(data.columns, row)) for row in data.rows]


def test_demo_nights_flag_the_student_drift_on_the_day_it_starts(nights):
    _cfg, lines, outcomes = nights
    assert all(o.status == "succeeded" for o in outcomes), outcomes
    per_night = [ln for ln in lines if ln.startswith("night after")]
    assert len(per_night) == DAYS
    assert "FLAGGED" not in per_night[0] and "FLAGGED" not in per_night[1]
    assert "FLAGGED on sarcasm" in per_night[2]
    assert any("cumulative saving" in ln for ln in lines)
    assert any("none twice: True" in ln for ln in lines)


def test_student_vs_teacher_chart_is_the_mean_of_the_scored_items(nights):
    cfg, _lines, _outcomes = nights
    scores: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for item in _items(cfg.lake.path, "eval_items"):
        scores[(item["run_id"], item["subtype"])].append((item["student_score"], item["teacher_score"]))
    rows = _chart(cfg, "student_vs_teacher")
    assert {(r["run_id"], r["subtype"]) for r in rows} == set(scores)
    for r in rows:
        pairs = scores[(r["run_id"], r["subtype"])]
        student = sum(s for s, _ in pairs) / len(pairs)
        teacher = sum(t for _, t in pairs) / len(pairs)
        assert r["n"] == len(pairs)
        assert r["student_score"] == pytest.approx(student)
        assert r["teacher_score"] == pytest.approx(teacher)
        assert r["gap"] == pytest.approx(teacher - student)
    # what an on-call engineer reads off the chart: the shifted traffic's sarcasm slice (last night
    # only) has a gap far above every other subtype's on any night
    sarcasm = [r["gap"] for r in rows if r["subtype"] == "sarcasm"]
    others = [r["gap"] for r in rows if r["subtype"] != "sarcasm"]
    assert len(sarcasm) == 1 and others
    assert sarcasm[0] > 0.5 and max(others) < sarcasm[0] / 2


def test_tier_match_chart_is_the_share_of_adequate_cheaper_answers(nights):
    cfg, _lines, _outcomes = nights
    matches: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for item in _items(cfg.lake.path, "shadow_items"):
        matches[(item["run_id"], item["tier"])].append(bool(item["match"]))
    rows = _chart(cfg, "tier_match_rate")
    assert {(r["run_id"], r["tier"]) for r in rows} == set(matches)
    for r in rows:
        judged = matches[(r["run_id"], r["tier"])]
        assert r["n"] == len(judged)
        assert r["tier_match_rate"] == pytest.approx(sum(judged) / len(judged))
    assert len({r["run_id"] for r in rows}) == DAYS


def test_alerts_chart_shows_the_drift_the_last_night_raised(nights):
    cfg, _lines, _outcomes = nights
    rows = _chart(cfg, "alerts")
    drift = [r for r in rows if r["rule"] == "student_drift"]
    assert [(r["state"], r["subtype"]) for r in drift] == [("firing", "sarcasm")]
    assert drift[0]["fired_at"] == (START + dt.timedelta(days=DAYS)).isoformat()  # by the third night's jobs
    assert rows[0]["state"] == "firing"  # firing alerts lead the chart
