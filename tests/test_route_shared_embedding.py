"""One embedding per request: a learned MiniLM policy decides on the vector the semantic cache
computes anyway (real MiniLM, real FAISS), instead of running the model a second time."""

from __future__ import annotations

import dataclasses

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costline.collectors import Recorder
from costline.config import Config
from costline.serving.cache.semantic import SemanticCache
from costline.serving.embedding import Embedder
from costline.serving.pipeline import Pipeline
from costline.serving.routing.learned import LabelledQuery, train_policy
from costline.serving.routing.router import Router
from costline.serving.settings import BackendsConfig, CacheConfig, StandInConfig
from costline.sim.standin import StandInServer

ROWS = [LabelledQuery(q, "faq", tier) for q, tier in [
    ("what are your opening hours", "budget"), ("where is my parcel", "budget"),
    ("how do I reset my password", "budget"), ("can I change my delivery address", "budget"),
    ("compare these two contracts clause by clause and list the risks", "upper"),
    ("draft a migration plan for our billing database with rollback steps", "upper"),
    ("analyse the churn drivers in this quarterly report and propose fixes", "upper"),
    ("review this architecture for single points of failure", "upper"),
]]


def test_the_router_reuses_the_caches_embedding_of_the_query(tmp_path):
    cache_embedder = Embedder().load()
    policy_embedder = Embedder().load()  # what the policy would embed with on its own
    policy = train_policy(ROWS, featurizer=policy_embedder)
    standin = StandInServer(StandInConfig(latency_scale=0.0), port=0)
    standin.start()
    try:
        cfg = Config()
        serving = dataclasses.replace(cfg.serving, backends=BackendsConfig(
            anthropic_base_url=standin.url, student_base_url=standin.openai_url, max_retries=0))
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
        cache = SemanticCache(cache_embedder, CacheConfig(path=tmp_path / "cache"))
        pipeline = Pipeline.from_config(cfg.replace(serving=serving), recorder=Recorder(provider), cache=cache,
                                        validator=None, policy=policy, env={})
        assert isinstance(pipeline.router, Router) and pipeline.router.reads_embeddings
        before = policy_embedder.memo_misses
        queries = ["what time do you open on saturdays", "please review this design for single points of failure"]
        for q in queries:
            pipeline.answer(q, task_type="faq", tenant="acme")
        # the policy's own embedder never ran; the cache's ran once per query (its memo served the lookup)
        assert policy_embedder.memo_misses == before
        assert cache_embedder.memo_misses == len(queries)
        # and the decision is the one the policy makes embedding the query itself
        for q in queries:
            assert pipeline.router.route(q, "faq", embedding=cache_embedder.encode([q])[0]).tier == \
                policy.route(q, "faq").tier
    finally:
        standin.shutdown()
