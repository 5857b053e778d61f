"""Who may call the gateway, as which tenant, how often, and from which browser origins.

* :class:`KeyStore`: API keys in a JSON file (``costline keys add|list|revoke``); once the file holds a key (even a revoked
  one) every request needs a valid key. A key reads
  ``clk_<id>_<secret>``; the file keeps only the id, the tenant and a salted SHA-256 of the
  secret (the secret has 256 random bits, so a slow hash adds nothing but latency), compared
  with :func:`hmac.compare_digest`. The file is re-read when it changes: a revoked key stops
  working without a restart. ``costline keys add|revoke`` change it under an exclusive ``flock`` on
  ``<keys file>.lock``: two at once never lose a key or undo a revocation.
* :class:`RateLimiter`: a token bucket per key (clock injected).
* :class:`GatewayGuard`: the request-entry checks of ``POST /v1/messages`` — CORS and content
  type, the key (``x-api-key`` or ``Authorization: Bearer``), the tenant, the rate — answering
  in Anthropic's error format. The key, tenant and rate checks run on the request's head
  (:meth:`GatewayGuard.admit_head`), before its body is read. It fails closed: a gateway that started
  with keys (or ``require_auth``), or saw one since, refuses every request with 401 while the keys
  file is missing, empty or unreadable. See docs/security.md.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import hashlib
import hmac
import itertools
import json
import logging
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from costline.fsutil import atomic_write, exclusive_lock
from costline.netsec import host_name, host_problem, is_loopback
from costline.serving.errors import ServingError
from costline.serving.settings import GatewayConfig

__all__ = ["ApiKey", "KeyStore", "KeyStoreError", "RateLimiter", "Limiter", "GatewayGuard", "Admitted", "Refused",
           "default_keys_file", "check_tenant"]

log = logging.getLogger(__name__)

KEY_PREFIX = "clk_"
_KEY = re.compile(r"clk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
#: Tenants are names: printable, no surrounding spaces, no markup characters, at most 128.
_TENANT = re.compile(r"[^\s<>&\"'`\\\x00-\x1f\x7f](?:[^<>&\"'`\\\x00-\x1f\x7f]{0,126}[^\s<>&\"'`\\\x00-\x1f\x7f])?")


def _owner_only(path: str, flags: int) -> int:
    """``open``'s opener for a file only its owner may read (the key store holds key digests)."""
    return os.open(path, flags, 0o600)


class KeyStoreError(ServingError):
    """The API keys file cannot be read or written, or a key operation is invalid."""


#: What to set when the keys file's folder cannot be written.
_KEYS_FILE_FIX = ("pass --file, or set [serving.gateway] keys_file (COSTLINE_SERVING_GATEWAY_KEYS_FILE) or "
                  "XDG_STATE_HOME, to a path this user can write")


def default_keys_file() -> Path:
    """``$XDG_STATE_HOME/costline/gateway-keys.json``, else under ``~/.local/state``; KeyStoreError when neither can be
    worked out (no XDG_STATE_HOME, and no home directory: HOME unset and a user id with no passwd entry, as a
    container's arbitrary uid)."""
    base = os.environ.get("XDG_STATE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".local" / "state")
        except RuntimeError:  # Path.home(): "Could not determine home directory"
            raise KeyStoreError(f"no home directory to keep the API keys file in: {_KEYS_FILE_FIX}") from None
    return Path(base) / "costline" / "gateway-keys.json"


def check_tenant(tenant: str) -> str | None:
    """Why ``tenant`` is not an acceptable tenant name, or None."""
    if not _TENANT.fullmatch(tenant):
        return ("a tenant is 1-128 printable characters without surrounding spaces or any of "
                "< > & \" ' ` \\")
    return None


@dataclass(frozen=True)
class ApiKey:
    id: str
    tenant: str
    name: str
    salt: str
    sha256: str
    created_at: str
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode("ascii")).hexdigest()


