"""The ``code`` guard: questions that differ only in code — an operator, a command-line flag, a path, an email, a
regex — were served each other's cached answers ("Is it safe to run `rm -rf ./build`?" for "… `rm -rf /`?"). Every
pair goes through ``Verifier.check`` of the default config (mode ``verified``, the shipped admission and pair models)
at its real MiniLM cosine. The labels are what the questions mean: another operator, flag, path or address asks
another question; the same code in other words (or in backticks on one side only) asks the same one."""

from __future__ import annotations

import numpy as np
import pytest

from costline.serving.cache import verify
from costline.serving.cache.verify import GUARD_REASONS, MAX_QUESTION_CHARS, Verifier

CODE = "code"  # the reason, written out: these rows run against a verifier without the guard too

# (stored question, new question): a cached answer to the first is a wrong answer to the second.
# The first twelve are the review's (nine were served; chmod, DELETE and range(len(xs) - 1) were refused already).
MUST_MISS = [
    ("What does this Python print?\nprint(7 - 3)", "What does this Python print?\nprint(7 + 3)"),
    ("What is 12 * 3?", "What is 12 / 3?"),
    ("What does `git reset --hard HEAD~1` do?", "What does `git reset --soft HEAD~1` do?"),
    ("Is it safe to run `rm -rf ./build`?", "Is it safe to run `rm -rf /`?"),
    ("Explain this line: `rm -rf /tmp/build`", "Explain this line: `rm -rf /`"),
    ("Why does `a == b` return True here?", "Why does `a is b` return True here?"),
    ("Is `x and y` truthy when x=0 and y=1?", "Is `x or y` truthy when x=0 and y=1?"),
    ("What does `DELETE FROM users WHERE id = 5` do?", "What does `DELETE FROM users` do?"),
    ("Is alice@example.com a valid address?", "Is alice@example.org a valid address?"),
    ("What does chmod 755 do?", "What does chmod 777 do?"),
    ("What does the regex ^a+$ match?", "What does the regex ^a*$ match?"),
    ("Does `for i in range(len(xs) - 1)` visit every element?", "Does `for i in range(len(xs))` visit every element?"),
    # written for this test
    ("What does git reset --hard do?", "What does git reset --soft do?"),
    ("Is it safe to run rm -rf ./build?", "Is it safe to run rm -rf /?"),
    ("What is 12 / 3?", "What is 12 - 3?"),
    ("What is 12 % 5 in Python?", "What is 12 * 5 in Python?"),
    ("What is 2 ** 10 in Python?", "What is 2 * 10 in Python?"),
    ("What is 7 // 2 in Python?", "What is 7 / 2 in Python?"),
    ("Why does a == b return True here?", "Why does a is b return True here?"),
    ("Why is x && y false?", "Why is x || y false?"),
    ("Is x = 5 an assignment?", "Is x == 5 an assignment?"),
    ("What does `ls -l` print?", "What does `ls -L` print?"),  # case and spacing aside the same text: not code
    ("What does ls -l print?", "What does ls -a print?"),
    ("What does docker run -it ubuntu do?", "What does docker run -d ubuntu do?"),
    ("Should I use `pip install -U requests`?", "Should I use `pip install requests`?"),
    ("Can I delete C:\\Windows\\Temp?", "Can I delete C:\\Windows\\System32?"),
    ("What is in ~/.bashrc?", "What is in ~/.profile?"),
    ("Does the pattern \\d+ match 12?", "Does the pattern \\w+ match 12?"),
    ("Summarise https://example.com/post/1", "Summarise https://example.com/post/2"),
    ("Send the invoice to alice@example.com please. Which address will you use?",
     "Send the invoice to alice@example.org please. Which address will you use?"),
    ("What does ```python\nxs = [1, 2]\nprint(xs)\n``` print?",
     "What does ```python\nxs = [1, 2]\nprint(*xs)\n``` print?"),
    ("Is `x in xs` slower than `x in set(xs)`?", "Is `x in xs` slower than `x in frozenset(xs)`?"),
]
# the review's nine served pairs and the ones written here: the code guard is what turns them away
BY_OTHER_GUARDS = {("What does chmod 755 do?", "What does chmod 777 do?")}  # numbers: the number guard's

