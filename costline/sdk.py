"""The one place costline builds SDK clients (``anthropic``, ``openai``) and decides their API key.

The key policy, for every client costline builds (serving tiers, nightly jobs' teacher, the student):

* the key is read from the environment variable the config names
  (``[serving.backends] anthropic_api_key_env``, ``student_api_key_env``, ``[jobs.teacher] api_key_env``);
* without one, a **loopback** ``base_url`` (a local stand-in, a vLLM on this host) gets a placeholder
  key, since such servers take any key or none;
* any other ``base_url`` (a remote vLLM, the SDK's default api.anthropic.com) without a key is a
  :class:`MissingApiKeyError` naming the variable to set: no placeholder key ever leaves this host.

Timeouts: the SDKs' ``timeout`` bounds each network operation (connect, each read), not a call — a server that
sends a byte now and then holds the call for as long as it likes. Given a number of seconds as ``timeout``, the
clients built here also hold each call to it **in all**, its retries included (:func:`deadline_http_client`): each
wait is capped at the time left, a body still being read when it runs out fails the call as the SDK's
``APITimeoutError``, and no retry is sent after it. A streamed answer (an event stream) gets ``stream_timeout`` in all
instead (None: no bound beyond each read's); a timeout while one is read is the SDK's ``APITimeoutError`` as well.
The Message Batches and Files APIs move data in bulk and are bounded per read only.

TLS: those clients share one context per process (the one the SDK would build for each: the system's CAs, or
``$SSL_CERT_FILE`` / ``$SSL_CERT_DIR``'s as they are when a client is built), instead of reading the CA bundle again for
every client (~20 ms of CPU each). A client given its own ``verify``, ``cert`` or transport keeps it.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from costline.errors import ConfigError
from costline.netsec import is_loopback

__all__ = ["PLACEHOLDER_API_KEY", "MissingApiKeyError", "anthropic_client", "bedrock_client", "deadline_http_client",
           "is_loopback_url", "openai_client", "resolve_api_key", "vertex_client"]

#: What a loopback server without a configured key is sent (stand-ins and a local vLLM accept any key).
PLACEHOLDER_API_KEY = "costline-local"


class MissingApiKeyError(ConfigError):
    """No API key in the environment for a server beyond this host; the message names the variable."""

    def __init__(self, key_env: str, service: str, base_url: str | None) -> None:
        where = base_url or "the SDK's default URL"
        super().__init__(f"${key_env}", f"not set, and {service} at {where} is not on this host: "
                         f"export {key_env}=<your key>, or point the base_url at a local stand-in "
                         f"(`costline standin`)", source="environment")


def is_loopback_url(url: str | None) -> bool:
    """True when ``url``'s host is 127.0.0.0/8, ::1 or localhost (``None``: the SDK default, not loopback)."""
    if not url:
        return False
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    return bool(host) and is_loopback(host)


def resolve_api_key(key_env: str, base_url: str | None, *, service: str,
                    env: Mapping[str, str] | None = None) -> str:
    """The key for ``service`` at ``base_url``: ``$key_env``, else a placeholder on loopback, else an error."""
    env = os.environ if env is None else env
    key = env.get(key_env)
    if key:
        return key
    if is_loopback_url(base_url):
        return PLACEHOLDER_API_KEY
    raise MissingApiKeyError(key_env, service, base_url)


#: Content types of a streamed answer: server-sent events (Anthropic, OpenAI, vLLM, Vertex AI) and Bedrock's
#: event stream. Such a response is held to the stream deadline, any other to the call's.
_STREAM_TYPES = ("text/event-stream", "application/vnd.amazon.eventstream")
#: Where the request hook notes when an attempt started (a request's own extensions: nothing is shared).
_STARTED = "costline.started"
#: Path segments of the APIs that move data in bulk, not model calls: the Message Batches API (a batch's requests
#: sent, its results read as the gateway settles each) and the Files API. Their requests are not held to a deadline.
_BULK = frozenset({"batches", "files"})


def _http() -> Any:
    """The HTTP client module of the installed SDKs (anthropic 2.x, openai 3.x: httpx2; older ones: httpx)."""
    try:
        import httpx2 as httpx
    except ImportError:  # pragma: no cover - older SDKs
        import httpx
    return httpx


