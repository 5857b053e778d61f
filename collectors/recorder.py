"""Record costline requests, cache lookups and model calls as OpenTelemetry spans.

::

    recorder = Recorder(provider)
    with recorder.request(task_type="faq", tenant="acme", routed_tier="budget") as req:
        with req.cache_lookup(namespace="acme") as lk:
            lk.result(hit=False, similarity=0.71)
        with req.call(provider="anthropic", model="claude-haiku-4-5", tier="budget") as call:
            call.usage(input_tokens=1200, output_tokens=80)
            call.response(model="claude-haiku-4-5-20251001", finish_reasons=["end_turn"])
        req.accept()

Spans and attributes are exactly those of :mod:`costline.contract`. Recording
never raises into the app: a bad attribute value is logged and dropped. An
exception escaping a ``call`` or ``request`` block is recorded (``error.type``,
status ERROR) and re-raised unchanged.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider

from costline import contract
from costline.config import CaptureConfig
from costline.pricing import endpoint_scope

from costline.collectors.stamping import REQUEST_ID_CONTEXT_KEY, current_request_id

if TYPE_CHECKING:
    from costline.collectors.metrics import CallObservation, CostlineMetrics

__all__ = ["Recorder", "RequestHandle", "CallHandle", "LookupHandle", "capture_enabled", "returning"]

log = logging.getLogger(__name__)

#: At most this many rejected attempts are listed on a request span (a ladder is a handful of tiers).
MAX_REJECTED_ATTEMPTS = 8

_HANDLE_KEY = otel_context.create_key("costline.request.handle")
_RETURNED_KEY = otel_context.create_key("costline.request.returned_id")
_TRUE = frozenset({"1", "true", "yes", "on"})
_SCOPE = "costline.collectors"
#: What a call's ``endpoint`` may say (anything else is read off the model id, as if unsaid).
_ENDPOINTS = frozenset({contract.ENDPOINT_GLOBAL, contract.ENDPOINT_REGIONAL})


@contextmanager
def returning(name: Callable[[str, str | None], str | None]) -> Iterator[None]:
    """Requests opened in this block (or in a context copied from it: a live stream's) record, as their span ends, the
    response id their caller's answer gives its client (``costline.response.id``): ``name(request_id, answer_id)``,
    where ``answer_id`` is the response id of the request's last call that ended without error (None for a cache
    answer, or when no call said one). A gateway says so, so that an app's own span of the call it answered is known
    for what it is (the lake counts the call once). ``name`` failing or returning None records nothing."""
    token = otel_context.attach(otel_context.set_value(_RETURNED_KEY, name))
    try:
        yield
    finally:
        otel_context.detach(token)


def capture_enabled(capture: CaptureConfig | None = None, env: Mapping[str, str] | None = None) -> bool:
    """True when message content is to be recorded (config flag or the OTel GenAI env var)."""
    env = os.environ if env is None else env
    flag = env.get(contract.ENV_CAPTURE_MESSAGE_CONTENT, "").strip().lower() in _TRUE
    return bool(capture and capture.message_content) or flag


# --- attribute checks: each returns the value to set or raises ValueError ---------------------
def _str(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a whole number >= 0, got {value!r}")
    return value


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _whole(value: Any) -> Any:
    """``value`` as an int when it is a finite whole float (``1000.0``), else unchanged."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


def _unit_interval(value: Any) -> float:
    number = _number(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"expected a number from 0 to 1, got {value!r}")
    return number


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _strs(value: Any) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ValueError(f"expected a list of strings, got {value!r}")
    return [_str(v) for v in value]


def _set(span: Span, key: str, value: Any, check: Callable[[Any], Any]) -> None:
    """Set one attribute; a bad value is logged and dropped, never raised."""
    if value is None:
        return
    try:
        span.set_attribute(key, check(value))
    except Exception as exc:
        log.warning("costline: dropped attribute %s: %s", key, exc)


