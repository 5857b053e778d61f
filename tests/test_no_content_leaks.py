"""No prompt, answer or secret leaks where content capture is off: span status descriptions and events, INFO logs,
the semantic cache's snapshot files, config errors.

Each case puts a marker in what an outsider sends (a prompt an upstream's 400 quotes, a model's answer, a cached
question, a password in a URL) and checks that it appears nowhere it must not. The expected descriptions, modes and
masked texts are written out by hand.
"""

from __future__ import annotations

import json
import logging
import os
import stat

import anthropic
import httpx2 as httpx
import numpy as np
import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from pipeline_rig import ScriptedTier, ToStudent

from costline import contract as c
from costline.collectors import Recorder, instrument_anthropic, instrument_openai
from costline.collectors.instrument import fail_stream_call
from costline.config import CaptureConfig, Config, load_config
from costline.errors import ConfigError

MARK = "ZEBRA-PII-4711"


def _request() -> httpx.Request:
    return httpx.Request("POST", "http://upstream.test/v1/messages")


def _response(status: int) -> httpx.Response:
    return httpx.Response(status, request=_request())


class _WithStatus(Exception):
    """An exception of some other library that carries an HTTP status as the SDKs' do."""

    def __init__(self, message: str, status_code: object) -> None:
        super().__init__(message)
        self.status_code = status_code


# -- 1. span status descriptions: Recorder.call --------------------------------------------------------------------
@pytest.mark.parametrize("make, expected", [
    (lambda: anthropic.BadRequestError(f"Error code: 400 - prompt {MARK!r} is too long",
                                       response=_response(400), body=None), "BadRequestError: 400"),
    (lambda: openai.BadRequestError(f"This model's maximum context length is 8192 tokens: '{MARK}'",
                                    response=_response(400), body=None), "BadRequestError: 400"),
    (lambda: anthropic.InternalServerError(f"upstream echoed {MARK}", response=_response(529), body=None),
     "InternalServerError: 529"),
    (lambda: ValueError(f"could not parse {MARK}"), "ValueError"),
    (lambda: _WithStatus(f"refused {MARK}", 422), "_WithStatus: 422"),
    (lambda: _WithStatus(f"refused {MARK}", 200), "_WithStatus"),  # no error status: the class alone
    (lambda: _WithStatus(f"refused {MARK}", "400"), "_WithStatus"),  # not a number: left out
])
def test_a_failed_call_says_its_class_and_status_not_its_message(plain_spans, make, expected) -> None:
    provider, exporter = plain_spans
    rec = Recorder(provider, env={})
    raised = make()
    with pytest.raises(type(raised)):
        with rec.request(tenant="acme", task_type="t"):
            with rec.call("anthropic", "claude-haiku-4-5", "budget"):
                raise raised
    (call,) = [s for s in exporter.get_finished_spans() if s.kind.name == "CLIENT"]
    assert call.status.status_code is StatusCode.ERROR
    assert call.status.description == expected
    assert call.attributes[c.ERROR_TYPE] == type(raised).__name__
    for span in exporter.get_finished_spans():
        assert MARK not in span.to_json()


def test_with_capture_on_the_message_is_kept_through_the_redact_hook(plain_spans) -> None:
    provider, exporter = plain_spans
    rec = Recorder(provider, capture=CaptureConfig(message_content=True), env={},
                   redact=lambda text: text.replace(MARK, "[redacted]"))
    with pytest.raises(anthropic.BadRequestError):
        with rec.call("anthropic", "claude-haiku-4-5", "budget"):
            raise anthropic.BadRequestError(f"prompt {MARK} is too long", response=_response(400), body=None)
    (call,) = exporter.get_finished_spans()
    assert call.status.description == "BadRequestError: prompt [redacted] is too long"


# -- 1. span status descriptions: instrument_anthropic / instrument_openai -----------------------------------------
def _client(kind: str, status: int, body: object, content_type: str = "application/json"):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()

    def handler(request):
        return httpx.Response(status, content=raw, headers={"content-type": content_type})

    http = httpx.Client(transport=httpx.MockTransport(handler))
    if kind == "anthropic":
        return anthropic.Anthropic(base_url="http://test", api_key="k", max_retries=0, http_client=http)
    return openai.OpenAI(base_url="http://test/v1", api_key="k", max_retries=0, http_client=http)


def _sse(*events: tuple[str | None, object]) -> bytes:
    out = []
    for event, data in events:
        head = f"event: {event}\n" if event else ""
        out.append(f"{head}data: {data if isinstance(data, str) else json.dumps(data)}\n\n")
    return "".join(out).encode()


ASK = [{"role": "user", "content": f"my card is {MARK}"}]
A_400 = {"type": "error", "error": {"type": "invalid_request_error", "message": f"prompt quoted: {MARK}"}}
O_400 = {"error": {"message": f"Input '{MARK}' is invalid", "type": "BadRequestError", "code": 400}}
A_STREAM_ERROR = _sse(
    ("message_start", {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5", "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 5, "output_tokens": 1}}}),
    ("error", {"type": "error", "error": {"type": "overloaded_error", "message": f"while answering {MARK}"}}))
