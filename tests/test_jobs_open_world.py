"""The nightly jobs on what real traffic and real APIs send them.

* ``[lake] mode = "table"``: the sample comes from the Iceberg tables the lake's views read, not from a
  local file glob that table mode never writes;
* two requests with one app-supplied request id (two tenants, an app's retries) keep their own answers;
* only requests the tier served successfully are sampled (no failed request, no cache hit), for drift,
  shadow and the distillation export alike;
* a teacher answer that is a refusal, cut (by its stop reason), empty or no message at all is no
  reference; when such answers are more than ``max_error_rate`` of the sample the run fails (retried,
  the retryable ones asked again) and writes nothing;
* the CI rule judges a subtype only from ``min_n`` items, at the Bonferroni-corrected level.

Hand-made lakes through the real commit path (:meth:`costline.lake.Lake.commit_batch`), the real anthropic /
openai SDKs over httpx MockTransports. Every expected figure is worked out by hand in the comments.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import sqlite3
from pathlib import Path

import anthropic
import httpx2 as httpx
import numpy as np
import openai
import pytest

from costline.config import CaptureConfig, Config, LakeConfig
from costline.errors import ConfigError
from costline.jobs.errors import TeacherError
from costline.lake import Lake
from costline.processors.buffer import rows_to_tables
from costline.processors.records import CallRow, RequestRow

T0 = dt.datetime(2026, 11, 7)
T1 = T0 + dt.timedelta(days=1)
#: claude-fable-5 (the frontier tier's model in the default pricing): $10 / $50 per million tokens in / out.
FABLE_IN, FABLE_OUT = 10 / 1e6, 50 / 1e6


# -- a hand-made lake --------------------------------------------------------------------------------------

def _us(t: dt.datetime) -> int:
    return int(t.replace(tzinfo=dt.timezone.utc).timestamp() * 1_000_000)


def _content(role: str, text: str) -> str:
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": text}]}])


def req_rows(i, *, query, answer, rid=None, sub="intent", tier="student", tenant="acme", success=True,
             cache_hit=False, rejected=None, off=0):
    """A request span and its model call (with captured content), trace ``i + off``."""
    t = T0 + dt.timedelta(seconds=i + off)
    rid = rid or f"r{i + off:05d}"
    trace, sid = f"{i + off:032x}", f"{i + off + 1:016x}"
    r = RequestRow(rid, trace, sid, _us(t), tenant, "classification", sub, tier, tier, cache_hit, 1, 0, success,
                   None, 10.0, None, None, 0, i + off, None, rejected)
    c = CallRow(f"{i + off + 1:015x}c", trace, sid, rid, _us(t), "chat", "vllm", "costline-student",
                "costline-student", tier, 100, 5, 0, 0, False, ["stop"], None, 0.0, "student", "2026-06", 5.0,
                _content("user", query), _content("assistant", answer), 0, i + off)
    return [r, c]


def commit(lake, rows) -> None:
    by = {"requests": [r for r in rows if isinstance(r, RequestRow)],
          "calls": [r for r in rows if isinstance(r, CallRow)]}
    lake.commit_batch("otlp_spans", 0, 0, len(rows), {t: rows_to_tables(t, rs) for t, rs in by.items()})


def make_lake(path: Path, rows, **teacher) -> Config:
    cfg = Config(lake=LakeConfig(path=path), capture=CaptureConfig(message_content=True))
    commit(Lake(path).init(), rows)
    return tuned(cfg, **teacher)


def tuned(cfg: Config, drift=None, shadow=None, **teacher) -> Config:
    d = dataclasses.replace(cfg.jobs.drift, mmd_permutations=0, **(drift or {}))
    s = dataclasses.replace(cfg.jobs.shadow, **(shadow or {}))
    t = dataclasses.replace(cfg.jobs.teacher, **teacher)
    return cfg.replace(jobs=dataclasses.replace(cfg.jobs, drift=d, shadow=s, teacher=t))


# -- the APIs ----------------------------------------------------------------------------------------------

def message(text, *, inp=10, out=2, stop="end_turn", model="claude-fable-5"):
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}] if text is not None else [], "stop_reason": stop,
            "stop_sequence": None, "usage": {"input_tokens": inp, "output_tokens": out,
                                             "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}}


def anthropic_mock(handler):
    return anthropic.Anthropic(base_url="http://test", api_key="x", max_retries=0,
                               http_client=httpx.Client(transport=httpx.MockTransport(handler)))


def asked(request) -> str:
    """The last user message of a Messages request."""
    return json.loads(request.content)["messages"][-1]["content"]


def last_word(request) -> httpx.Response:
    """A teacher that answers with the query's last word (the right label)."""
    return httpx.Response(200, json=message(asked(request).rsplit(" ", 1)[1]))


