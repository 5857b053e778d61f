"""`costline distill teacher`: the teacher tier answers every exported item, once.

Reuses the drift job's :class:`~costline.jobs.teacher.Regenerator`: Message Batches at the batch
price (``[distill] batch``), falling back to synchronous calls when the API refuses batches; a
per-run SQLite checkpoint (``teacher.sqlite``) so a crashed run resumes without paying twice
(deterministic ``custom_id`` / ``Idempotency-Key`` per item, batch ids saved before the first poll).

Reasoning subtypes get the chain-of-thought prompt (``[distill] cot_prompt``): the teacher reasons,
then writes the final answer after ``final_answer_marker``; both are kept apart, so the student is
trained on the reasoning and scored on the answer. An answer that is no answer
(:func:`costline.jobs.teacher.unusable_reason`, shared with the drift and shadow jobs: not a Messages
API answer, a refusal — by its stop reason, whatever text came before it —, cut at ``max_tokens`` or at
the context window — by its stop reason or its output tokens —, or no final answer) is paid for but
left out of ``teacher.jsonl`` (counted as ``unusable`` in ``teacher_manifest.json``): it would teach
the student to refuse or stop short, and grade it on nothing. Each answer paid for is recorded as a model-call span through costline's
:class:`~costline.collectors.Recorder` (cost, tokens, batch flag), so the
distillation's API cost lands in the lake like any other call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from costline.distill.runs import DistillRun, read_jsonl, sha256_file, write_json, write_jsonl
from costline.jobs.teacher import UNUSABLE as _JOBS_UNUSABLE
from costline.jobs.teacher import unusable_reason as _jobs_unusable_reason

__all__ = ["TeacherRun", "run_teacher", "split_answer", "teacher_requests", "unusable_reason", "UNUSABLE"]

log = logging.getLogger(__name__)


def split_answer(text: str, marker: str) -> tuple[str, str]:
    """(reasoning, final answer): the text after the last ``marker``, else all of it."""
    low, m = text.lower(), marker.lower()
    at = low.rfind(m)
    if at < 0:
        return "", text.strip()
    return text[:at].strip(), text[at + len(marker):].strip()


def teacher_requests(items: Sequence[dict[str, Any]], model: str, cfg: Any) -> list[Any]:
    from costline.jobs.teacher import AnswerRequest

    out = []
    for it in items:
        system = it.get("system")
        if it.get("reasoning"):
            system = f"{system}\n\n{cfg.cot_prompt}" if system else cfg.cot_prompt
        out.append(AnswerRequest(it["id"], model, tuple(it["messages"]), system=system, max_tokens=cfg.max_tokens,
                                 purpose="distill-teacher"))
    return out


@dataclass
class TeacherRun:
    run: DistillRun
    answered: int
    sent: int
    resumed: int
    cost_usd: float
    batch: bool
    #: Answers paid for but left out of training and eval, by reason (see :data:`UNUSABLE`).
    unusable: dict[str, int] = field(default_factory=dict)


#: Why a teacher answer trains and grades nothing (:data:`costline.jobs.teacher.UNUSABLE`): not a message, a
#: refusal, cut at ``[distill] max_tokens`` (a reasoning answer cut short has no final answer) or at the
#: context window, or no (final) text.
UNUSABLE = _JOBS_UNUSABLE


def unusable_reason(answer: Any, final: str, cfg: Any) -> str | None:
    """Which of :data:`UNUSABLE` ``answer`` is (``final``: its final answer), or None when it can teach."""
    return _jobs_unusable_reason(answer, cfg.max_tokens, final)


def _span_recorder(recorder: Any, tier: str) -> Callable[[Any], None] | None:
    if recorder is None:
        return None

    def on_answer(a: Any) -> None:
        try:
            with recorder.call("anthropic", a.model, tier, cost_usd=a.cost_usd, batch=a.batch) as call:
                call.usage(input_tokens=a.input_tokens, output_tokens=a.output_tokens,
                           cache_read_tokens=a.cache_read_tokens, cache_creation_tokens=a.cache_creation_tokens)
                call.response(model=a.model, finish_reasons=["end_turn"])
        except Exception:  # noqa: BLE001 - telemetry never stops the run
            log.exception("could not record a teacher span")

    return on_answer


def run_teacher(
    config: Any,
    run: DistillRun,
    *,
    client: Any = None,
    recorder: Any = None,
    batch: bool | None = None,
    sleep: Callable[[float], None] | None = None,
    show_progress: bool = False,
    on_answer: Callable[[Any], None] | None = None,
) -> TeacherRun:
    """Answer the run's train and eval items with the teacher tier; writes ``teacher.jsonl``."""
    import anthropic

    from costline.distill import validate
    from costline.jobs.drift import teacher_model
    from costline.jobs.teacher import Checkpoint, Regenerator, anthropic_client
    from costline.pricing import PricingTable

    validate(config)
    cfg, tcfg = config.distill, config.jobs.teacher
    manifest = run.read("dataset/manifest.json", "export")
    items = read_jsonl(run.dataset / "train.jsonl") + read_jsonl(run.dataset / "eval.jsonl")
    model = cfg.teacher_model or teacher_model(config, cfg.teacher_tier)
    reqs = teacher_requests(items, model, cfg)
    use_batch = cfg.batch if batch is None else batch
    spans = _span_recorder(recorder, cfg.teacher_tier)

    def answered(a: Any) -> None:
        if spans is not None:
            spans(a)
        if on_answer is not None:
            on_answer(a)

    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(reqs), unit="answer", desc=f"teacher {run.run_id}", leave=False)
    with Checkpoint(run.path("teacher.sqlite")) as ckpt:
        ckpt.set_meta("run_id", run.run_id)
        client = client if client is not None else anthropic_client(config)
        kw: dict[str, Any] = {"progress": bar.update if bar else None, "on_answer": answered}
        if sleep is not None:
            kw["sleep"] = sleep

        def regen(as_batch: bool) -> Regenerator:
            return Regenerator(client, ckpt, pricing=PricingTable(config.pricing), concurrency=tcfg.concurrency,
                               batch=as_batch, poll_interval_s=tcfg.poll_interval_s,
                               batch_timeout_s=tcfg.batch_timeout_s, max_error_rate=tcfg.max_error_rate, **kw)

        try:
            res = regen(use_batch).run(reqs)
        except (anthropic.NotFoundError, anthropic.PermissionDeniedError) as exc:
            if not use_batch:
                raise
            log.warning("the API refused message batches (%s): answering synchronously", exc)
            use_batch = False
            res = regen(False).run(reqs)
        if bar is not None:
            bar.close()
        rows = []
        unusable = dict.fromkeys(UNUSABLE, 0)
        for it, r in zip(items, reqs):
            a = res.answers.get(r.key)
            if a is None:
                continue
            reasoning, final = split_answer(a.text, cfg.final_answer_marker) if it.get("reasoning") else ("", a.text.strip())
            why = unusable_reason(a, final, cfg)
            if why:  # paid for, but it would teach the student to stop short (and grade it on nothing)
                unusable[why] += 1
                continue
            rows.append({"id": it["id"], "split": it["split"], "subtype": it["subtype"], "task_type": it["task_type"],
                         "key": r.key, "text": a.text, "reasoning": reasoning, "answer": final, "model": a.model,
                         "cost_usd": a.cost_usd, "batch": a.batch})
        cost = ckpt.cost_usd()
    write_jsonl(run.path("teacher.jsonl"), rows)
    write_json(run.path("teacher_manifest.json"), {
        "run_id": run.run_id, "model": model, "tier": cfg.teacher_tier, "batch": use_batch, "answers": len(rows),
        "failed": len(res.failed), "unusable": unusable, "cost_usd": cost, "dataset_manifest": sha256_file(run.dataset / "manifest.json"),
        "dataset_files": manifest["files"], "file": sha256_file(run.path("teacher.jsonl"))})
    if any(unusable.values()):
        from costline.jobs.teacher import describe_unusable

        log.warning("teacher %s: %s answers left out of training and eval: %s", run.run_id, sum(unusable.values()),
                    describe_unusable(unusable, max_tokens="[distill] max_tokens"))
    return TeacherRun(run, len(rows), res.sent, res.resumed, cost, use_batch, unusable)
