"""SASL/OAUTHBEARER for costline's Kafka clients: OAuth 2.0 client-credentials tokens from an identity provider.

A cluster that authenticates clients with OAuth (Confluent Cloud's OAuth, Strimzi or Redpanda with Keycloak,
Okta, Entra ID) takes a JSON Web Token in the SASL handshake. costline's clients get one the way Kafka's own
Java clients do (``sasl.oauthbearer.token.endpoint.url``): the client-credentials grant (RFC 6749 §4.4) at the
token endpoint, client id and secret in HTTP Basic authentication (§2.3.1), and the token is reused until 80 %
of its lifetime has passed (Kafka's ``sasl.login.refresh.window.factor``)::

    [kafka]
    security_protocol = "SASL_SSL"
    sasl_mechanism = "OAUTHBEARER"
    sasl_oauth_token_url = "https://login.example.com/oauth2/token"
    sasl_oauth_client_id = "costline-processor"
    sasl_oauth_client_secret_env = "KAFKA_OAUTH_CLIENT_SECRET"   # the variable holding the secret
    sasl_oauth_scope = "kafka"                                   # optional

:class:`ClientCredentialsTokenProvider` is the ``sasl_oauth_token_provider`` kafka-python calls at every
connection's login (on its I/O thread): one request at a time, bounded in time and bytes; a refused or broken
answer raises :class:`OAuthTokenError` with what the endpoint said (``error``, ``error_description``), never the
secret, and the next login asks again.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

from kafka.net.sasl.oauth import AbstractTokenProvider

from costline.errors import CostlineError

__all__ = ["ClientCredentialsTokenProvider", "OAuthTokenError"]

log = logging.getLogger(__name__)

#: The most of a token endpoint's answer read (a token is a few KiB; an endpoint that sends more is broken).
MAX_ANSWER_BYTES = 256 * 1024
#: A token is asked again once this share of its lifetime has passed (Kafka's sasl.login.refresh.window.factor).
REFRESH_FACTOR = 0.8
#: The lifetime assumed when the endpoint says none (``expires_in`` is only RECOMMENDED by RFC 6749).
DEFAULT_LIFETIME_S = 300.0


class OAuthTokenError(CostlineError):
    """The token endpoint refused or could not be asked; the message says what it answered."""


class ClientCredentialsTokenProvider(AbstractTokenProvider):
    """Access tokens by the client-credentials grant, kept until :data:`REFRESH_FACTOR` of their lifetime.

    ``secret_env`` names the secret's variable in messages; ``now`` (monotonic seconds) is injected for tests;
    ``timeout_s`` bounds each request to the endpoint."""

    def __init__(self, token_url: str, client_id: str, client_secret: str, scope: str = "", *,
                 secret_env: str = "", timeout_s: float = 10.0, now: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.token_url = token_url
        self.client_id = client_id
        self._secret = client_secret
        self.secret_env = secret_env
        self.scope = scope
        self.timeout_s = timeout_s
        self._now = now
        self._lock = threading.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0
        #: Tokens asked for since construction (a login reuses the kept one until it is due).
        self.fetches = 0

    def __repr__(self) -> str:  # kafka-python logs its configs at DEBUG: never the secret
        return f"ClientCredentialsTokenProvider({self.token_url!r}, client_id={self.client_id!r})"

    def token(self) -> str:
        with self._lock:
            if self._token is None or self._now() >= self._refresh_at:
                started = self._now()
                token, lifetime = self._fetch()
                self.fetches += 1
                self._token, self._refresh_at = token, started + REFRESH_FACTOR * lifetime
            return self._token

    def _fetch(self) -> tuple[str, float]:
        form = {"grant_type": "client_credentials", **({"scope": self.scope} if self.scope else {})}
        basic = base64.b64encode(f"{_form(self.client_id)}:{_form(self._secret)}".encode()).decode()
        request = urllib.request.Request(self.token_url, data=urllib.parse.urlencode(form).encode(), method="POST",
                                         headers={"Authorization": f"Basic {basic}", "Accept": "application/json",
                                                  "Content-Type": "application/x-www-form-urlencoded"})
        where = f"the OAuth token endpoint {self.token_url} ([kafka] sasl_oauth_token_url)"
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:  # noqa: S310 (http(s) only)
                status, raw = answer.status, answer.read(MAX_ANSWER_BYTES + 1)
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read(MAX_ANSWER_BYTES + 1)
        except (OSError, ValueError) as exc:
            raise OAuthTokenError(f"{where} could not be reached: {exc}") from None
        if len(raw) > MAX_ANSWER_BYTES:
            raise OAuthTokenError(f"{where} answered more than {MAX_ANSWER_BYTES} bytes: not a token response")
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if status != 200:
            said = ""
            if isinstance(body, dict) and isinstance(body.get("error"), str):  # RFC 6749 §5.2
                said = f": {body['error'][:100]}"
                if isinstance(body.get("error_description"), str):
                    said += f" ({body['error_description'][:300]})"
            advice = (f" — check [kafka] sasl_oauth_client_id and the secret in ${self.secret_env or '…'}"
                      if status in (400, 401) else "")
            raise OAuthTokenError(f"{where} refused client {self.client_id!r} with HTTP {status}{said}{advice}")
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token or any(c in token for c in "\x01\r\n "):
            raise OAuthTokenError(f"{where} answered 200 without a usable access_token")
        kind = body.get("token_type")
        if isinstance(kind, str) and kind.lower() != "bearer":
            raise OAuthTokenError(f"{where} answered a {kind[:40]!r} token; OAUTHBEARER needs a bearer token")
        expires = body.get("expires_in")
        lifetime = (float(expires) if isinstance(expires, (int, float)) and not isinstance(expires, bool)
                    and 0 < expires < 10 * 365 * 86400 else DEFAULT_LIFETIME_S)
        log.debug("costline: OAuth token for %r, valid %.0f s", self.client_id, lifetime)
        return token, lifetime


def _form(value: str) -> str:
    """RFC 6749 §2.3.1: the client id and secret are form-urlencoded before they are joined for HTTP Basic."""
    return urllib.parse.quote_plus(value)
