"""`costline distill eval` and `gate`: the student answers the held-out set, scored per (task type, subtype).

Every verdict is of one **(task type, subtype) pair**: two task types that share a subtype name (or both
leave it unset, ``(none)``) are judged apart, each with its own metric, items, bound and verdict, and a
pair the export holds without a held-out item gets its own "no held-out items" verdict. "Subtype" below
means such a pair; ``[distill.thresholds]`` and ``min_eval_per_subtype`` apply to each pair.

Scoring is the drift job's: the metric of a subtype is ``[jobs.drift.metrics]``
(:func:`costline.jobs.scoring.metric_for`, e.g. exact match for classification, the JSON fields for
extraction, MiniLM cosine for free text), scored by :class:`~costline.jobs.scoring.Scorer` against the
teacher's final answer.

The gate is a non-inferiority test per subtype: it passes a subtype only when the **one-sided upper
confidence bound** of its gap (teacher score - student score) is within its threshold
(``[distill.thresholds]``, else ``[distill] max_gap``), at ``[distill] gate_confidence`` (0.95):

* exact match (0/1 per item): the gap is the share of items where the student disagrees with the
  teacher, and its bound the exact Clopper-Pearson bound, ``Beta.ppf(confidence, k + 1, n - k)`` for
  ``k`` disagreements of ``n`` (1 when ``k = n``). A perfect student needs ``n >= ln(1 - c) / ln(1 - t)``
  items to pass: 59 at threshold 0.05 and 95 %, 29 at 0.10; a subtype with fewer fails "for lack of
  items", and says so, not for its quality;
* cosine and json (a score in [0, 1] per item): the mean gap plus Student's t,
  ``mean + t.ppf(c, n - 1) * sd / sqrt(n)``.

The level is per subtype, without a correction for the number of subtypes: the run passes (and can be
promoted) only when **every** subtype passes, an intersection-union test, so the chance that a run with
any subtype truly over its threshold passes is at most ``1 - c`` whatever the number of subtypes.
A subtype also needs at least ``min_eval_per_subtype`` held-out items. ``gap_ci_low`` / ``gap_ci_high``
are the two-sided ``2c - 1`` interval (90 % at 0.95), whose upper end is the bound the gate uses.
Results go to ``eval.json`` and the lake's ``distill_runs`` / ``distill_items``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from costline.distill.errors import DistillError
from costline.distill.runs import DistillRun, read_jsonl, write_json

__all__ = ["evaluate_student", "gate_run", "GateResult", "SubtypeVerdict", "GapBound", "gap_bound",
           "items_needed"]

log = logging.getLogger(__name__)

#: ``eval.json``'s verdicts are one per this pair (an ``eval.json`` without ``keyed_by`` predates it).
EVAL_KEYED_BY = ("task_type", "subtype")


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
        """The subtype names of the failing pairs (see :attr:`failing_pairs`, which names their task types)."""
        return [s.subtype for s in self.subtypes if not s.passed]

    @property
    def failing_pairs(self) -> list[tuple[str, str]]:
        """``(task_type, subtype)`` of each failing verdict."""
        return [(s.task_type, s.subtype) for s in self.subtypes if not s.passed]

    @property
    def task_types(self) -> list[str]:
        """Task types all of whose evaluated subtypes passed."""
        by: dict[str, bool] = {}
        for s in self.subtypes:
            by[s.task_type] = by.get(s.task_type, True) and s.passed
        return sorted(t for t, ok in by.items() if ok)

    @property
    def passed_subtypes(self) -> dict[str, list[str]]:
        """Per task type, the subtypes whose own (task type, subtype) verdict passed (what promote gates)."""
        by: dict[str, set[str]] = {}
        for s in self.subtypes:
            if s.passed and s.task_type:
                by.setdefault(s.task_type, set()).add(s.subtype)
        return {t: sorted(subs) for t, subs in sorted(by.items())}

    def describe(self) -> str:
        from costline.distill.dataset import pair_label

        if self.passed:
            return (f"run {self.run_id} PASSED the gate: every task type/subtype "
                    f"({', '.join(pair_label(s.task_type, s.subtype) for s in self.subtypes)})")
        return (f"run {self.run_id} FAILED the gate: failing task type/subtype "
                + "; ".join(f"{pair_label(s.task_type, s.subtype)} ({s.reason})"
                            for s in self.subtypes if not s.passed))


@dataclass(frozen=True)
class GapBound:
    """A subtype's gap and its confidence bounds (see the module docstring)."""

    n: int
    gap: float
    low: float
    high: float
    #: "Clopper-Pearson" (exact or json: ``disagreements`` of ``n``) or "Student's t" (cosine).
    method: str
    disagreements: int | None = None


