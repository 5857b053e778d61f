"""Delivering the outbox: nothing lost, nothing sent twice.

Every message the state machine decides on is first a row of the ``outbox``
table (committed with the state change). :meth:`Outbox.deliver_due` sends the
rows that are due, oldest first, and keeps each incident's messages in order
per target (a thread reply never overtakes its parent). Order is kept within an
incident only, and edits (``op='update'``) apart from posts: a newer incident's
firing message never waits behind an older incident's stuck row, and no post
waits behind an edit.

**Edits are best-effort.** The resolve edits the incident's original message
(``chat.update``). When Slack answers that the message is gone or cannot be edited
(``message_not_found`` — someone deleted it —, ``cant_update_message``,
``edit_window_closed``), the edit is skipped (marked sent with ``last_error``
``skipped: …``, a WARNING naming the group), not retried. A thread reply whose
parent is gone is posted as a new top-level message instead (the notifier does it).

**One sender per row.** Several processes may deliver from one state file (the
``costline alerts run`` daemon and ``costline jobs nightly``, cron and ``costline jobs
serve``). A row is sent only by the process that claims it: one conditional ``UPDATE``
(still unsent, still due, ``attempts`` unchanged since it was read) increments ``attempts``
and moves ``next_attempt_at`` a lease (``[alerts.outbox] claim_s``) ahead. A process that
loses the race leaves the row (and the rows of its group behind it) to the winner. When the
claimer dies mid-send the lease runs out and the row is due again, as a row with an earlier
attempt (below).

**Guarantee toward Slack (bot token).** The claim is the intent record: it is committed
before the attempt. Success is
recorded — ``sent_at`` with the Slack ``channel``/``ts`` — in one transaction.
Each message carries Slack metadata with a key unique to its row. When a row
has an earlier attempt (the process died after Slack accepted the message but
before it was marked, or the attempt timed out with no answer), the notifier
first looks for that key in the channel (``conversations.history``, or
``conversations.replies`` for thread replies), over the row's attempt window
only (``oldest``/``latest``) and page by page (``next_cursor``) however busy the
channel, and only posts if it is not there. Result: exactly one delivered copy
per message, as long as the history check works (scope
``channels:history``/``groups:history``). A check that fails for now (429, a timeout,
Slack down: :class:`~costline.alerts.notify.DuplicateCheckError` without ``never_works``)
reschedules the row — by its ``Retry-After``, pausing the target, or the backoff — and
nothing is posted before it works. Only a check that can never work with this token or
channel (``missing_scope``) lets the row be posted anyway, with a warning (at-least-once
in that narrow case). Incoming webhooks cannot be searched: a webhook attempt that
timed out after Slack accepted it is sent again (at-least-once).

**Failures.** Each row is handled on its own: an unexpected error with one row (a bug, a corrupt
payload) is logged and that row retried after its backoff; the pass goes on with the other rows
and targets (the console included). A config error Slack answers (``invalid_auth``,
``channel_not_found``, ``not_in_channel``…) is logged once per target and error, with its remedy,
not per row and attempt; such rows are retried every ``backoff_max_s`` and go out by themselves
once it is fixed.

A failure delays; it never drops: 429 waits its ``Retry-After`` (for the whole
target), clamped to ``[1, backoff_max_s]`` seconds, or the backoff when the header
is missing or not a finite number (``inf``, ``nan``, a date); other failures back
off exponentially (``[alerts.outbox]``; the exponent is capped, so days of failures
never overflow it). A row due further ahead than
``max(backoff_max_s, claim_s)`` (written by an older costline that took any
``Retry-After`` at its word: ``inf``, a month) is made due at the next pass. The one
exception is the test message of ``costline alerts test-notify`` (``kind='test'``):
it is worth sending only while the command waits for it, so its payload carries
an ``expires_at`` (epoch seconds) and an unsent test row past it (or without one:
queued by an older costline) is dropped, never posted later. Time is
injected (``now=``); this module never sleeps except in :meth:`Outbox.force_flush`
(with an injectable ``sleep``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from costline.alerts.notify import Notifier, Outgoing, SendResult
from costline.alerts.settings import OutboxConfig
from costline.alerts.store import AlertStore, from_epoch, to_epoch
from costline.timeutil import utc_now as _utc_now

__all__ = ["Outbox", "DeliveryStats", "TEST_EXPIRES_AT"]

log = logging.getLogger(__name__)


@dataclass
class DeliveryStats:
    sent: int = 0
    failed: int = 0
    #: Rows found already delivered by the duplicate check (and not sent again).
    recovered: int = 0
    #: Rows not yet due, waiting behind an earlier row, for a notifier that is not configured, or claimed by
    #: another process delivering from the same state file.
    waiting: int = 0
    #: Unsent test messages dropped past their ``expires_at`` (never retried later).
    dropped: int = 0
    #: Edits (``op='update'``) given up because Slack says the message is gone or cannot be edited.
    skipped: int = 0
    errors: list[str] = field(default_factory=list)


#: The key of a test message's payload that says until when (epoch seconds) it may be sent.
TEST_EXPIRES_AT = "expires_at"


def _test_expired(row: Mapping[str, Any], t: float) -> bool:
    """A ``kind='test'`` row whose time is up: past its payload's ``expires_at``, or without one."""
    if row["kind"] != "test":
        return False
    try:
        until = json.loads(row["payload"]).get(TEST_EXPIRES_AT)
    except (ValueError, TypeError, AttributeError):
        return True
    return not isinstance(until, (int, float)) or isinstance(until, bool) or until <= t


