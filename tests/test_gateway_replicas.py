"""Three `costline serve` processes sharing one semantic cache over a compacted Kafka topic.

A question answered on replica A is a cache hit on B (following the topic live) and on C, started
afterwards (bootstrapped from the topic); C killed with SIGKILL and restarted is warm from its
snapshot + the topic. Each replica's first request for the question is the one checked, so a hit
can only come from the replication, never from a replica's own store. Real broker, MiniLM + FAISS.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import anthropic
import pytest

pytestmark = pytest.mark.kafka

QUESTION = "How can I change the billing address on my account?"


def start(tmp: Path, name: str, topic: str, bootstrap: str) -> tuple[subprocess.Popen, str]:
    """Start a replica and wait until it is ready."""
    return ready(*launch(tmp, name, topic, bootstrap))


def launch(tmp: Path, name: str, topic: str, bootstrap: str) -> tuple[subprocess.Popen, str, str]:
    """Start a replica's process; its URL once it listens (not yet ready: see :func:`ready`)."""
    config = tmp / f"{name}.toml"
    config.write_text(f"""
[serving.cache]
path = "{tmp / name}"
replication_topic = "{topic}"
replication_bootstrap_servers = "{bootstrap}"
replica_id = "{name}"
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COSTLINE_")}
    proc = subprocess.Popen([sys.executable, "-m", "costline", "--config", str(config), "serve", "--standin",
                             "--port", "0", "--no-telemetry"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    for line in proc.stdout:  # type: ignore[union-attr]
        if line.startswith("costline gateway on "):
            url = line.split()[3]
            break
    else:
        proc.kill()
        pytest.fail(f"replica {name} did not start: {proc.stderr.read()}")  # type: ignore[union-attr]
    return proc, url, name


def ready(proc: subprocess.Popen, url: str, name: str) -> tuple[subprocess.Popen, str]:
    """Wait for the replica's /readyz."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # /readyz: 200 once the replica has read the topic up to its end
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=5) as resp:
                if resp.status == 200:
                    return proc, url
        except urllib.error.HTTPError as exc:
            assert exc.code == 503
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"replica {name} never became ready")


def ask(url: str) -> bool:
    """The question through the anthropic SDK; True when the gateway answered it from the cache."""
    client = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0,
                                 default_headers={"x-costline-tenant": "acme"})
    raw = client.messages.with_raw_response.create(model="claude-haiku-4-5", max_tokens=256,
                                                   messages=[{"role": "user", "content": QUESTION}])
    assert raw.parse().content[0].text
    return raw.headers["x-costline-cache-hit"] == "true"


def test_three_gateways_share_one_cache_over_kafka(kafka, tmp_path: Path) -> None:
    topic = f"cache-gw-{uuid.uuid4().hex[:8]}"
    procs: list[subprocess.Popen] = []
    try:
        launched = [launch(tmp_path, name, topic, kafka.bootstrap) for name in ("a", "b")]  # side by side
        procs += [p for p, _, _ in launched]
        (a, url_a), (b, url_b) = (ready(*r) for r in launched)
        assert ask(url_a) is False  # answered by the model tier, stored, published
        c, url_c = start(tmp_path, "c", topic, kafka.bootstrap)  # bootstraps from the topic
        procs.append(c)
        assert ask(url_c) is True, "a replica started after the store must start warm"
        assert ask(url_b) is True, "a running replica must apply the other replica's store"
        c.send_signal(signal.SIGKILL)
        c.wait(30)
        c2, url_c2 = start(tmp_path, "c", topic, kafka.bootstrap)  # same path and replica id: a restart
        procs.append(c2)
        assert ask(url_c2) is True, "a replica killed and restarted must come back warm"
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
