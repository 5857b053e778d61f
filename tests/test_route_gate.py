"""The routing loop's parts without Kafka: label intervals, the too-few-labels message, the gate on
moved requests (Wilson bounds computed here by hand), costs with escalation, promote and rollback."""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path

import pytest

from costline.config import Config, LakeConfig
from costline.errors import ConfigError
from costline.jobs.store import open_jobs_lake
from costline.serving.errors import RoutingError
from costline.serving.registry import ModelRegistry
from costline.serving.routing.gate import compare
from costline.serving.routing.labels import LabelSet, LakeLabel, NotEnoughLabelsError, _interval
from costline.serving.routing.promote import file_sha256, promote, read_manifest, rollback, write_manifest
from costline.serving.routing.router import Decision

T0 = datetime(2026, 11, 2)
# USD per million tokens, as [[pricing.models]] ships them (written out here, not read from costline).
PRICE = {"budget": (0.80, 4.0), "mid": (3.0, 15.0), "upper": (5.0, 25.0), "frontier": (10.0, 50.0)}


def usd(tier: str, inp: int, out: int) -> float:
    return (inp * PRICE[tier][0] + out * PRICE[tier][1]) / 1e6


def wilson_low(k: int, n: int, z: float = 1.959963984540054) -> float:
    p = k / n
    return (p + z * z / (2 * n) - z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n)


@pytest.mark.parametrize(("adequate", "inadequate", "want"), [
    (["budget"], [], ("budget", "budget")),           # exact: budget matched mid
    (["mid"], [], ("budget", "mid")),                 # censored: mid or cheaper
    ([], ["budget"], ("mid", None)),                  # censored: above budget
    (["upper"], ["budget"], ("mid", "upper")),        # escalated from budget, upper matched frontier
    (["mid"], ["budget"], ("mid", "mid")),            # exact
    (["mid"], ["mid"], None),                         # contradicts itself: dropped
    (["budget"], ["mid"], None),
    ([], ["budget", "frontier"], ("frontier", None)),  # nothing above frontier
    ([], ["student"], ("", None)),                    # the student's failure says nothing of the API tiers
])
def test_evidence_gives_an_interval(adequate, inadequate, want) -> None:
    assert _interval(adequate, inadequate) == want


def label(rid: str, lo: str = "budget", hi: str | None = None, *, task: str = "faq", served: str = "mid",
          inp: int = 1000, out: int = 100) -> LakeLabel:
    return LakeLabel(rid, T0, f"query {rid}", task, None, served, served, lo, hi, "shadow", inp, out)


@pytest.mark.parametrize(("lo", "hi", "verdicts"), [
    ("budget", "budget", {"student": True, "budget": True, "mid": True, "frontier": True}),
    ("budget", "mid", {"budget": None, "mid": True, "upper": True}),
    ("mid", None, {"student": False, "budget": False, "mid": None, "frontier": None}),
    ("mid", "upper", {"budget": False, "mid": None, "upper": True}),
])
def test_a_label_judges_a_tier_only_where_its_interval_can(lo, hi, verdicts) -> None:
    lb = label("r", lo, hi)
    assert {t: lb.adequate(t) for t in verdicts} == verdicts
    assert lb.tier == (hi or lo) and lb.exact == (lo == hi)


def test_too_few_labels_says_how_many_more_the_shadow_job_needs() -> None:
    labels = LabelSet(T0, datetime(2026, 11, 3), [label(str(i), "budget", "budget") for i in range(20)]
                      + [label(f"m{i}", "mid", "mid") for i in range(6)])
    with pytest.raises(NotEnoughLabelsError) as err:
        labels.check(min_labels=150, min_per_tier=10, per_night=600)
    msg = str(err.value)
    assert "26 usable labels" in msg and "needs about 124 more labelled requests" in msg
    assert "about 1 more nightly runs at 600 a night" in msg
    with pytest.raises(NotEnoughLabelsError, match=r"need 10 on at least two tiers .*budget 20, mid 6.*about 4 more"):
        labels.check(min_labels=20, min_per_tier=10)
    labels.check(min_labels=26, min_per_tier=6)  # enough: no error