class LookupHandle:
    """A ``costline.cache.lookup`` span; call :meth:`result` once the cache answered."""

    def __init__(self, span: Span, request: RequestHandle | None,
                 on_result: Callable[[bool], None] | None = None) -> None:
        self.span = span
        self._request = request
        self._on_result = on_result  # metrics hook (collectors/metrics.py)
        self.hit: bool | None = None

    def result(self, hit: bool, similarity: float | None = None) -> None:
        """Record whether the cache hit and the best similarity score it saw."""
        try:
            _set(self.span, contract.COSTLINE_CACHE_HIT, hit, _bool)
            _set(self.span, contract.COSTLINE_CACHE_SIMILARITY, similarity, _number)
            if isinstance(hit, bool):
                self.hit = hit
                if self._request is not None:
                    self._request._record_lookup(hit)
                if self._on_result is not None:
                    self._on_result(hit)
        except Exception:
            log.exception("costline: could not record a cache lookup result")


class CallHandle:
    """A model call span (kind CLIENT, named ``"{operation} {model}"``)."""

    def __init__(self, recorder: Recorder, span: Span, tier: str | None,
                 request: RequestHandle | None = None, observation: CallObservation | None = None) -> None:
        self.span = span
        self.tier = tier
        self.error_type: str | None = None
        self._obs = observation  # metrics hook (collectors/metrics.py); None without metrics
        self._recorder = recorder
        self._request = request
        self._ended = False
        self._response_id: str | None = None
        if request is not None:
            request._call_started(tier)

    def usage(
        self,
        input_tokens: int | None,
        output_tokens: int | None,
        cache_read_tokens: int = 0,
        cache_creation_tokens: int = 0,
        cache_creation_1h_tokens: int = 0,
        web_search_requests: int = 0,
    ) -> None:
        """Record token usage. ``input_tokens`` is the GenAI-semconv total: it INCLUDES
        ``cache_read_tokens`` and ``cache_creation_tokens`` (Anthropic reports them apart:
        add them up first). ``cache_creation_1h_tokens`` are the part of the cache writes with a
        one-hour lifetime (Anthropic's ``usage.cache_creation.ephemeral_1h_input_tokens``), priced higher;
        ``web_search_requests`` the searches the model's server tool made (``usage.server_tool_use``), priced each.
        ``input_tokens`` or ``output_tokens`` None: the provider sent no such count (null): it is left out and the
        call flagged ``costline.usage.incomplete``, never recorded as 0."""
        s = self.span
        counts = [input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, cache_creation_1h_tokens,
                  web_search_requests]
        # a whole float (1000.0, from JSON or arithmetic) is that count; one that is no count (negative, NaN,
        # fractional, a string) is left out as a broken one is, and the usage flagged incomplete
        counts = [_whole(n) for n in counts]
        odd = [i for i, n in enumerate(counts) if n is not None and not _is_count(n)]
        if odd:
            log.warning("costline: left out token count(s) that are no counts (%s): pass whole numbers >= 0",
                        ", ".join(repr(counts[i])[:24] for i in odd))
        absurd = [i for i, n in enumerate(counts) if _is_count(n) and n > contract.MAX_TOKENS]
        if absurd:  # a broken counter (10**30 from a server): no count, not one the exporter cannot even encode
            log.warning("costline: left out token count(s) over %d (%s): the provider's counter is broken",
                        contract.MAX_TOKENS, ", ".join(str(counts[i])[:24] for i in absurd))
        absurd += odd
        for i in absurd:
            counts[i] = None if i < 2 else 0
        input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, cache_creation_1h_tokens, \
            web_search_requests = counts
        if input_tokens is None or output_tokens is None or absurd:
            self.usage_incomplete()
        _set(s, contract.GEN_AI_USAGE_INPUT_TOKENS, input_tokens, _count)
        _set(s, contract.GEN_AI_USAGE_OUTPUT_TOKENS, output_tokens, _count)
        _set(s, contract.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, cache_read_tokens, _count)
        _set(s, contract.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, cache_creation_tokens, _count)
        if cache_creation_1h_tokens:
            _set(s, contract.ANTHROPIC_USAGE_CACHE_CREATION_1H, cache_creation_1h_tokens, _count)
        if web_search_requests:
            _set(s, contract.ANTHROPIC_USAGE_WEB_SEARCH_REQUESTS, web_search_requests, _count)
        if self._obs is not None:
            self._obs.usage(input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens,
                            cache_creation_1h_tokens, web_search_requests)
        try:
            if input_tokens < cache_read_tokens + cache_creation_tokens:
                log.warning(
                    "costline: input_tokens (%s) is below cache read + creation tokens (%s + %s): "
                    "pass the total including cached tokens",
                    input_tokens, cache_read_tokens, cache_creation_tokens,
                )
        except TypeError:
            pass

    def speed(self, speed: str | None) -> None:
        """The speed the provider says the call ran at (Anthropic's ``usage.speed``): ``"fast"`` is billed at the
        model's ``fast_multiplier`` of its standard prices."""
        if isinstance(speed, str) and speed:
            _set(self.span, contract.ANTHROPIC_RESPONSE_SPEED, speed[:32], _str)
            if self._obs is not None:
                self._obs.speed(speed)

    def service_tier(self, tier: str | None, attribute: str = contract.OPENAI_RESPONSE_SERVICE_TIER) -> None:
        """The service tier the provider says served the call (OpenAI's ``service_tier``: ``"flex"`` is billed at
        batch prices, ``"priority"`` at the model's ``priority_multiplier``), as ``attribute`` spells it."""
        if isinstance(tier, str) and tier:
            _set(self.span, attribute, tier[:32], _str)
            if self._obs is not None:
                self._obs.service_tier(tier[:32])

    def inference_geo(self, geo: str | None) -> None:
        """Where the provider says it ran the call (Anthropic's ``usage.inference_geo``): ``"us"`` (US-only
        inference) is billed at ``us_inference_multiplier`` x the token prices."""
        if isinstance(geo, str) and geo:
            _set(self.span, contract.ANTHROPIC_RESPONSE_INFERENCE_GEO, geo[:32], _str)
            if self._obs is not None:
                self._obs.inference_geo(geo[:32])

    def response(
        self, model: str | None = None, finish_reasons: Sequence[str] | None = None, id: str | None = None
    ) -> None:
        """Record what the provider answered: the exact model, why it stopped, its response id."""
        _set(self.span, contract.GEN_AI_RESPONSE_MODEL, model, _str)
        _set(self.span, contract.GEN_AI_RESPONSE_FINISH_REASONS, finish_reasons, _strs)
        _set(self.span, contract.GEN_AI_RESPONSE_ID, id, _str)
        if isinstance(id, str) and id:
            self._response_id = id
        if self._obs is not None:
            self._obs.response(model)

    def streamed(self, first_chunk_s: float | None = None, usage_complete: bool = True) -> None:
        """A streamed answer: seconds to its first chunk of output (None: none came), and whether
        the usage recorded is the provider's final count (False: the stream broke or was closed
        early, or it never said)."""
        _set(self.span, contract.GEN_AI_REQUEST_STREAM, True, _bool)
        _set(self.span, contract.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, first_chunk_s, _number)
        if usage_complete is False:
            self.usage_incomplete()

    def usage_incomplete(self) -> None:
        """Flag the call's usage incomplete (``costline.usage.incomplete``): a count the provider did not send or
        sent broken, a stream cut short, a response read without its usage. What was counted is then a lower
        bound, and without an input count the call is unpriced, never a free prompt — in the lake and in the
        ``costline.cost`` metric alike."""
        _set(self.span, contract.COSTLINE_USAGE_INCOMPLETE, True, _bool)
        if self._obs is not None:
            self._obs.usage_incomplete()

    def end(self) -> None:
        """End the span (once; later calls do nothing). A ``call`` block ends it itself; a call
        opened with :meth:`Recorder.start_call` is ended here."""
        if self._ended:
            return
        self._ended = True
        try:
            self.span.end(end_time=self._recorder._now())
        except Exception:
            log.exception("costline: could not end a call span")
        if self._request is not None:
            self._request._call_ended(self.tier, self.error_type is None, self._response_id)
        if self._obs is not None:
            self._obs.end(self.error_type)

    def cost(self, usd: float) -> None:
        """Record an explicit price for this call (overrides the pricing table)."""
        _set(self.span, contract.COSTLINE_COST_USD, usd, _number)
        if self._obs is not None:
            self._obs.cost(usd)

    def error(self, error_type: str, description: str | None = None, *, detail: str | None = None) -> None:
        """Mark the call failed without an exception (e.g. an error returned in a body).

        ``description`` (the span status's; default ``error_type``) is costline's own words and must hold no text
        from outside. ``detail`` is what the upstream said (an error message, which may quote the prompt): appended
        only when content capture is on, redacted and cut as captured content is (:meth:`Recorder.detail`)."""
        try:
            self.error_type = _str(error_type)
            self.span.set_attribute(contract.ERROR_TYPE, error_type)
            text = description or error_type
            said = self._recorder.detail(detail) if detail is not None else None
            self.span.set_status(Status(StatusCode.ERROR, f"{text}: {said}" if said else text))
        except Exception as exc:
            log.warning("costline: dropped error.type: %s", exc)

    def failed(self, exc: BaseException, error_type: str | None = None) -> None:
        """Mark the call failed with ``exc`` (``error_type``: its name, default its class's): the status description
        is :meth:`Recorder.describe_error`'s (content-free unless content capture is on)."""
        self.error(error_type or type(exc).__name__, self._recorder.describe_error(exc))

    def content(
        self,
        input_messages: Sequence[Any] | None = None,
        output_messages: Sequence[Any] | None = None,
    ) -> None:
        """Record prompt and answer text — only when content capture is on; redacted, truncated."""
        rec = self._recorder
        if not rec.capture_enabled:
            return
        for key, messages, role in (
            (contract.GEN_AI_INPUT_MESSAGES, input_messages, "user"),
            (contract.GEN_AI_OUTPUT_MESSAGES, output_messages, "assistant"),
        ):
            if messages is None:
                continue
            try:
                doc = [rec._message(m, role) for m in messages]
                self.span.set_attribute(key, json.dumps(doc, ensure_ascii=False))
            except Exception as exc:
                log.warning("costline: dropped %s: %s", key, exc)


