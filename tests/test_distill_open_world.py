"""The distillation pipeline against what production really holds: several tenants, paraphrased questions,
prompts that differ only in an operator, a gate that must prove non-inferiority (not a lucky point estimate),
promotion across runs, and LoRA ranks vLLM accepts.

Expected figures are computed here, with scipy or by hand, never with costline's own functions."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).parent))

from distill_world import labelled_plans, world_config  # noqa: E402

from costline.config import Config, LakeConfig, load_config  # noqa: E402
from costline.distill.errors import ExportError  # noqa: E402
from costline.distill.settings import DistillConfig  # noqa: E402
from costline.errors import ConfigError  # noqa: E402

SINCE, UNTIL = datetime(2026, 11, 1), datetime(2026, 11, 2)


def _rows(ex):
    return [json.loads(line) for f in ("train.jsonl", "eval.jsonl")
            for line in (ex.run.dataset / f).read_text().splitlines()]


def _served(n: int):
    return [p for p in labelled_plans(n) if p.calls and not p.calls[-1].error_type]


# -- 1. promote: the student's subtypes are exactly the promoted run's ------------------------------------------

def _evaluated(root: Path, run_id: str, subtypes: dict[tuple[str, str], bool]):
    from costline.distill.runs import DistillRun, write_json

    run = DistillRun(root, run_id)
    run.dataset.mkdir(parents=True)
    write_json(run.path("eval.json"), {"subtypes": [
        {"subtype": sub, "task_type": tt, "n": 100, "student_score": 1.0, "teacher_score": 1.0, "gap": 0.0,
         "gap_ci_low": 0.0, "gap_ci_high": 0.03 if ok else 0.2, "threshold": 0.05, "passed": ok,
         "reason": "passed" if ok else "over"} for (tt, sub), ok in subtypes.items()]})
    run.adapter.mkdir(parents=True)
    write_json(run.adapter / "training_manifest.json", {"base_model": "/models/base"})
    return run


def test_promoting_a_run_replaces_the_subtypes_of_earlier_runs_and_says_which_were_dropped(tmp_path):
    """The adapter under the one student name is swapped for the new run's: subtypes an earlier run passed
    but this run neither trained nor evaluated must leave the student, not be served by an adapter that
    never saw them."""
    from click.testing import CliRunner

    from costline.cli import _register_area_commands, cli

    toml = tmp_path / "costline.toml"
    toml.write_text(f"# ops\n[lake]\npath = \"{tmp_path / 'lake'}\"\n[distill]\nroot = \"{tmp_path / 'runs'}\"\n")
    _evaluated(tmp_path / "runs", "a", {("classification", "sentiment"): True, ("classification", "topic"): True,
                                         ("extraction", "dates"): True})
    _register_area_commands()
    r = CliRunner().invoke(cli, ["--config", str(toml), "distill", "promote", "--run", "a"])
    assert r.exit_code == 0, r.output
    assert load_config(toml).serving.router.rules.student_subtypes == {
        "classification": ("sentiment", "topic"), "extraction": ("dates",)}
    assert "dropped" not in r.output

    # a re-distillation of "urgency" only (export --subtype urgency): the adapter now knows urgency alone
    _evaluated(tmp_path / "runs", "u", {("classification", "urgency"): True})
    r = CliRunner().invoke(cli, ["--config", str(toml), "distill", "promote", "--run", "u"])
    assert r.exit_code == 0, r.output
    after = load_config(toml)
    assert after.serving.router.rules.student_subtypes == {"classification": ("urgency",)}
    assert after.serving.backends.student_model == "costline-student-lora"
    assert "dropped from the student" in r.output
    assert "classification: sentiment, topic" in r.output and "extraction: dates" in r.output
    # how to keep them: a run that covers them all
    assert ("costline distill export --subtype dates --subtype sentiment --subtype topic --subtype urgency"
            in r.output)
    assert toml.read_text().startswith("# ops")
    doc = json.loads((tmp_path / "runs" / "u" / "promoted.json").read_text())
    assert doc["subtypes"] == {"classification": ["urgency"]}
    assert doc["dropped"] == {"classification": ["sentiment", "topic"], "extraction": ["dates"]}


# -- 2. the gate: non-inferiority on the upper confidence bound ------------------------------------------------

def _run_with_student(root: Path, run_id: str, n: int, wrong: int, *, subtype: str = "sentiment",
                      answers: list[str] | None = None):
    """An exported, teachered, trained run of ``n`` held-out items; the student is wrong on ``wrong`` of them
    (or answers ``answers``)."""
    from costline.distill.runs import DistillRun, write_json, write_jsonl

    run = DistillRun(root, run_id)
    items = [{"id": f"{run_id}-{i}", "request_id": f"r{i}", "task_type": "classification", "subtype": subtype,
              "system": None, "messages": [{"role": "user", "content": f"q {i}"}], "query": f"q {i}",
              "content_hash": f"h{i}", "reasoning": False, "split": "eval"} for i in range(n)]
    write_jsonl(run.dataset / "eval.jsonl", items)
    write_jsonl(run.dataset / "train.jsonl", [])
    write_json(run.dataset / "manifest.json", {"run_id": run_id, "counts": {subtype: {"train": 9 * n, "eval": n}},
                                               "hashes": {"train": [], "eval": []}})
    write_jsonl(run.path("teacher.jsonl"), [{"id": it["id"], "split": "eval", "answer": "positive"} for it in items])
    given = answers or ["negative" if i < wrong else "positive" for i in range(n)]
    by_query = {f"q {i}": a for i, a in enumerate(given)}

    def student(queries):
        return [by_query[q] for q in queries]

    return run, student


# (held-out items, disagreements, threshold)
EXACT_CASES = [
    (20, 1, 0.05),    # the point estimate 0.05 is "within" 0.05: the old gate passed it
    (60, 3, 0.05),    # the same rate on 60: still not shown
    (58, 0, 0.05),    # perfect, but one item short of what 0.05 needs at 95 %
    (59, 0, 0.05),    # perfect, and just enough
    (200, 3, 0.05),   # 1.5 % disagreement on 200: shown under 0.05
    (45, 1, 0.10),
    (45, 0, 0.10),
]


@pytest.mark.parametrize("n,k,thr", EXACT_CASES)
def test_an_exact_match_subtype_passes_only_when_its_clopper_pearson_upper_bound_is_within_the_threshold(
        tmp_path, n, k, thr):
    from costline.distill.evaluate import evaluate_student

    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"),
                 distill=DistillConfig(max_gap=thr, min_eval_per_subtype=20))
    run, student = _run_with_student(tmp_path / "runs", "r", n, k)
    (v,) = evaluate_student(cfg, run, student=student).subtypes
    upper = 1.0 if k == n else stats.beta.ppf(0.95, k + 1, n - k)  # one-sided 95 % Clopper-Pearson
    # the same bound as scipy's exact binomial test reports it (two-sided 90 % interval's upper end)
    assert upper == pytest.approx(stats.binomtest(k, n).proportion_ci(0.90, method="exact").high, abs=1e-9)
    assert v.n == n and v.gap == pytest.approx(k / n)
    assert v.gap_ci_high == pytest.approx(upper, abs=1e-9)
    assert v.gap_ci_low == pytest.approx(0.0 if k == 0 else stats.beta.ppf(0.05, k, n - k + 1), abs=1e-9)
    assert v.passed is bool(upper <= thr), v.reason
    if not v.passed:
        assert "Clopper-Pearson" in v.reason and f"{thr:.3f}" in v.reason


def test_a_perfect_student_short_of_items_is_told_it_lacks_items_not_quality(tmp_path):
    from costline.distill.evaluate import evaluate_student

    # by hand: the bound for 0 of n is 1 - 0.05 ** (1 / n); under 0.05 from n = 59 (0.0495), not at 58 (0.0503)
    assert 1 - 0.05 ** (1 / 59) <= 0.05 < 1 - 0.05 ** (1 / 58)
    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"), distill=DistillConfig(max_gap=0.05))
    run, student = _run_with_student(tmp_path / "runs", "r", 40, 0)
    g = evaluate_student(cfg, run, student=student)
    (v,) = g.subtypes
    assert not v.passed and not g.passed
    assert "too few held-out items" in v.reason and "needs 59" in v.reason and "has 40" in v.reason
    # 4 wrong of 40 is a quality failure, even though more items would also be needed
    run, student = _run_with_student(tmp_path / "runs", "r4", 40, 4)
    (v,) = evaluate_student(cfg, run, student=student).subtypes
    assert "4 of 40 answers disagree" in v.reason


def test_the_gate_level_is_a_setting_and_stricter_levels_need_more_evidence(tmp_path):
    from costline.distill.evaluate import evaluate_student

    run, student = _run_with_student(tmp_path / "runs", "r", 100, 1)
    verdicts = {}
    for level in (0.90, 0.95, 0.99):
        cfg = Config(lake=LakeConfig(path=tmp_path / "lake"), distill=DistillConfig(max_gap=0.04, gate_confidence=level))
        (verdicts[level],) = evaluate_student(cfg, run, student=student).subtypes
    for level, v in verdicts.items():
        upper = stats.beta.ppf(level, 2, 99)
        assert v.gap_ci_high == pytest.approx(upper, abs=1e-9) and v.passed is bool(upper <= 0.04)
    # by scipy: 0.90 -> 0.0383, 0.95 -> 0.0466, 0.99 -> 0.0645
    assert [verdicts[c].passed for c in (0.90, 0.95, 0.99)] == [True, False, False]
    with pytest.raises(ConfigError, match=r"\[distill\] gate_confidence"):
        evaluate_student(Config(lake=LakeConfig(path=tmp_path / "lake"), distill=DistillConfig(gate_confidence=1.0)),
                         run, student=student)


class _AngleEmbedder:
    """Texts "cos=0.93" embed at that cosine to the teacher's answer "ref" (a unit vector on [1, 0])."""

    def encode(self, texts):
        out = []
        for t in texts:
            c = float(t.split("=")[1].split()[0]) if t.startswith("cos=") else 1.0
            out.append([c, math.sqrt(max(0.0, 1 - c * c))])
        return np.asarray(out)


