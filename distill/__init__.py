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
    from costline.errors import ConfigError

    d = config.distill

    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise ConfigError(f"[distill] {key}", what)

    need(bool(d.task_types), "task_types", "name at least one task type to distil")
    need(d.sample_size >= 1, "sample_size", "must be at least 1 (the article: 5,000-50,000)")
    need(d.window_days > 0, "window_days", "must be above 0")
    need(0 <= d.near_duplicate_threshold <= 1, "near_duplicate_threshold", "must be in [0, 1] (0 = off)")
    need(0.10 <= d.eval_fraction <= 0.15, "eval_fraction", "must be between 0.10 and 0.15")
    need(d.pii_hook == "" or ":" in d.pii_hook, "pii_hook", "must be 'module:function'")
    need(d.lora_r >= 1 and d.lora_alpha >= 1, "lora_r", "lora_r and lora_alpha must be at least 1")
    need(0 <= d.lora_dropout < 1, "lora_dropout", "must be in [0, 1)")
    need(d.epochs >= 0, "epochs", "must not be negative")
    need(d.learning_rate > 0, "learning_rate", "must be above 0")
    need(d.batch_size >= 1 and d.gradient_accumulation_steps >= 1, "batch_size",
         "batch_size and gradient_accumulation_steps must be at least 1")
    need(d.max_seq_len >= 8 and d.max_new_tokens >= 1, "max_seq_len", "max_seq_len >= 8 and max_new_tokens >= 1")
    need(d.torch_threads >= 0, "torch_threads", "must be 0 (torch's default) or more")
    need(d.device in ("auto", "cpu", "cuda") or (d.device.startswith("cuda:") and d.device[5:].isdigit()),
         "device", "must be \"auto\", \"cpu\", \"cuda\" or \"cuda:N\"")
    need(0 <= d.max_gap <= 1, "max_gap", "must be in [0, 1]")
    for k, v in d.thresholds.items():
        need(0 <= v <= 1, f"thresholds.{k}", "must be in [0, 1]")
    need(d.min_eval_per_subtype >= 1, "min_eval_per_subtype", "must be at least 1")
    need(bool(d.adapter_name) and "=" not in d.adapter_name and " " not in d.adapter_name, "adapter_name",
         "must be a name without '=' or spaces (vLLM --lora-modules NAME=PATH)")
    need(d.train_gpu_hours >= 0 and d.train_gpu_usd_per_hour >= 0, "train_gpu_hours", "must not be negative")
    need(d.redistill_every_days > 0, "redistill_every_days", "must be above 0")
