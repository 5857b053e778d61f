"""The gateway's server: health and readiness, an event loop that blocking work never holds, and a
graceful drain on SIGTERM of `costline serve` (the request in flight is answered, then it exits)."""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time

import anthropic
import pytest
from opentelemetry.sdk.trace import TracerProvider

from costline.collectors import Recorder
from costline.config import Config
from costline.serving.gateway.app import Gateway
from costline.serving.pipeline import Pipeline
from costline.serving.settings import BackendsConfig, GatewayConfig, StandInConfig
from costline.sim.standin import StandInServer

ASK = {"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "How do I reset my password?"}]}


class Gate:
    """The stand-in's clock: each simulated pause waits until the test opens the gate."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.waiting = threading.Event()

    def sleep(self, seconds: float) -> None:
        self.waiting.set()
        assert self.open.wait(60), "the test never opened the gate"


def get(port: int, path: str) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


@pytest.fixture
def standin():
    server = StandInServer(StandInConfig(latency_scale=0.0), port=0)
    server.start()
    yield server
    server.shutdown()


def make_pipeline(standin) -> Pipeline:
    cfg = Config()
    serving = dataclasses.replace(cfg.serving, backends=BackendsConfig(
        anthropic_base_url=standin.url, student_base_url=standin.openai_url, max_retries=0))
    return Pipeline.from_config(cfg.replace(serving=serving), recorder=Recorder(TracerProvider()), env={})


class _LoadingModels:
    """A cache whose embedding model loads when the gateway warms it up (what the gateway looks at)."""

    def __init__(self) -> None:
        self.embedder = self
        self.loaded = False

    def load(self) -> None:
        self.loaded = True


@pytest.mark.parametrize("fails", [False, True])
def test_after_warm_up_runs_once_the_models_are_loaded_and_before_the_gateway_says_ready(standin, tmp_path, caplog,
                                                                                        fails) -> None:
    """``costline serve`` settles its heap there; /readyz says 503 until the step is done, and a step that fails
    is logged and serving goes on."""
    pipeline = make_pipeline(standin)
    pipeline.cache = _LoadingModels()
    entered, release = threading.Event(), threading.Event()
    calls: list[bool] = []

    def step() -> None:
        calls.append(pipeline.cache.loaded)  # the models are loaded first
        entered.set()
        assert release.wait(30)
        if fails:
            raise RuntimeError("boom")

    gw = Gateway(pipeline, GatewayConfig(keys_file=tmp_path / "keys.json"), port=0, after_warm_up=step)
    gw.start()
    try:
        assert entered.wait(30)
        assert get(gw.port, "/readyz")[0] == 503
        release.set()
        deadline = time.monotonic() + 30
        while get(gw.port, "/readyz")[0] != 200:
            assert time.monotonic() < deadline, "never ready"
            time.sleep(0.05)
        assert calls == [True]
        assert ("after-warm-up step failed" in caplog.text) is fails
    finally:
        release.set()
        gw.shutdown()
        pipeline.close()


class _SlowModels(_LoadingModels):
    """Models whose load takes until the test releases it (native code a process must not finalise under)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def load(self) -> None:
        assert self.release.wait(30)
        self.loaded = True


def test_sigterm_before_uvicorn_runs_still_waits_for_the_model_load(standin, tmp_path, monkeypatch) -> None:
    """`costline serve`'s SIGTERM handler raises SystemExit wherever the main thread is: here just after the
    model load began and before the server runs (the batch runner starting). serve_forever lets the load end
    before the exit goes on, and the loading thread is not a daemon, so no exit path finalises under it."""
    pipeline = make_pipeline(standin)
    pipeline.cache = models = _SlowModels()
    gw = Gateway(pipeline, GatewayConfig(keys_file=tmp_path / "keys.json"), port=0)

    def sigterm_lands_here() -> None:
        threading.Timer(0.3, models.release.set).start()
        raise SystemExit(0)

    monkeypatch.setattr(gw.batch_runner, "start", sigterm_lands_here)
    try:
        with pytest.raises(SystemExit):
            gw.serve_forever()
        assert models.loaded, "SystemExit went on while the models were still loading"
        assert gw._warming is not None and not gw._warming.daemon
    finally:
        models.release.set()
        pipeline.close()


def test_settle_heap_collects_then_freezes_what_is_alive() -> None:
    import gc
    import weakref

    from costline.serving.gateway.serve_cli import settle_heap

    class Cycle:
        def __init__(self) -> None:
            self.me = self

    garbage = weakref.ref(Cycle())  # garbage in a reference cycle: only the collector frees it
    gc.unfreeze()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 10_000  # this process's modules, pytest's, costline's
        assert garbage() is None  # collected first, not frozen alive
    finally:
        gc.unfreeze()  # the rest of the test session collects as before


def test_health_and_readiness_and_a_free_event_loop_while_workers_block(standin, tmp_path) -> None:
    pipeline = make_pipeline(standin)
    release = threading.Event()
    entered = threading.Event()

    def slow_validator(query: str, text: str) -> bool:  # blocking work in a worker thread
        entered.set()
        return release.wait(30)

    pipeline.validator = slow_validator
    gw = Gateway(pipeline, GatewayConfig(keys_file=tmp_path / "keys.json"), port=0)
    gw.start()
    try:
        assert get(gw.port, "/healthz") == (200, {"status": "ok"})
        assert get(gw.port, "/readyz")[0] == 200
        client = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0)
        answers: list[str] = []
        held = threading.Thread(target=lambda: answers.append(client.messages.create(**ASK).content[0].text))
        held.start()
        assert entered.wait(30)
        # a request is blocked in a worker: the loop still answers
        assert get(gw.port, "/healthz")[0] == 200
        status, body = get(gw.port, "/readyz")
        assert status == 200 and body["in_flight"] == 1
        release.set()
        held.join(30)
        assert answers and answers[0]
    finally:
        release.set()
        gw.shutdown()
        pipeline.close()
    assert gw.draining


