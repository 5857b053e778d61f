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
clients built here also hold each HTTP attempt to it **in all** (:func:`deadline_http_client`): a body still being
read when it runs out fails the attempt as the SDK's ``APITimeoutError`` (retried, then failed, as any timeout). A
streamed answer (an event stream) gets ``stream_timeout`` in all instead (None: no bound beyond each read's). The
Message Batches and Files APIs move data in bulk and are bounded per read only.
"""

from __future__ import annotations

import functools
import importlib.util
import os
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


@functools.cache
def _deadline_stream() -> type:
    """:class:`_DeadlineStream`'s class, built on the HTTP module's ``SyncByteStream`` when first needed (importing
    this module imports no HTTP client)."""
    httpx = _http()

    class _DeadlineStream(httpx.SyncByteStream):  # type: ignore[misc,name-defined]
        """A response body that fails with ``ReadTimeout`` once ``deadline`` (``time.monotonic()``) has passed.
        Checked as each piece arrives: a read already waiting ends by the SDK's own per-read timeout, so an attempt
        ends at most one read's timeout after its deadline."""

        def __init__(self, stream: Any, deadline: float, request: Any, total: float) -> None:
            self._stream = stream
            self._deadline = deadline
            self._request = request
            self._total = total

        @property
        def elapsed(self) -> Any:  # what httpx's own stream wrapper says once closed (Response.elapsed reads it)
            return getattr(self._stream, "elapsed", None)

        def _check(self) -> None:
            if time.monotonic() > self._deadline:
                raise httpx.ReadTimeout(f"the response took longer than {self._total:g}s in all",
                                        request=self._request)

        def __iter__(self) -> Iterator[bytes]:
            self._check()
            for piece in self._stream:
                self._check()
                yield piece

        def close(self) -> None:
            self._stream.close()

    return _DeadlineStream


def deadline_http_client(sdk: Any, total: float, stream_total: float | None = None, **kwargs: Any) -> Any:
    """The SDK module ``sdk``'s ``DefaultHttpxClient`` (its defaults: connection limits, keep-alive, proxies) with
    event hooks that hold each HTTP attempt to ``total`` seconds in all, from sending the request to the body's last
    byte (an event stream: to ``stream_total``, None = unbounded). The deadline is the request's own (kept in its
    ``extensions``), so one client serves any number of threads. What runs out raises ``ReadTimeout``: the SDK
    raises it as its ``APITimeoutError`` (a body it reads itself), or it comes out of the stream's iteration. The
    Message Batches and Files APIs (bulk data: a batch's results are read as they are settled) are not bounded."""

    def started(request: Any) -> None:
        if _BULK.isdisjoint(request.url.path.split("/")):
            request.extensions[_STARTED] = time.monotonic()

    def bounded(response: Any) -> None:
        request = response.request
        start = request.extensions.get(_STARTED)
        ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
        limit = stream_total if ctype in _STREAM_TYPES else total
        if start is None or limit is None:
            return
        response.stream = _deadline_stream()(response.stream, start + limit, request, limit)

    hooks = kwargs.pop("event_hooks", None) or {}
    hooks = {"request": [started, *hooks.get("request", ())], "response": [*hooks.get("response", ()), bounded]}
    return sdk.DefaultHttpxClient(event_hooks=hooks, **kwargs)


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
