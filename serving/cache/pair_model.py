"""The pair model: a small cross-encoder that reads both questions at once, the verification stage's last check.

The guards read words; the admission model reads features of words. Both miss an opposite said in words no
rule or lexicon holds ("is the course live" / "is it pre-recorded rather than live", "does the fee cover
the module" / "is the module charged on top of the fee"). A cross-encoder attends from every token of one
question to every token of the other, so it can learn what makes two questions want different answers from
labelled pairs, not from a list. costline's is the packaged all-MiniLM-L6-v2 cut to its first ``layers``
transformer layers, with a one-logit head, fine-tuned on our own labelled pairs (never on third-party pair
sets): ``costline cache train-pair-model``. A candidate that passed every guard and the admission model is
served only when the pair model's probability that both questions share one answer reaches ``threshold``;
otherwise the lookup records the reject reason ``pair_model``.

The model file is a safetensors file (no pickle: loading it never runs code) holding only what fine-tuning
changed — the transformer layers, pooler and head; the word embeddings stay frozen and are read from the
packaged MiniLM — and, in its metadata, the format, the layer count, the threshold and what it was trained
on. It is loaded on first use and runs one pair per call, on ONNX Runtime where the embedder does
(``[serving.cache] embedder`` "auto" with onnxruntime installed, or "onnx"; :class:`OnnxPairModel`) and on
PyTorch otherwise (:class:`PairModel`, also the training path). The ONNX graph is exported from the loaded
PyTorch model once and cached beside the embedder's exports (``[serving.cache] onnx_cache_dir``), keyed by
the model file's content and the base model's, so a retrained file gets a new export and a restart only
opens the cached one (:func:`export_pair_onnx`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from costline.serving.errors import CacheError

__all__ = ["LazyPairModel", "OnnxPairModel", "PairModel", "default_pair_model_path", "export_pair_onnx",
           "mine_cross_negatives", "pair_onnx_path", "read_header", "train_pair_model"]

FORMAT = "costline-cache-pair-model/1"
#: Question pairs longer than this many word pieces (both together) are cut from the end of each.
MAX_LENGTH = 96
_FROZEN_PREFIX = "bert.embeddings."
#: Bumped whenever the exported pair-model graph changes, so old exports are not reused.
_EXPORT_VERSION = "1"
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_OUTPUT = "logit"
log = logging.getLogger(__name__)


def default_pair_model_path() -> Path:
    """The pair model shipped with costline (trained on our own pair sets: docs/cache.md)."""
    return Path(__file__).resolve().parent / "data" / "cache_pair_model.safetensors"


def _base_path(base: str | os.PathLike[str] | None) -> Path:
    if base is not None:
        return Path(base)
    from costline.serving.embedding import default_model_path

    return default_model_path()


def _build(base: Path, layers: int) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    cfg = AutoConfig.from_pretrained(base, num_labels=1)
    if not 1 <= layers <= cfg.num_hidden_layers:
        raise CacheError(f"a pair model needs 1 to {cfg.num_hidden_layers} layers of {base.name}; got {layers}")
    cfg.num_hidden_layers = layers
    # transformers reports the new head as missing and draws a progress bar: true, and noise in a lookup
    quiet = logging.getLogger("transformers")
    level, bars = quiet.level, hf_logging.is_progress_bar_enabled()
    quiet.setLevel(logging.ERROR)
    hf_logging.disable_progress_bar()
    try:
        model = AutoModelForSequenceClassification.from_pretrained(base, config=cfg)
    finally:
        quiet.setLevel(level)
        if bars:
            hf_logging.enable_progress_bar()
    return model, AutoTokenizer.from_pretrained(base)


def _threshold(from_file: float, given: float | None) -> float:
    t = from_file if given is None else float(given)
    if not 0.0 <= t < 1.0:
        raise CacheError(f"a pair model's threshold must be in [0, 1); got {t!r}")
    return t


class _Decides:
    """What both runtimes answer from their ``probabilities`` and ``threshold``."""

    threshold: float

    def probabilities(self, pairs: Sequence[tuple[str, str]], batch_size: int = 64) -> np.ndarray:
        raise NotImplementedError

    def probability(self, stored: str, asked: str) -> float:
        return float(self.probabilities([(stored, asked)])[0])

    def same_answer(self, stored: str, asked: str, threshold: float | None = None) -> bool:
        """Whether ``asked`` may get the answer stored for ``stored``: probability >= ``threshold`` (None: the
        model's own; never under the model's own)."""
        need = self.threshold if threshold is None else max(self.threshold, threshold)
        return self.probability(stored, asked) >= need


@dataclass
class PairModel(_Decides):
    """Probability that two questions share one answer; :meth:`same_answer` is thread-safe."""

    model: Any
    tokenizer: Any
    layers: int
    threshold: float
    trained_on: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: What runs the model (:class:`OnnxPairModel` says "onnx").
    runtime = "torch"


    def probabilities(self, pairs: Sequence[tuple[str, str]], batch_size: int = 64) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(pairs), batch_size):
                chunk = pairs[i:i + batch_size]
                enc = self.tokenizer([a for a, _ in chunk], [b for _, b in chunk], padding=True,
                                     truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
                out.append(torch.sigmoid(self.model(**enc).logits.squeeze(-1)).numpy())
        return np.concatenate(out) if out else np.zeros(0)


    # -- files ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fine-tuned tensors and metadata (safetensors, atomically; fp16 halves the file)."""
        from safetensors.torch import save

        from costline.fsutil import atomic_write

        tensors = {k: v.detach().to("cpu").half().contiguous() for k, v in self.model.state_dict().items()
                   if not k.startswith(_FROZEN_PREFIX)}
        meta = {"format": FORMAT, "layers": str(self.layers), "threshold": repr(self.threshold),
                "max_length": str(MAX_LENGTH), "trained_on": json.dumps(self.trained_on, sort_keys=True)}
        with atomic_write(path, "wb") as fh:
            fh.write(save(tensors, metadata=meta))

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, base: str | os.PathLike[str] | None = None,
             threshold: float | None = None) -> "PairModel":
        """Read a model file; :class:`CacheError` naming the file when it is not one."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        where = Path(path)
        layers, file_threshold, trained_on = read_header(where)
        try:
            tensors = load_file(str(where))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CacheError(f"{where} is not a valid pair model: {exc}") from None
        model, tokenizer = _build(_base_path(base), layers)
        own = {k for k in model.state_dict() if not k.startswith(_FROZEN_PREFIX)}
        if set(tensors) != own:
            raise CacheError(f"{where} does not fit a {layers}-layer MiniLM (tensors differ: "
                             f"{sorted(set(tensors) ^ own)[:3]}); retrain it with `costline cache train-pair-model`")
        model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=False)
        model.eval()
        t = _threshold(file_threshold, threshold)
        return cls(model, tokenizer, layers, t, trained_on)


def read_header(path: str | os.PathLike[str]) -> tuple[int, float, dict[str, Any]]:
    """(layers, threshold, trained_on) of a model file, reading only its header; CacheError if it is none."""
    from safetensors import SafetensorError, safe_open  # numpy: reading a header never imports PyTorch

    where = Path(path)
    if not where.is_file():
        raise CacheError(f"cannot read the pair model {where}: no such file; train one with "
                         "`costline cache train-pair-model`, or set [serving.cache] verify_pair_model = false")
    try:
        with safe_open(str(where), framework="numpy") as fh:
            meta = fh.metadata() or {}
        if meta.get("format") != FORMAT:
            raise CacheError(f"{where} is not a pair model (format is not {FORMAT!r})")
        return int(meta["layers"]), float(meta["threshold"]), dict(json.loads(meta.get("trained_on") or "{}"))
    except CacheError:
        raise
    except (SafetensorError, OSError, KeyError, ValueError, TypeError) as exc:
        raise CacheError(f"{where} is not a valid pair model: {exc}") from None


# -- ONNX Runtime ---------------------------------------------------------------------------------
def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pair_onnx_path(path: str | os.PathLike[str], *, base: str | os.PathLike[str] | None = None,
                   cache_dir: str | os.PathLike[str] | None = None, int8: bool = False) -> Path:
    """Where the ONNX export of the pair model file ``path`` (on ``base``) is cached: keyed by the file's
    content, the base model's files (the word embeddings come from them) and the export settings; the int8
    file lies beside the float32 one it is quantised from. (Where that folder cannot be written,
    :func:`export_pair_onnx` exports into the process's temporary folder instead, as the embedder does.)"""
    from costline.serving.embedding_onnx import default_onnx_cache_dir

    root = Path(cache_dir).expanduser() if cache_dir is not None else default_onnx_cache_dir()
    return root / _pair_folder(Path(path), base) / _pair_file(int8)


def _pair_folder(where: Path, base: str | os.PathLike[str] | None) -> str:
    """The export's folder name: the model file's content, the base model's files and the export settings."""
    from costline.serving.embedding_onnx import _OPSET, _model_key

    h = hashlib.sha256(f"pair-model v{_EXPORT_VERSION} opset{_OPSET} max_length{MAX_LENGTH}\n".encode())
    h.update(_file_hash(where).encode() + b"\0" + _model_key(_base_path(base), False).encode())
    return f"pair-{h.hexdigest()[:16]}"


def _pair_file(int8: bool) -> str:
    return "pair_model.int8.onnx" if int8 else "pair_model.onnx"


def export_pair_onnx(path: str | os.PathLike[str], *, base: str | os.PathLike[str] | None = None,
                     cache_dir: str | os.PathLike[str] | None = None, model: PairModel | None = None,
                     int8: bool = False) -> Path:
    """The ONNX file of the pair model file ``path``, exported if not cached (:func:`pair_onnx_path`).

    The export loads the file on PyTorch (or takes ``model``, that file already loaded, fp32) and traces it
    with eager attention; the graph takes ``input_ids``, ``attention_mask`` and ``token_type_ids`` (int64,
    batch x tokens, both dynamic) and returns ``logit`` (float32, batch). With ``int8`` that float32 export
    (cached too) is quantised as the embedder's int8 export is (onnxruntime.quantization.quantize_dynamic:
    MatMul weights, one scale per output channel; activations scaled per call). Written atomically under
    the file lock the embedder's exports use, so processes starting together on a clean cache export once.
    :class:`CacheError` naming the file when it cannot be exported.
    """
    from costline.serving.embedding_onnx import EmbedderError, _quantize, cached_export, export_target

    where = Path(path)
    read_header(where)  # a file that is no pair model is refused before anything is hashed or loaded
    try:  # pair_onnx_path's, or the process's temporary folder when that cannot be written (as the embedder's)
        target = export_target(cache_dir, _pair_folder(where, base), _pair_file(int8))
    except EmbedderError as exc:
        raise CacheError(f"cannot export the pair model {where} to ONNX: {exc}") from None
    root = target.parent.parent

    def export() -> None:
        if int8:
            fp32 = export_pair_onnx(where, base=base, cache_dir=root, model=model)
            log.info("costline: quantising the pair model's export %s to int8 (%s)", fp32, target)
            _quantize(fp32, target)
            return
        log.info("costline: exporting the pair model %s to ONNX (%s)", where, target)
        _export(model if model is not None else PairModel.load(where, base=base), target)
        (target.parent / "source.json").write_text(json.dumps(
            {"pair_model": str(where), "base": str(_base_path(base)), "export_version": _EXPORT_VERSION}))

    try:
        return cached_export(target, export)
    except CacheError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever failed, the message names the file and what to do
        raise CacheError(f"cannot export the pair model {where} to ONNX ({target}): {exc}; set "
                         "[serving.cache] embedder = \"torch\" to run it on PyTorch") from exc


def _export(pair: PairModel, target: Path) -> None:
    import warnings

    import torch

    from costline.fsutil import atomic_path
    from costline.serving.embedding_onnx import _OPSET

    class _Logit(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).logits.squeeze(-1)

    model = pair.model
    # eager attention traces to plain ops (SDPA's mask handling is traced as constants), as the embedder's
    was = getattr(model.config, "_attn_implementation", None)
    model.set_attn_implementation("eager")
    try:
        sample = {k: torch.ones(2, 8, dtype=torch.long) for k in _INPUTS}
        sample["token_type_ids"] = torch.tensor([[0] * 4 + [1] * 4] * 2)
        axes = {k: {0: "batch", 1: "tokens"} for k in _INPUTS} | {_OUTPUT: {0: "batch"}}
        with atomic_path(target) as tmp, torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about python-side shape checks
            torch.onnx.export(_Logit(model).eval(), tuple(sample[k] for k in _INPUTS), str(tmp),
                              input_names=list(_INPUTS), output_names=[_OUTPUT], dynamic_axes=axes,
                              opset_version=_OPSET, dynamo=False)
    finally:
        if was is not None and was != "eager":
            model.set_attn_implementation(was)


def _pair_tokenizer(base: Path) -> Any:
    """The fast tokenizer's own ``tokenizers.Tokenizer`` (what :class:`PairModel`'s transformers tokenizer
    runs), set to cut pairs as it does (longest first, at MAX_LENGTH) and not to pad (padded per batch).

    Read straight from the base's ``tokenizer.json``, as the ONNX embedder reads its own: the same ids, type ids
    and mask as transformers' tokenizer gives on all 26,329 pairs of our pair files (checked 2026-12-03), without
    importing transformers and PyTorch (~3 s of CPU and ~0.5 GiB resident per gateway process that runs ONNX only)."""
    from tokenizers import Tokenizer

    if (base / "tokenizer.json").is_file():
        tokenizer = Tokenizer.from_file(str(base / "tokenizer.json"))
    else:  # a base without a fast tokenizer's file: transformers builds one
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(base).backend_tokenizer
    tokenizer.enable_truncation(MAX_LENGTH, strategy="longest_first")
    tokenizer.no_padding()
    return tokenizer


@dataclass
class OnnxPairModel(_Decides):
    """:class:`PairModel`'s probabilities from its ONNX export, on ONNX Runtime; thread-safe (the session and
    the tokenizer's ``encode_batch`` are). With ``int8`` the export's MatMul weights are int8: ~0.6x the time
    of float32 per pair here, and the same decisions on every pair file but a few (docs/cache.md); dynamic
    quantisation scales activations per call, so it runs one pair per call, and a pair's probability never
    depends on the pairs beside it."""

    session: Any
    tokenizer: Any
    layers: int
    threshold: float
    onnx_path: Path
    trained_on: dict[str, Any] = field(default_factory=dict)
    int8: bool = False
    runtime = "onnx"

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, base: str | os.PathLike[str] | None = None,
             threshold: float | None = None, threads: int | None = None,
             cache_dir: str | os.PathLike[str] | None = None, int8: bool = False) -> "OnnxPairModel":
        """The model file ``path`` on ONNX Runtime (exported first if not cached; its int8 export with
        ``int8``), with ``threads`` intra-op threads (None or 0: the embedder's default, one; idle threads
        never spin). :class:`CacheError` naming the file when it cannot run."""
        where = Path(path)
        layers, file_threshold, trained_on = read_header(where)
        t = _threshold(file_threshold, threshold)
        onnx_file = export_pair_onnx(where, base=base, cache_dir=cache_dir, int8=int8)
        try:
            import onnxruntime as ort

            from costline.serving.embedding_onnx import DEFAULT_THREADS

            options = ort.SessionOptions()
            options.inter_op_num_threads = 1
            options.intra_op_num_threads = threads or DEFAULT_THREADS
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
            session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
            tokenizer = _pair_tokenizer(_base_path(base))
        except Exception as exc:  # noqa: BLE001 - named below, with what to do
            raise CacheError(f"cannot run the pair model {where} on ONNX Runtime ({onnx_file}): {exc}; delete "
                             f"{onnx_file.parent} to re-export it, or set [serving.cache] embedder = "
                             "\"torch\"") from exc
        return cls(session, tokenizer, layers, t, onnx_file, trained_on, int8)

    def probabilities(self, pairs: Sequence[tuple[str, str]], batch_size: int = 64) -> np.ndarray:
        from costline.serving.embedding_onnx import model_inputs

        if self.int8:
            batch_size = 1  # activations are scaled per call: a batch would move a pair's probability
        out = []
        for i in range(0, len(pairs), batch_size):
            chunk = [(a, b) for a, b in pairs[i:i + batch_size]]
            (logits,) = self.session.run([_OUTPUT], model_inputs(self.tokenizer, chunk))
            out.append(1.0 / (1.0 + np.exp(-logits.astype(np.float64))))
        return np.concatenate(out) if out else np.zeros(0)