#: Header the SDKs send with each attempt of a call: "0" on the first, then 1, 2... on their retries.
_RETRY_COUNT = "x-stainless-retry-count"
#: The least a read capped at the deadline waits (a read with no time at all would not wait: it fails as an error).
_LEAST_READ_S = 0.001


def _timeout_error(sdk: Any, request: Any, message: str, *, final: bool) -> Exception:
    """The SDK's ``APITimeoutError`` for ``request`` saying ``message``. ``final``: the call's deadline is spent, so
    the SDK is not to retry it (``openai`` never retries an error of its own it is handed; ``anthropic`` retries every
    ``APIConnectionError`` except those in its ``errors_not_to_retry``, where it puts a failure whose answer said
    ``x-should-retry: false``: without it, each retry fails at once, with no request sent)."""
    try:
        error = sdk.APITimeoutError(request=request, message=message)
    except TypeError:  # openai's takes no message: set it as the message the error says
        error = sdk.APITimeoutError(request=request)
        error.message = message
        error.args = (message,)
    if final:
        not_to_retry = getattr(getattr(sdk, "_base_client", None), "errors_not_to_retry", None)
        try:
            if not_to_retry is not None:
                not_to_retry.add(error)
        except Exception:  # noqa: BLE001 - an SDK that keeps no such set retries it (each retry fails at once)
            pass
    return error


class _CappedReads:
    """While installed, each read of an HTTP/1.1 connection's ``network_stream`` (what httpcore reads a response
    from) waits at most until ``deadline``: httpcore takes one read timeout for the whole body, so a read begun just
    before the deadline would wait that long past it. Installed on the stream object itself (its ``read``) while
    one response's body is read, removed before the connection goes back to the pool."""

    def __init__(self, network_stream: Any, deadline: float) -> None:
        self._stream = network_stream
        self._deadline = deadline
        self._read = network_stream.read

        def read(max_bytes: int, timeout: float | None = None) -> bytes:
            left = max(self._deadline - time.monotonic(), _LEAST_READ_S)
            return self._read(max_bytes, left if timeout is None else min(timeout, left))

        self._capped = read
        network_stream.read = read

    def remove(self) -> None:
        if self._stream is not None and self._stream.__dict__.get("read") is self._capped:
            del self._stream.read
        self._stream = None

    @staticmethod
    def install(response: Any, deadline: float) -> "_CappedReads | None":
        stream = getattr(response, "extensions", {}).get("network_stream")
        if stream is None or not callable(getattr(stream, "read", None)) or not hasattr(stream, "__dict__"):
            return None  # HTTP/2, or a transport of another kind: the deadline is checked as each piece arrives
        try:
            return _CappedReads(stream, deadline)
        except Exception:  # noqa: BLE001 - a stream that takes no attribute: checked as each piece arrives
            return None


@functools.cache
def _deadline_stream() -> type:
    """:class:`_DeadlineStream`'s class, built on the HTTP module's ``SyncByteStream`` when first needed (importing
    this module imports no HTTP client)."""
    httpx = _http()

    class _DeadlineStream(httpx.SyncByteStream):  # type: ignore[misc,name-defined]
        """A response body held to ``deadline`` (``time.monotonic()``; None: none): each read waits at most until it
        (:class:`_CappedReads`), and a piece arriving after it fails the body. What runs out fails as the SDK's
        ``APITimeoutError``, not to be retried (the call's time is spent); so does any timeout while an event
        stream (``event_stream``) is read: the SDK hands such a stream's errors to its reader untouched, and the
        reader (and its call span) would see the transport's ``ReadTimeout`` where a call read whole says
        ``APITimeoutError``."""

        def __init__(self, stream: Any, deadline: float | None, request: Any, total: float | None, sdk: Any,
                     capped: _CappedReads | None, event_stream: bool) -> None:
            self._stream = stream
            self._deadline = deadline
            self._request = request
            self._total = total
            self._sdk = sdk
            self._capped = capped
            self._event_stream = event_stream

        @property
        def elapsed(self) -> Any:  # what httpx's own stream wrapper says once closed (Response.elapsed reads it)
            return getattr(self._stream, "elapsed", None)

        def _spent(self) -> bool:
            return self._deadline is not None and time.monotonic() >= self._deadline - _LEAST_READ_S

        def _over(self) -> Exception:
            return _timeout_error(self._sdk, self._request, f"the response took longer than {self._total:g}s in "
                                  "all (its retries included)", final=True)

        def __iter__(self) -> Iterator[bytes]:
            try:
                if self._spent():
                    raise self._over()
                try:
                    for piece in self._stream:
                        if self._spent():
                            raise self._over()
                        yield piece
                except httpx.TimeoutException as exc:
                    if self._spent():
                        raise self._over() from exc
                    if self._event_stream:
                        raise _timeout_error(self._sdk, self._request, f"reading the event stream timed out "
                                             f"({type(exc).__name__})", final=True) from exc
                    raise
            finally:
                self._uncap()

        def _uncap(self) -> None:
            if self._capped is not None:
                self._capped.remove()
                self._capped = None

        def close(self) -> None:
            self._uncap()  # before the connection can go back to the pool
            self._stream.close()

    return _DeadlineStream