class RequestHandle:
    """A ``costline.request`` span: parent of its lookups and calls."""

    def __init__(self, recorder: Recorder, span: Span, request_id: str) -> None:
        self.span = span
        self.request_id = request_id
        #: The request's tenant as recorded on its span (None: not said or not a non-empty string): stamped on
        #: its lookup and call spans too, so they say whose they are even when the request span lands later.
        self.tenant: str | None = None
        self._recorder = recorder
        self._lock = threading.Lock()
        self._attempts = 0
        self._escalations = 0
        self._last_tier: str | None = None
        self._last_ok_tier: str | None = None
        self._cache_hit = False
        self._served_by: str | None = None
        self._success: bool | None = None
        self._error_type: str | None = None
        self._rejected: list[str] = []
        self._answer_id: str | None = None
        #: :func:`returning`'s ``name`` where the request was opened (None: its caller says no response id).
        self._returned: Callable[[str, str | None], str | None] | None = None

    # -- public ------------------------------------------------------------------------
    def cache_lookup(self, namespace: str | None = None) -> Any:
        """Open a ``costline.cache.lookup`` span in this request (a context manager)."""
        return self._recorder._lookup(self, namespace)

    def call(
        self,
        provider: str,
        model: str,
        tier: str | None = None,
        operation: str = contract.OPERATION_CHAT,
        *,
        cost_usd: float | None = None,
        batch: bool | None = None,
        endpoint: str | None = None,
    ) -> Any:
        """Open a model call span in this request (a context manager yielding a CallHandle)."""
        return self._recorder._call(self, provider, model, tier, operation, cost_usd, batch, endpoint)

    def served_by(self, tier: str) -> None:
        """Say which tier finally served the request (else it is inferred)."""
        try:
            self._served_by = _str(tier)
        except ValueError as exc:
            log.warning("costline: ignored served_by: %s", exc)

    def accept(self) -> None:
        """The answer was good: ``costline.success`` = true."""
        self._success = True

    def attempt_rejected(self, tier: str, problem: str | None) -> None:
        """An attempt's answer was not accepted (``problem``: ``validator``, ``low_confidence``, an SDK error class…):
        said on the span as ``costline.rejected_attempts`` (``tier:problem``, in order; at most
        :data:`MAX_REJECTED_ATTEMPTS`). Never raises."""
        try:
            with self._lock:
                if len(self._rejected) < MAX_REJECTED_ATTEMPTS:
                    self._rejected.append(f"{_str(tier)[:32]}:{_str(problem or 'unknown')[:64]}".replace(",", ";"))
        except Exception as exc:  # noqa: BLE001 - telemetry never fails the answer
            log.warning("costline: dropped a rejected attempt: %s", exc)

    def reject(self, reason: str | None = None) -> None:
        """The answer was not good enough: ``costline.success`` = false (reason kept as an event)."""
        self._success = False
        try:
            attrs = {"reason": str(reason)} if reason else {}
            self.span.add_event("costline.reject", attributes=attrs)
        except Exception:
            log.exception("costline: could not record a rejection")

    def attempted(self, tier: str | None, ok: bool) -> None:
        """Count an attempt whose call span was recorded before this request span opened (a batch request's calls,
        made over hours, each in the request's trace with its request id): attempts and escalations as if it ran
        inside."""
        self._call_started(tier)
        self._call_ended(tier, ok)

    def looked_up(self, hit: bool) -> None:
        """Count a cache lookup recorded before this request span opened (as :meth:`attempted`)."""
        self._record_lookup(hit)

    @property
    def attempts(self) -> int:
        return self._attempts

    @property
    def escalations(self) -> int:
        return self._escalations

    # -- used by the recorder -------------------------------------------------------------
    def _record_lookup(self, hit: bool) -> None:
        with self._lock:
            self._cache_hit = self._cache_hit or hit

    def _call_started(self, tier: str | None) -> None:
        with self._lock:
            if self._attempts and tier != self._last_tier:
                self._escalations += 1
            self._attempts += 1
            self._last_tier = tier

    def _call_ended(self, tier: str | None, ok: bool, response_id: str | None = None) -> None:
        if ok:
            with self._lock:
                if tier:
                    self._last_ok_tier = tier
                self._answer_id = response_id

    def _fail(self, exc: BaseException) -> None:
        self._success = False
        self._error_type = type(exc).__name__

    def _finish(self) -> None:
        s = self.span
        tier = self._served_by
        if tier is None:
            if self._cache_hit and self._attempts == 0:
                tier = contract.TIER_CACHE
            else:
                # The tier that answered; when every attempt failed, the last one tried, so the
                # cost of the failed request still shows under a tier (with success false).
                tier = self._last_ok_tier or self._last_tier
        _set(s, contract.COSTLINE_TIER, tier, _str)
        _set(s, contract.COSTLINE_CACHE_HIT, self._cache_hit, _bool)
        _set(s, contract.COSTLINE_ATTEMPTS, self._attempts, _count)
        _set(s, contract.COSTLINE_ESCALATIONS, self._escalations, _count)
        _set(s, contract.COSTLINE_SUCCESS, bool(self._success), _bool)
        if self._rejected:
            _set(s, contract.COSTLINE_REJECTED_ATTEMPTS, ",".join(self._rejected), _str)
        if self._returned is not None:
            try:
                returned = self._returned(self.request_id, None if tier == contract.TIER_CACHE else self._answer_id)
            except Exception:  # noqa: BLE001 - telemetry never fails the answer
                log.warning("costline: could not name the response id a request returned: it is left out")
                returned = None
            _set(s, contract.COSTLINE_RESPONSE_ID, returned, _str)
        if self._error_type:
            _set(s, contract.ERROR_TYPE, self._error_type, _str)
            s.set_status(Status(StatusCode.ERROR, self._error_type))
        s.end(end_time=self._recorder._now())
        if self._recorder._metrics is not None:
            self._recorder._metrics.request_ended(tier=tier, escalations=self._escalations,
                                                  rejected=tuple(self._rejected))


