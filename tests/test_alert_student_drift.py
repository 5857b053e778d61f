"""The student_drift alert follows the nightly drift job: it judges the subtype sizes the job judges (min_n 30, the
job's own guard) and pages on every rule the job flags with (CI, baseline shift, trend), quoting the job's reason.

Expected texts and conditions are written out by hand from the rows below (threshold 0.15, the job's default)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from costline.alerts.rules import Condition, Rule, Snapshot, evaluate
from costline.alerts.settings import StudentDriftSettings

RUN_AT = datetime(2026, 11, 8, 0, 5)
NOW = datetime(2026, 11, 8, 1, 0, tzinfo=UTC)

CI_REASON = "gap 0.500 (99% CI 0.343-0.657) is over its threshold 0.150"
SHIFT_REASON = "gap grew +0.060 over the baseline's 0.020 (Fisher p=0.0031)"
MWU_REASON = "gap grew +0.040 over the baseline's 0.050 (Mann-Whitney p=0.0004)"
TREND_REASON = "gap rising +0.0060 per run over 14 runs (Mann-Kendall p=0.0002)"


def run(gap: float, lo: float, hi: float, n: int, flagged: bool | None, reason: str | None = "",
        subtype: str = "billing", run_id: str = "drift-1", at: datetime = RUN_AT) -> dict:
    row = {"run_id": run_id, "finished_at": at, "subtype": subtype, "n": n, "gap": gap, "gap_ci_low": lo,
           "gap_ci_high": hi, "threshold": 0.15, "reason": reason}
    if flagged is not None:  # None: a row written before eval_runs had the column
        row["flagged"] = flagged
    return row


HEAD = "student-teacher quality gap on billing"


@pytest.mark.parametrize(
    ("row", "min_n", "expected", "summary", "flagged_by"),
    [
        # the reviewer's night: a 9 %-of-traffic subtype got 70 of the 500 samples; the job flagged its CI
        (run(0.5, 0.343, 0.657, 70, True, CI_REASON), None, Condition.BREACH,
         f"{HEAD} 0.500 (CI 0.343–0.657) vs 0.150; flagged by the drift job: {CI_REASON}", CI_REASON),
        # 84 items: each of six equal subtypes at the article's 500 samples
        (run(0.6, 0.45, 0.75, 84, True, CI_REASON), None, Condition.BREACH,
         f"{HEAD} 0.600 (CI 0.450–0.750) vs 0.150; flagged by the drift job: {CI_REASON}", CI_REASON),
        # flagged by the baseline shift test while the CI is wholly under the threshold: a breach, not OK
        (run(0.08, 0.02, 0.14, 500, True, SHIFT_REASON), None, Condition.BREACH,
         f"{HEAD} 0.080 (CI 0.020–0.140) vs 0.150; flagged by the drift job: {SHIFT_REASON}", SHIFT_REASON),
        (run(0.09, 0.05, 0.13, 500, True, MWU_REASON), None, Condition.BREACH,
         f"{HEAD} 0.090 (CI 0.050–0.130) vs 0.150; flagged by the drift job: {MWU_REASON}", MWU_REASON),
        # flagged by the trend test while the CI straddles the threshold: a breach, not BAND
        (run(0.10, 0.05, 0.16, 500, True, TREND_REASON), None, Condition.BREACH,
         f"{HEAD} 0.100 (CI 0.050–0.160) vs 0.150; flagged by the drift job: {TREND_REASON}", TREND_REASON),
        # two rules at once: the job's reason names both
        (run(0.5, 0.343, 0.657, 70, True, f"{CI_REASON}; {TREND_REASON}"), None, Condition.BREACH,
         f"{HEAD} 0.500 (CI 0.343–0.657) vs 0.150; flagged by the drift job: {CI_REASON}; {TREND_REASON}",
         f"{CI_REASON}; {TREND_REASON}"),
        # flagged without a reason recorded
        (run(0.10, 0.05, 0.16, 500, True, None), None, Condition.BREACH,
         f"{HEAD} 0.100 (CI 0.050–0.160) vs 0.150; flagged by the drift job: no reason recorded",
         "no reason recorded"),
        # n = 30 = min_n is judged: the alert's own CI rule (an older row with no verdict) fires on it
        (run(0.5, 0.3, 0.7, 30, None, None), None, Condition.BREACH, f"{HEAD} 0.500 (CI 0.300–0.700) vs 0.150", None),
        # not flagged, CI wholly under: resolves (also for a row with no verdict column)
        (run(0.02, 0.0, 0.04, 70, False), None, Condition.OK, f"{HEAD} 0.020 (CI 0.000–0.040) vs 0.150", None),
        (run(0.02, 0.0, 0.04, 500, None, None), None, Condition.OK, f"{HEAD} 0.020 (CI 0.000–0.040) vs 0.150", None),
        # not flagged, CI straddles: state kept
        (run(0.12, 0.08, 0.16, 500, False), None, Condition.BAND, f"{HEAD} 0.120 (CI 0.080–0.160) vs 0.150", None),
        # under min_n 30: too few to judge even when flagged (a row written by hand: the job flags no such run)
        (run(0.5, 0.3, 0.7, 29, True, CI_REASON), None, Condition.BAND,
         f"{HEAD} 0.500 (CI 0.300–0.700) vs 0.150; flagged by the drift job: {CI_REASON}; only 29 queries "
         "evaluated (fewer than min_n 30): too few to judge, state kept", CI_REASON),
        # a min_n set in the config is kept: 70 queries are too few for min_n 100
        (run(0.5, 0.343, 0.657, 70, True, CI_REASON), 100, Condition.BAND,
         f"{HEAD} 0.500 (CI 0.343–0.657) vs 0.150; flagged by the drift job: {CI_REASON}; only 70 queries "
         "evaluated (fewer than min_n 100): too few to judge, state kept", CI_REASON),
    ],
)
def test_the_latest_run_pages_at_the_jobs_sizes_and_on_every_flag(row: dict, min_n: int | None, expected: Condition,
                                                                   summary: str, flagged_by: str | None) -> None:
    settings = StudentDriftSettings() if min_n is None else StudentDriftSettings(min_n=min_n)
    (obs,) = evaluate(Rule("student_drift", settings), Snapshot(eval_runs=[row]), NOW)
    assert (obs.condition, obs.summary) == (expected, summary)
    assert obs.figures.get("flagged by the job") == flagged_by
    # the dig-in query shows the job's verdict next to the figures
    assert obs.query == ("SELECT run_id, finished_at, subtype, n, gap, gap_ci_low, gap_ci_high, threshold, flagged, "
                         "reason\nFROM eval_runs WHERE subtype = 'billing' ORDER BY finished_at DESC LIMIT 10")


def test_only_the_latest_runs_flag_counts() -> None:
    clean, flagged = run(0.02, 0.0, 0.04, 500, False), run(0.10, 0.05, 0.16, 500, True, TREND_REASON)
    for older, latest, expected in (
        (flagged, clean, Condition.OK),  # an older run's flag is no evidence about the student today
        (clean, flagged, Condition.BREACH),  # the latest run's flag fires whatever the runs before it said
    ):
        runs = [dict(older, run_id="drift-0", finished_at=RUN_AT - timedelta(days=1)), latest]
        (obs,) = evaluate(Rule("student_drift", StudentDriftSettings()), Snapshot(eval_runs=runs), NOW)
        assert (obs.condition, obs.window) == (expected, "eval run drift-1 finished 2026-11-08 00:05 UTC")
        assert ("flagged by the drift job" in obs.summary) is (expected is Condition.BREACH)


@pytest.mark.parametrize(
    ("reason", "shown"),
    [
        # a line break would start a line of its own in the on-call message (a forged member): JSON-quoted
        ("gap grew\n• subtype=intent: all clear", '"gap grew\\n• subtype=intent: all clear"'),
        # Slack formatting characters: shown as inline code, a backtick in it as ˋ
        ("*gap* grew _a lot_", "`*gap* grew _a lot_`"),
        ("gap `grew`", "`gap ˋgrewˋ`"),
        # whitespace around it: quoted, so it reads as what it is
        (" gap grew ", '" gap grew "'),
        # bounded: the first 300 characters
        ("g" * 1000, "g" * 300),
    ],
)
def test_the_jobs_reason_is_shown_as_data(reason: str, shown: str) -> None:
    (obs,) = evaluate(Rule("student_drift", StudentDriftSettings()),
                      Snapshot(eval_runs=[run(0.5, 0.343, 0.657, 70, True, reason)]), NOW)
    assert obs.condition is Condition.BREACH
    assert obs.summary == f"{HEAD} 0.500 (CI 0.343–0.657) vs 0.150; flagged by the drift job: {shown}"
    assert obs.figures["flagged by the job"] == shown


def test_the_default_min_n_is_the_drift_jobs_and_a_set_one_is_kept(tmp_path: Path) -> None:
    from costline.config import load_config

    plain = tmp_path / "plain.toml"
    plain.write_text("")
    cfg = load_config(plain, env={})
    assert (cfg.alerts.student_drift.min_n, cfg.jobs.drift.min_n) == (30, 30)
    explicit = tmp_path / "explicit.toml"
    explicit.write_text("[alerts.student_drift]\nmin_n = 100\n")
    assert load_config(explicit, env={}).alerts.student_drift.min_n == 100


def _eval_rows(run_id: str, at: datetime, billing: dict) -> list[dict]:
    """One night of the drift job as it writes eval_runs: billing as given, intent clean."""
    base = {"run_id": run_id, "started_at": at - timedelta(minutes=5), "finished_at": at,
            "since": at - timedelta(days=1), "until": at, "task_type": "classification", "metric": "exact", "threshold": 0.15}
    return [dict(base, subtype="billing", **billing),
            dict(base, subtype="intent", n=430, gap=0.0, gap_ci_low=0.0, gap_ci_high=0.0, flagged=False, reason="")]


def test_a_flagged_small_subtype_pages_once_through_the_lake(tmp_path: Path) -> None:
    """A real lake: the job's eval_runs files, read by the alert source; the Slack post is sent once while the
    alert fires, and the resolved one when a clean run comes."""
    from costline.alerts.notify import InMemoryNotifier
    from costline.alerts.service import evaluate_job_rules
    from costline.alerts.settings import AlertsConfig
    from costline.config import Config, LakeConfig
    from costline.jobs.store import JobStore
    from costline.lake import Lake

    lake = tmp_path / "lake"
    Lake(lake).init()
    store = JobStore(lake).init()
    cfg = Config(lake=LakeConfig(path=lake), alerts=AlertsConfig(state_path=tmp_path / "state.sqlite"))
    forged = "gap rising +0.0060 per run over 14 runs (Mann-Kendall p=0.0002)\n• subtype=intent: all clear *ok*"
    store.write("eval_runs", "drift-1", _eval_rows("drift-1", RUN_AT, {
        "n": 70, "gap": 0.10, "gap_ci_low": 0.05, "gap_ci_high": 0.16, "flagged": True, "reason": forged}))
    slack = InMemoryNotifier("slack")

    def tick(at: datetime) -> list[str]:
        evaluate_job_rules(cfg, now=at.replace(tzinfo=UTC), notifiers={"slack": slack}, export=False)
        return [m.payload["text"] for m in slack.sent() if m.op == "post"]

    posts = tick(RUN_AT + timedelta(minutes=1))
    assert posts == [
        ":red_circle: FIRING [warning] student_drift\n"
        "• subtype=billing: student-teacher quality gap on billing 0.100 (CI 0.050–0.160) vs 0.150; flagged by the "
        'drift job: `"gap rising +0.0060 per run over 14 runs (Mann-Kendall p=0.0002)\\n• subtype=intent: all clear '
        '*ok*"`']
    # once only: the same run read again later posts nothing more
    assert tick(RUN_AT + timedelta(minutes=30)) == posts
    assert tick(RUN_AT + timedelta(hours=2)) == posts
    # the next night's run is clean (not flagged, CI wholly under 0.15): resolved
    store.write("eval_runs", "drift-2", _eval_rows("drift-2", RUN_AT + timedelta(days=1), {
        "n": 75, "gap": 0.02, "gap_ci_low": 0.0, "gap_ci_high": 0.05, "flagged": False, "reason": ""}))
    after = tick(RUN_AT + timedelta(days=1, minutes=1))
    assert len(after) == 2 and after[1].startswith(":large_green_circle: RESOLVED [warning] student_drift")
