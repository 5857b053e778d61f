"""What the tests of Node apps (tests/js/*) share: the stand-in, costline's OTLP receiver in front of a
fresh topic, hand-written prices, and running an app that prints one JSON report line.

Each app sends its spans over OTLP/HTTP straight to the receiver, through Kafka and the processor into
a lake; expected figures come from the stand-in's own log of what it served.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import missing_binary
from test_ingest_instrumentations import GPT_IN, GPT_OUT, HAIKU_IN, HAIKU_OUT, STUDENT_MODEL, q

from costline.collectors import KafkaForwarder, OtlpReceiver
from costline.config import CollectorConfig, Config, KafkaConfig, LakeConfig, ModelPrice, PricingConfig, ProcessorConfig
from costline.serving.settings import StandInConfig
from costline.processors.processor import ProcessorStats
from costline.sim.standin import LoggedRequest, StandInServer

__all__ = ["AppRun", "PRICING", "NODE_TIMEOUT_S", "require_node", "start_standin", "start_receiver", "fresh_config", "run_app",
           "assert_each_call_once", "assert_the_failed_call"]

NODE_TIMEOUT_S = 60.0
PRICING = PricingConfig(
    models=(ModelPrice("claude-haiku-4-5", "budget", input_per_mtok=HAIKU_IN, output_per_mtok=HAIKU_OUT),
            ModelPrice(STUDENT_MODEL, "budget", provider="openai", input_per_mtok=GPT_IN, output_per_mtok=GPT_OUT)),
    student_usd_per_hour=0.0, student_providers=())


@dataclass
class AppRun:
    """One run of a Node app (straight to the receiver), processed into a lake."""

    cfg: Config
    report: dict
    stats: ProcessorStats
    paid: list[LoggedRequest]
    entries: list[LoggedRequest]
    served_usd: float
    family: str = ""

    def spans(self) -> str:
        """The spans the app ended, when it reports them (for assertion messages)."""
        return json.dumps(self.report.get("spans"), indent=1)


def require_node(app_dir: Path, packages: tuple[str, ...]) -> str:
    """The ``node`` executable, once the app's packages are installed (else skip, or fail in CI)."""
    exe = shutil.which("node")
    if exe is None:
        missing_binary(f"node (Node.js >= 20) is not installed: {app_dir.name}'s app needs it")
    for pkg in packages:
        if not (app_dir / "node_modules" / pkg / "package.json").is_file():
            missing_binary(f"{app_dir}/node_modules is missing: run: npm ci --prefix {app_dir}")
    return exe


def start_standin() -> StandInServer:
    srv = StandInServer(StandInConfig(port=0, latency_scale=0.0, min_cache_tokens=100))
    srv.start()
    return srv


def start_receiver(kafka: KafkaConfig) -> OtlpReceiver:
    forwarder = KafkaForwarder(kafka, produce_timeout_s=10.0, connect_timeout_s=5.0)
    recv = OtlpReceiver(CollectorConfig(), forwarder, host="127.0.0.1", port=0)
    recv.start()
    return recv


def fresh_config(kafka: KafkaConfig, lake: Path) -> Config:
    """As conftest's kafka_config (fresh topics, a unique consumer group, fast joins), with PRICING;
    built here for a module-scoped run (one app run serves several tests)."""
    from costline.localkafka import ensure_topics

    suffix = uuid.uuid4().hex[:8]
    topics = KafkaConfig(bootstrap_servers=kafka.bootstrap, topic=f"otlp_spans_{suffix}",
                         dlq_topic=f"otlp_spans_{suffix}.dlq", partitions=kafka.partitions)
    ensure_topics(topics)
    return Config(kafka=topics, lake=LakeConfig(path=lake), pricing=PRICING, processor=ProcessorConfig(
        group_id=f"costline-test-{uuid.uuid4().hex[:8]}", session_timeout_ms=6000, heartbeat_interval_ms=1000,
        flush_interval_s=0.5))


def run_app(node: str, app: Path, standin: StandInServer, args: list[str], *, fail_first: bool = True) -> dict:
    """``app`` against the stand-in, the first Anthropic request answered 400 (unless not ``fail_first``): its JSON
    report (last line)."""
    if fail_first:
        standin.inject_errors(400, 1)
    try:
        proc = subprocess.run([node, str(app), *args], cwd=app.parent, capture_output=True, text=True,
                              timeout=NODE_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{app.name} ran past {NODE_TIMEOUT_S}s; stderr: {exc.stderr!r}")
    assert proc.returncode == 0, f"{app.name} exited {proc.returncode}: {proc.stderr[-4000:]}"
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines, f"{app.name} printed nothing; stderr: {proc.stderr[-4000:]}"
    report = json.loads(lines[-1])
    report["stderr"] = proc.stderr
    return report


def assert_each_call_once(cfg: Config, n_calls: int, context: object = None) -> None:
    """One call per model request, the failed one included, each in a trace of its own; with no
    costline.request span, each call is a request of its own, one of them no success."""
    assert q(cfg, "SELECT count(*), count(*) FILTER (WHERE error_type IS NOT NULL), count(DISTINCT trace_id) "
                  "FROM calls") == [(n_calls, 1, n_calls)], context
    assert q(cfg, "SELECT count(*), count(*) FILTER (WHERE NOT success), sum(calls) FROM requests") == [
        (n_calls, 1, n_calls)]


def assert_the_failed_call(cfg: Config, error_type: str) -> None:
    """The failed call: its error type, no tokens, no price, no response id; its request no success."""
    assert q(cfg, "SELECT error_type, model, coalesce(cost_usd, 0), input_tokens + output_tokens, response_id "
                  "FROM calls WHERE error_type IS NOT NULL") == [(error_type, "claude-haiku-4-5", 0.0, 0, None)]
    assert q(cfg, "SELECT error_type, calls, coalesce(cost_usd, 0) FROM requests WHERE NOT success") == [
        (error_type, 1, 0.0)]
