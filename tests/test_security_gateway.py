"""The gateway's request entry: API keys decide the tenant, CORS, rate limits, open-bind refusal.

Driven by the real ``anthropic`` SDK (and raw ``http.client`` where a client must misbehave)
against a real Gateway → Pipeline → the local Anthropic/vLLM stand-ins.
"""

from __future__ import annotations

import dataclasses
import http.client
import json

import anthropic
import pytest
from click.testing import CliRunner
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costline import contract as c
from costline.cli import _register_area_commands, cli
from costline.collectors import Recorder
from costline.config import Config
from costline.netsec import InsecureBindError
from costline.serving.gateway.auth import KeyStore
from costline.serving.gateway.app import Gateway
from costline.serving.pipeline import Pipeline
from costline.serving.settings import BackendsConfig, GatewayConfig

QUESTION = "How do I reset my password?"



@pytest.fixture
def exporter():
    return InMemorySpanExporter()


@pytest.fixture
def pipeline(standin, exporter):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    cfg = Config()
    serving = dataclasses.replace(cfg.serving, backends=BackendsConfig(
        anthropic_base_url=standin.url, student_base_url=standin.openai_url, max_retries=0))
    p = Pipeline.from_config(cfg.replace(serving=serving), recorder=Recorder(provider), env={})
    yield p
    p.close()


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def keyfile(tmp_path):
    return tmp_path / "keys.json"


def serve(pipeline, keyfile, clock=None, **settings):
    return Gateway(pipeline, GatewayConfig(keys_file=keyfile, **settings), port=0, now=clock)


def tenants(exporter) -> list[str]:
    return [s.attributes[c.COSTLINE_TENANT] for s in exporter.get_finished_spans() if s.name == c.SPAN_REQUEST]


def raw(gw, headers: list[tuple[str, str | bytes]], body: bytes | None = None, method: str = "POST"):
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    body = json.dumps({"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": QUESTION}]}
                      ).encode() if body is None else body
    conn.putrequest(method, "/v1/messages")
    for k, v in headers:
        conn.putheader(k, v)
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    resp = conn.getresponse()
    out = resp.status, dict(resp.getheaders()), resp.read()
    conn.close()
    return out


def test_with_keys_the_key_decides_the_tenant_and_strangers_are_refused(pipeline, keyfile, exporter) -> None:
    store = KeyStore(keyfile)
    _, acme_key = store.add("acme")
    with serve(pipeline, keyfile) as gw:
        status, headers, body = raw(gw, [("Content-Type", "application/json"), ("x-costline-tenant", "acme")])
        assert status == 401 and json.loads(body)["error"]["type"] == "authentication_error"
        forged = acme_key[:-4] + ("AAAA" if not acme_key.endswith("AAAA") else "BBBB")
        with pytest.raises(anthropic.AuthenticationError):
            anthropic.Anthropic(base_url=gw.url, api_key=forged, max_retries=0).messages.create(
                model="m", max_tokens=50, messages=[{"role": "user", "content": QUESTION}])
        acme = anthropic.Anthropic(base_url=gw.url, api_key=acme_key, max_retries=0)
        acme.messages.create(model="m", max_tokens=50, messages=[{"role": "user", "content": QUESTION}])
        # the key's tenant, never a header or the body
        spoof = anthropic.Anthropic(base_url=gw.url, api_key=acme_key, max_retries=0,
                                    default_headers={"x-costline-tenant": "globex"})
        with pytest.raises(anthropic.PermissionDeniedError):
            spoof.messages.create(model="m", max_tokens=50, messages=[{"role": "user", "content": QUESTION}])
        with pytest.raises(anthropic.PermissionDeniedError):
            acme.messages.create(model="m", max_tokens=50, messages=[{"role": "user", "content": QUESTION}],
                                 extra_body={"metadata": {"tenant": "globex"}})
        # Authorization: Bearer works like x-api-key
        status, _, _ = raw(gw, [("Content-Type", "application/json"), ("Authorization", f"Bearer {acme_key}")])
        assert status == 200
        # two different keys, or a key sent twice, are refused
        status, _, _ = raw(gw, [("Content-Type", "application/json"), ("x-api-key", acme_key),
                                ("x-api-key", "clk_000000000000_" + "A" * 43)])
        assert status == 400
        assert tenants(exporter) == ["acme", "acme"]


