"""The outbox: retries with backoff, Retry-After, ordering, and no duplicates across crashes."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

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
    # the dead process's claim holds for claim_s (120 s): a restart cannot tell it from a live one mid-send
    assert outbox.deliver_due().waiting == 1 and len(n.attempts) == 1
    clock.advance(seconds=120)
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


# --- two deliverers on one state file (the `alerts run` daemon + `jobs nightly`; cron + `jobs serve`) ---------


@contextmanager
def _after_read(*stores: AlertStore, hook: Callable[[], None]) -> Iterator[None]:
    """Run ``hook`` right after each of ``stores`` has read the unsent rows (before anything is claimed)."""

    def reader(store: AlertStore) -> Callable[..., list]:
        def outbox(**kw: bool) -> list:
            rows = AlertStore.outbox(store, **kw)
            hook()
            return rows
        return outbox

    for store in stores:
        store.outbox = reader(store)  # type: ignore[method-assign]
    try:
        yield
    finally:
        for store in stores:
            del store.outbox


class _Hooked(ScriptedNotifier):
    """One Slack channel for both deliverers; ``during_send`` runs while the first message is in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.during_send: Callable[[], None] | None = None

    def send(self, message):  # type: ignore[no-untyped-def]
        hook, self.during_send = self.during_send, None
        if hook:
            hook()
        return super().send(message)


def _stale_read(a: Outbox, b: Outbox, slack: _Hooked) -> None:
    """b reads the row, a claims, sends and marks it, then b goes on with what it read."""
    with _after_read(b.store, hook=a.deliver_due):
        b.deliver_due()


def _while_sending(a: Outbox, b: Outbox, slack: _Hooked) -> None:
    """b runs while a's message is in flight (Slack slow to answer)."""
    slack.during_send = lambda: b.deliver_due()
    a.deliver_due()


def _both_read_first(a: Outbox, b: Outbox, slack: _Hooked) -> None:
    """Two threads: both read the unsent row before either claims it."""
    both_read = threading.Barrier(2, timeout=10)
    with _after_read(a.store, b.store, hook=both_read.wait):
        threads = [threading.Thread(target=box.deliver_due) for box in (a, b)]
        [t.start() for t in threads]
        [t.join(timeout=30) for t in threads]


@pytest.mark.parametrize("interleave", [_stale_read, _while_sending, _both_read_first],
                         ids=["stale-read", "while-sending", "both-read-first"])
def test_two_deliverers_on_one_state_file_send_each_message_once(tmp_path: Path, interleave) -> None:
    clock = Clock()
    slack = _Hooked()
    store = AlertStore(tmp_path / "state.sqlite")
    engine = AlertEngine(store, AlertsConfig(), targets=("slack",), now=clock)
    engine.apply({"cache_hit_rate_drop": [obs("breach")]})
    a, b = (Outbox(AlertStore(tmp_path / "state.sqlite"), {"slack": slack}, CFG, now=clock) for _ in range(2))
    interleave(a, b, slack)
    assert len(slack.attempts) == 1 and slack.kinds() == ["firing"]
    (row,) = store.outbox()
    assert row["sent_at"] is not None and row["attempts"] == 1 and row["ts"] == "1.0"
    # the resolve (a thread reply) then goes out once too, whoever delivers it
    engine.apply({"cache_hit_rate_drop": [obs("ok")]})
    _stale_read(a, b, slack)
    assert [(m.payload["kind"], m.op) for m in slack.attempts] == [("firing", "post"), ("resolved", "post"),
                                                                      ("resolved", "update")]


class _Crash(BaseException):
    pass


@pytest.mark.parametrize("accepted, recovered, sent", [
    (False, 0, 1),  # died before the message left: posted by the next claimer
    (True, 1, 0),   # died after Slack accepted it: found by the next claimer, not posted again
])
def test_a_dead_claimers_row_is_taken_over_when_its_claim_runs_out(tmp_path: Path, accepted: bool,
                                                                   recovered: int, sent: int) -> None:
    clock = Clock()
    slack = ScriptedNotifier()

    def dies(message):  # type: ignore[no-untyped-def]
        if accepted:
            slack.delivered[message.dedup_key] = message
        raise _Crash

    store = AlertStore(tmp_path / "state.sqlite")
    AlertEngine(store, AlertsConfig(), targets=("slack",), now=clock).apply({"cache_hit_rate_drop": [obs("breach")]})
    dead = Outbox(AlertStore(tmp_path / "state.sqlite"), {"slack": slack}, CFG, now=clock)
    dead.notifiers["slack"] = type("Dying", (), {"send": staticmethod(dies), "find": slack.find})()
    with pytest.raises(_Crash):
        dead.deliver_due()
    other = Outbox(AlertStore(tmp_path / "state.sqlite"), {"slack": slack}, CFG, now=clock)
    clock.advance(seconds=119)  # claimed at T0 for claim_s = 120 s: still the dead process's
    st = other.deliver_due()
    assert (st.sent, st.recovered, st.waiting, slack.finds) == (0, 0, 1, 0)
    clock.advance(seconds=1)
    st = other.deliver_due()
    assert (st.sent, st.recovered, slack.finds) == (sent, recovered, 1)
    assert slack.kinds() == ["firing"] and len(slack.attempts) == sent
    (row,) = store.outbox()
    assert row["sent_at"] is not None and row["attempts"] == 2


def test_claim_s_must_outlast_a_send_and_its_check() -> None:
    import dataclasses

    from costline.alerts.settings import validate
    from costline.config import Config
    from costline.errors import ConfigError

    cfg = Config()
    short = cfg.replace(alerts=dataclasses.replace(cfg.alerts, outbox=OutboxConfig(claim_s=29)))  # 3 x 10 s = 30
    with pytest.raises(ConfigError, match=r"\[alerts.outbox\] claim_s.*3 x \[alerts.slack\] timeout_s \(30\)"):
        validate(short)
    validate(cfg.replace(alerts=dataclasses.replace(cfg.alerts, outbox=OutboxConfig(claim_s=30))))
