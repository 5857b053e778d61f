"""Slack from the open world: a busy channel (the duplicate check pages through it, within the row's attempt
window) and tenant names carrying bidi overrides and other invisible characters. Through the real slack_sdk
WebClient against the Slack stand-in, which pages like Slack (has_more, response_metadata.next_cursor)."""

from __future__ import annotations

import json
import logging
import unicodedata
from pathlib import Path

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from costline.alerts.message import render
from costline.alerts.notify import Outgoing, SlackBotNotifier, slack_escape, slack_payload, slack_visible
from costline.alerts.outbox import Outbox
from costline.alerts.settings import OutboxConfig
from costline.alerts.store import AlertStore
from costline.alerts.testing import T0, ManualClock
from costline.sim.slack_standin import SlackStandIn

CHANNEL = "#alerts"
T = 1_794_000_000.0  # the stand-in's clock (epoch seconds)


class Clock:
    def __init__(self) -> None:
        self.t = T

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def slack(clock: Clock):  # type: ignore[no-untyped-def]
    with SlackStandIn(now=clock) as standin:
        yield standin


def _post(client: WebClient, n: int, *, thread_ts: str | None = None, key: str | None = None) -> list[str]:
    out = []
    for i in range(n):
        meta = {"event_type": "costline_alert", "event_payload": {"key": key or f"other-{i}"}}
        out.append(client.chat_postMessage(channel=CHANNEL, text=f"m{i}", thread_ts=thread_ts, metadata=meta)["ts"])
    return out


def _client(slack: SlackStandIn) -> WebClient:
    return WebClient(token="xoxb-t", base_url=slack.base_url, retry_handlers=[])


def test_the_standin_pages_history_like_slack(slack: SlackStandIn, clock: Clock) -> None:
    client = _client(slack)
    ts = _post(client, 5)  # all at clock T: ts T.000001 … T.000005
    first = client.conversations_history(channel=CHANNEL, limit=2)
    assert [m["ts"] for m in first["messages"]] == [ts[4], ts[3]] and first["has_more"] is True
    cursor = first["response_metadata"]["next_cursor"]
    second = client.conversations_history(channel=CHANNEL, limit=2, cursor=cursor)
    assert [m["ts"] for m in second["messages"]] == [ts[2], ts[1]]
    _post(client, 1)  # a message arriving meanwhile does not shift the pages
    third = client.conversations_history(channel=CHANNEL, limit=2, cursor=second["response_metadata"]["next_cursor"])
    assert [m["ts"] for m in third["messages"]] == [ts[0]] and third["has_more"] is False
    assert "response_metadata" not in third.data or not third["response_metadata"].get("next_cursor")
    # oldest / latest bound the range, both ends excluded unless inclusive
    r = client.conversations_history(channel=CHANNEL, oldest=ts[1], latest=ts[3])
    assert [m["ts"] for m in r["messages"]] == [ts[2]]
    r = client.conversations_history(channel=CHANNEL, oldest=ts[1], latest=ts[3], inclusive=True)
    assert [m["ts"] for m in r["messages"]] == [ts[3], ts[2], ts[1]]
    with pytest.raises(SlackApiError) as info:
        client.conversations_history(channel=CHANNEL, cursor="not-a-cursor")
    assert info.value.response["error"] == "invalid_cursor"


def test_the_standin_pages_replies_oldest_first(slack: SlackStandIn) -> None:
    client = _client(slack)
    (parent,) = _post(client, 1)
    replies = _post(client, 4, thread_ts=parent)
    first = client.conversations_replies(channel=CHANNEL, ts=parent, limit=3)
    assert [m["ts"] for m in first["messages"]] == [parent, *replies[:2]] and first["has_more"] is True
    rest = client.conversations_replies(channel=CHANNEL, ts=parent, limit=3,
                                        cursor=first["response_metadata"]["next_cursor"])
    assert [m["ts"] for m in rest["messages"]] == replies[2:] and rest["has_more"] is False


def _outgoing(key: str, created_at: float, *, thread_ts: str | None = None,
              attempted_until: float | None = None) -> Outgoing:
    return Outgoing("post", {"kind": "firing", "text": "x", "blocks": None}, key, created_at=created_at,
                    thread_ts=thread_ts, attempted_until=attempted_until)


