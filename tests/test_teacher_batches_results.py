"""Reading a message batch's results (real anthropic SDK over a MockTransport batches API).

Each result line is matched to its request by ``custom_id`` (the SDK: "Results are not guaranteed to be in
the same order as requests"); ``errored`` / ``canceled`` / ``expired`` results are not billed and are
resubmitted by the next run; a line that cannot be read, or a ``custom_id`` this batch never sent, must
neither stop the run nor be charged to it.
"""

from __future__ import annotations

import json

import anthropic
import httpx2 as httpx
import pytest

from costline.jobs.errors import TeacherError
from costline.jobs.teacher import AnswerRequest, Checkpoint, Regenerator


def reqs(n):
    return [AnswerRequest.of(f"r{i}", "claude-fable-5", f"classify {i}") for i in range(n)]


def message(text, inp=100, out=10):
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-fable-5",
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": inp, "output_tokens": out, "cache_read_input_tokens": 0,
                      "cache_creation_input_tokens": 0}}


def ok(cid, text):
    return json.dumps({"custom_id": cid, "result": {"type": "succeeded", "message": message(text)}}) + "\n"


def err(cid, kind, msg="x"):
    return json.dumps({"custom_id": cid, "result": {"type": "errored", "error": {
        "type": "error", "error": {"type": kind, "message": msg}}}}) + "\n"


class BatchesApi:
    """POST/GET /v1/messages/batches[/id[/results]]: every batch has ended; ``lines(ids)`` writes its JSONL."""

    def __init__(self, lines):
        self.lines = lines
        self.batches: dict[str, list[str]] = {}

    def batch(self, bid):
        n = len(self.batches[bid])
        return {"id": bid, "type": "message_batch", "processing_status": "ended",
                "request_counts": {"processing": 0, "succeeded": n, "errored": 0, "canceled": 0, "expired": 0},
                "created_at": "2026-11-02T02:00:00Z", "expires_at": "2026-11-03T02:00:00Z",
                "ended_at": "2026-11-02T02:10:00Z", "cancel_initiated_at": None, "archived_at": None,
                "results_url": f"http://test/v1/messages/batches/{bid}/results"}

    def __call__(self, request):
        path = request.url.path
        if request.method == "POST" and path == "/v1/messages/batches":
            bid = f"msgbatch_{len(self.batches) + 1}"
            self.batches[bid] = [r["custom_id"] for r in json.loads(request.content)["requests"]]
            return httpx.Response(200, json=self.batch(bid))
        bid = path.split("/")[4]
        if path.endswith("/results"):
            return httpx.Response(200, content="".join(self.lines(self.batches[bid])).encode(),
                                  headers={"content-type": "application/x-jsonl"})
        return httpx.Response(200, json=self.batch(bid))


def client_for(api):
    return anthropic.Anthropic(base_url="http://test", api_key="x", max_retries=0,
                               http_client=httpx.Client(transport=httpx.MockTransport(api)))


def first_night(ids):
    k = ids
    return [ok(k[1], "b1"), ok(k[0], "a0"),  # out of order
            '{"custom_id": "' + k[2] + '", "result": {"type": "succ\n',  # a cut / malformed line
            ok(k[3], "d3"),
            ok("cl-not-one-of-ours", "stranger"),  # a custom_id this batch never sent
            err(k[4], "invalid_request_error", "prompt is too long"),
            err(k[5], "overloaded_error"), err(k[6], "api_error"),
            json.dumps({"custom_id": k[7], "result": {"type": "canceled"}}) + "\n",
            json.dumps({"custom_id": k[8], "result": {"type": "expired"}}) + "\n",
            ok(k[9], "j9"), ok(k[9], "j9 again")]  # a duplicate custom_id: the first one counts


def test_mixed_results_are_matched_by_custom_id_and_nothing_is_charged_twice(tmp_path):
    work = reqs(10)
    keys = [r.key for r in work]
    api = BatchesApi(first_night)
    seen = []
    with Checkpoint(tmp_path / "run.sqlite") as ckpt:
        res = Regenerator(client_for(api), ckpt, batch=True, max_error_rate=1.0, sleep=lambda s: None,
                          on_answer=seen.append).run(work)
        assert {k: a.text for k, a in res.answers.items()} == {
            keys[0]: "a0", keys[1]: "b1", keys[3]: "d3", keys[9]: "j9"}
        assert set(res.failed) == {keys[i] for i in (2, 4, 5, 6, 7, 8)}
        assert "invalid_request_error" in res.failed[keys[4]] and "prompt is too long" in res.failed[keys[4]]
        assert res.failed[keys[7]] == "batch result canceled" and res.failed[keys[8]] == "batch result expired"
        assert "no readable result" in res.failed[keys[2]]
        # 4 answers at the batch price: (100 * $10 + 10 * $50) / 1e6 / 2 each; the stranger is not ours
        assert res.sent == 4 and len(seen) == 4
        assert sum(a.cost_usd for a in ckpt.answers().values()) == pytest.approx(4 * 0.00075)
        assert "cl-not-one-of-ours" not in ckpt.done_keys()
        assert ckpt.open_batches() == []

    # the next night: only the six without an answer are resubmitted, in one new batch
    api.lines = lambda ids: [ok(c, "later " + c[-4:]) for c in ids]
    with Checkpoint(tmp_path / "run.sqlite") as ckpt:
        res = Regenerator(client_for(api), ckpt, batch=True, sleep=lambda s: None).run(work)
    assert sorted(api.batches["msgbatch_2"]) == sorted(keys[i] for i in (2, 4, 5, 6, 7, 8))
    assert len(res.answers) == 10 and res.sent == 6 and res.resumed == 4 and not res.failed


def test_too_many_invalid_requests_say_a_rerun_will_not_help(tmp_path):
    work = reqs(4)
    api = BatchesApi(lambda ids: [ok(ids[0], "a")] + [err(c, "invalid_request_error", "prompt is too long")
                                                    for c in ids[1:]])
    with Checkpoint(tmp_path / "run.sqlite") as ckpt:
        with pytest.raises(TeacherError, match="3 of 4.*invalid_request_error.*will not help"):
            Regenerator(client_for(api), ckpt, batch=True, sleep=lambda s: None).run(work)
