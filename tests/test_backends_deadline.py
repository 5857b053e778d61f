"""``[serving.backends] timeout_s`` bounds a model call in all, not each read: a server that trickles its answer (a
byte now and then, each under the SDK's per-read timeout) no longer holds a worker for as long as it likes. The
attempt fails as the SDK's ``APITimeoutError`` and the request escalates (``on_error``); a streamed call is held to
``stream_timeout_s``. Real ``anthropic`` / ``openai`` SDK clients against a local server."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anthropic
import openai
import pytest
from scripted_http import ScriptedHttp, send_json as send
from opentelemetry.sdk.trace import TracerProvider

from costline.collectors import Recorder
from costline.config import Config, load_config
from costline.errors import ConfigError
from costline.sdk import anthropic_client, deadline_http_client, openai_client
from costline.serving.backends import Prompt, build_backends
from costline.serving.errors import BackendError
from costline.serving.pipeline import Pipeline
from costline.serving.registry import ModelRegistry
from costline.serving.settings import BackendsConfig, RouteRulesConfig

Act = Callable[[BaseHTTPRequestHandler], None]


class Server(ScriptedHttp):
    def __init__(self, chat: Act, messages: Act | None = None) -> None:
        super().__init__(lambda h, path, _body: (chat if "chat/completions" in path else messages)(h))


@pytest.fixture
def server():
    made: list[Server] = []

    def make(chat: Act, messages: Act | None = None) -> Server:
        made.append(Server(chat, messages))
        return made[-1]

    yield make
    for s in made:
        s.close()


CHAT = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "costline-student-lora",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "positive"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}
MESSAGE = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6",
           "content": [{"type": "text", "text": "mid answer"}], "stop_reason": "end_turn", "stop_sequence": None,
           "usage": {"input_tokens": 10, "output_tokens": 3}}


def trickle(body: dict[str, Any], every: float = 0.3, tail: int = 12) -> Act:
    """A 200 whose JSON body's last ``tail`` bytes come one every ``every`` seconds (each read well within the
    timeout; the whole ``every * tail`` seconds)."""
    def act(h: BaseHTTPRequestHandler) -> None:
        raw = json.dumps(body).encode()
        h.send_response(200)
        h.send_header("content-type", "application/json")
        h.send_header("content-length", str(len(raw)))
        h.end_headers()
        h.wfile.write(raw[:-tail])
        h.wfile.flush()
        for i in range(tail):
            time.sleep(every)
            try:
                h.wfile.write(raw[len(raw) - tail + i:len(raw) - tail + i + 1])
                h.wfile.flush()
            except OSError:
                return
    return act


def slow_sse(events: list[Any], every: float = 0.3) -> Act:
    """A 200 event stream with one event every ``every`` seconds."""
    def act(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("content-type", "text/event-stream")
        h.end_headers()
        try:
            for data in events:
                h.wfile.write(f"data: {json.dumps(data)}\n\n".encode())
                h.wfile.flush()
                time.sleep(every)
            h.wfile.write(b"data: [DONE]\n\n")
            h.wfile.flush()
        except OSError:
            return
    return act


def chunks(n: int) -> list[dict[str, Any]]:
    out = [{"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": None}]} for i in range(n)]
    out.append({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return out


# --- the SDK clients costline builds ------------------------------------------------------------------------


def test_an_anthropic_client_holds_a_trickling_answer_to_its_timeout_in_all(server) -> None:
    s = server(lambda h: None, trickle(MESSAGE))  # 12 bytes, 0.3 s apart: 3.6 s in all, each read 0.3 s
    client = anthropic_client(base_url=s.url, key_env="NONE", env={}, timeout=1.0, max_retries=0)
    t = time.monotonic()
    with pytest.raises(anthropic.APITimeoutError):
        client.messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert time.monotonic() - t < 2.0  # the deadline (1 s) plus at most the read under way (0.3 s)
    client.close()


def test_an_openai_client_holds_a_trickling_answer_to_its_timeout_in_all(server) -> None:
    s = server(trickle(CHAT))
    client = openai_client(base_url=s.url + "/v1", key_env="NONE", env={}, timeout=1.0, max_retries=0)
    t = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert time.monotonic() - t < 2.0
    client.close()


def test_an_answer_within_the_deadline_is_read_whole_and_the_client_is_shared_across_threads(server) -> None:
    """The deadline is each request's own: a slow request on one thread does not cut a quick one on another."""
    s = server(lambda h: (trickle(CHAT, every=0.3, tail=8) if h.headers.get("x-slow") else
                          trickle(CHAT, every=0.05, tail=6))(h))
    client = openai_client(base_url=s.url + "/v1", key_env="NONE", env={}, timeout=1.0, max_retries=0)
    got: dict[str, Any] = {}

    def ask(name: str, headers: dict[str, str]) -> None:
        try:
            got[name] = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}],
                                                       extra_headers=headers).choices[0].message.content
        except Exception as exc:  # noqa: BLE001 - the test looks at which
            got[name] = type(exc).__name__

    threads = [threading.Thread(target=ask, args=("slow", {"x-slow": "1"})),
               threading.Thread(target=ask, args=("quick", {}))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert got == {"slow": "APITimeoutError", "quick": "positive"}
    client.close()


def test_a_stream_is_held_to_the_stream_timeout_not_the_calls(server) -> None:
    """12 events 0.3 s apart (3.6 s): past a 2 s stream deadline it fails; with none it is read whole, though it
    takes longer than the call's 1 s timeout (each read is within it)."""
    s = server(slow_sse(chunks(12)))
    bounded = openai_client(base_url=s.url + "/v1", key_env="NONE", env={}, timeout=1.0, max_retries=0,
                            stream_timeout=2.0)
    t = time.monotonic()
    got: list[str] = []
    with pytest.raises(Exception) as err:
        for c in bounded.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}],
                                                 stream=True):
            got.extend(ch.delta.content or "" for ch in c.choices)
    assert "Timeout" in type(err.value).__name__ and 0 < len(got) < 12
    assert time.monotonic() - t < 3.0
    unbounded = openai_client(base_url=s.url + "/v1", key_env="NONE", env={}, timeout=1.0, max_retries=0)
    text = "".join(ch.delta.content or "" for c in unbounded.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True) for ch in c.choices)
    assert text == "".join(f"w{i} " for i in range(12))
    bounded.close()
    unbounded.close()


