"""Near misses from a review across domains (programming, units, travel, support tickets, quantifiers) that the
guards let through to the pair model, which served them: a privative "a-" and a bit / byte unit forgiven as typos,
two kinds of place read as synonyms, "under warranty" / "out of warranty", a request against a reason question, a
ticket's second sentence rewritten, "once" against "twice", advice against obligation. Each must be rejected with
its guard's reason, both ways round, at the cosine the embedder gave the pair; the paraphrases must pass."""

from __future__ import annotations

import pytest

from costline.serving.cache.verify import GUARD_REASONS, Verifier, alternatives, analyse, guard


@pytest.fixture(scope="module")
def verifier():
    return Verifier()


def both_ways(verifier, stored: str, new: str, cosine: float) -> tuple[str | None, str | None]:
    q, c = verifier.features(new), verifier.features(stored)
    return guard(q, c, cosine), guard(c, q, cosine)


# (stored question, new question, the pair's cosine, the guard that must reject it)
NEAR_MISSES = [
    # a privative "a-" and a bit for a byte are other words, not typos (the reviewer's cosines)
    ("How do I read a file synchronously in Node.js?", "How do I read a file asynchronously in Node.js?", 0.9305,
     "entity"),
    ("How many megabytes are in a gigabyte?", "How many megabits are in a gigabyte?", 0.9293, "entity"),
    ("Is my broadband 100 kilobits per second?", "Is my broadband 100 kilobytes per second?", 0.95, "entity"),
    # two kinds of place are no synonyms, however close MiniLM puts them
    ("What is the population of Georgia the country?", "What is the population of Georgia the state?", 0.9413,
     "entity"),
    ("Is tax charged per state?", "Is tax charged per county?", 0.95, "entity"),
    # a request that the answerer act against a question asking only why
    ("The invoice shows the wrong company name. Can you fix it?",
     "The invoice shows the wrong company name. Can you explain why?", 0.9346, "question_word"),
    # "out of X" against "in / under / within X"
    ("My headphones stopped charging. They are still under warranty.",
     "My headphones stopped charging. They are out of warranty.", 0.9843, "polarity"),
    ("Is the router still under warranty?", "Is the router out of warranty?", 0.97, "polarity"),
    ("Is this clinic in network for my plan?", "Is this clinic out of network for my plan?", 0.97, "polarity"),
    ("Can I call the help desk when you are in the office?",
     "Can I call the help desk when you are out of the office?", 0.97, "polarity"),
    ("Is the phone still within range?", "Is the phone out of range?", 0.97, "polarity"),
    # the same story, another request in its second sentence
    ("I ordered a blue sweater last week. I want to return it for a refund.",
     "I ordered a blue sweater last week. I want to exchange it for a larger size.", 0.7971, "unmatched"),
    ("My parcel arrived damaged yesterday. I want to send it back for a refund.",
     "My parcel arrived damaged yesterday. I want to keep it for a partial discount.", 0.85, "unmatched"),
    # "once" is a count of one: charged once (and two items) is not charged twice
    ("I was charged twice, how do I get my money back?", "I was charged once but got two items, what do I do?",
     0.741, "number"),
    # advice against an obligation
    ("Should I tell my employer about my side job?", "Am I required to tell my employer about my side job?", 0.9168,
     "negation"),
    ("Should I register my e-bike?", "Must I register my e-bike?", 0.95, "negation"),
]


@pytest.mark.parametrize("stored, new, cosine, reason", NEAR_MISSES)
def test_each_near_miss_is_rejected_with_its_reason_both_ways(verifier, stored, new, cosine, reason) -> None:
    assert reason in GUARD_REASONS
    assert both_ways(verifier, stored, new, cosine) == (reason, reason)


# one universal quantifier for another, before the same noun in the plural and the singular (reviewer's cosines)
UNIVERSAL_PARAPHRASES = [
    ("Do all employees get health insurance?", "Does every employee get health insurance?", 0.9836),
    ("Does every room have a balcony?", "Do all the rooms have a balcony?", 0.9588),
    ("Do all children need a ticket?", "Does every child need a ticket?", 0.95),
]


