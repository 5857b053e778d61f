"""The OAUTHBEARER token provider (costline/kafka_oauth.py) against token endpoints that behave and ones that do
not: tokens reused until 80 % of their lifetime, one request for many threads, the endpoint's refusals and broken
answers reported with what it said and never the secret. The real broker's side is tests/test_kafka_security.py."""

from __future__ import annotations

import base64
import json
import threading
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
                reply(self, *(endpoint.answers.pop(0) if len(endpoint.answers) > 1 else endpoint.answers[0]))

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


def test_a_token_is_reused_until_80_percent_of_its_lifetime_then_asked_again(endpoint):
    ep = endpoint(token_answer("tok-1", expires_in=100), token_answer("tok-2", expires_in=100))
    clock = Clock()
    p = ClientCredentialsTokenProvider(ep.url, "costline-svc", SECRET, "kafka", now=clock)
    assert p.token() == "tok-1"
    clock.t += 79.9
    assert p.token() == "tok-1" and p.fetches == 1
    clock.t += 0.2  # 80.1 s of 100
    assert p.token() == "tok-2" and p.fetches == 2
    assert [s[:2] for s in ep.seen] == [("costline-svc", SECRET)] * 2  # the secret survives the form-encoding
    assert ep.seen[0][2] == {"grant_type": "client_credentials", "scope": "kafka"}


def test_without_expires_in_a_token_is_kept_five_minutes_at_most(endpoint):
    ep = endpoint(token_answer("tok-1"), token_answer("tok-2"))
    clock = Clock()
    p = ClientCredentialsTokenProvider(ep.url, "svc", SECRET, now=clock)
    assert p.token() == "tok-1"
    clock.t += 0.8 * 300 - 1
    assert p.token() == "tok-1"
    clock.t += 2
    assert p.token() == "tok-2"
    assert "scope" not in ep.seen[0][2]  # no scope configured, none sent


def test_many_threads_logging_in_at_once_ask_for_one_token(endpoint):
    ep = endpoint(token_answer("tok-1", expires_in=3600))
    p = ClientCredentialsTokenProvider(ep.url, "svc", SECRET)
    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(lambda _: p.token(), range(32))) == {"tok-1"}
    assert len(ep.seen) == 1


@pytest.mark.parametrize("answer, says", [
    ((401, b'{"error": "invalid_client", "error_description": "unknown client"}'),
     "HTTP 401: invalid_client (unknown client) — check [kafka] sasl_oauth_client_id and the secret in $MY_SECRET"),
    ((400, b'{"error": "invalid_scope"}'), "HTTP 400: invalid_scope"),
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
    assert p.fetches == 0  # nothing kept: the next login asks again


def test_an_endpoint_that_cannot_be_reached_is_named():
    p = ClientCredentialsTokenProvider("http://127.0.0.1:9/token", "svc", SECRET, timeout_s=2)
    with pytest.raises(OAuthTokenError, match="could not be reached"):
        p.token()


BASE = dict(bootstrap_servers="k:9093", security_protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER",
            sasl_oauth_token_url="https://login.example.com/oauth2/token", sasl_oauth_client_id="costline-svc")


@pytest.mark.parametrize("changes, key, says", [
    ({"sasl_oauth_token_url": ""}, "[kafka] sasl_oauth_token_url", "token endpoint"),
    ({"sasl_oauth_token_url": "http://login.example.com/token"}, "[kafka] sasl_oauth_token_url", "https"),
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
