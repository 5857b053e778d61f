"""The cache's embedding model on ONNX Runtime, with micro-batching of concurrent queries.

::

    embedder = make_embedder(config.serving.cache)   # [serving.cache] embedder = "torch" | "onnx" | "openvino"
    vectors = embedder.encode(["How do I reset my password?"])
    ...
    embedder.shutdown()

:class:`OnnxEmbedder` is an :class:`~costline.serving.embedding.Embedder` (same vectors, memo,
``dim`` and ``model_name``; a text longer than the window is the mean of its head and tail windows, as there)
whose model is the packaged all-MiniLM-L6-v2 exported to ONNX —
transformer, mean pooling and L2 normalisation in one graph — and run by ONNX Runtime. The
export happens once, locally, from the files in site-packages (never a hub), into
``~/.cache/costline/onnx/<hash of the model files and export settings>/`` (``[serving.cache] onnx_cache_dir``,
``$XDG_CACHE_HOME``); later loads only open the file. Where that folder cannot be written (a non-root gateway
with a read-only or absent HOME), the export goes to a private temporary folder of the process, with one warning
saying what to set (:func:`export_target`); :meth:`OnnxEmbedder.check_export_folder` works that out at start.

``OnnxEmbedder(quantize=True)`` runs an int8 export (onnxruntime.quantization.quantize_dynamic,
MatMul weights, per channel) but it is NOT a ``[serving.cache] embedder`` choice: on the labelled
pair set's test split (bench/embed.py, 250 pairs) it moved the threshold-mode false-hit rate by
-0.6 points and recall by -2.2 points at 0.93, and the verified mode's recall by +1.1 points (the
issue's tolerance is 0.5). Dynamic quantisation scales activations per input tensor, so it runs
one text per call (as the int8 pair model does): a query's vector never depends on its batch. So
run, on an Intel Xeon with AMX it costs 2.5x less CPU than fp32 one query at a time, but still moves
verified-mode recall by -0.86 points on our 2,450 dev pairs (docs/serving.md). Quantising fewer layers still moved one rate by 0.6 to 1.3
points. Static int8 (quantize_static, QDQ, scales calibrated on the pair set's train split) is
batch-invariant but moved decisions more still, and where it kept them closer it saved too little
CPU (docs/serving.md, "Static int8"). bench/embed.py keeps measuring both beside fp32
(``--static-int8``), so a better quantisation can earn its place; ``OnnxEmbedder(onnx_file=...)``
runs such a candidate file.

Concurrent small encodes (one query per request) go through a :class:`MicroBatcher`: a bounded
queue drained by one background thread that waits at most ``batch_wait_ms`` for more queries,
runs them as one batch and hands each caller its own rows through a future. Large encodes
(:meth:`~Embedder.warm`, offline jobs) run directly in the caller's thread.

``[serving.cache] embedder = "auto"`` (the default) picks ONNX Runtime when ``onnxruntime`` and
``tokenizers`` are installed (the ``serving`` extra brings both) and PyTorch otherwise; ``"torch"``
keeps PyTorch (the fallback); ``"openvino"`` runs the same export on OpenVINO (:class:`OpenVinoSession`:
bfloat16 on CPUs with AMX / AVX-512 BF16; the ``openvino`` extra), an opt-in that pays under concurrent
load. The ONNX export needs PyTorch and transformers once, serving from the cached export needs only
onnxruntime and tokenizers. Processes that start on a clean cache at the
same time (replicas, workers) export once: the export runs under a file lock (``filelock``) next to
the export folder, and whoever takes the lock after it finds the file and only opens it.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import json
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from costline.errors import ConfigError
from costline.fsutil import atomic_path, cannot_write, os_reason
from costline.serving.embedding import Embedder, _mean_of_windows
from costline.serving.errors import MissingExtraError, ServingError
from costline.serving.settings import CACHE_EMBEDDERS, CacheConfig

__all__ = [
    "DEFAULT_THREADS",
    "EMBEDDERS",
    "ENGINES",
    "EmbedderError",
    "EmbedQueueFullError",
    "MicroBatcher",
    "OnnxEmbedder",
    "OpenVinoSession",
    "cached_export",
    "default_onnx_cache_dir",
    "export_onnx",
    "export_target",
    "make_embedder",
    "model_inputs",
    "resolve_embedder",
    "validate_embedder_config",
]

log = logging.getLogger(__name__)

#: ``[serving.cache] embedder`` choices (int8 is left out: see the module docstring). "auto": onnx
#: when onnxruntime and tokenizers are installed, else torch. "openvino": the same ONNX export on OpenVINO
#: (bfloat16 on CPUs with native bf16 — AMX / AVX-512 BF16 — float32 elsewhere; an opt-in).
EMBEDDERS = CACHE_EMBEDDERS

#: Intra-op threads when ``[serving.cache] embed_threads`` is 0: one. A one-query encode (a
#: request's) gains nothing from more, and ONNX Runtime's default (a spinning thread per core)
#: nearly doubled the CPU per query on a 2-core machine (38-58 ms vs 22 ms; docs/serving.md).
DEFAULT_THREADS = 1

#: Bumped whenever the exported graph changes, so old exports are not reused.
_EXPORT_VERSION = "1"
_OPSET = 17
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_OUTPUT = "embedding"


class EmbedderError(ServingError):
    """The ONNX embedder cannot export, load or run the model (the message says what to do)."""


class EmbedQueueFullError(EmbedderError):
    """The micro-batcher's queue stayed full: the embedder is behind its traffic."""


