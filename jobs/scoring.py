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
  ``encode(texts) -> (n, d)`` L2-normalised rows can be passed instead.
* ``judge`` — an LLM judge scores each answer on a rubric (1-5 → 0-1, :func:`parse_judge_score`); both the
  student and the teacher are judged, so the teacher's score is not 1 by definition.

With ``exact``, ``json`` and ``cosine`` the reference is the teacher's answer itself, so the
teacher scores 1.0 and the gap is ``1 - mean(score)``.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
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
    pattern of an item's subtype, else of its task type, else ``answer_pattern``."""

    def __init__(self, *, answer_pattern: str | None = None, answer_patterns: Mapping[str, str] | None = None,
                 embedder: Embedder | Callable[[], Embedder] | None = None, judge: JudgeFn | None = None) -> None:
        self.pattern = re.compile(answer_pattern) if answer_pattern else None
        self.patterns = {k: compile_answer_pattern(k, v) for k, v in (answer_patterns or {}).items()}
        self._embedder = embedder
        self.judge = judge

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
                out[i] = (float(s), 1.0)
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
