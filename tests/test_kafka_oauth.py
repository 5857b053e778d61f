"""The OAUTHBEARER token provider (costline/kafka_oauth.py) against token endpoints that behave and ones that do
not: tokens reused until 80 % of their lifetime, one request for many threads, the endpoint's refusals and broken
answers reported with what it said and never the secret. The real broker's side is tests/test_kafka_security.py."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote_plus

import pytest
from oauth_issuer import reply

from costline.config import KafkaConfig
from costline.errors import ConfigError
from costline.kafka_oauth import MAX_ANSWER_BYTES, ClientCredentialsTokenProvider, OAuthTokenError
from costline.kafka_security import client_options

SECRET = "s3cr+t:with/odd=chars"  # form-encoded before HTTP Basic (RFC 6749 2.3.1)


class Endpoint:
    """A token endpoint answering from ``answers`` (status, body bytes), the last one again when they run out;
    ``seen`` keeps each request's (client id, secret, form)."""

    def __init__(self, *answers: tuple[int, bytes]) -> None:
        self.answers = list(answers)
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.location: str | None = None  # sent as Location (a redirect)
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
                basic = base64.b64decode(self.headers["authorization"].split(" ", 1)[1]).decode()
                cid, _, secret = basic.partition(":")
                endpoint.seen.append((unquote_plus(cid), unquote_plus(secret),
                                      {k: v[0] for k, v in parse_qs(raw).items()}))
                reply(self, *(endpoint.answers.pop(0) if len(endpoint.answers) > 1 else endpoint.answers[0]),
                      location=endpoint.location)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/token"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def token_answer(token: str, **extra) -> tuple[int, bytes]:
    return 200, json.dumps({"access_token": token, "token_type": "Bearer", **extra}).encode()


@pytest.fixture
def endpoint():
    made: list[Endpoint] = []

    def make(*answers):
        made.append(Endpoint(*answers))
        return made[-1]

    yield make
    for e in made:
        e.close()


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def renewed(p: ClientCredentialsTokenProvider, fetches: int) -> None:
    deadline = time.monotonic() + 10
    while p.fetches < fetches:
        assert time.monotonic() < deadline, "the background renewal never came"
        time.sleep(0.01)


def test_a_token_is_reused_until_80_percent_of_its_lifetime_then_renewed_behind_the_logins(endpoint):
    ep = endpoint(token_answer("tok-1", expires_in=100), token_answer("tok-2", expires_in=100))
    clock = Clock()
    p = ClientCredentialsTokenProvider(ep.url, "costline-svc", SECRET, "kafka", now=clock)
    assert p.token() == "tok-1"
    clock.t += 79.9
    assert p.token() == "tok-1" and p.fetches == 1
    clock.t += 0.2  # 80.1 s of 100: still valid, so answered at once while a new one is asked
    assert p.token() == "tok-1"
    renewed(p, 2)
    assert p.token() == "tok-2" and len(ep.seen) == 2
    assert [s[:2] for s in ep.seen] == [("costline-svc", SECRET)] * 2  # the secret survives the form-encoding
    assert ep.seen[0][2] == {"grant_type": "client_credentials", "scope": "kafka"}


@pytest.mark.parametrize("expires_in, lifetime", [(None, 300), ("3600", 3600), (0, 300), (-5, 300), (1e12, 300)])
def test_a_missing_or_odd_expires_in_keeps_a_token_five_minutes_at_most(endpoint, expires_in, lifetime):
    extra = {} if expires_in is None else {"expires_in": expires_in}
    ep = endpoint(token_answer("tok-1", **extra), token_answer("tok-2", **extra))
    clock = Clock()
    p = ClientCredentialsTokenProvider(ep.url, "svc", SECRET, now=clock)
    assert p.token() == "tok-1"
    clock.t += 0.8 * lifetime - 1
    assert p.token() == "tok-1" and p.fetches == 1
    clock.t += lifetime  # past its end: asked for at once
    assert p.token() == "tok-2"
    assert "scope" not in ep.seen[0][2]  # no scope configured, none sent


def test_a_failed_ask_is_not_repeated_for_a_few_seconds(endpoint):
    ep = endpoint((503, b'{"error": "temporarily_unavailable"}'), token_answer("tok-1"))
    clock = Clock()
    p = ClientCredentialsTokenProvider(ep.url, "svc", SECRET, now=clock, retry_after_s=5)
    for _ in range(3):  # every connection's login meanwhile: the same error, one request
        with pytest.raises(OAuthTokenError, match="HTTP 503: temporarily_unavailable"):
            p.token()
    assert len(ep.seen) == 1
    clock.t += 5
    assert p.token() == "tok-1" and len(ep.seen) == 2


