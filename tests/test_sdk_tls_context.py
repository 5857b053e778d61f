"""The SDK clients costline builds share one TLS context per process (costline.sdk ``_default_ssl_context``): each
``DefaultHttpxClient`` built its own before, reading the CA bundle (~20 ms of CPU a client: every tier of a gateway,
every client of a job). The context is the one the SDK would build (``create_ssl_context()``): certificates are
still verified, and ``SSL_CERT_FILE`` set later gives clients built after it a context that trusts its CA."""

from __future__ import annotations

import ssl
import subprocess

import pytest

from costline.sdk import anthropic_client, openai_client
from costline.serving.gateway._http import HttpResponse, JsonServer, Route

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")

MESSAGE = {"id": "msg_tls_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
           "content": [{"type": "text", "text": "over TLS"}], "stop_reason": "end_turn", "stop_sequence": None,
           "usage": {"input_tokens": 3, "output_tokens": 2}}


@pytest.fixture(autouse=True)
def _fresh_contexts():
    """Each test starts with no shared context made (a context made by an earlier test is keyed as one of its own)."""
    from costline import sdk

    sdk._ssl_context.cache_clear()
    yield
    sdk._ssl_context.cache_clear()


def _context_of(client) -> ssl.SSLContext:
    """The TLS context of an SDK client's HTTP transport (its connection pool's)."""
    return client._client._transport._pool._ssl_context


def _serve_tls(folder):
    """A JSON server over TLS with a new self-signed certificate for 127.0.0.1 (no system CA trusts it), written to
    ``folder``: the server, its URL and the certificate's path."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server = JsonServer([Route("POST", "/v1/messages", lambda req: HttpResponse(200, MESSAGE))], host="127.0.0.1",
                        port=0, not_found=lambda req: HttpResponse(404, {"error": "no"}),
                        on_error=lambda req, exc: HttpResponse(500, {"error": "failed"}), ssl_ctx=ctx)
    server.start()
    return server, f"https://127.0.0.1:{server.port}", cert


@pytest.fixture
def https_server(tmp_path):
    """:func:`_serve_tls`'s URL and certificate, the server shut down after the test."""
    server, url, cert = _serve_tls(tmp_path / "a")
    try:
        yield url, cert
    finally:
        server.shutdown()


def _ask(client) -> str:
    answer = client.messages.create(model="claude-haiku-4-5", max_tokens=10,
                                    messages=[{"role": "user", "content": "hi"}])
    return answer.content[0].text


def test_clients_share_one_context_and_still_verify_the_server(https_server, monkeypatch) -> None:
    url, cert = https_server
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    env = {"ANTHROPIC_API_KEY": "k", "OPENAI_API_KEY": "k"}
    first = anthropic_client(base_url=url, key_env="ANTHROPIC_API_KEY", env=env, timeout=10, max_retries=0)
    second = anthropic_client(base_url=url, key_env="ANTHROPIC_API_KEY", env=env, timeout=10, max_retries=0)
    chat = openai_client(base_url=url, key_env="OPENAI_API_KEY", env=env, timeout=10, max_retries=0)
    assert _context_of(first) is _context_of(second) is _context_of(chat)
    assert _context_of(first).verify_mode == ssl.CERT_REQUIRED and _context_of(first).check_hostname
    with pytest.raises(anthropic.APIConnectionError):  # the self-signed certificate is trusted by no CA it has
        _ask(first)

    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the SDK's own way to trust another CA
    trusting = anthropic_client(base_url=url, key_env="ANTHROPIC_API_KEY", env=env, timeout=10, max_retries=0)
    assert _context_of(trusting) is not _context_of(first)
    assert _ask(trusting) == "over TLS"
    with pytest.raises(anthropic.APIConnectionError):  # a client built before keeps the context it had
        _ask(first)


def test_a_client_given_its_own_tls_settings_keeps_them(https_server) -> None:
    url, cert = https_server
    env = {"ANTHROPIC_API_KEY": "k"}
    own = ssl.create_default_context(cafile=str(cert))
    client = anthropic_client(base_url=url, key_env="ANTHROPIC_API_KEY", env=env, max_retries=0,
                              http_client=anthropic.DefaultHttpxClient(verify=own))
    assert _context_of(client) is own and _ask(client) == "over TLS"


def test_a_ca_bundle_rewritten_in_place_is_read_again_by_the_clients_built_after(tmp_path, monkeypatch) -> None:
    """SSL_CERT_FILE names a bundle that is rewritten in place (a rotated secret, ``update-ca-certificates``): a client
    built after the rewrite trusts the new CA, as a client that read the bundle itself did."""
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    old_server, old_url, old_cert = _serve_tls(tmp_path / "old")
    new_server, new_url, new_cert = _serve_tls(tmp_path / "new")
    try:
        bundle = tmp_path / "bundle.pem"
        bundle.write_bytes(old_cert.read_bytes())
        monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
        env = {"ANTHROPIC_API_KEY": "k"}
        before = anthropic_client(base_url=old_url, key_env="ANTHROPIC_API_KEY", env=env, timeout=10, max_retries=0)
        assert _ask(before) == "over TLS"
        with open(bundle, "wb") as f:  # in place: the same path, the same inode
            f.write(new_cert.read_bytes())
        after = anthropic_client(base_url=new_url, key_env="ANTHROPIC_API_KEY", env=env, timeout=10, max_retries=0)
        assert _ask(after) == "over TLS"
    finally:
        old_server.shutdown()
        new_server.shutdown()


@pytest.mark.parametrize("injected", [False, True], ids=["macOS or Windows", "truststore.inject_into_ssl()"])
def test_a_context_that_is_not_a_plain_sslcontext_is_not_shared(https_server, monkeypatch, injected) -> None:
    """httpcore's context on macOS and Windows is truststore's, which holds one lock through each handshake: shared, one
    stalled server would hold every client's new connections. Such a context stays each client's own — also where
    ``truststore.inject_into_ssl()`` made truststore's class ``ssl.SSLContext``."""
    import httpx2

    class LockedContext(ssl.SSLContext):  # stands for truststore.SSLContext: an SSLContext subclass
        pass

    if injected:
        monkeypatch.setattr(ssl, "SSLContext", LockedContext)

    def create_ssl_context(verify=True, cert=None, trust_env=True):  # as httpx's: a context given is the one used
        return verify if isinstance(verify, ssl.SSLContext) else LockedContext(ssl.PROTOCOL_TLS_CLIENT)

    monkeypatch.setattr(httpx2, "create_ssl_context", create_ssl_context)
    monkeypatch.setattr(httpx2._transports.default, "create_ssl_context", create_ssl_context, raising=False)
    url, _ = https_server
    env = {"ANTHROPIC_API_KEY": "k"}
    one, two = (anthropic_client(base_url=url, key_env="ANTHROPIC_API_KEY", env=env, timeout=10, max_retries=0)
                for _ in range(2))
    assert _context_of(one) is not _context_of(two)


def test_a_directory_of_cas_alone_is_not_shared(https_server, tmp_path, monkeypatch) -> None:
    """With SSL_CERT_DIR alone a context reads the directory's certificates as it needs them and keeps them: one
    re-issued in place would not reach a shared context. It is cheap to build (no bundle read): each client's own."""
    url, _ = https_server
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    env = {"ANTHROPIC_API_KEY": "k"}
    one, two = (anthropic_client(base_url=url, key_env="ANTHROPIC_API_KEY", env=env, timeout=10, max_retries=0)
                for _ in range(2))
    assert _context_of(one) is not _context_of(two)