def test_a_revoked_key_is_refused_by_the_running_gateway(pipeline, keyfile) -> None:
    store = KeyStore(keyfile)
    key, text = store.add("acme")
    with serve(pipeline, keyfile) as gw:
        app = anthropic.Anthropic(base_url=gw.url, api_key=text, max_retries=0)
        app.messages.create(model="m", max_tokens=50, messages=[{"role": "user", "content": QUESTION}])
        KeyStore(keyfile).revoke(key.id)
        with pytest.raises(anthropic.AuthenticationError):
            app.messages.create(model="m", max_tokens=50, messages=[{"role": "user", "content": QUESTION}])


def test_keys_cli_add_list_revoke(tmp_path) -> None:
    _register_area_commands()
    path = tmp_path / "k.json"
    runner = CliRunner()
    added = runner.invoke(cli, ["keys", "add", "acme", "--name", "acme backend", "--file", str(path)])
    assert added.exit_code == 0, added.output
    secret = added.stdout.strip().splitlines()[0]
    assert secret.startswith("clk_")
    key_id, key_secret = secret.split("_", 2)[1:]  # the secret part may itself hold "_" (base64url)
    assert len(key_secret) == 43
    stored = path.read_text()
    assert secret not in stored and key_secret not in stored  # hashed, never the key
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    listed = runner.invoke(cli, ["keys", "list", "--file", str(path)])
    assert key_id in listed.output and "acme backend" in listed.output and "active" in listed.output
    assert key_secret not in listed.output
    assert KeyStore(path).verify(secret).tenant == "acme"
    revoked = runner.invoke(cli, ["keys", "revoke", key_id, "--file", str(path)])
    assert revoked.exit_code == 0, revoked.output
    assert KeyStore(path).verify(secret) is None
    bad = runner.invoke(cli, ["keys", "add", "<!channel>", "--file", str(path)])
    assert bad.exit_code != 0


def test_trusted_proxy_header_mode_is_strict(pipeline, keyfile, exporter) -> None:
    with serve(pipeline, keyfile, trusted_tenant_header=True) as gw:
        ok = [("Content-Type", "application/json")]
        assert raw(gw, ok + [("x-costline-tenant", "zürich".encode())])[0] == 200
        assert raw(gw, ok + [("x-costline-tenant", "acme"), ("x-costline-tenant", "globex")])[0] == 400
        assert raw(gw, ok + [("x-costline-tenant", b"\xff\xfeacme")])[0] == 400
        # (a trailing space is optional whitespace around the value, RFC 9110 5.5: not the tenant's)
        assert raw(gw, ok + [("x-costline-tenant", "ac<me")])[0] == 400
    assert tenants(exporter) == ["zürich"]


def test_open_mode_ignores_metadata_tenant(pipeline, keyfile, exporter) -> None:
    with serve(pipeline, keyfile) as gw:
        body = json.dumps({"model": "m", "max_tokens": 50, "metadata": {"tenant": "globex"},
                           "messages": [{"role": "user", "content": QUESTION}]}).encode()
        assert raw(gw, [("Content-Type", "application/json"), ("x-costline-tenant", "")], body)[0] == 400
        assert raw(gw, [("Content-Type", "application/json")], body)[0] == 200
    assert tenants(exporter) == ["default"]


