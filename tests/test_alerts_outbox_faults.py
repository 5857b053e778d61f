"""The outbox under hostile answers: a deleted Slack message, absurd Retry-After values, a state file
holding a due time no datetime can hold, and failures between ticks of ``costline alerts run``."""

from __future__ import annotations

import logging
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web import SlackResponse

from costline.alerts.engine import AlertEngine
from costline.alerts.notify import InMemoryNotifier, Outgoing, SlackBotNotifier, _retry_after
from costline.alerts.outbox import Outbox
from costline.alerts.service import AlertService, TickReport
from costline.alerts.settings import AlertsConfig, OutboxConfig
from costline.alerts.store import AlertStore, to_epoch
from costline.alerts.testing import ManualClock as Clock, obs
from costline.config import Config, LakeConfig
from costline.sim.slack_standin import SlackStandIn

CHANNEL = "#llm-costs"
CFG = OutboxConfig(backoff_initial_s=5, backoff_max_s=60)


from slack_fixtures import clock, slack  # noqa: E402,F401 (fixtures: a manual clock, the Slack stand-in on it)


def bot(slack: SlackStandIn) -> SlackBotNotifier:
    return SlackBotNotifier("xoxb-test", CHANNEL, base_url=slack.base_url, timeout_s=2)


def delete_all(slack: SlackStandIn) -> None:
    """Someone deletes the alert messages in Slack (the stand-in then answers chat.update with message_not_found)."""
    with slack._lock:
        slack._state.messages.clear()


# -- 1. a deleted original must not silence the group -----------------------------------------------------------

def test_a_deleted_original_skips_the_edit_and_the_next_incident_still_posts(
        tmp_path: Path, clock: Clock, slack: SlackStandIn, caplog: pytest.LogCaptureFixture) -> None:
    store = AlertStore(tmp_path / "state.sqlite")
    engine = AlertEngine(store, AlertsConfig(), targets=("slack",), now=clock)
    outbox = Outbox(store, {"slack": bot(slack)}, CFG, now=clock)

    def step(cond: str) -> None:
        engine.apply({"cache_hit_rate_drop": [obs(cond)]})
        outbox.deliver_due()
        clock.advance(minutes=5)

    step("breach")
    (first,) = slack.messages(CHANNEL)
    assert "FIRING" in first["text"]
    delete_all(slack)
    caplog.set_level(logging.WARNING, logger="costline.alerts.outbox")
    for cond in ["ok", "ok"]:  # incident 1 resolves: its reply goes, its edit finds no message
        step(cond)
    update = [r for r in store.outbox() if r["incident"] == 1 and r["op"] == "update"]
    assert [(r["sent_at"] is not None, r["last_error"]) for r in update] == [
        (True, "skipped: Slack error message_not_found (HTTP 200)")]
    assert any(r.levelno == logging.WARNING and update[0]["group_key"] in r.getMessage() for r in caplog.records)
    for _ in range(3):  # a new breach of the same group: incident 2
        step("breach")
    firing2 = [r for r in store.outbox() if r["incident"] == 2 and r["kind"] == "firing"]
    assert firing2 and firing2[0]["sent_at"] is not None
    top = [m for m in slack.messages(CHANNEL) if not m.get("thread_ts")]
    assert [m["ts"] for m in top if "FIRING" in m["text"]] == [firing2[0]["ts"]]
    assert outbox.pending() == 0
    chat_updates = [p for m, p in slack.requests() if m == "chat.update"]
    assert len(chat_updates) == 1  # tried once, never again


