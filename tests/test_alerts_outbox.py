"""The outbox: retries with backoff, Retry-After, ordering, and no duplicates across crashes."""

from __future__ import annotations

from pathlib import Path

from costline.alerts.testing import ManualClock as Clock, ScriptedNotifier, obs
from costline.alerts.engine import AlertEngine
from costline.alerts.notify import SendResult
from costline.alerts.outbox import Outbox
from costline.alerts.settings import AlertsConfig, OutboxConfig
from costline.alerts.store import AlertStore

CFG = OutboxConfig(backoff_initial_s=5, backoff_max_s=60)


def setup(tmp_path: Path, clock: Clock, notifier: ScriptedNotifier) -> tuple[AlertStore, AlertEngine, Outbox]:
    store = AlertStore(tmp_path / "state.sqlite")
    engine = AlertEngine(store, AlertsConfig(), targets=(notifier.name,), now=clock)
    return store, engine, Outbox(store, {notifier.name: notifier}, CFG, now=clock)


def test_failures_back_off_exponentially_then_deliver_once(tmp_path: Path) -> None:
    clock = Clock()
    n = ScriptedNotifier(script=[SendResult(ok=False, error="HTTP 500")] * 3)
    store, engine, outbox = setup(tmp_path, clock, n)
    engine.apply({"cache_hit_rate_drop": [obs("breach")]})
    waits = []
    for _ in range(40):
        before = len(n.attempts)
        outbox.deliver_due()
        if len(n.attempts) > before and outbox.pending():
            waits.append((outbox.next_due() - clock()).total_seconds())
        if not outbox.pending():
            break
        clock.advance(seconds=1)
    assert waits == [5, 10, 20]
    assert len(n.attempts) == 4 and n.kinds() == ["firing"]
    assert store.outbox()[0]["ts"] and store.outbox()[0]["attempts"] == 4


def test_retry_after_is_honoured_for_the_whole_target(tmp_path: Path) -> None:
    clock = Clock()
    n = ScriptedNotifier(script=[SendResult(ok=False, error="429", retry_after=30)])
    store, engine, outbox = setup(tmp_path, clock, n)
    engine.apply({"cache_hit_rate_drop": [obs("breach")], "pipeline_silent": None})
    engine.apply({"dlq_growing": [obs("breach", rule="dlq_growing")]})  # a second group, same target
    stats = outbox.deliver_due()
    assert stats.failed == 1 and stats.sent == 0 and len(n.attempts) == 1
    clock.advance(seconds=29)
    assert outbox.deliver_due().sent == 0 and len(n.attempts) == 1
    clock.advance(seconds=1)
    assert outbox.deliver_due().sent == 2
    assert n.kinds() == ["firing", "firing"]


def test_a_thread_reply_never_overtakes_its_parent(tmp_path: Path) -> None:
    clock = Clock()
    n = ScriptedNotifier(script=[SendResult(ok=False, error="timeout")])
    store, engine, outbox = setup(tmp_path, clock, n)
    engine.apply({"cache_hit_rate_drop": [obs("breach")]})
    outbox.deliver_due()  # firing fails
    clock.advance(minutes=1)
    engine.apply({"cache_hit_rate_drop": [obs("ok")]})  # resolved queued behind it
    outbox.deliver_due()  # firing not due yet (backoff 5 s elapsed? yes: 60 s) -> both go, in order
    assert [m.payload["kind"] for m in n.attempts] == ["firing", "firing", "resolved", "resolved"]
    reply, update = n.attempts[2], n.attempts[3]
    assert (reply.op, update.op) == ("post", "update")
    assert reply.thread_ts == update.thread_ts == store.outbox()[0]["ts"]


def test_an_unanswered_attempt_is_looked_up_not_resent(tmp_path: Path) -> None:
    clock = Clock()
    n = ScriptedNotifier(script=[SendResult(ok=False, error="timed out", ambiguous=True)])
    store, engine, outbox = setup(tmp_path, clock, n)
    engine.apply({"cache_hit_rate_drop": [obs("breach")]})
    outbox.deliver_due()
    clock.advance(seconds=10)
    stats = outbox.deliver_due()
    assert stats.recovered == 1 and stats.sent == 0
    assert len(n.attempts) == 1 and n.finds == 1
    assert store.outbox()[0]["ts"] == "found.0"


def test_crash_between_send_and_mark_does_not_duplicate(tmp_path: Path) -> None:
    """The process dies after Slack accepted the message, before the row was marked sent."""
    clock = Clock()
    n = ScriptedNotifier()
    store, engine, outbox = setup(tmp_path, clock, n)
    engine.apply({"cache_hit_rate_drop": [obs("breach")]})

    class Crash(BaseException):
        pass

    def crash(*a: object) -> None:
        raise Crash

    outbox._mark_sent = crash  # type: ignore[method-assign]
    try:
        outbox.deliver_due()
    except Crash:
        pass
    store.close()
    store = AlertStore(tmp_path / "state.sqlite")  # restart
    outbox = Outbox(store, {"slack": n}, CFG, now=clock)
    stats = outbox.deliver_due()
    assert stats.recovered == 1 and len(n.attempts) == 1 and n.kinds() == ["firing"]


def test_rows_for_an_unconfigured_target_wait(tmp_path: Path) -> None:
    clock = Clock()
    store = AlertStore(tmp_path / "state.sqlite")
    AlertEngine(store, AlertsConfig(), targets=("console", "slack"), now=clock).apply(
        {"cache_hit_rate_drop": [obs("breach")]})
    lines: list[str] = []
    from costline.alerts.notify import ConsoleNotifier

    outbox = Outbox(store, {"console": ConsoleNotifier(lines.append)}, CFG, now=clock)
    assert outbox.force_flush(1.0, sleep=lambda s: None)
    assert len(lines) == 1 and lines[0].startswith("FIRING")  # no Slack emoji shortcodes on a terminal
    assert len(store.outbox(unsent_only=True)) == 1  # the Slack row is kept for when Slack is back


def test_prune_keeps_open_incidents(tmp_path: Path) -> None:
    clock = Clock()
    n = ScriptedNotifier()
    store, engine, outbox = setup(tmp_path, clock, n)
    engine.apply({"cache_hit_rate_drop": [obs("breach")]})
    outbox.deliver_due()
    clock.advance(days=30)
    assert outbox.prune() == 0
    engine.apply({"cache_hit_rate_drop": [obs("ok")]})
    outbox.deliver_due()
    clock.advance(days=30)
    assert outbox.prune() == 3
