"""The shipped pair set: size, categories, domains, labels and the fixed split."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import costline.serving.cache

DATA = Path(costline.serving.cache.__file__).resolve().parent / "data"
CATEGORIES = {"paraphrase": True, "near_repeat": True, "negation": False, "entity_swap": False,
              "number_date": False, "scope": False, "temporal": False}
DOMAINS = {"billing", "retail", "travel", "it", "hr"}
#: added to the train split for the failure families of the dev set (build_cache_pairs.FAMILIES)
FAMILY_DOMAINS = {"logistics", "hospitality", "government", "utilities", "software_licensing"}


def rows():
    return [json.loads(line) for line in (DATA / "cache_pair_set.jsonl").read_text().splitlines() if line.strip()]


def test_at_least_800_pairs_and_100_per_category_across_five_domains() -> None:
    data = rows()
    assert len(data) >= 800
    per_cat = Counter(r["category"] for r in data)
    assert set(per_cat) == set(CATEGORIES) and min(per_cat.values()) >= 100
    assert {r["domain"] for r in data} == DOMAINS | FAMILY_DOMAINS
    assert {r["split"] for r in data if r["domain"] in FAMILY_DOMAINS} == {"train"}


def test_labels_follow_the_category_and_fields_are_well_formed() -> None:
    for r in rows():
        assert set(r) == {"q1", "q2", "same_answer", "category", "domain", "split"}
        assert r["same_answer"] is CATEGORIES[r["category"]], r
        assert r["q1"].strip() and r["q2"].strip() and r["q1"] != r["q2"]
        assert r["split"] in ("train", "test")


def test_the_split_is_fixed_and_every_category_is_in_the_test_split() -> None:
    data = rows()
    test = Counter(r["category"] for r in data if r["split"] == "test")
    assert set(test) == set(CATEGORIES) and min(test.values()) >= 20
    assert 0.2 <= sum(test.values()) / len(data) <= 0.4
    spec = importlib.util.spec_from_file_location("build_cache_pairs", DATA / "build_cache_pairs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.build() == data  # the file is what the builder makes, split included