def test_browser_requests_are_refused_unless_the_origin_is_allowed(pipeline, keyfile) -> None:
    with serve(pipeline, keyfile) as gw:
        status, _, body = raw(gw, [("Content-Type", "text/plain"), ("Origin", "https://evil.example")])
        assert status == 403 and json.loads(body)["error"]["type"] == "permission_error"
        assert raw(gw, [("Content-Type", "text/plain")])[0] == 415
        assert raw(gw, [("Content-Type", "application/x-www-form-urlencoded")])[0] == 415
        assert raw(gw, [("Content-Type", "application/json"), ("Origin", "https://evil.example")])[0] == 403
    with serve(pipeline, keyfile, allowed_origins=("https://app.example",)) as gw:
        status, headers, _ = raw(gw, [("Content-Type", "application/json"), ("Origin", "https://app.example")])
        assert status == 200 and headers["access-control-allow-origin"] == "https://app.example"
        status, headers, _ = raw(gw, [("Origin", "https://app.example"),
                                      ("Access-Control-Request-Method", "POST")], b"", method="OPTIONS")
        assert status == 204 and "x-api-key" in headers["access-control-allow-headers"]
        assert "cache-control" in headers["access-control-allow-headers"]  # a browser app may opt out of the cache
        assert raw(gw, [("Content-Type", "application/json"), ("Origin", "https://evil.example")])[0] == 403


def test_per_key_rate_limit_answers_429_in_anthropics_format(pipeline, keyfile) -> None:
    store = KeyStore(keyfile)
    _, acme_key = store.add("acme")
    _, globex_key = store.add("globex")
    clock = Clock()
    with serve(pipeline, keyfile, clock, rate_limit_per_minute=60, rate_limit_burst=2) as gw:
        acme = anthropic.Anthropic(base_url=gw.url, api_key=acme_key, max_retries=0)
        ask = dict(model="m", max_tokens=50, messages=[{"role": "user", "content": QUESTION}])
        acme.messages.create(**ask)
        acme.messages.create(**ask)
        with pytest.raises(anthropic.RateLimitError) as err:
            acme.messages.create(**ask)
        assert err.value.body["error"]["type"] == "rate_limit_error"
        assert err.value.response.headers["retry-after"] == "1"  # 1 request a second refills in 1 s
        anthropic.Anthropic(base_url=gw.url, api_key=globex_key, max_retries=0).messages.create(**ask)
        clock.t += 1.0
        acme.messages.create(**ask)


def test_a_non_loopback_bind_without_keys_refuses_to_start(pipeline, keyfile) -> None:
    with pytest.raises(InsecureBindError, match="--insecure"):
        Gateway(pipeline, GatewayConfig(keys_file=keyfile), host="0.0.0.0", port=0)
    Gateway(pipeline, GatewayConfig(keys_file=keyfile, allow_insecure=True), host="0.0.0.0", port=0)
    KeyStore(keyfile).add("acme")
    Gateway(pipeline, GatewayConfig(keys_file=keyfile), host="0.0.0.0", port=0)


# -- limits and protocol ----------------------------------------------------------------------------
def raw_socket(port: int, data: bytes, wait_s: float = 10.0) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as s:
        s.sendall(data)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
    return b"".join(chunks)


@pytest.mark.parametrize("lengths", [["-1"], ["ten"], ["5", "7"], [" +5"]])
def test_bad_content_length_is_400(pipeline, keyfile, lengths) -> None:
    with serve(pipeline, keyfile) as gw:
        head = b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        head += b"".join(f"Content-Length: {v}\r\n".encode() for v in lengths) + b"\r\n"
        answer = raw_socket(gw.port, head + b"{}")
        assert answer.startswith(b"HTTP/1.1 400") and b"invalid_request_error" in answer


def test_body_limit_and_short_body(pipeline, keyfile) -> None:
    with serve(pipeline, keyfile, max_body_bytes=1024, read_timeout_s=0.3) as gw:
        status, _, body = raw(gw, [("Content-Type", "application/json")], b"{" + b" " * 2000 + b"}")
        assert status == 413 and json.loads(body)["error"]["type"] == "request_too_large"
        answer = raw_socket(gw.port, b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                     b"Content-Length: 100\r\n\r\n{\"model\"")
        assert answer.startswith(b"HTTP/1.1 400") and b"shorter than Content-Length" in answer