def model_inputs(tokenizer: Any, texts: Sequence[str], width: int = 0) -> dict[str, np.ndarray]:
    """The exported graph's inputs for ``texts`` (a ``tokenizers.Tokenizer`` without padding): each
    batch padded to its own longest text, or to ``width`` if that is longer — never a fixed 256/512."""
    encodings = tokenizer.encode_batch(list(texts))
    width = max(width, max(len(e.ids) for e in encodings))
    feed = {k: np.zeros((len(encodings), width), dtype=np.int64) for k in _INPUTS}
    for i, e in enumerate(encodings):
        n = len(e.ids)
        feed["input_ids"][i, :n] = e.ids
        feed["attention_mask"][i, :n] = e.attention_mask
        feed["token_type_ids"][i, :n] = e.type_ids
    return feed


# --- config -------------------------------------------------------------------------------------
def validate_embedder_config(config: CacheConfig) -> None:
    """Raise :class:`~costline.errors.ConfigError` naming the first bad embedding key of ``[serving.cache]``."""

    def bad(key: str, problem: str) -> ConfigError:
        return ConfigError(f"[serving.cache] {key}", problem)

    # embedder itself (one of EMBEDDERS; onnx-int8 refused, saying why) is checked when a CacheConfig is made
    wait = config.embed_batch_wait_ms
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0.0 <= wait <= 1000.0:
        raise bad("embed_batch_wait_ms", f"must be between 0 and 1000 ms (2 keeps a query's added wait small); got {wait!r}")
    if config.embed_max_batch < 1:
        raise bad("embed_max_batch", f"must be at least 1; got {config.embed_max_batch}")
    if config.embed_queue_size < 1:
        raise bad("embed_queue_size", f"must be at least 1; got {config.embed_queue_size}")
    if config.embed_threads < 0:
        raise bad("embed_threads", f"must be 0 (torch's default; 1 thread for onnx) or more; got {config.embed_threads}")


def resolve_embedder(name: str) -> str:
    """The runtime ``[serving.cache] embedder = name`` runs: "auto" is "onnx" when onnxruntime and
    tokenizers can be imported, else "torch"; "torch", "onnx" and "openvino" are themselves."""
    if name != "auto":
        return name
    for module in ("onnxruntime", "tokenizers"):
        try:
            if importlib.util.find_spec(module) is None:
                return "torch"
        except (ImportError, ValueError):  # a module without a spec, or a broken parent package
            return "torch"
    return "onnx"