def test_a_client_given_its_own_http_client_or_no_timeout_is_left_as_it_is(server) -> None:
    import httpx2

    own = httpx2.Client()
    assert openai_client(base_url="http://127.0.0.1:1/v1", key_env="N", env={}, timeout=1.0,
                         http_client=own)._client is own
    own.close()


# --- the backends and the pipeline ---------------------------------------------------------------------------


def backends(s: Server, **settings: Any) -> dict[str, Any]:
    cfg = BackendsConfig(anthropic_base_url=s.url, student_base_url=s.url + "/v1", max_retries=0, **settings)
    config = Config()
    registry = ModelRegistry.from_config(config.replace(serving=dataclasses.replace(config.serving, backends=cfg)))
    return build_backends(registry, cfg, Recorder(TracerProvider()), env={})


@pytest.mark.parametrize("tier", ["student", "mid"])
def test_a_trickling_tier_fails_as_a_timeout(server, tier) -> None:
    s = server(trickle(CHAT), trickle(MESSAGE))
    b = backends(s, timeout_s=1.0)
    t = time.monotonic()
    with pytest.raises(BackendError) as err:
        b[tier].complete(Prompt.of("hi"))
    assert err.value.error_type == "APITimeoutError" and time.monotonic() - t < 2.0
    for x in b.values():
        x.close()


def test_a_stream_past_its_stream_timeout_fails_as_a_timeout(server) -> None:
    s = server(slow_sse(chunks(12)))
    b = backends(s, timeout_s=1.0, stream_timeout_s=1.5)
    pieces = b["student"].stream(Prompt.of("hi"))
    got = []
    with pytest.raises(BackendError) as err:
        for piece in pieces:
            got.append(piece)
    assert err.value.error_type == "APITimeoutError" and 0 < len(got) < 12
    for x in b.values():
        x.close()


