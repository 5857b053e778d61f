"""Slack delivery against a misbehaving Slack: the real slack_sdk WebClient, through the real notifier and outbox,
against a local stdlib HTTP server that speaks chat.postMessage / chat.update / conversations.history and
misbehaves on cue (a trickling answer, a 429 on the duplicate check, config errors for days, refused blocks).
Clocks are injected (``now=``); the only real waiting is a client timeout of 0.3 s and a call deadline of 0.6 s."""

from __future__ import annotations

import json
import logging
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from costline.alerts.engine import AlertEngine
from costline.alerts.notify import InMemoryNotifier, SlackBotNotifier
from costline.alerts.outbox import Outbox
from costline.alerts.settings import AlertsConfig, OutboxConfig
from costline.alerts.store import AlertStore
from costline.alerts.testing import ManualClock, obs

TIMEOUT_S = 0.3  # the client's per-read timeout; the notifier's wall-clock deadline is 0.6 s
CFG = OutboxConfig()  # backoff 5 s doubling to 300 s


class FakeSlack:
    """A Slack Web API stand-in that misbehaves on cue.

    ``post``: the answers to chat.postMessage, one per call (then ``post_default``): ``ok``; ``ok_then_hang``
    (accepts the message, then never answers); ``drip`` (headers, then a byte every 0.1 s); ``blocks:<error>``
    (that error while the call carries blocks, ok for text only); any other word is answered as that Slack
    error. ``history``: the answers to conversations.history (``ok``, ``429`` with Retry-After 30, or a Slack
    error)."""

    def __init__(self) -> None:
        self.post: list[str] = []
        self.post_default = "ok"
        self.history: list[str] = []
        self.posts: list[dict[str, Any]] = []
        self.calls: list[str] = []
        self.release = threading.Event()  # ends every hang and drip (at teardown)
        self.lock = threading.Lock()
        self.url = ""


def _handler(slack: FakeSlack) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _json(self, body: dict[str, Any], status: int = 200, headers: tuple[tuple[str, str], ...] = ()) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(raw)

        def _args(self) -> dict[str, Any]:
            query = urllib.parse.urlsplit(self.path).query
            args: dict[str, Any] = {k: v[0] for k, v in urllib.parse.parse_qs(query).items()}
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if "json" in (self.headers.get("Content-Type") or ""):
                args.update(json.loads(raw or b"{}"))
            elif raw:
                args.update({k: v[0] for k, v in urllib.parse.parse_qs(raw.decode()).items()})
            for k in ("blocks", "metadata"):
                if isinstance(args.get(k), str):
                    args[k] = json.loads(args[k])
            return args

        def _accept(self, args: dict[str, Any]) -> str:
            with slack.lock:
                ts = f"{1_700_000_000 + len(slack.posts)}.000100"
                slack.posts.append(dict(args, ts=ts))
            return ts

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def _serve(self) -> None:
            method = urllib.parse.urlsplit(self.path).path.rsplit("/", 1)[-1]
            args = self._args()
            with slack.lock:
                if method == "chat.postMessage":
                    mode = slack.post.pop(0) if slack.post else slack.post_default
                elif method == "conversations.history":
                    mode = slack.history.pop(0) if slack.history else "ok"
                else:
                    mode = "ok"
                slack.calls.append(f"{method}:{mode}")
            if method == "chat.postMessage":
                if mode == "ok" or (mode.startswith("blocks:") and not args.get("blocks")):
                    return self._json({"ok": True, "channel": "C1", "ts": self._accept(args)})
                if mode.startswith("blocks:"):
                    return self._json({"ok": False, "error": mode.split(":", 1)[1]})
                if mode == "ok_then_hang":
                    self._accept(args)
                    slack.release.wait(10)
                    return
                if mode == "drip":  # headers at once, then a byte every 0.1 s: no read ever times out
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "100000")
                    self.end_headers()
                    for _ in range(100):  # 10 s at most (the old code's wait before it failed)
                        if slack.release.wait(0.1):
                            return
                        try:
                            self.wfile.write(b" ")
                            self.wfile.flush()
                        except OSError:
                            return
                    return
                return self._json({"ok": False, "error": mode})
            if method == "conversations.history":
                if mode == "429":
                    return self._json({"ok": False, "error": "ratelimited"}, 429, (("Retry-After", "30"),))
                if mode != "ok":
                    return self._json({"ok": False, "error": mode})
                with slack.lock:
                    msgs = [{"ts": p["ts"], "text": p.get("text"), "metadata": p.get("metadata")}
                            for p in reversed(slack.posts)]
                return self._json({"ok": True, "messages": msgs, "has_more": False})
            if method == "chat.update":
                return self._json({"ok": True, "channel": "C1", "ts": args.get("ts")})
            return self._json({"ok": True})

    return Handler


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/api/"
    try:
        yield fake
    finally:
        fake.release.set()
        server.shutdown()
        server.server_close()


