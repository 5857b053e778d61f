"""The learned routing policy: a linear classifier on query embeddings.

Trained (``costline route train``) on labelled rows ``{"query", "task_type", "tier"}`` where
``tier`` is the *cheapest adequate* API tier for the query. Since tiers are ordered, the
chance that tier *t* is adequate is the predicted probability that the cheapest adequate
tier is *t* or a cheaper one; the policy picks the cheapest tier whose chance reaches
``min_adequacy`` (``[serving.router] min_adequacy``), and reports that chance as its confidence.

Features: the query's embedding (``featurizer``: ``"minilm"`` — the semantic cache's
:class:`~costline.serving.embedding.Embedder`, all-MiniLM-L6-v2, 384 dims — or
``"hashing"``, a dependency-free bag of hashed words and word pairs of the query's visible text, a script written
without spaces read as its letters and letter pairs: :class:`HashingFeaturizer`), a one-hot
of the task type and the length of the query's visible text
(:func:`~costline.serving.routing.router.routing_text`: padding with whitespace, invisible or control
characters does not lengthen a query; a long query's head and tail are read, no more). Fitting needs
scikit-learn (the ``serving`` extra); the saved policy is plain numpy arrays (``.npz``, no pickle), so
routing needs only numpy and the featurizer. The file records the featurizer's version
(:data:`FEATURIZER_VERSIONS`), and a policy is read with the features it was fitted on: a file without one (written
before versions were) is version 1, and a featurizer handed in that computes another version is refused.

Features or probabilities that are not finite numbers (a NaN or infinite vector handed in), or a ``minilm``
vector whose length is not about 1, raise :class:`~costline.serving.errors.RoutingError` rather than routing
as if sure: the :class:`~costline.serving.routing.router.Router` then sends the request to its fallback tier
and logs why.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import unicodedata
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from costline import contract
from costline.serving.errors import MissingExtraError, PolicyFileError, RoutingError
from costline.serving.routing.router import Decision, routing_text, unspaced_letter
from costline.serving.settings import ServingConfig
from costline.textutil import combining_marks, mark_code_points

__all__ = [
    "Featurizer",
    "HashingFeaturizer",
    "FEATURIZERS",
    "FEATURIZER_VERSIONS",
    "make_featurizer",
    "LabelledQuery",
    "read_rows",
    "LearnedPolicy",
    "train_policy",
]

_FORMAT = "costline-route-policy/1"
#: The format of a file whose featurizer is not at version 1: costline from before featurizer versions reads every file
#: as version 1, so it must refuse these ("retrain it") rather than route with other features than they were fitted on.
_FORMAT_VERSIONED = "costline-route-policy/2"


class _NoEncode:
    """Stands in for the featurizer when the embeddings are given (so it is never loaded)."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:  # pragma: no cover - never called
        raise AssertionError("embeddings were given")


_NO_ENCODE = _NoEncode()


