"""Two task types that share a subtype name (or both set none: "(none)") are two strata for the export, two
verdicts for the gate and two entries for promote: one task type's held-out items are never scored inside
the other's verdict.

Expected figures are computed here, with scipy or by hand, never with costline's own functions."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).parent))

from distill_world import labelled_plans, world_config  # noqa: E402

from costline.config import Config, LakeConfig, load_config  # noqa: E402
from costline.distill.settings import DistillConfig  # noqa: E402

SINCE, UNTIL = datetime(2026, 11, 1), datetime(2026, 11, 2)


def _cp_high(k: int, n: int) -> float:
    """One-sided 95 % Clopper-Pearson upper bound of k disagreements of n."""
    return 1.0 if k == n else float(stats.beta.ppf(0.95, k + 1, n - k))


def _run(root: Path, run_id: str, held: dict[tuple[str, str], tuple[int, int]],
         trained: dict[tuple[str, str], int] | None = None, *, manifest: str = "pairs"):
    """A run exported and answered by the teacher: ``held[(task_type, subtype)] = (n, wrong)`` held-out items,
    ``trained[(task_type, subtype)] = n`` train items; the student is wrong on the first ``wrong`` of each pair.
    ``manifest``: "pairs" (this costline's) or "old" (keyed by subtype name alone, as written before)."""
    from costline.distill.runs import DistillRun, write_json, write_jsonl

    trained = trained or {}
    run = DistillRun(root, run_id)
    items, wrong_q = [], set()
    for (tt, sub), (n, wrong) in held.items():
        for i in range(n):
            q = f"{tt} {sub} q{i}"
            items.append({"id": f"{tt}-{sub}-{i}", "request_id": f"r-{tt}-{sub}-{i}", "task_type": tt,
                          "subtype": sub, "system": None, "messages": [{"role": "user", "content": q}], "query": q,
                          "content_hash": f"h-{tt}-{sub}-{i}", "reasoning": False, "split": "eval", "tenant": "t"})
            if i < wrong:
                wrong_q.add(q)
    train = [{"id": f"t-{tt}-{sub}-{i}", "request_id": f"rt-{tt}-{sub}-{i}", "task_type": tt, "subtype": sub,
              "system": None, "messages": [{"role": "user", "content": f"train {i}"}], "query": f"train {i}",
              "content_hash": f"ht-{tt}-{sub}-{i}", "reasoning": False, "split": "train", "tenant": "t"}
             for (tt, sub), n in trained.items() for i in range(n)]
    write_jsonl(run.dataset / "eval.jsonl", items)
    write_jsonl(run.dataset / "train.jsonl", train)
    pairs = sorted(set(held) | set(trained))
    counts: dict[str, dict[str, int]] = {}
    for tt, sub in pairs:
        c = counts.setdefault(sub, {"train": 0, "eval": 0})
        c["train"] += trained.get((tt, sub), 0)
        c["eval"] += held.get((tt, sub), (0, 0))[0]
    doc = {"run_id": run_id, "counts": counts, "hashes": {"train": [], "eval": []}}
    if manifest == "pairs":
        doc["pairs"] = [{"task_type": tt, "subtype": sub, "train": trained.get((tt, sub), 0),
                         "eval": held.get((tt, sub), (0, 0))[0], "split": {}} for tt, sub in pairs]
        doc["task_types"] = {sub: sorted(t for t, s in pairs if s == sub) for sub in counts}
    else:  # before: one task type per subtype name, whichever was written last
        doc["task_types"] = {sub: tt for tt, sub in pairs}
    write_json(run.dataset / "manifest.json", doc)
    write_jsonl(run.path("teacher.jsonl"), [{"id": it["id"], "split": "eval", "answer": "positive"} for it in items])

    def student(queries):
        return ["negative" if q in wrong_q else "positive" for q in queries]

    return run, student


def _cfg(tmp_path: Path, max_gap: float = 0.15, min_eval: int = 5) -> Config:
    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"),
                 distill=DistillConfig(max_gap=max_gap, min_eval_per_subtype=min_eval))
    drift = dataclasses.replace(cfg.jobs.drift, metrics={"classification": "exact", "extraction": "exact"})
    return cfg.replace(jobs=dataclasses.replace(cfg.jobs, drift=drift))


# (case, held-out {(task type, subtype): (n, wrong)}, train items {(task type, subtype): n}); classification and
# extraction are both exact match by default ([jobs.drift.metrics]), so every bound is Clopper-Pearson
CASES = [
    # the reviewer's seed 6: classification/support's own 68 all right, failed at 0.105 for 8 extraction items
    ("good pair not failed by the other's errors", {("classification", "support"): (68, 0),
                                                    ("extraction", "support"): (8, 8)}, {}),
    # 5 wrong of 10 extraction items hidden among 200 right classification items: 5 of 210 passed before
    ("bad pair not hidden in the mix", {("classification", "support"): (200, 0),
                                        ("extraction", "support"): (10, 5)}, {}),
    # apps that set no subtype: both task types are "(none)"
    ("no subtype set in either task type", {("classification", "(none)"): (60, 0),
                                            ("extraction", "(none)"): (12, 6)}, {}),
]


