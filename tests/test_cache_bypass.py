"""Opting out of the semantic cache: the ``Cache-Control`` request header and ``[serving.cache] bypass_sampled``.

Until 2026-12-05 a request could not opt out: three identical requests at ``temperature: 1.0`` were a miss and two
hits with the same text, the third sent with ``Cache-Control: no-cache`` too — a "regenerate" button got the same
answer forever. Now ``no-cache`` is answered by a model and its answer stored (served before the older one to later
askers), ``no-store`` is neither looked up nor stored, and with ``bypass_sampled`` a request that explicitly asks for
sampling is neither either. A bypassed request says so (``x-costline-cache-bypass``; the request span's
``costline.cache.bypass``) and opens no ``costline.cache.lookup`` span: the hit rates, computed from lookup spans
(costline/lake/views/cache_hourly.sql), do not count it as a miss.

Unit tables for the header's parsing and the decision; then the real ``anthropic`` and ``openai`` SDKs against
gateways on the stand-in (one cache, embedder and stand-in for the module).
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import uuid
from typing import Any
from urllib.parse import urlsplit

import anthropic
import openai
import pytest

pytest.importorskip("faiss")

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from costline import contract  # noqa: E402
from costline.collectors import Recorder  # noqa: E402
from costline.config import Config, load_config  # noqa: E402
from costline.errors import ConfigError  # noqa: E402
from costline.serving.cache.semantic import validate_cache_config  # noqa: E402
from costline.serving.gateway.app import (CACHE_BYPASS_HEADER, Gateway, cache_bypass_of,  # noqa: E402
                                          cache_directives, read_messages_request)
from costline.serving.settings import BackendsConfig, CacheConfig, StandInConfig  # noqa: E402

Q = "Write a catchy slogan for a coffee shop."


# -- the header, parsed --------------------------------------------------------------------------------
@pytest.mark.parametrize("lines, directives", [
    (["no-cache"], {"no-cache"}),
    (["No-Cache"], {"no-cache"}),  # case-insensitive
    (["max-age=0, NO-STORE"], {"max-age", "no-store"}),
    ([" no-transform ,, no-cache "], {"no-transform", "no-cache"}),  # blanks and empty members
    (["max-age=0", "no-cache"], {"max-age", "no-cache"}),  # several header lines
    (['private="a, no-store", max-stale'], {"private", "max-stale"}),  # a comma inside a quoted argument
    (['x="a \\" no-cache", no-transform'], {"x", "no-transform"}),  # an escaped quote inside it
    ([], set()), ([""], set()),
])
def test_cache_control_directives(lines: list[str], directives: set[str]) -> None:
    assert cache_directives(lines) == frozenset(directives)


@pytest.mark.parametrize("directives, sampled, bypass_sampled, reason", [
    ({"no-cache"}, False, False, "no-cache"),
    ({"no-store"}, False, False, "no-store"),
    ({"no-cache", "no-store"}, False, False, "no-store"),  # the stricter wins
    ({"max-age", "no-transform", "only-if-cached"}, False, False, ""),  # others are ignored
    (set(), True, False, ""),  # sampling asked, but the key is off
    (set(), True, True, "sampled"),
    ({"no-cache"}, True, True, "sampled"),  # neither looked up nor stored beats stored
    (set(), False, True, ""),
])
def test_what_bypasses_the_cache(directives: set[str], sampled: bool, bypass_sampled: bool, reason: str) -> None:
    assert cache_bypass_of(frozenset(directives), sampled=sampled, bypass_sampled=bypass_sampled) == reason


def test_bypass_sampled_is_a_validated_config_key(tmp_path) -> None:
    path = tmp_path / "costline.toml"
    path.write_text("[serving.cache]\nbypass_sampled = true\n")
    assert load_config(path, env={}).serving.cache.bypass_sampled is True
    assert Config().serving.cache.bypass_sampled is False
    with pytest.raises(ConfigError, match=r"\[serving\.cache\] bypass_sampled"):
        validate_cache_config(CacheConfig(bypass_sampled="yes"))  # type: ignore[arg-type]


# -- through the gateway --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def parts():
    from costline.serving.embedding import Embedder
    from costline.sim.standin import StandInServer

    standin = StandInServer(StandInConfig(latency_scale=0.0), port=0)
    standin.start()
    yield standin, Embedder().load()
    standin.shutdown()


def _serve(parts, cache_config: CacheConfig):
    from costline.serving.cache.semantic import SemanticCache
    from costline.serving.pipeline import Pipeline

    standin, embedder = parts
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    cfg = Config()
    serving = dataclasses.replace(cfg.serving, backends=BackendsConfig(
        anthropic_base_url=standin.url, student_base_url=standin.openai_url, max_retries=0))
    cache = SemanticCache(embedder, cache_config)
    pipeline = Pipeline.from_config(cfg.replace(serving=serving), recorder=Recorder(provider), cache=cache,
                                    validator=None, env={})
    gw = Gateway(pipeline, port=0)
    gw.start()
    return gw, pipeline, cache, exporter


@pytest.fixture(scope="module")
def served(parts):
    gw, pipeline, cache, exporter = _serve(parts, CacheConfig())
    yield gw, cache, exporter
    gw.shutdown()
    pipeline.close()


@pytest.fixture(scope="module")
def served_sampled(parts):
    gw, pipeline, cache, exporter = _serve(parts, CacheConfig(bypass_sampled=True))
    yield gw, cache, exporter
    gw.shutdown()
    pipeline.close()


def _tenant() -> str:
    return "t" + uuid.uuid4().hex[:10]


def _anthropic(gw, tenant: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0,
                               default_headers={"x-costline-tenant": tenant, "x-costline-task-type": "faq"})


def _openai(gw, tenant: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0,
                         default_headers={"x-costline-tenant": tenant, "x-costline-task-type": "faq"})


def _ask(client: anthropic.Anthropic, headers: dict[str, str] | None = None, stream: bool = False,
         **body: Any) -> tuple[dict[str, str], str]:
    kw = dict(model="claude-haiku-4-5", max_tokens=300, messages=[{"role": "user", "content": Q}],
              extra_headers=headers or {}, **body)
    if stream:
        with client.messages.with_streaming_response.create(stream=True, **kw) as raw:
            text = "".join(json.loads(line[6:]).get("delta", {}).get("text", "") for line in raw.iter_lines()
                           if line.startswith("data: "))
            return dict(raw.headers), text
    raw = client.messages.with_raw_response.create(**kw)
    return dict(raw.headers), raw.parse().content[0].text


def _request_spans(exporter: InMemorySpanExporter, request_id: str) -> tuple[Any, list[Any]]:
    spans = exporter.get_finished_spans()
    (request,) = [s for s in spans if s.name == contract.SPAN_REQUEST
                  and s.attributes.get(contract.COSTLINE_REQUEST_ID) == request_id]
    lookups = [s for s in spans if s.name == contract.SPAN_CACHE_LOOKUP and s.parent is not None
               and s.parent.span_id == request.context.span_id]
    return request, lookups


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_no_cache_regenerates_and_later_askers_get_the_regenerated_answer(served, stream) -> None:
    """The issue's regenerate button: a stale answer in the cache is not served to a no-cache request, whose own
    answer is then what the next plain request gets."""
    gw, cache, exporter = served
    tenant = _tenant()
    client = _anthropic(gw, tenant)
    _, _, scope = read_messages_request({"model": "claude-haiku-4-5", "max_tokens": 300, "temperature": 1.0,
                                         "messages": [{"role": "user", "content": Q}]}, None)
    cache.store(Q, "A STALE SLOGAN", tenant=tenant, namespace=gw.pipeline.cache_namespace(scope))
    headers, text = _ask(client, extra_body={"temperature": 1.0})
    assert headers["x-costline-cache-hit"] == "true" and text == "A STALE SLOGAN"  # what it was before
    exporter.clear()
    headers, fresh = _ask(client, {"Cache-Control": "no-cache"}, stream=stream, extra_body={"temperature": 1.0})
    assert headers["x-costline-cache-hit"] == "false" and headers[CACHE_BYPASS_HEADER] == "no-cache"
    assert fresh and fresh != "A STALE SLOGAN"
    request, lookups = _request_spans(exporter, headers["x-costline-request-id"])
    assert lookups == [] and request.attributes["costline.cache.bypass"] == "no-cache"
    headers, later = _ask(client, extra_body={"temperature": 1.0})
    assert headers["x-costline-cache-hit"] == "true" and CACHE_BYPASS_HEADER not in headers
    assert later == fresh


def test_no_store_is_neither_served_nor_stored(served) -> None:
    gw, cache, exporter = served
    client = _anthropic(gw, _tenant())
    before = len(cache)
    exporter.clear()
    headers, _ = _ask(client, {"cache-control": "max-age=0, No-Store"})
    assert headers["x-costline-cache-hit"] == "false" and headers[CACHE_BYPASS_HEADER] == "no-store"
    assert len(cache) == before  # not stored
    request, lookups = _request_spans(exporter, headers["x-costline-request-id"])
    assert lookups == [] and request.attributes["costline.cache.bypass"] == "no-store"
    headers, _ = _ask(client)  # so the next plain request is a miss, and a lookup
    assert headers["x-costline-cache-hit"] == "false" and CACHE_BYPASS_HEADER not in headers
    assert len(_request_spans(exporter, headers["x-costline-request-id"])[1]) == 1


def test_chat_completions_honour_cache_control_too(served) -> None:
    gw, cache, _ = served
    client = _openai(gw, _tenant())

    def ask(**kw: Any) -> dict[str, str]:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o", temperature=1.2, messages=[{"role": "user", "content": "Suggest a name for my cat."}], **kw)
        return dict(raw.headers)

    assert ask()["x-costline-cache-hit"] == "false"
    assert ask()["x-costline-cache-hit"] == "true"
    headers = ask(extra_headers={"Cache-Control": "no-cache"})
    assert headers["x-costline-cache-hit"] == "false" and headers[CACHE_BYPASS_HEADER] == "no-cache"
    before = len(cache)
    headers = ask(extra_headers={"Cache-Control": "no-store"})
    assert headers["x-costline-cache-hit"] == "false" and headers[CACHE_BYPASS_HEADER] == "no-store"
    assert len(cache) == before


def test_a_directive_on_a_second_header_line_counts(served) -> None:
    gw, _, _ = served
    url = urlsplit(gw.url)
    tenant = _tenant()
    body = json.dumps({"model": "claude-haiku-4-5", "max_tokens": 300,
                       "messages": [{"role": "user", "content": Q}]}).encode()

    def post(*cache_control: str) -> dict[str, str]:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        try:
            conn.putrequest("POST", "/v1/messages")
            for name, value in (("content-type", "application/json"), ("content-length", str(len(body))),
                                ("x-costline-tenant", tenant), *(("cache-control", v) for v in cache_control)):
                conn.putheader(name, value)
            conn.endheaders(body)
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200
            return {k.lower(): v for k, v in resp.getheaders()}
        finally:
            conn.close()

    post()
    assert post("max-age=3600")["x-costline-cache-hit"] == "true"  # an unknown-to-us directive is ignored
    headers = post("max-age=0", "NO-CACHE")
    assert headers["x-costline-cache-hit"] == "false" and headers[CACHE_BYPASS_HEADER] == "no-cache"


def test_bypass_sampled_skips_the_cache_for_requests_that_ask_for_sampling(served_sampled) -> None:
    gw, cache, exporter = served_sampled
    tenant = _tenant()
    client = _anthropic(gw, tenant)
    for body in ({"extra_body": {"temperature": 0.7}}, {"extra_body": {"top_k": 40}}):
        before = len(cache)
        exporter.clear()
        for _ in range(2):
            headers, _ = _ask(client, **body)
            assert headers["x-costline-cache-hit"] == "false" and headers[CACHE_BYPASS_HEADER] == "sampled"
        assert len(cache) == before
        request, lookups = _request_spans(exporter, headers["x-costline-request-id"])
        assert lookups == [] and request.attributes["costline.cache.bypass"] == "sampled"
    for body in ({}, {"extra_body": {"temperature": 0}}):  # the default, or greedy: cached as ever
        assert _ask(client, **body)[0]["x-costline-cache-hit"] == "false"
        headers, _ = _ask(client, **body)
        assert headers["x-costline-cache-hit"] == "true" and CACHE_BYPASS_HEADER not in headers
    chat = _openai(gw, tenant)
    for _ in range(2):
        raw = chat.chat.completions.with_raw_response.create(
            model="gpt-4o", top_p=0.9, messages=[{"role": "user", "content": "Suggest a name for my cat."}])
        assert raw.headers["x-costline-cache-hit"] == "false" and raw.headers[CACHE_BYPASS_HEADER] == "sampled"
