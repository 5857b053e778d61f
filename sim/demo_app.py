"""The demo's application: simulated traffic through the real serving path.

:class:`DemoApp` is what a support-and-operations assistant of several tenants would run:
every :class:`~costline.sim.traffic.ServingRequest` goes through
:meth:`costline.serving.pipeline.Pipeline.answer` — the rule router (classification gated to
the student), a real :class:`~costline.serving.cache.semantic.SemanticCache` (FAISS, MiniLM embeddings,
one index per tenant, TTL on the simulated clock) for FAQ questions, and real HTTP calls
through the ``anthropic`` and ``openai`` SDKs to the local
:class:`~costline.sim.standin.StandInServer` with escalation when the app's validator or
the model's confidence says no. Spans are recorded by :class:`~costline.collectors.Recorder`
on a :class:`SimClock`, so days of traffic run in a minute.

The app grounds FAQ answers in a document: the prompt names the document and the version it
holds (so the stand-in's answer differs per version), and the answer is cached with that
version's hash. :class:`~costline.sim.traffic.DocEvent` s change documents and invalidate cached
answers; a cache hit whose answer was built from an older version than the one the app holds
is a **stale answer** and is counted (:attr:`DemoStats.stale`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from costline.collectors import Recorder
from costline.config import Config
from costline.sim.traffic import DocEvent, ErrorBurst, ServingRequest, demo_rules, doc_hash, question_of

__all__ = ["SimClock", "DemoValidator", "DemoStats", "DemoApp", "demo_serving_config", "FAQ_NAMESPACE",
           "faq_prompt", "start_standin", "document_text"]

log = logging.getLogger(__name__)

#: The cache namespace of FAQ answers.
FAQ_NAMESPACE = "faq"
_PRIMER = "\x00primer"
#: The app marks its document blocks for Anthropic's 1-hour prompt cache (``"ttl": "1h"``).
PROMPT_CACHE_TTL_S = 3600.0


def _silent_provider() -> Any:
    """A tracer provider that exports nothing (for traffic that is not part of the record)."""
    from opentelemetry.sdk.trace import TracerProvider

    return TracerProvider()


class SimClock:
    """A settable clock (ns since the epoch) for traffic of simulated days.

    :meth:`set` pins it; :meth:`start` sets it and lets it run with the wall clock from there
    (so the work of a request takes the time it really took); :meth:`advance` moves it on (the
    stand-in's simulated model latency is an ``advance``, not a sleep). Readings never go back
    while it runs or advances.
    """

    def __init__(self, *, real: Callable[[], int] = time.perf_counter_ns) -> None:
        self.ns = 0
        self._real = real
        self._t0: int | None = None
        self._lock = threading.Lock()

    def set(self, ts: datetime) -> None:
        with self._lock:
            self.ns = int(ts.timestamp() * 1_000_000) * 1000
            self._t0 = None

    def start(self, ts: datetime) -> None:
        with self._lock:
            self.ns = int(ts.timestamp() * 1_000_000) * 1000
            self._t0 = self._real()

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.ns += max(int(seconds * 1e9), 0)

    def __call__(self) -> int:
        with self._lock:
            return self.ns if self._t0 is None else self.ns + (self._real() - self._t0)

    def seconds(self) -> float:
        """The time in seconds since the epoch (what the semantic cache's ``now`` takes)."""
        return self() / 1e9


class DemoValidator:
    """The app's check of an answer, as apps have them: cheap, and not perfect.

    It knows what a correct answer looks like for the prompt it sent (the stand-in's reference
    tag, :func:`~costline.sim.standin_model.reference_validator`), but like a schema or
    consistency check it catches only ``catch_rate`` of the wrong answers (which ones is a
    deterministic hash of the answer). What slips through is served — and, for the student,
    is what the nightly drift job exists to find.
    """

    def __init__(self, catch_rate: float = 0.5) -> None:
        if not 0.0 <= catch_rate <= 1.0:
            raise ValueError(f"catch_rate must be in [0, 1], got {catch_rate}")
        self.catch_rate = catch_rate

    def __call__(self, prompt_text: str, answer: str) -> bool:
        from costline.sim.standin_model import reference_validator

        if reference_validator(prompt_text, answer):
            return True
        digest = hashlib.blake2b(answer.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64 >= self.catch_rate  # True: it slipped through


@dataclass
class DemoStats:
    """What the app saw (the lake says the same from the spans)."""

    requests: int = 0
    lookups: int = 0
    hits: int = 0
    #: Hits on a different wording than the stored question (paraphrases the cache matched).
    semantic_hits: int = 0
    #: Hits whose stored question is *another* question of the traffic (sim.traffic.question_of): wrong answers
    #: the cache served, by the traffic's own labels (the verification stage's failures, docs/cache.md).
    other_question_hits: int = 0
    #: Cache hits whose answer was built from an older version of the document than the app's.
    stale: int = 0
    #: Stale answers per document, and those served after that version was invalidated (must be 0).
    stale_by_doc: Counter[str] = field(default_factory=Counter)
    stale_after_invalidation: int = 0
    calls: int = 0
    escalated: int = 0
    failed: int = 0
    by_tier: Counter[str] = field(default_factory=Counter)
    #: Spans recorded: requests, lookups and call attempts.
    spans: int = 0
    #: Bursts of API errors injected, and model calls that failed after the SDK's retries.
    error_bursts: int = 0
    call_errors: int = 0
    #: One line per document event, for the console.
    events: list[str] = field(default_factory=list)


def demo_serving_config(config: Config, standin: Any) -> Config:
    """``config`` with every tier pointed at ``standin`` and the demo's routing rules: the student
    gated for classification, analysis on the upper tier. The simulated cache never joins a replication topic
    the config names (its answers are the stand-in's, on simulated days)."""
    s = config.serving
    rules = demo_rules(s.router.rules)
    serving = dataclasses.replace(
        s,
        cache=dataclasses.replace(s.cache, replication_topic=None),
        backends=dataclasses.replace(s.backends, anthropic_base_url=standin.url, student_base_url=standin.openai_url),
        router=dataclasses.replace(s.router, policy="rules", rules=rules),
    )
    return config.replace(serving=serving)


def faq_prompt(request: ServingRequest) -> str:
    """What the model is asked for an FAQ question: grounded in the document version the app holds."""
    return (f"Answer the customer from our {request.doc_id} document, version {request.doc_version}.\n\n"
            f"Question: {request.query}")


_CLAUSES = (
    "Customers may contact support by chat or email at any time and get an answer within one working day.",
    "Orders are packed within two working days and handed to the carrier with a tracking number.",
    "Items may be returned within thirty days of delivery when they are unused and in their original box.",
    "Refunds go back to the original payment method within five working days of the return arriving.",
    "A replacement is sent at no cost when an item arrives damaged, incomplete or not as described.",
    "Accounts are protected by a password and, when the customer turns it on, a one-time code.",
    "Invoices are available in the account area for seven years and can be downloaded as PDF files.",
    "Prices include VAT where it applies; business customers may add a VAT number to their invoices.",
)


@functools.lru_cache(maxsize=64)
def document_text(doc_id: str, version: int) -> str:
    """The text of a version of a tenant's document (~1,100 tokens): what FAQ answers are grounded
    in, sent as a prompt-cached system block so repeated questions read it from the prompt cache."""
    head = f"{doc_id} version {version}. This document is the reference for every answer to customers."
    body = " ".join(f"Section {i + 1}.{j + 1}: {clause}" for i in range(6) for j, clause in enumerate(_CLAUSES))
    return f"{head} {body} End of {doc_id} version {version}."


class _WatchedCache:
    """The semantic cache, remembering the last hit (its doc hashes tell a stale answer)."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache
        self.last_hit: Any = None

    def lookup(self, query: str, *, tenant: str, namespace: str | None = None) -> Any:
        self.last_hit = None
        self.last_hit = self.cache.lookup(query, tenant=tenant, namespace=namespace)
        return self.last_hit

    def store(self, query: str, answer: str, *, tenant: str, namespace: str | None = None,
              doc_hashes: Sequence[str] = ()) -> Any:
        return self.cache.store(query, answer, tenant=tenant, namespace=namespace, doc_hashes=doc_hashes)


class DemoApp:
    """Sends :class:`ServingRequest` s through ``Pipeline.answer`` and applies :class:`DocEvent` s.

    ``recorders`` maps a name to a :class:`Recorder` (all on ``clock``); ``recorder_for(tenant)``
    picks the name (default: the first). ``standin`` is a started
    :class:`~costline.sim.standin.StandInServer`. The cache uses ``config.serving.cache``
    with ``clock`` as its time.
    """

    def __init__(
        self,
        config: Config,
        *,
        recorders: Mapping[str, Recorder],
        clock: SimClock,
        standin: Any,
        embedder: Any,
        recorder_for: Callable[[str], str] | None = None,
        validator: Callable[[str, str], bool] | None = None,
    ) -> None:
        from costline.serving.cache.semantic import SemanticCache
        from costline.serving.pipeline import Pipeline

        if not recorders:
            raise ValueError("give at least one recorder")
        self.config = demo_serving_config(config, standin)
        self.clock = clock
        self.standin = standin
        self.embedder = embedder
        self.cache = SemanticCache(embedder, self.config.serving.cache, now=clock.seconds)
        self._watched = _WatchedCache(self.cache)
        first = next(iter(recorders))
        self._recorder_for = recorder_for or (lambda _tenant: first)
        #: The app's check of an answer: ``check(prompt_text, answer_text) -> bool``.
        self.check = validator or DemoValidator()
        self._prompt_text = ""
        # Per recorder: a pipeline with the cache (FAQ) and one without, sharing SDK clients.
        self._pipes: dict[str, tuple[Any, Any]] = {}
        for name, recorder in recorders.items():
            cached = Pipeline.from_config(self.config, recorder=recorder, cache=self._watched,
                                          validator=self._validate, env={})
            plain = Pipeline(router=cached.router, backends=cached.backends, recorder=recorder,
                             validator=self._validate, escalation=cached.escalation)
            self._pipes[name] = (cached, plain)
        silent = Recorder(_silent_provider())  # the day before the demo: not recorded
        primer = Pipeline.from_config(self.config, recorder=silent, cache=self._watched, validator=self._validate,
                                      env={})
        self._pipes[_PRIMER] = (primer, primer)
        self.stats = DemoStats()
        self._invalidated: set[str] = set()  # doc hashes dropped from the cache
        self._versions: dict[str, tuple[str, int]] = {}  # doc hash -> (doc id, version)

    # -- the app ------------------------------------------------------------------------------
    def warm(self, texts: Iterable[str]) -> int:
        """Embed the FAQ texts ahead of the traffic, in batches (the embedder's memo keeps them)."""
        warm = getattr(self.embedder, "warm", None)
        return warm(texts) if warm is not None else 0

    def prime(self, requests: Iterable[ServingRequest]) -> int:
        """Answer earlier traffic without recording it (fills the cache as the app's previous days
        did); returns how many cached answers that left. :attr:`stats` are not touched."""
        stats, pick = self.stats, self._recorder_for
        self.stats, self._recorder_for = DemoStats(), (lambda _tenant: _PRIMER)
        try:
            for request in requests:
                self.answer(request)
        finally:
            self.stats, self._recorder_for = stats, pick
        return len(self.cache)

    def run(self, items: Iterable[ServingRequest | DocEvent | ErrorBurst], *,
            progress: Callable[[int], None] | None = None) -> DemoStats:
        for item in items:
            self.handle(item)
            if progress is not None and isinstance(item, ServingRequest):
                progress(1)
        return self.stats

    def handle(self, item: ServingRequest | DocEvent | ErrorBurst) -> Any:
        if isinstance(item, DocEvent):
            return self.apply(item)
        if isinstance(item, ErrorBurst):
            self.standin.inject_errors(item.status, item.count)
            self.stats.error_bursts += 1
            return None
        return self.answer(item)

    def apply(self, event: DocEvent) -> int:
        """Apply a document event; returns how many cached answers it dropped."""
        self.clock.set(event.at)
        if event.kind == "update":
            self.stats.events.append(f"{event.at:%Y-%m-%d %H:%M} {event.doc_id} changed to version {event.version}")
            return 0
        if event.kind != "invalidate":
            raise ValueError(f"unknown document event {event.kind!r}")
        removed = self.cache.invalidate_by_doc(event.doc_hash)
        self._invalidated.add(event.doc_hash)
        stale = self.stats.stale_by_doc.get(event.doc_id, 0)
        self.stats.events.append(
            f"{event.at:%Y-%m-%d %H:%M} {event.doc_id} version {event.version} invalidated: {removed} cached "
            f"answers dropped" + (f", after {stale} stale answers were served" if stale else ""))
        return removed

    def answer(self, request: ServingRequest) -> Any:
        """Answer one request through the pipeline (the clock runs from ``request.at``)."""
        from costline.serving.backends import Prompt

        self.clock.start(request.at)
        cached, plain = self._pipes[self._recorder_for(request.tenant)]
        if request.doc_id:
            self._versions.setdefault(doc_hash(request.doc_id, request.doc_version),
                                      (request.doc_id, request.doc_version))
        prompt = None
        self._prompt_text = request.query
        if request.doc_id:
            self._prompt_text = faq_prompt(request)
            system = [{"type": "text", "text": document_text(request.doc_id, request.doc_version),
                       "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
            prompt = Prompt.of(self._prompt_text, system=system)
        pipe = cached if request.cacheable else plain
        answer = pipe.answer(
            request.query, task_type=request.task_type, tenant=request.tenant, doc_hashes=request.doc_hashes,
            namespace=FAQ_NAMESPACE if request.cacheable else None, subtype=request.subtype, prompt=prompt,
            request_id=request.request_id,
            # The document in the system prompt is tracked by doc_hashes (invalidation), not by the
            # cache key: the demo shows what a late invalidation costs (stale hits).
            cache_scope="",
        )
        self._count(request, answer)
        return answer

    def close(self) -> None:
        for cached, _plain in self._pipes.values():
            cached.close()

    # -- internals ----------------------------------------------------------------------------
    def _validate(self, _query: str, answer: str) -> bool:
        return self.check(self._prompt_text, answer)

    def _count(self, request: ServingRequest, answer: Any) -> None:
        s = self.stats
        s.requests += 1
        s.by_tier[answer.tier] += 1
        s.spans += 1 + int(request.cacheable) + len(answer.attempts)
        s.calls += len(answer.attempts)
        s.call_errors += sum(1 for a in answer.attempts if a.reply is None)
        s.escalated += int(answer.escalations > 0)
        s.failed += int(not answer.success)
        if request.cacheable:
            s.lookups += 1
        if not answer.cached:
            return
        s.hits += 1
        hit = self._watched.last_hit
        if hit is None:
            return
        stored = getattr(hit, "query", request.query)
        if stored != request.query:
            s.semantic_hits += 1
            if stored and question_of(stored) != question_of(request.query):
                s.other_question_hits += 1
        for h in getattr(hit, "doc_hashes", ()):
            doc, version = self._versions.get(h, (None, 0))
            if doc == request.doc_id and version < request.doc_version:
                s.stale += 1
                s.stale_by_doc[doc] += 1
                if h in self._invalidated:
                    s.stale_after_invalidation += 1
                break


def start_standin(config: Config, clock: SimClock, *, degrade_keywords: Sequence[str] = ("sarcasm",)) -> Any:
    """Start the local model APIs for the demo: the student degrades on ``degrade_keywords``, and
    each tier's latency is simulated by advancing ``clock`` (no real sleep), and its prompt cache
    lives on ``clock`` too, with the 1-hour TTL the app asks for on its document blocks."""
    from costline.serving.settings import StandInConfig
    from costline.sim.standin import StandInServer

    server = StandInServer(StandInConfig(port=0, latency_scale=1.0, degrade_keywords=tuple(degrade_keywords),
                                         retry_after_ms=1, cache_ttl_s=PROMPT_CACHE_TTL_S),
                           pricing=config.pricing, sleep=clock.advance, now=clock.seconds)
    server.start()
    return server


