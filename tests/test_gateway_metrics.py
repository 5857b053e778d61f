"""The gateway's requests reach the OTel metrics pipeline: gen_ai.client.token.usage with the tokens
the model reported, costline.cache.lookups / hits per lookup (the wiring of `costline serve --metrics`
is checked through its Prometheus endpoint in test_gateway_cli.py)."""

from __future__ import annotations

import dataclasses

import anthropic
import openai
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from gateways import DictCache

from costline.collectors import Recorder
from costline.collectors.metrics import CostlineMetrics
from costline.config import Config
from costline.serving.gateway.app import Gateway
from costline.serving.pipeline import Pipeline
from costline.serving.settings import BackendsConfig, GatewayConfig, StandInConfig
from costline.sim.standin import StandInServer

QUESTION = "How do I reset my password?"


def points(reader: InMemoryMetricReader) -> dict[str, list]:
    data = reader.get_metrics_data()
    out: dict[str, list] = {}
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                out.setdefault(metric.name, []).extend(metric.data.data_points)
    return out


def test_a_request_counts_its_tokens_and_its_cache_lookup(tmp_path) -> None:
    standin = StandInServer(StandInConfig(latency_scale=0.0), port=0)
    standin.start()
    reader = InMemoryMetricReader()
    metrics = CostlineMetrics(MeterProvider(metric_readers=[reader]))
    cfg = Config()
    serving = dataclasses.replace(cfg.serving, backends=BackendsConfig(
        anthropic_base_url=standin.url, student_base_url=standin.openai_url, max_retries=0))
    pipeline = Pipeline.from_config(cfg.replace(serving=serving), recorder=Recorder(TracerProvider(), metrics=metrics),
                                    cache=DictCache(), confidence=None, env={})
    gw = Gateway(pipeline, GatewayConfig(keys_file=tmp_path / "keys.json"), port=0)
    gw.start()
    try:
        app = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0)
        ask = dict(model="m", max_tokens=120, messages=[{"role": "user", "content": QUESTION}])
        done = app.chat.completions.create(**ask)
        # the usage the stand-in model reports for this prompt, asked directly
        direct = anthropic.Anthropic(base_url=standin.url, api_key="x", max_retries=0).messages.create(
            model=done.model, max_tokens=120, messages=[{"role": "user", "content": QUESTION}]).usage
        got = points(reader)
        tokens = {p.attributes["gen_ai.token.type"]: (p.count, p.sum) for p in got["gen_ai.client.token.usage"]}
        assert tokens == {"input": (1, direct.input_tokens), "output": (1, direct.output_tokens)}
        assert [p.value for p in got["costline.cache.lookups"]] == [1]
        assert "costline.cache.hits" not in got or [p.value for p in got["costline.cache.hits"]] == [0]
        app.chat.completions.create(**ask)  # a cache hit: one more lookup and a hit, no model call
        got = points(reader)
        assert [p.value for p in got["costline.cache.lookups"]] == [2]
        assert [p.value for p in got["costline.cache.hits"]] == [1]
        tokens = {p.attributes["gen_ai.token.type"]: (p.count, p.sum) for p in got["gen_ai.client.token.usage"]}
        assert tokens == {"input": (1, direct.input_tokens), "output": (1, direct.output_tokens)}
    finally:
        gw.shutdown()
        pipeline.close()
        standin.shutdown()
