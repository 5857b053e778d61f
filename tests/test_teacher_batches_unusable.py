"""The drift job leaves out teacher answers that are empty or cut at max_tokens, as distill does.

Such an answer is paid for but is no reference: scoring the student against half a sentence (or nothing)
reads as a student-teacher gap that is not there. Real anthropic + openai SDKs over MockTransports, a real
DuckDB lake in tmp_path. (About 30% of the answers here are unusable: more than the default
``max_error_rate`` 0.05, which fails the run — tests/test_jobs_open_world.py — so it is raised to 0.5.)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import sys
from pathlib import Path

import anthropic
import httpx2 as httpx
import openai
import pytest

from costline.config import CaptureConfig, Config, LakeConfig

sys.path.insert(0, str(Path(__file__).parent))
from lakes import demo_plans, lake_from_plans  # noqa: E402


def config(tmp_path):
    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"), capture=CaptureConfig(message_content=True))
    lake_from_plans(demo_plans(days=1, per_day=200, shift_day=None, stale_day=None), cfg)
    d = dataclasses.replace(cfg.jobs.drift, regenerate_student=True, mmd_permutations=0, min_per_subtype=5,
                            default_metric="exact", metrics={})
    t = dataclasses.replace(cfg.jobs.teacher, max_tokens=64, max_error_rate=0.5)
    return cfg.replace(jobs=dataclasses.replace(cfg.jobs, drift=d, teacher=t))


def kind_of(query):
    """Deterministic: about 1 in 5 teacher answers is cut at max_tokens, 1 in 10 is empty."""
    u = int(hashlib.blake2b(query.encode(), digest_size=2).hexdigest(), 16) % 10
    return "cut" if u < 2 else "empty" if u == 2 else "ok"


def test_drift_leaves_out_cut_and_empty_teacher_answers(tmp_path):
    from costline.jobs.drift import run_drift
    from costline.jobs.store import open_jobs_lake

    cfg = config(tmp_path)
    kinds: list[str] = []  # one per teacher call (one per sampled request)

    def teacher(request):
        body = json.loads(request.content)
        q = body["messages"][-1]["content"]
        q = q if isinstance(q, str) else q[0]["text"]
        k = kind_of(q)
        kinds.append(k)
        content = [] if k == "empty" else [{"type": "text", "text": "posi" if k == "cut" else "positive"}]
        return httpx.Response(200, json={
            "id": "msg_1", "type": "message", "role": "assistant", "model": body["model"], "content": content,
            "stop_reason": "max_tokens" if k == "cut" else "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 100, "output_tokens": body["max_tokens"] if k == "cut" else 0 if k == "empty" else 1}})

    def student(request):
        return httpx.Response(200, json={
            "id": "c1", "object": "chat.completion", "created": 0, "model": "student",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "positive"}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 1, "total_tokens": 101}})

    client = anthropic.Anthropic(base_url="http://t", api_key="x", max_retries=0,
                                 http_client=httpx.Client(transport=httpx.MockTransport(teacher)))
    sclient = openai.OpenAI(base_url="http://s/v1", api_key="x", max_retries=0,
                            http_client=httpx.Client(transport=httpx.MockTransport(student)))
    day = dt.datetime(2026, 11, 1)
    res = run_drift(cfg, since=day, until=day + dt.timedelta(days=1), client=client, student=sclient)

    cut = kinds.count("cut")
    empty = kinds.count("empty")
    assert cut and empty and len(kinds) > cut + empty
    # the student says what the teacher says wherever the teacher finished: no gap anywhere
    assert res.n == len(kinds) - cut - empty
    assert res.unusable == {"not a message": 0, "refusal": 0, "cut at max_tokens": cut,
                            "cut at the context window": 0, "empty": empty}
    assert all(a.gap == 0.0 and not a.flagged for a in res.assessments), [(a.subtype, a.gap) for a in res.assessments]
    # still paid for: the job's cost counts every teacher answer, usable or not
    paid_out = 64 * cut + 1 * (len(kinds) - cut - empty)
    assert res.cost_usd == pytest.approx((100 * len(kinds) * 10 + paid_out * 50) / 1e6)
    con = open_jobs_lake(cfg)
    try:
        n_items = con.execute("SELECT count(*) FROM eval_items WHERE run_id = $r", {"r": res.run_id}).fetchone()[0]
    finally:
        con.close()
    assert n_items == res.n


@pytest.mark.parametrize("unusable, line", [
    ({"empty": 0, "cut at max_tokens": 0}, None),
    ({"empty": 2, "cut at max_tokens": 0}, "answers paid for but left out of scoring: 2 empty: no text in the answer "
                                           "(an overloaded proxy, or only non-text blocks)"),
    ({"empty": 1, "cut at max_tokens": 7}, "answers paid for but left out of scoring: 1 empty: no text in the answer "
                                           "(an overloaded proxy, or only non-text blocks); 7 cut at max_tokens: "
                                           "raise [jobs.teacher] max_tokens"),
    # each kind says what it is: a refusal is no reason to raise max_tokens
    ({"refusal": 3, "not a message": 2}, "answers paid for but left out of scoring: 3 refusal: the model declined "
                                         "to answer (stop_reason refusal); 2 not a message: the API answered a "
                                         "non-streaming call with something other than a JSON message (e.g. "
                                         "text/event-stream from a proxy that only streams): point [jobs.teacher] "
                                         "base_url at an endpoint that answers JSON"),
])
def test_costline_jobs_drift_says_what_it_left_out(unusable, line):
    from costline.jobs.cli import unusable_line

    assert unusable_line(unusable) == line
