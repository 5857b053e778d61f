"""Link every span started inside a costline request to that request.

The :class:`~costline.collectors.recorder.Recorder` puts the request id into the
OpenTelemetry context while a ``costline.request`` span is active;
:class:`RequestStampingProcessor` copies it as ``costline.request.id`` onto every
span started in that context — the recorder's own call and lookup spans, and
spans of foreign instrumentations (an ``opentelemetry-instrumentation-anthropic``
call span, an HTTP client span...). The processor links calls to requests by
this attribute and falls back to ``parent_span_id`` when it is missing.
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from costline import contract

__all__ = ["RequestStampingProcessor", "REQUEST_ID_CONTEXT_KEY", "current_request_id"]

log = logging.getLogger(__name__)

#: Context key holding the active request's id (a string). Immutable, created once.
REQUEST_ID_CONTEXT_KEY = otel_context.create_key("costline.request.id")


def current_request_id(ctx: otel_context.Context | None = None) -> str | None:
    """The id of the costline request active in ``ctx`` (default: the current context)."""
    value: Any = otel_context.get_value(REQUEST_ID_CONTEXT_KEY, ctx)
    return value if isinstance(value, str) else None


class RequestStampingProcessor(SpanProcessor):
    """Stamp ``costline.request.id`` on spans started while a costline request is active.

    ``on_start`` runs on the app's thread: it only reads the context and sets one
    attribute, and never raises. Spans that already carry the attribute keep it.
    """

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        try:
            request_id = current_request_id(parent_context)
            if request_id is None:
                return
            attrs = span.attributes
            if attrs is not None and contract.COSTLINE_REQUEST_ID in attrs:
                return
            span.set_attribute(contract.COSTLINE_REQUEST_ID, request_id)
        except Exception:  # a hook on the hot path must never raise into the app
            log.exception("costline: could not stamp the request id on a span")

    def on_end(self, span: ReadableSpan) -> None:
        return None

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
