"""Names from the lake in alert messages: they cannot forge lines, drive the terminal, toggle Slack formatting, or
break the "Dig in" query (real lake -> AlertService -> SlackBotNotifier -> Slack stand-in, and the console)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from slack_fixtures import clock, slack  # noqa: F401

from costline.alerts.notify import ConsoleNotifier, Outgoing, SlackBotNotifier
from costline.alerts.rules import Snapshot
from costline.alerts.service import AlertService
from costline.alerts.settings import AlertsConfig
from costline.config import Config, LakeConfig, PricingConfig
from costline.lake import Lake, open_lake
from costline.processors.buffer import rows_to_tables
from costline.processors.records import CallRow, LookupRow, RequestRow
from costline.sim.slack_standin import SlackStandIn

H = datetime(2026, 11, 8, 2)  # the closed hour judged
NOW = (H + timedelta(hours=1, minutes=1)).replace(tzinfo=UTC)


def _us(t: datetime) -> int:
    return int(t.replace(tzinfo=UTC).timestamp() * 1_000_000)


def _config(tmp: Path) -> Config:
    return Config(lake=LakeConfig(path=tmp / "lake"), pricing=PricingConfig(student_usd_per_hour=0.0),
                  alerts=AlertsConfig(state_path=tmp / "state.sqlite"))


def _tick(cfg: Config, slack: SlackStandIn, rule: str, source: Any = None) -> tuple[list[dict[str, Any]], list[str]]:
    """One tick of ``rule``: the chat.postMessage payloads the stand-in got (blocks decoded) and the console lines."""
    console: list[str] = []
    svc = AlertService(cfg, notifiers={"console": ConsoleNotifier(console.append),
                                       "slack": SlackBotNotifier("xoxb-t", "#alerts", base_url=slack.base_url)},
                       export=False, now=lambda: NOW, **({"source": source} if source else {}))
    try:
        svc.tick(NOW, rules=[rule], catch_up=False)
    finally:
        svc.shutdown()
    posts = [p for m, p in slack.requests() if m == "chat.postMessage"]
    for p in posts:
        p["blocks"] = json.loads(p["blocks"]) if isinstance(p.get("blocks"), str) else p.get("blocks")
    return posts, console


def _dig_in(post: dict[str, Any]) -> str | None:
    """The query of the post's "Dig in" code block as Slack shows it (its &amp;-escapes read back)."""
    for b in post["blocks"]:
        m = re.fullmatch(r"\*Dig in\* \(`costline sql`\):\n```(.*)```", (b.get("text") or {}).get("text", ""), re.S)
        if m:
            return m.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return None


# --- cache_hit_rate_drop: tenant ids, through the lake ---------------------------------------------------------

def _cache_lake(cfg: Config, tenant: str) -> None:
    """169 hours of 60 lookups for ``tenant``: 48 hits an hour, 12 in the closed hour (80% -> 20%)."""
    rows = []
    for h in range(168, -1, -1):
        hour = H - timedelta(hours=h)
        hits = 12 if h == 0 else 48
        for i in range(60):
            n = len(rows) + 1
            rows.append(LookupRow(f"s{n}", f"t{n}", None, None, _us(hour + timedelta(seconds=i * 60)), tenant,
                                  "default", i < hits, 0.9, 1.0, 0, n))
    Lake(cfg.lake.path).init().commit_batch("otlp_spans", 0, 0, len(rows), {"lookups": rows_to_tables("lookups", rows)})


WHY = "20.0% vs the same hour's 7-day average 80.0% (+60.0 points under)"

