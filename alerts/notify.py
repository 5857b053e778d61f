"""Notifiers: where queued messages go. Small OTel-like interface::

    send(message) -> SendResult      one attempt, never raises for delivery failures
    find(message) -> SendResult|None was this message already delivered? (duplicate check); raises
                                     LookupError (DuplicateCheckError) when it cannot tell: the outbox
                                     checks again later, or posts when ``never_works`` is set
    shutdown()

Expected failures (429, 5xx, timeouts, Slack errors) are results; the outbox
(:mod:`costline.alerts.outbox`) retries them. ``slack_sdk`` is imported only when
a Slack notifier is built.
"""

from __future__ import annotations

import logging
import math
import re
import socket
import threading
import unicodedata
import urllib.error
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from costline.alerts.errors import NotifierError
from costline.alerts.message import ICONS
from costline.alerts.settings import AlertsConfig
from costline.sqlutil import cell_text

__all__ = [
    "Outgoing",
    "SendResult",
    "Notifier",
    "ConsoleNotifier",
    "InMemoryNotifier",
    "SlackBotNotifier",
    "SlackWebhookNotifier",
    "DuplicateCheckError",
    "build_notifiers",
    "slack_off_warning",
    "METADATA_EVENT_TYPE",
    "slack_escape",
    "slack_payload",
    "slack_visible",
    "console_text",
]

log = logging.getLogger(__name__)

#: The Slack message metadata event type costline marks its messages with.
METADATA_EVENT_TYPE = "costline_alert"

#: Slack errors that no retry can fix before someone changes the config.
_PERMANENT = frozenset({
    "invalid_auth", "not_authed", "account_inactive", "token_revoked", "channel_not_found",
    "not_in_channel", "is_archived", "missing_scope", "invalid_blocks", "msg_too_long", "msg_blocks_too_long",
    "no_text",
    "message_not_found", "cant_update_message", "edit_window_closed", "thread_not_found",
})

#: What the operator does about each Slack error no retry fixes (the outbox logs it once per target and change).
_TOKEN_REMEDY = ("set [alerts.slack] token (env COSTLINE_ALERTS_SLACK_TOKEN) to the bot token (xoxb-...) of an "
                 "app installed in this workspace (Slack app settings > OAuth & Permissions)")
_REMEDIES = {
    "invalid_auth": "Slack does not accept the bot token: " + _TOKEN_REMEDY,
    "not_authed": "no bot token reached Slack: " + _TOKEN_REMEDY,
    "token_revoked": "the bot token was revoked: " + _TOKEN_REMEDY,
    "account_inactive": "the bot token belongs to a deactivated app or user: " + _TOKEN_REMEDY,
    "channel_not_found": ("Slack knows no channel {channel!r} for this bot: set [alerts.slack] channel (env "
                          "COSTLINE_ALERTS_SLACK_CHANNEL) to the channel id (C0123456789, at the bottom of the "
                          "channel's details); for a private channel invite the bot first"),
    "not_in_channel": "the bot is not a member of {channel!r}: in that channel type /invite @<your bot's name>",
    "is_archived": ("the channel {channel!r} is archived: unarchive it or set [alerts.slack] channel "
                    "(COSTLINE_ALERTS_SLACK_CHANNEL) to another"),
    "missing_scope": ("the bot token lacks a scope: add chat:write (and channels:history / groups:history for the "
                      "duplicate check) under OAuth & Permissions, reinstall the app, then set the new token"),
    "invalid_blocks": "Slack refused the message even as text only: a costline bug, please report it",
    "msg_too_long": "Slack refused the message even as text only: a costline bug, please report it",
    "msg_blocks_too_long": "Slack refused the message even as text only: a costline bug, please report it",
    "no_text": "Slack refused the message even as text only: a costline bug, please report it",
}

_WEBHOOK_REMEDY = ("Slack refuses the incoming webhook (revoked, or its channel archived or deleted): create a new "
                   "one and set [alerts.slack] webhook_url (env COSTLINE_ALERTS_SLACK_WEBHOOK_URL) to it")

#: Errors of a message's format: the post is retried at once as text only (no blocks). ``msg_blocks_too_long``:
#: the blocks' texts add up to more than Slack takes in one message (about 13,200 characters, undocumented:
#: slackapi/bolt-js#2509, #2867), though each is within its own limit.
_FORMAT = frozenset({"invalid_blocks", "msg_too_long", "msg_blocks_too_long"})