def test_the_duplicate_check_finds_a_message_with_hundreds_newer_than_it(slack: SlackStandIn, clock: Clock) -> None:
    """The reviewer's case: the process died after Slack accepted the message; 229 other groups' messages went out
    before its claim ran out. One page of 200 newest messages does not reach it; paging does."""
    client = _client(slack)
    (ts,) = _post(client, 1, key="the-key")
    clock.t += 5
    _post(client, 229)
    notifier = SlackBotNotifier("xoxb-t", CHANNEL, base_url=slack.base_url)
    found = notifier.find(_outgoing("the-key", created_at=T))
    assert found is not None and found.ts == ts
    pages = [p for m, p in slack.requests() if m == "conversations.history"]
    assert len(pages) == 2 and "cursor" in pages[1]


def test_the_duplicate_check_searches_the_attempt_window_only(slack: SlackStandIn, clock: Clock) -> None:
    """latest = the last attempt's claim end + 60 s: messages posted after that are not read at all, so the one
    we look for is on the first page however busy the channel was later."""
    client = _client(slack)
    (ts,) = _post(client, 1, key="the-key")
    clock.t += 1000
    _post(client, 300)  # well after the attempt window
    notifier = SlackBotNotifier("xoxb-t", CHANNEL, base_url=slack.base_url)
    found = notifier.find(_outgoing("the-key", created_at=T, attempted_until=T + 120))
    assert found is not None and found.ts == ts
    (page,) = [p for m, p in slack.requests() if m == "conversations.history"]
    assert float(page["oldest"]) == T - 60 and float(page["latest"]) == T + 180
    assert notifier.find(_outgoing("missing", created_at=T, attempted_until=T + 120)) is None


def test_the_duplicate_check_pages_thread_replies(slack: SlackStandIn, clock: Clock) -> None:
    client = _client(slack)
    (parent,) = _post(client, 1)
    clock.t += 5
    _post(client, 150, thread_ts=parent)
    (ts,) = _post(client, 1, thread_ts=parent, key="reply-key")
    _post(client, 100, thread_ts=parent)  # the thread goes on afterwards
    notifier = SlackBotNotifier("xoxb-t", CHANNEL, base_url=slack.base_url)
    found = notifier.find(_outgoing("reply-key", created_at=T + 5, thread_ts=parent))
    assert found is not None and found.ts == ts


def test_the_duplicate_check_stops_at_its_page_bound_and_says_so(slack: SlackStandIn, clock: Clock,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    client = _client(slack)
    _post(client, 1, key="the-key")
    _post(client, 450)
    notifier = SlackBotNotifier("xoxb-t", CHANNEL, base_url=slack.base_url, dedup_max_pages=2)
    with caplog.at_level(logging.WARNING, logger="costline.alerts.notify"):
        assert notifier.find(_outgoing("the-key", created_at=T)) is None
    assert len([m for m, _ in slack.requests() if m == "conversations.history"]) == 2
    assert "stopped after 2 pages (400 messages)" in caplog.text and "dedup_max_pages" in caplog.text


class _Recorder:
    name = "slack"

    def __init__(self) -> None:
        self.found: list[Outgoing] = []

    def send(self, message: Outgoing):  # type: ignore[no-untyped-def]
        from costline.alerts.notify import SendResult

        return SendResult(ok=False, error="timeout", ambiguous=True)

    def find(self, message: Outgoing):  # type: ignore[no-untyped-def]
        self.found.append(message)
        return None

    def shutdown(self) -> None:
        pass


def test_the_outbox_gives_the_check_the_rows_attempt_window(tmp_path: Path) -> None:
    from costline.alerts.engine import AlertEngine
    from costline.alerts.settings import AlertsConfig
    from costline.alerts.testing import obs

    clock = ManualClock(T0)
    store = AlertStore(tmp_path / "s.sqlite")
    AlertEngine(store, AlertsConfig(), targets=("slack",), now=clock).apply({"cache_hit_rate_drop": [obs("breach")]})
    rec = _Recorder()
    box = Outbox(store, {"slack": rec}, OutboxConfig(backoff_initial_s=5, claim_s=90), now=clock)
    box.deliver_due()  # attempt 1 at T0: ambiguous
    clock.advance(seconds=30)
    box.deliver_due()  # attempt 2 at T0 + 30: checks first
    clock.advance(seconds=30)
    box.deliver_due()  # attempt 3 at T0 + 60
    t0 = T0.timestamp()
    assert [(m.created_at, m.attempted_until) for m in rec.found] == [(t0, t0 + 90), (t0, t0 + 30 + 90)]


# -- invisible characters ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "want"), [
    ("ev\u202eil\u2066", "ev\ufffdil\ufffd"),                # RLO, LRI: each run one U+FFFD
    ("a\u202a\u202b\u202c\u202d\u202eb", "a\ufffdb"),      # a run of embeddings/overrides: one
    ("\u200eleft\u200f", "\ufffdleft\ufffd"),              # LRM / RLM
    ("x\u2067y\u2068z\u2069", "x\ufffdy\ufffdz\ufffd"),    # RLI, FSI, PDI
    ("ac\u200bme", "ac\ufffdme"),                           # zero-width space: not "acme" look-alike
    ("\ufeffacme\u00ad", "\ufffdacme\ufffd"),               # BOM, soft hyphen
    ("t\U000e0041\U000e0042\U000e007f", "t\ufffd"),         # tag characters (hidden ASCII)
    ("a\x1bb\x00c", "a\ufffdb\ufffdc"),                     # controls
    ("line\u2028sep", "line\ufffdsep"),                     # a line separator is no line break here
    ("two\nlines\tand tab", "two\nlines\tand tab"),         # newline and tab stay
    ("café 東京 🙂 Ωmega", "café 東京 🙂 Ωmega"),            # visible text is untouched
])
def test_slack_visible(raw: str, want: str) -> None:
    assert slack_visible(raw) == want