#: The metrics whose score is 0 or 1 (an answer agrees with the teacher's or not): a gap is a share of answers.
_BINARY = frozenset({"exact", "json"})


def gap_bound(metric: str, gaps: Any, confidence: float) -> GapBound:
    """The gap of one subtype's items and its bounds: ``high`` is the one-sided ``confidence`` upper bound,
    ``low`` the matching lower one (together a two-sided ``2 * confidence - 1`` interval)."""
    import numpy as np
    from scipy import stats

    d = np.asarray(gaps, dtype=np.float64)
    d = d[np.isfinite(d)]
    n = int(len(d))
    if n == 0:
        nan = float("nan")
        return GapBound(0, nan, nan, nan, "none")
    if metric in _BINARY:
        k = int(np.count_nonzero(d > 0.5))  # the teacher's answer scores 1, the student's 0 or 1
        high = 1.0 if k == n else float(stats.beta.ppf(confidence, k + 1, n - k))
        low = 0.0 if k == 0 else float(stats.beta.ppf(1.0 - confidence, k, n - k + 1))
        return GapBound(n, k / n, low, high, "Clopper-Pearson", k)
    mean = float(d.mean())
    if n < 2:
        return GapBound(n, mean, -math.inf, math.inf, "Student's t")
    half = float(stats.t.ppf(confidence, n - 1)) * float(d.std(ddof=1)) / math.sqrt(n)
    return GapBound(n, mean, mean - half, mean + half, "Student's t")


def items_needed(threshold: float, confidence: float) -> int:
    """Held-out items a perfect student (no disagreement) needs to pass an exact-match subtype: the
    smallest ``n`` with ``1 - (1 - confidence) ** (1 / n) <= threshold`` (its Clopper-Pearson bound)."""
    if threshold >= 1:
        return 1
    if threshold <= 0:
        return 0  # never: no finite n bounds the rate at 0
    n = max(1, math.ceil(math.log(1.0 - confidence) / math.log(1.0 - threshold)))
    while n > 1 and 1.0 - (1.0 - confidence) ** (1.0 / (n - 1)) <= threshold:  # guard the float ceil
        n -= 1
    while 1.0 - (1.0 - confidence) ** (1.0 / n) > threshold:
        n += 1
    return n


