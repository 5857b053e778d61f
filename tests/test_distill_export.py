"""The export step: skipped counts and why (no content, empty, truncated, PII, exact and MiniLM+FAISS
near duplicates), stratified hold-out, and a manifest whose content hashes prove disjointness."""

from __future__ import annotations

import dataclasses
import json
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from distill_world import labelled_plans, world_config  # noqa: E402

from costline.distill.errors import ExportError  # noqa: E402

SINCE, UNTIL = datetime(2026, 11, 1), datetime(2026, 11, 2)
NEAR_A = "Classify the topic: my parcel from the courier never arrived and tracking shows nothing"
NEAR_B = "Classify the topic: my parcel from the courier never arrived, and the tracking shows nothing at all"


def special_plans():
    """Labelled traffic plus one of each problem the export must catch."""
    plans = [p for p in labelled_plans(200) if p.calls and not p.calls[-1].error_type]
    specials = {
        0: "  ",  # empty
        1: "Classify the sentiment: " + "very " * 80 + "bad",  # cut at the capture limit
        2: "Classify the sentiment: mail me at jo@example.com it was great",  # PII: dropped
        3: NEAR_A,
        4: NEAR_B,
    }
    return [dataclasses.replace(p, query=specials[i]) if i in specials else p for i, p in enumerate(plans)]


def test_export_counts_what_it_skips_and_why_and_splits_disjointly(tmp_path):
    from lakes import lake_from_plans

    from costline.distill.dataset import export_dataset, verify_disjoint
    from costline.serving.embedding import Embedder

    cfg = world_config(tmp_path, tenants=("*",), near_duplicate_threshold=0.9, pii_hook="distill_world:pii_hook")
    cfg = cfg.replace(capture={"max_chars": 300})
    plans = special_plans()
    lake_from_plans(plans, cfg)
    embedder = Embedder()
    ex = export_dataset(cfg, since=SINCE, until=UNTIL, run_id="x", embedder=embedder)

    assert ex.skipped["empty"] == 1 and ex.skipped["truncated"] == 1 and ex.skipped["pii"] == 1
    assert ex.skipped["near duplicate"] >= 1
    rows = [json.loads(line) for f in ("train.jsonl", "eval.jsonl")
            for line in (ex.run.dataset / f).read_text().splitlines()]
    queries = [r["query"] for r in rows]
    assert (NEAR_A in queries) != (NEAR_B in queries)  # one of the pair survived
    assert not any("@" in q for q in queries)
    # independently: no two survivors are within the threshold (MiniLM cosine, numpy)
    texts = [r["messages"][-1]["content"] for r in rows]
    v = embedder.encode(texts)
    sims = v @ v.T
    np.fill_diagonal(sims, 0)
    assert sims.max() < 0.9
    assert len(set(texts)) == len(texts)
    # stratified hold-out: 15% of each subtype, rounded
    m = json.loads((ex.run.dataset / "manifest.json").read_text())
    for sub, c in m["counts"].items():
        n = c["train"] + c["eval"]
        assert c["eval"] == max(1, round(n * 0.15)), sub
        assert sum(1 for r in rows if r["subtype"] == sub) == n
    assert sum(m["skipped"].values()) + len(rows) == m["eligible_requests"] == len(plans)
    assert not set(m["hashes"]["train"]) & set(m["hashes"]["eval"])
    assert len(m["hashes"]["train"]) == ex.train and len(m["hashes"]["eval"]) == ex.eval
    verify_disjoint(m)
    leaky = {"run_id": "old", "hashes": {"train": [m["hashes"]["eval"][0]], "eval": []},
             "content_hash_version": m["content_hash_version"]}
    with pytest.raises(ExportError, match="eval items of run x are train items of run old"):
        verify_disjoint(m, leaky)
    # a manifest of an older costline (hashed with another normalisation) cannot prove anything either way
    older = {"run_id": "older", "hashes": {"train": [], "eval": []}}
    with pytest.raises(ExportError, match="runs x and older hash their items differently"):
        verify_disjoint(m, older)


def test_export_without_captured_content_says_so(tmp_path):
    from lakes import lake_from_plans

    from costline.distill.dataset import export_dataset

    cfg = world_config(tmp_path, tenants=("*",)).replace(capture={"message_content": False})
    lake_from_plans(labelled_plans(30), cfg)
    with pytest.raises(ExportError, match="no captured content.*message_content = true"):
        export_dataset(cfg, since=SINCE, until=UNTIL)