def test_a_trickling_student_escalates_within_the_timeout(server) -> None:
    """The reviewer's case: timeout_s = 2 and a student trickling a byte every 1.5 s held the request 30 s and never
    escalated. Now the student's attempt ends about a second past its deadline and mid answers."""
    s = server(trickle(CHAT, every=0.5, tail=20), lambda h: send(h, MESSAGE))
    cfg = Config()
    serving = dataclasses.replace(
        cfg.serving,
        router=dataclasses.replace(cfg.serving.router, rules=RouteRulesConfig(student_task_types=("classify",))),
        backends=BackendsConfig(anthropic_base_url=s.url, student_base_url=s.url + "/v1", max_retries=0,
                                timeout_s=1.0))
    p = Pipeline.from_config(cfg.replace(serving=serving), recorder=Recorder(TracerProvider()), env={})
    t = time.monotonic()
    r = p.answer("Is this review positive? 'great product'", task_type="classify", tenant="acme")
    took = time.monotonic() - t
    assert [(a.tier, a.problem) for a in r.attempts] == [("student", "APITimeoutError"), ("mid", None)]
    assert (r.tier, r.success, r.text) == ("mid", True, "mid answer")
    assert took < 3.0  # was 10 s (20 bytes x 0.5 s)
    p.close()


@pytest.mark.parametrize("toml, key", [
    ("[serving.backends]\ntimeout_s = 0\n", "[serving.backends] timeout_s"),
    ("[serving.backends]\ntimeout_s = -1.0\n", "[serving.backends] timeout_s"),
    ("[serving.backends]\nstream_timeout_s = -1.0\n", "[serving.backends] stream_timeout_s"),
])
def test_timeouts_that_bound_nothing_are_refused(tmp_path, toml, key) -> None:
    f = tmp_path / "costline.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_config(f, env={})
    assert BackendsConfig().stream_timeout_s == 600.0



def test_the_message_batches_api_is_not_held_to_the_calls_deadline() -> None:
    """A batch's results are read as the gateway settles each, for as long as that takes: not a model call. Here
    they come in 6 pieces 0.3 s apart (1.8 s), past the client's 1 s deadline, and are read whole."""
    results = "\n".join(json.dumps({"custom_id": f"r-{i}", "result": {"type": "succeeded", "message": MESSAGE}})
                        for i in range(4)) + "\n"

    class Batches(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.close_connection = True
            if not self.path.endswith("/results"):
                raw = json.dumps({"id": "msgbatch_1", "type": "message_batch", "processing_status": "ended",
                                  "request_counts": {"processing": 0, "succeeded": 4, "errored": 0, "canceled": 0,
                                                     "expired": 0},
                                  "created_at": "2026-11-01T00:00:00Z", "expires_at": "2026-11-02T00:00:00Z",
                                  "ended_at": "2026-11-01T01:00:00Z", "archived_at": None, "cancel_initiated_at": None,
                                  "results_url": f"{url}/v1/messages/batches/msgbatch_1/results"}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.send_header("connection", "close")  # said, so the client never reuses the closed connection
                self.end_headers()
                self.wfile.write(raw)
                return
            raw = results.encode()
            step = len(raw) // 6 + 1
            self.send_response(200)
            self.send_header("content-type", "application/binary")
            self.send_header("content-length", str(len(raw)))
            self.send_header("connection", "close")
            self.end_headers()
            for i in range(0, len(raw), step):
                self.wfile.write(raw[i:i + step])
                self.wfile.flush()
                time.sleep(0.3)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Batches)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_port}"
    client = anthropic_client(base_url=url, key_env="NONE", env={}, timeout=1.0, max_retries=0)
    try:
        t = time.monotonic()
        got = [item.custom_id for item in client.messages.batches.results("msgbatch_1")]
        assert got == ["r-0", "r-1", "r-2", "r-3"] and time.monotonic() - t > 1.5
    finally:
        client.close()
        httpd.shutdown()
        httpd.server_close()


# --- the deadline is the call's in all: its retries, and the read under way, stay within it ------------------


