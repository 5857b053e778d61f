"""Scoring a cheaper answer against a reference answer, with a metric that fits the subtype.

* ``exact`` — normalised exact match (classification, labels): 1.0 or 0.0. When the subtype's answer
  pattern (``[jobs.drift.answer_patterns]`` by subtype, then task type, else ``answer_pattern``) matches both
  answers its first group is compared (a label, a tag), else the whole text (:func:`normalize`: NFKC,
  case-folded, ``_`` read as a space, spacing collapsed, surrounding quotes, Markdown emphasis and trailing
  sentence punctuation dropped; signs, separators and symbols kept: "-5" is not "5", "1.5" not "1,5", "C++"
  not "C#").
* ``json`` — structured answers (extraction): both answers parsed as JSON (a surrounding code fence and a
  lead-in sentence dropped) and compared field by field: the share of leaf paths whose values agree
  (:func:`json_match`). A reference that is no JSON is compared with ``exact`` on the whole texts.
* ``cosine`` — cosine similarity of MiniLM embeddings (free text), clipped to [0, 1]. Two short answers
  (at most :data:`SHORT_WORDS` words each) are compared exactly instead (:func:`short_match`: numbers by
  value): the cosine of one-word answers says nothing ("4" and "3" are 0.86 apart, "3" and "3.0" 0.44).
  Needs the serving extra (``pip install 'costline[serving]'``); any object with
  ``encode(texts) -> (n, d)`` L2-normalised rows can be passed instead. Cosine cannot tell apart answers that
  share their wording and differ in one token ("does not want a refund" / "wants a refund": 0.91), so a pair
  in which one answer is an edit of the other and the semantic cache's verifier finds a contradiction — one of
  :data:`CONTRADICTION_REASONS`: another number, date, negation … — scores 0 (:func:`check_answers`; off with
  ``Scorer(cosine_checks=False)``, ``[jobs.drift] cosine_checks``). Without the serving extra, or for answers
  over the verifier's bounds, the cosine stands.
* ``judge`` — an LLM judge scores each answer on a rubric (1-5 → 0-1, :func:`parse_judge_score`); both the
  student and the teacher are judged, so the teacher's score is not 1 by definition.

With ``exact``, ``json`` and ``cosine`` the reference is the teacher's answer itself, so the
teacher scores 1.0 and the gap is ``1 - mean(score)``.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from difflib import SequenceMatcher
from typing import Any, Protocol

import numpy as np

from costline.jobs.errors import JobsError, MissingExtraError
from costline.jobs.settings import METRICS
from costline.textutil import stream_safe

__all__ = [
    "METRICS",
    "Embedder",
    "normalize",
    "exact_match",
    "json_match",
    "parse_json_answer",
    "short_match",
    "AnswerCheck",
    "check_answers",
    "CONTRADICTION_REASONS",
    "CHECK_EDIT_SPANS",
    "CHECK_EDIT_RATIO",
    "metric_for",
    "ScoreRequest",
    "Scorer",
    "compile_answer_pattern",
    "NO_JSON",
    "SHORT_WORDS",
    "default_embedder",
    "parse_judge_score",
    "judge_prompt",
]

log = logging.getLogger(__name__)

_SPACE = re.compile(r"\s+")
#: Sentence punctuation (and spacing) at the end of an answer: "Positive." is "positive". Fullwidth "！？" are
#: NFKC-folded to these first (as "…" is to "..."); the ideographic comma and full stop are listed. Stripped with
#: ``str.rstrip`` (spacing is one " " by then): a regex ``[...]+$`` takes quadratic time on a long run of them.
_TRAILING = " .,!?;:\u3001\u3002"
#: Quote pairs that may surround a whole answer ('"positive"', "'positive'", “positive”, «positive»).
_QUOTES = {'"': '"', "'": "'", "`": "`", "\u201c": "\u201d", "\u2018": "\u2019", "\u00ab": "\u00bb",
           "\u201e": "\u201c", "\u300c": "\u300d"}
#: Markdown emphasis around a whole answer (``**positive**``, ``*positive*``; ``__x__`` is covered by ``_`` being a
#: space): group 2 is the answer.
_EMPHASIS = re.compile(r"^(\*\*\*|\*\*|\*)(\S(?:.*\S)?)\1$", re.DOTALL)

#: ``cosine`` compares answers of at most this many words (after :func:`normalize`) exactly instead.
SHORT_WORDS = 3
#: What separates the items of a short list (tags): spaces, commas, semicolons, slashes.
_LIST_SEPARATORS = re.compile(r"[\s,;/]+")
#: A plain number: sign, digits, one decimal point, an exponent; no thousands separator ("1,200" is 1.2 in much
#: of Europe, so separators stay meaningful as under ``exact``).
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?")

#: Bounds of the ``json`` metric (answers come from models: one may be huge or nested without end). An answer
#: over them is compared with ``exact`` on the whole texts.
JSON_MAX_CHARS = 100_000
JSON_MAX_DEPTH = 32
JSON_MAX_LEAVES = 5_000
#: Places a JSON value may start at in a reply with text around it, tried in order ("Here is the JSON: {...}").
_JSON_STARTS = 32
_JSON_START = re.compile(r"[{\[]")
#: The info string of a code fence's first line (```json, ```JSON5, ```c++).
_FENCE_INFO = re.compile(r"[\w+.-]{0,32}")


class Embedder(Protocol):
    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def normalize(text: str | None) -> str:
    """The form two answers are compared in: NFKC, case-folded, ``_`` read as a space (``refund_request`` is
    "refund request"), runs of whitespace one space, ends trimmed, quotes and Markdown emphasis (``**x**``, ``*x*``,
    ``__x__``) around the whole answer and trailing sentence punctuation (``. , ! ? ; :``) dropped, repeatedly
    (``"Positive."``, ``**Positive**`` and ``positive`` are one answer).

    Every other character counts: a sign (``-5`` is not ``5``), decimal and thousands separators (``1.5`` is
    not ``1,5``), currency and other symbols (``C++`` is not ``C#``, ``x<3`` not ``x>3``, 👍 not 👎). An
    answer of punctuation only keeps it (``?`` is not the empty answer, nor is ``_``)."""
    t = unicodedata.normalize("NFKC", stream_safe(text or "")).casefold()
    if t.strip("_ \t\r\n"):
        t = t.replace("_", " ")
    t = _SPACE.sub(" ", t).strip()
    while t:
        inner = _unwrap(t.rstrip(_TRAILING))
        if not inner or inner == t:  # nothing left to drop (or only punctuation: it is the answer)
            break
        t = inner
    return t


def _unwrap(t: str) -> str:
    """``t`` without the quotes or the Markdown emphasis around all of it (one layer)."""
    if len(t) >= 2 and _QUOTES.get(t[0]) == t[-1]:
        return t[1:-1].strip()
    m = _EMPHASIS.match(t)
    if m and m.group(2).strip("*"):  # "***" is an answer of asterisks, not an emphasised "*"
        return m.group(2)
    return t


def exact_match(answer: str | None, reference: str | None, pattern: re.Pattern[str] | None = None) -> float:
    """1.0 when the answers match after :func:`normalize` (on the pattern's group when both have it); an
    empty answer matches only an empty one."""
    if pattern is not None:
        a = pattern.search(answer or "")
        b = pattern.search(reference or "")
        if a and b:
            ga = a.group(1) if a.groups() else a.group(0)
            gb = b.group(1) if b.groups() else b.group(0)
            return 1.0 if normalize(ga) == normalize(gb) else 0.0
    return 1.0 if normalize(answer) == normalize(reference) else 0.0


def short_match(answer: str | None, reference: str | None) -> float | None:
    """The ``cosine`` metric's score of two short answers (each at most :data:`SHORT_WORDS` words after
    :func:`normalize`): 1.0 when they are one number by value (``3`` and ``3.0``, ``1e3`` and ``1000``; a
    thousands separator is not read: ``1,200`` is not ``1200``), one text under :func:`normalize`, or the same
    words in another order (a short list of tags: ``billing, refund`` and ``refund billing``), else 0.0. None when
    either answer is longer: cosine decides."""
    a, b = normalize(answer), normalize(reference)
    if len(a.split()) > SHORT_WORDS or len(b.split()) > SHORT_WORDS:
        return None
    if _NUMBER.fullmatch(a) and _NUMBER.fullmatch(b):
        try:
            return 1.0 if Decimal(a) == Decimal(b) else 0.0
        except ArithmeticError:  # pragma: no cover - the pattern only lets plain numbers through
            pass
    if a == b:
        return 1.0
    return 1.0 if sorted(w for w in _LIST_SEPARATORS.split(a) if w) == sorted(w for w in _LIST_SEPARATORS.split(b) if w) \
        else 0.0


# --- cosine: contradiction checks ----------------------------------------------------------------------------------

#: The reasons of the semantic cache's guards (:func:`costline.serving.cache.verify.guard`) that make a ``cosine``
#: score 0 when one answer is an edit of the other: those that fired on (almost) no same-meaning pair of the
#: hand-labelled answer pairs (tests/data/answer_pairs.jsonl), and ``entity`` where each answer names something the
#: other does not (:attr:`AnswerCheck.names_swapped`: "Canberra" / "Sydney"). The others ("entity" on common
#: words, "unit", "comparative", "identifier", "unmatched" …) also fired on paraphrases ("package" / "parcel",
#: "$12" / "twelve dollars", "3 to 5" / "3-5"). docs/jobs.md ("Contradiction checks") has the measurement.
CONTRADICTION_REASONS: frozenset[str] = frozenset({"negation", "number", "date", "time", "polarity", "scope", "order"})
#: Two answers are checked only when one is an *edit* of the other: the guards' words
#: (``QuestionFeatures.tokens``), aligned by difflib, differ in at most this many spans...
CHECK_EDIT_SPANS = 3
#: ...and the aligned words are at least this share of both answers' words (the bounds of an edit the verifier
#: itself uses). The guards were built for near-repeat questions: on a rewording they read every word said another
#: way as a difference ("There is no fee" / "… are free": negation), and cosine already sees a rewording's distance.
CHECK_EDIT_RATIO = 0.6
#: A yes / no opening a reply ("Yes, …", "No. …", "Sure — …"; not "No-claims …" nor "No fee …"): group 1.
_OPENING = re.compile(r"\s*(yes|yeah|yep|sure|certainly|absolutely|no|nope)(?:\s*[,.!:;\u2013\u2014]|\s+-)\s*",
                      re.IGNORECASE)
_NEGATIVE_OPENINGS = frozenset({"no", "nope"})


@dataclass(frozen=True)
class AnswerCheck:
    """What the semantic cache's verifier reads in two free-text answers (:func:`check_answers`)."""

    #: The first guard reason that tells the two answers apart, None when none does.
    reason: str | None
    #: One answer is an edit of the other (:data:`CHECK_EDIT_SPANS`, :data:`CHECK_EDIT_RATIO`).
    edit: bool
    #: Each answer names something the other does not: a capitalised name or product the verifier reads
    #: (``QuestionFeatures.entities``: "Canberra" / "Sydney", "DHL" / "UPS"), not a common word ("package" /
    #: "parcel", which its ``entity`` guard reads as another thing too).
    names_swapped: bool = False
    #: The two answers hold a different number of explicit negators (:func:`negators`: "not", "no", "never",
    #: "cannot", "n't", ...). The ``negation`` guard also reads a clause that sets one thing against another ("moved
    #: to Tuesday instead of Monday" against "moved from Monday to Tuesday"): without a negator gained or lost, two
    #: such answers say the same.
    negators_differ: bool = True

    @property
    def contradiction(self) -> str | None:
        """The reason that makes the ``cosine`` score 0, else None: in a pair that is an edit, :attr:`reason` when
        it is one of :data:`CONTRADICTION_REASONS` (``negation`` only with :attr:`negators_differ`), or ``entity``
        with :attr:`names_swapped`."""
        if not self.edit:
            return None
        if self.reason == "negation" and not self.negators_differ:
            return None
        if self.reason in CONTRADICTION_REASONS or (self.reason == "entity" and self.names_swapped):
            return self.reason
        return None


def check_answers(answer: str, reference: str, cosine: float | None = None) -> AnswerCheck | None:
    """The cache verifier's reading of two answers (:func:`costline.serving.cache.verify.guard`, given the pair's
    ``cosine``, which lets it take one common word for another as a synonym), a yes / no opening dropped first
    (:func:`_without_openings`). None when the pair is not read: an answer over the verifier's bounds
    (``MAX_QUESTION_CHARS`` characters, ``MAX_QUESTION_TOKENS`` of its words), whose parse grows faster than the
    text, so a long answer keeps its cosine. Needs the serving extra (an ImportError without it)."""
    from costline.serving.cache import verify

    if len(answer) > verify.MAX_QUESTION_CHARS or len(reference) > verify.MAX_QUESTION_CHARS:
        return None
    (a, b), opposite = _without_openings(answer, reference)
    q, c = verify.analyse(a), verify.analyse(b)
    if len(q.tokens) > verify.MAX_QUESTION_TOKENS or len(c.tokens) > verify.MAX_QUESTION_TOKENS:
        return None
    # whether one is an edit of the other is asked of the statements, without "Yes," / "No,"
    words = (q.tokens, c.tokens) if not opposite else \
        (verify.analyse(_after(a, _OPENING.match(a))).tokens, verify.analyse(_after(b, _OPENING.match(b))).tokens)
    return AnswerCheck(verify.guard(q, c, cosine), _is_edit(*words),
                       names_swapped=bool(q.entities - c.entities and c.entities - q.entities),
                       negators_differ=negators(a) != negators(b) or _prefix_negated(a, b))


#: Words that negate what they stand in (English, as the verifier's guards read); "n't" is counted on its own.
_NEGATORS = frozenset({"not", "no", "never", "none", "nobody", "nothing", "nowhere", "neither", "nor", "cannot",
                       "without"})
_WORDS = re.compile(r"[a-z]+(?:'[a-z]+)?")


#: Prefixes that negate the word they start ("furnished" / "unfurnished", "able" / "unable", "legal" / "illegal").
_NEGATING_PREFIXES = ("un", "in", "im", "il", "ir", "dis", "non", "non-")


def _prefix_negated(a: str, b: str) -> bool:
    """One answer has a word the other has with a negating prefix (:data:`_NEGATING_PREFIXES`)."""
    wa, wb = set(_WORDS.findall(a.lower())), set(_WORDS.findall(b.lower()))
    only_a, only_b = wa - wb, wb - wa
    return any(p + w in only_b for w in only_a for p in _NEGATING_PREFIXES) or \
        any(p + w in only_a for w in only_b for p in _NEGATING_PREFIXES)


def negators(text: str) -> int:
    """How many explicit negators ``text`` holds: :data:`_NEGATORS` and words ending in "n't" (also with a typed
    apostrophe: "doesn't", "doesn’t")."""
    words = _WORDS.findall(text.lower().replace("\u2019", "'"))
    return sum(w in _NEGATORS or w.endswith("n't") for w in words)


def _is_edit(a: Sequence[str], b: Sequence[str]) -> bool:
    """``b`` is ``a`` with at most :data:`CHECK_EDIT_SPANS` spans changed and :data:`CHECK_EDIT_RATIO` of the words
    aligned (difflib over the words; at most MAX_QUESTION_TOKENS each, so its quadratic time is bounded)."""
    ops = SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    changed = sum(op != "equal" for op, *_ in ops)
    aligned = sum(i2 - i1 for op, i1, i2, _, _ in ops if op == "equal")
    return changed <= CHECK_EDIT_SPANS and 2 * aligned >= CHECK_EDIT_RATIO * (len(a) + len(b))


def _without_openings(a: str, b: str) -> tuple[tuple[str, str], bool]:
    """The two answers without a yes / no opening, and False: it answers the question that the rest restates, and
    the guards read a "No," as a negation ("No, the museum is not open on Mondays" / "The museum is not open on
    Mondays"). Both kept, and True, when the two open with opposite ones ("Yes, the plan includes …" / "No, the plan
    does not …"), which the negation guard then reads."""
    ma, mb = _OPENING.match(a), _OPENING.match(b)
    if ma and mb and (ma.group(1).lower() in _NEGATIVE_OPENINGS) != (mb.group(1).lower() in _NEGATIVE_OPENINGS):
        return (a, b), True
    return (_after(a, ma), _after(b, mb)), False


def _after(text: str, opening: re.Match[str] | None) -> str:
    """``text`` after its ``opening``, the first letter capitalised as a sentence's (the guards read capitals)."""
    if opening is None:
        return text
    rest = text[opening.end():]
    return rest[:1].upper() + rest[1:]


# --- json ----------------------------------------------------------------------------------------------------------

class _NoJSON:
    """What :func:`parse_json_answer` gives for an answer that holds no JSON."""

    def __repr__(self) -> str:
        return "NO_JSON"


NO_JSON: Any = _NoJSON()


class _Unbounded(Exception):
    """An answer over the ``json`` metric's bounds (:data:`JSON_MAX_CHARS`, ``_DEPTH``, ``_LEAVES``)."""


def parse_json_answer(text: str | None) -> Any:
    """The JSON value an answer holds: the whole answer (spacing and a surrounding code fence dropped), else the
    first object or array in it that parses ("Here is the JSON: {...}"); :data:`NO_JSON` when it holds none.
    Raises :class:`_Unbounded` for an answer over :data:`JSON_MAX_CHARS` or nested too deep to parse."""
    t = (text or "").strip()
    if len(t) > JSON_MAX_CHARS:
        raise _Unbounded
    t = _unfence(t)
    try:
        return json.loads(t)
    except RecursionError:
        raise _Unbounded from None
    except ValueError:
        pass
    decoder = json.JSONDecoder()
    for i in (m.start() for m in itertools.islice(_JSON_START.finditer(t), _JSON_STARTS)):
        try:
            value, _ = decoder.raw_decode(t, i)
        except RecursionError:
            raise _Unbounded from None
        except ValueError:
            continue
        if isinstance(value, (dict, list)):
            return value
    return NO_JSON


def _unfence(t: str) -> str:
    """``t`` (stripped) without a Markdown code fence around all of it: ```json\\n...\\n```, ```\\n...\\n```,
    ``` ... ``` on one line."""
    if len(t) < 6 or not (t.startswith("```") and t.endswith("```")):
        return t
    inner = t[3:-3]
    first, newline, rest = inner.partition("\n")
    if newline and _FENCE_INFO.fullmatch(first.strip()):
        return rest.strip()
    return inner.strip()


def _leaves(value: Any) -> dict[tuple[Any, ...], Any]:
    """``path -> value`` of every leaf: a path is the object keys (str) and list indexes (int) down to it; a
    scalar and an empty object or list are leaves. Raises :class:`_Unbounded` past the depth or leaf bound."""
    out: dict[tuple[Any, ...], Any] = {}
    stack: list[tuple[tuple[Any, ...], Any]] = [((), value)]
    while stack:
        path, v = stack.pop()
        if len(path) > JSON_MAX_DEPTH:
            raise _Unbounded
        if isinstance(v, dict) and v:
            stack.extend(((*path, str(k)), x) for k, x in v.items())
        elif isinstance(v, list) and v:
            stack.extend(((*path, i), x) for i, x in enumerate(v))
        else:
            out[path] = v
            if len(out) > JSON_MAX_LEAVES:
                raise _Unbounded
    return out


def _same_leaf(a: Any, b: Any) -> bool:
    """Numbers (not bools) by value (``1200``, ``1200.0``, ``1.2e3``), strings under :func:`normalize`, bools,
    null and empty containers exactly (an empty object is not an empty list)."""
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, str) and isinstance(b, str):
        return normalize(a) == normalize(b)
    return type(a) is type(b) and a == b  # {} and {}, [] and []


