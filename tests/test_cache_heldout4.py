"""The fourth held-out pair set (`cache_pair_heldout4.jsonl`), written blind — without reading the guards,
the admission model, their tuning or any other pair file's text: its shape, and that it is other data
than every pair file before it (six domains used nowhere else, no question shared)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import costline.serving
from costline.serving.cache_admission import read_pairs

DATA = Path(costline.serving.__file__).resolve().parent / "data"
NAME = "cache_pair_heldout4.jsonl"
SAME = {"paraphrase": True, "near_repeat": True, "negation": False, "entity_swap": False,
        "number_date": False, "scope": False, "temporal": False}
DOMAINS = {"solar", "car_rental", "dental", "language_school", "moving", "marketplace"}
OTHER_FILES = ("cache_pair_set.jsonl", "cache_pair_heldout.jsonl", "cache_pair_heldout2.jsonl",
               "cache_pair_heldout3.jsonl", "cache_pairs.jsonl")


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def questions(row: dict) -> tuple[str, str]:
    return row.get("q1", row.get("a", "")), row.get("q2", row.get("b", ""))


def test_350_pairs_50_per_category_labels_follow_the_category() -> None:
    data = rows(NAME)
    assert len(data) == 350
    per_cat = Counter(r["category"] for r in data)
    assert per_cat == {cat: 50 for cat in SAME}
    for r in data:
        assert set(r) == {"q1", "q2", "same_answer", "category", "domain", "split"}, r
        assert r["same_answer"] is SAME[r["category"]] and r["split"] == "heldout", r
        assert r["q1"].strip() and r["q2"].strip(), r
        assert r["q1"].strip().lower() != r["q2"].strip().lower(), r
    pairs, problems = read_pairs(DATA / NAME)  # what bench/cache.py reads
    assert problems == [] and len(pairs) == len(data)


def test_every_category_spread_over_all_six_domains() -> None:
    data = rows(NAME)
    assert {r["domain"] for r in data} == DOMAINS
    per = Counter((r["category"], r["domain"]) for r in data)
    assert all(8 <= per[(cat, dom)] <= 9 for cat in SAME for dom in DOMAINS), per


def test_no_question_appears_twice_in_the_file() -> None:
    seen = Counter(q.strip().lower() for r in rows(NAME) for q in questions(r))
    assert [q for q, n in seen.items() if n > 1] == []


def test_domains_used_nowhere_else_and_no_question_shared_with_the_other_files() -> None:
    held = rows(NAME)
    seen: set[str] = set()
    for name in OTHER_FILES:
        other = rows(name)
        assert not DOMAINS & {r.get("domain", "") for r in other}, name
        seen |= {q.strip().lower() for r in other for q in questions(r)}
    assert [q for r in held for q in questions(r) if q.strip().lower() in seen] == []
