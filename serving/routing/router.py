"""Routing: pick the cheapest tier that should pass the quality bar.

A policy is anything with ``route(query, task_type) -> Decision``; it may take an optional
``embedding=`` (the query's MiniLM vector when the semantic cache already computed it, so a
request is never embedded twice). Two ship:

* ``"rules"`` — :class:`RulePolicy`, the article's heuristic (``[serving.router.rules]``):
  task types (or task type + subtype pairs) the student is gated for → student; classification or a query under 200
  characters → budget; coding or the word "explain" → mid; complex reasoning → upper; else frontier. Lengths and
  words are those of the query's visible text (:func:`~costline.textutil.visible_text`: invisible and control
  characters, repeated whitespace and combining marks that are no part of a letter do not count; a Hindi vowel sign
  does), of its first and last :data:`ROUTE_TEXT_CHARS` characters at most;
* ``"learned"`` — :class:`~costline.serving.routing.learned.LearnedPolicy`, a classifier
  fitted by ``costline route train`` (loaded lazily: it needs the ``serving`` extra only
  when its featurizer does).

:data:`POLICIES` maps ``[serving.router] policy`` to a factory; add an entry to plug in
another policy.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from costline import contract
from costline.textutil import combining_marks, visible_text
from costline.serving.errors import RoutingError
from costline.serving.settings import RouteRulesConfig, ServingConfig

if TYPE_CHECKING:
    from costline.serving.registry import ModelRegistry

__all__ = ["Decision", "RoutingPolicy", "RulePolicy", "StudentGate", "Router", "POLICIES", "build_policy",
           "NO_SUBTYPE", "ROUTE_TEXT_CHARS", "WIDE_CHAR_WEIGHT", "routing_text", "request_chars", "student_gate_reason",
           "text_length", "unspaced_letter"]

#: The subtype of a request that has none, in gating lists (as the drift job and distillation name it).
NO_SUBTYPE = "(none)"

log = logging.getLogger(__name__)

#: Characters of a query's head and of its tail the routing policies read at most (as the embedder's
#: ``MAX_TEXT_CHARS``): a request body's megabytes cost the router no more than this.
ROUTE_TEXT_CHARS = 32_768


def routing_text(query: str) -> str:
    """What the policies measure and search: the visible text (:func:`~costline.textutil.visible_text`) of the
    query's first and last :data:`ROUTE_TEXT_CHARS` characters. Padding a short question with spaces, newlines,
    zero-width or control characters or combining marks does not make it long (a script's vowel signs count, four
    after a letter at most)."""
    return visible_text(query, max_chars=ROUTE_TEXT_CHARS)


#: How many characters of English one letter of a script written without spaces stands for in the length rule: the
#: same question is ~2.2-2.4 times shorter in Japanese (kana and kanji mixed) and ~3.4-3.7 times in Chinese than in
#: English (parallel questions: a billing dispute 260 / 120 / 70 characters, a legal one 358 / 160 / 120), so counted
#: one for one every such question was "short" and went to the budget tier whatever it asked. A Han character (Chinese,
#: kanji) counts 3.5, a kana 1.5, a Hangul syllable 2 (Korean writes spaces; a syllable is two or three letters).
#: Other scripts count a code point each: Hindi, its vowel signs counted, is about as long as English (a question of
#: 207 characters is 220 in Hindi), so Devanagari needs no weight.
WIDE_CHAR_WEIGHT = {"han": 3.5, "kana": 1.5, "hangul": 2.0}


def _script_weight(ch: str) -> float:
    if ("\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf" or "\uf900" <= ch <= "\ufaff"
            or "\U00020000" <= ch <= "\U0003ffff"):
        return WIDE_CHAR_WEIGHT["han"]
    if "\u3040" <= ch <= "\u30ff" or "\u31f0" <= ch <= "\u31ff" or "\uff66" <= ch <= "\uff9f":
        return WIDE_CHAR_WEIGHT["kana"] if ch.isalpha() else 1.0
    if "\uac00" <= ch <= "\ud7af" or "\u1100" <= ch <= "\u11ff":
        return WIDE_CHAR_WEIGHT["hangul"]
    return 1.0


def text_length(text: str) -> int:
    """The length of ``text`` as the length rule reads it, in characters of English: a character each, but a letter
    of Chinese, Japanese or Korean what it stands for (:data:`WIDE_CHAR_WEIGHT`). Symbols count one (an emoji too):
    padding does not make a question long."""
    if text.isascii():
        return len(text)
    return round(sum(_script_weight(ch) for ch in text))


#: Blocks whose text the model reads as part of a turn: text, a plain-text document, a search result, a tool's result.
_TEXT_SOURCES = ("text", "document", "search_result", "tool_result")


def _block_texts(content: Any) -> Iterator[str]:
    """The texts of a turn's ``content`` (a string or Messages API blocks) the model reads: text blocks, plain-text
    documents (``source.type`` "text"; a PDF or an image has no text to count), search results and tool results
    (their own content, the same way). Anything else, or malformed, counts nothing."""
    if isinstance(content, str):
        yield content
        return
    if not isinstance(content, list):
        return
    for block in content:
        if not isinstance(block, Mapping):
            continue
        kind = block.get("type", "text")
        if kind not in _TEXT_SOURCES:
            continue
        if kind == "text" and isinstance(block.get("text"), str):
            yield block["text"]
        elif kind == "document":
            source = block.get("source")
            if isinstance(source, Mapping) and source.get("type") == "text" and isinstance(source.get("data"), str):
                yield source["data"]
            elif isinstance(source, Mapping) and source.get("type") == "content":
                yield from _block_texts(source.get("content"))
        elif kind in ("search_result", "tool_result"):
            yield from _block_texts(block.get("content"))


def request_chars(messages: Iterable[Any], *, cap: int = ROUTE_TEXT_CHARS) -> int | None:
    """The visible characters (as :func:`routing_text` counts them) of every turn of a request — earlier user and
    assistant turns, tool results, plain-text documents — up to ``cap``; None for a request of one user turn that is
    a plain string (its question is all of it: nothing to add). The system prompt is not counted: it is the app's,
    the same on every request, not the task's size."""
    turns = [m for m in messages if isinstance(m, Mapping)] if not isinstance(messages, (str, bytes)) else []
    if len(turns) == 1 and isinstance(turns[0].get("content"), str):
        return None
    total = 0
    for turn in turns:
        for text in _block_texts(turn.get("content")):
            total += text_length(visible_text(text, max_chars=cap))
            if total >= cap:
                return cap
    return total


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a request goes first, how sure the policy is, and why."""

    tier: str
    confidence: float = 1.0
    reason: str = ""


@runtime_checkable
class RoutingPolicy(Protocol):
    def route(self, query: str, task_type: str | None) -> Decision: ...


def _route(policy: RoutingPolicy, query: str, task_type: str | None, embedding: Any,
           subtype: str | None = None, request_chars: int | None = None) -> Decision:
    """``policy.route`` with the embedding, the subtype and the request's size when there are (policies without
    those keywords still work)."""
    kwargs = {k: v for k, v in (("embedding", embedding), ("subtype", subtype), ("request_chars", request_chars))
              if v is not None}
    while True:
        try:
            return policy.route(query, task_type, **kwargs)  # type: ignore[call-arg]
        except TypeError as exc:
            dropped = next((k for k in kwargs if k in str(exc)), None)
            if dropped is None:
                raise
            del kwargs[dropped]


def student_gate_reason(task_types: Collection[str], subtypes: Mapping[str, Collection[str]],
                        task_type: str | None, subtype: str | None) -> str | None:
    """Why a request goes to the student (None: it does not): its task type is gated as a whole,
    or its (task type, subtype) pair is — a subtype is gated only under its own task type."""
    if not task_type:
        return None
    if task_type in task_types:
        return f"student gated for {task_type}"
    sub = subtype or NO_SUBTYPE
    if sub in subtypes.get(task_type, ()):
        return f"student gated for {task_type}/{sub}"
    return None


class RulePolicy:
    """The article's heuristic ``route_model``, with its thresholds and lists from config."""

    def __init__(self, rules: RouteRulesConfig | None = None) -> None:
        self.rules = rules or RouteRulesConfig()
        tiers = (contract.TIER_STUDENT, *contract.API_TIERS)
        if self.rules.default_tier not in tiers:
            raise RoutingError(f"[serving.router.rules] default_tier = {self.rules.default_tier!r}: "
                               f"use one of {', '.join(tiers)}")
        keywords: dict[str, None] = {}  # visible, case-folded; in order, once each
        for k in self.rules.mid_keywords:
            word = visible_text(k).casefold()
            if not word:
                raise RoutingError(f"[serving.router.rules] mid_keywords: {k!r} has no visible characters (it would "
                                   "match every query): remove it")
            keywords.setdefault(word, None)
        # whole words of the visible, case-folded query: "explain" is not in "unexplained" nor in "explained" (a
        # keyword's end that is not a word character, as in "c++", needs no boundary); longest first, so a keyword
        # that starts another does not hide it in the reason
        alternatives = "|".join(_whole_word(k) for k in sorted(keywords, key=len, reverse=True))
        self._keywords = re.compile(alternatives) if alternatives else None
        routing_text("")  # builds visible_text's tables now (~0.2 s), not on the first request

    def route(self, query: str, task_type: str | None, *, embedding: Any = None,
              subtype: str | None = None, request_chars: int | None = None) -> Decision:
        """``request_chars``: the whole request's size (:func:`request_chars`; None: the query is all of it). A
        short question in a long conversation, or about a document sent with it, is not a short task: the length
        rule reads the larger of the two, and a decision it did not take for that reason says so."""
        r = self.rules
        gated = student_gate_reason(r.student_task_types, r.student_subtypes, task_type, subtype)
        if gated:
            return Decision(contract.TIER_STUDENT, 1.0, gated)
        if task_type in r.budget_task_types:
            return Decision(contract.TIER_BUDGET, 1.0, f"task type {task_type}")
        text = routing_text(query)
        if text_length(text) < r.short_query_chars:
            if request_chars is None or request_chars < r.short_query_chars:
                return Decision(contract.TIER_BUDGET, 1.0, f"query under {r.short_query_chars} characters")
            note = f" (the question is short, the request is not: {r.short_query_chars}+ characters)"
        else:
            note = ""
        if task_type in r.mid_task_types:
            return Decision(contract.TIER_MID, 1.0, f"task type {task_type}{note}")
        hit = self._keywords.search(text.casefold()) if self._keywords is not None else None
        if hit:
            return Decision(contract.TIER_MID, 1.0, f"keyword {hit.group()!r}{note}")
        if task_type in r.upper_task_types:
            return Decision(contract.TIER_UPPER, 1.0, f"task type {task_type}{note}")
        return Decision(r.default_tier, 1.0, f"default{note}")


