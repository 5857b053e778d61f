"""``costline demo --distill``: distil the demo's classification traffic into a student costline
trains, serves (``costline distill serve``'s :class:`~costline.distill.serve.StudentServer`) and routes to.

The demo's own classification traffic repeats about fifty texts, too few for a held-out set of
texts the student never saw, so the step first records a further simulated day of classification
traffic (the demo's three subtypes and prompts, with content captured) into the demo's lake through
costline's recorder and the processor's commit path. Then, bounded to a few minutes on two cores:

1. **export** that day (exact duplicates dropped, 15 % held out per subtype);
2. **teacher** — the stand-in's Message Batches API, whose frontier model labels each text (the
   label is the text's last word's class), every answer a span in the lake;
3. **train** — a 2-layer Llama built from a config (random weights) with a word-level tokenizer
   trained on the export, LoRA-tuned on the train split;
4. **eval** and **gate** per subtype, **promote** into ``<workdir>/costline.toml``;
5. the trained student is served over the OpenAI API and fresh classification requests go through
   the serving pipeline, routed by the promoted config: the gated subtypes reach the student.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

__all__ = ["DemoDistillResult", "run_distill_demo", "demo_classification_plans", "demo_label", "tiny_base_model"]

#: The demo's classification prompts (costline.sim.traffic) and, per label, the words that decide it.
_PROMPTS = {
    "sentiment": 'Classify the sentiment of this review as positive, negative or neutral: "{x}"',
    "intent": 'Classify the intent of this message as billing, shipping, account or other: "{x}"',
    "urgency": 'Classify the urgency of this ticket as low, medium or high: "{x}"',
}
_LABEL_WORDS = {
    "sentiment": {"positive": ("great", "lovely", "superb", "perfect", "excellent"),
                  "negative": ("awful", "broken", "terrible", "faulty", "poor"),
                  "neutral": ("okay", "average", "ordinary", "standard", "acceptable")},
    "intent": {"billing": ("invoice", "refund", "charge", "payment"),
               "shipping": ("parcel", "courier", "delivery", "tracking"),
               "account": ("password", "login", "profile", "username"),
               "other": ("hours", "careers", "newsletter", "feedback")},
    "urgency": {"high": ("immediately", "outage", "urgent", "asap"),
                "medium": ("soon", "tomorrow", "shortly", "today"),
                "low": ("whenever", "eventually", "someday", "later")},
}
_LABELS = {w: label for labels in _LABEL_WORDS.values() for label, words in labels.items() for w in words}
_FILLER = ("the my our this new old order item box app team card was is really quite today again it and so "
           "after before with about").split()
_PARTITION = {"traffic": 0, "teacher": 1, "served": 2}
_TOPIC = "costline-demo-distill"


def demo_label(query: str) -> str:
    """The teacher's label for a demo classification text: the class of its last word."""
    text = query.rsplit(":", 1)[-1].strip().strip('"').strip()
    return _LABELS.get(text.split()[-1].lower() if text else "", "other")


def _query(rng: random.Random, subtype: str) -> str:
    labels = _LABEL_WORDS[subtype]
    word = rng.choice(labels[rng.choice(sorted(labels))])
    text = " ".join([rng.choice(_FILLER) for _ in range(rng.randint(3, 7))] + [word]).capitalize()
    return _PROMPTS[subtype].format(x=text)


def demo_classification_plans(start: datetime, n: int, *, seed: int = 11) -> list[Any]:
    """``n`` classification requests of one simulated day from ``start``: the demo's plans (tenants,
    timing, tiers, calls) carrying labelled texts of the demo's subtypes, answered with the label."""
    from costline.sim.traffic import TrafficSpec, sample_traffic

    rng = random.Random(seed)
    # classification only, so the plans do not move when the demo's FAQ traffic is reshaped
    plans = sample_traffic(TrafficSpec(days=1, requests_per_day=n, start=start, seed=seed, stale_day=None,
                                       shift_day=None, mix={"classification": 1.0}))
    out = []
    for p in plans:
        sub = rng.choice(sorted(_PROMPTS))
        q = _query(rng, sub)
        out.append(dataclasses.replace(p, task_type="classification", subtype=sub, query=q, answer=demo_label(q)))
    return out


def _labelling_standin_class() -> type:
    from costline.sim.standin import StandInServer

    class _LabellingStandIn(StandInServer):
        """The product's stand-in (Messages + Message Batches APIs, request log) whose models answer
        the demo's classification texts with their label, as a frontier model would."""

        def _generate(self, model: str, tier: str, query: str, max_tokens: int) -> tuple[str, int, bool]:
            return demo_label(query), 1, False

    return _LabellingStandIn


