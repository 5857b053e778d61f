"""``costline serve``: an HTTP gateway that speaks the Anthropic Messages API (and, on the same
pipeline, the OpenAI Chat Completions API: :mod:`costline.serving.gateway.openai_api`, and the OpenAI
Responses API: :mod:`costline.serving.gateway.responses_api`), served by
:mod:`costline.serving.gateway.asgi` (Starlette on uvicorn, the handlers below on a bounded thread pool).

An existing app changes only its ``base_url`` (``Anthropic(base_url="http://127.0.0.1:8787")``)
and gets routing, the semantic cache, escalation and telemetry: ``POST /v1/messages`` runs
:meth:`Pipeline.answer <costline.serving.pipeline.Pipeline.answer>` and answers with an
Anthropic-shaped message whose ``model`` is the model that answered (``costline-cache`` for a
cache hit). The request's ``model`` is ignored: the router picks.

* who and which tenant (:mod:`costline.serving.gateway.auth`, docs/security.md): with API keys configured
  (``costline keys add``) every request needs one (``x-api-key`` or ``Authorization: Bearer``) and
  the key decides the tenant (a different ``x-costline-tenant`` or ``metadata.tenant`` is refused);
  open on loopback without keys (development), the header ``x-costline-tenant`` names it, else
  ``[serving.gateway] default_tenant``; ``trusted_tenant_header`` lets a reverse proxy set it;
* browsers: a request with a foreign ``Origin`` or a non-JSON ``Content-Type`` is refused
  (``allowed_origins`` opens CORS); limits: body and header size, timeouts, workers (503), rate (429);
* task type: header ``x-costline-task-type`` (or ``metadata.task_type``), else ``default_task_type``;
* document hashes for cache invalidation: header ``x-costline-doc-hashes`` (comma-separated; at most
  :data:`~costline.serving.cache.semantic.MAX_DOC_HASHES` of at most :data:`MAX_DOC_HASH_CHARS` characters each,
  over every line of it: more is a 400
  in the route's own error format on every route, batches included — never cut short, so an invalidation never
  misses an answer — :func:`doc_hashes_of`);
* opting out of the semantic cache: the request header ``Cache-Control`` (:func:`cache_bypass_of`): ``no-cache`` is
  answered by a model, never from the cache, and its answer is stored (a "regenerate" button: later askers get the new
  answer); ``no-store`` is neither looked up nor stored; with ``[serving.cache] bypass_sampled`` a request that
  explicitly asks for sampling (``temperature`` above 0, ``top_p`` under 1, ``top_k``) is neither either. A bypassed
  request is answered with ``x-costline-cache-bypass`` (the reason) beside ``x-costline-cache-hit: false``;
* generation parameters reach the tiers whose API takes them (``messages_api.SAMPLING_FIELDS``), and the fields of
  ``messages_api.PASSTHROUGH_FIELDS`` and the ``anthropic-beta`` header reach Anthropic tiers as they came;
* structured outputs (``output_config.format``) reach every tier in its API's shape, and every answer is checked
  against the schema before it is accepted (:mod:`costline.serving.structured`): one that is not valid goes up a
  tier; a ``stream: true`` one is buffered;
* tools (custom tools, ``tool_choice``, ``tool_use`` / ``tool_result`` turns) reach the routed tier, translated
  for an OpenAI-compatible one (:mod:`costline.serving.translate`), and ``thinking`` reaches Anthropic tiers; such
  a request is routed on its question, never cached, and a ``stream: true`` one is buffered; an answer that calls
  a tool is not judged by the validator or the confidence gate;
* ``document`` and ``search_result`` blocks reach Anthropic tiers as they came, and an OpenAI-compatible tier as text
  when it can read them (:func:`~costline.serving.translate.document_text`); a PDF, or one that asks for citations,
  fails that tier (escalated). An answer's ``citations`` come back on its text blocks (streamed: ``citations_delta``);
  a request that asks for citations is never cached and is buffered when streamed;
* ``POST /v1/messages/count_tokens`` counts on the routed tier's model (the nearest Anthropic tier up its ladder);
* ``POST /model/{modelId}/invoke``, ``…/invoke-with-response-stream``, ``…/converse`` and ``…/converse-stream``: the
  same for apps on Claude through Amazon Bedrock (``AnthropicBedrock``, boto3's ``invoke_model`` and ``converse``), in
  Bedrock's shapes (:mod:`~costline.serving.gateway.bedrock_api`);
* a request whose last user turn has no text (only an image or a document: the instruction is in the system prompt)
  is answered: routed on its system prompt's text, never looked up in or stored to the semantic cache (it has no
  question text to match on);
* a body field the Messages API does not have is refused (400 "<field>: Extra inputs are not permitted"), and so is
  one it has that the gateway cannot carry to its tiers (``messages_api.UNCARRIED_FIELDS``: ``mcp_servers``,
  ``container``...): never ignored;
* response headers: ``x-costline-tier``, ``x-costline-routed-tier``, ``x-costline-attempts``,
  ``x-costline-escalations``, ``x-costline-success``, ``x-costline-cache-hit``, ``x-costline-request-id`` (and
  ``x-costline-cache-bypass`` when the cache was bypassed); the
  request id also as ``request-id`` (the ``anthropic`` SDK's ``_request_id``) and ``x-request-id`` (the ``openai``
  SDK's), on every answer, errors included (an error before the request had an id gets a fresh one), and as the
  ``request_id`` of an Anthropic error body;
* a refusal (``stop_reason: "refusal"``; an OpenAI-compatible tier's ``content_filter``) is answered as the tier gave
  it — never sent up a tier, never cached — with ``x-costline-success: false``: the request is recorded as no
  success (:func:`~costline.serving.pipeline.declined`; ``costline.rejected_attempts`` ``<tier>:refusal``). An
  answer cut at ``max_tokens`` is a success.

When every tier failed with an API error the gateway answers in Anthropic's error format
(429 ``rate_limit_error``, 529 ``overloaded_error`` or 500 ``api_error``); when the last tier answered with a call of a
tool the request did not offer or with nothing (and no tier gave an answer to hand on), 502 ``api_error`` saying so.

``stream: true`` gets the Messages API's server-sent events, in one of two modes named by the
``x-costline-stream-mode`` response header:

* ``live`` — token by token as the model writes them, when nothing can send the answer up a
  tier (:meth:`Pipeline.streams_live <costline.serving.pipeline.Pipeline.streams_live>`: no
  validator or confidence gate, or the routed tier is the top of its ladder), and for every
  cache hit. Headers go out with the first piece, so the outcome headers say what is known then
  (attempts 1, no ``x-costline-success``: the request span says the outcome, false for a refusal);
  ``message_delta`` carries the final usage. A model
  failing before its first piece is escalated as usual; failing mid-answer ends the stream with
  an ``error`` event (the text already sent stands);
* ``buffered`` — sent once escalation has settled the answer, where a gate needs it whole.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from costline.collectors.recorder import returning
from costline.netsec import Limits, refuse_open_bind, ssl_context
from costline.serving.gateway._http import Handler, HttpRequest, HttpResponse, Route, ServedByJsonServer
from costline.serving.gateway.asgi import AsgiServer
from costline.serving.gateway.shared_limits import SharedTenantCounts, TenantCounts
from costline.serving.gateway.auth import Admitted, GatewayGuard, KeyStore, Limiter, Refused
from costline.serving.gateway.bedrock_api import (MAX_BEDROCK_MODEL_ID, bedrock_error, chunks_of_sse, converse_answer,
                                                  converse_body, converse_events, invoke_body, token_headers)
from costline.serving.backends import Prompt
from costline.serving.cache.key import sampled, scope_of_body
from costline.serving.cache.semantic import MAX_DOC_HASHES
from costline.serving.pipeline import (BYPASS_NO_CACHE, BYPASS_NO_STORE, BYPASS_SAMPLED, EMPTY, UNOFFERED_TOOL, Answer,
                                       LiveAnswer, Pipeline)
from costline.serving.settings import GatewayConfig
from costline.serving.gateway.messages_api import (ANTHROPIC_ERROR_TYPES, betas_of, fields_problem, last_user_text,
                                                   passthrough_of, question_text, sampling_of, shape_problem,
                                                   textless_query, textless_turn, thinking_of, unsupported_problem)
from costline.serving.errors import BackendError
from costline.serving.structured import from_anthropic
from costline.serving.translate import tools_problem

__all__ = ["Gateway", "CACHE_BYPASS_HEADER", "CACHE_MODEL", "REQUEST_ID_HEADERS", "STREAM_MODE_HEADER",
           "MAX_DOC_HASH_CHARS", "cache_bypass_of", "cache_directives", "doc_hashes_of", "failure_message", "may_store",
           "failure_status", "gave_no_answer", "message_id", "ReturnedId", "with_request_id"]

log = logging.getLogger(__name__)

#: The ``model`` of a message answered from the semantic cache.
CACHE_MODEL = "costline-cache"
#: Response header of a ``stream: true`` request: ``live`` (token by token) or ``buffered``.
STREAM_MODE_HEADER = "x-costline-stream-mode"
#: The response headers that carry a request's id, each the same id: costline's own, the ``anthropic`` SDK's
#: (``request-id``: a message's ``_request_id``, ``APIStatusError.request_id``) and the ``openai`` SDK's
#: (``x-request-id``).
REQUEST_ID_HEADERS = ("x-costline-request-id", "request-id", "x-request-id")
#: Response header of a request that bypassed the semantic cache: why (``no-cache``, ``no-store``, ``sampled``).
CACHE_BYPASS_HEADER = "x-costline-cache-bypass"
#: The most characters one hash of a request's ``x-costline-doc-hashes`` may have (a SHA-512 in hex is 128, a SHA-256
#: 64): with :data:`~costline.serving.cache.semantic.MAX_DOC_HASHES`, what one request's tags may hold in the cache.
MAX_DOC_HASH_CHARS = 128
#: The most ``Cache-Control`` directives read from one request (the header's size is bounded by the server already).
MAX_CACHE_DIRECTIVES = 32


def doc_hashes_of(values: list[str], header: str = "x-costline-doc-hashes") -> tuple[str, ...] | str:
    """The document hashes of a request's ``header`` lines ``values`` (comma-separated, blanks dropped), or what is
    wrong with them (a 400's message): more than :data:`~costline.serving.cache.semantic.MAX_DOC_HASHES`, or one
    longer than :data:`MAX_DOC_HASH_CHARS`. Never cut short: an answer stored
    without one of its hashes would survive that document's invalidation."""
    hashes = _split_doc_hashes(values)
    if len(hashes) > MAX_DOC_HASHES:
        return (f"{header}: {len(hashes)} document hashes, more than the {MAX_DOC_HASHES} a request may name: name "
                "the set of documents the answer is built from by one hash of its own (and invalidate that hash "
                "when any of them changes)")
    long = next((h for h in hashes if len(h) > MAX_DOC_HASH_CHARS), None)
    if long is not None:
        return (f"{header}: a document hash of {len(long)} characters, longer than the {MAX_DOC_HASH_CHARS} one may "
                "have: send a digest of the document (SHA-256 in hex is 64 characters)")
    return hashes


def may_store(method: str, path: str) -> bool:
    """Whether a request to ``path`` may store an answer in the cache, so its ``x-costline-doc-hashes`` is bounded
    (:func:`doc_hashes_of`): a POST that asks a model; not a GET or DELETE, not ``count_tokens``, not the
    Conversations API (an SDK that sends the header by default on every call is not refused where it means nothing)."""
    return (method == "POST" and not path.rstrip("/").endswith("/count_tokens")
            and not path.startswith("/v1/conversations"))


def _split_doc_hashes(values: list[str]) -> tuple[str, ...]:
    return tuple(h.strip() for v in values for h in v.split(",") if h.strip())


def cache_directives(values: list[str]) -> frozenset[str]:
    """The directive names of a request's ``Cache-Control`` header lines (RFC 9111: comma-separated, names
    case-insensitive, a directive's ``=argument`` — a token or a quoted string, which may hold commas — dropped), at
    most :data:`MAX_CACHE_DIRECTIVES`. Unknown directives are kept here and ignored by the caller."""
    names: list[str] = []
    for value in values:
        part, quoted, escaped = [], False, False
        for ch in f"{value},":
            if escaped:
                escaped = False
            elif quoted and ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = not quoted
            elif ch == "," and not quoted:
                name = "".join(part).split("=", 1)[0].strip().lower()
                if name:
                    names.append(name)
                    if len(names) >= MAX_CACHE_DIRECTIVES:
                        return frozenset(names)
                part = []
                continue
            part.append(ch)
    return frozenset(names)


def cache_bypass_of(directives: frozenset[str], *, sampled: bool, bypass_sampled: bool) -> str:
    """Why a request bypasses the semantic cache ("" for not): ``no-store`` (neither looked up nor stored), then a
    request that explicitly asks for sampling when ``[serving.cache] bypass_sampled`` is on (neither), then
    ``no-cache`` (not looked up, stored)."""
    if "no-store" in directives:
        return BYPASS_NO_STORE
    if bypass_sampled and sampled:
        return BYPASS_SAMPLED
    if "no-cache" in directives:
        return BYPASS_NO_CACHE
    return ""


def with_request_id(headers: dict[str, str], request_id: str | None = None) -> str:
    """Set :data:`REQUEST_ID_HEADERS` in ``headers`` (in place) to ``request_id``, else to the id they carry already,
    else to a fresh one (an answer given before the request had one: a refusal, a malformed body); the id."""
    rid = request_id or next((headers[h] for h in REQUEST_ID_HEADERS if headers.get(h)), None) or uuid.uuid4().hex
    for name in REQUEST_ID_HEADERS:
        headers[name] = rid
    return rid


def _identified(handler: Handler) -> Handler:
    """``handler`` whose every answer carries the request id headers (:func:`with_request_id`)."""
    def handle(req: HttpRequest) -> HttpResponse:
        response = handler(req)
        with_request_id(response.headers)
        return response

    return handle


#: An OpenAI-compatible tier's finish reason in the Messages API's words (what other servers call a natural end, or a
#: cut at the length limit, too: TGI ``eos_token``, Together ``eos``, Mistral ``model_length``).
_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
         "content_filter": "refusal", "eos_token": "end_turn", "eos": "end_turn", "model_length": "max_tokens"}