#: Duplicate-check errors that no wait fixes (the token cannot read the channel's history): the outbox posts
#: without the check (a possible duplicate, logged) instead of holding the message for ever.
_CHECK_NEVER_WORKS = frozenset({"missing_scope", "not_allowed_token_type", "no_permission", "access_denied",
                                "not_in_channel", "channel_not_found", "invalid_auth", "not_authed",
                                "token_revoked", "account_inactive", "is_archived"})


class DuplicateCheckError(LookupError):
    """The duplicate check (:meth:`SlackBotNotifier.find`) could not tell whether a message is in Slack.

    ``never_works``: it cannot work with this token or channel (a missing scope): the outbox posts without it
    (a possible duplicate, logged). Otherwise (rate limited, timed out, Slack down) the outbox waits
    ``retry_after`` (or its backoff) and checks again before posting.
    """

    def __init__(self, message: str, *, never_works: bool = False, retry_after: float | None = None,
                 rate_limited: bool = False) -> None:
        super().__init__(message)
        self.never_works = never_works
        self.retry_after = retry_after
        self.rate_limited = rate_limited


#: Slack errors saying the message an edit (``chat.update``) or a thread reply refers to is gone or can
#: no longer be edited (deleted in Slack, too old, not this bot's): no retry and no config change can
#: fix them. An edit answered with one is skipped; a reply answered with one is posted top-level instead.
_GONE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed", "thread_not_found"})


@dataclass(frozen=True)
class Outgoing:
    """One outbox row, ready to send."""

    op: str  # "post" (a message or a thread reply) or "update" (edit the incident's original message)
    payload: Mapping[str, Any]  # {"kind", "title", "text", "blocks"}
    dedup_key: str
    #: Where the incident's thread is (known once its first message was sent).
    channel: str | None = None
    thread_ts: str | None = None
    #: Epoch seconds the row was queued (the duplicate check looks from there on).
    created_at: float = 0.0
    #: Epoch seconds by which the row's earlier attempts were over (the last one's start plus the claim
    #: lease, ``[alerts.outbox] claim_s``): the duplicate check looks no later. None: up to now.
    attempted_until: float | None = None


@dataclass(frozen=True)
class SendResult:
    ok: bool
    channel: str | None = None
    ts: str | None = None
    error: str | None = None
    #: Seconds the server asked us to wait (HTTP 429 Retry-After).
    retry_after: float | None = None
    #: The message may have been delivered although we got no answer (timeout, dropped connection).
    ambiguous: bool = False
    #: A config problem (bad token, unknown channel): retried, but logged loudly.
    permanent: bool = False
    #: Nothing to do for this notifier (e.g. a webhook cannot update a message).
    skipped: bool = False
    #: The server rate-limited us (HTTP 429); ``retry_after`` is its ``Retry-After`` when usable.
    rate_limited: bool = False
    #: The message this one refers to (the original an edit changes, a reply's thread) is gone or can no
    #: longer be edited: retrying cannot help (the outbox skips such an edit).
    gone: bool = False
    #: For a ``permanent`` error: what the operator should do (logged once per target and change).
    remedy: str | None = None
    #: Slack's error code (``invalid_auth``, ``ratelimited``), when Slack answered one.
    code: str | None = None


_BROADCAST = re.compile(r"@(?=(channel|here|everyone)\b)", re.IGNORECASE)

#: Shown in place of each run of invisible characters taken out of text bound for Slack.
REPLACEMENT = "\ufffd"
#: Unicode categories never passed to Slack: format characters (Cf: the bidi controls U+202A–202E and
#: U+2066–2069, U+200E/200F, zero-width spaces and joiners, U+FEFF, the tag characters U+E0000–E007F…),
#: controls (Cc) but newline and tab, lone surrogates (Cs), and the line/paragraph separators (Zl, Zp).
_INVISIBLE = frozenset({"Cf", "Cc", "Cs", "Zl", "Zp"})


def _is_invisible(ch: str) -> bool:
    return ch not in "\n\t" and unicodedata.category(ch) in _INVISIBLE


