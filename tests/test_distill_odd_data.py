"""Distillation on realistic odd data: a long shared system prompt must not make every query a "near
duplicate"; the same question under varying system prompts must not land on both sides of the split; teacher
answers that are empty or cut at max_tokens must not train or grade the student; the
ROI prices the teacher's answers at the teacher's price. Expected figures are computed by hand / numpy."""

from __future__ import annotations

import dataclasses
import json
import sys
from datetime import datetime
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from distill_world import labelled_plans, world_config  # noqa: E402

SINCE, UNTIL = datetime(2026, 11, 1), datetime(2026, 11, 2)


def _lake_with_systems(plans, cfg, system_of):
    """Record ``plans`` with a system prompt before the query (``system_of(n)``: the n-th call's prompt)."""
    from lakes import lake_from_plans

    from costline.collectors.recorder import CallHandle

    orig = CallHandle.content
    seen = [0]

    def content(self, inp=None, out=None):
        if inp is not None:
            system = system_of(seen[0])
            seen[0] += 1
            if system:
                inp = [{"role": "system", "content": system}] + list(inp)
        return orig(self, inp, out)

    CallHandle.content = content
    try:
        return lake_from_plans(plans, cfg)
    finally:
        CallHandle.content = orig


def _ok_plans(n):
    return [p for p in labelled_plans(n) if p.calls and not p.calls[-1].error_type]


def _rows(run):
    return [json.loads(line) for f in ("train.jsonl", "eval.jsonl")
            for line in (run.dataset / f).read_text().splitlines()]


LONG_SYSTEM = ("You are the support classifier of an online shop. Read the customer's message carefully, "
               "consider the products we sell, our refund and delivery policies, and answer with one word. ") * 12


@pytest.mark.parametrize("system", [
    LONG_SYSTEM,                # past MiniLM's 256 tokens: every request looked the same
    LONG_SYSTEM[:700],          # shorter, still most of each text
], ids=["long-system-prompt", "medium-system-prompt"])
def test_near_duplicates_are_judged_on_the_conversation_not_on_a_shared_system_prompt(tmp_path, system):
    from costline.distill.dataset import export_dataset
    from costline.serving.embedding import Embedder

    plans = _ok_plans(120)
    embedder = Embedder()
    bare = world_config(tmp_path / "bare", tenants=("*",), near_duplicate_threshold=0.95).replace(capture={"max_chars": 100_000})
    _lake_with_systems(plans, bare, lambda n: None)
    expected = export_dataset(bare, since=SINCE, until=UNTIL, run_id="bare", embedder=embedder)

    cfg = world_config(tmp_path / "long", tenants=("*",), near_duplicate_threshold=0.95).replace(capture={"max_chars": 100_000})
    _lake_with_systems(plans, cfg, lambda n: system)
    ex = export_dataset(cfg, since=SINCE, until=UNTIL, run_id="long", embedder=embedder)
    # the same customer texts: the shared instruction changes nothing about which are near duplicates
    assert ex.skipped.get("near duplicate", 0) == expected.skipped.get("near duplicate", 0)
    assert ex.counts == expected.counts
    assert all(c["eval"] >= 1 for c in ex.counts.values())


def test_the_same_question_under_varying_system_prompts_stays_on_one_side_of_the_split(tmp_path):
    from costline.distill.dataset import export_dataset
    from costline.jobs.scoring import normalize

    base = _ok_plans(160)
    plans = []
    for i, p in enumerate(base):  # every question asked twice, on two days (the date is in the system prompt)
        plans += [p, dataclasses.replace(p, request_id=f"{p.request_id}-again")]
    cfg = world_config(tmp_path, tenants=("*",))  # exact duplicates only (near_duplicate_threshold = 0)
    _lake_with_systems(plans, cfg, lambda n: f"Today is 2026-11-0{1 + n % 2}. Answer with one word.")
    ex = export_dataset(cfg, since=SINCE, until=UNTIL, run_id="dated")
    rows = _rows(ex.run)
    sides: dict[str, set[str]] = {}
    for r in rows:
        sides.setdefault(normalize(r["query"]), set()).add(r["split"])
    leaked = sorted(q for q, s in sides.items() if len(s) > 1)
    assert leaked == [], f"{len(leaked)} questions are both trained on and held out, e.g. {leaked[:2]}"
    assert ex.eval >= 2 and ex.train >= 2


# -- teacher answers that must not train or grade the student ---------------------------------------------

def _mock_teacher(max_tokens, answers):
    """An Anthropic client whose answer depends on the query's last word (``answers[word]``)."""
    import anthropic
    import httpx2 as httpx

    def handler(request):
        body = json.loads(request.content)
        query = body["messages"][-1]["content"]
        word = query.split()[-1].strip(".?!").lower()
        kind = answers.get(word, "ok")
        if kind == "empty":  # only non-text blocks (or none): no text at all
            content, out, stop = [], 0, "end_turn"
        elif kind == "refusal":  # the safety classifier stopped it: a start of an answer, stop_reason refusal
            content, out, stop = [{"type": "text", "text": "The customer"}], 2, "refusal"
        elif kind == "cut":
            content, out, stop = [{"type": "text", "text": "The customer writes about"}], max_tokens, "max_tokens"
        else:
            text = "The last word decides.\nFinal answer: billing" if body.get("system") else "positive"
            content, out, stop = [{"type": "text", "text": text}], 5, "end_turn"
        return httpx.Response(200, json={
            "id": "m", "type": "message", "role": "assistant", "model": "claude-fable-5", "content": content,
            "stop_reason": stop, "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": out}})

    return anthropic.Anthropic(base_url="http://test", api_key="x", max_retries=0,
                               http_client=httpx.Client(transport=httpx.MockTransport(handler)))


