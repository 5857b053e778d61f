"""A narrow labelled world for the distillation tests: a lake of labelled classification traffic,
a stand-in whose teacher answers with the label, and a tiny causal LM + tokenizer built locally.

Two subtypes: ``sentiment`` (positive / negative) and ``topic`` (billing / shipping); the label is
decided by the query's last word, so a 2-layer model can learn it in a few dozen steps.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

from costline.config import CaptureConfig, Config, LakeConfig
from costline.distill.settings import DistillConfig
from costline.sim.standin import StandInServer

POSITIVE = ("great", "lovely", "superb", "perfect", "fine")
NEGATIVE = ("awful", "broken", "terrible", "bad", "poor")
BILLING = ("invoice", "refund", "charge", "payment", "price")
SHIPPING = ("parcel", "courier", "delivery", "tracking", "package")
FILLER = "the a my our order food service was today really quite item box new old this".split()
LABELS = {**{w: "positive" for w in POSITIVE}, **{w: "negative" for w in NEGATIVE},
          **{w: "billing" for w in BILLING}, **{w: "shipping" for w in SHIPPING}}


def label_of(query: str) -> str:
    """The true label: decided by the last word."""
    return LABELS.get(query.split()[-1].strip(".?!").lower(), "unknown")


def make_query(rng: random.Random, subtype: str) -> str:
    words = [rng.choice(FILLER) for _ in range(rng.randint(3, 6))]
    if subtype == "sentiment":
        return "Classify the sentiment: " + " ".join(words + [rng.choice(POSITIVE + NEGATIVE)])
    return "Classify the topic: " + " ".join(words + [rng.choice(BILLING + SHIPPING)])


def labelled_plans(n: int, seed: int = 3):
    """Demo traffic plans relabelled as the narrow task (the plans' timing, tiers, calls are kept)."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from lakes import demo_plans

    rng = random.Random(seed)
    out = []
    for i, p in enumerate(demo_plans(days=1, per_day=n)):
        if i % 10 == 9:  # production repeats itself: every tenth query is an earlier one
            sub, q = out[i - 5].subtype, out[i - 5].query
        else:
            sub = rng.choice(("sentiment", "topic"))
            q = make_query(rng, sub)
        out.append(dataclasses.replace(p, task_type="classification", subtype=sub, query=q, answer=label_of(q)))
    return out


def world_config(tmp_path: Path, base_model: Path | None = None, **distill) -> Config:
    kw = dict(
        task_types=("classification",), near_duplicate_threshold=0.0, eval_fraction=0.15, window_days=1,
        target_modules=("all-linear",), modules_to_save=("lm_head", "embed_tokens"), lora_r=8, lora_alpha=16,
        lora_dropout=0.0, epochs=2, learning_rate=5e-3, batch_size=8, max_new_tokens=3, max_gap=0.1,
        min_eval_per_subtype=5, base_model=str(base_model or ""), torch_threads=1)
    d = DistillConfig(**{**kw, **distill})
    return Config(lake=LakeConfig(path=tmp_path / "lake"), capture=CaptureConfig(message_content=True), distill=d)


class LabellingStandIn(StandInServer):
    """The product's stand-in (Messages + Message Batches APIs, request log) with a teacher that labels."""

    def _generate(self, model: str, tier: str, query: str, max_tokens: int) -> tuple[str, int, bool]:
        return label_of(query), 1, False


def tiny_base_model(folder: Path, texts: list[str]) -> Path:
    """A 2-layer Llama with random weights and a word-level tokenizer trained on ``texts``, saved to ``folder``."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.set_num_threads(1)  # 2 shared cores: more threads only contend
    torch.manual_seed(0)
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["<pad>", "<unk>", "<s>", "</s>"]))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                 eos_token="</s>")
    cfg = LlamaConfig(vocab_size=len(hf), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                      pad_token_id=hf.pad_token_id, bos_token_id=hf.bos_token_id, eos_token_id=hf.eos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    hf.save_pretrained(folder)
    return folder


def pii_hook(text: str) -> str | None:
    """The tests' PII hook: drops texts with an e-mail address, masks a phone number."""
    if "@" in text:
        return None
    return text.replace("555-0100", "<phone>")