class Table:
    """A policy that routes each query to the tier a dict says."""

    def __init__(self, tiers: dict[str, str], default: str = "mid") -> None:
        self.tiers, self.default = tiers, default

    def route(self, query: str, task_type: str | None) -> Decision:
        return Decision(self.tiers.get(query, self.default))


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    return ModelRegistry.from_config(Config())


def test_the_gate_judges_the_moved_requests_with_a_wilson_bound(registry: ModelRegistry) -> None:
    rows = [label(f"u{i}", "budget", "upper", served="upper") for i in range(25)]  # budget: unknown
    moved = {r.query: "budget" for r in rows}
    calls = []

    def judge(items):
        calls.append([(r.request_id, cheap, ref) for r, cheap, ref in items])
        return {r.request_id: int(r.request_id[1:]) < 20 for r, _, _ in items}, 0.5  # 20 of 25 adequate

    incumbent = Table({}, "upper")
    low = wilson_low(20, 25)
    ok = compare(Table(moved), incumbent, rows, registry, gate=low - 0.01, judge=judge)
    assert sorted(calls[0]) == sorted((f"u{i}", "budget", "upper") for i in range(25))  # cheap tier vs served
    assert ok.passed and [t.tier for t in ok.tiers] == ["budget"]
    (g,) = ok.tiers
    assert (g.moved, g.judged, g.adequate) == (25, 25, 20) and g.ci_low == pytest.approx(low, abs=1e-9)
    assert ok.judge_cost_usd == 0.5 and len(ok.moved) == 25 and {m.by for m in ok.moved} == {"judge"}
    bad = compare(Table(moved), incumbent, rows, registry, gate=low + 0.01, judge=judge)
    assert not bad.passed and bad.failing == ["budget"] and "lower bound" in bad.tiers[0].reason
    blind = compare(Table(moved), incumbent, rows, registry, gate=0.5)  # no judge: no evidence
    assert not blind.passed and "no moved request could be judged" in blind.tiers[0].reason
    assert compare(incumbent, incumbent, rows, registry, judge=judge).tiers == []  # nothing moves: nothing gated


def test_few_moved_requests_must_all_be_judged_and_adequate(registry: ModelRegistry) -> None:
    rows = [label("a", "budget", "budget", served="budget"), label("b", "budget", None, served="mid"),
            label("c", "mid", None, served="mid")]
    cand = Table({"query a": "budget", "query b": "budget", "query c": "budget"})
    inc = Table({}, "mid")
    # a: labelled adequate on budget; c: labelled inadequate; b: unknown, no judge.
    rep = compare(cand, inc, rows[:1], registry, gate=0.9, min_moved=20)
    assert rep.passed and rep.moved[0].by == "label"
    rep = compare(cand, inc, rows[:2], registry, gate=0.9, min_moved=20)
    assert not rep.passed and "1 unjudged" in rep.tiers[0].reason
    rep = compare(cand, inc, [rows[0], rows[2]], registry, gate=0.9, min_moved=20)
    assert not rep.passed and rep.tiers[0].rate == 0.5


def test_costs_at_first_attempt_and_with_escalation(registry: ModelRegistry) -> None:
    rows = [label("x", "mid", "mid", inp=1000, out=100), label("y", "budget", "budget", inp=2000, out=300)]
    rep = compare(Table({}, "budget"), Table({}, "budget"), rows, registry, max_escalations=2)
    want_first = usd("budget", 1000, 100) + usd("budget", 2000, 300)
    want_esc = want_first + usd("mid", 1000, 100)  # x fails on budget and is answered by mid
    assert rep.candidate.cost_first_usd == pytest.approx(want_first, rel=1e-9)
    assert rep.candidate.cost_with_escalation_usd == pytest.approx(want_esc, rel=1e-9)
    cell = rep.candidate.cells[("budget", "faq")]
    assert (cell.routed, cell.judged, cell.adequate) == (2, 2, 1)


def test_loop_settings_are_validated_by_key() -> None:
    import dataclasses

    cfg = Config()
    for key, bad in (("gate", 1.5), ("keep", 0), ("min_moved", 0), ("eval_days", 0)):  # refused as the config is built
        with pytest.raises(ConfigError, match=rf"\[serving.router.loop\] {key}"):
            dataclasses.replace(cfg.serving.router.loop, **{key: bad})


