"""The ``[distill]`` section of costline's config (see :mod:`costline.config`).

Plain frozen dataclasses with defaults, nothing else: :mod:`costline.config` imports
this module, so it must stay import-light. :func:`costline.distill.validate` checks the
values when a step starts (errors name the key).

```toml
[distill]
task_types = ["classification"]
base_model = "/models/qwen2.5-1.5b-instruct"   # a local folder (or a hub id when online)

[distill.thresholds]          # per-subtype tolerated student-teacher gap (default: max_gap)
sentiment = 0.03
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DistillConfig"]

#: The chain-of-thought instruction given to the teacher for reasoning subtypes.
COT_PROMPT = (
    "Think through the problem step by step before answering. Then write the final answer alone "
    "on the last line, after 'Final answer:'."
)


@dataclass(frozen=True)
class DistillConfig:
    """``[distill]``: sample production traffic, teacher it, fine-tune a LoRA student, gate, promote."""

    #: Where runs (datasets, teacher answers, adapters, manifests) live; None = ``<lake>/distill``.
    root: Path | None = None
    #: Task types to distil (the router gates the student per task type) and, optionally, subtypes.
    task_types: tuple[str, ...] = ("classification",)
    subtypes: tuple[str, ...] = ()
    #: Whose traffic trains the one student that then serves every tenant gated to it: tenant names, or
    #: ``["*"]`` to mix every tenant's prompts knowingly. Empty: the export refuses a window that holds more
    #: than one tenant (requests without a tenant are the tenant "(none)").
    tenants: tuple[str, ...] = ()
    # -- export --
    #: Requests exported per run, stratified by subtype (the article: 5,000-50,000).
    sample_size: int = 20_000
    #: How far back the export looks.
    window_days: float = 30.0
    #: MiniLM cosine similarity at which two queries are near duplicates (0 = exact duplicates only).
    near_duplicate_threshold: float = 0.95
    #: Share of each subtype held out as the eval set (0.10-0.15).
    eval_fraction: float = 0.12
    #: MiniLM cosine at which two questions are one cluster for the train/eval split (connected components;
    #: whole clusters are held out or trained on, so a paraphrase of an eval question is not trained on).
    #: 0.80: 95 % of paraphrase pairs of the demo's FAQ banks are above it, every pair of different
    #: questions at most 0.68 (docs/distill.md). 0 = only the exact same conversation is kept together.
    split_cluster_threshold: float = 0.80
    #: Queries shorter than this many characters are dropped ("empty").
    min_query_chars: int = 3
    #: A ``module:function`` called with each query: returns the cleaned text, or None to drop it ("pii").
    pii_hook: str = ""
    seed: int = 0
    # -- teacher --
    #: Tier whose model answers (empty ``teacher_model``: the first [[pricing.models]] of that tier).
    teacher_tier: str = "frontier"
    teacher_model: str = ""
    #: Message Batches API at the batch price; falls back to synchronous calls where batches are refused.
    batch: bool = True
    #: Subtypes / task types answered with chain-of-thought, the final answer after ``final_answer_marker``.
    reasoning_subtypes: tuple[str, ...] = ()
    reasoning_task_types: tuple[str, ...] = ("complex_reasoning",)
    cot_prompt: str = COT_PROMPT
    final_answer_marker: str = "Final answer:"
    max_tokens: int = 1024
    # -- train (LoRA SFT; the article's defaults) --
    #: The base model: a local folder, or a hub id when the machine is online.
    base_model: str = ""
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    #: Extra modules trained in full and saved with the adapter (e.g. "lm_head" for a new tokenizer).
    modules_to_save: tuple[str, ...] = ()
    epochs: float = 3.0
    learning_rate: float = 2e-4
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    warmup_ratio: float = 0.03
    max_seq_len: int = 1024
    #: Checkpoints kept while training (a killed run resumes from the last).
    save_total_limit: int = 2
    #: Torch threads for training, eval and serving (process-wide); 0 leaves torch's default.
    torch_threads: int = 0
    #: Where eval and ``costline distill serve`` run the student: "auto" (CUDA when torch sees a GPU,
    #: else CPU), "cpu", "cuda" or "cuda:N". Training follows the Trainer's own choice (CUDA when present).
    device: str = "auto"
    # -- eval and gate --
    max_new_tokens: int = 256
    #: Largest tolerated mean teacher-student gap per subtype (drift's metrics: 1 - score for exact/cosine)...
    max_gap: float = 0.05
    #: ...or per subtype.
    thresholds: dict[str, float] = field(default_factory=dict)
    #: A subtype passes when the one-sided upper confidence bound of its gap is within its threshold
    #: (non-inferiority): Clopper-Pearson for exact match, Student's t for cosine; at this level per subtype.
    gate_confidence: float = 0.95
    #: A subtype with fewer held-out items than this fails the gate (too little evidence). For exact match
    #: the bound itself needs more: a perfect student needs ceil(ln(1 - gate_confidence) / ln(1 - threshold))
    #: items (59 at threshold 0.05 and 95 %), and the gate says so when a subtype has fewer.
    min_eval_per_subtype: int = 20
    # -- promote --
    #: The LoRA module name the student is served under (vLLM --lora-modules NAME=PATH).
    adapter_name: str = "costline-student-lora"
    # -- ROI --
    #: GPU hours one fine-tuning run takes and their price; re-distillation every this many days.
    train_gpu_hours: float = 2.0
    train_gpu_usd_per_hour: float = 2.74
    redistill_every_days: float = 30.0
    # -- re-distillation --
    #: `costline jobs nightly` exports fresh traffic of the subtypes the drift job flags.
    redistill_on_drift: bool = False


#: This area's config section, found by costline.areas: [distill] in costline.toml and
#: COSTLINE_DISTILL_* variables fill it, `config.distill` reads it.
SECTION = "distill"
SETTINGS = DistillConfig
