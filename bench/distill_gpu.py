"""Distillation on a GPU: LoRA training time and the trained student's throughput, through costline's code.

Two phases, so that the GPU machine needs nothing but torch, transformers and peft:

    python bench/distill_gpu.py prepare --out .gpu          # here (CPU): lake -> export -> teacher
    python bench/distill_gpu.py gpu --work .gpu --out OUT    # on the GPU: train -> eval/gate -> tok/s -> req/s

``prepare`` fills a lake with the distillation tests' narrow labelled task (sentiment / topic
classification), exports it with ``costline distill export`` and answers it with the teacher through
the product's stand-in Message Batches API. ``gpu`` builds a base model from a config (no weights
can be downloaded: the shape of Qwen2.5-1.5B by default, random weights, bf16, Qwen's 151,936-entry
vocabulary with a word-level tokenizer trained on the export), then runs the product's own
``train_student`` (LoRA, the Trainer on CUDA), ``evaluate_student`` + ``gate_run`` (the student on
the GPU), measures greedy decode throughput (tokens/s at batch 1, 16 and 64, adapter unmerged and
merged into the base) and the requests/s of ``costline distill serve``'s server on the task itself.

vLLM is the production server; its wheel (hundreds of MB) cannot travel to the lent GPU machine,
so the served figures here are the development server's (transformers), a lower bound.
Random weights make the figures about speed, not quality: the gate verdict is printed as it falls.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SINCE, UNTIL = datetime(2026, 11, 1), datetime(2026, 11, 3)
SHAPES = {  # name: (hidden, intermediate, layers, heads, kv heads, vocab)
    "qwen2.5-1.5b": (1536, 8960, 28, 12, 2, 151_936),
    "qwen2.5-0.5b": (896, 4864, 24, 14, 2, 151_936),
    "tiny": (64, 128, 2, 4, 4, 0),  # for a dry run on CPU
}


def _config(work: Path, **distill):
    from costline.config import CaptureConfig, Config, LakeConfig
    from costline.distill.settings import DistillConfig

    kw = dict(task_types=("classification",), tenants=("*",), near_duplicate_threshold=0.0, eval_fraction=0.15, window_days=3,
              target_modules=("all-linear",), modules_to_save=("lm_head", "embed_tokens"), lora_r=16,
              lora_alpha=32, lora_dropout=0.0, epochs=2, learning_rate=1e-3, batch_size=16, max_new_tokens=3,
              max_gap=0.1, min_eval_per_subtype=5, root=work / "distill")
    return Config(lake=LakeConfig(path=work / "lake"), capture=CaptureConfig(message_content=True),
                  distill=DistillConfig(**{**kw, **distill}))


def prepare(work: Path, n: int) -> None:
    import anthropic

    sys.path.insert(0, str(ROOT / "tests"))
    from distill_world import LabellingStandIn, labelled_plans
    from lakes import lake_from_plans

    from costline.distill.dataset import export_dataset
    from costline.distill.teacher import run_teacher
    from costline.sim.standin import StandInConfig

    shutil.rmtree(work, ignore_errors=True)
    cfg = _config(work, sample_size=n)
    lake_from_plans(labelled_plans(n), cfg)
    ex = export_dataset(cfg, since=SINCE, until=UNTIL, run_id="gpu")
    with LabellingStandIn(StandInConfig(port=0, latency_scale=0.0)) as srv:
        client = anthropic.Anthropic(base_url=srv.url, api_key="x", max_retries=0)
        t = run_teacher(cfg, ex.run, client=client, sleep=lambda s: None)
    shutil.rmtree(work / "lake")  # the GPU phase needs the run only; eval writes a fresh lake there
    print(f"prepared run {ex.run.run_id}: {ex.train} train, {ex.eval} eval, {t.answered} teacher answers "
          f"(batch={t.batch}) under {ex.run.dir}")


def _base_model(folder: Path, texts: list[str], shape: str) -> float:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    started = time.monotonic()
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["<pad>", "<unk>", "<s>", "</s>"]))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                 eos_token="</s>")
    hidden, inter, layers, heads, kv, vocab = SHAPES[shape]
    cfg = Qwen2Config(vocab_size=max(vocab, len(hf)), hidden_size=hidden, intermediate_size=inter,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv,
                      max_position_embeddings=4096, tie_word_embeddings=False, pad_token_id=hf.pad_token_id,
                      bos_token_id=hf.bos_token_id, eos_token_id=hf.eos_token_id)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg)
    if device == "cuda":
        model.to(torch.bfloat16)  # as a real checkpoint ships
    model.save_pretrained(folder)
    hf.save_pretrained(folder)
    print(f"base model {shape}: {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters, "
          f"built and saved in {time.monotonic() - started:.1f} s")
    del model
    return time.monotonic() - started


def _decode_rate(tok, model, prompts: list[str], batch: int, new_tokens: int) -> float:
    import torch

    tok.padding_side = "left"
    enc = tok((prompts * (batch // len(prompts) + 1))[:batch], return_tensors="pt", padding=True,
              add_special_tokens=False).to(model.device)
    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        model.generate(**enc, **{**kw, "max_new_tokens": 8, "min_new_tokens": 8})  # warm-up
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        started = time.monotonic()
        out = model.generate(**enc, **kw)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
    seconds = time.monotonic() - started
    return (out.shape[1] - enc["input_ids"].shape[1]) * batch / seconds


def _served_rate(base: Path, adapter: Path, prompts: list[str], n: int) -> tuple[float, float]:
    import urllib.request

    from costline.distill.serve import StudentServer

    server = StudentServer(base, adapter, "costline-student-lora", port=0, max_new_tokens=3)
    server.start()
    try:
        def ask(q: str) -> dict:
            body = json.dumps({"model": "costline-student-lora", "max_tokens": 3,
                               "messages": [{"role": "user", "content": q}]}).encode()
            req = urllib.request.Request(server.openai_url + "/chat/completions", body,
                                         {"content-type": "application/json"})
            with urllib.request.urlopen(req, timeout=60) as resp:
                return json.loads(resp.read())

        ask(prompts[0])
        started = time.monotonic()
        for i in range(n):
            ask(prompts[i % len(prompts)])
        seconds = time.monotonic() - started
    finally:
        server.shutdown()
    return n / seconds, 1000 * seconds / n


def gpu(work: Path, out: Path, shape: str, epochs: float, served: int, lr: float) -> dict:
    import torch

    from costline.distill.evaluate import evaluate_student, gate_run
    from costline.distill.model import format_prompt, load_student
    from costline.distill.runs import DistillRun, read_jsonl
    from costline.distill.train import build_examples, train_student

    out.mkdir(parents=True, exist_ok=True)
    run = DistillRun(work / "distill", "gpu")
    items = read_jsonl(run.dataset / "train.jsonl") + read_jsonl(run.dataset / "eval.jsonl")

    class Plain:  # the plain prompt layout: the locally trained tokenizer has no chat template
        chat_template = None

    prompts = [format_prompt(Plain, it.get("system"), it["messages"]) for it in items]
    answers = sorted({r["answer"] for r in read_jsonl(run.path("teacher.jsonl"))})
    base = work / "base"
    shutil.rmtree(base, ignore_errors=True)
    shutil.rmtree(run.checkpoints, ignore_errors=True)
    shutil.rmtree(run.adapter, ignore_errors=True)
    build_s = _base_model(base, prompts + answers, shape)
    cfg = _config(work, base_model=str(base), epochs=epochs, learning_rate=lr)

    tr = train_student(cfg, run, show_progress=False)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(run.adapter))
    train_items = {it["id"]: it for it in read_jsonl(run.dataset / "train.jsonl")}
    rows = [r for r in read_jsonl(run.path("teacher.jsonl")) if r["split"] == "train" and r["id"] in train_items]
    tokens = sum(len(e["input_ids"]) for e in build_examples(tok, rows, train_items, cfg.distill)) * epochs
    started = time.monotonic()
    result = evaluate_student(cfg, run)
    gate = gate_run(run)
    eval_s = time.monotonic() - started

    eval_prompts = prompts[-64:]
    rates = {}
    for merge in (False, True):  # load_student merges by default; unmerged is what a multi-adapter server does
        tok, model = load_student(base, run.adapter, merge=merge)
        kind = "merged" if merge else "unmerged"
        rates |= {f"{kind}_b{b}": _decode_rate(tok, model, eval_prompts, b, 128) for b in (1, 16, 64)}
        del model
    req_s, ms = _served_rate(base, run.adapter, [it["query"] for it in items[-64:]], served)
    report = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__, "shape": shape, "base_build_s": round(build_s, 1),
        "train_examples": tr.examples, "train_steps": tr.steps, "epochs": epochs, "learning_rate": lr, "train_s": round(tr.train_seconds, 1),
        "train_tokens": tokens, "train_tokens_per_s": round(tokens / tr.train_seconds),
        "final_loss": tr.final_loss, "eval_items": sum(v.n for v in result.subtypes), "eval_and_gate_s": round(eval_s, 1),
        "gate_passed": gate.passed, "gate": gate.describe(),
        "decode_tokens_per_s_128_new": {k: round(v) for k, v in rates.items()},
        "served_requests_per_s": round(req_s, 1), "served_ms_per_request": round(ms, 1), "served_requests": served,
    }
    (out / "distill_gpu.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="phase", required=True)
    p = sub.add_parser("prepare", help="lake -> export -> teacher (CPU)")
    p.add_argument("--out", type=Path, default=ROOT / ".gpu")
    p.add_argument("--requests", type=int, default=4000)
    g = sub.add_parser("gpu", help="build base -> train -> eval/gate -> decode tok/s -> served req/s")
    g.add_argument("--work", type=Path, default=ROOT / ".gpu")
    g.add_argument("--out", type=Path, default=ROOT / ".gpu" / "out")
    g.add_argument("--shape", choices=sorted(SHAPES), default="qwen2.5-1.5b")
    g.add_argument("--epochs", type=float, default=2.0)
    g.add_argument("--served", type=int, default=200)
    g.add_argument("--lr", type=float, default=1e-3)
    a = ap.parse_args()
    if a.phase == "prepare":
        prepare(a.out, a.requests)
    else:
        gpu(a.work, a.out, a.shape, a.epochs, a.served, a.lr)


if __name__ == "__main__":
    main()