class Outbox:
    """Sends due outbox rows through the notifiers, with retries and ordering."""

    def __init__(
        self,
        store: AlertStore,
        notifiers: Mapping[str, Notifier],
        config: OutboxConfig | None = None,
        *,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.store = store
        self.notifiers = dict(notifiers)
        self.config = config or OutboxConfig()
        self.now = now
        self._paused_until: dict[str, float] = {}
        #: Per target, the config error (bad token, unknown channel) last logged: logged again only when it changes.
        self._alarm: dict[str, str] = {}

    def _backoff(self, attempts: int) -> float:
        # the exponent is capped: 2 ** 1024 is no float (after ~3.6 days of 5-minute retries the pass would raise)
        exponent = min(max(attempts - 1, 0), 60)
        return min(self.config.backoff_initial_s * 2.0 ** exponent, self.config.backoff_max_s)

    def _delay(self, result: SendResult, attempts: int) -> float:
        """Seconds until the next attempt: a usable ``retry_after`` (a finite number) clamped to
        ``[1, backoff_max_s]``, else the exponential backoff. A server (or a proxy before it) answering
        ``Retry-After: inf``, ``nan``, 2592000 or -5 must neither hold every alert for a month nor
        store a due time no datetime can hold."""
        ra = result.retry_after
        if isinstance(ra, (int, float)) and not isinstance(ra, bool) and math.isfinite(ra):
            return min(max(float(ra), 1.0), self.config.backoff_max_s)
        return self._backoff(attempts)

    @property
    def _horizon(self) -> float:
        """No unsent row is legitimately due further ahead than this (seconds): a backoff or a clamped
        ``Retry-After`` is at most ``backoff_max_s``, a claim ``claim_s``."""
        return max(self.config.backoff_max_s, self.config.claim_s)

    def _reschedule_absurd(self, t: float) -> None:
        """Make rows due now whose ``next_attempt_at`` lies past the horizon (``inf`` or a month ahead,
        written by an older costline that took any ``Retry-After`` at its word)."""
        far = t + self._horizon
        if not self.store.query("SELECT 1 FROM outbox WHERE sent_at IS NULL AND next_attempt_at > ? LIMIT 1", (far,)):
            return  # the usual case: no write, no lock
        with self.store.transaction() as con:
            n = con.execute("UPDATE outbox SET next_attempt_at = ? WHERE sent_at IS NULL AND next_attempt_at > ?",
                            (t, far)).rowcount
        if n:
            log.warning("outbox: %d unsent message(s) were due more than %.0fs ahead (an unchecked Retry-After "
                        "stored by an older costline?): due now", n, self._horizon)

    def _mark_skipped(self, row_id: int, t: float, error: str | None) -> None:
        with self.store.transaction() as con:
            con.execute("UPDATE outbox SET sent_at = ?, last_error = ? WHERE id = ?",
                        (t, f"skipped: {error}", row_id))

    def _root(self, row: Mapping[str, Any]) -> Mapping[str, Any] | None:
        rows = self.store.query(
            "SELECT id, channel, ts, sent_at FROM outbox WHERE group_key = ? AND incident = ? AND target = ? "
            "AND kind = 'firing' AND op = 'post' ORDER BY id LIMIT 1",
            (row["group_key"], row["incident"], row["target"]))
        return rows[0] if rows else None

    def _mark_sent(self, row_id: int, t: float, result: SendResult) -> None:
        with self.store.transaction() as con:
            con.execute("UPDATE outbox SET sent_at = ?, channel = ?, ts = ?, last_error = NULL WHERE id = ?",
                        (t, result.channel, result.ts, row_id))

    def _claim(self, row_id: int, prior: int, t: float) -> bool:
        """Claim a due row for one attempt (the intent record); False: another deliverer got it first.

        The ``UPDATE`` only matches the row as it was read (unsent, due, ``prior`` attempts), so of
        several processes reading it, one claims it. Its ``next_attempt_at`` moves ``claim_s`` ahead:
        the others see it as not due until the claimer records the outcome, or, when the claimer dies,
        until the lease runs out (the next claimer then checks Slack before posting again).
        """
        with self.store.transaction() as con:
            cur = con.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_attempt_at = ?, next_attempt_at = ? "
                "WHERE id = ? AND sent_at IS NULL AND attempts = ? AND next_attempt_at <= ?",
                (t, t + self.config.claim_s, row_id, prior, t))
            return cur.rowcount == 1

    def deliver_due(self, now: datetime | None = None) -> DeliveryStats:
        """One pass over the unsent rows that are due as of ``now``.

        Each row is handled on its own: an unexpected error with one (a bug, a payload that does not parse) is
        logged, that row is retried after its backoff, and the pass goes on with the other rows and targets."""
        t = to_epoch(now or self.now())
        stats = DeliveryStats()
        self._reschedule_absurd(t)
        # Order is kept per incident, target and kind of operation: a reply waits behind the earlier
        # messages of its own incident, an edit behind the earlier edits. A newer incident never waits
        # behind an older one's stuck rows, and no post waits behind an edit.
        blocked: set[tuple[str, int, str, str]] = set()
        blocked_targets = {tg for tg, until in self._paused_until.items() if until > t}
        for row in self.store.outbox(unsent_only=True):
            key = (row["group_key"], int(row["incident"]), row["target"],
                   "update" if row["op"] == "update" else "post")
            try:
                self._deliver_row(row, key, t, stats, blocked, blocked_targets)
            except Exception as exc:  # noqa: BLE001 - one row must never stop the others (console included)
                blocked.add(key)
                stats.failed += 1
                stats.errors.append(f"{type(exc).__name__}: {exc}")
                delay = self._backoff(int(row["attempts"] or 0) + 1)
                log.exception("outbox row %s (%s %s to %s): delivery failed unexpectedly; retrying it in %.0fs, "
                              "the other messages go on", row["id"], row["kind"], row["op"], row["target"], delay)
                try:
                    with self.store.transaction() as con:
                        con.execute("UPDATE outbox SET next_attempt_at = ?, last_error = ? WHERE id = ? "
                                    "AND sent_at IS NULL", (t + delay, f"{type(exc).__name__}: {exc}", row["id"]))
                except Exception:  # noqa: BLE001 - the state file itself fails: its claim runs out (claim_s)
                    log.exception("outbox row %s: cannot reschedule it", row["id"])
        return stats

    def _permanent_failure(self, target: str, result: SendResult, delay: float) -> None:
        """Log a config error (bad token, unknown channel, bot not invited) once per target and error, with
        what to do, not once per row and attempt: the rows keep retrying every ``backoff_max_s``."""
        if self._alarm.get(target) == result.error:
            log.debug("%s still refuses messages: %s", target, result.error)
            return
        self._alarm[target] = str(result.error)
        log.error("%s refuses the alert messages: %s. To fix: %s. They are kept and retried every %.0fs, so they "
                  "go out once it is fixed; this is logged again only if the error changes",
                  target, result.error, result.remedy or "check [alerts.slack] (see docs/alerts.md)", delay)

    def _target_ok(self, target: str) -> None:
        was = self._alarm.pop(target, None)
        if was is not None:
            log.warning("%s accepts alert messages again (it refused them with: %s)", target, was)

    def _reschedule(self, row_id: int, at: float, error: str | None) -> None:
        with self.store.transaction() as con:
            con.execute("UPDATE outbox SET next_attempt_at = ?, last_error = ? WHERE id = ?", (at, error, row_id))

    def _deliver_row(self, row: Mapping[str, Any], key: tuple[str, int, str, str], t: float, stats: DeliveryStats,
                     blocked: set[tuple[str, int, str, str]], blocked_targets: set[str]) -> None:
        target = row["target"]
        if _test_expired(row, t):  # a test message nobody waits for any more: never post it late
            if self.drop_unsent(row["group_key"], kind="test", row_id=row["id"]):
                log.warning("outbox row %s: test message to %s not delivered in time (%s): dropped, not retried",
                            row["id"], target, row["last_error"] or "not attempted")
                stats.dropped += 1
            return
        notifier = self.notifiers.get(target)
        if notifier is None or key in blocked or target in blocked_targets or row["next_attempt_at"] > t:
            blocked.add(key)
            stats.waiting += 1
            return
        channel = thread_ts = None
        if not (row["kind"] == "firing" and row["op"] == "post"):
            root = self._root(row)
            if root is not None and root["sent_at"] is None:
                blocked.add(key)
                stats.waiting += 1
                return
            if root is not None:
                channel, thread_ts = root["channel"], root["ts"]
        msg = Outgoing(op=row["op"], payload=json.loads(row["payload"]),
                       dedup_key=f"costline:{row['id']}:{row['group_key']}:{row['incident']}:{row['kind']}:"
                                 f"{int(row['created_at'])}",
                       channel=channel, thread_ts=thread_ts, created_at=float(row["created_at"]),
                       # the earlier attempts were over when the last one's claim ran out
                       attempted_until=(float(row["last_attempt_at"]) + self.config.claim_s
                                        if row["last_attempt_at"] is not None else None))
        prior = int(row["attempts"])
        if not self._claim(row["id"], prior, t):  # another process is delivering it (or has)
            blocked.add(key)
            stats.waiting += 1
            return
        if prior > 0:
            try:
                found = notifier.find(msg)
            except LookupError as exc:
                if getattr(exc, "never_works", False):  # e.g. missing_scope: waiting cannot help
                    log.warning("outbox row %s: %s; the check cannot work with this token or channel: sending it "
                                "again (may duplicate)", row["id"], exc)
                    found = None
                else:  # rate limited, timed out, Slack down: check again later, never post blind
                    ra = getattr(exc, "retry_after", None)
                    delay = self._delay(SendResult(ok=False, retry_after=ra), prior + 1)
                    if getattr(exc, "rate_limited", False) or ra is not None:
                        self._paused_until[target] = t + delay
                    self._reschedule(row["id"], t + delay, str(exc))
                    log.warning("outbox row %s (%s %s to %s): %s; it may be in Slack already, so it is not posted "
                                "before the check works: checking again in %.0fs", row["id"], row["kind"],
                                row["op"], target, exc, delay)
                    blocked.add(key)
                    blocked_targets.add(target)
                    stats.failed += 1
                    stats.errors.append(str(exc))
                    return
            if found is not None:
                self._mark_sent(row["id"], t, found)
                self._target_ok(target)
                stats.recovered += 1
                return
        try:
            result = notifier.send(msg)
        except Exception as exc:  # noqa: BLE001 - a notifier bug must not stop delivery of the rest
            log.exception("notifier %s raised", target)
            result = SendResult(ok=False, error=f"{type(exc).__name__}: {exc}")
        if result.ok:
            self._mark_sent(row["id"], t, result)
            self._target_ok(target)
            stats.sent += 1
            return
        if row["op"] == "update" and result.gone:  # an edit is best-effort: never retried forever
            self._mark_skipped(row["id"], t, result.error)
            log.warning("outbox row %s: cannot edit the original %s message of alert group %s (incident #%s) "
                        "in %s: %s (deleted, or too old to edit); edit skipped, later messages unaffected",
                        row["id"], row["kind"], row["group_key"], row["incident"], target, result.error)
            stats.skipped += 1
            return
        if result.permanent and result.retry_after is None:  # a config error: retried slowly, logged once
            delay = self.config.backoff_max_s
        else:
            delay = self._delay(result, prior + 1)
        if result.rate_limited or result.retry_after is not None:
            self._paused_until[target] = t + delay
        self._reschedule(row["id"], t + delay, result.error)
        if result.permanent:
            self._permanent_failure(target, result, delay)
        else:
            log.warning("outbox row %s (%s %s to %s) failed: %s; retrying in %.0fs", row["id"], row["kind"],
                        row["op"], target, result.error, delay)
        stats.failed += 1
        stats.errors.append(str(result.error))
        blocked.add(key)
        blocked_targets.add(target)  # an outage or a rate limit: don't hammer it in this pass

    def drop_unsent(self, group_key: str, *, kind: str = "test", row_id: int | None = None) -> int:
        """Delete the unsent rows of ``group_key`` (and ``kind``; only ``row_id`` if given); their count.

        Only for messages that must not go out late (the test message); alert messages are never dropped.
        """
        sql, args = "DELETE FROM outbox WHERE group_key = ? AND kind = ? AND sent_at IS NULL", [group_key, kind]
        if row_id is not None:
            sql, args = sql + " AND id = ?", args + [row_id]
        with self.store.transaction() as con:
            return con.execute(sql, args).rowcount

    def _targets_sql(self) -> tuple[str, tuple[str, ...]]:
        names = tuple(self.notifiers)
        return f"target IN ({','.join('?' * len(names))})" if names else "0", names

    def pending(self) -> int:
        """Unsent rows for the configured notifiers."""
        where, args = self._targets_sql()
        return int(self.store.query(f"SELECT count(*) FROM outbox WHERE sent_at IS NULL AND {where}", args)[0][0])

    def next_due(self) -> datetime | None:
        """When the earliest unsent row (of a configured notifier) is due; None: nothing to send."""
        where, args = self._targets_sql()
        rows = self.store.query(f"SELECT min(next_attempt_at) FROM outbox WHERE sent_at IS NULL AND {where}", args)
        if not rows or rows[0][0] is None:
            return None
        due, t = float(rows[0][0]), to_epoch(self.now())
        if not math.isfinite(due) or due > t + self._horizon:  # see _reschedule_absurd: due now
            due = t
        return from_epoch(due)

    def prune(self, now: datetime | None = None) -> int:
        """Delete sent rows older than ``keep_sent_s`` (never those of an open incident)."""
        cut = to_epoch(now or self.now()) - self.config.keep_sent_s
        with self.store.transaction() as con:
            cur = con.execute(
                "DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ? AND NOT EXISTS ("
                "SELECT 1 FROM groups g WHERE g.group_key = outbox.group_key AND g.incident = outbox.incident "
                "AND g.open = 1)", (cut,))
            return cur.rowcount

    def _unsent_in(self, group_key: str) -> int:
        where, args = self._targets_sql()
        return int(self.store.query(f"SELECT count(*) FROM outbox WHERE sent_at IS NULL AND group_key = ? AND {where}",
                                    (group_key, *args))[0][0])

    def force_flush(self, timeout_s: float = 30.0, *, group_key: str | None = None,
                    sleep: Callable[[float], None] = time.sleep) -> bool:
        """Deliver until the outbox is empty (or, with ``group_key``, that group's rows are sent) or
        ``timeout_s`` passed (``now`` clock); True if so."""
        deadline = to_epoch(self.now()) + timeout_s
        while True:
            self.deliver_due()
            if (self.pending() if group_key is None else self._unsent_in(group_key)) == 0:
                return True
            t = to_epoch(self.now())
            nxt = self.next_due()
            if t >= deadline:
                return False
            wait = max(0.05, min((to_epoch(nxt) - t) if nxt else 0.05, deadline - t))
            sleep(wait)

    def shutdown(self) -> None:
        for n in self.notifiers.values():
            n.shutdown()
