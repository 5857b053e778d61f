"""`costline distill export`: production requests → a clean, deduplicated, stratified dataset.

1. every request of the chosen task types (and subtypes) in the window is counted; those with
   captured content are read with the drift job's sampler (:func:`costline.jobs.sampling.sample_requests`,
   one pass per served tier: only requests answered successfully, cache hits left out) — the rest are
   reported as skipped ("no captured content, no successful answer, or a cache hit"); a prompt the sampler
   leaves out for having nothing to answer (a last user turn of no text) counts as "empty";
2. cleaned: too short ("empty"), cut at the capture limit ("truncated"), dropped or rewritten by
   the ``pii_hook``;
3. exact duplicates (system prompt + conversation, equal after Unicode NFKC, case, whitespace and trailing
   sentence punctuation: :func:`content_hash`; "7+3" and "7*3" stay apart) dropped;
4. a stratified sample of ``sample_size`` (allocation by :func:`costline.jobs.sampling.allocate`,
   order by a seeded hash of the content);
5. near duplicates dropped: MiniLM embeddings (:class:`costline.serving.embedding.Embedder`) of the
   conversation (not the system prompt) in a FAISS inner-product index, a query within
   ``near_duplicate_threshold`` of one kept is dropped;
6. each (task type, subtype) pair split by whole clusters: the conversations (without the instruction most of them share,
   :func:`_without_template`) are connected components of MiniLM cosine ``>= split_cluster_threshold``
   (the same question under different system prompts, or paraphrased, stays on one side), taken in a seeded hash order into the eval set until ``eval_fraction`` of the subtype is
   held out as nearly as whole clusters allow (a component too big for the eval share that leaves the
   share unmet — a shared template chains many questions — is split again at a higher cosine).

Only ``[distill] tenants`` are exported (empty: a window of more than one tenant is refused): one
student serves every tenant routed to it, so mixing tenants' prompts is an explicit choice. Each row
records its ``tenant``; the manifest counts them.

Everything is stratified, split and counted per **(task type, subtype) pair**: two task types that share
a subtype name (or that both leave it unset, ``(none)``) are two strata, and the gate judges them apart.
The manifest's ``pairs`` lists each pair's train and eval counts and its split (clusters, held-out share and
the highest cosine between an eval and a train item); ``counts`` (per subtype name, every task type
summed), ``split`` (per subtype name, only for a subtype of a single task type) and ``task_types``
(subtype -> its task types) are summaries for readers of older manifests. It also counts the items per
tenant and lists what was skipped and why, and the sha256 of every item's content (and of the files), so :func:`verify_disjoint` can prove that no eval
item was trained on — in this run or against another run's manifest.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from costline.distill.errors import ExportError
from costline.distill.runs import DistillRun, distill_root, sha256_file, write_json, write_jsonl
from costline.textutil import stream_safe

__all__ = ["ExportResult", "export_dataset", "verify_disjoint", "content_hash", "load_pii_hook", "is_reasoning",
           "pair_label", "manifest_pairs"]

log = logging.getLogger(__name__)

_TIERS = ("student", "budget", "mid", "upper", "frontier")


#: Version of :func:`content_hash`'s normalisation, in the manifest: hashes of two versions do not compare.
CONTENT_HASH_VERSION = 2

_SPACE = re.compile(r"\s+")
#: Sentence punctuation at the end of a text ("?", "!", "...", "。"): "what is 7+3?" = "What is 7+3".
_TRAILING = re.compile(r"[\s.!?\u2026\u3002\uff01\uff1f]+$")


def normalize_text(text: str) -> str:
    """The exact-duplicate form of a text: Unicode NFKC, case folded, runs of whitespace one space, ends
    trimmed, trailing sentence punctuation dropped. Every other character counts ("7+3" is not "7*3")."""
    t = _SPACE.sub(" ", unicodedata.normalize("NFKC", stream_safe(text or "")).casefold()).strip()
    return _TRAILING.sub("", t)


def content_hash(system: str | None, messages: Sequence[Mapping[str, Any]]) -> str:
    """sha256 of the normalised prompt (system + turns, :func:`normalize_text`): equal for exact duplicates."""
    doc = json.dumps([normalize_text(system or ""), [[m.get("role"), normalize_text(str(m.get("content", "")))]
                                                     for m in messages]], ensure_ascii=False)
    # surrogatepass: a lone surrogate (half an emoji, escaped in the stored JSON) hashes instead of raising;
    # the bytes of valid text, and so its hash, are unchanged
    return hashlib.sha256(doc.encode("utf-8", "surrogatepass")).hexdigest()


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
    #: Per subtype name, every task type summed (a summary: see ``pairs``).
    counts: dict[str, dict[str, int]]
    skipped: dict[str, int]
    eligible: int
    manifest: dict[str, Any] = field(default_factory=dict)
    #: Per ``(task_type, subtype)``: ``{"train": n, "eval": n}``, the strata the export split and the gate judges.
    pairs: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)

    @property
    def train(self) -> int:
        return sum(c["train"] for c in self.counts.values())

    @property
    def eval(self) -> int:
        return sum(c["eval"] for c in self.counts.values())


def pair_label(task_type: str | None, subtype: str | None) -> str:
    """How a (task type, subtype) pair is named in messages: ``classification/support``."""
    return f"{task_type or '(unknown task type)'}/{subtype}"


def manifest_pairs(manifest: Mapping[str, Any], rows: Sequence[Mapping[str, Any]] = ()) -> list[tuple[str, str]]:
    """The ``(task_type, subtype)`` pairs an export holds, sorted.

    A manifest of this costline lists them (``pairs``). One written before (keyed by subtype name alone)
    does not: its pairs are read from its dataset rows (``rows``: train and eval items, which always named
    both), and a subtype of its ``counts`` that no row names gets the task type its ``task_types`` gave it."""
    if "pairs" in manifest:
        return sorted((str(p["task_type"]), str(p["subtype"])) for p in manifest["pairs"])
    pairs = {(str(r.get("task_type") or ""), str(r.get("subtype"))) for r in rows}
    named = {s for _, s in pairs}
    old = manifest.get("task_types") or {}
    for sub in manifest.get("counts") or {}:
        if sub not in named:
            tt = old.get(sub)
            pairs.add((str(tt[0] if isinstance(tt, list) and tt else tt or ""), str(sub)))
    return sorted(pairs)


def _hash_order(seed: int, salt: str, h: str) -> str:
    return hashlib.blake2b(f"{seed}\x1f{salt}\x1f{h}".encode(), digest_size=8).hexdigest()


def _conversation_text(it: Mapping[str, Any]) -> str:
    # the conversation only: a long system prompt the requests share would make them all alike (and MiniLM
    # reads only a text's first 256 tokens)
    return "\n".join(str(m["content"]) for m in it["messages"]).strip()


def _common_edge(rows: Sequence[Sequence[str]], share: float) -> int:
    """How many leading words at least ``share`` of ``rows`` have in common (the longest such prefix)."""
    need = max(2, math.ceil(len(rows) * share))
    prefixes = list(rows)
    k = 0
    while True:
        counts = Counter(tuple(r[:k + 1]) for r in prefixes if len(r) > k)
        if not counts or counts.most_common(1)[0][1] < need:
            return k
        top = counts.most_common(1)[0][0]
        prefixes = [r for r in prefixes if tuple(r[:k + 1]) == top]
        k += 1


#: A subtype's instruction shared by at least this share of its conversations is left out of the split's
#: embeddings (see :func:`_without_template`).
_TEMPLATE_SHARE = 0.5
#: ...when it is at least this many words (a shared "How do" is no template).
_TEMPLATE_WORDS = 3


def _without_template(texts: Sequence[str]) -> list[str]:
    """``texts`` without the leading and trailing words that most of them share.

    Templated traffic ("Classify the sentiment of this review: <text>") puts one instruction in every
    conversation of a subtype: MiniLM then finds any two alike and the split's clusters chain through the
    template, not through the question. The words most conversations begin (and end) with are left out;
    a text that is nothing but them is kept whole."""
    rows = [t.split() for t in texts]
    if len(rows) < 2:
        return list(texts)
    head = _common_edge(rows, _TEMPLATE_SHARE)
    head = head if head >= _TEMPLATE_WORDS else 0
    head_words = Counter(tuple(r[:head]) for r in rows if len(r) >= head).most_common(1)[0][0] if head else ()
    tails = [r[::-1] for r in rows]
    tail = _common_edge(tails, _TEMPLATE_SHARE)
    tail = tail if tail >= _TEMPLATE_WORDS else 0
    tail_words = Counter(tuple(r[:tail]) for r in tails if len(r) >= tail).most_common(1)[0][0] if tail else ()
    out = []
    for t, r in zip(texts, rows):
        lo = head if head and tuple(r[:head]) == head_words else 0
        hi = len(r) - tail if tail and tuple(r[::-1][:tail]) == tail_words else len(r)
        out.append(" ".join(r[lo:hi]) if hi > lo else t)
    return out


def _embed(texts: Sequence[str], embedder: Any) -> Any:
    """MiniLM vectors of ``texts``, L2-normalised float32 (inner product = cosine)."""
    import faiss
    import numpy as np

    vecs = np.ascontiguousarray(np.asarray(embedder.encode(list(texts)), dtype=np.float32))
    faiss.normalize_L2(vecs)
    return vecs


def _near_duplicates(vecs: Any, threshold: float) -> list[bool]:
    """True for each vector within ``threshold`` cosine of an earlier kept one (FAISS inner product)."""
    import faiss

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


#: Nearest neighbours searched per conversation for the split's cluster edges (a k-NN graph: a pair above
#: the threshold is missed only when both of its ends have this many closer neighbours, all in one cluster).
_SPLIT_NEIGHBOURS = 32
#: A cluster split again (see :func:`_split_subtype`) is cut at this much higher cosine each time.
_SPLIT_STEP = 0.025
#: The smallest held-out share the split accepts before splitting a cluster again (the article's 10 %).
_MIN_EVAL_SHARE = 0.10


def _neighbour_edges(vecs: Any, threshold: float) -> dict[tuple[int, int], float]:
    """``(i, j) -> cosine`` (i < j) for each pair of the k-NN graph at or above ``threshold``."""
    import faiss

    n = len(vecs)
    index = faiss.IndexFlatIP(vecs.shape[1])
    index.add(vecs)
    sims, ids = index.search(vecs, min(_SPLIT_NEIGHBOURS + 1, n))
    edges: dict[tuple[int, int], float] = {}
    for i in range(n):
        for sim, j in zip(sims[i], ids[i]):
            if j < 0 or j == i or sim < threshold:
                continue
            key = (min(i, int(j)), max(i, int(j)))
            edges[key] = max(edges.get(key, -1.0), float(sim))
    return edges


def _components(members: Sequence[int], edges: Mapping[tuple[int, int], float], threshold: float) -> list[list[int]]:
    """Connected components of ``members`` over the edges at or above ``threshold``."""
    parent = {m: m for m in members}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for (a, b), sim in edges.items():
        if sim >= threshold and a in parent and b in parent:
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    out: dict[int, list[int]] = {}
    for m in sorted(members):
        out.setdefault(find(m), []).append(m)
    return list(out.values())


def _split_subtype(keys: Sequence[str], sizes: Sequence[int], vecs: Any, threshold: float, eval_fraction: float,
                   seed: int) -> tuple[set[int], dict[str, Any]]:
    """The units (conversations; ``sizes`` items each) of one subtype held out, and the split's figures.

    Units are clustered as connected components of cosine ``>= threshold`` (``vecs`` None or threshold 0:
    each unit its own cluster). Clusters are taken in a seeded hash order, each one that still fits, until
    ``round(n * eval_fraction)`` items are held out. When whole clusters leave the held-out share under
    :data:`_MIN_EVAL_SHARE` (one component chained through a shared template holds most of the subtype),
    the largest cluster is split again at a cosine :data:`_SPLIT_STEP` higher, until the share is met or
    nothing is left to split; the figures say how far."""
    n = sum(sizes)
    target = max(round(n * eval_fraction), 1) if n >= 2 else 0
    low = min(target, max(1, math.floor(n * _MIN_EVAL_SHARE + 1e-9))) if n >= 2 else 0
    units = list(range(len(keys)))
    edges: dict[tuple[int, int], float] = {}
    clustered = vecs is not None and threshold > 0 and len(units) > 1
    if clustered:
        edges = _neighbour_edges(vecs, threshold)
        clusters = [(threshold, c) for c in _components(units, edges, threshold)]
    else:
        clusters = [(1.0, [u]) for u in units]
    resplit: list[float] = []

    def size(c: Sequence[int]) -> int:
        return sum(sizes[u] for u in c)

    while True:
        held: list[int] = []
        got = 0
        for _, c in sorted(clusters, key=lambda tc: _hash_order(seed, "split", min(keys[u] for u in tc[1]))):
            if got >= target:
                break
            if got + size(c) <= target:
                held += c
                got += size(c)
        if got >= low:
            break
        splittable = [tc for tc in clusters if len(tc[1]) > 1 and tc[0] < 1.0]
        if not splittable:
            break
        big = max(splittable, key=lambda tc: (size(tc[1]), -tc[1][0]))
        members = set(big[1])
        inside = {k: v for k, v in edges.items() if k[0] in members and k[1] in members}
        t, parts = big[0], [big[1]]
        while len(parts) == 1 and t < 1.0:
            t = round(t + _SPLIT_STEP, 6)
            parts = _components(big[1], inside, t)
        clusters.remove(big)
        clusters += [(t, p) for p in parts]
        resplit.append(t)
    held_set = set(held)
    stats: dict[str, Any] = {
        "items": n, "eval": got, "eval_share": round(got / n, 4) if n else 0.0, "target_eval": target,
        "clusters": len(clusters), "largest_cluster": max((size(c) for _, c in clusters), default=0),
        "cluster_threshold": threshold if clustered else None,
        "split_again_up_to": max(resplit) if resplit else None,
    }
    if clustered and held_set and len(held_set) < len(units):
        import faiss

        train_idx = [u for u in units if u not in held_set]
        index = faiss.IndexFlatIP(vecs.shape[1])
        index.add(vecs[train_idx])
        sims, _ = index.search(vecs[sorted(held_set)], 1)
        near = sum(sizes[u] for u, s in zip(sorted(held_set), sims[:, 0]) if s >= threshold)
        stats["max_eval_train_cosine"] = round(float(sims.max()), 4)
        stats["eval_items_near_train"] = int(near)
    return held_set, stats


def _tenant_filter(cfg: Any, in_window: Mapping[str, int], task_types: Sequence[str]) -> set[str] | None:
    """The tenants to export (None: all), or raise: an empty ``tenants`` refuses a window of several tenants."""
    if tuple(cfg.tenants) == ("*",):
        return None
    if cfg.tenants:
        return set(cfg.tenants)
    if len(in_window) > 1:
        shown = ", ".join(f"{t} {n}" for t, n in sorted(in_window.items(), key=lambda kv: (-kv[1], kv[0]))[:10])
        raise ExportError(
            f"[distill] tenants is empty and the window holds requests of {len(in_window)} tenants "
            f"({shown}{', ...' if len(in_window) > 10 else ''}) of task types {', '.join(task_types)}: one student "
            "serves every tenant routed to it, so its training data would carry each tenant's prompts to the "
            "others. Name the tenants whose traffic may train it ([distill] tenants = [\"acme\"]), or mix "
            "every tenant knowingly with [distill] tenants = [\"*\"]")
    return None


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
    """Export a dataset from the lake into a new run folder; see the module docstring. :class:`~costline.lake.NoLake`
    when ``[lake] path`` holds no lake (nothing is created there)."""
    from costline.distill import validate
    from costline.jobs.drift import drift_run_id
    from costline.jobs.sampling import NO_SUBTYPE, allocate, sample_requests
    from costline.timeutil import utc_naive
    from costline.lake import open_lake

    validate(config)
    cfg = config.distill
    until = utc_naive(until or now())
    since = utc_naive(since) if since else until - timedelta(days=cfg.window_days)
    size = sample_size or cfg.sample_size
    subs = tuple(subtypes if subtypes is not None else cfg.subtypes)
    params = {"since": since, "until": until, "size": size, "seed": cfg.seed, "task_types": cfg.task_types,
              "subtypes": subs, "near": cfg.near_duplicate_threshold, "eval": cfg.eval_fraction,
              "tenants": tuple(cfg.tenants), "split_cluster": cfg.split_cluster_threshold}
    run = DistillRun(distill_root(config), run_id or drift_run_id("distill", until, params))
    skipped: Counter[str] = Counter()

    # no lake is an error, not "nothing to export" from an empty one; the views read: requests here, the raw rows
    # of requests and calls in sample_requests (candidates_sql)
    con = open_lake(config, create=False, views=("requests", "requests_raw", "calls_raw"))
    try:
        where = "ts >= $since AND ts < $until AND task_type IN (SELECT unnest($tt))"
        # per (trace, request id) — a request id is the app's, two tenants (or an app's retries) may share one —
        # its request spans and its tenants ("(none)" when it has none)
        rows = con.execute(
            f"SELECT trace_id, request_id, count(*), list(DISTINCT coalesce(tenant, '{NO_SUBTYPE}')) FROM requests "
            f"WHERE {where} AND NOT standalone" + (" AND subtype IN (SELECT unnest($st))" if subs else "")
            + " GROUP BY ALL",
            {"since": since, "until": until, "tt": list(cfg.task_types), **({"st": list(subs)} if subs else {})},
        ).fetchall()
        in_window: Counter[str] = Counter()
        tenants_of: dict[tuple[str, str], list[str]] = {}
        for trace_id, request_id, spans, tenants in rows:
            tenants_of[(trace_id, request_id)] = list(tenants)
            for t in tenants:
                in_window[t] += int(spans)
        wanted = _tenant_filter(cfg, in_window, cfg.task_types)

        def ours(tenants: Sequence[str]) -> bool:
            return wanted is None or bool(set(tenants) & wanted)

        eligible = sum(int(spans) for _, _, spans, tenants in rows if ours(tenants))
        found: dict[tuple[str, str], Any] = {}
        left_out: dict[tuple[str, str], str] = {}  # sampled, but with nothing for a model to answer: why
        for tier in _TIERS:
            for s in sample_requests(con, lake_path=config.lake.path, tier=tier, since=since, until=until,
                                     size=10**9, seed=cfg.seed, skipped=left_out):
                key = (s.trace_id, s.request_id)
                if s.task_type in cfg.task_types and (not subs or s.subtype in subs) \
                        and key in tenants_of and ours(tenants_of[key]):
                    found.setdefault(key, s)
    finally:
        con.close()
    # this export's requests (the window's rows already name only the chosen task types and subtypes) that the
    # sampler left out for a prompt with nothing to answer (no user turn, a last one without text): "empty",
    # as a too short query is
    empty = sum(1 for key in left_out if key not in found and key in tenants_of and ours(tenants_of[key]))
    if empty:
        skipped["empty"] += empty
    skipped["no captured content, no successful answer, or a cache hit"] = max(eligible - len(found) - empty, 0)

    pii = load_pii_hook(cfg.pii_hook)
    if pii is None and found:
        log.warning("export %s: [distill] pii_hook is not set, so the captured prompts of %s are exported as "
                    "captured (no redaction) to train a student that answers %s; set pii_hook = "
                    "\"module:function\" to drop or rewrite them", run.run_id,
                    "tenants " + ", ".join(sorted(wanted)) if wanted is not None else "every tenant",
                    "whoever is routed to it")
    limit = config.capture.max_chars
    items: dict[str, dict[str, Any]] = {}
    for s in sorted(found.values(), key=lambda s: (s.ts, s.request_id)):
        tenants_here = tenants_of[(s.trace_id, s.request_id)]
        if len(tenants_here) != 1:  # one request whose spans name more than one tenant: whose prompt is it?
            skipped["more than one tenant on one request"] += 1
            continue
        tenant = tenants_here[0]
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
        items[h] = {"id": h[:16], "request_id": s.request_id, "tenant": tenant, "task_type": s.task_type,
                    "subtype": s.subtype, "system": system, "messages": messages, "query": query,
                    "content_hash": h, "reasoning": is_reasoning(cfg, s.task_type, s.subtype)}

    # strata: (task type, subtype) pairs — two task types that share a subtype name (or both set none) are two
    by_pair: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for it in items.values():
        by_pair.setdefault((it["task_type"], it["subtype"]), []).append(it)
    for lst in by_pair.values():
        lst.sort(key=lambda it: _hash_order(cfg.seed, "sample", it["content_hash"]))
    alloc = allocate({k: len(v) for k, v in by_pair.items()}, size)
    over = sum(len(v) for v in by_pair.values()) - sum(alloc.values())
    if over:
        skipped["over sample size"] += over
    chosen = [it for pair, lst in sorted(by_pair.items()) for it in lst[:alloc.get(pair, 0)]]

    if chosen and (cfg.near_duplicate_threshold > 0 or cfg.split_cluster_threshold > 0) and embedder is None:
        from costline.serving.embedding import Embedder

        embedder = Embedder(config.serving.cache.model_path)
    if chosen and cfg.near_duplicate_threshold > 0:
        dup = _near_duplicates(_embed([_conversation_text(it) for it in chosen], embedder),
                               cfg.near_duplicate_threshold)
        skipped["near duplicate"] += sum(dup)
        chosen = [it for it, d in zip(chosen, dup) if not d]
    if not chosen:
        raise ExportError(f"nothing to export for task types {', '.join(cfg.task_types)} between "
                          f"{since:%Y-%m-%d %H:%M} and {until:%Y-%m-%d %H:%M} UTC ({eligible} requests; skipped: "
                          f"{dict(skipped)}): turn on content capture ([capture] message_content = true)")

    train, held = [], []
    pairs: dict[tuple[str, str], dict[str, int]] = {}
    pair_split: dict[tuple[str, str], dict[str, Any]] = {}
    for pair in sorted({(it["task_type"], it["subtype"]) for it in chosen}):
        # one question asked under different system prompts (a date, a user's name) is one unit, and units
        # within split_cluster_threshold of each other one cluster: held out or trained on, never both
        by_q: dict[str, list[dict[str, Any]]] = {}
        for it in sorted((it for it in chosen if (it["task_type"], it["subtype"]) == pair),
                         key=lambda it: it["content_hash"]):
            by_q.setdefault(content_hash(None, it["messages"]), []).append(it)
        keys = sorted(by_q)
        sub_vecs = None
        if cfg.split_cluster_threshold > 0 and len(keys) > 1:
            sub_vecs = _embed(_without_template([_conversation_text(by_q[q][0]) for q in keys]), embedder)
        held_units, pair_split[pair] = _split_subtype(keys, [len(by_q[q]) for q in keys], sub_vecs,
                                                      cfg.split_cluster_threshold, cfg.eval_fraction, cfg.seed)
        ev: list[dict[str, Any]] = []
        for u, q in enumerate(keys):
            if u in held_units:
                ev += by_q[q]
            else:
                train += [{**it, "split": "train"} for it in by_q[q]]
        held += [{**it, "split": "eval"} for it in ev]
        n = sum(len(v) for v in by_q.values())
        pairs[pair] = {"train": n - len(ev), "eval": len(ev)}
    # summaries per subtype name, for readers of older manifests
    counts: dict[str, dict[str, int]] = {}
    task_types_of: dict[str, list[str]] = {}
    for (tt, sub), c in pairs.items():
        got = counts.setdefault(sub, {"train": 0, "eval": 0})
        got["train"] += c["train"]
        got["eval"] += c["eval"]
        task_types_of.setdefault(sub, []).append(tt)
    split = {sub: pair_split[(tts[0], sub)] for sub, tts in task_types_of.items() if len(tts) == 1}
    tenants: dict[str, dict[str, int]] = {}
    for it in train + held:
        tenants.setdefault(it["tenant"], {"train": 0, "eval": 0})[it["split"]] += 1

    run.dataset.mkdir(parents=True, exist_ok=True)
    write_jsonl(run.dataset / "train.jsonl", train)
    write_jsonl(run.dataset / "eval.jsonl", held)
    manifest = {
        "run_id": run.run_id, "created_at": utc_naive(now()).isoformat(), "since": since.isoformat(),
        "until": until.isoformat(), "params": {k: v for k, v in params.items() if k not in ("since", "until")},
        "eligible_requests": eligible, "with_content": len(found), "skipped": dict(skipped),
        "pairs": [{"task_type": tt, "subtype": sub, **pairs[(tt, sub)], "split": pair_split[(tt, sub)]}
                  for tt, sub in sorted(pairs)],
        "counts": counts, "split": split, "tenants": dict(sorted(tenants.items())),
        "tenants_in_window": dict(sorted(in_window.items())),
        "pii_hook": cfg.pii_hook or None, "content_hash_version": CONTENT_HASH_VERSION,
        "task_types": {sub: sorted(tts) for sub, tts in sorted(task_types_of.items())},
        "files": {name: sha256_file(run.dataset / name) for name in ("train.jsonl", "eval.jsonl")},
        "hashes": {"train": sorted(it["content_hash"] for it in train),
                   "eval": sorted(it["content_hash"] for it in held)},
    }
    write_json(run.dataset / "manifest.json", manifest)
    verify_disjoint(manifest)
    log.info("export %s: %d train, %d eval, skipped %s", run.run_id, len(train), len(held), dict(skipped))
    return ExportResult(run, counts, dict(skipped), eligible, manifest, pairs)


def verify_disjoint(manifest: Mapping[str, Any], trained_on: Mapping[str, Any] | None = None) -> None:
    """Raise :class:`ExportError` when an eval item of ``manifest`` is a train item of it (or of ``trained_on``)."""
    eval_h = set(manifest["hashes"]["eval"])
    if trained_on is not None:
        mine, theirs = (int(m.get("content_hash_version", 1)) for m in (manifest, trained_on))
        if mine != theirs:
            raise ExportError(f"runs {manifest['run_id']} and {trained_on['run_id']} hash their items differently "
                              f"(content hash version {mine} vs {theirs}): their disjointness cannot be checked; "
                              "export both with this costline")
    for other in [manifest] + ([trained_on] if trained_on is not None else []):
        shared = eval_h & set(other["hashes"]["train"])
        if shared:
            raise ExportError(f"{len(shared)} eval items of run {manifest['run_id']} are train items of run "
                              f"{other['run_id']} (first: {sorted(shared)[0][:16]}): export a fresh eval set")
