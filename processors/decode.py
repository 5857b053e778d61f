"""Kafka message → OTLP request → rows (pure; no broker).

A message is decoded by its ``content-type`` header, else by the configured
encoding, else by sniffing (``{`` opens OTLP JSON). Anything that does not
decode raises :class:`~costline.otlp.OtlpDecodeError`; the processor sends it
to the DLQ. One span never costs its neighbours: a span that does not decode on its
own (OTLP/JSON: a value protobuf cannot hold; protobuf: an attribute nested past
protobuf's depth limit, corrupt bytes) is left out (:func:`decode_message` with
``dropped``), and a span that does not flatten is set aside (:func:`flatten_into` with
``invalid``); the processor dead-letters just those spans.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from costline import contract

from costline.otlp import (ExportTraceServiceRequest, JsonSalvage, OtlpDecodeError, ProtobufSalvage,
                           decode_json_salvaging, parse_protobuf, parse_protobuf_salvaging)
from costline.pricing import UNPRICED_STATUSES, PricingTable
from costline.processors.records import CallRow, LookupRow, RequestRow, Row, flatten_span, service_name

__all__ = ["content_type_of", "decode_message", "DecodedMessage", "flatten_message", "flatten_into",
           "invalid_spans_request", "ENCODING_TO_CONTENT_TYPE"]

log = logging.getLogger(__name__)

#: ``[processor] encoding`` → the content type it stands for ("auto": sniff).
ENCODING_TO_CONTENT_TYPE = {
    "auto": None,
    "otlp_proto": contract.CONTENT_TYPE_PROTOBUF,
    "otlp_json": contract.CONTENT_TYPE_JSON,
}


def content_type_of(headers: Sequence[tuple[str, bytes | None]] | None, default: str | None = None) -> str | None:
    """The ``content-type`` header of a Kafka message (case-insensitive key), else ``default``."""
    for key, value in headers or ():
        if key.lower() == contract.HEADER_CONTENT_TYPE and value:
            return value.decode("latin-1")
    return default


def decode_message(
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] | None = None,
    encoding: str = "auto",
    dropped: list[JsonSalvage | ProtobufSalvage] | None = None,
) -> ExportTraceServiceRequest:
    """Decode one Kafka message's value; raises :class:`OtlpDecodeError`.

    Span ids are not checked here: :func:`flatten_into` checks them span by span. In OTLP/JSON a lone
    surrogate is read as U+FFFD, in protobuf a string that is not UTF-8. A span that does not decode on its own
    (OTLP/JSON: a value out of its field's range, a wrong type; protobuf: an attribute nested past protobuf's depth
    limit, corrupt bytes) is left out and its neighbours kept when ``dropped`` is given (the message's
    :class:`~costline.otlp.JsonSalvage` or :class:`~costline.otlp.ProtobufSalvage`, naming them, is appended to
    it); without ``dropped`` it refuses the message.
    """
    if not value:
        raise OtlpDecodeError("empty message value (tombstone?)")
    ctype = content_type_of(headers, ENCODING_TO_CONTENT_TYPE.get(encoding)) if headers or encoding != "auto" else None
    kind = (ctype or "").split(";")[0].strip().lower() if ctype else ""
    # Sniffing: only a value whose first non-blank byte is "{" may be JSON. A protobuf request
    # opens with 0x0a ("\n", field 1): it must not be mistaken for leading whitespace, or every
    # headerless message takes the slow path.
    if kind in _PROTOBUF_TYPES or (not kind and _MAYBE_JSON(value) is None):
        # Fast path: span ids are validated while flattening (see records.flatten_span),
        # not in a second pass over the message as costline.otlp.decode_protobuf does.
        return _decode_protobuf(value, dropped)  # invalid UTF-8 in a string is repaired, not a lost message
    if kind in _JSON_TYPES:
        return _decode_json(value, dropped)
    # an unknown content type, or none: sniff ("{" opens JSON)
    if _MAYBE_JSON(value) is not None:
        try:
            return _decode_json(value, dropped)
        except OtlpDecodeError:
            # A protobuf request opens with 0x0a ("\n"); with a length byte of 0x7b it looks like JSON.
            if value[:1] != b"\n":
                raise
    return _decode_protobuf(value, dropped)


def _decode_protobuf(value: bytes, dropped: list[JsonSalvage | ProtobufSalvage] | None) -> ExportTraceServiceRequest:
    if dropped is None:
        return parse_protobuf(value)
    got = parse_protobuf_salvaging(value)  # one parse when the message parses whole (the common case)
    if got.dropped:
        dropped.append(got)
    return got.request


def _decode_json(value: bytes, dropped: list[JsonSalvage | ProtobufSalvage] | None) -> ExportTraceServiceRequest:
    got = decode_json_salvaging(value, check_ids=False)  # ids are checked span by span while flattening
    if got.dropped:
        if dropped is None:
            raise OtlpDecodeError(f"not an OTLP JSON trace request: {got.reason}")
        dropped.append(got)
    return got.request


_PROTOBUF_TYPES = frozenset({contract.CONTENT_TYPE_PROTOBUF, "application/protobuf", "otlp_proto", "protobuf"})
_JSON_TYPES = frozenset({contract.CONTENT_TYPE_JSON, "otlp_json", "json"})
#: Matches a value that opens like JSON (blanks, then "{"); anchored, so it reads a few bytes at most.
_MAYBE_JSON = re.compile(rb"[ \t\n\r\x0b\x0c]*\{").match  # the blanks bytes.lstrip() strips


@dataclass
class DecodedMessage:
    """Rows of one message plus what was skipped."""

    rows: list[Row] = field(default_factory=list)
    spans: int = 0
    ignored: int = 0


def flatten_message(
    request: ExportTraceServiceRequest,
    pricing: PricingTable,
    kafka_partition: int = -1,
    kafka_offset: int = -1,
) -> DecodedMessage:
    """All rows of a decoded message, with span and ignored counts."""
    out = DecodedMessage()
    rows = out.rows
    spans = ignored = 0
    for rs in request.resource_spans:
        service = service_name(rs.resource)
        for ss in rs.scope_spans:
            scope = ss.scope.name or None
            for span in ss.spans:
                spans += 1
                row = flatten_span(span, pricing, kafka_partition, kafka_offset, scope, service)
                if row is None:
                    ignored += 1
                else:
                    rows.append(row)
    out.spans = spans
    out.ignored = ignored
    return out


_STATUS = CallRow._fields.index("pricing_status")
#: Statuses of calls the pricing table could not price (the processor names their models once in its log).
_UNPRICED = UNPRICED_STATUSES


def flatten_into(
    request: ExportTraceServiceRequest,
    pricing: PricingTable,
    kafka_partition: int,
    kafka_offset: int,
    requests: list[RequestRow],
    calls: list[CallRow],
    lookups: list[LookupRow],
    unpriced: list[CallRow],
    invalid: list[tuple[Any, Any, Any, str]] | None = None,
) -> tuple[int, int]:
    """Append a decoded message's rows to per-table lists; returns ``(spans, ignored)``.

    The processor's form of :func:`flatten_message` (same rows, one pass, no row list in
    between); calls whose model is not in the pricing table are also appended to
    ``unpriced``. A span with malformed ids (:class:`OtlpDecodeError`), or one whose
    flattening raised anything else (an input no check foresaw: it is logged, naming the
    error), is appended to ``invalid`` as ``(resource_spans, scope_spans, span, why)`` and
    left out, its neighbours kept; without ``invalid`` it raises. All or nothing then: when a
    span raises, the lists are cut back to what they held before.
    """
    marks = len(requests), len(calls), len(lookups), len(unpriced)
    spans = ignored = 0
    try:
        for rs in request.resource_spans:
            service = service_name(rs.resource)
            for ss in rs.scope_spans:
                scope = ss.scope.name or None
                for span in ss.spans:
                    spans += 1
                    try:
                        row = flatten_span(span, pricing, kafka_partition, kafka_offset, scope, service)
                    except OtlpDecodeError as exc:
                        if invalid is None:
                            raise
                        invalid.append((rs, ss, span, str(exc)))
                        continue
                    except Exception as exc:  # noqa: BLE001 - one span's surprise must not cost its neighbours
                        if invalid is None:
                            raise
                        why = (f"span {span.name[:80]!r} cannot be flattened: {type(exc).__name__}: "
                               f"{str(exc)[:300]}")
                        log.warning("costline process: %s (left out and dead-lettered; the message's other spans "
                                    "are kept)", why, exc_info=log.isEnabledFor(logging.DEBUG))
                        invalid.append((rs, ss, span, why))
                        continue
                    kind = type(row)
                    if kind is CallRow:
                        calls.append(row)
                        if row[_STATUS] in _UNPRICED:
                            unpriced.append(row)
                    elif kind is RequestRow:
                        requests.append(row)
                    elif kind is LookupRow:
                        lookups.append(row)
                    else:
                        ignored += 1
    except BaseException:
        for lst, mark in zip((requests, calls, lookups, unpriced), marks):
            del lst[mark:]
        raise
    return spans, ignored


def invalid_spans_request(invalid: Sequence[tuple[Any, Any, Any, str]]) -> bytes:
    """OTLP protobuf of the spans :func:`flatten_into` left out, each under its own resource and scope
    (what the processor dead-letters when a message held valid spans too)."""
    out = ExportTraceServiceRequest()
    groups: dict[tuple[int, int], Any] = {}
    for rs, ss, span, _ in invalid:
        group = groups.get((id(rs), id(ss)))
        if group is None:
            new_rs = out.resource_spans.add()
            new_rs.resource.CopyFrom(rs.resource)
            new_rs.schema_url = rs.schema_url
            group = groups[(id(rs), id(ss))] = new_rs.scope_spans.add()
            group.scope.CopyFrom(ss.scope)
            group.schema_url = ss.schema_url
        group.spans.add().CopyFrom(span)
    return out.SerializeToString()


def iter_rows(messages: Iterable[tuple[bytes, Any]], pricing: PricingTable) -> list[Row]:
    """Decode + flatten many ``(value, headers)`` pairs (benchmarks, tests)."""
    rows: list[Row] = []
    for value, headers in messages:
        rows.extend(flatten_message(decode_message(value, headers), pricing).rows)
    return rows