def deadline_http_client(sdk: Any, total: float, stream_total: float | None = None, **kwargs: Any) -> Any:
    """The SDK module ``sdk``'s ``DefaultHttpxClient`` (its defaults: connection limits, keep-alive, proxies) with
    event hooks that hold each call to ``total`` seconds in all, from sending its first attempt to the body's last
    byte, the SDK's retries included (an event stream: to ``stream_total``, None = unbounded). Each wait (connect,
    the answer's head, each read of its body) is capped at the time left, so nothing waits past the deadline; a
    retry the SDK would send after it fails at once. The deadline is the call's own (its start kept per thread:
    the SDK retries in the thread that called; each attempt's in the request's ``extensions``), so one client
    serves any number of threads. What runs out raises the SDK's ``APITimeoutError``, not retried. A timeout
    while an event stream is read is the SDK's ``APITimeoutError`` too (see :class:`_DeadlineStream`). The
    Message Batches and Files APIs (bulk data: a batch's results are read as they are settled) are not bounded."""
    calls = threading.local()

    def call_start(request: Any, now: float) -> float:
        """When the call this attempt is one of began: now for a first attempt (or an SDK that does not say)."""
        retry = request.headers.get(_RETRY_COUNT)
        start = getattr(calls, "start", None)
        if retry in (None, "0") or start is None:
            calls.start = start = now
        return start

    def started(request: Any) -> None:
        if not _BULK.isdisjoint(request.url.path.split("/")):
            return
        now = time.monotonic()
        start = call_start(request, now)
        request.extensions[_STARTED] = start
        # before the head the kind of answer is unknown: the head is due within the call's deadline (an event
        # stream's comes at once; a whole answer's once it is written)
        left = start + total - now
        if left <= 0:
            raise _timeout_error(sdk, request, f"the call took longer than {total:g}s in all (its retries "
                                 "included): not retried", final=True)
        timeouts = request.extensions.get("timeout")
        if isinstance(timeouts, Mapping):
            request.extensions["timeout"] = {k: (left if v is None else min(v, left)) if k in (
                "connect", "read", "write", "pool") else v for k, v in timeouts.items()}

    def bounded(response: Any) -> None:
        request = response.request
        start = request.extensions.get(_STARTED)
        if start is None:
            return
        ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
        event_stream = ctype in _STREAM_TYPES
        limit = stream_total if event_stream else total
        deadline = None if limit is None else start + limit
        capped = _CappedReads.install(response, deadline) if deadline is not None else None
        response.stream = _deadline_stream()(response.stream, deadline, request, limit, sdk, capped, event_stream)

    hooks = kwargs.pop("event_hooks", None) or {}
    hooks = {"request": [started, *hooks.get("request", ())], "response": [*hooks.get("response", ()), bounded]}
    if kwargs.keys().isdisjoint(("verify", "cert", "trust_env", "transport", "mounts", "http1", "http2")):
        shared = _default_ssl_context(sdk)
        if shared is not None:
            kwargs["verify"] = shared
    return sdk.DefaultHttpxClient(event_hooks=hooks, **kwargs)