def json_match(answer: str | None, reference: str | None, pattern: re.Pattern[str] | None = None) -> float:
    """The ``json`` metric: 1.0 when the two answers hold the same JSON — the same leaf paths (:func:`_leaves`) with
    equal values (:func:`_same_leaf`), a field that is null on one side and missing on the other being the same —
    else 0.0. All or nothing, as ``exact`` is: a gap is the share of answers that differ, so one field wrong in
    every answer (the total of each invoice) is a gap of 1, not of 1/8 of an eight-field answer, which would pass
    any threshold.

    * the reference holds no JSON (:func:`parse_json_answer`): :func:`exact_match` (with ``pattern``, the subtype's
      answer pattern, as ``exact`` compares);
    * the reference holds JSON and the answer none: 0.0 (a reference that is a lone scalar, e.g. ``"positive"``
      in quotes, is compared with :func:`exact_match` instead, which drops the quotes);
    * either answer over the bounds (:data:`JSON_MAX_CHARS`, :data:`JSON_MAX_DEPTH`, :data:`JSON_MAX_LEAVES`):
      :func:`exact_match` of the whole texts."""
    try:
        ref = parse_json_answer(reference)
        if ref is NO_JSON:
            return exact_match(answer, reference, pattern)
        got = parse_json_answer(answer)
        if got is NO_JSON:
            return 0.0 if isinstance(ref, (dict, list)) else exact_match(answer, reference, pattern)
        a, b = _leaves(got), _leaves(ref)
    except _Unbounded:
        return exact_match(answer, reference, pattern)
    a = {p: v for p, v in a.items() if v is not None}  # null is no value: {"note": null} is {}
    b = {p: v for p, v in b.items() if v is not None}
    return 1.0 if a.keys() == b.keys() and all(_same_leaf(a[p], b[p]) for p in a) else 0.0


