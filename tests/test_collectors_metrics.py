"""GenAI client metrics and costline's own, recorded by the Recorder through the OTel SDK's
metrics pipeline: values read back with the SDK's InMemoryMetricReader, a Prometheus scrape over
HTTP, an OTLP/HTTP push decoded with opentelemetry-proto, and the [collector] metrics_* keys."""

from __future__ import annotations

import gzip
import http.server
import threading
import urllib.request

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

from costline.collectors import Recorder
from costline.collectors.metrics import CostlineMetrics, setup_metrics
from costline.config import CollectorConfig, PricingConfig, load_config
from costline.errors import ConfigError
from costline.pricing import PricingTable

HAIKU_IN, HAIKU_OUT = 0.80 / 1e6, 4.0 / 1e6  # USD per token, the article's June 2026 prices


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def points(reader: InMemoryMetricReader) -> dict[str, list]:
    """metric name -> its data points (one collection)."""
    out: dict[str, list] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out.setdefault(m.name, []).extend(m.data.data_points)
    return out


def by_attrs(pts: list, **attrs: str) -> list:
    return [p for p in pts if all(p.attributes.get(k.replace("__", ".")) == v for k, v in attrs.items())]


def traffic(recorder: Recorder, clock: Clock) -> None:
    """One request: a miss then a hit lookup, a failed budget call, an escalated mid call."""
    with recorder.request(task_type="faq", tenant="acme") as req:
        with req.cache_lookup(namespace="acme") as lk:
            lk.result(hit=False, similarity=0.5)
        with req.cache_lookup(namespace="acme") as lk:
            lk.result(hit=True, similarity=0.97)
        with req.call(provider="anthropic", model="claude-haiku-4-5", tier="budget") as call:
            clock.t += 0.25
            call.usage(input_tokens=1200, output_tokens=80)
            call.response(model="claude-haiku-4-5-20251001", finish_reasons=["end_turn"])
        req.attempt_rejected("budget", "validator")
        with req.call(provider="anthropic", model="claude-sonnet-4-6", tier="mid") as call:
            clock.t += 1.5
            call.error("overloaded_error")
        req.attempt_rejected("mid", "OverloadedError")
        with req.call(provider="anthropic", model="claude-sonnet-4-6", tier="mid") as call:
            clock.t += 0.5
            call.usage(input_tokens=10, output_tokens=2)
            call.cost(0.5)
        req.accept()


@pytest.fixture
def recorded():
    reader = InMemoryMetricReader()
    clock = Clock()
    setup = setup_metrics("test", config=CollectorConfig(), readers=[reader],
                          pricing=PricingTable(PricingConfig()), now=clock)
    recorder = Recorder(TracerProvider(), metrics=setup.metrics)
    traffic(recorder, clock)
    yield points(reader)
    setup.shutdown()


def test_token_usage_histogram_per_token_type(recorded):
    pts = recorded["gen_ai.client.token.usage"]
    haiku = by_attrs(pts, gen_ai__request__model="claude-haiku-4-5")
    assert {p.attributes["gen_ai.token.type"]: (p.sum, p.count) for p in haiku} == {"input": (1200, 1), "output": (80, 1)}
    assert haiku[0].attributes["gen_ai.operation.name"] == "chat"
    assert haiku[0].attributes["gen_ai.provider.name"] == "anthropic"
    assert haiku[0].attributes["gen_ai.response.model"] == "claude-haiku-4-5-20251001"
    sonnet = by_attrs(pts, gen_ai__request__model="claude-sonnet-4-6")
    assert sorted((p.attributes["gen_ai.token.type"], p.sum) for p in sonnet) == [("input", 10), ("output", 2)]
    assert list(haiku[0].explicit_bounds[:4]) == [1, 4, 16, 64]  # the semconv's advisory buckets


def test_operation_duration_with_error_type(recorded):
    pts = recorded["gen_ai.client.operation.duration"]
    assert [p.sum for p in by_attrs(pts, gen_ai__request__model="claude-haiku-4-5")] == [0.25]
    failed = [p for p in pts if "error.type" in p.attributes]
    assert [(p.attributes["error.type"], p.sum, p.count) for p in failed] == [("overloaded_error", 1.5, 1)]
    ok_sonnet = [p for p in by_attrs(pts, gen_ai__request__model="claude-sonnet-4-6") if "error.type" not in p.attributes]
    assert [(p.sum, p.count) for p in ok_sonnet] == [(0.5, 1)]


