"""The synthetic world behind the local stand-ins: tokens, query difficulty, answers.

Everything here is a pure function of its arguments, so answers are deterministic
from ``(model, query)`` and tests can compute what the stand-in will say.

* **Tokens** — :func:`tokenize` splits text into regex pieces: runs of word characters
  (``\\w+``) and single non-space punctuation characters. Counts are exact for the text
  returned, though not the count a real Claude tokenizer would give.
* **Difficulty** — each query gets a difficulty in [0, 1] from the words it contains
  (classify < how-do-I < extract < explain/code < analyse < reason step by step < design)
  plus a little deterministic noise hashed from the query.
* **Capability** — each tier has one (:data:`CAPABILITY`); a tier answers a query
  adequately when its capability is at least the query's difficulty. The student is as
  good as the budget tier, and useless on a *degraded* slice (queries containing a
  ``degrade_keywords`` word) where it is still confident: it fails silently.
* **Answers** — an adequate answer carries the query's reference tag ``[ref:xxxxxxxx]``,
  an inadequate one a wrong tag; every answer ends with ``(confidence: 0.87)``.
  :func:`reference_validator` is the application validator of this world;
  :func:`costline.serving.confidence.parse_confidence` (product code) reads the marker.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from costline import contract

__all__ = [
    "tokenize",
    "count_tokens",
    "difficulty",
    "CAPABILITY",
    "adequate",
    "cheapest_adequate_tier",
    "SyntheticAnswer",
    "synthesize",
    "reference_tag",
    "reference_validator",
]

_TOKEN = re.compile(r"\w+|[^\w\s]")
_REF = re.compile(r"\[ref:([0-9a-f]{8})\]")

#: How hard a query is, by the words in it (the highest match wins).
_DIFFICULTY_WORDS: tuple[tuple[float, tuple[str, ...]], ...] = (
    (0.12, ("classify", "sentiment", "intent", "label", "urgency", "categorize", "yes or no")),
    (0.20, ("how do i", "where can i", "reset", "password", "what is", "opening hours", "track")),
    (0.30, ("extract", "fields", "json", "translate", "summarize", "summarise")),
    (0.45, ("explain", "why does", "difference between")),
    (0.50, ("function", "code", "sql", "python", "bug", "refactor", "regex", "unit test")),
    (0.66, ("analyse", "analyze", "compare", "trend", "quarter", "forecast", "root cause")),
    (0.80, ("step by step", "risk", "prove", "trade-off", "tradeoff", "contract", "legal", "strategy")),
    (0.93, ("design a", "novel", "multi-step", "agent", "creative", "synthesis", "synthesise", "invent")),
)
_DEFAULT_DIFFICULTY = 0.40

#: What each tier can answer: adequate when capability >= difficulty.
CAPABILITY: dict[str, float] = {
    contract.TIER_STUDENT: 0.36,
    contract.TIER_BUDGET: 0.36,
    contract.TIER_MID: 0.60,
    contract.TIER_UPPER: 0.84,
    contract.TIER_FRONTIER: 1.00,
}

_VOCAB = (
    "the account settings page lets you update it directly and the change applies at once "
    "first open billing then choose the option shown below; if that fails contact support "
    "this depends on the region the data and the plan so check each case with care "
    "in short the result follows from the terms above and the numbers confirm it"
).split()


def tokenize(text: str) -> list[str]:
    """Regex pieces: word-character runs and single punctuation characters."""
    return _TOKEN.findall(text)


def count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def _unit(*parts: str) -> float:
    """A deterministic number in [0, 1) from strings."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def difficulty(query: str) -> float:
    """How hard ``query`` is, in [0, 1]: keyword level + length + hashed noise (±0.07)."""
    low = query.lower()
    level = max((score for score, words in _DIFFICULTY_WORDS if any(w in low for w in words)),
                default=_DEFAULT_DIFFICULTY)
    length = min(count_tokens(query) / 400.0, 1.0) * 0.05
    noise = (_unit("difficulty", query) - 0.5) * 0.14
    return min(max(level + length + noise, 0.0), 1.0)


def adequate(tier: str, query: str, *, degraded: bool = False) -> bool:
    """Whether ``tier`` answers ``query`` well enough (the student never does on a degraded slice)."""
    if degraded and tier == contract.TIER_STUDENT:
        return False
    return CAPABILITY.get(tier, 0.0) >= difficulty(query)


def cheapest_adequate_tier(query: str, tiers: Iterable[str] = contract.API_TIERS) -> str:
    """The label the learned router is trained on: the cheapest API tier that answers adequately."""
    tiers = tuple(tiers)
    return next((t for t in tiers if adequate(t, query)), tiers[-1])


def reference_tag(query: str) -> str:
    """The tag an adequate answer to ``query`` carries."""
    return hashlib.blake2b(("ref\x1f" + query.strip()).encode(), digest_size=4).hexdigest()


@dataclass(frozen=True, slots=True)
class SyntheticAnswer:
    text: str
    adequate: bool
    confidence: float


def synthesize(model: str, tier: str, query: str, *, degraded: bool = False) -> SyntheticAnswer:
    """The stand-in's answer of ``model`` (serving ``tier``) to ``query``: deterministic."""
    ok = adequate(tier, query, degraded=degraded)
    u = _unit("answer", model, query)
    n_words = 12 + int(u * 40) + (30 if tier in (contract.TIER_UPPER, contract.TIER_FRONTIER) else 0)
    start = int(_unit("start", model, query) * len(_VOCAB))
    words = [_VOCAB[(start + i * 7) % len(_VOCAB)] for i in range(n_words)]
    body = " ".join(words).capitalize() + "."
    ref = reference_tag(query)
    if ok:
        confidence = 0.62 + 0.36 * _unit("confidence", model, query)
    else:
        ref = hashlib.blake2b(("wrong\x1f" + model + query).encode(), digest_size=4).hexdigest()
        if ref == reference_tag(query):  # pragma: no cover - 1 in 4 billion
            ref = "00000000"
        c = _unit("confidence", model, query)
        # Most wrong answers sound unsure; a quarter are confidently wrong, and a degraded
        # student is always confident: it fails silently.
        confidence = 0.7 + 0.25 * c if degraded or c > 0.75 else 0.15 + 0.4 * c
    return SyntheticAnswer(f"{body} [ref:{ref}] (confidence: {confidence:.2f})", ok, round(confidence, 2))


def reference_validator(query: str, answer: str) -> bool:
    """The application validator of the synthetic world: the answer carries the query's reference tag."""
    found = _REF.search(answer or "")
    return found is not None and found.group(1) == reference_tag(query)