RESPONSE_FAILED = {"id": "resp_1", "object": "response", "created_at": 1, "model": "gpt-4o", "status": "failed",
                   "output": [], "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
                   "error": {"code": "server_error", "message": f"the model choked on {MARK}"}}


def _anthropic_create(client):
    return client.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=ASK)


def _anthropic_stream(client):
    with client.messages.stream(model="claude-haiku-4-5", max_tokens=5, messages=ASK) as s:
        return "".join(s.text_stream)


def _chat(client):
    return client.chat.completions.create(model="student", messages=ASK)


def _responses(client):
    return client.responses.create(model="gpt-4o", input=f"my card is {MARK}")


@pytest.mark.parametrize("kind, status, body, content_type, call, expected", [
    # an upstream's 400 quoting the prompt, as vLLM's and Anthropic's do
    ("anthropic", 400, A_400, "application/json", _anthropic_create, "BadRequestError: 400"),
    ("openai", 400, O_400, "application/json", _chat, "BadRequestError: 400"),
    # a 200 whose body is the error object
    ("anthropic", 200, A_400, "application/json", _anthropic_create, "the model answered 200 with an error"),
    ("openai", 200, {"object": "error", "message": f"bad input {MARK}", "type": "BadRequestError", "code": 400},
     "application/json", _chat, "the chat completion has no choices"),
    # an error event inside a 200 stream (the SDK raises it with the stream's 200 status: no error status to say)
    ("anthropic", 200, A_STREAM_ERROR, "text/event-stream", _anthropic_stream, "APIStatusError"),
    # a Responses API response that failed: its code is an identifier, its message the server's text
    ("openai", 200, RESPONSE_FAILED, "application/json", _responses, "the response failed: server_error"),
])
def test_an_instrumented_call_that_failed_says_no_content(plain_spans, kind, status, body, content_type, call,
                                                          expected) -> None:
    provider, exporter = plain_spans
    rec = Recorder(provider, env={})
    client = _client(kind, status, body, content_type)
    (instrument_anthropic if kind == "anthropic" else instrument_openai)(client, rec)
    try:
        call(client)
    except Exception:  # noqa: BLE001 - whether the SDK raises or returns the error is the SDK's business
        pass
    (span,) = [s for s in exporter.get_finished_spans() if s.kind.name == "CLIENT"]
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == expected
    assert MARK not in span.to_json()


def test_a_stream_failed_by_its_caller_keeps_what_the_server_said_out(plain_spans) -> None:
    provider, exporter = plain_spans
    rec = Recorder(provider, env={})
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "student",
             "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]}
    client = _client("openai", 200, _sse((None, chunk), (None, "[DONE]")), "text/event-stream")
    instrument_openai(client, rec)
    stream = client.chat.completions.create(model="student", messages=ASK, stream=True)
    assert fail_stream_call(stream, "APIError", f"the server sent an error in the stream: {MARK}")
    for _ in stream:
        pass
    (span,) = [s for s in exporter.get_finished_spans() if s.kind.name == "CLIENT"]
    assert span.status.description == "APIError"
    assert MARK not in span.to_json()


# -- 2. the pipeline's log of a structured answer that fails its schema --------------------------------------------
TICKET = {"type": "object", "additionalProperties": False, "required": ["title", "priority"],
          "properties": {"title": {"type": "string"}, "priority": {"enum": ["low", "high"]}}}
COUNTS = {"type": "object", "additionalProperties": {"type": "integer"}}


@pytest.mark.parametrize("schema, answer", [
    (TICKET, {"title": "export", "priority": MARK}),  # "'ZEBRA…' is not one of ['low', 'high']"
    (TICKET, {"title": "export", "priority": "low", MARK: 1}),  # "Additional properties … ('ZEBRA…' was …)"
    (COUNTS, {MARK: "many"}),  # the path of keys: "at ZEBRA…"
])
def test_a_structured_answer_that_fails_its_schema_is_logged_without_the_answer(caplog, schema, answer) -> None:
    from costline.serving.backends import Prompt
    from costline.serving.pipeline import Pipeline
    from costline.serving.registry import ModelRegistry
    from costline.serving.routing.router import Router
    from costline.serving.settings import EscalationConfig
    from costline.serving.structured import JSON_SCHEMA, OutputFormat

    registry = ModelRegistry.from_config(Config())
    up = registry.ladder("student", 1)[1]
    text = json.dumps(answer)
    tiers = {"student": ScriptedTier(registry.tier("student"), text), up: ScriptedTier(registry.tier(up), text)}
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    pipeline = Pipeline(router=Router(ToStudent(), registry), backends=tiers, recorder=Recorder(provider, env={}),
                        confidence=None, escalation=EscalationConfig(max_escalations=1))
    prompt = Prompt(({"role": "user", "content": "File a ticket"},), None, 100,
                    output_format=OutputFormat.of(JSON_SCHEMA, schema))
    with caplog.at_level(logging.DEBUG):
        result = pipeline.answer("File a ticket", task_type="t", tenant="acme", prompt=prompt)
    assert result.success is False
    said = [r.getMessage() for r in caplog.records if "structured answer failed" in r.getMessage()]
    assert said == ["costline: the student tier's structured answer failed: the answer does not follow the schema",
                    f"costline: the {up} tier's structured answer failed: the answer does not follow the schema"]
    assert not [r.getMessage() for r in caplog.records if MARK in r.getMessage()]
    for span in exporter.get_finished_spans():
        assert MARK not in span.to_json()


