"""costline.distill — from production traffic to a gated, served student (see ``docs/distill.md``).

``export`` (lake → deduplicated, stratified dataset with a held-out eval set) → ``teacher``
(Message Batches, resumable) → ``train`` (LoRA SFT) → ``eval`` (drift's metrics per subtype) →
``gate`` → ``promote``. Importing this package is cheap (settings and errors only); training and
serving need the ``distill`` extra.
"""

from __future__ import annotations

from typing import Any

from costline.distill.errors import DistillError, ExportError, GateFailedError, MissingExtraError, RunStateError
from costline.distill.settings import DistillConfig
from costline.lazy import lazy_loader

__all__ = [
    "DistillConfig", "DistillError", "ExportError", "RunStateError", "GateFailedError", "MissingExtraError",
    "validate",
    "export_dataset", "ExportResult", "verify_disjoint",
    "run_teacher", "TeacherRun",
    "train_student", "TrainResult",
    "evaluate_student", "gate_run", "GateResult",
    "promote_run", "compute_roi", "Roi",
    "DistillRun", "open_distill_lake", "distill_views_sql",
    "StudentServer", "on_drift",
]

_LAZY: dict[str, str] = {
    "export_dataset": "dataset", "ExportResult": "dataset", "verify_disjoint": "dataset",
    "run_teacher": "teacher", "TeacherRun": "teacher",
    "train_student": "train", "TrainResult": "train",
    "evaluate_student": "evaluate", "gate_run": "evaluate", "GateResult": "evaluate",
    "promote_run": "promote", "compute_roi": "roi", "Roi": "roi",
    "DistillRun": "runs", "open_distill_lake": "store", "distill_views_sql": "store",
    "StudentServer": "serve", "on_drift": "redistill",
}

__getattr__, __dir__ = lazy_loader(__name__, _LAZY)


def validate(config: Any) -> None:
    """Check ``config.distill``; raises :class:`~costline.errors.ConfigError` naming the key."""
    from costline import contract
    from costline.validate import Section

    d = config.distill
    s = Section("distill")
    s.need(bool(d.task_types), "task_types", "name at least one task type to distil")
    s.at_least("sample_size", d.sample_size, 1, "must be at least 1 (the article: 5,000-50,000)")
    s.above_zero("window_days", d.window_days)
    s.fraction("near_duplicate_threshold", d.near_duplicate_threshold, what="must be in [0, 1] (0 = off)")
    s.need(0.10 <= d.eval_fraction <= 0.15, "eval_fraction", "must be between 0.10 and 0.15")
    s.fraction("split_cluster_threshold", d.split_cluster_threshold, what="must be in [0, 1] (0 = off)")
    s.at_least("min_query_chars", d.min_query_chars, 0, "must be 0 (keep every query) or more")
    # numpy's seed (the Trainer's set_seed) takes 0 to 2**32 - 1: another one failed only when training began
    s.need(0 <= d.seed <= 2**32 - 1, "seed", f"must be from 0 to 4294967295 (2**32 - 1); got {d.seed}")
    s.need(all(isinstance(t, str) and t for t in d.tenants), "tenants", "must be tenant names, or [\"*\"] for all")
    s.need("*" not in d.tenants or tuple(d.tenants) == ("*",), "tenants",
           "[\"*\"] (every tenant) stands alone: list tenant names, or [\"*\"]")
    s.need(d.pii_hook == "" or ":" in d.pii_hook, "pii_hook", "must be 'module:function'")
    s.one_of("teacher_tier", d.teacher_tier, contract.API_TIERS,
             f"must be the API tier whose model answers, one of {', '.join(contract.API_TIERS)}; "
             f"got {d.teacher_tier!r}")
    # an empty marker is found at every answer's end: every reasoning item's final answer would be empty
    s.need(bool(d.final_answer_marker.strip()), "final_answer_marker",
           "must be the text the teacher writes before its final answer (the default is \"Final answer:\")")
    s.need(1 <= d.max_tokens <= 1_000_000, "max_tokens",
           f"must be from 1 to 1000000 (the teacher's answer token limit; the default is 1024); got {d.max_tokens}")
    s.need(d.lora_r >= 1 and d.lora_alpha >= 1, "lora_r", "lora_r and lora_alpha must be at least 1")
    s.need(d.lora_r <= 512, "lora_r", "must be at most 512 (vLLM's largest --max-lora-rank)")
    s.fraction("lora_dropout", d.lora_dropout, open_high=True)
    s.not_negative("epochs", d.epochs)
    s.above_zero("learning_rate", d.learning_rate)
    s.fraction("warmup_ratio", d.warmup_ratio, open_high=True,
               what=f"must be in [0, 1) (the share of steps spent warming up: 0.03 = 3 %); got {d.warmup_ratio}")
    s.need(d.batch_size >= 1 and d.gradient_accumulation_steps >= 1, "batch_size",
           "batch_size and gradient_accumulation_steps must be at least 1")
    s.need(d.max_seq_len >= 8 and d.max_new_tokens >= 1, "max_seq_len", "max_seq_len >= 8 and max_new_tokens >= 1")
    # the Trainer reads 0 or less as "keep every checkpoint"
    s.at_least("save_total_limit", d.save_total_limit, 1,
               "must be at least 1 (checkpoints kept while training; a killed run resumes from the last)")
    s.not_negative("torch_threads", d.torch_threads, "must be 0 (torch's default) or more")
    s.need(d.device in ("auto", "cpu", "cuda") or (d.device.startswith("cuda:") and d.device[5:].isdigit()),
           "device", "must be \"auto\", \"cpu\", \"cuda\" or \"cuda:N\"")
    s.fraction("max_gap", d.max_gap)
    for k, v in d.thresholds.items():
        s.fraction(f"thresholds.{k}", v)
    s.at_least("min_eval_per_subtype", d.min_eval_per_subtype, 1)
    s.need(0.5 <= d.gate_confidence < 1, "gate_confidence", "must be in [0.5, 1) (one-sided, e.g. 0.95)")
    s.need(bool(d.adapter_name) and "=" not in d.adapter_name and " " not in d.adapter_name, "adapter_name",
           "must be a name without '=' or spaces (vLLM --lora-modules NAME=PATH)")
    s.not_negative("train_gpu_hours", d.train_gpu_hours)
    s.not_negative("train_gpu_usd_per_hour", d.train_gpu_usd_per_hour)
    s.above_zero("redistill_every_days", d.redistill_every_days)