class Featurizer(Protocol):
    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class HashingFeaturizer:
    """Words and word pairs of a text's visible text hashed into ``dim`` buckets, L2-normalised (numpy only).

    ``version`` 2 (the current one) reads a run of a script written without spaces (Chinese, Japanese, Thai...:
    :func:`~costline.serving.routing.router.unspaced_letter`) as its letters, each a word, so that its pairs are the
    run's letter bigrams (the usual bag of words for such text), and keeps a letter's combining marks in its word
    (Hindi's vowel signs). Version 1, which policies saved before versions were are read with, took a whole unspaced
    sentence for one word (so a policy learned nothing from it) and split a word at each vowel sign; the two read a
    text of spaced words without marks (English) alike.

    Of a long text, its head and tail only (:func:`routing_text`): a request body's megabytes cost no more than
    its first and last 32,768 characters."""

    _WORD = re.compile(r"\w+")

    def __init__(self, dim: int = 384, *, version: int = 2) -> None:
        if version not in FEATURIZER_VERSIONS["hashing"]:
            raise RoutingError(f"hashing featurizer version {version!r}: this costline has versions "
                               f"{', '.join(map(str, FEATURIZER_VERSIONS['hashing']))}")
        self.dim = dim
        self.version = version
        if version == 1:  # the tables a non-ASCII text is read with, built now, not on the first request
            _marks_table()
        else:
            _word_pattern()

    def words(self, text: str) -> list[str]:
        """The words of ``text``'s visible text, lower-cased, as this version reads them."""
        text = routing_text(text).lower()
        if self.version == 1:
            return self._WORD.findall(text.translate(_marks_table()) if not text.isascii() else text)
        if text.isascii():
            return self._WORD.findall(text)
        words: list[str] = []
        for chunk in _word_pattern().findall(text):
            start = 0  # of the spaced word being read
            for i, ch in enumerate(chunk):
                if unspaced_letter(ch):
                    if start < i:
                        words.append(chunk[start:i])
                    words.append(ch)
                    start = i + 1
                elif start == i > 0 and unicodedata.category(ch)[0] == "M":
                    words[-1] += ch  # a mark of the unspaced letter before it (Thai ที่: a vowel and a tone mark)
                    start = i + 1
            if start < len(chunk):
                words.append(chunk[start:])
        return words

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            words = self.words(text)
            for piece in words + [f"{a} {b}" for a, b in zip(words, words[1:])]:
                h = int.from_bytes(hashlib.blake2b(piece.encode(), digest_size=8).digest(), "big")
                out[i, h % self.dim] += 1.0 if (h >> 63) else -1.0
            norm = float(np.linalg.norm(out[i]))
            if norm > 0:
                out[i] /= norm
        return out


@functools.cache
def _marks_table() -> dict[int, None]:
    """A :meth:`str.translate` table deleting the marks the visible text dropped before it kept a letter's own (Mn,
    Me; it kept Mc): version 1 of the hashing featurizer reads the text it was fitted on. Built once, from
    :func:`~costline.textutil.mark_code_points` (the visible text's own read of Unicode)."""
    return dict.fromkeys(mark_code_points("Mn", "Me"))


@functools.cache
def _word_pattern() -> re.Pattern[str]:
    """A word with its letters' combining marks (``\\w`` alone stops at each: a mark is not alphanumeric)."""
    return re.compile(f"[\\w{combining_marks()}]+")


def _given_version(featurizer: Featurizer | None, name: str) -> int | None:
    """The version of ``name``'s features a featurizer handed in computes, where it says (a hashing featurizer does;
    a MiniLM embedder computes the same vectors for each version: only the length feature differs)."""
    return featurizer.version if isinstance(featurizer, HashingFeaturizer) and name == "hashing" else None


def _minilm(serving: ServingConfig | None) -> Featurizer:
    from costline.serving.embedding_onnx import make_embedder

    cache = (serving or ServingConfig()).cache  # the same model files, threads and runtime as the cache
    return make_embedder(cache)


def _hashing(serving: ServingConfig | None) -> Featurizer:
    return HashingFeaturizer()


#: ``[serving.router] featurizer`` → factory (of the featurizer's current version).
FEATURIZERS: dict[str, Callable[[ServingConfig | None], Featurizer]] = {
    "minilm": _minilm,
    "hashing": _hashing,
}

#: The versions of each featurizer's features this costline computes, the current one last (a featurizer not named:
#: version 1 only). A policy file records the version it was fitted with and is read with it.
#: Version 2 of both also measures the length feature with a letter's own marks (a Hindi vowel sign counts, as
#: :func:`~costline.textutil.visible_text` reads it now); version 1 measures it as it was fitted, without them.
FEATURIZER_VERSIONS: dict[str, tuple[int, ...]] = {
    "minilm": (1, 2),
    "hashing": (1, 2),
}


def _versions(name: str) -> tuple[int, ...]:
    return FEATURIZER_VERSIONS.get(name, (1,))


