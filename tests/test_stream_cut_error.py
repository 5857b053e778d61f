"""A streamed call the server cuts off before the model's final event is a failed call.

The real ``anthropic`` / ``openai`` SDKs read the local stand-in through a proxy that forwards the stand-in's
server-sent events byte for byte and ends the response cleanly (connection closed, no error on the wire) before
a chosen event, as a proxy or load balancer that gives up on a stream does. The SDKs end such a stream as if it
were complete; costline's call span must say it failed (``error.type``, status ERROR, as the OTel GenAI
conventions have a failed operation), serving's tier must fail, and the lake must not count it a success. A
stream the *app* closes or drops early stays what it was: flagged usage-incomplete, not an error.
"""

from __future__ import annotations

import asyncio
import gc
import http.client
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anthropic
import httpx2 as httpx
import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from costline import contract as c
from costline.collectors import Recorder, instrument_anthropic, instrument_openai
from costline.config import Config, LakeConfig
from costline.serving.settings import StandInConfig
from costline.sim.standin import StandInServer

Q = [{"role": "user", "content": "How do I reset my password for the billing portal?"}]
HAIKU = "claude-haiku-4-5"
STUDENT = "costline-student"
INCOMPLETE = "IncompleteStreamError"

Cut = Callable[[str | None, Any], bool]


def _parse(block: bytes) -> tuple[str | None, Any]:
    event, data = None, None
    for line in block.decode().splitlines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
    if data is not None and data != "[DONE]":
        data = json.loads(data)
    return event, data


def before_event(name: str) -> Cut:
    """Cut just before the first event of this name."""
    return lambda event, data: event == name


def before_finish(event: str | None, data: Any) -> bool:
    """Cut just before the first OpenAI chunk that carries a finish_reason."""
    return isinstance(data, dict) and any(ch.get("finish_reason") for ch in data.get("choices") or [])


class CuttingProxy:
    """Forwards each POST to the stand-in; an event stream is passed on byte for byte until ``cut`` says stop,
    then the response ends cleanly (HTTP/1.0, no length: the body ends when the connection closes)."""

    def __init__(self, upstream: str) -> None:
        self.cut: Cut | None = None
        self.sent: list[bytes] = []  # the bytes of each event stream as the client got them
        up = urlsplit(upstream)
        host, port = up.hostname, up.port
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "content-length", "connection", "accept-encoding")}
                conn = http.client.HTTPConnection(host, port, timeout=30)
                conn.request("POST", self.path, body=body, headers=headers)
                resp = conn.getresponse()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"):
                        self.send_header(k, v)
                self.send_header("connection", "close")
                self.end_headers()
                sent = bytearray()
                outer.sent.append(sent)
                if "text/event-stream" not in (resp.getheader("content-type") or ""):
                    data = resp.read()
                    sent.extend(data)
                    self.wfile.write(data)
                else:
                    buf = b""
                    while True:
                        piece = resp.read1(65536)
                        if not piece:
                            break
                        buf += piece
                        while b"\n\n" in buf:
                            block, buf = buf.split(b"\n\n", 1)
                            event, data = _parse(block)
                            if outer.cut is not None and outer.cut(event, data):
                                conn.close()
                                self.wfile.flush()
                                return  # the server closes the connection: a clean end of the body
                            sent.extend(block + b"\n\n")
                            self.wfile.write(block + b"\n\n")
                            self.wfile.flush()
                conn.close()

            def handle(self) -> None:
                try:
                    super().handle()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the app closed its stream early: nothing more to forward

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def events_sent(body: bytes) -> list[tuple[str | None, Any]]:
    return [_parse(b) for b in body.split(b"\n\n") if b.strip()]


# -- fixtures --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def standin() -> Iterator[StandInServer]:
    server = StandInServer(StandInConfig(latency_scale=0.0), port=0)
    server.start()
    yield server
    server.shutdown()


@pytest.fixture
def proxy(standin: StandInServer) -> Iterator[CuttingProxy]:
    p = CuttingProxy(standin.url)
    yield p
    p.close()



def calls(exporter: InMemorySpanExporter) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if s.kind.name == "CLIENT"]


