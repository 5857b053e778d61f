"""Long runs of combining marks against every place that normalises untrusted text (NFC / NFKC).

CPython's ``unicodedata.normalize`` puts a run of combining marks in canonical order with an insertion sort: quadratic
in the run's length, with the GIL held. ``"a" + "\\u0301\\u0316" * 50_000`` (reverse-ordered classes, the worst case) in
a system prompt took ~5 s in the cache key (NFC), and as many seconds again in the confidence-mention check (NFKC, once
per tier attempt) and the router (NFKC), while another tenant's request waited. Each now normalises the text made
Stream-Safe first (:func:`costline.textutil.stream_safe`, UAX #15: a U+034F grapheme joiner after each 30th
non-starter of a run), which no real text has, so a real text is unchanged.

Checked by structure, not by time: what reaches ``unicodedata.normalize`` never holds a run of more than 30
non-starters (counted as UAX #15 counts, by an independent loop here), the helper matches a per-character reference of
UAX #15's algorithm, and it leaves real text — every question of the cache's pair files, texts in scripts with many
marks — as it is. One CPU-time hang guard, with a margin of tens.
"""

from __future__ import annotations

import json
import random
import time
import unicodedata
from pathlib import Path

import pytest

from costline import textutil
from costline.serving import confidence
from costline.serving.cache import key
from costline.serving.routing.router import request_chars, routing_text

CGJ = "\u034f"
NORMALIZE = unicodedata.normalize  # as it is, whatever a test spies on
DATA = Path(key.__file__).resolve().parent / "data"


def nfkd_parts(ch: str) -> list[bool]:
    """Whether each character of ``ch``'s NFKD is a non-starter (canonical combining class != 0)."""
    return [unicodedata.combining(c) != 0 for c in NORMALIZE("NFKD", ch)]


def longest_run(text: str) -> int:
    """The longest run of non-starters of ``text`` as UAX #15 counts them: character by character, each character's
    NFKD (a starter ends a run and begins one with the marks its decomposition ends in)."""
    longest = count = 0
    for ch in text:
        parts = nfkd_parts(ch)
        if all(parts):
            count += len(parts)
        else:
            lead = parts.index(False)
            longest = max(longest, count + lead)
            count = parts[::-1].index(False)
        longest = max(longest, count)
    return longest


def reference_stream_safe(text: str) -> str:
    """UAX #15 §13's algorithm, one character at a time (slow; for comparison only)."""
    out: list[str] = []
    count = 0
    for ch in text:
        parts = nfkd_parts(ch)
        lead = len(parts) if all(parts) else parts.index(False)
        if count + lead > 30:
            out.append(CGJ)
            count = 0
        out.append(ch)
        count = count + len(parts) if all(parts) else parts[::-1].index(False)
    return "".join(out)


# -- hostile texts: what each one is made of ------------------------------------------------------------------------
HOSTILE = [
    ("acute + grave below, reversed classes", "a" + "\u0301\u0316" * 2_000),
    ("one mark repeated", "e" + "\u0301" * 3_000),
    ("Tibetan II: class 0, two marks in NFD", "\u0f40" + "\u0f73" * 2_000),
    ("halfwidth voiced mark: class 0, a mark in NFKC", "\u30ab" + "\uff9e\u0316" * 1_500),
    ("Greek dialytika tonos: two marks", "\u03b9" + "\u0344\u0316" * 1_500),
    ("marks above the BMP", "a" + "\U0001d165\U0001d167" * 1_500),
    ("after a starter ending in marks", "\u01d6" + "\u0301" * 3_000),
    ("no base at all", "\u0316\u0301" * 2_000),
    ("runs of 29 between letters", ("a" + "\u0301" * 29) * 100),
    ("runs of 31 between letters", ("a" + "\u0301" * 31) * 100),
    ("with emoji around", "😀 a" + "\u0301\u0316" * 2_000 + " 😀"),
]