def _verdict_reasons(b: GapBound, metric: str, threshold: float, confidence: float, min_n: int) -> list[str]:
    level = f"one-sided {confidence * 100:g} %"
    reasons = []
    if b.n < min_n:
        reasons.append(f"only {b.n} held-out items (min_eval_per_subtype {min_n})")
    if not b.high <= threshold:
        if metric in _BINARY:
            need = items_needed(threshold, confidence)
            what = (f"{b.disagreements} of {b.n} answers disagree with the teacher: gap {b.gap:.3f}, its {level} "
                    f"upper bound {b.high:.3f} (Clopper-Pearson) is over its threshold {threshold:.3f}")
            if threshold <= 0:
                what += " (a threshold of 0 cannot be shown on a sample: raise it)"
            elif b.n < need:
                what += (f"; too few held-out items to show it: even a perfect student needs {need} at this threshold "
                         f"and level, this subtype has {b.n} (export more: [distill] sample_size, eval_fraction)")
            reasons.append(what)
        else:
            reasons.append(f"gap {b.gap:.3f}, its {level} upper bound {b.high:.3f} (Student's t over {b.n} items) is "
                           f"over its threshold {threshold:.3f}")
    return reasons


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
    from costline.distill.dataset import manifest_pairs, pair_label
    from costline.distill.model import format_prompt
    from costline.distill.store import write_rows
    from costline.distill.teacher import split_answer
    from costline.jobs.scoring import ScoreRequest, Scorer, metric_for
    from costline.timeutil import utc_naive

    validate(config)
    cfg, dcfg = config.distill, config.jobs.drift
    tm = run.read("adapter/training_manifest.json", "train") if student is None else {}
    teacher = {r["id"]: r for r in read_jsonl(run.need("teacher.jsonl", "teacher")) if r["split"] == "eval"}
    items = [it for it in read_jsonl(run.dataset / "eval.jsonl") if it["id"] in teacher]
    judged = sorted({it["subtype"] for it in items  # by subtype name: how [jobs.drift.metrics] keys them
                     if metric_for(it["subtype"], it["task_type"], dcfg.metrics, dcfg.default_metric) == "judge"})
    if judged:  # before the student answers: the gate scores with exact match or MiniLM cosine only
        raise DistillError(f"subtypes {', '.join(judged)} are scored by an LLM judge ([jobs.drift.metrics]), which "
                           "the distillation gate does not run: set them to \"exact\", \"json\" or \"cosine\" for "
                           "the gate")
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
                         it["query"], f, teacher[it["id"]]["answer"], subtype=it["subtype"], task_type=it["task_type"])
            for it, f in zip(items, finals)]
    scores = Scorer(answer_pattern=dcfg.answer_pattern, answer_patterns=dcfg.answer_patterns,
                    embedder=embedder, cosine_checks=dcfg.cosine_checks).score(reqs)
    # one verdict per (task type, subtype): two task types sharing a subtype name are two strata, two metrics
    per: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for it, sc in zip(items, scores):
        per.setdefault((it["task_type"], it["subtype"]), []).append(sc)
    metric_of = {(it["task_type"], it["subtype"]): r.metric for it, r in zip(items, reqs)}
    verdicts = []
    for tt, sub in sorted(per):
        student_s = [s for s, t in per[(tt, sub)] if math.isfinite(s) and math.isfinite(t)]
        teacher_s = [t for s, t in per[(tt, sub)] if math.isfinite(s) and math.isfinite(t)]
        if not student_s:
            continue
        metric = metric_of[(tt, sub)]
        thr = float(cfg.thresholds.get(sub, cfg.max_gap))
        b = gap_bound(metric, [t - s for s, t in zip(student_s, teacher_s)], cfg.gate_confidence)
        reasons = _verdict_reasons(b, metric, thr, cfg.gate_confidence, cfg.min_eval_per_subtype)
        verdicts.append(SubtypeVerdict(sub, tt, b.n, sum(student_s) / b.n, sum(teacher_s) / b.n,
                                       b.gap, b.low, b.high, thr, not reasons, "; ".join(reasons) or "passed"))
    manifest = run.read("dataset/manifest.json", "export")
    rows = [] if "pairs" in manifest else _dataset_rows(run)  # an older manifest: its pairs from its rows
    missing = set(manifest_pairs(manifest, rows)) - {(v.task_type, v.subtype) for v in verdicts}
    for tt, sub in sorted(missing):  # exported but nothing to evaluate: not proven, so not passed
        verdicts.append(SubtypeVerdict(sub, tt, 0, float("nan"), float("nan"), float("nan"), float("nan"),
                                       float("nan"), cfg.thresholds.get(sub, cfg.max_gap), False,
                                       f"no held-out items with a teacher answer for {pair_label(tt, sub)}"))
    result = GateResult(run.run_id, bool(verdicts) and all(v.passed for v in verdicts), verdicts)
    finished = utc_naive(now())
    teacher_cost = 0.0
    if run.path("teacher_manifest.json").exists():
        teacher_cost = float(run.read("teacher_manifest.json", "teacher").get("cost_usd") or 0.0)
    write_rows(config, "distill_items", run.run_id, [
        {"run_id": run.run_id, "item_id": it["id"], "request_id": it["request_id"], "task_type": it["task_type"],
         "subtype": it["subtype"], "metric": r.metric, "query": it["query"], "student_answer": f,
         "teacher_answer": r.reference, "student_score": s, "teacher_score": t, "gap": t - s,
         "content_hash": it["content_hash"], "tenant": it.get("tenant")}
        for it, f, r, (s, t) in zip(items, finals, reqs, scores)])
    write_rows(config, "distill_runs", run.run_id, [
        {"run_id": run.run_id, "finished_at": finished, "task_type": v.task_type, "subtype": v.subtype,
         "metric": metric_of.get((v.task_type, v.subtype)), "n": v.n, "student_score": v.student_score,
         "teacher_score": v.teacher_score, "gap": v.gap, "gap_ci_low": v.gap_ci_low, "gap_ci_high": v.gap_ci_high,
         "threshold": v.threshold, "passed": v.passed, "reason": v.reason, "base_model": tm.get("base_model"),
         "adapter_path": str(run.adapter) if tm else None, "train_examples": tm.get("examples"),
         "final_loss": tm.get("final_loss"), "train_seconds": tm.get("train_seconds"),
         "teacher_cost_usd": teacher_cost} for v in verdicts])
    write_json(run.path("eval.json"), {"run_id": run.run_id, "finished_at": finished.isoformat(),
                                       "keyed_by": list(EVAL_KEYED_BY), "passed": result.passed,
                                       "subtypes": [dataclasses.asdict(v) for v in verdicts]})
    return result