def anthropic_client(proxy: CuttingProxy, rec: Recorder, *, is_async: bool = False) -> Any:
    if is_async:
        client: Any = anthropic.AsyncAnthropic(base_url=proxy.url, api_key="x", max_retries=0,
                                               http_client=httpx.AsyncClient())
    else:
        client = anthropic.Anthropic(base_url=proxy.url, api_key="x", max_retries=0, http_client=httpx.Client())
    instrument_anthropic(client, rec, tier="budget")
    return client


def openai_client(proxy: CuttingProxy, rec: Recorder, *, is_async: bool = False) -> Any:
    if is_async:
        client: Any = openai.AsyncOpenAI(base_url=proxy.url + "/v1", api_key="x", max_retries=0,
                                         http_client=httpx.AsyncClient())
    else:
        client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="x", max_retries=0, http_client=httpx.Client())
    instrument_openai(client, rec, tier="student")
    return client


def assert_cut(span: Any) -> None:
    assert span.attributes[c.ERROR_TYPE] == INCOMPLETE
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[c.COSTLINE_USAGE_INCOMPLETE] is True


def assert_not_failed(span: Any) -> None:
    assert c.ERROR_TYPE not in span.attributes
    assert span.status.status_code is not StatusCode.ERROR


# -- anthropic -------------------------------------------------------------------------------------------
ANTHROPIC_CUTS = {
    "after text, before message_delta": before_event("message_delta"),
    "after message_start, before any text": before_event("content_block_delta"),
    "nothing after the headers": before_event("message_start"),
}


@pytest.mark.parametrize("cut", ANTHROPIC_CUTS.values(), ids=ANTHROPIC_CUTS)
def test_an_anthropic_stream_cut_before_its_final_event_is_a_failed_call(proxy, spans, cut) -> None:
    provider, exporter = spans
    client = anthropic_client(proxy, Recorder(provider, env={}))
    proxy.cut = cut
    events = list(client.messages.create(model=HAIKU, max_tokens=200, messages=Q, stream=True))  # no error raised
    assert "message_delta" not in [e.type for e in events]
    (call,) = calls(exporter)
    assert_cut(call)
    sent = events_sent(proxy.sent[0])
    if sent:  # message_start's usage, as it came, is kept (a lower bound) — its output at least one token a text
        # delta sent (Anthropic bills what it generated before the cut; message_start says 1)
        (start,) = [d for e, d in sent if e == "message_start"]
        deltas = sum(1 for e, d in sent if e == "content_block_delta" and d["delta"]["type"] == "text_delta")
        assert call.attributes[c.GEN_AI_USAGE_OUTPUT_TOKENS] == max(start["message"]["usage"]["output_tokens"], deltas)
        assert call.attributes[c.GEN_AI_RESPONSE_ID] == start["message"]["id"]


def test_an_anthropic_stream_read_by_next_until_it_stops_is_a_failed_call(proxy, spans) -> None:
    provider, exporter = spans
    client = anthropic_client(proxy, Recorder(provider, env={}))
    proxy.cut = before_event("message_delta")
    stream = client.messages.create(model=HAIKU, max_tokens=200, messages=Q, stream=True)
    with pytest.raises(StopIteration):
        while True:
            next(stream)
    (call,) = calls(exporter)
    assert_cut(call)


def test_the_anthropic_stream_helper_cut_off_is_a_failed_call(proxy, spans) -> None:
    provider, exporter = spans
    client = anthropic_client(proxy, Recorder(provider, env={}))
    proxy.cut = before_event("message_delta")
    with client.messages.stream(model=HAIKU, max_tokens=200, messages=Q) as stream:
        text = "".join(stream.text_stream)
    assert text  # the app got the text that came
    (call,) = calls(exporter)
    assert_cut(call)


def test_an_anthropic_stream_cut_only_before_message_stop_is_not_a_failure(proxy, spans) -> None:
    """message_delta carried the stop reason and the final usage: the answer is whole (serving keeps it too)."""
    provider, exporter = spans
    client = anthropic_client(proxy, Recorder(provider, env={}))
    proxy.cut = before_event("message_stop")
    list(client.messages.create(model=HAIKU, max_tokens=200, messages=Q, stream=True))
    (call,) = calls(exporter)
    assert_not_failed(call)
    assert c.COSTLINE_USAGE_INCOMPLETE not in call.attributes