def slack_visible(text: object) -> str:
    r"""``text`` with every run of invisible characters (see ``_INVISIBLE``) replaced by one U+FFFD.

    A right-to-left override (U+202E) in a tenant name would reverse the rest of the line it is shown on
    ("tenant=ev\u202eil: hit rate 30%" reads backwards after "ev"), and zero-width characters make two names
    look alike ("acme" and "ac\u200bme"): the replacement character shows that something was there,
    so such a name stays distinguishable and the line around it reads as written.
    """
    s = str(text)
    if s.isascii() and s.isprintable():
        return s
    out: list[str] = []
    for ch in s:
        if _is_invisible(ch):
            if not out or out[-1] != REPLACEMENT:
                out.append(REPLACEMENT)
        else:
            out.append(ch)
    return "".join(out)


def slack_escape(text: object) -> str:
    """Text safe in Slack mrkdwn: invisible characters (bidi controls and other format characters)
    replaced by :func:`slack_visible`, ``&``, ``<`` and ``>`` escaped as Slack requires, so no
    ``<!channel>``/``<!here>``/``<@U…>`` mention, ``<https://…|label>`` link or ``<#C…>`` reference
    can be formed from it, and ``@channel``/``@here``/``@everyone`` broken with a zero-width space.

    Alert text carries tenants, tiers, task types and other values that reached the lake from
    requests, so every text sent to Slack goes through this (see :func:`slack_payload`).
    """
    out = slack_visible(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _BROADCAST.sub("@\u200b", out)


#: Slack's limits (characters): the message text (Slack's recommended maximum), a header, a section's
#: text, one of its fields, any other text object. Past them chat.postMessage answers invalid_blocks /
#: msg_too_long, which no retry fixes: a tenant or model name of 10,000 characters must not block a thread.
_TEXT_MAX, _HEADER_MAX, _SECTION_MAX, _FIELD_MAX = 4000, 150, 3000, 2000
#: A section's text limit, for the renderer: a "Dig in" query longer than this once escaped is left out, not cut.
SECTION_MAX = _SECTION_MAX
_PARTIAL_ENTITY = re.compile(r"&[a-z]{0,3}$")


def _clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis, never inside an ``&amp;``-style escape."""
    if len(text) <= limit:
        return text
    cut = _PARTIAL_ENTITY.sub("", text[: limit - 1])
    return cut + "…"


def _escape_block(value: Any, limit: int = _SECTION_MAX) -> Any:
    if isinstance(value, dict):
        if value.get("type") == "mrkdwn" and isinstance(value.get("text"), str):
            return {**value, "text": _clip(slack_escape(value["text"]), limit)}
        if value.get("type") == "plain_text" and isinstance(value.get("text"), str):
            # shown as typed: Slack forms no mention or link from plain_text, so only break @here & co.
            # (after taking out invisible characters: a bidi override reverses a header as well)
            return {**value, "text": _clip(_BROADCAST.sub("@\u200b", slack_visible(value["text"])), limit)}
        kind = value.get("type")
        out = {}
        for k, v in value.items():
            if kind == "header" and k == "text":
                out[k] = _escape_block(v, _HEADER_MAX)
            elif kind == "section" and k == "fields":
                out[k] = _escape_block(v[:10] if isinstance(v, list) else v, _FIELD_MAX)
            else:
                out[k] = _escape_block(v, limit)
        return out
    if isinstance(value, list):
        return [_escape_block(v, limit) for v in value]
    return value


#: The most characters of text a message's blocks carry in all (:func:`slack_payload`). Slack refuses blocks whose
#: texts add up to about 13,200 characters (``msg_blocks_too_long``, undocumented: slackapi/bolt-js#2509) and
#: counts the blocks themselves towards it too (#2867 was refused at 11,341 characters of text in many blocks):
#: 11,000 leaves room for the at most 22 blocks of a message.
BLOCKS_TEXT_MAX = 11_000
#: Said in place of the figures left out of a message to keep it within :data:`BLOCKS_TEXT_MAX`.
_FIGURES_LEFT_OUT = ("_Figures of {n} left out: the message would pass Slack's length limit "
                     "(`costline alerts list` shows each alert)._")


def _texts(value: Any) -> list[str]:
    """Every text of a block tree (the ``text`` strings Slack counts)."""
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in ([v] if k == "text" and isinstance(v, str) else _texts(v))]
    if isinstance(value, list):
        return [t for v in value for t in _texts(v)]
    return []


def _size(blocks: list[Any]) -> int:
    return sum(len(t) for t in _texts(blocks))


def _is_fields(block: Any) -> bool:
    return isinstance(block, dict) and block.get("type") == "section" and "fields" in block


def _shrinkable(block: Any) -> bool:
    """A section of text that may be shortened to fit the message: a member's head and summary, a note; not the
    "Dig in" query (cut short it would not run)."""
    return (isinstance(block, dict) and block.get("type") == "section" and isinstance(block.get("text"), dict)
            and isinstance(block["text"].get("text"), str) and not block["text"]["text"].startswith("*Dig in*"))


def _fit(blocks: list[Any], budget: int = BLOCKS_TEXT_MAX) -> list[Any]:
    """``blocks`` (escaped and clipped) within ``budget`` characters of text in all. First the members' figures
    (their ``fields`` sections) are left out, the last member's first (members are worst first), with a line
    saying so; then the member sections (head and summary) are shortened, the longest first, to an equal share of
    what is left. The header (title), the footer, each member's head (labels and state: it comes first) and the
    "Dig in" query are kept."""
    if _size(blocks) <= budget:
        return blocks
    out = list(blocks)
    fields_at = [i for i, b in enumerate(out) if _is_fields(b)]
    dropped = 0
    note_at = next((i for i in range(len(out) - 1, -1, -1)
                    if isinstance(out[i], dict) and out[i].get("type") == "context"), len(out))
    for i in reversed(fields_at):
        out[i] = None
        dropped += 1
        note = {"type": "context", "elements": [{"type": "mrkdwn", "text": _FIGURES_LEFT_OUT.format(
            n=f"{dropped} alert{'s' if dropped != 1 else ''}")}]}
        trial = [b for b in out[:note_at] if b is not None] + [note] + [b for b in out[note_at:] if b is not None]
        if _size(trial) <= budget or i == fields_at[0]:
            out = trial
            break
    if _size(out) <= budget:
        return out
    shrink = [i for i, b in enumerate(out) if _shrinkable(b)]
    room = budget - (_size(out) - sum(len(out[i]["text"]["text"]) for i in shrink))
    lengths = sorted(len(out[i]["text"]["text"]) for i in shrink)
    cap, left = 0, len(lengths)
    for n in lengths:  # water-filling: sections shorter than an equal share keep their text whole
        share = max(room, 0) // left if left else 0
        if n > share:
            cap = share
            break
        room -= n
        left -= 1
    else:
        return out
    cap = max(cap, 2)
    for i in shrink:
        text = out[i]["text"]["text"]
        if len(text) > cap:
            out[i] = {**out[i], "text": {**out[i]["text"], "text": _shorten(text, cap)}}
    return out


#: Characters kept of the end of a member's head line cut short: its state (" — closed for lack of data" and the
#: bold's closing ``*``).
_HEAD_END = 40


def _shorten(text: str, limit: int) -> str:
    """A section's text cut to ``limit`` characters, its first line (a member's labels and state) kept: the summary
    after it is cut first; a first line still too long loses characters in its middle, so the state at its end
    stays (``*tenant=tenant-0-xxx…* — firing``). Never inside an ``&amp;``-style escape."""
    head, nl, body = text.partition("\n")
    if nl and len(head) + 2 < limit:
        return head + nl + _clip(body, limit - len(head) - 1)
    if len(head) <= limit:
        return head
    k = len(head) - _HEAD_END
    amp = head.rfind("&", max(k - 4, 0), k)
    if amp != -1:  # the kept end would start inside an escape: keep all of it
        semi = head.find(";", amp)
        if semi != -1 and semi >= k and semi - amp <= 5:
            k = semi + 1
    if limit - (len(head) - k) < 2:
        return _clip(head, limit)
    return _clip(head[:k], limit - (len(head) - k)) + head[k:]


def slack_payload(payload: Mapping[str, Any]) -> tuple[str, Any]:
    """``(text, blocks)`` of an outbox payload with every text object escaped by :func:`slack_escape`
    and clipped to Slack's limits (an ellipsis marks a clipped text), the blocks' texts within
    :data:`BLOCKS_TEXT_MAX` in all (:func:`_fit`: figures left out, then summaries shortened), so eight members
    named with thousands of characters still go out as blocks; should Slack refuse them all the same
    (``msg_blocks_too_long``), the notifier sends the text alone."""
    blocks = payload.get("blocks")
    escaped = _escape_block(blocks) if blocks is not None else None
    return (_clip(slack_escape(payload.get("text", "")), _TEXT_MAX),
            _fit(escaped) if isinstance(escaped, list) else escaped)


class Notifier(Protocol):
    name: str

    def send(self, message: Outgoing) -> SendResult: ...

    def find(self, message: Outgoing) -> SendResult | None: ...

    def shutdown(self) -> None: ...


#: The icon a message's text starts with (one of :data:`costline.alerts.message.ICONS`): Slack's emoji shortcode,
#: which means nothing on a terminal. Only it is taken off: a ``:word:`` elsewhere (a tenant ``org:42:prod``, a
#: time ``02:13:45``) is part of the text.
_ICON_PREFIX = re.compile("^(?:" + "|".join(re.escape(icon) for icon in ICONS) + ") ?")


def console_text(text: object) -> str:
    """A message's text as the console shows it: without its leading icon shortcode, and with every character that
    does not print but the line breaks — a terminal escape (``\\x1b[2J``, an OSC title), a carriage return, a bidi
    override — written as its escape (``\\x1b``, ``\\r``, ``\\u202e``), as ``costline sql`` writes a table cell
    (:func:`costline.sqlutil.cell_text`): a value from the lake cannot clear, retitle or rewrite the terminal or
    log it lands in."""
    body = _ICON_PREFIX.sub("", str(text), count=1)
    return "\n".join(cell_text(line) for line in body.split("\n"))


class ConsoleNotifier:
    """Always on: every message as text to ``echo`` (default: the log, at WARNING), through
    :func:`console_text`."""

    name = "console"

    def __init__(self, echo: Callable[[str], None] | None = None) -> None:
        self._echo = echo

    def send(self, message: Outgoing) -> SendResult:
        if message.op != "post":
            return SendResult(ok=True, skipped=True)
        text = console_text(message.payload.get("text", ""))
        if self._echo is None:
            log.warning("alert: %s", text)
        else:
            self._echo(text)
        return SendResult(ok=True)

    def find(self, message: Outgoing) -> SendResult | None:
        return None

    def shutdown(self) -> None:
        """Nothing to release."""


class InMemoryNotifier:
    """Records what it is sent (a test double that ships with the product)."""

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._sent: list[Outgoing] = []

    def send(self, message: Outgoing) -> SendResult:
        with self._lock:
            self._sent.append(message)
            return SendResult(ok=True, channel="memory", ts=f"{len(self._sent)}.000000")

    def find(self, message: Outgoing) -> SendResult | None:
        return None

    def sent(self) -> list[Outgoing]:
        with self._lock:
            return list(self._sent)

    def shutdown(self) -> None:
        """Nothing to release."""


def _header(headers: Mapping[str, Any] | None, name: str) -> str | None:
    for k, v in (headers or {}).items():
        if k.lower() == name.lower():
            return v[0] if isinstance(v, list) else str(v)
    return None


def _retry_after(headers: Mapping[str, Any] | None) -> float | None:
    """The ``Retry-After`` header in seconds: a finite number >= 0, else None (missing, an HTTP date,
    ``inf``, ``nan``, negative, garbage). The outbox clamps it to ``[1, backoff_max_s]``."""
    value = _header(headers, "Retry-After")
    try:
        seconds = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return seconds if seconds is not None and math.isfinite(seconds) and seconds >= 0 else None


#: Messages per page of the duplicate check (Slack recommends at most 200), and the clock skew allowed
#: between this host and Slack around the attempt window (seconds).
_PAGE, _SKEW_S = 200, 60.0


class DeadlineExceeded(TimeoutError):
    """A Slack call gave no complete answer within its wall-clock deadline (it may have reached Slack)."""


class _Stuck(Exception):
    """An earlier call to this target is still stuck on its worker thread: nothing was sent."""


class _Bounded:
    """Runs one blocking HTTP call at a time on a worker thread and waits for it ``deadline_s`` at most
    (wall clock). The HTTP client's ``timeout`` bounds each socket read only: a server (or proxy) that sends
    its headers and then a byte a second never trips it, and would hold the delivery pass — and the alert
    tick that runs it — for hours. A call past its deadline is left to finish on its thread (a thread cannot
    be killed); while it is, every further call fails at once (:class:`_Stuck`), so one target holds one
    stuck thread at most, and that target is paused meanwhile."""

    def __init__(self, deadline_s: float, what: str) -> None:
        self.deadline_s = deadline_s
        self.what = what
        self._lock = threading.Lock()
        self._stuck: threading.Thread | None = None

    def __call__(self, fn: Callable[[], Any]) -> Any:
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                box["error"] = exc

        with self._lock:
            if self._stuck is not None:
                if self._stuck.is_alive():
                    raise _Stuck(f"an earlier {self.what} call is still waiting for its answer (a connection "
                                 f"that trickles or hangs): {self.what} paused until it ends")
                self._stuck = None
            worker = threading.Thread(target=run, name=f"costline-{self.what}-call", daemon=True)
            worker.start()
            worker.join(self.deadline_s)
            if worker.is_alive():
                self._stuck = worker
                raise DeadlineExceeded(f"no complete answer from {self.what} within {self.deadline_s:g}s (wall clock)")
        if "error" in box:
            raise box["error"]
        return box["value"]


def _deadline(timeout_s: float) -> float:
    """The wall-clock bound of one call: the client's timeout plus a margin (up to 1 s), so a plain hang
    ends as the client's own timeout and only a trickling answer hits the bound."""
    return float(timeout_s) + min(float(timeout_s), 1.0)


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, (socket.timeout, TimeoutError)) or (
        isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, (socket.timeout, TimeoutError)))


