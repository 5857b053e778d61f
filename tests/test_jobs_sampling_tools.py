"""The sampler on agentic traffic and odd stored text: what the teacher is sent.

* a captured tool call / tool result reaches the teacher as text (``[tool call NAME(ARGS)]``,
  ``[tool result: …]``), never as an empty message: Anthropic's Messages API answers 400 to any empty message
  but a final assistant one (the mock teacher below enforces exactly that rule);
* a turn still without text is dropped; a request whose last user turn has no text is left out, with its
  reason (and counted under it by the distillation export);
* an escaped lone surrogate in stored content (half an emoji) neither crashes the drift run's idempotency
  key nor the export's content hash, and hashes of valid text are unchanged.

Hand-made lakes through the real commit path; every expected value is written out by hand.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from pathlib import Path

import anthropic
import httpx2 as httpx
import numpy as np

from costline.config import CaptureConfig, Config, LakeConfig
from costline.lake import Lake
from costline.processors.buffer import rows_to_tables
from costline.processors.records import CallRow, RequestRow

T0 = dt.datetime(2026, 11, 7)
T1 = T0 + dt.timedelta(days=1)
QUESTION = "what is the weather in Paris? answer positive"


def _us(t: dt.datetime) -> int:
    return int(t.replace(tzinfo=dt.timezone.utc).timestamp() * 1_000_000)


def text(role: str, content: str) -> dict:
    return {"role": role, "parts": [{"type": "text", "content": content}]}


def rows_of(i: int, input_messages: list[dict] | str, answer: str = "positive", *, tenant: str = "acme"):
    """A successful student request span and its model call, with ``input_messages`` captured."""
    t = T0 + dt.timedelta(seconds=i)
    rid, trace, sid = f"r{i:05d}", f"{i:032x}", f"{i + 1:016x}"
    doc = input_messages if isinstance(input_messages, str) else json.dumps(input_messages)
    r = RequestRow(rid, trace, sid, _us(t), tenant, "classification", "intent", "student", "student", False, 1, 0,
                   True, None, 10.0, None, None, 0, i, None, None)
    c = CallRow(f"{i + 1:015x}c", trace, sid, rid, _us(t), "chat", "vllm", "costline-student", "costline-student",
                "student", 100, 5, 0, 0, False, ["stop"], None, 0.0, "student", "2026-06", 5.0, doc,
                json.dumps([text("assistant", answer)]), 0, i)
    return [r, c]


def lake_of(path: Path, rows: list) -> Config:
    cfg = Config(lake=LakeConfig(path=path), capture=CaptureConfig(message_content=True))
    by = {"requests": [r for r in rows if isinstance(r, RequestRow)],
          "calls": [r for r in rows if isinstance(r, CallRow)]}
    Lake(path).init().commit_batch("otlp_spans", 0, 0, len(rows), {t: rows_to_tables(t, rs) for t, rs in by.items()})
    d = dataclasses.replace(cfg.jobs.drift, mmd_permutations=0)
    return cfg.replace(jobs=dataclasses.replace(cfg.jobs, drift=d))


def sample(cfg: Config, skipped: dict | None = None):
    from costline.jobs.sampling import sample_requests
    from costline.lake import open_lake

    con = open_lake(cfg)
    try:
        kw = {} if skipped is None else {"skipped": skipped}
        return sample_requests(con, tier="student", since=T0, until=T1, size=100, **kw)
    finally:
        con.close()


AGENT = [
    text("user", QUESTION),
    {"role": "assistant", "parts": [{"type": "tool_call", "id": "t1", "name": "weather",
                                     "arguments": {"city": "Paris"}}]},
    {"role": "tool", "parts": [{"type": "tool_call_response", "id": "t1", "response": "18C sunny"}]},
]
#: what the teacher must be sent for AGENT (by hand: json.dumps of {"city": "Paris"} is '{"city": "Paris"}')
AGENT_SENT = [
    {"role": "user", "content": QUESTION},
    {"role": "assistant", "content": '[tool call weather({"city": "Paris"})]'},
    {"role": "user", "content": "[tool result: 18C sunny]"},
]

# (input messages, the messages the teacher is sent, the query)
CASES = {
    "plain text is as before": (
        [text("system", "Be brief."), text("user", "hi"), text("assistant", "hello"), text("user", "bye now")],
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
         {"role": "user", "content": "bye now"}],
        "bye now"),
    "semconv tool turns (role tool)": (AGENT, AGENT_SENT, QUESTION),
    "text and a call in one turn, a result with text in a user turn (Anthropic's shape)": (
        [text("user", "time in Paris?"),
         {"role": "assistant", "parts": [{"type": "text", "content": "Let me check."},
                                         {"type": "tool_call", "id": "a", "name": "get_time",
                                          "arguments": {"zone": "CET"}}]},
         {"role": "user", "parts": [{"type": "tool_call_response", "id": "a", "response": "12:00"},
                                    {"type": "text", "content": "and in "}, {"type": "text", "content": "Tokyo?"}]}],
        [{"role": "user", "content": "time in Paris?"},
         {"role": "assistant", "content": 'Let me check.\n[tool call get_time({"zone": "CET"})]'},
         {"role": "user", "content": "[tool result: 12:00]\nand in Tokyo?"}],
        "and in Tokyo?"),
    "a call without arguments, a structured result": (
        [text("user", "list files"),
         {"role": "assistant", "parts": [{"type": "tool_call", "id": "b", "name": "ls"}]},
         {"role": "tool", "parts": [{"type": "tool_call_response", "id": "b", "response": [{"path": "a.py"}]}]}],
        [{"role": "user", "content": "list files"}, {"role": "assistant", "content": "[tool call ls()]"},
         {"role": "user", "content": '[tool result: [{"path": "a.py"}]]'}],
        "list files"),
    "a turn of only reasoning or an image is dropped": (
        [text("user", "first"),
         {"role": "assistant", "parts": [{"type": "reasoning", "content": "hmm"}]},
         {"role": "user", "parts": [{"type": "image"}]},
         text("user", "second")],
        [{"role": "user", "content": "first"}, {"role": "user", "content": "second"}],
        "second"),
    "a long tool result is cut at 2,000 characters": (
        [text("user", "read it"),
         {"role": "assistant", "parts": [{"type": "tool_call", "id": "c", "name": "read", "arguments": {}}]},
         {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c", "response": "x" * 5000}]}],
        [{"role": "user", "content": "read it"}, {"role": "assistant", "content": "[tool call read({})]"},
         {"role": "user", "content": "[tool result: " + "x" * 2000 + "…]"}],
        "read it"),
    "a lone surrogate (an escaped half emoji) is read as U+FFFD": (
        '[{"role": "user", "parts": [{"type": "text", "content": "great product \\ud83d positive"}]}]',
        [{"role": "user", "content": "great product \ufffd positive"}],
        "great product \ufffd positive"),
}


def test_what_the_teacher_is_sent(tmp_path):
    rows = []
    for i, (doc, _sent, _query) in enumerate(CASES.values()):
        rows += rows_of(i, doc)
    got = {s.request_id: s for s in sample(lake_of(tmp_path / "lake", rows))}
    for i, (name, (_doc, sent, query)) in enumerate(CASES.items()):
        s = got[f"r{i:05d}"]
        assert ([dict(m) for m in s.messages], s.query) == (sent, query), name


def test_a_request_whose_last_user_turn_has_no_text_is_left_out_with_its_reason(tmp_path, caplog):
    from costline.jobs.sampling import SKIP_EMPTY_LAST_TURN, SKIP_NO_USER_TURN

    rows = rows_of(0, [text("user", "ok question")])
    rows += rows_of(1, [text("user", "look"), text("assistant", "at what?"),
                        {"role": "user", "parts": [{"type": "image"}]}])
    rows += rows_of(2, [text("system", "only a system prompt")])
    rows += rows_of(3, [text("user", "   ")])
    skipped: dict = {}
    got = sample(lake_of(tmp_path / "lake", rows), skipped)
    assert [s.request_id for s in got] == ["r00000"]
    assert skipped == {(f"{1:032x}", "r00001"): SKIP_EMPTY_LAST_TURN, (f"{2:032x}", "r00002"): SKIP_NO_USER_TURN,
                       (f"{3:032x}", "r00003"): SKIP_EMPTY_LAST_TURN}
    assert any("2 request(s) left out" in r.getMessage() and SKIP_EMPTY_LAST_TURN in r.getMessage()
               for r in caplog.records)


def test_drift_on_agentic_traffic_sends_no_empty_message_and_scores_every_item(tmp_path):
    """40 plain requests and 10 with tool turns. Before, the 10 were sent with two empty messages, refused
    (400) and, at 20% of the sample (> max_error_rate 5%), failed the run every night."""
    from costline.jobs.drift import run_drift

    rows = []
    for i in range(40):
        rows += rows_of(i, [text("user", f"q #{i} positive")])
    for i in range(40, 50):
        rows += rows_of(i, AGENT)
    cfg = lake_of(tmp_path / "lake", rows)
    sent: list[list[dict]] = []

    def api(request):
        msgs = json.loads(request.content)["messages"]
        sent.append(msgs)
        for j, m in enumerate(msgs):  # the Messages API's rule on empty content
            c = m["content"]
            if (not c or (isinstance(c, str) and not c.strip())) and not (
                    j == len(msgs) - 1 and m["role"] == "assistant"):
                return httpx.Response(400, json={"type": "error", "error": {
                    "type": "invalid_request_error", "message": f"messages.{j}: all messages must have non-empty "
                    "content except for the optional final assistant message"}})
        return httpx.Response(200, json={
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-fable-5",
            "content": [{"type": "text", "text": "positive"}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 1, "cache_read_input_tokens": 0,
                      "cache_creation_input_tokens": 0}})

    client = anthropic.Anthropic(base_url="http://test", api_key="x", max_retries=0,
                                 http_client=httpx.Client(transport=httpx.MockTransport(api)))
    r = run_drift(cfg, since=T0, until=T1, client=client, embedder=None)
    assert r.n == 50
    assert sum(m == AGENT_SENT for m in sent) == 10
    assert [(a.subtype, a.n, a.student_score, a.gap) for a in r.assessments] == [("intent", 50, 1.0, 0.0)]


# -- a lone surrogate: hashes ------------------------------------------------------------------------------------

MSGS = [{"role": "user", "content": "Where is my parcel? 👍"}]


def test_request_key_of_valid_text_is_unchanged_and_a_lone_surrogate_has_its_own():
    from costline.jobs.teacher import request_key

    # blake2b-128 of the key's JSON document, UTF-8 (a checkpoint's keys must survive an upgrade)
    doc = ('["answer", "r1", "claude-fable-5", "Be brief.", '
           '[{"content": "Where is my parcel? 👍", "role": "user"}], 1024]')
    assert request_key("r1", "claude-fable-5", MSGS, system="Be brief.") == \
        "cl-" + hashlib.blake2b(doc.encode("utf-8"), digest_size=16).hexdigest() == \
        "cl-b6260ddcfac7bba200bd5bf2c25a1438"
    half = request_key("r1", "claude-fable-5", [{"role": "user", "content": "great \ud83d"}])
    assert half.startswith("cl-") and len(half) == 35
    assert half != request_key("r1", "claude-fable-5", [{"role": "user", "content": "great \ufffd"}])


def test_content_hash_of_valid_text_is_unchanged_and_a_lone_surrogate_has_its_own():
    from costline.distill.dataset import content_hash

    # sha256 of the normalised prompt's JSON (NFKC, case folded, trailing "." dropped), UTF-8
    doc = '["be brief", [["user", "where is my parcel? 👍"]]]'
    assert content_hash("Be brief.", MSGS) == hashlib.sha256(doc.encode("utf-8")).hexdigest() == \
        "f41689053fe528b31ee41ea600725798ece3ac361c46c082b124bc61ba0262bb"
    half = content_hash(None, [{"role": "user", "content": "great \ud83d"}])
    assert len(half) == 64 and half != content_hash(None, [{"role": "user", "content": "great \ufffd"}])


# -- the distillation export counts what the sampler left out ----------------------------------------------------

class RandomEmbedder:
    """Unrelated unit vectors (no near duplicates, no clusters): the split stays out of the way."""

    def encode(self, texts):
        rng = np.random.default_rng(len(texts))
        v = rng.normal(size=(len(texts), 256))
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_the_export_keeps_agentic_conversations_as_text_and_counts_prompts_with_nothing_to_answer_as_empty(
        tmp_path):
    """Before, a conversation ending in a tool's answer had an empty last turn: exported as nothing ("empty").
    Now it is exported as the teacher sees it; a last user turn of only an image is still "empty"."""
    from costline.distill.dataset import export_dataset
    from costline.distill.settings import DistillConfig

    rows = []
    for i in range(20):
        rows += rows_of(i, [text("user", f"Classify the sentiment: item {i} was great")])
    for i in range(20, 23):
        rows += rows_of(i, AGENT)
    for i in range(23, 25):  # the last user turn is only an image
        rows += rows_of(i, [text("user", "Classify this"), text("assistant", "send it"),
                            {"role": "user", "parts": [{"type": "image"}]}])
    cfg = lake_of(tmp_path / "lake", rows)
    cfg = cfg.replace(distill=DistillConfig(task_types=("classification",), tenants=("*",), window_days=1,
                                            eval_fraction=0.15))
    ex = export_dataset(cfg, since=T0, until=T1, run_id="x", embedder=RandomEmbedder())
    assert ex.skipped.get("empty") == 2
    assert ex.skipped.get("no captured content, no successful answer, or a cache hit") == 0
    # the three agentic requests are one conversation: exact duplicates of each other, one kept
    assert ex.skipped.get("exact duplicate") == 2 and ex.train + ex.eval == 21
    exported = [json.loads(line) for f in ("train.jsonl", "eval.jsonl")
                for line in (ex.run.dataset / f).read_text().splitlines()]
    (agentic,) = [r for r in exported if r["request_id"] in ("r00020", "r00021", "r00022")]
    assert (agentic["messages"], agentic["query"]) == (AGENT_SENT, QUESTION)
