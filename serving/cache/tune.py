"""Choosing the cache's similarity threshold from labelled pairs of questions.

A pairs file is JSON lines ``{"q1", "q2", "same_answer", "category", "domain", "split"}``
(``category``, ``domain``, ``split`` optional; the older ``{"a", "b", "same_answer"}`` is read too);
:func:`read_pairs` is the one reader of them (threshold tuning, the admission model, the bench). For each
threshold, the **hit rate** is the share of true pairs (same answer) whose similarity
reaches it, and the **false-hit rate** the share of false pairs that reach it — a
false hit serves one question's answer to another. The recommendation is the lowest
threshold whose false-hit rate stays under the target. ``serving/cache/data/cache_pairs.jsonl``
is a small sample the project wrote itself, negation traps included.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from costline.serving.errors import CacheError

if TYPE_CHECKING:
    from costline.serving.embedding import Embedder

__all__ = [
    "Pair",
    "ThresholdRow",
    "TuneReport",
    "DEFAULT_THRESHOLDS",
    "default_pairs_path",
    "read_pairs",
    "pair_similarities",
    "tune_thresholds",
]

#: 0.85, 0.86, ..., 0.99.
DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.85 + 0.01 * i, 2) for i in range(15))


@dataclass(frozen=True)
class Pair:
    """One labelled pair of questions: would the same answer be right for both?"""

    q1: str
    q2: str
    same_answer: bool
    category: str = ""
    domain: str = ""
    split: str = ""

    @property
    def a(self) -> str:
        return self.q1

    @property
    def b(self) -> str:
        return self.q2

    @property
    def trap(self) -> str:
        """The trap category of a different-answer pair ("other" when it names none)."""
        return self.category or "other"


@dataclass(frozen=True)
class ThresholdRow:
    threshold: float
    true_hits: int
    false_hits: int
    hit_rate: float
    false_hit_rate: float


@dataclass(frozen=True)
class TuneReport:
    rows: tuple[ThresholdRow, ...]
    true_pairs: int
    false_pairs: int
    max_false_hit_rate: float
    #: The lowest threshold whose false-hit rate is under the target; None if none is.
    recommended: float | None

    def row(self, threshold: float) -> ThresholdRow:
        return next(r for r in self.rows if abs(r.threshold - threshold) < 1e-9)


def default_pairs_path() -> Path:
    """The labelled sample shipped with costline."""
    return Path(__file__).resolve().parent / "data" / "cache_pairs.jsonl"


def read_pairs(path: str | os.PathLike[str]) -> tuple[list[Pair], list[str]]:
    """The valid pairs of a JSON-lines file, and one message per line that was not valid."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CacheError(f"cannot read pairs file {path}: {exc.strerror or exc}") from None
    pairs: list[Pair] = []
    problems: list[str] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError as exc:
            problems.append(f"line {n}: not JSON ({exc.msg})")
            continue
        if not isinstance(doc, dict):
            problems.append(f"line {n}: expected an object with q1, q2, same_answer")
            continue
        q1, q2 = doc.get("q1", doc.get("a")), doc.get("q2", doc.get("b"))
        same = doc.get("same_answer")
        extra = [doc.get(k, "") for k in ("category", "domain", "split")]
        if not (isinstance(q1, str) and q1.strip() and isinstance(q2, str) and q2.strip()):
            problems.append(f"line {n}: 'q1' and 'q2' (or 'a' and 'b') must be non-empty strings")
        elif not isinstance(same, bool):
            problems.append(f"line {n}: 'same_answer' must be true or false")
        elif not all(isinstance(v, str) for v in extra):
            problems.append(f"line {n}: 'category', 'domain' and 'split' must be strings")
        else:
            pairs.append(Pair(q1, q2, same, *extra))
    return pairs, problems


def pair_similarities(embedder: "Embedder", pairs: list[Pair]) -> np.ndarray:
    """Cosine similarity of each pair's two questions, as the cache would see it."""
    if not pairs:
        return np.zeros(0, dtype=np.float32)
    vecs = embedder.encode([p.a for p in pairs] + [p.b for p in pairs])
    n = len(pairs)
    return np.einsum("ij,ij->i", vecs[:n], vecs[n:])


def tune_thresholds(
    similarities: np.ndarray,
    same_answer: np.ndarray,
    *,
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS,
    max_false_hit_rate: float = 0.01,
) -> TuneReport:
    """Hit and false-hit rate per threshold, and the lowest threshold under the false-hit target."""
    sims = np.asarray(similarities, dtype=np.float64)
    labels = np.asarray(same_answer, dtype=bool)
    true_sims, false_sims = sims[labels], sims[~labels]
    if not len(true_sims) or not len(false_sims):
        raise CacheError("tuning needs both kinds of pair: some with same_answer true and some false")
    rows = []
    for t in sorted(thresholds):
        th, fh = int((true_sims >= t).sum()), int((false_sims >= t).sum())
        rows.append(ThresholdRow(t, th, fh, th / len(true_sims), fh / len(false_sims)))
    recommended = next((r.threshold for r in rows if r.false_hit_rate < max_false_hit_rate), None)
    return TuneReport(tuple(rows), len(true_sims), len(false_sims), max_false_hit_rate, recommended)