def _whole_word(keyword: str) -> str:
    """A regex matching ``keyword`` where it is not part of a longer word. An edge in a script written without spaces
    (Han, kana, Thai...) needs no boundary: "説明" is a word of "説明してください", "解释" of "请解释一下" (but a keyword
    does not end inside a letter: Thai "ได" is not in "ได้", the same letter with a tone mark). A combining mark is
    part of its word: "समझ" is not a word of "समझे" (``\\w`` alone stops at the vowel sign: it is no alphanumeric)."""
    word, mark = f"[\\w{combining_marks()}]", f"[{combining_marks()}]"
    last = next((ch for ch in reversed(keyword) if not unicodedata.category(ch).startswith("M")), "")
    body = re.escape(keyword)
    # the character before it is looked at once the keyword is found (a lookbehind before it would test the class at
    # every position of the text, for each keyword)
    head = f"(?<!{word}{body})" if re.match(r"\w", keyword) and not unspaced_letter(keyword[0]) else ""
    if not re.match(word, keyword[-1:]):
        tail = ""
    else:
        tail = f"(?!{mark})" if unspaced_letter(last) else f"(?!{word})"
    return f"{body}{head}{tail}"


def unspaced_letter(ch: str) -> bool:
    """A letter of a script written without spaces between words: a wide one (Han, kana; Hangul is spaced but its
    particles cling to the word), Thai, Lao, Myanmar, Khmer. Such a script's words are not found by ``\\w+``: the
    keyword rule needs no boundary at its edge, and the ``hashing`` featurizer reads its runs letter by letter."""
    return ch.isalpha() and (unicodedata.east_asian_width(ch) in "WF" or "\u0e00" <= ch <= "\u0eff"
                             or "\u1000" <= ch <= "\u109f" or "\u1780" <= ch <= "\u17ff")


