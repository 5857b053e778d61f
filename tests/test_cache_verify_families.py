"""The guard families the first two held-out sets (now dev sets, `cache_pair_heldout.jsonl` and
`cache_pair_heldout2.jsonl`) showed the verification stage could not read, each on the very pairs the
verified cache served wrongly there (fair to test on now that the sets have been seen) and on pairs of
other domains written for these tests.

First set: withdrawal / revocation / opt-out verbs, a swapped noun phrase (department, ward, facility),
and scope by place or population ("my street" / "nationwide", "all customers").
Second set: a negating prefix on a known word ("furnished" / "unfurnished", "register" / "deregister"),
phrasal-verb opposites ("keep" / "give up"), modal and "avoid" inversions ("can I drive" / "should I
avoid driving", "can I" / "do I have to", "is it forbidden"), and more words of reach ("national",
"anywhere in the country", "company-wide", "every branch").
Third to fifth sets (dev sets now): their families on sentences of other domains only (TRAPS3 / SAME3,
TRAPS4 / SAME4, TRAPS5 / SAME5); the fifth set's by the coverage rule (a list growing on one side, "only"
against "also", a particle or a period's boundary swapped, content words swapped in an edit)."""

from __future__ import annotations

import dataclasses

import pytest

from costline.serving.cache.verify import Verifier, _negating_prefix, guard

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


# the second dev set's families: (stored, new, reason); the first five are its false hits
TRAPS2 = [
    ("Is the flat furnished?", "Is the flat unfurnished?", "negation"),
    ("Is the contract enforceable?", "Is the contract unenforceable?", "negation"),
    ("How do I register my travel card?", "How do I deregister my travel card?", "polarity"),
    ("How do I keep my locker for another month?", "How do I give up my locker?", "polarity"),
    ("Can I drive with the tyre pressure warning on?",
     "Should I avoid driving with the tyre pressure warning on?", "negation"),
    ("Is there a shortage of my inhaler at this branch?", "Is there a national shortage of my inhaler?", "scope"),
    ("Do you deliver to my street?", "Do you deliver anywhere in the country?", "scope"),
    # a negating prefix (un-, in-, im-, il-, dis-, de-, non-) on a word the other side has bare
    ("Is the room accessible for wheelchairs?", "Is the room inaccessible for wheelchairs?", "negation"),
    ("Is this charge legal?", "Is this charge illegal?", "negation"),
    ("Is the transaction authorised?", "Is the transaction unauthorised?", "negation"),
    ("Is the deposit refundable?", "Is the deposit nonrefundable?", "polarity"),
    ("How do I agree to the new terms?", "How do I disagree with the new terms?", "negation"),
    ("How do I pack my belongings for storage?", "How do I unpack my belongings from storage?", "negation"),
    # phrasal verbs: taking up, keeping, joining against giving up, turning down, dropping out
    ("How do I take up the job offer?", "How do I turn down the job offer?", "polarity"),
    ("How do I keep my phone number?", "How do I give up my phone number?", "polarity"),
    ("How do I sign up for the loyalty scheme?", "How do I drop out of the loyalty scheme?", "polarity"),
    ("Can I renew my library card?", "Can I hand back my library card?", "polarity"),
    ("How do I log on to the portal?", "How do I log off the portal?", "polarity"),
    # may against must, and "avoid" / "forbidden" / "dangerous" on one side
    ("Can I park on the verge?", "Should I avoid parking on the verge?", "negation"),
    ("Can I bring food into the cinema?", "Is it forbidden to bring food into the cinema?", "negation"),
    ("Can I fly with a cold?", "Is it dangerous to fly with a cold?", "negation"),
    ("Can I cancel by email?", "Do I have to cancel by email?", "negation"),
    ("May I pay the fine in instalments?", "Must I pay the fine in instalments?", "negation"),
    # reach: national, anywhere in the country, company-wide, every branch, around the world
    ("Is the recall affecting my car?", "Is the recall national?", "scope"),
    ("Is the outage at my office?", "Is the outage company-wide?", "scope"),
    ("Does the discount apply at this store?", "Does the discount apply at every branch?", "scope"),
    ("Is the app down in my city?", "Is the app down around the world?", "scope"),
    ("Do you ship to my postcode?", "Do you ship internationally?", "scope"),
    # during against after / before (the first dev set's one false hit with the retrained model)
    ("Am I covered while the car is being repaired?", "Am I covered after the car is repaired?", "temporal"),
    ("Can I work while I am on parental leave?", "Can I work after my parental leave?", "temporal"),
]

SAME2 = [
    # a prefix that negates nothing, a typo of a prefixed word, the same prefixed word on both sides
    ("Can I get a discount on my invoice?", "can I get a discount on my invoce"),
    ("What details do you need to deliver my parcel?", "What details do you need to deliver my parcel please?"),
    ("How do I install the app?", "How can I install the app?"),
    ("How do I unlock my account?", "how do i unlock my acount"),
    ("Is the flat unfurnished?", "Does the flat come unfurnished?"),
    # both sides in one group, or a wh-question with another modal
    ("How do I cancel my membership?", "I want to give up my membership, how?"),
    ("How should I pay my council tax?", "How can I pay my council tax?"),
    ("Can I park here overnight?", "Am I allowed to park here overnight?"),
    ("How do I avoid late fees?", "How can I avoid late fees?"),
    ("Can I keep my unused holiday if I leave?", "Do I keep my unused holiday when I leave?"),
    # reach: a place someone is in is no reach; the same reach in other words
    ("Do you ship internationally?", "Do you deliver abroad?"),
    ("Can I sublet my apartment while I travel?",
     "Am I allowed to rent out my place to someone else while I'm abroad?"),
    ("Is there a national shortage of my inhaler?", "Is my inhaler in short supply nationally?"),
    ("What is my national insurance number?", "Where can I find my national insurance number?"),
    ("Am I covered while the car is being repaired?", "am i covered while my car is being repaired"),
]


@pytest.fixture(scope="module")
def verifier():
    return Verifier()


@pytest.mark.parametrize("stored, new, reason", TRAPS2)
def test_the_second_dev_sets_families_reject_their_traps_both_ways(verifier, stored, new, reason) -> None:
    assert guard(verifier.features(new), verifier.features(stored)) == reason
    assert guard(verifier.features(stored), verifier.features(new)) == reason


@pytest.mark.parametrize("stored, new", SAME2)
def test_same_answer_pairs_of_the_second_sets_families_pass_the_guards(verifier, stored, new) -> None:
    assert guard(verifier.features(new), verifier.features(stored)) is None
    assert guard(verifier.features(stored), verifier.features(new)) is None


@pytest.mark.parametrize("word, base", [
    ("unfurnished", "furnished"), ("deregister", "register"), ("illegal", "legal"), ("irregular", "regular"),
    ("impossible", "possible"), ("inactive", "active"), ("nonrefundable", "refundable"), ("disagree", "agree"),
    # a prefix that negates nothing, or too short a base
    ("understand", None), ("discount", None), ("detail", None), ("invoice", None), ("deliver", None),
    ("install", None), ("important", None), ("inform", None), ("unit", None), ("undo", None),
])
def test_negating_prefixes(word, base) -> None:
    assert _negating_prefix(word) == base


def test_phrasal_verbs_are_read_by_their_lemma(verifier) -> None:
    assert "give-up" in verifier.features("I gave up my locker").tokens
    assert "give-up" in verifier.features("Has my locker been given up?").tokens
    assert "drop-out" in verifier.features("What if I dropped out of the course?").tokens
    assert verifier.features("Should I avoid driving?").prohibition == {"avoid"}
    assert verifier.features("Do I have to pay?").modality == {"oblige"}
    assert verifier.features("Can I pay?").modality == {"permit"}
    assert verifier.features("Do I have a discount?").modality == frozenset()


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
    "Where is the radiology department?", "Is there an outage on my street?")] + TRAPS2[:7]


@pytest.fixture(scope="module")
def embedder(request):
    """Every case's pair, and the false hits' stored questions in capitals, embedded at once (tests/embedders.py)."""
    from embedders import primed_embedder

    return primed_embedder(request, extra=[t.upper() for t, *_ in DEV_FALSE_HITS])


@pytest.fixture(scope="module")
def verifiers():
    """The verification stage with and without the pair model, built once: each case's cache shares it (a cache
    builds its own otherwise, loading the models again for every pair)."""
    from costline.serving.cache.semantic import build_verifier
    from costline.serving.settings import CacheConfig

    return {flag: build_verifier(CacheConfig(verify_pair_model=flag)) for flag in (True, False)}


@pytest.mark.parametrize("stored, new, reason", DEV_FALSE_HITS)
def test_the_dev_sets_false_hits_are_rejected_by_the_verified_cache(embedder, tmp_path, stored, new,
                                                                    reason) -> None:
    from costline.serving.cache.semantic import SemanticCache
    from costline.serving.settings import CacheConfig

    cache = SemanticCache(embedder, dataclasses.replace(CacheConfig(path=tmp_path)))
    cache.store(stored, "the stored answer", tenant="t")
    found = cache.lookup_detail(new, tenant="t")
    assert found.hit is None
    assert found.reject_reasons == (reason,)  # the candidate was found, and rejected by its family's guard
    again = cache.lookup_detail(stored.upper(), tenant="t")  # the stored question itself is still served
    assert again.hit is not None and again.hit.answer == "the stored answer"


# -- the third set's families (cache_pair_heldout3.jsonl, seen: a dev set now), on sentences of other
# domains; (stored, new, reason) through a real cache: the candidate is found and rejected by its guard
TRAPS3 = [
    # a particle after its object: "check my bag in" / "check my bag out"
    ("How do I check my suitcase in at the hotel?", "How do I check my suitcase out of the hotel?", "polarity"),
    ("How do I turn the heating on in my flat?", "How do I turn the heating off in my flat?", "polarity"),
    # link / attach against detach / unlink
    ("How do I link my loyalty card to the app?", "How do I detach my loyalty card from the app?", "polarity"),
    ("How do I attach a printer to my laptop?", "How do I detach a printer from my laptop?", "polarity"),
    # a hyphenated negating prefix: "de-activate" is "deactivate", British and American spellings one word
    ("How do I authorize a new user on the payroll system?",
     "How do I de-authorise a user on the payroll system?", "negation"),
    ("Is the garden shed locked?", "Is the garden shed un-locked?", "polarity"),
    # this moment against a habit, a season, a scheduled time, the past or the future
    ("Is the pharmacy open now?", "Is the pharmacy open late at night?", "temporal"),
    ("How busy is the gym at the moment?", "How busy is the gym usually?", "temporal"),
    ("What is the current waiting time at A&E?", "What will the waiting time at A&E be over the winter?",
     "temporal"),
    ("Is the lift working right now?", "When will the lift be working?", "temporal"),
    ("Is the helpline staffed now?", "Is the helpline staffed around the clock?", "temporal"),
    ("Can I swim during the treatment?", "Can I swim once the treatment is over?", "temporal"),
    # "-free" is "without"
    ("Which carriages allow dogs?", "Which carriages are dog-free?", "negation"),
    # which of many against one
    ("Has my flight been affected by the strike?", "Which flights are affected by the strike?", "scope"),
]

