"""The ``json`` metric (structured answers compared field by field), the ``cosine`` metric's exact rule for short
answers, and the drift job on a JSON-extraction subtype end to end: a student whose JSON differs from the teacher's
in format only is not flagged; one whose totals are wrong is.

Every expected score is worked out by hand in the tables: a score is the share of leaf paths of either answer on
which both hold equal values (numbers by value, strings as exact match normalises them, bools and null exactly).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import anthropic
import httpx2 as httpx
import numpy as np
import pytest

from costline.config import CaptureConfig, Config, LakeConfig
from costline.jobs.scoring import ScoreRequest, Scorer, json_match
from costline.lake import Lake
from costline.processors.buffer import rows_to_tables
from costline.processors.records import CallRow, RequestRow

INVOICE = '{"vendor": "ACME Corp", "total": 1200}'
PRETTY_FENCED = '```json\n{\n  "vendor": "ACME Corp",\n  "total": 1200\n}\n```'


@pytest.mark.parametrize("student, teacher, expected", [
    # the same fields and values, written differently: 1
    ('{"total": 1200, "vendor": "ACME Corp"}', INVOICE, 1.0),  # key order
    ('{"vendor":"ACME Corp","total":1200}', PRETTY_FENCED, 1.0),  # compact vs fenced and pretty-printed
    ('{"vendor": "ACME Corp", "total": 1200.00}', INVOICE, 1.0),  # 1200.00 is 1200
    ('{"vendor": "ACME Corp", "total": 1.2e3}', INVOICE, 1.0),
    ('```\n{"vendor": "ACME Corp", "total": 1200}\n```', INVOICE, 1.0),  # a fence without a language
    ('Here is the JSON: {"vendor": "ACME Corp", "total": 1200} Let me know!', INVOICE, 1.0),  # text around it
    ('Here is the extracted data:\n```json\n{"vendor": "ACME Corp", "total": 1200}\n```', INVOICE, 1.0),
    ('[draft] {"vendor": "ACME Corp", "total": 1200}', INVOICE, 1.0),  # "[draft]" is no JSON: the next start is
    ('{"vendor": "acme corp.", "total": 1200}', INVOICE, 1.0),  # strings as exact match normalises them
    ('{"ok": false, "note": null}', '{"ok": false, "note": null}', 1.0),
    ('{"ok": false}', '{"ok": false, "note": null}', 1.0),  # a null field is a missing one
    ('{"tags": []}', '{"tags": []}', 1.0),  # an empty list is a leaf
    # any field that differs, is missing or is added: 0 (all or nothing, as exact)
    ('{"vendor": "ACME Corp", "total": 2100}', INVOICE, 0.0),
    ('{"vendor": "ACME Corp", "total": 120}', INVOICE, 0.0),
    ('{"vendor": "John Doe", "total": 2100}', INVOICE, 0.0),
    ('{"vendor": "ACME Corp"}', INVOICE, 0.0),  # a missing field
    ('{"vendor": "ACME Corp", "total": 1200, "currency": "USD"}', INVOICE, 0.0),  # an extra field
    ('{"items": [{"sku": "A", "qty": 2}, {"sku": "B", "qty": 3}]}',
     '{"items": [{"sku": "A", "qty": 2}, {"sku": "B", "qty": 1}]}', 0.0),  # 1 of 4 leaves differs
    ('["a", "b"]', '["b", "a"]', 0.0),  # lists by position
    ('{"paid": true}', '{"paid": 1}', 0.0),  # a bool is no number
    ('{"total": "1200"}', '{"total": 1200}', 0.0),  # a string is no number
    ('{"note": null}', '{"note": ""}', 0.0),
    ('{"tags": []}', '{"tags": {}}', 0.0),  # an empty list is not an empty object
    ('{"tags": []}', '{"tags": ["x"]}', 0.0),  # paths tags and tags.0: none shared
    ('{"0": "a"}', '["a"]', 0.0),  # a key "0" is not the index 0
    # the reference holds JSON, the answer none: 0
    ("ACME Corp, 1200", INVOICE, 0.0),
    ("", INVOICE, 0.0),
    # the reference holds no JSON: exact match of the whole texts
    ("positive", "Positive.", 1.0),
    ("March 5, 2025", "2025-03-05", 0.0),
    ('{"label": "positive"}', "positive", 0.0),
    # a reference that is a lone JSON scalar: numbers by value, a quoted string as exact match reads it
    ("3.0", "3", 1.0),
    ("positive", '"Positive"', 1.0),
    ("4", "3", 0.0),
])
def test_json_answers_are_compared_field_by_field(student, teacher, expected):
    assert json_match(student, teacher) == pytest.approx(expected)
    item = ScoreRequest("k", "json", "q", student, teacher)
    assert Scorer().score([item]) == [(pytest.approx(expected), 1.0)]


def _nested(depth: int, sep: str) -> str:
    return '{"a":' + sep + ('{"a":' + sep) * (depth - 1) + "1" + "}" * depth


@pytest.mark.parametrize("student, teacher, expected", [
    # equal as JSON, not as text (the student writes a space after each colon): structurally 1, by exact match 0
    (_nested(3, " "), _nested(3, ""), 1.0),
    (_nested(40, " "), _nested(40, ""), 0.0),  # deeper than JSON_MAX_DEPTH (32): exact match
    (json.dumps(list(range(6000))), json.dumps(list(range(6000)), separators=(",", ":")), 0.0),  # > 5,000 leaves
    (json.dumps({"text": "x" * 120_000}), json.dumps({"text": "x" * 120_000}, indent=1), 0.0),  # > 100,000 chars
    ("[" * 40_000 + "]" * 40_000, "[" * 40_000 + "]" * 40_000, 1.0),  # too deep for the parser: exact, equal texts
    ("[" * 40_000, '{"a": 1}', 0.0),  # too deep to parse: exact match of the whole texts
    # inputs that once took quadratic time in a pattern (a fence opened and never closed, a run of punctuation)
    ("```" + " " * 50_000 + "x", '{"a": 1}', 0.0),
    (" ." * 50_000 + " x", " ." * 50_000 + " x", 1.0),
])
def test_answers_over_the_json_bounds_are_compared_by_exact_match(student, teacher, expected):
    assert json_match(student, teacher) == expected


# -- cosine: short answers compared exactly ----------------------------------------------------------------------

class ConstantCosine:
    """Every answer embeds to one vector and every reference to another at ``cosine`` from it."""

    def __init__(self, cosine: float) -> None:
        self.rows = iter([np.array([1.0, 0.0]), np.array([cosine, float(np.sqrt(1 - cosine ** 2))])] * 10)

    def encode(self, texts):
        row = next(self.rows)
        return np.tile(row, (len(texts), 1))


@pytest.mark.parametrize("student, teacher, short", [
    ("3", "3.0", 1.0),  # numbers by value
    ("4", "3", 0.0),
    ("-5", "5", 0.0),
    ("1e3", "1000", 1.0),
    (".5", "0.5", 1.0),
    ("1,200", "1200", 0.0),  # a thousands separator is not read ("1,200" is 1.2 in much of Europe)
    ("Positive", "positive.", 1.0),
    ("**Positive**", "positive", 1.0),
    ("seven", "7", 0.0),
    ("New York City", "new york city", 1.0),  # 3 words each: still short
    ("python, databases, performance", "performance, python, databases", 1.0),  # the same tags in another order
    ("billing/refund", "refund billing", 1.0),
    ("billing, refund", "billing", 0.0),  # a tag missing
    ("billing, billing", "billing", 0.0),  # not the same multiset
    ("not spam", "spam", 0.0),
    ("", "", 1.0),
])
@pytest.mark.parametrize("cosine", [0.0, 1.0])
def test_cosine_compares_short_answers_exactly_whatever_the_embeddings_say(student, teacher, short, cosine):
    items = [ScoreRequest("s", "cosine", "q", student, teacher),
             ScoreRequest("l", "cosine", "q", "3", "The answer is 3.")]  # 4 words: the embeddings decide
    got = Scorer(embedder=ConstantCosine(cosine)).score(items)
    assert got == [(short, 1.0), (pytest.approx(cosine), 1.0)]


def test_short_answers_alone_load_no_embedding_model():
    def never():
        pytest.fail("the embedding model was loaded for short answers")

    assert Scorer(embedder=never).score([ScoreRequest("k", "cosine", "q", "4", "3")]) == [(0.0, 1.0)]


# -- the drift job on a JSON-extraction subtype ---------------------------------------------------------------------

T0 = dt.datetime(2026, 11, 7)
VENDORS = ["ACME Corp", "Globex", "Initech", "Umbrella", "Hooli", "Stark Industries"]


def _us(t: dt.datetime) -> int:
    return int(t.replace(tzinfo=dt.timezone.utc).timestamp() * 1_000_000)


def _content(role: str, text: str) -> str:
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": text}]}])


def invoice_rows(day: int, answer) -> list:
    """60 student-served extraction requests (subtype invoice) on day ``day``; ``answer(i)`` is the student's."""
    rows = []
    for i in range(60):
        n = 1000 * day + i
        t = T0 + dt.timedelta(days=day, seconds=i)
        rid, trace, sid = f"r{n:05d}", f"{n:032x}", f"{n + 1:016x}"
        query = f"Extract vendor and total as JSON. Invoice #{i}: {VENDORS[i % 6]}, total ${100 + 17 * i}.00"
        rows.append(RequestRow(rid, trace, sid, _us(t), "acme", "extraction", "invoice", "student", "student", False,
                               1, 0, True, None, 10.0, None, None, 0, n, None, None))
        rows.append(CallRow(f"{n + 1:015x}c", trace, sid, rid, _us(t), "chat", "vllm", "costline-student",
                            "costline-student", "student", 100, 5, 0, 0, False, ["stop"], None, 0.0, "student",
                            "2026-06", 5.0, _content("user", query), _content("assistant", answer(i)), 0, n))
    return rows


