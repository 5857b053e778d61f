"""Wrap SDK clients so every model call becomes a costline call span, streamed or not.

``instrument_anthropic`` wraps ``client.messages.create`` and ``client.messages.stream`` of an
``Anthropic`` or ``AsyncAnthropic`` client; ``instrument_openai`` wraps
``client.chat.completions.create`` of an OpenAI-compatible client (``OpenAI``, ``AsyncOpenAI``:
vLLM...) and its Responses API (``client.responses.create`` / ``parse`` / ``stream``: usage from the response's
``usage``, streamed from the final event's ``response``; ``input_tokens`` includes the cached tokens). Each call
opens a call span in the active costline request, or a standalone one without one; an SDK exception is recorded
as ``error.type`` (its class name, e.g. ``RateLimitError``) and re-raised. An Anthropic ``error`` event in a
200 stream (the SDK's bare ``APIStatusError``), or a 200 whose body is the error object, is named as the same
error is named as a status (``OverloadedError``: :data:`ANTHROPIC_ERROR_CLASSES`). ``parse()`` (structured
output, both SDKs) is recorded as ``create`` is; so are calls through ``client.with_options(...)`` and
``client.copy(...)`` (the copy is instrumented as its original). A token count the provider sent as null
is left out and the call flagged ``costline.usage.incomplete``, never recorded as 0 (so is a negative one). A chat
completion with no choices (older vLLM's error object, sent with a 200) is a failed call
(``APIResponseValidationError``, as the serving tiers name it); :func:`fail_stream_call` lets a caller that turns
down what a stream sent (an error object the SDK passed on as a chunk) fail its call span.

Streamed calls (``create(stream=True)``, ``messages.stream(...)``) hand the app the SDK's own
stream object behind a transparent proxy (:mod:`wrapt`: same type for ``isinstance``, same
attributes, iteration, context manager, ``close()``, ``text_stream``, ``get_final_message()``):
the span opens when the request is sent and ends when the stream ends, fails, is closed or is
dropped. It carries the usage the provider streamed (Anthropic: ``message_start`` updated by
``message_delta``; OpenAI: the last chunk when the app asked for
``stream_options={"include_usage": True}``), ``gen_ai.request.stream`` and
``gen_ai.response.time_to_first_chunk`` (seconds to the first chunk of output, on the injected
``clock``). A stream that breaks (``error.type`` set) or is closed before the provider's final
count keeps the usage it had and is flagged ``costline.usage.incomplete``; so is an OpenAI
stream without ``include_usage``, with no token counts: the wrapper does not add
``stream_options`` to the app's request, since that adds a choice-less chunk the app never
asked for and some OpenAI-compatible servers reject the option. A stream that runs out (the
SDK's iteration stops without an error: the server or a proxy ended the response) before the
model's final event (Anthropic: ``message_delta`` with its stop reason; OpenAI: a ``finish_reason``
for every choice) was cut off: a failed call, ``error.type`` = :data:`INCOMPLETE_STREAM`, status
ERROR. One the app closes or drops before its end is the app's choice, not an error.

``with_raw_response.create(...)`` and ``with_streaming_response.create(...)`` (on the resource
or the client, both SDKs, sync and async) go through the same wrapper: the SDK calls the wrapped
``create`` with its raw-response header and gets an ``APIResponse`` back. A raw response's body
is already read: the call is recorded from ``response.parse()`` (cached by the SDK, so the app's
own ``parse()`` returns the same object). A streaming response is handed over watched: what the
app's ``parse()`` returns is recorded (a message) or watched like any stream (``stream=True``);
a body read some other way (``json()``, ``read()``) is parsed when the response closes, and one
closed unread leaves the call flagged ``costline.usage.incomplete``. Views the app read before
instrumenting are dropped so that they bind the wrapped ``create`` when read again.

Both are idempotent and return a callable that removes the wrappers. Recording never raises
into the app and never changes what it sees.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType, SimpleNamespace
from typing import Any, Final

import wrapt

from costline import contract

from costline.collectors.recorder import CallHandle, Recorder

__all__ = ["ANTHROPIC_ERROR_CLASSES", "INCOMPLETE_STREAM", "anthropic_error_class", "anthropic_error_name",
           "fail_stream_call", "instrument_anthropic", "instrument_openai", "vertex_endpoint"]

log = logging.getLogger(__name__)

_MARK = "__costline_uninstrument__"

Clock = Callable[[], float]

#: ``error.type`` of a streamed call whose stream ran out (the SDK's iteration stopped without an error: the
#: server or a proxy ended the response) before the model's final event: Anthropic's ``message_delta`` with its
#: stop reason, OpenAI's ``finish_reason`` of every choice. The answer may be cut off: a failed call. The serving
#: tiers fail with the same name (``serving.backends.INCOMPLETE_STREAM``).
INCOMPLETE_STREAM = "IncompleteStreamError"
_INCOMPLETE_STREAM_MESSAGE = ("the stream ended before the model's final event (no stop reason): the answer may be "
                              "cut off")


#: The anthropic SDK's clients of Claude on a cloud (by class name) -> their calls' gen_ai.provider.name.
_CLOUD_CLIENTS = {"AnthropicBedrock": contract.PROVIDER_BEDROCK, "AsyncAnthropicBedrock": contract.PROVIDER_BEDROCK,
                  "AnthropicVertex": contract.PROVIDER_VERTEX, "AsyncAnthropicVertex": contract.PROVIDER_VERTEX}


def instrument_anthropic(client: Any, recorder: Recorder, *, tier: str | None = None,
                         clock: Clock = time.perf_counter, provider: str | None = None) -> Callable[[], None]:
    """Record every ``client.messages.create`` and ``client.messages.stream`` call; returns the
    undo callable. ``clock`` (seconds) times the first chunk of a streamed answer. ``provider`` (the spans'
    ``gen_ai.provider.name``): None reads it off the client, ``aws.bedrock`` for ``anthropic.AnthropicBedrock``,
    ``gcp.vertex_ai`` for ``anthropic.AnthropicVertex`` (and their async twins), else ``anthropic``."""
    if provider is None:  # the SDK's own name for it (anthropic >= 2), else the class's
        provider = getattr(type(client), "_gen_ai_provider_name", None) or _CLOUD_CLIENTS.get(
            type(client).__name__, contract.PROVIDER_ANTHROPIC)
    kit = _Kit(recorder, provider, tier, clock, _record_anthropic, _AnthropicStream, endpoint=vertex_endpoint(client))
    return _install(client, client.messages, {"create": kit.create, "parse": kit.create, "stream": kit.stream_helper},
                    lambda copy: instrument_anthropic(copy, recorder, tier=tier, clock=clock, provider=provider),
                    more=_beta_messages(client))


def _beta_messages(client: Any) -> tuple[tuple[Any, Any], ...]:
    """The client's beta Messages resource (``client.beta.messages``: the same calls with beta features, which apps
    use for the 1M-token context, the Files API, the MCP connector…) and its parent (``client.beta``, whose views
    such as ``with_raw_response`` hold it too), where the SDK has one."""
    try:
        parent = getattr(client, "beta", None)
        beta = getattr(parent, "messages", None)
    except Exception:  # noqa: BLE001 - an SDK without it, or a client double
        return ()
    return ((beta, parent),) if beta is not None and callable(getattr(beta, "create", None)) else ()


def vertex_endpoint(client: Any) -> str | None:
    """The kind of endpoint an ``AnthropicVertex`` client calls: its region ``global`` or a region (``us-east5``),
    which Vertex AI prices apart for Claude; None for other clients (a Bedrock call's model id says it)."""
    try:
        region = getattr(client, "region", None) if "Vertex" in type(client).__name__ else None
    except Exception:  # the SDK's region is a property that raises when unset (a test double's)
        return None
    if not isinstance(region, str) or not region:
        return None
    return contract.ENDPOINT_GLOBAL if region.strip().lower() == "global" else contract.ENDPOINT_REGIONAL


def instrument_openai(
    client: Any,
    recorder: Recorder,
    *,
    provider: str = contract.PROVIDER_VLLM,
    tier: str | None = None,
    clock: Clock = time.perf_counter,
) -> Callable[[], None]:
    """Record every ``client.chat.completions.create`` / ``parse`` call and every Responses API call
    (``client.responses.create`` / ``parse`` / ``stream``); returns the undo callable."""
    kit = _Kit(recorder, provider, tier, clock, _record_openai, _OpenAIStream)
    responses = _Kit(recorder, provider, tier, clock, _record_openai_response, _OpenAIResponsesStream)
    return _install(client, client.chat.completions, {"create": kit.create, "parse": kit.create},
                    lambda copy: instrument_openai(copy, recorder, provider=provider, tier=tier, clock=clock),
                    others=_responses_resource(client, {"create": responses.create, "parse": responses.create,
                                                        "stream": responses.responses_stream}))


def _responses_resource(client: Any, wrappers: dict[str, Callable[..., Callable[..., Any]]]
                        ) -> tuple[tuple[Any, Any, dict[str, Callable[..., Callable[..., Any]]]], ...]:
    """The client's Responses API resource (``client.responses``, whose views such as ``with_raw_response`` bind its
    ``create``) with its wrappers, where the SDK has one (``responses.stream`` calls the wrapped ``create``)."""
    try:
        resource = getattr(client, "responses", None)
    except Exception:  # noqa: BLE001 - an older SDK, or a client double
        return ()
    if resource is None or not callable(getattr(resource, "create", None)):
        return ()
    return ((resource, client, wrappers),)


def _install(client: Any, resource: Any, wrappers: dict[str, Callable[..., Callable[..., Any]]],
             again: Callable[[Any], Any], *, more: Sequence[tuple[Any, Any]] = (),
             others: Sequence[tuple[Any, Any, dict[str, Callable[..., Callable[..., Any]]]]] = ()
             ) -> Callable[[], None]:
    """Wrap ``resource``'s methods (and those of each ``(resource, its parent)`` of ``more``, the same ones: a beta
    twin; and each ``(resource, its parent, its wrappers)`` of ``others``: another API of the client) and the
    client's copiers; returns the undo callable (the one already installed when ``resource`` is instrumented)."""
    undo = getattr(getattr(resource, "create"), _MARK, None)
    if undo is not None:
        return undo  # already instrumented
    is_async = _is_async(client)
    installed: list[tuple[Any, dict[str, Any]]] = []
    parents = [parent for _, parent in more] + [parent for _, parent, _ in others]
    targets = [(resource, wrappers), *((holder, wrappers) for holder, _ in more),
               *((holder, own) for holder, _, own in others)]
    for holder, wrappers_of in targets:
        made: dict[str, Any] = {}
        for name, make in wrappers_of.items():
            original = getattr(holder, name, None)
            if original is not None:
                made[name] = make(original, is_async)
        installed.append((holder, made))
    copiers: dict[str, Any] = {}
    for name in _COPIERS:
        original = getattr(client, name, None)
        if callable(original):
            copiers[name] = _copier(original, again)

    def uninstrument() -> None:
        for holder, wrappers_ in (*installed, (client, copiers)):
            for name, wrapper in wrappers_.items():
                if vars(holder).get(name) is wrapper:
                    delattr(holder, name)
        for holder, _ in installed:
            _forget_views(client, holder)
        for parent in parents:
            _forget_views(parent, parent)

    for holder, made in installed:
        for name, wrapper in made.items():
            setattr(wrapper, _MARK, uninstrument)
            setattr(holder, name, wrapper)
    for name, wrapper in copiers.items():
        try:
            setattr(client, name, wrapper)
        except Exception:
            log.warning("costline: copies of a %s will not be recorded", type(client).__name__, exc_info=True)
    for holder, _ in installed:
        _forget_views(client, holder)
    for parent in parents:
        _forget_views(parent, parent)
    return uninstrument


def _is_async(client: Any) -> bool:
    """An ``AsyncAnthropic`` / ``AsyncOpenAI`` (or a subclass of one: both SDKs' async clients derive from
    their ``AsyncAPIClient``)."""
    return type(client).__name__.startswith("Async") or any(
        k.__name__ == "AsyncAPIClient" for k in type(client).__mro__)


#: The client methods that make a new client of the same options but other resources
#: (``client.with_options(timeout=...)`` is ``copy``): the copy is instrumented as the client was.
_COPIERS = ("copy", "with_options")


def _copier(original: Callable[..., Any], again: Callable[[Any], Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def copy(*args: Any, **kwargs: Any) -> Any:
        made = original(*args, **kwargs)
        try:
            again(made)
        except Exception:
            log.exception("costline: could not instrument a copy of a client")
        return made

    return copy


#: The SDKs' cached views of a resource that bind its ``create`` when first read
#: (``client.messages.with_raw_response.create`` and the like).
_VIEWS = ("with_raw_response", "with_streaming_response")


def _forget_views(client: Any, resource: Any) -> None:
    """Drop the views an app read before (un)instrumenting: read again, they bind the ``create``
    in place now (the SDK builds them on first use; nothing else is kept in them)."""
    for holder in (resource, client):
        for name in _VIEWS:
            try:
                vars(holder).pop(name, None)
            except TypeError:
                pass  # no instance dict: nothing cached


class _Kit:
    """What the wrappers of one instrumented client share."""

    def __init__(self, recorder: Recorder, provider: str, tier: str | None, clock: Clock,
                 record: Callable[[CallHandle, Recorder, dict[str, Any], Any], None],
                 parser: type[_StreamParser], *, endpoint: str | None = None) -> None:
        self.recorder = recorder
        self.endpoint = endpoint  # a Vertex client's kind of endpoint (global / regional)
        self.provider = provider
        self.tier = tier
        self.clock = clock
        self.record = record
        self.parser = parser

    def _model(self, kwargs: dict[str, Any]) -> str:
        model = kwargs.get("model")
        return model if isinstance(model, str) and model else "unknown"

    def open_stream(self, kwargs: dict[str, Any]) -> _StreamRecord | None:
        try:
            call = self.recorder.start_call(self.provider, self._model(kwargs), self.tier, endpoint=self.endpoint)
            return _StreamRecord(call, self.parser(self.recorder.capture_enabled), self.clock, self.recorder,
                                 kwargs)
        except Exception:
            log.exception("costline: could not open a call span for a stream")
            return None

    def open_later(self, kwargs: dict[str, Any], raw: str | None) -> _StreamRecord | _ParsedRecord | None:
        """The record of a call whose answer the app reads after ``create`` returned: a stream, or a
        ``with_streaming_response`` body it reads when it likes."""
        if kwargs.get("stream"):
            return self.open_stream(kwargs)
        try:
            return _ParsedRecord(self, self.recorder.start_call(self.provider, self._model(kwargs), self.tier,
                                                                endpoint=self.endpoint),
                                 kwargs)
        except Exception:
            log.exception("costline: could not open a call span for a streamed response")
            return None

    def watch(self, result: Any, rec: _StreamRecord | _ParsedRecord | None, raw: str | None,
              stream_proxy: type[wrapt.ObjectProxy]) -> Any:
        """What ``create`` hands the app, watched: the SDK's stream, or (``with_raw_response``,
        ``with_streaming_response``) its ``APIResponse``, whose ``parse()`` gives the stream or message."""
        if rec is None:
            return result
        if raw is None:
            return stream_proxy(result, rec)
        return _ResponseProxy(result, rec)

    # -- create(): plain or stream=True -----------------------------------------------------------
    def create(self, original: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
        kit = self
        if is_async:

            @functools.wraps(original)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                raw = _raw_mode(kwargs)
                if kwargs.get("stream") or raw == _RAW_STREAM:
                    rec = kit.open_later(kwargs, raw)
                    try:
                        result = await original(*args, **kwargs)
                    except BaseException as exc:
                        _fail_and_finish(rec, exc)
                        raise
                    return kit.watch(result, rec, raw, _AsyncStreamProxy)
                with kit.recorder.call(kit.provider, kit._model(kwargs), kit.tier, endpoint=kit.endpoint) as call:
                    response = await original(*args, **kwargs)
                    if raw is None:
                        _safe_record(kit.record, call, kit.recorder, kwargs, response)
                    else:  # with_raw_response: the body is read; its parse() is cached for the app
                        await _record_raw(kit, call, kwargs, response)
                    return response

            return async_wrapper

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            raw = _raw_mode(kwargs)
            if kwargs.get("stream") or raw == _RAW_STREAM:
                rec = kit.open_later(kwargs, raw)
                try:
                    result = original(*args, **kwargs)
                except BaseException as exc:
                    _fail_and_finish(rec, exc)
                    raise
                return kit.watch(result, rec, raw, _SyncStreamProxy)
            with kit.recorder.call(kit.provider, kit._model(kwargs), kit.tier, endpoint=kit.endpoint) as call:
                response = original(*args, **kwargs)
                if raw is None:
                    _safe_record(kit.record, call, kit.recorder, kwargs, response)
                else:  # with_raw_response: the body is read; its parse() is cached for the app
                    _record_raw_sync(kit, call, kwargs, response)
                return response

        return wrapper

    # -- anthropic's messages.stream(): a (async) context manager -----------------------------------
    def stream_helper(self, original: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
        kit = self

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            manager = original(*args, **kwargs)
            opener = functools.partial(kit.open_stream, dict(kwargs))
            return (_AsyncManagerProxy if is_async else _SyncManagerProxy)(manager, opener)

        return wrapper

    # -- openai's responses.stream(): a (async) context manager around the wrapped create(stream=True) ------
    def responses_stream(self, original: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
        """The SDK's manager sends the request through ``responses.create(stream=True)`` (wrapped: that opens the
        call span); handed over watched so that leaving it ends the span of a stream the app did not read out."""

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            manager = original(*args, **kwargs)
            try:
                return (_AsyncResponsesManagerProxy if is_async else _SyncResponsesManagerProxy)(manager)
            except Exception:
                log.exception("costline: could not watch a Responses API stream manager")
                return manager

        return wrapper


#: The header the SDKs' ``with_raw_response`` / ``with_streaming_response`` add to a call
#: ("raw", or "true" in openai's legacy form: the body is read, ``create`` returns an ``APIResponse``;
#: "stream": not read yet).
_RAW_HEADER = "x-stainless-raw-response"
_RAW_STREAM = "stream"


def _raw_mode(kwargs: dict[str, Any]) -> str | None:
    headers = kwargs.get("extra_headers")
    if not headers:
        return None
    try:
        for key, value in headers.items():
            if isinstance(key, str) and key.lower() == _RAW_HEADER:
                # "true": openai's legacy with_raw_response, read like "raw"
                return _RAW_STREAM if value == _RAW_STREAM else "raw" if value in ("raw", "true") else None
    except Exception:
        log.warning("costline: could not read a call's extra_headers", exc_info=True)
    return None


def _record_raw_sync(kit: _Kit, call: CallHandle, kwargs: dict[str, Any], response: Any) -> None:
    """``with_raw_response``: record from ``response.parse()`` (the SDK caches it for the app)."""
    try:
        parsed = response.parse()
    except Exception:
        log.warning("costline: could not parse a raw response", exc_info=True)
        return
    _safe_record(kit.record, call, kit.recorder, kwargs, parsed)


async def _record_raw(kit: _Kit, call: CallHandle, kwargs: dict[str, Any], response: Any) -> None:
    """:func:`_record_raw_sync` for an async client (whose ``parse()`` may be a coroutine)."""
    try:
        parsed = response.parse()
        if inspect.isawaitable(parsed):
            parsed = await parsed
    except Exception:
        log.warning("costline: could not parse a raw response", exc_info=True)
        return
    _safe_record(kit.record, call, kit.recorder, kwargs, parsed)


def _fail_and_finish(rec: _StreamRecord | _ParsedRecord | None, exc: BaseException) -> None:
    if rec is not None:
        rec.fail(exc)
        rec.finish()


def _safe_record(record: Callable[..., None], call: CallHandle, recorder: Recorder, kwargs: dict[str, Any],
                 response: Any) -> None:
    try:
        record(call, recorder, kwargs, response)
    except Exception:  # recording must never break the app's call
        log.exception("costline: could not record a model response")


# --- streams -----------------------------------------------------------------------------------
class _StreamParser:
    """Reads a provider's stream events; ``record`` puts what it saw on the call span."""

    def __init__(self, capture: bool) -> None:
        self.capture = capture
        #: The provider's final usage count was seen.
        self.complete = False

    def is_output(self, event: Any) -> bool:
        raise NotImplementedError

    def observe(self, event: Any) -> None:
        raise NotImplementedError

    def observe_message(self, message: Any) -> None:
        """The final message, when the events themselves could not be watched."""

    @staticmethod
    def error_name(exc: BaseException) -> str:
        """The call's ``error.type`` when ``exc`` broke it."""
        return type(exc).__name__

    def finished(self) -> bool:
        """The model's final event came (its answer is whole, whatever the usage says)."""
        raise NotImplementedError

    def record(self, call: CallHandle, recorder: Recorder, kwargs: dict[str, Any]) -> None:
        raise NotImplementedError


class _StreamRecord:
    """One streamed call: its span, the parser of its events, the time of its first chunk."""

    def __init__(self, call: CallHandle, parser: _StreamParser, clock: Clock, recorder: Recorder,
                 kwargs: dict[str, Any]) -> None:
        self.call = call
        self.parser = parser
        self.clock = clock
        self.recorder = recorder
        self.kwargs = kwargs
        self.started = clock()
        self.first_chunk_s: float | None = None
        self.done = False
        #: Read at the end for its final message when the events could not be watched.
        self.fallback: Any = None

    def item(self, event: Any) -> None:
        if self.done:
            return
        try:
            if self.first_chunk_s is None and self.parser.is_output(event):
                self.first_chunk_s = max(self.clock() - self.started, 0.0)
            self.parser.observe(event)
        except Exception:
            log.exception("costline: could not read a stream event")

    def fail(self, exc: BaseException) -> None:
        if not self.done:
            self.call.failed(exc, self.parser.error_name(exc))

    def ran_out(self) -> None:
        """The stream ended on its own (the SDK's iteration stopped, no error): before the model's final
        event, the server or a proxy cut it off, a failed call (:data:`INCOMPLETE_STREAM`). A stream the app
        closes or drops goes to :meth:`finish` alone: stopping early is its choice, not an error."""
        if not self.done:
            try:
                if not self.parser.finished():
                    self.call.error(INCOMPLETE_STREAM, _INCOMPLETE_STREAM_MESSAGE)
            except Exception:
                log.exception("costline: could not record a stream that was cut off")
        self.finish()

    def finish(self) -> None:
        """End the span with what was seen (once). Never raises."""
        if self.done:
            return
        self.done = True
        try:
            if self.fallback is not None and not self.parser.complete:
                try:
                    self.parser.observe_message(self.fallback.current_message_snapshot)
                except Exception:
                    log.debug("costline: a stream ended before its first message", exc_info=True)
            self.parser.record(self.call, self.recorder, self.kwargs)
            self.call.streamed(self.first_chunk_s, self.parser.complete)
        except Exception:
            log.exception("costline: could not record a streamed response")
        finally:
            self.call.end()


class _ParsedRecord:
    """A call the app reads through ``with_streaming_response`` without ``stream=True``: recorded
    from the response it parses (or, closed unparsed, from the body it read; else flagged
    ``costline.usage.incomplete``). The span ends then."""

    def __init__(self, kit: _Kit, call: CallHandle, kwargs: dict[str, Any]) -> None:
        self.kit = kit
        self.call = call
        self.kwargs = kwargs
        self.done = False

    def fail(self, exc: BaseException) -> None:
        if not self.done:
            self.call.failed(exc, self.kit.parser.error_name(exc))

    def parsed(self, parsed: Any) -> None:
        if self.done:
            return
        _safe_record(self.kit.record, self.call, self.kit.recorder, self.kwargs, parsed)
        self.finish(usage_complete=True)

    def finish(self, usage_complete: bool = False) -> None:
        """End the span (once). Never raises."""
        if self.done:
            return
        self.done = True
        try:
            if not usage_complete:
                self.call.usage_incomplete()
        except Exception:
            log.exception("costline: could not flag a response read without its usage")
        finally:
            self.call.end()


def fail_stream_call(stream: Any, error_type: str, description: str | None = None) -> bool:
    """Mark the call of a watched stream (what an instrumented ``create(stream=True)`` or ``messages.stream``
    returned) failed, before its span ends: for a caller that turns down what the stream sent although the SDK
    passed it on (an error object a server wrote as a chunk). ``error_type``: the name the caller fails with;
    ``description``: what the stream said, which may quote the prompt: on the span status only when content capture
    is on (:meth:`~costline.collectors.recorder.CallHandle.error`'s ``detail``). False (nothing done) for a stream
    that is not watched or whose span has ended. Never raises."""
    try:
        rec = getattr(stream, "_self_record", None)
        if isinstance(rec, _StreamRecord) and not rec.done:
            rec.call.error(error_type, detail=description)
            return True
    except Exception:
        log.exception("costline: could not mark a stream's call failed")
    return False


def _finish_dropped(rec: _StreamRecord | _ParsedRecord | None) -> None:
    """End the span of a stream or response the app dropped (from ``__del__``: never raises)."""
    try:
        if rec is not None:
            rec.finish()
    except Exception:
        log.warning("costline: could not end the call span of a dropped stream", exc_info=True)


class _Watched(wrapt.ObjectProxy):  # type: ignore[misc]
    """What the app gets (the SDK's own object, same type and attributes), with the record of its call."""

    def __init__(self, wrapped: Any, record: Any) -> None:
        super().__init__(wrapped)
        self._self_record = record

    def __del__(self) -> None:  # dropped without being read to the end or closed
        _finish_dropped(self._self_record)


class _SyncStreamProxy(_Watched):
    """The SDK's ``Stream`` as the app sees it, watched."""

    def __iter__(self) -> Any:
        rec = self._self_record
        try:
            for item in self.__wrapped__:
                rec.item(item)
                yield item
        except GeneratorExit:  # the app stopped reading
            rec.finish()
            raise
        except BaseException as exc:
            _fail_and_finish(rec, exc)
            raise
        rec.ran_out()

    def __next__(self) -> Any:
        rec = self._self_record
        try:
            item = self.__wrapped__.__next__()
        except StopIteration:
            rec.ran_out()
            raise
        except BaseException as exc:
            _fail_and_finish(rec, exc)
            raise
        rec.item(item)
        return item

    def __enter__(self) -> Any:
        self.__wrapped__.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        try:
            return self.__wrapped__.__exit__(*exc)
        finally:
            self._self_record.finish()

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            self._self_record.finish()


class _AsyncStreamProxy(_Watched):
    """The SDK's ``AsyncStream`` as the app sees it, watched."""

    async def __aiter__(self) -> Any:
        rec = self._self_record
        iterator = self.__wrapped__.__aiter__()
        while True:
            try:
                item = await iterator.__anext__()
            except StopAsyncIteration:
                rec.ran_out()
                return
            except BaseException as exc:
                _fail_and_finish(rec, exc)
                raise
            rec.item(item)
            try:
                yield item
            except BaseException:
                # thrown in while the app held the item: it stopped reading (aclose), or the event loop
                # closed the iterator the app dropped (asyncio.run's end cancels that aclose)
                rec.finish()
                raise

    async def __anext__(self) -> Any:
        rec = self._self_record
        try:
            item = await self.__wrapped__.__anext__()
        except StopAsyncIteration:
            rec.ran_out()
            raise
        except BaseException as exc:
            _fail_and_finish(rec, exc)
            raise
        rec.item(item)
        return item

    async def __aenter__(self) -> Any:
        await self.__wrapped__.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        try:
            return await self.__wrapped__.__aexit__(*exc)
        finally:
            self._self_record.finish()

    async def close(self) -> None:
        try:
            await self.__wrapped__.close()
        finally:
            self._self_record.finish()


class _ResponseProxy(_Watched):
    """The SDK's ``APIResponse`` (``with_raw_response`` / ``with_streaming_response``), watched:
    what ``parse()`` gives is recorded (a message) or watched (a stream, the same proxy each
    time); ``close()`` ends the span. Sync and async alike: an SDK method that returns an
    awaitable is awaited before the record is made."""

    def __init__(self, wrapped: Any, record: _StreamRecord | _ParsedRecord) -> None:
        super().__init__(wrapped, record)
        self._self_stream: Any = None

    def parse(self, *args: Any, **kwargs: Any) -> Any:
        result = self.__wrapped__.parse(*args, **kwargs)
        if inspect.isawaitable(result):
            return self._parsed_later(result, bool(args or kwargs))
        return self._parsed(result, bool(args or kwargs))

    async def _parsed_later(self, result: Any, custom: bool) -> Any:
        return self._parsed(await result, custom)

    def _parsed(self, parsed: Any, custom: bool) -> Any:
        rec = self._self_record
        if custom:  # parse(to=...): the app's own type, not the call's answer
            return parsed
        if isinstance(rec, _ParsedRecord):
            rec.parsed(parsed)
            return parsed
        if self._self_stream is None or self._self_stream.__wrapped__ is not parsed:
            proxy = _AsyncStreamProxy if hasattr(parsed, "__aiter__") else _SyncStreamProxy
            self._self_stream = proxy(parsed, rec)
        return self._self_stream

    def close(self) -> Any:
        try:
            result = self.__wrapped__.close()
        except BaseException:
            self._self_record.finish()
            raise
        if inspect.isawaitable(result):
            return self._closed_later(result)
        self._closed(self._read_answer())
        return result

    async def _closed_later(self, result: Any) -> Any:
        try:
            return await result
        finally:
            parsed = self._read_answer()
            if inspect.isawaitable(parsed):
                try:
                    parsed = await parsed
                except Exception:
                    log.warning("costline: could not parse a response the app read", exc_info=True)
                    parsed = None
            self._closed(parsed)

    def _closed(self, parsed: Any) -> None:
        rec = self._self_record
        if parsed is not None and isinstance(rec, _ParsedRecord):
            rec.parsed(parsed)
        rec.finish()

    def _read_answer(self) -> Any:
        """For a record still waiting on its answer: the parse of a body the app read itself
        (``read()``, ``json()``, ``text()``; no I/O then), else None."""
        rec = self._self_record
        if not isinstance(rec, _ParsedRecord) or rec.done:
            return None
        try:
            self.__wrapped__.http_response.content  # raises while the body is not read
        except Exception:
            return None
        try:
            return self.__wrapped__.parse()
        except Exception:
            log.warning("costline: could not parse a response the app read", exc_info=True)
            return None


def _watch_message_stream(message_stream: Any, rec: _StreamRecord, proxy: type[wrapt.ObjectProxy]) -> None:
    """Watch the raw events under a ``MessageStream`` (what its iteration, ``text_stream`` and
    ``get_final_message`` all read); without that hook, read its final snapshot at the end."""
    try:
        raw = message_stream._raw_stream
        message_stream._raw_stream = proxy(raw, rec)
    except Exception:
        rec.fallback = message_stream


class _ManagerProxy(wrapt.ObjectProxy):  # type: ignore[misc]
    """``messages.stream(...)``'s ``(Async)MessageStreamManager``: the call span opens when it is
    entered and ends when it is left. Sync and async managers differ only in the dunder methods
    of the two subclasses below."""

    _stream_proxy: type[wrapt.ObjectProxy]

    def __init__(self, wrapped: Any, opener: Callable[[], _StreamRecord | None]) -> None:
        super().__init__(wrapped)
        self._self_opener = opener
        self._self_record: _StreamRecord | None = None

    def _opening(self) -> _StreamRecord | None:
        self._self_record = self._self_opener()
        return self._self_record

    def _opened(self, message_stream: Any) -> Any:
        rec = self._self_record
        if rec is not None:
            if message_stream is None:
                rec.finish()
            else:
                _watch_message_stream(message_stream, rec, self._stream_proxy)
        return message_stream

    def _left(self) -> None:
        if self._self_record is not None:  # an error of the stream itself was recorded as it came
            self._self_record.finish()


class _SyncManagerProxy(_ManagerProxy):
    _stream_proxy = _SyncStreamProxy

    def __enter__(self) -> Any:
        rec = self._opening()
        try:
            message_stream = self.__wrapped__.__enter__()
        except BaseException as exc:
            _fail_and_finish(rec, exc)
            raise
        return self._opened(message_stream)

    def __exit__(self, *exc: Any) -> Any:
        try:
            return self.__wrapped__.__exit__(*exc)
        finally:
            self._left()


class _AsyncManagerProxy(_ManagerProxy):
    _stream_proxy = _AsyncStreamProxy

    async def __aenter__(self) -> Any:
        rec = self._opening()
        try:
            message_stream = await self.__wrapped__.__aenter__()
        except BaseException as exc:
            _fail_and_finish(rec, exc)
            raise
        return self._opened(message_stream)

    async def __aexit__(self, *exc: Any) -> Any:
        try:
            return await self.__wrapped__.__aexit__(*exc)
        finally:
            self._left()


def _finish_response_stream(response_stream: Any) -> None:
    """End the span of the watched stream under an SDK ``(Async)ResponseStream`` (its ``_raw_stream``: what the
    wrapped ``create(stream=True)`` returned) whose manager the app left. Never raises."""
    try:
        rec = getattr(getattr(response_stream, "_raw_stream", None), "_self_record", None)
        if isinstance(rec, _StreamRecord):
            rec.finish()
    except Exception:
        log.warning("costline: could not end the call span of a Responses API stream", exc_info=True)


class _SyncResponsesManagerProxy(wrapt.ObjectProxy):  # type: ignore[misc]
    """``responses.stream(...)``'s ``ResponseStreamManager``: entering it sends the request (through the wrapped
    ``create``, which opens the call span); leaving it ends that span (a stream not read out: the app's choice)."""

    def __init__(self, wrapped: Any) -> None:
        super().__init__(wrapped)
        self._self_stream: Any = None

    def __enter__(self) -> Any:
        self._self_stream = self.__wrapped__.__enter__()
        return self._self_stream

    def __exit__(self, *exc: Any) -> Any:
        try:
            return self.__wrapped__.__exit__(*exc)
        finally:
            _finish_response_stream(self._self_stream)


class _AsyncResponsesManagerProxy(wrapt.ObjectProxy):  # type: ignore[misc]
    """:class:`_SyncResponsesManagerProxy` for ``AsyncResponseStreamManager``."""

    def __init__(self, wrapped: Any) -> None:
        super().__init__(wrapped)
        self._self_stream: Any = None

    async def __aenter__(self) -> Any:
        self._self_stream = await self.__wrapped__.__aenter__()
        return self._self_stream

    async def __aexit__(self, *exc: Any) -> Any:
        try:
            return await self.__wrapped__.__aexit__(*exc)
        finally:
            _finish_response_stream(self._self_stream)


# --- what a response says ------------------------------------------------------------------------
def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _count(value: Any) -> int | None:
    """A token count the provider sent; None when it sent none (null, missing) or no count (a negative number):
    not a count of 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _flag_incomplete(call: CallHandle) -> None:
    try:
        call.usage_incomplete()
    except Exception:
        log.warning("costline: could not flag a call's usage incomplete", exc_info=True)


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


#: The Messages API's error types (https://docs.anthropic.com/en/api/errors) → the ``anthropic`` SDK class the
#: same error has when it comes as an HTTP status. An ``error`` event in a 200 stream (``overloaded_error``
#: mid-answer) or a 200 whose body is the error object gets the SDK's bare ``APIStatusError``, whose class is
#: picked by the status (200): call spans (here) and the serving tiers (``serving.backends``) name it by the class
#: given here instead, so escalation, the request span and the gateway's 429 / 529 / 500 treat it as the status.
ANTHROPIC_ERROR_CLASSES: Mapping[str, str] = MappingProxyType({
    "invalid_request_error": "BadRequestError",
    "authentication_error": "AuthenticationError",
    "billing_error": "PaymentRequiredError",
    "permission_error": "PermissionDeniedError",
    "not_found_error": "NotFoundError",
    "request_too_large": "RequestTooLargeError",
    "rate_limit_error": "RateLimitError",
    "api_error": "InternalServerError",
    "timeout_error": "GatewayTimeoutError",
    "overloaded_error": "OverloadedError",
})


def anthropic_error_class(error_object: Any) -> str | None:
    """The ``anthropic`` class an error object's type (``{"type": "error", "error": {"type": "overloaded_error"}}``,
    JSON or the SDK's model) has as an HTTP status (:data:`ANTHROPIC_ERROR_CLASSES`), if known."""
    kind = _field(_field(error_object, "error"), "type")
    return ANTHROPIC_ERROR_CLASSES.get(kind) if isinstance(kind, str) else None


def anthropic_error_name(exc: BaseException) -> str:
    """The exception's class name, except the SDK's bare ``APIStatusError`` of an ``error`` event in a 200
    stream: named as the same error is named when it comes as a status (``OverloadedError``...)."""
    name = type(exc).__name__
    if name == "APIStatusError":
        return anthropic_error_class(getattr(exc, "body", None)) or name
    return name


def _anthropic_inputs(kwargs: dict[str, Any]) -> list[Any]:
    inputs: list[Any] = []
    system = kwargs.get("system")
    if system:
        inputs.append({"role": "system", "content": system})
    inputs.extend(kwargs.get("messages") or [])
    return inputs


def _anthropic_usage(call: CallHandle, usage: Any) -> None:
    fresh = _count(getattr(usage, "input_tokens", None))
    output = _count(getattr(usage, "output_tokens", None))
    read = _int(getattr(usage, "cache_read_input_tokens", 0))  # null: no cache used
    created = _int(getattr(usage, "cache_creation_input_tokens", 0))
    one_hour = _cache_1h(usage)  # of the writes, the one-hour ones (priced 2 x the input, not 1.25 x)
    searches = _int(getattr(getattr(usage, "server_tool_use", None), "web_search_requests", 0))
    # server-side compactions (beta): billed on top of the top-level usage, which leaves them out
    c_fresh, c_read, c_created, c_one_hour, c_output = _compactions(usage)
    if fresh is not None:
        fresh += c_fresh
    if output is not None:
        output += c_output
    read, created, one_hour = read + c_read, created + c_created, one_hour + c_one_hour
    # Anthropic's input_tokens excludes cached tokens; the GenAI semconv total includes them.
    call.usage(None if fresh is None else fresh + read + created, output, read, created, one_hour, searches)
    call.speed(getattr(usage, "speed", None))  # "fast": billed at the model's fast multiplier
    call.inference_geo(getattr(usage, "inference_geo", None))  # "us": US-only inference, 1.1 x the tokens
    call.service_tier(getattr(usage, "service_tier", None), contract.ANTHROPIC_RESPONSE_SERVICE_TIER)
    if fresh is None or output is None:  # a count the API did not send is not 0
        _flag_incomplete(call)


def _record_anthropic(call: CallHandle, recorder: Recorder, kwargs: dict[str, Any], response: Any) -> None:
    if getattr(response, "type", None) == "error":  # a 200 whose body is the API's error object
        error = anthropic_error_class(response) or "APIStatusError"
        call.error(error, "the model answered 200 with an error", detail=getattr(response, "error", None))
        return
    usage = getattr(response, "usage", None)
    if usage is not None:
        _anthropic_usage(call, usage)
    stop = getattr(response, "stop_reason", None)
    call.response(getattr(response, "model", None), [stop] if isinstance(stop, str) else None,
                  getattr(response, "id", None))
    if recorder.capture_enabled:
        output = {"role": getattr(response, "role", "assistant"), "content": list(getattr(response, "content", []) or [])}
        if stop:
            output["finish_reason"] = stop
        call.content(_anthropic_inputs(kwargs), [output])


def _cache_1h(usage: Any) -> int:
    """Anthropic's ``usage.cache_creation.ephemeral_1h_input_tokens`` (0 when absent or null)."""
    return _int(_field(_field(usage, "cache_creation"), "ephemeral_1h_input_tokens"))


#: Most ``usage.iterations`` entries read (a response has a few: its sampling turns and compactions).
_MAX_ITERATIONS = 1024


def _compactions(usage: Any) -> tuple[int, int, int, int, int]:
    """(fresh input, cache read, cache write, one-hour writes, output) of the entries of type ``compaction`` in a beta
    Message's ``usage.iterations``: the server-side summaries of the context, which Anthropic bills on top of the
    top-level usage (that leaves them out). All 0 without any (a non-beta Message has no iterations)."""
    entries = getattr(usage, "iterations", None)
    totals = [0, 0, 0, 0, 0]
    if not isinstance(entries, (list, tuple)):
        return 0, 0, 0, 0, 0
    for entry in entries[:_MAX_ITERATIONS]:
        if _field(entry, "type") != "compaction":
            continue
        totals[0] += _count(_field(entry, "input_tokens")) or 0
        totals[1] += _count(_field(entry, "cache_read_input_tokens")) or 0
        totals[2] += _count(_field(entry, "cache_creation_input_tokens")) or 0
        totals[3] += _cache_1h(entry)
        totals[4] += _count(_field(entry, "output_tokens")) or 0
    return totals[0], totals[1], totals[2], totals[3], totals[4]


class _Usage:
    """Usage fields as a stream reports them, the later value of a field winning."""

    def __init__(self) -> None:
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.cache_read_input_tokens = 0
        self.cache_creation_input_tokens = 0
        # the nested usage fields that price differently, in the SDK's shape (_anthropic_usage reads both alike)
        self.cache_creation = SimpleNamespace(ephemeral_1h_input_tokens=0)
        self.server_tool_use = SimpleNamespace(web_search_requests=0)
        self.speed: str | None = None
        self.inference_geo: str | None = None
        #: a beta stream's ``usage.iterations`` (its ``message_delta`` has them): the compactions are billed too
        self.iterations: list[Any] | None = None

    def update(self, usage: Any) -> None:
        for name in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
            value = getattr(usage, name, None)
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(self, name, value)
        value = getattr(getattr(usage, "cache_creation", None), "ephemeral_1h_input_tokens", None)
        if isinstance(value, int) and not isinstance(value, bool):
            self.cache_creation.ephemeral_1h_input_tokens = value
        value = getattr(getattr(usage, "server_tool_use", None), "web_search_requests", None)
        if isinstance(value, int) and not isinstance(value, bool):
            self.server_tool_use.web_search_requests = value
        value = getattr(usage, "speed", None)
        if isinstance(value, str):
            self.speed = value
        value = getattr(usage, "inference_geo", None)
        if isinstance(value, str):
            self.inference_geo = value
        value = getattr(usage, "iterations", None)
        if isinstance(value, (list, tuple)):
            self.iterations = list(value)


#: The ``content_block_delta`` kinds each of which carries at least one output token (a signature or a citation
#: delta carries none of its own).
_TOKEN_DELTAS: Final = frozenset({"text_delta", "input_json_delta", "thinking_delta"})


class _AnthropicStream(_StreamParser):
    """Messages API events: usage in ``message_start`` (all of it) and ``message_delta`` (updates).

    A stream that ends before ``message_delta`` (the app or its client went away, the connection was cut) has only
    ``message_start``'s placeholder output count (1), yet Anthropic bills every output token generated before the
    close: the output is then at least the number of token-bearing deltas seen (:data:`_TOKEN_DELTAS`), still a
    lower bound and still flagged incomplete."""

    def __init__(self, capture: bool) -> None:
        super().__init__(capture)
        self.usage: _Usage | None = None
        self.id: str | None = None
        self.model: str | None = None
        self.stop: str | None = None
        self.text: list[str] = []
        self.deltas = 0  # token-bearing content_block_delta events seen

    def is_output(self, event: Any) -> bool:
        return getattr(event, "type", None) == "content_block_delta"

    error_name = staticmethod(anthropic_error_name)

    def finished(self) -> bool:
        return self.stop is not None  # message_delta's stop reason (message_stop carries nothing more)

    def observe(self, event: Any) -> None:
        kind = getattr(event, "type", None)
        if kind == "message_start":
            self.observe_message(getattr(event, "message", None))
            self.complete = False
        elif kind == "message_delta":
            if self.usage is None:
                self.usage = _Usage()
            usage = getattr(event, "usage", None)
            if usage is not None:
                self.usage.update(usage)
                self.complete = True
            stop = getattr(getattr(event, "delta", None), "stop_reason", None)
            if isinstance(stop, str):
                self.stop = stop
        elif kind == "content_block_delta":
            delta = getattr(event, "delta", None)
            if getattr(delta, "type", None) in _TOKEN_DELTAS:
                self.deltas += 1
            text = getattr(delta, "text", None)
            if self.capture and isinstance(text, str):
                self.text.append(text)

    def observe_message(self, message: Any) -> None:
        if message is None:
            return
        self.id = getattr(message, "id", None) or self.id
        self.model = getattr(message, "model", None) or self.model
        usage = getattr(message, "usage", None)
        if usage is not None:
            self.usage = self.usage or _Usage()
            self.usage.update(usage)
        stop = getattr(message, "stop_reason", None)
        if isinstance(stop, str):
            self.stop = stop
            self.complete = True  # a final snapshot
        if self.capture and not self.text:
            self.text = [getattr(b, "text", "") for b in getattr(message, "content", None) or []
                         if getattr(b, "type", None) == "text"]

    def record(self, call: CallHandle, recorder: Recorder, kwargs: dict[str, Any]) -> None:
        if self.usage is not None:
            if not self.complete and self.deltas > (self.usage.output_tokens or 0):  # cut before message_delta
                self.usage.output_tokens = self.deltas
            _anthropic_usage(call, self.usage)
        call.response(self.model, [self.stop] if self.stop else None, self.id)
        if recorder.capture_enabled:
            output: dict[str, Any] = {"role": "assistant", "content": "".join(self.text)}
            if self.stop:
                output["finish_reason"] = self.stop
            call.content(_anthropic_inputs(kwargs), [output])


def _openai_usage(call: CallHandle, usage: Any) -> None:
    details = getattr(usage, "prompt_tokens_details", None)
    cached = _int(getattr(details, "cached_tokens", 0)) if details is not None else 0
    prompt, completion = _count(getattr(usage, "prompt_tokens", None)), _count(getattr(usage, "completion_tokens", None))
    # prompt_tokens already includes cached tokens, as the semconv total does.
    call.usage(prompt, completion, cached, 0)
    if prompt is None or completion is None:  # a count the server did not send is not 0
        _flag_incomplete(call)


def _fail_on_finish(call: CallHandle, reasons: list[str]) -> None:
    """Mark the call failed when a choice ended as no answer does (:data:`~costline.contract.OPENAI_FAILED_FINISH_REASONS`:
    vLLM's ``abort``, ``error``, ``repetition``): its partial text is no answer, whatever the app does with it."""
    failed = next((r for r in reasons if r in contract.OPENAI_FAILED_FINISH_REASONS), None)
    if failed is not None:
        call.error(f"finish_reason:{failed}", f"the model's answer ended with finish_reason {failed!r}: a partial answer")


def _record_openai(call: CallHandle, recorder: Recorder, kwargs: dict[str, Any], response: Any) -> None:
    usage = getattr(response, "usage", None)
    if usage is not None:
        _openai_usage(call, usage)
    choices = list(getattr(response, "choices", None) or [])
    if not choices:  # no answer (an error object a server sent with a 200, as older vLLM does): a failed call
        said = getattr(response, "message", None) if getattr(response, "object", None) == "error" else None
        call.error("APIResponseValidationError", "the chat completion has no choices", detail=said)
    reasons = [c.finish_reason for c in choices if isinstance(getattr(c, "finish_reason", None), str)]
    call.response(getattr(response, "model", None), reasons or None, getattr(response, "id", None))
    _fail_on_finish(call, reasons)
    _service_tier(call, getattr(response, "service_tier", None))
    if recorder.capture_enabled:
        outputs = []
        for c in choices:
            message = getattr(c, "message", None)
            out = {"role": getattr(message, "role", None) or "assistant",
                   "content": getattr(message, "content", None) or ""}
            if getattr(c, "finish_reason", None):
                out["finish_reason"] = c.finish_reason
            outputs.append(out)
        call.content(list(kwargs.get("messages") or []), outputs)


def _service_tier(call: CallHandle, tier: Any) -> None:
    """OpenAI's ``service_tier`` as the GenAI conventions spell it (``flex`` is billed at Batch API prices,
    ``priority`` at the model's premium)."""
    try:
        call.service_tier(tier)
    except Exception:
        log.exception("costline: could not record a service tier")


class _OpenAIStream(_StreamParser):
    """``chat.completion.chunk`` objects: usage only in the last one, and only with include_usage."""

    def __init__(self, capture: bool) -> None:
        super().__init__(capture)
        self.usage: Any = None
        self.id: str | None = None
        self.model: str | None = None
        self.service_tier: Any = None
        self.reasons: dict[int, str] = {}
        self.seen: set[int] = set()
        self.text: dict[int, list[str]] = {}

    def finished(self) -> bool:
        return bool(self.seen) and self.seen <= set(self.reasons)  # every choice has its finish_reason

    def is_output(self, chunk: Any) -> bool:
        for choice in getattr(chunk, "choices", None) or []:
            delta = getattr(choice, "delta", None)
            if delta is None:
                continue
            if getattr(delta, "content", None) or getattr(delta, "tool_calls", None) \
                    or getattr(delta, "refusal", None) or getattr(delta, "reasoning_content", None):
                return True
        return False

    def observe(self, chunk: Any) -> None:
        self.id = self.id or getattr(chunk, "id", None)
        self.model = self.model or getattr(chunk, "model", None)
        self.service_tier = getattr(chunk, "service_tier", None) or self.service_tier
        for choice in getattr(chunk, "choices", None) or []:
            index = _int(getattr(choice, "index", 0))
            self.seen.add(index)
            reason = getattr(choice, "finish_reason", None)
            if isinstance(reason, str):
                self.reasons[index] = reason
            if self.capture:
                text = getattr(getattr(choice, "delta", None), "content", None)
                if isinstance(text, str):
                    self.text.setdefault(index, []).append(text)
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self.usage = usage
            # the final count: include_usage's last chunk (no choices), or a running count
            # (vLLM's continuous_usage_stats, on every chunk) once every choice has finished
            self.complete = not getattr(chunk, "choices", None) or self.seen <= set(self.reasons)

    def record(self, call: CallHandle, recorder: Recorder, kwargs: dict[str, Any]) -> None:
        if self.usage is not None:
            _openai_usage(call, self.usage)
        reasons = [self.reasons[i] for i in sorted(self.reasons)]
        call.response(self.model, reasons or None, self.id)
        _fail_on_finish(call, reasons)
        _service_tier(call, self.service_tier)
        if recorder.capture_enabled:
            outputs = []
            for i in sorted(set(self.text) | set(self.reasons)):
                out = {"role": "assistant", "content": "".join(self.text.get(i, []))}
                if i in self.reasons:
                    out["finish_reason"] = self.reasons[i]
                outputs.append(out)
            call.content(list(kwargs.get("messages") or []), outputs)


# --- OpenAI's Responses API ------------------------------------------------------------------------
#: A Responses API error's ``code`` (``response.failed``'s ``response.error``, an ``error`` event) → the ``openai``
#: SDK class the same error has when it comes as an HTTP status; other codes are named ``APIError`` (the SDK's class of
#: an error sent in a stream), the code going in the status description.
_RESPONSES_ERROR_CLASSES: Mapping[str, str] = MappingProxyType({
    "server_error": "InternalServerError",
    "rate_limit_exceeded": "RateLimitError",
})
#: A Responses API error ``code`` shown on the span status whatever the capture setting: a short identifier
#: (``server_error``, ``invalid_prompt``); any other text from the server is content, kept only with capture on.
_ERROR_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")


def _responses_error(call: CallHandle, code: Any, message: Any, where: str) -> None:
    name = _RESPONSES_ERROR_CLASSES.get(code, "APIError") if isinstance(code, str) else "APIError"
    shown = f"{where}: {code}" if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else where
    call.error(name, shown, detail=message)


def _responses_usage(call: CallHandle, usage: Any) -> None:
    details = _field(usage, "input_tokens_details")
    cached = _int(_field(details, "cached_tokens")) if details is not None else 0
    fresh, output = _count(_field(usage, "input_tokens")), _count(_field(usage, "output_tokens"))
    # input_tokens already includes the cached tokens, as the semconv total does (OpenAI charges no cache write).
    call.usage(fresh, output, cached, 0)
    if fresh is None or output is None:  # a count the API did not send is not 0
        _flag_incomplete(call)


def _responses_inputs(kwargs: dict[str, Any]) -> list[Any]:
    inputs: list[Any] = []
    instructions = kwargs.get("instructions")
    if isinstance(instructions, str) and instructions:
        inputs.append({"role": "system", "content": instructions})
    given = kwargs.get("input")
    if isinstance(given, str):
        inputs.append({"role": "user", "content": given})
    elif isinstance(given, (list, tuple)):
        inputs.extend(given)
    return inputs


def _response_text(response: Any) -> str:
    """The text of a Response's output messages (what the SDK's ``output_text`` joins)."""
    parts = []
    for item in _field(response, "output") or []:
        if _field(item, "type") == "message":
            for part in _field(item, "content") or []:
                text = _field(part, "text")
                if _field(part, "type") == "output_text" and isinstance(text, str):
                    parts.append(text)
    return "".join(parts)


def _record_openai_response(call: CallHandle, recorder: Recorder, kwargs: dict[str, Any], response: Any) -> None:
    """A Responses API ``Response`` (``responses.create`` / ``parse``, or a stream's final event)."""
    status = _field(response, "status")
    usage = _field(response, "usage")
    if usage is not None:
        _responses_usage(call, usage)
    elif status != "failed":  # no count (a background response still queued...): not 0
        _flag_incomplete(call)
    if status == "failed":
        error = _field(response, "error")
        _responses_error(call, _field(error, "code"), _field(error, "message"), "the response failed")
    reason = None
    if status == "incomplete":  # cut off (max_output_tokens, content_filter): the tokens were billed
        reason = _field(_field(response, "incomplete_details"), "reason")
        reason = reason if isinstance(reason, str) and reason else "incomplete"
    elif isinstance(status, str) and status:
        reason = status
    call.response(_field(response, "model"), [reason] if reason else None, _field(response, "id"))
    _service_tier(call, _field(response, "service_tier"))
    if recorder.capture_enabled:
        output: dict[str, Any] = {"role": "assistant", "content": _response_text(response)}
        if reason:
            output["finish_reason"] = reason
        call.content(_responses_inputs(kwargs), [output])


#: The Responses API's stream events that end a response: each carries the whole response (its usage).
_RESPONSE_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


class _OpenAIResponsesStream(_StreamParser):
    """Responses API events: ``response.created`` … ``response.completed`` (or ``response.incomplete`` /
    ``response.failed``), whose ``response`` has the usage; an ``error`` event fails the call."""

    def __init__(self, capture: bool) -> None:
        super().__init__(capture)
        self.snapshot: Any = None  # the latest response the events carried
        self.final: Any = None  # the response of the final event
        self.error: tuple[Any, Any] | None = None  # an ``error`` event's (code, message)
        self.text: list[str] = []

    def is_output(self, event: Any) -> bool:
        kind = getattr(event, "type", None)
        return isinstance(kind, str) and kind.endswith(".delta")

    def finished(self) -> bool:
        return self.final is not None or self.error is not None  # an error event ends the stream too

    def observe(self, event: Any) -> None:
        kind = getattr(event, "type", None)
        if kind in _RESPONSE_FINAL_EVENTS:
            self.observe_message(getattr(event, "response", None))
        elif kind == "error":
            self.error = (getattr(event, "code", None), getattr(event, "message", None))
        elif isinstance(kind, str) and kind.startswith("response."):
            response = getattr(event, "response", None)
            if response is not None:
                self.snapshot = response
            if kind == "response.output_text.delta" and self.capture:
                delta = getattr(event, "delta", None)
                if isinstance(delta, str):
                    self.text.append(delta)

    def observe_message(self, message: Any) -> None:
        if message is None:
            return
        self.final = self.snapshot = message
        self.complete = True  # the final event's response: its usage is the count billed

    def record(self, call: CallHandle, recorder: Recorder, kwargs: dict[str, Any]) -> None:
        if self.final is not None:
            _record_openai_response(call, recorder, kwargs, self.final)
        else:  # ended before its final event: what the first events said; no count (flagged incomplete)
            call.response(_field(self.snapshot, "model"), None, _field(self.snapshot, "id"))
            if recorder.capture_enabled:
                call.content(_responses_inputs(kwargs), [{"role": "assistant", "content": "".join(self.text)}])
        if self.error is not None:
            _responses_error(call, self.error[0], self.error[1], "the stream sent an error")