def test_empty_and_cut_teacher_answers_neither_train_nor_grade_the_student(tmp_path):
    from lakes import lake_from_plans

    from costline.distill.dataset import export_dataset
    from costline.distill.evaluate import evaluate_student
    from costline.distill.teacher import run_teacher

    cfg = world_config(tmp_path, tenants=("*",), reasoning_subtypes=("topic",), max_tokens=64, min_eval_per_subtype=1)
    lake_from_plans(labelled_plans(200), cfg)
    ex = export_dataset(cfg, since=SINCE, until=UNTIL, run_id="odd")
    items = {it["id"]: it for it in _rows(ex.run)}
    # "awful" sentiment texts get no text, "refund" topics a refusal after two words, "broken" and "courier"
    # ones are cut at max_tokens
    answers = {"awful": "empty", "refund": "refusal", "broken": "cut", "courier": "cut"}
    bad_words = set(answers)
    bad = {i for i, it in items.items() if it["query"].split()[-1].strip(".?!").lower() in bad_words}
    assert bad and len(bad) < len(items)
    t = run_teacher(cfg, ex.run, client=_mock_teacher(64, answers), batch=False)
    rows = [json.loads(line) for line in ex.run.path("teacher.jsonl").read_text().splitlines()]
    assert {r["id"] for r in rows} == set(items) - bad
    assert all(r["answer"] for r in rows)
    assert t.answered == len(items) - len(bad)
    manifest = json.loads(ex.run.path("teacher_manifest.json").read_text())
    kind_of = {i: answers[items[i]["query"].split()[-1].strip(".?!").lower()] for i in bad}
    assert manifest["unusable"] == {"not a message": 0, "refusal": sum(k == "refusal" for k in kind_of.values()),
                                    "cut at max_tokens": sum(k == "cut" for k in kind_of.values()),
                                    "cut at the context window": 0,
                                    "empty": sum(k == "empty" for k in kind_of.values())}
    assert all(manifest["unusable"][k] for k in ("refusal", "cut at max_tokens", "empty"))
    # a student that says nothing cannot score on the items the teacher left empty: they are not graded
    g = evaluate_student(cfg, ex.run, student=lambda qs: ["" for _ in qs])
    assert all(v.student_score == 0.0 for v in g.subtypes if v.n)
    assert not g.passed


def test_a_subtype_scored_by_an_llm_judge_is_refused_before_the_student_answers(tmp_path):
    """The drift job can score a subtype with an LLM judge; the gate cannot: it says so, naming the subtype, before
    the student is asked anything (it used to fail after generating every answer, saying 'run the job with a
    teacher client')."""
    import dataclasses

    from lakes import lake_from_plans

    from costline.distill.dataset import export_dataset
    from costline.distill.errors import DistillError
    from costline.distill.evaluate import evaluate_student
    from costline.distill.teacher import run_teacher

    cfg = world_config(tmp_path, tenants=("*",), min_eval_per_subtype=1)
    cfg = cfg.replace(jobs=dataclasses.replace(cfg.jobs, drift=dataclasses.replace(
        cfg.jobs.drift, metrics={**cfg.jobs.drift.metrics, "sentiment": "judge"})))
    lake_from_plans(labelled_plans(60), cfg)
    ex = export_dataset(cfg, since=SINCE, until=UNTIL, run_id="judged")
    run_teacher(cfg, ex.run, client=_mock_teacher(64, {}), batch=False)
    asked: list[str] = []
    with pytest.raises(DistillError, match="subtypes sentiment are scored by an LLM judge"):
        evaluate_student(cfg, ex.run, student=lambda qs: asked.extend(qs) or ["" for _ in qs])
    assert asked == []


# -- ROI ---------------------------------------------------------------------------------------------------

def test_roi_prices_the_teachers_answers_at_the_teacher_models_batch_price(tmp_path):
    from lakes import lake_from_plans

    from costline.distill.roi import compute_roi
    from costline.sim.traffic import CallPlan

    haiku = CallPlan("budget", "anthropic", "claude-haiku-4-5", input_tokens=1000, output_tokens=100)
    cfg = world_config(tmp_path, tenants=("*",), sample_size=100, train_gpu_hours=2.0, train_gpu_usd_per_hour=3.0)
    plans = [dataclasses.replace(p, calls=(haiku,), lookup=None, served_by="budget", routed_tier="budget",
                                 success=True) for p in labelled_plans(300)]
    lake_from_plans(plans, cfg)
    r = compute_roi(cfg, since=SINCE, until=UNTIL)
    served = (1000 * 0.80 + 100 * 4.0) / 1e6           # what the API charged per request (Haiku)
    teacher = (1000 * 10.0 + 100 * 50.0) / 1e6 * 0.5    # the frontier teacher (claude-fable-5), batch price
    assert r.api_cost_per_request == pytest.approx(served)
    assert r.teacher_cost_usd == pytest.approx(100 * teacher)
    distill = 2.0 * 3.0 + 100 * teacher
    assert r.distill_cost_usd == pytest.approx(distill)
    assert r.break_even_requests_per_day == pytest.approx((2.74 * 24 + distill / 30.0) / served)