def teacher(request) -> httpx.Response:
    """Claude-like: the right fields, pretty-printed in a fence, the total with cents."""
    i = int(json.loads(request.content)["messages"][-1]["content"].split("#")[1].split(":")[0])
    text = "```json\n" + json.dumps({"vendor": VENDORS[i % 6], "total": 100.0 + 17 * i}, indent=2) + "\n```"
    return httpx.Response(200, json={
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-fable-5",
        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 30, "output_tokens": 20, "cache_read_input_tokens": 0,
                  "cache_creation_input_tokens": 0}})


def test_drift_flags_a_json_extraction_student_for_wrong_fields_not_for_their_format(tmp_path):
    from costline.jobs.drift import run_drift

    right = invoice_rows(0, lambda i: json.dumps({"total": 100 + 17 * i, "vendor": VENDORS[i % 6]},
                                                 separators=(",", ":")))
    wrong = invoice_rows(1, lambda i: json.dumps({"vendor": VENDORS[i % 6], "total": 1100 + 17 * i}))
    rows = right + wrong
    lake = tmp_path / "lake"
    Lake(lake).init().commit_batch("otlp_spans", 0, 0, len(rows), {
        "requests": rows_to_tables("requests", [r for r in rows if isinstance(r, RequestRow)]),
        "calls": rows_to_tables("calls", [r for r in rows if isinstance(r, CallRow)])})
    cfg = Config(lake=LakeConfig(path=lake), capture=CaptureConfig(message_content=True))
    # the default metrics: extraction is scored by "json"
    cfg = cfg.replace(jobs=dataclasses.replace(cfg.jobs, drift=dataclasses.replace(cfg.jobs.drift,
                                                                                   mmd_permutations=0)))
    client = anthropic.Anthropic(base_url="http://test", api_key="x", max_retries=0,
                                 http_client=httpx.Client(transport=httpx.MockTransport(teacher)))

    # night 1: the same fields and values as the teacher's (compact, keys swapped, no cents): every item 1, gap 0
    night1 = run_drift(cfg, since=T0, until=T0 + dt.timedelta(days=1), client=client, embedder=None)
    [a] = night1.assessments
    assert (a.subtype, a.n, a.student_score, a.gap, a.flagged) == ("invoice", 60, 1.0, 0.0, False)
    assert {r["metric"] for r in night1.rows} == {"json"}

    # night 2: every total is 1,000 off: every item differs, gap 1, over the baseline's gap 0 + max_gap_increase 0.05
    night2 = run_drift(cfg, since=T0 + dt.timedelta(days=1), until=T0 + dt.timedelta(days=2), client=client,
                       embedder=None)
    [b] = night2.assessments
    assert (b.subtype, b.n, b.student_score, b.gap, b.baseline_gap, b.flagged) == ("invoice", 60, 0.0, 1.0, 0.0, True)
    assert b.threshold == pytest.approx(0.05)