def metric_for(subtype: str | None, task_type: str | None, metrics: Mapping[str, str], default: str) -> str:
    """The metric of a subtype: ``metrics[subtype]``, else ``metrics[task_type]``, else ``default``."""
    for key in (subtype, task_type):
        if key and key in metrics:
            return metrics[key]
    return default


# --- judge ---------------------------------------------------------------------------------------------------------

_NUM = r"(\d+(?:\.\d+)?)"
#: "/ 5", "out of 5", "of 5" after a score: its scale.
_SCALE = r"(?:\s*(?:/|\bout\s+of\b|\bof\b)\s*(\d+))?"
#: A score with its label: "score: 4", "Rating: 4 out of 5", "Final score = 2", "Score - 3", "score is 4", and with
#: the scale between label and score ("score (1-5): 2", "Score 1-5: 4": the range is not the score).
_JUDGE_LABELLED = re.compile(
    r"\b(?:score|rating|grade)\b(?:\s*\(?\s*\d+\s*(?:-|–|to)\s*\d+\s*\)?)?"  # the label, the range
    r"\s*(?:[:=]|-|–|\bis\b)\s*" + _NUM + _SCALE,
    re.IGNORECASE)
#: Without a label: "I'd give this a 4", "I would rate it 3/5", "a score of 4".
_JUDGE_PHRASED = re.compile(
    r"\b(?:(?:give|rate|score)\s+(?:it|this|the\s+answer|this\s+answer)\s+(?:an?\s+)?|score\s+of\s+)" + _NUM + _SCALE,
    re.IGNORECASE)