#: The status of an answer whose every tier failed, by the last one's problem (else 500). A tier that answered with a
#: call of a tool the request did not offer, or with nothing, misbehaved upstream: 502 (Bad Gateway).
_STATUS_OF_ERROR = {"RateLimitError": 429, "OverloadedError": 529, UNOFFERED_TOOL: 502, EMPTY: 502}
#: What the client is told a tier that gave no answer did.
_NO_ANSWER = {UNOFFERED_TOOL: "answered with a call of a tool the request did not offer", EMPTY: "answered with an "
              "empty answer"}

#: An API's error answer: ``error(status, message, headers)``.
ErrorFn = Callable[..., HttpResponse]

#: How deep a request body may nest (objects and arrays). json.loads takes ~990 levels, but what reads the body
#: after it (the cache's scope hash, the SDKs) recurses, and a body a few hundred levels deep failed there
#: with RecursionError (a 500). No real request (tool schemas included) comes near.
MAX_JSON_DEPTH = 100


def json_depth(doc: Any, limit: int) -> int:
    """How deep ``doc`` nests (a scalar: 0), counted iteratively up to ``limit`` + 1 (then it stops looking)."""
    deepest = 0
    todo: list[tuple[Any, int]] = [(doc, 0)]
    while todo:
        node, depth = todo.pop()
        if isinstance(node, (dict, list)):
            depth += 1
            if depth > limit:
                return depth
            deepest = max(deepest, depth)
            todo.extend((child, depth) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


class Gateway(ServedByJsonServer):
    """Serves ``pipeline`` as the Anthropic Messages API and the OpenAI Chat Completions API.

    ``start()`` serves in a background thread and returns the port; ``bind()`` then
    ``serve_forever()`` serves in this thread (draining on SIGTERM: ``costline serve``).
    ``wall`` is the clock of the ``created`` timestamps of chat completions. ``worker`` K: this is
    worker K of ``costline serve --workers`` (it shares the port and says ``x-costline-worker: K``);
    ``limiter``: the rate limiter, when not this process's own (the workers share one). ``after_warm_up``
    runs once the cache's models are loaded (or at once when there are none), before ``/readyz`` says ready:
    ``costline serve`` settles the process's heap there (:func:`~costline.serving.gateway.serve_cli.settle_heap`);
    an exception in it is logged, never served."""

    def __init__(self, pipeline: Pipeline, config: GatewayConfig | None = None, *,
                 host: str | None = None, port: int | None = None, keys: KeyStore | None = None,
                 now: Callable[[], float] | None = None, wall: Callable[[], float] = time.time,
                 worker: int | None = None, limiter: Limiter | None = None,
                 after_warm_up: Callable[[], None] | None = None, responses_store: str | Path | None = None,
                 tenant_counts: TenantCounts | SharedTenantCounts | None = None) -> None:
        from costline.serving.gateway.response_store import ResponseStore

        self.pipeline = pipeline
        self._after_warm_up = after_warm_up
        self.config = cfg = config or GatewayConfig()
        #: The Responses API's stored responses (``previous_response_id``): in ``responses_store`` (a file the
        #: workers share), else ``[serving.gateway] responses_store_path``, else in memory.
        self.stored_responses = ResponseStore(
            responses_store or cfg.responses_store_path, ttl_s=cfg.responses_ttl_s, max_responses=cfg.responses_max,
            max_bytes=cfg.max_body_bytes, tenant_max_bytes=int(cfg.responses_tenant_max_mib * 2 ** 20),
            total_max_bytes=int(cfg.responses_total_max_mib * 2 ** 20), conversation_ttl_s=cfg.conversations_ttl_s,
            max_conversations=cfg.conversations_max)
        from costline.serving.gateway.batches import BatchRunner, BatchStore
        from costline.serving.gateway.batches_api import MessageBatches, batch_routes

        #: Message Batches: kept beside the stored responses, answered by a runner thread (batches.py).
        from costline.serving.gateway.openai_batches_api import OpenAIBatches, openai_batch_routes
        from costline.serving.gateway.openai_api import chat_completion, read_chat_request

        # a result saved past its tenant's batches_tenant_max_mib is not kept (the request ends errored)
        batch_store = BatchStore(responses_store or cfg.responses_store_path,
                                 tenant_max_bytes=int(cfg.batches_tenant_max_mib * 2 ** 20))
        self.batches = MessageBatches(self, batch_store, wall=wall)
        self.openai_batches = OpenAIBatches(self, batch_store, wall=wall)

        def read_chat(params: Mapping[str, Any], _beta: str | None) -> tuple[str, Prompt, str] | str:
            read = read_chat_request(params)
            return str(read.body["error"]["message"]) if isinstance(read, HttpResponse) else read

        self.batch_runner = BatchRunner(pipeline, batch_store, message=_message, read=read_messages_request,
                                        poll_s=cfg.batches_poll_s, ttl_s=cfg.batches_ttl_s, now=wall,
                                        default_task_type=cfg.default_task_type,
                                        direct_concurrency=cfg.batches_direct_concurrency,
                                        apis={"openai": (read_chat, lambda a: chat_completion(a, int(wall())))})
        host = host or cfg.host
        self.guard = GatewayGuard(cfg, host=host, keys=keys, limiter=limiter, **({"now": now} if now else {}))
        refuse_open_bind("the gateway", host, authenticated=self.guard.auth_required(),
                         insecure=cfg.allow_insecure, how="add API keys with `costline keys add TENANT`")
        from costline.serving.gateway.openai_api import ChatCompletions, Embeddings, openai_error
        from costline.serving.gateway.conversations_api import Conversations, conversation_routes
        from costline.serving.gateway.responses_api import Responses

        def _error_for(path: str) -> ErrorFn:  # each API answers in its own error format
            if path.startswith("/model/"):
                return bedrock_error
            return openai_error if path.startswith(("/v1/chat/", "/v1/responses", "/v1/conversations",
                                                     "/v1/embeddings", "/v1/files", "/v1/batches")) else _error

        def _admit_head(req: HttpRequest) -> HttpResponse | None:  # the key, tenant and rate, before the body is read
            refused = self.guard.admit_head(req)
            if refused is None:
                # a bound on the head of every request that may store an answer (batches included): refused before
                # the body is read; a GET, a DELETE, count_tokens, a conversation's items store nothing in the cache
                if not may_store(req.method, req.path):
                    return None
                hashes = doc_hashes_of(req.header_all(cfg.doc_hashes_header), cfg.doc_hashes_header)
                if not isinstance(hashes, str):
                    return None
                cors = self.guard.cors(req)
                return _error_for(req.path)(400, hashes, cors if isinstance(cors, dict) else {})
            if req.path.startswith("/model/") and (signed := _aws_signed(req, refused)) is not None:
                return signed
            return _error_for(req.path)(refused.status, refused.message, refused.headers)

        self.chat_completions = ChatCompletions(self, wall=wall)
        self.responses = Responses(self, wall=wall)
        self.conversations = Conversations(self)
        self._server = AsgiServer(
            [dataclasses.replace(route, handler=_identified(route.handler)) for route in [
             Route("POST", "/v1/messages", self._messages), Route("GET", "/v1/models", self._models),
             Route("GET", "/v1/models/{id}", self._model),
             Route("OPTIONS", "/v1/messages", self._preflight),
             Route("POST", "/v1/messages/count_tokens", self._count_tokens),
             Route("OPTIONS", "/v1/messages/count_tokens", self._preflight),
             Route("POST", "/v1/chat/completions", self.chat_completions),
             Route("OPTIONS", "/v1/chat/completions", self._preflight),
             Route("POST", "/v1/responses", self.responses),
             Route("OPTIONS", "/v1/responses", self._preflight),
             Route("GET", "/v1/responses/{id}", self.responses.retrieve),
             Route("DELETE", "/v1/responses/{id}", self.responses.delete),
             Route("OPTIONS", "/v1/responses/{id}", self._preflight),
             Route("GET", "/v1/responses/{id}/input_items", self.responses.input_items),
             Route("OPTIONS", "/v1/responses/{id}/input_items", self._preflight),
             *conversation_routes(self.conversations, self._preflight),
             *batch_routes(self.batches, self._preflight),
             *openai_batch_routes(self.openai_batches, self._preflight),
             Route("POST", "/v1/embeddings", Embeddings(self, wall=wall)),
             Route("OPTIONS", "/v1/embeddings", self._preflight),
             # Amazon Bedrock's InvokeModel (bedrock_api.py): apps on AnthropicBedrock or boto3's invoke_model
             # and its Converse API (boto3's converse / converse_stream, and frameworks over them); a model id may
             # be an ARN with one "/" (arn:aws:bedrock:...:application-inference-profile/abc), sent encoded and
             # decoded before routing: one more segment
             *(Route("POST", f"/model/{model}/{op}", handler)
               for model in ("{model}", "{model}/{model_rest}")
               for op, handler in (("invoke", self._bedrock_invoke),
                                   ("invoke-with-response-stream", self._bedrock_invoke_stream),
                                   ("converse", self._bedrock_converse),
                                   ("converse-stream", self._bedrock_converse_stream)))]],
            host=host,
            port=cfg.port if port is None else port,
            not_found=lambda req: _error_for(req.path)(404, f"no route {req.method} {req.path}"),
            on_error=lambda req, exc: _error_for(req.path)(500, f"costline gateway failure: {type(exc).__name__}"),
            reject=lambda r, path: _error_for(path)(r.status, r.message, r.headers),
            busy=lambda path: _error_for(path)(529, "the gateway is busy: retry later",
                                               {"retry-after": str(cfg.retry_after_s)}),
            bad_request=lambda message: json.dumps(_error(400, message).body).encode(),
            limits=Limits.of(cfg),
            drain_timeout_s=cfg.drain_timeout_s,
            tls_files=_tls_files(cfg),
            name="costline-gateway",
            ready_check=self._ready_for_work,
            # one of `costline serve --workers N`: share the port, and say on every answer which worker gave it
            reuse_port=worker is not None,
            headers=(("x-costline-worker", str(worker)),) if worker is not None else (),
            admit_head=_admit_head,
            max_connections=cfg.max_connections,
            tenant_of=self.guard.head_tenant,
            max_in_flight_per_tenant=cfg.max_in_flight_per_tenant,
            tenant_counts=tenant_counts,  # the workers' shared table (costline serve --workers N), else its own
        )
        #: Set once the cache's embedding model and pair model are loaded (ONNX exports, on a clean cache,
        #: run then): until they are, /readyz answers 503 and a load balancer sends the work elsewhere.
        self._embedder_warm = threading.Event()
        self._warming: threading.Thread | None = None

    def start(self) -> int:
        """Serve in a background thread (see the class docstring); the embedding model loads meanwhile."""
        self._warm_up()
        port = super().start()
        self.batch_runner.start()
        return port

    def serve_forever(self) -> None:
        try:  # SIGTERM may land anywhere in here (costline serve raises SystemExit then), even before uvicorn runs
            self._warm_up()
            self.batch_runner.start()
            super().serve_forever()
        finally:
            self.batch_runner.shutdown()
            self._wait_for_warm_up()

    def shutdown(self) -> None:
        super().shutdown()
        stopped = self.batch_runner.shutdown()
        self._wait_for_warm_up()
        self.stored_responses.close()
        if stopped:  # a runner still in a model call keeps its store (its thread is a daemon's)
            self.batches.store.close()

    def _wait_for_warm_up(self) -> None:
        """Let a model load still running finish before the process may exit: the loading thread is inside
        native code (ONNX Runtime, PyTorch) that aborts the whole process (SIGABRT, "terminate called without
        an active exception") if the interpreter finalises under it. A load is finite; an export on a clean
        cache is the long one, and it is logged."""
        thread = self._warming
        if thread is None or not thread.is_alive():
            return
        log.info("costline: waiting for the cache's models to finish loading before stopping")
        thread.join()

    def _warm_up(self) -> None:
        """Load the cache's embedding model and its pair model in the background (once), so no request pays
        for them (on a clean cache each is exported to ONNX then)."""
        cache = self.pipeline.cache
        embedder = getattr(cache, "embedder", None)
        pair_model = getattr(getattr(cache, "verifier", None), "pair_model", None)
        todo = []
        if embedder is not None and not getattr(embedder, "loaded", True) and hasattr(embedder, "load"):
            todo.append(("embedding model", embedder.load))
        if pair_model is not None and hasattr(pair_model, "get"):
            todo.append(("pair model", pair_model.get))
        if self._warming is not None or self._embedder_warm.is_set():
            return
        if not todo:
            self._warmed()
            return

        def load() -> None:
            try:
                for what, step in todo:
                    try:
                        step()
                    except Exception:  # noqa: BLE001 - the first request that needs it loads it again
                        log.exception("costline: could not load the cache's %s at start", what)
            finally:
                self._warmed()

        # Not a daemon: whatever way the process ends, the interpreter joins it before finalising (see
        # _wait_for_warm_up for what finalising under it does).
        self._warming = threading.Thread(target=load, name="costline-embedder-warm-up", daemon=False)
        self._warming.start()

    def _warmed(self) -> None:
        """The models are loaded: run ``after_warm_up``, then let /readyz say ready."""
        try:
            if self._after_warm_up is not None:
                self._after_warm_up()
        except Exception:  # noqa: BLE001 - a hook never keeps the gateway from serving
            log.exception("costline: the gateway's after-warm-up step failed")
        finally:
            self._embedder_warm.set()

    def _ready_for_work(self) -> bool:
        """/readyz: the embedding model and the pair model are loaded and a replicated cache has caught up."""
        return self._embedder_warm.is_set() and self._cache_caught_up()

    def bind(self) -> int:
        """Bind the port (0 picks a free one) before :meth:`serve_forever` serves in this thread."""
        return self._server.bind()

    def _cache_caught_up(self) -> bool:
        """False while a replicated cache is still reading its topic up to where it stood at start."""
        replication = getattr(self.pipeline.cache, "replication", None)
        return replication is None or bool(replication.ready)

    @property
    def draining(self) -> bool:
        """True once a drain began (SIGTERM or :meth:`shutdown`): ``/readyz`` answers 503."""
        return self._server.draining

    # -- handlers ----------------------------------------------------------------------------
    def _preflight(self, req: HttpRequest) -> HttpResponse:
        allowed = self.guard.preflight(req)
        if isinstance(allowed, Refused):
            return _error(allowed.status, allowed.message, allowed.headers)
        return HttpResponse(204, raw=b"", headers=allowed)

    def _entry(self, req: HttpRequest, error: ErrorFn, *, metadata_tenant: bool = True
               ) -> tuple[Admitted, Mapping[str, Any]] | HttpResponse:
        """The checks both APIs share: the guard (before the body is parsed: strangers get nothing
        for free), a JSON object body, ``metadata.tenant`` (unless ``metadata_tenant`` is False: a body whose
        metadata is the client's own data, as a conversation's). The request's answer, or what to go on with."""
        admitted = self.guard.admit(req)
        if isinstance(admitted, Refused):
            return error(admitted.status, admitted.message, admitted.headers)
        hashes = (doc_hashes_of(req.header_all(self.config.doc_hashes_header), self.config.doc_hashes_header)
                  if may_store(req.method, req.path) else ())
        if isinstance(hashes, str):  # checked on the head already; again for a handler called without it
            return error(400, hashes, admitted.headers)
        try:
            body = req.json()
        except (ValueError, UnicodeDecodeError, RecursionError):
            return error(400, "the body is not valid JSON", admitted.headers)
        if not isinstance(body, Mapping):
            return error(400, "the body must be a JSON object", admitted.headers)
        if json_depth(body, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
            return error(400, f"the body nests objects and arrays more than {MAX_JSON_DEPTH} levels deep: flatten it",
                         admitted.headers)
        meta = body.get("metadata") if metadata_tenant and isinstance(body.get("metadata"), Mapping) else {}
        refused = self.guard.check_body_tenant(admitted, meta.get("tenant"))
        if refused is not None:
            return error(refused.status, refused.message, refused.headers)
        return admitted, body

    def _messages(self, req: HttpRequest) -> HttpResponse:
        entered = self._entry(req, _error)
        if isinstance(entered, HttpResponse):
            return entered
        admitted, body = entered
        response = self._answer(req, body, admitted.tenant)
        response.headers.update(admitted.headers)
        return response

    def _bedrock(self, req: HttpRequest, *, converse: bool, stream: bool) -> HttpResponse:
        """Bedrock Runtime's InvokeModel or Converse (:mod:`costline.serving.gateway.bedrock_api`): the request as the
        Messages request it is — the same checks, routing, cache and escalation as ``POST /v1/messages`` — answered
        in Bedrock's shapes (its errors, token-count headers or Converse's answer, event-stream events when
        streamed)."""
        if req.header("content-type") is None and (req.header("authorization") or req.header("x-api-key")):
            # boto3 sends none unless told (contentType=): Bedrock reads JSON then. A web page cannot send a header
            # that authenticates, so no other site can make a browser post here this way.
            req = dataclasses.replace(req, headers={**req.headers, "content-type": "application/json"},
                                      raw_headers=(*req.raw_headers, ("content-type", "application/json")))
        entered = self._entry(req, bedrock_error)
        if isinstance(entered, HttpResponse):
            return _aws_signed(req, entered) or entered
        admitted, body = entered
        model = "/".join(req.params[k] for k in ("model", "model_rest") if k in req.params)  # decoded already
        if len(model) > MAX_BEDROCK_MODEL_ID:
            return bedrock_error(400, f"the model id is longer than {MAX_BEDROCK_MODEL_ID} characters",
                                 admitted.headers)
        if req.header("x-amzn-bedrock-guardrailidentifier"):  # an app that counts on a guardrail gets none here
            return bedrock_error(400, "costline does not apply Bedrock guardrails: filter in the app, or send "
                                      "this request to Bedrock itself", admitted.headers)
        read = (converse_body if converse else invoke_body)(body, model, stream=stream)
        if isinstance(read, str):
            return bedrock_error(400, read, admitted.headers)
        messages, betas = read
        if betas:
            req = dataclasses.replace(req, headers={**req.headers, "anthropic-beta": betas})
        started = time.monotonic()
        response = self._answer(req, messages, admitted.tenant)
        response.headers.update(admitted.headers)
        # Bedrock's own id header (botocore's span records it as aws.request_id) is the id the request span
        # records, msg_costline_<request id>: an app's span of this call is the gateway's request (docs/telemetry.md);
        # a failed one's too (Bedrock sends it on errors as well)
        request_id = response.headers.get("x-costline-request-id")
        if request_id:
            response.headers["x-amzn-requestid"] = message_id(request_id)
        if response.status != 200:
            error = response.body.get("error") if isinstance(response.body, Mapping) else None
            message = error.get("message") if isinstance(error, Mapping) else None
            return bedrock_error(response.status, str(message or "the request failed"), response.headers)
        response.headers.setdefault("x-amzn-requestid", message_id(""))
        response.headers["x-amzn-bedrock-content-type"] = "application/json"
        if stream:
            pieces = response.stream if response.stream is not None else [response.raw or b""]
            return HttpResponse(200, headers=response.headers, content_type="application/vnd.amazon.eventstream",
                                stream=converse_events(pieces, started, time.monotonic) if converse
                                else chunks_of_sse(pieces, started))
        response.headers.update(token_headers(response.body))
        if converse:
            response.body = converse_answer(response.body, int((time.monotonic() - started) * 1000))
        return response

    def _bedrock_invoke(self, req: HttpRequest) -> HttpResponse:
        return self._bedrock(req, converse=False, stream=False)

    def _bedrock_invoke_stream(self, req: HttpRequest) -> HttpResponse:
        return self._bedrock(req, converse=False, stream=True)

    def _bedrock_converse(self, req: HttpRequest) -> HttpResponse:
        return self._bedrock(req, converse=True, stream=False)

    def _bedrock_converse_stream(self, req: HttpRequest) -> HttpResponse:
        return self._bedrock(req, converse=True, stream=True)

    def _count_tokens(self, req: HttpRequest) -> HttpResponse:
        """``POST /v1/messages/count_tokens``: the input tokens of a Messages request on the model of the tier it
        would be routed to (the nearest Anthropic tier up its ladder when that tier's API has no count), from that
        API's own free count. Nothing is generated; no request span (it is not a request a model answered)."""
        entered = self._entry(req, _error)
        if isinstance(entered, HttpResponse):
            return entered
        admitted, body = entered
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, Mapping) for m in messages):
            return _error(400, "messages: at least one message is required", admitted.headers)
        problem = shape_problem(messages, body.get("system")) or tools_problem(body.get("tools"), body.get("tool_choice"))
        if problem:
            return _error(400, problem, admitted.headers)
        betas = betas_of(req.header("anthropic-beta"))
        if isinstance(betas, str):
            return _error(400, betas, admitted.headers)
        tools = tuple(body.get("tools") or ())
        prompt = Prompt(tuple(messages), body.get("system"), None, (), tools, body.get("tool_choice") if tools else None,
                        anthropic_betas=betas)
        query = question_text(messages)
        cfg = self.config
        task_type = req.header(cfg.task_type_header) or cfg.default_task_type
        try:
            decision = self.pipeline.route(query or " ", task_type, prompt=prompt)
        except Exception as exc:  # noqa: BLE001 - a router that cannot decide: the caller gets a clear error
            log.exception("costline gateway: could not route a count_tokens request")
            return _error(500, f"costline gateway failure: {type(exc).__name__}", admitted.headers)
        ladder = self.pipeline.registry.ladder(decision.tier, len(self.pipeline.registry.names))
        backend = next((b for b in (self.pipeline.backends.get(t) for t in ladder) if hasattr(b, "count_tokens")), None)
        if backend is None:
            return _error(400, f"no tier from {decision.tier} up is served by the Messages API, which counts tokens",
                          admitted.headers)
        try:
            counted = backend.count_tokens(prompt)
        except BackendError as exc:
            return _error(_status_of_problems([exc.error_type]), f"{exc.tier}: {exc.error_type}", admitted.headers)
        return HttpResponse(200, {"input_tokens": counted},
                            headers={**admitted.headers, "x-costline-tier": backend.spec.name})

    def ask(self, req: HttpRequest, *, query: str, prompt: Prompt, cache_scope: str, stream: bool,
            metadata: Mapping[str, Any], tenant: str | None, cached: bool = True,
            sampling: Mapping[str, Any] | None = None, returned: "ReturnedId | None" = None) -> Answer | LiveAnswer:
        """Run the pipeline for a parsed request of either API (tenant, task type, doc hashes from the
        request as documented above). ``cached`` False: the semantic cache is neither looked up nor stored to (a
        request without question text, whose ``query`` is only what it is routed on). The request's ``Cache-Control``
        header and ``sampling`` (its generation parameters as it set them: ``temperature``, ``top_p``, ``top_k``;
        default the prompt's) decide whether it bypasses the cache (:func:`cache_bypass_of`). ``returned``: the id the
        answer gives the client, as the request span records it (``costline.response.id``; a live answer's: set
        ``returned.live`` before iterating it)."""
        cfg = self.config
        tenant = tenant or cfg.default_tenant
        task_type = req.header(cfg.task_type_header) or str(metadata.get("task_type") or "") or cfg.default_task_type
        # all of them, as sent: past the bound a request was refused before it came here (_entry); one that skipped
        # that is answered, and the cache refuses to store its answer (logged) rather than keep it under fewer hashes
        doc_hashes = _split_doc_hashes(req.header_all(cfg.doc_hashes_header))
        bypass = cache_bypass_of(cache_directives(req.header_all("cache-control")),
                                 sampled=sampled(dict(prompt.sampling) if sampling is None else sampling),
                                 bypass_sampled=self._bypass_sampled())
        if returned is None:
            return (self.pipeline.answer_stream if stream else self.pipeline.answer)(
                query, task_type=task_type, tenant=tenant, doc_hashes=doc_hashes, prompt=prompt,
                cache_scope=cache_scope, semantic_cache=cached, cache_bypass=bypass)
        with returning(returned):  # a live answer's request opens later, in a copy of this context
            return (self.pipeline.answer_stream if stream else self.pipeline.answer)(
                query, task_type=task_type, tenant=tenant, doc_hashes=doc_hashes, prompt=prompt,
                cache_scope=cache_scope, semantic_cache=cached, cache_bypass=bypass)

    def _bypass_sampled(self) -> bool:
        """``[serving.cache] bypass_sampled`` of the pipeline's cache (False without one)."""
        return getattr(getattr(self.pipeline.cache, "config", None), "bypass_sampled", False) is True

    def _answer(self, req: HttpRequest, body: Mapping[str, Any], tenant: str | None) -> HttpResponse:
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            return _error(400, "stream: true or false")
        stream = bool(stream)
        read = read_messages_request(body, req.header("anthropic-beta"), textless=True)
        if isinstance(read, str):
            return _error(400, read)
        query, prompt, scope = read
        meta = body.get("metadata") if isinstance(body.get("metadata"), Mapping) else {}
        returned = ReturnedId()
        result = self.ask(req, query=query, prompt=prompt, cache_scope=scope or "", stream=stream,
                          metadata=meta, tenant=tenant, cached=scope is not None, sampling=body, returned=returned)
        if isinstance(result, LiveAnswer):
            returned.live = True
            return _live_response(result)
        headers = _headers(result)
        if gave_no_answer(result):
            status = failure_status(result)
            # The gateway already retried (the SDK's retries, then escalation): ask clients not to.
            return _error(status, failure_message(result), {**headers, "x-should-retry": "false"})
        if stream:
            headers[STREAM_MODE_HEADER] = "live" if result.cached else "buffered"
            return HttpResponse(200, headers=headers, raw=_event_stream(_message(result)),
                                content_type="text/event-stream")
        return HttpResponse(200, _message(result), headers=headers)

    def _models(self, req: HttpRequest) -> HttpResponse:
        admitted = self.guard.admit(req)
        if isinstance(admitted, Refused):
            return _error(admitted.status, admitted.message, admitted.headers)
        data = [_model_entry(t.model, f"{t.model} ({t.name})") for t in self.pipeline.registry]
        return HttpResponse(200, {"object": "list", "data": data, "has_more": False,
                                  "first_id": data[0]["id"] if data else None,
                                  "last_id": data[-1]["id"] if data else None})

    def _model(self, req: HttpRequest) -> HttpResponse:
        """``GET /v1/models/{id}`` (``models.retrieve`` of both SDKs, which some frameworks call to check a model
        before using it). The router picks the model whatever a request names, so any well-formed name is one
        the gateway serves: a tier's model is described as that tier's, any other name as routed."""
        admitted = self.guard.admit(req)
        if isinstance(admitted, Refused):
            return _error(admitted.status, admitted.message, admitted.headers)
        name = req.params["id"]
        if not _MODEL_ID.fullmatch(name):
            return _error(404, "no such model: a model id is 1-256 letters, digits and - _ . : @")
        tier = next((t for t in self.pipeline.registry if t.model == name), None)
        return HttpResponse(200, _model_entry(name, f"{name} ({tier.name})" if tier else f"{name} (routed by costline)"))


