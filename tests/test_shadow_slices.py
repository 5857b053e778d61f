"""The shadow job judges each tier per slice (subtype, task type), not only as a whole.

The review: medical questions were 10 % of the budget tier's traffic and failed every comparison while the rest
matched 97 %; the tier read 87 %, over the 85 % floor, and was never flagged. Now a slice with at least
``MIN_N`` (30) scored requests whose exact (Clopper-Pearson) one-sided upper bound, at ``alpha / k`` (k: the
tier's judged slices, Bonferroni), is under the floor flags its tier, is named in the reason, and the
``routing_tier_match_drop`` alert pages for it labelled tier + subtype. Expected bounds come from scipy's beta
quantiles (the one-sided upper bound of h/n at level a is ``Beta(h + 1, n - h).ppf(1 - a)``), chances from
scipy's binomial pmf; no expected value is computed with costline's code.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy.stats import beta, binom

from costline.jobs.settings import ShadowConfig

CFG = ShadowConfig()  # min_rate 0.85, alpha 0.01


def upper(hits: int, n: int, level: float) -> float:
    return 1.0 if hits == n else float(beta.ppf(1 - level, hits + 1, n - hits))


def assess(tier_hits: int, tier_n: int, slices: dict, history=None):
    from costline.jobs.shadow import assess_tiers

    return assess_tiers({"budget": (tier_hits, tier_n)}, CFG, history={"budget": history} if history else None,
                        slices={"budget": slices})[0]


# -- the reviewer's scenario, scaled so the medical slice can be judged --------------------------------------

def test_a_failing_subtype_in_a_tier_over_the_floor_flags_the_tier_and_is_named() -> None:
    # 300 sampled: medical 0/30 (10 %); the rest 262/270 (97 %) over three subtypes of 90
    slices = {("subtype", "medical"): (0, 30), ("subtype", "billing"): (87, 90), ("subtype", "intent"): (88, 90),
              ("subtype", "shipping"): (87, 90)}
    hits, n = 0 + 87 + 88 + 87, 300
    assert hits == 262
    # as a whole the tier is fine: 87.3 %, its 99 % upper bound 91.4 % is over the floor (old code: never flagged)
    assert upper(hits, n, 0.01) > 0.85
    a = assess(hits, n, slices, history=[(hits, n)] * 7)
    assert a.flagged
    # 4 judged slices: level 0.01 / 4; medical's bound 1 - 0.0025 ** (1 / 30) = 18.1 %
    med = upper(0, 30, 0.0025)
    assert med == pytest.approx(1 - 0.0025 ** (1 / 30)) and med == pytest.approx(0.1810, abs=1e-4)
    assert [(s.kind, s.name) for s in a.flagged_slices] == [("subtype", "medical")]
    assert f"subtype medical: 0/30 matched (upper bound {med:.1%}" in a.reason and "under the floor 85%" in a.reason
    flagged = a.flagged_slices[0]
    assert flagged.upper == pytest.approx(med) and flagged.alpha == pytest.approx(0.0025)
    # the others are judged at the same level and not flagged: 87/90's bound is over the floor
    assert upper(87, 90, 0.0025) > 0.85
    assert sorted(s.name for s in a.slices if s.judged and not s.flagged) == ["billing", "intent", "shipping"]


def test_a_slice_under_30_is_noted_never_flagged_and_not_counted_in_the_correction() -> None:
    a = assess(60, 89, {("subtype", "medical"): (0, 29), ("subtype", "intent"): (27, 40),
                        ("task_type", "classification"): (60, 89)})
    med = next(s for s in a.slices if s.name == "medical")
    assert not med.flagged and not med.judged
    assert "1 slice under 30 scored requests not judged (subtype medical: 29)" in a.reason
    # two judged slices (intent, classification): level 0.01 / 2
    intent = next(s for s in a.slices if s.name == "intent")
    assert intent.alpha == pytest.approx(0.005)
    assert intent.flagged is (upper(27, 40, 0.005) < 0.85)


@pytest.mark.parametrize("k, flagged", [(1, True), (4, False)])
def test_more_slices_mean_a_stricter_level_per_slice(k: int, flagged: bool) -> None:
    """27/40: its bound at 0.01 is 83.4 % (under the floor), at 0.01 / 4 it is 85.9 % (over)."""
    assert upper(27, 40, 0.01) < 0.85 < upper(27, 40, 0.0025)
    slices = {("subtype", "a"): (27, 40)}
    slices.update({("subtype", f"ok{i}"): (40, 40) for i in range(k - 1)})
    a = assess(sum(h for h, _ in slices.values()), 40 * k, slices)
    s = next(s for s in a.slices if s.name == "a")
    assert s.alpha == pytest.approx(0.01 / k) and s.flagged is flagged


@pytest.mark.parametrize("p", [0.90, 0.85])
def test_a_healthy_tier_of_four_slices_is_falsely_flagged_at_most_alpha_of_nights(p: float) -> None:
    """4 slices of n = 40 each at a true rate p: the chance that any slice is flagged (exact: the slices are
    independent, 1 - (1 - q) ** 4 with q the chance one slice is flagged) is at most alpha."""
    from costline.jobs.shadow import assess_slices

    n, k, level = 40, 4, 0.01 / 4
    flag_set = [h for h in range(n + 1) if upper(h, n, level) < 0.85]  # independent: scipy's bounds
    assert flag_set == list(range(0, 27))  # by the table: 26/40 is 84.1 % at 0.0025, 27/40 85.9 %
    for h in range(n + 1):  # costline flags exactly these counts when every slice has n = 40
        parts = assess_slices({("subtype", f"s{i}"): (h if i == 0 else n, n) for i in range(k)}, CFG)
        assert parts[0].flagged is (h in flag_set), h
    q = sum(binom.pmf(h, n, p) for h in flag_set)
    family = 1 - (1 - q) ** k
    assert family <= CFG.alpha, family
    # uncorrected (each at alpha) it would be higher: Bonferroni is what keeps it down
    q_raw = sum(binom.pmf(h, n, p) for h in range(n + 1) if upper(h, n, 0.01) < 0.85)
    assert 1 - (1 - q_raw) ** k > family


def test_a_truly_failing_slice_of_40_among_four_is_found_nearly_always() -> None:
    """A slice matching half the time: flagged from 26 of 40 down, P(X <= 26 | 40, 0.5) = 0.981."""
    from costline.jobs.shadow import assess_slices

    flags = [h for h in range(41) if assess_slices({("subtype", "bad"): (h, 40), **{("subtype", f"ok{i}"): (40, 40)
                                                                                    for i in range(3)}}, CFG)[0].flagged]
    assert flags == list(range(27)) and binom.cdf(26, 40, 0.5) > 0.98


# -- the alert -------------------------------------------------------------------------------------------------

W = datetime(2026, 11, 7, 2, 0)
NOW = datetime(2026, 11, 7, 9, 0, tzinfo=UTC)


def shadow_rows(slices) -> list[dict]:
    """8 nightly budget runs at 87 % (n 300); the latest carries ``slices`` (a JSON text, written by hand)."""
    return [{"run_id": f"s{d}", "finished_at": W - timedelta(days=d), "until": W - timedelta(days=d),
             "tier": "budget", "tier_match_rate": 262 / 300, "n": 300, "slices": slices if d == 0 else None}
            for d in range(8)]


def observe(slices, min_n: int = 30):
    """The rule's observations, its ``min_n`` (100 by default) set to the job's 30 a slice unless said."""
    import dataclasses

    from costline.alerts.rules import Rule, Snapshot, evaluate
    from costline.alerts.settings import AlertsConfig

    settings = dataclasses.replace(AlertsConfig().routing_tier_match_drop, min_n=min_n)
    rule = Rule("routing_tier_match_drop", settings, 30)
    return evaluate(rule, Snapshot(shadow_runs=shadow_rows(slices)), NOW)


SLICES = json.dumps([
    {"kind": "subtype", "name": "medical", "n": 30, "matches": 0, "rate": 0.0, "upper": 0.181, "alpha": 0.0025,
     "flagged": True, "reason": "subtype medical: 0/30 matched (upper bound 18.1% ...) under the floor 85%"},
    {"kind": "subtype", "name": "billing", "n": 90, "matches": 87, "rate": 87 / 90, "upper": 0.99, "alpha": 0.0025,
     "flagged": False, "reason": "x"},
    {"kind": "subtype", "name": "rare", "n": 5, "matches": 0, "rate": 0.0, "upper": None, "alpha": None,
     "flagged": False, "reason": "too few"},
    {"kind": "task_type", "name": "classification", "n": 300, "matches": 262, "rate": 262 / 300, "upper": 0.91,
     "alpha": 0.0025, "flagged": False, "reason": "x"},
])


def test_the_alert_pages_for_a_flagged_slice_labelled_tier_and_subtype() -> None:
    from costline.alerts.rules import Condition

    obs = {tuple(sorted(o.labels.items())): o for o in observe(SLICES)}
    tier = obs[(("tier", "budget"),)]
    assert tier.condition != Condition.BREACH  # 87.3 % over the floor: the tier alone does not fire
    med = obs[(("subtype", "medical"), ("tier", "budget"))]
    assert med.condition == Condition.BREACH and med.value == 0.0 and med.threshold == 0.85
    assert "budget, subtype medical: 0/30 matched" in med.summary and "under the floor 85%" in med.summary
    assert "subtype = 'medical'" in med.query
    assert obs[(("subtype", "billing"), ("tier", "budget"))].condition == Condition.OK  # 96.7 %, not flagged
    assert obs[(("subtype", "rare"), ("tier", "budget"))].condition == Condition.BAND  # 5: too few, state kept
    assert obs[(("task_type", "classification"), ("tier", "budget"))].condition == Condition.OK
    assert len(obs) == 5


def test_a_slice_under_the_rules_min_n_keeps_its_state_though_the_job_flagged_it() -> None:
    """A slice is judged on no less evidence than its tier: with the rule's default min_n (100), the job's flagged
    0/30 medical slice is 'too few to judge', state kept, while the 300-request slice is judged."""
    from costline.alerts.rules import Condition

    obs = {tuple(sorted(o.labels.items())): o for o in observe(SLICES, min_n=100)}
    med = obs[(("subtype", "medical"), ("tier", "budget"))]
    assert med.condition == Condition.BAND and "too few to judge (min_n 100)" in med.summary
    assert obs[(("task_type", "classification"), ("tier", "budget"))].condition == Condition.OK


MEDICAL = {"kind": "subtype", "name": "medical", "n": 30, "matches": 0, "upper": 0.181, "flagged": True}


@pytest.mark.parametrize("junk", [1, "x", None, {"kind": "x"}, {"kind": "color", "name": "red", "n": 40, "matches": 0},
                                  {"kind": "subtype", "name": "m", "n": 3, "matches": 9},
                                  {"kind": "subtype", "name": "m", "n": "many", "matches": 0}])
def test_a_malformed_slice_is_skipped_and_the_rest_still_page(junk) -> None:
    obs = observe(json.dumps([junk, MEDICAL]))
    assert [dict(o.labels) for o in obs] == [{"tier": "budget"}, {"tier": "budget", "subtype": "medical"}]


def test_old_or_unreadable_slices_leave_the_tier_alert_alone() -> None:
    assert len(observe(json.dumps([MEDICAL]))) == 2  # the same row with a readable slice pages for it
    for slices in (None, "", "not json", "{}", "[[[", json.dumps({"kind": "subtype"})):
        assert [dict(o.labels) for o in observe(slices)] == [{"tier": "budget"}], slices


def test_a_silence_on_tier_and_subtype_is_accepted() -> None:
    from costline.alerts.settings import RULE_LABELS

    assert {"tier", "subtype", "task_type"} <= set(RULE_LABELS["routing_tier_match_drop"])


# -- the job, end to end ---------------------------------------------------------------------------------------

def test_run_shadow_writes_the_slices_and_an_old_results_file_still_reads(tmp_path: Path) -> None:
    from costline.alerts.rules import Condition, Rule, Snapshot, evaluate
    from costline.alerts.settings import AlertsConfig
    from costline.jobs.shadow import run_shadow
    from costline.jobs.store import open_jobs_lake
    from tests.test_jobs_open_world import T0, T1, anthropic_mock, last_word, make_lake, req_rows, tuned

    # budget: 30 medical requests answered wrong (the next tier says the query's last word), 270 right
    rows = []
    for i in range(300):
        medical = i < 30
        rows += req_rows(i, query=f"q #{i} positive", answer="negative" if medical else "positive",
                         sub="medical" if medical else "intent", tier="budget")
    cfg = tuned(make_lake(tmp_path / "lake", rows), drift={"min_per_subtype": 1},
                shadow={"tiers": ("budget",), "per_tier": 300})
    res = run_shadow(cfg, since=T0, until=T1, client=anthropic_mock(last_word))
    (a,) = res.assessments
    assert (a.matches, a.n) == (270, 300) and upper(270, 300, 0.01) > 0.85  # the tier alone: not flagged before
    assert res.flagged == ["budget"]
    # 3 judged slices (subtype medical, subtype intent, task_type classification): level 0.01 / 3
    assert f"subtype medical: 0/30 matched (upper bound {upper(0, 30, 0.01 / 3):.1%}" in a.reason
    # an old results file (no slices column) beside the new one
    old = tmp_path / "lake" / "jobs" / "shadow_runs" / "old.parquet"
    pq.write_table(pa.Table.from_pylist([{"run_id": "old", "finished_at": datetime(2026, 11, 1), "tier": "budget",
                                          "n": 300, "matches": 270, "tier_match_rate": 0.9}]), old)
    con = open_jobs_lake(cfg)
    try:
        got = con.execute("SELECT run_id, slices IS NULL FROM shadow_runs ORDER BY run_id").fetchall()
        items = con.execute("SELECT subtype, task_type, count(*), sum(match::INT) FROM shadow_items "
                            "GROUP BY ALL ORDER BY subtype").fetchall()
        cur = con.execute("SELECT * FROM shadow_runs")
        shadow = [dict(zip([c[0] for c in cur.description], r)) for r in cur.fetchall()]
    finally:
        con.close()
    assert got == [("old", True), (res.run_id, False)]
    assert items == [("intent", "classification", 270, 270), ("medical", "classification", 30, 0)]
    now = datetime.now(UTC)  # the rule reads runs finished at or before now
    obs = evaluate(Rule("routing_tier_match_drop",
                        dataclasses.replace(AlertsConfig().routing_tier_match_drop, min_n=30), 30),
                   Snapshot(shadow_runs=shadow), now)
    fired = [dict(o.labels) for o in obs if o.condition == Condition.BREACH]
    assert fired == [{"tier": "budget", "subtype": "medical"}]
