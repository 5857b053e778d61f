"""``answer()``: route → semantic cache → tier (or student) with escalation, all traced.

::

    pipeline = Pipeline.from_config(config, recorder=recorder, cache=cache, validator=my_check)
    result = pipeline.answer("How do I reset my password?", task_type="faq", tenant="acme",
                             doc_hashes=("policy-v3",))
    result.text, result.tier, result.success

One ``costline.request`` span per call, with its ``costline.cache.lookup`` span and one
call span per attempt (the instrumented SDK clients record those). An answer that fails
the application's ``validator(query, text) -> bool``, or whose confidence is under
``[serving.escalation] min_confidence``, is retried on the next tier up, at most
``max_escalations`` times; so is a tier that still fails after the SDK's retries
(``on_error``), an empty answer (no text and no tool call: ``"empty"``) and a call of a tool
the request did not offer (``"unoffered_tool"``: a model, or a vLLM tool parser, making up a
call is no answer). The request span carries ``costline.attempts``, ``costline.escalations``,
the tier that finally answered and ``costline.success``. Accepted answers are stored in
the cache with their ``doc_hashes`` — only final ones (a natural end with some text: never an answer
cut off at ``max_tokens``, a tool call, a refusal or an empty one; :func:`cacheable`).

An answer the model declined to give (:func:`declined`: Anthropic's ``stop_reason`` "refusal", an OpenAI-compatible
server's ``finish_reason`` "content_filter") is served as it is — never sent up a tier (the same request would be
declined again, and paid again) and never cached — but the request is **no success**: ``costline.success`` false,
and ``costline.rejected_attempts`` says why (``budget:refusal``), so cost per successful request does not count it as
a delivered answer. An answer cut off at ``max_tokens`` stays a success (an app that asks for ``max_tokens=1`` to get
a label wants exactly that).

The cache is keyed on the query (matched semantically) *and* the request's scope (matched
exactly: system prompt, earlier turns, tools, generation parameters; see
:mod:`costline.serving.cache.key`), folded into the namespace the cache sees.

A request may bypass the cache (``cache_bypass``, the reason): :data:`BYPASS_NO_CACHE` (``Cache-Control: no-cache``)
is answered by a model, never from the cache, and its accepted answer is stored as any other — added beside what the
cache held for the same question, and served before it (of equally similar entries the cache serves the newest
first), so the regenerated answer is what a later asker gets; :data:`BYPASS_NO_STORE` (``Cache-Control: no-store``)
and :data:`BYPASS_SAMPLED` (``[serving.cache] bypass_sampled`` and a request that asks for sampling) are neither
looked up nor stored. A bypassed request opens no ``costline.cache.lookup`` span (the hit rates, computed from lookup
spans, do not count it as a miss); its request span says why (``costline.cache.bypass``).

:meth:`Pipeline.answer_stream` is ``answer()`` for a client that streams: when the routed
tier's answer cannot be sent up a tier (:meth:`Pipeline.streams_live`: no validator and no
confidence gate, or no tier above it to escalate to) it returns a :class:`LiveAnswer` whose
text comes as the model writes it; otherwise the settled :class:`Answer`.
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
from contextlib import nullcontext
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from costline import contract
from costline.collectors import Recorder
from costline.config import Config
from costline.serving.backends import PAUSE_TURN, Backend, Prompt, Reply, build_backends
from costline.serving.cache.key import (COSTLINE_CACHE_BYPASS, COSTLINE_CACHE_REJECT_REASON, is_final,
                                        scope_of_prompt, scoped_namespace, split_namespace)
from costline.serving.errors import BackendError, RoutingError
from costline.serving.embeddings import EmbeddingsUpstream
from costline.serving.registry import ModelRegistry
from costline.serving.routing.router import Router, RoutingPolicy, build_policy, request_chars
from costline.serving.settings import EscalationConfig
from costline.serving.structured import BUDGET_EXCEEDED, SCHEMA_PROBLEM, OutputFormat
from costline.textutil import well_formed  # re-exported (serving's callers import it from here)
from costline.serving.confidence import mentions_confidence, parse_confidence
from costline.serving.translate import anthropic_defined

__all__ = [
    "AnswerCache",
    "BYPASS_NO_CACHE",
    "BYPASS_NO_STORE",
    "BYPASS_SAMPLED",
    "CacheHit",
    "Validator",
    "ConfidenceFn",
    "Attempt",
    "Answer",
    "LiveAnswer",
    "Pipeline",
    "DECLINED_STOP_REASONS",
    "cacheable",
    "declined",
    "well_formed",
]

log = logging.getLogger(__name__)

#: The cache namespace of a lookup without one (as costline.serving.cache.semantic names it).
DEFAULT_NAMESPACE = "default"

#: Why a request bypassed the cache (``cache_bypass``): the client's ``Cache-Control: no-cache`` (not answered from
#: the cache; its answer stored), ``Cache-Control: no-store`` (neither), or ``[serving.cache] bypass_sampled`` with a
#: request that explicitly asks for sampling (neither).
BYPASS_NO_CACHE = "no-cache"
BYPASS_NO_STORE = "no-store"
BYPASS_SAMPLED = "sampled"
BYPASSES = (BYPASS_NO_CACHE, BYPASS_NO_STORE, BYPASS_SAMPLED)

#: The application's check of an answer: ``validator(query, answer_text) -> bool``.
Validator = Callable[[str, str], bool]
#: How sure the model was, from its reply; None when the reply says nothing.
ConfidenceFn = Callable[[Reply], "float | None"]

#: An attempt's problem when its answer has no text and no tool call (a vLLM ``content: null`` with only its
#: ``reasoning_content``, an empty ``content``): nothing was answered, so it goes up a tier.
EMPTY = "empty"
#: An attempt's problem when its answer calls a tool the request did not offer (a model writing a ``<tool_call>``
#: that a vLLM tool parser extracts, with no tools or another tool's name): no answer, and never the client's to run.
UNOFFERED_TOOL = "unoffered_tool"
#: The problems of an answer that is no answer (the model misbehaved), and what each means to a client.
_NO_ANSWER = {UNOFFERED_TOOL: "answered with a call of a tool the request did not offer",
              EMPTY: "answered with an empty answer"}
#: The stop reason of an Anthropic answer one of the request's stop sequences ended (:func:`cacheable`).
_STOP_SEQUENCE = "stop_sequence"
#: The stop reason of a model that declined to answer: its (possibly empty) answer is judged as any other text, never
#: as an empty one (sent up a tier, the same request would be declined again, and paid again).
_REFUSAL = "refusal"
#: The stop reasons of an answer the model declined to give: Anthropic's "refusal" (its classifiers stopped the
#: answer) and an OpenAI-compatible server's "content_filter" (OpenAI's and Azure's filters). Served, never escalated
#: nor cached, and the request is no success (:func:`declined`); the stop reason is the rejected attempt's problem.
DECLINED_STOP_REASONS = frozenset({_REFUSAL, "content_filter"})
#: Anthropic's server tools (run inside its API: their calls come as ``server_tool_use`` blocks, never ``tool_use``):
#: offered in ``tools`` with a type of these names and a version date (``web_search_20250305``). A ``tool_use`` of
#: their name is not a call the client can run.
_SERVER_TOOL_TYPES = ("web_search_", "web_fetch_", "code_execution_", "tool_search_tool_")
#: What a log may say of why a structured answer failed its format: the fixed start of each of
#: :meth:`OutputFormat.problem`'s texts. The rest (jsonschema's message, the path of keys) quotes the answer, so it is
#: never logged; a text that starts with none of these is logged as the last one.
_PROBLEM_KINDS = ("the answer is not valid JSON", "the answer is not a JSON object",
                  "the answer does not follow the schema", "the answer could not be checked against the schema",
                  "the schema refers to itself without end", BUDGET_EXCEEDED, "the answer does not follow its format")


def _problem_kind(problem: str) -> str:
    """The content-free kind of an :meth:`OutputFormat.problem` text (one of :data:`_PROBLEM_KINDS`)."""
    return next((k for k in _PROBLEM_KINDS if problem.startswith(k)), _PROBLEM_KINDS[-1])


@runtime_checkable
class CacheHit(Protocol):
    answer: str
    similarity: float


@runtime_checkable
class AnswerCache(Protocol):
    """What the pipeline needs of a semantic cache (costline.serving.cache.semantic implements it)."""

    def lookup(self, query: str, *, tenant: str, namespace: str | None = None) -> CacheHit | None: ...

    def store(self, query: str, answer: str, *, tenant: str, namespace: str | None = None,
              doc_hashes: Sequence[str] = ()) -> Any: ...




def cacheable(reply: Reply) -> bool:
    """True for an answer worth serving again from the cache: a natural end (:func:`is_final`) with some
    text. A model that ends its turn with no text (empty ``content``, a vLLM ``content: null``) answered
    nothing: stored, it would be served, empty, to every similar question after it.
    An answer a stop sequence ended (``stop_reason`` "stop_sequence") is not stored either: a cache hit is served as
    ``end_turn`` with no ``stop_sequence``, and the client would lose which of its sequences stopped it."""
    return (is_final(reply.stop_reason) and reply.stop_reason != _STOP_SEQUENCE and bool(reply.text.strip())
            and not reply.tool_calls)


def declined(reply: Reply) -> str | None:
    """The stop reason of ``reply`` when the model declined to answer (:data:`DECLINED_STOP_REASONS`), else None.
    Such an answer is the client's to get, but no successful request: what it cost buys no answer."""
    return reply.stop_reason if reply.stop_reason in DECLINED_STOP_REASONS else None


