"""The durable alert state: one SQLite file (WAL), stdlib :mod:`sqlite3`.

Tables:

* ``alerts`` — one row per fingerprint (rule + sorted labels) that breached: state
  (``inactive``/``pending``/``firing``/``resolved``), since when, last observation (inactive and resolved
  ones are dropped after their rule's retention: :func:`costline.alerts.engine.retention_s`);
* ``groups`` — one row per notification group (``group_by`` labels): whether an
  incident is open, its number, which alerts its messages covered, when last notified;
* ``silences`` — rule + label matchers, start/end, reason;
* ``outbox`` — every message to deliver, per target (``console``, ``slack``), with
  attempts, ``next_attempt_at``, ``sent_at`` and the Slack ``channel``/``ts`` it got;
* ``history`` — every state change (what ``costline alerts history`` and the ``alerts`` view show), 90 days
  and at least the newest 1,000 (:data:`costline.alerts.engine.HISTORY_KEEP_S`);
* ``samples`` — gauge samples (the DLQ size) for rules that need a short history.

The evaluation of one tick (state changes + the messages they cause) is one
transaction; marking a message sent and recording its Slack ``ts`` is another.
A restart therefore neither re-sends nor forgets anything.
"""

from __future__ import annotations

import errno
import json
import math
import shutil
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from costline.alerts.errors import AlertsStateError, SilenceError
from costline.alerts.rules import canonical_label