SAME3 = [
    # British and American spelling (breame's tables), one word in another form (lemminflect)
    ("What colour is the recycling bin?", "What color is the recycling bin?"),
    ("Where is the sports centre?", "Where is the sports center?"),
    ("When does the autumn programme start?", "When does the autumn program start?"),
    ("Where do I go after landing?", "Where do I go after I have landed?"),
    ("Can I change my seat after paying?", "Can I change my seat after I've paid?"),
    ("Where are the parish records?", "Where is the parish record?"),
    # one common word for a synonym, the questions as close as the threshold-only cache's own bar
    ("Do children need a passport to fly?", "Do kids need a passport to fly?"),
    ("Is there bike parking at the station?", "Is there bicycle parking at the station?"),
    # "now that" is no moment; "now" against a question in the same moment
    ("I moved house, how do I update my address?", "Now that I've moved, how do I update my address?"),
    ("The bus was cancelled, what can I do now?", "My bus got cancelled, what are my options now?"),
]


def test_a_synonym_swap_needs_the_cosine_bar_and_common_words() -> None:
    from costline.serving.cache.verify import SYNONYM_COSINE

    v = Verifier()
    q, c = v.features("Do kids need a passport to fly?"), v.features("Do children need a passport to fly?")
    assert guard(q, c, SYNONYM_COSINE) is None
    assert guard(q, c, SYNONYM_COSINE - 0.01) == "entity"  # under the bar: another thing swapped in
    assert guard(q, c) == "entity"  # no cosine given: the swap rule as before
    r, k = v.features("Can I bring my rabbit to the clinic?"), v.features("Can I bring my cat to the clinic?")
    assert guard(r, k, 0.82) == "entity"  # their cosine: two animals, under the bar
    f = v.features("Can I bring my ferret to the clinic?")  # a rare word (Zipf 3.0) is never a mere synonym
    assert guard(f, k, 0.99) == "entity"
    n, d = v.features("Is the pharmacy open now?"), v.features("Is the pharmacy open usually?")
    assert guard(n, d, 0.99) == "temporal"  # a word a guard reads is never a mere synonym


def verifier_features(text: str):
    return _V.features(text)


_V = Verifier()


# -- the fourth set's families (cache_pair_heldout4.jsonl, seen: a dev set now), on sentences of other
# domains (HR, government, healthcare, gyms, banking, telecom, hotels, social media, restaurants, IT, retail)
TRAPS4 = [
    # not doing it at all: skip, leave out, get out of
    ("Do I have to attend the fire safety training?", "Can I skip the fire safety training?", "polarity"),
    ("How do I attend jury duty?", "How do I get out of jury duty?", "polarity"),
    ("Should I list my salary history on the form?", "Can I leave out my salary history on the form?", "polarity"),
    ("Do I need to include a cover letter with my application?", "Can I omit the cover letter from my application?",
     "polarity"),
    # during against after: "while X is still ..." / "once X has worn off, is over"
    ("Can I drive while the sedative is still working?", "Can I drive once the sedative has worn off?", "temporal"),
    ("Can I use the pool while the cleaning treatment is still running?",
     "Can I use the pool once the cleaning treatment is over?", "temporal"),
    ("Can I exercise while the steroid injection is still working?",
     "Can I exercise when the steroid injection has worn off?", "temporal"),
    # a period's boundary: for the first year / after the first year
    ("What is the interest rate for the first year?", "What is the interest rate after the first year?", "temporal"),
    ("Is the broadband price fixed for the first six months?",
     "Is the broadband price fixed after the first six months?", "temporal"),
    # what the relaxations below must still reject: "any" against a specific one, "every time" against "this
    # time", was against will be, another number in words or digits
    ("Can I pay with any card?", "Can I pay with this card?", "scope"),
    ("Does the phone insurance cover the screen?", "Does the phone insurance cover any damage?", "scope"),
    ("Is this booking fee refundable?", "Are any booking fees refundable?", "scope"),
    ("Do I pay the booking fee this time?", "Do I pay the booking fee every time?", "scope"),
    ("Was my parcel delivered?", "Will my parcel be delivered?", "temporal"),
    ("Is a three-course menu available on Sundays?", "Is a 2-course menu available on Sundays?", "number"),
]

SAME4 = [
    # "any" asking whether there is some, "at all" stressing: no quantifier; "every time I" is "whenever I"
    ("Are there parking spaces at the hotel?", "Are there any parking spaces at the hotel?"),
    ("Does the flu jab hurt?", "Does the flu jab hurt at all?"),
    ("My laptop freezes every time I open the browser.", "My laptop freezes whenever I open the browser."),
    # the present perfect tells of the past too
    ("Why was my post removed?", "Why has my post been removed?"),
    # a number in words or in digits, attached to a noun
    ("Is a three-course menu available on Sundays?", "Is a 3-course menu available on Sundays?"),
    # a (house) removal is a move, in British English
    ("Will my employer pay for the move when I relocate?", "Will my employer pay for the removal when I relocate?"),
]


def test_skip_as_a_noun_and_removal_of_something_keep_their_reading() -> None:
    f = verifier_features
    assert f("Can I hire a skip for garden waste?").reversal == frozenset()  # a skip is a container
    assert f("Can I skip the induction?").reversal == {"skip"}
    # "removal of my data" removes something, even against a question about moving
    assert guard(f("How do I request removal of my data?"), f("How do I move my data?")) == "polarity"
    # "any" in "any of", "any time" always quantifies
    assert guard(f("Is the pharmacy open any time?"), f("Is the pharmacy open?")) == "scope"
    assert guard(f("Are the branches open on Sunday?"), f("Are any of the branches open on Sunday?")) == "scope"


# -- the fifth set's families (cache_pair_heldout5.jsonl, seen: a dev set now), read by the coverage rule
# (cache_verify._coverage), on sentences of other domains (insurance, gyms, hotels, airlines, offices, pharmacy,
# software trials, libraries, clubs, HR, healthcare)
TRAPS5 = [
    # a coordination growing on one side: "X" / "X and Y"; "only" against "also"
    ("Does the policy cover my spouse?", "Does the policy cover my spouse and my children?", "scope"),
    ("Is the gym open to members?", "Is the gym open to members and their guests?", "scope"),
    ("Does the room rate include breakfast?", "Does the room rate include breakfast and dinner?", "scope"),
    ("Is the lounge for business class passengers only?", "Is the lounge also open to economy passengers?", "scope"),
    # the same verb with another particle; one boundary of a period for another
    ("How do I turn the volume up on the desk phone?", "How do I turn the volume down on the desk phone?",
     "polarity"),
    ("Is the pharmacy open until 8pm?", "Is the pharmacy open from 8pm?", "unmatched"),
    ("Can I cancel during the free trial?", "Can I cancel at the end of the free trial?", "unmatched"),
    # an edit that swaps content words on both sides around a shared one (up to three changed spans, or a swap longer
    # than the noun-phrase rule reads)
    ("Can I pay the membership fee with a debit card?", "Can I pay the membership fee by bank transfer?",
     "unmatched"),
    ("How do I upload a photo to my staff profile?", "How do I crop the photo on my staff profile?", "unmatched"),
    ("Can I print documents in the library?", "Can I scan documents at the library?", "unmatched"),
    ("Can I store my bike in the office basement?", "Can I charge my scooter in the office basement?",
     "unmatched"),
    # a preposition is no content word: the places around it are what changed
    ("Can I walk my dog along the river path?", "Can I walk my dog through the city park?", "unmatched"),
]

SAME5 = [
    # "also" against "as well", a coordination on both sides, "till" for "until", a particle moved
    ("Do you also deliver to offices?", "Do you deliver to offices as well?"),
    ("Can I bring my laptop and charger into the exam?", "Can I bring my laptop and its charger into the exam?"),
    ("Is the swimming pool open until 9pm?", "Is the swimming pool open till 9pm?"),
    ("How do I turn up the heating in my office?", "How do I turn the heating up in my office?"),
    # a compound written apart, a preposition for another, a sign-off
    ("Do you accept childcare vouchers?", "Do you accept child care vouchers?"),
    ("Can I pay by debit card?", "Can I pay with my debit card?"),
    ("Can I get a copy of my payslip?", "Can I get a copy of my payslip please, thanks"),
]


def test_the_coverage_rule_reads_edits_not_rewrites() -> None:
    from costline.serving.cache.verify import _coverage, _opcodes

    f = verifier_features

    def coverage(a: str, b: str, cosine: float | None = None) -> str | None:
        q, c = f(a), f(b)
        return _coverage(_opcodes(q, c), q, c, cosine)

    # a rewrite (few tokens aligned) is left to the cosine and the admission model, however many words differ
    assert coverage("How do I reset my password?", "I forgot my password, what do I do to get back in?") is None
    # one word for one word is a synonym at the cosine bar, a swap under it
    assert coverage("Are kids allowed in the lounge?", "Are children allowed in the lounge?", 0.95) is None
    assert coverage("Are kids allowed in the lounge?", "Are children allowed in the lounge?", 0.80) == "unmatched"
    # words added on one side only, not coordinated, are a detail ("in the hotel"), not another question
    assert coverage("Where is the fitness centre?", "Where is the fitness centre in the hotel?") is None
    # the coordination must be all the side says more: "and" in a rewrite is no growing list
    assert coverage("Do I need a referral to see a dermatologist?",
                    "Can I go straight to a skin specialist or does my doctor have to refer me?") is None