def marker_confidence(reply: Reply) -> float | None:
    """The default :data:`ConfidenceFn`: a trailing ``(confidence: 0.87)`` marker in the text. The pipeline ignores
    it when the request's turns mention confidence (:func:`~costline.serving.confidence.mentions_confidence`: the
    end user may have asked for the marker, and so set what the request costs)."""
    return parse_confidence(reply.text)


def offered_tools(prompt: Prompt | None) -> frozenset[str]:
    """The names of the tools a ``tool_use`` block of the answer to ``prompt`` may call: its custom tools and
    Anthropic-defined client tools (bash, text editor, computer...); not its server tools (web search...), whose calls
    are the API's own blocks."""
    if prompt is None:
        return frozenset()
    names = set()
    for tool in prompt.tools:
        if not isinstance(tool, Mapping) or not isinstance(tool.get("name"), str):
            continue
        if anthropic_defined(tool) and str(tool.get("type")).startswith(_SERVER_TOOL_TYPES):
            continue
        names.add(tool["name"])
    return frozenset(names)


@dataclass(frozen=True)
class Attempt:
    tier: str
    model: str
    ok: bool
    #: Why it was not accepted: "validator", "low_confidence", or an SDK error class name.
    problem: str | None = None
    confidence: float | None = None
    reply: Reply | None = None