# (stored, new): the same code in other words, or in backticks on one side only — served today, and still served
MUST_HIT = [
    ("What does `git stash pop` do?", "Can you explain what `git stash pop` does?"),
    ("What does `git stash pop` do?", "What does git stash pop do?"),
    ("What does `git stash pop` do?", "what does `git stash pop` do"),
    ("What does `git reset --hard HEAD~1` do?", "What does `git reset --hard HEAD~1` actually do?"),
    ("What does git reset --hard do?", "What does the git reset --hard command do?"),
    ("Is it safe to run `rm -rf ./build`?", "Is it safe to run the command `rm -rf ./build`?"),
    ("Is it safe to run `rm -rf ./build`?", "is it safe to run rm -rf ./build?"),
    ("What does this Python print?\nprint(7 - 3)", "What will this Python code print?\nprint(7 - 3)"),
    ("What is 12 * 3?", "What's 12 * 3?"),
    ("What is 12 * 3?", "Quick question: what is 12 * 3?"),
    ("Why does `a == b` return True here?", "Why does `a == b` evaluate to True here?"),
    ("Is alice@example.com a valid address?", "is ALICE@example.com a valid address?"),
    ("Summarise https://example.com/post/1", "Please summarise https://example.com/post/1"),
    ("What does `chmod 755 script.sh` do?", "What does the command `chmod 755 script.sh` do?"),
    ("Is `x and y` truthy when x=0 and y=1?", "Is `x and y` truthy if x=0 and y=1?"),
    ("What does ```python\nprint(len([1, 2]))\n``` print?", "What does this print? ```\nprint(len([1, 2]))\n```"),
    ("What does `pip install -U requests` do?", "What does `pip install  -U  requests` do?"),
    # prose with hyphens, dates, ranges, ratios, "and/or", dashes, a trailing "?" or "!": no code
    ("How do I update my e-mail address?", "How do I update my email address?"),
    ("Can I book a follow-up appointment?", "Can I book a follow up appointment?"),
    ("Is the clinic open on 12/05?", "Is the clinic open on 12/05 ?"),
    ("Is the gym open 24/7?", "Is the gym open 24/7!"),
    ("Are you open 9-5?", "Are you open 9 - 5?"),
    ("Can I pay by card and/or cash?", "Can I pay by card or cash?"),
    ("Hi - can I cancel my order?", "Hi, can I cancel my order?"),
    ("Is it 50% off?", "Is it 50 % off?"),
    ("Is it pass/fail?", "Is it pass or fail?"),
    ("Can I bring my e-bike - is that ok?", "Can I bring my e-bike, is that OK?"),
    ("Is Wi-Fi free in the lounge?", "Is the Wi-Fi in the lounge free?"),
]

# (stored, new): no code on either side, or the same code — whatever else tells them apart, never the code guard
NOT_CODE = [
    ("Is the clinic open on 12/05?", "Is the clinic open on 2026-12-05?"),
    ("Is the gym open 24/7?", "Is the gym open around the clock?"),
    ("Are you open 9-5?", "Are you open 9 to 5?"),
    ("Do you take kids aged 2-3?", "Do you take kids aged 2 to 3?"),
    ("Can I pay by card and/or cash?", "Can I pay by card and / or cash?"),
    ("Is the freezer at -18°C?", "Is the freezer at minus 18°C?"),
    ("Do you sell C++ books?", "Have you got books on C++?"),
    ("Is it free?!", "Is it free?"),
    ("Is the total £5 + VAT?", "Is the total £5 plus VAT?"),
    ("Is it **really** free?", "Is it really free?"),
    ("Do you open at 10:30?", "Are you open at 10:30 am?"),
    ("Is the meeting 5:30-6:30?", "Is the meeting from 5:30 to 6:30?"),
    ("Do you charge $5/month?", "Is it $5 a month?"),
    ("Is it UTC+2 there?", "Is it UTC +2 there?"),
    ("Is SNS / dipping powder something you offer?", "Do you do dip powder nails?"),
    ("Is there a Q&A session?", "Will there be a Q & A?"),
    ("Do you have size 10/12?", "Do you have size 10 or 12?"),
    ("It costs ~$50, right?", "It costs about $50, right?"),
    ("I'm 30-ish - can I join?", "I'm about 30, can I join?"),
    ("Can you tune to A=440 Hz?", "Can you tune to A=432 Hz?"),  # the same "=": the number guard's
    ("Is alice@example.com a valid address?", "Is alice@example.com a valid email address?"),
]


@pytest.fixture(scope="module")
def embedder():
    from costline.serving.embedding import Embedder

    return Embedder().load()


@pytest.fixture(scope="module")
def default_verifier() -> Verifier:
    from costline.serving.cache.semantic import build_verifier
    from costline.serving.settings import CacheConfig

    cfg = CacheConfig()
    assert cfg.mode == "verified" and cfg.verify_pair_model
    return build_verifier(cfg)