class SlackBotNotifier:
    """``chat.postMessage`` into ``channel``; later messages of an incident go to its thread and
    ``chat.update`` edits the original. Messages carry metadata with their outbox key, which
    :meth:`find` looks for (``conversations.history`` / ``conversations.replies``)."""

    name = "slack"

    def __init__(self, token: str, channel: str, *, base_url: str = "https://slack.com/api/",
                 timeout_s: float = 10.0, dedup_check: bool = True, dedup_max_pages: int = 10,
                 client: Any = None, deadline_s: float | None = None) -> None:
        if not token or not channel:
            raise NotifierError("a Slack bot needs both [alerts.slack] token and channel "
                                "(COSTLINE_ALERTS_SLACK_TOKEN, COSTLINE_ALERTS_SLACK_CHANNEL)")
        if client is None:
            from slack_sdk import WebClient

            # no SDK-side retries: the outbox owns retrying (and Retry-After)
            client = WebClient(token=token, base_url=base_url, timeout=timeout_s,  # type: ignore[arg-type]
                               retry_handlers=[])
        self.client = client
        self.channel = channel
        self.dedup_check = dedup_check
        self.dedup_max_pages = max(int(dedup_max_pages), 1)
        #: Each Slack call (a post, an edit, one page of the duplicate check) ends within this many seconds.
        self.deadline_s = float(deadline_s) if deadline_s is not None else _deadline(timeout_s)
        self._bounded = _Bounded(self.deadline_s, "Slack")

    @staticmethod
    def _api_error(exc: Any) -> tuple[str, int]:
        r = exc.response
        return (r.data.get("error") if isinstance(r.data, dict) else None) or f"HTTP {r.status_code}", r.status_code

    def _call(self, fn: Callable[[], Any]) -> SendResult:
        from slack_sdk.errors import SlackApiError

        try:
            resp = self._bounded(fn)
        except _Stuck as exc:  # nothing sent: a plain failure, retried after the backoff
            return SendResult(ok=False, error=str(exc))
        except SlackApiError as exc:
            error, status = self._api_error(exc)
            if status == 429 or error == "ratelimited":
                return SendResult(ok=False, error="rate limited (429)", retry_after=_retry_after(exc.response.headers),
                                  rate_limited=True, code="ratelimited")
            permanent = error in _PERMANENT
            remedy = (_REMEDIES.get(error, "").format(channel=self.channel) or None) if permanent else None
            return SendResult(ok=False, error=f"Slack error {error} (HTTP {status})", code=error,
                              permanent=permanent, gone=error in _GONE, remedy=remedy)
        except Exception as exc:  # noqa: BLE001 - network errors of every kind (and the deadline) are results here
            return SendResult(ok=False, error=f"{type(exc).__name__}: {exc}", ambiguous=True)
        return SendResult(ok=True, channel=resp.get("channel"), ts=resp.get("ts"))

    def _text_only_again(self, result: SendResult, blocks: Any, message: Outgoing) -> bool:
        if result.ok or blocks is None or result.code not in _FORMAT:
            return False
        log.warning("Slack refused the blocks of %s (%s): sending it again as text only", message.dedup_key,
                    result.code)
        return True

    def send(self, message: Outgoing) -> SendResult:
        text, blocks = slack_payload(message.payload)
        if message.op == "update":
            if not message.thread_ts:
                return SendResult(ok=True, skipped=True)

            def edit(with_blocks: Any) -> SendResult:
                return self._call(lambda: self.client.chat_update(
                    channel=message.channel or self.channel, ts=message.thread_ts, text=text, blocks=with_blocks))

            result = edit(blocks)
            return edit(None) if self._text_only_again(result, blocks, message) else result

        def post(thread_ts: str | None, with_blocks: Any) -> SendResult:
            return self._call(lambda: self.client.chat_postMessage(
                channel=message.channel or self.channel, text=text, blocks=with_blocks,
                thread_ts=thread_ts, unfurl_links=False, unfurl_media=False,
                metadata={"event_type": METADATA_EVENT_TYPE, "event_payload": {"key": message.dedup_key}}))

        thread_ts = message.thread_ts
        result = post(thread_ts, blocks)
        if thread_ts and result.gone:  # the thread's parent was deleted: say it top-level instead
            log.warning("Slack thread %s in %s is gone (%s): posting the reply %s as a new message instead",
                        thread_ts, message.channel or self.channel, result.error, message.dedup_key)
            thread_ts = None
            result = post(None, blocks)
        if self._text_only_again(result, blocks, message):  # refused before posting: no duplicate
            result = post(thread_ts, None)
        return result

    def find(self, message: Outgoing) -> SendResult | None:
        """The message if Slack already has it (an earlier attempt went through unanswered).

        Searches the row's attempt window only — from a minute before it was queued to a minute after
        its last attempt was over (``oldest``/``latest``; the minutes absorb clock skew with Slack) —
        following ``response_metadata.next_cursor`` while ``has_more``, at most ``dedup_max_pages``
        pages of ``_PAGE`` messages: a busy channel (hundreds of messages since) cannot hide it.
        """
        from slack_sdk.errors import SlackApiError

        if message.op != "post" or not self.dedup_check:
            return None
        channel = message.channel or self.channel
        window: dict[str, Any] = {"oldest": f"{max(message.created_at - _SKEW_S, 0):.6f}"}
        if message.attempted_until is not None:
            window["latest"] = f"{max(message.attempted_until, message.created_at) + _SKEW_S:.6f}"
        cursor: str | None = None
        for page in range(1, self.dedup_max_pages + 1):
            extra = {"cursor": cursor} if cursor else {}
            try:
                if message.thread_ts:
                    resp = self._bounded(lambda: self.client.conversations_replies(
                        channel=channel, ts=message.thread_ts, include_all_metadata=True, limit=_PAGE,
                        **window, **extra))
                else:
                    resp = self._bounded(lambda: self.client.conversations_history(
                        channel=channel, include_all_metadata=True, limit=_PAGE, **window, **extra))
            except SlackApiError as exc:
                error, status = self._api_error(exc)
                if status == 429 or error == "ratelimited":
                    raise DuplicateCheckError("cannot check Slack for an earlier delivery: rate limited (429)",
                                              retry_after=_retry_after(exc.response.headers),
                                              rate_limited=True) from exc
                raise DuplicateCheckError(f"cannot check Slack for an earlier delivery: Slack error {error} "
                                          f"(HTTP {status})", never_works=error in _CHECK_NEVER_WORKS) from exc
            except Exception as exc:  # noqa: BLE001 - a timeout, a dropped connection, a stuck earlier call
                raise DuplicateCheckError(f"cannot check Slack for an earlier delivery: "
                                          f"{type(exc).__name__}: {exc}") from exc
            for m in resp.get("messages") or []:
                payload = (m.get("metadata") or {}).get("event_payload") or {}
                if payload.get("key") == message.dedup_key:
                    return SendResult(ok=True, channel=resp.get("channel") or channel, ts=m.get("ts"))
            cursor = (resp.get("response_metadata") or {}).get("next_cursor") or None
            if not resp.get("has_more") or not cursor:
                return None
        log.warning("Slack duplicate check for %s stopped after %d pages (%d messages) of %s without finding it "
                    "(dedup_max_pages): treating it as not delivered, so it may be posted twice",
                    message.dedup_key, self.dedup_max_pages, self.dedup_max_pages * _PAGE, channel)
        return None

    def shutdown(self) -> None:
        """Nothing to release."""


