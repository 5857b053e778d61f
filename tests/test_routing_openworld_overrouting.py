"""Over-routing: a candidate policy that sends everything to the top tier. The gate is a quality gate (it judges
requests moved to *cheaper* tiers), so such a candidate passes it; the operator must still be told, in the
report `costline route eval` prints, in its JSON (the manifest) and in the nightly retrain's summary, that
it moves requests to dearer tiers and what that costs.

Costs below are computed by hand from the shipped prices (USD per million tokens, input/output):
mid 3/15, frontier 10/50; each request 1000 input and 100 output tokens.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from costline.config import Config
from costline.serving.registry import ModelRegistry
from costline.serving.routing.gate import compare
from costline.serving.routing.labels import LakeLabel
from costline.serving.routing.loop import RetrainResult
from costline.serving.routing.router import Decision

T0 = datetime(2026, 11, 2)
MID = (1000 * 3.0 + 100 * 15.0) / 1e6        # 0.0045
FRONTIER = (1000 * 10.0 + 100 * 50.0) / 1e6  # 0.015


class Everything:
    def __init__(self, tier: str) -> None:
        self.tier = tier

    def route(self, query: str, task_type: str | None) -> Decision:
        return Decision(self.tier)


def rows(n: int = 30) -> list[LakeLabel]:
    # mid matched frontier on each: mid is adequate (exact labels would say budget failed; these say "mid or cheaper")
    return [LakeLabel(f"r{i}", T0, f"query {i}", "faq", None, "mid", "mid", "budget", "mid", "shadow", 1000, 100)
            for i in range(n)]


@pytest.fixture(scope="module")
def report():
    return compare(Everything("frontier"), Everything("mid"), rows(), ModelRegistry.from_config(Config()))


def test_the_costs_are_the_hand_computed_ones(report) -> None:
    assert report.incumbent.cost_with_escalation_usd == pytest.approx(30 * MID)
    assert report.candidate.cost_with_escalation_usd == pytest.approx(30 * FRONTIER)
    assert report.moved_up == 30 and report.moved == [] and report.passed  # quality cannot fall: it passes


def test_a_candidate_that_costs_more_says_so_in_the_report(report) -> None:
    text = report.format()
    # 0.45 vs 0.135: +233 %
    assert "30 requests to dearer tiers" in text
    assert "costs 233% more than the incumbent" in text
    doc = report.as_dict()
    assert doc["cost_change"] == pytest.approx(30 * FRONTIER / (30 * MID) - 1)


def test_the_nightly_retrain_summary_says_the_candidate_costs_more(report, tmp_path: Path) -> None:
    summary = RetrainResult(tmp_path / "c.npz", ["budget"], 400, report, promoted=False, cost_usd=0.0).summary()
    assert "and 30 requests to dearer tiers" in summary and "costs 233% more" in summary


def test_a_cheaper_candidate_says_nothing_of_the_kind() -> None:
    rep = compare(Everything("mid"), Everything("mid"), rows(), ModelRegistry.from_config(Config()))
    assert "more than the incumbent" not in rep.format() and rep.as_dict()["cost_change"] == pytest.approx(0.0)