def test_a_cosine_subtype_passes_only_when_its_t_upper_bound_is_within_the_threshold(tmp_path):
    from costline.distill.evaluate import evaluate_student
    from costline.distill.runs import write_jsonl

    # 30 answers: mean gap 0.03 (under 0.05; 3 answers far off) with a spread that leaves the bound over it
    cosines = [1.0] * 27 + [0.7] * 3
    drift = dataclasses.replace(Config().jobs.drift, metrics={"summary": "cosine"})
    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"), distill=DistillConfig(max_gap=0.05))
    cfg = cfg.replace(jobs=dataclasses.replace(cfg.jobs, drift=drift))
    run, student = _run_with_student(tmp_path / "runs", "c", 30, 0, subtype="summary",
                                     answers=[f"cos={c} in a summary of five words" for c in cosines])
    write_jsonl(run.path("teacher.jsonl"), [{"id": f"c-{i}", "split": "eval", "answer": "ref"} for i in range(30)])
    (v,) = evaluate_student(cfg, run, student=student, embedder=_AngleEmbedder()).subtypes
    gaps = np.array([1 - c for c in cosines])
    upper = gaps.mean() + stats.t.ppf(0.95, 29) * gaps.std(ddof=1) / math.sqrt(30)
    assert v.gap == pytest.approx(0.03, abs=1e-6)
    assert v.gap_ci_high == pytest.approx(upper, abs=1e-6) and upper > 0.05
    assert not v.passed and "Student's t" in v.reason
    # a tighter spread around the same kind of gap passes
    cosines = [0.98] * 30
    run, student = _run_with_student(tmp_path / "runs", "d", 30, 0, subtype="summary",
                                     answers=[f"cos={c} in a summary of five words" for c in cosines])
    write_jsonl(run.path("teacher.jsonl"), [{"id": f"d-{i}", "split": "eval", "answer": "ref"} for i in range(30)])
    (v,) = evaluate_student(cfg, run, student=student, embedder=_AngleEmbedder()).subtypes
    assert v.gap_ci_high == pytest.approx(0.02, abs=1e-6) and v.passed