class SlackWebhookNotifier:
    """An incoming webhook: posts only (webhooks cannot thread, update, or be searched for duplicates)."""

    name = "slack"

    def __init__(self, url: str, *, timeout_s: float = 10.0, client: Any = None) -> None:
        from costline.netsec import mask_secret

        self._masked = mask_secret(url)  # the URL is the secret: an error shows it masked, never whole
        if not url.startswith(("http://", "https://")):
            raise NotifierError(f"[alerts.slack] webhook_url must be an http(s) URL such as "
                                f"https://hooks.slack.com/services/...; got {self._masked!r} (masked)")
        path = url.split("://", 1)[1].partition("/")[2]
        self._secrets = [x for x in (url, "/" + path if path else "") if len(x) >= 8]
        if client is None:
            from slack_sdk.webhook import WebhookClient

            client = WebhookClient(url, timeout=timeout_s, retry_handlers=[])  # type: ignore[arg-type]
        self.client = client
        self._bounded = _Bounded(_deadline(timeout_s), "Slack webhook")

    def send(self, message: Outgoing) -> SendResult:
        if message.op != "post":
            return SendResult(ok=True, skipped=True)
        try:
            text, blocks = slack_payload(message.payload)
            resp = self._bounded(lambda: self.client.send(text=text, blocks=blocks))
        except _Stuck as exc:  # nothing sent
            return SendResult(ok=False, error=str(exc))
        except Exception as exc:  # noqa: BLE001
            error = f"{type(exc).__name__}: {exc}"
            for secret in self._secrets:  # an HTTP library may quote the URL, or its path (the secret part)
                error = error.replace(secret, self._masked)
            return SendResult(ok=False, error=error, ambiguous=True)
        if resp.status_code == 200:
            return SendResult(ok=True)
        if resp.status_code == 429:
            return SendResult(ok=False, error="rate limited (429)", retry_after=_retry_after(resp.headers),
                              rate_limited=True)
        permanent = resp.status_code in (400, 403, 404, 410)
        return SendResult(ok=False, error=f"webhook answered HTTP {resp.status_code}: {resp.body[:200]}",
                          permanent=permanent, remedy=_WEBHOOK_REMEDY if permanent else None)

    def find(self, message: Outgoing) -> SendResult | None:
        return None

    def shutdown(self) -> None:
        """Nothing to release."""


