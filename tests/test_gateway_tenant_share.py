"""One tenant cannot take every slot of the gateway: ``[serving.gateway] max_in_flight_per_tenant``.

A tenant whose requests are slow (long answers, streams read slowly) used to fill every worker and every waiting
place, and the other tenants' requests were refused 529 until it let go. Now one tenant has at most
``max_in_flight_per_tenant`` requests admitted at once (default: the workers plus half the queue, rounded up); past
it that tenant gets a 429 in Anthropic's format with retry-after, and another tenant is still admitted. Driven
over real HTTP against a real Gateway → Pipeline → the local stand-ins.
"""

from __future__ import annotations

import http.client
import json
import threading
import time

import anthropic
import pytest
from gateways import standin_pipeline

from costline.errors import ConfigError
from costline.serving.gateway.app import Gateway
from costline.serving.gateway.auth import KeyStore
from costline.serving.settings import GatewayConfig


@pytest.fixture
def pipeline(standin):
    p = standin_pipeline(standin)
    yield p
    p.close()


def post(port: int, key: str, question: str, stream: bool = False) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = json.dumps({"model": "claude-haiku-4-5", "max_tokens": 50, "stream": stream,
                       "messages": [{"role": "user", "content": question}]}).encode()
    conn.request("POST", "/v1/messages", body, {"Content-Type": "application/json", "x-api-key": key})
    r = conn.getresponse()
    out = r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    conn.close()
    return out


def wait_for(predicate, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "the gateway never got there"
        time.sleep(0.01)


@pytest.mark.parametrize("settings, share", [
    ({"max_workers": 1, "max_pending": 3}, 3),   # the default: 1 worker + half of 3 waiting places, rounded up
    ({"max_workers": 2, "max_pending": 2, "max_in_flight_per_tenant": 2}, 2),  # set: exactly that many
])
def test_a_tenant_past_its_share_gets_a_429_and_another_tenant_is_still_admitted(pipeline, tmp_path, settings,
                                                                                  share) -> None:
    keys = tmp_path / "keys.json"
    _, key_a = KeyStore(keys).add("acme")
    _, key_b = KeyStore(keys).add("globex")
    release = threading.Event()
    pipeline.validator = lambda query, text: release.wait(30)  # holds each admitted request until released
    with Gateway(pipeline, GatewayConfig(keys_file=keys, rate_limit_per_minute=0, **settings), port=0) as gw:
        held: list[int] = []
        threads = [threading.Thread(target=lambda i=i: held.append(post(gw.port, key_a, f"acme question {i}?")[0]))
                   for i in range(share)]
        for t in threads:
            t.start()
        wait_for(lambda: gw._server.in_flight == share)
        try:
            status, headers, body = post(gw.port, key_a, "one acme question too many?")
            other: list[int] = []
            b = threading.Thread(target=lambda: other.append(post(gw.port, key_b, "a globex question?")[0]))
            b.start()
            wait_for(lambda: gw._server.in_flight == share + 1)  # the other tenant was admitted, not refused
        finally:
            release.set()
            for t in threads:
                t.join(30)
        b.join(30)
        assert status == 429 and headers["retry-after"] == "1"
        error = json.loads(body)["error"]
        assert error["type"] == "rate_limit_error" and "max_in_flight_per_tenant" in error["message"]
        assert held == [200] * share and other == [200]
        # every slot given back: the tenant is admitted again, and no count is left behind
        assert post(gw.port, key_a, "acme again?")[0] == 200
        assert gw._server.tenant_counts == {}


def test_a_streamed_answer_gives_its_tenants_slot_back_when_it_ends(pipeline, tmp_path) -> None:
    keys = tmp_path / "keys.json"
    _, key = KeyStore(keys).add("acme")
    with Gateway(pipeline, GatewayConfig(keys_file=keys, rate_limit_per_minute=0, max_workers=1, max_pending=1,
                                         max_in_flight_per_tenant=1), port=0) as gw:
        client = anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)
        for i in range(3):  # one at a time: each stream's end frees the tenant's only slot for the next
            with client.messages.stream(model="claude-haiku-4-5", max_tokens=50,
                                        messages=[{"role": "user", "content": f"stream {i}?"}]) as s:
                assert s.get_final_message().content
            wait_for(lambda: gw._server.in_flight == 0)
        assert gw._server.tenant_counts == {}


@pytest.mark.parametrize("value", [-1, True, 1.5, "8"])
def test_a_bad_max_in_flight_per_tenant_is_refused_naming_the_key(value) -> None:
    with pytest.raises(ConfigError, match="max_in_flight_per_tenant"):
        GatewayConfig(max_in_flight_per_tenant=value).validate()