# -- 3. the split: paraphrases are one cluster, held out or trained on as a whole ---------------------------------

def test_paraphrases_of_one_question_land_on_one_side_of_the_split(tmp_path):
    from lakes import lake_from_plans

    from costline.distill.dataset import export_dataset
    from costline.serving.embedding import Embedder
    from costline.sim.traffic import _FAQ_BANKS

    family = {q: fam for bank in _FAQ_BANKS for fam, (_, paras) in bank.items() for q in paras}
    queries = list(family)
    plans = _served(400)[:len(queries)]
    assert len(plans) == len(queries)
    plans = [dataclasses.replace(p, query=q, subtype="faq") for p, q in zip(plans, queries)]
    cfg = world_config(tmp_path, tenants=("*",), near_duplicate_threshold=0.95, eval_fraction=0.15)
    lake_from_plans(plans, cfg)
    embedder = Embedder()
    ex = export_dataset(cfg, since=SINCE, until=UNTIL, run_id="para", embedder=embedder)
    rows = _rows(ex)
    train = [r["query"] for r in rows if r["split"] == "train"]
    held = [r["query"] for r in rows if r["split"] == "eval"]
    # independently: MiniLM cosines of every held-out question to every trained one, all under 0.80
    sims = np.asarray(embedder.encode(held)) @ np.asarray(embedder.encode(train)).T
    assert sims.max() < 0.80
    # the question families: (the old split held out 11 items, every one with a paraphrase in train) one left,
    # a pair MiniLM puts at 0.69, under pairs of different questions in this bank (up to 0.68 apart)
    leaked = [q for q in held if family[q] in {family[t] for t in train}]
    assert len(leaked) <= 1, leaked
    sp = ex.manifest["split"]["faq"]
    assert sp["max_eval_train_cosine"] == pytest.approx(float(sims.max()), abs=1e-3)
    assert sp["eval_items_near_train"] == 0 and sp["split_again_up_to"] is None
    # the held-out share: 15 % of the subtype as nearly as whole clusters allow, and what the manifest says
    n = len(rows)
    assert len(held) == round(n * 0.15) and sp["eval_share"] == pytest.approx(len(held) / n, abs=1e-4)
    assert ex.counts["faq"] == {"train": len(train), "eval": len(held)}


