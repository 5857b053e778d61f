"""Property-based fuzzing of the gateway's request parsing: any method, headers and body get an
answer in Anthropic's error format or a message, never a 5xx (except 529 when busy), never a crash."""

from __future__ import annotations

import dataclasses
import http.client
import json

import pytest
from fuzzing import FUZZ
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider

from costline.collectors import Recorder
from costline.config import Config
from costline.serving.gateway.auth import KeyStore
from costline.serving.gateway.app import Gateway
from costline.serving.pipeline import Pipeline
from costline.serving.settings import BackendsConfig, GatewayConfig, StandInConfig
from costline.sim.standin import StandInServer


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    standin = StandInServer(StandInConfig(latency_scale=0.0), port=0)
    standin.start()
    cfg = Config()
    serving = dataclasses.replace(cfg.serving, backends=BackendsConfig(
        anthropic_base_url=standin.url, student_base_url=standin.openai_url, max_retries=0))
    pipeline = Pipeline.from_config(cfg.replace(serving=serving), recorder=Recorder(TracerProvider()), env={})
    keys = tmp_path_factory.mktemp("keys") / "keys.json"
    _, key = KeyStore(keys).add("acme")
    gw = Gateway(pipeline, GatewayConfig(keys_file=keys, rate_limit_per_minute=0, max_body_bytes=64 * 1024),
                 port=0)
    gw.start()
    yield gw, key
    gw.shutdown()
    pipeline.close()
    standin.shutdown()


content = st.one_of(st.text(max_size=40), st.lists(st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image", 5]), "text": st.one_of(st.text(max_size=20), st.integers())}),
    max_size=2), st.integers(), st.none())
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", 3]),
                                           "content": content}), max_size=3)
json_any = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                                  st.text(max_size=10)),
                        lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                        max_leaves=10)
bodies = st.one_of(
    st.fixed_dictionaries({"model": st.text(max_size=10), "max_tokens": st.one_of(st.integers(-2, 5000), st.text(max_size=3),
                                                                                   st.booleans(), st.none()),
                           "messages": st.one_of(messages, json_any)},
                          optional={"stream": st.one_of(st.booleans(), json_any), "system": json_any,
                                    "metadata": st.one_of(st.fixed_dictionaries({"tenant": json_any}), json_any)}
                          ).map(lambda d: json.dumps(d).encode()),
    json_any.map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=200),
)
header_values = st.one_of(st.sampled_from(["acme", "globex", "", " acme", "application/json", "text/plain",
                                           "https://evil.example", "Bearer x"]),
                          st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20))
header_names = st.sampled_from(["x-costline-tenant", "content-type", "origin", "x-api-key", "authorization",
                                "x-costline-task-type", "x-costline-doc-hashes", "anthropic-version"])


@FUZZ
@given(method=st.sampled_from(["POST", "POST", "POST", "GET", "OPTIONS", "PUT", "DELETE"]),
       path=st.sampled_from(["/v1/messages", "/v1/models", "/v1/messages?beta=true", "/", "/v1/../etc"]),
       headers=st.lists(st.tuples(header_names, header_values), max_size=5),
       with_key=st.booleans(), body=bodies)
def test_gateway_parses_anything_without_a_server_error(gateway, method, path, headers, with_key, body) -> None:
    gw, key = gateway
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=20)
    try:
        conn.putrequest(method, path)
        if with_key:
            conn.putheader("x-api-key", key)
            conn.putheader("content-type", "application/json")
        for k, v in headers:
            conn.putheader(k, v)
        conn.putheader("content-length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        answer = resp.read()
    finally:
        conn.close()
    assert resp.status < 500 or resp.status in (503, 529), (resp.status, answer[:300])  # busy: back-pressure
    if resp.status >= 400 and resp.status != 431:
        assert json.loads(answer)["type"] == "error"