def test_async_anthropic_streams_cut_off_are_failed_calls(proxy, spans) -> None:
    provider, exporter = spans
    client = anthropic_client(proxy, Recorder(provider, env={}), is_async=True)
    proxy.cut = before_event("message_delta")

    async def go() -> None:
        async for _ in await client.messages.create(model=HAIKU, max_tokens=200, messages=Q, stream=True):
            pass
        stream = await client.messages.create(model=HAIKU, max_tokens=200, messages=Q, stream=True)
        with pytest.raises(StopAsyncIteration):
            while True:
                await stream.__anext__()
        async with client.messages.stream(model=HAIKU, max_tokens=200, messages=Q) as helper:
            async for _ in helper.text_stream:
                pass
        await client.close()

    asyncio.run(go())
    got = calls(exporter)
    assert len(got) == 3
    for call in got:
        assert_cut(call)


def test_an_anthropic_stream_the_app_closes_or_drops_early_stays_no_error(proxy, spans) -> None:
    """The app stopped reading: its choice, not a failed call (flagged usage-incomplete, as documented)."""
    provider, exporter = spans
    client = anthropic_client(proxy, Recorder(provider, env={}))
    proxy.cut = before_event("message_delta")  # the server would cut it too, but the app stops first
    stream = client.messages.create(model=HAIKU, max_tokens=200, messages=Q, stream=True)
    assert next(stream).type == "message_start"
    stream.close()
    for _ in client.messages.create(model=HAIKU, max_tokens=200, messages=Q, stream=True):
        break  # stops reading and drops it
    gc.collect()
    with client.messages.stream(model=HAIKU, max_tokens=200, messages=Q) as helper:
        next(iter(helper))
    got = calls(exporter)
    assert len(got) == 3
    for call in got:
        assert_not_failed(call)
        assert call.attributes[c.COSTLINE_USAGE_INCOMPLETE] is True


# -- openai ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("include_usage", [True, False])
def test_an_openai_stream_cut_before_its_finish_reason_is_a_failed_call(proxy, spans, include_usage) -> None:
    provider, exporter = spans
    client = openai_client(proxy, Recorder(provider, env={}))
    proxy.cut = before_finish
    extra = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = list(client.chat.completions.create(model=STUDENT, messages=Q, stream=True, **extra))
    assert chunks and all(ch.choices[0].finish_reason is None for ch in chunks if ch.choices)
    (call,) = calls(exporter)
    assert_cut(call)


def test_an_openai_stream_cut_after_its_finish_reason_is_not_a_failure(proxy, spans) -> None:
    """Every choice finished; only the usage chunk and [DONE] are missing: a whole answer, usage unknown."""
    provider, exporter = spans
    client = openai_client(proxy, Recorder(provider, env={}))
    proxy.cut = lambda event, data: isinstance(data, dict) and not data.get("choices")  # before the usage chunk
    list(client.chat.completions.create(model=STUDENT, messages=Q, stream=True,
                                        stream_options={"include_usage": True}))
    (call,) = calls(exporter)
    assert_not_failed(call)
    assert call.attributes[c.COSTLINE_USAGE_INCOMPLETE] is True


def test_async_openai_streams_cut_off_are_failed_calls_and_closed_ones_are_not(proxy, spans) -> None:
    provider, exporter = spans
    client = openai_client(proxy, Recorder(provider, env={}), is_async=True)
    proxy.cut = before_finish

    async def go() -> None:
        async for _ in await client.chat.completions.create(model=STUDENT, messages=Q, stream=True):
            pass
        stream = await client.chat.completions.create(model=STUDENT, messages=Q, stream=True)
        with pytest.raises(StopAsyncIteration):
            while True:
                await stream.__anext__()
        stream = await client.chat.completions.create(model=STUDENT, messages=Q, stream=True)
        await stream.__anext__()
        await stream.close()  # the app's choice
        await client.close()

    asyncio.run(go())
    cut1, cut2, closed = calls(exporter)
    assert_cut(cut1)
    assert_cut(cut2)
    assert_not_failed(closed)
    assert closed.attributes[c.COSTLINE_USAGE_INCOMPLETE] is True


def test_an_openai_stream_read_by_next_is_a_failed_call_and_one_left_early_is_not(proxy, spans) -> None:
    provider, exporter = spans
    client = openai_client(proxy, Recorder(provider, env={}))
    proxy.cut = before_finish
    stream = client.chat.completions.create(model=STUDENT, messages=Q, stream=True)
    with pytest.raises(StopIteration):
        while True:
            next(stream)
    with client.chat.completions.create(model=STUDENT, messages=Q, stream=True) as stream:
        next(stream)  # the app leaves the block early
    cut, closed = calls(exporter)
    assert_cut(cut)
    assert_not_failed(closed)


