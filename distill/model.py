"""The student's prompt format, loading (base + LoRA adapter) and generation: shared by train, eval and serve.

The prompt is the tokenizer's own chat template when it has one (instruction-tuned bases), else
a plain ``### System / ### Question / ### Answer`` layout (a base model, or a tokenizer trained
locally). Training and serving use the same function, so the student sees one format.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from costline.distill.errors import MissingExtraError

__all__ = ["require_extra", "set_threads", "pick_device", "format_prompt", "target_text", "load_base", "load_student",
           "generate"]


def set_threads(n: int) -> None:
    """Torch's intra-op threads (process-wide); 0 leaves its default."""
    if n > 0:
        import torch

        torch.set_num_threads(n)


def pick_device(device: str = "auto") -> str:
    """The torch device for eval and serving: ``auto`` is CUDA when torch sees a GPU, else CPU."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def require_extra() -> None:
    """Raise :class:`MissingExtraError` unless the ``distill`` extra (transformers, peft) is installed."""
    try:
        import peft  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        raise MissingExtraError("transformers / peft", "distill", needed_for="training and serving the student") from None


_need = require_extra


def format_prompt(tokenizer: Any, system: str | None, messages: Sequence[Mapping[str, Any]]) -> str:
    if getattr(tokenizer, "chat_template", None):
        msgs = ([{"role": "system", "content": system}] if system else []) + [
            {"role": m["role"], "content": str(m["content"])} for m in messages]
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    parts = [f"### System:\n{system}\n"] if system else []
    for m in messages:
        parts.append(f"### {'Answer' if m['role'] == 'assistant' else 'Question'}:\n{m['content']}\n")
    parts.append("### Answer:\n")
    return "".join(parts)


def target_text(row: Mapping[str, Any], marker: str) -> str:
    """What the student learns to write: the reasoning then the marked final answer, or the answer."""
    if row.get("reasoning"):
        return f"{row['reasoning']}\n{marker} {row['answer']}"
    return str(row["answer"])


def load_base(path: str | Path) -> tuple[Any, Any]:
    _need()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(path))
    return tok, model


def load_student(base: str | Path, adapter: str | Path | None, *, device: str = "auto",
                 merge: bool = True) -> tuple[Any, Any]:
    """The base model with the LoRA adapter applied (the adapter folder also holds the tokenizer), on ``device``.

    ``merge`` folds the adapter into the base weights (one adapter served, nothing to swap): on an
    H200 a Qwen2.5-1.5B-shaped student decoded 52 tokens/s merged vs 10 unmerged at batch 1, 2,630
    vs 750 at batch 64 (``bench/distill_gpu.py``). vLLM serves unmerged adapters with its own kernels.
    """
    _need()
    from transformers import AutoTokenizer

    _, model = load_base(base)
    tok = AutoTokenizer.from_pretrained(str(adapter or base))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
        if merge:
            model = model.merge_and_unload()
    model.to(pick_device(device))
    model.eval()
    return tok, model


def generate(tokenizer: Any, model: Any, prompts: Sequence[str], *, max_new_tokens: int,
             batch_size: int = 16) -> list[tuple[str, int, int]]:
    """Greedy answers to ``prompts``: (text, prompt tokens, completion tokens) each."""
    import torch

    out: list[tuple[str, int, int]] = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for i in range(0, len(prompts), batch_size):
            chunk = list(prompts[i:i + batch_size])
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            with torch.no_grad():
                gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            width = enc["input_ids"].shape[1]
            for row, mask in zip(gen.tolist(), enc["attention_mask"].tolist()):
                new = row[width:]
                ids = list(new)
                if tokenizer.eos_token_id in ids:
                    ids = ids[:ids.index(tokenizer.eos_token_id)]
                out.append((tokenizer.decode(ids, skip_special_tokens=True).strip(), sum(mask), len(ids)))
    finally:
        tokenizer.padding_side = side
    return out