def test_one_of_my_things_is_a_thing_not_a_count() -> None:
    f = verifier_features
    # "one of the rooms" is "a room": no number against the question without one
    assert f("Can I reserve one of the meeting rooms for Friday?").numbers == f("Can I reserve a meeting room?").numbers
    assert guard(f("Can I return one of my parcels unopened?"), f("Can I return a parcel unopened?")) is None
    # a count of them still is one
    assert guard(f("Can I return two of my parcels unopened?"), f("Can I return a parcel unopened?")) == "number"
    assert guard(f("Can I return one parcel unopened?"), f("Can I return three parcels unopened?")) == "number"


def test_contractions_typed_without_the_apostrophe_are_the_same_words() -> None:
    f = verifier_features
    assert guard(f("Why doesn't my card work at the ATM?"), f("why doesnt my card work at the ATM")) is None
    assert guard(f("Why won't the printer connect?"), f("why wont the printer connect")) is None
    assert guard(f("I can't log in to the staff portal"), f("i cant log in to the staff portal")) is None
    # and still negations against the question without one
    assert guard(f("Why does my card work at the ATM?"), f("why doesnt my card work at the ATM")) == "negation"


# -- the sixth set's families (cache_pair_heldout6.jsonl, seen: a dev set now), on sentences of other domains
# (offices, banking, electronics, vets, paint, gyms, car hire, hotels, airports, social media, parcels, bookings,
# lakes, grocers, hiking, triathlon, health insurance)
TRAPS6 = [
    # a negating suffix on a word the other side has bare: "-less" is "without"
    ("Do the office printers need a cord?", "Are the office printers cordless?", "negation"),
    ("Does the bank still send paper statements?", "Is the bank paperless?", "negation"),
    ("Do the new headphones need a wire?", "Are the new headphones wireless?", "negation"),
    # a word of danger is a reason to avoid: "safe" against "poisonous", "harmful"
    ("Is ibuprofen safe for dogs?", "Is ibuprofen poisonous to dogs?", "negation"),
    ("Is the new paint safe for babies?", "Is the new paint harmful for babies?", "negation"),
    # in the price against charged on top of it
    ("Are towels included in the gym membership?", "Do towels cost extra with the gym membership?", "polarity"),
    ("Is insurance included in the car hire price?", "Is insurance billed separately from the car hire price?",
     "polarity"),
    ("Does the hotel rate include parking?", "Is there an extra charge for parking at the hotel?", "polarity"),
    ("Is the airport transfer included?", "Is the airport transfer extra?", "polarity"),
    # "once X has / is <any past participle>" is after X, against "while X is still ..."
    ("Can I edit my post while it is still under review?", "Can I edit my post once it has been approved?",
     "temporal"),
    ("Can I change the delivery address while the parcel is still at the depot?",
     "Can I change the delivery address once the parcel has shipped?", "temporal"),
    ("Can I add guests while the booking is still pending?", "Can I add guests once the booking is confirmed?",
     "temporal"),
    # a season or time of the year against now, a habit, or another season
    ("Is the lake open for swimming now?", "Is the lake open for swimming in the spring?", "temporal"),
    ("Do you usually stock fresh strawberries?", "Do you stock fresh strawberries over Christmas?", "temporal"),
    ("Are the hiking trails open in winter?", "Are the hiking trails open in the autumn?", "temporal"),
    # a noun phrase swapped in an edit, a hyphenated compound counted as one word
    ("Are the open-water swims included in the triathlon camp fee?",
     "Is the bike fitting included in the triathlon camp fee?", "unmatched"),
    ("Are the full-body scans covered by my private health plan?",
     "Is the eye test covered by my private health plan?", "unmatched"),
]

SAME6 = [
    # "include" on both sides, "extra" on both sides, "extra" that is no price
    ("Is breakfast included in the room rate?", "Does the room rate include breakfast?"),
    ("Is there an extra charge for late checkout?", "Does late checkout cost extra?"),
    ("Can I get an extra pillow?", "Could I have an extra pillow please?"),
    # "once" as one time; "once" against "after"; the same season on both sides; "-less" on both sides
    ("Can I reschedule my appointment once?", "Am I allowed to reschedule my appointment once?"),
    ("Can I cancel my order once it has shipped?", "Can I cancel my order after it has shipped?"),
    ("Is the outdoor pool open in summer?", "Is the outdoor pool open during the summer?"),
    ("Are the earbuds wireless?", "Are these earbuds wireless?"),
]


def test_negating_suffixes_need_the_bare_word_on_the_other_side() -> None:
    from costline.serving.cache.verify import _negating_suffix

    assert _negating_suffix("cashless") == "cash" and _negating_suffix("wireless") == "wire"
    # "-less" words that negate no word of their own, and short ones, are left alone
    assert {_negating_suffix(w) for w in ("unless", "regardless", "nevertheless", "less", "bless")} == {None}
    f = verifier_features
    # no bare word on the other side: no negation ("paperless" against "by email")
    assert guard(f("Is the bank paperless?"), f("Does the bank send statements by email?")) != "negation"


def test_once_reads_any_past_participle_as_after() -> None:
    from costline.serving.cache.verify import _once_after

    assert _once_after("can i swim once my tattoo has set".split())[3] == "after"
    assert _once_after("can i edit it once it s been printed".split())[4] == "after"  # "it's been"
    assert _once_after("is it open once the gate is locked".split())[3] == "after"
    # "once" as one time, or before no participle, stays
    assert "after" not in _once_after("can i pause my plan once a year".split())
    assert "after" not in _once_after("what happens once it is open".split())


def test_seasons_are_read_only_as_times_of_the_year() -> None:
    f = verifier_features
    assert f("Is the lake open in the autumn?").season == {"autumn"}
    assert f("Do you deliver in the fall?").season == {"autumn"}
    assert f("Are you open over the holidays?").season == {"christmas"}
    # a spring in a mattress, a fall on the stairs: no season
    assert f("Can you replace the spring in my mattress?").season == frozenset()
    assert f("Does my policy cover a fall on the stairs?").season == frozenset()
    # a season against a question with no time frame is a detail, left to the cosine and the model
    assert guard(f("Are the hiking trails open?"), f("Are the hiking trails open in the autumn?")) is None


def test_a_hyphenated_compound_counts_as_one_word_in_an_edit() -> None:
    from costline.serving.cache.verify import _units

    f = verifier_features("Are the cross-country trails open?")
    assert _units(["cross", "country", "trails"], f) == 2
    assert _units(["cross", "country", "trails"], verifier_features("Cross country trails?")) == 3


# -- the seventh set's families (cache_pair_heldout7.jsonl, seen: a dev set now), on sentences of other
# domains (couriers, energy, cafes, charities, savings, pharmacies, theatres, stadiums, laptops, bars, spas):
# opposites by meaning, read from costline's own antonym lexicon (data/antonyms.txt) by lemma;
# "at all" before a determiner or a plural noun; "this" / "next" before a weekday
TRAPS7 = [  # the "polarity" ones each served by the guards and the admission model before the lexicon
    ("Will the courier pick up the parcel from my flat?", "Can the courier drop the parcel off at my flat instead?",
     "polarity"),
    ("Can I switch to a different energy supplier?", "Can I stay with the same energy supplier after moving?",
     "polarity"),
    ("Can I sit inside at the cafe?", "Is there outdoor seating at the cafe?", "polarity"),
    ("Can I make the donation anonymously?", "Will my name be credited on the donation?", "polarity"),
    ("Does the savings account have a variable rate?", "Is the savings account rate fixed?", "polarity"),
    ("Can I collect my prescription from the pharmacy?", "Will the pharmacy deliver my prescription?", "polarity"),
    ("Does the theatre have step-free access upstairs?", "Is the step-free access at the theatre downstairs?",
     "polarity"),
    ("Is parking at the stadium free?", "Is stadium parking paid?", "polarity"),
    ("Should I buy a new laptop or repair it?", "Is a refurbished laptop worth buying?", "polarity"),
    ("Is the rooftop bar open to the public?", "Can the rooftop bar be booked privately?", "polarity"),
    # "at all" before a determiner or a plural noun is "all": a quantifier
    ("Is the pharmacy open on Sundays at this branch?", "Are the pharmacies open on Sundays at all your branches?",
     "scope"),
    # "this" / "next" before the same weekday: another date
    ("Can I book a massage next Friday?", "Can I book a massage this Friday?", "date"),
]

SAME7 = [
    # both words of an opposition on both sides: no difference on that line
    ("Can I shower before or after the swim session?", "Am I allowed to shower before or after my swim session?"),
    ("Does the cafe have indoor and outdoor seating?", "Is the cafe's seating indoor and outdoor?"),
    # "at all" that only stresses, also before a word that is no plural noun
    ("Will the cleaning spray mark my wooden table at all?", "Will the cleaning spray mark my wooden table?"),
    ("Is the bakery open at all today?", "Is the bakery open today?"),
    # the same deictic, or the same weekday with it said differently
    ("Can I book a massage next Friday?", "Could I book a massage for next Friday?"),
]


def test_the_antonym_lexicon_is_read_by_lemma_and_phrase() -> None:
    from costline.serving.cache.verify import _antonym_lexicon, _antonym_opposite

    single, phrases, converse = _antonym_lexicon()
    assert len(single) + len(phrases) >= 300  # several hundred words and phrases
    assert ("pick", "up") in phrases and "arrival" in single
    f = verifier_features
    # inflected forms and a particle after its object ("picked the kids up")
    assert _antonym_opposite(f("Who picked the kids up from the gym?"), f("Who dropped the kids off at the gym?"))
    assert _antonym_opposite(f("Were the arrivals delayed?"), f("Were the departures delayed?"))
    # a converse between two persons asks the same ("do you lend" / "can I borrow"); with one person it does not
    assert not _antonym_opposite(f("Will you lend me an umbrella?"), f("Can I borrow an umbrella?"))
    assert _antonym_opposite(f("Can I lend an umbrella?"), f("Can I borrow an umbrella?"))
    # words left out of the lexicon for their second sense or for paraphrases measured on our pair files
    assert not _antonym_opposite(f("How many vacation days do I have left?"), f("What is my remaining leave?"))
    assert not _antonym_opposite(f("Where do I find my library card?"), f("I lost my library card, what now?"))
    # a hyphenated word is read by its words unless the lexicon has it whole
    assert not _antonym_opposite(f("Return it with a full tank?"), f("Is it full-to-full, or can it come back empty?"))
    assert _antonym_opposite(f("Is it cheaper at peak times?"), f("Is it cheaper at off-peak times?"))


