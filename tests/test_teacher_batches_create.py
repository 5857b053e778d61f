"""Creating a message batch: never a second paid batch for the same items (real anthropic SDK, local stand-in).

The Message Batches API does not deduplicate ``custom_id`` across batches, and the SDK sends no idempotency
header (``_idempotency_header`` is None): a batch created but not recorded (a kill, a timed-out response the
SDK retries) is paid again by the next create. The job records its intent before the create and, when it
cannot tell whether a create went through, finds the batch in ``GET /v1/messages/batches`` instead.
"""

from __future__ import annotations

import anthropic
import httpx2 as httpx
import pytest

from costline.jobs.errors import TeacherError
from costline.jobs.teacher import AnswerRequest, Checkpoint, Regenerator
from costline.serving.settings import StandInConfig
from costline.sim.standin import StandInServer


class Killed(BaseException):
    pass


def reqs(n, model="claude-fable-5"):
    return [AnswerRequest.of(f"r{i}", model, f"classify {i}") for i in range(n)]


@pytest.fixture
def srv():
    with StandInServer(StandInConfig(port=0, latency_scale=0.0, batch_delay_s=0.0)) as s:
        yield s


def test_a_kill_between_create_and_recording_the_id_does_not_pay_a_second_batch(tmp_path, srv, monkeypatch):
    client = anthropic.Anthropic(base_url=srv.url, api_key="x", max_retries=0)
    work = reqs(12)
    real_add = Checkpoint.add_batch

    def die(self, batch_id, keys, **kw):  # the process dies after the API answered, before the id is written
        raise Killed

    monkeypatch.setattr(Checkpoint, "add_batch", die)
    with Checkpoint(tmp_path / "run.sqlite") as ckpt:
        with pytest.raises(Killed):
            Regenerator(client, ckpt, batch=True, sleep=lambda s: None).run(work)
    assert len(srv.log.paid("anthropic-batch")) == 12  # the batch was created (and is paid)
    monkeypatch.setattr(Checkpoint, "add_batch", real_add)
    with Checkpoint(tmp_path / "run.sqlite") as ckpt:  # the next night
        res = Regenerator(client, ckpt, batch=True, sleep=lambda s: None).run(work)
    assert len(res.answers) == 12
    assert len(srv.log.paid("anthropic-batch")) == 12, "a second batch paid for the same 12 items"
    assert srv.log.duplicate_paid_keys() == {}


class LoseFirstCreateResponse(httpx.BaseTransport):
    """Forwards to the stand-in; the first batch create reaches it but its response is lost (a read timeout)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.creates = 0

    def handle_request(self, request):
        resp = self.inner.handle_request(request)
        if request.method == "POST" and request.url.path == "/v1/messages/batches":
            self.creates += 1
            if self.creates == 1:
                resp.read()
                resp.close()
                raise httpx.ReadTimeout("timed out", request=request)
        return resp


def test_a_create_whose_response_is_lost_is_not_retried_into_a_second_batch(tmp_path, srv):
    transport = LoseFirstCreateResponse()
    # the jobs' client: [jobs.teacher] max_retries = 3 SDK retries
    client = anthropic.Anthropic(base_url=srv.url, api_key="x", max_retries=3,
                                 http_client=httpx.Client(transport=transport))
    with Checkpoint(tmp_path / "run.sqlite") as ckpt:
        res = Regenerator(client, ckpt, batch=True, sleep=lambda s: None).run(reqs(10))
    assert len(res.answers) == 10
    assert len(srv.log.paid("anthropic-batch")) == 10, "the SDK re-POSTed the create: two paid batches"
    assert srv.log.duplicate_paid_keys() == {}


def test_429_and_529_on_create_are_retried_then_reported(tmp_path, srv):
    client = anthropic.Anthropic(base_url=srv.url, api_key="x", max_retries=2)
    srv.inject_errors(529, 1)
    srv.inject_errors(429, 1)
    waits = []
    with Checkpoint(tmp_path / "run.sqlite") as ckpt:
        res = Regenerator(client, ckpt, batch=True, sleep=waits.append).run(reqs(5))
    assert len(res.answers) == 5 and len(srv.log.paid("anthropic-batch")) == 5
    srv.inject_errors(429, 10)
    with Checkpoint(tmp_path / "run2.sqlite") as ckpt:
        with pytest.raises(TeacherError, match="refused.*429.*run the job again"):
            Regenerator(client, ckpt, batch=True, sleep=waits.append).run(reqs(5))
        assert ckpt.open_batches() == []
    srv.clear_errors()
    assert len(srv.log.paid("anthropic-batch")) == 5