#: A reply that is the score alone (stripped): "4", "4/5", "4 out of 5".
_JUDGE_BARE = re.compile(_NUM + _SCALE + r"[.!]?")
#: Markdown around the words of a reply ("**Score:** 4", "Score: `4`").
_MARKUP = re.compile(r"[*_`]+")


def parse_judge_score(text: str | None) -> float:
    """A judge's score mapped to [0, 1]: 1-5 → 0-1; NaN when the reply holds none the job can read.

    Markdown emphasis is dropped first. The score is the last labelled one ("score: N", "**Score:** N/5",
    "Rating: N out of 5", "score (1-5): N"), else the last phrased one ("I'd give this a N", "a score of N"), else
    a reply that is the number alone ("N", "N/5"): a judge that explains before it scores, or quotes the rubric
    ("a score of 1 means ..."), is read by its verdict. A score on another scale ("10/10") is mapped linearly,
    ``1 + 4 (N - 1) / (M - 1)``; one outside its scale ("score: 7", "0/10", "6/5") is unreadable (NaN)."""
    # spacing collapsed to one space: the patterns' adjacent optional spaces stay linear on any reply
    t = _SPACE.sub(" ", _MARKUP.sub("", unicodedata.normalize("NFKC", stream_safe(text or "")))).strip()
    m = _JUDGE_BARE.fullmatch(t)
    if m is None:
        found = _JUDGE_LABELLED.findall(t) or _JUDGE_PHRASED.findall(t)
        if not found:
            return math.nan
        score, scale = found[-1]
    else:
        score, scale = m.group(1), m.group(2)
    n = float(score)
    top = float(scale) if scale else 5.0
    if top < 2 or not 1.0 <= n <= top:
        return math.nan
    on_five = 1.0 + 4.0 * (n - 1.0) / (top - 1.0)
    return (on_five - 1.0) / 4.0


