"""The drift job's judgement (fixtures scored directly, no HTTP) and its sampling from a hand-made lake."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import numpy as np
import pytest

from costline.config import Config, LakeConfig
from costline.jobs.drift import SubtypeScores, assess_inputs, assess_subtypes
from costline.jobs.sampling import sample_requests
from costline.jobs.settings import DriftConfig
from costline.jobs.store import open_jobs_lake
from costline.lake import Lake
from costline.processors.buffer import rows_to_tables
from costline.processors.records import CallRow, RequestRow

SUBTYPES = ("billing", "intent", "sentiment", "urgency")
CFG = DriftConfig()


def night(rng: np.random.Generator, *, n: int = 125, degrade: dict[str, float] | None = None,
          metric: str = "cosine", level: float = 0.92) -> dict[str, SubtypeScores]:
    """One night's per-item scores: cosine-like (continuous) or exact match (0/1)."""
    degrade = degrade or {}
    out = {}
    for sub in SUBTYPES:
        mean = level - degrade.get(sub, 0.0)
        if metric == "exact":
            s = (rng.random(n) < mean).astype(float)
        else:
            s = np.clip(rng.normal(mean, 0.05, n), 0, 1)
        out[sub] = SubtypeScores.of(s, 1.0)
    return out


@pytest.mark.parametrize("metric, n, level", [("cosine", 125, 0.92), ("exact", 1000, 0.97)])
def test_a_five_point_degradation_is_flagged_on_that_subtype_only(metric, n, level):
    rng = np.random.default_rng(11)
    base = night(rng, n=n, metric=metric, level=level)
    history = {s: [float(v.gaps.mean())] for s, v in base.items()}
    cur = night(rng, n=n, metric=metric, level=level, degrade={"intent": 0.05})
    res = {a.subtype: a for a in assess_subtypes(cur, CFG, baseline=base, history=history,
                                                 rng=np.random.default_rng(1))}
    assert [s for s, a in res.items() if a.flagged] == ["intent"]
    assert "grew" in res["intent"].reason
    assert res["intent"].gap - res["intent"].baseline_gap == pytest.approx(0.05, abs=0.02)
    assert res["intent"].gap_ci_low < res["intent"].gap < res["intent"].gap_ci_high


def test_a_stable_student_over_30_nights_raises_no_alert():
    rng = np.random.default_rng(2026)
    base = night(rng)
    history: dict[str, list[float]] = {s: [float(v.gaps.mean())] for s, v in base.items()}
    ref_subs = [s for s, v in base.items() for _ in range(len(v.student))]
    ref_lens = rng.normal(120, 30, len(ref_subs))
    flagged, drifted = [], []
    for k in range(1, 31):
        cur = night(rng)
        for a in assess_subtypes(cur, CFG, baseline=base, history=history, rng=np.random.default_rng(k)):
            if a.flagged:
                flagged.append((k, a.subtype, a.reason))
            history[a.subtype].append(a.gap)
        subs = [s for s, v in cur.items() for _ in range(len(v.student))]
        inputs = assess_inputs(subs, rng.normal(120, 30, len(subs)), ref_subs, ref_lens, CFG)
        if inputs.drifted:
            drifted.append((k, inputs.reason))
    assert flagged == []
    assert drifted == []


def test_a_slow_upward_trend_is_flagged_by_the_trend_test():
    rng = np.random.default_rng(5)
    base = night(rng)
    history: dict[str, list[float]] = {s: [] for s in SUBTYPES}
    flagged_on = None
    for k in range(14):
        cur = night(rng, degrade={"urgency": 0.004 * k})  # +0.4 points a night: never a jump
        res = assess_subtypes(cur, dataclasses.replace(CFG, min_increase=0.03, max_gap_increase=1.0),
                              history=history, rng=np.random.default_rng(k))
        for a in res:
            history[a.subtype].append(a.gap)
            if a.flagged and flagged_on is None:
                assert a.subtype == "urgency" and "rising" in a.reason
                flagged_on = k
    assert flagged_on is not None