def _config(tmp_path: Path, policy: str = "rules") -> Config:
    import dataclasses

    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"))
    router = dataclasses.replace(cfg.serving.router, policy=policy, policy_path=tmp_path / "p" / "route.npz")
    return cfg.replace(serving=dataclasses.replace(cfg.serving, router=router))


def _candidate(path: Path, body: bytes, *, passed: bool, incumbent: str, incumbent_sha: str) -> Path:
    path.write_bytes(body)
    write_manifest(path, {"training": {"window": ["a", "b"], "labels": 3},
                          "eval": {"passed": passed, "failing": [] if passed else ["budget"],
                                   "candidate_sha256": file_sha256(path), "incumbent": incumbent,
                                   "incumbent_sha256": incumbent_sha, "moved_down": 4}})
    return path


def test_promote_keeps_the_parent_and_rollback_restores_it(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    failing = _candidate(tmp_path / "f.npz", b"F", passed=False, incumbent="rules", incumbent_sha="rules")
    with pytest.raises(RoutingError, match="FAILED the gate on budget"):
        promote(cfg, failing)
    one = _candidate(tmp_path / "one.npz", b"ONE", passed=True, incumbent="rules", incumbent_sha="rules")
    ev1 = promote(cfg, one, now=lambda: datetime(2026, 11, 3, 9))
    target = tmp_path / "p" / "route.npz"
    assert target.read_bytes() == b"ONE" and read_manifest(target)["parent"]["was"] == "rules"
    with pytest.raises(RoutingError, match="nothing to roll back to.*rules"):
        rollback(cfg)

    learned = _config(tmp_path, "learned")
    stale = _candidate(tmp_path / "two.npz", b"TWO", passed=True, incumbent="rules", incumbent_sha="rules")
    with pytest.raises(RoutingError, match="not the policy in service"):
        promote(learned, stale)
    two = _candidate(tmp_path / "two.npz", b"TWO", passed=True, incumbent=str(target),
                     incumbent_sha=file_sha256(target))
    ev2 = promote(learned, two, now=lambda: datetime(2026, 11, 4, 9))
    assert target.read_bytes() == b"TWO" and ev2.parent_sha256 == ev1.policy_sha256
    ev3 = rollback(learned, now=lambda: datetime(2026, 11, 5, 9))
    assert target.read_bytes() == b"ONE" and ev3.policy_sha256 == ev1.policy_sha256
    assert read_manifest(target)["parent"]["was"] == "rules"  # ONE's own manifest came back with it
    con = open_jobs_lake(cfg)
    try:
        rows = con.execute("SELECT ts, action, passed FROM route_promotions ORDER BY ts").fetchall()
    finally:
        con.close()
    assert rows == [(datetime(2026, 11, 3, 9), "promote", True), (datetime(2026, 11, 4, 9), "promote", True),
                    (datetime(2026, 11, 5, 9), "rollback", None)]


# -- what the gate's judge sends the tiers it compares ------------------------------------------------------------
_AGENT_DOC = json.dumps([
    {"role": "user", "parts": [{"type": "text", "content": "weather in Paris?"}]},
    {"role": "assistant", "parts": [{"type": "tool_call", "id": "t1", "name": "weather", "arguments": {"city": "Paris"}}]},
    {"role": "tool", "parts": [{"type": "tool_call_response", "id": "t1", "response": "18C sunny"}]},
])


@pytest.mark.parametrize(("doc", "expected"), [
    (_AGENT_DOC, ({"role": "user", "content": "weather in Paris?"},
                  {"role": "assistant", "content": '[tool call weather({"city": "Paris"})]'},
                  {"role": "user", "content": "[tool result: 18C sunny]"})),
    # a last user turn of nothing to answer (an image alone): the query is asked instead
    (json.dumps([{"role": "user", "parts": [{"type": "image"}]}]), ({"role": "user", "content": "the query"},)),
    (None, ({"role": "user", "content": "the query"},)),
])
def test_the_gates_judge_sends_tool_turns_as_text_and_never_an_empty_message(doc, expected) -> None:
    """Anthropic's Messages API refuses an empty message but a final assistant one: a captured agent conversation
    went as empty tool turns, and the judge's calls failed."""
    from costline.serving.routing.gate import _to_anthropic

    messages, _system = _to_anthropic(doc, "the query")
    assert messages == expected