def test_a_deictic_before_a_weekday_month_or_period_is_a_date() -> None:
    f = verifier_features
    assert f("Is the spa open next Friday?").deixis == {"next:d5"}
    assert f("Is the spa open this coming Friday?").deixis == {"next:d5"}
    assert f("Does the offer end this March?").deixis == {"this:m3"}
    # one side without a deictic is no date difference; "may" is a verb more often than a month
    assert guard(f("Is the spa open on Friday?"), f("Is the spa open this Friday?")) != "date"
    assert f("Is the spa open this may?").deixis == frozenset()


def test_at_all_is_a_quantifier_only_before_a_determiner_or_a_plural_noun() -> None:
    f = verifier_features
    assert "all" in f("Is it open at all your branches?").scope
    assert "all" in f("Is it open at all branches?").scope
    assert "all" not in f("Will it stain the carpet at all?").scope
    assert "all" not in f("Is the bakery open at all today?").scope


def test_a_malformed_antonym_lexicon_line_is_an_error_naming_the_line(tmp_path) -> None:
    from costline.serving.cache.verify import read_antonyms
    from costline.serving.errors import CacheError

    good = tmp_path / "good.txt"
    good.write_text("# a comment\n\nrise | fall\n~ lend | borrow\npick up | drop off\n")
    single, phrases, converse = read_antonyms(good)
    assert single == {"rise": ((3, 1),), "fall": ((3, -1),), "lend": ((4, 1),), "borrow": ((4, -1),)}
    assert phrases == {("pick", "up"): ((5, 1),), ("drop", "off"): ((5, -1),)} and converse == {4}
    for text, line in (("rise | fall\nrise fall\n", 2), ("rise, | fall\n", 1), ("a | b | c\n", 1)):
        bad = tmp_path / "bad.txt"
        bad.write_text(text)
        with pytest.raises(CacheError, match=rf"bad.txt:{line}:"):
            read_antonyms(bad)


# The eighth set's families (and four seventh-set traps still served), on sentences of other domains (insurance,
# festivals, shared housing, spas, gyms, tennis clubs, airlines): an obligation against a permission or a freedom
# across a rewrite, a refusal or an exclusion against the plain verb, keep / throw away, "while being X-ed"
# against "once X-ed", "up to N before" against "within N of".
TRAPS8 = [
    ("Does my home insurance cover storm damage to the fence?",
     "Is storm damage to the fence excluded from my home insurance?", "negation"),
    ("Can I re-enter the festival grounds with my wristband?",
     "Is re-entry to the festival grounds refused with my wristband?", "polarity"),
    ("Can my partner join me in the recovery room?", "Are partners excluded from the recovery room?", "negation"),
    ("Can I take my e-scooter on the train?", "Are e-scooters refused on the train?", "polarity"),
    ("Must I keep my dog on a lead in the park?", "Am I free to let my dog run loose in the park?",
     "negation"),
    ("Do I need to bring my own towel to the spa?", "Can I leave my own towel at home for the spa?", "negation"),
    ("Will the gym keep my locker contents over the weekend?", "Will the gym throw away my locker contents?",
     "polarity"),
    ("Can I use the tennis court while it is being resurfaced?",
     "Can I use the tennis court once it has been resurfaced?", "temporal"),
    ("Can I change my flight up to two days before departure?",
     "Can I change my flight within two days of departure?", "temporal"),
]

SAME8 = [
    # "cover" and "covered", "exclude" and "excluded": the same word on both sides
    ("Does my home insurance cover storm damage?", "Is storm damage covered by my home insurance?"),
    ("Does my policy exclude flood damage?", "Is flood damage excluded from my policy?"),
    # two obligations, two permissions: the same modality said differently
    ("Do I need to bring my own towel to the spa?", "Do I have to bring a towel to the spa?"),
    ("Must visitors sign in at reception?", "Do visitors have to sign in at reception?"),
    ("Can I pay by card at the market?", "Am I allowed to pay by card at the market?"),
    # the same window on both sides
    ("Can I change my flight up to two days before departure?",
     "Is it possible to change my flight up to two days before departure?"),
]


# The ninth set's families (theme parks, dog walking, furniture, waste collection, racket clubs, meal kits), on
# other domains: the same verb with opposite particles ("fold out" / "fold ... back up", "in stock" / "out of
# stock"), a refusal participle ("blocked from", "barred from"), a day relative to another ("the same day" /
# "the next day").
TRAPS9 = [
    ("How do I fold out the ironing board in my hotel room?", "How do I fold the ironing board back up?", "polarity"),
    ("How do I roll out the caravan awning?", "How do I roll the caravan awning back up?", "polarity"),
    ("Is the blue rain jacket in stock?", "Is the blue rain jacket out of stock?", "polarity"),
    ("Can hotel guests use the rooftop pool?", "Why are hotel guests blocked from using the rooftop pool?",
     "negation"),
    ("Can teenagers open a savings account online?", "Are teenagers barred from opening a savings account online?",
     "negation"),
    ("Can the pharmacy deliver my prescription the same day?",
     "Can the pharmacy deliver my prescription the next day?", "date"),
    ("Do you offer same-day dry cleaning for suits?", "Do you offer next-day dry cleaning for suits?", "date"),
]

SAME9 = [
    # the same particle on both sides, or a verb whose two particles say the same ("fill in" / "fill out")
    ("How do I fold out the ironing board in my hotel room?", "How can I fold the ironing board in my hotel room out?"),
    ("Can I fill in the insurance claim form online?", "Can I fill out the insurance claim form online?"),
    ("Is the blue rain jacket in stock?", "Do you have the blue rain jacket in stock?"),
    # the same refusal on both sides
    ("Why are teenagers barred from opening a savings account?", "Are teenagers barred from opening a savings account?"),
    # the same relative day on both sides
    ("Can the pharmacy deliver my prescription the next day?",
     "Is it possible for the pharmacy to deliver my prescription the next day?"),
]


def test_relative_days_and_particles_are_read() -> None:
    from costline.serving.cache.verify import _deixis, _verb_particles

    assert _deixis("do you deliver on the same day") == {"this:rday"}
    assert _deixis("do you deliver the following day") == {"next:rday"}
    assert _deixis("can i collect it the day before") == {"last:rday"}
    assert _deixis("next-day delivery") == {"next:rday"}
    assert _verb_particles(("how", "do", "i", "fold", "the", "sofa", "bed", "back", "up"))["fold"] == {"back", "up"}
    assert "fill" not in _verb_particles(("can", "i", "fill", "out", "the", "form"))


def test_window_phrases_and_regular_participles_are_read() -> None:
    from costline.serving.cache.verify import _past_participle, _window

    assert _window("can i cancel up to a week before arrival") == {"lead"}
    assert _window("can i cancel at least 48 hours before the class") == {"lead"}
    assert _window("can i cancel within a week of arrival") == {"within"}
    assert _window("can i cancel before arrival") == set()
    assert _past_participle("mowed") and _past_participle("hoovered") and _past_participle("shipped")
    assert not _past_participle("need") and not _past_participle("bed")


# The tenth set's families (seen: a dev set now), on sentences of other domains (yoga studios, vets, concerts,
# airlines, gyms, cooking classes, climbing gyms): a time preposition swapped around the same anchor, this very
# moment against a stretch ahead or a deadline, a weekday as a habit against one such day, a count of one.
TRAPS10 = [
    # a time preposition swapped for another of another kind before the same anchor: before / on, after / during
    ("Can I reschedule my yoga class before the class day?", "Can I reschedule my yoga class on the class day?",
     "temporal"),
    ("Can I pay the vet bill before the appointment?", "Can I pay the vet bill on the day of the appointment?",
     "temporal"),
    ("Is the cloakroom open after the concert?", "Is the cloakroom open during the concert?", "temporal"),
    ("Can I change my airline seat until check-in?", "Can I change my airline seat at check-in?", "temporal"),
    # this very moment against a stretch ahead or a point near a deadline
    ("Can I cancel my gym membership now?", "Can I cancel my gym membership in the final weeks of the contract?",
     "temporal"),
    ("Will I get a refund on my concert ticket if I cancel today?",
     "Will I get a refund on my concert ticket if I cancel closer to the date?", "temporal"),
    ("Can I swap my cooking class right away?", "Can I swap my cooking class at the last minute?", "temporal"),
    # a weekday as a habit against one such day; a count of one against another count
    ("Is the climbing gym open on Saturdays?", "Is the climbing gym open this Saturday?", "date"),
    ("Can I bring one guest to the climbing gym?", "Can I bring two guests to the climbing gym?", "number"),
    # done against only booked
    ("Has my boiler service been done?", "Is my boiler service booked?", "temporal"),
    ("Has the chimney sweep been carried out?", "Has the chimney sweep been scheduled?", "temporal"),
    # waiting until an event is after it, against before it
    ("Can the dog groomer start before I get back?", "Can the dog groomer wait until I'm back to start?",
     "comparative"),
    # a point within a period: its start, its middle, its end
    ("Can I join the community choir mid-season?", "Can I join the community choir at the start of the season?",
     "temporal"),
    ("Can I return the hired drill at the end of the hire?", "Can I return the hired drill halfway through the hire?",
     "temporal"),
    # free against paid, as the manner of getting it
    ("Can I bring a friend to my yoga class for free?", "Can I bring a friend to my yoga class for a fee?",
     "polarity"),
    ("Can I store my bike at the climbing gym for free?", "Can I store my bike at the climbing gym for a small fee?",
     "polarity"),
]
# the same preposition, the same kind of time, the same stage or the same price on both sides; "one" / "a" and
# "Saturdays" / "a Saturday" as one count and one day; one word hyphenated, spaced or written as one
SAME10 = [
    ("Can I change my airline seat at check-in?", "Is it possible to change my airline seat at check-in?"),
    ("Can I bring a guest to the climbing gym on Sundays?", "Can I bring a guest to the climbing gym on Sunday?"),
    ("Can I reschedule my yoga class on the class day?",
     "Is it possible to reschedule my yoga class on the class day?"),
    ("Is the cloakroom open during the concert?", "Will the cloakroom be open during the concert?"),
    ("Can I pay the vet by card?", "Can I pay the vet on card?"),
    ("Can I cancel my gym membership now?", "Can I cancel my gym membership right away?"),
    ("Can I cancel my gym membership in the final month?",
     "Is it possible to cancel my gym membership in the final month?"),
    ("What time does the climbing gym open on Saturdays?", "What time does the climbing gym open on a Saturday?"),
    ("Can I bring one guest to the climbing gym?", "Can I bring a guest to the climbing gym?"),
    ("Is there Wi-Fi in the departure lounge?", "Is there WiFi in the departure lounge?"),
    ("Can I book a drop-in yoga session?", "Can I book a drop in yoga session?"),
    ("Has my boiler service been booked?", "Is my boiler service booked?"),
    ("Has my boiler service been done?", "Is my boiler service done yet?"),
    ("Can the dog groomer wait until I'm back to start?", "Can the dog groomer wait till I am back to start?"),
    ("Can I join the community choir mid-season?", "Is it possible to join the community choir mid-season?"),
    ("Can I bring a friend to my yoga class for free?", "Can I bring a friend to my yoga class free of charge?"),
    # "is there a charge" / "is it free" is one yes / no question (our train split labels it so)
    ("Does the climbing gym charge for bike storage?", "Is bike storage free at the climbing gym?"),
]