__all__ = ["AlertStore", "ERASURES", "Silence", "to_epoch", "from_epoch", "default_state_path"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
  fingerprint TEXT PRIMARY KEY, rule TEXT NOT NULL, labels TEXT NOT NULL, group_key TEXT NOT NULL,
  state TEXT NOT NULL, severity TEXT, pending_since REAL, fired_at REAL, resolved_at REAL,
  last_observed_at REAL, updated_at REAL, observation TEXT
);
CREATE INDEX IF NOT EXISTS alerts_group ON alerts (group_key);
CREATE TABLE IF NOT EXISTS groups (
  group_key TEXT PRIMARY KEY, rule TEXT NOT NULL, labels TEXT NOT NULL, incident INTEGER NOT NULL DEFAULT 0,
  open INTEGER NOT NULL DEFAULT 0, opened_at REAL, closed_at REAL, last_notified_at REAL,
  members TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS silences (
  id INTEGER PRIMARY KEY AUTOINCREMENT, rule TEXT NOT NULL, matchers TEXT NOT NULL, starts_at REAL NOT NULL,
  ends_at REAL NOT NULL, reason TEXT NOT NULL, created_by TEXT, created_at REAL NOT NULL, removed_at REAL
);
CREATE TABLE IF NOT EXISTS outbox (
  id INTEGER PRIMARY KEY AUTOINCREMENT, group_key TEXT NOT NULL, incident INTEGER NOT NULL, kind TEXT NOT NULL,
  target TEXT NOT NULL, op TEXT NOT NULL, payload TEXT NOT NULL, created_at REAL NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL, last_attempt_at REAL, sent_at REAL,
  last_error TEXT, channel TEXT, ts TEXT
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (sent_at, id);
CREATE INDEX IF NOT EXISTS outbox_root ON outbox (group_key, incident, target, kind);
CREATE TABLE IF NOT EXISTS history (
  id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, fingerprint TEXT NOT NULL, rule TEXT NOT NULL,
  labels TEXT NOT NULL, from_state TEXT NOT NULL, to_state TEXT NOT NULL, value REAL, threshold REAL,
  summary TEXT, severity TEXT, muted TEXT
);
CREATE INDEX IF NOT EXISTS history_at ON history (at);
CREATE TABLE IF NOT EXISTS samples (name TEXT NOT NULL, at REAL NOT NULL, value REAL NOT NULL);
CREATE INDEX IF NOT EXISTS samples_name ON samples (name, at);
"""


def to_epoch(ts: datetime) -> float:
    """Seconds since the epoch; naive datetimes are taken as UTC."""
    return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).timestamp()


_MAX = datetime.max.replace(tzinfo=UTC)
_MIN = datetime.min.replace(tzinfo=UTC)


def from_epoch(ts: float | None) -> datetime | None:
    """The UTC datetime of ``ts`` seconds since the epoch. A value no datetime can hold (``inf``, ``nan``,
    1e999 — a state file written by an older costline that took a ``Retry-After: inf`` at its word) is
    clamped to the latest (``nan``, ``+inf``, too large) or earliest datetime instead of raising."""
    if ts is None:
        return None
    try:
        return datetime.fromtimestamp(ts, UTC)
    except (OverflowError, OSError, ValueError):
        return _MIN if not math.isnan(ts) and ts < 0 else _MAX


def default_state_path(lake_path: Path | str) -> Path:
    return Path(lake_path) / "_alerts" / "state.sqlite"


@dataclass(frozen=True)
class Silence:
    id: int
    rule: str  # a rule name or "*"
    matchers: Mapping[str, str]
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str | None = None

    def matches(self, rule: str, labels: Mapping[str, str], at: datetime) -> bool:
        """In effect at ``at``, for ``rule``, and every matcher equal to the alert's label. Labels are compared in
        their one spelling (:func:`costline.alerts.rules.canonical_label`): a matcher ``tenant="ac\\u200bme"``, as
        costline shows the label, matches the alert whose label an older costline stored with the raw U+200B
        between the quotes, and a silence stored with the raw character matches the alert labelled now."""
        if not (self.starts_at <= at < self.ends_at):
            return False
        if self.rule not in ("*", rule):
            return False
        return all(canonical_label(labels.get(k)) == canonical_label(v) for k, v in self.matchers.items())


#: Free bytes under which a failure to open the state file is taken for a full disk (SQLite says "disk I/O error"
#: or "database or disk is full" then, not "no space").
_NEARLY_FULL_BYTES = 1024 * 1024


def _open_remedy(path: Path, exc: BaseException) -> str:
    """What to do when the state file at ``path`` cannot be opened: free disk space when its filesystem is (nearly)
    full, else check the path and its permissions."""
    free: int | None = None
    for where in (path, *path.parents):  # the file, or the nearest folder of it that exists
        try:
            free = shutil.disk_usage(where).free
            break
        except OSError:
            continue
    full = (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) or (
        isinstance(exc, sqlite3.Error) and "full" in str(exc).lower())
    if full or (free is not None and free < _NEARLY_FULL_BYTES):
        left = f"{free:,} bytes free" if free is not None else "no space left"
        return f"the disk holding it is full ({left}): free disk space there and run again"
    return "check the path ([alerts] state_path) and its permissions"


#: The ``samples`` name under which the state file counts the forgets run on it (:mod:`costline.alerts.erasure`):
#: an export that read the history before one writes its files again (:func:`costline.alerts.view.export_history`),
#: an evaluation that read the lake before one is not applied (:meth:`costline.alerts.engine.AlertEngine.apply`).
ERASURES = "erasures"


class AlertStore:
    """The SQLite state file. Cheap to open; one per process (or per test "restart").

    ``read_only``: opened read-only (a dry run): the file must exist, nothing is created nor written."""

    def __init__(self, path: Path | str, *, read_only: bool = False) -> None:
        self.path = Path(path)
        if read_only:
            # no write-ahead log: no process has it open, and reading it as it is makes none (SQLite would make
            # the log's files, on a lake that may not even be writable)
            idle = not Path(f"{self.path}-wal").exists()
            try:
                self.con = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro{'&immutable=1' if idle else ''}",
                                           uri=True, timeout=30.0, isolation_level=None, check_same_thread=False)
                self.con.row_factory = sqlite3.Row
                self.con.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opening is lazy: read now
            except (OSError, sqlite3.Error) as exc:
                raise AlertsStateError(f"cannot read the alert state file {self.path}: {exc}: "
                                       "check the path ([alerts] state_path) and that it may be read") from exc
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.con = sqlite3.connect(self.path, isolation_level=None, timeout=30.0, check_same_thread=False)
            self.con.row_factory = sqlite3.Row
            self.con.execute("PRAGMA journal_mode=WAL")
            self.con.execute("PRAGMA synchronous=FULL")
            # a deleted row's bytes are overwritten, not left in a free page (SQLite builds without
            # SQLITE_SECURE_DELETE keep them): an alert's labels name a tenant `costline lake forget` may erase
            self.con.execute("PRAGMA secure_delete = ON")
            self.con.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise AlertsStateError(f"cannot open the alert state file {self.path}: {exc}: "
                                   + _open_remedy(self.path, exc)) from exc

    def close(self) -> None:
        self.con.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` (rolled back on any exception)."""
        try:
            self.con.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise AlertsStateError(f"cannot lock the alert state file {self.path}: {exc}") from exc
        try:
            yield self.con
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        else:
            self.con.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return self.con.execute(sql, params).fetchall()

    def erasures(self) -> int:
        """How many forgets were run on this file (:data:`ERASURES`); 0: none."""
        rows = self.query("SELECT max(value) FROM samples WHERE name = ?", (ERASURES,))
        return int(rows[0][0] or 0) if rows else 0

    # -- silences -----------------------------------------------------------------------------
    def add_silence(self, rule: str, matchers: Mapping[str, str], *, starts_at: datetime, ends_at: datetime,
                    reason: str, created_by: str | None = None) -> Silence:
        if ends_at <= starts_at:
            raise SilenceError("a silence must end after it starts: give a positive --for")
        if not reason.strip():
            raise SilenceError("a silence needs a reason (--reason 'deploying the new cache')")
        with self.transaction() as con:
            cur = con.execute(
                "INSERT INTO silences (rule, matchers, starts_at, ends_at, reason, created_by, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (rule, json.dumps(dict(matchers), sort_keys=True), to_epoch(starts_at), to_epoch(ends_at),
                 reason, created_by, to_epoch(starts_at)))
            sid = int(cur.lastrowid or 0)
        return Silence(sid, rule, dict(matchers), starts_at, ends_at, reason, created_by)

    def remove_silence(self, silence_id: int, *, at: datetime) -> None:
        with self.transaction() as con:
            cur = con.execute("UPDATE silences SET removed_at = ?, ends_at = min(ends_at, ?) "
                              "WHERE id = ? AND removed_at IS NULL", (to_epoch(at), to_epoch(at), silence_id))
            if cur.rowcount == 0:
                raise SilenceError(f"no active silence with id {silence_id}: see `costline alerts list --silences`")

    def silences(self, *, at: datetime | None = None) -> list[Silence]:
        """Silences not removed (and, with ``at``, in effect or still to come at that time)."""
        rows = self.query("SELECT * FROM silences WHERE removed_at IS NULL ORDER BY id")
        out = [Silence(r["id"], r["rule"], json.loads(r["matchers"]), from_epoch(r["starts_at"]),  # type: ignore[arg-type]
                       from_epoch(r["ends_at"]), r["reason"], r["created_by"]) for r in rows]  # type: ignore[arg-type]
        return [s for s in out if at is None or s.ends_at > at]

    # -- samples ------------------------------------------------------------------------------
    def add_sample(self, name: str, at: datetime, value: float, *, keep_s: float = 86400.0) -> None:
        with self.transaction() as con:
            con.execute("INSERT INTO samples (name, at, value) VALUES (?, ?, ?)", (name, to_epoch(at), value))
            con.execute("DELETE FROM samples WHERE name = ? AND at < ?", (name, to_epoch(at) - keep_s))

    def samples(self, name: str, *, since: datetime) -> list[tuple[datetime, int]]:
        rows = self.query("SELECT at, value FROM samples WHERE name = ? ORDER BY at", (name,))
        cut = to_epoch(since)
        # keep the newest sample before `since` as the window's base
        older = [r for r in rows if r["at"] < cut][-1:]
        return [(from_epoch(r["at"]), int(r["value"])) for r in older + [r for r in rows if r["at"] >= cut]]  # type: ignore[misc]

    # -- reading ------------------------------------------------------------------------------
    def alerts(self, *, states: Sequence[str] | None = None) -> list[sqlite3.Row]:
        if states:
            marks = ",".join("?" * len(states))
            return self.query(f"SELECT * FROM alerts WHERE state IN ({marks}) ORDER BY rule, labels", tuple(states))
        return self.query("SELECT * FROM alerts ORDER BY rule, labels")

    def history(self, *, limit: int = 100, rule: str | None = None) -> list[sqlite3.Row]:
        if rule:
            return self.query("SELECT * FROM history WHERE rule = ? ORDER BY id DESC LIMIT ?", (rule, limit))
        return self.query("SELECT * FROM history ORDER BY id DESC LIMIT ?", (limit,))

    def outbox(self, *, unsent_only: bool = False) -> list[sqlite3.Row]:
        where = "WHERE sent_at IS NULL " if unsent_only else ""
        return self.query(f"SELECT * FROM outbox {where}ORDER BY id")
