"""The guard families the first held-out set (now a dev set, `cache_pair_heldout.jsonl`) showed the
verification stage could not read, each on the very pairs the verified cache served wrongly there
(fair to test on now that the set has been seen) and on pairs of other domains written for these
tests: withdrawal / revocation / opt-out verbs, a swapped noun phrase (department, ward, facility),
and scope by place or population ("my street" / "nationwide", "all customers")."""

from __future__ import annotations

import dataclasses

import pytest

from costline.serving.cache_verify import Verifier, guard

# (stored, new, reason): the first of each family is the dev set's false hit
TRAPS = [
    # withdrawal, revocation, opting out, stopping: the same request, undone
    ("How do I consent to sharing my records with specialists?",
     "How do I withdraw consent to sharing my records with specialists?", "polarity"),
    ("How do I give the landlord access to my deposit account?",
     "How do I revoke the landlord's access to my deposit account?", "polarity"),
    ("How do I sign up for the weekly timetable email?", "How do I opt out of the weekly timetable email?",
     "polarity"),
    ("How do I receive the monthly newsletter?", "How do I unsubscribe from the monthly newsletter?", "polarity"),
    ("How do I get renewal reminders by text?", "How do I stop renewal reminders by text?", "polarity"),
    # another department, ward, facility: the same sentence with one noun phrase swapped
    ("What are the visiting hours for the maternity ward?",
     "What are the visiting hours for the intensive care unit?", "entity"),
    ("Where is the radiology department?", "Where is the cardiology department?", "entity"),
    ("Where is the lost property office?", "Where is the ticket office?", "entity"),
    ("What are the opening hours of the sauna?", "What are the opening hours of the climbing wall?", "entity"),
    # how far the question reaches: my street against the region, the nation, everyone
    ("Is there an outage on my street?", "Is there a nationwide outage?", "scope"),
    ("Are trains delayed at my station?", "Are trains delayed across the country?", "scope"),
    ("Is the water off in my building?", "Is the water off citywide?", "scope"),
    ("Does the rent freeze apply to my flat?", "Does the rent freeze apply to all tenants?", "scope"),
    ("Is the app down for me?", "Is the app down worldwide?", "scope"),
]

SAME = [
    # a reversal verb on both sides, or the same word mistyped, is no reversal
    ("How do I cancel my gym membership?", "How can I terminate my gym membership?"),
    ("How do I unsubscribe from the newsletter?", "How do I stop the newsletter?"),
    ("Can you waive this late fee?", "hey team, can you waaive this late fee???"),
    # a plural or a possessive is the same word, a typo of a known word is a typo
    ("What are the clinic's opening hours?", "what are the clinics opening hours"),
    ("Where is the radiology department?", "where is the radiolgy department"),
    # "my street" against a question that names no place is no other scope
    ("Is there an outage on my street?", "Is there a power outage right now?"),
    ("Is there a nationwide outage?", "Is there an outage across the country?"),
]


@pytest.fixture(scope="module")
def verifier():
    return Verifier()


@pytest.mark.parametrize("stored, new, reason", TRAPS)
def test_each_family_rejects_its_trap_both_ways(verifier, stored, new, reason) -> None:
    assert guard(verifier.features(new), verifier.features(stored)) == reason
    assert guard(verifier.features(stored), verifier.features(new)) == reason


@pytest.mark.parametrize("stored, new", SAME)
def test_same_answer_pairs_of_these_families_pass_the_guards(verifier, stored, new) -> None:
    assert guard(verifier.features(new), verifier.features(stored)) is None


def test_reach_levels_are_parsed(verifier) -> None:
    assert verifier.features("Is there an outage on my street?").reach == {"local"}
    assert verifier.features("Is there a nationwide outage?").reach == {"nation"}
    assert verifier.features("Are all customers affected?").reach == {"everyone"}
    assert verifier.features("Is the outage across the region?").reach == {"region"}
    assert verifier.features("How do I withdraw my consent?").reversal == {"withdraw"}
    assert verifier.features("How do I give my consent?").reversal == frozenset()


# -- the dev set's false hits through the verified cache on real FAISS + MiniLM ----------------------
pytest.importorskip("faiss")
pytest.importorskip("sentence_transformers")

DEV_FALSE_HITS = [t for t in TRAPS if t[0] in (
    "How do I consent to sharing my records with specialists?", "What are the visiting hours for the maternity ward?",
    "Where is the radiology department?", "Is there an outage on my street?")]


@pytest.fixture(scope="module")
def embedder():
    from costline.serving.embedding import Embedder

    return Embedder().load()


@pytest.mark.parametrize("stored, new, reason", DEV_FALSE_HITS)
def test_the_dev_sets_false_hits_are_rejected_by_the_verified_cache(embedder, tmp_path, stored, new,
                                                                    reason) -> None:
    from costline.serving.cache import SemanticCache
    from costline.serving.settings import CacheConfig

    cache = SemanticCache(embedder, dataclasses.replace(CacheConfig(path=tmp_path)))
    cache.store(stored, "the stored answer", tenant="t")
    found = cache.lookup_detail(new, tenant="t")
    assert found.hit is None
    assert found.reject_reasons == (reason,)  # the candidate was found, and rejected by its family's guard
    again = cache.lookup_detail(stored.upper(), tenant="t")  # the stored question itself is still served
    assert again.hit is not None and again.hit.answer == "the stored answer"