def test_moments_stretches_ahead_plural_weekdays_and_spellings_are_read() -> None:
    from costline.serving.cache.verify import _same_text

    assert verifier_features("can i cancel today").moment and verifier_features("can i cancel right away").moment
    assert not verifier_features("can i cancel in the final month").moment
    for text in ("can i cancel in the final month", "can i cancel in the last two weeks", "near the end of the term",
                 "closer to the date", "can i change it at the last minute", "a last-minute change"):
        assert verifier_features(text).ahead, text
    assert not verifier_features("can i cancel in the month before").ahead
    assert not verifier_features("what did the last customer pay").ahead
    f = verifier_features("Is the gym open on Saturdays?")
    assert f.dates == {"d6"} and f.weekday_habit == {"d6"} and "saturdays" not in f.entities
    assert verifier_features("Can I bring one guest?").one_count
    assert not verifier_features("Can I bring 1 guest?").one_count
    assert _same_text("Do you stock Ray-Ban frames?", "do you stock rayban frames")
    assert _same_text("a day-of package", "a day of package")
    assert not _same_text("Can I re-sign the lease?", "Can I resign the lease?")
    assert not _same_text("Can I book a room?", "Can I book a rooms?")
    assert verifier_features("Has my bulky collection been done?").stage == {"done"}
    assert verifier_features("Is the repair finished?").stage == {"done"}
    assert verifier_features("Is my bulky collection booked?").stage == {"booked"}
    assert verifier_features("Can the repair be done on Saturday?").stage == frozenset()
    assert verifier_features("Can I join mid-season?").position == {"middle"}
    assert verifier_features("Can I return it halfway through the hire?").position == {"middle"}
    assert verifier_features("Can I join at the start of the season?").position == {"start"}
    assert verifier_features("Can I return it at the end of the hire?").position == {"end"}
    assert verifier_features("When does the season start?").position == frozenset()
    assert verifier_features("Can kids ski for free?").price == {"free"}
    assert verifier_features("Can kids ski for a small fee?").price == {"paid"}
    assert verifier_features("Is skiing free for kids?").price == frozenset()


TRAPS11 = [
    # an obligation against a permission or an option, the act itself said the other way round (a wh-word later in
    # the question, "while", "where it is", no longer hides the question's own modal)
    ("Do I have to bring my own towel to the gym?", "Can I leave my towel at home when I go to the gym?",
     "negation"),
    ("Do I need a helmet for the bike tour?", "Is a helmet optional for the bike tour?", "negation"),
    ("Do I have to check out of the hotel by noon?", "Is it acceptable to stay in the hotel room after noon?",
     "negation"),
    ("Do I need to be home for the boiler engineer?", "Can the boiler engineer come while I'm out?", "negation"),
    # opposite verbs of general English (the lexicon's "take in | let out"; "tighten" and "resume": below)
    ("Can the bridal shop take in my dress?", "Can the bridal shop let out my dress?", "polarity"),
    # a one-letter designator of a named thing; a name grown by a tier word
    ("Is there step-free access at Gate C?", "Is there step-free access at Gate D?", "entity"),
    ("Is the maths lecture in Room B?", "Is the maths lecture in Room C?", "entity"),
    ("Does the Travel Cover plan include ski trips?", "Does the Travel Cover Premium plan include ski trips?",
     "entity"),
    # a second party added after the object with "as well" / "too"; "just for X" against "also cover Y"
    ("Is the boarding pass sent to me?", "Is the boarding pass sent to my travel agent as well?", "scope"),
    ("Does the hotel insurance cover my luggage?", "Does the hotel insurance cover my children's luggage too?",
     "scope"),
    ("Is the railcard just for off-peak trains?", "Does the railcard also cover peak trains?", "scope"),
]

SAME11 = [
    # a worded count of one against a digit one: the other side has a number of its own, so the same count
    ("Can I hire a van for just one day?", "Can I hire a van for just 1 day?"),
    # "as well" with no second party; the same designator; the same tier; an obligation on both sides; a wh-question
    ("Do you repair bikes as well?", "Do you repair bikes?"),
    ("Is the maths lecture in Room B?", "Is the maths lecture held in Room B?"),
    ("Does the Travel Cover Premium plan include ski trips?", "Does Travel Cover Premium include ski trips?"),
    ("Do I need a helmet for the bike tour?", "Is a helmet required for the bike tour?"),
    ("How can I pay for parking at the airport?", "How do I pay for parking at the airport?"),
    # the synonym lexicon (data/synonyms.txt): one word or phrase of general English for another
    ("Is there a waiting list for the climbing course?", "Is there a waitlist for the climbing course?"),
    ("Is the hotel reception staffed round the clock?", "Is the hotel reception staffed around the clock?"),
    ("How much is the wine tasting per head?", "How much is the wine tasting per person?"),
    ("Can I wait while my tyres are changed?", "Can I wait whilst my tyres are changed?"),
    ("Do you lend mics for the quiz night?", "Do you lend microphones for the quiz night?"),
    ("Is a booking needed for the museum tour?", "Is a booking required for the museum tour?"),
    ("Is there a car park at the football stadium?", "Is there a parking lot at the football stadium?"),
    ("Can I take a pushchair on the city bus?", "Can I take a stroller on the city bus?"),
]


def test_designators_tiers_and_the_lexicons_new_opposites_are_read(embedder, verifiers, tmp_path) -> None:
    from costline.serving.cache.verify import _antonym_opposite

    assert verifier_features("Do you have a projector in Studio A?").designators == {"studio a"}
    assert verifier_features("A member asked: is Gate C open?").designators == {"gate c"}
    assert verifier_features("Can I bring a friend?").designators == frozenset()
    assert verifier_features("Does the Acme Pro plan cover it?").tiers == {"acme pro"}
    assert verifier_features("Do I need a helmet?").modality == {"oblige"}
    assert verifier_features("Is a helmet optional?").modality == {"permit"}
    assert not verifier_features("Can I leave it where it is?").wh_lead
    assert verifier_features("How can I pay?").wh_lead
    # opposite verbs the lexicon now has, read by lemma and phrase; through a real cache, rejected both ways
    for stored, new in (("Should I tighten the bolts on the bike seat?", "Should I loosen the bolts on the bike seat?"),
                        ("Can you resume my newspaper delivery?", "Can you put my newspaper delivery on hold?"),
                        ("Can the bridal shop take in my dress?", "Can the bridal shop let out my dress?")):
        assert _antonym_opposite(verifier_features(stored), verifier_features(new)), stored
        for found in _lookups(embedder, verifiers, tmp_path, stored, new, both_ways=True):
            assert found.hit is None and found.reject_reasons, stored
    assert not _antonym_opposite(verifier_features("Can I resume my paused membership?"),
                                 verifier_features("How do I resume my membership?"))


def test_the_synonym_lexicon_only_says_two_words_are_the_same(embedder, verifiers, tmp_path) -> None:
    from costline.serving.cache.verify import read_synonyms
    from costline.serving.errors import CacheError

    assert verifier_features("Can I wait whilst it's fixed?").tokens == verifier_features("Can I wait while it's "
                                                                                          "fixed?").tokens
    assert "mic" not in verifier_features("Do you sell comic books?").tokens  # whole words only
    assert "comic" in verifier_features("Do you sell comic books?").tokens
    # a synonym never hides what else differs: the same "waitlist", another course
    for found in _lookups(embedder, verifiers, tmp_path, "Is there a waiting list for the junior course?",
                          "Is there a waitlist for the adult course?", both_ways=True):
        assert found.hit is None and found.reject_reasons
    bad = tmp_path / "synonyms.txt"
    bad.write_text("# header\nwhile, whilst\nlonely\n")
    with pytest.raises(CacheError, match=r"synonyms.txt:3"):
        read_synonyms(bad)
    from pathlib import Path

    import costline.serving.cache.verify as verify_module

    shipped = read_synonyms(Path(verify_module.__file__).resolve().parent / "data" / "synonyms.txt")
    assert ("while", "among") == tuple(first for _, first in shipped[:2])


@pytest.mark.parametrize(("a", "b", "reason"), [
    ("day", "year", "temporal"), ("mornings", "evenings", "temporal"), ("lunch", "dinner", "temporal"),
    ("dogs", "cats", "entity"), ("alto", "tenor", "entity"), ("front", "back", "entity"), ("gold", "silver", "entity"),
    ("kids", "children", None),   # a synonym: no line names both
    ("dog", "dogs", None),        # one word, two forms
    ("back", "rear", None),       # the same side, said twice
    ("car", "gold", None),        # two lines, no line with both
    ("booking", "reservation", None),
])
def test_the_alternatives_lexicon_names_words_of_one_kind(a, b, reason) -> None:
    from costline.serving.cache.verify import alternatives

    assert alternatives(a, b) == reason and alternatives(b, a) == reason