def make_featurizer(name: str, serving: ServingConfig | None = None, *, version: int | None = None) -> Featurizer:
    """The featurizer ``name`` (to share the cache's Embedder, pass it as ``featurizer=`` instead), at ``version``
    (None: the current one; an older one to read a policy fitted with it)."""
    try:
        factory = FEATURIZERS[name]
    except KeyError:
        raise RoutingError(f"[serving.router] featurizer = {name!r}: use one of {', '.join(FEATURIZERS)}") from None
    if version is None or version == _versions(name)[-1]:
        return factory(serving)
    if name == "hashing" and version in _versions(name):
        return HashingFeaturizer(version=version)
    if name == "minilm" and version in _versions(name):  # the same embedding: only the length feature differs
        return factory(serving)
    raise RoutingError(f"featurizer {name!r} version {version!r}: this costline computes versions "
                       f"{', '.join(map(str, _versions(name)))}: retrain the policy with `costline route train`")


@dataclass(frozen=True, slots=True)
class LabelledQuery:
    """A training/eval row: the cheapest API tier that answered ``query`` adequately."""

    query: str
    task_type: str
    tier: str
    input_tokens: int = 0
    output_tokens: int = 0


def read_rows(path: str | Path) -> list[LabelledQuery]:
    """Rows of a JSONL file (``query``, ``task_type``, ``tier``; optional token counts)."""
    rows = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise RoutingError(f"cannot read labelled rows from {path}: {exc.strerror or exc}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            tier = str(raw["tier"])
            if tier not in contract.API_TIERS:
                raise ValueError(f"tier {tier!r} is not one of {', '.join(contract.API_TIERS)}")
            rows.append(LabelledQuery(str(raw["query"]), str(raw.get("task_type") or ""), tier,
                                      int(raw.get("input_tokens") or 0), int(raw.get("output_tokens") or 0)))
        except (ValueError, KeyError, TypeError) as exc:
            raise RoutingError(f"{path}:{n}: bad row ({exc}): each line needs query, task_type and tier") from None
    if not rows:
        raise RoutingError(f"{path}: no labelled rows")
    return rows


def _length(query: str, version: int) -> int:
    """The length feature's characters: the query's routing text; version 1 (a policy fitted before the visible text
    kept a letter's own marks) without the marks it then dropped (Mn, Me), so the policy reads what it was fitted on."""
    text = routing_text(query)
    return len(text if version != 1 or text.isascii() else text.translate(_marks_table()))


def _features(featurizer: Featurizer, queries: Sequence[str], task_types: Sequence[str],
              vocab: Sequence[str], embeddings: np.ndarray | None = None, *, version: int = 2) -> np.ndarray:
    """The rows a policy is fitted on and reads: the featurizer's vector, the task type's one-hot, the length (as
    ``version`` measures it: :func:`_length`)."""
    emb = (np.asarray(featurizer.encode(list(queries)), dtype=np.float32) if embeddings is None
           else np.asarray(embeddings, dtype=np.float32).reshape(len(queries), -1))
    onehot = np.zeros((len(queries), len(vocab)), dtype=np.float32)
    index = {t: i for i, t in enumerate(vocab)}
    for i, t in enumerate(task_types):
        if t in index:
            onehot[i, index[t]] = 1.0
    length = np.array([[math.log1p(_length(q, version)) / 8.0] for q in queries], dtype=np.float32)
    x = np.hstack([emb, onehot, length])
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise RoutingError(f"the features of {int(bad.sum())} of {len(queries)} queries are not finite numbers (NaN "
                           "or infinite embedding values): check the embedder")
    return x


class LearnedPolicy:
    """Routes with a fitted linear classifier; see the module docstring."""

    def __init__(
        self,
        *,
        coef: np.ndarray,
        intercept: np.ndarray,
        classes: Sequence[str],
        task_types: Sequence[str],
        featurizer_name: str,
        featurizer: Featurizer | None = None,
        min_adequacy: float = 0.7,
        serving: ServingConfig | None = None,
        featurizer_version: int | None = None,
    ) -> None:
        """``featurizer_version``: the version of ``featurizer_name``'s features the weights were fitted on (None: the
        current one, :data:`FEATURIZER_VERSIONS`)."""
        if not 0.0 < min_adequacy <= 1.0:
            raise RoutingError(f"[serving.router] min_adequacy = {min_adequacy}: must be in (0, 1]")
        order = {t: i for i, t in enumerate(contract.API_TIERS)}
        self.classes = tuple(classes)
        if any(c not in order for c in self.classes):
            raise PolicyFileError(f"the policy's classes {self.classes} are not API tiers")
        self.coef = np.asarray(coef, dtype=np.float64)
        self.intercept = np.asarray(intercept, dtype=np.float64)
        self.task_types = tuple(task_types)
        self.featurizer_name = featurizer_name
        self.featurizer_version = _versions(featurizer_name)[-1] if featurizer_version is None else featurizer_version
        given = _given_version(featurizer, featurizer_name)
        if given is not None and given != self.featurizer_version:
            raise RoutingError(
                f"the {featurizer_name} featurizer handed in computes version {given} of its features, but the policy "
                f"was fitted on version {self.featurizer_version}: pass make_featurizer({featurizer_name!r}, "
                f"version={self.featurizer_version}) or no featurizer (the policy makes the right one), or retrain the "
                "policy with `costline route train`")
        if self.featurizer_version == 1:  # its length table, built now, not on the first non-ASCII request
            _marks_table()
        self._featurizer = featurizer
        self._serving = serving
        self.min_adequacy = min_adequacy

    @property
    def featurizer(self) -> Featurizer:
        if self._featurizer is None:
            self._featurizer = make_featurizer(self.featurizer_name, self._serving, version=self.featurizer_version)
        return self._featurizer

    # -- prediction ------------------------------------------------------------------------
    def probabilities(self, queries: Sequence[str], task_types: Sequence[str | None],
                      embeddings: np.ndarray | None = None) -> np.ndarray:
        """P(cheapest adequate tier = c) per row, columns in ``self.classes`` order.

        ``embeddings``: the queries' vectors from this policy's featurizer, when already computed.
        """
        x = _features(self.featurizer if embeddings is None else _NO_ENCODE, queries,
                      [t or "" for t in task_types], self.task_types, embeddings, version=self.featurizer_version)
        if self.featurizer_name == "minilm":
            _check_unit(x[:, :self.coef.shape[1] - len(self.task_types) - 1])
        with np.errstate(over="ignore", invalid="ignore"):  # not finite: refused below
            z = x @ self.coef.T + self.intercept
            if z.shape[1] == 1:  # binary: sklearn keeps one column for the second class
                p1 = 1.0 / (1.0 + np.exp(-z[:, 0]))
                probs = np.stack([1.0 - p1, p1], axis=1)
            else:
                z -= z.max(axis=1, keepdims=True)
                e = np.exp(z)
                probs = e / e.sum(axis=1, keepdims=True)
        _check_probabilities(probs)
        return probs

    def decide(self, probs: np.ndarray) -> Decision:
        """The cheapest tier whose chance of being adequate reaches ``min_adequacy``."""
        probs = np.asarray(probs, dtype=np.float64)
        _check_probabilities(probs[None, :])
        by_tier = dict(zip(self.classes, probs))
        cumulative = 0.0
        for tier in contract.API_TIERS:
            cumulative += float(by_tier.get(tier, 0.0))
            if cumulative >= self.min_adequacy - 1e-9:
                return Decision(tier, round(min(cumulative, 1.0), 4), f"P(adequate) {cumulative:.2f}")
        return Decision(contract.API_TIERS[-1], 1.0, "no tier reached min_adequacy")

    def route(self, query: str, task_type: str | None, *, embedding: np.ndarray | None = None,
              request_chars: int | None = None) -> Decision:
        """Route one query; ``embedding``: its MiniLM vector if the semantic cache already computed it
        (used when this policy's featurizer is ``minilm`` and the size matches; else it embeds).
        ``request_chars`` (the whole request's size) is not read: the classifier was fitted on queries alone."""
        emb = self._usable(embedding)
        return self.decide(self.probabilities([query], [task_type], None if emb is None else emb[None, :])[0])

    def _usable(self, embedding: np.ndarray | None) -> np.ndarray | None:
        if embedding is None or self.featurizer_name != "minilm":
            return None
        vec = np.asarray(embedding, dtype=np.float32).reshape(-1)
        dim = self.coef.shape[1] - len(self.task_types) - 1
        return vec if vec.shape[0] == dim else None

    def route_many(self, queries: Sequence[str], task_types: Sequence[str | None]) -> list[Decision]:
        """Route a batch at once (one embedding call)."""
        return [self.decide(p) for p in self.probabilities(queries, task_types)]

    # -- persistence -----------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": _FORMAT if self.featurizer_version == 1 else _FORMAT_VERSIONED, "classes": list(self.classes),
                "task_types": list(self.task_types), "featurizer": self.featurizer_name,
                "featurizer_version": self.featurizer_version}
        with path.open("wb") as f:
            np.savez(f, coef=self.coef, intercept=self.intercept, meta=np.array(json.dumps(meta)))
        return path

    @classmethod
    def load(cls, path: str | Path, *, min_adequacy: float = 0.7, featurizer: Featurizer | None = None,
             serving: ServingConfig | None = None) -> "LearnedPolicy":
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                coef, intercept = data["coef"], data["intercept"]
        except FileNotFoundError:
            raise PolicyFileError(f"no learned routing policy at {path}: run `costline route train` "
                                  "or set [serving.router] policy_path") from None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # a truncated file: the last two
            raise PolicyFileError(f"{path} is not a costline routing policy ({exc or type(exc).__name__}): retrain "
                                  "it with `costline route train`") from None
        if not isinstance(meta, dict) or meta.get("format") not in (_FORMAT, _FORMAT_VERSIONED):
            found = meta.get("format") if isinstance(meta, dict) else meta
            raise PolicyFileError(f"{path}: format {found!r} is not {_FORMAT!r} or {_FORMAT_VERSIONED!r}: retrain it")
        _check_file(path, meta, coef, intercept, serving)
        return cls(coef=coef, intercept=intercept, classes=meta["classes"], task_types=meta["task_types"],
                   featurizer_name=meta["featurizer"], featurizer=featurizer, min_adequacy=min_adequacy,
                   serving=serving, featurizer_version=meta.get("featurizer_version", 1))


