"""The Anthropic Message Batches API on the gateway (``client.messages.batches`` of the ``anthropic`` SDK).

``POST /v1/messages/batches`` (create), ``GET /v1/messages/batches`` (list, newest first: ``limit`` 1-1000,
``before_id``, ``after_id``), ``GET /v1/messages/batches/{id}`` (retrieve), ``GET .../{id}/results`` (JSONL, once
ended), ``POST .../{id}/cancel`` and ``DELETE /v1/messages/batches/{id}`` (an ended batch). A tenant sees only its
own batches. How the requests are answered — cache, routing, upstream batches at the batch price — is
:mod:`costline.serving.gateway.batches`.

A batch is checked as the API checks it: ``requests`` a list of 1 to ``[serving.gateway] batches_max_requests``
objects, each with a ``custom_id`` (1-64 of ``[A-Za-z0-9_-]``, unique in the batch) and ``params``, an object; a
request whose params the Messages API would refuse is answered as an ``errored`` result (``invalid_request_error``),
as the API answers it, and costs nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from costline.serving.gateway._http import HttpRequest, HttpResponse, Route
from costline.serving.gateway.batches import BATCH_EXPIRES_S, BatchesFull, BatchStore, BatchStoreFull, StoredBatch

if TYPE_CHECKING:  # pragma: no cover
    from costline.serving.gateway.app import Gateway

__all__ = ["MessageBatches", "batch_routes", "full_status", "limit_of"]


def full_status(exc: BatchesFull, headers: Mapping[str, str]) -> tuple[int, str, dict[str, str]]:
    """``(status, message, headers)`` of a refused create or upload: a tenant at its own bound is a 429 (its to
    fix), the store full for every tenant a 529 with ``retry-after`` (the gateway's to fix; the SDKs retry it)."""
    if isinstance(exc, BatchStoreFull):
        return 529, str(exc), {**headers, "retry-after": "60"}
    return 429, str(exc), dict(headers)

_CUSTOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_BATCH_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat().replace("+00:00", "Z")


class MessageBatches:
    """The routes' handlers over ``gateway``'s :class:`BatchStore` (``wall``: the clock of their timestamps)."""

    def __init__(self, gateway: "Gateway", store: BatchStore, *, wall: Any) -> None:
        self.gateway = gateway
        self.store = store
        self._wall = wall

    # -- helpers ---------------------------------------------------------------------------------------------
    def _error(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> HttpResponse:
        from costline.serving.gateway.app import _error

        return _error(status, message, headers)

    def _admit(self, req: HttpRequest) -> tuple[str, dict[str, str]] | HttpResponse:
        admitted = self.gateway.guard.admit(req)
        if hasattr(admitted, "status"):  # Refused
            return self._error(admitted.status, admitted.message, admitted.headers)  # type: ignore[union-attr]
        return admitted.tenant or self.gateway.config.default_tenant, dict(admitted.headers)  # type: ignore[union-attr]

    def _found(self, req: HttpRequest) -> tuple[StoredBatch, dict[str, str]] | HttpResponse:
        entered = self._admit(req)
        if isinstance(entered, HttpResponse):
            return entered
        tenant, headers = entered
        batch_id = req.params["id"]
        batch = self.store.batch(batch_id, tenant) if _BATCH_ID.fullmatch(batch_id) else None
        if batch is None or batch.api != "anthropic":
            return self._error(404, f"message batch {batch_id[:128]!r} not found", headers)
        return batch, headers

    def _json(self, batch: StoredBatch, req: HttpRequest) -> dict[str, Any]:
        ended = batch.ended is not None
        status = "ended" if ended else ("canceling" if batch.cancel_at is not None else "in_progress")
        results_url = None
        if ended:
            host = req.header("host") or f"127.0.0.1:{self.gateway.port}"
            # behind a proxy that ends TLS the client's own scheme is the proxy's (it says so): the SDK fetches
            # this URL with the API key, which must not go out in the clear
            forwarded = (req.header("x-forwarded-proto") or "").split(",")[0].strip().lower()
            scheme = forwarded if forwarded in ("http", "https") else (
                "https" if self.gateway.config.tls_cert_file else "http")
            results_url = f"{scheme}://{host}/v1/messages/batches/{batch.id}/results"
        return {"id": batch.id, "type": "message_batch", "processing_status": status,
                "request_counts": self.store.counts(batch.id), "ended_at": _iso(batch.ended),
                "created_at": _iso(batch.created), "expires_at": _iso(batch.created + BATCH_EXPIRES_S),
                "archived_at": None, "cancel_initiated_at": _iso(batch.cancel_at), "results_url": results_url}

    # -- routes -----------------------------------------------------------------------------------------------
    def create(self, req: HttpRequest) -> HttpResponse:
        from costline.serving.gateway.app import _error

        entered = self.gateway._entry(req, _error, metadata_tenant=False)
        if isinstance(entered, HttpResponse):
            return entered
        admitted, body = entered
        headers = dict(admitted.headers)
        cfg = self.gateway.config
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            return self._error(400, "requests: at least one request is required", headers)
        if len(requests) > cfg.batches_max_requests:
            return self._error(400, f"requests: at most {cfg.batches_max_requests} in one batch "
                                    "([serving.gateway] batches_max_requests): split it", headers)
        seen: set[str] = set()
        items: list[tuple[str, Mapping[str, Any]]] = []
        for i, r in enumerate(requests):
            if not isinstance(r, Mapping):
                return self._error(400, f"requests[{i}]: an object with custom_id and params", headers)
            cid, params = r.get("custom_id"), r.get("params")
            if not isinstance(cid, str) or not _CUSTOM_ID.fullmatch(cid):
                return self._error(400, f"requests[{i}].custom_id: 1-64 letters, digits, - or _", headers)
            if cid in seen:
                return self._error(400, f"requests[{i}].custom_id: {cid!r} is used more than once", headers)
            if not isinstance(params, Mapping):
                return self._error(400, f"requests[{i}].params: an object (a Messages API request)", headers)
            if params.get("stream"):
                return self._error(400, f"requests[{i}].params.stream: a batch's requests are not streamed", headers)
            seen.add(cid)
            items.append((cid, params))
        tenant = admitted.tenant or cfg.default_tenant
        task_type = req.header(cfg.task_type_header) or ""  # none: each request's metadata, else the default
        hashes = ",".join(h.strip() for h in (req.header(cfg.doc_hashes_header) or "").split(",") if h.strip())
        # the features the requests use (the SDK's beta client adds the batch API's own, which is not one of them)
        betas = [b.strip() for b in (req.header("anthropic-beta") or "").split(",")
                 if b.strip() and not b.strip().startswith("message-batches-")]
        try:
            made = self.store.create(tenant, items, task_type=task_type, beta=",".join(betas) or None,
                                     now=self._wall(), max_open=cfg.batches_max_open, max_kept=cfg.batches_max,
                                     max_bytes=int(cfg.batches_tenant_max_mib * 2 ** 20), doc_hashes=hashes or None,
                                     total_max_bytes=int(cfg.batches_total_max_mib * 2 ** 20))
        except BatchesFull as exc:
            return self._error(*full_status(exc, headers))
        return HttpResponse(200, self._json(made, req), headers=headers)

    def list(self, req: HttpRequest) -> HttpResponse:
        entered = self._admit(req)
        if isinstance(entered, HttpResponse):
            return entered
        tenant, headers = entered
        from costline.serving.gateway.responses_api import query_of

        query = query_of(req)
        limit = limit_of(query, 1000)
        if limit is None:
            return self._error(400, "limit: a whole number from 1 to 1000", headers)
        before, after = query.get("before_id"), query.get("after_id")
        if before is not None and after is not None:
            return self._error(400, "before_id and after_id: one or the other", headers)
        try:
            page, more = self.store.batches(tenant, limit=limit, before=before, after=after)
        except LookupError as exc:
            return self._error(400, f"no batch {str(exc)[:128]!r} to page from", headers)
        data = [self._json(b, req) for b in page]
        return HttpResponse(200, {"data": data, "has_more": more, "first_id": data[0]["id"] if data else None,
                                  "last_id": data[-1]["id"] if data else None}, headers=headers)

    def retrieve(self, req: HttpRequest) -> HttpResponse:
        found = self._found(req)
        if isinstance(found, HttpResponse):
            return found
        batch, headers = found
        return HttpResponse(200, self._json(batch, req), headers=headers)

    def results(self, req: HttpRequest) -> HttpResponse:
        import json

        found = self._found(req)
        if isinstance(found, HttpResponse):
            return found
        batch, headers = found
        if batch.ended is None:
            return self._error(400, f"message batch {batch.id!r} is still in progress: poll it until it has ended",
                               headers)
        def lines() -> Iterator[bytes]:  # a page of rows at a time: a big batch's results are never all in memory
            for cid, result in self.store.results(batch.id):
                yield b'{"custom_id":' + json.dumps(cid).encode() + b',"result":' + result.encode() + b"}\n"

        return HttpResponse(200, stream=lines(), content_type="application/x-jsonl", headers=headers)

    def cancel(self, req: HttpRequest) -> HttpResponse:
        found = self._found(req)
        if isinstance(found, HttpResponse):
            return found
        batch, headers = found
        self.store.cancel(batch.id, self._wall())
        current = self.store.batch(batch.id) or batch
        return HttpResponse(200, self._json(current, req), headers=headers)

    def delete(self, req: HttpRequest) -> HttpResponse:
        found = self._found(req)
        if isinstance(found, HttpResponse):
            return found
        batch, headers = found
        if not self.store.delete(batch.id):
            return self._error(400, f"message batch {batch.id!r} is still in progress: cancel it, and delete it "
                                    "once it has ended", headers)
        return HttpResponse(200, {"id": batch.id, "type": "message_batch_deleted"}, headers=headers)


def limit_of(query: Mapping[str, str], most: int) -> int | None:
    """A list request's ``limit`` (20 when not given), or None when it is not a whole number from 1 to ``most``."""
    raw = query.get("limit", "20")
    limit = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= len(str(most)) else 0
    return limit if 1 <= limit <= most else None


def batch_routes(api: MessageBatches, preflight: Any) -> list[Route]:
    return [Route("POST", "/v1/messages/batches", api.create), Route("GET", "/v1/messages/batches", api.list),
            Route("OPTIONS", "/v1/messages/batches", preflight),
            Route("GET", "/v1/messages/batches/{id}", api.retrieve),
            Route("DELETE", "/v1/messages/batches/{id}", api.delete),
            Route("OPTIONS", "/v1/messages/batches/{id}", preflight),
            Route("GET", "/v1/messages/batches/{id}/results", api.results),
            Route("OPTIONS", "/v1/messages/batches/{id}/results", preflight),
            Route("POST", "/v1/messages/batches/{id}/cancel", api.cancel),
            Route("OPTIONS", "/v1/messages/batches/{id}/cancel", preflight)]