def test_no_alternatives_line_holds_two_words_of_one_synonym_group(tmp_path) -> None:
    """A word for a word of its own synonyms.txt group is one thing said twice, never another of its kind."""
    from pathlib import Path

    import costline.serving.cache.verify as verify_module
    from costline.serving.cache.verify import alternatives, read_alternatives

    data = Path(verify_module.__file__).resolve().parent / "data"
    groups = [[" ".join(f.lower().split()) for f in line.split(",")]
              for line in (data / "synonyms.txt").read_text().splitlines() if line.strip() and not line.startswith("#")]
    clashes = [(x, y) for g in groups for x in g for y in g if x < y and " " not in x + y and alternatives(x, y)]
    assert clashes == []
    words, reasons = read_alternatives(data / "alternatives.txt")
    assert set(reasons.values()) <= {"entity", "temporal", "scope"} and {"day", "alto", "front"} <= set(words)
    from costline.serving.errors import CacheError

    bad = tmp_path / "alternatives.txt"
    for text, line in (("# header\nentity: red, blue\nred, blue\n", 3),  # no reason
                       ("entity: red, blue\ncolour: red, blue\n", 2),    # no reason the guards give
                       ("# x\n\nentity: red\n", 3),                     # one word is no set
                       ("entity: red, light blue\n", 1)):                 # single words only
        bad.write_text(text)
        with pytest.raises(CacheError, match=rf"alternatives.txt:{line}:"):
            read_alternatives(bad)


# -- the thirteenth and fourteenth sets' families (cache_pair_heldout13.jsonl, cache_pair_heldout14.jsonl, seen: dev
# sets now), on sentences of other domains (hotels, flights, driving lessons, phone contracts, solicitors, dry
# cleaning, lettings, building sites, pubs, clinics, pharmacies, stations, libraries, bookshops, luggage, phones,
# weddings, engraving, theatres, trains, gyms)
TRAPS13 = [
    # one boundary of a period against another around the same anchor: the window's end ("up to N before") against
    # its start ("from N before"); the first of a series against the ones after it
    ("What is the hotel cancellation charge up to two days before arrival?",
     "What is the hotel cancellation charge from two days before arrival?", "temporal"),
    ("Is there a fee to change my flight up to a month before travel?",
     "Is there a fee to change my flight starting a month before travel?", "temporal"),
    ("Is my first driving lesson discounted?", "Are driving lessons discounted after my first one?", "temporal"),
    ("How much does the first month of the phone contract cost?",
     "How much does the phone contract cost after the first month?", "temporal"),
    ("Is the initial consultation with the solicitor free?",
     "Are consultations with the solicitor free after the initial meeting?", "temporal"),
    # a synonym never hides an opposite or a number: "collect" against "drop off", a percentage in words
    ("Can I collect my dry cleaning on Saturday?", "Can I drop off my dry cleaning on Saturday?", "entity"),
    ("Is the deposit 20% of the monthly rent?", "Is the deposit thirty percent of the monthly rent?", "number"),
]
SAME13 = [  # each served before only by the cosine, or rejected (entity / scope / unmatched)
    ("Are hard hats compulsory on the building site?", "Are hard hats mandatory on the building site?"),
    ("Are dogs allowed in the pub garden?", "Are dogs permitted in the pub garden?"),
    ("Do I need to fast before my blood test?", "Do I need to fast prior to my blood test?"),
    ("Can I collect my prescription tomorrow?", "Can I pick up my prescription tomorrow?"),
    ("Can you pick me up from the station?", "Can you collect me from the station?"),
    ("What time does the library close on Saturdays?", "What time does the library shut on Saturdays?"),
    ("Does the bookshop have a loyalty card for customers?", "Does the bookshop have a loyalty card for shoppers?"),
    ("Is there a charge for each extra suitcase?", "Is there a charge for every extra suitcase?"),
    ("Does my phone stop charging at 90%?", "Does my phone stop charging at ninety percent?"),
    ("Is the wedding menu vegetarian?", "Is the wedding menu veggie?"),
    ("Is the harbourside hotel open in winter?", "Is the harborside hotel open in winter?"),
    ("Can I personalise the engraved mug?", "Can I personalize the engraved mug?"),
    ("Is the theatre wheelchair accessible?", "Is the theater wheelchair accessible?"),
    ("Are cancelled trains refunded in full?", "Are canceled trains refunded in full?"),
    # the first of a series, the same on both sides; the ones after it, the same on both sides
    ("How much is the first year of the gym membership?", "What does the first year of gym membership cost?"),
    ("What does the gym charge after the first year?", "How much is the gym after the first year?"),
]


TRAPS15 = [
    # opposites said as prepositions or phrases: together / apart, included / left out, at home / out, on / off
    # site, recommended / discouraged, daylight / dark, a restricted group / everyone
    ("Should toddlers sit with their parents on the coach?",
     "Should toddlers sit apart from their parents on the coach?", "polarity"),
    ("Is breakfast included as part of the room rate?", "Is breakfast left out of the room rate?", "polarity"),
    ("Is the technician on site today?", "Is the technician off site today?", "polarity"),
    ("Can we walk the coastal trail while it's still light?", "Can we walk the coastal trail after dark?",
     "temporal"),
    ("Is the gala dinner open to members of staff?", "Is the gala dinner open to the general public?", "entity"),
    # asking how to stop someone doing what the other asks whether they may do ("stop" is also a reversal)
    ("Is the tenant allowed to sublet the flat?", "How do I stop the tenant from subletting the flat?", "polarity"),
    ("Is the tenant allowed to sublet the flat?", "How do I prevent the tenant from subletting the flat?",
     "negation"),
    # a name grown by a lower-case noun: another kind of thing
    ("Can visitors feed the bears?", "Can visitors feed the polar bears?", "entity"),
    ("Is there a talk about the lions?", "Is there a talk about the sea lions?", "entity"),
    # a duration in words is its minutes
    ("Can I extend the parking by half an hour?", "Can I extend the parking by an hour and a half?", "number"),
    ("Does the massage last a quarter of an hour?", "Does the massage last three quarters of an hour?", "number"),
]
SAME15 = [  # each rejected before (entity / scope / unmatched), or still served through each new rule
    ("Do you take card payments at the market stall?", "Do you accept card payments at the market stall?"),
    ("When does the yoga class start?", "When does the yoga class begin?"),
    ("Can I leave my keys at the front desk?", "Can I leave my keys at the reception desk?"),
    ("Does the film have captions?", "Does the film have subtitles?"),
    ("Can I reschedule my dentist appointment?", "Can I rebook my dentist appointment?"),
    ("Should I pack sunscreen for the boat trip?", "Should I pack suncream for the boat trip?"),
    ("Do the cleaners vacuum the carpets?", "Do the cleaners hoover the carpets?"),
    ("Is the golf course open when it's raining?", "Is the golf course open when it rains?"),
    ("Can I extend the parking by half an hour?", "Can I extend the parking by 30 minutes?"),
    ("Is the museum open to the public?", "Can members of the public visit the museum?"),
    ("Is the tenant allowed to sublet the flat?", "Can the tenant sublet the flat?"),
    ("How do I stop the dog from barking at night?", "How can I stop my dog barking at night?"),
    # a noun grown further, or a singular one grown by a modifier, is no other kind of thing to the compound rule
    ("Can I change my appointment slot?", "Can I change my appointment time slot?"),
    ("Can I keep my bike in the shed?", "Can I keep my bike in the garden shed?"),
]


TRAPS17 = [
    # sets 17 and 18 (seen: dev sets now), on other domains: scope said without a quantifier word ("some" /
    # "only", some of them against the thing itself, per unit against the whole, to oneself against shared, a
    # second party "as well as mine"), opposites no lexicon held ("disqualified", "pointless", "communal" /
    # "other people's")
    ("Do tenants get to vote on the service charge?",
     "Are some tenants disqualified from voting on the service charge?", "negation"),
    ("Should I book the museum tour in advance?", "Is it pointless to book the museum tour in advance?", "negation"),
    ("Does the bakery sell some vegan cakes?", "Does the bakery sell only vegan cakes?", "scope"),
    ("Is the hotel restaurant vegetarian?", "Are some hotel restaurant dishes vegetarian?", "scope"),
    ("Is the cleaning price per window?", "Is the cleaning price for the whole house?", "scope"),
    ("Can I book the shared meeting room?", "Can I have the shared meeting room to myself?", "scope"),
    ("Can I renew my own library card?", "Can I renew my son's library card as well as mine?", "scope"),
    ("Do I have to clean my desk?", "Do I have to clean the kitchen as well as my desk?", "scope"),
    ("Can I park in the communal car park?", "Can I park in other people's driveways?", "polarity"),
]
SAME17 = [  # the near-repeat misses of sets 17 and 18 as general English, and pairs each new rule must still serve
    ("When does the pottery course finish?", "When does the pottery course end?"),
    ("Are the climbing sessions good for beginners?", "Are the climbing sessions good for novices?"),
    ("Do adults pay full price at the museum?", "Do grown-ups pay full price at the museum?"),
    ("Can I take a rucksack into the stadium?", "Can I take a backpack into the stadium?"),
    ("Is there parking for motorbikes at the hotel?", "Is there parking for motorcycles at the hotel?"),
    ("Can I leave my keys at the front desk?", "Can I leave my keys at the reception desk?"),
    ("Can I have the sauna to myself?", "Can I book the sauna privately?"),
    ("Is the fee per person?", "How much is the fee per person?"),
    ("Can I bring my partner as well as my kids?", "Can my partner come as well as my kids?"),
]
# opposites said as verbs or adjectives (antonyms.txt): one word swapped for its opposite, which the entity rule
# lets pass as a synonym at the pair's cosine -- so read at it
TRAPS17_COSINE = [
    ("What happens if a guest follows the pool rules?", "What happens if a guest ignores the pool rules?"),
    ("Will my train ticket still be valid if I change at Leeds?", "Will my train ticket be void if I change at Leeds?"),
]