#: What a model id may be in ``GET /v1/models/{id}`` (the ids of Anthropic, OpenAI, Bedrock, Vertex and vLLM).
_MODEL_ID = re.compile(r"[A-Za-z0-9._:@-]{1,256}")


def read_messages_request(body: Mapping[str, Any], beta_header: str | None, *, textless: bool = False
                          ) -> tuple[str, Prompt, str | None] | str:
    """A Messages API request body checked as the API checks it, before any model is called: ``(query, prompt,
    cache scope)`` — what is routed on and matched in the cache, what the models get, the exact part of the
    cache key — or what is wrong with it (a 400's message). ``beta_header``: its ``anthropic-beta``.

    A last user turn with no text but an image or a document (the instruction in the system prompt) is refused,
    unless ``textless``: then the query is what it is routed on (:func:`~costline.serving.gateway.messages_api.
    textless_query`) and the scope is None — no question text to match on, so it is never cached. (A batch's requests
    are read without ``textless``: the batch runner looks every request up in the cache.)"""
    problem = fields_problem(body)
    if problem:
        return problem
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, Mapping) for m in messages):
        return "messages: at least one message is required"
    problem = shape_problem(messages, body.get("system")) or unsupported_problem(body)
    if problem:
        return problem
    sampling = sampling_of(body)
    if isinstance(sampling, str):
        return sampling
    extra = passthrough_of(body)
    if isinstance(extra, str):
        return extra
    thinking = thinking_of(body)
    if isinstance(thinking, str):
        return thinking
    fmt = from_anthropic(body)
    if isinstance(fmt, tuple):
        return fmt[1]
    betas = betas_of(beta_header)
    if isinstance(betas, str):
        return betas
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return "max_tokens: field required (a whole number >= 1)"
    tools = tuple(body.get("tools") or ())
    prompt = Prompt(tuple(messages), body.get("system"), max_tokens, sampling, tools,
                    body.get("tool_choice") if tools else None, extra, thinking, betas, fmt)
    query = question_text(messages) if prompt.expects_blocks else last_user_text(messages)
    if not query.strip():
        last = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), None)
        if not textless or not textless_turn(last):
            return "messages: the last user message has no text"
        return textless_query(body.get("system")), prompt, None
    # the format in the shape every API's request scopes it in (one cache entry whichever API asked)
    return query, prompt, scope_of_body({**body, "output_format": fmt.scope() if fmt is not None else None})