def _default_ssl_context(sdk: Any) -> Any:
    """The TLS context ``sdk.DefaultHttpxClient`` would build for itself (its HTTP module's ``create_ssl_context()``:
    the system's CAs, or ``$SSL_CERT_FILE`` / ``$SSL_CERT_DIR``'s), one per process, value of those variables and state
    of the CA files they (or OpenSSL's defaults) name: each build reads the CA bundle (~20 ms of CPU), and a gateway's
    tiers, a job's clients and every pipeline a process builds would each build their own. A bundle rewritten in place
    (a rotated secret, ``update-ca-certificates``) gives clients built after it a new context. None (the client builds
    its own) when the SDK's HTTP module is not found, when no CA bundle file is read (``SSL_CERT_DIR`` alone: cheap to
    build, and its certificates are read as needed), or when its context is not the standard library's own
    ``ssl.SSLContext`` (truststore's: one lock through each handshake, which one stalled server would hold for every
    client)."""
    http_module = next((c.__module__.partition(".")[0] for c in type.mro(sdk.DefaultHttpxClient)
                        if c.__module__.partition(".")[0] in ("httpx", "httpx2")), None)
    if http_module is None:
        return None
    cert_file, cert_dir = os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
    # a bundle file is what costs: a context of a directory alone reads its certificates as they are needed (and
    # caches them), so a certificate re-issued in it would not reach a shared one: not shared (~0.2 ms to build)
    ca_file = cert_file or (None if cert_dir else ssl.get_default_verify_paths().openssl_cafile)
    state = _file_state(ca_file)
    if state is None:
        return None
    ctx = _ssl_context(http_module, cert_file, cert_dir, state)
    kind = type(ctx)
    # the standard library's own class only: truststore's (macOS, Windows, or injected with inject_into_ssl(), which
    # makes it ssl.SSLContext) holds one lock through each handshake
    return ctx if (kind.__module__, kind.__qualname__) == ("ssl", "SSLContext") else None