TRAPS19 = [
    # sets 19 and 20 (seen: dev sets now), on other domains: the other side's word named and set aside ("rather
    # than", "instead of"), included against charged on top, a negative evaluation against the plain act
    ("Is the webinar streamed live?", "Is the webinar recorded rather than live?", "negation"),
    ("Do you shred old bank statements?", "Can I keep my old bank statements instead of having them shredded?",
     "negation"),
    ("Does the hotel rate cover breakfast?", "Is breakfast charged on top of the hotel rate?", "polarity"),
    ("Does the ticket price include the audio guide?", "Is the audio guide charged in addition to the ticket price?",
     "polarity"),
    ("Can I wash wool jumpers in the machine?", "Is it a bad idea to wash wool jumpers in the machine?", "negation"),
    ("Can I repaint the walls of my rented flat?", "Is it a mistake to repaint the walls of my rented flat?",
     "negation"),
]
SAME19 = [  # the near-repeat misses of sets 19 and 20 as general English, and pairs each new rule must still serve
    ("Is the café in the museum open on Sundays?", "Is the cafe in the museum open on Sundays?"),
    ("Is my first driving lesson free?", "Is my 1st driving lesson free?"),
    ("Do you repair televisions?", "Do you repair TVs?"),
    ("Can I buy a gift voucher online?", "Can I purchase a gift voucher online?"),
    ("Is the flour sold per kilo?", "Is the flour sold per kilogram?"),
    ("Can I store my bike underneath the stairs?", "Can I store my bike under the stairs?"),
    ("Is it OK to wash wool jumpers in the machine?", "Can I wash wool jumpers in the machine?"),
    ("Is it a bad idea to wash wool jumpers in the machine?", "Should I avoid washing wool jumpers in the machine?"),
    ("Does the hotel rate cover breakfast?", "Is breakfast included in the hotel rate?"),
    ("Can I pay by card rather than cash?", "Can I pay by card rather than with cash?"),
]
TRAPS29 = [
    # sets 29 and 30 (seen: dev sets now), on other domains: ahead of the day against on the day, a fee against
    # free of charge, allowed against off-limits, a hyphenated kind ("Pre-Junior"), a list said with commas
    ("Is there a charge for rescheduling a delivery in advance?",
     "Is there a charge for rescheduling a delivery on the same day?", "temporal"),
    ("Can I pay for the boat trip in advance?", "Can I pay for the boat trip on the day?", "temporal"),
    ("Which bottles do you charge a fee to recycle?", "Which bottles do you recycle free of charge?", "polarity"),
    ("Are visitors allowed to use the rear garden?", "Is the rear garden off-limits to visitors?", "polarity"),
    ("What time does the Junior swim squad train?", "What time does the Pre-Junior swim squad train?", "entity"),
    ("Does the drill come with a battery?", "Does the drill come with a battery, charger and carry case?", "scope"),
    # a negation said aside still counts where the other question speaks of the same thing
    ("Can members bring a guest to the club?", "I'm not a member, can I come to the club as a guest?", "negation"),
    ("My parcel arrived damaged, who do I contact?", "My parcel has not arrived, who do I contact?", "negation"),
]
SAME29 = [  # the near-repeat misses of sets 29 and 30 as general English, and pairs each new rule must still serve
    ("Can three adults share a cabin?", "Can 3 adults share one cabin?"),
    ("Do you sell the candles on their own?", "Do you sell the candles by themselves?"),
    ("Do I need to book the pottery class in advance?",
     "Must I book the pottery class ahead or can I turn up on the day?"),
    ("Is the club bar open to non-members?", "Is the club bar open to non members?"),
    ("Do you stock semi-skimmed milk?", "Do you stock semi skimmed milk?"),
    # a negation said aside: in a first-person statement before the question, in a purpose clause
    ("Is the weaving course suitable for complete beginners?",
     "I've never touched a loom before - is the weaving course OK for me?"),
    ("How should I store fresh pasta?", "What's the best way to store fresh pasta so it doesn't dry out?"),
    # one week's hire is no weekly scope; "any time" is "anytime"; "zero experience" is "no experience"
    ("What's the price of a week's kayak hire?", "What's the price of a one week kayak hire?"),
    ("Can I swap the jumper at any time?", "can I swap the jumper anytime"),
    ("Can I join the choir if I've never sung before?", "Is the choir OK for someone with zero singing experience?"),
]
TRAPS31 = [
    # sets 31 and 32 (seen: dev sets now), on other domains: what has happened against when it will
    ("Has my refund already been processed?", "When will my refund be processed?", "temporal"),
    ("Has the hall been repainted yet?", "When will the hall be repainted?", "temporal"),
    # a comma inside a number splits no question into parts; a story that names what is asked is no aside
    ("Is the deposit £1,200?", "Is the deposit £1,500?", "number"),
    ("Can I bring my dog to the campsite?", "We have two dogs, can we bring them to the campsite?", "number"),
]
SAME31 = [  # the near-repeat misses of sets 31 and 32 as general English, and pairs the new rule must still serve
    ("Is there a toilet at the stables?", "Is there a loo at the stables?"),
    ("What is the price of an annual pass?", "What is the price of a yearly pass?"),
    ("Do you stock spares for the PA-28?", "Do you stock spares for the PA28?"),
    ("Have you got a changing room?", "Do you have a changing room?"),
    ("Has my order been shipped?", "Was my order shipped?"),
    # a statement aside, before the question, that the other question does not speak of: no count, no negation
    ("Is the weed killer you use safe around children?",
     "I've got three kids under five, will the weed killer harm them?"),
    ("Can teenagers join the climbing club?",
     "thinking of signing up my 15 year old who loves bouldering, do you take teens at the climbing club?"),
]
SAME33 = [  # the near-repeat misses of sets 33 and 34 (seen: dev sets now) as general English
    ("Can I call a cab from the station?", "Can I call a taxi from the station?"),
    ("How long is the guarantee on the boiler?", "How long is the warranty on the boiler?"),
    ("Can I drop off the furniture on Monday?", "Can I drop the furniture off on Monday?"),  # no verb "furniture on"
    ("What is the phone number for the surgery?", "What's the phone no. for the surgery?"),  # "no." is no "not"
]
TRAPS35 = [
    # sets 35 and 36 (seen: dev sets now), on other domains: a substance then "free" written apart, good / bad,
    # normal / abnormal, return / collect
    ("Do the brownies contain dairy?", "Are the brownies dairy free?", "negation"),
    ("Which paints are good for outdoor use?", "Which paints are bad for outdoor use?", "polarity"),
    ("Is it normal for a new tap to drip?", "Is it abnormal that my new tap drips?", "polarity"),
    ("When do I need to return the ladder?", "When can I collect the ladder?", "polarity"),
]
SAME35 = [("Is the pasta egg-free?", "Is the pasta egg free?")]
TRAPS37 = [  # sets 37 and 38 (seen: dev sets now), on other domains: "pre-" against "post-" the same thing
    ("Can I book a pre-show dinner?", "Can I book a post-show dinner?", "temporal"),
]
TRAPS39 = [  # sets 39 and 40 (seen: dev sets now), on other domains: lengths in words, well / poorly
    ("Is the rowing course 500 metres long?", "Is the rowing course 500 yards long?", "unit"),
    ("Do tomatoes grow well in the shade?", "Do tomatoes grow poorly when they are in the shade?", "polarity"),
]
TRAPS43 = [  # sets 41-44 (seen: dev sets now), on other domains: a duration against a lead time
    ("How long does the pottery class last?", "How far in advance should I book the pottery class?", "temporal"),
    ("How long does the boat trip take?", "How early should we get to the harbour for the boat trip?", "temporal"),
    ("How long is the guided walk?", "How much notice do you need for the guided walk?", "temporal"),
]
SAME43 = [  # what the rule leaves alone: "how soon" and "how long until" are durations too, notice is a lead time
    ("How long does delivery take?", "How soon will my delivery arrive?"),
    ("How long is the notice period to cancel my membership?", "How much notice do I need to give to cancel my "
                                                                 "membership?"),
]
TRAPS45 = [  # sets 45 and 46 (seen: dev sets now), on other domains: a kind named where "any" stood, a part asked
    ("Can I fly if I'm taking any antibiotics?", "Can I fly if I'm taking penicillin antibiotics?", "scope"),
    ("Is the buffet halal?", "Is anything on the buffet halal?", "scope"),
    ("Is the bakery nut-free?", "Is anything at the bakery nut-free?", "scope"),
]
TRAPS47 = [  # sets 41-48 (seen: dev sets now), on other domains: one word for another word of its kind, which the
    # coverage rule read as a synonym at a high cosine (the alternatives lexicon, data/alternatives.txt)
    ("When is the best time of day to visit the lavender fields?",
     "When is the best time of year to visit the lavender fields?", "temporal"),
    ("Is there a rehearsal recording for the soprano line?", "Is there a rehearsal recording for the tenor line?",
     "entity"),
    ("Is the back gate of the allotments locked overnight?", "Is the front gate of the allotments locked overnight?",
     "entity"),
    ("Do you engrave gold wedding rings?", "Do you engrave silver wedding rings?", "entity"),
]
SAME47 = [  # a number glued to its unit, "not" against a negating prefix, "step free", short forms
    ("What would you pay for a 2oz silver bar?", "What would you pay for a 2 oz silver bar?"),
    ("Can I get a refund if I'm not happy with the frame?", "Can I get a refund if I'm unhappy with the frame?"),
    ("Is there step free access to the gallery?", "Is there step-free access to the gallery?"),
    ("Where can I find information about parking at the stadium?",
     "Where can I find info about parking at the stadium?"),
    ("Do I need a helmet for my first ever lesson?", "Do I need a helmet for my first lesson?"),
]
TRAPS49 = [  # sets 49-52 (seen: dev sets now), on other domains: the stretch before an event against during it; a
    # coordination grown in front ("the outside" / "the inside and outside")
    ("Do you valet the interior of the car?", "Do you valet the exterior and interior of the car?", "scope"),
    ("Is the garden centre busy during Easter week?", "Is the garden centre busy in the days leading up to Easter?",
     "temporal"),
    ("Do hotel prices go up during the marathon weekend?", "Do hotel prices go up in the run-up to the marathon?",
     "temporal"),
]
SAME49 = [  # one compound written apart and closed, US and UK words for one thing, the stretch before an event
    ("Is there a call-out charge for the locksmith?", "Is there a callout charge for the locksmith?"),
    ("Can I email my X-rays before the appointment?", "Can I email my xrays before the appointment?"),
    ("Are there restrooms at the campsite?", "Are there toilets at the campsite?"),
    ("Is the farm shop open in the run-up to Christmas?", "Is the farm shop open in the weeks before Christmas?"),
]
TRAPS55 = [  # sets 55 and 56 (seen: dev sets now), on other domains: two time questions measuring different spans
    ("How soon can I paint the new shed?", "How often does the new shed need painting?", "temporal"),
    ("How long do I have to cancel my booking?", "How long does it take to process a cancellation?", "temporal"),
    ("When will my sofa be dispatched?", "When will my sofa be delivered?", "temporal"),
    ("How long does it take from booking to the first driving lesson?",
     "How long does the first driving lesson itself take?", "temporal"),
]
SAME55 = [  # what those rules leave alone: a wait is how long a thing takes; arriving is being delivered
    ("How long do I have to wait for my refund?", "How long does a refund take?"),
    ("When will my parcel arrive?", "When will my parcel be delivered?"),
    ("How long does the laser treatment itself take?", "How long does the actual laser treatment take?"),
]
TRAPS57 = [  # sets 57 and 58 (seen: dev sets now) and the populated check, on other domains: "before" and "after"
    # trading places; an amount asked against whether a price covers something
    ("Should I stretch after warming up before the run?", "Should I stretch before warming up after the run?",
     "temporal"),
    ("How much is a gel manicure?", "Is nail art included in the price of a gel manicure?", "scope"),
]
SAME57 = [  # what those rules leave alone: "before or after" either way round; two ways to ask an amount
    ("Can I swim before or after the lesson?", "Can I swim after or before the lesson?"),
    ("How much does the package cost?", "What's the price of the package?"),
]
SAME61 = [  # the near-repeat misses of sets 61 and 62 (seen: dev sets now) as general English: a particle that is
    # the preposition of a day ("a stay on weekends" is no "stay-on"), a possessive's "s" against a plain noun
    ("Do you offer a longer stay on weekends?", "Do you offer a longer stay at weekends?"),
    ("Is there a kids menu at the cafe?", "Is there a children's menu at the cafe?"),
]
SAME45 = [  # what the "any" rule leaves alone: the kind named after "any" too, or nothing in its place
    ("Do you offer pensioner discounts?", "Do you offer any discounts for pensioner members?"),
    ("Do you have any gluten-free cakes?", "Do you have gluten-free cakes?"),
]
SAME37 = [  # their near-repeat misses as general English
    ("Is there wifi on board the ferry?", "Is there wifi onboard the ferry?"),
    ("Is the cafe accessible with a pushchair?", "Is the cafe accessible with a stroller?"),
    ("Do you sell tickets with no booking fee?", "Do you sell tickets without a booking fee?"),
]


