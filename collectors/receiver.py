"""An OTLP/HTTP trace receiver (``POST /v1/traces``) that forwards to Kafka.

Follows the OTLP/HTTP specification:

* ``application/x-protobuf`` or ``application/json`` bodies, optionally
  ``Content-Encoding: gzip``, ``deflate`` (zlib, or raw deflate) or ``zstd``; the answer uses the
  request's encoding;
* 200 with an ``ExportTraceServiceResponse`` once Kafka acknowledged every trace
  — with ``partial_success`` (rejected_spans, error_message) when invalid spans
  (bad trace/span ids, a span that does not parse on its own) were dropped from an otherwise valid
  request, a span larger than a Kafka message sent with its largest attribute values cut;
* 400 for an undecodable payload (google.rpc.Status body; clients must not retry);
* 411 without Content-Length or ``Transfer-Encoding: chunked`` (OpenTelemetry JS's exporters send
  chunked bodies), 413 over ``max_body_bytes`` (checked before reading, as chunks arrive, and again
  while decompressing), 415 for another content type or encoding,
  404 for another path, 405 for another method;
* 503 with ``Retry-After`` when Kafka cannot take the data within
  ``produce_timeout_s``, so exporters retry later.

Decoding, packing, forwarding and the answer (:func:`decode_export`, :func:`export_request`) are
shared with the OTLP/gRPC receiver (:mod:`costline.collectors.receiver_grpc`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import zlib
from types import MappingProxyType
from typing import Any

from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from costline import contract
from costline.config import CollectorConfig
from costline.netsec import (BearerTokens, BytesBudget, GuardedHandler, HttpReject, Limits,
                             PooledHTTPServer, refuse_open_bind, ssl_context)
from costline.otlp import (JsonSalvage, OtlpDecodeError, decode_json, decode_json_salvaging, json_id_bytes,
                           parse_protobuf_salvaging, span_count, split_by_trace, wire_span_count)
from costline.textutil import well_formed

from costline.collectors.errors import KafkaUnavailable, ReceiverError
from costline.collectors.forwarder import Forwarder
from costline.collectors.kafka_exporter import TRUNCATED_ATTRIBUTES, truncate_span

__all__ = ["OtlpReceiver", "ReceiverBase", "TRACES_PATH", "ExportRefused", "pack_traces", "decode_with_rejections",
           "decode_export", "export_request"]

log = logging.getLogger(__name__)

TRACES_PATH = "/v1/traces"
_PROTOBUF_TYPES = frozenset({contract.CONTENT_TYPE_PROTOBUF, "application/protobuf"})
_GRPC_CODE = MappingProxyType({400: 3, 401: 16, 404: 5, 405: 12, 408: 4, 411: 3, 413: 8, 415: 3, 431: 3, 500: 13, 503: 14})
#: Traces are one Kafka message each unless that multiplies the request's bytes by more than this
#: (every message repeats its resource and scope): then traces are packed into shared messages.
MAX_SPLIT_AMPLIFICATION = 2.0

_Reject = HttpReject


# --- decoding with span-by-span validation -------------------------------------------------------
def _span_problem(trace_id: bytes, span_id: bytes, parent_span_id: bytes) -> str | None:
    if len(trace_id) != 16 or trace_id == bytes(16):
        return "invalid trace_id (need 16 non-zero bytes)"
    if len(span_id) != 8 or span_id == bytes(8):
        return "invalid span_id (need 8 non-zero bytes)"
    if parent_span_id and len(parent_span_id) != 8:
        return "invalid parent_span_id (need 8 bytes or none)"
    return None


def _drop_invalid_spans(req: ExportTraceServiceRequest) -> tuple[int, str]:
    """Remove spans with bad ids in place; return (how many, the first reason).

    Linear in the spans: deleting them one by one from the repeated field moves every span after each,
    quadratic (a 16 MB request of tiny spans, half of them invalid, held the receiver ~15 s). The valid
    spans are moved ahead instead (a stable sort: their order kept) and the invalid ones cut off the end.
    """
    rejected, first = 0, ""
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            bad = 0
            for span in ss.spans:
                problem = _span_problem(span.trace_id, span.span_id, span.parent_span_id)
                if problem:
                    bad += 1
                    first = first or f"span {span.name[:80]!r}: {problem}"
            if bad:
                ss.spans.sort(key=lambda s: _span_problem(s.trace_id, s.span_id, s.parent_span_id) is not None)
                del ss.spans[len(ss.spans) - bad:]
                rejected += bad
    return rejected, first


def _hex_id(value: Any, nbytes: int, *, optional: bool = False) -> bool:
    """An OTLP/JSON id of ``nbytes``: hex as the spec says, or the one exact base64 form protobuf's own
    ``MessageToJson`` writes (:func:`costline.otlp.json_id_bytes`); all zeros is no id (unless ``optional``)."""
    if value in (None, "") and optional:
        return True
    raw = json_id_bytes(value, nbytes) if isinstance(value, str) else None
    if raw is None or len(raw) != nbytes:
        return False
    return optional or raw != bytes(nbytes)


def _invalid_ids(span: Any) -> str | None:
    if not isinstance(span, dict):
        return None  # structure errors are left to the decoder
    if not (_hex_id(span.get("traceId", span.get("trace_id")), 16)
            and _hex_id(span.get("spanId", span.get("span_id")), 8)
            and _hex_id(span.get("parentSpanId", span.get("parent_span_id")), 8, optional=True)):
        return f"span {str(span.get('name'))[:80]!r}: invalid trace/span id (need hex, non-zero)"
    links = span.get("links")
    for link in links if isinstance(links, list) else ():
        # a link's ids are hex as the span's are: one that is not refuses its span, never the whole export
        if isinstance(link, dict) and not (_hex_id(link.get("traceId", link.get("trace_id")), 16, optional=True)
                                           and _hex_id(link.get("spanId", link.get("span_id")), 8, optional=True)):
            return f"span {str(span.get('name'))[:80]!r}: invalid link trace/span id (need hex)"
    return None


def _drop_invalid_json_spans(doc: Any) -> tuple[int, str]:
    """OTLP/JSON: remove spans whose hex ids are malformed → (how many, the first reason); structure errors
    are left to the decoder. One pass, each span list rebuilt once (dropping many is linear)."""
    if not isinstance(doc, dict):
        raise OtlpDecodeError("OTLP JSON must be an object with resourceSpans")
    rejected, first = 0, ""
    for rs in _array(doc, "resourceSpans", "resource_spans"):
        if not isinstance(rs, dict):
            continue
        for ss in _array(rs, "scopeSpans", "scope_spans"):
            if not isinstance(ss, dict) or not isinstance(ss.get("spans"), list):
                continue
            kept = []
            for span in ss["spans"]:
                reason = _invalid_ids(span)
                if reason is None:
                    kept.append(span)
                    continue
                rejected += 1
                first = first or reason
            ss["spans"] = kept
    return rejected, first


def _array(obj: dict[str, Any], *keys: str) -> list[Any]:
    for key in keys:
        value = obj.get(key)
        if value is not None:
            if not isinstance(value, list):
                raise OtlpDecodeError(f"{key} must be an array, got {type(value).__name__}")
            return value
    return []


def _check_json_spans(doc: Any, cap: int) -> None:
    n = 0
    for rs in doc.get("resourceSpans", doc.get("resource_spans")) or () if isinstance(doc, dict) else ():
        for ss in (rs.get("scopeSpans", rs.get("scope_spans")) or ()) if isinstance(rs, dict) else ():
            spans = ss.get("spans") if isinstance(ss, dict) else None
            n += len(spans) if isinstance(spans, list) else 0
            if n > cap:
                raise too_many_spans(n, cap)


def decode_with_rejections(body: bytes, is_json: bool,
                           max_spans: int | None = None) -> tuple[ExportTraceServiceRequest, int, str]:
    """Decode an OTLP trace request, dropping invalid spans → (request, rejected, error message).

    Raises :class:`OtlpDecodeError` for anything that is not an OTLP trace request, including
    wrongly typed fields and nesting too deep to parse.

    OTLP/JSON: the spans with malformed hex ids (a link's too) are dropped here first, then
    :func:`~costline.otlp.decode_json_salvaging` decodes the rest: a lone surrogate read as U+FFFD (OpenTelemetry
    JS cuts attributes by UTF-16 units: one cut prompt must not refuse the export), a span holding what protobuf
    cannot (a negative or 2^64 time, an intValue past int64) refused alone. With ``max_spans``, a document of more
    spans is refused (:class:`ExportRefused` 413) once its JSON text is read, before any protobuf object is built.
    """
    if is_json:
        try:
            doc = json.loads(body)
            if max_spans is not None:
                _check_json_spans(doc, max_spans)
            rejected, first = _drop_invalid_json_spans(doc)
            text = json.dumps(doc, ensure_ascii=False)
            repaired = well_formed(text)
            if repaired is text:
                got = decode_json_salvaging(text.encode())
            else:  # a lone surrogate: the repaired document decoded whole, as it mostly does ...
                try:
                    got = JsonSalvage(decode_json(repaired.encode()))
                except OtlpDecodeError:  # ... else salvaged, a refused span named as it came
                    got = decode_json_salvaging(json.dumps(doc).encode())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise OtlpDecodeError(f"not valid JSON: {exc}") from None
        except RecursionError:
            raise OtlpDecodeError("JSON nested too deeply") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise OtlpDecodeError(f"not an OTLP JSON trace request: {exc}") from None
        if got.dropped:
            log.info("costline collect: %d OTLP/JSON span(s) refused, their neighbours kept: %s", got.dropped, got.reason)
        req = got.request
        more, why = _drop_invalid_spans(req)
        return req, rejected + got.dropped + more, first or got.reason or why
    # a string that is not UTF-8 is repaired (U+FFFD), not a refused export; a span that does not parse (nested past
    # protobuf's depth limit) is refused alone, its neighbours kept
    got = parse_protobuf_salvaging(body)
    if got.dropped:
        log.info("costline collect: %d OTLP protobuf span(s) refused, their neighbours kept: %s",
                 got.dropped, got.reason)
    rejected, first = _drop_invalid_spans(got.request)
    return got.request, rejected + got.dropped, got.reason or first


#: Gzip members one body may hold (``cat a.gz b.gz``: senders write one).
MAX_GZIP_MEMBERS = 64


def _gunzip(body: bytes, limit: int) -> bytes:
    """Un-gzip ``body``, at most ``limit`` bytes out (413 past it: a bomb is stopped there, never inflated).

    Every member of a multi-member gzip (RFC 1952 2.2: ``cat a.gz b.gz``, what Go's gzip reader in the
    OpenTelemetry Collector also reads) is read, under one limit: reading only the first dropped the
    spans of the others without a word. Bytes after the last member that are not gzip → 400. At most
    ``MAX_GZIP_MEMBERS`` members (each one's leftover is a copy of the rest: a 16 MiB body of 20-byte empty members
    took minutes of a core)."""
    out = bytearray()
    rest = body
    members = 0
    try:
        while True:
            members += 1
            if members > MAX_GZIP_MEMBERS:
                raise _Reject(400, f"body has more than {MAX_GZIP_MEMBERS} gzip members: compress a batch as one")
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out += d.decompress(rest, limit + 1 - len(out))
            if len(out) > limit or d.unconsumed_tail:
                raise _Reject(413, f"decompressed body exceeds {limit} bytes: send smaller batches")
            out += d.flush()
            if len(out) > limit:
                raise _Reject(413, f"decompressed body exceeds {limit} bytes: send smaller batches")
            if not d.eof:
                raise _Reject(400, "body is truncated gzip")
            rest = d.unused_data
            if not rest:
                return bytes(out)
    except zlib.error as exc:
        raise _Reject(400, f"body is not valid gzip: {exc}") from None


def _too_big(limit: int) -> HttpReject:
    return _Reject(413, f"decompressed body exceeds {limit} bytes: send smaller batches")


def _inflate(body: bytes, limit: int) -> bytes:
    """``Content-Encoding: deflate``: a zlib stream (RFC 1950, what HTTP's "deflate" names) or, from a client that
    sends one, a raw deflate stream (RFC 1951), told apart by the zlib header; at most ``limit`` bytes out (413
    past it, never inflated further). Cut short, or bytes after the stream → 400."""
    is_zlib = len(body) >= 2 and body[0] & 0x0F == 8 and body[0] >> 4 <= 7 and (body[0] << 8 | body[1]) % 31 == 0
    d = zlib.decompressobj(zlib.MAX_WBITS if is_zlib else -zlib.MAX_WBITS)
    try:
        out = d.decompress(body, limit + 1)
        if len(out) > limit or d.unconsumed_tail:
            raise _too_big(limit)
        out += d.flush()
    except zlib.error as exc:
        raise _Reject(400, f"body is not valid deflate (zlib or raw): {exc}") from None
    if len(out) > limit:
        raise _too_big(limit)
    if not d.eof:
        raise _Reject(400, "body is truncated deflate")
    if d.unused_data:
        raise _Reject(400, "bytes after the end of the deflate stream")
    return out


#: zstd frames one body may hold (a sender writes one; each costs a decompression context).
MAX_ZSTD_FRAMES = 64
#: The most bytes one zstd input byte can decompress to (an RLE block: 4 bytes of header and byte → 128 KiB):
#: the input is fed in pieces small enough that no piece can take the output far past the limit.
_ZSTD_MAX_EXPANSION = 32 * 1024


def _unzstd(body: bytes, limit: int) -> bytes:
    """``Content-Encoding: zstd`` (the OTel Collector's ``compression: zstd``), every frame of the body read under one
    limit of ``limit`` bytes out (413 past it). The input goes in pieces of at most (what the limit leaves) /
    32 KiB bytes (no less than 64), so a bomb is stopped within about 2 MiB of the limit, never decompressed
    whole; the decoder's window is bounded by the limit too (8 MiB at least; a frame asking for a larger one →
    400). At most ``MAX_ZSTD_FRAMES`` frames; a frame cut short, or bytes that are no zstd frame → 400."""
    import zstandard  # a declared dependency (pyproject.toml); imported only by a zstd body

    # no larger than the limit needs, but never under 8 MiB (Go's zstd encoder in the OTel Collector streams with an
    # 8 MiB window whatever the body's size), never over zstd's own default bound (128 MiB)
    window = 1 << max(23, min(27, (limit - 1).bit_length()))
    decompressor = zstandard.ZstdDecompressor(max_window_size=window)
    out = bytearray()
    at, frames = 0, 0
    pending = b""  # bytes past the end of the last frame, read with the next piece
    d = None
    try:
        while at < len(body) or pending:
            if d is None:
                frames += 1
                if frames > MAX_ZSTD_FRAMES:
                    raise _Reject(400, f"body has more than {MAX_ZSTD_FRAMES} zstd frames: compress a batch as one")
                d = decompressor.decompressobj()
            if pending:
                piece, pending = pending, b""
            else:
                size = max(64, (limit - len(out)) // _ZSTD_MAX_EXPANSION)
                piece, at = body[at:at + size], at + size
            out += d.decompress(piece)
            if len(out) > limit:
                raise _too_big(limit)
            if d.eof:
                pending, d = d.unused_data, None
    except zstandard.ZstdError as exc:
        raise _Reject(400, f"body is not valid zstd: {exc}") from None
    if d is not None or frames == 0:
        raise _Reject(400, "body is truncated zstd")
    return bytes(out)


#: ``Content-Encoding`` → the decoder, each under the same decompressed-size limit.
_DECODERS = MappingProxyType({"gzip": _gunzip, "deflate": _inflate, "zstd": _unzstd})


# --- what one request may cost: spans counted on the wire, bytes charged before parsing ------------
#: Bytes of parsed objects charged per span on top of the decompressed body, before parsing: one OTLP span
#: is a Python/upb object whatever its size on the wire (an empty one is 2 bytes there and ~340 bytes
#: parsed, measured with protobuf's upb backend): a 7.8 KB gzip body of 4,000,000 empty spans held 1.5 GB.
SPAN_OBJECT_BYTES = 384


def too_many_spans(spans: int, cap: int) -> ExportRefused:
    return ExportRefused(413, f"more than {cap} spans in one export request: send smaller batches, or raise "
                              "[collector] max_spans_per_request")


def parse_cost(body: bytes, is_json: bool, cap: int) -> int:
    """The bytes to hold on ``max_inflight_bytes`` for parsing ``body`` (beyond the body itself): spans (counted on
    the wire, :func:`~costline.otlp.wire_span_count`) × :data:`SPAN_OBJECT_BYTES`. Raises :class:`ExportRefused` 413 past ``cap`` spans.
    OTLP/JSON is not pre-counted (its spans are counted once the JSON text is read, see
    :func:`decode_with_rejections`): it is charged the decompressed body once more."""
    if is_json:
        return len(body)
    spans = wire_span_count(body, cap)
    if spans > cap:
        raise too_many_spans(spans, cap)
    return spans * SPAN_OBJECT_BYTES


# --- Kafka messages: per trace, without multiplying the request's bytes ----------------------------
def _split_estimate(req: ExportTraceServiceRequest) -> tuple[int, int]:
    """(bytes the per-trace split would produce, its largest message), without building it."""
    total, per_trace = 0, {}
    for rs in req.resource_spans:
        r_cost = rs.resource.ByteSize() + len(rs.schema_url) + 16
        for ss in rs.scope_spans:
            s_cost = ss.scope.ByteSize() + len(ss.schema_url) + 16
            seen: set[bytes] = set()
            for span in ss.spans:
                size = span.ByteSize() + 8
                if span.trace_id not in seen:
                    seen.add(span.trace_id)
                    size += r_cost + s_cost
                total += size
                per_trace[span.trace_id] = per_trace.get(span.trace_id, 0) + size
    return total, max(per_trace.values(), default=0)


def pack_traces(req: ExportTraceServiceRequest, max_message_bytes: int) -> tuple[list[tuple[str, bytes]], int, str]:
    """Kafka messages ``(key, value)`` for ``req`` → (messages, spans refused, why).

    One message per trace (key = trace id, like the Collector's ``partition_traces_by_id``) when
    that costs at most :data:`MAX_SPLIT_AMPLIFICATION` × the request's bytes and every message
    fits ``max_message_bytes``. Otherwise spans are packed in order (a trace's spans together)
    into messages of at most ``max_message_bytes``, each repeating a resource and scope once,
    keyed by the first trace id they hold. A span that cannot fit even alone (a captured image, a 1 MB
    prompt) goes in a message of its own with its largest string/bytes attribute values cut, named in
    ``costline.truncated_attributes`` (:func:`~costline.collectors.kafka_exporter.truncate_span`, what the
    in-app exporter does; ids, times, numbers and ``gen_ai.usage.*`` kept); it is refused only when even
    that cannot make it fit.
    """
    size = req.ByteSize()
    estimate, largest = _split_estimate(req)
    if estimate <= MAX_SPLIT_AMPLIFICATION * size + 4096 and largest <= max_message_bytes:
        return [(key, r.SerializeToString()) for key, r in split_by_trace(req)], 0, ""
    messages: list[tuple[str, bytes]] = []
    rejected, truncated, why = 0, 0, ""
    cur: ExportTraceServiceRequest | None = None
    cur_size, cur_key, cur_rs, cur_ss = 0, "", None, None
    cur_rs_at: int | None = None
    cur_ss_at: tuple[int, int] | None = None

    def flush() -> None:
        if cur is not None and cur_key:
            messages.append((cur_key, cur.SerializeToString()))

    for ri, rs in enumerate(req.resource_spans):
        r_cost = rs.resource.ByteSize() + len(rs.schema_url) + 16
        for si, ss in enumerate(rs.scope_spans):
            s_cost = ss.scope.ByteSize() + len(ss.schema_url) + 16
            by_trace: dict[bytes, list[Any]] = {}
            for span in ss.spans:
                by_trace.setdefault(span.trace_id, []).append(span)
            for trace_id, spans in by_trace.items():
                for span in spans:
                    span_cost = span.ByteSize() + 8
                    need = span_cost + (0 if cur_rs_at == ri else r_cost) + (0 if cur_ss_at == (ri, si) else s_cost)
                    if cur is None or cur_size + need > max_message_bytes:
                        flush()
                        cur, cur_size, cur_key, cur_rs_at, cur_ss_at = ExportTraceServiceRequest(), 0, "", None, None
                        need = span_cost + r_cost + s_cost
                        if need > max_message_bytes:
                            # alone in a message of its own, its largest string values cut (as the in-app exporter
                            # does): the call's usage and ids reach Kafka; refused only when even that cannot fit
                            cut = truncate_span(req, ri, si, span, max_message_bytes)
                            if cut is None:
                                rejected += 1
                                why = why or (f"span {span.name[:80]!r} with its resource is {need} bytes, over the "
                                              f"largest Kafka message ({max_message_bytes}) even with its attribute "
                                              "values cut: send smaller spans")
                            else:
                                truncated += 1
                                messages.append((trace_id.hex(), cut))
                            continue
                    if cur_rs_at != ri:
                        cur_rs = cur.resource_spans.add()
                        cur_rs.resource.CopyFrom(rs.resource)
                        cur_rs.schema_url = rs.schema_url
                        cur_rs_at, cur_ss_at = ri, None
                    if cur_ss_at != (ri, si):
                        assert cur_rs is not None
                        cur_ss = cur_rs.scope_spans.add()
                        cur_ss.scope.CopyFrom(ss.scope)
                        cur_ss.schema_url = ss.schema_url
                        cur_ss_at = (ri, si)
                    assert cur_ss is not None
                    cur_ss.spans.append(span)
                    cur_size += need
                    cur_key = cur_key or trace_id.hex()
    flush()
    if truncated:
        _note_truncated(truncated, max_message_bytes)
    return messages, rejected, why


#: Seconds between the receiver's warnings that spans were cut to fit a Kafka message (DEBUG in between).
TRUNCATED_WARNING_S = 60.0
_truncated_warned_at = float("-inf")


def _note_truncated(spans: int, limit: int) -> None:
    """Log spans sent with attribute values cut: WARNING at most once a minute (a sender that captures every image
    must not flood the log), DEBUG in between."""
    global _truncated_warned_at
    now = time.monotonic()
    level = logging.DEBUG
    if now - _truncated_warned_at >= TRUNCATED_WARNING_S:
        _truncated_warned_at, level = now, logging.WARNING
    log.log(level, "costline collect: %d span(s) over the largest Kafka message (%d bytes) sent with their largest "
                   "attribute values cut (named in %s)", spans, limit, TRUNCATED_ATTRIBUTES)


# --- the export both receivers share (OTLP/HTTP here, OTLP/gRPC in receiver_grpc.py) ---------------
class ExportRefused(HttpReject):
    """A whole export refused: ``status`` 400 (not an OTLP trace request: the client must not retry)
    or 503 (Kafka cannot take it: retry after ``retry_after`` seconds, sent as ``Retry-After``).
    :attr:`grpc_code` is the OTLP/gRPC status code for the same answer."""

    def __init__(self, status: int, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(status, message, None if retry_after is None else {"Retry-After": str(retry_after)})
        self.retry_after = retry_after

    @property
    def grpc_code(self) -> int:
        return _GRPC_CODE.get(self.status, 2)


def decode_export(body: bytes, is_json: bool,
                  max_spans: int | None = None) -> tuple[ExportTraceServiceRequest, int, str]:
    """:func:`decode_with_rejections`, refusing what is not an OTLP trace request with
    :class:`ExportRefused` (400 / INVALID_ARGUMENT), and (JSON) more than ``max_spans`` spans with 413."""
    try:
        return decode_with_rejections(body, is_json, max_spans)
    except OtlpDecodeError as exc:
        raise ExportRefused(400, str(exc)[:500]) from None


def export_request(req: ExportTraceServiceRequest, forwarder: Forwarder, max_message_bytes: int, *,
                   rejected: int = 0, why: str = "") -> ExportTraceServiceResponse:
    """Pack ``req`` into Kafka messages (:func:`pack_traces`), forward them and wait for Kafka: the
    answer, with ``partial_success`` counting ``rejected`` spans (already dropped by the decoder, with
    ``why``) plus those too large for a message or refused by Kafka.

    Raises :class:`ExportRefused` (503, ``retry_after`` from :class:`KafkaUnavailable`) when Kafka
    cannot take the data in time: nothing of the request is acknowledged, the client sends it again.
    """
    messages, refused_spans, refused_why = pack_traces(req, max_message_bytes)
    rejected += refused_spans
    why = why or refused_why
    try:
        refused = forwarder.forward(messages)
    except KafkaUnavailable as exc:
        retry = max(int(round(exc.retry_after)), 1)
        # the outage is the producer's to log (at its start with why, then once a minute): one line per export
        # here would be thousands
        log.debug("costline collect: Kafka unavailable, asking the client to retry in %ss: %s", retry, exc)
        raise ExportRefused(503, "Kafka unavailable, retry later", retry_after=retry) from None
    if refused:
        refused_keys = {key for key, _ in refused}
        rejected += sum(span_count(ExportTraceServiceRequest.FromString(value))
                        for key, value in messages if key in refused_keys)
        key, reason = refused[0]
        why = why or f"trace {key} refused by Kafka: {reason}"
    resp = ExportTraceServiceResponse()
    if rejected:
        resp.partial_success.rejected_spans = rejected
        resp.partial_success.error_message = why
    return resp


#: What the socket raises when the client is gone: it closed or reset the connection (its timeout fired), or read
#: nothing of the answer for ``idle_timeout_s`` (a write's timeout).
_CLIENT_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


class _ClientGone(Exception):
    """The client went away mid-request (raised from the socket's reads and writes only, never from the
    forwarder): the connection is closed, a debug line says so, no 500 is attempted."""


class _Handler(GuardedHandler):
    server_version = "costline-collect"
    receiver: OtlpReceiver  # set on the per-receiver subclass

    def log_message(self, format: str, *args: Any) -> None:
        """One access-log line (DEBUG), escaped as http.server escapes it (its ``_control_char_table``: C0/C1
        controls and the backslash as ``\\xNN``) and any other character that does not print as
        :func:`costline.sqlutil.cell_text` writes it: a request line with ESC, BEL or CR cannot forge a log line."""
        from costline.sqlutil import cell_text

        log.debug("%s - %s", self.address_string(), cell_text((format % args).translate(self._control_char_table)))

    # -- routing -----------------------------------------------------------------------------
    def do_POST(self) -> None:
        is_json = self._is_json()
        try:
            if self.path.split("?", 1)[0] != TRACES_PATH:
                raise _Reject(404, f"unknown path {self.path[:200]}; OTLP traces go to POST {TRACES_PATH}")
            self._authenticate()
            self._export(is_json)
        except _Reject as r:
            self._error(r, is_json)
        except _ClientGone as gone:  # its timeout fired, or it was stopped: nobody to answer, nothing went wrong here
            self._gone(gone)
        except Exception as exc:
            log.exception("costline collect: unexpected error")
            self._error(_Reject(500, f"internal error: {type(exc).__name__}"), is_json)

    def _gone(self, gone: "_ClientGone") -> None:
        self.close_connection = True
        log.debug("costline collect: the client %s went away before its answer (%s)", self.address_string(), gone)

    def _other_method(self) -> None:
        if self.path.split("?", 1)[0] == TRACES_PATH:
            self._error(_Reject(405, f"use POST {TRACES_PATH}", {"Allow": "POST"}), self._is_json())
        else:
            self._error(_Reject(404, f"unknown path {self.path[:200]}"), self._is_json())

    do_GET = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _other_method

    # -- the export ---------------------------------------------------------------------------
    def _authenticate(self) -> None:
        tokens = self.receiver.tokens
        if not tokens.enabled:
            return
        values = self.header_values("Authorization")
        if len(values) != 1 or not tokens.check(values[0]):
            raise _Reject(401, "a valid 'Authorization: Bearer <token>' header is required",
                          {"WWW-Authenticate": 'Bearer realm="costline-collect"'})

    def _is_json(self) -> bool:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower() == contract.CONTENT_TYPE_JSON

    def _export(self, is_json: bool) -> None:
        cfg = self.receiver.config
        kinds = self.header_values("Content-Type")
        kind = (kinds[0] if len(kinds) == 1 else "").split(";")[0].strip().lower()
        if kind not in _PROTOBUF_TYPES and kind != contract.CONTENT_TYPE_JSON:
            raise _Reject(415, f"unsupported Content-Type {kind[:80] or '(none)'!r}: send application/x-protobuf "
                               "or application/json")
        encodings = self.header_values("Content-Encoding")
        encoding = (encodings[0] if encodings else "identity").strip().lower()
        if len(encodings) > 1 or (encoding != "identity" and encoding not in _DECODERS):
            raise _Reject(415, f"unsupported Content-Encoding {encoding[:80]!r}: send gzip, deflate, zstd or none")
        length = self.content_length(cfg.max_body_bytes)
        budget = self.receiver.budget
        # held on the budget as it arrives (503 + Retry-After past max_inflight_bytes), not as announced: a
        # body announced and then trickled holds nothing it has not sent, for at most body_timeout_s (408)
        try:
            body = self.read_body(length, budget)
        except _CLIENT_GONE as exc:  # reset while sending its body
            raise _ClientGone(exc) from None
        hold = len(body)
        try:
            if encoding != "identity":
                raw = hold
                body = _DECODERS[encoding](body, cfg.max_body_bytes)  # at most max_body_bytes out (413)
                hold += self._charge(budget, len(body), hold)  # the decompressed body, before anything reads it
                budget.release(raw)  # the compressed body is gone
                hold -= raw
            # the parsed objects, before they are built: spans counted on the wire (413 past max_spans_per_request)
            hold += self._charge(budget, parse_cost(body, is_json, cfg.max_spans_per_request), hold)
            req, rejected, why = decode_export(body, is_json, cfg.max_spans_per_request)
            del body
            resp = export_request(req, self.receiver.forwarder, cfg.max_message_bytes, rejected=rejected, why=why)
        finally:
            budget.release(hold)
        self._send(200, resp, is_json)

    def _charge(self, budget: BytesBudget, more: int, held: int) -> int:
        """Hold ``more`` bytes on the in-flight budget beside the ``held`` this request holds → ``more``.
        413 when the request alone could never fit (``held + more`` over ``max_inflight_bytes``), 503 with
        Retry-After when it does not fit now."""
        if held + more > budget.limit:
            raise _Reject(413, f"this request needs {held + more} bytes in flight once decompressed and parsed, over "
                               f"[collector] max_inflight_bytes ({budget.limit}): send smaller batches")
        if not budget.acquire(more):
            raise self._busy()
        return more

    # -- answers ---------------------------------------------------------------------------------
    def _send(self, status: int, message: Any, is_json: bool, headers: dict[str, str] | None = None) -> None:
        if is_json:
            body = json_format.MessageToJson(message, indent=None).encode()
            ctype = contract.CONTENT_TYPE_JSON
        else:
            body = message.SerializeToString()
            ctype = contract.CONTENT_TYPE_PROTOBUF
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        except _CLIENT_GONE as exc:  # closed or reset, or reading nothing for idle_timeout_s
            raise _ClientGone(exc) from None

    def _error(self, r: _Reject, is_json: bool) -> None:
        # The body may be unread: do not reuse the connection after an error.
        self.close_connection = True
        status = status_pb2.Status(code=_GRPC_CODE.get(r.status, 2), message=r.message)
        try:
            self._send(r.status, status, is_json, r.headers)
        except _ClientGone as gone:
            self._gone(gone)
            return
        self.linger(self.receiver.config.max_body_bytes)


class ReceiverBase:
    """What both OTLP receivers hold (:class:`OtlpReceiver`, ``receiver_grpc.OtlpGrpcReceiver``): the
    ``[collector]`` config, the forwarder, the host, the bearer tokens, the bytes-in-flight budget and
    the TLS context; the port is the config key :attr:`port_key` unless ``port`` is given."""

    #: The ``[collector]`` key of this receiver's port (also its ``--option`` and environment variable).
    port_key = "port"
    #: The protocol, as messages name it.
    protocol = "OTLP/HTTP"

    def __init__(
        self,
        config: CollectorConfig,
        forwarder: Forwarder,
        *,
        host: str | None = None,
        port: int | None = None,
    ) -> None:
        self.config = config
        self.forwarder = forwarder
        self.host = config.host if host is None else host
        wanted = getattr(config, self.port_key) if port is None else port
        if wanted is None:
            raise ReceiverError(f"no port for {self.protocol}: set one with {self.port_hint}")
        self._port: int = wanted
        self.tokens = BearerTokens([config.bearer_token] if config.bearer_token else [], config.bearer_token_file)
        self.budget = BytesBudget(config.max_inflight_bytes)
        self._ssl = ssl_context(config.tls_cert_file, config.tls_key_file)

    @property
    def port_hint(self) -> str:
        """Where the port is set: ``--port / [collector] port (COSTLINE_COLLECTOR_PORT)``."""
        key = self.port_key
        return f"--{key.replace('_', '-')} / [collector] {key} (COSTLINE_COLLECTOR_{key.upper()})"

    def refuse_open_bind(self) -> None:
        """Raise InsecureBindError for a non-loopback host without a token (unless ``allow_insecure``)."""
        what = "costline collect" if self.port_key == "port" else f"costline collect ({self.protocol})"
        refuse_open_bind(what, self.host, authenticated=self.tokens.enabled, insecure=self.config.allow_insecure,
                         how="set [collector] bearer_token or bearer_token_file")

    def close_forwarder(self) -> None:
        try:
            self.forwarder.close()
        except Exception:
            log.exception("costline collect: error closing the forwarder")


class OtlpReceiver(ReceiverBase):
    """``POST /v1/traces`` on ``config.host:config.port`` → ``forwarder``.

    ``start()`` serves on a background thread and returns the bound port (pass
    ``port=0`` for any free one); ``serve_forever()`` blocks; ``shutdown()``
    stops serving and closes the forwarder. With ``bearer_token``/``bearer_token_file``
    set, requests need ``Authorization: Bearer``; ``tls_cert_file``/``tls_key_file`` serve HTTPS.
    A non-loopback host without a token is refused unless ``allow_insecure``.
    """

    _server: PooledHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else self._port

    @property
    def endpoint(self) -> str:
        """The URL to give an OTLP/HTTP exporter (``.../v1/traces``)."""
        scheme = "https" if self._ssl is not None else "http"
        return f"{scheme}://{self.host}:{self.port}{TRACES_PATH}"

    def bind(self) -> PooledHTTPServer:
        """Open the listening socket (idempotent); raises ReceiverError when the port is taken."""
        if self._server is None:
            self.refuse_open_bind()
            handler = type("OtlpHandler", (_Handler,), {"receiver": self})
            busy = status_pb2.Status(code=14, message="the receiver is busy, retry later")
            try:
                server = PooledHTTPServer((self.host, self._port), handler, limits=Limits.of(self.config),
                                          ssl_ctx=self._ssl, name="costline-collect",
                                          busy_body=(contract.CONTENT_TYPE_PROTOBUF, busy.SerializeToString()))
            except OSError as exc:
                raise ReceiverError(
                    f"cannot listen on {self.host}:{self._port} ({exc.strerror or exc}): stop what uses the "
                    f"port, or pick another with {self.port_hint}"
                ) from None
            self._server = server
        return self._server

    def start(self) -> int:
        """Serve on a background thread; return the bound port."""
        server = self.bind()
        if self._thread is None:
            self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="costline-collect", daemon=True)
            self._thread.start()
        return self.port

    def serve_forever(self) -> None:
        """Serve on this thread until :meth:`shutdown` (or Ctrl-C)."""
        self.bind().serve_forever()

    def shutdown(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            if self._thread is not None:
                server.shutdown()
                self._thread.join(timeout=5)
                self._thread = None
            server.server_close()
        self.close_forwarder()
