"""bench/gateway.py's paraphrase phase: the pairs it asks (no question twice, the held-out sets after the pair set)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_gateway", ROOT / "bench" / "gateway.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def _paraphrase_rows(path: Path) -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [(r["q1"], r["q2"]) for r in rows if r.get("same_answer") and r.get("category") == "paraphrase"]


def test_held_out_sets_follow_the_pair_set_in_numbered_order(bench):
    names = [p.name for p in bench.pair_files()]
    assert names[0] == "cache_pair_set.jsonl"
    assert names[1:4] == ["cache_pair_heldout.jsonl", "cache_pair_heldout2.jsonl", "cache_pair_heldout3.jsonl"]
    assert names.index("cache_pair_heldout9.jsonl") < names.index("cache_pair_heldout10.jsonl")


@pytest.mark.parametrize("limit", [1, 120, 186, 600])
def test_pairs_start_with_the_pair_set_and_never_repeat_a_question(bench, limit):
    pairs = bench.paraphrases(limit)
    assert len(pairs) == limit
    own = _paraphrase_rows(ROOT / "serving" / "cache" / "data" / "cache_pair_set.jsonl")
    assert pairs[:min(limit, 20)] == own[:min(limit, 20)]
    asked = [q for pair in pairs for q in pair]
    assert len(asked) == len(set(asked))  # a repeat would be an exact hit, not a paraphrase
