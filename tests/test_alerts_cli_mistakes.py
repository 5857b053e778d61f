"""Operator mistakes at the ``costline alerts`` CLI: each is refused or said out loud, never a silent rc 0.

* ``test-notify`` that reached no Slack exits 1, and its test message is dropped: no Slack configured later
  gets a stale test message from the outbox;
* a Slack channel with neither token nor webhook_url: Slack is off, and the command says so;
* ``silence --label KEY=...`` with a key no alert of the rule carries (the silence would match nothing);
* ``history --rule`` with a name no rule has.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner, Result

from costline.alerts.notify import SlackBotNotifier
from costline.alerts.outbox import Outbox
from costline.alerts.rules import RULE_NAMES, Rule, Snapshot, evaluate
from costline.alerts.settings import RULE_LABELS, AlertsConfig
from costline.alerts.store import AlertStore
from costline.alerts.testing import ManualClock
from costline.lake import Lake
from costline.sim.slack_standin import SlackStandIn

CHANNEL = "alerts"


def invoke(tmp_path: Path, *args: str, slack: str = "", console: bool = True) -> Result:
    """``costline --config <toml> alerts ARGS`` with the state file under ``tmp_path``."""
    from costline.cli import _register_area_commands, cli

    _register_area_commands()
    toml = tmp_path / "costline.toml"
    toml.write_text(f'[lake]\npath = "{tmp_path / "lake"}"\n[alerts]\nstate_path = "{tmp_path / "state.sqlite"}"\n'
                    f"console = {'true' if console else 'false'}\n" + (f"[alerts.slack]\n{slack}" if slack else ""),
                    encoding="utf-8")
    return CliRunner().invoke(cli, ["--config", str(toml), "alerts", *args], catch_exceptions=False)


def bot_toml(standin: SlackStandIn) -> str:
    return f'token = "xoxb-test"\nchannel = "{CHANNEL}"\nbase_url = "{standin.base_url}"\ntimeout_s = 2\n'


# -- test-notify -----------------------------------------------------------------------------------

def test_test_notify_exits_1_when_slack_took_nothing_and_nothing_is_posted_later(tmp_path: Path) -> None:
    with SlackStandIn() as standin:
        ok = invoke(tmp_path, "test-notify", "--timeout", "5", slack=bot_toml(standin))
        assert ok.exit_code == 0, ok.output
        assert "sent to console, slack" in ok.output
        assert len(standin.messages(CHANNEL)) == 1

        standin.fail(500, times=10_000)  # Slack down for the whole --timeout
        down = invoke(tmp_path, "test-notify", "--timeout", "0.5", slack=bot_toml(standin))
        assert down.exit_code == 1, down.output
        assert "NOT delivered to slack" in down.output
        assert "dropped" in down.output

        store = AlertStore(tmp_path / "state.sqlite")
        try:
            assert store.outbox(unsent_only=True) == []  # nothing left for `alerts run` to retry
            standin.clear_faults()  # Slack back (or another Slack configured): nothing stale goes out
            outbox = Outbox(store, {"slack": SlackBotNotifier("xoxb-test", CHANNEL, base_url=standin.base_url)})
            stats = outbox.deliver_due(datetime.now(UTC) + timedelta(hours=1))
        finally:
            store.close()
        assert stats.sent == 0
        assert len(standin.messages(CHANNEL)) == 1  # still only the first, delivered test message


def test_test_notify_with_no_notifier_at_all_exits_1(tmp_path: Path) -> None:
    result = invoke(tmp_path, "test-notify", "--timeout", "0.5", console=False)
    assert result.exit_code == 1, result.output
    assert "no notifier is configured" in result.output


def test_test_notify_warns_that_slack_is_off_with_a_channel_alone(tmp_path: Path) -> None:
    result = invoke(tmp_path, "test-notify", "--timeout", "1", slack=f'channel = "{CHANNEL}"\n')
    assert result.exit_code == 0, result.output  # the console got it
    assert "sent to console" in result.stdout
    warning = result.stderr
    assert "Slack is OFF" in warning and "channel is set" in warning
    assert "token" in warning and "webhook_url" in warning  # the keys to set
    Lake(tmp_path / "lake").init()  # alerts run reads a lake (a missing one is refused: test_missing_lake.py)
    run = invoke(tmp_path, "run", "--once", slack=f'channel = "{CHANNEL}"\n')
    assert run.exit_code == 0, run.output
    assert "Slack is OFF" in run.stderr
    assert "Slack is OFF" not in invoke(tmp_path, "test-notify", "--timeout", "1").stderr  # no channel: not asked for


def test_a_test_message_nobody_waits_for_is_dropped_not_posted(tmp_path: Path) -> None:
    """Rows of `test-notify` left in a state file (its process killed, or queued by an older costline without
    an expiry) are dropped by whichever deliverer sees them, not posted to the Slack configured next."""
    clock = ManualClock(datetime(2026, 11, 8, 10, tzinfo=UTC))
    t = clock().timestamp()
    store = AlertStore(tmp_path / "state.sqlite")
    rows = [("expired", {"expires_at": t - 1}), ("legacy", {}), ("due", {"expires_at": t + 60})]
    with store.transaction() as con:
        for name, extra in rows:
            payload = {"kind": "test", "title": name, "text": name, "blocks": None, **extra}
            con.execute("INSERT INTO outbox (group_key, incident, kind, target, op, payload, created_at, "
                        "next_attempt_at) VALUES (?, 0, 'test', 'slack', 'post', ?, ?, ?)",
                        (f"test-{name}", json.dumps(payload), t - 3600, t - 3600))
    try:
        with SlackStandIn() as standin:
            outbox = Outbox(store, {"slack": SlackBotNotifier("xoxb-test", CHANNEL, base_url=standin.base_url)},
                            now=clock)
            stats = outbox.deliver_due()
            assert [m["text"] for m in standin.messages(CHANNEL)] == ["due"]
        assert (stats.sent, stats.dropped) == (1, 2)
        assert [r["group_key"] for r in store.outbox()] == ["test-due"]
    finally:
        store.close()


# -- silence --label -------------------------------------------------------------------------------

#: (rule, --label, refused?, words the refusal must contain). Label keys as docs/alerts.md describes the rules.
SILENCES = [
    ("cache_hit_rate_drop", "tenantt=acme", True, ["'tenantt'", "tenant"]),
    ("cache_hit_rate_drop", "tier=api", True, ["'tier'", "tenant"]),
    ("cost_per_success_rise", "tenant=acme", True, ["'tenant'", "tier"]),
    ("student_drift", "tier=student", True, ["'tier'", "subtype"]),
    ("pipeline_silent", "tenant=acme", True, ["no labels", "leave out --label"]),
    ("*", "rule=cache_hit_rate_drop", True, ["'rule'", "subtype, task_type, tenant, tier"]),
    ("*", "tenantt=acme", True, ["'tenantt'", "subtype, task_type, tenant, tier"]),
    ("routing_tier_match_drop", "tenant=acme", True, ["'tenant'", "tier, subtype, task_type"]),
    ("cache_hit_rate_drop", "tenant=acme", False, []),
    ("rejected_attempts_rise", "tier=student", False, []),
    ("routing_tier_match_drop", "tier=budget", False, []),
    ("routing_tier_match_drop", "subtype=medical", False, []),  # a shadow slice's alert (tier + subtype)
    ("student_drift", "subtype=intent", False, []),
    ("*", "tier=api", False, []),
    ("*", "tenant=acme", False, []),
]


def test_silence_refuses_a_label_key_no_alert_of_the_rule_has(tmp_path: Path) -> None:
    accepted = 0
    for rule, label, refused, words in SILENCES:
        result = invoke(tmp_path, "silence", rule, "--label", label, "--for", "1h", "--reason", "x")
        if refused:
            assert result.exit_code == 2, (rule, label, result.output)
            assert "would match nothing" in result.output, (rule, label, result.output)
            for word in words:
                assert word in result.output, (rule, label, word, result.output)
        else:
            assert result.exit_code == 0, (rule, label, result.output)
            accepted += 1
    store = AlertStore(tmp_path / "state.sqlite")
    try:
        assert len(store.silences()) == accepted  # a refused silence is not stored
    finally:
        store.close()


def test_rule_labels_are_the_keys_the_rules_put_on_their_alerts() -> None:
    """RULE_LABELS (what `silence --label` accepts) against one observation of every rule."""
    w = datetime(2026, 11, 7, 10, 0)
    now = datetime(2026, 11, 7, 11, 1, tzinfo=UTC)
    snap = Snapshot(
        cache=[{"window_start": w, "tenant": "acme", "hit_rate": 0.3, "avg_7d": 0.45, "lookups": 200, "hits": 60,
                "lookups_7d": 5000}],
        tiers=[{"window_start": w, "tier": "mid", "requests": 100, "successes": 100, "cost_usd": 1.3,
                "successes_7d": 10000, "cost_usd_7d": 100.0}],
        rejections=[{"window_start": w, "tier": "student", "attempts": 100, "rejected": 30, "problems": "x",
                     "attempts_7d": 5000, "rejected_7d": 500}],
        eval_runs=[{"run_id": "r0", "finished_at": w, "subtype": "intent", "gap": 0.09, "gap_ci_low": 0.07,
                    "gap_ci_high": 0.11, "threshold": 0.05, "n": 800}],
        shadow_runs=[{"run_id": f"s{d}", "finished_at": w - timedelta(days=d), "tier": "budget",
                      "tier_match_rate": 0.8 if d == 0 else 0.95, "n": 500,
                      # the tier's slices: each one's alert is labelled tier + subtype or tier + task_type
                      "slices": '[{"kind": "subtype", "name": "medical", "n": 30, "matches": 0, "upper": 0.2, '
                                '"flagged": true}, {"kind": "task_type", "name": "qa", "n": 40, "matches": 40, '
                                '"upper": 1.0, "flagged": false}]' if d == 0 else None} for d in range(8)],
        last_span_at=w, spans_known=True,
        dlq_samples=[(now.replace(tzinfo=None) - timedelta(minutes=10), 0), (now.replace(tzinfo=None), 5)],
        query_errors=[("cache", "IOException: boom")],
    )
    assert sorted(RULE_LABELS) == sorted(RULE_NAMES)
    config = AlertsConfig()
    for name in RULE_NAMES:
        observations = evaluate(Rule(name, getattr(config, name), 30), snap, now)
        assert observations, name
        # every key an alert carries is accepted, and every accepted key is carried by some alert of the rule
        # (routing_tier_match_drop: tier on the tier's alert, tier + subtype / task_type on a slice's)
        for o in observations:
            assert set(o.labels) <= set(RULE_LABELS[name]), (name, o.labels)
        assert {k for o in observations for k in o.labels} == set(RULE_LABELS[name]), name
        assert len({o.fingerprint for o in observations}) == len(observations), name


# -- history --rule --------------------------------------------------------------------------------

def test_history_refuses_an_unknown_rule_as_silence_does(tmp_path: Path) -> None:
    for command in (["history", "--rule"], ["silence", "--for", "1h", "--reason", "x"]):
        result = invoke(tmp_path, *command, "cache_hit_rate_dorp")
        assert result.exit_code == 2, (command, result.output)
        assert "unknown rule 'cache_hit_rate_dorp'; one of: cache_hit_rate_drop, cost_per_success_rise" in result.output
        assert "no history yet" not in result.output
    known = invoke(tmp_path, "history", "--rule", "cache_hit_rate_drop")
    assert known.exit_code == 0, known.output
    assert "no history yet" in known.output


def test_test_notify_before_any_lake_exists_leaves_nothing_at_the_lake_path(tmp_path: Path) -> None:
    """Slack set up before the first lake (or a mistyped [lake] path): the test message goes out, and no
    ``_alerts`` state is made where a lake would later be (alert state then lives under the real lake)."""
    from costline.cli import _register_area_commands, cli

    _register_area_commands()
    lake = tmp_path / "lake"
    toml = tmp_path / "costline.toml"
    with SlackStandIn() as standin:
        toml.write_text(f'[lake]\npath = "{lake}"\n[alerts]\nconsole = false\n[alerts.slack]\n{bot_toml(standin)}',
                        encoding="utf-8")
        result = CliRunner().invoke(cli, ["--config", str(toml), "alerts", "test-notify", "--timeout", "5"],
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert "sent to slack" in result.output
        assert len(standin.messages(CHANNEL)) == 1
    assert not lake.exists()
