"""`costline distill train`: supervised fine-tuning with LoRA (``transformers`` Trainer + ``peft``).

Each example is the student prompt (:func:`costline.distill.model.format_prompt`) followed by the
teacher's target and EOS; the loss is masked to the target (prompt labels are -100), so the student
learns to answer, not to repeat questions. The Trainer brings the linear schedule with warm-up,
gradient clipping, the progress bar and checkpoints (``checkpoints/``: a killed run resumes from
the last one). The adapter and the tokenizer are saved to ``adapter/`` with
``training_manifest.json``: base model, data hashes, hyper-parameters, steps, final loss, time.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from costline.distill.errors import RunStateError
from costline.distill.runs import DistillRun, read_jsonl, sha256_file, write_json

__all__ = ["TrainResult", "train_student", "build_examples"]

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run: DistillRun
    adapter: Path
    examples: int
    steps: int
    final_loss: float | None
    train_seconds: float


def build_examples(tokenizer: Any, rows: list[dict[str, Any]], items: dict[str, dict[str, Any]], cfg: Any
                   ) -> list[dict[str, list[int]]]:
    """Token ids and labels masked to the answer, truncated to ``max_seq_len`` (the prompt's head is cut)."""
    from costline.distill.model import format_prompt, target_text

    out = []
    for r in rows:
        it = items[r["id"]]
        prompt = tokenizer(format_prompt(tokenizer, it.get("system"), it["messages"]), add_special_tokens=False)
        target = tokenizer(target_text(r, cfg.final_answer_marker), add_special_tokens=False)
        p, t = list(prompt["input_ids"]), list(target["input_ids"]) + [tokenizer.eos_token_id]
        t = t[:cfg.max_seq_len - 1]
        p = p[-(cfg.max_seq_len - len(t)):]
        out.append({"input_ids": p + t, "labels": [-100] * len(p) + t})
    return out


class _Collator:
    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, batch: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(b["input_ids"]) for b in batch)
        ids = [b["input_ids"] + [self.pad_id] * (width - len(b["input_ids"])) for b in batch]
        labels = [b["labels"] + [-100] * (width - len(b["labels"])) for b in batch]
        mask = [[1] * len(b["input_ids"]) + [0] * (width - len(b["input_ids"])) for b in batch]
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(mask)}


def train_student(
    config: Any,
    run: DistillRun,
    *,
    base_model: str | None = None,
    max_steps: int | None = None,
    show_progress: bool = False,
    resume: bool = True,
) -> TrainResult:
    """Fine-tune a LoRA adapter on the run's train split; ``max_steps=0`` saves the untrained adapter."""
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments, set_seed

    from costline.distill import validate
    from costline.distill.model import load_base, set_threads

    validate(config)
    cfg = config.distill
    base = base_model or cfg.base_model
    if not base:
        raise RunStateError("no base model: set [distill] base_model (a local folder) or pass --base-model")
    run.need("teacher.jsonl", "teacher")
    from costline.distill.dataset import verify_disjoint

    verify_disjoint(run.read("dataset/manifest.json", "export"))  # never train on a held-out item
    items = {it["id"]: it for it in read_jsonl(run.dataset / "train.jsonl")}
    rows = [r for r in read_jsonl(run.path("teacher.jsonl")) if r["split"] == "train" and r["id"] in items]
    if not rows:
        raise RunStateError(f"run {run.run_id} has no teacher answers for its train split: run `costline distill "
                            f"teacher --run {run.run_id}`")
    set_threads(cfg.torch_threads)
    set_seed(cfg.seed)
    tok, model = load_base(base)
    examples = build_examples(tok, rows, items, cfg)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.target_modules) if cfg.target_modules != ("all-linear",) else "all-linear",
                      modules_to_save=list(cfg.modules_to_save) or None, task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    per_epoch = math.ceil(len(examples) / (cfg.batch_size * cfg.gradient_accumulation_steps))
    total = max_steps if max_steps is not None else math.ceil(per_epoch * cfg.epochs)
    args = TrainingArguments(
        output_dir=str(run.checkpoints), num_train_epochs=cfg.epochs, max_steps=max_steps if max_steps else -1,
        learning_rate=cfg.learning_rate, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, warmup_steps=int(total * cfg.warmup_ratio),
        lr_scheduler_type="linear", max_grad_norm=1.0, logging_steps=max(1, total // 50), save_strategy="epoch",
        save_total_limit=cfg.save_total_limit, report_to=[], disable_tqdm=not show_progress, seed=cfg.seed,
        remove_unused_columns=False, dataloader_num_workers=0)
    started = time.monotonic()
    steps, loss = 0, None
    if max_steps != 0:
        trainer = Trainer(model=model, args=args, train_dataset=examples, data_collator=_Collator(tok.pad_token_id))
        last = None
        if resume and run.checkpoints.is_dir():
            ckpts = sorted(run.checkpoints.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
            last = str(ckpts[-1]) if ckpts else None
        out = trainer.train(resume_from_checkpoint=last)
        steps = int(out.global_step)
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        loss = float(losses[-1]) if losses else float(out.training_loss)
    seconds = time.monotonic() - started
    model.save_pretrained(str(run.adapter))
    tok.save_pretrained(str(run.adapter))
    write_json(run.adapter / "training_manifest.json", {
        "run_id": run.run_id, "base_model": str(base), "adapter_name": cfg.adapter_name,
        "data": {"dataset_manifest": sha256_file(run.dataset / "manifest.json"),
                 "train_file": sha256_file(run.dataset / "train.jsonl"),
                 "teacher_file": sha256_file(run.path("teacher.jsonl"))},
        "hyperparameters": {"lora_r": cfg.lora_r, "lora_alpha": cfg.lora_alpha, "lora_dropout": cfg.lora_dropout,
                            "target_modules": list(cfg.target_modules), "modules_to_save": list(cfg.modules_to_save),
                            "epochs": cfg.epochs, "learning_rate": cfg.learning_rate, "batch_size": cfg.batch_size,
                            "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
                            "warmup_ratio": cfg.warmup_ratio, "max_seq_len": cfg.max_seq_len,
                            "max_steps": max_steps, "seed": cfg.seed},
        "examples": len(examples), "steps": steps, "final_loss": loss, "train_seconds": seconds,
        "device": str(next(model.parameters()).device)})
    return TrainResult(run, run.adapter, len(examples), steps, loss, seconds)