def tiny_base_model(folder: Path, texts: Iterable[str], *, seed: int = 0) -> Path:
    """A 2-layer Llama with random weights and a word-level tokenizer trained on ``texts``, saved to ``folder``
    (no weights are downloaded: the base model is built from a config)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(list(texts), trainers.WordLevelTrainer(special_tokens=["<pad>", "<unk>", "<s>", "</s>"]))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                 eos_token="</s>")
    cfg = LlamaConfig(vocab_size=len(hf), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                      pad_token_id=hf.pad_token_id, bos_token_id=hf.bos_token_id, eos_token_id=hf.eos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    hf.save_pretrained(folder)
    return folder


class _LakeSink:
    """Spans recorded in-process, written to the lake through the processor's decode and commit path."""

    def __init__(self, config: Any, part: str, *, now: Callable[[], int] | None = None) -> None:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        from costline.collectors import Recorder, RequestStampingProcessor

        self.config, self.partition = config, _PARTITION[part]
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(RequestStampingProcessor())
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.recorder = Recorder(self.provider, capture=dataclasses.replace(config.capture, message_content=True),
                                 env={}, **({} if now is None else {"now": now}))

    def commit(self) -> int:
        """Write what was recorded; the number of spans."""
        from costline.lake import Lake
        from costline.otlp import encode_sdk_spans_by_trace
        from costline.processors.buffer import PartitionBuffer
        from costline.processors.decode import decode_message, flatten_message
        from costline.processors.records import MemoPricingTable

        self.provider.force_flush()
        messages = encode_sdk_spans_by_trace(self.exporter.get_finished_spans())
        self.provider.shutdown()
        if not messages:
            return 0
        pricing = MemoPricingTable(self.config.pricing)
        buf = PartitionBuffer(self.partition)
        spans = 0
        for offset, (_trace, value) in enumerate(messages):
            out = flatten_message(decode_message(value), pricing, self.partition, offset)
            buf.add(offset, out.rows, out.spans, now=0.0)
            spans += out.spans
        assert buf.first_offset is not None and buf.last_offset is not None
        Lake(self.config.lake.path).init().commit_batch(_TOPIC, self.partition, buf.first_offset, buf.last_offset,
                                                         buf.tables())
        return spans


@dataclass
class DemoDistillResult:
    run_id: str
    exported: dict[str, dict[str, int]]
    teacher_answers: int
    teacher_cost_usd: float
    train_steps: int
    final_loss: float | None
    train_seconds: float
    gate_passed: bool
    gate_text: str
    config_file: Path
    gated: dict[str, list[str]]
    #: Fresh requests routed with the promoted config: tier per request, and those the student answered right.
    routed: Counter[str]
    student_correct: int
    student_answered: int


def _distill_config(config: Any, workdir: Path, epochs: float) -> Any:
    from costline.distill.settings import DistillConfig

    d = DistillConfig(
        tenants=("*",),  # the demo's three tenants, mixed knowingly (docs/distill.md: whose prompts train the student)
        root=workdir / "distill", task_types=("classification",), subtypes=tuple(sorted(_PROMPTS)),
        near_duplicate_threshold=0.0, eval_fraction=0.15, window_days=1, target_modules=("all-linear",),
        modules_to_save=("lm_head", "embed_tokens"), lora_r=8, lora_alpha=16, lora_dropout=0.0, epochs=epochs,
        learning_rate=5e-3, batch_size=8, max_new_tokens=3, max_gap=0.1, min_eval_per_subtype=10, torch_threads=1,
        adapter_name="costline-demo-student")
    return config.replace(distill=d)