class KeyStore:
    """The keys file; safe to share between a running gateway and ``costline keys``."""

    def __init__(self, path: Path | None = None, *, now: Callable[[], dt.datetime] | None = None) -> None:
        #: None: no path given and none can be worked out (no home directory): no keys file to read, and adding a
        #: key says what to set.
        self.path: Path | None = Path(path) if path is not None else None
        if path is None:
            try:
                self.path = default_keys_file()
            except KeyStoreError:
                self.path = None
        self._now = now or (lambda: dt.datetime.now(dt.UTC))
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._keys: dict[str, ApiKey] = {}
        self._present = False
        self._why = ""  # why the file could not be read, the last time it could not

    # -- reading -------------------------------------------------------------------------------
    def _load(self) -> dict[str, ApiKey]:
        if self.path is None:  # no home directory and no path set: there is no keys file
            self._stamp, self._keys, self._present = None, {}, False
            return self._keys
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._stamp, self._keys, self._present = None, {}, False
            return self._keys
        except OSError as exc:
            self._why = str(exc.strerror or exc)
            raise KeyStoreError(f"cannot read the API keys file {self.path}: {self._why}") from None
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            try:
                doc = json.loads(self.path.read_text(encoding="utf-8"))
                keys = {k["id"]: ApiKey(**k) for k in doc.get("keys", [])}
            except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
                self._why = str(exc)
                raise KeyStoreError(f"the API keys file {self.path} is unreadable ({exc}): restore it from a backup "
                                    "(a running gateway refuses every request until then), or stop the gateway, "
                                    "move the file aside and add keys again with `costline keys add TENANT`") from None
            self._stamp, self._keys = stamp, keys
        self._present = True
        return self._keys

    def keys(self) -> list[ApiKey]:
        with self._lock:
            return sorted(self._load().values(), key=lambda k: k.created_at)

    def configured(self) -> bool:
        """True once any key was added: revoking the last one must not open the gateway."""
        try:
            return bool(self.keys())
        except KeyStoreError:
            return True  # an unreadable file closes the gateway, never opens it

    def problem(self) -> str | None:
        """Why the file gives a gateway no key to check against ("is missing", "holds no keys", "is unreadable
        (...)"), or None when it holds a key (a revoked one counts)."""
        with self._lock:
            try:
                keys = self._load()
            except KeyStoreError:
                return f"is unreadable ({self._why})"
            if not self._present:
                return "is missing"
            return None if keys else "holds no keys"

    def verify(self, presented: str) -> ApiKey | None:
        """The active key ``presented`` is, or None (constant time in the secret)."""
        m = _KEY.fullmatch(presented)
        if not m:
            return None
        key_id, secret = m.groups()
        with self._lock:
            try:
                key = self._load().get(key_id)
            except KeyStoreError:
                return None
        if key is None or not key.active:
            return None
        return key if hmac.compare_digest(_digest(key.salt, secret), key.sha256) else None

    # -- writing (costline keys) ------------------------------------------------------------------
    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold an exclusive ``flock`` on ``<keys file>.lock`` (created next to it, owner only): the whole
        read-modify-write of one ``costline keys add|revoke`` against another's, in any process."""
        self._make_folder()
        lock = self.path.with_name(self.path.name + ".lock")
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(exclusive_lock(lock, 0o600))
            except OSError as exc:
                raise KeyStoreError(f"cannot open the keys file's lock {lock}: {exc.strerror or exc} (check that "
                                    "this user may write in that folder)") from None
            yield

    def _make_folder(self) -> None:
        """Create the keys file's folder (owner only) if missing; KeyStoreError naming it and what to set if it cannot be."""
        if self.path is None:
            raise KeyStoreError(f"no home directory to keep the API keys file in: {_KEYS_FILE_FIX}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise KeyStoreError(f"cannot create the keys file's folder {self.path.parent}: {exc.strerror or exc}"
                                f"{f' ({exc.filename})' if exc.filename else ''}: {_KEYS_FILE_FIX}") from None

    def _write(self, keys: dict[str, ApiKey]) -> None:
        self._make_folder()
        try:
            with atomic_write(self.path, "w", encoding="utf-8", opener=_owner_only) as f:
                json.dump({"version": 1, "keys": [asdict(k) for k in keys.values()]}, f, indent=1)
        except PermissionError as exc:
            raise KeyStoreError(f"cannot write the keys file {self.path}: {exc.strerror or exc}: "
                                f"{_KEYS_FILE_FIX}") from None

    def add(self, tenant: str, name: str = "") -> tuple[ApiKey, str]:
        """Create a key for ``tenant``; returns it and the secret key text (shown once, never stored)."""
        problem = check_tenant(tenant)
        if problem:
            raise KeyStoreError(f"tenant {tenant!r}: {problem}")
        with self._lock, self._exclusive():
            self._stamp = None  # read what is in the file now, under the lock: never a copy from before it
            keys = dict(self._load())
            key_id = secrets.token_hex(6)
            while key_id in keys:
                key_id = secrets.token_hex(6)
            secret = secrets.token_urlsafe(32)
            salt = secrets.token_hex(16)
            key = ApiKey(key_id, tenant, name, salt, _digest(salt, secret),
                         self._now().isoformat(timespec="seconds"))
            keys[key_id] = key
            self._write(keys)
            self._stamp = None
        return key, f"{KEY_PREFIX}{key_id}_{secret}"

    def revoke(self, key_id: str) -> ApiKey:
        key_id = key_id.removeprefix(KEY_PREFIX).split("_")[0]
        with self._lock, self._exclusive():
            self._stamp = None
            keys = dict(self._load())
            key = keys.get(key_id)
            if key is None:
                raise KeyStoreError(f"no key {key_id!r} in {self.path}: see `costline keys list`")
            if key.active:
                key = keys[key_id] = ApiKey(**{**asdict(key), "revoked_at": self._now().isoformat(timespec="seconds")})
                self._write(keys)
                self._stamp = None
        return key