@dataclass(frozen=True)
class Answer:
    """What ``answer()`` returns."""

    text: str
    #: The tier that finally answered ("cache" for a cache hit).
    tier: str
    #: The model that answered (None for a cache hit).
    model: str | None
    routed_tier: str
    #: The request succeeded: its answer was accepted and is one (False for a refusal, :func:`declined`, which is
    #: still served, and when every tier failed).
    success: bool
    cached: bool = False
    similarity: float | None = None
    attempts: tuple[Attempt, ...] = ()
    request_id: str = ""
    reply: Reply | None = None
    reason: str = ""
    #: Why the cache was bypassed (:data:`BYPASSES`), "" when it was not (or the request would not have used it).
    cache_bypass: str = ""

    @property
    def escalations(self) -> int:
        return sum(1 for a, b in zip(self.attempts, self.attempts[1:]) if a.tier != b.tier)


class LiveAnswer:
    """An answer streamed as the model writes it (what :meth:`Pipeline.answer_stream` returns
    when no gate needs the whole answer first).

    Iterate it for the text pieces; :attr:`result` is the settled :class:`Answer` once the
    iteration ended (success false and :attr:`error` set when the model failed mid-answer:
    the pieces already given stand). A tier that fails before its first piece is escalated as
    ``answer()`` would (``on_error``), and so is one whose answer ended with nothing sent
    (:data:`EMPTY`); the answer of the tier above then comes in one piece and :attr:`buffered`
    is true. ``close()`` ends the request early (the client went away).
    """

    def __init__(self, tier: str, routed_tier: str, model: str | None) -> None:
        self.tier = tier
        self.routed_tier = routed_tier
        self.model = model
        self.request_id = ""
        self.cached = False
        #: Why the cache was bypassed (as :attr:`Answer.cache_bypass`).
        self.cache_bypass = ""
        self.buffered = False
        self.result: Answer | None = None
        self.error: BackendError | None = None
        self._pieces: Iterator[str] = iter(())

    def __iter__(self) -> Iterator[str]:
        return self._pieces

    def close(self) -> None:
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()


