"""The learned admission model: the last word on a candidate that passed every guard.

``costline cache train --pairs FILE`` fits a logistic regression (scikit-learn) on the
:data:`~costline.serving.cache.verify.FEATURE_NAMES` of labelled question pairs and saves it as
plain JSON — weights, feature scaling and a table of **operating points**: for each probability
threshold, the recall on same-answer pairs and the false-hit rate overall and per trap category,
measured on out-of-fold predictions of the training pairs (5-fold cross-validation), the guards
applied first as the cache applies them. The cache picks the operating point with the best recall
whose false-hit rate stays under ``[serving.cache] target_false_hit_rate`` (and under twice that
in every trap category). No pickle: loading a model file never runs code.

A pairs file is JSON lines ``{"q1", "q2", "same_answer", "category", "domain", "split"}``
(``category``, ``domain``, ``split`` optional; the older ``{"a", "b", "same_answer"}`` is read too).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from costline.serving.cache.tune import Pair, read_pairs
from costline.serving.cache.verify import FEATURE_NAMES, Verifier, guard, pair_features
from costline.serving.errors import CacheError

if TYPE_CHECKING:
    from costline.serving.embedding import Embedder

__all__ = [
    "AdmissionModel",
    "LabelledPair",
    "OperatingPoint",
    "PairScores",
    "TRUE_CATEGORIES",
    "default_model_path",
    "default_pair_set_path",
    "read_pairs",
    "score_pairs",
    "operating_points",
    "train_admission",
]

FORMAT = "costline-cache-admission/1"
#: Categories whose pairs have the same answer; every other category is a trap.
TRUE_CATEGORIES = ("paraphrase", "near_repeat")
#: Probability thresholds of the operating-point table.
THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20)) + (0.97, 0.99)


def default_model_path() -> Path:
    """The admission model shipped with costline (trained on the train split of our pair set)."""
    return Path(__file__).resolve().parent / "data" / "cache_admission.json"


def default_pair_set_path() -> Path:
    """costline's own labelled pair set (serving/cache/data/build_cache_pairs.py writes it)."""
    return Path(__file__).resolve().parent / "data" / "cache_pair_set.jsonl"


#: A labelled pair of questions (the one type :func:`~costline.serving.cache.tune.read_pairs` reads).
LabelledPair = Pair


@dataclass(frozen=True)
class PairScores:
    """What the verification stage sees of each pair: cosine, the first guard that fired, features."""

    pairs: tuple[LabelledPair, ...]
    cosine: np.ndarray
    reasons: tuple[str | None, ...]
    features: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        return np.array([p.same_answer for p in self.pairs], dtype=bool)

    def subset(self, mask: np.ndarray) -> "PairScores":
        idx = np.flatnonzero(mask)
        return PairScores(tuple(self.pairs[i] for i in idx), self.cosine[idx],
                          tuple(self.reasons[i] for i in idx), self.features[idx])


def score_pairs(embedder: "Embedder", pairs: Sequence[LabelledPair], verifier: Verifier | None = None) -> PairScores:
    """Cosine (as the cache computes it), guard reason and admission features of each pair.

    ``q1`` plays the stored question and ``q2`` the new one.
    """
    verifier = verifier or Verifier()
    if not pairs:
        return PairScores((), np.zeros(0), (), np.zeros((0, len(FEATURE_NAMES))))
    vecs = embedder.encode([p.q1 for p in pairs] + [p.q2 for p in pairs])
    n = len(pairs)
    cos = np.einsum("ij,ij->i", vecs[:n], vecs[n:]).astype(np.float64)
    reasons, feats = [], []
    for p, c in zip(pairs, cos):
        q, s = verifier.features(p.q2), verifier.features(p.q1)
        reasons.append(guard(q, s))
        feats.append(pair_features(q, s, float(c)))
    return PairScores(tuple(pairs), cos, tuple(reasons), np.asarray(feats, dtype=np.float64))


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float
    recall: float
    false_hit_rate: float
    #: False-hit rate per trap category.
    per_category: dict[str, float] = field(default_factory=dict)

    def fits(self, target: float) -> bool:
        return self.false_hit_rate <= target and all(v <= 2 * target for v in self.per_category.values())


def operating_points(accepted_at: Any, labels: np.ndarray, traps: Sequence[str],
                     thresholds: Sequence[float] = THRESHOLDS) -> list[OperatingPoint]:
    """Recall and false-hit rates per threshold; ``accepted_at(t)`` is a bool mask of served pairs."""
    labels = np.asarray(labels, dtype=bool)
    cats = np.asarray(list(traps))
    out = []
    for t in thresholds:
        served = np.asarray(accepted_at(t), dtype=bool)
        recall = float(served[labels].mean()) if labels.any() else 0.0
        fhr = float(served[~labels].mean()) if (~labels).any() else 0.0
        per = {str(c): float(served[~labels & (cats == c)].mean()) for c in sorted(set(cats[~labels]))}
        out.append(OperatingPoint(float(t), recall, fhr, per))
    return out