def test_sigterm_drains_costline_serve(tmp_path) -> None:
    gate = Gate()
    standin = StandInServer(StandInConfig(), port=0, sleep=gate.sleep)
    standin.start()
    config = tmp_path / "costline.toml"
    config.write_text(f"""
[serving.backends]
anthropic_base_url = "{standin.url}"
student_base_url = "{standin.openai_url}"
max_retries = 0

[serving.gateway]
keys_file = "{tmp_path / 'keys.json'}"
drain_timeout_s = 30
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COSTLINE_")}
    proc = subprocess.Popen([sys.executable, "-m", "costline", "--config", str(config), "serve", "--port", "0",
                             "--no-cache", "--no-telemetry"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        url = None
        for line in proc.stdout:
            if line.startswith("costline gateway on "):
                url = line.split()[3]
                break
        assert url, proc.stderr.read()
        port = int(url.rsplit(":", 1)[1])
        assert get(port, "/readyz")[0] == 200
        client = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)
        answers: list[int] = []

        def ask() -> None:
            raw = client.messages.with_raw_response.create(**ASK)
            answers.append(raw.status_code)

        held = threading.Thread(target=ask)
        held.start()
        assert gate.waiting.wait(30)  # the request is at the model
        proc.send_signal(signal.SIGTERM)
        # draining: no new work is taken (the listener is closed or /readyz says so)
        refused = False
        for _ in range(100):
            try:
                refused = get(port, "/readyz")[0] == 503
            except OSError:
                refused = True
            if refused:
                break
            time.sleep(0.05)
        assert refused
        assert proc.poll() is None  # still up: a request is in flight
        gate.open.set()
        held.join(30)
        assert answers == [200]  # the request in flight was answered
        assert proc.wait(30) == 0
    finally:
        gate.open.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        standin.shutdown()


def test_a_connection_that_never_sends_a_request_is_closed_after_the_idle_timeout(standin, tmp_path) -> None:
    import socket

    pipeline = make_pipeline(standin)
    gw = Gateway(pipeline, GatewayConfig(keys_file=tmp_path / "keys.json", idle_timeout_s=0.5), port=0)
    gw.start()
    try:
        with socket.create_connection(("127.0.0.1", gw.port), timeout=20) as s:
            assert s.recv(1024) == b""  # closed by the server (a timeout here would raise)
    finally:
        gw.shutdown()
        pipeline.close()


def test_the_gateways_connections_send_without_nagle(standin, tmp_path) -> None:
    """uvicorn writes a response's head and body in two sends: with Nagle's algorithm on, the body
    waits for the client's delayed ACK of the head on every keep-alive request, so each accepted
    connection must have TCP_NODELAY set (asyncio sets it only on sockets that say they are TCP)."""
    import socket

    pipeline = make_pipeline(standin)
    gw = Gateway(pipeline, GatewayConfig(keys_file=tmp_path / "keys.json"), port=0)
    gw.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        conn.request("GET", "/healthz")  # keep-alive: the connection stays open after the answer
        assert conn.getresponse().read()
        connections = list(gw._server._server.server_state.connections)
        assert len(connections) == 1
        sock = connections[0].transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        conn.close()
    finally:
        gw.shutdown()
        pipeline.close()


def test_sigterm_while_the_cache_models_load_exits_cleanly(tmp_path) -> None:
    """SIGTERM the moment `costline serve` says where it listens: the cache's models are still loading in
    the background (native code). The process waits for that load and exits 0, never SIGTERM's default
    death nor SIGABRT ("terminate called without an active exception": the interpreter finalised under
    ONNX Runtime / PyTorch in a daemon thread)."""
    config = tmp_path / "costline.toml"
    config.write_text(f"""
[serving.gateway]
keys_file = "{tmp_path / 'keys.json'}"

[serving.cache]
path = "{tmp_path / 'cache'}"
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COSTLINE_")}
    with open(tmp_path / "stderr", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "costline", "--config", str(config), "serve", "--standin",
                                 "--port", "0", "--no-telemetry"], stdout=subprocess.PIPE, stderr=err, text=True,
                                env={**env, "PYTHONFAULTHANDLER": "1"})
        try:
            for line in proc.stdout:
                if line.startswith("costline gateway on "):
                    break
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert rc == 0, (tmp_path / "stderr").read_text()[-4000:]
