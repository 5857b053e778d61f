"""More work than one message batch may hold (real anthropic SDK, local stand-in).

The API's limits (platform docs, "Batch limitations"): a batch holds at most 100,000 requests or 256 MB,
whichever comes first. The job splits by both (``BATCH_MAX_REQUESTS``, ``BATCH_MAX_BYTES``; shrunk here),
submits every part before waiting on any, and never sends one request twice.
"""

from __future__ import annotations

import anthropic
import httpx2 as httpx
import pytest

from costline.jobs import teacher
from costline.jobs.teacher import AnswerRequest, Checkpoint, Regenerator
from costline.serving.settings import StandInConfig
from costline.sim.standin import StandInServer


class Sizes(httpx.BaseTransport):
    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.creates: list[int] = []

    def handle_request(self, request):
        if request.method == "POST" and request.url.path == "/v1/messages/batches":
            self.creates.append(len(request.read()))
        return self.inner.handle_request(request)


def test_batches_are_split_by_bytes_and_by_count(tmp_path, monkeypatch):
    monkeypatch.setattr(teacher, "BATCH_MAX_BYTES", 4_000, raising=False)
    monkeypatch.setattr(teacher, "BATCH_MAX_REQUESTS", 4, raising=False)
    clock = [0.0]
    with StandInServer(StandInConfig(port=0, latency_scale=0.0, batch_delay_s=60.0), now=lambda: clock[0]) as srv:
        sizes = Sizes()
        client = anthropic.Anthropic(base_url=srv.url, api_key="x", max_retries=0,
                                     http_client=httpx.Client(transport=sizes))
        # 10 requests of ~1.1 kB each: 3 fit under 4,000 bytes (4 would not); 1 far too big for any batch
        work = [AnswerRequest.of(f"r{i}", "claude-fable-5", f"classify {i} " + "word " * 200) for i in range(10)]
        huge = AnswerRequest.of("big", "claude-fable-5", "x " * 5_000)

        def sleep(s):
            clock[0] += s

        with Checkpoint(tmp_path / "run.sqlite") as ckpt:
            res = Regenerator(client, ckpt, batch=True, sleep=sleep, poll_interval_s=30,
                              max_error_rate=0.1).run(work + [huge])
        assert all(n <= 4_000 for n in sizes.creates), sizes.creates
        assert len(sizes.creates) == 4  # 3 + 3 + 3 + 1
        assert len(res.answers) == 10 and "too large for one message batch" in res.failed[huge.key]
        assert len(srv.log.paid("anthropic-batch")) == 10 and srv.log.duplicate_paid_keys() == {}
        # every part was submitted before the first wait: all ended after one poll interval
        assert clock[0] == pytest.approx(60.0)
