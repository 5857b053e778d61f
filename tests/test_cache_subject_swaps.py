"""Two people who trade who does what were served as one question (cosine 0.93-0.99, every guard silent):
"can my husband use my card" / "can I use my husband's card", "can I sue my employer" / "can my employer sue me",
"do I owe you money" / "do you owe me money". 13 of 20 such pairs written after the rule (split ``test`` of
serving/cache/data/cache_pair_people.jsonl) were hits before it.

The guard reads each question's subject and the verb it does; when the verbs are the same and each subject is
named in the other question, but not as its subject, the two ask about different doers (reason ``order``).
Expected reasons come from the sentences; the same-answer pairs below are what the rule must leave alone:
another verb for the same act, passives, "is X able / allowed to", verbs that mean the same either way round.

Beside them, another owner of the same thing ("how do I delete my account" / "how do I delete my child's account",
6 of 10 dev pairs served before) is another question (reason ``entity``).
"""

from __future__ import annotations

import pytest

from costline.serving.cache.verify import Verifier, guard

SWAPS = [
    ("Can my husband use my credit card?", "Can I use my husband's credit card?"),
    ("Can I add my wife to my account?", "Can my wife add me to her account?"),
    ("Do I owe you money?", "Do you owe me money?"),
    ("Can the admin remove me from the workspace?", "Can I remove the admin from the workspace?"),
    ("Can I see my employees' timesheets?", "Can my employees see my timesheet?"),
    ("Can guests invite me to a meeting?", "Can I invite guests to a meeting?"),
    ("Can I transfer my points to my partner?", "Can my partner transfer their points to me?"),
    ("Do I have to reimburse my employer for training?", "Does my employer have to reimburse me for training?"),
    ("Can you see my location?", "Can I see your location?"),
    ("Can I text you?", "Can you text me?"),
    ("How do I know if my manager read my message?", "How does my manager know if I read his message?"),
    ("My husband wants to use my card.", "I want to use my husband's card."),
]

SAME = [
    # another verb for the same act, or a subject only one side names
    ("Can I get a refund?", "Can you give me a refund?"),
    ("Can you tell me how to reset my password?", "How do I reset my password?"),
    ("Do you need my ID?", "Do I need to show you my ID?"),
    ("Can my team see my calendar?", "How do I let my team see my calendar?"),
    ("Do I have to tip the driver?", "Does the driver expect me to tip?"),
    # passives and "is X able / allowed to": the same doer
    ("Can my employer read my work emails?", "Can my work emails be read by my employer?"),
    ("Can my boss fire me for being sick?", "Can I be fired by my boss for being sick?"),
    ("Can the tenant sublet the apartment?", "Can the apartment be sublet by the tenant?"),
    ("Can my doctor see my test results?", "Is my doctor able to see my test results?"),
    ("Can I use my husband's credit card?", "Am I allowed to use my husband's credit card?"),
    # what a thing is, not who does what
    ("Is the studio wheelchair accessible?", "Is the studio accessible for wheelchairs?"),
    # verbs that say the same either way round, and a question that asks both ways
    ("Can I chat with you on WhatsApp?", "Can you chat with me on WhatsApp?"),
    ("Can I talk to you about my order?", "Can you talk to me about my order?"),
    ("Should I call you or will you call me?", "Will you call me or should I call you?"),
]


@pytest.fixture(scope="module")
def verifier() -> Verifier:
    return Verifier()


@pytest.mark.parametrize("stored, new", SWAPS)
def test_a_subject_swap_is_another_question_both_ways(verifier, stored, new) -> None:
    assert guard(verifier.features(new), verifier.features(stored), 0.99) == "order"
    assert guard(verifier.features(stored), verifier.features(new), 0.99) == "order"


@pytest.mark.parametrize("stored, new", SAME)
def test_same_answer_pairs_with_people_in_them_pass(verifier, stored, new) -> None:
    assert guard(verifier.features(new), verifier.features(stored), 0.99) is None
    assert guard(verifier.features(stored), verifier.features(new), 0.99) is None


def test_the_real_cache_no_longer_serves_a_swap_and_still_serves_the_question(tmp_path) -> None:
    pytest.importorskip("faiss")
    pytest.importorskip("sentence_transformers")
    from costline.serving.cache.semantic import SemanticCache
    from costline.serving.embedding import Embedder
    from costline.serving.settings import CacheConfig

    cache = SemanticCache(Embedder().load(), CacheConfig(path=tmp_path))
    for i, (stored, _new) in enumerate(SWAPS[:6]):
        cache.store(stored, f"answer {i}", tenant=f"t{i}")  # one tenant each: the stored question is the candidate
    for i, (stored, new) in enumerate(SWAPS[:6]):
        found = cache.lookup_detail(new, tenant=f"t{i}")
        assert found.hit is None and "order" in found.reject_reasons, (new, found.reject_reasons)
        again = cache.lookup_detail(stored.lower().rstrip("?"), tenant=f"t{i}")
        assert again.hit is not None and again.hit.answer == f"answer {i}"


OWNERS = [
    ("How do I delete my account?", "How do I delete my child's account?"),
    ("Can I see my orders?", "Can I see my partner's orders?"),
    ("How do I reset my phone?", "How do I reset my daughter's phone?"),  # "daughter" may also be an adjective
    ("Where can I view my grades?", "Where can I view my student's grades?"),
    ("Can I check my lesson notes online?", "Can I check my flatmate's lesson notes online?"),  # a word lemminflect lacks
]


@pytest.mark.parametrize("stored, new", OWNERS)
def test_another_owner_of_the_same_thing_is_another_question(verifier, stored, new) -> None:
    assert guard(verifier.features(new), verifier.features(stored), 0.99) == "entity"
    assert guard(verifier.features(stored), verifier.features(new), 0.99) == "entity"


@pytest.mark.parametrize("stored, new", [
    ("How do I delete my account?", "How do I delete my own account?"),
    ("How do I change my child's password?", "How can I change my child's password?"),
    ("Can I access my husband's account?", "Am I able to access my husband's account?"),
])
def test_the_same_owner_passes(verifier, stored, new) -> None:
    assert guard(verifier.features(new), verifier.features(stored), 0.99) is None