@dataclass(frozen=True)
class AdmissionModel:
    """Logistic regression over standardised pair features, with its operating-point table."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    min_similarity: float
    points: tuple[OperatingPoint, ...]
    #: The probability a candidate needs (set by :meth:`at`).
    threshold: float = 0.5
    trained_on: dict[str, Any] = field(default_factory=dict)

    def probability(self, x: Sequence[float]) -> float:
        z = self.intercept
        for v, m, s, w in zip(x, self.mean, self.scale, self.coef):
            z += w * (v - m) / s
        return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        z = ((np.asarray(x) - np.asarray(self.mean)) / np.asarray(self.scale)) @ np.asarray(self.coef)
        return 1.0 / (1.0 + np.exp(-np.clip(z + self.intercept, -50, 50)))

    def admits(self, x: Sequence[float]) -> bool:
        return x[0] >= self.min_similarity and self.probability(x) >= self.threshold

    def point_for(self, target: float) -> OperatingPoint | None:
        """The operating point with the best recall that keeps the false-hit target (None: none does)."""
        fitting = [p for p in self.points if p.fits(target)]
        return max(fitting, key=lambda p: (p.recall, -p.threshold)) if fitting else None

    def at(self, target: float) -> "AdmissionModel":
        """This model at the operating point for ``target`` (the strictest point when none fits)."""
        point = self.point_for(target)
        if point is None:
            point = max(self.points, key=lambda p: p.threshold)
        return replace(self, threshold=point.threshold)

    # -- files ---------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "features": list(self.features), "mean": list(self.mean),
                "scale": list(self.scale), "coef": list(self.coef), "intercept": self.intercept,
                "min_similarity": self.min_similarity, "trained_on": self.trained_on,
                "operating_points": [{"threshold": p.threshold, "recall": p.recall,
                                      "false_hit_rate": p.false_hit_rate, "per_category": p.per_category}
                                     for p in self.points]}

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model file atomically (a temporary file renamed over it)."""
        from costline.fsutil import atomic_write

        with atomic_write(path, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "AdmissionModel":
        """Read a model file; :class:`CacheError` naming the file when it is not one."""
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise CacheError(f"cannot read the admission model {path}: {exc.strerror or exc}; "
                             "train one with `costline cache train`") from None
        except ValueError as exc:
            raise CacheError(f"{path} is not an admission model (not JSON: {exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise CacheError(f"{path} is not an admission model (format is not {FORMAT!r})")
        try:
            features = tuple(str(f) for f in doc["features"])
            if features != FEATURE_NAMES:
                raise CacheError(f"{path} was trained on other features ({', '.join(features)}); "
                                 "retrain it with `costline cache train`")
            vecs = [tuple(float(v) for v in doc[k]) for k in ("mean", "scale", "coef")]
            if any(len(v) != len(features) for v in vecs) or any(s <= 0 for s in vecs[1]):
                raise ValueError("mean, scale and coef must have one positive-scale entry per feature")
            points = tuple(OperatingPoint(float(p["threshold"]), float(p["recall"]), float(p["false_hit_rate"]),
                                          {str(k): float(v) for k, v in p["per_category"].items()})
                           for p in doc["operating_points"])
            if not points:
                raise ValueError("no operating points")
            return cls(features, *vecs, float(doc["intercept"]), float(doc["min_similarity"]), points,
                       trained_on=dict(doc.get("trained_on") or {}))
        except CacheError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise CacheError(f"{path} is not a valid admission model: {exc}") from None


def train_admission(scores: PairScores, *, min_similarity: float = 0.5, folds: int = 5,
                    seed: int = 0, trained_on: dict[str, Any] | None = None) -> AdmissionModel:
    """Fit the model on the pairs over the cosine floor, guarded or not.

    The guards already reject most traps of a pair set written with them in mind, so the model
    learns from every pair over ``min_similarity`` (what a near-miss looks like in the soft
    features, whatever guard would catch it): a second line for the traps the guards miss. The
    operating points come from out-of-fold predictions and count every pair as the cache serves it:
    a pair a guard or the cosine floor rejects is never served.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    labels = scores.labels
    guarded = np.array([r is None for r in scores.reasons])
    reach = scores.cosine >= min_similarity
    x, y = scores.features[reach], labels[reach]
    if len(set(y.tolist())) < 2 or min(int(y.sum()), int((~y).sum())) < folds:
        raise CacheError(f"training needs at least {folds} same-answer and {folds} different-answer pairs "
                         f"above cosine {min_similarity}; got {int(y.sum())} and "
                         f"{int((~y).sum())}: label more pairs")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0

    def fit(xs: np.ndarray, ys: np.ndarray) -> Any:
        clf = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000)
        return clf.fit((xs - mean) / scale, ys)

    oof = np.zeros(len(y))
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        oof[te] = fit(x[tr], y[tr]).predict_proba((x[te] - mean) / scale)[:, 1]
    prob = np.zeros(len(labels))
    prob[reach] = oof
    traps = [p.trap for p in scores.pairs]
    points = operating_points(lambda t: guarded & reach & (prob >= t), labels, traps)
    final = fit(x, y)
    return AdmissionModel(FEATURE_NAMES, tuple(mean.tolist()), tuple(scale.tolist()),
                          tuple(final.coef_[0].tolist()), float(final.intercept_[0]), float(min_similarity),
                          tuple(points), trained_on=dict(trained_on or {}))