def test_a_cluster_chained_through_one_template_is_split_again_to_fill_the_hold_out():
    from costline.distill.dataset import _split_subtype

    # 40 conversations on an arc, each at cosine cos(0.07) = 0.9976 to the next: at 0.80 one chain, which no
    # hold-out of 12 % can take whole; split again (0.825, 0.85, ...) until it falls apart
    angles = [0.07 * i for i in range(40)]
    vecs = np.ascontiguousarray([[math.cos(a), math.sin(a), 0.0] for a in angles], dtype=np.float32)
    keys = [f"k{i:02d}" for i in range(40)]
    held, sp = _split_subtype(keys, [1] * 40, vecs, 0.80, 0.12, seed=0)
    assert len(held) == round(40 * 0.12) == 5 and sp["eval"] == 5 and sp["eval_share"] == 0.125
    assert sp["split_again_up_to"] == pytest.approx(1.0)
    # what the manifest reports is true (by numpy): the highest cosine across the split, and how many held-out
    # items have a train item at 0.80 or more - the price of splitting a chain, said rather than hidden
    held_v = vecs[sorted(held)]
    train_v = vecs[[i for i in range(40) if i not in held]]
    cross = held_v @ train_v.T
    assert sp["max_eval_train_cosine"] == pytest.approx(float(cross.max()), abs=1e-4)
    assert sp["eval_items_near_train"] == int((cross.max(axis=1) >= 0.80).sum()) > 0


def test_split_cluster_threshold_is_validated_naming_the_key():
    from costline.distill import validate

    with pytest.raises(ConfigError, match=r"\[distill\] split_cluster_threshold"):
        validate(Config(distill=DistillConfig(split_cluster_threshold=1.5)))
    validate(Config(distill=DistillConfig(split_cluster_threshold=0.0)))  # 0 = off


# -- 4. tenants --------------------------------------------------------------------------------------------------

def test_an_export_of_several_tenants_is_refused_unless_opted_in(tmp_path):
    from lakes import lake_from_plans

    from costline.distill.dataset import export_dataset

    plans = _served(120)
    tenants = Counter(p.tenant for p in plans)
    assert len(tenants) > 1
    cfg = world_config(tmp_path)  # tenants = [] (the default)
    lake_from_plans(plans, cfg)
    with pytest.raises(ExportError, match=r'\[distill\] tenants.*tenants = \["\*"\]') as err:
        export_dataset(cfg, since=SINCE, until=UNTIL, run_id="refused")
    for t in tenants:
        assert t in str(err.value)
    assert not (tmp_path / "lake" / "distill" / "refused").exists()