class Counted(ScriptedHttp):
    """A model server whose every POST is answered by ``act`` and counted; a stall ends when the test does."""

    def __init__(self, act: Act) -> None:
        self.posts = 0
        self.done = threading.Event()

        def answer(h: BaseHTTPRequestHandler, _path: str, _body: bytes) -> None:
            self.posts += 1
            act(h)

        super().__init__(answer)

    def close(self) -> None:
        self.done.set()
        super().close()


@pytest.fixture
def counted():
    made: list[Counted] = []

    def make(act: Callable[[BaseHTTPRequestHandler, threading.Event], None]) -> Counted:
        holder: list[Counted] = []
        made.append(Counted(lambda h: act(h, holder[0].done)))
        holder.append(made[-1])
        return made[-1]

    yield make
    for s in made:
        s.close()


SDKS = {
    "anthropic": (anthropic, lambda url, **kw: anthropic_client(base_url=url, key_env="NONE", env={}, **kw),
                  lambda c: c.messages.create(model="claude-sonnet-4-6", max_tokens=10,
                                              messages=[{"role": "user", "content": "hi"}]), MESSAGE),
    "openai": (openai, lambda url, **kw: openai_client(base_url=url + "/v1", key_env="NONE", env={}, **kw),
               lambda c: c.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}]), CHAT),
}


@pytest.mark.parametrize("sdk", SDKS)
def test_the_sdks_retries_share_the_calls_deadline(counted, sdk) -> None:
    """A byte every 0.3 s (3.6 s in all) and a 1 s deadline, with the SDK's 2 retries: before, each retry had a
    deadline of its own (3 requests sent, ~4 s); now the first attempt spends the call's second and no retry is sent
    after it."""
    module, build, call, body = SDKS[sdk]
    s = counted(lambda h, _done: trickle(body)(h))
    client = build(s.url, timeout=1.0, max_retries=2)
    t = time.monotonic()
    with pytest.raises(module.APITimeoutError):
        call(client)
    took = time.monotonic() - t
    assert s.posts == 1
    assert took < 2.5  # the deadline, the read under way, one back-off of the SDK's (~0.5 s); was ~4.5 s
    client.close()


def test_a_retry_after_a_failed_attempt_gets_what_is_left_of_the_deadline(counted) -> None:
    """A 500 at once, then an answer that trickles: the retry is held to what the first attempt left of the call's
    deadline, not to a deadline of its own (both attempts are sent: the first failed well within it)."""
    def act(h: BaseHTTPRequestHandler, _done: threading.Event) -> None:
        if h.headers.get("x-stainless-retry-count") == "0":
            raw = json.dumps({"type": "error", "error": {"type": "api_error", "message": "boom"}}).encode()
            h.send_response(500)
            h.send_header("content-type", "application/json")
            h.send_header("content-length", str(len(raw)))
            h.send_header("retry-after-ms", "1500")  # the SDK waits this long before its retry
            h.end_headers()
            h.wfile.write(raw)
            return
        trickle(MESSAGE, every=0.3, tail=12)(h)

    s = counted(act)
    client = anthropic_client(base_url=s.url, key_env="NONE", env={}, timeout=2.0, max_retries=1)
    t = time.monotonic()
    with pytest.raises(anthropic.APITimeoutError):
        client.messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    took = time.monotonic() - t
    assert s.posts == 2
    assert took < 2.9  # the call's 2 s (was 1.5 s + a 2 s deadline of the retry's own: 3.5 s and more)
    client.close()


def stall_after(first: bytes, then: bytes, ctype: str, wait: float = 0.6) -> Callable[..., None]:
    """A 200 whose head and ``first`` come at once, ``then`` after ``wait`` s, then nothing until the test ends."""
    def act(h: BaseHTTPRequestHandler, done: threading.Event) -> None:
        h.send_response(200)
        h.send_header("content-type", ctype)
        h.end_headers()
        try:
            h.wfile.write(first)
            h.wfile.flush()
            time.sleep(wait)
            h.wfile.write(then)
            h.wfile.flush()
        except OSError:
            return
        done.wait(10)
    return act


