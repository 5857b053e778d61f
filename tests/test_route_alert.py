"""The routing loop's hand-off to the alerts: when ``routing_tier_match_drop`` fires after the opt-in
nightly retrain, the alert's text (console and Slack) carries the candidate-vs-incumbent verdict.

A real lake (Parquet files written by the jobs' store, DuckDB views), a real gate report
(:func:`costline.serving.routing.gate.compare` over hand-made labels), the real alert service with an
injected clock, the console notifier and the Slack stand-in through ``slack_sdk``. The expected
figures (Wilson bounds, rates) are computed here by hand."""

from __future__ import annotations

import dataclasses
import math
import shlex
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from costline.alerts.notify import ConsoleNotifier, SlackBotNotifier
from costline.alerts.service import AlertService
from costline.alerts.settings import AlertsConfig
from costline.sim.slack_standin import SlackStandIn
from costline.alerts.testing import ManualClock
from costline.config import Config, LakeConfig
from costline.jobs.store import JobStore, open_jobs_lake
from costline.serving.registry import ModelRegistry
from costline.serving.routing.gate import compare
from costline.serving.routing.labels import LakeLabel, NotEnoughLabelsError
from costline.serving.routing.loop import RetrainResult, record_retrain, retrain_candidate
from costline.serving.routing.router import Decision

NIGHT = datetime(2026, 11, 8, 2)  # the nightly run's window ends here
SHADOW_DONE = NIGHT + timedelta(minutes=20)
RETRAIN_DONE = NIGHT + timedelta(minutes=35)
ALERT_AT = NIGHT + timedelta(minutes=36)


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    mid = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (mid - half) / (1 + z * z / n), (mid + half) / (1 + z * z / n)


class Table:
    """A policy that routes each query to the tier a dict says."""

    def __init__(self, tiers: dict[str, str], default: str) -> None:
        self.tiers, self.default = tiers, default

    def route(self, query: str, task_type: str | None) -> Decision:
        return Decision(self.tiers.get(query, self.default))


def lab(rid: str, lo: str, hi: str | None) -> LakeLabel:
    return LakeLabel(rid, NIGHT - timedelta(hours=3), f"query {rid}", "faq", None, "upper", "upper", lo, hi,
                     "shadow", 800, 120)


# 20 requests the shadow labels say budget answers well, 10 it fails (cheapest adequate: mid).
GOOD = [lab(f"g{i}", "budget", "budget") for i in range(20)]
BAD = [lab(f"b{i}", "mid", "mid") for i in range(10)]


def config(tmp_path: Path, **alerts: object) -> Config:
    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"),
                 alerts=AlertsConfig(state_path=tmp_path / "state.sqlite", **alerts))  # type: ignore[arg-type]
    router = dataclasses.replace(cfg.serving.router, policy_path=tmp_path / "policy" / "route.npz")
    return cfg.replace(serving=dataclasses.replace(cfg.serving, router=router))


def write_shadow_runs(cfg: Config) -> None:
    """Three nights of shadow runs; on the last, upper's tier-match rate falls from 92% to 70%."""
    store = JobStore(cfg.lake.path).init()
    for night, (upper, mid) in enumerate([(0.92, 0.93), (0.92, 0.94), (0.70, 0.93)]):
        until = NIGHT - timedelta(days=2 - night)
        rid = f"shadow@{until:%Y%m%dT%H%M}"
        store.write("shadow_runs", rid, [
            {"run_id": rid, "started_at": until, "finished_at": until + timedelta(minutes=20),
             "since": until - timedelta(days=1), "until": until, "tier": tier, "next_tier": nxt, "n": 200,
             "matches": round(rate * 200), "tier_match_rate": rate}
            for tier, nxt, rate in (("upper", "frontier", upper), ("mid", "upper", mid))])


def retrain(tmp_path: Path, cfg: Config, moved: list[LakeLabel], *, promoted: bool = False) -> Path:
    """A candidate that sends ``moved`` to budget (the incumbent serves everything on upper), gated."""
    rows = GOOD + BAD
    report = compare(Table({r.query: "budget" for r in moved}, "upper"), Table({}, "upper"), rows,
                     ModelRegistry.from_config(cfg), gate=0.75)
    cand = tmp_path / "policy" / "route.candidate.npz"
    cand.parent.mkdir(parents=True, exist_ok=True)
    cand.write_bytes(b"candidate")
    record_retrain(cfg, RetrainResult(cand, ["upper"], 412, report, promoted, 0.0, incumbent="rules",
                                      window=(NIGHT - timedelta(days=1), NIGHT)),
                   until=NIGHT, now=lambda: RETRAIN_DONE)
    return cand


def alert_lines(cfg: Config, at: datetime = ALERT_AT) -> list[str]:
    lines: list[str] = []
    service = AlertService(cfg, now=ManualClock(at.replace(tzinfo=UTC)),
                           notifiers={"console": ConsoleNotifier(lines.append)})
    try:
        service.tick(rules=["routing_tier_match_drop"])
    finally:
        service.shutdown()
    return lines


