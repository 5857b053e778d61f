"""Two near-miss families the verified cache served as hits (cosine 0.94-1.00, every guard silent):

- **the same words in other roles**: "transfer from savings to checking" / "from checking to savings", "convert a
  string to an int" / "an int to a string", "is Python faster than Java" / "is Java faster than Python", "can a
  landlord evict a tenant" / "can a tenant evict a landlord", "shipping to Canada" / "shipping from Canada";
- **questions in another script**, where the guards read no word and MiniLM little more: "Как отменить заказ?"
  (cancel) / "Как изменить заказ?" (change), "如何取消我的订单" / "如何修改我的订单" (cosine 1.000);

and two opposites of software questions the antonym lexicon lacked (ascending / descending, synchronous /
asynchronous). The pairs are written for these tests (serving/cache/data/cache_pair_roles_scripts.jsonl holds them
with their paraphrases); the expected reasons are read from the sentences, not from costline's output.
"""

from __future__ import annotations

import pytest

from costline.serving.cache.verify import Verifier, guard

TRAPS = [
    ("How do I transfer money from my savings to my checking account?",
     "How do I transfer money from my checking to my savings account?", "order"),
    ("How do I convert a string to an int in Python?", "How do I convert an int to a string in Python?", "order"),
    ("How do I convert USD to EUR?", "How do I convert EUR to USD?", "order"),
    ("How long is the flight from London to New York?", "How long is the flight from New York to London?", "order"),
    ("Is Python faster than Java?", "Is Java faster than Python?", "order"),
    ("How do I merge main into my feature branch?", "How do I merge my feature branch into main?", "order"),
    ("Does the 9am train stop at Reading before Slough?", "Does the 9am train stop at Slough before Reading?",
     "order"),
    ("Can a landlord evict a tenant without notice?", "Can a tenant evict a landlord without notice?", "order"),
    ("Does the employer pay the employee's pension contributions?",
     "Does the employee pay the employer's pension contributions?", "order"),
    ("How many ounces are in a pound?", "How many pounds are in an ounce?", "order"),
    ("How much is shipping to Canada?", "How much is shipping from Canada?", "order"),
    ("Как отменить заказ?", "Как изменить заказ?", "unmatched"),
    ("如何取消我的订单？", "如何修改我的订单？", "unmatched"),
    ("注文をキャンセルするにはどうすればいいですか？", "注文を変更するにはどうすればいいですか？", "unmatched"),
    ("Πώς ακυρώνω την παραγγελία μου;", "Πώς αλλάζω την παραγγελία μου;", "unmatched"),
    ("How do I sort a list in ascending order?", "How do I sort a list in descending order?", "polarity"),
    ("How do I make a synchronous request in JavaScript?", "How do I make an asynchronous request in JavaScript?",
     "polarity"),
]

SAME = [
    # the same roles in another order, or one marker used for two alternatives
    ("How do I get from the airport to the hotel?", "How do I get to the hotel from the airport?"),
    ("Is it cheaper to rent or to buy a car?", "Is it cheaper to buy or to rent a car?"),
    ("Can I swim before or after the lesson?", "Can I swim after or before the lesson?"),  # joined markers
    ("How do I send money to my friend from my bank account?", "How do I send money from my bank account to my friend?"),
    # two nouns of a coordination, words that move freely, a rewrite that names the nouns in another order
    ("Who pays the deposit, the tenant or the landlord?", "Who pays the deposit, the landlord or the tenant?"),
    ("Is parking free on Sundays?", "On Sundays, is parking free?"),
    ("How can I track my order?", "Where is my order? How do I track it?"),
    ("What's your return policy?", "What is your policy on returns?"),
    # a marker used once more on one side is no swap ("to" as an infinitive)
    ("How do I switch to dark mode?", "How to switch to dark mode?"),
    # the same words in another script, spacing and punctuation aside
    ("Как отменить заказ?", "как отменить заказ"),
    ("如何取消我的订单？", "如何取消我的订单?"),
    ("Wie kündige ich mein Abo?", "Wie kann ich mein Abo kündigen?"),  # Latin script: the guards' usual reading
]


@pytest.fixture(scope="module")
def verifier() -> Verifier:
    return Verifier()


@pytest.mark.parametrize("stored, new, reason", TRAPS)
def test_each_trap_is_rejected_both_ways_with_its_reason(verifier, stored, new, reason) -> None:
    assert guard(verifier.features(new), verifier.features(stored), 0.99) == reason
    assert guard(verifier.features(stored), verifier.features(new), 0.99) == reason


@pytest.mark.parametrize("stored, new", SAME)
def test_same_answer_pairs_pass_these_guards(verifier, stored, new) -> None:
    assert guard(verifier.features(new), verifier.features(stored), 0.99) is None
    assert guard(verifier.features(stored), verifier.features(new), 0.99) is None


def test_the_real_cache_no_longer_serves_them(tmp_path) -> None:
    pytest.importorskip("faiss")
    pytest.importorskip("sentence_transformers")
    from costline.serving.cache.semantic import SemanticCache
    from costline.serving.embedding import Embedder
    from costline.serving.settings import CacheConfig

    cache = SemanticCache(Embedder().load(), CacheConfig(path=tmp_path))
    for i, (stored, _new, _reason) in enumerate(TRAPS):
        cache.store(stored, f"answer {i}", tenant=f"t{i}")  # one tenant each: the stored question is the candidate
    for i, (stored, new, reason) in enumerate(TRAPS):
        found = cache.lookup_detail(new, tenant=f"t{i}")
        assert found.hit is None, (stored, new)
        assert reason in found.reject_reasons, (new, found.reject_reasons)
        again = cache.lookup_detail(stored, tenant=f"t{i}")
        assert again.hit is not None and again.hit.answer == f"answer {i}"
