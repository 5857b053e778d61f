"""Casual support questions that say what works and what does not, or which one was ordered and which came, were
served with the two things the other way round (cosine 0.96-1.00): "cant log in on my phone but works on laptop" /
"… on my laptop but works on phone", "ordered the blue one but got green" / "ordered the green one but got blue",
"is the discount applied before or after tax" / "is tax applied before or after the discount", and "overcharged" /
"undercharged". 10 of 12 such pairs written after the rules (split ``test`` of
serving/cache/data/cache_pair_exchanges.jsonl) were hits before them, 3 after.

Expected reasons come from the sentences; the same-answer pairs are word orders that say one thing: a coordination
("red and blue paint" / "blue and red paint"), two words side by side ("certified organic" / "organic certified").
"""

from __future__ import annotations

import pytest

from costline.serving.cache.verify import Verifier, guard

REJECTED = [
    ("cant log in on my phone but works on laptop", "cant log in on my laptop but works on phone", "order"),
    ("ordered the blue one but got green, what do i do", "ordered the green one but got blue, what do i do", "order"),
    ("is the discount applied before or after tax", "is tax applied before or after the discount", "order"),
    ("the heating works upstairs but not downstairs", "the heating works downstairs but not upstairs", "order"),
    # things of more than one word
    ("the website works in chrome but not in safari", "the website works in safari but not in chrome", "order"),
    ("my credit card was charged instead of my debit card", "my debit card was charged instead of my credit card",
     "order"),
    ("can i claim for glasses if i already claimed for contact lenses this year",
     "can i claim for contact lenses if i already claimed for glasses this year", "order"),
    ("i was overcharged on my last bill", "i was undercharged on my last bill", "polarity"),
    ("Was I overpaid this month?", "Was I underpaid this month?", "polarity"),
]

PASSED = [
    ("Do you sell red and blue paint?", "Do you sell blue and red paint?"),
    ("Can I pick up and drop off at different branches?", "Can I drop off and pick up at different branches?"),
    ("what's the difference between a credit card and a debit card",
     "what's the difference between a debit card and a credit card"),
    ("can i pay with apple pay or google pay", "can i pay with google pay or apple pay"),
    ("how do i move money from my savings account to my current account",
     "how do i move money to my current account from my savings account"),  # each with its own marker
    ("Is your coffee organic certified?", "Is your coffee certified organic?"),
    ("Can I drop off donations on Sunday?", "Can I drop donations off on Sunday?"),
    ("How do I get from the airport to the hotel?", "How do I get to the hotel from the airport?"),
    ("Is the tenant or the landlord responsible for repairs?", "Is the landlord or the tenant responsible for repairs?"),
    ("Is there an overnight option?", "Is there an overnight option available?"),  # "over" alone on one side
]


@pytest.fixture(scope="module")
def verifier() -> Verifier:
    return Verifier()


@pytest.mark.parametrize("stored, new, reason", REJECTED)
def test_two_things_the_other_way_round_are_another_question(verifier, stored, new, reason) -> None:
    assert guard(verifier.features(new), verifier.features(stored), 0.99) == reason
    assert guard(verifier.features(stored), verifier.features(new), 0.99) == reason


@pytest.mark.parametrize("stored, new", PASSED)
def test_a_word_order_that_says_one_thing_passes(verifier, stored, new) -> None:
    assert guard(verifier.features(new), verifier.features(stored), 0.99) is None
    assert guard(verifier.features(stored), verifier.features(new), 0.99) is None
