"""Wrap SDK clients so every model call becomes a costline call span.

``instrument_anthropic`` wraps ``client.messages.create`` of an ``Anthropic`` or
``AsyncAnthropic`` client; ``instrument_openai`` wraps
``client.chat.completions.create`` of an OpenAI-compatible client (vLLM...).
Each call opens ``recorder.call(...)`` in the active costline request, or a
standalone call span without one; an SDK exception is recorded as
``error.type`` (its class name, e.g. ``RateLimitError``) and re-raised.

Both are idempotent and return a callable that removes the wrapper.
Streaming calls (``stream=True``) pass through unrecorded.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from costline import contract

from costline.collectors.recorder import CallHandle, Recorder

__all__ = ["instrument_anthropic", "instrument_openai"]

log = logging.getLogger(__name__)

_MARK = "__costline_uninstrument__"


def instrument_anthropic(client: Any, recorder: Recorder, *, tier: str | None = None) -> Callable[[], None]:
    """Record every ``client.messages.create`` call; returns the undo callable."""
    return _wrap(client, client.messages, "create", recorder, contract.PROVIDER_ANTHROPIC, tier, _record_anthropic)


def instrument_openai(
    client: Any,
    recorder: Recorder,
    *,
    provider: str = contract.PROVIDER_VLLM,
    tier: str | None = None,
) -> Callable[[], None]:
    """Record every ``client.chat.completions.create`` call; returns the undo callable."""
    return _wrap(client, client.chat.completions, "create", recorder, provider, tier, _record_openai)


def _wrap(
    client: Any,
    resource: Any,
    name: str,
    recorder: Recorder,
    provider: str,
    tier: str | None,
    record: Callable[[CallHandle, Recorder, dict[str, Any], Any], None],
) -> Callable[[], None]:
    current = getattr(resource, name)
    undo = getattr(current, _MARK, None)
    if undo is not None:
        return undo  # already instrumented
    original = current

    def _open(kwargs: dict[str, Any]) -> Any:
        model = kwargs.get("model")
        return recorder.call(provider, model if isinstance(model, str) and model else "unknown", tier)

    if type(client).__name__.startswith("Async"):

        @functools.wraps(original)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("stream"):
                return await original(*args, **kwargs)
            with _open(kwargs) as call:
                response = await original(*args, **kwargs)
                _safe_record(record, call, recorder, kwargs, response)
                return response

    else:

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
            if kwargs.get("stream"):
                return original(*args, **kwargs)
            with _open(kwargs) as call:
                response = original(*args, **kwargs)
                _safe_record(record, call, recorder, kwargs, response)
                return response

    def uninstrument() -> None:
        if getattr(resource.__dict__.get(name), _MARK, None) is uninstrument:
            delattr(resource, name)

    setattr(wrapper, _MARK, uninstrument)
    setattr(resource, name, wrapper)
    return uninstrument


def _safe_record(record: Callable[..., None], call: CallHandle, recorder: Recorder, kwargs: dict[str, Any],
                 response: Any) -> None:
    try:
        record(call, recorder, kwargs, response)
    except Exception:  # recording must never break the app's call
        log.exception("costline: could not record a model response")


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _record_anthropic(call: CallHandle, recorder: Recorder, kwargs: dict[str, Any], response: Any) -> None:
    usage = getattr(response, "usage", None)
    if usage is not None:
        fresh = _int(getattr(usage, "input_tokens", 0))
        read = _int(getattr(usage, "cache_read_input_tokens", 0))
        created = _int(getattr(usage, "cache_creation_input_tokens", 0))
        # Anthropic's input_tokens excludes cached tokens; the GenAI semconv total includes them.
        call.usage(fresh + read + created, _int(getattr(usage, "output_tokens", 0)), read, created)
    stop = getattr(response, "stop_reason", None)
    call.response(getattr(response, "model", None), [stop] if isinstance(stop, str) else None,
                  getattr(response, "id", None))
    if recorder.capture_enabled:
        inputs: list[Any] = []
        system = kwargs.get("system")
        if system:
            inputs.append({"role": "system", "content": system})
        inputs.extend(kwargs.get("messages") or [])
        output = {"role": getattr(response, "role", "assistant"), "content": list(getattr(response, "content", []) or [])}
        if stop:
            output["finish_reason"] = stop
        call.content(inputs, [output])


def _record_openai(call: CallHandle, recorder: Recorder, kwargs: dict[str, Any], response: Any) -> None:
    usage = getattr(response, "usage", None)
    if usage is not None:
        details = getattr(usage, "prompt_tokens_details", None)
        cached = _int(getattr(details, "cached_tokens", 0)) if details is not None else 0
        # prompt_tokens already includes cached tokens, as the semconv total does.
        call.usage(_int(getattr(usage, "prompt_tokens", 0)), _int(getattr(usage, "completion_tokens", 0)), cached, 0)
    choices = list(getattr(response, "choices", None) or [])
    reasons = [c.finish_reason for c in choices if isinstance(getattr(c, "finish_reason", None), str)]
    call.response(getattr(response, "model", None), reasons or None, getattr(response, "id", None))
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