def _model_entry(model: str, display_name: str) -> dict[str, Any]:
    """One model as both SDKs read it: Anthropic's fields and OpenAI's (object, created, owned_by)."""
    return {"type": "model", "id": model, "display_name": display_name, "created_at": "2026-06-01T00:00:00Z",
            "object": "model", "created": 1780272000, "owned_by": "costline"}


def _cache_creation(written: int, one_hour: int) -> dict[str, int]:
    """The API's breakdown of the cache writes by lifetime (one-hour writes cost 2 x the input, not 1.25 x)."""
    one_hour = min(max(one_hour, 0), written)
    return {"ephemeral_5m_input_tokens": written - one_hour, "ephemeral_1h_input_tokens": one_hour}


def message_id(request_id: str | None) -> str:
    """The id of the Messages API answer to a request: ``msg_costline_<request id>``, whichever tier (or the cache)
    answered. Never the backend's own ``msg_…``: a server's ids may repeat (self-hosted ones, the stand-ins count from
    1), and the lake matches an app's span of a call through the gateway to the gateway's request by this id
    (docs/telemetry.md, "Apps behind the gateway"); the backend's id is on the gateway's call span."""
    return f"msg_costline_{request_id or uuid.uuid4().hex}"


class ReturnedId:
    """The response id a request's answer gives the client, as its request span records it (``costline.response.id``,
    :func:`~costline.collectors.recorder.returning`): ``made(request id)`` for an API whose ids the gateway always makes
    (Chat Completions), else :func:`message_id`: the gateway's own, never a backend's (:attr:`live`, set before a live
    stream is iterated, is kept for callers that say so)."""

    def __init__(self, made: Callable[[str], str] | None = None) -> None:
        self.made = made
        self.live = False

    def __call__(self, request_id: str, answer_id: str | None) -> str:
        if self.made is not None:
            return self.made(request_id)
        return message_id(request_id)


