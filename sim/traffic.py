"""A built-in, deterministic sample of LLM traffic over simulated days: the one traffic generator.

Two forms of the same world (one request stream):

* :func:`serving_traffic` yields *requests* — time, tenant, task type, subtype, query text,
  the document (and its version) an answer is grounded in — and the document events
  (updates, invalidations) between them. ``costline demo`` sends them through the real
  serving path (:mod:`costline.sim.demo_app`: router → semantic cache → stand-in model APIs),
  so what happened to each request is what the pipeline did, not what was planned.
* :func:`sample_traffic` yields *plans*: the same requests, routed by the real
  :class:`~costline.serving.routing.router.RulePolicy` (:func:`demo_rules`, as the demo's app routes), with
  outcomes decided up front (below): the tests replay them and compute the expected aggregates
  independently of the processor.

Each :class:`RequestPlan` says what one application request did: which tenant
asked what kind of question, whether the semantic cache answered, which model
calls were made (with token counts, errors and escalations) and whether the
application accepted the answer. Plans are plain data: :mod:`costline.sim.demo`
replays them through the real telemetry path (recorder → Kafka → processor →
lake) and the tests compute the expected aggregates from the same plans,
independently of the processor.

Two incidents can be injected, as the article warns:

* **stale cache** — a tenant's policy document changes on ``stale_day`` without
  invalidation (hits continue, serving stale answers) and is invalidated late,
  ``stale_hours`` hours later: that tenant's hit rate then falls far under its
  7-day average until the cache refills;
* **student shift** — from ``shift_day`` on, a new subtype reaches the student
  and more of its answers are rejected.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Mapping
import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

from costline import contract
from costline.serving.routing.router import RulePolicy
from costline.serving.settings import RouteRulesConfig

__all__ = [
    "CallPlan",
    "LookupPlan",
    "RequestPlan",
    "TrafficSpec",
    "sample_traffic",
    "demo_rules",
    "TIER_MODELS",
    "ServingRequest",
    "DocEvent",
    "FAQ_FAMILIES",
    "doc_hash",
    "doc_events",
    "serving_traffic",
    "faq_texts",
    "warmup_traffic",
    "ErrorBurst",
    "error_bursts",
    "product_questions",
    "question_of",
]

#: Model and provider per tier, as the default pricing table knows them.
TIER_MODELS: dict[str, tuple[str, str]] = {
    contract.TIER_BUDGET: ("anthropic", "claude-haiku-4-5-20251001"),
    contract.TIER_MID: ("anthropic", "claude-sonnet-4-6"),
    contract.TIER_UPPER: ("anthropic", "claude-opus-4-8"),
    contract.TIER_FRONTIER: ("anthropic", "claude-fable-5"),
    contract.TIER_STUDENT: ("vllm", "costline-student-lora"),
}
_NEXT_TIER = {
    contract.TIER_STUDENT: contract.TIER_MID,
    contract.TIER_BUDGET: contract.TIER_MID,
    contract.TIER_MID: contract.TIER_UPPER,
    contract.TIER_UPPER: contract.TIER_FRONTIER,
}


@dataclass(frozen=True, slots=True)
class CallPlan:
    tier: str
    provider: str
    model: str
    input_tokens: int  # includes cache_read + cache_creation (GenAI conventions)
    output_tokens: int
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    error_type: str | None = None
    duration_ms: int = 500


@dataclass(frozen=True, slots=True)
class LookupPlan:
    hit: bool
    similarity: float
    namespace: str


@dataclass(frozen=True, slots=True)
class RequestPlan:
    request_id: str
    start: datetime
    tenant: str
    task_type: str
    subtype: str
    routed_tier: str
    served_by: str
    success: bool
    lookup: LookupPlan | None
    calls: tuple[CallPlan, ...]
    query: str
    answer: str

    @property
    def lookup_end(self) -> datetime:
        """When the cache lookup span ends (it starts with the request)."""
        return self.start + timedelta(milliseconds=1)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(milliseconds=5 + sum(c.duration_ms for c in self.calls))


@dataclass(frozen=True)
class TrafficSpec:
    days: int = 8
    requests_per_day: int = 3000
    start: datetime = datetime(2026, 11, 1, tzinfo=UTC)
    seed: int = 7
    tenants: tuple[str, ...] = ("acme", "globex", "initech")
    #: Day (0-based) on which acme's policy document changes without invalidation; None: no incident.
    stale_day: int | None = 6
    #: The tenant whose document goes stale (its ``policy`` document in :func:`serving_traffic`).
    stale_tenant: str = "acme"
    stale_hours: int = 10
    #: Hours after the late invalidation until the cache has refilled.
    refill_hours: int = 12
    #: Day from which the student gets a shifted slice of traffic; None: no incident.
    shift_day: int | None = 7
    base_hit_rate: float = 0.45
    #: :func:`serving_traffic`: shares of FAQ questions from the tenant's few frequent families
    #: (asked many times a day, in paraphrases) and from its regular questions (``faq_regulars``
    #: of them, each asked about once a day, worded a few ways); the rest are one-off questions.
    faq_family_share: float = 0.1
    faq_regular_share: float = 0.8
    faq_regulars: int = 280
    mix: dict[str, float] = field(
        default_factory=lambda: {
            "faq": 0.50,
            "classification": 0.20,
            "extraction": 0.08,
            "coding": 0.10,
            "analysis": 0.07,
            "complex_reasoning": 0.05,
        }
    )


_SUBTYPES = {
    "faq": ("billing", "password", "shipping", "refunds"),
    "classification": ("sentiment", "intent", "urgency"),
    "extraction": ("invoice", "address"),
    "coding": ("python", "sql"),
    "analysis": ("churn", "pricing"),
    "complex_reasoning": ("contract", "strategy"),
}
def demo_rules(base: RouteRulesConfig | None = None) -> RouteRulesConfig:
    """The simulated app's routing rules for the real :class:`~costline.serving.routing.router.RulePolicy`:
    ``base`` (default: the shipped rules) with the student gated for classification and analysis
    sent to the upper tier. ``costline demo``'s app routes with them, and so do the plans of
    :func:`sample_traffic`."""
    base = base or RouteRulesConfig()
    return dataclasses.replace(base, student_task_types=("classification",),
                               upper_task_types=tuple(dict.fromkeys((*base.upper_task_types, "analysis"))))


def sample_traffic(spec: TrafficSpec | None = None) -> Iterator[RequestPlan]:
    """Yield the plans of ``spec.days`` simulated days, in time order, deterministically: the
    requests of :func:`serving_traffic` (same times, tenants, task types, subtypes and queries),
    routed by the real :class:`~costline.serving.routing.router.RulePolicy` under :func:`demo_rules`, with
    their outcomes decided up front (cache hits at ``spec.base_hit_rate``, the stale tenant's dip
    after its late invalidation, errors, escalations, the student's shift)."""
    spec = spec or TrafficSpec()
    rng = random.Random(spec.seed)
    policy = RulePolicy(demo_rules())
    for req in serving_traffic(spec):
        if not isinstance(req, ServingRequest):
            continue  # document events and error bursts: the plans decide their effects below
        start, tenant, task_type, subtype, query = req.at, req.tenant, req.task_type, req.subtype, req.query
        hour_of_run = int((start - spec.start).total_seconds() // 3600)
        routed = policy.route(query, task_type, subtype=subtype).tier
        request_id = req.request_id

        lookup = None
        if task_type == "faq":
            rate = spec.base_hit_rate
            if spec.stale_day is not None and tenant == spec.stale_tenant:
                invalidated_at = spec.stale_day * 24 + spec.stale_hours
                since = hour_of_run - invalidated_at
                if 0 <= since < spec.refill_hours:
                    # Emptied by the late invalidation, the cache refills over the next hours.
                    rate = spec.base_hit_rate * max(since - spec.refill_hours // 2, 0) / (spec.refill_hours / 2)
            hit = rng.random() < rate
            similarity = round(rng.uniform(0.93, 0.995) if hit else rng.uniform(0.55, 0.92), 4)
            lookup = LookupPlan(hit, similarity, tenant)
            if hit:
                yield RequestPlan(request_id, start, tenant, task_type, subtype, routed, contract.TIER_CACHE,
                                  rng.random() > 0.01, lookup, (), query, f"(cached) answer about {subtype}")
                continue

        calls: list[CallPlan] = []
        tier = routed
        success = False
        for attempt in range(3):
            provider, model = TIER_MODELS[tier]
            prompt = len(query) // 4 + rng.randrange(200, 900)
            cache_read = rng.randrange(0, prompt // 2) if provider == "anthropic" and rng.random() < 0.3 else 0
            cache_write = rng.randrange(0, 200) if provider == "anthropic" and rng.random() < 0.05 else 0
            output = rng.randrange(20, 80) if task_type == "classification" else rng.randrange(150, 700)
            error = "OverloadedError" if provider == "anthropic" and rng.random() < 0.01 else None
            calls.append(CallPlan(tier, provider, model, prompt + cache_read + cache_write,
                                  0 if error else output, cache_read, cache_write, error,
                                  duration_ms=rng.randrange(80, 400) if tier in ("budget", "student") else rng.randrange(600, 3000)))
            if error:
                continue  # retried on the same tier
            fail_rate = 0.06
            if tier == contract.TIER_STUDENT:
                fail_rate = 0.35 if subtype == "sarcasm" else 0.04
            if rng.random() < fail_rate and tier in _NEXT_TIER and attempt < 2:
                tier = _NEXT_TIER[tier]  # validator rejected the answer: escalate
                continue
            success = rng.random() > 0.02
            break
        served = calls[-1].tier if calls else routed
        yield RequestPlan(request_id, start, tenant, task_type, subtype, routed, served, success, lookup,
                          tuple(calls), query, f"answer about {subtype} from {served}")


# --- requests for the real serving path ---------------------------------------------------------
#
# The FAQ families: per tenant "bank", family -> (document kind, paraphrases). The first wording
# is the canonical one and the most asked. Under all-MiniLM-L6-v2 most paraphrases of a family
# are within the cache's 0.93 of each other (so they hit each other's stored answers), a few are
# not (they miss once, are stored, and hit from then on); no two families of a tenant come
# within 0.80 of each other. tests/test_demo_traffic.py checks both with the real model.
# Tenants beyond the third reuse the banks in turn.
_FAQ_BANKS: tuple[dict[str, tuple[str, tuple[str, ...]]], ...] = (
    {  # a web shop (acme)
        "refund-window": ("policy", (
            "How many days do I have to ask for a refund?", "How many days do I have to request a refund?",
            "how many days do i have to ask for a refund", "How long do I have to ask for a refund?",
            "How many days do I have to get a refund?", "Within how many days can I ask for a refund?")),
        "return-label": ("policy", (
            "How do I get a return shipping label?", "How can I get a return shipping label?",
            "how do i get a return shipping label", "Where do I get a return shipping label?",
            "How do I get a shipping label for a return?", "How do I obtain a return shipping label?")),
        "cancel-order": ("policy", (
            "Can I cancel my order after it has shipped?", "Can I cancel my order once it has shipped?",
            "can i cancel my order after it shipped", "Is it possible to cancel my order after it has shipped?",
            "Can I still cancel my order after it has shipped?", "Can an order be cancelled after it has shipped?")),
        "warranty": ("policy", (
            "What does the warranty cover?", "What does the warranty cover exactly?", "what does the warranty cover",
            "What is covered by the warranty?", "What does your warranty cover?", "Which repairs does the warranty cover?")),
        "exchange-size": ("policy", (
            "Can I exchange an item for a different size?", "Can I exchange an item for another size?",
            "can i exchange an item for a different size", "Is it possible to exchange an item for a different size?",
            "Can I swap an item for a different size?", "How do I exchange an item for a different size?")),
        "reset-password": ("help", (
            "How do I reset my password?", "How can I reset my password?", "how do i reset my password",
            "How do I reset my account password?", "I forgot my password, how do I reset it?",
            "What is the way to reset my password?")),
        "change-email": ("help", (
            "How do I change the email address on my account?", "How can I change the email address on my account?",
            "how do i change the email on my account", "How do I update the email address on my account?",
            "Can I change the email address on my account?", "How to change my account email address?")),
        "gift-card": ("help", (
            "Can I pay with a gift card?", "Can I pay using a gift card?", "can i pay with a gift card",
            "Do you accept gift cards as payment?", "Is it possible to pay with a gift card?",
            "Can I use a gift card to pay?")),
    },
    {  # a parcel carrier (globex)
        "delivery-time": ("policy", (
            "How long does standard delivery take?", "How long does standard shipping take?",
            "how long does standard delivery take", "How many days does standard delivery take?",
            "What is the standard delivery time?", "How long will standard delivery take?")),
        "where-is-parcel": ("policy", (
            "Where can I see where my parcel is?", "Where can I see where my package is?",
            "where can i see where my parcel is", "How can I see where my parcel is?",
            "Where do I see where my parcel is right now?", "Where can I check where my parcel is?")),
        "intl-shipping": ("policy", (
            "Do you ship to other countries?", "Do you ship internationally?", "do you ship to other countries",
            "Do you also ship to other countries?", "Can you ship to other countries?",
            "Do you offer shipping to other countries?")),
        "missing-parcel": ("policy", (
            "My parcel says delivered but I never got it, what now?",
            "My package says delivered but I never got it, what now?",
            "my parcel says delivered but i never got it",
            "The parcel shows delivered but I never received it, what now?",
            "My parcel is marked delivered but I never got it, what should I do?",
            "Parcel says delivered but I did not get it, what now?")),
        "pickup-point": ("policy", (
            "Can I have my parcel sent to a pickup point?", "Can I have my package sent to a pickup point?",
            "can i have my parcel sent to a pickup point", "Can my parcel be sent to a pickup point?",
            "Is it possible to send my parcel to a pickup point?", "Can I get my parcel delivered to a pickup point?")),
        "invoice-copy": ("billing", (
            "How do I download a copy of my invoice?", "How can I download a copy of my invoice?",
            "how do i download a copy of my invoice", "Where do I download a copy of my invoice?",
            "How do I get a copy of my invoice?", "How do I download my invoice?")),
        "payment-methods": ("billing", (
            "Which payment methods do you accept?", "What payment methods do you accept?",
            "which payment methods do you accept", "Which payment methods can I use?",
            "What forms of payment do you accept?", "Which payment methods do you accept here?")),
        "vat-number": ("billing", (
            "How do I add my VAT number to invoices?", "How can I add my VAT number to invoices?",
            "how do i add my vat number to invoices", "How do I add a VAT number to my invoices?",
            "Where do I add my VAT number for invoices?", "How do I put my VAT number on invoices?")),
    },
    {  # a SaaS vendor (initech)
        "add-user": ("policy", (
            "How do I add a new user to our workspace?", "How can I add a new user to our workspace?",
            "how do i add a new user to our workspace", "How do I add a new member to our workspace?",
            "How do I invite a new user to our workspace?", "How do we add a new user to the workspace?")),
        "sso": ("policy", (
            "Do you support single sign-on?", "Do you support single sign on?", "do you support single sign-on",
            "Is single sign-on supported?", "Does your product support single sign-on?", "Can we use single sign-on?")),
        "export-data": ("policy", (
            "How do I export all our data?", "How can I export all our data?", "how do i export all our data",
            "How do I export all of our data?", "How do we export all our data?",
            "What is the way to export all our data?")),
        "api-limits": ("policy", (
            "What are the API rate limits?", "What are your API rate limits?", "what are the api rate limits",
            "What rate limits does the API have?", "Which API rate limits apply?", "How strict are the API rate limits?")),
        "plan-upgrade": ("pricing", (
            "How do I upgrade to the business plan?", "How can I upgrade to the business plan?",
            "how do i upgrade to the business plan", "How do we upgrade to the business plan?",
            "How do I move up to the business plan?", "How do I switch to the business plan?")),
        "seat-price": ("pricing", (
            "How much does one extra seat cost?", "How much does an extra seat cost?",
            "how much does one extra seat cost", "What does one extra seat cost?", "How much is one extra seat?",
            "What is the price of one extra seat?")),
        "annual-discount": ("pricing", (
            "Is there a discount for paying yearly?", "Is there a discount for paying annually?",
            "is there a discount for paying yearly", "Do you give a discount for paying yearly?",
            "Is there a discount if we pay yearly?", "Do you offer a discount for yearly payment?")),
        "trial": ("pricing", (
            "How long is the free trial?", "How long does the free trial last?", "how long is the free trial",
            "What is the length of the free trial?", "How many days is the free trial?", "How long is your free trial?")),
    },
)
#: How often each wording of a family is asked (the canonical one most).
_PARAPHRASE_WEIGHTS = (0.32, 0.18, 0.14, 0.12, 0.12, 0.12)

#: Product questions: subject x problem x ask (2,304 of them). The first ``faq_regulars`` (after a
#: seeded shuffle) are every tenant's regular questions, the rest are asked once each. Under
#: MiniLM about 1 in 100 comes within 0.93 of another one (a same-topic false hit).
_PRODUCT_SUBJECTS = (
    "my blue winter jacket", "the kitchen scale", "the pair of running shoes", "the standing desk",
    "my espresso machine", "the phone case", "our new office chairs", "the garden hose", "the bike helmet",
    "the baby stroller", "my laptop bag", "the wireless earbuds", "the set of bed sheets", "the camping tent",
    "the electric kettle", "my yoga mat", "the smart thermostat", "the box of printer paper", "the ceiling lamp",
    "the school backpack", "the coffee grinder", "the rain boots", "the desk fan", "the toaster",
)
_PRODUCT_PROBLEMS = (
    "arrived with a scratch on the side", "is missing one of its parts", "stopped working after two weeks",
    "came in the wrong colour", "is smaller than the photos suggested", "was charged to my card twice",
    "has not shipped after ten days", "was delivered to my neighbour", "smells strongly of plastic",
    "makes a loud noise when used", "came without a manual", "got soaked in the rain on my doorstep",
)
_PRODUCT_ASKS = (
    "can I get a replacement?", "what are my options?", "who should I contact?", "is that covered?",
    "can you fix this today?", "should I send it back?", "do I get my money back?", "what happens next?",
)
#: How customers word a regular question (all within the cache's threshold of each other).
_REGULAR_WORDINGS: tuple[tuple[str, float], ...] = (
    ("{q}", 0.55), ("{lower}", 0.15), ("Hi, {q}", 0.15), ("{q} Thanks.", 0.15),
)

# Other task types: templates and fillers. Classification texts avoid the stand-in's harder
# keywords, so the student answers them adequately -- except the sarcasm slice of the shift.
_REVIEWS = (
    "The blender arrived early and works perfectly", "Terrible fit, the seams came apart after one wash",
    "It does what it says, nothing more", "Lovely colour and the fabric feels soft", "The lid broke on day two",
    "Delivery was on time and the box was intact", "Not worth the money at all", "Okay quality for the price",
    "My kids love it and use it every day", "The battery dies within an hour", "Works as described",
    "Customer service sorted my issue in minutes", "The straps feel cheap and thin", "Best purchase this year",
    "Arrived in a crushed box but the item was fine", "The smell of the rubber never went away",
)
_SARCASTIC = (
    "Oh wonderful, the parcel arrived soaked, just what I always wanted",
    "Great, another update that logs me out every five minutes, thanks so much",
    "Love how the zipper broke the first time I used it, truly premium quality",
    "Fantastic, a two week delivery estimate turned into two months",
    "Sure, charging me twice is a lovely way to say thank you",
    "Brilliant, the waterproof jacket let the rain straight through",
    "Amazing support, they closed my ticket without reading it",
    "Perfect, the kettle now whistles even when it is switched off",
    "What a treat, half the pieces were missing from the box",
    "So glad I paid extra for express shipping that took nine days",
    "Nothing says quality like a chair that wobbles out of the box",
    "Wow, the new app layout hides every button I need, well done",
)
_MESSAGES = (
    "I was billed twice this month for the same plan", "Please send my order to my office address instead",
    "I cannot log in since this morning", "When will my parcel arrive", "I want to close my account",
    "Can I change the size on the order I placed today", "My card was declined but the money left my bank",
    "Our whole team is locked out and we have a client demo in an hour", "Just wondering about your opening times",
    "The checkout page shows an error when I pay", "Please remove my old address from my profile",
)
_CLASSIFY = {
    "sentiment": ("Classify the sentiment of this review as positive, negative or neutral: \"{x}\"", _REVIEWS),
    "intent": ("Classify the intent of this message as billing, shipping, account or other: \"{x}\"", _MESSAGES),
    "urgency": ("Classify the urgency of this ticket as low, medium or high: \"{x}\"", _MESSAGES),
    "sarcasm": ("Classify the sentiment of this review as positive, negative or neutral; mind the sarcasm: \"{x}\"",
                _SARCASTIC),
}
_EXTRACT = {
    "invoice": ("Extract the invoice number, date and total as JSON from: \"Invoice {n} dated {d}, total "
                "EUR {a}, payable within 30 days\""),
    "address": ("Extract name, street, city and postcode as JSON from: \"Please ship to {name}, {n} Mill Lane, "
                "{city} {pc}\""),
}
_NAMES = ("Ana Ruiz", "Tom Berg", "Mia Chen", "Lars Holm", "Zoe Adams", "Ravi Patel", "Eva Novak", "Sam Ortiz")
_CITIES = ("Leeds", "Bristol", "Utrecht", "Lyon", "Graz", "Porto", "Aarhus", "Gdansk")
_CODING = {
    "python": ("Write a Python function that {x}.",
               ("removes duplicate emails from a list, keeping the first of each",
                "merges two sorted lists of dates", "parses durations like 1h30m into seconds",
                "groups orders by customer and sums their totals", "retries a flaky call with backoff")),
    "sql": ("Write a SQL query that {x}.",
            ("finds customers with no order in the last 90 days", "ranks products by revenue per region",
             "returns the second most recent order of every customer", "counts sign-ups per week",
             "lists tickets still open after 48 hours")),
}
_CODING_CONTEXT = (" Our codebase targets Python 3.11 and PostgreSQL 16, uses type hints everywhere, and the code "
                   "must handle empty input, NULL values and tables with a few million rows; add unit tests and "
                   "explain the edge cases you covered.")
_ANALYSIS = {
    "churn": ("Analyse last quarter's churn for our {seg} customers across regions: monthly churn went from "
              "{a}% to {b}% while support tickets per account rose {c}%. Tell me what changed, which segments "
              "drove it, and what we should watch next quarter."),
    "pricing": ("Analyse how the price change of our {seg} plan affected upgrades last quarter: conversion moved "
                "from {a}% to {b}% and average seats per account changed by {c}%. Compare regions and tell me "
                "whether the trend will hold."),
    "design": ("Design a novel multi-step plan to win back the {seg} customers who left us last quarter: churn "
               "went from {a}% to {b}% and {c}% of them cited slow support. Be creative, say what each step costs "
               "and how we would measure whether it worked."),
}
_SEGMENTS = ("small business", "enterprise", "education", "nonprofit", "startup", "agency")
_REASONING = {
    "contract": ("Reason step by step about the risks in these renewal terms before we sign: a {n}-year term, "
                 "automatic renewal, a {a}% yearly price rise cap and a {b}-day notice period for termination. "
                 "What should legal push back on?"),
    "strategy": ("Reason step by step about the trade-off between opening a warehouse in {city} and keeping one "
                 "hub: shipping costs would fall {a}% but fixed costs rise by {b}k a month. Which strategy wins "
                 "over three years, and what would change the answer?"),
}


def _bank(spec: "TrafficSpec", tenant: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    return _FAQ_BANKS[spec.tenants.index(tenant) % len(_FAQ_BANKS)]


#: ``FAQ_FAMILIES[tenant][family] = (doc_id, paraphrases)`` for the default tenants.
FAQ_FAMILIES: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    tenant: {fam: (f"{tenant}-{kind}", texts) for fam, (kind, texts) in _FAQ_BANKS[i].items()}
    for i, tenant in enumerate(("acme", "globex", "initech"))
}


def doc_hash(doc_id: str, version: int) -> str:
    """The hash the app tags answers with: one per version of a document."""
    return hashlib.blake2b(f"{doc_id}@v{version}".encode(), digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class ServingRequest:
    """One application request, as the app would send it to ``Pipeline.answer``."""

    request_id: str
    at: datetime
    tenant: str
    task_type: str
    subtype: str
    query: str
    #: The FAQ family (paraphrases share it); None for a one-off question or another task type.
    family: str | None = None
    #: The document the answer is grounded in, and the version the app holds when it asks.
    doc_id: str | None = None
    doc_version: int = 0

    @property
    def doc_hashes(self) -> tuple[str, ...]:
        return (doc_hash(self.doc_id, self.doc_version),) if self.doc_id else ()

    @property
    def cacheable(self) -> bool:
        """The app puts FAQ answers (informational, grounded in a document) in the semantic cache."""
        return self.task_type == "faq"


@dataclass(frozen=True, slots=True)
class DocEvent:
    """A document changes (``update``: ``version`` is the new one) or the app drops cached answers
    built from it (``invalidate``: ``version`` is the one whose answers go)."""

    at: datetime
    tenant: str
    doc_id: str
    kind: str  # "update" | "invalidate"
    version: int

    @property
    def doc_hash(self) -> str:
        return doc_hash(self.doc_id, self.version)


@dataclass(frozen=True, slots=True)
class ErrorBurst:
    """The model API fails its next ``count`` requests with ``status`` (529: overloaded)."""

    at: datetime
    status: int = 529
    count: int = 12


def error_bursts(spec: TrafficSpec) -> list[ErrorBurst]:
    """One burst of overload errors a day, at 15:00: long enough that a few requests exhaust the
    SDK's retries on every tier they try, and fail."""
    return [ErrorBurst(spec.start + timedelta(days=d, hours=15)) for d in range(spec.days)]


def doc_events(spec: TrafficSpec) -> list[DocEvent]:
    """The document changes of ``spec``, in time order.

    * the **stale-document incident**: on ``stale_day`` at 00:00 the stale tenant's policy
      document gets version 2, but the app invalidates nothing — cached answers built from
      version 1 keep being served — until ``stale_hours`` later, when it drops them all at once;
    * the way it should be done, for contrast: on day 1 at 12:00 the second tenant's second
      document changes and its old answers are invalidated at once (a small dip, no alert).
    """
    out: list[DocEvent] = []
    if spec.stale_day is not None and spec.stale_tenant in spec.tenants and 0 <= spec.stale_day < spec.days:
        changed = spec.start + timedelta(days=spec.stale_day)
        doc = f"{spec.stale_tenant}-policy"
        out.append(DocEvent(changed, spec.stale_tenant, doc, "update", 2))
        out.append(DocEvent(changed + timedelta(hours=spec.stale_hours), spec.stale_tenant, doc, "invalidate", 1))
    others = [t for t in spec.tenants if t != spec.stale_tenant]
    if spec.days >= 2 and others:
        tenant = others[0]
        kind = next(k for k, _ in _bank(spec, tenant).values() if k != "policy")
        at = spec.start + timedelta(days=1, hours=12)
        out.append(DocEvent(at, tenant, f"{tenant}-{kind}", "update", 2))
        out.append(DocEvent(at, tenant, f"{tenant}-{kind}", "invalidate", 1))
    return sorted(out, key=lambda e: (e.at, e.kind != "update"))


def product_questions(seed: int) -> list[str]:
    """The product questions, shuffled by ``seed``: regulars first, then the one-offs in the order
    each tenant asks them."""
    texts = [f"{s[0].upper()}{s[1:]} {p}, {a}" for s in _PRODUCT_SUBJECTS for p in _PRODUCT_PROBLEMS
             for a in _PRODUCT_ASKS]
    random.Random(f"questions-{seed}").shuffle(texts)
    return texts


#: Every FAQ-family paraphrase -> its family (the family names are unique across the banks).
_FAMILY_OF: Mapping[str, str] = MappingProxyType(
    {text: fam for bank in _FAQ_BANKS for fam, (_kind, texts) in bank.items() for text in texts})


def question_of(text: str) -> str:
    """Which question of the demo's traffic ``text`` asks: ``family:NAME`` for an FAQ family's paraphrase, else
    the product question under its wording (``Hi, …``, ``… Thanks.``, lower case, no question mark), so that two
    texts ask the same question exactly when this is equal. The demo counts a cache hit whose stored question
    is another one as a wrong answer (DemoStats.other_question_hits): the traffic's own labels, not the cache's."""
    family = _FAMILY_OF.get(text)
    if family is not None:
        return f"family:{family}"
    core = text.removeprefix("Hi, ").removesuffix(" Thanks.")
    return core.lower().rstrip("?")


def _worded(rng: random.Random, question: str) -> str:
    template = rng.choices([t for t, _ in _REGULAR_WORDINGS], [w for _, w in _REGULAR_WORDINGS])[0]
    return template.format(q=question, lower=question.lower().rstrip("?"))


def faq_texts(spec: TrafficSpec | None = None) -> list[str]:
    """The distinct FAQ query texts ``serving_traffic(spec)`` sends, in first-use order (to embed
    them in one batch ahead of the traffic)."""
    seen = (r.query for r in serving_traffic(spec) if isinstance(r, ServingRequest) and r.cacheable)
    return list(dict.fromkeys(seen))


def _fill(rng: random.Random, task_type: str, subtype: str) -> str:
    if task_type == "classification":
        template, pool = _CLASSIFY[subtype]
        return template.format(x=rng.choice(pool))
    if task_type == "extraction":
        return _EXTRACT[subtype].format(
            n=rng.randrange(1000, 99999), d=f"2026-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}",
            a=f"{rng.randrange(20, 9000)}.{rng.randrange(100):02d}", name=rng.choice(_NAMES),
            city=rng.choice(_CITIES), pc=rng.randrange(1000, 9999))
    if task_type == "coding":
        template, pool = _CODING[subtype]
        query = template.format(x=rng.choice(pool))
        return query + _CODING_CONTEXT if rng.random() < 0.5 else query  # long ones are routed to mid
    if task_type == "analysis":
        return _ANALYSIS[subtype].format(seg=rng.choice(_SEGMENTS), a=rng.randrange(2, 9),
                                         b=rng.randrange(3, 14), c=rng.randrange(5, 60))
    return _REASONING[subtype].format(n=rng.randrange(2, 6), a=rng.randrange(3, 12), b=rng.randrange(30, 120),
                                      city=rng.choice(_CITIES))


def serving_traffic(spec: TrafficSpec | None = None) -> Iterator[ServingRequest | DocEvent | ErrorBurst]:
    """Yield the requests of ``spec.days`` simulated days and the :func:`doc_events` and
    :func:`error_bursts` between them, in time order, deterministically (same spec, same stream).

    Per request: a tenant, a task type from ``spec.mix``, and a query. An FAQ question is from
    the tenant's frequent families (``spec.faq_family_share``: a family by popularity, then one
    of its paraphrases), one of its regular questions (``spec.faq_regular_share``: uniformly, in
    one of a few wordings) or a one-off; each is grounded in one of the tenant's documents (the
    product questions in its policy), at the version the app holds then. From ``shift_day`` half of the classification traffic
    is the ``sarcasm`` slice the student was never trained on.
    """
    spec = spec or TrafficSpec()
    rng = random.Random(f"serving-{spec.seed}")
    kinds = list(spec.mix)
    weights = [spec.mix[k] for k in kinds]
    questions = product_questions(spec.seed)
    regulars, one_offs = questions[: spec.faq_regulars], questions[spec.faq_regulars:]
    next_one_off = dict.fromkeys(spec.tenants, 0)
    families = {t: list(_bank(spec, t).items()) for t in spec.tenants}
    popularity = [1.0 / (r + 1) ** 0.8 for r in range(max(len(f) for f in families.values()))]
    versions: dict[str, int] = {}
    events: list[DocEvent | ErrorBurst] = sorted([*doc_events(spec), *error_bursts(spec)], key=lambda e: e.at)
    total = spec.days * spec.requests_per_day
    step = timedelta(days=spec.days) / total
    jitter_ms = max(int(step.total_seconds() * 500), 1)
    for i in range(total):
        # Evenly spread with jitter, so every hourly window has lookups; times never go backwards.
        at = spec.start + step * i + timedelta(milliseconds=rng.randrange(0, jitter_ms))
        while events and events[0].at <= at:
            event = events.pop(0)
            if isinstance(event, DocEvent) and event.kind == "update":
                versions[event.doc_id] = event.version
            yield event
        day = (at - spec.start).days
        tenant = spec.tenants[rng.randrange(len(spec.tenants))]
        task_type = rng.choices(kinds, weights)[0]
        request_id = hashlib.blake2b(f"serving-{spec.seed}-{i}".encode(), digest_size=8).hexdigest()
        if task_type == "faq":
            fams = families[tenant]
            u = rng.random()
            if u < spec.faq_family_share:
                family, (kind, paraphrases) = rng.choices(fams, popularity[: len(fams)])[0]
                query = rng.choices(paraphrases, _PARAPHRASE_WEIGHTS[: len(paraphrases)])[0]
            elif u < spec.faq_family_share + spec.faq_regular_share and regulars:
                family, kind, subtype = None, "policy", "product"
                query = _worded(rng, rng.choice(regulars))
            else:
                family, kind, subtype = None, "policy", "one-off"
                query = one_offs[next_one_off[tenant] % len(one_offs)]
                next_one_off[tenant] += 1
            doc = f"{tenant}-{kind}"
            yield ServingRequest(request_id, at, tenant, "faq", family or subtype, query, family, doc,
                                 versions.get(doc, 1))
            continue
        subtypes = _SUBTYPES[task_type] if task_type != "analysis" else ("churn", "pricing", "design")
        subtype = rng.choice(subtypes)
        if task_type == "classification" and spec.shift_day is not None and day >= spec.shift_day:
            if rng.random() < 0.5:
                subtype = "sarcasm"  # a slice the student was never trained on
        yield ServingRequest(request_id, at, tenant, task_type, subtype, _fill(rng, task_type, subtype))
    yield from events


def warmup_traffic(spec: TrafficSpec | None = None, *, ttl_s: float = 86_400.0) -> list[ServingRequest]:
    """FAQ questions from the ``ttl_s`` before ``spec.start``, drawn so that answering them leaves the
    cache as weeks of the same traffic would: each of a tenant's family wordings and regular
    questions, asked ``r`` times a day, was last stored ``a`` seconds ago with ``a`` uniform in
    ``[0, ttl_s)`` if its entry is alive, which it is with probability ``r·T / (1 + r·T)`` (a
    renewal process: stored at a miss, alive for T, then dead until the next ask). Without it the
    first recorded days would show a cold cache warming up, and its echo one TTL later.
    """
    spec = spec or TrafficSpec()
    rng = random.Random(f"warmup-{spec.seed}")
    ttl_days = ttl_s / 86_400.0
    per_tenant = spec.requests_per_day * spec.mix.get("faq", 0.0) / max(sum(spec.mix.values()), 1e-9) / len(spec.tenants)
    regulars = product_questions(spec.seed)[: spec.faq_regulars]
    out: list[tuple[datetime, str, str, str | None, str]] = []
    for tenant in spec.tenants:
        fams = list(_bank(spec, tenant).items())
        pop = [1.0 / (r + 1) ** 0.8 for r in range(len(fams))]
        asked: list[tuple[str, str | None, str, float]] = []  # (query, family, kind, asks a day)
        for (family, (kind, paraphrases)), weight in zip(fams, pop):
            f_rate = per_tenant * spec.faq_family_share * weight / sum(pop)
            w = _PARAPHRASE_WEIGHTS[: len(paraphrases)]
            asked += [(p, family, kind, f_rate * wp / sum(w)) for p, wp in zip(paraphrases, w)]
        r_rate = per_tenant * spec.faq_regular_share / max(len(regulars), 1)
        asked += [(_worded(rng, q), None, "policy", r_rate) for q in regulars]
        for query, family, kind, rate in asked:
            alive = rate * ttl_days / (1.0 + rate * ttl_days) if ttl_days > 0 else 1.0
            if rng.random() < alive:
                age = timedelta(seconds=rng.uniform(1.0, ttl_s if ttl_s > 0 else 86_400.0))
                out.append((spec.start - age, tenant, query, family, f"{tenant}-{kind}"))
    out.sort(key=lambda x: x[0])
    return [ServingRequest(hashlib.blake2b(f"warmup-{spec.seed}-{i}".encode(), digest_size=8).hexdigest(), at,
                           tenant, "faq", family or "product", query, family, doc, 1)
            for i, (at, tenant, query, family, doc) in enumerate(out)]
