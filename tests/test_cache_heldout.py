"""The first held-out pair set, a dev set now (its results were seen and the guards changed for its
failure families): its shape, and that it is other data than the main pair set (other domains, no
question shared)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import costline.serving.cache
from costline.serving.cache.admission import read_pairs

DATA = Path(costline.serving.cache.__file__).resolve().parent / "data"
SAME = {"paraphrase": True, "near_repeat": True, "negation": False, "entity_swap": False,
        "number_date": False, "scope": False, "temporal": False}


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def test_at_least_210_pairs_30_per_category_labels_follow_the_category() -> None:
    data = rows("cache_pair_heldout.jsonl")
    assert len(data) >= 210
    per_cat = Counter(r["category"] for r in data)
    assert set(per_cat) == set(SAME) and min(per_cat.values()) >= 30
    for r in data:
        assert set(r) == {"q1", "q2", "same_answer", "category", "domain", "split"}
        assert r["same_answer"] is SAME[r["category"]] and r["split"] == "dev", r
        assert r["q1"].strip() and r["q2"].strip() and r["q1"] != r["q2"]
    pairs, problems = read_pairs(DATA / "cache_pair_heldout.jsonl")  # what bench/cache.py reads
    assert problems == [] and len(pairs) == len(data)


def test_other_domains_and_no_question_of_the_main_pair_set() -> None:
    held, main = rows("cache_pair_heldout.jsonl"), rows("cache_pair_set.jsonl")
    assert {r["domain"] for r in held} == {"insurance", "telecom", "banking", "healthcare_admin", "education"}
    assert not {r["domain"] for r in held} & {r["domain"] for r in main}
    seen = {q.strip().lower() for r in main for q in (r["q1"], r["q2"])}
    assert not [q for r in held for q in (r["q1"], r["q2"]) if q.strip().lower() in seen]
    assert len({(r["q1"], r["q2"]) for r in held}) == len(held)  # no pair twice