def _message(result: Answer) -> dict[str, Any]:
    reply = result.reply
    if result.cached or reply is None:
        usage = {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0,
                 "cache_read_input_tokens": 0, "cache_creation": _cache_creation(0, 0)}
        model, stop, msg_id = CACHE_MODEL, "end_turn", message_id(result.request_id)
        stop_sequence = None
    else:
        fresh = max(reply.input_tokens - reply.cache_read_tokens - reply.cache_creation_tokens, 0)
        usage = {"input_tokens": fresh, "output_tokens": reply.output_tokens,
                 "cache_creation_input_tokens": reply.cache_creation_tokens,
                 "cache_read_input_tokens": reply.cache_read_tokens,
                 "cache_creation": _cache_creation(reply.cache_creation_tokens, reply.cache_creation_1h_tokens)}
        if reply.speed:  # the speed that served it, as the API says it (fast mode costs a premium)
            usage["speed"] = reply.speed
        if reply.inference_geo:  # where it ran, as the API says it (US-only inference costs a premium)
            usage["inference_geo"] = reply.inference_geo
        if reply.web_search_requests:  # the searches its web search tool made, billed each
            usage["server_tool_use"] = {"web_search_requests": reply.web_search_requests}
        model = reply.model
        stop = _STOP.get(reply.stop_reason or "", reply.stop_reason or "end_turn")
        # which of the request's stop sequences ended it (the API says it with stop_reason "stop_sequence")
        said = getattr(reply, "stop_sequence", None)
        stop_sequence = said if stop == "stop_sequence" and isinstance(said, str) else None
        msg_id = message_id(result.request_id)
    content = [dict(b) for b in reply.content] if reply is not None and reply.content and not result.cached \
        else [{"type": "text", "text": result.text}]
    return {"id": msg_id, "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop, "stop_sequence": stop_sequence, "usage": usage}


def _event_stream(message: dict[str, Any], chunk_chars: int = 48) -> bytes:
    """A finished message as the Messages API's server-sent events (``stream=true``).

    The answer is complete before the first event: routing, the cache and escalation decide
    which tier's answer is good enough, which a token-by-token stream would have to reveal
    before knowing. Clients that stream (``client.messages.stream``) work unchanged.
    """
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 0}}
    events: list[tuple[str, dict[str, Any]]] = [("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(message["content"]):
        kind = block.get("type")
        if kind in ("tool_use", "server_tool_use"):  # the call's input as input_json_delta pieces, as the API does
            opened = {"type": kind, "id": block.get("id"), "name": block.get("name"), "input": {}}
            doc = json.dumps(block.get("input") or {})
            deltas = [{"type": "input_json_delta", "partial_json": doc[i:i + chunk_chars]}
                      for i in range(0, len(doc), chunk_chars)]
        elif kind == "thinking":  # thinking_delta pieces, then the signature (as the API streams it)
            opened = {"type": "thinking", "thinking": "", "signature": ""}
            thought = str(block.get("thinking", ""))
            deltas = [{"type": "thinking_delta", "thinking": thought[i:i + chunk_chars]}
                      for i in range(0, len(thought), chunk_chars)]
            deltas.append({"type": "signature_delta", "signature": str(block.get("signature", ""))})
        elif kind != "text":  # redacted thinking, a server tool's result (web_search_tool_result…): whole in its start
            opened, deltas = dict(block), []
        else:  # a text block: its citations (citations_delta, one each), then its text in pieces
            opened = {"type": "text", "text": ""}
            text = str(block.get("text", ""))
            deltas = [{"type": "citations_delta", "citation": c} for c in block.get("citations") or ()]
            deltas += [{"type": "text_delta", "text": text[i:i + chunk_chars]}
                       for i in range(0, len(text), chunk_chars)] or [{"type": "text_delta", "text": ""}]
        events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                               "content_block": opened}))
        events.extend(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
                      for delta in deltas)
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events += [
        ("message_delta", {"type": "message_delta",
                           "delta": {"stop_reason": message["stop_reason"],
                                     "stop_sequence": message.get("stop_sequence")},
                           "usage": dict(usage)}),  # cumulative, as the API's (LangChain reads only this one)
        ("message_stop", {"type": "message_stop"}),
    ]
    return b"".join(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events)