class Limiter(Protocol):
    """What the guard asks of a rate limiter (:class:`RateLimiter`, or the workers' shared one)."""

    def take(self, name: str) -> float:
        """0 when allowed, else seconds until a request would be."""
        ...


class RateLimiter:
    """A token bucket per name: ``rate_per_minute`` sustained, ``burst`` at once (0 rate = unlimited).

    At most ``max_buckets`` names are held: a new name past it takes the place of one held, looked for among the
    :data:`EVICT_PROBES` least recently used — the first whose bucket has refilled (forgetting it changes nothing: a
    name not held starts full), else the one nearest full — so a flood of new names never gives a throttled name its
    burst back while others owe less."""

    def __init__(self, rate_per_minute: float, burst: int, *, now: Callable[[], float] = time.monotonic,
                 max_buckets: int = 100_000) -> None:
        self.rate = rate_per_minute / 60.0
        self.burst = float(burst)
        self._now = now
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # least recently used first
        self._max = max(1, max_buckets)

    def take(self, name: str) -> float:
        """0 when allowed, else seconds until a request would be."""
        if self.rate <= 0:
            return 0.0
        with self._lock:
            now = self._now()
            held = self._buckets.get(name)
            if held is None:
                if len(self._buckets) >= self._max:
                    self._evict(now)
                tokens = self.burst
            else:
                tokens = self._tokens(held, now)
                self._buckets.move_to_end(name)
            if tokens >= 1.0:
                self._buckets[name] = (tokens - 1.0, now)
                return 0.0
            self._buckets[name] = (tokens, now)
            return (1.0 - tokens) / self.rate

    def _tokens(self, bucket: tuple[float, float], now: float) -> float:
        tokens, last = bucket
        return min(self.burst, tokens + max(now - last, 0.0) * self.rate)

    def _evict(self, now: float) -> None:
        """Under the lock: forget one name, of the :data:`EVICT_PROBES` least recently used the first whose bucket
        is full again, else the one with the most tokens (the least debt forgiven), the least recently used of
        equals."""
        victim, most = None, -1.0
        for name, bucket in itertools.islice(self._buckets.items(), EVICT_PROBES):
            tokens = self._tokens(bucket, now)
            if tokens >= self.burst:
                victim = name
                break
            if tokens > most:
                victim, most = name, tokens
        if victim is not None:
            del self._buckets[victim]


#: Buckets :meth:`RateLimiter.take` looks at, least recently used first, for one to forget when it holds
#: ``max_buckets`` and a new name comes.
EVICT_PROBES = 32


def _bucket(key_id: str | None, tenant: str | None, *, trusted: bool) -> str:
    """The rate-limit bucket of a request: its key's; with ``trusted_tenant_header`` and the tenant taken from the
    header, the key's and that tenant's (a proxy's one key serves many tenants: each keeps its own bucket, so one
    tenant's burst never has another refused); open (no key), its tenant's."""
    if key_id is None:
        return f"tenant:{tenant}"
    return f"{key_id}:tenant:{tenant}" if trusted else key_id