def test_a_token_the_broker_refuses_is_dropped_and_the_next_login_asks_for_a_new_one(endpoint, caplog):
    """The broker refused the kept token (its key rotated, it was revoked): the next login gets a new token, not the
    refused one until 80 % of its hour; a broker that refuses every token gets at most one new one every
    ``refused_retry_s``."""
    ep = endpoint(token_answer("tok-1", expires_in=3600), token_answer("tok-2", expires_in=3600),
                  token_answer("tok-3", expires_in=3600))
    clock = Clock()
    p = ClientCredentialsTokenProvider(ep.url, "costline-svc", SECRET, now=clock, refused_retry_s=30)
    assert p.token() == "tok-1"
    p.refused('{"status":"invalid_token"}')
    assert p.token() == "tok-2" and p.fetches == 2
    assert "refused the OAuth token of client 'costline-svc'" in caplog.text and "invalid_token" in caplog.text
    clock.t += 29
    p.refused('{"status":"invalid_token"}')  # refused again at once: kept, not asked for again
    assert p.token() == "tok-2" and len(ep.seen) == 2
    clock.t += 1
    p.refused("", token="tok-1")  # a login that sent the token renewed since: the kept one stays
    assert p.token() == "tok-2" and len(ep.seen) == 2
    p.refused("", token="tok-2")
    assert p.token() == "tok-3" and p.refusals == 4
    assert SECRET not in caplog.text


def test_kafka_pythons_oauthbearer_login_tells_the_provider_of_the_brokers_refusal(endpoint):
    """The mechanism kafka-python logs in with (looked up by name, as its connection does): the provider hands the
    token to the first message; the broker's error (RFC 7628 §3.2.2) reaches the provider's ``refused``, and the
    login goes on as kafka-python's own (``\\x01``, then the broker fails it). Another provider is untouched."""
    from kafka.net.sasl import get_sasl_mechanism
    from kafka.net.sasl.oauth import AbstractTokenProvider

    ep = endpoint(token_answer("tok-1"), token_answer("tok-2"))
    p = ClientCredentialsTokenProvider(ep.url, "svc", SECRET)
    login = get_sasl_mechanism("OAUTHBEARER")(sasl_oauth_token_provider=p)
    assert login.auth_bytes() == b"n,,\x01auth=Bearer tok-1\x01\x01"
    login.receive(b'{"status":"invalid_token","scope":"","openid-configuration":""}')
    assert p.refusals == 1 and login.auth_bytes() == b"\x01" and not login.is_authenticated()
    fresh = get_sasl_mechanism("OAUTHBEARER")(sasl_oauth_token_provider=p)
    assert fresh.auth_bytes() == b"n,,\x01auth=Bearer tok-2\x01\x01"
    fresh.receive(b"")  # accepted
    assert fresh.is_authenticated() and p.refusals == 1

    class Fixed(AbstractTokenProvider):
        def token(self):
            return "fixed"

    other = get_sasl_mechanism("OAUTHBEARER")(sasl_oauth_token_provider=Fixed())
    assert other.auth_bytes() == b"n,,\x01auth=Bearer fixed\x01\x01"
    other.receive(b'{"status":"invalid_token"}')
    assert other.auth_bytes() == b"\x01"


def test_a_redirect_is_not_followed_with_the_secret(endpoint):
    elsewhere = endpoint(token_answer("stolen"))
    ep = endpoint((302, b""))
    ep.location = elsewhere.url
    p = ClientCredentialsTokenProvider(ep.url, "svc", SECRET)
    with pytest.raises(OAuthTokenError, match="redirected"):
        p.token()
    assert elsewhere.seen == []


def test_a_loopback_endpoint_is_asked_directly_whatever_the_proxy(endpoint, monkeypatch):
    ep = endpoint(token_answer("tok-1"))
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there: a proxy would fail the ask
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert ClientCredentialsTokenProvider(ep.url, "svc", SECRET).token() == "tok-1"


@pytest.fixture
def raw_server():
    """A TCP server that answers every connection with ``reply`` (None: reads and never answers)."""
    servers = []

    def make(reply: bytes | None):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        held = []

        def serve():
            while True:
                try:
                    conn, _ = sock.accept()
                except OSError:
                    return
                held.append(conn)
                conn.recv(65536)
                if reply is not None:
                    conn.sendall(reply)
                    conn.close()

        threading.Thread(target=serve, daemon=True).start()
        servers.append((sock, held))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/token"

    yield make
    for sock, held in servers:
        sock.close()
        for conn in held:
            conn.close()


def test_a_garbled_answer_is_an_oauth_error(raw_server):
    p = ClientCredentialsTokenProvider(raw_server(b"garbage\r\n\r\n"), "svc", SECRET)
    with pytest.raises(OAuthTokenError, match="could not be reached: BadStatusLine"):
        p.token()


def test_an_endpoint_that_never_answers_holds_a_login_for_timeout_s_at_most(raw_server):
    p = ClientCredentialsTokenProvider(raw_server(None), "svc", SECRET, timeout_s=1.0)
    started = time.monotonic()
    # the login's own bound, or the socket's (the same second): either way an OAuth error, never a hang
    with pytest.raises(OAuthTokenError, match="did not answer within 1 s|could not be reached: TimeoutError"):
        p.token()
    assert time.monotonic() - started < 3