class LazyPairModel:
    """A pair model file checked now (its header) and loaded on first use, once.

    ``runtime`` is a ``[serving.cache] embedder`` value and is resolved as the embedder's is
    (:func:`~costline.serving.embedding_onnx.resolve_embedder`): "auto" runs ONNX Runtime
    (:class:`OnnxPairModel`; the first start exports the model, ~10 s, later ones open the cached export)
    where onnxruntime is installed, PyTorch (:class:`PairModel`, ~1 s) otherwise; "torch" and "onnx" are
    themselves; "openvino" (the embedder's opt-in) runs the pair model on ONNX Runtime too, whose int8 export
    is the one measured on the pair sets. ``threads`` (ONNX only; 0 or None: one), ``cache_dir`` (None: the embedder's) and ``int8``
    (ONNX only: its int8 export; PyTorch always runs float32) are ``[serving.cache] embed_threads``,
    ``onnx_cache_dir`` and ``pair_model_int8``.

    :meth:`same_answer` never raises: a model that cannot run rejects the candidate (a miss is safe) and
    says why in the log, once.
    """

    def __init__(self, path: str | os.PathLike[str], *, threshold: float | None = None,
                 base: str | os.PathLike[str] | None = None, runtime: str = "auto", threads: int | None = None,
                 cache_dir: str | os.PathLike[str] | None = None, int8: bool = False) -> None:
        from costline.serving.embedding_onnx import EMBEDDERS, resolve_embedder

        if runtime not in EMBEDDERS:
            raise CacheError(f"a pair model runs where [serving.cache] embedder says: one of {', '.join(EMBEDDERS)}; "
                             f"got {runtime!r}")
        self.path = Path(path)
        self.layers, file_threshold, self.trained_on = read_header(self.path)
        self.threshold = file_threshold if threshold is None else float(threshold)
        self.runtime = "onnx" if resolve_embedder(runtime) == "openvino" else resolve_embedder(runtime)
        self.threads = threads
        self.cache_dir = cache_dir
        self.int8 = bool(int8) and self.runtime == "onnx"
        self._base = base
        self._model: PairModel | OnnxPairModel | None = None
        self._failed = False
        self._said_pair = False  # the first pair it could not read is logged with its traceback, the rest without
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """Whether the model is loaded (a lookup that reaches it now does not load it)."""
        return self._model is not None

    def get(self) -> PairModel | OnnxPairModel:
        with self._lock:
            if self._model is None:
                if self.runtime == "onnx":
                    self._model = OnnxPairModel.load(self.path, base=self._base, threshold=self.threshold,
                                                     threads=self.threads, cache_dir=self.cache_dir,
                                                     int8=self.int8)
                else:
                    self._model = PairModel.load(self.path, base=self._base, threshold=self.threshold)
            return self._model

    def same_answer(self, stored: str, asked: str, threshold: float | None = None) -> bool:
        if self._failed:  # not retried on every candidate: a load that failed once (an export!) fails again
            return False
        try:
            model = self.get()
        except Exception:  # noqa: BLE001 - a lookup never fails because of its last check
            self._failed = True
            log.exception("pair model %s cannot load; its candidates are rejected", self.path)
            return False
        try:
            return model.same_answer(stored, asked, threshold)
        except Exception:  # noqa: BLE001 - this pair only: one odd text never turns the model off for everyone
            log.warning("pair model %s could not read a pair; that candidate is rejected", self.path,
                        exc_info=not self._said_pair)
            self._said_pair = True
            return False