@pytest.mark.parametrize("stored, new, cosine", UNIVERSAL_PARAPHRASES)
def test_all_against_every_before_the_same_noun_passes_every_guard(verifier, stored, new, cosine) -> None:
    assert both_ways(verifier, stored, new, cosine) == (None, None)


def test_all_day_against_every_day_is_still_another_scope(verifier) -> None:
    # "all day" (a singular after "all": the whole day) is no plural swapped for a singular
    assert both_ways(verifier, "Do all employees get health insurance?", "Does every employee get health insurance?",
                     0.95) == (None, None)
    assert both_ways(verifier, "Is parking free all day?", "Is parking free every day?", 0.95) == ("scope", "scope")


def test_need_agrees_with_both_advice_and_obligation(verifier) -> None:
    assert both_ways(verifier, "Should I register my e-bike?", "Must I register my e-bike?", 0.95) == \
        ("negation", "negation")
    # "need to" reads as either; and across a rewrite "should" and "have to" ask one question
    assert both_ways(verifier, "Should I bring my passport?", "Do I need to bring my passport?", 0.95) == (None, None)
    assert both_ways(verifier, "Must I bring my passport?", "Do I need to bring my passport?", 0.95) == (None, None)
    assert both_ways(verifier, "Should I stop taking my tablets before the blood test?",
                     "Do I have to come off my medication ahead of the blood test?", 0.85) == (None, None)
    # a permission against advice is still told apart
    assert both_ways(verifier, "Can I bring my dog?", "Should I bring my dog?", 0.95) == ("negation", "negation")


def test_bit_byte_and_privative_a_are_no_typos_but_typos_still_are(verifier) -> None:
    assert both_ways(verifier, "How many megabytes are in a gigabyte?", "How many megabits are in a gigabyte?",
                     0.9293) == ("entity", "entity")
    assert both_ways(verifier, "How do I update my payment method?", "How do I update my paymnet method?",
                     0.95) == (None, None)
    assert both_ways(verifier, "How do I link my account?", "How do I link my acount?", 0.95) == (None, None)


def test_a_request_with_why_in_it_is_no_request_against_a_reason(verifier) -> None:
    assert both_ways(verifier, "The invoice shows the wrong company name. Can you fix it?",
                     "The invoice shows the wrong company name. Can you explain why?", 0.9346) == \
        ("question_word", "question_word")
    # the request side asks why too, or asks for an explanation: one question
    for other in ("Can you look into why my payment was declined?", "Could you explain the declined payment?"):
        assert "question_word" not in both_ways(verifier, "Why was my payment declined?", other, 0.9)


def test_only_an_edit_after_the_same_story_is_read_as_another_request(verifier) -> None:
    assert both_ways(verifier, "I ordered a blue sweater last week. I want to return it for a refund.",
                     "I ordered a blue sweater last week. I want to exchange it for a larger size.", 0.7971) == \
        ("unmatched", "unmatched")
    # a rewrite of the second sentence is left to the cosine and the models
    assert both_ways(verifier, "My parcel arrived damaged yesterday. I want to send it back for a refund.",
                     "My parcel arrived damaged yesterday. Can I return it and get my money back?", 0.85) == \
        (None, None)


@pytest.mark.parametrize("count", [
    "I was charged once but got two items, what do I do?",
    "I was charged once, how do I fix it?",
    "Has this happened more than once?",
])
def test_once_is_a_count_of_one_only_as_a_count(count) -> None:
    assert "1" in analyse(count).numbers
    for other in ("Once I pay, when do I get it?",  # the conjunction
                  "Once my order ships, can I change it?",
                  "Can I pay all at once?",  # "at once": now
                  "Do you deliver once a week?"):  # a frequency: "weekly", the time guards' business
        assert not analyse(other).numbers, other


def test_in_or_out_on_one_side_differs_from_neither(verifier) -> None:
    assert both_ways(verifier, "Is the router still under warranty?", "Is the router out of warranty?", 0.97) == \
        ("polarity", "polarity")
    assert "polarity" not in both_ways(verifier, "How do I check if my laptop is in or out of warranty?",
                                       "How do I check if my laptop is out of warranty?", 0.95)


def test_kinds_of_place_are_alternatives() -> None:
    assert alternatives("state", "country") == "entity"
    assert alternatives("provinces", "cities") == "entity"
    assert alternatives("state", "state") is None
