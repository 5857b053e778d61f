"""The routing gate judges a moved request as the shadow job scores its pairs (jobs/shadow.py): a subtype the drift
job judges with an LLM is compared by cosine (agreement of free text, not quality: exact match would call every
paraphrase a miss), and ``[jobs.drift.answer_patterns]`` apply per subtype. Before, the gate used exact match and
no patterns, and failed every policy that moved such traffic down while the shadow job found the cheaper tier
adequate.

The real anthropic SDK over an httpx MockTransport answering as the Messages API, one fixed answer per model; the
cosine is MiniLM's, faked here with a constant (the gate's embedder is injectable)."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime

import httpx2 as httpx
import numpy as np
import pytest

from costline.config import Config, LakeConfig
from costline.serving.routing.gate import LakeJudge
from costline.serving.routing.labels import LakeLabel

anthropic = pytest.importorskip("anthropic")

BUDGET, MID = "claude-haiku-4-5", "claude-sonnet-4-6"


class SameVector:
    """Every text embeds to one vector: cosine 1 between any two answers."""

    def encode(self, texts):
        return np.tile(np.array([1.0, 0.0]), (len(texts), 1))


def client(answers: dict[str, str]):
    def handler(request: httpx.Request) -> httpx.Response:
        model = json.loads(request.content)["model"]
        return httpx.Response(200, json={
            "id": "msg_1", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": answers[model]}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 5}})

    return anthropic.Anthropic(base_url="http://test", api_key="x", max_retries=0,
                               http_client=httpx.Client(transport=httpx.MockTransport(handler)))


@pytest.mark.parametrize(("subtype", "metric", "budget", "mid"), [
    # the answer pattern of its subtype reads the label out of differently worded answers
    ("sentiment", "exact", "Sentiment: positive. The customer praises the fast delivery.",
     "Positive - the reviewer is happy with how quickly it arrived."),
    # a judged subtype: two paraphrases agree (cosine 1 here), where exact match read them as a miss
    ("summary", "judge", "The customer wants the order shipped to the new address on file.",
     "Ship the order to the customer's new address on file."),
])
def test_the_gate_judges_a_moved_request_as_the_shadow_job_scores_it(tmp_path, subtype, metric, budget, mid):
    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"))
    drift = dataclasses.replace(cfg.jobs.drift, metrics={**cfg.jobs.drift.metrics, subtype: metric},
                                answer_patterns={"sentiment": r"(?i)^\W*(?:sentiment:\s*)?(positive|negative|neutral)\b"})
    cfg = cfg.replace(jobs=dataclasses.replace(cfg.jobs, drift=drift))
    row = LakeLabel(request_id=f"r-{subtype}", ts=datetime(2026, 1, 1), query="q", task_type="support",
                    subtype=subtype, served_tier="mid", routed_tier="mid", lo="budget", hi=None, source="none",
                    messages_doc=json.dumps([{"role": "user", "parts": [{"type": "text", "content": "q"}]}]))
    verdicts, _cost = LakeJudge(cfg, client=client({BUDGET: budget, MID: mid}), embedder=SameVector())(
        [(row, "budget", "mid")])
    assert verdicts == {row.request_id: True}
