"""Scoring a cheaper answer against a reference answer, with a metric that fits the subtype.

* ``exact`` — normalised exact match (classification, extraction): 1.0 or 0.0. When
  ``answer_pattern`` matches both answers its first group is compared (a label, a tag),
  else the whole text (:func:`normalize`: NFKC, case-folded, spacing collapsed, surrounding quotes and
  trailing sentence punctuation dropped; signs, separators and symbols kept: "-5" is not "5", "1.5" not
  "1,5", "C++" not "C#").
* ``cosine`` — cosine similarity of MiniLM embeddings (free text), clipped to [0, 1].
  Needs the serving extra (``pip install 'costline[serving]'``); any object with
  ``encode(texts) -> (n, d)`` L2-normalised rows can be passed instead.
* ``judge`` — an LLM judge scores each answer on a rubric (1-5 → 0-1); both the student
  and the teacher are judged, so the teacher's score is not 1 by definition.

With ``exact`` and ``cosine`` the reference is the teacher's answer itself, so the
teacher scores 1.0 and the gap is ``1 - mean(score)``.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from costline.jobs.errors import JobsError, MissingExtraError
from costline.textutil import stream_safe

__all__ = [
    "METRICS",
    "Embedder",
    "normalize",
    "exact_match",
    "metric_for",
    "ScoreRequest",
    "Scorer",
    "default_embedder",
    "parse_judge_score",
    "judge_prompt",
]

METRICS = ("exact", "cosine", "judge")

_SPACE = re.compile(r"\s+")
#: Sentence punctuation (and spacing) at the end of an answer: "Positive." is "positive". Fullwidth "！？" are
#: NFKC-folded to these first (as "…" is to "..."); the ideographic comma and full stop are listed.
_TRAILING = re.compile(r"[\s.,!?;:\u3001\u3002]+$")
#: Quote pairs that may surround a whole answer ('"positive"', "'positive'", “positive”, «positive»).
_QUOTES = {'"': '"', "'": "'", "`": "`", "\u201c": "\u201d", "\u2018": "\u2019", "\u00ab": "\u00bb",
           "\u201e": "\u201c", "\u300c": "\u300d"}
_JUDGE = re.compile(r"score\s*[:=]?\s*([1-5](?:\.\d+)?)", re.IGNORECASE)


class Embedder(Protocol):
    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def normalize(text: str | None) -> str:
    """The form two answers are compared in: NFKC, case-folded, runs of whitespace one space, ends trimmed,
    quotes around the whole answer and trailing sentence punctuation (``. , ! ? ; :``) dropped, repeatedly
    (``"Positive."`` and ``positive`` are one answer).

    Every other character counts: a sign (``-5`` is not ``5``), decimal and thousands separators (``1.5`` is
    not ``1,5``), currency and other symbols (``C++`` is not ``C#``, ``x<3`` not ``x>3``, 👍 not 👎). An
    answer of punctuation only keeps it (``?`` is not the empty answer)."""
    t = _SPACE.sub(" ", unicodedata.normalize("NFKC", stream_safe(text or "")).casefold()).strip()
    while t:
        inner = _TRAILING.sub("", t)
        if len(inner) >= 2 and _QUOTES.get(inner[0]) == inner[-1]:
            inner = inner[1:-1].strip()
        if not inner or inner == t:  # nothing left to drop (or only punctuation: it is the answer)
            break
        t = inner
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


def metric_for(subtype: str | None, task_type: str | None, metrics: Mapping[str, str], default: str) -> str:
    """The metric of a subtype: ``metrics[subtype]``, else ``metrics[task_type]``, else ``default``."""
    for key in (subtype, task_type):
        if key and key in metrics:
            return metrics[key]
    return default


def parse_judge_score(text: str) -> float:
    """A judge's 'score: N' (1-5) mapped to [0, 1]; NaN when absent."""
    m = _JUDGE.search(text or "")
    if not m:
        return math.nan
    return (min(max(float(m.group(1)), 1.0), 5.0) - 1.0) / 4.0


def default_embedder() -> Embedder:
    """MiniLM from the serving extra (imported lazily)."""
    try:
        from costline.serving.embedding import Embedder as MiniLM
    except ImportError:
        raise MissingExtraError("sentence-transformers", needed_for="embedding cosine scoring") from None
    return MiniLM()


@dataclass(frozen=True)
class ScoreRequest:
    """One pair to score: ``answer`` (student / cheaper tier) against ``reference`` (teacher / next tier)."""

    key: str
    metric: str
    query: str
    answer: str
    reference: str


#: ``judge(pairs) -> [(answer score, reference score)]`` for ``judge`` items: see drift.py.
JudgeFn = Callable[[Sequence[ScoreRequest]], Sequence[tuple[float, float]]]


class Scorer:
    """Scores many pairs at once (one embedding pass for all ``cosine`` items)."""

    def __init__(self, *, answer_pattern: str | None = None, embedder: Embedder | Callable[[], Embedder] | None = None,
                 judge: JudgeFn | None = None) -> None:
        self.pattern = re.compile(answer_pattern) if answer_pattern else None
        self._embedder = embedder
        self.judge = judge

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
            out[i] = (exact_match(items[i].answer, items[i].reference, self.pattern), 1.0)
        cos = by_metric.get("cosine", [])
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
    return f"{rubric}\n\nQUESTION:\n{query}\n\nANSWER:\n{answer}"