def _bot(slack: FakeSlack) -> SlackBotNotifier:
    return SlackBotNotifier("xoxb-test", "C1", base_url=slack.url, timeout_s=TIMEOUT_S)


def _rig(tmp_path: Path, notifiers: dict[str, Any], **engine_kw: Any) -> tuple[ManualClock, AlertStore, AlertEngine,
                                                                                Outbox]:
    clock = ManualClock()
    store = AlertStore(tmp_path / "state.sqlite")
    engine = AlertEngine(store, engine_kw.pop("config", AlertsConfig()), targets=tuple(notifiers), now=clock,
                         **engine_kw)
    return clock, store, engine, Outbox(store, notifiers, CFG, now=clock)


def _fire(engine: AlertEngine, cond: str = "breach", tenant: str = "acme") -> None:
    engine.apply({"cache_hit_rate_drop": [obs(cond, tenant=tenant)]})


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("costline")]


# -- 1. days of failures: the backoff never overflows, and one row never stops the pass -------------------------


def test_the_backoff_is_capped_however_many_attempts(tmp_path: Path) -> None:
    table = [(0, 5.0), (1, 5.0), (2, 10.0), (3, 20.0), (6, 160.0), (7, 300.0),  # 5 * 2**(n-1), capped at 300
             (1025, 300.0), (10**6, 300.0)]  # 2**1024 is no float: ~3.6 days of 5-minute retries
    outbox = Outbox(AlertStore(tmp_path / "state.sqlite"), {}, CFG)
    assert [(n, outbox._backoff(n)) for n in dict(table)] == table


def test_after_days_of_slack_failures_the_console_still_gets_new_alerts(tmp_path: Path, slack: FakeSlack) -> None:
    """The reviewer's case: Slack failed 1,030 attempts in a row; a new alert fires. The Slack row's next retry is
    the max backoff, and the console gets the new alert in the same pass."""
    slack.post_default = "internal_error"
    console = InMemoryNotifier("console")
    clock, store, engine, outbox = _rig(tmp_path, {"slack": _bot(slack), "console": console})
    _fire(engine)
    outbox.deliver_due()
    with store.transaction() as con:  # as after 1,030 passes five minutes apart
        con.execute("UPDATE outbox SET attempts = 1030, next_attempt_at = ? WHERE target = 'slack'", (clock.epoch(),))
    engine.apply({"dlq_growing": [obs("breach", rule="dlq_growing")]})
    stats = outbox.deliver_due()
    assert [m.payload["kind"] for m in console.sent()] == ["firing", "firing"]
    (stuck,) = [r for r in store.outbox(unsent_only=True) if r["target"] == "slack" and r["attempts"] == 1031]
    assert stuck["next_attempt_at"] == clock.epoch() + 300.0 and stats.failed == 1


