"""A local HTTP/1.1 server whose every POST (and GET) is answered by a function of the test's: model servers that
misbehave as a flaky proxy, a vLLM or a trickling upstream would, read by the real SDK clients."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: ``answer(handler, path, body)`` writes the response to one POST or GET (``body``: the request's bytes; a GET's
#: ``b""``; ``handler.command`` says which).
Answer = Callable[[BaseHTTPRequestHandler, str, bytes], None]


class ScriptedHttp:
    """One thread a connection, each closed after its answer (which says ``Connection: close``); ``url``, ``close()``."""

    def __init__(self, answer: Answer) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def send_response(self, code: int, message: str | None = None) -> None:
                super().send_response(code, message)
                # said in every answer: a client that reused the connection this server closes would fail its next
                # request with "Server disconnected without sending a response", now and then
                self.send_header("Connection", "close")

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                self.close_connection = True
                answer(self, self.path, body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self.close_connection = True
                answer(self, self.path, b"")

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def send_json(h: BaseHTTPRequestHandler, body: Any) -> None:
    """Answer 200 with ``body`` as JSON."""
    raw = json.dumps(body).encode()
    h.send_response(200)
    h.send_header("content-type", "application/json")
    h.send_header("content-length", str(len(raw)))
    h.end_headers()
    h.wfile.write(raw)
