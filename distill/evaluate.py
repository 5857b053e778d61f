"""`costline distill eval` and `gate`: the student answers the held-out set, scored per subtype.

Scoring and statistics are the drift job's: the metric of a subtype is ``[jobs.drift.metrics]``
(:func:`costline.jobs.scoring.metric_for`, e.g. exact match for classification, MiniLM cosine for
free text), scored by :class:`~costline.jobs.scoring.Scorer` against the teacher's final answer;
each subtype is judged by :func:`costline.jobs.drift.assess_subtypes` (mean gap, bootstrap CI,
threshold ``[distill.thresholds]`` else ``[distill] max_gap``). The gate passes a subtype when its
mean gap is within its threshold, its CI does not lie wholly above it, and it has at least
``min_eval_per_subtype`` held-out items; the run passes only when **every** subtype passes.
Results go to ``eval.json`` and the lake's ``distill_runs`` / ``distill_items``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from costline.distill.errors import DistillError
from costline.distill.runs import DistillRun, read_jsonl, write_json

__all__ = ["evaluate_student", "gate_run", "GateResult", "SubtypeVerdict"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SubtypeVerdict:
    subtype: str
    task_type: str
    n: int
    student_score: float
    teacher_score: float
    gap: float
    gap_ci_low: float
    gap_ci_high: float
    threshold: float
    passed: bool
    reason: str


@dataclass
class GateResult:
    run_id: str
    passed: bool
    subtypes: list[SubtypeVerdict] = field(default_factory=list)

    @property
    def failing(self) -> list[str]:
        return [s.subtype for s in self.subtypes if not s.passed]

    @property
    def task_types(self) -> list[str]:
        """Task types all of whose evaluated subtypes passed."""
        by: dict[str, bool] = {}
        for s in self.subtypes:
            by[s.task_type] = by.get(s.task_type, True) and s.passed
        return sorted(t for t, ok in by.items() if ok)

    @property
    def passed_subtypes(self) -> dict[str, list[str]]:
        """Per task type, the evaluated subtypes that passed (what promote gates to the student)."""
        by: dict[str, set[str]] = {}
        for s in self.subtypes:
            if s.passed:
                by.setdefault(s.task_type, set()).add(s.subtype)
        return {t: sorted(subs) for t, subs in sorted(by.items())}

    def describe(self) -> str:
        if self.passed:
            return f"run {self.run_id} PASSED the gate: every subtype ({', '.join(s.subtype for s in self.subtypes)})"
        return (f"run {self.run_id} FAILED the gate: failing subtypes "
                + "; ".join(f"{s.subtype} ({s.reason})" for s in self.subtypes if not s.passed))


def evaluate_student(
    config: Any,
    run: DistillRun,
    *,
    student: Callable[[list[str]], list[str]] | None = None,
    embedder: Any = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> GateResult:
    """Score the run's adapter on its eval split; writes ``eval.json`` and the lake views' rows.

    ``student(prompts) -> answers`` replaces the local adapter (e.g. a served one); by default the
    base model + ``adapter/`` answer through transformers.
    """
    from costline.distill import validate
    from costline.distill.model import format_prompt
    from costline.distill.store import write_rows
    from costline.distill.teacher import split_answer
    from costline.jobs.drift import SubtypeScores, assess_subtypes
    from costline.jobs.scoring import ScoreRequest, Scorer, metric_for
    from costline.timeutil import utc_naive

    validate(config)
    cfg, dcfg = config.distill, config.jobs.drift
    tm = run.read("adapter/training_manifest.json", "train") if student is None else {}
    teacher = {r["id"]: r for r in read_jsonl(run.need("teacher.jsonl", "teacher")) if r["split"] == "eval"}
    items = [it for it in read_jsonl(run.dataset / "eval.jsonl") if it["id"] in teacher]
    judged = sorted({it["subtype"] for it in items
                     if metric_for(it["subtype"], it["task_type"], dcfg.metrics, dcfg.default_metric) == "judge"})
    if judged:  # before the student answers: the gate scores with exact match or MiniLM cosine only
        raise DistillError(f"subtypes {', '.join(judged)} are scored by an LLM judge ([jobs.drift.metrics]), which "
                           "the distillation gate does not run: set them to \"exact\" or \"cosine\" for the gate")
    if student is None:
        from costline.distill.model import generate, load_student, set_threads

        set_threads(cfg.torch_threads)
        tok, model = load_student(tm["base_model"], run.adapter, device=cfg.device)
        prompts = [format_prompt(tok, it.get("system"), it["messages"]) for it in items]
        answers = [a for a, _, _ in generate(tok, model, prompts, max_new_tokens=cfg.max_new_tokens)]
    else:
        answers = list(student([str(it["query"]) for it in items]))
    finals = [split_answer(a, cfg.final_answer_marker)[1] if it.get("reasoning") else a.strip()
              for it, a in zip(items, answers)]
    reqs = [ScoreRequest(it["id"], metric_for(it["subtype"], it["task_type"], dcfg.metrics, dcfg.default_metric),
                         it["query"], f, teacher[it["id"]]["answer"]) for it, f in zip(items, finals)]
    scores = Scorer(answer_pattern=dcfg.answer_pattern, embedder=embedder).score(reqs)
    per: dict[str, list[tuple[float, float]]] = {}
    for it, sc in zip(items, scores):
        per.setdefault(it["subtype"], []).append(sc)
    current = {k: SubtypeScores.of([s for s, _ in v], [t for _, t in v]) for k, v in per.items()}
    gate_cfg = dataclasses.replace(dcfg, thresholds=dict(cfg.thresholds), max_gap=cfg.max_gap)
    task_of = {it["subtype"]: it["task_type"] for it in items}
    verdicts = []
    for a in assess_subtypes(current, gate_cfg):
        reasons = []
        if a.gap > a.threshold:
            reasons.append(f"gap {a.gap:.3f} over its threshold {a.threshold:.3f}")
        elif a.flagged:
            reasons.append(a.reason)
        if a.n < cfg.min_eval_per_subtype:
            reasons.append(f"only {a.n} held-out items (min_eval_per_subtype {cfg.min_eval_per_subtype})")
        verdicts.append(SubtypeVerdict(a.subtype, task_of.get(a.subtype) or "", a.n, a.student_score,
                                       a.teacher_score, a.gap, a.gap_ci_low, a.gap_ci_high, a.threshold,
                                       not reasons, "; ".join(reasons) or "passed"))
    missing = set(run.read("dataset/manifest.json", "export")["counts"]) - {v.subtype for v in verdicts}
    for sub in sorted(missing):  # exported but nothing to evaluate: not proven, so not passed
        verdicts.append(SubtypeVerdict(sub, "", 0, float("nan"), float("nan"), float("nan"), float("nan"),
                                       float("nan"), cfg.thresholds.get(sub, cfg.max_gap), False,
                                       "no held-out items with a teacher answer"))
    result = GateResult(run.run_id, bool(verdicts) and all(v.passed for v in verdicts), verdicts)
    finished = utc_naive(now())
    teacher_cost = 0.0
    if run.path("teacher_manifest.json").exists():
        teacher_cost = float(run.read("teacher_manifest.json", "teacher").get("cost_usd") or 0.0)
    write_rows(config, "distill_items", run.run_id, [
        {"run_id": run.run_id, "item_id": it["id"], "request_id": it["request_id"], "task_type": it["task_type"],
         "subtype": it["subtype"], "metric": r.metric, "query": it["query"], "student_answer": f,
         "teacher_answer": r.reference, "student_score": s, "teacher_score": t, "gap": t - s,
         "content_hash": it["content_hash"]} for it, f, r, (s, t) in zip(items, finals, reqs, scores)])
    metric_of = {it["subtype"]: r.metric for it, r in zip(items, reqs)}
    write_rows(config, "distill_runs", run.run_id, [
        {"run_id": run.run_id, "finished_at": finished, "task_type": v.task_type, "subtype": v.subtype,
         "metric": metric_of.get(v.subtype), "n": v.n, "student_score": v.student_score,
         "teacher_score": v.teacher_score, "gap": v.gap, "gap_ci_low": v.gap_ci_low, "gap_ci_high": v.gap_ci_high,
         "threshold": v.threshold, "passed": v.passed, "reason": v.reason, "base_model": tm.get("base_model"),
         "adapter_path": str(run.adapter) if tm else None, "train_examples": tm.get("examples"),
         "final_loss": tm.get("final_loss"), "train_seconds": tm.get("train_seconds"),
         "teacher_cost_usd": teacher_cost} for v in verdicts])
    write_json(run.path("eval.json"), {"run_id": run.run_id, "finished_at": finished.isoformat(),
                                       "passed": result.passed, "subtypes": [dataclasses.asdict(v) for v in verdicts]})
    return result


def gate_run(run: DistillRun) -> GateResult:
    """The gate's verdict on an evaluated run (``gate.json``): every subtype must pass."""
    doc = run.read("eval.json", "eval")
    verdicts = [SubtypeVerdict(**v) for v in doc["subtypes"]]
    result = GateResult(run.run_id, bool(verdicts) and all(v.passed for v in verdicts), verdicts)
    write_json(run.path("gate.json"), {"run_id": run.run_id, "passed": result.passed, "failing": result.failing,
                                       "task_types": result.task_types,
                                       "subtypes": {v.subtype: v.passed for v in verdicts}})
    return result