class Pipeline:
    """The library entry point: :meth:`answer`."""

    def __init__(
        self,
        *,
        router: Router,
        backends: Mapping[str, Backend],
        recorder: Recorder,
        cache: AnswerCache | None = None,
        validator: Validator | None = None,
        confidence: ConfidenceFn | None = marker_confidence,
        escalation: EscalationConfig | None = None,
        trace_lookups: bool = True,
        embeddings: EmbeddingsUpstream | None = None,
    ) -> None:
        #: Where the gateway forwards the apps' own embedding calls (None: not served).
        self.embeddings = embeddings
        self.router = router
        self.registry = router.registry
        self.backends = dict(backends)
        self.recorder = recorder
        self.cache = cache
        self.validator = validator
        self.confidence = confidence
        self.escalation = escalation or EscalationConfig()
        #: Open the ``costline.cache.lookup`` span here; False when the cache records its own
        #: (a ``SemanticCache`` built with ``recorder=``).
        self.trace_lookups = trace_lookups

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        recorder: Recorder,
        cache: AnswerCache | None = None,
        validator: Validator | None = None,
        confidence: ConfidenceFn | None = marker_confidence,
        policy: RoutingPolicy | None = None,
        env: Mapping[str, str] | None = None,
        trace_lookups: bool = True,
    ) -> "Pipeline":
        """Registry, policy and instrumented backends from ``config``."""
        registry = ModelRegistry.from_config(config)
        router = Router(policy or build_policy(config.serving), registry)
        backends = build_backends(registry, config.serving.backends, recorder, env=env)
        embeddings = (EmbeddingsUpstream(config.serving.backends, recorder, env=env)
                      if config.serving.backends.embeddings_base_url else None)
        return cls(router=router, backends=backends, recorder=recorder, cache=cache, validator=validator,
                   confidence=confidence, escalation=config.serving.escalation, trace_lookups=trace_lookups,
                   embeddings=embeddings)

    def close(self) -> None:
        if self.embeddings is not None:
            self.embeddings.close()
        for backend in self.backends.values():
            try:
                backend.close()
            except Exception:
                log.exception("costline: could not close the %s backend", backend.spec.name)

    def answer(
        self,
        query: str,
        *,
        task_type: str,
        tenant: str,
        doc_hashes: Sequence[str] = (),
        namespace: str | None = None,
        subtype: str | None = None,
        prompt: Prompt | None = None,
        request_id: str | None = None,
        cache_scope: str | None = None,
        semantic_cache: bool = True,
        cache_bypass: str = "",
    ) -> Answer:
        """Answer ``query`` as cheaply as the quality bar allows.

        ``prompt`` is what the models get (default: ``query`` as one user message);
        ``query`` is what is routed on and matched semantically in the cache. ``cache_scope``
        is the exact part of the cache key (:func:`~costline.serving.cache.key.scope_of_body`
        of the whole request); by default the scope of ``prompt`` (its system prompt, earlier
        turns and max_tokens), or none for a bare query. ``semantic_cache`` False: the cache is neither
        looked up nor stored to (a request without question text, whose ``query`` is only what it is routed on).
        ``cache_bypass``: why the request bypasses the cache (:data:`BYPASSES`; "" for none): not looked up, and stored
        to only for :data:`BYPASS_NO_CACHE`.
        """
        query = well_formed(query)
        decision = self._route(query, task_type, subtype, prompt)
        if cache_scope is None:
            cache_scope = scope_of_prompt(prompt) if prompt is not None else ""
        if cache_scope:
            namespace = scoped_namespace(namespace or DEFAULT_NAMESPACE, cache_scope)
        prompt = prompt or Prompt.of(query)
        # a request with tools (its answer may be a call, and depends on what the tools returned) or thinking
        # (its answer holds thinking blocks a client sends back): no cache
        cache = None if prompt.expects_blocks or not semantic_cache else self.cache
        bypass, cache = _bypassed(cache, cache_bypass)
        with self.recorder.request(task_type=task_type, tenant=tenant, subtype=subtype,
                                   request_id=request_id, routed_tier=decision.tier,
                                   route_reason=decision.reason,
                                   route_confidence=getattr(decision, "confidence", None)) as req:
            _say_bypass(req, bypass)
            if cache is not None and not bypass:
                hit = self._lookup(req, query, tenant, namespace)
                if hit is not None:
                    req.served_by(contract.TIER_CACHE)
                    req.accept()
                    return Answer(hit.answer, contract.TIER_CACHE, None, decision.tier, True, cached=True,
                                  similarity=float(hit.similarity), request_id=req.request_id,
                                  reason=decision.reason)
            attempts: list[Attempt] = []
            for tier in self.registry.ladder(decision.tier, self.escalation.max_escalations):
                attempt = self._attempt(tier, query, prompt)
                attempts.append(attempt)
                if not attempt.ok:
                    req.attempt_rejected(attempt.tier, attempt.problem)
                if attempt.ok:
                    assert attempt.reply is not None
                    why_not = _served(req, attempts)
                    if cache is not None and cacheable(attempt.reply):
                        self._store(query, attempt.reply.text, tenant, namespace, doc_hashes)
                    return Answer(attempt.reply.text, tier, attempt.reply.model, decision.tier, why_not is None,
                                  attempts=tuple(attempts), request_id=req.request_id, reply=attempt.reply,
                                  reason=why_not or decision.reason, cache_bypass=bypass)
                if attempt.reply is None and not self.escalation.on_error:
                    break
            last = _last_answer(attempts)
            problems = ", ".join(f"{a.tier}: {a.problem}" for a in attempts)
            req.reject(problems)
            if last is not None:
                req.served_by(last.tier)
            return Answer(last.reply.text if last and last.reply else "", last.tier if last else decision.tier,
                          last.model if last else None, decision.tier, False, attempts=tuple(attempts),
                          request_id=req.request_id, reply=last.reply if last else None, reason=problems,
                          cache_bypass=bypass)

    def streams_live(self, tier: str) -> bool:
        """True when an answer of ``tier`` is final as the model writes it, so it can be streamed
        token by token: no validator or confidence gate can send it up a tier (none is set, or
        ``tier`` has no tier above it within ``max_escalations``)."""
        gated = self.validator is not None or (self.confidence is not None and self.escalation.min_confidence > 0)
        return not gated or len(self.registry.ladder(tier, self.escalation.max_escalations)) <= 1

    def answer_stream(
        self,
        query: str,
        *,
        task_type: str,
        tenant: str,
        doc_hashes: Sequence[str] = (),
        namespace: str | None = None,
        subtype: str | None = None,
        prompt: Prompt | None = None,
        request_id: str | None = None,
        cache_scope: str | None = None,
        semantic_cache: bool = True,
        cache_bypass: str = "",
    ) -> "Answer | LiveAnswer":
        """:meth:`answer` for a client that streams: a :class:`LiveAnswer` when the routed tier
        :meth:`streams_live` (the cache is looked up first: a hit comes as one piece), else the
        settled :class:`Answer` (a gate may send the answer up a tier, so it has to be whole).
        Nothing is sent to a model before the LiveAnswer is iterated."""
        query = well_formed(query)
        decision = self._route(query, task_type, subtype, prompt)
        # tool calls and thinking blocks are whole before they are sent (the gateway writes them as the API's events);
        # a structured answer is checked against its format before it is accepted
        if not self.streams_live(decision.tier) or (prompt is not None and (
                prompt.expects_blocks or prompt.output_format is not None)):
            return self.answer(query, task_type=task_type, tenant=tenant, doc_hashes=doc_hashes,
                               namespace=namespace, subtype=subtype, prompt=prompt, request_id=request_id,
                               cache_scope=cache_scope, semantic_cache=semantic_cache, cache_bypass=cache_bypass)
        if cache_scope is None:  # the same exact part of the cache key as answer()
            cache_scope = scope_of_prompt(prompt) if prompt is not None else ""
        if cache_scope:
            namespace = scoped_namespace(namespace or DEFAULT_NAMESPACE, cache_scope)
        backend = self.backends.get(decision.tier)
        if backend is None:
            raise RoutingError(f"no backend for tier {decision.tier!r}: configure it under [serving.backends]")
        live = LiveAnswer(decision.tier, decision.tier, backend.spec.model)
        live.cache_bypass, cache = _bypassed(self.cache if semantic_cache else None, cache_bypass)
        live._pieces = _in_own_context(self._live(
            live, decision, query, prompt or Prompt.of(query), task_type=task_type, tenant=tenant,
            doc_hashes=doc_hashes, namespace=namespace, subtype=subtype, request_id=request_id, cache=cache))
        return live

    def route(self, query: str, task_type: str, subtype: str | None = None, prompt: Prompt | None = None) -> Any:
        """The router's decision for ``query`` (the tier :meth:`answer` would start at), without answering."""
        return self._route(well_formed(query), task_type, subtype, prompt)

    # -- internals -------------------------------------------------------------------------
    def _route(self, query: str, task_type: str, subtype: str | None = None, prompt: Prompt | None = None) -> Any:
        """The router's decision, on the query and the size of the whole request (``prompt``'s turns:
        :func:`~costline.serving.routing.router.request_chars`). When the policy reads MiniLM vectors and the cache
        embeds with the same model, the query is embedded once: here, by the cache's embedder, whose exact-text memo
        then answers the lookup's own embedding of it."""
        size = request_chars(prompt.messages) if prompt is not None else None
        embedder = getattr(self.cache, "embedder", None)
        if embedder is None or not self.router.reads_embeddings:
            return self.router.route(query, task_type, subtype=subtype, request_chars=size)
        try:
            embedding = embedder.encode([query])[0]
        except Exception:  # noqa: BLE001 - the policy embeds the query itself then
            log.exception("costline: could not embed the query for the router; it embeds it itself")
            embedding = None
        return self.router.route(query, task_type, embedding=embedding, subtype=subtype, request_chars=size)

    def _live(self, live: LiveAnswer, decision: Any, query: str, prompt: Prompt, *, task_type: str, tenant: str,
              doc_hashes: Sequence[str], namespace: str | None, subtype: str | None,
              request_id: str | None, cache: "AnswerCache | None") -> Iterator[str]:
        with self.recorder.request(task_type=task_type, tenant=tenant, subtype=subtype,
                                   request_id=request_id, routed_tier=decision.tier,
                                   route_reason=decision.reason,
                                   route_confidence=getattr(decision, "confidence", None)) as req:
            live.request_id = req.request_id
            _say_bypass(req, live.cache_bypass)
            if cache is not None and not live.cache_bypass:
                hit = self._lookup(req, query, tenant, namespace)
                if hit is not None:
                    req.served_by(contract.TIER_CACHE)
                    req.accept()
                    live.tier, live.model, live.cached = contract.TIER_CACHE, None, True
                    live.result = Answer(hit.answer, contract.TIER_CACHE, None, decision.tier, True, cached=True,
                                         similarity=float(hit.similarity), request_id=req.request_id,
                                         reason=decision.reason)
                    yield hit.answer
                    return
            tier = decision.tier
            backend = self.backends[tier]
            stream = getattr(backend, "stream", None)
            pieces = stream(prompt) if stream is not None else _whole(backend, prompt)
            parts: list[str] = []

            def go_up(first: Attempt, buffered: bool | None = None) -> Iterator[str]:
                """Nothing was sent yet: the whole answer of the tiers above ``first``, in one piece."""
                live.result = self._escalate_whole(req, decision, first, query, prompt, tenant, namespace, cache,
                                                   doc_hashes)
                live.tier, live.model = live.result.tier, live.result.model
                live.buffered = len(live.result.attempts) > 1 if buffered is None else buffered
                if live.result.text:
                    yield live.result.text

            try:
                while True:
                    try:
                        piece = next(pieces)
                    except StopIteration as done:
                        reply: Reply = done.value
                        break
                    parts.append(piece)
                    yield piece
            except GeneratorExit:  # the client went away mid-answer: the model's stream is closed too
                pieces.close()
                req.served_by(tier)
                req.reject("the client closed the stream before the answer ended")
                return
            except BackendError as exc:
                failed = Attempt(tier, backend.spec.model, False, exc.error_type)
                if parts or not self.escalation.on_error:  # too late (or not allowed) to escalate
                    req.attempt_rejected(tier, exc.error_type)
                    live.error = exc
                    req.reject(f"{tier}: {exc.error_type}")
                    req.served_by(tier)
                    live.result = Answer("".join(parts), tier, backend.spec.model, decision.tier, False,
                                         attempts=(failed,), request_id=req.request_id,
                                         reason=f"{tier}: {exc.error_type}")
                    return
                yield from go_up(failed, buffered=True)
                return
            ok, problem, confidence = self._judge(query, reply, None, prompt)
            attempt = Attempt(tier, reply.model, ok, problem, confidence, reply)
            if not ok and not "".join(parts):  # nothing was sent (an empty answer): it can still go up a tier
                yield from go_up(attempt)
                return
            if ok:
                why_not = _served(req, [attempt])
                if cache is not None and cacheable(reply):
                    self._store(query, reply.text, tenant, namespace, doc_hashes)
            else:
                req.served_by(tier)
                req.attempt_rejected(tier, problem)
                why_not = f"{tier}: {problem}"
                req.reject(why_not)
                if problem in _NO_ANSWER:  # after its text was sent: the client is told the answer failed
                    live.error = BackendError(tier, str(problem), _NO_ANSWER[str(problem)])
            live.model = reply.model
            live.result = Answer(reply.text, tier, reply.model, decision.tier, why_not is None, attempts=(attempt,),
                                 request_id=req.request_id, reply=reply, reason=why_not or decision.reason)

    def _escalate_whole(self, req: Any, decision: Any, failed: Attempt, query: str, prompt: Prompt, tenant: str,
                        namespace: str | None, cache: "AnswerCache | None", doc_hashes: Sequence[str]) -> Answer:
        """The rest of the ladder after a live tier failed before its first piece, as answer() does."""
        attempts = [failed]
        req.attempt_rejected(failed.tier, failed.problem)
        for tier in self.registry.ladder(decision.tier, self.escalation.max_escalations)[1:]:
            attempt = self._attempt(tier, query, prompt)
            attempts.append(attempt)
            if not attempt.ok:
                req.attempt_rejected(attempt.tier, attempt.problem)
            if attempt.ok:
                assert attempt.reply is not None
                why_not = _served(req, attempts)
                if cache is not None and cacheable(attempt.reply):
                    self._store(query, attempt.reply.text, tenant, namespace, doc_hashes)
                return Answer(attempt.reply.text, tier, attempt.reply.model, decision.tier, why_not is None,
                              attempts=tuple(attempts), request_id=req.request_id, reply=attempt.reply,
                              reason=why_not or decision.reason)
            if attempt.reply is None and not self.escalation.on_error:
                break
        last = _last_answer(attempts)
        problems = ", ".join(f"{a.tier}: {a.problem}" for a in attempts)
        req.reject(problems)
        req.served_by(last.tier if last is not None else attempts[-1].tier)
        return Answer(last.reply.text if last and last.reply else "", last.tier if last else attempts[-1].tier,
                      last.model if last else None, decision.tier, False, attempts=tuple(attempts),
                      request_id=req.request_id, reply=last.reply if last else None, reason=problems)

    def _attempt(self, tier: str, query: str, prompt: Prompt) -> Attempt:
        backend = self.backends.get(tier)
        if backend is None:
            raise RoutingError(f"no backend for tier {tier!r}: configure it under [serving.backends]")
        try:
            reply = backend.complete(prompt)
        except BackendError as exc:
            return Attempt(tier, backend.spec.model, False, exc.error_type)
        return self.judged(tier, reply, query, prompt)

    def judged(self, tier: str, reply: Reply, query: str, prompt: Prompt) -> Attempt:
        """The attempt ``tier``'s ``reply`` to ``prompt`` makes: its structured answer settled, then judged by the
        format, the validator and the confidence gate (an answer got some other way than :meth:`answer`: a batch's)."""
        fmt = prompt.output_format
        if fmt is not None and not reply.tool_calls:
            reply = _settled(reply, fmt)
        ok, problem, confidence = self._judge(query, reply, fmt, prompt)
        return Attempt(tier, reply.model, ok, problem, confidence, reply)

    def cache_namespace(self, cache_scope: str, namespace: str | None = None) -> str | None:
        """The namespace :meth:`answer` looks up and stores a request of ``cache_scope`` under."""
        return scoped_namespace(namespace or DEFAULT_NAMESPACE, cache_scope) if cache_scope else namespace

    def look_up(self, query: str, *, tenant: str, namespace: str | None) -> CacheHit | None:
        """A cache lookup as :meth:`answer` makes it, its span standalone in the current context (None: no cache)."""
        return None if self.cache is None else self._lookup(self.recorder, query, tenant, namespace)

    def keep(self, query: str, reply: Reply, *, tenant: str, namespace: str | None,
             doc_hashes: Sequence[str] = ()) -> None:
        """Store an accepted answer as :meth:`answer` does (when it is one the cache keeps)."""
        if self.cache is not None and cacheable(reply):
            self._store(query, reply.text, tenant, namespace, doc_hashes)

    def _judge(self, query: str, reply: Reply, fmt: OutputFormat | None = None,
               prompt: Prompt | None = None) -> tuple[bool, str | None, float | None]:
        """(accepted, why not, confidence) of one reply to ``prompt``: its structured-output format (``fmt``: valid
        JSON, valid against the schema), the validator, then the confidence gate.

        An answer that calls tools is accepted as it is when every call is of a tool ``prompt`` offered
        (:func:`offered_tools`): the gates read a final answer's text, and a call is not one. A call of any other
        tool (none offered, or another name) is :data:`UNOFFERED_TOOL`. A turn Anthropic paused (a server tool's
        long turn, ``stop_reason`` "pause_turn") is accepted too: the client sends it back to go on; sent up a tier
        instead, the searches it made would be paid for again. A refusal (:func:`declined`: Anthropic's "refusal",
        an OpenAI-compatible tier's "content_filter") is accepted as it is, with or without text: it is served but
        the request is no success, and no gate reads it — a refusal to a structured request is no JSON and may fail
        the validator, and sent up a tier for that it would be asked of every tier. Any other answer with no text
        (blank) is :data:`EMPTY`.

        The confidence of :func:`marker_confidence` is ignored (None) when the turns of ``prompt`` mention
        confidence (:func:`~costline.serving.confidence.mentions_confidence`)."""
        calls = reply.tool_calls
        if calls:
            offered = offered_tools(prompt)
            unoffered = [str(c.get("name"))[:64] for c in calls if c.get("name") not in offered]
            if unoffered:
                log.info("costline: the %s tier called a tool the request did not offer (%s): not an answer",
                         reply.tier, ", ".join(map(repr, unoffered)))
                return False, UNOFFERED_TOOL, None
            return True, None, None
        if reply.stop_reason == PAUSE_TURN or declined(reply) is not None:
            return True, None, None
        if not reply.text.strip():
            log.info("costline: the %s tier's answer is empty (stop reason %r)", reply.tier, reply.stop_reason)
            return False, EMPTY, None
        if fmt is not None:
            broken = fmt.problem(reply.text)
            if broken is not None:
                log.info("costline: the %s tier's structured answer failed: %s", reply.tier, _problem_kind(broken))
                return False, SCHEMA_PROBLEM, None
        confidence = None
        if self.confidence is not None:
            try:
                confidence = self.confidence(reply)
            except Exception:
                log.exception("costline: the confidence function failed; ignoring it")
            if (confidence is not None and self.confidence is marker_confidence and prompt is not None
                    and mentions_confidence(prompt.messages)):
                log.debug("costline: the request's turns mention confidence: the %s tier's confidence marker "
                          "is ignored", reply.tier)
                confidence = None
        if self.validator is not None:
            try:
                valid = bool(self.validator(query, reply.text))
            except Exception:
                log.exception("costline: the validator raised; treating the answer as invalid")
                valid = False
            if not valid:
                return False, "validator", confidence
        if confidence is not None and confidence < self.escalation.min_confidence:
            return False, "low_confidence", confidence
        return True, None, confidence

    def _lookup(self, req: Any, query: str, tenant: str, namespace: str | None) -> CacheHit | None:
        assert self.cache is not None
        shown = split_namespace(namespace or DEFAULT_NAMESPACE)[0]
        span = req.cache_lookup(namespace=shown) if self.trace_lookups else nullcontext()
        with span as lookup:
            reasons: tuple[str, ...] = ()
            best = None
            try:
                detail = getattr(self.cache, "lookup_detail", None)  # a SemanticCache says why it missed
                if detail is not None:
                    found = detail(query, tenant=tenant, namespace=namespace)
                    hit, best, reasons = found.hit, found.similarity, tuple(found.reject_reasons)
                else:
                    hit = self.cache.lookup(query, tenant=tenant, namespace=namespace)
            except Exception:  # a broken cache costs a model call, never the answer
                log.exception("costline: semantic cache lookup failed; answering without it")
                hit = None
            if lookup is not None:
                lookup.result(hit is not None, getattr(hit, "similarity", best))
                if reasons:
                    try:
                        lookup.span.set_attribute(COSTLINE_CACHE_REJECT_REASON, ",".join(reasons))
                    except Exception:  # telemetry never fails the answer
                        log.debug("costline: could not record the cache's reject reasons", exc_info=True)
        return hit

    def _store(self, query: str, text: str, tenant: str, namespace: str | None, doc_hashes: Sequence[str]) -> None:
        assert self.cache is not None
        try:
            self.cache.store(query, text, tenant=tenant, namespace=namespace, doc_hashes=tuple(doc_hashes))
        except Exception:  # a cache that cannot store must not fail the answer
            log.exception("costline: could not store an answer in the semantic cache")


