"""The OpenAI Batch API on the gateway, with the part of the Files API it needs (``client.files``, ``client.batches``
of the ``openai`` SDK).

An app on the ``openai`` SDK uploads a JSONL file of chat completion requests (``files.create(purpose="batch")``),
makes a batch of it (``batches.create(input_file_id=..., endpoint="/v1/chat/completions", completion_window="24h")``),
polls it and reads its ``output_file_id`` / ``error_file_id``. Through costline its requests go the way a Message
Batch's do (:mod:`costline.serving.gateway.batches`: the cache, routing, upstream Message Batches at the batch price,
escalation in rounds); the answers come back as chat completions.

Routes: ``POST /v1/files`` (multipart, ``purpose=batch``), ``GET /v1/files``, ``GET /v1/files/{id}``,
``GET /v1/files/{id}/content``, ``DELETE /v1/files/{id}``; ``POST /v1/batches``, ``GET /v1/batches`` (newest first,
``limit`` 1-100, ``after``), ``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``. A batch's output and error
files are ``file-{batch id}-output`` / ``-errors``, made from its results when read. A tenant sees only its own.

Only ``/v1/chat/completions`` batches are taken (an embeddings or Responses batch is a 400 naming ``endpoint``); an
input file that is not JSONL of ``{"custom_id", "method": "POST", "url", "body"}`` lines with unique custom ids is a
400 naming its line, at the create (OpenAI fails the batch instead: the same information, sooner).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from costline.serving.gateway._http import HttpRequest, HttpResponse, Route
from costline.serving.gateway.batches_api import full_status
from costline.serving.gateway.batches import (BATCH_EXPIRES_S, CANCELED, ERRORED, EXPIRED, SUCCEEDED, BatchesFull,
                                              BatchStore, StoredBatch)

if TYPE_CHECKING:  # pragma: no cover
    from costline.serving.gateway.app import Gateway

__all__ = ["OpenAIBatches", "openai_batch_routes", "CHAT_ENDPOINT"]

#: The one endpoint a batch may name.
CHAT_ENDPOINT = "/v1/chat/completions"
_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
#: HTTP status of an errored request, by the API error type its result names (as OpenAI's error file says it).
_STATUS = {"invalid_request_error": 400, "authentication_error": 401, "permission_error": 403,
           "not_found_error": 404, "request_too_large": 413, "rate_limit_error": 429, "overloaded_error": 503}
_OUTPUT, _ERRORS = "-output", "-errors"


def _error(status: int, message: str, headers: Mapping[str, str] | None = None, *,
           param: str | None = None) -> HttpResponse:
    from costline.serving.gateway.openai_api import openai_error

    return openai_error(status, message, headers, param=param)


class OpenAIBatches:
    """The routes' handlers over ``gateway``'s :class:`BatchStore` (``wall``: the clock of their timestamps)."""

    def __init__(self, gateway: "Gateway", store: BatchStore, *, wall: Any) -> None:
        self.gateway = gateway
        self.store = store
        self._wall = wall

    def _admit(self, req: HttpRequest, *, upload: bool = False) -> tuple[str, dict[str, str]] | HttpResponse:
        admitted = self.gateway.guard.admit(req, upload=upload)
        if hasattr(admitted, "status"):  # Refused
            return _error(admitted.status, admitted.message, admitted.headers)  # type: ignore[union-attr]
        return admitted.tenant or self.gateway.config.default_tenant, dict(admitted.headers)  # type: ignore[union-attr]

    # -- files ---------------------------------------------------------------------------------------------------
    def upload(self, req: HttpRequest) -> HttpResponse:
        entered = self._admit(req, upload=True)
        if isinstance(entered, HttpResponse):
            return entered
        tenant, headers = entered
        parts = multipart_parts(req.header("content-type") or "", req.body)
        if isinstance(parts, str):
            return _error(400, parts, headers)
        purpose = parts.get("purpose", (None, b""))[1].decode("utf-8", "replace")
        if purpose != "batch":
            return _error(400, "purpose: the gateway keeps batch input files only (purpose \"batch\")", headers,
                          param="purpose")
        if "file" not in parts:
            return _error(400, "file: a JSONL file is required", headers, param="file")
        filename, content = parts["file"]
        cfg = self.gateway.config
        try:
            file_id, created = self.store.add_file(tenant, (filename or "batch.jsonl")[:256], purpose, content,
                                                   now=self._wall(), max_files=cfg.batches_max,
                                                   max_bytes=int(cfg.batches_tenant_max_mib * 2 ** 20),
                                                   total_max_bytes=int(cfg.batches_total_max_mib * 2 ** 20))
        except BatchesFull as exc:
            return _error(*full_status(exc, headers))
        return HttpResponse(200, _file_json(file_id, created, filename or "batch.jsonl", purpose, len(content)),
                            headers=headers)

    def list_files(self, req: HttpRequest) -> HttpResponse:
        entered = self._admit(req)
        if isinstance(entered, HttpResponse):
            return entered
        tenant, headers = entered
        data = [_file_json(*f) for f in self.store.files(tenant)]
        return HttpResponse(200, {"object": "list", "data": data, "has_more": False,
                                  "first_id": data[0]["id"] if data else None,
                                  "last_id": data[-1]["id"] if data else None}, headers=headers)

    def _output(self, file_id: str, tenant: str) -> tuple[StoredBatch, str] | None:
        """The batch and the part (output or errors) a virtual output file id names, if the tenant's and ended."""
        for suffix in (_OUTPUT, _ERRORS):
            if file_id.startswith("file-") and file_id.endswith(suffix):
                batch = self.store.batch(file_id[5:-len(suffix)], tenant)
                if batch is not None and batch.api == "openai" and batch.ended is not None:
                    return batch, suffix
        return None

    def retrieve_file(self, req: HttpRequest) -> HttpResponse:
        entered = self._admit(req)
        if isinstance(entered, HttpResponse):
            return entered
        tenant, headers = entered
        file_id = req.params["id"]
        found = self.store.file(file_id, tenant) if _ID.fullmatch(file_id) else None
        if found is not None:
            return HttpResponse(200, _file_json(*found), headers=headers)
        output = self._output(file_id, tenant) if _ID.fullmatch(file_id) else None
        if output is None:
            return _error(404, f"no such file: {file_id[:128]!r}", headers)
        batch, suffix = output
        size = sum(len(line) for line in self._lines(batch, suffix))
        return HttpResponse(200, _file_json(file_id, batch.ended or batch.created,
                                            f"batch_{batch.id}{suffix.replace('-', '_')}.jsonl", "batch_output", size),
                            headers=headers)

    def file_content(self, req: HttpRequest) -> HttpResponse:
        entered = self._admit(req)
        if isinstance(entered, HttpResponse):
            return entered
        tenant, headers = entered
        file_id = req.params["id"]
        content = self.store.file_content(file_id, tenant) if _ID.fullmatch(file_id) else None
        if content is not None:
            return HttpResponse(200, raw=content, content_type="application/octet-stream", headers=headers)
        output = self._output(file_id, tenant) if _ID.fullmatch(file_id) else None
        if output is None:
            return _error(404, f"no such file: {file_id[:128]!r}", headers)
        return HttpResponse(200, stream=self._lines(*output), content_type="application/octet-stream",
                            headers=headers)

    def delete_file(self, req: HttpRequest) -> HttpResponse:
        entered = self._admit(req)
        if isinstance(entered, HttpResponse):
            return entered
        tenant, headers = entered
        file_id = req.params["id"]
        if not (_ID.fullmatch(file_id) and self.store.delete_file(file_id, tenant)):
            return _error(404, f"no such file: {file_id[:128]!r} (a batch's output goes with its batch)", headers)
        return HttpResponse(200, {"id": file_id, "object": "file", "deleted": True}, headers=headers)

    def _lines(self, batch: StoredBatch, suffix: str) -> Iterator[bytes]:
        """The output file's lines (succeeded requests) or the error file's (the others), as OpenAI writes them."""
        for seq, (cid, raw) in enumerate(self.store.results(batch.id)):
            result = json.loads(raw)
            kind = result.get("type")
            line: dict[str, Any] = {"id": f"batch_req_{batch.id}_{seq}", "custom_id": cid, "response": None,
                                    "error": None}
            if kind == SUCCEEDED:
                if suffix != _OUTPUT:
                    continue
                body = result.get("message") or {}
                line["response"] = {"status_code": 200, "request_id": f"{batch.id}-{seq}", "body": body}
            else:
                if suffix != _ERRORS:
                    continue
                if kind == ERRORED:
                    error = (result.get("error") or {}).get("error") or {}
                    status = _STATUS.get(str(error.get("type")), 500)
                    line["response"] = {"status_code": status, "request_id": f"{batch.id}-{seq}", "body": {
                        "error": {"message": str(error.get("message", "")), "type": str(error.get("type", "")),
                                  "param": None, "code": None}}}
                else:
                    code = "batch_cancelled" if kind == CANCELED else "batch_expired"
                    line["error"] = {"code": code, "message": f"the batch was {'cancelled' if kind == CANCELED else 'expired'} "
                                                              "before this request was answered"}
            yield json.dumps(line, separators=(",", ":")).encode() + b"\n"

    # -- batches -------------------------------------------------------------------------------------------------
    def create(self, req: HttpRequest) -> HttpResponse:
        from costline.serving.gateway.openai_api import openai_error

        entered = self.gateway._entry(req, openai_error, metadata_tenant=False)
        if isinstance(entered, HttpResponse):
            return entered
        admitted, body = entered
        headers = dict(admitted.headers)
        cfg = self.gateway.config
        tenant = admitted.tenant or cfg.default_tenant
        if body.get("endpoint") != CHAT_ENDPOINT:
            return _error(400, f"endpoint: the gateway batches {CHAT_ENDPOINT} only", headers, param="endpoint")
        if body.get("completion_window") != "24h":
            return _error(400, "completion_window: \"24h\"", headers, param="completion_window")
        metadata = body.get("metadata")
        if metadata is not None and not (isinstance(metadata, Mapping) and len(metadata) <= 16 and all(
                isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512
                for k, v in metadata.items())):
            return _error(400, "metadata: up to 16 string keys (64 characters) and values (512)", headers,
                          param="metadata")
        file_id = body.get("input_file_id")
        content = self.store.file_content(file_id, tenant) if isinstance(file_id, str) and _ID.fullmatch(file_id) \
            else None
        if content is None:
            return _error(404, f"input_file_id: no such file {str(file_id)[:128]!r}", headers, param="input_file_id")
        items = _requests_of(content, cfg.batches_max_requests)
        if isinstance(items, str):
            return _error(400, f"input_file_id: {items}", headers, param="input_file_id")
        task_type = req.header(cfg.task_type_header) or ""
        hashes = ",".join(h.strip() for h in (req.header(cfg.doc_hashes_header) or "").split(",") if h.strip())
        meta = json.dumps({"input_file_id": file_id, "metadata": dict(metadata or {})})
        try:
            made = self.store.create(tenant, items, task_type=task_type, beta=None, now=self._wall(),
                                     max_open=cfg.batches_max_open, max_kept=cfg.batches_max,
                                     max_bytes=int(cfg.batches_tenant_max_mib * 2 ** 20), doc_hashes=hashes or None,
                                     api="openai", meta=meta, prefix="batch_costline_",
                                     total_max_bytes=int(cfg.batches_total_max_mib * 2 ** 20))
        except BatchesFull as exc:
            return _error(*full_status(exc, headers))
        return HttpResponse(200, self._json(made), headers=headers)

    def _found(self, req: HttpRequest) -> tuple[StoredBatch, dict[str, str]] | HttpResponse:
        entered = self._admit(req)
        if isinstance(entered, HttpResponse):
            return entered
        tenant, headers = entered
        batch_id = req.params["id"]
        batch = self.store.batch(batch_id, tenant) if _ID.fullmatch(batch_id) else None
        if batch is None or batch.api != "openai":
            return _error(404, f"no such batch: {batch_id[:128]!r}", headers)
        return batch, headers

    def retrieve(self, req: HttpRequest) -> HttpResponse:
        found = self._found(req)
        if isinstance(found, HttpResponse):
            return found
        batch, headers = found
        return HttpResponse(200, self._json(batch), headers=headers)

    def cancel(self, req: HttpRequest) -> HttpResponse:
        found = self._found(req)
        if isinstance(found, HttpResponse):
            return found
        batch, headers = found
        self.store.cancel(batch.id, self._wall())
        return HttpResponse(200, self._json(self.store.batch(batch.id) or batch), headers=headers)

    def list(self, req: HttpRequest) -> HttpResponse:
        from costline.serving.gateway.batches_api import limit_of
        from costline.serving.gateway.responses_api import query_of

        entered = self._admit(req)
        if isinstance(entered, HttpResponse):
            return entered
        tenant, headers = entered
        query = query_of(req)
        limit = limit_of(query, 100)
        if limit is None:
            return _error(400, "limit: a whole number from 1 to 100", headers, param="limit")
        try:
            page, more = self.store.batches(tenant, limit=limit, after=query.get("after"), api="openai")
        except LookupError as exc:
            return _error(400, f"after: no batch {str(exc)[:128]!r}", headers, param="after")
        data = [self._json(b) for b in page]
        return HttpResponse(200, {"object": "list", "data": data, "has_more": more,
                                  "first_id": data[0]["id"] if data else None,
                                  "last_id": data[-1]["id"] if data else None}, headers=headers)

    def _json(self, batch: StoredBatch) -> dict[str, Any]:
        counts = self.store.counts(batch.id)
        ended = batch.ended is not None
        meta = json.loads(batch.meta or "{}")
        if not ended:
            status = "cancelling" if batch.cancel_at is not None else "in_progress"
        elif batch.cancel_at is not None:
            status = "cancelled"
        elif counts[EXPIRED]:
            status = "expired"
        else:
            status = "completed"
        failed = counts[ERRORED] + counts[CANCELED] + counts[EXPIRED]
        at = int(batch.ended) if ended else None  # type: ignore[arg-type]
        return {"id": batch.id, "object": "batch", "endpoint": CHAT_ENDPOINT, "errors": None,
                "input_file_id": meta.get("input_file_id"), "completion_window": "24h", "status": status,
                "output_file_id": f"file-{batch.id}{_OUTPUT}" if ended and counts[SUCCEEDED] else None,
                "error_file_id": f"file-{batch.id}{_ERRORS}" if ended and failed else None,
                "created_at": int(batch.created), "in_progress_at": int(batch.created),
                "expires_at": int(batch.created + BATCH_EXPIRES_S), "finalizing_at": at,
                "completed_at": at if status == "completed" else None, "failed_at": None,
                "expired_at": at if status == "expired" else None,
                "cancelling_at": int(batch.cancel_at) if batch.cancel_at is not None else None,
                "cancelled_at": at if status == "cancelled" else None,
                "request_counts": {"total": sum(counts.values()), "completed": counts[SUCCEEDED], "failed": failed},
                "metadata": meta.get("metadata") or None}