def test_a_new_subtype_without_baseline_is_judged_against_max_gap():
    rng = np.random.default_rng(3)
    cur = night(rng)
    cur["sarcasm"] = SubtypeScores.of(np.zeros(60), 1.0)  # the student gets all of it wrong
    res = {a.subtype: a for a in assess_subtypes(cur, CFG, baseline=night(rng), rng=rng)}
    assert res["sarcasm"].flagged and res["sarcasm"].threshold == CFG.max_gap
    assert res["sarcasm"].baseline_gap is None
    assert not res["billing"].flagged


def test_per_subtype_thresholds_win():
    rng = np.random.default_rng(4)
    cur = night(rng)  # gap ~0.08
    cfg = dataclasses.replace(CFG, thresholds={"billing": 0.02})
    res = {a.subtype: a for a in assess_subtypes(cur, cfg, rng=rng)}
    assert res["billing"].flagged and res["billing"].threshold == 0.02
    assert not res["intent"].flagged


# --- sampling from a hand-made lake -----------------------------------------------------------------

T0 = dt.datetime(2026, 11, 7, 0, 0)


def us(t: dt.datetime) -> int:
    return int(t.replace(tzinfo=dt.timezone.utc).timestamp() * 1_000_000)


def content(role: str, text: str) -> str:
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": text}]}])


def make_lake(path, counts: dict[str, int], *, tier: str = "student") -> Config:
    cfg = Config(lake=LakeConfig(path=path))
    rows = []
    i = 0
    for sub, n in counts.items():
        for _ in range(n):
            t = T0 + dt.timedelta(minutes=i)
            rid, trace = f"r{i:05d}", f"{i:032x}"
            rows.append(RequestRow(rid, trace, f"s{i:015x}", us(t), "acme", "classification", sub, tier, tier, False,
                                   1, 0, True, None, 10.0, None, None, 0, i))
            rows.append(CallRow(f"c{i:015x}", trace, f"s{i:015x}", rid, us(t), "chat", "vllm", "costline-student",
                                "costline-student", tier, 100, 5, 0, 0, False, ["stop"], None, 0.0, "student",
                                "2026-06", 5.0, content("user", f"classify {sub} #{i}"),
                                content("assistant", f"label-{sub}"), 0, i))
            i += 1
    lake = Lake(path).init()
    by = {"requests": [r for r in rows if isinstance(r, RequestRow)], "calls": [r for r in rows if isinstance(r, CallRow)]}
    lake.commit_batch("otlp_spans", 0, 0, i, {t: rows_to_tables(t, rs) for t, rs in by.items()})
    return cfg


def test_sampling_is_stratified_reproducible_and_reads_captured_content(tmp_path):
    cfg = make_lake(tmp_path / "lake", {"intent": 300, "sentiment": 60, "urgency": 10})
    con = open_jobs_lake(cfg)
    try:
        kw = dict(tier="student", since=T0, until=T0 + dt.timedelta(days=1), size=100, min_per_subtype=20)
        a = sample_requests(con, seed=1, **kw)
        b = sample_requests(con, seed=1, **kw)
        c = sample_requests(con, seed=2, **kw)
        none = sample_requests(con, seed=1, **{**kw, "tier": "budget"})
    finally:
        con.close()
    assert [s.request_id for s in a] == [s.request_id for s in b]
    assert {s.request_id for s in a} != {s.request_id for s in c}
    by = {}
    for s in a:
        by[s.subtype] = by.get(s.subtype, 0) + 1
    assert by == {"intent": 62, "sentiment": 28, "urgency": 10}  # floors 20/20/10, the rest pro rata
    s = a[0]
    assert s.query.startswith("classify ") and s.answer == f"label-{s.subtype}"
    assert s.messages == ({"role": "user", "content": s.query},)
    assert none == []