def _dataset_rows(run: DistillRun) -> list[dict[str, Any]]:
    return [r for f in ("train.jsonl", "eval.jsonl") if (run.dataset / f).exists() for r in read_jsonl(run.dataset / f)]


def _shared_subtypes(run: DistillRun) -> dict[str, list[str]]:
    """Subtype names the run's export holds under more than one task type (``{}`` without an export)."""
    from costline.distill.dataset import manifest_pairs

    if not run.path("dataset/manifest.json").exists():
        return {}
    manifest = run.read("dataset/manifest.json", "export")
    rows = [] if "pairs" in manifest else _dataset_rows(run)
    by: dict[str, list[str]] = {}
    for tt, sub in manifest_pairs(manifest, rows):
        by.setdefault(sub, []).append(tt)
    return {sub: tts for sub, tts in sorted(by.items()) if len(tts) > 1}


def gate_run(run: DistillRun) -> GateResult:
    """The gate's verdict on an evaluated run (``gate.json``): every (task type, subtype) must pass.

    An ``eval.json`` written before verdicts were per (task type, subtype) is read as it is when its
    export holds each subtype name under one task type (its verdicts were per pair already), and refused
    when one is shared: that evaluation judged the task types' items together."""
    doc = run.read("eval.json", "eval")
    if tuple(doc.get("keyed_by") or ()) != EVAL_KEYED_BY:
        shared = _shared_subtypes(run)
        if shared:
            what = "; ".join(f"{sub} under {', '.join(tts)}" for sub, tts in shared.items())
            raise DistillError(f"eval.json of run {run.run_id} was written by an older costline that judged a "
                               f"subtype's items of every task type together, and this run shares subtypes across "
                               f"task types ({what}): re-run `costline distill eval --run {run.run_id}` to judge "
                               "each (task type, subtype) apart, then gate")
    verdicts = [SubtypeVerdict(**v) for v in doc["subtypes"]]
    result = GateResult(run.run_id, bool(verdicts) and all(v.passed for v in verdicts), verdicts)
    by: dict[str, dict[str, bool]] = {}
    for v in verdicts:
        by.setdefault(v.task_type, {})[v.subtype] = v.passed
    write_json(run.path("gate.json"), {
        "run_id": run.run_id, "passed": result.passed, "keyed_by": list(EVAL_KEYED_BY),
        "failing": [{"task_type": t, "subtype": s} for t, s in result.failing_pairs],
        "task_types": result.task_types, "subtypes": {t: dict(sorted(s.items())) for t, s in sorted(by.items())}})
    return result
