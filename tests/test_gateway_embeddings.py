"""The apps' own embedding calls through the gateway (``POST /v1/embeddings``), driven by the real ``openai`` SDK
and LangChain's ``OpenAIEmbeddings``: forwarded untouched to ``[serving.backends] embeddings_base_url`` (here the
stand-in's OpenAI-compatible server), the vectors and usage exactly what that server gives a direct call, each call
an ``embeddings`` span with its tokens and tenant; the server's errors come back as it said them; what the API
would refuse is a 400 before any call; without a server configured, a 404 that says what to set."""

from __future__ import annotations

import openai
import pytest
from gateways import routed_gateway
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costline import contract as c
from costline.collectors import Recorder

TEXTS = ["What is your refund policy?", "Where is my parcel?"]


@pytest.fixture(scope="module")
def setup(standin, tmp_path_factory):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with routed_gateway(standin, tmp_path_factory.mktemp("keys") / "keys.json", recorder=Recorder(provider)) as gw:
        yield gw, exporter


def _client(gw, tenant: str = "emb") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{gw.port}/v1", api_key="unused", max_retries=0,
                         default_headers={"x-costline-tenant": tenant})


@pytest.mark.parametrize("encoding", [None, "float", "base64"])
def test_the_vectors_are_the_servers_own(setup, standin, encoding) -> None:
    """The SDK asks base64 when the app does not say (and decodes it); either way the app gets what a direct call
    to the same server gets."""
    gw, exporter = setup
    kwargs = {"encoding_format": encoding} if encoding else {}
    via = _client(gw, f"emb-{encoding}").embeddings.create(model="text-embedding-3-small", input=TEXTS, **kwargs)
    direct = openai.OpenAI(base_url=standin.openai_url, api_key="unused", max_retries=0).embeddings.create(
        model="text-embedding-3-small", input=TEXTS, **kwargs)
    assert [d.embedding for d in via.data] == [d.embedding for d in direct.data]
    assert via.usage == direct.usage and via.model == "text-embedding-3-small"
    span = next(s for s in reversed(exporter.get_finished_spans())
                if s.attributes.get(c.COSTLINE_TENANT) == f"emb-{encoding}")
    assert span.name == "embeddings text-embedding-3-small"
    assert span.attributes[c.GEN_AI_OPERATION_NAME] == "embeddings"
    assert span.attributes[c.GEN_AI_USAGE_INPUT_TOKENS] == direct.usage.prompt_tokens


def test_langchain_openai_embeddings_through_the_gateway(setup, standin) -> None:
    from langchain_openai import OpenAIEmbeddings

    gw, _ = setup
    kwargs = {"model": "text-embedding-3-small", "api_key": "unused", "max_retries": 0,
              "check_embedding_ctx_length": False}  # (True counts tokens with tiktoken, which downloads its table)
    via = OpenAIEmbeddings(base_url=f"http://127.0.0.1:{gw.port}/v1", **kwargs)
    direct = OpenAIEmbeddings(base_url=standin.openai_url, **kwargs)
    assert via.embed_documents(TEXTS) == direct.embed_documents(TEXTS)
    assert via.embed_query(TEXTS[0]) == direct.embed_query(TEXTS[0])


@pytest.mark.parametrize("body, param", [
    ({"input": "hi"}, "model"),
    ({"model": "m", "input": ""}, "input"),
    ({"model": "m", "input": []}, "input"),
    ({"model": "m", "input": ["ok", 3]}, "input"),
    ({"model": "m", "input": ["x"] * 2049}, "input"),
    ({"model": "m", "input": [[1, -2]]}, "input"),
    ({"model": "m", "input": "hi", "encoding_format": "int8"}, "encoding_format"),
    ({"model": "m", "input": "hi", "dimensions": 0}, "dimensions"),
])
def test_what_the_api_would_refuse_is_a_400_before_any_call(setup, standin, body, param) -> None:
    import httpx

    gw, _ = setup
    calls = len(standin.log.entries())
    got = httpx.post(f"http://127.0.0.1:{gw.port}/v1/embeddings", json=body)
    assert got.status_code == 400 and got.json()["error"]["param"] == param
    assert len(standin.log.entries()) == calls