def _cosine(embedder, a: str, b: str) -> float:
    va, vb = embedder.encode([a, b])
    return float(np.dot(va, vb))


def test_code_is_a_listed_guard_reason() -> None:
    assert verify.REASON_CODE == CODE and CODE in GUARD_REASONS


@pytest.mark.parametrize(("stored", "asked"), MUST_MISS)
def test_questions_whose_code_differs_are_never_served_each_others_answer(default_verifier, embedder, stored,
                                                                          asked) -> None:
    cosine = _cosine(embedder, stored, asked)
    expected = None if (stored, asked) in BY_OTHER_GUARDS else CODE
    for new, old in ((asked, stored), (stored, asked)):  # either one stored
        reason = default_verifier.check(new, old, cosine)
        assert reason is not None, (new, old, cosine)
        if expected is not None:
            assert reason == expected, (new, old, reason)


@pytest.mark.parametrize(("stored", "asked"), MUST_HIT)
def test_the_same_code_in_other_words_is_still_served(default_verifier, embedder, stored, asked) -> None:
    cosine = _cosine(embedder, stored, asked)
    assert default_verifier.check(asked, stored, cosine) is None, cosine


@pytest.mark.parametrize(("stored", "asked"), NOT_CODE)
def test_prose_symbols_are_not_code(default_verifier, embedder, stored, asked) -> None:
    assert verify.code_reason(verify.code(asked), verify.code(stored), asked, stored) is None
    assert default_verifier.check(asked, stored, _cosine(embedder, stored, asked)) != CODE


@pytest.mark.parametrize(("text", "spans", "symbols"), [
    ("Is it safe to run `rm -rf /`?", ("rm -rf /",), ()),
    ("Is it safe to run rm -rf /?", (), ("flag:-rf", "path:/")),
    ("What does ```bash\ngit   reset --hard\n``` do?", ("git reset --hard",), ()),
    ("Is a lone ` backtick code?", (), ()),
    ("Mail ALICE@Example.com or see HTTPS://Example.COM/Docs/A", (), ("email:alice@example.com",
                                                                      "url:https://example.com/Docs/A")),
    ("What is 12 * 3 == 36?", (), ("op:*", "op:==")),
    ("Can I email my follow-up on 2026-12-05 at 10:30 - and/or ring 24/7?", (), ()),
])
def test_what_is_read_as_code(text, spans, symbols) -> None:
    found = verify.code(text)
    assert (found.spans, found.symbols) == (spans, symbols)


def test_each_question_is_read_once_and_forget_drops_it() -> None:
    v = Verifier()
    text = "Is it safe to run `rm -rf /`?"
    first = v.code(text)
    assert v.code(text) is first and first.spans == ("rm -rf /",)
    v.forget([text])
    assert text not in v._code_memo


def test_a_question_over_the_parse_limit_is_served_only_for_the_same_code() -> None:
    v = Verifier()
    story = "word " * (MAX_QUESTION_CHARS // 5 + 10)
    stored = story + "what does `ls -l` print?"
    assert v.check(stored + "  ", stored, 0.99) is None  # the same text, spacing aside
    assert v.check(story + "What does `ls -L` print?", stored, 0.99) == CODE  # case aside the same text
    assert v.check(story.upper() + "what does ls print?", story + "what does ls print?", 0.99) is None  # no code


def test_a_semantic_cache_records_the_code_reason_on_the_lookup(embedder, tmp_path) -> None:
    from costline.serving.cache.semantic import SemanticCache
    from costline.serving.settings import CacheConfig

    cache = SemanticCache(embedder, CacheConfig(path=tmp_path))
    cache.store("Is it safe to run `rm -rf ./build`?", "Yes: it deletes ./build only.", tenant="t")
    found = cache.lookup_detail("Is it safe to run `rm -rf /`?", tenant="t")
    assert found.hit is None and found.reject_reasons == (CODE,)
    assert cache.lookup_detail("Is it safe to run the command `rm -rf ./build`?", tenant="t").hit is not None


def test_a_question_whose_code_cannot_be_read_is_a_miss_not_a_failed_lookup(monkeypatch) -> None:
    v = Verifier()

    def broken(text: str):
        raise ValueError("boom")

    monkeypatch.setattr(verify, "code", broken)
    assert v.check("What does `ls -l` print?", "What does `ls -a` print?", 0.95) == verify.REASON_UNREADABLE