def mine_cross_negatives(pairs: Sequence[Any], embedder: Any, *, count: int, max_cosine: float = 0.8,
                         per_question: int = 2, pick: str = "similar", seed: int = 0) -> list[Any]:
    """Different-answer pairs of the kind a populated cache meets: two questions of *different* labelled pairs
    of one domain ("Are cider tastings available in the morning?" / "Is a reservation required for the
    tasting?"). A pair set of near-miss traps has none, and a model trained only on it learns that what is no
    near-miss is a paraphrase. For each question of ``pairs`` (one file's, written one question per pair), its
    ``per_question`` most similar questions of other pairs in its domain with a cosine at most ``max_cosine``
    (above it two pairs may ask the same thing); of those, the ``count`` most similar (``pick="similar"``) or
    ``count`` drawn at random with ``seed`` (``pick="random"``: every cosine band, as a cache meets them; the
    wrong answers a populated cache served were at cosine 0.5-0.75, under the most similar ones), each
    unordered pair once, labelled different-answer (category "cross")."""
    if pick not in ("similar", "random"):
        raise ValueError(f"pick must be 'similar' or 'random', got {pick!r}")
    from costline.serving.cache.tune import Pair

    by_domain: dict[str, list[tuple[str, int]]] = {}
    for i, p in enumerate(pairs):
        by_domain.setdefault(p.domain, []).extend([(p.q1, i), (p.q2, i)])
    found: list[tuple[float, str, str]] = []
    for questions in by_domain.values():
        vecs = embedder.encode([q for q, _ in questions])
        sims = vecs @ vecs.T
        for a, (qa, pa) in enumerate(questions):
            taken = 0
            for b in np.argsort(-sims[a]):
                qb, pb = questions[b]
                if pb == pa or qa.lower() == qb.lower() or sims[a, b] > max_cosine:
                    continue
                found.append((float(sims[a, b]), qa, qb))
                taken += 1
                if taken == per_question:
                    break
    seen: set[frozenset[str]] = set()
    out = []
    ordered = sorted(found, reverse=True)
    if pick == "random":
        random.Random(seed).shuffle(ordered)
    for _, qa, qb in ordered:
        if frozenset((qa, qb)) not in seen and len(out) < count:
            seen.add(frozenset((qa, qb)))
            out.append(Pair(qa, qb, False, "cross", "", "train"))
    return out