def _rules(serving: ServingConfig) -> RoutingPolicy:
    return RulePolicy(serving.router.rules)


def _learned(serving: ServingConfig) -> RoutingPolicy:
    from costline.serving.routing.learned import LearnedPolicy

    policy = LearnedPolicy.load(serving.router.policy_path, min_adequacy=serving.router.min_adequacy,
                                serving=serving)
    # Gating the student is the quality gate's decision, not the classifier's: keep it.
    return StudentGate(policy, serving.router.rules.student_task_types, serving.router.rules.student_subtypes)


#: ``[serving.router] policy`` → factory.
POLICIES: dict[str, Callable[[ServingConfig], RoutingPolicy]] = {
    "rules": _rules,
    "learned": _learned,
}


def build_policy(serving: ServingConfig, name: str | None = None) -> RoutingPolicy:
    """The policy named by ``name`` or ``[serving.router] policy``."""
    name = name or serving.router.policy
    try:
        factory = POLICIES[name]
    except KeyError:
        raise RoutingError(f"[serving.router] policy = {name!r}: use one of {', '.join(POLICIES)}") from None
    return factory(serving)


class StudentGate:
    """Sends the task types (and task type + subtype pairs) the student is gated for to the
    student, everything else to ``inner``."""

    def __init__(self, inner: RoutingPolicy, task_types: tuple[str, ...],
                 subtypes: Mapping[str, Collection[str]] | None = None) -> None:
        self.inner = inner
        self.task_types = frozenset(task_types)
        self.subtypes = {t: frozenset(s) for t, s in (subtypes or {}).items()}

    def route(self, query: str, task_type: str | None, *, embedding: Any = None,
              subtype: str | None = None, request_chars: int | None = None) -> Decision:
        gated = student_gate_reason(self.task_types, self.subtypes, task_type, subtype)
        if gated:
            return Decision(contract.TIER_STUDENT, 1.0, gated)
        return _route(self.inner, query, task_type, embedding, request_chars=request_chars)


