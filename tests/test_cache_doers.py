"""Who does it, said in a clause, a relative clause or outright, and whether a delivery left or arrived: four shapes
the cache served as one question (cosine 0.82-0.99, every guard silent) — "what happens if I cancel the booking" /
"what happens if you cancel the booking", "can a user who blocked me still message me" / "can a user I blocked
still message me", "can you book the appointment for me" / "can I book it myself", "has my order been shipped" /
"has it been delivered". 14 of 21 such pairs written after the rules (split ``test`` of
serving/cache/data/cache_pair_doers.jsonl) were hits before them, 1 after.

Expected reasons come from the sentences (who does the verb in each); the same-answer pairs are what the rules must
leave alone: one asker said two ways ("we" / "I"), a passive clause, two words for one thing, the same event.
"""

from __future__ import annotations

import pytest

from costline.serving.cache.verify import Verifier, guard

REJECTED = [
    # another doer in an "if" / "when" clause
    ("What happens if I cancel the booking?", "What happens if you cancel the booking?", "order"),
    ("Do I get compensation if the airline cancels my flight?", "Do I get compensation if I cancel my flight?", "order"),
    ("Who pays if my tenant damages the carpet?", "Who pays if I damage the carpet?", "order"),
    ("Will I be charged if the driver cancels?", "Will I be charged if I cancel?", "order"),
    ("What if my employer terminates my contract?", "What if I terminate my contract?", "order"),
    # the roles traded inside a relative clause
    ("Can a user who blocked me still message me?", "Can a user I blocked still message me?", "order"),
    ("Will the people I follow see my posts?", "Will the people who follow me see my posts?", "order"),
    ("Can someone who I invited remove me from the group?", "Can someone who invited me remove me from the group?",
     "order"),
    # the asker doing it against the one asked, said outright
    ("Can you cancel my subscription for me?", "Can I cancel my subscription myself?", "order"),
    ("Will you update my billing details for me?", "Can I update my billing details on my own?", "order"),
    # a passive whose "by" names the doer, against the asker doing it
    ("Can I be contacted by the agent?", "Can I contact the agent?", "order"),
    ("Will I be notified by the courier?", "Will I notify the courier?", "order"),
    # whose the thing is for
    ("Can my employer check my personal phone?", "Can my employer check my work phone?", "entity"),
    # a delivery that left against one that arrived, asked as done
    ("Has my package been shipped?", "Has my package been delivered?", "temporal"),
    ("Has my order been shipped yet?", "Has my order been delivered yet?", "temporal"),
]

PASSED = [
    ("What happens if we cancel the booking?", "What happens if I cancel the booking?"),  # one asker
    ("Do I get a refund if I cancel?", "Will I be refunded if I cancel?"),  # the same clause, a passive main clause
    ("What if my flight is cancelled?", "What happens if my flight gets cancelled?"),  # a passive names no doer
    ("What time do doors open before a film starts?", "How early can we get in before the movie starts?"),  # two nouns
    ("Can a member I blocked see my profile?", "Can a blocked member see my profile?"),
    ("Can the people I follow see my posts?", "Can people I'm following see my posts?"),
    ("Can I cancel my subscription myself?", "Can I cancel my subscription by myself online?"),
    ("Can you reset my password?", "Can I reset my password?"),  # neither says who outright: support answers both
    ("Should I cancel it myself or will you cancel it for me?", "Will you cancel it for me or should I cancel it?"),
    ("Has my order been delivered?", "Did my order arrive?"),  # the same event
    ("Can my employer read my work emails?", "Can my work emails be read by my employer?"),  # one doer, by or not
    ("Can I be paid by bank transfer?", "Can you pay me by bank transfer?"),  # "by" a means, not a doer
    ("Do you ship to Ireland?", "Do you deliver to Ireland?"),  # not asked as done: one question
]


@pytest.fixture(scope="module")
def verifier() -> Verifier:
    return Verifier()


@pytest.mark.parametrize("stored, new, reason", REJECTED)
def test_another_doer_or_event_is_another_question_both_ways(verifier, stored, new, reason) -> None:
    assert guard(verifier.features(new), verifier.features(stored), 0.99) == reason
    assert guard(verifier.features(stored), verifier.features(new), 0.99) == reason


@pytest.mark.parametrize("stored, new", PASSED)
def test_one_doer_said_two_ways_passes_the_new_rules(verifier, stored, new) -> None:
    # the rules above only: another guard may still read the pair as two questions
    assert guard(verifier.features(new), verifier.features(stored), 0.99) not in ("order", "temporal")
    assert guard(verifier.features(stored), verifier.features(new), 0.99) not in ("order", "temporal")


@pytest.mark.parametrize("stored, new", [
    ("What happens if I cancel my booking?", "What happens if I cancel my reservation?"),
    ("Has my package been shipped?", "Has my package been dispatched?"),
])
def test_two_words_for_one_thing_pass_every_guard(verifier, stored, new) -> None:
    # synonyms.txt: rejected as another thing (entity) before the lines were added
    assert guard(verifier.features(new), verifier.features(stored), 0.9) is None
    assert guard(verifier.features(stored), verifier.features(new), 0.9) is None
