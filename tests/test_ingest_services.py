"""Cost per app: every row carries the ``service.name`` of the resource that sent its span.

Two apps (two OTel SDK resources) call the stand-in through the real anthropic SDK, one with costline's requests
and cache lookups, one with the SDK's own spans only. The lake's ``calls``, ``requests`` and ``lookups`` views say
which app each row came from, and an analyst's cost per app matches the apps' own usage at hand-written prices (never
costline's pricing). Odd resources (a name of 10,000 characters, none at all, several resources in one export) are
kept, cut or NULL, never lost.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costline.collectors import Recorder, RequestStampingProcessor
from costline.config import Config, LakeConfig, ModelPrice, PricingConfig
from costline.processors.records import MAX_SERVICE_NAME_CHARS, MemoPricingTable, flatten_request
from costline.sim.synth import export_request, span

from figures_lake import lake_from_messages, lake_from_sdk_spans, query_lake as q
from sdk_hygiene import pristine_sdks, restore_sdk_classes, sdk_class_attributes  # noqa: F401 (autouse fixture)
from test_ingest_instrumentations import standin  # noqa: F401 (fixture)

anthropic = pytest.importorskip("anthropic")

IN, OUT = 1.0, 5.0  # USD per million tokens, hand-written
READ_X, WRITE_X = 0.1, 1.25


@pytest.fixture
def cfg(tmp_path) -> Config:
    return Config(lake=LakeConfig(path=tmp_path / "lake"), pricing=PricingConfig(
        models=(ModelPrice("claude-haiku-4-5", "budget", input_per_mtok=IN, output_per_mtok=OUT),),
        student_usd_per_hour=0.0, student_providers=()))


def app(service: str | None) -> tuple[TracerProvider, InMemorySpanExporter]:
    provider = TracerProvider(resource=Resource.create({"service.name": service} if service else {}))
    exporter = InMemorySpanExporter()
    provider.add_span_processor(RequestStampingProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def usd(u) -> float:
    read, write = u.cache_read_input_tokens or 0, u.cache_creation_input_tokens or 0
    return (u.input_tokens * IN + read * IN * READ_X + write * IN * WRITE_X + u.output_tokens * OUT) / 1e6


def test_each_row_says_which_app_sent_it_and_cost_per_app_adds_up(standin, cfg):
    support, support_spans = app("support-bot")
    search, search_spans = app("search-api")
    recorder = Recorder(support)
    support_client = anthropic.Anthropic(base_url=standin.url, api_key="test", max_retries=0,
                                         open_telemetry={"tracer_provider": support})
    search_client = anthropic.Anthropic(base_url=standin.url, api_key="test", max_retries=0,
                                        open_telemetry={"tracer_provider": search})
    paid: dict[str, list] = {"support-bot": [], "search-api": []}
    for i in range(3):
        with recorder.request(task_type="faq", tenant="acme") as req:
            with req.cache_lookup(namespace="faq") as lookup:
                lookup.result(hit=False, similarity=0.4)
            paid["support-bot"].append(support_client.messages.create(
                model="claude-haiku-4-5", max_tokens=32,
                messages=[{"role": "user", "content": f"Question {i}: where is my parcel?"}]).usage)
            req.accept()
    for i in range(2):
        paid["search-api"].append(search_client.messages.create(
            model="claude-haiku-4-5", max_tokens=32,
            messages=[{"role": "user", "content": f"Rewrite query {i}"}]).usage)
    lake_from_sdk_spans([*support_spans.get_finished_spans(), *search_spans.get_finished_spans()], cfg)

    assert q(cfg, "SELECT service_name, count(*), sum(cost_usd) FROM calls GROUP BY 1 ORDER BY 1") == [
        (name, len(us), pytest.approx(sum(usd(u) for u in us), rel=1e-9)) for name, us in sorted(paid.items())]
    assert q(cfg, "SELECT service_name, count(*), count(*) FILTER (WHERE standalone), sum(cost_usd) FROM requests "
                  "GROUP BY 1 ORDER BY 1") == [
        ("search-api", 2, 2, pytest.approx(sum(usd(u) for u in paid["search-api"]), rel=1e-9)),
        ("support-bot", 3, 0, pytest.approx(sum(usd(u) for u in paid["support-bot"]), rel=1e-9))]
    assert q(cfg, "SELECT service_name, count(*) FROM lookups GROUP BY 1") == [("support-bot", 3)]
    # docs/sql.md's recipe "Which app spends what"
    doc = (Path(__file__).parents[1] / "docs" / "sql.md").read_text(encoding="utf-8")
    recipe = doc.split("Which app spends what", 1)[1].split("```sql", 1)[1].split("```", 1)[0]
    assert sorted(r[1:4] for r in q(cfg, recipe)) == [
        (name, len(us), pytest.approx(sum(usd(u) for u in us), rel=1e-9)) for name, us in sorted(paid.items())]


def test_odd_resources_are_cut_or_null_and_no_span_is_lost(cfg):
    """A name of 10,000 characters is cut; a resource without one (or with a name that is no string) gives NULL
    or its JSON; several resources in one export keep their own names."""
    request = ExportTraceServiceRequest()
    names = ["x" * 10_000, None, "billing", 7]
    for n, name in enumerate(names):
        one = export_request([span("chat claude-haiku-4-5", trace_id=bytes([n + 1]) * 16, span_id=bytes([n + 1]) * 8,
                                   start_ns=1_780_000_000 * 10**9, end_ns=1_780_000_001 * 10**9, attributes={
                                       "gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
                                       "gen_ai.request.model": "claude-haiku-4-5", "gen_ai.usage.input_tokens": 10,
                                       "gen_ai.usage.output_tokens": 2})])
        resource = one.resource_spans[0].resource
        del resource.attributes[:]
        if name is not None:
            kv = resource.attributes.add()
            kv.key = "service.name"
            if isinstance(name, int):
                kv.value.int_value = name
            else:
                kv.value.string_value = name
        request.resource_spans.extend(one.resource_spans)
    rows = list(flatten_request(request, MemoPricingTable()))
    assert [r.service_name for r in rows] == ["x" * MAX_SERVICE_NAME_CHARS, None, "billing", "7"]
    lake_from_messages([request.SerializeToString()], cfg)
    assert q(cfg, "SELECT length(service_name), count(*) FROM calls GROUP BY 1 ORDER BY 1 NULLS LAST") == [
        (1, 1), (7, 1), (128, 1), (None, 1)]


def test_the_processors_own_decoding_keeps_the_service_too(cfg):
    """``flatten_into`` (what ``costline process`` runs) gives the rows ``flatten_message`` gives, service included."""
    from costline.processors.decode import decode_message, flatten_into, flatten_message

    request = export_request([span("chat claude-haiku-4-5", trace_id=b"\x05" * 16, span_id=b"\x06" * 8,
                                   start_ns=1_780_000_000 * 10**9, end_ns=1_780_000_001 * 10**9, attributes={
                                       "gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
                                       "gen_ai.request.model": "claude-haiku-4-5", "gen_ai.usage.input_tokens": 10,
                                       "gen_ai.usage.output_tokens": 2})], service="billing")
    value = request.SerializeToString()
    requests, calls, lookups, unpriced = [], [], [], []
    flatten_into(decode_message(value), MemoPricingTable(), 0, 7, requests, calls, lookups, unpriced)
    assert calls == flatten_message(decode_message(value), MemoPricingTable(), 0, 7).rows
    assert [c.service_name for c in calls] == ["billing"]


@pytest.mark.kafka
def test_two_apps_through_kafka_and_the_processor(standin, kafka_config):
    """Two apps export through costline's Kafka exporter; ``costline process``'s own loop writes the lake: each
    row says its app."""
    from costline.collectors import KafkaSpanExporter
    from costline.processors import Processor

    pricing = PricingConfig(models=(ModelPrice("claude-haiku-4-5", "budget", input_per_mtok=IN, output_per_mtok=OUT),),
                            student_usd_per_hour=0.0, student_providers=())
    config = kafka_config.replace(pricing=pricing)
    paid = {}
    for service in ("support-bot", "search-api"):
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(SimpleSpanProcessor(KafkaSpanExporter(config.kafka)))
        client = anthropic.Anthropic(base_url=standin.url, api_key="test", max_retries=0,
                                     open_telemetry={"tracer_provider": provider})
        paid[service] = [client.messages.create(model="claude-haiku-4-5", max_tokens=32, messages=[
            {"role": "user", "content": f"{service} question {i}"}]).usage for i in range(2)]
        provider.shutdown()
    stats = Processor(config).run(until_idle=1.5)
    assert stats.spans == 4 and stats.dlq == 0
    assert q(config, "SELECT service_name, count(*), sum(cost_usd) FROM calls GROUP BY 1 ORDER BY 1") == [
        (name, 2, pytest.approx(sum(usd(u) for u in us), rel=1e-9)) for name, us in sorted(paid.items())]