def test_export_names_each_rows_tenant_counts_them_and_keeps_to_the_chosen_tenants(tmp_path, caplog):
    from lakes import lake_from_plans

    from costline.distill.dataset import export_dataset

    plans = _served(160)
    tenant_of = {p.request_id: p.tenant for p in plans}
    cfg = world_config(tmp_path, tenants=("*",))
    lake_from_plans(plans, cfg)
    with caplog.at_level(logging.WARNING, logger="costline.distill.dataset"):
        ex = export_dataset(cfg, since=SINCE, until=UNTIL, run_id="all")
    rows = _rows(ex)
    assert all(r["tenant"] == tenant_of[r["request_id"]] for r in rows)
    per = Counter((r["tenant"], r["split"]) for r in rows)
    assert ex.manifest["tenants"] == {t: {"train": per[(t, "train")], "eval": per[(t, "eval")]}
                                      for t in sorted({r["tenant"] for r in rows})}
    assert len(ex.manifest["tenants"]) > 1
    assert any("pii_hook is not set" in r.getMessage() for r in caplog.records)

    one = sorted(set(tenant_of.values()))[0]
    caplog.clear()
    cfg = world_config(tmp_path, tenants=(one,), pii_hook="distill_world:pii_hook")
    with caplog.at_level(logging.WARNING, logger="costline.distill.dataset"):
        ex = export_dataset(cfg, since=SINCE, until=UNTIL, run_id="one")
    rows = _rows(ex)
    assert rows and {r["tenant"] for r in rows} == {one}
    assert {r["request_id"] for r in rows} <= {rid for rid, t in tenant_of.items() if t == one}
    assert list(ex.manifest["tenants"]) == [one]
    # eligible counts the chosen tenant's requests only: every one is exported or skipped for a reason
    assert ex.eligible == sum(1 for p in plans if p.tenant == one)
    assert ex.eligible == len(rows) + sum(ex.skipped.values())
    assert not any("pii_hook is not set" in r.getMessage() for r in caplog.records)


def test_a_single_tenant_window_exports_without_opting_in(tmp_path):
    from lakes import lake_from_plans

    from costline.distill.dataset import export_dataset

    plans = [dataclasses.replace(p, tenant="acme") for p in _served(60)]
    cfg = world_config(tmp_path)
    lake_from_plans(plans, cfg)
    ex = export_dataset(cfg, since=SINCE, until=UNTIL, run_id="acme")
    assert {r["tenant"] for r in _rows(ex)} == {"acme"}


def test_tenants_are_validated_naming_the_key():
    from costline.distill import validate

    for bad in (("*", "acme"), ("",)):
        with pytest.raises(ConfigError, match=r"\[distill\] tenants"):
            validate(Config(distill=DistillConfig(tenants=bad)))


# -- 5. exact duplicates: only Unicode, case, whitespace and trailing punctuation are normalised ------------------

MATH = ["What is 7+3?", "What is 7*3?", "What is 7-3?", "What is 7/3?", "Is 5 > 3?", "Is 5 < 3?",
        "Simplify x^2 + x", "Simplify x^2 - x"]
SAME = ["what is 7+3", "WHAT  IS 7+3 ?", "Ｗhat is 7＋3?"]  # case, spaces, trailing "?", full-width (NFKC)


def test_prompts_that_differ_in_an_operator_are_not_duplicates(tmp_path):
    from lakes import lake_from_plans

    from costline.distill.dataset import content_hash

    def h(text):
        return content_hash(None, [{"role": "user", "content": text}])

    assert len({h(q) for q in MATH}) == len(MATH)
    assert {h(q) for q in SAME} == {h("What is 7+3?")}

    from costline.distill.dataset import export_dataset

    plans = _served(200)
    queries = MATH + SAME
    plans = [dataclasses.replace(p, query=queries[i], subtype="math") if i < len(queries) else p
             for i, p in enumerate(plans)]
    cfg = world_config(tmp_path, tenants=("*",))
    lake_from_plans(plans, cfg)
    ex = export_dataset(cfg, since=SINCE, until=UNTIL, run_id="math")
    kept = sorted(r["query"] for r in _rows(ex) if r["subtype"] == "math")
    # every distinct prompt kept once ("What is 7+3?" and its 3 spellings are one)
    assert len(kept) == len(MATH) and set(MATH[1:]) <= set(kept)
    assert len(set(kept) & ({MATH[0]} | set(SAME))) == 1


# -- 6. vLLM's --max-lora-rank ------------------------------------------------------------------------------------

# vLLM LoRAConfig possible_max_ranks: 8, 16, 32, 64, 128, 256, 320, 512 - the smallest one that holds lora_r
@pytest.mark.parametrize("lora_r,rank", [(1, 8), (8, 8), (9, 16), (12, 16), (16, 16), (24, 32), (48, 64),
                                         (100, 128), (256, 256), (257, 320), (321, 512), (512, 512)])
def test_the_vllm_line_uses_a_rank_vllm_accepts(lora_r, rank):
    from costline.distill.promote import vllm_command

    line = vllm_command("/m", "costline-student-lora", Path("/a"), lora_r)
    assert line.endswith(f"--max-lora-rank {rank}")


def test_a_lora_rank_over_vllms_largest_is_refused_naming_the_key():
    from costline.distill import validate

    validate(Config(distill=DistillConfig(lora_r=512)))
    with pytest.raises(ConfigError, match=r"\[distill\] lora_r.*512"):
        validate(Config(distill=DistillConfig(lora_r=513)))
