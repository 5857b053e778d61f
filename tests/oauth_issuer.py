"""A local OAuth 2.0 identity provider for the Kafka OAUTHBEARER tests: a token endpoint (client credentials,
HTTP Basic) that signs RS256 JSON Web Tokens with PyJWT, and the JSON Web Key Set a real Kafka broker validates them
against (its ``OAuthBearerValidatorCallbackHandler`` reads the file: URL of ``jwks_file``).

It is a test's identity provider, not costline's: tokens say ``sub`` = the client id, ``iss`` = :attr:`issuer`,
``aud`` = :attr:`audience` (overridable per client to test a broker's refusal), ``exp`` = now + ``lifetime_s``.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote_plus

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

ISSUER = "https://login.costline.test/"
AUDIENCE = "kafka"


def reply(handler: BaseHTTPRequestHandler, status: int, raw: bytes, *, location: str | None = None) -> None:
    """Answer ``handler``'s request with ``status`` and the JSON bytes ``raw`` (and a ``Location``)."""
    handler.send_response(status)
    if location:
        handler.send_header("location", location)
    handler.send_header("content-type", "application/json")
    handler.send_header("content-length", str(len(raw)))
    handler.end_headers()
    handler.wfile.write(raw)


class OAuthIssuer:
    """``clients``: client id -> secret. ``audiences``: client id -> the ``aud`` its tokens get (default
    :data:`AUDIENCE`). ``issued`` counts the tokens handed out, ``asked`` the requests."""

    def __init__(self, folder: Path, clients: dict[str, str], *, lifetime_s: int = 3600,
                 audiences: dict[str, str] | None = None, stale_first: frozenset[str] = frozenset()) -> None:
        self.clients = dict(clients)
        #: Clients whose first token has already expired by its ``exp`` while ``expires_in`` still says an hour (a
        #: revoked token, a rotated key or a skewed clock look the same to the client): the broker refuses it.
        self.stale_pending = set(stale_first)
        self.audiences = dict(audiences or {})
        self.lifetime_s = lifetime_s
        self.issuer, self.audience = ISSUER, AUDIENCE
        self.kid = uuid.uuid4().hex[:12]
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(RSAAlgorithm.to_jwk(self._key.public_key()))
        jwk.update(kid=self.kid, use="sig", alg="RS256")
        self.jwks_file = folder / "jwks.json"
        self.jwks_file.write_text(json.dumps({"keys": [jwk]}))
        self.issued = 0
        self.asked = 0
        self.lock = threading.Lock()
        self.scopes: list[str] = []
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):  # noqa: N802 (http.server's name)
                with issuer.lock:
                    issuer.asked += 1
                length = int(self.headers.get("content-length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                client = issuer._client(self.headers.get("authorization") or "")
                if self.path != "/oauth2/token" or form.get("grant_type") != "client_credentials":
                    return self._json(400, {"error": "unsupported_grant_type"})
                if client is None:
                    return self._json(401, {"error": "invalid_client", "error_description": "bad client credentials"})
                issuer.scopes.append(form.get("scope", ""))
                return self._json(200, {"access_token": issuer.token(client), "token_type": "Bearer",
                                        "expires_in": issuer.lifetime_s})

            def _json(self, status, body):
                reply(self, status, json.dumps(body).encode())

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def token_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/oauth2/token"

    def _client(self, authorization: str) -> str | None:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            cid, _, secret = base64.b64decode(value).decode().partition(":")
        except ValueError:
            return None
        cid, secret = unquote_plus(cid), unquote_plus(secret)
        return cid if self.clients.get(cid) == secret else None

    def token(self, client: str) -> str:
        now = int(time.time())
        with self.lock:
            self.issued += 1
            stale = client in self.stale_pending
            self.stale_pending.discard(client)
        if stale:  # expired ten minutes ago (past the broker's 30 s of allowed clock skew)
            now -= self.lifetime_s + 600
        return jwt.encode({"sub": client, "iss": self.issuer, "aud": self.audiences.get(client, self.audience),
                           "iat": now, "exp": now + self.lifetime_s, "scope": "kafka"},
                          self._key, algorithm="RS256", headers={"kid": self.kid})

    def start(self) -> "OAuthIssuer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