def test_a_row_that_cannot_be_handled_does_not_stop_the_others(tmp_path: Path, slack: FakeSlack,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    console = InMemoryNotifier("console")
    clock, store, engine, outbox = _rig(tmp_path, {"slack": _bot(slack), "console": console})
    _fire(engine)
    with store.transaction() as con:  # a row no code path expects (a corrupt payload)
        con.execute("UPDATE outbox SET payload = '{not json' WHERE target = 'slack'")
    stats = outbox.deliver_due()
    assert [m.payload["kind"] for m in console.sent()] == ["firing"] and stats.failed == 1
    (bad,) = store.outbox(unsent_only=True)
    assert bad["target"] == "slack" and bad["next_attempt_at"] == clock.epoch() + 5.0  # retried, not lost
    assert any("unexpectedly" in m for m in _errors(caplog))


# -- 2. an answer that trickles in: each Slack call has a wall-clock deadline ---------------------------------------


def test_a_trickling_answer_ends_at_the_deadline_and_holds_one_thread(tmp_path: Path, slack: FakeSlack) -> None:
    slack.post = ["drip"]
    clock, store, engine, outbox = _rig(tmp_path, {"slack": _bot(slack)})
    _fire(engine)
    done = threading.Event()
    result: dict[str, Any] = {}

    def deliver() -> None:
        result["stats"] = outbox.deliver_due()
        done.set()

    threading.Thread(target=deliver, daemon=True).start()
    done.wait(20)  # the old code waited for the whole trickle (10 s), then failed otherwise
    assert done.is_set()
    (row,) = store.outbox(unsent_only=True)
    assert "no complete answer from Slack within 0.6s" in row["last_error"]  # ambiguous: checked before a re-post
    # still trickling: the next attempt neither posts nor starts a second stuck call; the target waits
    clock.advance(seconds=5)
    assert outbox.deliver_due().failed == 1
    assert "still waiting" in store.outbox(unsent_only=True)[0]["last_error"]
    assert [c for c in slack.calls if c.startswith("chat.")] == ["chat.postMessage:drip"]
    assert sum(t.name == "costline-Slack-call" for t in threading.enumerate()) == 1
    slack.release.set()  # the trickle ends (its call then fails on the client's read timeout): Slack works again
    for worker in [t for t in threading.enumerate() if t.name == "costline-Slack-call"]:
        worker.join(5)
    clock.advance(seconds=10)
    outbox.deliver_due()
    assert outbox.pending() == 0 and len(slack.posts) == 1


# -- 3. an outage of days: no backlog of stale reminders, and a bound ------------------------------------------------


@pytest.mark.parametrize("end, kinds", [
    ("breach", ["firing", "reminder"]),  # still firing: the newest reminder only
    ("ok", ["firing", "resolved"]),  # resolved meanwhile: the resolve supersedes every reminder
])
def test_slack_back_after_three_days_gets_the_current_state_not_a_backlog(
        tmp_path: Path, slack: FakeSlack, end: str, kinds: list[str]) -> None:
    slack.post_default = "invalid_auth"
    clock, store, engine, outbox = _rig(tmp_path, {"slack": _bot(slack)})
    for _ in range(72):  # hourly ticks for three days; reminders every 4 h
        _fire(engine)
        outbox.deliver_due()
        clock.advance(hours=1)
    _fire(engine, end)
    slack.post_default = "ok"  # the token is fixed
    for _ in range(3):
        clock.advance(minutes=5)
        outbox.deliver_due()
    assert outbox.pending() == 0
    assert [p["text"].split(" ")[1] for p in slack.posts] == {"breach": ["FIRING", "STILL"],
                                                               "ok": ["FIRING", "RESOLVED"]}[end]
    assert [r["kind"] for r in store.outbox() if r["op"] == "post"] == kinds


def test_the_unsent_rows_per_target_are_bounded_but_firing_and_resolved_are_kept(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = AlertsConfig(group_by=("rule", "tenant"))
    clock, store, engine, outbox = _rig(tmp_path, {"slack": InMemoryNotifier("slack")}, config=cfg, max_unsent=4)
    _fire(engine, tenant="a")
    for _ in range(3):  # 4 h apart: reminders pile up (Slack is never delivered to here)
        clock.advance(hours=4)
        _fire(engine, tenant="a")
    unsent = [r["kind"] for r in store.outbox(unsent_only=True)]
    assert unsent == ["firing", "reminder"] and not _errors(caplog)  # superseded, below the bound
    for tenant in "bcde":  # four more incidents open: 6 rows, bound 4
        engine.apply({"cache_hit_rate_drop": [obs("breach", tenant="a"), obs("breach", tenant=tenant)]})
    unsent = [r["kind"] for r in store.outbox(unsent_only=True)]
    assert unsent == ["firing"] * 5  # the reminder went; no firing message is ever dropped
    errors = _errors(caplog)
    assert errors and "dropped the 1 oldest reminder/update" in errors[0] and "never dropped" in errors[-1]


# -- 4. a rate-limited duplicate check does not post again ---------------------------------------------------------


def test_a_rate_limited_duplicate_check_waits_instead_of_posting_again(tmp_path: Path, slack: FakeSlack) -> None:
    slack.post = ["ok_then_hang"]  # Slack takes the message; its answer never comes (client timeout 0.3 s)
    slack.history = ["429", "missing_scope"]
    clock, store, engine, outbox = _rig(tmp_path, {"slack": _bot(slack)})
    _fire(engine)
    assert outbox.deliver_due().failed == 1 and len(slack.posts) == 1
    clock.advance(seconds=5)
    stats = outbox.deliver_due()  # the check answers 429, Retry-After 30: wait, do not post blind
    assert (stats.sent, stats.recovered, len(slack.posts)) == (0, 0, 1)
    (row,) = store.outbox(unsent_only=True)
    assert row["next_attempt_at"] == clock.epoch() + 30.0
    clock.advance(seconds=29)
    assert outbox.deliver_due().waiting == 1  # the target is paused for the Retry-After
    clock.advance(seconds=1)
    stats = outbox.deliver_due()  # missing_scope: the check can never work, so it posts (documented)
    assert stats.sent == 1 and len(slack.posts) == 2
    assert [c for c in slack.calls if c.startswith("conversations.")] == [
        "conversations.history:429", "conversations.history:missing_scope"]


# -- 5. config errors: said once per target with the remedy, retried at the max backoff ------------------------------


@pytest.mark.parametrize("error, remedy", [
    ("invalid_auth", "COSTLINE_ALERTS_SLACK_TOKEN"),
    ("token_revoked", "[alerts.slack] token"),
    ("channel_not_found", "channel id"),
    ("not_in_channel", "/invite @"),
])
def test_a_config_error_is_logged_once_with_its_remedy_and_recovers_by_itself(
        tmp_path: Path, slack: FakeSlack, caplog: pytest.LogCaptureFixture, error: str, remedy: str) -> None:
    slack.post_default = error
    cfg = AlertsConfig(group_by=("rule", "tenant"))
    clock, store, engine, outbox = _rig(tmp_path, {"slack": _bot(slack)}, config=cfg)
    _fire(engine, tenant="a")
    _fire(engine, tenant="b")
    outbox.deliver_due()
    assert store.outbox()[0]["next_attempt_at"] == clock.epoch() + 300.0  # the max backoff at once
    for _ in range(6):  # half an hour of retries, both rows
        clock.advance(seconds=300)
        outbox.deliver_due()
    (logged,) = _errors(caplog)
    assert error in logged and remedy in logged
    slack.post_default = "ok"
    for _ in range(2):
        clock.advance(seconds=300)
        outbox.deliver_due()
    assert outbox.pending() == 0 and len(slack.posts) == 2
    assert any("accepts alert messages again" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("error", ["invalid_blocks", "msg_too_long"])
def test_refused_blocks_are_sent_again_as_text_only(tmp_path: Path, slack: FakeSlack, error: str) -> None:
    slack.post_default = f"blocks:{error}"
    clock, store, engine, outbox = _rig(tmp_path, {"slack": _bot(slack)})
    _fire(engine)
    assert outbox.deliver_due().sent == 1
    (post,) = slack.posts
    assert post["text"].startswith(":red_circle: FIRING") and not post.get("blocks")
    assert [c for c in slack.calls if c.startswith("chat.")] == [f"chat.postMessage:blocks:{error}"] * 2