def _bypassed(cache: "AnswerCache | None", bypass: str) -> "tuple[str, AnswerCache | None]":
    """(the bypass that applies, the cache to store to) of a request that would use ``cache`` (None: it would not,
    and no bypass applies). An unknown reason bypasses as :data:`BYPASS_NO_STORE` does: never served, never stored."""
    if cache is None or not bypass:
        return "", cache
    return bypass, cache if bypass == BYPASS_NO_CACHE else None


def _say_bypass(req: Any, bypass: str) -> None:
    """Say on the request span why the cache was bypassed (no lookup span is opened). Never raises."""
    if not bypass:
        return
    try:
        req.span.set_attribute(COSTLINE_CACHE_BYPASS, bypass)
    except Exception:  # noqa: BLE001 - telemetry never fails the answer
        log.debug("costline: could not record the cache bypass", exc_info=True)


def _served(req: Any, attempts: Sequence[Attempt]) -> str | None:
    """Record the last of ``attempts`` (accepted: it has a reply) as the answer of ``req``: a success, unless the model
    declined to answer (:func:`declined`). Then the answer is still served, but the request is no success and says
    why as a rejected attempt (``tier:refusal``, ``tier:content_filter``; the reason of its ``costline.reject`` event
    lists every attempt turned down, as a failed request's does). A turn Anthropic paused (``pause_turn``: a server
    tool's long turn, no answer yet) is served and no success either, with nothing turned down: the client sends it
    back to go on, and that request, which gets the answer, is the success — counted as two, one answer would cost
    half what it did per success. Returns that reason (None: a success)."""
    answer = attempts[-1]
    assert answer.reply is not None
    req.served_by(answer.tier)
    stop = declined(answer.reply)
    if stop is None and answer.reply.stop_reason == PAUSE_TURN:
        return f"{answer.tier}: {PAUSE_TURN}"
    if stop is None:
        req.accept()
        return None
    req.attempt_rejected(answer.tier, stop)
    reason = ", ".join([*(f"{a.tier}: {a.problem}" for a in attempts[:-1]), f"{answer.tier}: {stop}"])
    req.reject(reason)
    return reason


