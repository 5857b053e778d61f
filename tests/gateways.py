"""Shared by the gateway tests: an exact-text answer cache and a gateway in front of the stand-ins whose router
sends task type ``classify`` to the student (an OpenAI-compatible tier) and anything else to Anthropic tiers."""

from __future__ import annotations

import dataclasses
import socket
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from opentelemetry.sdk.trace import TracerProvider

from costline.collectors import Recorder
from costline.config import Config
from costline.serving.gateway.app import Gateway
from costline.serving.pipeline import Pipeline
from costline.serving.settings import BackendsConfig, GatewayConfig, RouteRulesConfig

#: Request headers that route to the student (task type ``classify``) or to an Anthropic tier.
ROUTES = {"anthropic": {"x-costline-task-type": "support"}, "student": {"x-costline-task-type": "classify"}}


class DictCache:
    """An exact-text cache (the semantic one is tested in the cache tests) that counts its lookups."""

    def __init__(self) -> None:
        self.entries: dict[tuple, str] = {}
        self.lookups = 0

    def lookup(self, query, *, tenant, namespace=None):
        self.lookups += 1
        found = self.entries.get((tenant, namespace, query))
        return None if found is None else type("Hit", (), {"answer": found, "similarity": 1.0})()

    def store(self, query, answer, *, tenant, namespace=None, doc_hashes=()):
        self.entries[(tenant, namespace, query)] = answer


def anthropic_client(gw: Gateway, route: str, tenant: str) -> Any:
    """The real ``anthropic`` SDK pointed at ``gw``, routed by ``route`` (a key of :data:`ROUTES`), as ``tenant``."""
    import anthropic

    return anthropic.Anthropic(base_url=f"http://127.0.0.1:{gw.port}", api_key="unused", max_retries=0,
                               default_headers={**ROUTES[route], "x-costline-tenant": tenant})


def openai_client(gw: Gateway, route: str, tenant: str) -> Any:
    """The real ``openai`` SDK pointed at ``gw``, routed by ``route``, as ``tenant``."""
    import openai

    return openai.OpenAI(base_url=f"http://127.0.0.1:{gw.port}/v1", api_key="unused", max_retries=0,
                         default_headers={**ROUTES[route], "x-costline-tenant": tenant})


@contextmanager
def routed_gateway(standin: Any, keys_file: Path, *, cache: Any = None, recorder: Recorder | None = None,
                   confidence: Any = None, **settings: Any) -> Iterator[Gateway]:
    """A started gateway (no confidence gate unless ``confidence`` is one) in front of ``standin``, ``classify``
    routed to the student."""
    cfg = Config()
    router = dataclasses.replace(cfg.serving.router, rules=RouteRulesConfig(student_task_types=("classify",)))
    serving = dataclasses.replace(cfg.serving, router=router, backends=BackendsConfig(
        anthropic_base_url=standin.url, student_base_url=standin.openai_url, embeddings_base_url=standin.openai_url,
        max_retries=0))
    pipeline = Pipeline.from_config(cfg.replace(serving=serving), recorder=recorder or Recorder(TracerProvider()),
                                    cache=cache, env={}, confidence=confidence)
    settings.setdefault("rate_limit_per_minute", 0)
    gw = Gateway(pipeline, GatewayConfig(keys_file=keys_file, **settings), port=0)
    gw.start()
    try:
        yield gw
    finally:
        gw.shutdown()
        pipeline.close()


@contextmanager
def gateway_and_direct_anthropic(standin: Any, provider: TracerProvider, keys_file: Path) -> Iterator[tuple[Any, Any]]:
    """Two ``anthropic`` SDK clients whose calls end up as call spans on ``provider``: one through a routed gateway
    (its tier calls recorded) and one straight to ``standin``, wrapped by ``instrument_anthropic``."""
    import anthropic

    from costline.collectors import instrument_anthropic

    direct = anthropic.Anthropic(base_url=standin.url, api_key="test", max_retries=0)
    instrument_anthropic(direct, Recorder(provider))
    with routed_gateway(standin, keys_file, recorder=Recorder(provider)) as gw:
        yield anthropic_client(gw, "anthropic", "acme"), direct


def standin_pipeline(standin: Any) -> Pipeline:
    """A pipeline on the default config whose tiers are ``standin``'s (no SDK retries, no keys from the env)."""
    cfg = Config()
    serving = dataclasses.replace(cfg.serving, backends=BackendsConfig(
        anthropic_base_url=standin.url, student_base_url=standin.openai_url, max_retries=0))
    return Pipeline.from_config(cfg.replace(serving=serving), recorder=Recorder(TracerProvider()), env={})


@contextmanager
def gateway_starter(pipeline: Pipeline, keys_file: Path) -> Iterator[Any]:
    """``start(**gateway settings) -> Gateway`` on ``pipeline`` (rate limit off unless given); each one started is
    shut down on exit."""
    made: list[Gateway] = []

    def start(**settings: Any) -> Gateway:
        settings.setdefault("rate_limit_per_minute", 0)
        gw = Gateway(pipeline, GatewayConfig(keys_file=keys_file, **settings), port=0)
        gw.start()
        made.append(gw)
        return gw

    try:
        yield start
    finally:
        for gw in made:
            gw.shutdown()


class StreamedLines:
    """A streamed answer's pieces (two JSONL lines) that says how many were taken and whether it was closed."""

    def __init__(self) -> None:
        self.read = 0
        self.closed = threading.Event()

    def __iter__(self) -> "StreamedLines":
        return self

    def __next__(self) -> bytes:
        if self.read == 2:
            raise StopIteration
        self.read += 1
        return b'{"line": %d}\n' % self.read

    def close(self) -> None:
        self.closed.set()


def exchange(port: int, method: str, path: str, headers: dict[str, str] | None = None,
              body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One request on its own connection (``Connection: close``): the status, the headers (``date`` left out: it
    may tick between two requests) and every byte after the head, read until the server closes."""
    lines = [f"{method} {path} HTTP/1.1", "host: 127.0.0.1", "connection: close",
             *(f"{k}: {v}" for k, v in (headers or {}).items())]
    if body:
        lines += ["content-type: application/json", f"content-length: {len(body)}"]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    got = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        if name.lower() not in ("date", "x-costline-request-id", "request-id", "x-request-id"):
            got[name.lower()] = value.strip()
    return int(status_line.split()[1]), got, rest