def slack_off_warning(config: AlertsConfig) -> str | None:
    """What to tell the operator when ``[alerts.slack]`` names a channel but Slack is off (no token, no
    webhook_url): notifications then reach the console only. None when Slack is on, or not asked for.

    Not refused on load: the token is a secret often given only where alerts run
    (``COSTLINE_ALERTS_SLACK_TOKEN``), while a shared costline.toml keeps the channel for every command.
    """
    s = config.slack
    if s.channel and not s.token and not s.webhook_url:
        return ("[alerts.slack] channel is set but neither token nor webhook_url is: Slack is OFF, notifications go "
                "to the console only. Set token (COSTLINE_ALERTS_SLACK_TOKEN, a bot token xoxb-...) or webhook_url "
                "(COSTLINE_ALERTS_SLACK_WEBHOOK_URL)")
    return None


def build_notifiers(config: AlertsConfig, *, echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """``{"console": ..., "slack": ...}`` from the config (Slack only when configured)."""
    out: dict[str, Any] = {}
    if config.console:
        out["console"] = ConsoleNotifier(echo)
    s = config.slack
    if s.token:
        if not s.channel:
            raise NotifierError("[alerts.slack] token is set but channel is not: set channel "
                                "(COSTLINE_ALERTS_SLACK_CHANNEL), e.g. C0123456789")
        out["slack"] = SlackBotNotifier(s.token, s.channel, base_url=s.base_url, timeout_s=s.timeout_s,
                                        dedup_check=s.dedup_check, dedup_max_pages=s.dedup_max_pages)
    elif s.webhook_url:
        out["slack"] = SlackWebhookNotifier(s.webhook_url, timeout_s=s.timeout_s)
    return out