@pytest.mark.parametrize("name, text", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_stream_safe_cuts_every_run_at_30_as_uax15_does(name: str, text: str) -> None:
    made = textutil.stream_safe(text)
    assert longest_run(made) <= 30
    assert made == reference_stream_safe(text)
    assert made.replace(CGJ, "") == text  # only joiners added
    assert textutil.stream_safe(made) == made


def test_stream_safe_matches_the_reference_on_random_mark_soup() -> None:
    rnd = random.Random(15)
    alphabet = ["a", "\u01d6", "\u1e69", " ", "\u0301", "\u0316", "\u0323", "\u0344", "\u0f73", "\uff9e",
                "\U0001d165", "😀", "\u200b", CGJ]
    for _ in range(1_500):
        text = "".join(rnd.choice(alphabet[4:10]) if rnd.random() < 0.9 else rnd.choice(alphabet)
                       for _ in range(rnd.randint(0, 120)))
        made = textutil.stream_safe(text)
        assert made == reference_stream_safe(text), ascii(text)
        assert longest_run(made) <= 30


# -- real text is unchanged ------------------------------------------------------------------------------------------
REAL = [
    ("Vietnamese", "Tiếng Việt có sáu thanh điệu: ngang, huyền, sắc, hỏi, ngã, nặng. Người ấy đã về chưa?"),
    ("Vietnamese, decomposed", unicodedata.normalize("NFD", "Tiếng Việt có sáu thanh điệu, ổ khóa ở đâu?")),
    ("Hindi", "क्या आप मुझे बता सकते हैं कि मेरा पासवर्ड कैसे रीसेट करें? संयुक्ताक्षर, क्षत्रिय, श्रृंगार"),
    ("Arabic with harakat", "بِسْمِ ٱللَّٰهِ ٱلرَّحْمَٰنِ ٱلرَّحِيمِ، كَيْفَ أُعِيدُ تَعْيِينَ كَلِمَةِ ٱلْمُرُورِ؟"),
    ("Hebrew with niqqud", "בְּרֵאשִׁית בָּרָא אֱלֹהִים אֵת הַשָּׁמַיִם וְאֵת הָאָרֶץ"),
    ("Zalgo-light", "H̷̢e̶͎l̴̰l̵͙o̸͚ ̷w̶̱o̵͓r̴̲l̷͕d̶͔ — z̸̡̛a̴̢̛l̵̨̛g̶̡̛o̷̢̧ ẗ̶̢̛́e̵̡̛͝x̴̡̛̕t̶̢̛̕"),
    ("Tibetan", "བོད་སྐད་ཀྱི་ཡི་གེ། ཨཱིཿ ཀཱ ཀྵ ཀྲྀ"),
    ("Thai", "สวัสดีครับ ผมจะรีเซ็ตรหัสผ่านได้อย่างไร"),
    ("Korean, decomposed", unicodedata.normalize("NFD", "비밀번호를 어떻게 재설정하나요?")),
    ("Japanese, halfwidth", "ｶﾞｷﾞｸﾞ ﾊﾟｽﾜｰﾄﾞ の リセット"),
    ("Greek polytonic", "Ἐν ἀρχῇ ἦν ὁ λόγος, καὶ ὁ λόγος ἦν πρὸς τὸν θεόν"),
    ("Yoruba, decomposed", unicodedata.normalize("NFD", "Ẹ kú àárọ̀, ṣé dáadáa ni?")),
    ("emoji", "👩🏽‍💻 deploys 🇫🇷 and 👨‍👩‍👧‍👦 ✔️"),
]


@pytest.mark.parametrize("name, text", REAL, ids=[r[0] for r in REAL])
def test_real_text_is_left_as_it_is(name: str, text: str) -> None:
    assert textutil.stream_safe(text) == text
    assert longest_run(text) <= 30  # the premise: real text has no longer run


def test_every_question_of_the_pair_files_is_left_as_it_is() -> None:
    files = sorted(DATA.glob("*.jsonl"))
    assert files
    seen = 0
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            for field in ("q1", "q2"):
                if isinstance(row.get(field), str):
                    assert textutil.stream_safe(row[field]) == row[field], (path.name, row[field])
                    seen += 1
    assert seen > 1_000


# -- the call sites normalise only Stream-Safe text -----------------------------------------------------------------
@pytest.fixture
def normalised(monkeypatch):
    """The longest run of non-starters (UAX #15's count) and the length of each text given to
    ``unicodedata.normalize``, by form."""
    seen: list[tuple[str, int, int]] = []
    routing_text("é\u0301"), confidence.mentions_confidence(["é"]), key.scope_of_body({"system": "é"})  # tables first

    def spy(form: str, text: str) -> str:
        seen.append((form, longest_run(text), len(text)))
        return NORMALIZE(form, text)

    monkeypatch.setattr(unicodedata, "normalize", spy)
    return seen


MARKS = "a" + "\u0301\u0316" * 1_500  # 3,000 marks: a fraction of a second even for the old quadratic sort

SITES = [
    ("cache key: system prompt", "NFC", lambda: key.scope_of_body({"model": "m", "max_tokens": 9, "system": MARKS,
                                                                   "messages": [{"role": "user", "content": "hi"}]})),
    ("cache key: tool description", "NFC", lambda: key.scope_of_body({
        "model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"name": "t", "input_schema": {"type": "object", "description": MARKS}}]})),
    ("cache key: an object's key", "NFC", lambda: key.scope_of_body({
        "model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"name": "t", "input_schema": {"type": "object", "properties": {MARKS: {"type": "string"}}}}]})),
    ("cache key: an earlier turn", "NFC", lambda: key.scope_of_body({
        "model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": MARKS},
                                                    {"role": "assistant", "content": "ok"},
                                                    {"role": "user", "content": "hi"}]})),
    ("confidence mention", "NFKC", lambda: confidence.mentions_confidence(
        [{"role": "user", "content": [{"type": "text", "text": MARKS}]}])),
    ("router: routing text", "NFKC", lambda: routing_text(MARKS)),
    ("router: request size", "NFKC", lambda: request_chars(
        [{"role": "user", "content": MARKS}, {"role": "assistant", "content": "ok"},
         {"role": "user", "content": "hi"}])),
    ("router: marks behind zero-width spaces", "NFKC",
     lambda: routing_text("a" + ("\u0301" * 20 + "\u200b") * 150)),  # the spaces are dropped before the NFKC
]


@pytest.mark.parametrize("name, form, call", SITES, ids=[s[0] for s in SITES])
def test_each_site_normalises_only_stream_safe_text(normalised, name, form, call) -> None:
    call()
    runs = [run for f, run, _ in normalised if f == form]
    assert runs, f"{name}: nothing was normalised ({form})"
    assert max(runs) <= 30, f"{name}: a run of {max(runs)} non-starters reached unicodedata.normalize"


def test_the_confidence_check_normalises_a_bounded_length_of_each_string(normalised) -> None:
    bound = confidence.MAX_MENTION_CHARS
    long = "é" * (5 * bound)
    confidence.mentions_confidence([{"role": "user", "content": long}])
    lengths = [n for f, _, n in normalised if f == "NFKC"]
    assert lengths and max(lengths) <= 2 * bound + 1


@pytest.mark.parametrize("text, mentions", [
    ("é" * 200_000 + " confidence " + "é" * 200_000, True),  # as sent, searched whole
    ("é" * 200_000 + " CONFIDENCE? " + "é" * 200_000, True),
    ("ｃｏｎｆｉｄｅｎｃｅ " + "é" * 400_000, True),  # normalised, in the head
    ("é" * 400_000 + " con\u200bfidence", True),  # normalised, in the tail
    ("é" * 400_000, False),
    ("é" * 200_000 + " ｃｏｎｆｉｄｅｎｃｅ " + "é" * 200_000, False),  # the documented limit: the middle, not as sent
])
def test_what_the_bounded_confidence_check_sees(text: str, mentions: bool) -> None:
    assert confidence.mentions_confidence([{"role": "user", "content": text}]) is mentions


# -- what the change leaves the same ---------------------------------------------------------------------------------
def _old_plain(text: str) -> str:
    """serving/confidence.py's _plain before 2026-12 (for comparison)."""
    if text.isascii():
        return text
    text = unicodedata.normalize("NFKC", text)
    return "".join(c for c in text if unicodedata.category(c) != "Cf")


@pytest.mark.parametrize("name, text", REAL + [("mention", "ｃｏｎｆｉ\u200bｄｅｎｃｅ (confidence: 0.9)")],
                         ids=[r[0] for r in REAL] + ["mention"])
def test_real_text_reads_as_before(name: str, text: str) -> None:
    assert confidence._plain(text) == _old_plain(text)
    assert key._plain(text) == unicodedata.normalize("NFC", text)


def test_a_hostile_system_prompt_has_one_scope_in_either_spelling() -> None:
    """The key stays a function of the text: the same text, in NFC or as sent, has one scope."""
    body = {"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]}
    for _, text in HOSTILE:
        nfc = unicodedata.normalize("NFC", textutil.stream_safe(text))
        assert key.scope_of_body({**body, "system": text}) == key.scope_of_body({**body, "system": nfc})


def test_hang_guard_100k_marks() -> None:
    """The reviewer's sizes: 100,000 reverse-ordered marks took ~5 s in each site (a hang guard, not a performance
    target: linear takes tens of milliseconds)."""
    hostile = "a" + "\u0301\u0316" * 50_000
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": [{"type": "text", "text": hostile}]}
             for i in range(5)]
    routing_text("é"), confidence.mentions_confidence([{"role": "user", "content": "é"}]), key.scope_of_body({})
    for call in (lambda: key.scope_of_body({"model": "m", "max_tokens": 9, "system": hostile, "messages": turns}),
                 lambda: confidence.mentions_confidence(turns), lambda: request_chars(turns),
                 lambda: routing_text(hostile)):
        start = time.process_time()
        call()
        assert time.process_time() - start < 1.5


def test_the_verifier_and_the_nightly_jobs_normalise_stream_safe_text(monkeypatch) -> None:
    """The verifier's accent folding (NFD, NFC of a question), the scorer's and the dataset export's NFKC of answers
    normalise only stream-safe text: no run of more than 30 non-starters reaches unicodedata.normalize."""
    import unicodedata

    from costline.distill import dataset
    from costline.jobs import scoring
    from costline.serving.cache import verify

    seen: list[str] = []
    real = unicodedata.normalize

    def spy(form, text):
        seen.append(text)
        return real(form, text)

    monkeypatch.setattr(unicodedata, "normalize", spy)
    hostile = "caf" + "e" + "\u0301\u0316" * 400 + " ok"
    verify._fold_accents(hostile)
    scoring.normalize(hostile)
    dataset.normalize_text(hostile)
    assert len(seen) >= 4
    for text in seen:
        run = longest = 0
        for ch in text:
            run = run + 1 if unicodedata.combining(ch) else 0
            longest = max(longest, run)
        assert longest <= 30, longest