@pytest.mark.parametrize("case,held,trained", CASES, ids=[c[0] for c in CASES])
def test_each_task_type_and_subtype_pair_gets_its_own_verdict(tmp_path, case, held, trained):
    from costline.distill.errors import GateFailedError
    from costline.distill.evaluate import evaluate_student, gate_run
    from costline.distill.promote import promote_run
    from costline.distill.runs import write_json

    cfg = _cfg(tmp_path)
    run, student = _run(tmp_path / "runs", "r", held, trained)
    g = evaluate_student(cfg, run, student=student)
    got = {(v.task_type, v.subtype): v for v in g.subtypes}
    assert set(got) == set(held), case
    for pair, (n, k) in held.items():
        v = got[pair]
        high = _cp_high(k, n)
        assert v.n == n and v.gap == pytest.approx(k / n), pair
        assert v.gap_ci_high == pytest.approx(high, abs=1e-9), pair
        assert v.passed is (high <= 0.15 and n >= 5), (pair, v.reason)
    # by hand: 0 of 60 / 68 / 200 bound at 1 - 0.05 ** (1 / n) <= 0.049; 5 of 10 and 6 of 12 far over 0.15
    ok = {p for p, (n, k) in held.items() if k == 0}
    assert {p for p, v in got.items() if v.passed} == ok
    assert not g.passed
    bad = [p for p in held if p not in ok]
    for tt, sub in bad:
        assert f"{tt}/{sub}" in g.describe()
    # eval.json and gate.json name each pair
    doc = json.loads(run.path("eval.json").read_text())
    assert {(v["task_type"], v["subtype"]) for v in doc["subtypes"]} == set(held)
    gate = gate_run(run)
    gdoc = json.loads(run.path("gate.json").read_text())
    assert gdoc["subtypes"] == {tt: {sub: (tt, sub) in ok for t2, sub in held if t2 == tt} for tt, _ in held}
    assert gdoc["failing"] == [{"task_type": tt, "subtype": sub} for tt, sub in sorted(bad)]
    assert gate.failing_pairs == sorted(bad)
    run.adapter.mkdir(parents=True)
    write_json(run.adapter / "training_manifest.json", {"base_model": "/models/base"})
    with pytest.raises(GateFailedError) as e:
        promote_run(cfg, run, tmp_path / "costline.toml")
    (tt, sub), = bad  # one failing pair per case: named under its own task type
    assert f"failing subtypes: {tt}: {sub} (see" in str(e.value)


def test_a_pair_with_train_items_but_none_held_out_gets_its_own_no_held_out_verdict(tmp_path):
    """The reviewer's seed 2: extraction/support had train items and no eval item; its subtype name was
    covered by classification/support's verdict, so it had no verdict of its own."""
    from costline.distill.evaluate import evaluate_student

    for manifest in ("pairs", "old"):  # an older, subtype-keyed manifest: its pairs are read from its rows
        run, student = _run(tmp_path / manifest, "r", {("classification", "support"): (60, 0)},
                            {("classification", "support"): 300, ("extraction", "support"): 20}, manifest=manifest)
        g = evaluate_student(_cfg(tmp_path), run, student=student)
        got = {(v.task_type, v.subtype): v for v in g.subtypes}
        assert set(got) == {("classification", "support"), ("extraction", "support")}, manifest
        assert got[("classification", "support")].passed  # 0 of 60: 1 - 0.05 ** (1 / 60) = 0.0487
        v = got[("extraction", "support")]
        assert v.n == 0 and not v.passed and not g.passed
        assert "no held-out items" in v.reason and "extraction/support" in v.reason


def test_promote_gates_each_passed_pair_under_its_own_task_type(tmp_path):
    from costline.distill.evaluate import evaluate_student
    from costline.distill.promote import promote_run
    from costline.distill.runs import write_json
    from costline.serving.routing.router import build_policy

    # 0 of 40 bounds at 1 - 0.05 ** (1 / 40) = 0.072 <= 0.15: every pair passes
    assert 1 - 0.05 ** (1 / 40) <= 0.15
    held = {("classification", "sentiment"): (40, 0), ("classification", "support"): (40, 0),
            ("extraction", "support"): (40, 0)}
    cfg = _cfg(tmp_path)
    run, student = _run(tmp_path / "runs", "r", held)
    assert evaluate_student(cfg, run, student=student).passed
    run.adapter.mkdir(parents=True)
    write_json(run.adapter / "training_manifest.json", {"base_model": "/models/base"})
    toml = tmp_path / "costline.toml"
    toml.write_text("# ops\n")
    p = promote_run(cfg, run, toml)
    want = {"classification": ("sentiment", "support"), "extraction": ("support",)}
    assert load_config(toml).serving.router.rules.student_subtypes == want
    assert p.subtypes == {t: list(s) for t, s in want.items()}
    pol = build_policy(load_config(toml).serving)
    assert pol.route("Extract the topic: my invoice", "extraction", subtype="support").tier == "student"
    assert pol.route("Classify: my invoice", "classification", subtype="support").tier == "student"