class Router:
    """A policy checked against the registry.

    What the config names is checked when the router is built: the rules' ``default_tier`` and, when a task
    type is gated for the student, the student must be tiers of the registry (a :class:`RoutingError` naming the
    key, at start, rather than a failure on every request that reaches them). On a request the router never
    fails it: a policy that raises routes the request to the dearest API tier (quality first; the reason says
    ``fallback`` and why, confidence 0), and a tier the registry lacks becomes the nearest tier above it."""

    def __init__(self, policy: RoutingPolicy, registry: "ModelRegistry") -> None:
        self.policy = policy
        self.registry = registry
        self._warned: set[str] = set()
        for tier, key in _configured_tiers(policy):
            if tier not in registry:
                raise RoutingError(f"{key} names tier {tier!r}, which the registry lacks (have: "
                                   f"{', '.join(registry.names)}): list a model for it in [[pricing.models]] or "
                                   "[serving.tiers], or change the key")

    @property
    def reads_embeddings(self) -> bool:
        """True when the policy decides on the query's MiniLM vector (a learned policy with the
        ``minilm`` featurizer, possibly behind the student gate): then a vector the semantic cache
        computes anyway can be handed to :meth:`route` instead of embedding the query twice."""
        policy: Any = self.policy
        while isinstance(policy, StudentGate):
            policy = policy.inner
        return getattr(policy, "featurizer_name", None) == "minilm"

    def route(self, query: str, task_type: str | None = None, *, embedding: Any = None,
              subtype: str | None = None, request_chars: int | None = None) -> Decision:
        """The policy's decision; ``embedding``: the query's vector if the cache already has it;
        ``subtype``: the request's, for the student's per-subtype gating; ``request_chars``: the whole request's
        size (:func:`request_chars`) when it is more than the query. Never raises (see the class)."""
        try:
            decision = _route(self.policy, query, task_type, embedding, subtype, request_chars)
            if not isinstance(getattr(decision, "tier", None), str):
                raise RoutingError(f"the policy returned {type(decision).__name__}, not a Decision")
        except Exception as exc:  # noqa: BLE001 - a router failure costs money, never the request
            top = self._top()
            self._warn(f"policy:{type(exc).__name__}", "costline: the routing policy failed (%s: %s); requests it "
                       "fails on go to %s until it is fixed", type(exc).__name__, exc, top, exc_info=True)
            return Decision(top, 0.0, f"fallback to {top}: the routing policy failed ({type(exc).__name__}: "
                                      f"{str(exc)[:120]})")
        if decision.tier in self.registry:
            return decision
        tier = self._nearest_above(decision.tier)
        self._warn(f"tier:{decision.tier}", "costline: the routing policy chose tier %r, which the registry lacks "
                   "(have: %s); those requests go to %s", decision.tier, ", ".join(self.registry.names), tier)
        return Decision(tier, getattr(decision, "confidence", 1.0),
                        f"{getattr(decision, 'reason', '')}; {decision.tier!r} is not configured: {tier}")

    def _top(self) -> str:
        api = self.registry.api_tiers
        return api[-1] if api else self.registry.names[-1]

    def _nearest_above(self, tier: str) -> str:
        order = (contract.TIER_STUDENT, *contract.API_TIERS)
        rank = order.index(tier) if tier in order else len(order)
        return next((t for t in self.registry.api_tiers if order.index(t) > rank), self._top())

    def _warn(self, key: str, msg: str, *args: Any, exc_info: bool = False) -> None:
        """Log once per kind of failure (each request would otherwise log it again)."""
        if key in self._warned:
            return
        self._warned.add(key)
        log.warning(msg, *args, exc_info=exc_info)


def _configured_tiers(policy: Any) -> list[tuple[str, str]]:
    """(tier, config key) the policy is configured to send requests to, whatever the requests."""
    out: list[tuple[str, str]] = []
    while True:
        if isinstance(policy, RulePolicy):
            r = policy.rules
            out.append((r.default_tier, f"[serving.router.rules] default_tier = {r.default_tier!r}"))
            if r.student_task_types or any(r.student_subtypes.values()):
                out.append((contract.TIER_STUDENT, "[serving.router.rules] student_task_types/student_subtypes"))
            return out
        if isinstance(policy, StudentGate):
            if policy.task_types or any(policy.subtypes.values()):
                out.append((contract.TIER_STUDENT, "[serving.router.rules] student_task_types/student_subtypes"))
            policy = policy.inner
            continue
        return out