def test_a_stuck_row_of_an_older_incident_does_not_hold_a_newer_incident(tmp_path: Path, clock: Clock) -> None:
    """Whatever keeps an old incident's rows unsent (here: a claim by another deliverer, 100 s of
    CFG's claim_s=120), the new incident's firing goes."""
    n = InMemoryNotifier("slack")
    store = AlertStore(tmp_path / "state.sqlite")
    engine = AlertEngine(store, AlertsConfig(), targets=("slack",), now=clock)
    outbox = Outbox(store, {"slack": n}, CFG, now=clock)
    engine.apply({"cache_hit_rate_drop": [obs("breach")]})
    outbox.deliver_due()
    clock.advance(minutes=5)
    engine.apply({"cache_hit_rate_drop": [obs("ok")]})
    with store.transaction() as con:  # incident 1's resolve rows: not due for a while
        con.execute("UPDATE outbox SET next_attempt_at = ?, attempts = 1 WHERE sent_at IS NULL",
                    (to_epoch(clock()) + 100,))
    for _ in range(3):
        engine.apply({"cache_hit_rate_drop": [obs("breach")]})
        outbox.deliver_due()
        clock.advance(seconds=10)
    rows = store.outbox()
    assert [(r["incident"], r["kind"], r["op"]) for r in rows if r["sent_at"] is not None] == [
        (1, "firing", "post"), (2, "firing", "post")]
    assert {(r["incident"], r["kind"]) for r in rows if r["sent_at"] is None} == {(1, "resolved")}


class _ThreadGone:
    """A slack_sdk-like client: a reply (thread_ts) is answered with ``error``, a top-level post goes."""

    def __init__(self, error: str) -> None:
        self.error, self.posts = error, []  # type: list[str | None]

    def chat_postMessage(self, **kw: Any) -> dict[str, Any]:  # noqa: N802 - slack_sdk's name
        self.posts.append(kw.get("thread_ts"))
        if kw.get("thread_ts"):
            data = {"ok": False, "error": self.error}
            raise SlackApiError(self.error, SlackResponse(client=None, http_verb="POST", api_url="chat.postMessage",
                                                          req_args={}, data=data, headers={}, status_code=200))
        return {"ok": True, "channel": "C1", "ts": "99.000001"}

    def chat_update(self, **kw: Any) -> dict[str, Any]:
        data = {"ok": False, "error": self.error}
        raise SlackApiError(self.error, SlackResponse(client=None, http_verb="POST", api_url="chat.update",
                                                      req_args={}, data=data, headers={}, status_code=200))


MSG = dict(payload={"kind": "resolved", "text": "RESOLVED"}, dedup_key="costline:3:g:1:resolved:0", channel="C1")


@pytest.mark.parametrize("error", ["thread_not_found", "message_not_found"])
def test_a_reply_whose_thread_is_gone_is_posted_top_level(error: str) -> None:
    client = _ThreadGone(error)
    result = SlackBotNotifier("xoxb-test", "C1", client=client).send(Outgoing(op="post", thread_ts="12.000001", **MSG))
    assert (result.ok, result.ts) == (True, "99.000001")
    assert client.posts == ["12.000001", None]


@pytest.mark.parametrize(("error", "gone"), [
    ("message_not_found", True), ("cant_update_message", True), ("edit_window_closed", True),
    ("internal_error", False), ("invalid_auth", False),
])
def test_which_edit_errors_mean_the_message_is_gone(error: str, gone: bool) -> None:
    result = SlackBotNotifier("xoxb-test", "C1", client=_ThreadGone(error)).send(
        Outgoing(op="update", thread_ts="12.000001", **MSG))
    assert result.ok is False and result.gone is gone


# -- 2. Retry-After: checked and capped ----------------------------------------------------------------------