# tenant id, as Slack shows it (the label, neutralised), as the console shows it
CACHE_CASES = [
    ("org:42:prod", "org:42:prod", "org:42:prod"),  # a ``:word:`` is no emoji to strip on the console
    ("urn:acme:eu-west", "urn:acme:eu-west", "urn:acme:eu-west"),
    # invisible: quoted, and escaped in the label itself: one copyable label in Slack, on the console, in silences
    ("ac\u200bme", '"ac\\u200bme"', '"ac\\u200bme"'),
    ("ev\u202eil", '"ev\\u202eil"', '"ev\\u202eil"'),
    ("*bold* _it_ ~st~ `code`", "`*bold* _it_ ~st~ \u02cbcode\u02cb`", "`*bold* _it_ ~st~ \u02cbcode\u02cb`"),
    ("x```'; DROP TABLE y; --", "`x\u02cb\u02cb\u02cb'; DROP TABLE y; --`", "`x\u02cb\u02cb\u02cb'; DROP TABLE y; --`"),
    ("@here now", "@\u200bhere now", "@here now"),
]


@pytest.mark.parametrize(("tenant", "in_slack", "on_console"), CACHE_CASES)
def test_tenant_names_in_slack_and_on_the_console(tmp_path: Path, slack: SlackStandIn, tenant: str, in_slack: str,
                                                   on_console: str) -> None:
    cfg = _config(tmp_path)
    _cache_lake(cfg, tenant)
    (post,), console = _tick(cfg, slack, "cache_hit_rate_drop")

    assert post["text"] == (":red_circle: FIRING [warning] cache_hit_rate_drop\n"
                            f"• tenant={in_slack}: cache hit rate of {in_slack} {WHY}")
    assert post["blocks"][1] == {"type": "section", "text": {
        "type": "mrkdwn", "text": f"*tenant={in_slack}*\ncache hit rate of {in_slack} {WHY}"}}
    assert console == [f"FIRING [warning] cache_hit_rate_drop\n• tenant={on_console}: cache hit rate of {on_console} "
                       f"{WHY}"]

    # the query shown in Slack, copied and run, selects the tenant's rows: the last 24 hours and the closed one
    shown = _dig_in(post)
    assert shown is not None and shown.isascii() and "\ufffd" not in shown
    con = open_lake(cfg)
    try:
        got = [r[:3] for r in con.execute(shown).fetchall()]
        want = con.execute("SELECT window_start, tenant, lookups FROM cache_hit_rate_7d WHERE tenant = ? AND "
                           "window_start >= ? ORDER BY window_start", [tenant, H - timedelta(hours=24)]).fetchall()
    finally:
        con.close()
    assert len(want) == 25 and got == want


def test_a_query_too_long_for_slack_is_left_out_not_cut(tmp_path: Path, slack: SlackStandIn) -> None:
    cfg = _config(tmp_path)
    _cache_lake(cfg, "t" * 3000)
    (post,), _console = _tick(cfg, slack, "cache_hit_rate_drop")
    texts = [(b.get("text") or {}).get("text", "") for b in post["blocks"]]
    assert not any("```" in t for t in texts)  # no code block opened and never closed
    (note,) = [t for t in texts if t.startswith("*Dig in*")]
    query_len = len("SELECT window_start, tenant, lookups, round(hit_rate, 3) AS hit_rate, round(avg_7d_hour, 3) AS "
                    "avg_7d_hour,\n       round(avg_7d, 3) AS avg_7d\nFROM cache_hit_rate_7d WHERE tenant = ''\n"
                    "  AND window_start >= TIMESTAMP '2026-11-07 02:00:00'\nORDER BY window_start") + 3000
    assert note == (f"*Dig in*: the query is left out, {query_len:,} characters are too long for a Slack message "
                    "(a name in it is that long); the rule's view is in docs/alerts.md, query it with `costline sql`.")


# --- rejected_attempts_rise: tier names from span attributes, through the lake ---------------------------------

