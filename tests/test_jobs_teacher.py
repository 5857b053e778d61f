"""Regenerating answers through the real anthropic SDK: MockTransport units, then the local stand-in
(kill half-way and resume without a duplicate paid request; the Message Batches path end to end)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import anthropic
import httpx2 as httpx
import openai
import pytest

from costline.config import CaptureConfig, Config, LakeConfig
from costline.jobs.errors import TeacherError
from costline.jobs.teacher import AnswerRequest, Checkpoint, Regenerator, request_key
from costline.serving.settings import StandInConfig
from costline.sim.standin import StandInServer


def message(text="positive", inp=10, out=2):
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-fable-5",
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": inp, "output_tokens": out, "cache_read_input_tokens": 0,
                      "cache_creation_input_tokens": 0}}


def mock_client(handler):
    return anthropic.Anthropic(base_url="http://test", api_key="test", max_retries=0,
                               http_client=httpx.Client(transport=httpx.MockTransport(handler)))


def reqs(n, model="claude-fable-5"):
    return [AnswerRequest.of(f"r{i}", model, f"classify {i}") for i in range(n)]


def test_keys_are_deterministic_and_valid_custom_ids():
    a = request_key("r1", "m", [{"role": "user", "content": "q"}])
    assert a == request_key("r1", "m", [{"role": "user", "content": "q"}])
    assert a != request_key("r2", "m", [{"role": "user", "content": "q"}])
    assert a != request_key("r1", "m", [{"role": "user", "content": "q"}], purpose="judge")
    assert len(a) <= 64 and a.replace("-", "").isalnum()


def test_sync_sends_idempotency_keys_prices_and_checkpoints(tmp_path):
    seen = []

    def handler(request):
        seen.append(request)
        return httpx.Response(200, json=message(inp=1000, out=100))

    with Checkpoint(tmp_path / "run.sqlite") as ckpt:
        res = Regenerator(mock_client(handler), ckpt, concurrency=3).run(reqs(5))
        assert res.sent == 5 and len(res.answers) == 5
        assert {r.headers["idempotency-key"] for r in seen} == {r.key for r in reqs(5)}
        # Fable 5: $10 in / $50 out per MTok
        assert res.cost_usd == pytest.approx(5 * (1000 * 10 + 100 * 50) / 1e6)
        again = Regenerator(mock_client(handler), ckpt).run(reqs(5))
        assert again.sent == 0 and again.resumed == 5 and len(seen) == 5


def test_too_many_errors_raise_and_keep_the_answers(tmp_path):
    def handler(request):
        body = json.loads(request.content)
        if body["messages"][0]["content"].endswith(("3", "4")):
            return httpx.Response(400, json={"type": "error", "error": {"type": "invalid_request_error",
                                                                        "message": "nope"}})
        return httpx.Response(200, json=message())

    with Checkpoint(tmp_path / "run.sqlite") as ckpt:
        with pytest.raises(TeacherError, match="2 of 5 requests got no answer.*run the job again"):
            Regenerator(mock_client(handler), ckpt).run(reqs(5))
        assert len(ckpt.done_keys()) == 3


@pytest.fixture
def standin():
    with StandInServer(StandInConfig(port=0, latency_scale=0.0, degrade_keywords=("sarcasm",))) as srv:
        yield srv


class Killed(Exception):
    pass


def test_a_run_killed_half_way_resumes_without_paying_twice(tmp_path, standin):
    client = anthropic.Anthropic(base_url=standin.url, api_key="x", max_retries=0)
    work = reqs(40)
    answered = []

    def kill_after_15(answer):
        answered.append(answer.key)
        if len(answered) == 15:
            raise Killed

    with Checkpoint(tmp_path / "run.sqlite") as ckpt:
        with pytest.raises(Killed):
            Regenerator(client, ckpt, concurrency=4, on_answer=kill_after_15).run(work)
        first = len(ckpt.done_keys())
        assert 15 <= first < 40  # the in-flight ones were recorded while stopping
    with Checkpoint(tmp_path / "run.sqlite") as ckpt:  # a new process opens the same checkpoint
        res = Regenerator(client, ckpt, concurrency=4).run(work)
    assert res.resumed == first and res.sent == 40 - first
    assert standin.log.duplicate_paid_keys() == {}
    assert len(standin.log.paid()) == 40


def test_batch_path_end_to_end_with_reattach_after_a_kill(tmp_path):
    clock = [0.0]
    with StandInServer(StandInConfig(port=0, latency_scale=0.0, batch_delay_s=100.0), now=lambda: clock[0]) as srv:
        client = anthropic.Anthropic(base_url=srv.url, api_key="x", max_retries=0)
        polls = []

        def sleep_then_die(s):
            polls.append(s)
            raise Killed  # the job dies while the batch is in progress

        work = reqs(12)
        with Checkpoint(tmp_path / "run.sqlite") as ckpt:
            with pytest.raises(Killed):
                Regenerator(client, ckpt, batch=True, sleep=sleep_then_die, poll_interval_s=30).run(work)
            assert len(ckpt.open_batches()) == 1  # its id was saved before the first poll

        def sleep(s):
            clock[0] += s

        with Checkpoint(tmp_path / "run.sqlite") as ckpt:
            res = Regenerator(client, ckpt, batch=True, sleep=sleep, poll_interval_s=30).run(work)
            assert ckpt.open_batches() == []
        assert len(res.answers) == 12 and res.batch_ids and len(set(res.batch_ids)) == 1
        assert all(a.batch for a in res.answers.values())
        paid = srv.log.paid("anthropic-batch")
        assert len(paid) == 12 and srv.log.duplicate_paid_keys() == {}
        # batch price: half of the synchronous one
        a = next(iter(res.answers.values()))
        assert a.cost_usd == pytest.approx(0.5 * (a.input_tokens * 10 + a.output_tokens * 50) / 1e6)
        # a third run has nothing left to do
        with Checkpoint(tmp_path / "run.sqlite") as ckpt:
            again = Regenerator(client, ckpt, batch=True, sleep=sleep).run(work)
        assert again.sent == 0 and len(srv.log.paid()) == 12


# --- the drift job end to end against the stand-in ------------------------------------------------------


def demo_config(tmp_path, **drift):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from lakes import demo_plans, lake_from_plans

    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"), capture=CaptureConfig(message_content=True))
    lake_from_plans(demo_plans(days=2, per_day=300, shift_day=1, stale_day=None), cfg)
    d = dataclasses.replace(cfg.jobs.drift, regenerate_student=True, mmd_permutations=0, min_per_subtype=5, **drift)
    return cfg.replace(jobs=dataclasses.replace(cfg.jobs, drift=d))


def test_drift_batch_job_flags_the_shifted_subtype_and_writes_views(tmp_path, standin):
    from costline.jobs.drift import run_drift
    from costline.jobs.store import open_jobs_lake

    # the demo day has 26 sarcasm requests for the student, every one answered wrong: judged from 20 items
    # (the CI rule's [jobs.drift] min_n is 30 by default)
    cfg = demo_config(tmp_path, min_n=20)
    client = anthropic.Anthropic(base_url=standin.url, api_key="x", max_retries=0)
    student = openai.OpenAI(base_url=standin.openai_url, api_key="x", max_retries=0)
    day0, day1 = dt.datetime(2026, 11, 1), dt.datetime(2026, 11, 2)
    r0 = run_drift(cfg, since=day0, until=day1, client=client, student=student, batch=True, sleep=lambda s: None)
    r1 = run_drift(cfg, since=day1, until=day1 + dt.timedelta(days=1), client=client, student=student, batch=True,
                   sleep=lambda s: None)
    assert r0.flagged == [] and r1.flagged == ["sarcasm"]
    assert r1.inputs.drifted and "sarcasm" in r1.inputs.reason
    assert r1.cost_usd > 0 and standin.log.duplicate_paid_keys() == {}
    again = run_drift(cfg, since=day1, until=day1 + dt.timedelta(days=1), client=client, student=student)
    assert again.already_done and again.run_id == r1.run_id
    con = open_jobs_lake(cfg)
    try:
        rows = con.execute("SELECT subtype, flagged, gap, gap_ci_low, gap_ci_high, threshold, n, student_score, "
                           "teacher_score, finished_at FROM eval_runs WHERE run_id = $r ORDER BY subtype",
                           {"r": r1.run_id}).fetchall()
        items = con.execute("SELECT count(*) FROM eval_items WHERE run_id = $r", {"r": r1.run_id}).fetchone()[0]
    finally:
        con.close()
    assert [r[0] for r in rows if r[1]] == ["sarcasm"]
    assert items == r1.n == sum(r[6] for r in rows)