# -- 3. the semantic cache's snapshot files ------------------------------------------------------------------------
class _NamedEmbedder:
    model_name, dim = "all-MiniLM-L6-v2", 8

    def encode(self, texts):  # pragma: no cover - nothing is embedded here
        raise AssertionError("nothing is embedded in these tests")


def _modes(root) -> dict[str, int]:
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = os.path.join(folder, name)
            out[os.path.relpath(path, root)] = stat.S_IMODE(os.stat(path).st_mode)
    return out


@pytest.mark.parametrize("umask", [0o022, 0o002])
@pytest.mark.parametrize("existing", [None, 0o755])
def test_cache_snapshots_are_their_owners_only(tmp_path, caplog, umask, existing) -> None:
    pytest.importorskip("faiss")
    from costline.serving.cache.semantic import SemanticCache
    from costline.serving.settings import CacheConfig

    cache = SemanticCache(_NamedEmbedder(), CacheConfig(threshold=0.99))
    cache.store_vector(np.ones(8, dtype=np.float32), f"{MARK} has condition X", tenant="acme",
                       query=f"What is the diagnosis of patient {MARK}?")
    root = tmp_path / "snap"
    if existing is not None:
        root.mkdir()
        os.chmod(root, existing)
    old = os.umask(umask)
    try:
        with caplog.at_level(logging.WARNING, logger="costline.serving.cache.store"):
            cache.save(root)
            cache.save(root)  # a second generation replaces the first
    finally:
        os.umask(old)
    modes = _modes(root)
    assert MARK.encode() in (root / "gen-000002" / "entries.json").read_bytes()  # the snapshot does hold the text
    assert {p: m for p, m in modes.items() if os.path.isdir(root / p)} == {"gen-000002": 0o700}
    assert {p: m for p, m in modes.items() if not os.path.isdir(root / p)} == {
        "MANIFEST.json": 0o600, "gen-000002/entries.json": 0o600, "gen-000002/invalidated.json": 0o600,
        "gen-000002/invalidated_tenants.json": 0o600, "gen-000002/p0.faiss": 0o600}
    warned = [r for r in caplog.records if "chmod 700" in r.getMessage()]
    if existing is None:  # made here: the owner's only
        assert stat.S_IMODE(os.stat(root).st_mode) == 0o700 and not warned
    else:  # the operator's folder is left as it is, with one warning
        assert stat.S_IMODE(os.stat(root).st_mode) == existing and len(warned) == 1
    loaded = SemanticCache.load(root, _NamedEmbedder(), CacheConfig(threshold=0.99))
    assert len(loaded) == 1


# -- 4. config errors ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("toml, secret, kept", [
    ('[lake]\nmode = "table"\ns3_endpoint = "minio:MINIOSECRET-5555@objstore:9000"\n', "MINIOSECRET-5555",
     "got '***@objstore:9000'"),
    ('[lake]\nmode = "table"\ncatalog_uri = "costline:PGPASS-4444@db/cat"\n', "PGPASS-4444", "got '***@db/cat'"),
    # a scheme with one slash is no scheme: masked all the same
    ('[lake]\nmode = "table"\ns3_endpoint = "http:/minio:MINIOSECRET-5555@objstore:9000"\n', "MINIOSECRET-5555",
     "got '***@objstore:9000'"),
    ('[lake]\nmode = "table"\nwarehouse = "s3:/AKIA:WAREHOUSESECRET-1@bucket"\n', "WAREHOUSESECRET-1",
     "got '***@bucket'"),
    ('[lake]\nmode = "table"\ncatalog_uri = "db/cat?password=PGPASS-4444"\n', "PGPASS-4444",
     "got 'db/cat?password=***'"),
    ('[collector]\nmetrics_otlp_endpoint = "otel:OTLPSECRET-3333@collector:4318/v1/metrics"\n', "OTLPSECRET-3333",
     "got '***@collector:4318/v1/metrics'"),
    ('[collector]\nmetrics_otlp_endpoint = "ftp://otel:OTLPSECRET-3333@collector/"\n', "OTLPSECRET-3333",
     "got 'ftp://***@collector/'"),
    # a secret of the wrong type: the type error quotes it masked
    ("[collector]\nbearer_token = 98765432109876543\n", "98765432109876543", "got '****6543' (masked)"),
    ("[lake]\ns3_secret_access_key = 1234567\n", "1234567", "got '****' (masked)"),
])
def test_a_refused_url_or_secret_is_quoted_masked(tmp_path, toml, secret, kept) -> None:
    path = tmp_path / "costline.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert secret not in str(err.value)
    assert kept in str(err.value)