def number(request) -> int:
    return int(asked(request).split("#")[1].split()[0])


def eval_items(cfg: Config, run_id: str) -> list[tuple]:
    from costline.jobs.store import open_jobs_lake

    con = open_jobs_lake(cfg)
    try:
        return con.execute("SELECT request_id, query, student_answer, teacher_answer, student_score FROM eval_items "
                           "WHERE run_id = $r ORDER BY query", {"r": run_id}).fetchall()
    finally:
        con.close()


# -- 1. two requests with one request id ----------------------------------------------------------------------

def shared_ids_lake(tmp_path: Path) -> Config:
    rows = []
    for i in range(40):  # acme's requests: the right label is "positive", the student says so
        rows += req_rows(i, rid=f"req-{i}", query=f"q acme #{i} positive", answer="positive", tenant="acme")
    for i in range(40):  # globex counts its request ids from 0 too: "negative", the student right again
        rows += req_rows(i, rid=f"req-{i}", query=f"q globex #{i} negative", answer="negative", tenant="globex",
                         off=1000)
    return make_lake(tmp_path / "lake", rows)


@pytest.mark.parametrize("regenerate_student", [False, True])
def test_two_requests_with_one_request_id_keep_their_own_answers(tmp_path, regenerate_student):
    from costline.jobs.drift import run_drift

    cfg = shared_ids_lake(tmp_path)
    cfg = tuned(cfg, drift={"regenerate_student": regenerate_student})

    def student(request):  # the regenerated student is right too: the last word of the question
        q = json.loads(request.content)["messages"][-1]["content"]
        return httpx.Response(200, json={
            "id": "c1", "object": "chat.completion", "created": 0, "model": "student",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": q.rsplit(" ", 1)[1]}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}})

    sclient = openai.OpenAI(base_url="http://s/v1", api_key="x", max_retries=0,
                            http_client=httpx.Client(transport=httpx.MockTransport(student)))
    r = run_drift(cfg, since=T0, until=T1, client=anthropic_mock(last_word), student=sclient)
    # 80 requests, every student answer equal to its own teacher answer: gap 0
    assert [(a.subtype, a.n, a.student_score, a.gap, a.flagged) for a in r.assessments] == [
        ("intent", 80, 1.0, 0.0, False)]
    assert [row for row in eval_items(cfg, r.run_id) if row[0] == "req-3"] == [
        ("req-3", "q acme #3 positive", "positive", "positive", 1.0),
        ("req-3", "q globex #3 negative", "negative", "negative", 1.0)]


def test_the_sample_order_hashes_the_trace_too(tmp_path):
    """Two requests with one id are two draws, not one pair that is always taken (or left) together; the
    same lake, window and seed still give the same sample."""
    from costline.jobs.sampling import sample_requests
    from costline.jobs.store import open_jobs_lake

    cfg = shared_ids_lake(tmp_path)
    con = open_jobs_lake(cfg)
    try:
        a = sample_requests(con, tier="student", since=T0, until=T1, size=40, seed=1)
        b = sample_requests(con, tier="student", since=T0, until=T1, size=40, seed=1)
    finally:
        con.close()
    assert [(s.trace_id, s.request_id) for s in a] == [(s.trace_id, s.request_id) for s in b]
    assert len(a) == 40 and len({(s.trace_id, s.request_id) for s in a}) == 40
    ids = [s.request_id for s in a]
    pairs = sum(ids.count(f"req-{i}") == 2 for i in range(40))
    # ordered by hash(request id, seed) alone both of a pair tie and sit side by side: 20 whole pairs
    assert pairs < 20


# -- 2. only successful answers of the tier ------------------------------------------------------------------

def mixed_lake(tmp_path: Path, tier="student", **teacher) -> Config:
    rows = []
    for i in range(100):  # accepted answers, all right
        rows += req_rows(i, tier=tier, query=f"q #{i} positive", answer="positive")
    for i in range(100, 140):  # the validator rejected the answer and the tier above was down: failed
        rows += req_rows(i, tier=tier, query=f"q #{i} positive", answer="<garbage>", success=False,
                         rejected=f"{tier}:validator,mid:APIConnectionError")
    for i in range(140, 150):  # answered from the semantic cache (another query's answer)
        rows += req_rows(i, tier=tier, query=f"q #{i} positive", answer="negative", cache_hit=True)
    return make_lake(tmp_path / "lake", rows, **teacher)


def test_failed_requests_and_cache_hits_are_not_sampled(tmp_path):
    from costline.jobs.drift import run_drift
    from costline.jobs.sampling import sample_requests
    from costline.jobs.store import open_jobs_lake

    cfg = mixed_lake(tmp_path)
    con = open_jobs_lake(cfg)
    try:
        sample = sample_requests(con, tier="student", since=T0, until=T1, size=500)
    finally:
        con.close()
    assert sorted(s.request_id for s in sample) == [f"r{i:05d}" for i in range(100)]
    paid = []
    r = run_drift(cfg, since=T0, until=T1, client=anthropic_mock(lambda q: paid.append(1) or last_word(q)))
    # the 100 accepted answers only: gap 0, 100 teacher answers paid, not 150
    assert [(a.n, a.gap, a.flagged) for a in r.assessments] == [(100, 0.0, False)]
    assert r.sent == 100 and len(paid) == 100


def test_shadow_compares_only_answers_the_tier_served(tmp_path):
    from costline.jobs.shadow import run_shadow

    cfg = mixed_lake(tmp_path, tier="budget")
    cfg = tuned(cfg, shadow={"tiers": ("budget",)})
    r = run_shadow(cfg, since=T0, until=T1, client=anthropic_mock(last_word))
    # 150 per tier asked; 100 were served successfully, every one matching the next tier's "positive"
    assert [(a.tier, a.n, a.matches, a.rate, a.flagged) for a in r.assessments] == [("budget", 100, 100, 1.0, False)]


def test_the_distillation_export_keeps_requests_with_one_id_and_leaves_out_failures(tmp_path):
    from costline.distill.dataset import export_dataset
    from costline.distill.settings import DistillConfig

    rows = []
    for i in range(20):
        rows += req_rows(i, rid=f"req-{i}", query=f"q acme {i} is positive", answer="positive", tenant="acme")
        rows += req_rows(i, rid=f"req-{i}", query=f"q globex {i} is negative", answer="negative", tenant="globex",
                         off=1000)
    for i in range(5):
        rows += req_rows(i, query=f"q failed {i} is positive", answer="<garbage>", success=False, off=2000)
        rows += req_rows(i, query=f"q cached {i} is positive", answer="positive", cache_hit=True, off=3000)
    cfg = make_lake(tmp_path / "lake", rows)
    cfg = cfg.replace(distill=DistillConfig(near_duplicate_threshold=0.0, window_days=1, eval_fraction=0.15,
                                                 tenants=("*",)))
    ex = export_dataset(cfg, since=T0, until=T1, run_id="ids")
    # 40 distinct successful requests (20 + 20 sharing ids); 5 failed + 5 cache hits of the 50 counted skipped
    assert (ex.eligible, ex.train + ex.eval) == (50, 40)
    assert ex.skipped["no captured content, no successful answer, or a cache hit"] == 10


# -- 3. refusals and cuts are no reference --------------------------------------------------------------------

def test_a_refusal_or_an_answer_cut_by_its_stop_reason_is_no_reference(tmp_path):
    from costline.jobs.drift import run_drift
    from costline.jobs.store import job_store
    from costline.jobs.teacher import Checkpoint

    rows = []
    for i in range(100):
        rows += req_rows(i, query=f"classify #{i} label-intent", answer="label-intent")
    cfg = make_lake(tmp_path / "lake", rows, max_error_rate=0.5)

    def handler(request):
        n = number(request)
        if n % 3 == 0:  # the safety classifier stopped it mid-answer: some text, stop_reason "refusal"
            return httpx.Response(200, json=message("I can", out=2, stop="refusal"))
        if n % 7 == 1:  # cut by the API (a gateway's own limit) at 5 tokens, far under max_tokens (1024)
            return httpx.Response(200, json=message("label", out=5, stop="max_tokens"))
        return httpx.Response(200, json=message("label-intent"))

    r = run_drift(cfg, since=T0, until=T1, client=anthropic_mock(handler))
    # refusals: 0, 3, ..., 99 -> 34; cut: n % 7 == 1 -> 1, 8, ..., 99 (15) less those divisible by 3
    # (15, 36, 57, 78, 99) -> 10; left: 100 - 34 - 10 = 56, each equal to the student's answer
    assert {k: v for k, v in r.unusable.items() if v} == {"refusal": 34, "cut at max_tokens": 10}
    assert [(a.n, a.gap, a.flagged) for a in r.assessments] == [(56, 0.0, False)]
    with Checkpoint(job_store(cfg).checkpoints / f"{r.run_id}.sqlite") as ckpt:
        stops = sorted(a.stop_reason for a in ckpt.answers().values())
    assert stops == ["end_turn"] * 56 + ["max_tokens"] * 10 + ["refusal"] * 34


def test_message_batches_keep_the_stop_reason_too(tmp_path):
    from costline.jobs.teacher import AnswerRequest, Checkpoint, Regenerator

    batches: dict[str, list[str]] = {}

    def api(request):
        path = request.url.path
        if request.method == "POST" and path == "/v1/messages/batches":
            bid = f"msgbatch_{len(batches) + 1}"
            batches[bid] = [r["custom_id"] for r in json.loads(request.content)["requests"]]
        else:
            bid = path.split("/")[4]
        if path.endswith("/results"):
            lines = [json.dumps({"custom_id": k, "result": {"type": "succeeded", "message": message(
                "I can" if j == 0 else "fine", stop="refusal" if j == 0 else "end_turn")}}) + "\n"
                for j, k in enumerate(batches[bid])]
            return httpx.Response(200, content="".join(lines).encode(), headers={"content-type": "application/x-jsonl"})
        n = len(batches[bid])
        return httpx.Response(200, json={
            "id": bid, "type": "message_batch", "processing_status": "ended",
            "request_counts": {"processing": 0, "succeeded": n, "errored": 0, "canceled": 0, "expired": 0},
            "created_at": "2026-11-02T02:00:00Z", "expires_at": "2026-11-03T02:00:00Z",
            "ended_at": "2026-11-02T02:10:00Z", "cancel_initiated_at": None, "archived_at": None,
            "results_url": f"http://test/v1/messages/batches/{bid}/results"})

    reqs = [AnswerRequest.of(f"r{i}", "claude-fable-5", f"classify {i}") for i in range(3)]
    with Checkpoint(tmp_path / "c.sqlite") as ckpt:
        res = Regenerator(anthropic_mock(api), ckpt, batch=True, sleep=lambda s: None).run(reqs)
    assert sorted((a.text, a.stop_reason) for a in res.answers.values()) == [
        ("I can", "refusal"), ("fine", "end_turn"), ("fine", "end_turn")]


def test_a_checkpoint_from_before_stop_reasons_opens_and_keeps_its_answers(tmp_path):
    from costline.jobs.teacher import Checkpoint

    db = sqlite3.connect(tmp_path / "old.sqlite")
    db.execute("CREATE TABLE answers (key TEXT PRIMARY KEY, text TEXT NOT NULL, model TEXT, input_tokens INTEGER, "
               "output_tokens INTEGER, cache_read_tokens INTEGER, cache_creation_tokens INTEGER, batch INTEGER, "
               "cost_usd REAL, at REAL)")
    db.execute("INSERT INTO answers VALUES ('k1', 'positive', 'm', 10, 2, 0, 0, 0, 0.25, 0)")
    db.commit()
    db.close()
    with Checkpoint(tmp_path / "old.sqlite") as ckpt:
        a = ckpt.get("k1")
        assert (a.text, a.cost_usd, a.stop_reason) == ("positive", 0.25, None)
        assert ckpt.cost_usd() == 0.25


# -- 4. a run whose teacher answers are (nearly) all unusable ---------------------------------------------------

SSE = ('event: message_start\ndata: {"type":"message_start","message":{"id":"m","type":"message","role":"assistant",'
       '"model":"claude-fable-5","content":[],"stop_reason":null,"usage":{"input_tokens":10,"output_tokens":1}}}\n\n'
       'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text",'
       '"text":""}}\n\n'
       'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta",'
       '"text":"positive"}}\n\n'
       'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
       '"usage":{"output_tokens":3}}\n\n'
       'event: message_stop\ndata: {"type":"message_stop"}\n\n')


@pytest.mark.parametrize("broken, kind, paid", [
    # a proxy that only streams: 60 x (10 in + 3 out, from the stream's own usage) = 60 x $0.00025
    ("sse", "not a message", 60 * (10 * FABLE_IN + 3 * FABLE_OUT)),
    # an overloaded proxy answering nothing: 60 x 10 tokens in
    ("empty", "empty", 60 * 10 * FABLE_IN),
])
def test_a_run_whose_teacher_answers_are_unusable_fails_writes_nothing_and_recovers(tmp_path, broken, kind, paid):
    from costline.jobs.drift import run_drift
    from costline.jobs.scheduler import default_runners, run_job
    from costline.jobs.store import job_store, open_jobs_lake

    rows = []
    for i in range(60):
        rows += req_rows(i, query=f"q #{i} positive", answer="positive")
    cfg = make_lake(tmp_path / "lake", rows)

    def bad(request):
        if broken == "sse":
            return httpx.Response(200, content=SSE.encode(), headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json=message("", out=0))

    outcome = run_job(cfg, "drift", since=T0, until=T1, runner=default_runners(client=anthropic_mock(bad))["drift"])
    assert outcome.status == "failed" and outcome.rows == 0
    assert "60 of 60 answers are unusable" in outcome.error and f"60 {kind}:" in outcome.error
    assert "max_tokens" not in outcome.error  # nothing here was cut
    con = open_jobs_lake(cfg)
    try:
        assert con.execute("SELECT count(*) FROM eval_runs").fetchone()[0] == 0
        assert con.execute("SELECT status FROM job_runs").fetchall() == [("failed",)]
    finally:
        con.close()
    assert [p.name for p in job_store(cfg).table_dir("eval_runs").iterdir()] == ["_empty.parquet"]

    # the proxy is fixed: the same window (a retry) asks the 60 again, under new idempotency keys
    keys = []

    def good(request):
        keys.append(request.headers["idempotency-key"])
        return httpx.Response(200, json=message("positive"))

    r = run_drift(cfg, since=T0, until=T1, client=anthropic_mock(good))
    assert not r.already_done and r.sent == 60 and len(keys) == 60 and all(k.endswith("-1") for k in keys)
    assert [(a.n, a.gap, a.flagged) for a in r.assessments] == [(60, 0.0, False)]
    # both rounds were paid for: the unusable answers and the good ones (60 x (10 in + 2 out))
    assert r.cost_usd == pytest.approx(paid + 60 * (10 * FABLE_IN + 2 * FABLE_OUT))


def test_a_few_unusable_answers_are_left_out_with_their_reason(tmp_path, caplog):
    from costline.jobs.drift import run_drift

    rows = []
    for i in range(60):
        rows += req_rows(i, query=f"q #{i} positive", answer="positive")
    cfg = make_lake(tmp_path / "lake", rows)  # max_error_rate 0.05: 3 of 60 may be unusable

    def handler(request):
        n = number(request)
        return httpx.Response(200, json=message("", out=0) if n in (7, 21) else message("positive"))

    with caplog.at_level(logging.WARNING, logger="costline.jobs.drift"):
        r = run_drift(cfg, since=T0, until=T1, client=anthropic_mock(handler))
    assert [(a.n, a.gap) for a in r.assessments] == [(58, 0.0)]
    warned = [rec.getMessage() for rec in caplog.records if "left out of scoring" in rec.getMessage()]
    assert len(warned) == 1 and "2 empty: no text in the answer" in warned[0] and "max_tokens" not in warned[0]


def test_a_run_with_nothing_scored_writes_no_empty_eval_runs(tmp_path):
    from costline.jobs.drift import run_drift
    from costline.jobs.store import job_store

    rows = []
    for i in range(40):
        rows += req_rows(i, query=f"q #{i} positive", answer="positive")
    cfg = make_lake(tmp_path / "lake", rows)
    cfg = tuned(cfg, drift={"metrics": {"classification": "judge"}})

    def handler(request):  # the teacher answers, the judge never says "score: N"
        if "QUESTION:" in asked(request):
            return httpx.Response(200, json=message("I would rather not grade this."))
        return last_word(request)

    with pytest.raises(TeacherError, match="none of the 40 sampled requests could be scored"):
        run_drift(cfg, since=T0, until=T1, client=anthropic_mock(handler))
    assert [p.name for p in job_store(cfg).table_dir("eval_runs").iterdir()] == ["_empty.parquet"]


# -- 5. shadow: the same screen ---------------------------------------------------------------------------------

def shadow_lake(tmp_path: Path, **teacher) -> Config:
    rows = []
    for i in range(150):
        rows += req_rows(i, tier="budget", query=f"q #{i} positive", answer="positive")
    return tuned(make_lake(tmp_path / "lake", rows, **teacher), shadow={"tiers": ("budget",)})


def next_tier_with_holes(request):
    """The mid tier agrees with budget, but 1 in 4 answers is empty and 1 in 4 is cut at max_tokens."""
    n = number(request)
    if n % 4 == 0:
        return httpx.Response(200, json=message("", out=0))
    if n % 4 == 1:
        return httpx.Response(200, json=message("posi", out=1024, stop="max_tokens"))
    return httpx.Response(200, json=message("positive"))


def test_shadow_leaves_out_empty_and_cut_reference_answers(tmp_path):
    from costline.jobs.shadow import run_shadow

    cfg = shadow_lake(tmp_path, max_error_rate=0.6)
    r = run_shadow(cfg, since=T0, until=T1, client=anthropic_mock(next_tier_with_holes))
    # n % 4 == 0 in 0..149: 38 empty; n % 4 == 1: 38 cut; the other 74 all match
    assert [(a.tier, a.n, a.matches, a.rate, a.flagged) for a in r.assessments] == [("budget", 74, 74, 1.0, False)]
    assert {k: v for k, v in r.unusable.items() if v} == {"empty": 38, "cut at max_tokens": 38}


def test_shadow_screens_the_regenerated_cheaper_answers_as_well(tmp_path):
    from costline.jobs.drift import teacher_model
    from costline.jobs.shadow import run_shadow

    cfg = shadow_lake(tmp_path, max_error_rate=0.7)
    cfg = tuned(cfg, shadow={"tiers": ("budget",), "regenerate_cheap": True})
    budget = teacher_model(cfg, "budget")

    def handler(request):
        if json.loads(request.content)["model"] == budget:  # budget's own answer, empty 1 in 5
            return httpx.Response(200, json=message("" if number(request) % 5 == 0 else "positive",
                                                    out=0 if number(request) % 5 == 0 else 2, model=budget))
        return next_tier_with_holes(request)

    r = run_shadow(cfg, since=T0, until=T1, client=anthropic_mock(handler))
    # of the 74 with a usable reference (n % 4 in {2, 3}), budget's own is empty where n % 5 == 0 too:
    # n = 10 (mod 20) -> 10, 30, ..., 130: 7; n = 15 (mod 20) -> 15, ..., 135: 7; 74 - 14 = 60 compared
    assert [(a.n, a.matches, a.rate) for a in r.assessments] == [(60, 60, 1.0)]
    assert {k: v for k, v in r.unusable.items() if v} == {"empty": 38 + 14, "cut at max_tokens": 38}


def test_shadow_fails_when_most_reference_answers_are_unusable(tmp_path):
    from costline.jobs.shadow import run_shadow
    from costline.jobs.store import job_store

    cfg = shadow_lake(tmp_path)  # max_error_rate 0.05; 76 of 150 unusable
    with pytest.raises(TeacherError, match=r"76 of 150 answers are unusable.*38 cut at max_tokens: raise "
                                           r"\[jobs.teacher\] max_tokens; 38 empty: no text"):
        run_shadow(cfg, since=T0, until=T1, client=anthropic_mock(next_tier_with_holes))
    assert [p.name for p in job_store(cfg).table_dir("shadow_runs").iterdir()] == ["_empty.parquet"]


# -- 6. the CI rule: a minimum n, and the Bonferroni level -------------------------------------------------------

def test_the_ci_rule_judges_a_subtype_only_from_min_n_items():
    from costline.jobs.drift import SubtypeScores, assess_subtypes
    from costline.jobs.settings import DriftConfig

    cfg = DriftConfig()  # min_n 30
    got = {a.subtype: a for a in assess_subtypes({
        "two": SubtypeScores.of([0.0, 0.0]),          # both wrong: a bootstrap "CI" of 1.0-1.0
        "few": SubtypeScores.of([0.0] * 29),          # 29 of 29 wrong: still under min_n
        "enough": SubtypeScores.of([0.0] * 30),       # 30 of 30 wrong
    }, cfg, rng=np.random.default_rng(0))}
    assert not got["two"].flagged and "too few to judge" in got["two"].reason
    assert not got["few"].flagged and "29 scored items, under [jobs.drift] min_n 30" in got["few"].reason
    assert got["enough"].flagged and "too few" not in got["enough"].reason


def test_the_ci_level_is_corrected_for_the_number_of_subtypes():
    from costline.jobs.drift import SubtypeScores, assess_subtypes
    from costline.jobs.settings import DriftConfig

    cfg = DriftConfig()  # alpha 0.01
    # 43 of 200 wrong: gap 0.215, se = sqrt(0.215 * 0.785 / 200) = 0.0290. A 95% CI's low end,
    # 0.215 - 1.96 * 0.029 = 0.158, is over 0.15 (what was flagged); with 4 subtypes the level is
    # 1 - 2 * 0.01 / 4 = 99.5%: 0.215 - 2.807 * 0.029 = 0.133, under it. 70 of 200 wrong (gap 0.35):
    # 0.35 - 2.807 * sqrt(0.35 * 0.65 / 200) = 0.255, flagged either way.
    border = [0.0] * 43 + [1.0] * 157
    clear = [0.0] * 70 + [1.0] * 130
    ok = [1.0] * 200
    got = {a.subtype: a for a in assess_subtypes({"border": SubtypeScores.of(border), "clear": SubtypeScores.of(clear),
                                                 "a": SubtypeScores.of(ok), "b": SubtypeScores.of(ok)},
                                                cfg, rng=np.random.default_rng(0))}
    assert not got["border"].flagged
    assert 0.12 < got["border"].gap_ci_low < 0.145
    assert got["clear"].flagged and "(99.5% CI " in got["clear"].reason
    alone = assess_subtypes({"clear": SubtypeScores.of(clear)}, cfg, rng=np.random.default_rng(0))[0]
    assert "(98% CI " in alone.reason  # one subtype: 1 - 2 * 0.01


def test_min_n_is_validated_naming_the_key(tmp_path):
    from costline.jobs import validate

    cfg = tuned(Config(lake=LakeConfig(path=tmp_path / "lake")), drift={"min_n": 1})
    with pytest.raises(ConfigError, match=r"\[jobs.drift\] min_n: must be at least 2"):
        validate(cfg)


# -- 7. [lake] mode = "table" -------------------------------------------------------------------------------------

def test_local_sampling_still_prunes_the_date_partitions(tmp_path):
    from costline.jobs.sampling import candidates_sql
    from costline.jobs.store import open_jobs_lake

    cfg = mixed_lake(tmp_path)
    con = open_jobs_lake(cfg)
    try:
        sql = candidates_sql(con=con)
    finally:
        con.close()
    assert "read_parquet(" in sql and "date >= CAST($since AS DATE)" in sql


@pytest.mark.objstore
def test_table_mode_samples_the_iceberg_tables(objstore, tmp_path):
    pytest.importorskip("pyiceberg")
    from costline.jobs.drift import run_drift
    from costline.jobs.store import open_jobs_lake
    from costline.tablelake import TableLake
    from tests.tablelake_helpers import table_lake_config

    lc = table_lake_config(objstore, tmp_path)
    rows = []
    for i in range(50):
        rows += req_rows(i, query=f"q #{i} positive", answer="positive")
    for i in range(50, 55):  # failed, and cache hits: not the student's accepted answers
        rows += req_rows(i, query=f"q #{i} positive", answer="<garbage>", success=False)
    for i in range(55, 58):
        rows += req_rows(i, query=f"q #{i} positive", answer="negative", cache_hit=True)
    commit(TableLake(lc).init(), rows)
    cfg = tuned(Config(lake=lc, capture=CaptureConfig(message_content=True)))
    assert not list((tmp_path / "lake").glob("requests/*/*.otlp_spans.parquet"))  # nothing local to read

    r = run_drift(cfg, since=T0, until=T1, client=anthropic_mock(last_word))
    assert [(a.n, a.gap, a.flagged) for a in r.assessments] == [(50, 0.0, False)]
    con = open_jobs_lake(cfg)
    try:
        assert con.execute("SELECT n, gap FROM eval_runs WHERE run_id = $r", {"r": r.run_id}).fetchall() == [(50, 0.0)]
    finally:
        con.close()