@dataclass(frozen=True)
class Admitted:
    tenant: str | None  # None: the gateway's default tenant
    key_id: str | None
    #: Headers every answer to this request carries (CORS).
    headers: dict[str, str]


@dataclass(frozen=True)
class Refused:
    status: int
    message: str
    headers: dict[str, str]


#: What :meth:`GatewayGuard.admit_head` found for the request whose head it checked: (its method and the headers the
#: checks read, the admission). The server runs the head check and the request's handler in one :mod:`contextvars` context, so the
#: handler's :meth:`~GatewayGuard.admit` takes it from there (the rate limit is charged once, on the head).
_HEAD_ADMITTED: contextvars.ContextVar[tuple[tuple[Any, ...], Admitted] | None] = \
    contextvars.ContextVar("costline_head_admitted", default=None)


class GatewayGuard:
    """The gateway's request-entry checks; :meth:`admit` → :class:`Admitted` or :class:`Refused`.

    Fails closed: once authentication is on — at start (a key in the keys file, or ``require_auth``; a gateway beyond
    loopback without ``allow_insecure`` starts only so) or since (a key was added) — it stays on for the guard's life. A keys file
    deleted, emptied or broken while the gateway serves then refuses every request with 401 (and the guard logs
    once what to do); it never opens the gateway to whoever names a tenant in a header."""

    def __init__(self, config: GatewayConfig, *, host: str, keys: KeyStore | None = None,
                 now: Callable[[], float] = time.monotonic, limiter: Limiter | None = None) -> None:
        self.config = config
        self.host = host
        self.keys = keys if keys is not None else KeyStore(config.keys_file)
        # anything with RateLimiter's take(name) -> seconds to wait: the workers of `costline serve --workers`
        # share one (costline.serving.gateway.shared_limits)
        self.limiter = limiter if limiter is not None else \
            RateLimiter(config.rate_limit_per_minute, config.rate_limit_burst, now=now)
        self._origins = frozenset(o.rstrip("/") for o in config.allowed_origins)
        # open, a request's Host that is a DNS name must be one of these (check_host: DNS rebinding)
        self._hosts = frozenset({host_name(host), *(host_name(h) for h in config.allowed_hosts)})
        # beyond loopback without allow_insecure, refuse_open_bind refuses to start unless this is True already
        self._authenticated = bool(config.require_auth or self.keys.configured())
        self._outage_lock = threading.Lock()
        self._outage: str | None = None  # the keys file's problem last logged (logged once per outage)

    def auth_required(self) -> bool:
        """True once authentication is on; it never turns off again (see the class docstring)."""
        if not self._authenticated and self.keys.configured():
            self._authenticated = True
        return self._authenticated

    def _no_keys(self) -> str | None:
        """When authentication is on and the keys file gives no key to check against: what to tell the caller (and,
        once per outage, the operator in the log). None while the file holds a key."""
        try:
            problem = self.keys.problem()
        except Exception:  # noqa: BLE001 - a check that cannot look refuses as it would anyway
            problem = "cannot be checked"
        with self._outage_lock:
            if problem is None:
                self._outage = None
                return None
            if problem != self._outage:
                self._outage = problem
                log.error("costline gateway: the API keys file %s %s: every request is refused (401) until it holds a "
                          "key again. Restore it from a backup, or add keys with `costline keys add TENANT` "
                          "(callers then need the new keys); or stop the gateway. Authentication stays on while the "
                          "gateway runs.", self.keys.path, problem)
        return ("the gateway has no API keys to check against (its keys file is missing, empty or unreadable): every "
                "request is refused until its operator restores the file or adds keys with `costline keys add TENANT`")

    # -- pieces --------------------------------------------------------------------------------
    @staticmethod
    def _one(req: Any, name: str) -> str | None | Refused:
        values = req.header_all(name)
        if not values:
            return None
        if len(values) > 1:
            return Refused(400, f"header {name} was sent {len(values)} times: send it once", {})
        try:
            # http.server reads header bytes as latin-1: get the bytes back and insist on UTF-8.
            return values[0].encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return Refused(400, f"header {name} is not valid UTF-8", {})

    def check_host(self, req: Any) -> Refused | None:
        """Open (no API keys): a request addressed to a name this gateway is not known by is refused (421), so a web
        page on a name that resolves to this machine (DNS rebinding) cannot read anything — a browser sends its
        same-origin GETs without ``Origin``, which the CORS check needs (:func:`~costline.netsec.host_problem`: an IP
        address, a name without a dot, the bind address and ``allowed_hosts`` pass). With keys, the key is the
        defence."""
        if self.auth_required():
            return None
        problem = host_problem(req.header_all("host"), self._hosts)
        if problem is None:
            return None
        return Refused(421, f"{problem}: an open gateway (no API keys) answers a DNS name only when it is its bind "
                            "address or in [serving.gateway] allowed_hosts (besides IP addresses and names without a "
                            "dot, as localhost). Add the name it is reached by to allowed_hosts, or add API keys with "
                            "`costline keys add TENANT`", {})

    def cors(self, req: Any) -> Refused | dict[str, str]:
        origin = self._one(req, "origin")
        if isinstance(origin, Refused):
            return origin
        if origin is None:
            return {}
        if origin.rstrip("/") not in self._origins:
            return Refused(403, f"requests from the browser origin {origin[:100]!r} are not allowed: add it to "
                                "[serving.gateway] allowed_origins to allow it", {})
        return {"access-control-allow-origin": origin, "vary": "origin"}

    def preflight(self, req: Any) -> Refused | dict[str, str]:
        wrong_host = self.check_host(req)
        if wrong_host is not None:
            return wrong_host
        cors = self.cors(req)
        if isinstance(cors, Refused) or not cors:
            return cors if isinstance(cors, Refused) else Refused(403, "CORS preflight without Origin", {})
        return {**cors, "access-control-allow-methods": "POST, GET, DELETE",
                "access-control-allow-headers": "content-type, x-api-key, authorization, anthropic-version, "
                                                "x-costline-task-type, x-costline-doc-hashes, cache-control",
                "access-control-max-age": "600"}

    # -- the whole check -----------------------------------------------------------------------
    def check_body_tenant(self, admitted: Admitted, claimed: Any) -> Refused | None:
        """``metadata.tenant`` never decides: with a key it must name the key's tenant or be absent."""
        if claimed is None or admitted.key_id is None or self.config.trusted_tenant_header:
            return None
        if str(claimed) != admitted.tenant:
            return Refused(403, "metadata.tenant names another tenant than this API key's: the key decides the "
                                "tenant; drop the field", admitted.headers)
        return None

    def admit(self, req: Any, *, upload: bool = False) -> Admitted | Refused:
        """Let ``req`` in (CORS, content type, key, limits), or say why not. ``upload``: a file upload route, which
        also takes ``multipart/form-data`` — only with an ``Authorization`` or ``x-api-key`` header, which a web
        page's plain form cannot send (so no other site can make a browser upload to an open gateway)."""
        wrong_host = self.check_host(req)
        if wrong_host is not None:
            return wrong_host
        cors = self.cors(req)
        if isinstance(cors, Refused):
            return cors
        if req.method == "POST":
            ctype = self._one(req, "content-type")
            if isinstance(ctype, Refused):
                return ctype
            kind = (ctype or "").split(";")[0].strip().lower()
            if upload and kind == "multipart/form-data":
                if not (req.header("authorization") or req.header("x-api-key")):
                    return Refused(415, "a multipart upload needs an Authorization or x-api-key header (the SDKs "
                                        "send one)", cors)
            elif kind != "application/json":
                return Refused(415, f"Content-Type {ctype!r} is not accepted: send application/json", cors)
        head = _HEAD_ADMITTED.get()
        if head is not None and head[0] == self._identity(req):
            return head[1]  # the head was checked already (admit_head), the rate limit charged then
        return self._identify(req, cors)

    def admit_head(self, req: Any) -> Refused | None:
        """The checks that need only the request's head — CORS, the key, the tenant header, the rate limit — made
        before its body is read or a worker slot is taken, so a caller without a valid key holds neither. A refusal,
        or None (the request goes on; :meth:`admit` of the same request, in the same :mod:`contextvars` context,
        returns what was found here). A CORS preflight (OPTIONS) is left to :meth:`preflight`."""
        if req.method == "OPTIONS":
            return None
        wrong_host = self.check_host(req)
        if wrong_host is not None:
            return wrong_host
        cors = self.cors(req)
        if isinstance(cors, Refused):
            return cors
        admitted = self._identify(req, cors)
        if isinstance(admitted, Refused):
            return admitted
        _HEAD_ADMITTED.set((self._identity(req), admitted))
        return None

    def head_tenant(self) -> str | None:
        """The tenant :meth:`admit_head` admitted in this :mod:`contextvars` context (``default_tenant`` when its key
        or header names none), or None when it admitted no head here (a preflight)."""
        found = _HEAD_ADMITTED.get()
        if found is None:
            return None
        return found[1].tenant or self.config.default_tenant

    def _identity(self, req: Any) -> tuple[Any, ...]:
        """What :meth:`_identify` and CORS read of ``req`` (a handler may add other headers, as a content type)."""
        return (req.method, *(tuple(req.header_all(name)) for name in
                              ("x-api-key", "authorization", "origin", self.config.tenant_header)))

    def _identify(self, req: Any, cors: dict[str, str]) -> Admitted | Refused:
        """The key, the tenant and the rate limit of ``req`` (headers only)."""
        cfg = self.config
        key_id: str | None = None
        key_tenant: str | None = None
        if self.auth_required():
            challenge = {**cors, "www-authenticate": 'Bearer realm="costline"'}
            presented = self._credential(req)
            if isinstance(presented, Refused):
                return Refused(presented.status, presented.message, cors)
            if presented is None:
                return Refused(401, self._no_keys() or "an API key is required: send x-api-key (or Authorization: "
                                    "Bearer); an operator creates one with `costline keys add TENANT`", challenge)
            try:
                key = self.keys.verify(presented)
            except Exception:  # noqa: BLE001 - an unreadable key file refuses, never opens
                key = None
            if key is None:
                return Refused(401, self._no_keys() or "invalid or revoked API key", challenge)
            key_id, key_tenant = key.id, key.tenant
        header_tenant = self._one(req, cfg.tenant_header)
        if isinstance(header_tenant, Refused):
            return Refused(header_tenant.status, header_tenant.message, cors)
        if header_tenant is not None and check_tenant(header_tenant):
            return Refused(400, f"header {cfg.tenant_header}: {check_tenant(header_tenant)}", cors)
        if cfg.trusted_tenant_header:
            tenant = header_tenant or key_tenant
        elif key_tenant is not None:
            if header_tenant is not None and header_tenant != key_tenant:
                return Refused(403, f"header {cfg.tenant_header} names another tenant than this API key's: the "
                                    "key decides the tenant; drop the header", cors)
            tenant = key_tenant
        else:
            # Open (loopback, no keys): the development mode; the header names the tenant.
            tenant = header_tenant
        wait = self.limiter.take(_bucket(key_id, tenant, trusted=bool(cfg.trusted_tenant_header and header_tenant)))
        if wait > 0:
            return Refused(429, f"rate limit of {cfg.rate_limit_per_minute:g} requests per minute exceeded: "
                                "retry later", {**cors, "retry-after": str(max(int(wait + 0.999), 1))})
        return Admitted(tenant, key_id, cors)

    @classmethod
    def _credential(cls, req: Any) -> str | None | Refused:
        api_key = cls._one(req, "x-api-key")
        auth = cls._one(req, "authorization")
        for v in (api_key, auth):
            if isinstance(v, Refused):
                return v
        bearer = None
        if auth is not None:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not token:
                return Refused(401, "Authorization must be 'Bearer <API key>'", {})
            bearer = token
        if api_key is not None and bearer is not None and api_key != bearer:
            return Refused(400, "x-api-key and Authorization carry different keys: send one", {})
        return api_key if api_key is not None else bearer


def open_mode_note(config: GatewayConfig, host: str, guard: GatewayGuard) -> str | None:
    """A line for the operator when the gateway runs without authentication."""
    if guard.auth_required():
        return None
    where = "loopback only" if is_loopback(host) else f"{host}, INSECURE"
    return (f"no API keys configured: the gateway is open ({where}) and trusts {config.tenant_header}; "
            "`costline keys add TENANT` turns authentication on")
