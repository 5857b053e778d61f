"""`costline distill export`: production requests → a clean, deduplicated, stratified dataset.

1. every request of the chosen task types (and subtypes) in the window is counted; those with
   captured content are read with the drift job's sampler (:func:`costline.jobs.sampling.sample_requests`,
   one pass per served tier: only requests answered successfully, cache hits left out) — the rest are
   reported as skipped ("no captured content, no successful answer, or a cache hit");
2. cleaned: too short ("empty"), cut at the capture limit ("truncated"), dropped or rewritten by
   the ``pii_hook``;
3. exact duplicates (normalised system prompt + conversation) dropped;
4. a stratified sample of ``sample_size`` (allocation by :func:`costline.jobs.sampling.allocate`,
   order by a seeded hash of the content);
5. near duplicates dropped: MiniLM embeddings (:class:`costline.serving.embedding.Embedder`) of the
   conversation (not the system prompt) in a FAISS inner-product index, a query within
   ``near_duplicate_threshold`` of one kept is dropped;
6. each subtype split by a seeded hash of the conversation: ``eval_fraction`` held out (the same
   question under different system prompts stays on one side).

The manifest lists the counts per subtype and split, what was skipped and why, and the sha256
of every item's content (and of the files), so :func:`verify_disjoint` can prove that no eval
item was trained on — in this run or against another run's manifest.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from costline.distill.errors import ExportError
from costline.distill.runs import DistillRun, distill_root, sha256_file, write_json, write_jsonl

__all__ = ["ExportResult", "export_dataset", "verify_disjoint", "content_hash", "load_pii_hook", "is_reasoning"]

log = logging.getLogger(__name__)

_TIERS = ("student", "budget", "mid", "upper", "frontier")


def content_hash(system: str | None, messages: Sequence[Mapping[str, Any]]) -> str:
    """sha256 of the normalised prompt (system + turns): equal for exact duplicates."""
    from costline.jobs.scoring import normalize

    doc = json.dumps([normalize(system or ""), [[m.get("role"), normalize(str(m.get("content", "")))]
                                                for m in messages]], ensure_ascii=False)
    return hashlib.sha256(doc.encode()).hexdigest()


def load_pii_hook(spec: str) -> Callable[[str], str | None] | None:
    """The ``module:function`` of ``[distill] pii_hook`` (None when empty)."""
    if not spec:
        return None
    module, _, func = spec.partition(":")
    from costline.errors import ConfigError

    try:
        return getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as exc:
        raise ConfigError("[distill] pii_hook", f"cannot load {spec!r}: {exc}") from None


def is_reasoning(cfg: Any, task_type: str | None, subtype: str | None) -> bool:
    return bool((subtype and subtype in cfg.reasoning_subtypes) or (task_type and task_type in cfg.reasoning_task_types))


@dataclass
class ExportResult:
    run: DistillRun
    counts: dict[str, dict[str, int]]
    skipped: dict[str, int]
    eligible: int
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def train(self) -> int:
        return sum(c["train"] for c in self.counts.values())

    @property
    def eval(self) -> int:
        return sum(c["eval"] for c in self.counts.values())


def _hash_order(seed: int, salt: str, h: str) -> str:
    return hashlib.blake2b(f"{seed}\x1f{salt}\x1f{h}".encode(), digest_size=8).hexdigest()


def _near_duplicates(texts: Sequence[str], threshold: float, embedder: Any) -> list[bool]:
    """True for each text within ``threshold`` cosine of an earlier kept one (MiniLM + FAISS)."""
    import faiss
    import numpy as np

    vecs = np.ascontiguousarray(np.asarray(embedder.encode(list(texts)), dtype=np.float32))
    index = faiss.IndexFlatIP(vecs.shape[1])
    dup = []
    for v in vecs:
        if index.ntotal:
            sims, _ = index.search(v[None, :], 1)
            if sims[0, 0] >= threshold:
                dup.append(True)
                continue
        index.add(v[None, :])
        dup.append(False)
    return dup


def export_dataset(
    config: Any,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    run_id: str | None = None,
    sample_size: int | None = None,
    subtypes: Sequence[str] | None = None,
    embedder: Any = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ExportResult:
    """Export a dataset from the lake into a new run folder; see the module docstring."""
    from costline.distill import validate
    from costline.jobs.drift import drift_run_id
    from costline.jobs.sampling import allocate, sample_requests
    from costline.timeutil import utc_naive
    from costline.lake import open_lake

    validate(config)
    cfg = config.distill
    until = utc_naive(until or now())
    since = utc_naive(since) if since else until - timedelta(days=cfg.window_days)
    size = sample_size or cfg.sample_size
    subs = tuple(subtypes if subtypes is not None else cfg.subtypes)
    params = {"since": since, "until": until, "size": size, "seed": cfg.seed, "task_types": cfg.task_types,
              "subtypes": subs, "near": cfg.near_duplicate_threshold, "eval": cfg.eval_fraction}
    run = DistillRun(distill_root(config), run_id or drift_run_id("distill", until, params))
    skipped: Counter[str] = Counter()

    con = open_lake(config)
    try:
        where = "ts >= $since AND ts < $until AND task_type IN (SELECT unnest($tt))"
        eligible = int(con.execute(
            f"SELECT count(*) FROM requests WHERE {where} AND NOT standalone"
            + (" AND subtype IN (SELECT unnest($st))" if subs else ""),
            {"since": since, "until": until, "tt": list(cfg.task_types), **({"st": list(subs)} if subs else {})},
        ).fetchone()[0])
        # (trace, request id): a request id is the app's, two tenants (or an app's retries) may share one
        found: dict[tuple[str, str], Any] = {}
        for tier in _TIERS:
            for s in sample_requests(con, lake_path=config.lake.path, tier=tier, since=since, until=until,
                                     size=10**9, seed=cfg.seed):
                if s.task_type in cfg.task_types and (not subs or s.subtype in subs):
                    found.setdefault((s.trace_id, s.request_id), s)
    finally:
        con.close()
    skipped["no captured content, no successful answer, or a cache hit"] = max(eligible - len(found), 0)

    pii = load_pii_hook(cfg.pii_hook)
    limit = config.capture.max_chars
    items: dict[str, dict[str, Any]] = {}
    for s in sorted(found.values(), key=lambda s: (s.ts, s.request_id)):
        query = s.query.strip()
        if len(query) < cfg.min_query_chars:
            skipped["empty"] += 1
            continue
        if len(s.query) >= limit or any(len(str(m.get("content", ""))) >= limit for m in s.messages):
            skipped["truncated"] += 1
            continue
        messages = [dict(m) for m in s.messages]
        system = s.system
        if pii is not None:
            cleaned = [pii(str(m["content"])) for m in messages]
            if system:
                system = pii(system)
                cleaned.append(system)
            if any(c is None for c in cleaned):
                skipped["pii"] += 1
                continue
            for m, c in zip(messages, cleaned):
                m["content"] = c
            query = str(messages[-1]["content"]).strip()
        h = content_hash(system, messages)
        if h in items:
            skipped["exact duplicate"] += 1
            continue
        items[h] = {"id": h[:16], "request_id": s.request_id, "task_type": s.task_type, "subtype": s.subtype,
                    "system": system, "messages": messages, "query": query, "content_hash": h,
                    "reasoning": is_reasoning(cfg, s.task_type, s.subtype)}

    by_sub: dict[str, list[dict[str, Any]]] = {}
    for it in items.values():
        by_sub.setdefault(it["subtype"], []).append(it)
    for lst in by_sub.values():
        lst.sort(key=lambda it: _hash_order(cfg.seed, "sample", it["content_hash"]))
    alloc = allocate({k: len(v) for k, v in by_sub.items()}, size)
    over = sum(len(v) for v in by_sub.values()) - sum(alloc.values())
    if over:
        skipped["over sample size"] += over
    chosen = [it for sub, lst in sorted(by_sub.items()) for it in lst[:alloc.get(sub, 0)]]

    if chosen and cfg.near_duplicate_threshold > 0:
        if embedder is None:
            from costline.serving.embedding import Embedder

            embedder = Embedder(config.serving.cache.model_path)
        # the conversation only: a long system prompt the requests share would make them all alike (and MiniLM
        # reads only a text's first 256 tokens)
        texts = ["\n".join(str(m["content"]) for m in it["messages"]).strip() for it in chosen]
        dup = _near_duplicates(texts, cfg.near_duplicate_threshold, embedder)
        skipped["near duplicate"] += sum(dup)
        chosen = [it for it, d in zip(chosen, dup) if not d]
    if not chosen:
        raise ExportError(f"nothing to export for task types {', '.join(cfg.task_types)} between "
                          f"{since:%Y-%m-%d %H:%M} and {until:%Y-%m-%d %H:%M} UTC ({eligible} requests; skipped: "
                          f"{dict(skipped)}): turn on content capture ([capture] message_content = true)")

    train, held = [], []
    counts: dict[str, dict[str, int]] = {}
    for sub in sorted({it["subtype"] for it in chosen}):
        # one question asked under different system prompts (a date, a user's name) is one unit of the split:
        # it is held out or trained on, never both
        by_q: dict[str, list[dict[str, Any]]] = {}
        for it in sorted((it for it in chosen if it["subtype"] == sub), key=lambda it: it["content_hash"]):
            by_q.setdefault(content_hash(None, it["messages"]), []).append(it)
        order = sorted(by_q, key=lambda q: _hash_order(cfg.seed, "split", q))
        n = sum(len(v) for v in by_q.values())
        n_eval = max(round(n * cfg.eval_fraction), 1) if n >= 2 else 0
        ev: list[dict[str, Any]] = []
        for i, q in enumerate(order):
            if len(ev) < n_eval and i < len(order) - 1:  # the last question left always trains
                ev += by_q[q]
            else:
                train += [{**it, "split": "train"} for it in by_q[q]]
        held += [{**it, "split": "eval"} for it in ev]
        counts[sub] = {"train": n - len(ev), "eval": len(ev)}

    run.dataset.mkdir(parents=True, exist_ok=True)
    write_jsonl(run.dataset / "train.jsonl", train)
    write_jsonl(run.dataset / "eval.jsonl", held)
    manifest = {
        "run_id": run.run_id, "created_at": utc_naive(now()).isoformat(), "since": since.isoformat(),
        "until": until.isoformat(), "params": {k: v for k, v in params.items() if k not in ("since", "until")},
        "eligible_requests": eligible, "with_content": len(found), "skipped": dict(skipped), "counts": counts,
        "task_types": {it["subtype"]: it["task_type"] for it in chosen},
        "files": {name: sha256_file(run.dataset / name) for name in ("train.jsonl", "eval.jsonl")},
        "hashes": {"train": sorted(it["content_hash"] for it in train),
                   "eval": sorted(it["content_hash"] for it in held)},
    }
    write_json(run.dataset / "manifest.json", manifest)
    verify_disjoint(manifest)
    log.info("export %s: %d train, %d eval, skipped %s", run.run_id, len(train), len(held), dict(skipped))
    return ExportResult(run, counts, dict(skipped), eligible, manifest)


def verify_disjoint(manifest: Mapping[str, Any], trained_on: Mapping[str, Any] | None = None) -> None:
    """Raise :class:`ExportError` when an eval item of ``manifest`` is a train item of it (or of ``trained_on``)."""
    eval_h = set(manifest["hashes"]["eval"])
    for other in [manifest] + ([trained_on] if trained_on is not None else []):
        shared = eval_h & set(other["hashes"]["train"])
        if shared:
            raise ExportError(f"{len(shared)} eval items of run {manifest['run_id']} are train items of run "
                              f"{other['run_id']} (first: {sorted(shared)[0][:16]}): export a fresh eval set")