def test_the_servers_errors_come_back_as_it_said_them(setup, standin) -> None:
    gw, exporter = setup
    standin.inject_errors(429, 1, api="openai")
    with pytest.raises(openai.RateLimitError):
        _client(gw, "emb-429").embeddings.create(model="text-embedding-3-small", input="hi")
    span = next(s for s in reversed(exporter.get_finished_spans()) if s.attributes.get(c.COSTLINE_TENANT) == "emb-429")
    assert span.attributes[c.ERROR_TYPE] == "429"


def test_a_server_that_cannot_be_reached_is_a_502(standin, tmp_path) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with routed_gateway(standin, tmp_path / "keys.json") as gw:
        gw.pipeline.embeddings.close()
        from costline.serving.embeddings import EmbeddingsUpstream
        from costline.serving.settings import BackendsConfig

        gw.pipeline.embeddings = EmbeddingsUpstream(BackendsConfig(
            embeddings_base_url=f"http://127.0.0.1:{port}/v1", max_retries=0, timeout_s=5), gw.pipeline.recorder,
            env={})
        with pytest.raises(openai.APIStatusError) as err:
            _client(gw).embeddings.create(model="text-embedding-3-small", input="hi")
        assert err.value.status_code == 502


def test_without_a_server_configured_the_route_says_what_to_set(setup, monkeypatch) -> None:
    gw, _ = setup
    monkeypatch.setattr(gw.pipeline, "embeddings", None)
    with pytest.raises(openai.NotFoundError) as err:
        _client(gw).embeddings.create(model="text-embedding-3-small", input="hi")
    assert "embeddings_base_url" in err.value.body["message"]


class _Upstream:
    """An embeddings server that answers what a test sets (status, bytes) and keeps the bodies it was sent."""

    def __init__(self) -> None:
        import http.server
        import json
        import threading

        upstream = self
        self.answer: tuple[int, bytes] = (200, b"{}")
        self.bodies: list[dict] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                upstream.bodies.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
                status, payload = upstream.answer
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                """Quiet: the test reads what it needs from ``bodies``."""

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"


@pytest.fixture
def faked(standin, tmp_path):
    from costline.serving.embeddings import EmbeddingsUpstream
    from costline.serving.settings import BackendsConfig

    upstream = _Upstream()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with routed_gateway(standin, tmp_path / "keys.json") as gw:
        gw.pipeline.embeddings.close()
        gw.pipeline.embeddings = EmbeddingsUpstream(BackendsConfig(embeddings_base_url=upstream.url, max_retries=0),
                                                    Recorder(provider), env={})
        yield gw, upstream, exporter
    upstream.server.shutdown()


def test_fields_of_other_servers_go_along(faked) -> None:
    """vLLM's, NIM's or Jina's own fields (sent with the SDK's extra_body) reach the server as the app sent them."""
    gw, upstream, _ = faked
    upstream.answer = (200, b'{"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.6, 0.8]}],'
                            b' "model": "nv-embedqa", "usage": {"prompt_tokens": 1, "total_tokens": 1}}')
    _client(gw).embeddings.create(model="nv-embedqa", input="hi", extra_body={"input_type": "query", "truncate": "END"})
    assert upstream.bodies[-1] == {"model": "nv-embedqa", "input": "hi", "encoding_format": "base64",  # the SDK's
                                   "input_type": "query", "truncate": "END"}


@pytest.mark.parametrize("status, payload", [(200, b"<html>proxy login</html>"), (401, (
    b'{"error": {"message": "Incorrect API key provided: sk-proj-****WXYZ", "type": "invalid_request_error"}}'))])
def test_an_answer_the_app_cannot_use_is_a_502_that_quotes_nothing_of_the_server(faked, status, payload) -> None:
    """Not JSON (a proxy's page), or the server refusing the gateway's own key: a 502 for the operator, never the
    app's AuthenticationError, and the server's message (which may quote the key) neither in the answer nor the
    span."""
    gw, upstream, exporter = faked
    upstream.answer = (status, payload)
    with pytest.raises(openai.APIStatusError) as err:
        _client(gw, "emb-bad").embeddings.create(model="text-embedding-3-small", input="hi")
    assert err.value.status_code == 502 and "sk-proj" not in str(err.value.body)
    span = exporter.get_finished_spans()[-1]
    assert "sk-proj" not in str(span.attributes) and "sk-proj" not in str(span.status.description)