class Recorder:
    """Opens costline spans on a tracer of ``tracer_provider`` (default: the global one).

    ``capture`` turns on message content capture (so does
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``); ``redact`` is
    applied to every captured text before it is truncated to ``capture.max_chars``;
    ``now`` (ns since the epoch) stamps span start and end times instead of the wall clock.
    ``metrics`` (:class:`~costline.collectors.metrics.CostlineMetrics`) also counts each call,
    lookup and request as it ends, in the OTel GenAI metrics and costline's own.
    """

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        *,
        capture: CaptureConfig | None = None,
        redact: Callable[[str], str] | None = None,
        env: Mapping[str, str] | None = None,
        now: Callable[[], int] | None = None,
        metrics: CostlineMetrics | None = None,
    ) -> None:
        # ``now`` returns the time in ns since the epoch (default: the SDK's clock); inject a
        # simulated clock to replay traffic of other days, or to pin times in tests.
        self._now: Callable[[], int | None] = now or (lambda: None)
        self._tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
        self._capture = capture or CaptureConfig()
        self._capture_on = capture_enabled(self._capture, env)
        self._redact = redact
        self._metrics = metrics

    @property
    def capture_enabled(self) -> bool:
        return self._capture_on

    def describe_error(self, exc: BaseException) -> str:
        """What a failed call's span status says of ``exc``. With content capture off: its class and, when it has
        one, its HTTP error status (4xx or 5xx: ``"BadRequestError: 400"``) — never its message, which an upstream's
        400 fills with the prompt it refused. With capture on: the class and the message, redacted and cut to 200
        characters."""
        name = type(exc).__name__
        code = getattr(exc, "status_code", None)
        plain = f"{name}: {code}" if _is_count(code) and 400 <= code <= 599 else name
        if not self._capture_on:
            return plain
        try:
            said = self.detail(str(exc), 200)
        except Exception:  # noqa: BLE001 - a str() that raises: the plain description
            said = None
        return f"{name}: {said}" if said else plain

    def detail(self, text: Any, limit: int = 200) -> str | None:
        """``text`` from outside (an upstream's error message) as a span may carry it: None with content capture
        off; with it on, redacted by the ``redact`` hook and cut to ``limit`` characters (None when the hook
        fails). Never raises."""
        if not self._capture_on or text is None:
            return None
        try:
            return self._text(str(text), limit) or None
        except Exception:  # noqa: BLE001 - a failing hook drops the text, never the call
            log.warning("costline: the redact hook failed on an error message: it is left out")
            return None

    def current_request(self) -> RequestHandle | None:
        """The request handle active in the current context, if any."""
        handle = otel_context.get_value(_HANDLE_KEY)
        return handle if isinstance(handle, RequestHandle) else None

    @contextmanager
    def request(
        self,
        task_type: str | None = None,
        tenant: str | None = None,
        subtype: str | None = None,
        request_id: str | None = None,
        routed_tier: str | None = None,
        route_reason: str | None = None,
        route_confidence: float | None = None,
    ) -> Iterator[RequestHandle]:
        """Open a ``costline.request`` span and make it the active request (``routed_tier``, ``route_reason`` and
        ``route_confidence``: the router's decision, as the lake's ``requests`` keeps it)."""
        rid = request_id if isinstance(request_id, str) and request_id else uuid.uuid4().hex
        span = self._tracer.start_span(contract.SPAN_REQUEST, kind=SpanKind.INTERNAL, start_time=self._now())
        _set(span, contract.COSTLINE_REQUEST_ID, rid, _str)
        _set(span, contract.COSTLINE_TENANT, tenant, _str)
        _set(span, contract.COSTLINE_TASK_TYPE, task_type, _str)
        _set(span, contract.COSTLINE_SUBTYPE, subtype, _str)
        _set(span, contract.COSTLINE_ROUTED_TIER, routed_tier, _str)
        _set(span, contract.COSTLINE_ROUTE_REASON, route_reason[:256] if isinstance(route_reason, str) else None, _str)
        _set(span, contract.COSTLINE_ROUTE_CONFIDENCE, route_confidence, _unit_interval)
        handle = RequestHandle(self, span, rid)
        handle.tenant = tenant if isinstance(tenant, str) and tenant else None
        returned = otel_context.get_value(_RETURNED_KEY)
        handle._returned = returned if callable(returned) else None
        ctx = trace.set_span_in_context(span)
        ctx = otel_context.set_value(REQUEST_ID_CONTEXT_KEY, rid, ctx)
        ctx = otel_context.set_value(_HANDLE_KEY, handle, ctx)
        token = otel_context.attach(ctx)
        try:
            yield handle
        except BaseException as exc:
            handle._fail(exc)
            raise
        finally:
            otel_context.detach(token)
            try:
                handle._finish()
            except Exception:
                log.exception("costline: could not finish a request span")

    def call(
        self,
        provider: str,
        model: str,
        tier: str | None = None,
        operation: str = contract.OPERATION_CHAT,
        *,
        cost_usd: float | None = None,
        batch: bool | None = None,
        endpoint: str | None = None,
    ) -> Any:
        """A model call span in the active request, or a standalone one without a request. ``endpoint``: the kind
        of a cloud's endpoint it goes to (``contract.ENDPOINT_GLOBAL`` / ``ENDPOINT_REGIONAL``; None: read off a
        Bedrock model id, else not said), which prices Claude on Bedrock and Vertex AI."""
        return self._call(self.current_request(), provider, model, tier, operation, cost_usd, batch, endpoint)

    def start_call(
        self,
        provider: str,
        model: str,
        tier: str | None = None,
        operation: str = contract.OPERATION_CHAT,
        *,
        cost_usd: float | None = None,
        batch: bool | None = None,
        endpoint: str | None = None,
    ) -> CallHandle:
        """A model call span that outlives the code that opened it (a streamed answer, read
        later by the app): in the active request (or standalone), never made the current span;
        the caller ends it with :meth:`CallHandle.end`. ``endpoint``: as in :meth:`call`."""
        return self._start_call(self.current_request(), provider, model, tier, operation, cost_usd, batch, endpoint)

    def cache_lookup(self, namespace: str | None = None) -> Any:
        """A cache lookup span in the active request, or a standalone one."""
        return self._lookup(self.current_request(), namespace)

    # -- internals -------------------------------------------------------------------------
    @contextmanager
    def _lookup(self, request: RequestHandle | None, namespace: str | None) -> Iterator[LookupHandle]:
        span = self._tracer.start_span(contract.SPAN_CACHE_LOOKUP, kind=SpanKind.INTERNAL, start_time=self._now())
        _set(span, contract.COSTLINE_CACHE_NAMESPACE, namespace, _str)
        if request is None:  # a request's work done before its span opens (a batch request's) says whose it is
            _set(span, contract.COSTLINE_REQUEST_ID, current_request_id(), _str)
        else:  # whose lookup it is, on the span itself: a miss's request span ends (and lands) after its model call
            _set(span, contract.COSTLINE_TENANT, request.tenant, _str)
        on_result = None
        if self._metrics is not None:
            metrics = self._metrics
            on_result = lambda hit: metrics.lookup(hit=hit, namespace=namespace)  # noqa: E731
        handle = LookupHandle(span, request, on_result)
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            yield handle
        except BaseException as exc:
            _set(span, contract.ERROR_TYPE, type(exc).__name__, _str)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            otel_context.detach(token)
            span.end(end_time=self._now())

    @contextmanager
    def _call(
        self,
        request: RequestHandle | None,
        provider: str,
        model: str,
        tier: str | None,
        operation: str,
        cost_usd: float | None,
        batch: bool | None,
        endpoint: str | None = None,
    ) -> Iterator[CallHandle]:
        handle = self._start_call(request, provider, model, tier, operation, cost_usd, batch, endpoint)
        token = otel_context.attach(trace.set_span_in_context(handle.span))
        try:
            yield handle
        except BaseException as exc:
            handle.failed(exc)
            raise
        finally:
            otel_context.detach(token)
            handle.end()

    def _start_call(
        self,
        request: RequestHandle | None,
        provider: str,
        model: str,
        tier: str | None,
        operation: str,
        cost_usd: float | None,
        batch: bool | None,
        endpoint: str | None = None,
    ) -> CallHandle:
        op = operation if isinstance(operation, str) and operation else contract.OPERATION_CHAT
        if endpoint not in _ENDPOINTS:
            endpoint = endpoint_scope(model) if isinstance(model, str) else None
        span = self._tracer.start_span(f"{op} {model}", kind=SpanKind.CLIENT, start_time=self._now())
        _set(span, contract.GEN_AI_OPERATION_NAME, op, _str)
        _set(span, contract.GEN_AI_PROVIDER_NAME, provider, _str)
        _set(span, contract.GEN_AI_REQUEST_MODEL, model, _str)
        _set(span, contract.COSTLINE_TIER, tier, _str)
        _set(span, contract.COSTLINE_COST_USD, cost_usd, _number)
        _set(span, contract.COSTLINE_BATCH, batch, _bool)
        _set(span, contract.COSTLINE_ENDPOINT_SCOPE, endpoint, _str)
        if request is None:  # as in _lookup
            _set(span, contract.COSTLINE_REQUEST_ID, current_request_id(), _str)
        else:
            _set(span, contract.COSTLINE_TENANT, request.tenant, _str)
        obs = None
        if self._metrics is not None:
            obs = self._metrics.start_call(operation=op, provider=provider, model=model, tier=tier,
                                           cost_usd=cost_usd, batch=batch, endpoint=endpoint)
        return CallHandle(self, span, tier, request, obs)

    def _text(self, text: str, budget: int) -> str:
        if self._redact is not None:
            text = self._redact(text)
            if not isinstance(text, str):
                raise ValueError("the redact hook must return a string")
        return text[:budget]

    def _message(self, message: Any, default_role: str) -> dict[str, Any]:
        """One message in the GenAI semconv shape, redacted and truncated to max_chars."""
        if hasattr(message, "model_dump"):
            message = message.model_dump()
        if isinstance(message, str):
            message = {"role": default_role, "content": message}
        if not isinstance(message, Mapping):
            raise ValueError(f"a message must be a string or a mapping, got {type(message).__name__}")
        budget = self._capture.max_chars
        out: dict[str, Any] = {"role": str(message.get("role") or default_role)}
        if "parts" in message:
            raw_parts = list(message["parts"])
        else:
            content = message.get("content")
            if content is None:
                raw_parts = []
            elif isinstance(content, str):
                raw_parts = [{"type": "text", "content": content}]
            else:
                raw_parts = list(content)
        parts = []
        for part in raw_parts:
            if hasattr(part, "model_dump"):
                part = part.model_dump()
            if isinstance(part, str):
                part = {"type": "text", "content": part}
            if not isinstance(part, Mapping):
                continue
            kind = str(part.get("type") or "text")
            text = part.get("content", part.get("text"))
            if kind == "text" and isinstance(text, str):
                clipped = self._text(text, max(budget, 0))
                budget -= len(clipped)
                parts.append({"type": "text", "content": clipped})
            else:
                parts.append({"type": kind})  # non-text parts: the kind only, never their payload
        out["parts"] = parts
        if message.get("finish_reason"):
            out["finish_reason"] = str(message["finish_reason"])
        return out