def default_embedder() -> Embedder:
    """MiniLM from the serving extra (imported lazily)."""
    try:
        from costline.serving.embedding import Embedder as MiniLM
    except ImportError:
        raise MissingExtraError("sentence-transformers", needed_for="embedding cosine scoring") from None
    return MiniLM()


@dataclass(frozen=True)
class ScoreRequest:
    """One pair to score: ``answer`` (student / cheaper tier) against ``reference`` (teacher / next tier).
    ``subtype`` and ``task_type`` pick the answer pattern of ``exact`` (:meth:`Scorer.pattern_for`)."""

    key: str
    metric: str
    query: str
    answer: str
    reference: str
    subtype: str | None = None
    task_type: str | None = None


#: ``judge(pairs) -> [(answer score, reference score)]`` for ``judge`` items: see drift.py.
JudgeFn = Callable[[Sequence[ScoreRequest]], Sequence[tuple[float, float]]]


def compile_answer_pattern(key: str, pattern: str) -> re.Pattern[str]:
    """One ``[jobs.drift.answer_patterns]`` entry compiled: a regex with a group (exact match compares the first);
    :class:`JobsError` naming the key otherwise."""
    where = f"[jobs.drift.answer_patterns] {key}"
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise JobsError(f"{where}: not a valid regex ({exc}): fix the pattern") from None
    if rx.groups < 1:
        raise JobsError(f"{where}: {pattern!r} has no group: put the part to compare in parentheses, "
                        "e.g. '(?i)\\b(positive|negative|neutral)\\b'")
    return rx