def _file_state(path: str | None) -> tuple[int, int, int] | None:
    """(inode, size, mtime in ns) of ``path``, None when there is none: a file rewritten or replaced changes it."""
    try:
        st = os.stat(path) if path else None
    except OSError:
        return None
    return None if st is None else (st.st_ino, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _ssl_context(http_module: str, cert_file: str | None, cert_dir: str | None, state: tuple[int, int, int]) -> Any:
    """``create_ssl_context()`` of ``http_module`` with the environment's ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` as they
    are now and the state of the CA file they read (the key: a changed variable or file gives a new context). A
    context is shared read-only by the clients."""
    return importlib.import_module(http_module).create_ssl_context()


def _with_deadline(sdk: Any, kwargs: dict[str, Any], stream_timeout: float | None) -> dict[str, Any]:
    """``kwargs`` of an SDK client with an ``http_client`` holding each attempt to ``timeout`` seconds in all, when
    ``timeout`` is a number of seconds and no ``http_client`` is given."""
    timeout = kwargs.get("timeout")
    if (kwargs.get("http_client") is not None or isinstance(timeout, bool) or not isinstance(timeout, (int, float))
            or not timeout > 0):
        return kwargs
    return {**kwargs, "http_client": deadline_http_client(sdk, float(timeout), stream_timeout)}


def anthropic_client(*, base_url: str | None, key_env: str, env: Mapping[str, str] | None = None,
                     service: str = "the Anthropic API", stream_timeout: float | None = None, **kwargs: Any) -> Any:
    """An ``anthropic.Anthropic``; ``base_url`` None falls back to ``$ANTHROPIC_BASE_URL``, then the SDK default.
    A ``timeout`` in seconds bounds each attempt in all, ``stream_timeout`` a streamed one (see the module)."""
    import anthropic

    env = os.environ if env is None else env
    base_url = base_url or env.get("ANTHROPIC_BASE_URL") or None
    key = resolve_api_key(key_env, base_url, service=service, env=env)
    return anthropic.Anthropic(api_key=key, base_url=base_url, **_with_deadline(anthropic, kwargs, stream_timeout))


def _checked_region(api: str, region: str | None, where: str) -> str | None:
    """``region`` as [serving.tiers.<tier>] region must be, wherever it came from (a variable's too: it becomes
    part of the endpoint's host name)."""
    from costline.serving.settings import cloud_region_problem

    problem = cloud_region_problem(api, region) if region else None
    if problem:
        raise ConfigError(f"{where} region".strip(), problem)
    return region


class _SerializedRefresh:
    """Google credentials whose refresh runs one thread at a time: the SDK refreshes an expired token in whichever
    request thread finds it expired, so a gateway's threads would all ask Google's token service at once (and
    google-auth's credentials are not documented as thread-safe). Everything else is the wrapped credentials'."""

    def __init__(self, credentials: Any) -> None:
        self._credentials = credentials
        self._lock = threading.Lock()

    def refresh(self, request: Any) -> None:
        with self._lock:
            if self._credentials.valid:  # another thread refreshed it meanwhile
                return
            self._credentials.refresh(request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._credentials, name)


def bedrock_client(*, base_url: str | None, region: str | None, key_env: str | None,
                   env: Mapping[str, str] | None = None, service: str = "Amazon Bedrock", where: str = "",
                   stream_timeout: float | None = None, **kwargs: Any) -> Any:
    """An ``anthropic.AnthropicBedrock``: Claude through Bedrock Runtime's InvokeModel.

    Credentials, first found: ``$key_env`` (a Bedrock API key, sent as a bearer token; ``key_env`` named but unset
    is an error), ``$AWS_BEARER_TOKEN_BEDROCK``, else SigV4 with ``$AWS_ACCESS_KEY_ID`` /
    ``$AWS_SECRET_ACCESS_KEY`` / ``$AWS_SESSION_TOKEN`` or AWS's own chain (profile, SSO, instance role; boto3).
    A loopback ``base_url`` (the stand-in) without any gets a placeholder bearer key; a remote one is a
    :class:`~costline.errors.ConfigError` naming what to set. ``region``: else ``$AWS_REGION``,
    ``$AWS_DEFAULT_REGION``, the profile's; ``us-east-1`` on loopback; else an error naming ``where``'s key.
    ``base_url`` None: ``$ANTHROPIC_BEDROCK_BASE_URL``, else Bedrock Runtime's endpoint in the region."""
    import anthropic

    env = os.environ if env is None else env
    base_url = base_url or env.get("ANTHROPIC_BEDROCK_BASE_URL") or None
    local = is_loopback_url(base_url)
    region = _checked_region("bedrock", region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
                             where)
    if any(importlib.util.find_spec(m) is None for m in ("boto3", "botocore")):  # signing; streamed answers' frames
        raise ConfigError(f"{where} api".strip(), f"{service} needs boto3 and botocore: pip install "
                          "'costline[bedrock]'")
    import boto3
    import botocore.exceptions

    try:  # AWS's own chain: a profile (its region too), SSO, the instance's or task's role
        session = boto3.Session(region_name=region)
        region = region or _checked_region("bedrock", session.region_name, where)
    except botocore.exceptions.BotoCoreError as exc:
        raise ConfigError(f"{where} region".strip(), f"{service}: the AWS profile could not be read ({exc})") from None
    sigv4: dict[str, Any] = {}
    api_key = None
    if key_env:
        api_key = resolve_api_key(key_env, base_url, service=service, env=env)
    elif env.get("AWS_BEARER_TOKEN_BEDROCK"):
        api_key = env["AWS_BEARER_TOKEN_BEDROCK"]
    elif env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        sigv4 = dict(aws_access_key=env["AWS_ACCESS_KEY_ID"], aws_secret_key=env["AWS_SECRET_ACCESS_KEY"],
                     aws_session_token=env.get("AWS_SESSION_TOKEN") or None)
    else:
        try:
            found = session.get_credentials()
        except botocore.exceptions.BotoCoreError as exc:
            raise ConfigError(f"{where} api_key_env".strip(), f"{service}: AWS credentials could not be read "
                              f"({exc})") from None
        if found is None:
            if not local:
                raise ConfigError(f"{where} api_key_env".strip(), f"{service} at {base_url or 'its AWS endpoint'} "
                                  "needs credentials: export AWS_BEARER_TOKEN_BEDROCK (a Bedrock API key), or "
                                  "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or configure an AWS profile or role")
            api_key = PLACEHOLDER_API_KEY
    if not region:
        if not local:
            raise ConfigError(f"{where} region".strip(), f"{service} needs an AWS region: set it here, or export "
                              "AWS_REGION")
        region = "us-east-1"
    client = anthropic.AnthropicBedrock(aws_region=region, base_url=base_url, api_key=api_key,
                                        **_with_deadline(anthropic, kwargs, stream_timeout))
    if api_key is None:
        # SigV4, as decided above from ``env``: the SDK reads $AWS_BEARER_TOKEN_BEDROCK from os.environ by itself
        # when given no key (and refuses a key beside AWS keys), so the choice is set on the client afterwards
        client.api_key = None
        for name, value in sigv4.items():
            setattr(client, name, value)
    return client


def vertex_client(*, base_url: str | None, region: str | None, project: str | None, key_env: str | None,
                  env: Mapping[str, str] | None = None, service: str = "Vertex AI", where: str = "",
                  stream_timeout: float | None = None, **kwargs: Any) -> Any:
    """An ``anthropic.AnthropicVertex``: Claude through Vertex AI's rawPredict / streamRawPredict.

    Credentials: ``$key_env`` (an OAuth access token; named but unset is an error, as for any key), else Google's
    application default credentials (``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's login, the workload's service
    account; google-auth refreshes the token as it expires). A loopback ``base_url`` (the stand-in) without a
    token gets a placeholder; a remote one without credentials is a :class:`~costline.errors.ConfigError`.
    ``region``: else ``$CLOUD_ML_REGION`` (``us-east5`` on loopback); ``project``: else
    ``$ANTHROPIC_VERTEX_PROJECT_ID``, the credentials' project. ``base_url`` None: ``$ANTHROPIC_VERTEX_BASE_URL``,
    else the region's Vertex AI endpoint."""
    import anthropic

    env = os.environ if env is None else env
    base_url = base_url or env.get("ANTHROPIC_VERTEX_BASE_URL") or None
    local = is_loopback_url(base_url)
    region = _checked_region("vertex", region or env.get("CLOUD_ML_REGION") or None, where) or (
        "us-east5" if local else None)
    if not region:
        raise ConfigError(f"{where} region".strip(), f"{service} needs a Google Cloud region (\"us-east5\", "
                          "\"global\"): set it here, or export CLOUD_ML_REGION")
    project = project or env.get("ANTHROPIC_VERTEX_PROJECT_ID") or None
    auth: dict[str, Any] = {}
    if key_env:
        auth["access_token"] = resolve_api_key(key_env, base_url, service=service, env=env)
    elif local:
        auth["access_token"] = PLACEHOLDER_API_KEY
    else:
        try:
            import google.auth
            from google.auth.exceptions import DefaultCredentialsError
        except ImportError:
            raise ConfigError(f"{where} api_key_env".strip(), f"{service}: Google credentials need google-auth: pip "
                              "install 'costline[vertex]' (or name an access token's variable here)") from None
        try:
            credentials, found = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
        except DefaultCredentialsError as exc:
            raise ConfigError(f"{where} api_key_env".strip(), f"{service} at {base_url or 'Vertex AI'} needs "
                              "credentials: set GOOGLE_APPLICATION_CREDENTIALS (a service account key file), run "
                              "`gcloud auth application-default login`, or run with a service account "
                              f"({str(exc)[:160]})") from None
        auth["credentials"] = _SerializedRefresh(credentials)
        project = project or found or None
    if not project:
        if not local:
            raise ConfigError(f"{where} project".strip(), f"{service} needs a Google Cloud project: set it here, or "
                              "export ANTHROPIC_VERTEX_PROJECT_ID")
        project = "costline-local"
    return anthropic.AnthropicVertex(region=region, project_id=project, base_url=base_url, **auth,
                                     **_with_deadline(anthropic, kwargs, stream_timeout))


def openai_client(*, base_url: str | None, key_env: str, env: Mapping[str, str] | None = None,
                  service: str = "the OpenAI-compatible server", stream_timeout: float | None = None,
                  **kwargs: Any) -> Any:
    """An ``openai.OpenAI`` (vLLM's OpenAI-compatible server, or OpenAI itself). A ``timeout`` in seconds bounds each
    attempt in all, ``stream_timeout`` a streamed one (see the module)."""
    import openai

    env = os.environ if env is None else env
    base_url = base_url or env.get("OPENAI_BASE_URL") or None
    key = resolve_api_key(key_env, base_url, service=service, env=env)
    return openai.OpenAI(api_key=key, base_url=base_url, **_with_deadline(openai, kwargs, stream_timeout))