# phrase opposites that the word-swap and coverage rules read first when no cosine is given: through the cache
# (which gives the guards the pair's cosine) the antonym lexicon rejects them
TRAPS15_COSINE = [
    ("Do I have to be at home for the meter reading?", "Do I have to be out of the house for the meter reading?"),
    ("Is fasting recommended before the blood test?", "Is fasting discouraged before the blood test?"),
]


@pytest.mark.parametrize("stored, new", TRAPS15_COSINE + TRAPS17_COSINE)
def test_phrase_opposites_are_rejected_at_the_pairs_cosine(embedder, verifiers, tmp_path, stored, new) -> None:
    for found in _lookups(embedder, verifiers, tmp_path, stored, new, both_ways=True):
        assert found.hit is None and found.reject_reasons == ("polarity",)
        assert guard(verifier_features(stored), verifier_features(new), found.similarity) == "polarity"


def test_worded_durations_and_phrase_opposites_are_read() -> None:
    f = verifier_features
    assert f("Is it half an hour?").numbers == f("Is it 30 minutes?").numbers
    assert f("Is it an hour and a half?").numbers == f("Is it 90 minutes?").numbers
    assert f("Is it three quarters of an hour?").numbers != f("Is it a quarter of an hour?").numbers
    assert f("How do I block the courier from leaving parcels?").prevents
    assert not f("How do I block the courier?").prevents and f("How do I block the courier?").prevent_word
    # a capitalised modifier is a name (the entity rules' business), not a compound noun
    assert guard(f("When do the lions eat?"), f("When do the sea lions eat?")) == "entity"


def test_the_synonym_lexicons_new_lines_spellings_and_quantifiers_are_read() -> None:
    f = verifier_features
    # a verb and its particle around a short object is the group's first form ("pick the kids up" -> "collect")
    assert f("Can you pick the kids up at four?").tokens == f("Can you collect the kids at four?").tokens
    # "shut down" is "close down", still a reversal; "each other" is no quantifier; a percentage in words is "%"
    assert "close-down" in f("Will the plant shut down over winter?").reversal
    assert "every" not in f("Do the twins sit next to each other?").tokens
    assert f("Is the fee for each night?").scope == f("Is the fee for every night?").scope == frozenset({"every"})
    assert f("Is it 5 per cent?").tokens == f("Is it 5 percent?").tokens == ("is", "it", "5", "%")
    # a derived word that breame's tables lack, on a base they hold; "-our" alone is no spelling ("hourly", "tourism")
    assert f("Are the sausages flavourful?").tokens == f("Are the sausages flavorful?").tokens
    assert "hourly" in f("Is parking charged hourly?").tokens and "tourism" in f("Do you do tourism?").tokens
    # the window's start and end, the first one and the ones after it
    assert f("Can I cancel from a week before the trip?").window == frozenset({"from"})
    assert f("Is my first lesson free?").first == frozenset({"first"})
    assert f("Are lessons free after my first one?").first == frozenset({"after"})
    assert f("Are lessons free after the very first one?").first == frozenset({"after"})
    assert f("Are lessons free?").first == frozenset()


def _lookups(embedder, verifiers, tmp_path, stored: str, new: str, *, both_ways: bool, pair_model: bool = True):
    """``new`` looked up in a real cache holding ``stored`` (and, both ways, the other way round); without
    ``pair_model``, the stage's rules alone (guards and admission model)."""
    from costline.serving.cache.semantic import SemanticCache
    from costline.serving.settings import CacheConfig

    ways = ((stored, new), (new, stored)) if both_ways else ((stored, new),)
    for first, second in ways:
        cache = SemanticCache(embedder, CacheConfig(path=tmp_path / str(first == stored), verify_pair_model=pair_model),
                              verifier=verifiers[pair_model])
        cache.store(first, "the stored answer", tenant="t")
        yield cache.lookup_detail(second, tenant="t")


# Each dev set's families (sets 3-20 and 29-50, seen: dev sets now; sets 11 and 12 together as TRAPS11 / SAME11,
# sets 13 and 14 as TRAPS13 / SAME13, sets 15 and 16 as TRAPS15 / SAME15, sets 17 and 18 as TRAPS17 / SAME17, sets
# 19 and 20 as TRAPS19 / SAME19, sets 29 and 30 as TRAPS29 / SAME29, sets 31 and 32 as TRAPS31 / SAME31, sets 33
# and 34 as SAME33, sets 35 and 36 as TRAPS35 / SAME35, sets 37 and 38 as TRAPS37 / SAME37, sets 39 and 40 as
# TRAPS39, sets 41-44 as TRAPS43 / SAME43, sets 45 and 46 as TRAPS45 / SAME45, sets 41-48 as TRAPS47 / SAME47,
# sets 49-52 as TRAPS49 / SAME49, sets 55 and 56 as TRAPS55 / SAME55, sets 57 and 58 as TRAPS57 / SAME57, sets 61 and 62 as SAME61), on
# sentences of other domains than the set's:
# (stored, new, reason) through a real cache, the candidate found and rejected by its family's guard,
# and the guard itself both ways; sets 5 on also through the cache both ways.
FAMILY_TRAPS = [pytest.param(*t, k >= 5, id=f"set{k}-{i}")
                for k, traps in ((3, TRAPS3), (4, TRAPS4), (5, TRAPS5), (6, TRAPS6), (7, TRAPS7), (8, TRAPS8),
                                 (9, TRAPS9), (10, TRAPS10), (11, TRAPS11), (13, TRAPS13), (15, TRAPS15),
                                 (17, TRAPS17), (19, TRAPS19), (29, TRAPS29), (31, TRAPS31),
                                 (35, TRAPS35), (37, TRAPS37), (39, TRAPS39), (43, TRAPS43), (45, TRAPS45),
                                 (47, TRAPS47), (49, TRAPS49), (55, TRAPS55), (57, TRAPS57))
                for i, t in enumerate(traps)]
FAMILY_SAME = [pytest.param(*t, k >= 5, k in (4, 10, 11), id=f"set{k}-{i}")
               for k, same in ((3, SAME3), (4, SAME4), (5, SAME5), (6, SAME6), (7, SAME7), (8, SAME8), (9, SAME9),
                               (10, SAME10), (11, SAME11), (13, SAME13), (15, SAME15),
                               (17, SAME17), (19, SAME19), (29, SAME29), (31, SAME31),
                               (33, SAME33), (35, SAME35), (37, SAME37), (43, SAME43), (45, SAME45),
                               (47, SAME47), (49, SAME49), (55, SAME55), (57, SAME57), (61, SAME61))
               for i, t in enumerate(same)]


@pytest.mark.parametrize("stored, new, reason, both_ways", FAMILY_TRAPS)
def test_each_dev_sets_families_are_rejected_by_the_verified_cache(embedder, verifiers, tmp_path, stored, new, reason,
                                                                   both_ways) -> None:
    for found in _lookups(embedder, verifiers, tmp_path, stored, new, both_ways=both_ways):
        assert found.hit is None and found.reject_reasons == (reason,)
    assert guard(verifier_features(stored), verifier_features(new)) == reason  # both ways


@pytest.mark.parametrize("stored, new, both_ways, check_guard", FAMILY_SAME)
def test_same_answer_pairs_of_each_dev_sets_families_are_served(embedder, verifiers, tmp_path, stored, new, both_ways,
                                                                check_guard) -> None:
    """By the rules: the pair model, after them, rejects some of these (18 of the 126 when it was turned on by
    default: its cost in recall, measured on every pair set in docs/cache.md), and has its own tests."""
    for found in _lookups(embedder, verifiers, tmp_path, stored, new, both_ways=both_ways, pair_model=False):
        assert found.hit is not None and found.hit.answer == "the stored answer", found.reject_reasons
    if check_guard:
        assert guard(verifier_features(stored), verifier_features(new)) is None  # both ways