#: How far from 1 a MiniLM vector's length may be: the embedder normalises each vector (float32 rounding and the
#: mean of a long text's windows stay within 1e-5); anything further was not made by it.
_UNIT_TOLERANCE = 1e-3


def _check_unit(vectors: np.ndarray) -> None:
    """Refuse (:class:`RoutingError`) vectors that are not of unit length, as the MiniLM embedder's all are."""
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    bad = np.abs(norms - 1.0) > _UNIT_TOLERANCE
    if bad.any():
        raise RoutingError(f"a query's embedding has length {float(norms[bad][0]):.6g}, not 1 (the embedder "
                           "normalises every vector): check the embedder")


def _check_probabilities(probs: np.ndarray) -> None:
    """Refuse (:class:`RoutingError`) probabilities that are not finite or do not sum to 1 (weights or features
    so large that they overflowed): no decision can be read from them."""
    if not np.isfinite(probs).all() or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-6):
        raise RoutingError("the routing classifier's probabilities are not finite (its weights or the query's "
                           "features overflowed): check the embedder, or retrain with `costline route train`")


def _check_file(path: Path, meta: dict, coef: np.ndarray, intercept: np.ndarray,
                serving: ServingConfig | None) -> None:
    """Refuse (:class:`PolicyFileError`) a file whose parts do not fit together or name features this version does
    not compute: loaded, it would fail on every request, or route by the wrong column."""
    def bad(why: str) -> PolicyFileError:
        return PolicyFileError(f"{path}: {why}: retrain it with `costline route train`")

    classes, task_types, name = meta.get("classes"), meta.get("task_types"), meta.get("featurizer")
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)
            and isinstance(task_types, list) and all(isinstance(t, str) for t in task_types)):
        raise bad("its metadata lacks the classes or task types")
    if name not in FEATURIZERS:
        raise bad(f"featurizer {name!r} is not one this version has ({', '.join(FEATURIZERS)})")
    version = meta.get("featurizer_version", 1)  # a file from before versions: 1
    versioned = meta["format"] == _FORMAT_VERSIONED  # a file of format 2 is one whose version is not 1
    if type(version) is not int or version not in _versions(name) or versioned != (version != 1):
        raise bad(f"featurizer {name} version {version!r} (format {meta['format']!r}) is not one this version reads "
                  f"({', '.join(map(str, _versions(name)))})")
    if coef.ndim != 2 or intercept.ndim != 1 or coef.shape[0] != intercept.shape[0]:
        raise bad(f"weights of shape {coef.shape} and intercept {intercept.shape} do not fit together")
    rows = 1 if len(classes) == 2 else len(classes)  # binary: sklearn keeps one row
    if len(classes) < 2 or coef.shape[0] != rows or len(set(classes)) != len(classes):
        raise bad(f"{coef.shape[0]} rows of weights for the classes {classes}")
    dim = coef.shape[1] - len(task_types) - 1
    want = _embedding_dim(name, serving)
    if dim < 1 or (want is not None and dim != want):
        raise bad(f"its weights expect {coef.shape[1]} features, but {name} vectors ({want or '?'} dims), "
                  f"{len(task_types)} task types and the length make {(want or 0) + len(task_types) + 1}")