class Scorer:
    """Scores many pairs at once (one embedding pass for all ``cosine`` items).

    ``answer_patterns`` (subtype or task type -> regex, ``[jobs.drift.answer_patterns]``) give ``exact`` the
    pattern of an item's subtype, else of its task type, else ``answer_pattern``. With ``cosine_checks``
    (``[jobs.drift] cosine_checks``) a ``cosine`` item the semantic cache's verifier finds contradicting scores 0
    (:meth:`check`)."""

    def __init__(self, *, answer_pattern: str | None = None, answer_patterns: Mapping[str, str] | None = None,
                 embedder: Embedder | Callable[[], Embedder] | None = None, judge: JudgeFn | None = None,
                 cosine_checks: bool = True) -> None:
        self.pattern = re.compile(answer_pattern) if answer_pattern else None
        self.patterns = {k: compile_answer_pattern(k, v) for k, v in (answer_patterns or {}).items()}
        self._embedder = embedder
        self.judge = judge
        #: ``cosine`` items the verifier finds contradicting score 0 (:meth:`check`; ``[jobs.drift] cosine_checks``).
        self.cosine_checks = cosine_checks
        self._no_verifier = False  # the serving extra is missing: said once, then plain cosine
        self._said_unreadable = False

    def pattern_for(self, subtype: str | None, task_type: str | None) -> re.Pattern[str] | None:
        """The answer pattern of ``exact``: the subtype's, else the task type's, else the global one."""
        for key in (subtype, task_type):
            if key and key in self.patterns:
                return self.patterns[key]
        return self.pattern

    @property
    def embedder(self) -> Embedder:
        e = self._embedder
        if e is None:
            e = self._embedder = default_embedder()
        elif not hasattr(e, "encode") and callable(e):
            e = self._embedder = e()
        return e  # type: ignore[return-value]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        try:
            return np.asarray(self.embedder.encode(list(texts)), dtype=np.float64)
        except ImportError as exc:  # the serving extra's own MissingExtraError is an ImportError
            raise MissingExtraError("sentence-transformers", needed_for="embedding cosine scoring") from exc

    def check(self, answer: str, reference: str, cosine: float | None = None) -> str | None:
        """The guard reason that makes a ``cosine`` item score 0 (:attr:`AnswerCheck.contradiction` of
        :func:`check_answers`), else None — also with ``cosine_checks`` off, without the serving extra (one
        warning, then the plain cosine) and for a pair the verifier cannot read (logged: it keeps its cosine)."""
        if not self.cosine_checks or self._no_verifier:
            return None
        try:
            found = check_answers(answer or "", reference or "", cosine)
        except ImportError as exc:
            self._no_verifier = True
            log.warning("the cosine metric's contradiction checks need the serving extra (%s): scoring with the "
                        "plain cosine; install it (pip install 'costline[serving]') or set [jobs.drift] "
                        "cosine_checks = false", exc)
            return None
        except Exception:  # noqa: BLE001 - a pair the verifier cannot read is scored as before, never a failed run
            log.warning("the verifier could not read an answer pair: it keeps its cosine",
                        exc_info=not self._said_unreadable)
            self._said_unreadable = True
            return None
        return found.contradiction if found is not None else None

    def score(self, items: Sequence[ScoreRequest]) -> list[tuple[float, float]]:
        """(answer score, reference score) per item, in order."""
        out: list[tuple[float, float]] = [(math.nan, math.nan)] * len(items)
        by_metric: dict[str, list[int]] = {}
        for i, it in enumerate(items):
            if it.metric not in METRICS:
                raise JobsError(f"unknown metric {it.metric!r} for {it.key}: use one of {', '.join(METRICS)} "
                                "in [jobs.drift.metrics]")
            by_metric.setdefault(it.metric, []).append(i)
        for i in by_metric.get("exact", []):
            it = items[i]
            out[i] = (exact_match(it.answer, it.reference, self.pattern_for(it.subtype, it.task_type)), 1.0)
        for i in by_metric.get("json", []):
            it = items[i]
            out[i] = (json_match(it.answer, it.reference, self.pattern_for(it.subtype, it.task_type)), 1.0)
        cos = []
        for i in by_metric.get("cosine", []):
            short = short_match(items[i].answer, items[i].reference)
            if short is None:
                cos.append(i)
            else:
                out[i] = (short, 1.0)
        if cos:
            a = self.embed([items[i].answer for i in cos])
            b = self.embed([items[i].reference for i in cos])
            sims = np.clip(np.einsum("ij,ij->i", a, b), 0.0, 1.0)
            for i, s in zip(cos, sims):
                contradicts = self.check(items[i].answer, items[i].reference, float(s)) is not None
                out[i] = (0.0 if contradicts else float(s), 1.0)
        judged = by_metric.get("judge", [])
        if judged:
            if self.judge is None:
                raise JobsError("metric 'judge' needs an LLM judge: run the job with a teacher client")
            for i, pair in zip(judged, self.judge([items[i] for i in judged])):
                out[i] = (float(pair[0]), float(pair[1]))
        return out


def judge_prompt(rubric: str, query: str, answer: str) -> str:
    """The judge's prompt: the rubric, then the question and the answer to score."""
    return f"{rubric}\n\nQUESTION:\n{query}\n\nANSWER:\n{answer}"
