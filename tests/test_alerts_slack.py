"""Against the Slack stand-in, through the real slack_sdk clients (WebClient, WebhookClient)."""

from __future__ import annotations

from pathlib import Path

import pytest

from costline.alerts.testing import ManualClock as Clock, obs
from costline.alerts.engine import AlertEngine
from costline.alerts.notify import SlackBotNotifier, SlackWebhookNotifier
from costline.alerts.outbox import Outbox
from costline.alerts.settings import AlertsConfig, OutboxConfig
from costline.sim.slack_standin import SlackStandIn
from costline.alerts.store import AlertStore

CHANNEL = "#llm-costs"


from slack_fixtures import clock, slack  # noqa: E402,F401 (fixtures: a manual clock, the Slack stand-in on it)


class Rig:
    """Engine + outbox over a state file, delivering to Slack: rebuild() is a restart."""

    def __init__(self, tmp_path: Path, clock: Clock, notifier_factory) -> None:  # type: ignore[no-untyped-def]
        self.tmp_path, self.clock, self.factory = tmp_path, clock, notifier_factory
        self.rebuild()

    def rebuild(self) -> None:
        self.store = AlertStore(self.tmp_path / "state.sqlite")
        self.engine = AlertEngine(self.store, AlertsConfig(), targets=("slack",), now=self.clock)
        self.outbox = Outbox(self.store, {"slack": self.factory()}, OutboxConfig(backoff_initial_s=5, backoff_max_s=60),
                             now=self.clock)

    def step(self, cond: str | None = None, minutes: float = 1) -> None:
        if cond is not None:
            self.engine.apply({"cache_hit_rate_drop": [obs(cond)]})
        self.outbox.deliver_due()
        self.clock.advance(minutes=minutes)


def bot(slack: SlackStandIn, timeout_s: float = 0.5):  # type: ignore[no-untyped-def]
    return lambda: SlackBotNotifier("xoxb-test", CHANNEL, base_url=slack.base_url, timeout_s=timeout_s)


def top_level(slack: SlackStandIn) -> list[dict]:
    return [m for m in slack.messages(CHANNEL) if not m.get("thread_ts")]


def replies(slack: SlackStandIn) -> list[dict]:
    return [m for m in slack.messages(CHANNEL) if m.get("thread_ts")]


def test_firing_then_resolved_in_the_same_thread(tmp_path: Path, clock: Clock, slack: SlackStandIn) -> None:
    rig = Rig(tmp_path, clock, bot(slack))
    for cond in ["breach", "breach", "band", "ok", "ok"]:
        rig.step(cond)
    (root,) = top_level(slack)
    (reply,) = replies(slack)
    assert reply["thread_ts"] == root["ts"]
    assert root["blocks"][0]["text"]["text"].startswith("RESOLVED")  # the original was updated
    assert root.get("edited")
    assert "RESOLVED" in reply["text"]
    assert root["metadata"]["event_type"] == "costline_alert"
    assert any("```" in str(b) and "cache_hit_rate_7d" in str(b) for b in
               [r for r in slack.requests() if r[0] == "chat.postMessage"][0][1]["blocks"])


@pytest.mark.parametrize("fault", ["500", "429", "hang"])
def test_an_outage_during_firing_delivers_everything_afterwards_once(
        tmp_path: Path, clock: Clock, slack: SlackStandIn, fault: str) -> None:
    rig = Rig(tmp_path, clock, bot(slack, timeout_s=0.3))
    if fault == "500":
        slack.fail(500, times=4)
    elif fault == "429":
        slack.fail(429, retry_after=45, times=1)  # honoured up to the Rig's backoff_max_s (60)
    else:
        slack.hang(1.0, times=2)
    rig.step("breach", minutes=0.05)
    assert top_level(slack) == [] or fault == "hang"
    if fault == "429":
        assert rig.store.outbox()[0]["next_attempt_at"] == pytest.approx(clock.epoch() - 3 + 45, abs=1)
    rig.step("ok", minutes=0.05)  # it recovers during the outage: the resolve queues behind the firing
    for _ in range(12):
        rig.step(minutes=1)
    assert rig.outbox.pending() == 0
    assert len(top_level(slack)) == 1 and len(replies(slack)) == 1
    assert replies(slack)[0]["thread_ts"] == top_level(slack)[0]["ts"]


@pytest.mark.parametrize("which", ["firing", "resolved"])
def test_slack_accepted_but_the_answer_was_lost(tmp_path: Path, clock: Clock, slack: SlackStandIn, which: str) -> None:
    """The message reached Slack, the client timed out: the retry finds it (history / replies) instead of re-posting."""
    rig = Rig(tmp_path, clock, bot(slack, timeout_s=0.3))
    if which == "firing":
        slack.hang(1.0, after_accept=True, method="chat.postMessage")
    rig.step("breach")
    if which == "resolved":
        slack.hang(1.0, after_accept=True, method="chat.postMessage")
    rig.step("ok")
    for _ in range(5):
        rig.step(minutes=1)
    assert rig.outbox.pending() == 0
    assert len(top_level(slack)) == 1 and len(replies(slack)) == 1
    looked_up = [m for m, _ in slack.requests() if m.startswith("conversations.")]
    assert looked_up == ["conversations.history" if which == "firing" else "conversations.replies"]


def test_restart_mid_incident_does_not_resend_and_threads_the_resolve(
        tmp_path: Path, clock: Clock, slack: SlackStandIn) -> None:
    rig = Rig(tmp_path, clock, bot(slack))
    rig.step("breach")
    rig.store.close()
    rig.rebuild()
    rig.step("breach")
    rig.step("breach")
    rig.store.close()
    rig.rebuild()
    rig.step("ok")
    assert len(top_level(slack)) == 1 and len(replies(slack)) == 1
    assert replies(slack)[0]["thread_ts"] == top_level(slack)[0]["ts"]


def test_webhook_posts_firing_and_resolved(tmp_path: Path, clock: Clock, slack: SlackStandIn) -> None:
    rig = Rig(tmp_path, clock, lambda: SlackWebhookNotifier(slack.webhook_url, timeout_s=0.5))
    slack.fail(429, retry_after=2, method="webhook")
    rig.step("breach", minutes=0.01)
    assert slack.webhook_posts() == []
    for cond in [None, "breach", "ok", None]:
        rig.step(cond)
    posts = slack.webhook_posts()
    assert len(posts) == 2
    assert "FIRING" in posts[0]["text"] and "RESOLVED" in posts[1]["text"]
    assert rig.outbox.pending() == 0  # the update op is a no-op for webhooks


def test_bad_token_is_a_permanent_error_that_keeps_the_message(tmp_path: Path, clock: Clock, slack: SlackStandIn) -> None:
    rig = Rig(tmp_path, clock, lambda: SlackBotNotifier("bad", CHANNEL, base_url=slack.base_url, timeout_s=0.5))
    rig.step("breach")
    row = rig.store.outbox()[0]
    assert row["sent_at"] is None and "invalid_auth" in row["last_error"]