def make_embedder(config: CacheConfig, *, memo_size: int | None = None) -> Embedder:
    """The embedder ``config.embedder`` names (see :func:`resolve_embedder` for "auto"), on
    ``config.model_path`` with ``config.embed_threads``.

    Not loaded yet (the first encode, or ``.load()``, loads it). Call ``shutdown()`` on an ONNX
    one when done (it stops the micro-batcher's thread; a torch one has nothing to stop).
    """
    validate_embedder_config(config)
    threads = config.embed_threads or None
    extra: dict[str, Any] = {} if memo_size is None else {"memo_size": memo_size}
    if resolve_embedder(config.embedder) == "torch":
        return Embedder(config.model_path, threads=threads, **extra)
    return OnnxEmbedder(
        config.model_path,
        threads=threads,
        cache_dir=config.onnx_cache_dir,
        batch_wait_ms=config.embed_batch_wait_ms,
        max_batch=config.embed_max_batch,
        queue_size=config.embed_queue_size,
        engine="openvino" if resolve_embedder(config.embedder) == "openvino" else "onnxruntime",
        **extra,
    )


# --- micro-batching ----------------------------------------------------------------------------
@dataclass
class _Job:
    texts: list[str]
    future: Future[np.ndarray]


_STOP = object()


class MicroBatcher:
    """Runs ``fn(texts) -> rows`` over the texts of concurrent :meth:`submit` calls, batched.

    One background thread (started on the first submit) takes the first waiting job, then
    waits at most ``max_wait_s`` for more until ``max_batch`` texts are gathered, calls ``fn``
    once and resolves each job's future with its own rows (or with ``fn``'s exception).
    At most ``queue_size`` jobs wait; :meth:`submit` blocks up to ``put_timeout_s`` for room and
    then raises :class:`EmbedQueueFullError`. :meth:`shutdown` stops taking jobs, finishes those
    queued and ends the thread. ``now`` is a monotonic clock in seconds.
    """

    def __init__(
        self,
        fn: Callable[[list[str]], np.ndarray],
        *,
        max_wait_s: float = 0.002,
        max_batch: int = 32,
        queue_size: int = 1024,
        put_timeout_s: float = 5.0,
        now: Callable[[], float] = time.monotonic,
        name: str = "costline-embed-batcher",
    ) -> None:
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be 0 or more, got {max_wait_s}")
        if max_batch < 1 or queue_size < 1:
            raise ValueError("max_batch and queue_size must be at least 1")
        self._fn = fn
        self.max_wait_s = max_wait_s
        self.max_batch = max_batch
        self.put_timeout_s = put_timeout_s
        self._now = now
        self._name = name
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        #: Batches run and texts embedded through them, since construction.
        self.batches = 0
        self.texts = 0

    def submit(self, texts: Sequence[str]) -> Future[np.ndarray]:
        """Queue ``texts`` (one caller's); the future resolves to their rows, in order."""
        job = _Job(list(texts), Future())
        # Queued under the lock, so no job can land behind shutdown()'s stop marker and wait forever.
        with self._lock:
            if self._closed:
                raise EmbedderError("the embedder is shut down: make a new one to embed again")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            try:
                self._queue.put(job, timeout=self.put_timeout_s)
            except queue.Full:
                raise EmbedQueueFullError(
                    f"{self._queue.maxsize} embedding requests already wait: raise [serving.cache] "
                    "embed_queue_size or embed_max_batch, or add replicas"
                ) from None
        return job.future

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Submit and wait for the rows (what a request's thread does)."""
        return self.submit(texts).result()

    def shutdown(self, wait: bool = True) -> None:
        """Stop taking jobs; the queued ones are still embedded. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            if thread is None:
                return
            self._queue.put(_STOP)  # after every queued job: they are finished first
        if wait:
            thread.join()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                return
            jobs = [first]
            size = len(first.texts)
            deadline = self._now() + self.max_wait_s
            while size < self.max_batch:
                try:
                    remaining = deadline - self._now()
                    nxt = self._queue.get_nowait() if remaining <= 0 else self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                jobs.append(nxt)
                size += len(nxt.texts)
            self._run_batch(jobs)

    def _run_batch(self, jobs: list[_Job]) -> None:
        live = [j for j in jobs if j.future.set_running_or_notify_cancel()]
        if not live:
            return
        texts = [t for j in live for t in j.texts]
        try:
            rows = self._fn(texts)
            if len(rows) != len(texts):
                raise EmbedderError(f"the model returned {len(rows)} rows for {len(texts)} texts")
        except BaseException as exc:  # each waiting caller gets the error; the thread lives on
            for j in live:
                j.future.set_exception(exc)
            return
        self.batches += 1
        self.texts += len(texts)
        start = 0
        for j in live:
            j.future.set_result(rows[start:start + len(j.texts)])
            start += len(j.texts)


# --- export -------------------------------------------------------------------------------------
def default_onnx_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/costline/onnx`` (``~/.cache/costline/onnx``); RuntimeError when XDG_CACHE_HOME is unset
    and there is no home directory (HOME unset and no passwd entry for this user)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "costline" / "onnx"


#: What the warning and the error about an export folder that cannot be written tell the operator to set.
_CACHE_DIR_FIX = ("set [serving.cache] onnx_cache_dir (COSTLINE_SERVING_CACHE_ONNX_CACHE_DIR) or XDG_CACHE_HOME "
                  "to a folder this user can write")


def export_target(cache_dir: str | os.PathLike[str] | None, folder: str, name: str) -> Path:
    """Where the export ``<folder>/<name>`` is read from or written to: under ``cache_dir`` (None:
    :func:`default_onnx_cache_dir`), created if missing.

    An export already there is used as it is, writable or not (an image's read-only, baked-in cache). Else its
    folder must be creatable and writable, and so must the one it is in (the export's lock file goes beside the
    folder). When it is not (a non-root gateway whose HOME is read-only or ``/nonexistent``), or there is no
    default (no home directory), the export goes to this process's private temporary folder instead, with one
    warning naming the folder tried, why and what to set: the cache still answers, at the price of an export at
    every start. :class:`EmbedderError` saying what to set when not even a temporary folder can be written.
    """
    try:
        root = Path(cache_dir).expanduser() if cache_dir is not None else default_onnx_cache_dir()
    except RuntimeError as exc:  # Path.home(): HOME unset and no passwd entry
        tried = str(cache_dir) if cache_dir is not None else "~/.cache/costline/onnx"
        why = f"there is no home directory ({exc})"
    else:
        target = root / folder / name
        if target.is_file():
            return target
        why_not = cannot_write(target.parent, parent_too=True)
        if why_not is None:
            return target
        tried, why = str(root), why_not
    return _FALLBACK.root(tried, why) / folder / name


class _FallbackFolder:
    """This process's private temporary export folder (``tempfile.mkdtemp``: mode 0700), made the first time an
    export folder cannot be written and removed when the process ends; one warning per folder that could not be."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._root: Path | None = None
        self._warned: set[str] = set()

    def root(self, tried: str, why: str) -> Path:
        with self._lock:
            if self._root is None or not self._root.is_dir():
                try:
                    self._root = Path(tempfile.mkdtemp(prefix="costline-onnx-"))
                except OSError as exc:
                    raise EmbedderError(
                        f"cannot write the ONNX export anywhere: not in {tried} ({why}), nor in a temporary folder "
                        f"({os_reason(exc)}): {_CACHE_DIR_FIX}, or set [serving.cache] embedder = \"torch\"") from None
                atexit.register(_remove_folder, self._root, os.getpid())
            if tried not in self._warned:
                self._warned.add(tried)
                log.warning("costline: cannot write the ONNX export in %s (%s): exporting it into the temporary "
                            "folder %s instead, removed when this process ends, so every start exports again: %s",
                            tried, why, self._root, _CACHE_DIR_FIX)
            return self._root


def _remove_folder(folder: Path, owner_pid: int) -> None:
    if os.getpid() == owner_pid:  # a forked child exiting leaves its parent's folder alone
        shutil.rmtree(folder, ignore_errors=True)


#: The export folder every export of this process falls back to (one per process, shared by the embedder's and
#: the pair model's exports, so the warning is given once and a model is exported once).
_FALLBACK = _FallbackFolder()


def _model_key(model_path: Path, quantize: bool) -> str:
    """A hash of the model's files and the export settings: a changed model gets a new export."""
    h = hashlib.sha256(f"v{_EXPORT_VERSION} opset{_OPSET} int8={quantize}\n".encode())
    for f in sorted(p for p in model_path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if f.suffix in {".md"}:
            continue
        h.update(str(f.relative_to(model_path)).encode() + b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def _max_seq_length(model_path: Path) -> int:
    cfg = model_path / "sentence_bert_config.json"
    if cfg.is_file():
        value = json.loads(cfg.read_text()).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return value
    return 256


def export_onnx(model_path: Path, *, quantize: bool = False, cache_dir: Path | None = None) -> Path:
    """The ONNX file of the sentence-transformers model at ``model_path`` (exported if not cached).

    The graph takes ``input_ids``, ``attention_mask`` and ``token_type_ids`` (int64, batch x
    tokens) and returns ``embedding`` (float32, batch x dim): mean-pooled over the mask and
    L2-normalised, as sentence-transformers computes it. Written atomically, so a reader never
    sees half a file, and under a file lock (``<folder>.lock`` beside it), so concurrent processes
    on a clean cache export once: the others wait for the lock and then open the finished file.
    Under ``cache_dir``, or this process's temporary folder when that cannot be written (:func:`export_target`).
    """
    model_path = Path(model_path)
    target = export_target(cache_dir, _model_key(model_path, quantize), "model-int8.onnx" if quantize else "model.onnx")
    folder, root = target.parent, target.parent.parent
    return cached_export(target, lambda: _export_locked(model_path, target, folder, root, quantize))


def cached_export(target: Path, export: Callable[[], None]) -> Path:
    """``target`` when it is a file; else ``export()`` (which writes it) run once, under a file lock
    (``<folder>.<name>.lock`` beside ``target``'s folder): concurrent processes on a clean cache
    export once, the others wait for the lock and then open the finished file. Shared by every
    ONNX export costline caches (the embedder's, the cache's pair model's)."""
    if target.is_file():
        return target
    folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EmbedderError(f"cannot create the export folder {folder} ({os_reason(exc)}): {_CACHE_DIR_FIX}") from None
    try:
        # filelock (already installed with huggingface_hub/torch): an fcntl lock that the OS drops
        # when its holder dies, so a replica killed mid-export never wedges the others.
        from filelock import FileLock, Timeout
    except ImportError as exc:
        raise MissingExtraError(exc.name or "filelock") from None
    try:
        with FileLock(str(folder) + f".{target.name}.lock", timeout=_EXPORT_LOCK_TIMEOUT_S):
            if target.is_file():  # another process exported it while this one waited
                return target
            export()
    except Timeout:
        raise EmbedderError(f"another process has held the export lock of {target} for "
                            f"{_EXPORT_LOCK_TIMEOUT_S:.0f} s: if none is exporting, delete "
                            f"{folder}.{target.name}.lock") from None
    if not target.is_file():
        raise EmbedderError(f"the export wrote no {target}")
    return target


#: How long a process waits for another one's export (an fp32 export takes ~10-30 s of CPU).
_EXPORT_LOCK_TIMEOUT_S = 600.0


def _export_locked(model_path: Path, target: Path, folder: Path, root: Path, quantize: bool) -> None:
    log.info("costline: exporting %s to ONNX (%s)", model_path, target)
    if quantize:
        fp32 = export_onnx(model_path, quantize=False, cache_dir=root)
        _quantize(fp32, target)
    else:
        _export_fp32(model_path, target)
    (folder / "source.json").write_text(json.dumps({"model_path": str(model_path), "int8": quantize,
                                                    "export_version": _EXPORT_VERSION, "opset": _OPSET}))


def _export_fp32(model_path: Path, target: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import torch
        from transformers import AutoModel
    except ImportError as exc:
        raise MissingExtraError(exc.name or "torch") from None

    class _Pooled(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask,
                                token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2, dim=1)

    try:
        # eager attention traces to plain ops (SDPA's mask handling is traced as constants).
        model = AutoModel.from_pretrained(str(model_path), local_files_only=True, attn_implementation="eager")
    except Exception as exc:
        raise EmbedderError(f"cannot load {model_path} to export it to ONNX: {exc}") from exc
    wrapper = _Pooled(model).eval()
    sample = {k: torch.ones(2, 8, dtype=torch.long) for k in _INPUTS}
    sample["token_type_ids"] = torch.zeros(2, 8, dtype=torch.long)
    axes = {k: {0: "batch", 1: "tokens"} for k in _INPUTS} | {_OUTPUT: {0: "batch"}}
    try:
        import warnings

        with atomic_path(target) as tmp, torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about python-side shape checks
            torch.onnx.export(wrapper, tuple(sample[k] for k in _INPUTS), str(tmp), input_names=list(_INPUTS),
                              output_names=[_OUTPUT], dynamic_axes=axes, opset_version=_OPSET, dynamo=False)
    except Exception as exc:
        raise EmbedderError(f"exporting {model_path} to ONNX failed: {exc}") from exc


def _quantize(fp32: Path, target: Path) -> None:
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise MissingExtraError(exc.name or "onnxruntime") from None
    try:
        # MatMul weights only, one scale per output channel: per-tensor int8 moved MiniLM's
        # vectors to cosine ~0.95 of PyTorch's, enough to change cache decisions.
        with atomic_path(target) as tmp:
            quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul"])
    except Exception as exc:
        raise EmbedderError(f"quantising {fp32} to int8 failed: {exc}") from exc


# --- the embedder --------------------------------------------------------------------------------
@dataclass
class _OnnxModel:
    session: Any
    tokenizer: Any
    path: Path


class OnnxEmbedder(Embedder):
    """:class:`~costline.serving.embedding.Embedder` on ONNX Runtime (see the module docstring).

    ``threads`` sets ONNX Runtime's intra-op threads for this session only (None:
    :data:`DEFAULT_THREADS`, i.e. 1); idle threads never spin.
    ``quantize`` uses the int8 export (for measuring it: its vectors are outside the cache's tolerance).
    ``onnx_file`` runs that ONNX file instead of an export (same inputs and output as
    :func:`export_onnx`'s; for measuring candidates such as bench/embed.py's static int8 ones).
    ``batch_wait_ms``/``max_batch``/``queue_size`` configure
    the micro-batcher that encodes of at most ``max_batch`` texts go through; ``batch_wait_ms=None``
    turns micro-batching off (every encode runs in its caller's thread).
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        threads: int | None = None,
        batch_size: int = 64,
        memo_size: int = 1024,
        quantize: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
        batch_wait_ms: float | None = 2.0,
        max_batch: int = 32,
        queue_size: int = 1024,
        onnx_file: str | os.PathLike[str] | None = None,
        engine: str = "onnxruntime",
    ) -> None:
        super().__init__(model_path, threads=threads, batch_size=batch_size, memo_size=memo_size)
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
        self.engine = engine
        self.quantize = quantize
        self.onnx_file = Path(onnx_file) if onnx_file is not None else None
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self._batcher: MicroBatcher | None = None
        if batch_wait_ms is not None:
            self._batcher = MicroBatcher(self._run_model, max_wait_s=batch_wait_ms / 1000.0,
                                         max_batch=max_batch, queue_size=queue_size)

    @property
    def runtime(self) -> str:
        """``"onnx"``, ``"onnx-int8"``, ``"onnx-file"`` (``onnx_file`` given), or ``"openvino"`` (``engine``)."""
        if self.onnx_file is not None:
            return "onnx-file"
        if self.engine == "openvino":
            return "openvino-int8" if self.quantize else "openvino"
        return "onnx-int8" if self.quantize else "onnx"

    @property
    def onnx_path(self) -> Path:
        """The ONNX file in use (exporting it if needed)."""
        return self._get_model().path

    def check_export_folder(self) -> Path | None:
        """The folder the ONNX export is read from or written to, worked out now without loading or exporting
        anything (it hashes the model's files): the configured one, else the temporary folder it falls back to
        (warning once; :func:`export_target`). None with ``onnx_file`` (no export). :class:`EmbedderError` saying what
        to set when no folder can be written: a gateway calls this at start, to fail there in one line rather than
        on every request."""
        if self.onnx_file is not None:
            return None
        name = "model-int8.onnx" if self.quantize else "model.onnx"
        return export_target(self.cache_dir, _model_key(self.model_path, self.quantize), name).parent

    @property
    def session_options(self) -> Any:
        """The ONNX Runtime session's options (threads, spinning), loading the model if needed."""
        return self._get_model().session.get_session_options()

    @property
    def batcher(self) -> MicroBatcher | None:
        return self._batcher

    def shutdown(self) -> None:
        """Stop the micro-batcher's thread (queued encodes finish first). Idempotent."""
        if self._batcher is not None:
            self._batcher.shutdown()

    @property
    def window(self) -> int:
        """Word pieces the model reads at once (its sentence-transformers config's ``max_seq_length``: 256)."""
        return _max_seq_length(self.model_path)

    def _token_count(self, text: str) -> int:
        return len(self._piece_ids(self._get_model(), text))

    def _piece_ids(self, model: Any, text: str) -> list[int]:
        # a tokenizers.Tokenizer (not callable, as the torch path's is; safe to share between threads), truncating
        # at the window: what it cut off is in its overflowing encodings, in order
        enc = model.tokenizer.encode(text, add_special_tokens=False)
        return [*enc.ids, *(i for o in enc.overflowing for i in o.ids)]

    def _decode_ids(self, model: Any, ids: list[int]) -> str:
        # [UNK] kept, as the torch path's tokenizer decodes: the window reads again to the same word pieces
        return model.tokenizer.decode(ids, skip_special_tokens=False)

    def _encode_model(self, items: list[str]) -> np.ndarray:
        # A text longer than the window is embedded as the mean of its head and tail windows, as the torch path does
        # (Embedder._windows, same windows and weights): its two windows go through the model with the other texts.
        model = self._get_model()
        texts, longs = self._windows(model, items)
        if self._batcher is not None and len(items) <= self._batcher.max_batch:
            vectors = self._batcher(texts)
        else:
            vectors = np.concatenate([self._run_model(texts[i:i + self.batch_size])
                                      for i in range(0, len(texts), self.batch_size)])
        out = _mean_of_windows(vectors, len(items), longs)
        if out.shape != (len(items), self.dim):
            raise EmbedderError(f"the ONNX model returned vectors of shape {out.shape}, "
                                f"expected ({len(items)}, {self.dim})")
        return out

    def _run_model(self, texts: list[str]) -> np.ndarray:
        m = self._get_model()
        if self.quantize and len(texts) > 1:
            # Dynamic int8 quantises each MatMul's input with one scale for the whole tensor: in a batch, a
            # text's vector would depend on the texts beside it. Alone, it is the same every time.
            return np.concatenate([self._run_model([t]) for t in texts])
        (vectors,) = m.session.run([_OUTPUT], model_inputs(m.tokenizer, texts))
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _load_model(self) -> _OnnxModel:
        path = self.model_path
        if not (path / "config.json").is_file() or not (path / "tokenizer.json").is_file():
            raise EmbedderError(f"no exportable model in {path} (needs config.json and tokenizer.json): point "
                                "[serving.cache] model_path at a sentence-transformers folder, or use embedder = \"torch\"")
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise MissingExtraError(exc.name or "onnxruntime") from None
        if self.onnx_file is None:
            onnx_file = export_onnx(path, quantize=self.quantize, cache_dir=self.cache_dir)
        elif self.onnx_file.is_file():
            onnx_file = self.onnx_file
        else:
            raise EmbedderError(f"no ONNX file at {self.onnx_file}")
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        tokenizer.no_padding()  # padded here, per batch, to its longest text
        tokenizer.enable_truncation(_max_seq_length(path))  # what sentence-transformers truncates to
        if self.engine == "openvino":
            return self._load_openvino(onnx_file, tokenizer)
        options = ort.SessionOptions()
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = self.threads if self.threads is not None else DEFAULT_THREADS
        # Idle pool threads sleep instead of spinning: spinning burned about as much CPU as the
        # model itself per one-query request (bench/gateway.py), CPU the gateway's loop needs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise EmbedderError(f"ONNX Runtime cannot open {onnx_file}: {exc}; delete that folder to re-export") from exc
        dim = session.get_outputs()[0].shape[-1]
        if not isinstance(dim, int):
            raise EmbedderError(f"{onnx_file} does not say its vector size")
        if self._dim is not None and dim != self._dim:
            raise EmbedderError(f"{onnx_file} makes {dim}-dimensional vectors, expected {self._dim}")
        self._dim = dim
        log.info("costline: embedding with %s (%s)", onnx_file, self.runtime)
        return _OnnxModel(session, tokenizer, onnx_file)

    def _load_openvino(self, onnx_file: Path, tokenizer: Any) -> _OnnxModel:
        session = OpenVinoSession.open(onnx_file, threads=self.threads if self.threads is not None else DEFAULT_THREADS)
        if self._dim is not None and session.dim != self._dim:
            raise EmbedderError(f"{onnx_file} makes {session.dim}-dimensional vectors, expected {self._dim}")
        self._dim = session.dim
        log.info("costline: embedding with %s (OpenVINO, %s)", onnx_file, session.precision)
        return _OnnxModel(session, tokenizer, onnx_file)


#: ``OnnxEmbedder(engine=...)``: who runs the ONNX export.
ENGINES = ("onnxruntime", "openvino")


class OpenVinoSession:
    """An ONNX file compiled by OpenVINO for the CPU, with ONNX Runtime's ``run(outputs, feed)`` call.

    Precision: bfloat16 where the CPU computes it natively (OpenVINO reports ``BF16`` among its
    optimization capabilities: AMX or AVX-512 BF16), where it cost 1.6-1.9x less CPU per query than ONNX
    Runtime's float32 with 16 concurrent callers (bench/embed.py; about the same one query at a time) with
    vectors at cosine ≥ 0.9999 of float32's; float32 elsewhere (slower than ONNX Runtime there: choose
    "onnx"). ``threads``: OpenVINO's inference threads, one stream. Inputs are padded to a multiple of
    :attr:`pad_to` tokens. One infer request per calling thread (a request is not thread-safe; the compiled
    model is); each call's output is copied out of the request's buffer.
    """

    #: Every batch is padded to a multiple of this many tokens: OpenVINO re-plans its kernels when an input's
    #: shape changes, which cost more than the model itself on one short query (2.7 vs 5.5 ms of CPU per query
    #: of 5-13 tokens padded to 16 or not); a few bucket widths repeat instead of every length.
    pad_to = 16

    def __init__(self, compiled: Any, precision: str) -> None:
        self._compiled = compiled
        self._output = compiled.output(0)
        self.precision = precision
        self._local = threading.local()
        shape = self._output.get_partial_shape()
        last = shape[shape.rank.get_length() - 1]
        if not last.is_static:
            raise EmbedderError("the ONNX export does not say its vector size")
        self.dim = int(last.get_length())

    @classmethod
    def open(cls, onnx_file: Path, *, threads: int, precision: str | None = None,
             pin: bool = False) -> "OpenVinoSession":
        """Compile ``onnx_file`` for the CPU; ``precision`` None: bf16 where native, else f32. ``pin``: let
        OpenVINO pin its inference threads to cores (its default on Linux; off here: every worker process of
        one machine would pin to the same cores, and the gateway's other threads need them too)."""
        try:
            import openvino as ov
        except ImportError:
            raise MissingExtraError("openvino", "openvino", needed_for='[serving.cache] embedder = "openvino"') from None
        try:
            core = ov.Core()
            if precision is None:
                native = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
                precision = "bf16" if "BF16" in native else "f32"
            compiled = core.compile_model(str(onnx_file), "CPU", {
                "INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": max(1, threads),
                "NUM_STREAMS": 1, "ENABLE_CPU_PINNING": pin})
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses of its own
            raise EmbedderError(f"OpenVINO cannot compile {onnx_file}: {exc}; set [serving.cache] embedder = "
                                "\"onnx\" to run it on ONNX Runtime") from exc
        return cls(compiled, precision)

    def run(self, output_names: Any, feed: dict[str, np.ndarray]) -> list[np.ndarray]:  # noqa: ARG002 - one output
        width = next(iter(feed.values())).shape[1]
        if pad := (-width) % self.pad_to:  # zeros: padding tokens, masked out of the mean pooling
            feed = {k: np.pad(v, ((0, 0), (0, pad))) for k, v in feed.items()}
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        result = request.infer(feed)
        return [np.array(result[self._output], dtype=np.float32, copy=True)]