def _sse(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def _live_response(live: LiveAnswer) -> HttpResponse:
    """A :class:`LiveAnswer` as server-sent events, each piece sent as the model writes it.

    The first piece is awaited before the status goes out: a tier that fails before it is
    escalated, and a request whose every tier failed gets the error status of a plain request.
    """
    opened = open_live(live)
    if isinstance(opened, Answer):
        return _error(failure_status(opened), failure_message(opened), {**_headers(opened), "x-should-retry": "false"})
    first, pieces, headers = opened
    return HttpResponse(200, headers=headers, content_type="text/event-stream",
                        stream=_live_events(live, first, pieces))


def _live_events(live: LiveAnswer, first: str | None, pieces: Any) -> Any:
    """message_start, a text delta per piece, then message_delta with the final usage."""
    try:
        model = CACHE_MODEL if live.cached else (live.model or "unknown")
        zero = {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        yield _sse("message_start", {"type": "message_start", "message": {
            "id": message_id(live.request_id), "type": "message", "role": "assistant",
            "model": model, "content": [], "stop_reason": None, "stop_sequence": None, "usage": zero}})
        yield _sse("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}})
        piece = first
        try:
            while piece is not None:
                if piece:
                    yield _sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                       "delta": {"type": "text_delta", "text": piece}})
                piece = next(pieces, None)
        except Exception as exc:  # not a model error (those end the pieces): still end the stream in form
            log.exception("costline gateway: a live answer failed mid-stream")
            yield _sse("error", {"type": "error", "error": {"type": "api_error", "message": f"costline gateway "
                                                            f"failure mid-stream: {type(exc).__name__}"}})
            return
        result = live.result
        if live.error is not None or result is None:
            problem = live.error.error_type if live.error is not None else "no answer"
            status = _STATUS_OF_ERROR.get(problem, 529 if "Overloaded" in problem else 500)
            err_type = _upstream_error_type(live.error) or ANTHROPIC_ERROR_TYPES.get(status, "api_error")
            said = (f"the {live.tier} tier {_NO_ANSWER[problem]} after its text was sent ({problem})"
                    if problem in _NO_ANSWER else f"{live.tier} failed mid-answer: {problem}")
            yield _sse("error", {"type": "error", "error": {"type": err_type, "message": said}})
            return
        final = _message(result)
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
        yield _sse("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": final["stop_reason"],
                                               "stop_sequence": final["stop_sequence"]},
                                     "usage": final["usage"]})
        yield _sse("message_stop", {"type": "message_stop"})
    finally:
        live.close()