def _tier_lake(cfg: Config, tier: str) -> None:
    """100 hours of 10 requests on ``tier`` (1 turned down an hour), then 60 in the closed hour (30 turned down)."""
    hour = datetime(2026, 11, 8, 2)
    rows: list[Any] = []

    def request(i: int, t: datetime, rejected: str | None) -> None:
        rows.append(RequestRow(f"r{i}", f"t{i}", f"s{i}", _us(t), "acme", "faq", "x", "mid" if rejected else tier,
                               tier, False, 2 if rejected else 1, 1 if rejected else 0, True, None, 5.0, None, None,
                               0, i, None, rejected))
        for j, call_tier in enumerate([tier, "mid"] if rejected else [tier]):
            rows.append(CallRow(f"c{i}-{j}", f"t{i}", f"c{i}{j}", f"r{i}", _us(t), "chat", "vllm", "m", "m", call_tier,
                                100, 10, 0, 0, False, ["stop"], None, 0.001, "priced", "v", 5.0, None, None, 0, i))
    i = 0
    for h in range(1, 101):
        for k in range(10):
            i += 1
            request(i, hour - timedelta(hours=h, minutes=-k), f"{tier}:validator" if k == 0 else None)
    for k in range(60):
        i += 1
        request(i, hour + timedelta(minutes=k), f"{tier}:validator" if k % 2 == 0 else None)
    Lake(cfg.lake.path).init().commit_batch("otlp_spans", 0, 0, len(rows), {
        "requests": rows_to_tables("requests", [r for r in rows if isinstance(r, RequestRow)]),
        "calls": rows_to_tables("calls", [r for r in rows if isinstance(r, CallRow)])})


# tier, its label as Slack shows it, as the console shows it
TIER_CASES = [
    ("student\x1b[2J\n• tier=budget back to normal",
     '"student\\u001b[2J\\n• tier=budget back to normal"', '"student\\u001b[2J\\n• tier=budget back to normal"'),
    ("student\x1b]0;owned\x07", '"student\\u001b]0;owned\\u0007"', '"student\\u001b]0;owned\\u0007"'),
    ("stu\u2028dent", '"stu\\u2028dent"', '"stu\\u2028dent"'),  # escaped in the label: the same everywhere
]


@pytest.mark.parametrize(("tier", "in_slack", "on_console"), TIER_CASES)
def test_tier_names_forge_no_line_and_drive_no_terminal(tmp_path: Path, slack: SlackStandIn, tier: str,
                                                        in_slack: str, on_console: str) -> None:
    cfg = _config(tmp_path)
    _tier_lake(cfg, tier)
    (post,), console = _tick(cfg, slack, "rejected_attempts_rise")
    why = "turned down 50.0% of the time vs 7-day 10.0% (+40.0 points): validator 30"
    assert post["text"] == (f":red_circle: FIRING [warning] rejected_attempts_rise\n"
                            f"• tier={in_slack}: answers of tier {in_slack} {why}")
    assert post["blocks"][1] == {"type": "section", "text": {
        "type": "mrkdwn", "text": f"*tier={in_slack}*\nanswers of tier {in_slack} {why}"}}
    assert console == [f"FIRING [warning] rejected_attempts_rise\n• tier={on_console}: answers of tier {on_console} "
                       f"{why}"]
    shown = _dig_in(post)
    assert shown is not None and all(c.isprintable() or c == "\n" for c in shown) and "`" not in shown
    con = open_lake(cfg)
    try:
        got = con.execute(shown).fetchall()
    finally:
        con.close()
    assert len(got) == 30 and all(r[4] == f"{tier}:validator" for r in got)  # the closed hour's 30 turned down


# --- the job rules: subtype, task_type and slice names (a snapshot source in front of the real service) ---------

class _SnapshotSource:
    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def snapshot(self, now: datetime, rules: Any = (), *, window: datetime | None = None) -> Snapshot:
        return self.snap

    @contextmanager
    def frozen(self) -> Iterator[None]:
        yield

    def hours_with_data(self, rule: str, since: datetime, until: datetime) -> set[datetime]:
        return set()