def test_the_distill_gate_bounds_a_json_gap_as_a_share_of_answers():
    """json scores are 0 or 1, so its gap is k of n answers and its bound Clopper-Pearson, as exact's: 1 of 30 at
    95 %: beta.ppf(0.95, 2, 29) = 0.1486 (Student's t would give 0.0900)."""
    from costline.distill.evaluate import gap_bound

    b = gap_bound("json", [1.0] + [0.0] * 29, 0.95)
    assert (b.method, b.n, b.disagreements) == ("Clopper-Pearson", 30, 1)
    assert b.high == pytest.approx(0.1486, abs=5e-4)


def test_a_json_subtype_whose_reference_holds_no_json_is_compared_with_its_answer_pattern():
    """A teacher answer that is no JSON falls back to exact match, with the subtype's answer pattern as exact uses it
    (the demo stand-in's answers carry a [ref:…] marker around free text: the same marker is the same answer)."""
    student, teacher = "[ref:0a1b2c3d] Pricing: 12 USD a seat.", "[ref:0a1b2c3d] The price is $12 per seat."
    item = ScoreRequest("k", "json", "q", student, teacher, task_type="extraction")
    assert Scorer(answer_pattern=r"\[ref:([0-9a-f]{8})\]").score([item]) == [(1.0, 1.0)]
    assert Scorer(answer_pattern=r"\[ref:([0-9a-f]{8})\]").score(
        [ScoreRequest("k", "json", "q", student.replace("0a1b", "ffff"), teacher)]) == [(0.0, 1.0)]
    assert Scorer().score([item]) == [(0.0, 1.0)]  # without the pattern the texts differ
