"""The gateway loads the cache's embedding model and pair model when it starts, not on the first request:
/readyz answers 503 until they (the default ONNX ones, real) are loaded, then 200."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import urllib.error
import urllib.request

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("faiss")

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402

from costline.collectors import Recorder  # noqa: E402
from costline.config import Config  # noqa: E402
from costline.serving.cache.semantic import SemanticCache  # noqa: E402
from costline.serving.embedding_onnx import OnnxEmbedder  # noqa: E402
from costline.serving.gateway.app import Gateway  # noqa: E402
from costline.serving.pipeline import Pipeline  # noqa: E402
from costline.serving.settings import BackendsConfig, CacheConfig, GatewayConfig  # noqa: E402


class GatedEmbedder(OnnxEmbedder):
    """The real ONNX embedder, whose model load waits for ``release`` (a slow export, in effect)."""

    def __init__(self) -> None:
        super().__init__(threads=1)
        self.release = threading.Event()
        self.load_started = threading.Event()

    def _load_model(self):
        self.load_started.set()
        assert self.release.wait(60)
        return super()._load_model()


def readyz(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_readyz_waits_for_the_embedding_model_and_no_request_loads_it(tmp_path):
    embedder = GatedEmbedder()
    cfg = Config()
    serving = dataclasses.replace(cfg.serving, backends=BackendsConfig(anthropic_base_url="http://127.0.0.1:9",
                                                                        max_retries=0))
    pipeline = Pipeline.from_config(cfg.replace(serving=serving), recorder=Recorder(TracerProvider()),
                                    cache=SemanticCache(embedder, CacheConfig()), env={})
    gw = Gateway(pipeline, GatewayConfig(keys_file=tmp_path / "keys.json"), port=0)
    gw.start()
    try:
        assert embedder.load_started.wait(30)  # the gateway began loading it without any request
        status, doc = readyz(gw.url)
        assert (status, doc["status"]) == (503, "warming up (embedding model, pair model, cache replica)")
        assert not pipeline.cache.verifier.pair_model.loaded
        embedder.release.set()
        for _ in range(600):
            status, doc = readyz(gw.url)
            if status == 200:
                break
            time.sleep(0.05)
        assert (status, doc["status"]) == (200, "ready")
        assert embedder.loaded and pipeline.cache.verifier.pair_model.loaded  # no request asked for either
    finally:
        embedder.release.set()
        gw.shutdown()
        embedder.shutdown()
        pipeline.close()