def test_cache_escalation_and_cost_counters(recorded):
    assert [(dict(p.attributes), p.value) for p in recorded["costline.cache.lookups"]] == [
        ({"costline.cache.namespace": "acme"}, 2)]
    assert [p.value for p in recorded["costline.cache.hits"]] == [1]
    assert [(dict(p.attributes), p.value) for p in recorded["costline.escalations"]] == [({"costline.tier": "mid"}, 1)]
    assert sorted((p.attributes["costline.tier"], p.attributes["costline.problem"], p.value)
                  for p in recorded["costline.rejected_attempts"]) == [("budget", "validator", 1),
                                                                       ("mid", "OverloadedError", 1)]
    cost = {p.attributes["gen_ai.request.model"]: (p.value, p.attributes["costline.tier"]) for p in recorded["costline.cost"]}
    assert cost["claude-haiku-4-5"][0] == pytest.approx(1200 * HAIKU_IN + 80 * HAIKU_OUT)
    assert cost["claude-haiku-4-5"][1] == "budget"
    assert cost["claude-sonnet-4-6"] == (0.5, "mid")  # the explicit cost; the failed call cost nothing


def test_recording_never_raises_into_the_app():
    reader = InMemoryMetricReader()

    def broken_clock() -> float:
        raise RuntimeError("clock gone")

    setup = setup_metrics("test", config=CollectorConfig(), readers=[reader], now=broken_clock)
    recorder = Recorder(TracerProvider(), metrics=setup.metrics)
    with recorder.request(tenant="acme") as req:
        with req.cache_lookup(namespace="acme") as lk:
            lk.result(hit=True)
        with req.call(provider="anthropic", model="claude-haiku-4-5") as call:
            call.usage(input_tokens="many", output_tokens=-1)  # bad values: dropped
    got = points(reader)
    assert [p.value for p in got["costline.cache.lookups"]] == [1]  # what could be recorded was
    assert "gen_ai.client.operation.duration" not in got
    setup.shutdown()


def test_prometheus_scrape_endpoint_serves_the_values():
    from prometheus_client.parser import text_string_to_metric_families

    setup = setup_metrics("test", config=CollectorConfig(metrics_prometheus=True, metrics_prometheus_port=0),
                          pricing=PricingTable(PricingConfig()), now=Clock())
    try:
        assert setup.prometheus_url.startswith("http://127.0.0.1:")
        recorder = Recorder(TracerProvider(), metrics=setup.metrics)
        traffic(recorder, Clock())
        with urllib.request.urlopen(setup.prometheus_url, timeout=10) as resp:
            text = resp.read().decode()
        samples = {(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if not k.startswith("otel_scope_")))): s.value
                   for fam in text_string_to_metric_families(text) for s in fam.samples}
        assert samples[("costline_cache_lookups_total", (("costline_cache_namespace", "acme"),))] == 2
        assert samples[("costline_cache_hits_total", (("costline_cache_namespace", "acme"),))] == 1
        usage = {k: v for k, v in samples.items() if k[0] == "gen_ai_client_token_usage_sum"}
        assert sorted(usage.values()) == [2, 10, 80, 1200]
    finally:
        setup.shutdown()