def test_a_refused_candidate_is_reported_with_its_moved_requests_and_ci(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    write_shadow_runs(cfg)
    cand = retrain(tmp_path, cfg, GOOD + BAD)  # widens budget onto 10 requests it fails
    (text,) = alert_lines(cfg)
    lo, hi = wilson(20, 30)
    assert text.splitlines()[0].startswith("FIRING") and "routing_tier_match_drop" in text.splitlines()[0]
    assert "tier=upper: tier-match rate on upper 70.0% vs 92.0%" in text
    assert f"candidate {cand} (412 labels) vs rules: gate REFUSED (fails on budget)" in text
    assert "it moves 30 requests to cheaper tiers" in text
    assert f"budget: 30 moved, adequate 66.7% (95% CI {lo:.1%}–{hi:.1%}) — FAILS the gate" in text
    assert f"not promoted, rules stays in service (the moved requests are in {cand}.manifest.json)" in text
    assert "costline route promote" not in text
    assert "tier=mid" not in text  # mid holds: no alert, no verdict


def test_a_passing_candidate_comes_with_the_promote_command_on_console_and_slack(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    write_shadow_runs(cfg)
    cand = tmp_path / "policy" / "route.candidate.npz"
    clock = ManualClock(ALERT_AT.replace(tzinfo=UTC))
    with SlackStandIn(now=clock.epoch) as slack:
        retrain(tmp_path, cfg, GOOD)
        lines: list[str] = []
        service = AlertService(cfg, now=clock, notifiers={
            "console": ConsoleNotifier(lines.append),
            "slack": SlackBotNotifier("xoxb-demo", "alerts", base_url=slack.base_url, timeout_s=2)})
        try:
            service.tick(rules=["routing_tier_match_drop"])
        finally:
            service.shutdown()
        (msg,) = slack.messages("alerts")
    lo, hi = wilson(20, 20)
    promote = f"costline route promote {shlex.quote(str(cand))}"
    (text,) = lines
    assert "vs rules: gate PASSED (needs the 95% CI's lower bound ≥ 75%); it moves 20 requests" in text
    assert f"budget: 20 moved, adequate 100.0% (95% CI {lo:.1%}–{hi:.1%})" in text and "FAILS" not in text
    assert f"promote with `{promote}`" in text
    assert f"promote with `{promote}`" in msg["text"]  # Slack's fallback text
    fields = {f["text"].split("\n", 1)[0]: f["text"].split("\n", 1)[1]
              for b in msg["blocks"] if b["type"] == "section" for f in b.get("fields", [])}
    assert fields["*nightly retrain*"] == "gate PASSED" and fields["*moved to cheaper tiers*"] == "20"
    assert fields["*candidate*"] == str(cand) and promote in fields["*next step*"]
    assert any("route_retrains" in b["text"]["text"] for b in msg["blocks"] if b["type"] == "section"
               and "Dig in" in b.get("text", {}).get("text", ""))


def test_a_verdict_older_than_the_shadow_run_is_not_reported(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    write_shadow_runs(cfg)
    cand = tmp_path / "old.npz"
    cand.write_bytes(b"old")
    report = compare(Table({}, "upper"), Table({}, "upper"), GOOD, ModelRegistry.from_config(cfg))
    record_retrain(cfg, RetrainResult(cand, ["upper"], 300, report, False, 0.0),
                   until=NIGHT - timedelta(days=1), now=lambda: NIGHT - timedelta(hours=23))
    (text,) = alert_lines(cfg)
    assert "tier-match rate on upper 70.0%" in text and "nightly retrain" not in text


def test_a_retrain_with_too_few_labels_says_so_in_the_alert(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    write_shadow_runs(cfg)
    with pytest.raises(NotEnoughLabelsError):  # the lake has shadow runs but no labelled requests
        retrain_candidate(cfg, until=NIGHT, now=lambda: RETRAIN_DONE, breaches=["upper"])
    con = open_jobs_lake(cfg)
    try:
        (status, trigger), = con.execute("SELECT status, trigger FROM route_retrains").fetchall()
    finally:
        con.close()
    assert (status, trigger) == ("skipped", "upper")
    (text,) = alert_lines(cfg)
    assert "nightly retrain skipped:" in text and "usable labels" in text


def test_a_candidate_that_moves_requests_up_says_so_in_the_alert(tmp_path: Path) -> None:
    """The gate judges quality only, so a candidate that sends requests to a dearer tier can pass: the on-call
    engineer reads how many it moves up beside how many it moves down."""
    cfg = config(tmp_path)
    write_shadow_runs(cfg)
    rows = GOOD + BAD
    up = [r.query for r in BAD[:4]]
    report = compare(Table({**{r.query: "budget" for r in GOOD}, **{q: "frontier" for q in up}}, "upper"),
                     Table({}, "upper"), rows, ModelRegistry.from_config(cfg), gate=0.75)
    cand = tmp_path / "policy" / "route.candidate.npz"
    cand.parent.mkdir(parents=True, exist_ok=True)
    cand.write_bytes(b"candidate")
    record_retrain(cfg, RetrainResult(cand, ["upper"], 412, report, False, 0.0, incumbent="rules",
                                      window=(NIGHT - timedelta(days=1), NIGHT)),
                   until=NIGHT, now=lambda: RETRAIN_DONE)
    (text,) = alert_lines(cfg)
    assert f"it moves {len(GOOD)} requests to cheaper tiers" in text
    assert "and 4 to dearer tiers" in text
