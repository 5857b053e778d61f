"""OTLP trace payloads: decode (protobuf or JSON), split by trace, encode.

Shared by the collectors (which forward what apps send) and the processors
(which read it back from Kafka). The Kafka message format is the OpenTelemetry
Collector's Kafka exporter with ``partition_traces_by_id``: an
``ExportTraceServiceRequest`` holding spans of one trace, keyed by the 32-hex-char
trace id (the Collector writes one per trace, resource and scope of an export; a
trace may come in several messages: docs/telemetry.md, "Kafka message format").
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from costline import contract
from costline.errors import CostlineError
from costline.textutil import well_formed

__all__ = [
    "OtlpDecodeError",
    "ExportTraceServiceRequest",
    "decode_request",
    "decode_protobuf",
    "parse_protobuf",
    "parse_protobuf_salvaging",
    "ProtobufSalvage",
    "MAX_SALVAGED_SPANS",
    "decode_json",
    "decode_json_salvaging",
    "JsonSalvage",
    "json_id_bytes",
    "split_by_trace",
    "encode_sdk_spans_by_trace",
    "span_count",
    "wire_span_count",
]


class OtlpDecodeError(CostlineError):
    """A payload is not a valid OTLP trace export request (the message says why)."""


def decode_request(body: bytes, content_type: str | None = None) -> ExportTraceServiceRequest:
    """Decode an OTLP trace request; ``content_type`` None or unknown → sniff (``{`` = JSON)."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind in (contract.CONTENT_TYPE_JSON, "otlp_json", "json"):
        return decode_json(body)
    if kind in (contract.CONTENT_TYPE_PROTOBUF, "application/protobuf", "otlp_proto", "protobuf"):
        return decode_protobuf(body)
    if body.lstrip()[:1] == b"{":
        try:
            return decode_json(body)
        except OtlpDecodeError:
            # A protobuf request opens with 0x0a ("\n"); with a length byte of 0x7b it looks like JSON.
            if body[:1] != b"\n":
                raise
    return decode_protobuf(body)


def decode_protobuf(body: bytes) -> ExportTraceServiceRequest:
    req = parse_protobuf(body)
    _check_ids(req)
    return req


def parse_protobuf(body: bytes) -> ExportTraceServiceRequest:
    """An OTLP protobuf trace request, its ids unchecked; :class:`OtlpDecodeError` when it is none.

    A string field that is not valid UTF-8 (an app that cut a prompt at a byte limit through a character;
    the OTel Collector forwards it as it came) makes protobuf refuse the whole request. Such a request is
    read again with every string field as bytes, its invalid sequences replaced by U+FFFD: one cut prompt
    costs no span. A request that is corrupt in any other way is still refused.
    """
    req = ExportTraceServiceRequest()
    try:
        req.ParseFromString(body)
        return req
    except (DecodeError, ValueError, RuntimeError, RecursionError) as exc:
        error = exc
    try:
        return _parse_repairing_utf8(body)
    except (DecodeError, ValueError, RuntimeError, RecursionError):
        raise OtlpDecodeError(f"not an OTLP protobuf ExportTraceServiceRequest: {error}") from None


class ProtobufSalvage(NamedTuple):
    """What :func:`parse_protobuf_salvaging` parsed, and what it left out."""

    request: ExportTraceServiceRequest
    #: how many spans were left out (each failed to parse on its own)
    dropped: int = 0
    #: why the first of them was ("" when none was)
    reason: str = ""
    #: the spans left out, their bytes as they came, each under its own resource and scope (an
    #: ``ExportTraceServiceRequest`` on the wire that, like them, does not parse): what a caller dead-letters or
    #: reports (b"" when none was)
    dropped_protobuf: bytes = b""


#: The most spans (resources and scopes counted too) :func:`parse_protobuf_salvaging` walks and parses one by one
#: (each alone costs a parse of its own): a request that fails whole with more is refused whole, as it was before.
MAX_SALVAGED_SPANS = 100_000


def parse_protobuf_salvaging(body: bytes) -> ProtobufSalvage:
    """:func:`parse_protobuf`, but one span never costs its neighbours (what :func:`decode_json_salvaging` does for
    OTLP/JSON).

    A request that parses is parsed once (the common case). Otherwise its outer layers are walked as raw protobuf
    (``ExportTraceServiceRequest.resource_spans`` → ``ResourceSpans.scope_spans`` → ``ScopeSpans.spans``, each
    resource and scope kept with its schema URL) and each span is parsed alone, at the depth it has in a request
    (so a span kept here parses back wherever the request is read again, e.g. by the processor from Kafka): a span
    that does not (an attribute nested past protobuf's depth limit, a corrupt span) is left out, counted and the
    first one's reason kept. Still :class:`OtlpDecodeError`: bytes that are not protobuf at those outer layers, a
    resource or scope that does not parse, and a failing request of more than :data:`MAX_SALVAGED_SPANS` spans
    (resources and scopes counted with them).
    Linear in the bytes: each is walked once and parsed a bounded number of times (the whole, then its span alone).
    """
    try:
        return ProtobufSalvage(parse_protobuf(body))
    except OtlpDecodeError as exc:
        error = exc
    try:
        return _salvage_protobuf(body)
    except (_WireError, OtlpDecodeError):
        raise error from None


class _WireError(Exception):
    """Bytes that are not a well-formed protobuf message at the layer walked."""


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise _WireError("truncated or overlong varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def _fields(data: bytes) -> Iterable[tuple[int, int, int, int]]:
    """``(field number, wire type, start, end)`` of each field of the message ``data`` (start/end: the whole field,
    its tag included; for a length-delimited field :func:`_payload` gives its bytes)."""
    at = 0
    while at < len(data):
        start = at
        tag, at = _varint(data, at)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise _WireError("field number 0")
        if wire == 0:
            _, at = _varint(data, at)
        elif wire == 1:
            at += 8
        elif wire == 2:
            size, at = _varint(data, at)
            at += size
        elif wire == 5:
            at += 4
        else:  # groups (3, 4) are not in OTLP; 6 and 7 do not exist
            raise _WireError(f"wire type {wire}")
        if at > len(data):
            raise _WireError("field runs past the end")
        yield number, wire, start, at


def _payload(data: bytes, start: int) -> bytes:
    """The bytes of the length-delimited field at ``start``."""
    _, at = _varint(data, start)
    size, at = _varint(data, at)
    return data[at:at + size]


def wire_span_count(body: bytes, cap: int) -> int:
    """Spans of a protobuf ``ExportTraceServiceRequest`` counted on the wire (``resource_spans`` = 1 →
    ``scope_spans`` = 2 → ``spans`` = 2): no message built, no byte copied (a memoryview), and the count stops one
    past ``cap``, so a body of millions of empty spans costs about ``cap`` steps. What a receiver charges for the
    objects a parse would build before it builds them. Malformed bytes end the count (the parser says what is
    wrong with them)."""
    data = memoryview(body)
    n = 0
    try:
        for rs_no, rs_wire, rs_start, _ in _fields(data):
            if rs_no != 1 or rs_wire != 2:
                continue
            rs = _payload(data, rs_start)
            for ss_no, ss_wire, ss_start, _ in _fields(rs):
                if ss_no != 2 or ss_wire != 2:
                    continue
                for sp_no, sp_wire, _, _ in _fields(_payload(rs, ss_start)):
                    if sp_no == 2 and sp_wire == 2:
                        n += 1
                        if n > cap:
                            return n
    except _WireError:
        pass
    return n


def _delimited(number: int, payload: bytes) -> bytes:
    """``payload`` as length-delimited field ``number``."""
    out = bytearray()
    for value in ((number << 3) | 2, len(payload)):
        while value >= 0x80:
            out.append((value & 0x7F) | 0x80)
            value >>= 7
        out.append(value)
    return bytes(out) + payload


def _span_label(span: bytes) -> str:
    """``span 'name' (trace <hex>)`` read off a span's raw fields (it does not parse), best effort."""
    name, trace = "", ""
    try:
        for number, wire, start, _ in _fields(span):
            if wire == 2 and number == 5:
                name = _payload(span, start)[:80].decode("utf-8", "replace")
            elif wire == 2 and number == 1:
                trace = _payload(span, start)[:16].hex()
    except _WireError:
        pass
    return f"span {name!r}" + (f" (trace {trace})" if trace else "")


def _count(seen: int) -> int:
    """One more resource, scope or span walked; :class:`_WireError` past :data:`MAX_SALVAGED_SPANS` (counted as they
    are walked, so the bound holds for the walk too, not only for the parses)."""
    if seen >= MAX_SALVAGED_SPANS:
        raise _WireError(f"more than {MAX_SALVAGED_SPANS} spans, scopes and resources")
    return seen + 1


def _children(message: bytes, seen: int) -> tuple[bytes, list[bytes], int]:
    """(``message``'s other fields, as they came; the payloads of its field 2 — a ResourceSpans' scope_spans, a
    ScopeSpans' spans —; ``seen`` counted on by each, :func:`_count`)."""
    head, children = bytearray(), []
    for number, wire, start, end in _fields(message):
        if number == 2 and wire == 2:
            seen = _count(seen)
            children.append(_payload(message, start))
        else:
            head += message[start:end]
    return bytes(head), children, seen


def _salvage_protobuf(body: bytes) -> ProtobufSalvage:
    # (resource head, [(scope head, [span bytes kept])]): a head is every field of its message but the list below it
    kept_rs: list[tuple[bytes, list[tuple[bytes, list[bytes]]]]] = []
    dropped_rs = bytearray()  # the spans left out, under their resource and scope heads
    dropped, first, seen = 0, "", 0
    for number, wire, start, _ in _fields(body):
        if number != 1 or wire != 2:
            continue  # an unknown field (protobuf keeps and ignores it; so do we)
        seen = _count(seen)
        rs = _payload(body, start)
        rs_head, scopes, seen = _children(rs, seen)  # ResourceSpans: its scope_spans (field 2)
        parse_protobuf(_delimited(1, rs_head))  # the resource must parse: else no request to salvage
        kept_ss: list[tuple[bytes, list[bytes]]] = []
        dropped_ss = bytearray()
        for ss in scopes:
            ss_head, spans, seen = _children(ss, seen)  # ScopeSpans: its spans (field 2)
            parse_protobuf(_delimited(1, _delimited(2, ss_head)))  # and so must the scope
            good, bad = [], []
            for span in spans:
                try:  # alone, at the depth it has in a request: what is kept parses back in one
                    parse_protobuf(_delimited(1, _delimited(2, _delimited(2, span))))
                except OtlpDecodeError:
                    dropped += 1
                    first = first or (f"{_span_label(span)} does not parse (an attribute nested past protobuf's "
                                      "depth limit, or corrupt bytes): left out, its neighbours kept")
                    bad.append(span)
                    continue
                good.append(span)
            kept_ss.append((bytes(ss_head), good))
            if bad:
                dropped_ss += _delimited(2, bytes(ss_head) + b"".join(_delimited(2, span) for span in bad))
        kept_rs.append((bytes(rs_head), kept_ss))
        if dropped_ss:
            dropped_rs += _delimited(1, bytes(rs_head) + bytes(dropped_ss))
    if not dropped:  # the request failed whole for a reason no span explains: not ours to guess
        raise _WireError("no span explains the failure")
    out = bytearray()
    for rs_head, kept_ss in kept_rs:
        rs_bytes = bytearray(rs_head)
        for ss_head, good in kept_ss:
            rs_bytes += _delimited(2, ss_head + b"".join(_delimited(2, span) for span in good))
        out += _delimited(1, bytes(rs_bytes))
    return ProtobufSalvage(parse_protobuf(bytes(out)), dropped, first, bytes(dropped_rs))


#: The package of the request's wire twin that reads string fields as bytes (see :func:`_strings_as_bytes`).
_TWIN = "costline.otlp.strings_as_bytes."


@functools.lru_cache(maxsize=1)
def _strings_as_bytes() -> Any:
    """The message class of ExportTraceServiceRequest's wire twin: the same fields and numbers (string and
    bytes fields are one wire type), every string field declared bytes, so invalid UTF-8 parses."""
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(file: Any) -> None:
        if file.name in added:
            return
        added.add(file.name)
        for dep in file.dependencies:
            add(dep)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        proto.name = _TWIN + proto.name
        proto.package = _TWIN + proto.package
        deps = [_TWIN + d for d in proto.dependency]
        del proto.dependency[:]
        proto.dependency.extend(deps)
        del proto.service[:]
        todo = list(proto.message_type)
        while todo:
            msg = todo.pop()
            todo.extend(msg.nested_type)
            for f in msg.field:
                if f.type == FieldDescriptor.TYPE_STRING:
                    f.type = FieldDescriptor.TYPE_BYTES
                if f.type_name.startswith("."):
                    f.type_name = "." + _TWIN + f.type_name[1:]
        pool.Add(proto)

    add(ExportTraceServiceRequest.DESCRIPTOR.file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName(_TWIN + ExportTraceServiceRequest.DESCRIPTOR.full_name))


def _repeated(field: Any) -> bool:
    """Whether ``field`` is repeated (protobuf 7 dropped ``label`` for ``is_repeated``; older ones lack it)."""
    is_repeated = getattr(field, "is_repeated", None)
    if callable(is_repeated):
        is_repeated = is_repeated()
    return bool(is_repeated) if is_repeated is not None else field.label == FieldDescriptor.LABEL_REPEATED


def _parse_repairing_utf8(body: bytes) -> ExportTraceServiceRequest:
    twin = _strings_as_bytes()()
    twin.ParseFromString(body)
    todo: list[tuple[Any, Any]] = [(twin, ExportTraceServiceRequest.DESCRIPTOR)]
    while todo:  # no recursion: AnyValue nests as deep as the sender liked
        msg, real = todo.pop()
        for field, value in msg.ListFields():
            kind = real.fields_by_name[field.name]
            if kind.type == FieldDescriptor.TYPE_STRING:
                if _repeated(field):
                    value[:] = [v.decode("utf-8", "replace").encode() for v in value]
                else:
                    setattr(msg, field.name, value.decode("utf-8", "replace").encode())
            elif kind.type == FieldDescriptor.TYPE_MESSAGE:
                children = value if _repeated(field) else [value]
                todo.extend((child, kind.message_type) for child in children)
    return ExportTraceServiceRequest.FromString(twin.SerializeToString())


def decode_json(body: bytes, *, check_ids: bool = True) -> ExportTraceServiceRequest:
    """OTLP/JSON: lowerCamelCase keys, hex trace/span ids, enums as ints, int64 as strings.

    An id in the padded base64 protobuf's own JSON mapping writes (``json_format.MessageToJson``) is read too, only
    in its exact form (:func:`json_id_bytes`): 24 characters for a trace id, 12 for a span id.

    With ``check_ids`` False a span's malformed id (not hex, the wrong length, all zeros) does not refuse
    the request: a non-hex id is read as empty, and the caller checks every span's ids itself (the
    processor does, span by span, so one bad span is left out and its neighbours are kept)."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OtlpDecodeError(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise OtlpDecodeError("JSON nested too deeply") from None
    if not isinstance(doc, dict):
        raise OtlpDecodeError("OTLP JSON must be an object with resourceSpans")
    try:
        for rs in _list(doc, "resourceSpans", "resource_spans"):
            for ss in _list(rs, "scopeSpans", "scope_spans"):
                for span in _list(ss, "spans"):
                    _hex_ids_to_b64(span, strict=check_ids)
                    for link in _list(span, "links"):
                        _hex_ids_to_b64(link, strict=check_ids)
        req = ExportTraceServiceRequest()
        json_format.ParseDict(doc, req, ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, ValueError, AttributeError) as exc:
        raise OtlpDecodeError(f"not an OTLP JSON trace request: {exc}") from None
    if check_ids:
        _check_ids(req)
    return req


class JsonSalvage(NamedTuple):
    """What :func:`decode_json_salvaging` decoded, and what it left out."""

    request: ExportTraceServiceRequest
    #: how many spans were left out (each failed to decode on its own)
    dropped: int = 0
    #: why the first of them was ("" when none was)
    reason: str = ""
    #: OTLP/JSON of the spans left out, as they came (hex ids, lone surrogates kept), each under its own
    #: resource and scope: what a caller dead-letters or reports (b"" when none was)
    dropped_json: bytes = b""


def decode_json_salvaging(body: bytes, *, check_ids: bool = True) -> JsonSalvage:
    """:func:`decode_json`, but one span never costs its neighbours.

    A document that decodes is decoded once (the common case). Otherwise a lone UTF-16 surrogate in any string
    (OpenTelemetry JS cuts attributes by UTF-16 units and writes ``"\\ud83d"``; protobuf refuses it) is read as
    U+FFFD (:func:`~costline.textutil.well_formed`), and a span that still does not decode on its own is left out:
    a value out of its field's range (an ``intValue`` past int64, ``1.5`` or ``1e30``; a negative or 2^64 time), a
    wrong type inside the span, and with ``check_ids`` a malformed id. The result says how many, why the first, and
    holds them as OTLP/JSON. What is no OTLP trace request at all (not JSON, ``resourceSpans`` not an array, a
    resource or scope that does not decode) still raises :class:`OtlpDecodeError`.

    The processor's and the OTLP/HTTP receiver's salvage (``collectors.receiver.decode_with_rejections`` checks
    span and link ids its own stricter way first, then calls this).
    """
    try:
        return JsonSalvage(decode_json(body, check_ids=check_ids))
    except OtlpDecodeError as exc:
        error = exc
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise error from None
    if not isinstance(doc, dict):
        raise error
    dropped, first = 0, ""
    dropped_rs: list[dict[str, Any]] = []
    for rs in _items(doc, "resourceSpans", "resource_spans"):
        if not isinstance(rs, dict):
            continue  # a structure error: left to the decoder, which refuses the request
        dropped_ss: list[dict[str, Any]] = []
        for ss in _items(rs, "scopeSpans", "scope_spans"):
            if not isinstance(ss, dict) or not isinstance(ss.get("spans"), list):
                continue
            kept, bad = [], []
            for span in ss["spans"]:
                why = _span_unparsable(span, check_ids)
                if why is None:
                    kept.append(span)
                else:
                    bad.append(span)
                    first = first or why
            if bad:
                ss["spans"] = kept
                dropped_ss.append({**{k: v for k, v in ss.items() if k != "spans"}, "spans": bad})
                dropped += len(bad)
        if dropped_ss:
            dropped_rs.append({**{k: v for k, v in rs.items() if k not in ("scopeSpans", "scope_spans")},
                               "scopeSpans": dropped_ss})
    try:
        # ensure_ascii: a lone surrogate stays the escape it came as (no UTF-8 can hold it)
        dropped_json = json.dumps({"resourceSpans": dropped_rs}).encode() if dropped else b""
        repaired = well_formed(json.dumps(doc, ensure_ascii=False)).encode()
    except (ValueError, RecursionError):
        raise error from None
    return JsonSalvage(decode_json(repaired, check_ids=check_ids), dropped, first, dropped_json)


#: How json_format names the wrapper :func:`_span_unparsable` parses a span in (cut from its messages).
_WRAPPER_ERROR = "Failed to parse resourceSpans field: Failed to parse scopeSpans field: Failed to parse spans field: "


def _span_unparsable(span: Any, check_ids: bool) -> str | None:
    """Why one OTLP/JSON span does not decode on its own (lone surrogates read as U+FFFD), or None when it does."""
    name = span.get("name") if isinstance(span, dict) else None
    try:
        # a copy (ids are rewritten below), its lone surrogates as U+FFFD
        one = json.loads(well_formed(json.dumps(span, ensure_ascii=False)))
        _hex_ids_to_b64(one, strict=check_ids)
        for link in _list(one, "links"):
            _hex_ids_to_b64(link, strict=check_ids)
        # at the depth it has in a request (3 levels down): a span that parses alone but not in its request
        # (nested just past protobuf's depth limit) refused the whole export
        wrapped = json_format.ParseDict({"resourceSpans": [{"scopeSpans": [{"spans": [one]}]}]},
                                        ExportTraceServiceRequest(), ignore_unknown_fields=True)
        decoded = wrapped.resource_spans[0].scope_spans[0].spans[0]
    except (json_format.ParseError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        return f"span {str(name)[:80]!r}: {str(exc).removeprefix(_WRAPPER_ERROR)[:300]}"
    return _ids_problem(decoded) if check_ids else None


def _items(obj: dict[str, Any], *keys: str) -> list[Any]:
    """The array under the first of ``keys`` present, [] when none is or it is no array (left to the decoder)."""
    for key in keys:
        value = obj.get(key)
        if value is not None:
            return value if isinstance(value, list) else []
    return []


def _list(obj: Any, *keys: str) -> list[Any]:
    if not isinstance(obj, dict):
        raise TypeError(f"expected an object, got {type(obj).__name__}")
    for key in keys:
        value = obj.get(key)
        if value is not None:
            if not isinstance(value, list):
                raise TypeError(f"{key} must be an array")
            return value
    return []


#: Bytes of each id field of a span or link, by its OTLP/JSON key (both spellings).
_ID_BYTES = {"traceId": 16, "trace_id": 16, "spanId": 8, "span_id": 8, "parentSpanId": 8, "parent_span_id": 8}
#: Characters of an id written in padded base64 (what protobuf's ``json_format.MessageToJson`` writes for bytes):
#: 16 bytes → 24 (``==`` at the end), 8 → 12 (``=``). The padding is never hex, so no id reads both ways.
_B64_CHARS = {16: 24, 8: 12}


def json_id_bytes(value: str, nbytes: int) -> bytes | None:
    """The bytes of an OTLP/JSON trace id (``nbytes`` 16) or span id (8), or None when it is neither form.

    The OTLP spec's form is hex (any length is read here; the caller checks the length). As a fallback an id in
    the padded base64 protobuf's own JSON mapping writes (``json_format.MessageToJson``, which hand-rolled
    exporters use) is read too, only when it is exactly that form: 24 characters decoding to 16 bytes for a
    trace id, 12 decoding to 8 for a span id, standard or URL-safe alphabet, canonical (it encodes back to
    itself). Anything else (base64 of another length, unpadded, with stray bits) is None, refused as before.
    """
    try:
        return binascii.unhexlify(value)
    except (binascii.Error, ValueError):
        pass
    if len(value) != _B64_CHARS.get(nbytes, -1) or not value.isascii():
        return None
    std = value.replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(std, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != nbytes or base64.b64encode(raw).decode() != std:
        return None
    return raw


def _hex_ids_to_b64(obj: Any, strict: bool = True) -> None:
    if not isinstance(obj, dict):
        raise TypeError("a span must be an object")
    for key, nbytes in _ID_BYTES.items():
        value = obj.get(key)
        if isinstance(value, str) and value:
            raw = json_id_bytes(value, nbytes)
            if raw is None:
                if strict:
                    raise ValueError(f"{key} {value!r} is not hex (nor the {_B64_CHARS[nbytes]}-character base64 "
                                     f"of {nbytes} bytes protobuf's JSON mapping writes)")
                raw = b""  # an empty id: the span is refused when its ids are checked, alone
            obj[key] = base64.b64encode(raw).decode()


def _ids_problem(span: Any) -> str | None:
    """Why a decoded span's ids are malformed, or None when they are fine."""
    if len(span.trace_id) != 16 or span.trace_id == bytes(16):
        return f"span {span.name!r} has an invalid trace_id (need 16 non-zero bytes)"
    if len(span.span_id) != 8 or span.span_id == bytes(8):
        return f"span {span.name!r} has an invalid span_id (need 8 non-zero bytes)"
    if span.parent_span_id and len(span.parent_span_id) != 8:
        return f"span {span.name!r} has an invalid parent_span_id"
    return None


def _check_ids(req: ExportTraceServiceRequest) -> None:
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                problem = _ids_problem(span)
                if problem:
                    raise OtlpDecodeError(problem)


def span_count(req: ExportTraceServiceRequest) -> int:
    return sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)