#: SDK errors that say the request itself is wrong (the model's API answered 400 / 413 / 422).
_CALLER_ERRORS = frozenset({"BadRequestError", "RequestTooLargeError", "UnprocessableEntityError"})


def failure_status(result: Answer) -> int:
    """Anthropic's status for an answer whose every tier failed: 429, 529, 502 or 500 — or 400 when every tier's API
    refused the request as invalid (max_tokens over every model's limit, say): the caller's to fix, not a fault
    of the gateway to retry."""
    return _status_of_problems([a.problem for a in result.attempts])


def gave_no_answer(result: Answer) -> bool:
    """True for an answer the client gets an error for: every tier failed with no answer to hand on, or the one
    handed on is no answer (an empty one: the tiers answered with nothing, or with calls of tools the request did not
    offer, which are never handed on)."""
    if result.cached or result.success:
        return False
    return result.reply is None or any(a.reply is result.reply and a.problem in _NO_ANSWER for a in result.attempts)


def failure_message(result: Answer) -> str:
    """What an answer whose every tier failed tells the client: what the tiers did when none gave an answer (each
    called a tool the request did not offer, or answered with nothing), else that every tier failed; then each
    tier's problem."""
    problems = {a.problem for a in result.attempts}
    if problems and problems <= _NO_ANSWER.keys():
        did = (f"every tier {_NO_ANSWER[next(iter(problems))]}" if len(problems) == 1 else
               f"no tier gave an answer: each {_NO_ANSWER[UNOFFERED_TOOL]} or {_NO_ANSWER[EMPTY]}")
        return f"{did} ({result.reason})"
    return f"every tier failed: {result.reason}"