def train_pair_model(pairs: Sequence[Any], *, layers: int = 6, epochs: int = 2, threshold: float = 0.05,
                     batch_size: int = 32, learning_rate: float = 4e-5, seed: int = 0,
                     base: str | os.PathLike[str] | None = None, trained_on: dict[str, Any] | None = None,
                     progress: Callable[[int, int, float], None] | None = None,
                     init: PairModel | None = None) -> PairModel:
    """Fine-tune the first ``layers`` layers of the packaged MiniLM as a cross-encoder on labelled pairs, or
    (``init``) fine-tune that pair model further (its layers; ``layers`` is then ignored).

    Each pair is read both ways (the label does not depend on which question was stored). The word
    embeddings stay frozen, so the model file holds only what training changed. ``progress(step, steps,
    loss)`` is called after every step.
    """
    import torch

    labelled = [(p.q1, p.q2, bool(p.same_answer)) for p in pairs]
    if len({y for _, _, y in labelled}) < 2:
        raise CacheError("training a pair model needs same-answer and different-answer pairs: label both kinds")
    torch.manual_seed(seed)
    if init is not None:
        model, tokenizer, layers = init.model, init.tokenizer, init.layers
    else:
        model, tokenizer = _build(_base_path(base), layers)
    for name, param in model.named_parameters():
        param.requires_grad = not name.startswith(_FROZEN_PREFIX)
    first = [a for a, _, _ in labelled] + [b for _, b, _ in labelled]
    second = [b for _, b, _ in labelled] + [a for a, _, _ in labelled]
    ys = np.array([y for *_, y in labelled] * 2, dtype=np.float32)
    n = len(ys)
    steps = epochs * -(-n // batch_size)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate,
                            weight_decay=0.01)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * max(0.0, 1 - s / steps))
    rng = np.random.default_rng(seed)
    step = 0
    model.train()
    for _ in range(epochs):
        order = rng.permutation(n)
        for i in range(0, n, batch_size):
            b = order[i:i + batch_size]
            enc = tokenizer([first[j] for j in b], [second[j] for j in b], padding=True, truncation=True,
                            max_length=MAX_LENGTH, return_tensors="pt")
            logits = model(**enc).logits.squeeze(-1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(ys[b]))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            step += 1
            if progress is not None:
                progress(step, steps, float(loss.item()))
    model.eval()
    return PairModel(model, tokenizer, layers, float(threshold), dict(trained_on or {}))