def test_slack_escape_replaces_invisible_characters_before_escaping() -> None:
    assert slack_escape("<ev\u202eil> @here") == "&lt;ev\ufffdil&gt; @\u200bhere"  # our own ZWSP stays


def _invisible(text: str, *, allow_zwsp: bool) -> list[str]:
    return [f"U+{ord(c):04X}" for c in text
            if c not in "\n\t" and unicodedata.category(c) in ("Cf", "Cc", "Cs", "Zl", "Zp")
            and not (allow_zwsp and c == "\u200b")]


def test_a_tenant_with_a_bidi_override_reaches_slack_without_it(slack: SlackStandIn) -> None:
    tenant = "ev\u202eil\u2066 \u200bcorp"
    labels = {"rule": "cache_hit_rate_drop", "tenant": tenant}
    payload = render("firing", rule="cache_hit_rate_drop", group_labels=labels, severity="warning", incident=1,
                     members=[{"labels": {"tenant": tenant}, "state": "firing", "observation": {
                         "summary": f"cache hit rate of {tenant} 30.0%", "figures": {"tenant": tenant},
                         "window": "2026-11-08 10:00–11:00 UTC"}}],
                     at=T0, note=f"about {tenant}")
    text, blocks = slack_payload(payload)
    assert blocks[0]["type"] == "header" and blocks[0]["text"]["type"] == "plain_text"
    assert "ev\ufffdil\ufffd \ufffdcorp" in blocks[0]["text"]["text"]  # the header too
    notifier = SlackBotNotifier("xoxb-t", CHANNEL, base_url=slack.base_url)
    assert notifier.send(Outgoing("post", payload, "k", created_at=T)).ok
    (msg,) = slack.messages(CHANNEL)
    stored = json.dumps({"text": msg["text"], "blocks": msg["blocks"]}, ensure_ascii=False)
    assert _invisible(stored, allow_zwsp=False) == []
    assert "tenant=ev\ufffdil\ufffd \ufffdcorp" in msg["text"]


def test_dedup_max_pages_is_a_setting_refused_below_one(tmp_path: Path) -> None:
    from costline.config import load_config
    from costline.errors import ConfigError

    path = tmp_path / "costline.toml"
    path.write_text("[alerts.slack]\ndedup_max_pages = 0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[alerts.slack\] dedup_max_pages: must be at least 1"):
        load_config(path, env={})
    path.write_text('[alerts.slack]\ntoken = "xoxb-t"\nchannel = "C1"\ndedup_max_pages = 3\n', encoding="utf-8")
    from costline.alerts.notify import build_notifiers

    assert build_notifiers(load_config(path, env={}).alerts)["slack"].dedup_max_pages == 3
