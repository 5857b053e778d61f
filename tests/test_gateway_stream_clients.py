"""Clients that misbehave around the gateway's answers (the real AsgiServer, the real ``anthropic`` SDK).

* A caller that gives up while its request waits for a worker (a busy gateway, the caller's own timeout) is gone
  before anything was done for it: its request is dropped then, never sent to a model (paid) nor recorded, and its
  slot is free at once. Before, every such request was still run when a worker got to it — each an upstream call
  for no one, holding the queue (and, with the SDK's retries, coming back two more times).
* A connection closed (keep-alive timeout, ``Connection: close``) with bytes its client takes none of — a large
  answer past the kernel's buffers, never read — is dropped once nothing moves for ``idle_timeout_s``. Before, asyncio
  waited for that client for ever: its connection, its descriptor and the unsent megabytes stayed in the gateway for
  as long as the client kept its socket open, and such a connection is never the idle one ``max_connections``
  closes. A client that keeps reading, however slowly, still gets every byte.
* A client that leaves a live stream midway: the model's stream is closed at once (not read to its end), the request
  is no success, its cut answer is not cached, and its call span keeps the input tokens the model billed.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anthropic
import pytest
from gateways import DictCache
from scripted_http import ScriptedHttp
from test_pipeline_open_world_answers import student_world_config

from costline.collectors import Recorder
from costline.netsec import Limits
from costline.serving.gateway._http import HttpResponse, Route
from costline.serving.gateway.app import Gateway
from costline.serving.gateway.asgi import AsgiServer
from costline.serving.pipeline import Pipeline
from costline.serving.settings import GatewayConfig

BOUND_S = 30.0  # generous: "eventually" on a loaded box; what is waited for is due within about a second


def _eventually(check: Callable[[], bool], what: Callable[[], str]) -> None:
    deadline = time.monotonic() + BOUND_S
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {BOUND_S:g} s: {what()}")
        time.sleep(0.05)


# -- a model server that writes the Messages API's answers, slowly when asked -----------------------------------------
class Model:
    """``/v1/messages``: each request's question recorded (in order) as it arrives; a question listed in ``held``
    waits for ``release`` before it is answered; a streamed answer is ``deltas`` text deltas ``delay_s`` apart, and
    ``written`` counts those the client (the gateway) took before it closed the stream."""

    def __init__(self, *, deltas: int = 3, delay_s: float = 0.0, held: tuple[str, ...] = ()) -> None:
        self.asked: list[str] = []
        self.written = 0
        self.ended_early = threading.Event()
        self.release = threading.Event()
        self.deltas, self.delay_s, self.held = deltas, delay_s, held
        self.http = ScriptedHttp(self._answer)

    def _answer(self, h: Any, path: str, raw: bytes) -> None:
        body = json.loads(raw)
        question = body["messages"][-1]["content"]
        self.asked.append(question)
        if question in self.held:
            self.release.wait(2 * BOUND_S)  # past every wait of the tests: what it holds stays held meanwhile
        usage = {"input_tokens": 100, "output_tokens": self.deltas}
        if not body.get("stream"):
            raw = json.dumps({"id": "msg_1", "type": "message", "role": "assistant", "model": body["model"],
                              "content": [{"type": "text", "text": "word " * self.deltas}], "stop_reason": "end_turn",
                              "stop_sequence": None, "usage": usage}).encode()
            h.send_response(200)
            h.send_header("content-type", "application/json")
            h.send_header("content-length", str(len(raw)))
            h.end_headers()
            h.wfile.write(raw)
            return
        h.send_response(200)
        h.send_header("content-type", "text/event-stream")
        h.end_headers()

        def event(kind: str, data: dict[str, Any]) -> None:
            h.wfile.write(f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode())
            h.wfile.flush()

        try:
            event("message_start", {"message": {
                "id": "msg_1", "type": "message", "role": "assistant", "model": body["model"], "content": [],
                "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 100, "output_tokens": 1}}})
            event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
            for _ in range(self.deltas):
                time.sleep(self.delay_s)
                event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "word "}})
                self.written += 1
            event("content_block_stop", {"index": 0})
            event("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                    "usage": {"output_tokens": self.deltas}})
            event("message_stop", {})
        except (BrokenPipeError, ConnectionResetError):  # the gateway closed its stream
            self.ended_early.set()


@contextmanager
def gateway(model: Model, spans: Any, keys_file: Path, **settings: Any) -> Iterator[Gateway]:
    """A started gateway in front of ``model`` with an exact-text answer cache, recording on ``spans``."""
    provider, _ = spans
    cfg = student_world_config(model.http)  # type: ignore[arg-type]
    # the model's answers may take longer than the tests wait for anything (a held one is held that long)
    backends = dataclasses.replace(cfg.serving.backends, timeout_s=3 * BOUND_S)
    cfg = cfg.replace(serving=dataclasses.replace(cfg.serving, backends=backends))
    # no confidence gate, no validator: a streamed request is answered live
    pipeline = Pipeline.from_config(cfg, recorder=Recorder(provider), cache=DictCache(), env={}, confidence=None)
    gw = Gateway(pipeline, GatewayConfig(keys_file=keys_file, rate_limit_per_minute=0, **settings), port=0)
    gw.start()
    try:
        yield gw
    finally:
        model.release.set()
        gw.shutdown()
        pipeline.close()
        model.http.close()


def sdk(gw: Gateway, timeout: float) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=f"http://127.0.0.1:{gw.port}", api_key="unused", max_retries=0,
                               timeout=timeout)


def ask(client: anthropic.Anthropic, question: str, *, stream: bool) -> str:
    params: dict[str, Any] = {"model": "claude-haiku-4-5", "max_tokens": 100,
                              "messages": [{"role": "user", "content": question}]}
    if stream:
        with client.messages.stream(**params) as s:
            return "".join(s.text_stream)
    return client.messages.create(**params).content[0].text


def requests_recorded(spans: Any) -> list[tuple[Any, Any]]:
    provider, exporter = spans
    provider.force_flush()
    return [(s.attributes.get("costline.success"), s.attributes.get("costline.tier"))
            for s in exporter.get_finished_spans() if s.name == "costline.request"]


# -- a caller that gave up while its request waited for a worker ------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_a_request_whose_caller_gave_up_in_the_queue_is_never_sent_to_a_model(spans, tmp_path, stream) -> None:
    model = Model(held=("first",))
    # one worker, three places in the queue: "first" takes the worker (its model holds it) and three callers queue
    with gateway(model, spans, tmp_path / "keys.json", max_workers=1, max_pending=3, max_in_flight_per_tenant=4) as gw:
        first: list[str] = []
        running = threading.Thread(target=lambda: first.append(ask(sdk(gw, BOUND_S), "first", stream=False)))
        running.start()
        try:
            _eventually(lambda: model.asked == ["first"], lambda: f"the first request at the model ({model.asked})")
            # three callers whose own timeout (1 s) passes while their requests wait for the worker
            for n in range(3):
                with pytest.raises(anthropic.APITimeoutError):
                    ask(sdk(gw, 1.0), f"gave up {n}", stream=stream)
            # gone: their places are free again (before, they held them until a worker ran them: all four taken)
            _eventually(lambda: gw._server.in_flight == 1, lambda: f"the three places freed (in flight: "
                                                                   f"{gw._server.in_flight} of 4)")
            later: list[Any] = []

            def ask_later() -> None:
                try:
                    later.append(ask(sdk(gw, BOUND_S), "later", stream=stream))
                except anthropic.APIStatusError as exc:  # before: 529 overloaded_error, the queue full of no one
                    later.append(exc.status_code)

            waiting = threading.Thread(target=ask_later)
            waiting.start()
            _eventually(lambda: gw._server.in_flight == 2, lambda: f"'later' queued (in flight: "
                                                                   f"{gw._server.in_flight}, answered: {later})")
        finally:
            model.release.set()
            running.join(BOUND_S)
        waiting.join(BOUND_S)
        assert first == ["word " * 3]
        assert later == ["word " * 3]
        # the model was asked for the two callers that waited for their answers, not for the three that left
        assert model.asked == ["first", "later"]
        _eventually(lambda: len(requests_recorded(spans)) == 2, lambda: f"recorded: {requests_recorded(spans)}")
        assert [success for success, _ in requests_recorded(spans)] == [True, True]


# -- a connection closed with bytes its client never takes ------------------------------------------------------------
BIG = b"x" * (16 << 20)  # past the kernel's send and receive buffers (a few MiB on Linux): some stays in the gateway


@pytest.fixture
def server():
    srv = AsgiServer(
        [Route("GET", "/big", lambda req: HttpResponse(raw=BIG, content_type="application/octet-stream"))],
        host="127.0.0.1", port=0, not_found=lambda r: HttpResponse(status=404, body={}),
        on_error=lambda r, e: HttpResponse(status=500, body={}),
        reject=lambda r, p: HttpResponse(status=r.status, body={"e": r.message}),
        busy=lambda p: HttpResponse(status=529, body={}), bad_request=lambda m: b"{}",
        limits=Limits(max_workers=2, max_pending=2, idle_timeout_s=0.5, read_timeout_s=5.0))
    srv.start()
    yield srv
    srv.shutdown()


def _get_big(port: int, headers: str, *, window: int | None = None) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if window is not None:  # before connect: a small window, filled at once
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, window)
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET /big HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
    return s


#: How the server comes to close the connection: the keep-alive timeout after the answer, or the answer's end.
CLOSES = {"keep-alive timeout": "", "connection: close": "Connection: close\r\n"}


@pytest.mark.parametrize("headers", CLOSES.values(), ids=CLOSES.keys())
def test_a_closed_connection_whose_client_reads_nothing_is_dropped(server, headers, caplog) -> None:
    caplog.set_level("INFO", logger="costline.serving.gateway.asgi")
    s = _get_big(server.port, headers, window=4096)
    try:
        _eventually(lambda: server.open_connections == 1, lambda: "the connection accepted")
        # before: open for as long as the client kept its socket, megabytes of the answer held with it
        _eventually(lambda: server.open_connections == 0,
                    lambda: f"the connection dropped (open: {server.open_connections})")
    finally:
        s.close()
    assert any("took none of the last" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("headers", CLOSES.values(), ids=CLOSES.keys())
def test_a_client_that_keeps_reading_slowly_gets_the_whole_answer(server, headers) -> None:
    s = _get_big(server.port, headers)
    s.settimeout(BOUND_S)
    got = bytearray()
    with s:
        # 1 MiB, then a pause shorter than idle_timeout_s (0.5 s), ...: the server closes the connection meanwhile
        while b"\r\n\r\n" not in got or len(got) - got.index(b"\r\n\r\n") - 4 < len(BIG):
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            got += chunk
            time.sleep(0.3)
    head, _, body = bytes(got).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert len(body) == len(BIG)


# -- a client that leaves a live stream midway ------------------------------------------------------------------------
def test_a_client_that_leaves_a_live_stream_midway_closes_the_models_stream(spans, tmp_path) -> None:
    model = Model(deltas=200, delay_s=0.02)  # a 4 s answer
    with gateway(model, spans, tmp_path / "keys.json") as gw:
        read = 0
        with sdk(gw, BOUND_S).messages.stream(model="claude-haiku-4-5", max_tokens=1000,
                                              messages=[{"role": "user", "content": "a long story"}]) as s:
            assert s.response.headers["x-costline-stream-mode"] == "live"
            for _ in s.text_stream:
                read += 1
                if read == 5:
                    break
        # the model's stream is closed within a few deltas of the client leaving, not read to its 200th
        assert model.ended_early.wait(BOUND_S)
        assert 5 <= model.written < 50
        _eventually(lambda: len(requests_recorded(spans)) == 1, lambda: f"recorded: {requests_recorded(spans)}")
        assert [success for success, _ in requests_recorded(spans)] == [False]  # no success: it never ended
        # its call keeps the 100 input tokens the model billed and, of the output it billed, at least a token a text
        # delta the gateway read (message_start's placeholder said 1), flagged as a lower bound
        provider, exporter = spans
        call = next(x for x in exporter.get_finished_spans() if x.name.startswith("chat "))
        assert call.attributes["gen_ai.usage.input_tokens"] == 100
        assert read <= call.attributes["gen_ai.usage.output_tokens"] <= model.written
        assert call.attributes["costline.usage.incomplete"] is True
        # and the cut answer is not served from the cache to the next asker: the model is asked again
        assert ask(sdk(gw, BOUND_S), "a long story", stream=False) == "word " * 200
        assert model.asked == ["a long story", "a long story"]
