"""The LLM judge (``metric = "judge"``): the scores it writes are read the way a person reads them, it has room to
explain before it scores (``[jobs.drift] judge_max_tokens``), a reply without a readable score is counted and
reported — too many fail the run with one of them and what to change —, and the shadow job compares a judged
subtype's answers by cosine.

Real lakes through the real commit path, the real anthropic SDK over an httpx MockTransport that answers as the API
does (a reply longer than ``max_tokens`` is cut, ``stop_reason`` ``max_tokens``). Expected figures are by hand.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math

import anthropic
import httpx2 as httpx
import numpy as np
import pytest

from costline.config import CaptureConfig, Config, LakeConfig
from costline.jobs.errors import TeacherError
from costline.jobs.scoring import parse_judge_score
from costline.lake import Lake
from costline.processors.buffer import rows_to_tables
from costline.processors.records import CallRow, RequestRow


@pytest.mark.parametrize("reply, score", [
    ("score: 4", 4),
    ("**Score:** 4/5", 4),
    ("**Score: 4**", 4),
    ("Score: **4**", 4),
    ("Score: `4`", 4),
    ("Rating: 4 out of 5", 4),
    ("I'd give this a 4.", 4),
    ("I would rate it 3/5.", 3),
    ("4", 4),
    ("4/5", 4),
    ("4.", 4),
    ("score (1-5): 2", 2),
    ("Score 1-5: 4", 4),  # the range is not the score
    ("Score - 3", 3),
    ("Final score = 2", 2),
    ("The score is 3", 3),
    ("SCORE:\n2", 2),
    ("score: 4.5", 4.5),
    ("Score: 3.", 3),
    ("Score: 10/10", 5),  # another scale: 1 + 4 * (10 - 1) / (10 - 1)
    ("Score: 7/10", 1 + 4 * 6 / 9),
    ("Score: 1/10", 1),
    ("Score: 5 (the answer is perfect; a 2 would mean it missed the point)", 5),
    ("A score of 1 means useless. This answer is correct: score: 5", 5),  # the verdict, not the rubric quoted
    ("The answer is wrong because the total is 2100, not 1200. score: 1", 1),
    ("Correct and concise. I'd give it a score of 4", 4),
])
def test_judge_scores_are_read_as_a_person_reads_them(reply, score):
    assert parse_judge_score(reply) == pytest.approx((score - 1) / 4)


@pytest.mark.parametrize("reply", [
    "Score: 7",  # over 5 on the 1-5 scale
    "Score: 0/10",  # under its scale
    "Score: 6/5",
    "score: -1",
    "2100",
    "I would rather not grade this.",
    "The answer contradicts the ticket: the customer asked for a refund of",  # cut before its score
    "",
    None,
])
def test_replies_without_a_readable_score_are_nan(reply):
    assert math.isnan(parse_judge_score(reply))


# -- the drift job ------------------------------------------------------------------------------------------------

T0 = dt.datetime(2026, 11, 7)
T1 = T0 + dt.timedelta(days=1)
GOOD = "The customer wants a refund for the duplicate March charge on invoice {i}."
BAD = "The customer does not want a refund for the March charge on invoice {i}."
EXPLAINED_BAD = ("The answer contradicts the ticket: the customer asked for a refund of the duplicate charge, and "
                 "the answer says they do not want one. score: 1")


def _us(t: dt.datetime) -> int:
    return int(t.replace(tzinfo=dt.timezone.utc).timestamp() * 1_000_000)


def _content(role: str, text: str) -> str:
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": text}]}])


def summary_lake(tmp_path, *, tier: str = "student", n: int = 50, bad: int = 20, answer: str | None = None,
                 metric: str = "judge") -> Config:
    """``n`` summaries served by ``tier``; the first ``bad`` contradict the ticket (``answer``: every one that)."""
    rows = []
    for i in range(n):
        t = T0 + dt.timedelta(seconds=i)
        rid, trace, sid = f"r{i:05d}", f"{i:032x}", f"{i + 1:016x}"
        q = f"Summarise ticket #{i}: I was charged twice in March for invoice {i}, please refund the duplicate."
        a = (answer or (BAD if i < bad else GOOD)).format(i=i)
        rows.append(RequestRow(rid, trace, sid, _us(t), "acme", "summarization", "summary", tier, tier, False, 1, 0,
                               True, None, 10.0, None, None, 0, i, None, None))
        rows.append(CallRow(f"{i + 1:015x}c", trace, sid, rid, _us(t), "chat", "vllm", "m", "m", tier, 100, 5, 0, 0,
                            False, ["stop"], None, 0.0, "student", "2026-06", 5.0, _content("user", q),
                            _content("assistant", a), 0, i))
    lake = tmp_path / "lake"
    Lake(lake).init().commit_batch("otlp_spans", 0, 0, len(rows), {
        "requests": rows_to_tables("requests", [r for r in rows if isinstance(r, RequestRow)]),
        "calls": rows_to_tables("calls", [r for r in rows if isinstance(r, CallRow)])})
    cfg = Config(lake=LakeConfig(path=lake), capture=CaptureConfig(message_content=True))
    d = dataclasses.replace(cfg.jobs.drift, mmd_permutations=0, metrics={**cfg.jobs.drift.metrics, "summary": metric})
    return cfg.replace(jobs=dataclasses.replace(cfg.jobs, drift=d))


def message(text: str, *, max_tokens: int) -> httpx.Response:
    """An API answer of ``text`` (4 characters a token), cut at ``max_tokens`` as the API cuts it."""
    tokens = max(1, math.ceil(len(text) / 4))
    stop = "end_turn"
    if tokens > max_tokens:
        text, tokens, stop = text[:4 * max_tokens], max_tokens, "max_tokens"
    return httpx.Response(200, json={
        "id": "m", "type": "message", "role": "assistant", "model": "claude-fable-5",
        "content": [{"type": "text", "text": text}], "stop_reason": stop, "stop_sequence": None,
        "usage": {"input_tokens": 50, "output_tokens": tokens, "cache_read_input_tokens": 0,
                  "cache_creation_input_tokens": 0}})


def api(judge_reply):
    """The teacher answers GOOD; the judge replies ``judge_reply(item number, answer judged, is it good)``."""
    def handler(request):
        body = json.loads(request.content)
        q = body["messages"][-1]["content"]
        i = int(q.split("#")[1].split(":")[0])
        if "QUESTION:" not in q:
            return message(GOOD.format(i=i), max_tokens=body["max_tokens"])
        answer = q.split("ANSWER:\n", 1)[1]
        return message(judge_reply(i, answer, "does not want" not in answer), max_tokens=body["max_tokens"])

    return anthropic.Anthropic(base_url="http://test", api_key="x", max_retries=0,
                               http_client=httpx.Client(transport=httpx.MockTransport(handler)))


def test_a_judge_that_explains_a_low_score_first_has_room_to_give_it(tmp_path):
    """The judge explains a bad answer (about 35 tokens) before its score. At the default judge_max_tokens 256 the
    score is in the reply: 20 of 50 answers score 0 against the teacher's 1, gap 20/50 = 0.40, flagged. (At 16
    tokens the replies were cut before their score and the 20 wrong items vanished: gap 0.)"""
    from costline.jobs.drift import run_drift

    cfg = summary_lake(tmp_path)
    r = run_drift(cfg, since=T0, until=T1, client=api(lambda i, a, good: "score: 5" if good else EXPLAINED_BAD))
    [a] = r.assessments
    assert (a.n, a.student_score, a.teacher_score, a.gap, a.flagged) == (50, 0.6, 1.0, pytest.approx(0.4), True)
    assert r.judge is not None and (r.judge.asked, r.judge.unreadable) == (100, {})


def test_a_judge_that_answers_the_bare_number_is_read(tmp_path):
    from costline.jobs.drift import run_drift

    cfg = summary_lake(tmp_path)
    r = run_drift(cfg, since=T0, until=T1, client=api(lambda i, a, good: "5" if good else "1"))
    [a] = r.assessments
    assert (a.n, a.gap, a.flagged) == (50, pytest.approx(0.4), True)


def test_a_few_unreadable_judge_replies_are_counted_and_said(tmp_path, caplog):
    """1 of the 100 replies (item 0's student answer) holds no score: 1 % is within max_error_rate 5 %, so the run
    goes on without item 0: 19 wrong of 49, gap 19/49; the count is in the result, the reason and a warning."""
    from costline.jobs.drift import run_drift

    cfg = summary_lake(tmp_path)

    def reply(i, answer, good):
        if i == 0 and "does not want" in answer:
            return "I cannot tell what the ticket wanted."
        return "score: 5" if good else "score: 1"

    with caplog.at_level(logging.WARNING, logger="costline.jobs.drift"):
        r = run_drift(cfg, since=T0, until=T1, client=api(reply))
    [a] = r.assessments
    assert (a.n, a.gap, a.flagged) == (49, pytest.approx(19 / 49), True)
    assert r.judge is not None and (r.judge.asked, r.judge.unreadable, r.judge.cut) == (100, {"summary": 1}, 0)
    assert "judge replies without a readable score: 1 (their items are left out)" in a.reason
    assert "judge replies without a readable score: 1" in r.rows[0]["reason"]  # what eval_runs keeps
    warned = [rec.getMessage() for rec in caplog.records if "judge replies" in rec.getMessage()]
    assert len(warned) == 1 and "1 of 100 judge replies held no score" in warned[0]
    assert 'one of them: "I cannot tell what the ticket wanted."' in warned[0]


def test_too_many_unreadable_judge_replies_fail_the_run_saying_what_to_change(tmp_path):
    """10 of the 100 replies hold no score: over max_error_rate 5 %. The run fails, writes nothing, quotes one reply
    and names the rubric to change; it does not advise running it again (the same judge reads the same)."""
    from costline.jobs.drift import run_drift
    from costline.jobs.store import job_store

    cfg = summary_lake(tmp_path)

    def reply(i, answer, good):
        if i < 10 and not good:
            return "The answer contradicts the ticket."
        return "score: 5" if good else "score: 1"

    with pytest.raises(TeacherError) as e:
        run_drift(cfg, since=T0, until=T1, client=api(reply))
    msg = str(e.value)
    assert "the judge's replies could not be read: 10 of 100 judge replies held no score" in msg
    assert '"The answer contradicts the ticket."' in msg
    assert "more than [jobs.teacher] max_error_rate 0.05" in msg
    assert "change [jobs.drift] judge_rubric" in msg and "judge_max_tokens" not in msg  # none was cut
    assert "run it again" not in msg
    assert [p.name for p in job_store(cfg).table_dir("eval_runs").iterdir()] == ["_empty.parquet"]


def test_judge_replies_cut_before_their_score_say_to_raise_judge_max_tokens_and_are_shown_escaped(tmp_path):
    """Every bad answer's reply is 600 characters (150 tokens) of explanation, with a terminal escape in it, before
    its score: at judge_max_tokens 100 it is cut (20 of 100 replies unreadable). The message shows the first 200
    characters of one, escaped, and says to raise judge_max_tokens."""
    from costline.jobs.drift import run_drift

    cfg = summary_lake(tmp_path)
    cfg = cfg.replace(jobs=dataclasses.replace(cfg.jobs, drift=dataclasses.replace(cfg.jobs.drift,
                                                                                   judge_max_tokens=100)))
    long_reply = "\x1b[2J" + "x" * 588 + "score: 1"
    assert len(long_reply) == 600

    with pytest.raises(TeacherError) as e:
        run_drift(cfg, since=T0, until=T1, client=api(lambda i, a, good: "score: 5" if good else long_reply))
    msg = str(e.value)
    assert "20 of 100 judge replies held no score the job can read; 20 of them cut at [jobs.drift] " \
           "judge_max_tokens 100" in msg
    assert "raise [jobs.drift] judge_max_tokens (now 100)" in msg
    assert '"\\u001b[2J' + "x" * 196 + '" (first 200 of 400 characters)' in msg  # cut at 100 tokens = 400 chars
    assert "\x1b" not in msg and len(msg) < 1500


def test_every_judge_reply_unreadable_says_so(tmp_path):
    from costline.jobs.drift import run_drift

    cfg = summary_lake(tmp_path, n=40)
    with pytest.raises(TeacherError, match="none of the 40 sampled requests could be scored .*the judge's replies "
                                           "could not be read: 80 of 80 judge replies held no score"):
        run_drift(cfg, since=T0, until=T1, client=api(lambda i, a, good: "I would rather not grade this."))


# -- the shadow job -----------------------------------------------------------------------------------------------

class SameVector:
    """Every text embeds to one vector: cosine 1 between any two (a stand-in for "the same meaning")."""

    def encode(self, texts):
        return np.tile(np.array([1.0, 0.0]), (len(texts), 1))


def test_shadow_compares_a_judged_subtypes_answers_by_cosine(tmp_path):
    """40 budget summaries; mid (the next tier) writes a paraphrase of each. A judged subtype is compared by cosine
    (1 here for every pair), not by exact match (0 for every paraphrase): 40 of 40 match, not flagged."""
    from costline.jobs.shadow import run_shadow
    from costline.jobs.store import open_jobs_lake

    cfg = summary_lake(tmp_path, tier="budget", n=40,
                       answer="Customer was double-charged in March (invoice {i}) and wants the duplicate refunded.")
    cfg = cfg.replace(jobs=dataclasses.replace(cfg.jobs, shadow=dataclasses.replace(cfg.jobs.shadow,
                                                                                    tiers=("budget",))))
    r = run_shadow(cfg, since=T0, until=T1, embedder=SameVector(), client=api(lambda i, a, good: "score: 5"))
    assert [(a.tier, a.n, a.matches, a.flagged) for a in r.assessments] == [("budget", 40, 40, False)]
    con = open_jobs_lake(cfg)
    try:
        assert con.execute("SELECT DISTINCT metric FROM shadow_items").fetchall() == [("cosine",)]
    finally:
        con.close()