def test_many_threads_logging_in_at_once_ask_for_one_token(endpoint):
    ep = endpoint(token_answer("tok-1", expires_in=3600))
    p = ClientCredentialsTokenProvider(ep.url, "svc", SECRET)
    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(lambda _: p.token(), range(32))) == {"tok-1"}
    assert len(ep.seen) == 1


@pytest.mark.parametrize("answer, says", [
    ((401, b'{"error": "invalid_client", "error_description": "unknown client"}'),
     "HTTP 401: invalid_client (unknown client) — check [kafka] sasl_oauth_client_id and the secret in $MY_SECRET"),
    ((400, b'{"error": "invalid_scope", "error_description": "line one\\nline two"}'), "HTTP 400: invalid_scope"),
    ((500, b"<html>upstream down</html>"), "HTTP 500"),
    ((200, b'{"token_type": "Bearer"}'), "without a usable access_token"),
    ((200, b'{"access_token": "a b", "token_type": "Bearer"}'), "without a usable access_token"),
    ((200, b'{"access_token": "t", "token_type": "mac"}'), "OAUTHBEARER needs a bearer token"),
    ((200, b"not json"), "without a usable access_token"),
    ((200, b'{"access_token": "' + b"x" * (MAX_ANSWER_BYTES + 10) + b'"}'), "more than"),
])
def test_a_refusal_or_a_broken_answer_says_what_the_endpoint_answered_never_the_secret(endpoint, answer, says):
    ep = endpoint(answer)
    p = ClientCredentialsTokenProvider(ep.url, "costline-svc", SECRET, secret_env="MY_SECRET")
    with pytest.raises(OAuthTokenError) as err:
        p.token()
    assert says in str(err.value) and ep.url in str(err.value)
    assert SECRET not in str(err.value) and SECRET not in repr(p)
    assert "\n" not in str(err.value)


def test_an_endpoint_that_cannot_be_reached_is_named():
    p = ClientCredentialsTokenProvider("http://127.0.0.1:9/token", "svc", SECRET, timeout_s=2)
    with pytest.raises(OAuthTokenError, match="could not be reached"):
        p.token()


BASE = dict(bootstrap_servers="k:9093", security_protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER",
            sasl_oauth_token_url="https://login.example.com/oauth2/token", sasl_oauth_client_id="costline-svc")


@pytest.mark.parametrize("changes, key, says", [
    ({"sasl_oauth_token_url": ""}, "[kafka] sasl_oauth_token_url", "token endpoint"),
    ({"sasl_oauth_token_url": "http://login.example.com/token"}, "[kafka] sasl_oauth_token_url", "https"),
    ({"sasl_oauth_token_url": "https://login.example.com:99999/token"}, "[kafka] sasl_oauth_token_url", "https://"),
    ({"sasl_oauth_token_url": "https://u:pw@login.example.com/token"}, "[kafka] sasl_oauth_token_url", "password"),
    ({"sasl_mechanism": "oauthbearer"}, "[kafka] sasl_mechanism", "OAUTHBEARER"),
    ({"sasl_oauth_client_id": " "}, "[kafka] sasl_oauth_client_id", "OAuth client"),
    ({"sasl_oauth_client_secret_env": ""}, "[kafka] sasl_oauth_client_secret_env", "environment variable"),
    ({"sasl_username": "alice"}, "[kafka] sasl_username", "OAUTHBEARER logs in as"),
    ({"sasl_mechanism": "PLAIN", "sasl_username": "alice"}, "[kafka] sasl_oauth_token_url", "OAUTHBEARER"),
])
def test_oauth_settings_that_cannot_work_name_their_key_on_load(tmp_path, changes, key, says):
    from costline.config import load_config

    path = tmp_path / "costline.toml"
    path.write_text("[kafka]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in {**BASE, **changes}.items()))
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert err.value.key == key and says in err.value.problem, str(err.value)


def test_oauth_client_options_carry_a_provider_and_refuse_an_unset_secret():
    kafka = KafkaConfig(**BASE, sasl_oauth_scope="kafka")
    opts = client_options(kafka, {"KAFKA_OAUTH_CLIENT_SECRET": SECRET})
    provider = opts.pop("sasl_oauth_token_provider")
    assert opts == {"security_protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER", "ssl_check_hostname": True}
    assert (provider.token_url, provider.client_id, provider.scope) == (BASE["sasl_oauth_token_url"],
                                                                         "costline-svc", "kafka")
    with pytest.raises(ConfigError) as err:
        client_options(kafka, {})
    assert err.value.key == "[kafka] sasl_oauth_client_secret_env" and "KAFKA_OAUTH_CLIENT_SECRET" in err.value.problem
