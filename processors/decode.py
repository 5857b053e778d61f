"""Kafka message → OTLP request → rows (pure; no broker).

A message is decoded by its ``content-type`` header, else by the configured
encoding, else by sniffing (``{`` opens OTLP JSON). Anything that does not
decode raises :class:`~costline.otlp.OtlpDecodeError`; the processor sends it
to the DLQ.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from costline import contract
from google.protobuf.message import DecodeError

from costline.otlp import ExportTraceServiceRequest, OtlpDecodeError, decode_json, decode_request
from costline.pricing import PricingTable
from costline.processors.records import Row, flatten_span

__all__ = ["content_type_of", "decode_message", "DecodedMessage", "flatten_message", "ENCODING_TO_CONTENT_TYPE"]

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
) -> ExportTraceServiceRequest:
    """Decode one Kafka message's value; raises :class:`OtlpDecodeError`."""
    if not value:
        raise OtlpDecodeError("empty message value (tombstone?)")
    ctype = content_type_of(headers, ENCODING_TO_CONTENT_TYPE.get(encoding))
    kind = (ctype or "").split(";")[0].strip().lower()
    if kind in _PROTOBUF_TYPES or (not kind and value[:1] not in _JSON_FIRST_BYTES):
        # Fast path: span ids are validated while flattening (see records.flatten_span),
        # not in a second pass over the message as costline.otlp.decode_protobuf does.
        req = ExportTraceServiceRequest()
        try:
            req.ParseFromString(value)
        except (DecodeError, ValueError, RuntimeError) as exc:
            raise OtlpDecodeError(f"not an OTLP protobuf ExportTraceServiceRequest: {exc}") from None
        return req
    if kind in _JSON_TYPES:
        return decode_json(value)
    return decode_request(value, ctype)


_PROTOBUF_TYPES = frozenset({contract.CONTENT_TYPE_PROTOBUF, "application/protobuf", "otlp_proto", "protobuf"})
_JSON_TYPES = frozenset({contract.CONTENT_TYPE_JSON, "otlp_json", "json"})
_JSON_FIRST_BYTES = (b"{", b" ", b"\n", b"\t", b"\r")


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
        for ss in rs.scope_spans:
            for span in ss.spans:
                spans += 1
                row = flatten_span(span, pricing, kafka_partition, kafka_offset)
                if row is None:
                    ignored += 1
                else:
                    rows.append(row)
    out.spans = spans
    out.ignored = ignored
    return out


def iter_rows(messages: Iterable[tuple[bytes, Any]], pricing: PricingTable) -> list[Row]:
    """Decode + flatten many ``(value, headers)`` pairs (benchmarks, tests)."""
    rows: list[Row] = []
    for value, headers in messages:
        rows.extend(flatten_message(decode_message(value, headers), pricing).rows)
    return rows