def test_an_eval_json_of_an_older_costline_is_refused_only_when_its_subtypes_were_merged(tmp_path):
    """eval.json written before (no ``keyed_by``): its verdicts named one task type per subtype name. Read as
    it is when the export holds each subtype name under one task type; refused (re-run eval) when shared."""
    from costline.distill.errors import DistillError
    from costline.distill.evaluate import gate_run
    from costline.distill.runs import write_json

    def old_eval(run, verdicts):
        write_json(run.path("eval.json"), {"run_id": run.run_id, "passed": True, "subtypes": [
            {"subtype": sub, "task_type": tt, "n": 100, "student_score": 1.0, "teacher_score": 1.0, "gap": 0.0,
             "gap_ci_low": 0.0, "gap_ci_high": 0.03, "threshold": 0.05, "passed": True, "reason": "passed"}
            for tt, sub in verdicts]})

    shared, _ = _run(tmp_path / "a", "shared", {("classification", "support"): (5, 0),
                                                ("extraction", "support"): (5, 0)}, manifest="old")
    old_eval(shared, [("extraction", "support")])  # the merged verdict, under the task type written last
    with pytest.raises(DistillError, match=r"re-run `costline distill eval --run shared`") as e:
        gate_run(shared)
    assert "support under classification, extraction" in str(e.value)
    assert not shared.path("gate.json").exists()

    alone, _ = _run(tmp_path / "b", "alone", {("classification", "support"): (5, 0),
                                              ("extraction", "dates"): (5, 0)}, manifest="old")
    old_eval(alone, [("classification", "support"), ("extraction", "dates")])
    assert gate_run(alone).passed_subtypes == {"classification": ["support"], "extraction": ["dates"]}


def test_export_stratifies_and_splits_each_pair_and_the_manifest_names_them(tmp_path):
    """A realistic lake: classification and extraction traffic both of subtype "support"."""
    from lakes import lake_from_plans

    from costline.distill.dataset import export_dataset

    cfg = world_config(tmp_path, tenants=("*",), task_types=("classification", "extraction"), eval_fraction=0.15,
                       split_cluster_threshold=0.0)
    plans = []
    for i, p in enumerate(labelled_plans(600)):
        if p.subtype == "topic":
            if i % 3 == 0:
                p = dataclasses.replace(p, task_type="extraction", query=p.query.replace("Classify", "Extract"))
            p = dataclasses.replace(p, subtype="support")
        plans.append(p)
    lake_from_plans(plans, cfg)
    ex = export_dataset(cfg, since=SINCE, until=UNTIL, run_id="mix")
    rows = [json.loads(line) for f in ("train.jsonl", "eval.jsonl")
            for line in (ex.run.dataset / f).read_text().splitlines()]
    per = Counter((r["task_type"], r["subtype"], r["split"]) for r in rows)
    pairs = sorted({(r["task_type"], r["subtype"]) for r in rows})
    assert ("classification", "support") in pairs and ("extraction", "support") in pairs
    m = json.loads((ex.run.dataset / "manifest.json").read_text())
    assert [(p["task_type"], p["subtype"]) for p in m["pairs"]] == pairs
    for p in m["pairs"]:
        tt, sub = p["task_type"], p["subtype"]
        n = per[(tt, sub, "train")] + per[(tt, sub, "eval")]
        assert (p["train"], p["eval"]) == (per[(tt, sub, "train")], per[(tt, sub, "eval")])
        assert p["eval"] == max(1, round(n * 0.15)), (tt, sub)  # 15 % of each pair, not of the subtype name
        assert p["split"]["items"] == n and p["split"]["eval"] == p["eval"]
        assert ex.pairs[(tt, sub)] == {"train": p["train"], "eval": p["eval"]}
    assert m["task_types"]["support"] == ["classification", "extraction"]
    assert "support" not in m["split"]  # a per-subtype split summary would mix the two
    sup = [p for p in m["pairs"] if p["subtype"] == "support"]
    assert m["counts"]["support"] == {"train": sum(p["train"] for p in sup), "eval": sum(p["eval"] for p in sup)}
