"""A local stand-in for Slack: the Web API subset costline uses, and incoming webhooks.

It is an HTTP server that the real ``slack_sdk`` clients talk to
(``WebClient(base_url=standin.base_url)``, ``WebhookClient(standin.webhook_url)``);
it is not Slack. It keeps what it receives in memory, and can be told to
misbehave so tests and the demo can show that alerts survive an outage:

* ``fail(status=429, retry_after=3)`` / ``fail(status=500)`` — answer the next
  request(s) with an error instead of handling them;
* ``hang(seconds)`` — answer nothing for a while (the client times out);
  ``hang(seconds, after_accept=True)`` — store the message, then hang (Slack got
  it, the client does not know).

Methods: ``auth.test``, ``chat.postMessage`` (``thread_ts``, ``metadata``),
``chat.update``, ``conversations.history`` and ``conversations.replies``
(``oldest``, ``latest``, ``inclusive``, ``include_all_metadata``, ``limit``, and
cursor paging: ``has_more``, ``response_metadata.next_cursor``, ``cursor``). Channel names map to stable ids
(``#alerts`` → ``C…``), as Slack answers with ids. Any path outside ``/api/`` is
an incoming webhook.

``costline alerts slack-standin`` runs one in the foreground.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["SlackStandIn", "Fault"]

log = logging.getLogger(__name__)


@dataclass
class Fault:
    status: int = 500
    retry_after: float | None = None
    hang_s: float = 0.0
    after_accept: bool = False
    #: Only requests to this method (``chat.postMessage``, ``webhook``); None: any.
    method: str | None = None


@dataclass
class _Msg:
    channel: str
    ts: str
    text: str
    blocks: Any = None
    metadata: Any = None
    thread_ts: str | None = None
    edits: int = 0

    def public(self, with_metadata: bool) -> dict[str, Any]:
        d: dict[str, Any] = {"type": "message", "ts": self.ts, "text": self.text, "user": "U0COSTLINE"}
        if self.blocks is not None:
            d["blocks"] = self.blocks
        if self.thread_ts:
            d["thread_ts"] = self.thread_ts
        if with_metadata and self.metadata is not None:
            d["metadata"] = self.metadata
        if self.edits:
            d["edited"] = {"user": "U0COSTLINE", "ts": self.ts}
        return d


@dataclass
class _State:
    messages: list[_Msg] = field(default_factory=list)
    webhook_posts: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    counter: int = 0


def channel_id(name: str) -> str:
    """The stable id the stand-in gives a channel name (ids are passed through)."""
    if name.startswith(("C", "G", "D")) and name[1:].isalnum() and name.isupper():
        return name
    return "C" + hashlib.sha1(name.lstrip("#").encode()).hexdigest()[:10].upper()


class SlackStandIn:
    """Start with :meth:`start` (or ``with SlackStandIn() as slack:``); stop with :meth:`shutdown`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, now: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._state = _State()
        self._now = now
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("slack stand-in: " + fmt, *args)

            def do_GET(self) -> None:  # noqa: N802
                standin._handle(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                standin._handle(self, "POST")

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def base_url(self) -> str:
        """For ``slack_sdk.WebClient(base_url=...)`` / ``[alerts.slack] base_url``."""
        return f"http://{self.address[0]}:{self.address[1]}/api/"

    @property
    def webhook_url(self) -> str:
        """An incoming-webhook URL served by the stand-in."""
        return f"http://{self.address[0]}:{self.address[1]}/services/T0COSTLINE/B0COSTLINE/standin"

    def start(self) -> "SlackStandIn":
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="slack-standin", daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "SlackStandIn":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    # -- knobs ----------------------------------------------------------------------------
    def fail(self, status: int = 500, *, times: int = 1, retry_after: float | None = None,
             method: str | None = None) -> None:
        """Answer the next ``times`` requests (to ``method``) with HTTP ``status``."""
        with self._lock:
            self._state.faults.extend(Fault(status, retry_after, method=method) for _ in range(times))

    def hang(self, seconds: float, *, times: int = 1, after_accept: bool = False, method: str | None = None) -> None:
        """Hold the next ``times`` requests ``seconds`` before answering (after storing, with ``after_accept``)."""
        with self._lock:
            self._state.faults.extend(Fault(200, None, seconds, after_accept, method) for _ in range(times))

    def clear_faults(self) -> None:
        with self._lock:
            self._state.faults.clear()

    # -- what it received -------------------------------------------------------------------
    def messages(self, channel: str | None = None) -> list[dict[str, Any]]:
        """Stored messages (top-level and replies), oldest first, with their metadata."""
        with self._lock:
            cid = channel_id(channel) if channel else None
            return [dict(m.public(True), channel=m.channel) for m in self._state.messages
                    if cid is None or m.channel == cid]

    def webhook_posts(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._state.webhook_posts)

    def requests(self) -> list[tuple[str, dict[str, Any]]]:
        """Every request as (method, params), faults included."""
        with self._lock:
            return list(self._state.requests)

    # -- serving -------------------------------------------------------------------------
    def _take_fault(self, method: str) -> Fault | None:
        with self._lock:
            for i, f in enumerate(self._state.faults):
                if f.method in (None, method):
                    return self._state.faults.pop(i)
        return None

    def _handle(self, req: BaseHTTPRequestHandler, verb: str) -> None:
        url = urllib.parse.urlsplit(req.path)
        params: dict[str, Any] = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length) if length else b""
        ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip()
        if body:
            if ctype == "application/json":
                try:
                    params.update(json.loads(body))
                except ValueError:
                    return self._reply(req, 400, {"ok": False, "error": "invalid_json"})
            else:
                params.update({k: v[-1] for k, v in urllib.parse.parse_qs(body.decode()).items()})
        is_api = url.path.startswith("/api/")
        method = url.path[len("/api/"):] if is_api else "webhook"
        with self._lock:
            self._state.requests.append((method, params))
        fault = self._take_fault(method)
        if fault is not None and not fault.hang_s:
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            if not is_api:
                return self._reply(req, fault.status, "rate_limited" if fault.status == 429 else "server_error",
                                   headers)
            err = "ratelimited" if fault.status == 429 else "internal_error"
            return self._reply(req, fault.status, {"ok": False, "error": err}, headers)
        if fault is not None and not fault.after_accept:
            self._stop.wait(fault.hang_s)
        if not is_api:
            with self._lock:
                self._state.webhook_posts.append(params)
            status, answer = 200, "ok"
        else:
            status, answer = 200, self._api(method, params, req.headers.get("Authorization") or "")
        if fault is not None and fault.after_accept:
            self._stop.wait(fault.hang_s)
        self._reply(req, status, answer)

    def _reply(self, req: BaseHTTPRequestHandler, status: int, answer: Any,
               headers: dict[str, str] | None = None) -> None:
        data = (json.dumps(answer) if not isinstance(answer, str) else answer).encode()
        try:
            req.send_response(status)
            req.send_header("Content-Type", "application/json; charset=utf-8" if not isinstance(answer, str)
                            else "text/plain; charset=utf-8")
            req.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                req.send_header(k, v)
            req.end_headers()
            req.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a hang it timed out on)
            pass

    def _api(self, method: str, p: dict[str, Any], auth: str) -> dict[str, Any]:
        token = auth.removeprefix("Bearer ").strip() or str(p.get("token") or "")
        if not token.startswith("xox"):
            return {"ok": False, "error": "not_authed" if not token else "invalid_auth"}
        with self._lock:
            if method == "auth.test":
                return {"ok": True, "url": "https://costline-standin.slack.com/", "team": "costline stand-in",
                        "user": "costline", "team_id": "T0COSTLINE", "user_id": "U0COSTLINE", "bot_id": "B0COSTLINE"}
            if method == "chat.postMessage":
                if not p.get("channel"):
                    return {"ok": False, "error": "channel_not_found"}
                if not p.get("text") and not p.get("blocks"):
                    return {"ok": False, "error": "no_text"}
                self._state.counter += 1
                ts = f"{int(self._now())}.{self._state.counter:06d}"
                meta = p.get("metadata")
                if isinstance(meta, str):
                    meta = json.loads(meta)
                blocks = p.get("blocks")
                if isinstance(blocks, str):
                    blocks = json.loads(blocks)
                msg = _Msg(channel_id(str(p["channel"])), ts, str(p.get("text") or ""), blocks, meta,
                           str(p["thread_ts"]) if p.get("thread_ts") else None)
                self._state.messages.append(msg)
                return {"ok": True, "channel": msg.channel, "ts": ts, "message": msg.public(False)}
            if method == "chat.update":
                cid = channel_id(str(p.get("channel") or ""))
                for m in self._state.messages:
                    if m.channel == cid and m.ts == str(p.get("ts")):
                        m.text = str(p.get("text") or m.text)
                        blocks = p.get("blocks")
                        m.blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
                        m.edits += 1
                        return {"ok": True, "channel": cid, "ts": m.ts, "text": m.text}
                return {"ok": False, "error": "message_not_found"}
            if method in ("conversations.history", "conversations.replies"):
                return self._conversations(method, p)
        return {"ok": False, "error": "unknown_method"}

    def _conversations(self, method: str, p: dict[str, Any]) -> dict[str, Any]:
        """``conversations.history`` (newest first) / ``.replies`` (the thread, oldest first) as Slack pages them:
        ``oldest``/``latest`` bound the time range (excluded unless ``inclusive``), ``limit`` (default 100, at
        most 999 / 1000) cuts a page, ``has_more`` says more remain and ``response_metadata.next_cursor`` (an
        opaque ``next_ts:`` cursor, as Slack's) fetches them; a cursor that does not decode is ``invalid_cursor``.
        The caller holds the lock."""
        cid = channel_id(str(p.get("channel") or ""))
        try:
            oldest = float(p.get("oldest") or 0)
            latest = float(p["latest"]) if p.get("latest") not in (None, "") else None
            limit = int(p.get("limit") or 100)
        except (TypeError, ValueError):
            return {"ok": False, "error": "invalid_arguments"}
        inclusive = str(p.get("inclusive")).lower() in ("1", "true")
        with_meta = str(p.get("include_all_metadata")).lower() in ("1", "true")
        history = method == "conversations.history"
        limit = min(max(limit, 1), 999 if history else 1000)

        def in_range(ts: float) -> bool:
            above = ts >= oldest if inclusive or not p.get("oldest") else ts > oldest
            below = latest is None or (ts <= latest if inclusive else ts < latest)
            return above and below

        if history:
            found = sorted((m for m in self._state.messages if m.channel == cid and m.thread_ts in (None, m.ts)
                            and in_range(float(m.ts))), key=lambda m: float(m.ts), reverse=True)
        else:
            parent = str(p.get("ts") or "")
            found = sorted((m for m in self._state.messages if m.channel == cid
                            and (m.ts == parent or m.thread_ts == parent) and in_range(float(m.ts))),
                           key=lambda m: float(m.ts))
        cursor = str(p.get("cursor") or "")
        if cursor:
            try:
                at = base64.b64decode(cursor.encode(), validate=True).decode()
                if not at.startswith("next_ts:"):
                    raise ValueError(at)
                start = float(at.removeprefix("next_ts:"))
            except ValueError:
                return {"ok": False, "error": "invalid_cursor"}
            # resume at the message the cursor names: stable while new messages arrive meanwhile
            found = [m for m in found if (float(m.ts) <= start if history else float(m.ts) >= start)]
        page, rest = found[:limit], found[limit:]
        answer: dict[str, Any] = {"ok": True, "channel": cid, "messages": [m.public(with_meta) for m in page],
                                  "has_more": bool(rest)}
        if history:
            answer["pin_count"] = 0
        if rest:
            answer["response_metadata"] = {
                "next_cursor": base64.b64encode(f"next_ts:{rest[0].ts}".encode()).decode()}
        return answer
