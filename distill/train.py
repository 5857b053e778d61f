"""`costline distill train`: supervised fine-tuning with LoRA (``transformers`` Trainer + ``peft``).

Each example is the student prompt (:func:`costline.distill.model.format_prompt`) followed by the
teacher's target and EOS; the loss is masked to the target (prompt labels are -100), so the student
learns to answer, not to repeat questions. The loop is plain PyTorch — AdamW, transformers' linear
schedule with warm-up, gradient clipping, a tqdm progress bar, a checkpoint per epoch
(``checkpoints/epoch-N``: adapter, optimiser and scheduler state; a killed run resumes from the
last one). transformers' Trainer did the same with ~50x the per-step overhead on a small model on
CPU, which the tests cannot afford. The adapter and the tokenizer are saved to ``adapter/`` with
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


def _fit(model: Any, examples: list[dict[str, list[int]]], pad_id: int, cfg: Any, run: DistillRun, *, total: int,
         show_progress: bool, resume: bool) -> tuple[int, float | None]:
    """Train ``model`` for ``total`` optimiser steps; returns (steps, last loss)."""
    import random

    import torch
    from transformers import get_linear_schedule_with_warmup

    if total <= 0:
        return 0, None
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate)
    sched = get_linear_schedule_with_warmup(opt, int(total * cfg.warmup_ratio), total)
    collate = _Collator(pad_id)
    step, epoch, loss_value = 0, 0, None
    if resume and run.checkpoints.is_dir():
        done = sorted(run.checkpoints.glob("epoch-*"), key=lambda p: int(p.name.split("-")[-1]))
        if done:
            from peft import set_peft_model_state_dict

            state = torch.load(done[-1] / "state.pt", weights_only=False)
            set_peft_model_state_dict(model, state["adapter"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            step, epoch, loss_value = state["step"], state["epoch"], state["loss"]
            log.info("resuming %s from %s (step %d)", run.run_id, done[-1].name, step)
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=step, unit="step", desc=f"train {run.run_id}", leave=False)
    model.train()
    per_update = cfg.batch_size * cfg.gradient_accumulation_steps
    while step < total:
        order = list(range(len(examples)))
        random.Random(cfg.seed + epoch).shuffle(order)
        for start in range(0, len(order), per_update):
            if step >= total:
                break
            chunk = order[start:start + per_update]
            for i in range(0, len(chunk), cfg.batch_size):
                batch = collate([examples[j] for j in chunk[i:i + cfg.batch_size]])
                out = model(**batch)
                (out.loss * (len(chunk[i:i + cfg.batch_size]) / len(chunk))).backward()
                loss_value = float(out.loss.detach())
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            step += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}")
        epoch += 1
        _checkpoint(model, opt, sched, run, cfg, step=step, epoch=epoch, loss=loss_value)
    if bar is not None:
        bar.close()
    model.eval()
    return step, loss_value


def _checkpoint(model: Any, opt: Any, sched: Any, run: DistillRun, cfg: Any, **state: Any) -> None:
    import shutil

    import torch
    from peft import get_peft_model_state_dict

    folder = run.checkpoints / f"epoch-{state['epoch']}"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".state.pt.tmp"
    torch.save({"adapter": get_peft_model_state_dict(model), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), **state}, tmp)
    tmp.replace(folder / "state.pt")
    old = sorted(run.checkpoints.glob("epoch-*"), key=lambda p: int(p.name.split("-")[-1]))
    for p in old[:-cfg.save_total_limit] if cfg.save_total_limit > 0 else []:
        shutil.rmtree(p, ignore_errors=True)


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
    from transformers import set_seed

    from costline.distill import validate
    from costline.distill.model import load_base, set_threads

    validate(config)
    cfg = config.distill
    base = base_model or cfg.base_model
    if not base:
        raise RunStateError("no base model: set [distill] base_model (a local folder) or pass --base-model")
    run.need("teacher.jsonl", "teacher")
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
    started = time.monotonic()
    steps, loss = _fit(model, examples, tok.pad_token_id, cfg, run, total=total, show_progress=show_progress,
                       resume=resume)
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
