"""Questions that ask for different kinds of answer on the same words were served as one (cosine 0.75-0.93, the
pair model agreeing): "where do I vote" / "when do I vote", "why did my flight get cancelled" / "when did it get
cancelled", "how do I renew my library card" / "when do I renew it". 11 of 15 such pairs written after the rule
(split ``test`` of serving/cache/data/cache_pair_question_words.jsonl) were hits before it.

A clause's question word says what kind of answer it wants: a time, a reason, a place, a person, a manner. A time
or a reason answers no other kind; a place, a person and a manner often share an answer ("where do I find my
invoice" / "how do I find it"). Expected reasons come from the sentences.
"""

from __future__ import annotations

import pytest

from costline.serving.cache.verify import GUARD_REASONS, Verifier, guard

APART = [
    ("Where do I return an item?", "When do I return an item?"),
    ("Why was my card declined?", "When was my card declined?"),
    ("How do I pay my bill?", "When do I pay my bill?"),
    ("Who can see my posts?", "Why can people see my posts?"),
    ("Why do I need a visa?", "Where do I need a visa?"),
    ("Where do I pick up my keys?", "Why do I pick up my keys?"),
    ("Where can I park?", "What time can I park?"),
    ("Hi, where do I vote?", "Hi, when do I vote?"),  # a greeting before the question word
    ("I moved house. Where do I update my address?", "I moved house. Why do I update my address?"),
    # asked inside a sentence
    ("I'd like to know where I can park.", "I'd like to know when I can park."),
    ("Do you know why my order was cancelled?", "Do you know when my order was cancelled?"),
    ("Please tell me who approved my leave.", "Please tell me when my leave was approved."),
    ("Any idea why the site is down?", "Any idea when the site will be back?"),
]

SAME = [
    ("Where do I find my invoice?", "How do I find my invoice?"),
    ("Who do I contact about billing?", "How do I contact billing?"),
    ("Where do I send my CV?", "Who do I send my CV to?"),
    ("Why was I charged twice?", "How come I was charged twice?"),
    ("When does the store open?", "What time does the store open?"),
    # a question word inside a clause is not the question's kind
    ("Can I return an item where the tag is removed?", "Can I return an item if the tag is removed?"),
    # a question that asks two kinds shares one with a question asking one of them
    ("Where do I return an item and when is the deadline?", "Where do I return an item?"),
    # a way to find out a time may be a place where it is posted
    ("Where do you post upcoming event dates?", "How can I find out when the next sessions are?"),
    # the same kind, asked inside a sentence and plainly
    ("Do you know why my order was cancelled?", "Why was my order cancelled?"),
    ("Could you let me know where my refund is?", "Could you let me know how to get my refund?"),
]


@pytest.fixture(scope="module")
def verifier() -> Verifier:
    return Verifier()


def test_the_reason_is_listed() -> None:
    assert "question_word" in GUARD_REASONS


@pytest.mark.parametrize("stored, new", APART)
def test_another_kind_of_answer_is_another_question_both_ways(verifier, stored, new) -> None:
    assert guard(verifier.features(new), verifier.features(stored), 0.99) == "question_word"
    assert guard(verifier.features(stored), verifier.features(new), 0.99) == "question_word"


@pytest.mark.parametrize("stored, new", SAME)
def test_kinds_that_share_an_answer_pass(verifier, stored, new) -> None:
    assert guard(verifier.features(new), verifier.features(stored), 0.99) != "question_word"
    assert guard(verifier.features(stored), verifier.features(new), 0.99) != "question_word"


def test_the_real_cache_no_longer_serves_them(tmp_path) -> None:
    pytest.importorskip("faiss")
    pytest.importorskip("sentence_transformers")
    from costline.serving.cache.semantic import SemanticCache
    from costline.serving.embedding import Embedder
    from costline.serving.settings import CacheConfig

    cache = SemanticCache(Embedder().load(), CacheConfig(path=tmp_path))
    for i, (stored, _new) in enumerate(APART[:6]):
        cache.store(stored, f"answer {i}", tenant=f"t{i}")
    for i, (stored, new) in enumerate(APART[:6]):
        found = cache.lookup_detail(new, tenant=f"t{i}")
        assert found.hit is None and "question_word" in found.reject_reasons, (new, found.reject_reasons)
    found = cache.lookup_detail("where do i return an item", tenant="t0")
    assert found.hit is not None and found.hit.answer == "answer 0"
