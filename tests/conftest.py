"""Shared fixtures. The ``kafka`` fixture starts one real broker per test session
(unless ``KAFKA_BOOTSTRAP_SERVERS`` points at a cluster); ``kafka_topics`` gives each
test its own fresh topics so tests never see each other's messages.

With ``COSTLINE_REQUIRE_EXTRAS=1`` (``scripts/test`` sets it), a test skipped because an import
failed (``pytest.importorskip``, at module level or inside a test) fails instead: CI installs every
extra, so such a skip means coverage silently lost (FAISS, MiniLM, peft...), not an optional part.
The same holds for a program a test needs that CI provides (SeaweedFS's ``weed`` from the ``lake``
extra, PostgreSQL's server from .ci/run): such tests call :func:`missing_binary`, which fails then too.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from costline.config import Config, KafkaConfig, LakeConfig, ProcessorConfig

#: Set to 1 to turn a skip for a missing import into a failure (scripts/test, CI).
REQUIRE_EXTRAS_ENV = "COSTLINE_REQUIRE_EXTRAS"


def _require_extras() -> bool:
    return os.environ.get(REQUIRE_EXTRAS_ENV, "").strip().lower() in ("1", "true", "yes")


def _skipped_for_import(excinfo: pytest.ExceptionInfo[BaseException]) -> bool:
    """A skip raised from inside ``pytest.importorskip`` (whatever its ``reason``)."""
    return excinfo.errisinstance(pytest.skip.Exception) and any(
        entry.frame.code.name == "importorskip" for entry in excinfo.traceback)


def _loud(what: str, message: str) -> str:
    return (f"{what} was skipped for a missing import ({message}) while {REQUIRE_EXTRAS_ENV}=1: install the "
            f"extras (EXTRAS=dev,serving,distill scripts/setup) or run with {REQUIRE_EXTRAS_ENV}=0")


def missing_binary(reason: str) -> NoReturn:
    """Skip the test for a program this host lacks (``reason`` says which and how to get it); with
    COSTLINE_REQUIRE_EXTRAS=1 fail instead: CI has every one (the `lake` extra brings SeaweedFS's `weed`,
    .ci/run installs PostgreSQL), so a skip there is coverage lost."""
    if _require_extras():
        pytest.fail(f"{reason} ({REQUIRE_EXTRAS_ENV}=1: CI provides it, so the test may not skip; "
                    f"install it or run with {REQUIRE_EXTRAS_ENV}=0)", pytrace=False)
    pytest.skip(reason)


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    report = yield
    if report.skipped and _require_extras() and isinstance(report.longrepr, tuple):
        message = str(report.longrepr[2])
        if message.startswith("Skipped: could not import") or message.startswith("could not import"):
            report.outcome = "failed"
            report.longrepr = _loud(collector.nodeid, message)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.skipped and _require_extras() and call.excinfo is not None and _skipped_for_import(call.excinfo):
        report.outcome = "failed"
        report.longrepr = _loud(item.nodeid, str(call.excinfo.value))
    return report


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaConfig]:
    """A running Kafka cluster: an existing one, or a local broker started for this session."""
    from costline.localkafka import LocalKafka

    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield KafkaConfig(bootstrap_servers=external)
        return
    cfg = KafkaConfig(
        port=free_port(),
        controller_port=free_port(),
        data_dir=tmp_path_factory.mktemp("kafka"),
        heap="512m",
        partitions=6,
    )
    broker = LocalKafka(cfg)
    broker.up()
    try:
        yield cfg
    finally:
        broker.down()


@pytest.fixture
def kafka_topics(kafka: KafkaConfig) -> KafkaConfig:
    """The session's cluster with a fresh ``otlp_spans``/DLQ pair for this test."""
    from costline.localkafka import ensure_topics

    suffix = uuid.uuid4().hex[:8]
    cfg = KafkaConfig(
        bootstrap_servers=kafka.bootstrap,
        topic=f"otlp_spans_{suffix}",
        dlq_topic=f"otlp_spans_{suffix}.dlq",
        partitions=kafka.partitions,
    )
    ensure_topics(cfg)
    return cfg


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """A Config whose lake lives in tmp_path; no Kafka."""
    return Config(lake=LakeConfig(path=tmp_path / "lake"))


@pytest.fixture
def kafka_config(kafka_topics: KafkaConfig, tmp_path: Path) -> Config:
    """A full Config on this test's fresh topics, with a unique consumer group and fast group joins."""
    return Config(
        kafka=kafka_topics,
        lake=LakeConfig(path=tmp_path / "lake"),
        processor=ProcessorConfig(
            group_id=f"costline-test-{uuid.uuid4().hex[:8]}",
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
            flush_interval_s=0.5,
            # the tests' spans are dated (2026-05-28...) and their records stamped now: no age bound, or these
            # tests would start nulling span times a year and a bit after they were written
            span_time_max_age_days=0,
        ),
    )