@pytest.mark.parametrize("stream", [False, True])
def test_a_read_under_way_at_the_deadline_ends_at_it(counted, stream) -> None:
    """Each read waits at most the time left: with a 6 s read timeout and a 1 s deadline, a server that sends a piece
    at 0.6 s and then nothing held the call for 6.6 s before (the read under way ran its own timeout); now ~1 s."""
    if stream:
        events = [f"data: {json.dumps(c)}\n\n".encode() for c in chunks(2)]
        act = stall_after(events[0], events[1], "text/event-stream")
    else:
        raw = json.dumps(CHAT).encode()
        act = stall_after(raw[:10], raw[10:20], "application/json")
    s = counted(act)
    client = openai.OpenAI(base_url=s.url + "/v1", api_key="k", max_retries=0, timeout=6.0,
                           http_client=deadline_http_client(openai, 1.0, 1.0, timeout=6.0))
    t = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        if stream:
            for _ in client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}],
                                                    stream=True):
                pass
        else:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert time.monotonic() - t < 3.0  # was 6.6 s
    client.close()


def test_a_head_that_does_not_come_by_the_deadline_ends_the_call_at_it(counted) -> None:
    """No head for 6 s and a 1 s deadline (the read timeout 6 s): the wait for the head is capped too."""
    def late(h: BaseHTTPRequestHandler, done: threading.Event) -> None:
        if not done.wait(6):
            send(h, CHAT)

    s = counted(late)
    client = openai.OpenAI(base_url=s.url + "/v1", api_key="k", max_retries=2, timeout=6.0,
                           http_client=deadline_http_client(openai, 1.0, None, timeout=6.0))
    t = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert s.posts == 1 and time.monotonic() - t < 3.0  # was 6 s, then a retry of its own
    client.close()


# --- a timed-out stream's call span names the error as the attempt does --------------------------------------


@pytest.mark.parametrize("tier", ["student", "mid"])
@pytest.mark.parametrize("stream_timeout_s", [1.0, 0.0])  # the stream's deadline; none (a read times out)
def test_a_timed_out_streams_call_span_says_what_the_attempt_says(server, monkeypatch, tier,
                                                                  stream_timeout_s) -> None:
    """An SDK that hands a stream's transport errors to its reader untouched (older ``anthropic`` and ``openai``: the
    installed ones wrap them, emulated here) showed the call span ``ReadTimeout`` where the attempt (and a call read
    whole) says ``APITimeoutError``: the clients costline builds raise the SDK's error from the body themselves."""
    import anthropic._streaming
    import openai._streaming

    monkeypatch.setattr(anthropic._streaming, "iter_response_bytes", lambda response, _client: response.iter_bytes())
    monkeypatch.setattr(openai._streaming.Stream, "_iter_events",
                        lambda self: self._decoder.iter_bytes(self.response.iter_bytes()))
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from costline import contract as c

    anthropic_events = [
        {"type": "message_start", "message": {**MESSAGE, "content": [], "stop_reason": None,
                                              "usage": {"input_tokens": 10, "output_tokens": 0}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        *({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": f"w{i} "}}
          for i in range(12))]
    # 0.3 s apart: past a 1 s stream deadline; with none, a gap of 1.5 s is past the 1 s read timeout
    every = 0.3 if stream_timeout_s else 1.5
    s = server(slow_sse(chunks(12), every), slow_sse(anthropic_events, every))
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    cfg = BackendsConfig(anthropic_base_url=s.url, student_base_url=s.url + "/v1", max_retries=0, timeout_s=1.0,
                         stream_timeout_s=stream_timeout_s)
    config = Config()
    registry = ModelRegistry.from_config(config.replace(serving=dataclasses.replace(config.serving, backends=cfg)))
    b = build_backends(registry, cfg, Recorder(provider), env={})
    with pytest.raises(BackendError) as err:
        for _ in b[tier].stream(Prompt.of("hi")):
            pass
    (span,) = [sp for sp in exporter.get_finished_spans() if sp.attributes.get(c.ERROR_TYPE)]
    assert err.value.error_type == "APITimeoutError"
    assert span.attributes[c.ERROR_TYPE] == "APITimeoutError"  # was ReadTimeout
    for x in b.values():
        x.close()