def _embedding_dim(name: str, serving: ServingConfig | None) -> int | None:
    """The size of the vectors ``name`` makes, when known without loading a model."""
    if name == "hashing":
        return HashingFeaturizer().dim
    if name == "minilm" and (serving or ServingConfig()).cache.model_path is None:
        from costline.serving.embedding import MINILM_DIM

        return MINILM_DIM
    return None


def train_policy(
    rows: Iterable[LabelledQuery],
    *,
    featurizer_name: str = "minilm",
    featurizer: Featurizer | None = None,
    min_adequacy: float = 0.7,
    c: float = 4.0,
    serving: ServingConfig | None = None,
) -> LearnedPolicy:
    """Fit a multinomial logistic regression on ``rows`` (needs scikit-learn)."""
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        raise MissingExtraError("scikit-learn") from None
    rows = list(rows)
    classes = sorted({r.tier for r in rows}, key=contract.API_TIERS.index)
    if len(classes) < 2:
        raise RoutingError(f"the training rows name only {classes}: a router needs at least two tiers")
    version = _given_version(featurizer, featurizer_name)  # None: the current one
    featurizer = featurizer or make_featurizer(featurizer_name, serving)
    vocab = sorted({r.task_type for r in rows if r.task_type})
    x = _features(featurizer, [r.query for r in rows], [r.task_type for r in rows], vocab,
                  version=_versions(featurizer_name)[-1] if version is None else version)
    y = np.array([classes.index(r.tier) for r in rows])
    model = LogisticRegression(C=c, max_iter=2000)
    model.fit(x, y)
    fitted = [classes[int(i)] for i in model.classes_]
    return LearnedPolicy(coef=model.coef_, intercept=model.intercept_, classes=fitted, task_types=vocab,
                         featurizer_name=featurizer_name, featurizer=featurizer, min_adequacy=min_adequacy,
                         serving=serving, featurizer_version=version)