@pytest.mark.parametrize(("header", "seconds"), [
    ("12", 12.0), (" 3.5 ", 3.5), ("0", 0.0),
    ("inf", None), ("-inf", None), ("nan", None), ("1e999", None), ("-5", None), ("soon", None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", None),
])
def test_retry_after_header_parsing(header: str, seconds: float | None) -> None:
    assert _retry_after({"retry-after": header}) == seconds


# backoff_initial_s=5, backoff_max_s=60: a usable value is clamped to [1, 60], anything else is the first backoff (5)
@pytest.mark.parametrize(("retry_after", "delay"), [
    (30.0, 30.0), (0.0, 1.0), (0.2, 1.0), (400.0, 60.0), (86400.0 * 30, 60.0),
    (math.inf, 5.0), (math.nan, 5.0), (-5.0, 5.0),
])
def test_the_delay_a_429_retry_after_gives(tmp_path: Path, clock: Clock, slack: SlackStandIn,
                                            retry_after: float, delay: float) -> None:
    store = AlertStore(tmp_path / "state.sqlite")
    engine = AlertEngine(store, AlertsConfig(), targets=("slack",), now=clock)
    outbox = Outbox(store, {"slack": bot(slack)}, CFG, now=clock)
    engine.apply({"cache_hit_rate_drop": [obs("breach")]})
    slack.fail(429, retry_after=retry_after, method="chat.postMessage")
    stats = outbox.deliver_due()
    assert stats.failed == 1
    (row,) = store.outbox(unsent_only=True)
    assert row["next_attempt_at"] - to_epoch(clock()) == pytest.approx(delay)
    assert (outbox.next_due() - clock()).total_seconds() == pytest.approx(delay)
    clock.advance(seconds=delay)
    assert outbox.deliver_due().sent == 1


# -- a state file written by the old code: next_attempt_at = inf, 1e300, a month ahead ----------------------------

def _queued_far_ahead(tmp_path: Path, clock: Clock, ahead: float) -> AlertStore:
    store = AlertStore(tmp_path / "s.sqlite")
    AlertEngine(store, AlertsConfig(), targets=("slack",), now=clock).apply({"cache_hit_rate_drop": [obs("breach")]})
    with store.transaction() as con:
        con.execute("UPDATE outbox SET next_attempt_at = ?, attempts = 1", (to_epoch(clock()) + ahead,))
    return store


@pytest.mark.parametrize("ahead", [math.inf, 1e300, 86400.0 * 30])
def test_a_stored_absurd_due_time_is_due_now(tmp_path: Path, clock: Clock, ahead: float) -> None:
    store = _queued_far_ahead(tmp_path, clock, ahead)
    n = InMemoryNotifier("slack")
    outbox = Outbox(store, {"slack": n}, CFG, now=clock)
    assert outbox.next_due() == clock()
    assert outbox.deliver_due().sent == 1
    assert [m.payload["kind"] for m in n.sent()] == ["firing"]


class _Svc(AlertService):
    """``run()`` is the product's; the evaluation is replaced by a fixed breach (no lake needed)."""

    def tick(self, now: datetime | None = None, *, rules: Any = None) -> TickReport:
        report = TickReport(at=now)  # type: ignore[arg-type]
        report.tick = self.engine.apply({"cache_hit_rate_drop": [obs("breach")]}, now)
        report.delivery = self.outbox.deliver_due(now)
        return report


def _svc(tmp_path: Path, clock: Clock, n: InMemoryNotifier) -> _Svc:
    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"), alerts=AlertsConfig(state_path=tmp_path / "s.sqlite"))
    return _Svc(cfg, now=clock, notifiers={"slack": n}, export=False)


def test_alerts_run_on_a_state_file_holding_inf_delivers(tmp_path: Path, clock: Clock) -> None:
    _queued_far_ahead(tmp_path, clock, math.inf).close()
    n = InMemoryNotifier("slack")
    assert _svc(tmp_path, clock, n).run(interval_s=60, sleep=lambda s: clock.advance(seconds=s), max_ticks=3) == 3
    assert [m.payload["kind"] for m in n.sent()] == ["firing"]


@pytest.mark.parametrize("failing", ["next_due", "deliver_due"])
def test_a_failure_between_ticks_is_logged_and_run_goes_on(tmp_path: Path, clock: Clock, failing: str,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    n = InMemoryNotifier("slack")
    svc = _svc(tmp_path, clock, n)
    real = getattr(svc.outbox, failing)
    calls = {"n": 0}

    def flaky(*a: Any, **kw: Any) -> Any:
        if not a:  # between ticks (a tick passes its time): the first such call fails
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("disk I/O error")
        return real(*a, **kw)

    setattr(svc.outbox, failing, flaky)
    svc.engine.apply({"cache_hit_rate_drop": [obs("breach")]}, clock())
    with svc.store.transaction() as con:  # due between the first two ticks
        con.execute("UPDATE outbox SET next_attempt_at = ?", (to_epoch(clock()) + 10,))
    caplog.set_level(logging.ERROR, logger="costline.alerts.service")
    assert svc.run(interval_s=60, sleep=lambda s: clock.advance(seconds=s), max_ticks=3) == 3
    assert calls["n"] >= 2
    assert any("between ticks" in r.getMessage() for r in caplog.records)
    assert [m.payload["kind"] for m in n.sent()] == ["firing"]