def run_distill_demo(
    config: Any,
    *,
    start: datetime,
    workdir: Path,
    requests: int = 900,
    routed: int = 60,
    epochs: float = 3.0,
    echo: Callable[[str], None] = print,
) -> DemoDistillResult:
    """The ``--distill`` step over ``config``'s lake: a day of classification traffic from ``start``
    (``requests``), distilled, gated, promoted, served, and ``routed`` fresh requests sent through
    the serving pipeline with the promoted routing; see the module docstring."""
    import anthropic

    from costline.config import load_config
    from costline.sim.demo import SimClock, replay_one
    from costline.distill.dataset import export_dataset
    from costline.distill.evaluate import evaluate_student, gate_run
    from costline.distill.model import format_prompt
    from costline.distill.promote import promote_run
    from costline.distill.runs import read_jsonl
    from costline.distill.serve import StudentServer
    from costline.distill.teacher import run_teacher
    from costline.distill.train import train_student
    from costline.serving.settings import StandInConfig

    workdir = Path(workdir).resolve()
    cfg = _distill_config(config, workdir, epochs)
    plans = demo_classification_plans(start, requests)
    clock = SimClock()
    sink = _LakeSink(cfg, "traffic", now=clock)
    for plan in plans:
        replay_one(plan, sink.recorder, clock)
    sink.commit()
    echo(f"  a further day of classification traffic: {len(plans)} requests of "
         f"{', '.join(sorted(_PROMPTS))} (content captured) recorded into the lake")

    until = start + timedelta(days=1)
    ex = export_dataset(cfg, since=start, until=until, now=lambda: until)
    echo(f"  export {ex.run.run_id}: {ex.train} train / {ex.eval} held out; skipped "
         + (", ".join(f"{k} {v}" for k, v in ex.skipped.items() if v) or "none"))

    labeller = _labelling_standin_class()
    with labeller(StandInConfig(port=0, latency_scale=0.0), pricing=cfg.pricing) as srv:
        client = anthropic.Anthropic(base_url=srv.url, api_key="demo", max_retries=0)
        teacher_sink = _LakeSink(cfg, "teacher")
        t = run_teacher(cfg, ex.run, client=client, recorder=teacher_sink.recorder, sleep=lambda s: None)
        teacher_sink.commit()
        echo(f"  teacher: {t.answered} answers through the {'Message Batches' if t.batch else 'Messages'} API "
             f"(${t.cost_usd:.4f}, spans in the lake)")

        class Plain:  # the locally trained tokenizer has no chat template: format_prompt's plain layout
            chat_template = None

        rows = read_jsonl(ex.run.dataset / "train.jsonl") + read_jsonl(ex.run.dataset / "eval.jsonl")
        texts = [format_prompt(Plain, r["system"], r["messages"]) for r in rows] + sorted(set(_LABELS.values()))
        base = tiny_base_model(workdir / "distill" / "base-model", texts)
        cfg = cfg.replace(distill={"base_model": str(base)})
        with contextlib.redirect_stdout(io.StringIO()):  # transformers prints every logged loss
            tr = train_student(cfg, ex.run)
        echo(f"  train: LoRA on a 2-layer model built from a config, {tr.steps} steps in {tr.train_seconds:.0f}s, "
             f"final loss {tr.final_loss:.4f}" if tr.final_loss is not None else f"  train: {tr.steps} steps")
        evaluate_student(cfg, ex.run)
        gate = gate_run(ex.run)
        echo("  gate: " + gate.describe())
        toml = workdir / "costline.toml"
        gated: dict[str, list[str]] = {}
        counts: Counter[str] = Counter()
        correct = answered = 0
        if gate.passed:
            p = promote_run(cfg, ex.run, toml)
            gated = p.subtypes
            shown = "; ".join(f"{k}: {', '.join(v)}" for k, v in gated.items())
            echo(f"  promote: {toml} gates {shown} to the student")
            echo(f"  in production: {p.vllm_command}")
            promoted = load_config(toml)
            with StudentServer(base, ex.run.adapter, cfg.distill.adapter_name, port=0,
                               max_new_tokens=cfg.distill.max_new_tokens, threads=1) as student:
                counts, correct, answered = _route_fresh(cfg, promoted, srv, student, start + timedelta(days=1),
                                                         routed)
            echo(f"  served by `costline distill serve` (transformers, OpenAI API): {routed} fresh requests "
                 f"through the serving pipeline -> " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                 + f"; the student's answers matched the teacher's label {correct}/{answered}")
        else:
            echo("  not promoted: the router keeps sending classification to the API tiers")
    return DemoDistillResult(ex.run.run_id, ex.counts, t.answered, t.cost_usd, tr.steps, tr.final_loss,
                             tr.train_seconds, gate.passed, gate.describe(), toml, gated, counts, correct, answered)


def _route_fresh(cfg: Any, promoted: Any, standin: Any, student: Any, at: datetime,
                 n: int) -> tuple[Counter[str], int, int]:
    """``n`` fresh classification requests through the serving pipeline routed by ``promoted``'s rules,
    the student tier served by ``student``; their spans go to the lake. (tiers, correct, student answers)."""
    from costline.serving.pipeline import Pipeline

    s = cfg.serving
    serving = dataclasses.replace(
        s, backends=dataclasses.replace(s.backends, anthropic_base_url=standin.url, student_base_url=student.openai_url,
                                        student_model=promoted.serving.backends.student_model, max_retries=0),
        router=dataclasses.replace(s.router, policy="rules", rules=promoted.serving.router.rules))
    sink = _LakeSink(cfg, "served")
    pipeline = Pipeline.from_config(cfg.replace(serving=serving), recorder=sink.recorder, env={})
    tiers: Counter[str] = Counter()
    correct = answered = 0
    try:
        for plan in demo_classification_plans(at, n, seed=29)[:n]:
            a = pipeline.answer(plan.query, task_type=plan.task_type, subtype=plan.subtype, tenant=plan.tenant)
            tiers[a.tier] += 1
            if a.tier == "student":
                answered += 1
                correct += a.text.strip() == plan.answer
    finally:
        pipeline.close()
        sink.commit()
    return tiers, correct, answered