def _last_answer(attempts: Sequence[Attempt]) -> Attempt | None:
    """The last attempt with a reply to give when none was accepted; never a call of a tool the request did not
    offer (the client would be handed a call it cannot, or must not, run): with only such, none."""
    return next((a for a in reversed(attempts) if a.reply is not None and a.problem != UNOFFERED_TOOL), None)


def _settled(reply: Reply, fmt: OutputFormat) -> Reply:
    """``reply`` with its text as a structured answer is given (:meth:`OutputFormat.settle`: a fence unwrapped); its
    other blocks (thinking, a server tool's calls and results) kept. After a server tool (web search…), the answer
    is the text after its last result: what the model wrote before it searched ("I'll look that up") is dropped,
    and the answer's blocks stay as they came (their citations) unless settling changed the text."""
    blocks = reply.content
    last = max((i for i, b in enumerate(blocks) if str(b.get("type", "")).endswith("_tool_result")), default=None)
    final = reply.text if last is None else "".join(
        b["text"] for b in blocks[last + 1:] if b.get("type") == "text" and isinstance(b.get("text"), str))
    text = fmt.settle(final)
    if text == reply.text:
        return reply
    if last is not None and text == final:
        content = (*(b for b in blocks[:last + 1] if b.get("type") != "text"), *blocks[last + 1:])
    else:
        others = tuple(b for b in blocks if b.get("type") != "text")
        content = (*others, {"type": "text", "text": text}) if others else ()
    return dataclasses.replace(reply, text=text, content=content)


def _in_own_context(pieces: Generator[str, None, Any]) -> Iterator[str]:
    """``pieces``, each step run in a :mod:`contextvars` context of its own (a copy of the caller's now). The live
    path's generator holds its request open across its pieces (the OTel context made current when the request span
    opened, reset when it ends); a server takes each piece on whichever pool thread is free, so without its own
    context the reset ran in another context than the one it was made in ("Failed to detach context" logged on every
    live stream), and what the request made current reached the thread that ran the step. Here every step sees the
    request it opened (its call spans are its children) and nothing else does."""
    context = contextvars.copy_context()

    def steps() -> Iterator[str]:
        while True:
            try:
                piece = context.run(next, pieces)
            except StopIteration:
                return
            try:
                yield piece
            except GeneratorExit:  # closed (the client went away): closed in its own context too
                context.run(pieces.close)
                raise

    return steps()


def _whole(backend: Backend, prompt: Prompt) -> Generator[str, None, Reply]:
    """A backend without ``stream``: its whole answer as one piece."""
    reply = backend.complete(prompt)
    yield reply.text
    return reply