def _memory_tracing(*processors: "object") -> tuple["object", "object"]:
    """A TracerProvider with ``processors`` and then an in-memory exporter of its finished spans."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    for processor in processors:
        provider.add_span_processor(processor)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.fixture
def spans() -> Iterator[tuple["object", "object"]]:
    """An OTel TracerProvider as costline's collectors set one up (request stamping) and the in-memory
    exporter that receives its finished spans → (provider, exporter)."""
    from costline.collectors import RequestStampingProcessor

    provider, exporter = _memory_tracing(RequestStampingProcessor())
    yield provider, exporter
    provider.shutdown()


@pytest.fixture
def plain_spans() -> Iterator[tuple["object", "object"]]:
    """An app's own OTel TracerProvider, without costline's request stamping, and the in-memory exporter that
    receives its finished spans → (provider, exporter)."""
    provider, exporter = _memory_tracing()
    yield provider, exporter
    provider.shutdown()


@pytest.fixture
def openllmetry(spans):
    """OpenLLMetry's Anthropic instrumentation (opentelemetry-instrumentation-anthropic) writing into ``spans``,
    uninstrumented after the test."""
    instrumentation = pytest.importorskip("opentelemetry.instrumentation.anthropic")
    inst = instrumentation.AnthropicInstrumentor()
    inst.instrument(tracer_provider=spans[0])
    yield
    inst.uninstrument()


@pytest.fixture(scope="module")
def standin() -> Iterator["object"]:
    """The local stand-in for the Anthropic / OpenAI-compatible APIs, answering without simulated latency."""
    from costline.serving.settings import StandInConfig
    from costline.sim.standin import StandInServer

    server = StandInServer(StandInConfig(latency_scale=0.0), port=0)
    server.start()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def pipeline(standin) -> Iterator["object"]:
    """The gateway tests' serving pipeline (tests/gateways.py ``standin_pipeline``) in front of the module's
    ``standin``, closed after the module."""
    from gateways import standin_pipeline

    p = standin_pipeline(standin)
    yield p
    p.close()


@pytest.fixture(scope="module")
def cache_standin() -> Iterator["object"]:
    """The stand-in, prompt-caching any breakpoint of 100 tokens or more (the API's minimum is 1,024 or more)."""
    from costline.serving.settings import StandInConfig
    from costline.sim.standin import StandInServer

    server = StandInServer(StandInConfig(port=0, latency_scale=0.0, min_cache_tokens=100))
    server.start()
    yield server
    server.shutdown()


# -- table lake (docs/scale.md): a SeaweedFS object store and a PostgreSQL catalog per session --------
@pytest.fixture(scope="session")
def objstore(tmp_path_factory: pytest.TempPathFactory) -> Iterator["object"]:
    """A local SeaweedFS S3 gateway on a free port (without the `lake` extra: skipped, or failed under
    COSTLINE_REQUIRE_EXTRAS=1)."""
    pytest.importorskip("pyiceberg", reason="the table lake needs `pip install 'costline[lake]'`")
    from costline.localobjstore import LocalObjectStore, weed_binary

    try:
        weed_binary()
    except Exception as exc:  # noqa: BLE001
        missing_binary(str(exc))
    store = LocalObjectStore(tmp_path_factory.mktemp("objstore"), port=free_port(), access_key="costline-test",
                             secret_key="costline-test-secret", buckets=("costline-lake",))
    store.up()
    try:
        yield store
    finally:
        store.down()


@pytest.fixture(scope="session")
def pg_catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throwaway PostgreSQL cluster's SQLAlchemy URL (without PostgreSQL's binaries: skipped, or failed
    under COSTLINE_REQUIRE_EXTRAS=1)."""
    pytest.importorskip("psycopg2", reason="the PostgreSQL catalog needs `pip install 'costline[lake]'`")
    from costline.localcatalog import LocalPostgres, PostgresNotFound

    import shutil
    import tempfile

    # not under pytest's tmp folder: as root, the server runs as `postgres`, which cannot enter it
    folder = tempfile.mkdtemp(prefix="costline-pgcatalog-")
    try:
        pg = LocalPostgres(folder, port=free_port())
    except PostgresNotFound as exc:
        shutil.rmtree(folder, ignore_errors=True)
        missing_binary(str(exc))
    try:
        uri = pg.up()
        yield uri
    finally:
        pg.down()
        shutil.rmtree(folder, ignore_errors=True)