def _file_json(file_id: str, created: float, filename: str, purpose: str, size: int) -> dict[str, Any]:
    return {"id": file_id, "object": "file", "bytes": size, "created_at": int(created), "filename": filename,
            "purpose": purpose, "status": "processed", "expires_at": None, "status_details": None}


def _requests_of(content: bytes, max_requests: int) -> list[tuple[str, Mapping[str, Any]]] | str:
    """``(custom_id, chat completion body)`` of each line of a batch input file, or what is wrong (naming its line)."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return "the file is not UTF-8 text"
    from costline.serving.gateway._http import HttpRequest
    from costline.serving.gateway.app import MAX_JSON_DEPTH, json_depth

    items: list[tuple[str, Mapping[str, Any]]] = []
    seen: set[str] = set()
    # lines end at "\n" only: U+2028, U+2029 and U+0085 may stand unescaped inside a JSON string
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        if len(items) >= max_requests:
            return f"more than {max_requests} requests ([serving.gateway] batches_max_requests): split it"
        try:  # read as a request body is: a lone surrogate escape made well formed
            doc = HttpRequest("POST", "", {}, line.rstrip("\r").encode()).json()
        except (ValueError, UnicodeDecodeError, RecursionError):
            return f"line {n} is not JSON"
        if not isinstance(doc, Mapping):
            return f"line {n}: a JSON object with custom_id, method, url and body"
        if json_depth(doc, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
            return f"line {n} nests objects and arrays more than {MAX_JSON_DEPTH} levels deep: flatten it"
        cid, body = doc.get("custom_id"), doc.get("body")
        if not isinstance(cid, str) or not 1 <= len(cid) <= 512:
            return f"line {n}: custom_id, a string of 1-512 characters"
        if cid in seen:
            return f"line {n}: custom_id {cid[:64]!r} is used more than once"
        if doc.get("method") != "POST" or doc.get("url") != CHAT_ENDPOINT:
            return f"line {n}: method \"POST\" and url \"{CHAT_ENDPOINT}\" (the batch's endpoint)"
        if not isinstance(body, Mapping):
            return f"line {n}: body, an object (a chat completion request)"
        if body.get("stream"):
            return f"line {n}: body.stream: a batch's requests are not streamed"
        seen.add(cid)
        items.append((cid, body))
    if not items:
        return "the file holds no request"
    return items


def multipart_parts(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]] | str:
    """``{field name: (filename, bytes)}`` of a ``multipart/form-data`` body (python-multipart's parser), or what
    is wrong with it."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        return "the body must be multipart/form-data (a file upload)"
    parts: dict[str, tuple[str | None, bytes]] = {}
    current: dict[str, Any] = {}

    def begin() -> None:
        current.clear()
        current.update(headers={}, field=b"", value=b"", data=bytearray())

    def header_field(data: bytes, start: int, end: int) -> None:
        current["field"] += data[start:end]

    def header_value(data: bytes, start: int, end: int) -> None:
        current["value"] += data[start:end]

    def header_end() -> None:
        current["headers"][current["field"].lower()] = current["value"]
        current["field"], current["value"] = b"", b""

    def data(chunk: bytes, start: int, end: int) -> None:
        current["data"] += chunk[start:end]

    def end() -> None:
        _, disposition = parse_options_header(current["headers"].get(b"content-disposition", b""))
        name = disposition.get(b"name")
        if name is not None and len(parts) < 16:
            filename = disposition.get(b"filename")
            parts[name.decode("utf-8", "replace")] = (
                filename.decode("utf-8", "replace") if filename is not None else None, bytes(current["data"]))

    try:
        parser = MultipartParser(boundary, {"on_part_begin": begin, "on_header_field": header_field,
                                            "on_header_value": header_value, "on_header_end": header_end,
                                            "on_part_data": data, "on_part_end": end})
        parser.write(body)
        parser.finalize()
    except Exception as exc:  # noqa: BLE001 - python-multipart's own errors: a malformed body
        return f"the multipart body is malformed: {type(exc).__name__}"
    return parts


def openai_batch_routes(api: OpenAIBatches, preflight: Any) -> list[Route]:
    return [Route("POST", "/v1/files", api.upload), Route("GET", "/v1/files", api.list_files),
            Route("OPTIONS", "/v1/files", preflight),
            Route("GET", "/v1/files/{id}", api.retrieve_file), Route("DELETE", "/v1/files/{id}", api.delete_file),
            Route("OPTIONS", "/v1/files/{id}", preflight),
            Route("GET", "/v1/files/{id}/content", api.file_content),
            Route("OPTIONS", "/v1/files/{id}/content", preflight),
            Route("POST", "/v1/batches", api.create), Route("GET", "/v1/batches", api.list),
            Route("OPTIONS", "/v1/batches", preflight),
            Route("GET", "/v1/batches/{id}", api.retrieve), Route("OPTIONS", "/v1/batches/{id}", preflight),
            Route("POST", "/v1/batches/{id}/cancel", api.cancel),
            Route("OPTIONS", "/v1/batches/{id}/cancel", preflight)]