def test_otlp_push_carries_the_values():
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    bodies: list[bytes] = []

    class Sink(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            bodies.append(gzip.decompress(body) if self.headers.get("Content-Encoding") == "gzip" else body)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1/metrics"
    setup = setup_metrics("test", config=CollectorConfig(metrics_otlp=True, metrics_otlp_endpoint=url,
                                                        metrics_export_interval_s=3600), now=Clock())
    try:
        recorder = Recorder(TracerProvider(), metrics=setup.metrics)
        traffic(recorder, Clock())
        assert setup.force_flush()
    finally:
        setup.shutdown()
        server.shutdown()
    values = {}
    for body in bodies:
        req = ExportMetricsServiceRequest.FromString(body)
        for rm in req.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.HasField("sum"):
                        values[m.name] = max(values.get(m.name, 0), sum(p.as_int or p.as_double for p in m.sum.data_points))
    assert values["costline.cache.lookups"] == 2
    assert values["costline.cache.hits"] == 1
    assert values["costline.escalations"] == 1


@pytest.mark.parametrize(
    "toml, key",
    [
        ("metrics_export_interval_s = 0", "metrics_export_interval_s"),
        ("metrics_prometheus_port = 70000", "metrics_prometheus_port"),
        ('metrics_otlp_endpoint = "127.0.0.1:4318"', "metrics_otlp_endpoint"),
        ('metrics_prometheus_host = ""', "metrics_prometheus_host"),
    ],
)
def test_bad_metrics_settings_name_the_key(tmp_path, toml, key):
    f = tmp_path / "costline.toml"
    f.write_text(f"[collector]\n{toml}\n")
    with pytest.raises(ConfigError) as info:
        load_config(f, env={})
    assert info.value.key == f"[collector] {key}"


def test_a_port_in_use_is_a_clear_error():
    from costline.collectors.errors import CollectorError

    taken = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    try:
        cfg = CollectorConfig(metrics_prometheus=True, metrics_prometheus_port=taken.server_address[1])
        with pytest.raises(CollectorError, match="metrics_prometheus_port"):
            setup_metrics("test", config=cfg)
    finally:
        taken.server_close()


def test_metrics_on_the_global_provider_by_default():
    assert CostlineMetrics().meter_provider is None  # get_meter falls back to the global provider


def test_the_cache_counts_are_observed_at_each_collection():
    """costline serve hands the cache's counts to the metrics: entries, removals by reason, refused stores."""
    import hashlib

    import numpy as np

    pytest.importorskip("faiss")
    from costline.serving.cache.semantic import REFUSED_ID, SemanticCache
    from costline.serving.settings import CacheConfig

    class Embedder:
        dim, model_name = 8, "fake"

        def encode(self, texts):
            rows = [np.random.default_rng(int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little"))
                    .normal(size=8).astype(np.float32) for t in texts]
            return np.stack([r / np.linalg.norm(r) for r in rows])

    reader = InMemoryMetricReader()
    setup = setup_metrics("test", config=CollectorConfig(), readers=[reader])
    cache = SemanticCache(Embedder(), CacheConfig(ttl_s=600))
    setup.metrics.observe_cache(cache.stats)
    for i in range(3):
        cache.store(f"question {i}", "answer", tenant="acme", doc_hashes=[f"doc{i}"])
    assert cache.invalidate_by_doc("doc1") == 1
    assert cache.store("question 1", "late answer", tenant="acme", doc_hashes=["doc1"]) == REFUSED_ID
    assert cache.store("question 9", "late answer", tenant="acme", doc_hashes=["doc1", "doc9"]) == REFUSED_ID
    got = points(reader)
    assert [p.value for p in got["costline.cache.entries"]] == [2]  # 3 stored, 1 invalidated, 2 refused
    removals = {p.attributes["costline.cache.removal_reason"]: p.value for p in got["costline.cache.removals"]}
    assert removals == {"evicted": 0, "expired": 0, "invalidated": 1}
    assert [(dict(p.attributes), p.value) for p in got["costline.cache.stores_refused"]] == [
        ({"costline.cache.refused_reason": "invalidated_doc"}, 2)]

    setup.shutdown()


def test_a_cache_whose_counts_fail_reports_nothing_and_raises_nothing():
    reader = InMemoryMetricReader()
    setup = setup_metrics("test", config=CollectorConfig(), readers=[reader])

    def broken():
        raise RuntimeError("cache gone")

    setup.metrics.observe_cache(broken)
    setup.metrics.lookup(hit=True)
    got = points(reader)  # the collection goes on: what could be read is there
    assert [p.value for p in got["costline.cache.lookups"]] == [1]
    assert not any(got.get(name) for name in ("costline.cache.entries", "costline.cache.removals",
                                              "costline.cache.stores_refused"))
    setup.shutdown()


def test_a_replicated_caches_counts_are_reported_at_each_collection():
    from costline.serving.cache.replication import ReplicationStats

    reader = InMemoryMetricReader()
    setup = setup_metrics("test", config=CollectorConfig(), readers=[reader])
    now = {"stats": ReplicationStats(published=7, dropped=2, send_errors=3, applied=11, own=4, skipped=5,
                                     skipped_by_reason={"bad_value": 4, "expired": 1}, offset=20,
                                     retry_pending=1, invalidations_lost=6, refused_tenant=8, lag=9)}
    setup.metrics.observe_replication(lambda: now["stats"])
    got = points(reader)

    def value(name, **attrs):
        (point,) = by_attrs(got[name], **attrs)
        return point.value

    assert [value(f"costline.cache.replication.{n}") for n in (
        "published", "dropped", "send_errors", "applied", "invalidations_lost", "retry_pending", "lag")] == [
        7, 2, 3, 11, 6, 1, 9]
    assert {p.attributes["costline.cache.skip_reason"]: p.value
            for p in got["costline.cache.replication.skipped"]} == {"bad_value": 4, "expired": 1}
    assert value("costline.cache.replication.refused", costline__cache__refused_reason="invalidated_tenant") == 8
    now["stats"] = ReplicationStats(published=0, dropped=0, send_errors=0, applied=0, own=0, skipped=0, lag=None)
    assert not points(reader).get("costline.cache.replication.lag")  # unknown: no point, not a made-up 0
    setup.shutdown()


def test_replication_counts_that_fail_report_nothing_and_raise_nothing():
    reader = InMemoryMetricReader()
    setup = setup_metrics("test", config=CollectorConfig(), readers=[reader])

    def broken():
        raise RuntimeError("replicator gone")

    setup.metrics.observe_replication(broken)
    setup.metrics.lookup(hit=False)
    got = points(reader)
    assert [p.value for p in got["costline.cache.lookups"]] == [1]
    assert not any(v for k, v in got.items() if k.startswith("costline.cache.replication."))
    setup.shutdown()
