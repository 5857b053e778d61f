"""The verification stage against hostile question text, for CPU time: whitespace costs the embedder no word piece, so
a question padded with a request body's megabytes of it "fits" the model's window and reaches the stage's parser."""

from __future__ import annotations

import random
import re
import time

from costline.serving.cache import verify

#: _PART_SEP as it was (quadratic on a run of spaces), to show the rewrite finds the same separators.
_OLD_PART_SEP = re.compile(r"\s*(?:[;:!?\u2014\u2013]|[,.](?!\d)|\s-\s)\s*")


def test_part_separator_finds_the_same_matches_as_before() -> None:
    rnd = random.Random(7)
    alphabet = [" ", " ", "\n", "\t", "\u00a0", ";", ",", ".", "-", "?", "\u2014", "1", "a", "b"]
    for _ in range(50_000):
        s = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 14)))
        old = [(m.span(), m.group(0)) for m in _OLD_PART_SEP.finditer(s)]
        assert [(m.span(), m.group(0)) for m in verify._PART_SEP.finditer(s)] == old, repr(s)


def cpu(fn, *args) -> float:
    t = time.process_time()
    fn(*args)
    return time.process_time() - t


def test_a_run_of_spaces_is_parsed_in_linear_time() -> None:
    """20 000 spaces in a question: _aside_spans took ~6 s (quadratic), against milliseconds for as many characters
    of words."""
    words = "how do i " + "a " * 10_000 + "reset it?"
    spaces = "how do i " + " " * 20_000 + "reset it?"
    cpu(verify._aside_spans, words)
    # CPU time of this process, not wall time, with a margin of hundreds: linear takes milliseconds, the quadratic
    # pattern ~6 s (a hang guard, not a performance target)
    assert cpu(verify._aside_spans, spaces) < 1.5


def test_a_long_question_is_not_parsed(monkeypatch) -> None:
    """A question over MAX_QUESTION_CHARS (padded with whitespace, zero-width or control characters, which cost the
    embedder nothing) is only served as the same text again: never parsed, whatever it holds."""
    v = verify.Verifier()
    parsed: list[int] = []
    real = verify.analyse

    def spy(text, *args, **kwargs):
        parsed.append(len(text))
        return real(text, *args, **kwargs)

    monkeypatch.setattr(verify, "analyse", spy)
    for pad in (" ", "\n", "\u200b", "\x00", "- "):
        stored = "How do I reset my password?" + pad * 30_000
        asked = "How do I change my password?" + pad * 30_000
        assert v.check(asked, stored, 0.99) == verify.REASON_LONG_QUERY
    assert v.check("How do I reset my password?" + " " * 30_000, "how do I  reset my password", 0.99) is None  # same
    assert parsed == []
    assert v.check("How do I reset my password?", "How can I reset my password?", 0.97) is None  # short: parsed
    assert parsed


def test_a_name_plus_run_is_read_in_linear_time() -> None:
    """"+a.a.a.a…": every word start inside the run rescanned it to its end looking for a "+" (3.1 s of CPU at
    32,000 characters, 6 s a lookup through the gateway, other tenants waiting); bounded, milliseconds."""
    hostile = "+" + "a." * 16_000
    verify.signs("+ warm")
    # a hang guard, not a performance target: linear takes ~10 ms, the quadratic pattern seconds
    assert cpu(verify.signs, hostile) < 1.0
    assert verify.signs("Is C++ faster than C?").plus_names == ("c",)  # a name's plus is still read


def test_a_long_pair_is_compared_before_any_parse(monkeypatch) -> None:
    """A pair with a question over MAX_QUESTION_CHARS is compared as text (linear), before the signs, the code and
    the words are read: the same text again is served, case and end punctuation aside unless it holds code."""
    v = verify.Verifier()

    def never(*args, **kwargs):
        raise AssertionError("a long question was parsed")

    for name in ("signs", "code", "analyse", "_same_text"):
        monkeypatch.setattr(verify, name, never)
    story = "word " * (verify.MAX_QUESTION_CHARS // 5 + 10)
    assert v.check(story + "how do I reset it?", story + "How do I reset it", 0.99) is None
    assert v.check(story + "how do I reset it?", story + "how do I change it?", 0.99) == verify.REASON_LONG_QUERY
    assert v.check(story + "what does ls -l print?", story + "what does ls -L print?", 0.99) == verify.REASON_CODE


def test_a_question_of_too_many_words_is_not_guarded(monkeypatch) -> None:
    """"€" x 2,000 is one word piece to the embedder (so within its window and under MAX_QUESTION_CHARS) but 2,000 of
    the guards' words, whose matching is quadratic (~340 ms a check, each variant a new pair): rejected unguarded."""
    v = verify.Verifier()
    guarded: list[int] = []
    real = verify.guard

    def spy(q, c, cosine):
        guarded.append(len(q.tokens))
        return real(q, c, cosine)

    monkeypatch.setattr(verify, "guard", spy)
    stored = "€" * 2_000
    asked = "€" * 1_000 + "£" + "€" * 999
    assert v.check(asked, stored, 1.0) == verify.REASON_LONG_QUERY
    assert guarded == []
    assert v.check(stored, stored, 1.0) is None  # the same text again is served
    assert v.check("How do I reset my password?", "How can I reset my password?", 0.97) is None
    assert guarded  # a question of a few words is guarded as ever
