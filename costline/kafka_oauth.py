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
connection's login (on its I/O thread, shared by every connection of the client): one request at a time, bounded
in time (``timeout_s`` in all for a login) and bytes, redirects never followed (the secret goes to the configured
URL only), no proxy for a loopback URL; a refused or broken answer raises :class:`OAuthTokenError` with what the
endpoint said (``error``, ``error_description``), never the secret, and logins within ``retry_after_s`` get the
same error without asking again. A private CA for the endpoint: ``SSL_CERT_FILE``, as for any OpenSSL client.

**A token the broker refuses** (the identity provider rotated its signing key, the token was revoked, or the
broker's clock says it expired while its ``expires_in`` said otherwise) is dropped, and the next login asks for a
new one, instead of every login failing until 80 % of its lifetime has passed. kafka-python tells a token provider
nothing of a refusal: only its OAUTHBEARER mechanism sees the broker's error (RFC 7628 §3.2.2), so constructing a
provider registers :class:`RefusalAwareOAuth`, kafka-python's own mechanism that also tells a provider with a
``refused()`` method, under the mechanism's name in kafka-python's table (its ``register_sasl_mechanism``, the
extension point for this). For any other provider it is kafka-python's mechanism as it was. A broker that refuses
every token (a token for another audience) gets at most one new token a ``refused_retry_s``.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

from kafka.net.sasl import get_sasl_mechanism, register_sasl_mechanism
from kafka.net.sasl.oauth import AbstractTokenProvider, SaslMechanismOAuth

from costline.errors import CostlineError
from costline.netsec import is_loopback

__all__ = ["ClientCredentialsTokenProvider", "OAuthTokenError", "RefusalAwareOAuth"]

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
                 secret_env: str = "", timeout_s: float = 10.0, retry_after_s: float = 5.0,
                 refused_retry_s: float = 30.0, now: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        RefusalAwareOAuth.register()
        self.token_url = token_url
        self.client_id = client_id
        self._secret = client_secret
        self.secret_env = secret_env
        self.scope = scope
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self._now = now
        self._lock = threading.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0
        self._expires_at = 0.0
        self._asking: threading.Thread | None = None
        self._failed: tuple[float, OAuthTokenError] | None = None
        self.refused_retry_s = refused_retry_s
        self._dropped_at: float | None = None
        #: Tokens asked for since construction (a login reuses the kept one until it is due).
        self.fetches = 0
        #: Logins the broker refused (each told by :class:`RefusalAwareOAuth`).
        self.refusals = 0

    def __repr__(self) -> str:  # kafka-python logs its configs at DEBUG: never the secret
        return f"ClientCredentialsTokenProvider({self.token_url!r}, client_id={self.client_id!r})"

    def token(self) -> str:
        """The kept token; a new one once 80 % of its life has passed. kafka-python calls this on its I/O thread,
        which every connection of the client shares, so it blocks at most ``timeout_s`` in all: a token past 80 % but
        not expired is answered at once while a new one is asked in the background; a fetch that failed is not asked
        again for ``retry_after_s`` (the error is raised again meanwhile)."""
        with self._lock:
            now = self._now()
            if self._token is not None and now < self._refresh_at:
                return self._token
            if self._token is not None and now < self._expires_at:  # due, still valid: renewed behind the logins
                self._ask()
                return self._token
            if self._failed is not None and now < self._failed[0] + self.retry_after_s:
                raise self._failed[1]
            asking = self._ask()
        asking.join(self.timeout_s)
        with self._lock:
            if self._token is not None and self._now() < self._expires_at:
                return self._token
            if asking.is_alive():
                raise OAuthTokenError(f"{self._where()} did not answer within {self.timeout_s:.0f} s")
            assert self._failed is not None
            raise self._failed[1]

    def refused(self, said: str = "", *, token: str | None = None) -> None:
        """The broker refused a login with ``token`` (None: the kept one; ``said``: its error, RFC 7628's JSON): drop
        the kept token, if it is that one, so the next login asks for a new one, unless one was dropped less than
        ``refused_retry_s`` ago (a broker that refuses every token is asked for at most one a ``refused_retry_s``).
        Never raises."""
        with self._lock:
            self.refusals += 1
            now = self._now()
            if self._token is None or (token is not None and token != self._token):
                return  # already renewed: the refused token is not kept any more
            if self._dropped_at is not None and now < self._dropped_at + self.refused_retry_s:
                return
            self._dropped_at = now
            self._token = None
            self._refresh_at = self._expires_at = 0.0
        log.warning("costline: the Kafka broker refused the OAuth token of client %r (%s); the next login asks %s "
                    "for a new one", self.client_id, _clean(said[:200]) or "no reason given", self.token_url)

    def _ask(self) -> threading.Thread:
        """The thread asking for a token, started unless one is already asking (call with the lock held)."""
        if self._asking is None or not self._asking.is_alive():
            self._asking = threading.Thread(target=self._renew, name="costline-kafka-oauth", daemon=True)
            self._asking.start()
        return self._asking

    def _renew(self) -> None:
        started = self._now()
        try:
            token, lifetime = self._fetch()
        except OAuthTokenError as exc:
            log.warning("costline: %s", exc)
            with self._lock:
                self._failed = (self._now(), exc)
            return
        with self._lock:
            self.fetches += 1
            self._failed = None
            self._token = token
            self._refresh_at = started + REFRESH_FACTOR * lifetime
            self._expires_at = started + lifetime

    def _where(self) -> str:
        return f"the OAuth token endpoint {self.token_url} ([kafka] sasl_oauth_token_url)"

    def _fetch(self) -> tuple[str, float]:
        form = {"grant_type": "client_credentials", **({"scope": self.scope} if self.scope else {})}
        basic = base64.b64encode(f"{_form(self.client_id)}:{_form(self._secret)}".encode()).decode()
        request = urllib.request.Request(self.token_url, data=urllib.parse.urlencode(form).encode(), method="POST",
                                         headers={"Authorization": f"Basic {basic}", "Accept": "application/json",
                                                  "Content-Type": "application/x-www-form-urlencoded"})
        where = self._where()
        try:
            with _opener(self.token_url).open(request, timeout=self.timeout_s) as answer:
                status, raw = answer.status, answer.read(MAX_ANSWER_BYTES + 1)
        except urllib.error.HTTPError as exc:
            status = exc.code
            try:
                with exc:
                    raw = exc.read(MAX_ANSWER_BYTES + 1)
            except (OSError, ValueError, http.client.HTTPException):
                raw = b""
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise OAuthTokenError(f"{where} could not be reached: {type(exc).__name__}: {_clean(str(exc))}") from None
        if len(raw) > MAX_ANSWER_BYTES:
            raise OAuthTokenError(f"{where} answered more than {MAX_ANSWER_BYTES} bytes: not a token response")
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if 300 <= status < 400:
            raise OAuthTokenError(f"{where} redirected (HTTP {status}): costline sends the client secret to the "
                                  "configured URL only — set the URL it redirects to")
        if status != 200:
            said = ""
            if isinstance(body, dict) and isinstance(body.get("error"), str):  # RFC 6749 §5.2
                said = f": {_clean(body['error'][:100])}"
                if isinstance(body.get("error_description"), str):
                    said += f" ({_clean(body['error_description'][:300])})"
            advice = (f" — check [kafka] sasl_oauth_client_id and the secret in ${self.secret_env or '…'}"
                      if status in (400, 401) else "")
            raise OAuthTokenError(f"{where} refused client {self.client_id!r} with HTTP {status}{said}{advice}")
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not _B64TOKEN.fullmatch(token):  # RFC 6750 §2.1's b64token
            raise OAuthTokenError(f"{where} answered 200 without a usable access_token")
        kind = body.get("token_type")
        if isinstance(kind, str) and kind.lower() != "bearer":
            raise OAuthTokenError(f"{where} answered a {_clean(kind[:40])!r} token; OAUTHBEARER needs a bearer token")
        log.debug("costline: OAuth token for %r, valid %.0f s", self.client_id, _lifetime(body.get("expires_in")))
        return token, _lifetime(body.get("expires_in"))


class RefusalAwareOAuth(SaslMechanismOAuth):
    """kafka-python's OAUTHBEARER mechanism that also tells the token provider when the broker refuses its token
    (the provider's ``refused(said)``, when it has one: :class:`ClientCredentialsTokenProvider` does)."""

    MECHANISM = "OAUTHBEARER"

    @classmethod
    def register(cls) -> None:
        """Make kafka-python use this class for OAUTHBEARER logins (once a process; idempotent)."""
        if get_sasl_mechanism(cls.MECHANISM) is not cls:
            register_sasl_mechanism(cls.MECHANISM, cls, overwrite=True)

    _sent: str | None = None

    def auth_bytes(self) -> bytes:
        message = super().auth_bytes()
        if message.startswith(b"n,,\x01auth=Bearer "):  # the first message: which token this login sent
            self._sent = message[len(b"n,,\x01auth=Bearer "):].split(b"\x01", 1)[0].decode("ascii", "replace")
        return message

    def receive(self, auth_bytes: bytes) -> None:
        if auth_bytes != b"":  # RFC 7628 §3.2.2: the server's error, before it fails the login
            refused = getattr(self.token_provider, "refused", None)
            if callable(refused):
                try:
                    refused(auth_bytes[:1024].decode("utf-8", "replace"), token=self._sent)
                except Exception:  # noqa: BLE001 (a provider's bug never changes how kafka-python logs in)
                    log.exception("costline: the OAuth token provider failed to take the broker's refusal")
        super().receive(auth_bytes)


#: RFC 6750 §2.1: what a bearer token is made of (a JWT is).
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def _lifetime(expires: object) -> float:
    """``expires_in`` in seconds (a number, or a numeric string as some providers send it), else the default."""
    if isinstance(expires, str):
        try:
            expires = float(expires.strip())
        except ValueError:
            return DEFAULT_LIFETIME_S
    if isinstance(expires, (int, float)) and not isinstance(expires, bool) and 0 < expires < 10 * 365 * 86400:
        return float(expires)
    return DEFAULT_LIFETIME_S


def _clean(text: str) -> str:
    """An endpoint's words fit for one log line (no control characters)."""
    return "".join(c if c.isprintable() else " " for c in text)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects are not followed: the client secret goes to the configured URL only (a redirect would take it,
    the Authorization header and all, to wherever it points, http too)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


def _opener(url: str) -> urllib.request.OpenerDirector:
    """An opener that never follows redirects, and for a loopback URL never goes through a proxy (``HTTP_PROXY``
    would otherwise get the secret of a plain-http local endpoint); a remote URL takes the environment's proxy
    (``HTTPS_PROXY``, ``NO_PROXY``) as any HTTPS client does."""
    host = urllib.parse.urlsplit(url).hostname or ""
    handlers: list[urllib.request.BaseHandler] = [_NoRedirects()]
    if is_loopback(host):
        handlers.append(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener(*handlers)


def _form(value: str) -> str:
    """RFC 6749 §2.3.1: the client id and secret are form-urlencoded before they are joined for HTTP Basic."""
    return urllib.parse.quote_plus(value)