def split_by_trace(req: ExportTraceServiceRequest) -> list[tuple[str, ExportTraceServiceRequest]]:
    """One request per trace id, keeping resource and scope of each span (the Collector writes one per
    trace, resource and scope; the processor reads either)."""
    out: dict[bytes, ExportTraceServiceRequest] = {}
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            per_trace: dict[bytes, list[Any]] = {}
            for span in ss.spans:
                per_trace.setdefault(span.trace_id, []).append(span)
            for trace_id, spans in per_trace.items():
                target = out.get(trace_id)
                if target is None:
                    target = out[trace_id] = ExportTraceServiceRequest()
                new_rs = target.resource_spans.add()
                new_rs.resource.CopyFrom(rs.resource)
                new_rs.schema_url = rs.schema_url
                new_ss = new_rs.scope_spans.add()
                new_ss.scope.CopyFrom(ss.scope)
                new_ss.schema_url = ss.schema_url
                new_ss.spans.extend(spans)
    return [(trace_id.hex(), r) for trace_id, r in out.items()]


def encode_sdk_spans_by_trace(spans: Sequence[Any] | Iterable[Any]) -> list[tuple[str, bytes]]:
    """OTel SDK ``ReadableSpan``s → ``[(trace_id_hex, ExportTraceServiceRequest bytes)]``."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    groups: dict[int, list[Any]] = {}
    for span in spans:
        groups.setdefault(span.context.trace_id, []).append(span)
    return [(f"{trace_id:032x}", encode_spans(group).SerializeToString()) for trace_id, group in groups.items()]