def _status_of_problems(problems: list[str | None]) -> int:
    """400 when every problem is the API refusing the request as invalid, else the last one's status (429, 529, 502 for
    an answer that was no answer, else 500)."""
    if problems and all(p in _CALLER_ERRORS for p in problems):
        return 400
    problem = (problems[-1] if problems else None) or "no attempt"
    return _STATUS_OF_ERROR.get(problem, 529 if "Overloaded" in problem else 500)


def open_live(live: LiveAnswer) -> tuple[str | None, Iterator[str], dict[str, str]] | Answer:
    """The first piece of a live answer, the rest, and the response headers; or the failed
    :class:`Answer` when every tier failed before a first piece (then nothing was sent)."""
    pieces = iter(live)
    try:
        first = next(pieces, None)
    except BaseException:
        live.close()
        raise
    result = live.result
    if result is not None and gave_no_answer(result) and not (result.reply is None and result.text):
        live.close()
        return result
    if result is not None:  # settled already: a cache hit, or escalated before the first piece
        headers = _headers(result)
    else:
        headers = {"x-costline-tier": live.tier, "x-costline-routed-tier": live.routed_tier,
                   "x-costline-attempts": "1", "x-costline-escalations": "0", "x-costline-cache-hit": "false",
                   "x-costline-request-id": live.request_id}
    if live.cache_bypass:
        headers[CACHE_BYPASS_HEADER] = live.cache_bypass
    with_request_id(headers, live.request_id)
    headers[STREAM_MODE_HEADER] = "buffered" if live.buffered else "live"
    return first, pieces, headers


def _upstream_error_type(error: Exception | None) -> str | None:
    """The Messages API error type a model's in-stream error event carried, if it said one."""
    body = getattr(getattr(error, "__cause__", None), "body", None)
    inner = body.get("error") if isinstance(body, Mapping) else None
    kind = inner.get("type") if isinstance(inner, Mapping) else None
    return kind if isinstance(kind, str) and kind else None


def _headers(result: Answer) -> dict[str, str]:
    headers = {
        "x-costline-tier": result.tier,
        "x-costline-routed-tier": result.routed_tier,
        "x-costline-attempts": str(len(result.attempts)),
        "x-costline-escalations": str(result.escalations),
        "x-costline-success": json.dumps(result.success),
        "x-costline-cache-hit": json.dumps(result.cached),
        "x-costline-request-id": result.request_id,
    }
    if result.cache_bypass:
        headers[CACHE_BYPASS_HEADER] = result.cache_bypass
    with_request_id(headers, result.request_id)
    return headers


def _aws_signed(req: HttpRequest, refused: HttpResponse | Refused) -> HttpResponse | None:
    """A Bedrock route's 401 to a request signed with AWS credentials (SigV4): the 403 saying which key to send."""
    if refused.status == 401 and (req.header("authorization") or "").startswith("AWS4-HMAC-SHA256"):
        return bedrock_error(403, "costline takes its API key as a Bedrock API key (api_key= on AnthropicBedrock, "
                                  "AWS_BEARER_TOKEN_BEDROCK for boto3), not AWS credentials (a SigV4 signature)",
                             refused.headers)
    return None


def _tls_files(cfg: GatewayConfig) -> tuple[str, str] | None:
    """The PEM files of an HTTPS gateway (checked here: a bad pair names its key)."""
    if ssl_context(cfg.tls_cert_file, cfg.tls_key_file) is None:
        return None
    return str(cfg.tls_cert_file), str(cfg.tls_key_file)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> HttpResponse:
    """Anthropic's error answer: its body names the request id (``request_id``), as its headers do."""
    # a 4xx the table does not name (411, 415, 431) is still the caller's to fix
    err_type = ANTHROPIC_ERROR_TYPES.get(status, "invalid_request_error" if 400 <= status < 500 else "api_error")
    headers = dict(headers or {})
    request_id = with_request_id(headers)
    return HttpResponse(status, {"type": "error", "error": {"type": err_type, "message": message},
                                 "request_id": request_id}, headers=headers)