# -- serving: the tier fails, and so does its call span -----------------------------------------------------
@pytest.fixture
def backends(proxy: CuttingProxy, spans: Any) -> Iterator[dict[str, Any]]:
    import dataclasses

    from costline.serving.backends import build_backends
    from costline.serving.registry import ModelRegistry
    from costline.serving.settings import BackendsConfig

    provider, _ = spans
    config = Config()
    settings = BackendsConfig(anthropic_base_url=proxy.url, student_base_url=proxy.url + "/v1",
                              max_retries=0, timeout_s=10.0)
    registry = ModelRegistry.from_config(config.replace(serving=dataclasses.replace(config.serving,
                                                                                    backends=settings)))
    made = build_backends(registry, settings, Recorder(provider, env={}), tiers=["budget", "student"], env={})
    yield made
    for b in made.values():
        b.close()


@pytest.mark.parametrize("tier, cut", [("budget", before_event("message_delta")), ("student", before_finish)])
def test_a_serving_tier_whose_stream_is_cut_fails_and_its_call_span_says_so(backends, spans, proxy, tier,
                                                                             cut) -> None:
    from costline.serving.backends import INCOMPLETE_STREAM, Prompt
    from costline.serving.errors import BackendError

    _, exporter = spans
    proxy.cut = cut
    pieces = backends[tier].stream(Prompt.of("How do I reset my password?"))
    with pytest.raises(BackendError) as err:
        while True:
            next(pieces)
    assert err.value.error_type == INCOMPLETE_STREAM == INCOMPLETE
    (call,) = calls(exporter)
    assert_cut(call)
    assert call.attributes[c.COSTLINE_TIER] == tier


@pytest.mark.parametrize("tier", ["budget", "student"])
def test_a_serving_stream_that_is_whole_is_no_failure(backends, spans, proxy, tier) -> None:
    from costline.serving.backends import Prompt

    _, exporter = spans
    pieces = backends[tier].stream(Prompt.of("How do I reset my password?"))
    try:
        while True:
            next(pieces)
    except StopIteration as done:
        assert done.value.stop_reason
    (call,) = calls(exporter)
    assert_not_failed(call)


# -- the lake: a cut-off call is no successful request ---------------------------------------------------
def test_the_lake_counts_a_cut_off_call_as_no_success(proxy, spans, tmp_path: Path) -> None:
    from costline.lake import Lake, open_lake
    from costline.otlp import encode_sdk_spans_by_trace
    from costline.processors.buffer import PartitionBuffer
    from costline.processors.decode import decode_message, flatten_message
    from costline.processors.records import MemoPricingTable

    provider, exporter = spans
    client = anthropic_client(proxy, Recorder(provider, env={}))
    list(client.messages.create(model=HAIKU, max_tokens=200, messages=Q, stream=True))  # whole
    proxy.cut = before_event("message_delta")
    list(client.messages.create(model=HAIKU, max_tokens=200, messages=Q, stream=True))  # cut
    whole, cut = calls(exporter)

    config = Config(lake=LakeConfig(path=tmp_path / "lake"))
    lake = Lake(config.lake.path).init()
    pricing = MemoPricingTable(config.pricing)
    buf = PartitionBuffer(0)
    messages = encode_sdk_spans_by_trace(exporter.get_finished_spans())
    for offset, (_trace, value) in enumerate(messages):
        out = flatten_message(decode_message(value), pricing, 0, offset)
        buf.add(offset, out.rows, out.spans, now=0.0)
    assert buf.first_offset is not None and buf.last_offset is not None
    lake.commit_batch("otlp_spans", 0, buf.first_offset, buf.last_offset, buf.tables())
    con = open_lake(config)
    got = dict(con.execute("SELECT request_id, success FROM requests").fetchall())
    assert got == {format(whole.context.span_id, "016x"): True, format(cut.context.span_id, "016x"): False}
    (row,) = con.execute("SELECT error_type FROM calls WHERE span_id = ?",
                         [format(cut.context.span_id, "016x")]).fetchall()
    assert row == (INCOMPLETE,)