FORGED = "faq\x1b[2J\x1b]0;owned\x07\n• subtype=billing: all fine"
FORGED_LABEL = '"faq\\u001b[2J\\u001b]0;owned\\u0007\\n• subtype=billing: all fine"'
RUN_AT = datetime(2026, 11, 8, 2)


def _drift(name: str) -> Snapshot:
    return Snapshot(eval_runs=[{"run_id": "r1", "finished_at": RUN_AT, "subtype": name, "gap": 0.3, "gap_ci_low": 0.25,
                                "gap_ci_high": 0.35, "threshold": 0.1, "n": 800}])


def _slice(kind: str, name: str) -> Snapshot:
    return Snapshot(shadow_runs=[{"run_id": "s1", "finished_at": RUN_AT, "until": RUN_AT, "tier": "upper",
                                  "tier_match_rate": 0.95, "n": 400, "slices": json.dumps([
                                      {"kind": kind, "name": name, "n": 200, "matches": 100, "upper": 0.6,
                                       "flagged": True, "reason": "under the floor"}])}])


JOB_CASES = [
    ("student_drift", _drift(FORGED), "warning",
     f"• subtype={FORGED_LABEL}: student-teacher quality gap on {FORGED_LABEL} 0.300 (CI 0.250–0.350) vs 0.100"),
    ("student_drift", _drift("_it_ *b*"), "warning",
     "• subtype=`_it_ *b*`: student-teacher quality gap on `_it_ *b*` 0.300 (CI 0.250–0.350) vs 0.100"),
    ("routing_tier_match_drop", _slice("subtype", FORGED), "warning",
     f"• subtype={FORGED_LABEL}, tier=upper: tier-match rate on upper, subtype {FORGED_LABEL}: 100/200 matched "
     "(50.0%, upper bound 60.0%) under the floor 85%"),
    ("routing_tier_match_drop", _slice("task_type", "code\n• ok"), "warning",
     '• task_type="code\\n• ok", tier=upper: tier-match rate on upper, task_type "code\\n• ok": 100/200 matched '
     "(50.0%, upper bound 60.0%) under the floor 85%"),
]


@pytest.mark.parametrize(("rule", "snap", "severity", "line"), JOB_CASES)
def test_job_rule_names_are_quoted(tmp_path: Path, slack: SlackStandIn, rule: str, snap: Snapshot, severity: str,
                                   line: str) -> None:
    posts, console = _tick(_config(tmp_path), slack, rule, _SnapshotSource(snap))
    (post,) = posts
    assert post["text"] == f":red_circle: FIRING [{severity}] {rule}\n{line}"
    assert console == [f"FIRING [{severity}] {rule}\n{line}"]


# --- the console notifier alone -------------------------------------------------------------------------------

CONSOLE_CASES = [
    (":red_circle: FIRING [critical] pipeline_silent\n• -: no spans in the lake for 46 minutes "
     "(last at 2026-11-08 02:13:45 UTC)",
     "FIRING [critical] pipeline_silent\n• -: no spans in the lake for 46 minutes (last at 2026-11-08 02:13:45 UTC)"),
    (":bell: STILL FIRING [warning] x\n• tenant=a:b:c: ok :tada: done", "STILL FIRING [warning] x\n"
     "• tenant=a:b:c: ok :tada: done"),
    (":white_check_mark: TEST sent at 10:00:00 UTC", "TEST sent at 10:00:00 UTC"),
    (":tada: not an icon of ours", ":tada: not an icon of ours"),
    ("FIRING x\n• tier=a\x1b[2J\x1b]0;t\x07\r\u202e\u200b", "FIRING x\n• tier=a\\x1b[2J\\x1b]0;t\\x07\\r\\u202e\\u200b"),
]


@pytest.mark.parametrize(("text", "printed"), CONSOLE_CASES)
def test_console_strips_only_its_icon_and_escapes_what_does_not_print(text: str, printed: str) -> None:
    got: list[str] = []
    ConsoleNotifier(got.append).send(Outgoing("post", {"text": text}, "k"))
    assert got == [printed]