def test_deep_json_is_400(pipeline, keyfile) -> None:
    with serve(pipeline, keyfile) as gw:
        status, _, _ = raw(gw, [("Content-Type", "application/json")], b"[" * 100_000 + b"]" * 100_000)
        assert status == 400


def test_busy_gateway_answers_529_overloaded_with_retry_after(pipeline, keyfile) -> None:
    """One worker, one waiting slot: a third request in flight is refused at once, in Anthropic's
    format, with retry-after; the two admitted ones are answered; idle connections hold nothing."""
    import socket
    import threading
    import time

    release = threading.Event()
    pipeline.validator = lambda query, text: release.wait(30)  # holds the worker until released
    with serve(pipeline, keyfile, max_workers=1, max_pending=1) as gw:
        idle = [socket.create_connection(("127.0.0.1", gw.port)) for _ in range(4)]  # cost no worker
        answers: list[int] = []
        held = [threading.Thread(target=lambda: answers.append(raw(gw, [("Content-Type", "application/json")])[0]))
                for _ in range(2)]
        for t in held:
            t.start()
        deadline = time.monotonic() + 20
        while gw._server.in_flight < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            status, headers, body = raw(gw, [("Content-Type", "application/json")])
            probe = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
            probe.request("GET", "/healthz")  # answered on the event loop: needs no worker
            health = probe.getresponse().status
            probe.close()
        finally:
            release.set()
            for t in held:
                t.join(30)
            for s in idle:
                s.close()
        assert status == 529 and headers["retry-after"] == "1"
        assert json.loads(body)["error"]["type"] == "overloaded_error"
        assert health == 200
        assert answers == [200, 200]


def test_gateway_serves_tls(pipeline, keyfile, tmp_path) -> None:
    import ssl
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    with serve(pipeline, keyfile, tls_cert_file=cert, tls_key_file=key) as gw:
        assert gw.url.startswith("https://")
        conn = http.client.HTTPSConnection("127.0.0.1", gw.port, timeout=10,
                                           context=ssl.create_default_context(cafile=str(cert)))
        conn.request("GET", "/v1/models")
        assert conn.getresponse().status == 200
        conn.close()


RSS_GATEWAY = r"""
import dataclasses, sys
from opentelemetry.sdk.trace import TracerProvider
from costline.collectors import Recorder
from costline.config import Config
from costline.serving.gateway.app import Gateway
from costline.serving.pipeline import Pipeline
from costline.serving.settings import BackendsConfig, GatewayConfig

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

cfg = Config()
serving = dataclasses.replace(cfg.serving, backends=BackendsConfig(anthropic_base_url="http://127.0.0.1:9",
                                                                   student_base_url="http://127.0.0.1:9/v1"))
pipeline = Pipeline.from_config(cfg.replace(serving=serving), recorder=Recorder(TracerProvider()), env={})
gw = Gateway(pipeline, GatewayConfig(keys_file=sys.argv[1]), port=0)
print(gw.start(), hwm(), flush=True)
sys.stdin.readline()
print(hwm(), flush=True)
"""


def test_a_200_mb_prompt_is_refused_at_the_limit_with_bounded_memory(tmp_path) -> None:
    import socket
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", RSS_GATEWAY, str(tmp_path / "keys.json")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port, before = map(int, proc.stdout.readline().split())
        size = 200 * 1024 * 1024
        sent = 0
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      + f"Content-Length: {size}\r\n\r\n".encode())
            chunk = b" " * (1 << 20)
            try:
                while sent < size:
                    s.sendall(chunk)
                    sent += len(chunk)
            except OSError:
                pass
            answer = s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 413")
        assert sent < size
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert int(proc.stdout.readline()) - before < 32 * 1024 * 1024
    finally:
        proc.kill()
        proc.wait()
