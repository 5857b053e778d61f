"""The second held-out pair set (`cache_pair_heldout2.jsonl`), written and committed after the guards
changed for the first dev set's failure families were committed: its shape, and that it is other data
than every pair file the guards or the admission model were written, trained or tuned with (other
domains, no question shared). It was run once, its failures were read and the guards changed for their
families, so it is a dev set now (``split: "dev"``), like the first."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import costline.serving.cache
from costline.serving.cache.admission import read_pairs

DATA = Path(costline.serving.cache.__file__).resolve().parent / "data"
SAME = {"paraphrase": True, "near_repeat": True, "negation": False, "entity_swap": False,
        "number_date": False, "scope": False, "temporal": False}
DOMAINS = {"real_estate", "automotive", "pharmacy", "gym", "public_transport", "legal"}
OTHER_FILES = ("cache_pair_set.jsonl", "cache_pair_heldout.jsonl", "cache_pairs.jsonl")


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def questions(row: dict) -> tuple[str, str]:
    return row.get("q1", row.get("a", "")), row.get("q2", row.get("b", ""))


def test_at_least_210_pairs_30_per_category_labels_follow_the_category() -> None:
    data = rows("cache_pair_heldout2.jsonl")
    assert len(data) >= 210
    per_cat = Counter(r["category"] for r in data)
    assert set(per_cat) == set(SAME) and min(per_cat.values()) >= 30
    for r in data:
        assert set(r) == {"q1", "q2", "same_answer", "category", "domain", "split"}
        assert r["same_answer"] is SAME[r["category"]] and r["split"] == "dev", r
        assert r["q1"].strip() and r["q2"].strip() and r["q1"] != r["q2"]
    assert len({(r["q1"], r["q2"]) for r in data}) == len(data)  # no pair twice
    pairs, problems = read_pairs(DATA / "cache_pair_heldout2.jsonl")  # what bench/cache.py reads
    assert problems == [] and len(pairs) == len(data)


def test_domains_used_nowhere_else_and_no_question_shared_with_the_other_files() -> None:
    held = rows("cache_pair_heldout2.jsonl")
    assert {r["domain"] for r in held} == DOMAINS
    seen: set[str] = set()
    for name in OTHER_FILES:
        other = rows(name)
        assert not DOMAINS & {r.get("domain", "") for r in other}, name
        seen |= {q.strip().lower() for r in other for q in questions(r)}
    assert not [q for r in held for q in questions(r) if q.strip().lower() in seen]
