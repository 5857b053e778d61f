"""A tenant erased from the alert state file: the part of ``costline lake forget`` (:func:`costline.lake._erasure.forget`)
that :func:`costline.alerts.view.export_history` would otherwise export again on the next ``costline alerts run``.

What names a tenant in the state file (:mod:`costline.alerts.store`), and what a forget does with it:

* ``history`` rows whose labels name it (their summary too): deleted; with ``before``, those before that day only,
  as the exported ``alerts_history`` rows go;
* without ``before`` (the whole tenant), its current state as well:

  - its alerts, whatever their state, are deleted. An open incident left with none of its firing alerts is closed,
    as the engine closes one whose alerts recovered: where its firing message went out, a closing message naming
    no tenant is queued for that target (Slack: a reply in its thread, and the original message edited into it),
    so no thread is left red and the top-level message no longer names the tenant; its unsent messages are dropped;
  - its silences (a matcher on its ``tenant`` label) are deleted, not only ended;
  - an unsent message about its alerts only is dropped; one about other alerts too is kept, so that their page
    is not lost, with the tenant's lines (and the query to dig in, which may be its) taken out. One that was
    attempted already may be in Slack (the answer lost, or a send in flight): it is kept, its text replaced by one
    naming no tenant, so that the outbox's duplicate check marks it sent and a closing message threads under it.
    A sent message's text is erased (its row is kept: the Slack thread of its incident is found through it);
  - a notification group keyed on its ``tenant`` label keeps its incident numbers, without that label.

  Where the current state also holds another tenant's alerts (a group of every tenant's), those are left as they
  are. With ``before``, the current state is left as it is (the tenant's recent data, which it reflects, is too):
  the engine's own retention ages it out.

Matching goes by the tenant's label (:func:`costline.alerts.rules.tenant_label`: the tenant ``(none)`` is
``"(none)"``, never the tenant-less series), in any spelling costline stored it (:func:`~costline.alerts.rules.
canonical_label`); a message's line is a member's by its whole label text (the longest of the labels the file
holds that it starts with: forgetting ``acme`` leaves the line of ``acme: eu``). It is one ``BEGIN IMMEDIATE``
transaction, as an evaluation of ``costline alerts run`` is: one waits for the other, and the engine never acts on
alerts the forget deleted; every forget counts itself in the file (:data:`~costline.alerts.store.ERASURES`), so an
evaluation that read the lake before it is not applied. The deleted rows are overwritten (``secure_delete``), the
file rebuilt (``VACUUM``: the free pages of earlier deletes, on a SQLite built without ``SECURE_DELETE``) and the
write-ahead log checkpointed and truncated; a reader holding the log open past the wait leaves the old pages in it:
the result says so (:attr:`StateErasure.residue`) and the forget fails. A dry run opens the file read-only.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from costline.alerts.errors import AlertsStateError
from costline.alerts.rules import NO_TENANT, canonical_label, tenant_label
from costline.alerts.store import ERASURES, AlertStore, from_epoch, to_epoch
from costline.timeutil import utc_now

if TYPE_CHECKING:  # pragma: no cover
    from costline.config import Config
    from costline.lake._erasure import ForgetReport

__all__ = ["CLOSED_NOTE", "STATE_TABLE", "WAL_WAIT_S", "StateErasure", "export_labels", "forget_in_config",
           "forget_in_states", "forget_result_tables", "forget_tenants", "state_failure", "with_states"]

log = logging.getLogger(__name__)

#: The table name of the state file's history rows in :attr:`ForgetReport.days
#: <costline.lake._erasure.ForgetReport.days>` (a dry run lists them per day).
STATE_TABLE: Final = "alert_state"

#: What the closing message of an incident a forget closed says, in place of its alerts.
CLOSED_NOTE: Final = ("Closed by `costline lake forget`: this incident's alerts were of a tenant whose data was "
                      "erased.")

#: A sent message's payload once its text is erased.
_ERASED_PAYLOAD: Final = "(erased by costline lake forget)"

#: What an attempted message about the tenant only (it may be in Slack) says once kept, in place of its alerts.
_KEPT_NOTE: Final = "This message's alerts were of a tenant whose data was erased by `costline lake forget`."

#: How long (s) a forget waits for the readers of the state file's write-ahead log to truncate it.
WAL_WAIT_S: Final = 30.0


@dataclass(frozen=True)
class StateErasure:
    """What a forget removed from one alert state file (a dry run: would remove)."""

    path: Path
    #: The history rows, per UTC day (``YYYY-MM-DD``) of their time.
    history: tuple[tuple[str, int], ...] = ()
    #: Alerts (any state) deleted, of them firing.
    alerts: int = 0
    firing: int = 0
    #: Open incidents closed (none of their firing alerts left), and closing messages queued (one per target).
    closed: int = 0
    queued: int = 0
    silences: int = 0
    #: Unsent messages dropped; sent messages whose text was erased.
    dropped: int = 0
    erased: int = 0
    #: Unsent messages about other alerts too: kept, the tenants' lines taken out.
    trimmed: int = 0
    #: Unsent messages about the tenants only that were attempted (they may be in Slack): kept, naming no tenant.
    kept: int = 0
    #: Why the file could not be read or changed (nothing of it was).
    error: str | None = None
    #: Where the erased rows' old bytes may still be, and why (they were erased all the same).
    residue: str | None = None

    @property
    def history_rows(self) -> int:
        return sum(n for _, n in self.history)

    def lines(self, dry_run: bool) -> list[str]:
        """The report's lines for this file."""
        if self.error is not None:
            return [f"alert state {self.path}: {'cannot be read' if dry_run else 'not erased'}: {self.error}"]
        verb = "would remove" if dry_run else "removed"
        parts = [f"{self.history_rows:,} history rows of {len(self.history)} day(s)", f"{self.alerts} alert(s)",
                 f"{self.silences} silence(s)", f"{self.dropped} unsent message(s)"]
        more = [text for n, text in (
            (self.firing, f"{self.firing} of the alerts firing"),
            (self.closed, f"{self.closed} open incident(s) {'would be ' if dry_run else ''}closed"),
            (self.queued, f"{self.queued} closing message(s) naming no tenant {'would be ' if dry_run else ''}queued"),
            (self.erased, f"the text of {self.erased} sent message(s) {'would be ' if dry_run else ''}erased"),
            (self.trimmed, f"{self.trimmed} unsent message(s) about other alerts too kept, these tenants' lines "
                           f"{'would be ' if dry_run else ''}taken out"),
            (self.kept, f"{self.kept} unsent message(s) about these tenants only that may have gone out (attempted) "
                        f"kept, {'would name' if dry_run else 'naming'} no tenant"),
        ) if n]
        out = [f"alert state {self.path}: {verb} {', '.join(parts)}" + (f" ({'; '.join(more)})" if more else "")]
        return out + ([f"alert state {self.path}: not covered: {self.residue}"] if self.residue else [])


def export_labels(tenants: Iterable[str]) -> tuple[str, ...]:
    """The ``tenant`` values the alerts' exported files (and the state file's labels) may hold for ``tenants``:
    each one's label (:func:`~costline.alerts.rules.tenant_label`), and for one that is quoted the spellings older
    costlines stored: the quoted name with its invisible characters raw, and the raw name — unless that is a label
    of another series (``(none)``, the tenant-less one's; a name starting with ``"``, a quoted label's)."""
    out: dict[str, None] = {}
    for name in tenants:
        label = tenant_label(name)
        out[label] = None
        if label.startswith('"'):
            out[json.dumps(name, ensure_ascii=False)] = None
            if name != NO_TENANT and not name.startswith('"'):
                out[name] = None
    return tuple(out)


def _theirs(labels_json: str | None, spellings: frozenset[str], key: str = "tenant") -> bool:
    """Whether a JSON object of labels (or silence matchers) names one of the tenants (``spellings``: their
    :func:`export_labels`)."""
    try:
        labels = json.loads(labels_json or "{}")
    except ValueError:
        return False
    value = labels.get(key) if isinstance(labels, dict) else None
    return isinstance(value, str) and (value in spellings or canonical_label(value) in spellings)


def _member_lines(payload: str) -> tuple[list[str], bool] | None:
    """A message's member lines (``• <labels>: <summary>``) and whether it lists them all (no ``… and N
    more``); None when the payload is not a rendered message (:func:`costline.alerts.message.render`)."""
    try:
        text = json.loads(payload).get("text")
    except (ValueError, AttributeError):
        return None
    if not isinstance(text, str):
        return None
    lines = text.splitlines()
    return [ln for ln in lines if ln.startswith("• ")], not any(ln.startswith("… and ") for ln in lines)


def _member_of(line: str, known: Sequence[str]) -> str | None:
    """Whose member line (``• <labels>: <summary>``) ``line`` is: the longest label text of ``known`` (sorted longest
    first) it starts with (``acme: eu``'s line also starts with ``acme``'s); None: no known member's."""
    return next((t for t in known if line.startswith(f"• {t}: ")), None)


def _head_of(text: str, known: Sequence[str]) -> str | None:
    """Whose member section (headed ``*<labels>*``, then `` — <state>``, then its summary on the next line) a block
    of text is: the label text of ``known`` its head reads; None: no known member's."""
    head = text.split("\n", 1)[0]
    return next((t for t in known if head == f"*{t}*" or head.startswith(f"*{t}* — ")), None)


def _trimmed(payload: str, theirs: set[str], known: Sequence[str]) -> str:
    """A rendered message without the members whose labels read one of ``theirs`` (of ``known``, longest first):
    their line of its text, their blocks (the section headed ``*<labels>*`` and the section of figures after it) and
    the query to dig in (it may be one of theirs)."""
    msg = json.loads(payload)
    msg["text"] = "\n".join(ln for ln in msg["text"].splitlines() if _member_of(ln, known) not in theirs)
    blocks: list[Any] = []
    dropping = False
    for b in msg.get("blocks") or []:
        text = (b.get("text") or {}).get("text") if isinstance(b, dict) and b.get("type") == "section" else None
        if isinstance(text, str) and (_head_of(text, known) in theirs or text.startswith("*Dig in*")):
            dropping = True
            continue
        if dropping and isinstance(b, dict) and b.get("type") == "section" and "fields" in b and text is None:
            continue  # the figures of the member just dropped
        dropping = False
        blocks.append(b)
    msg["blocks"] = blocks
    return json.dumps(msg)


@dataclass
class _Plan:
    """What one forget changes in a state file, read inside its transaction."""

    history: list[tuple[int, str]]  # (id, day)
    alerts: list[str]  # fingerprints
    firing: int
    silences: list[int]
    groups: dict[str, tuple[str, int, str, int]]  # group_key -> (labels, open, members, incident): changed ones
    closed: set[tuple[str, int]]
    dropped: list[int]
    erased: list[tuple[int, str]]  # (id, kind)
    trimmed: list[tuple[int, str]]  # (id, payload)
    closing: list[tuple[str, int, str, str, dict[str, Any]]]  # (group_key, incident, target, op, payload)
    kept: list[tuple[int, str]] = field(default_factory=list)  # (id, payload): attempted, naming no tenant now


def _plan(con: sqlite3.Connection, spellings: frozenset[str], before: date | None, at: datetime) -> _Plan:
    """What to change for the tenants (``spellings``: their :func:`export_labels`): with ``before``, their history
    rows before it only; else every row of theirs (see the module)."""
    cut = None if before is None else to_epoch(datetime.combine(before, time.min, tzinfo=UTC))
    seen: dict[str, dict[str, Any]] = {}  # the labels of their alerts, ever: their messages' member lines
    every: set[str] = set()  # the labels of every alert the file knows: whose a member line is
    history = []
    for r in con.execute("SELECT id, at, labels FROM history ORDER BY id"):
        every.add(r["labels"])
        if _theirs(r["labels"], spellings):
            seen.setdefault(r["labels"], json.loads(r["labels"]))
            if cut is None or r["at"] < cut:
                when = from_epoch(r["at"])
                history.append((int(r["id"]), when.date().isoformat() if when is not None else "no time"))
    plan = _Plan(history, [], 0, [], {}, set(), [], [], [], [])
    if before is not None:
        return plan
    severity: dict[str, str] = {}  # per group, of their alerts: critical if one is
    for r in con.execute("SELECT fingerprint, labels, state, group_key, severity FROM alerts"):
        every.add(r["labels"])
        if _theirs(r["labels"], spellings):
            seen.setdefault(r["labels"], json.loads(r["labels"]))
            plan.alerts.append(r["fingerprint"])
            plan.firing += r["state"] == "firing"
            if severity.get(r["group_key"]) != "critical":
                severity[r["group_key"]] = r["severity"] or "warning"
    plan.silences = [int(r["id"]) for r in con.execute("SELECT id, matchers FROM silences")
                     if _theirs(r["matchers"], spellings)]
    groups = {r["group_key"]: dict(r) for r in con.execute("SELECT * FROM groups")}
    theirs = {gk for gk, g in groups.items() if _theirs(g["labels"], spellings)}
    _plan_groups(plan, groups, theirs)
    rows = [dict(r) for r in con.execute("SELECT id, group_key, incident, kind, target, op, payload, sent_at, "
                                         "attempts FROM outbox ORDER BY id")]
    dropped_at = _plan_messages(plan, rows, theirs, _texts(seen.values()), _texts(_labels(every)),
                                lambda r: _neutral(r, plan, groups, severity, at))
    _plan_closing(plan, groups, rows, plan.closed | dropped_at, severity, at)
    return plan


def _labels(labels_json: Iterable[str]) -> list[dict[str, Any]]:
    """The label objects of ``labels_json`` (those that parse as one)."""
    out = []
    for text in labels_json:
        try:
            labels = json.loads(text or "{}")
        except ValueError:
            continue
        if isinstance(labels, dict):
            out.append(labels)
    return out


def _texts(labels: Iterable[Mapping[str, Any]]) -> list[str]:
    """How messages show each of ``labels`` (:func:`costline.alerts.message._labels_text`), longest first."""
    from costline.alerts.message import _labels_text

    return sorted({_labels_text(one) for one in labels}, key=lambda t: (-len(t), t))


def _erased(kind: str) -> str:
    """A message's payload once its text is erased (:data:`_ERASED_PAYLOAD`)."""
    return json.dumps({"kind": kind, "title": _ERASED_PAYLOAD, "text": _ERASED_PAYLOAD, "blocks": []})


def _neutral(row: Mapping[str, Any], plan: _Plan, groups: Mapping[str, dict[str, Any]], severity: Mapping[str, str],
             at: datetime) -> str:
    """The payload an attempted message about the tenants only is kept with: its kind and group (without their
    ``tenant`` label), :data:`_KEPT_NOTE` in place of its alerts."""
    from costline.alerts.message import KINDS, render

    try:
        kind = json.loads(row["payload"]).get("kind")  # an edit's: the original message's kind
    except (ValueError, AttributeError):
        kind = row["kind"]
    g = groups.get(row["group_key"])
    if g is None or kind not in KINDS:
        return _erased(row["kind"])
    labels = plan.groups.get(row["group_key"], (g["labels"],))[0]
    return json.dumps(render(kind, rule=g["rule"], group_labels=json.loads(labels or "{}"),
                             severity=severity.get(row["group_key"], "warning"), incident=int(row["incident"]),
                             members=[], at=at, note=_KEPT_NOTE))


def _plan_groups(plan: _Plan, groups: Mapping[str, dict[str, Any]], theirs: set[str]) -> None:
    """Their alerts out of the groups' members, an open incident left with none closed; the ``tenant`` label out of
    the groups keyed on theirs (``theirs``)."""
    gone = set(plan.alerts)
    for gk, g in groups.items():
        labels = json.loads(g["labels"] or "{}")
        if gk in theirs:
            labels.pop("tenant", None)
        members = json.loads(g["members"] or "[]")
        left = [m for m in members if m not in gone]
        is_open = int(g["open"])
        if is_open and members and not left:
            is_open = 0
            plan.closed.add((gk, int(g["incident"])))
        if gk in theirs or left != members:
            plan.groups[gk] = (json.dumps(labels, sort_keys=True), is_open, json.dumps(left), int(g["incident"]))


def _plan_messages(plan: _Plan, rows: Sequence[Mapping[str, Any]], theirs: set[str], texts: Sequence[str],
                   known: Sequence[str], neutral: Callable[[Mapping[str, Any]], str]) -> set[tuple[str, int]]:
    """The messages (outbox ``rows``) naming their alerts (whose labels read ``texts``; ``known``: every alert's,
    longest first), or of a group keyed on theirs: a sent one's text erased; an unsent one about theirs only
    dropped, or when it was attempted (it may be in Slack) kept with the payload ``neutral(row)`` names; else
    trimmed. Returns the incidents ``(group_key, incident)`` an unsent message was dropped of."""
    mine = set(texts)
    dropped_at: set[tuple[str, int]] = set()
    for r in rows:
        found = _member_lines(r["payload"])
        if found is None:
            continue
        lines, whole = found
        named = [ln for ln in lines if _member_of(ln, known) in mine]
        if not named and not (r["group_key"] in theirs and lines):
            continue
        if r["sent_at"] is not None:
            plan.erased.append((int(r["id"]), r["kind"]))
        elif not (r["group_key"] in theirs or (whole and len(named) == len(lines))):
            plan.trimmed.append((int(r["id"]), _trimmed(r["payload"], mine, known)))
        elif int(r["attempts"] or 0) > 0:
            plan.kept.append((int(r["id"]), neutral(r)))
        else:
            plan.dropped.append(int(r["id"]))
            dropped_at.add((r["group_key"], int(r["incident"])))
    return dropped_at


def _plan_closing(plan: _Plan, groups: Mapping[str, dict[str, Any]], rows: Sequence[Mapping[str, Any]],
                  incidents: set[tuple[str, int]], severity: Mapping[str, str], at: datetime) -> None:
    """Of ``incidents`` (closed now, or with unsent messages dropped), each one closed whose firing message went
    out to a target, or may have (attempted), and no resolve is left for it there: a closing message naming no
    tenant, in its thread."""
    from costline.alerts.engine import ops_for
    from costline.alerts.message import render

    dropped = set(plan.dropped)
    for gk, incident in sorted(incidents):
        g = groups.get(gk)
        if g is None:
            continue
        labels, is_open, _, current = plan.groups.get(gk, (g["labels"], int(g["open"]), "", int(g["incident"])))
        if is_open and current == incident:
            continue
        mine = [r for r in rows if r["group_key"] == gk and int(r["incident"]) == incident and r["id"] not in dropped]
        for target in sorted({r["target"] for r in mine if r["kind"] == "firing" and r["op"] == "post"
                              and (r["sent_at"] is not None or int(r["attempts"] or 0) > 0)}):
            if any(r["target"] == target and r["kind"] == "resolved" for r in mine):
                continue
            payload = render("resolved", rule=g["rule"], group_labels=json.loads(labels or "{}"),
                             severity=severity.get(gk, "warning"), incident=incident, members=[], at=at,
                             note=CLOSED_NOTE)
            plan.closing += [(gk, incident, target, op, payload) for op in ops_for(target, "resolved")]


def _apply(con: sqlite3.Connection, plan: _Plan, at: datetime) -> None:
    t = to_epoch(at)
    con.executemany("DELETE FROM history WHERE id = ?", [(i,) for i, _ in plan.history])
    con.executemany("DELETE FROM alerts WHERE fingerprint = ?", [(fp,) for fp in plan.alerts])
    con.executemany("DELETE FROM silences WHERE id = ?", [(i,) for i in plan.silences])
    for gk, (labels, is_open, members, _) in plan.groups.items():
        con.execute("UPDATE groups SET labels = ?, members = ?, closed_at = CASE WHEN open = 1 AND ? = 0 THEN ? "
                    "ELSE closed_at END, open = ? WHERE group_key = ?", (labels, members, is_open, t, is_open, gk))
    con.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in plan.dropped])
    con.executemany("UPDATE outbox SET payload = ? WHERE id = ?", [(_erased(kind), i) for i, kind in plan.erased])
    con.executemany("UPDATE outbox SET payload = ? WHERE id = ?",
                    [(payload, i) for i, payload in (*plan.trimmed, *plan.kept)])
    con.executemany("INSERT INTO outbox (group_key, incident, kind, target, op, payload, created_at, next_attempt_at) "
                    "VALUES (?, ?, 'resolved', ?, ?, ?, ?, ?)",
                    [(gk, inc, target, op, json.dumps(payload), t, t) for gk, inc, target, op, payload in plan.closing])


def _count(con: sqlite3.Connection, at: datetime) -> None:
    """Count one more forget in the file (:data:`~costline.alerts.store.ERASURES`), whatever it erased: an export or
    an evaluation that read before it does not put its tenants back."""
    t = to_epoch(at)
    done = con.execute("SELECT max(value) FROM samples WHERE name = ?", (ERASURES,)).fetchone()[0]
    con.execute("DELETE FROM samples WHERE name = ?", (ERASURES,))
    con.execute("INSERT INTO samples (name, at, value) VALUES (?, ?, ?)", (ERASURES, t, int(done or 0) + 1))


def _result(path: Path, plan: _Plan) -> StateErasure:
    days: dict[str, int] = {}
    for _, day in plan.history:
        days[day] = days.get(day, 0) + 1
    return StateErasure(path, tuple(sorted(days.items())), len(plan.alerts), plan.firing, len(plan.closed),
                        len({(gk, inc, target) for gk, inc, target, _, _ in plan.closing}), len(plan.silences),
                        len(plan.dropped), len(plan.erased), len(plan.trimmed), len(plan.kept))


def forget_tenants(path: Path | str, tenants: Iterable[str], *, before: date | None = None, dry_run: bool = False,
                   now: Callable[[], datetime] = utc_now, wal_wait_s: float = WAL_WAIT_S) -> StateErasure | None:
    """Erase ``tenants`` from the alert state file at ``path`` (see the module); None when there is no file there.
    A file that cannot be opened, locked (an evaluation holding it past the store's 30 s) or changed is left as it
    was: the result says why (:attr:`StateErasure.error`). Once erased, the file is rebuilt and its write-ahead log
    truncated, waiting ``wal_wait_s`` for its readers: where they keep it, :attr:`StateErasure.residue` says so."""
    path = Path(path)
    if not path.is_file():
        return None
    spellings = frozenset(export_labels(tenants))
    at = now()
    try:
        store = AlertStore(path, read_only=dry_run)
    except AlertsStateError as exc:
        return StateErasure(path, error=str(exc))
    try:
        if dry_run:
            store.con.execute("BEGIN")  # one snapshot of every table
            try:
                return _result(path, _plan(store.con, spellings, before, at))
            finally:
                store.con.execute("ROLLBACK")
        with store.transaction() as con:  # the store's secure_delete overwrites the deleted rows' bytes
            plan = _plan(con, spellings, before, at)
            _apply(con, plan, at)
            _count(con, at)
    except (AlertsStateError, sqlite3.Error) as exc:
        store.close()
        return StateErasure(path, error=str(exc) if dry_run else (
            f"{exc}: nothing of it was changed; check its permissions and the disk (a `costline alerts run` "
            "evaluating holds it for a moment only) and run the forget again"))
    try:
        residue = _compact(store, wal_wait_s)
    finally:
        store.close()
    if residue is not None:
        log.warning("alert state %s: the tenants' rows are erased, but %s", path, residue)
    return replace(_result(path, plan), residue=residue)


def _compact(store: AlertStore, wal_wait_s: float) -> str | None:
    """The erased rows' old bytes out of the file (rebuilt: the free pages earlier deletes left, on a SQLite built
    without ``SECURE_DELETE``) and out of its write-ahead log (checkpointed and truncated, waiting ``wal_wait_s`` for
    its readers). None: done; else where the bytes may still be, and what to do."""
    try:
        store.con.execute("VACUUM")
    except sqlite3.Error as exc:
        return (f"it could not be rebuilt (VACUUM: {exc}): its free pages may still hold the erased rows' old bytes; "
                "check the free disk space (it needs the file's size again) and run the forget again")
    try:
        store.con.execute(f"PRAGMA busy_timeout = {max(int(wal_wait_s * 1000), 0)}")
        busy = store.con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        why = f"a process kept a read of the file open for over {wal_wait_s:g} s"
    except sqlite3.Error as exc:
        busy, why = 1, str(exc)
    if not busy:
        return None
    return (f"its write-ahead log {store.path}-wal may still hold the erased rows' old bytes ({why}: a `costline "
            "alerts run` or another command reading it): run the forget again once that process is done with it, or "
            "stopped")


def forget_in_states(paths: Sequence[Path | str], tenants: Iterable[str], *, before: date | None = None,
                     dry_run: bool = False) -> list[StateErasure]:
    """:func:`forget_tenants` of each state file of ``paths`` that exists (each once)."""
    names = tuple(tenants)
    out, done = [], set()
    for p in paths:
        key = Path(p).resolve()
        if key in done:
            continue
        done.add(key)
        found = forget_tenants(p, names, before=before, dry_run=dry_run)
        if found is not None:
            out.append(found)
    return out


def with_states(report: ForgetReport, states: Sequence[StateErasure]) -> ForgetReport:
    """``report`` with what the forget removed from the alert state files: their history rows per day in
    :attr:`~costline.lake._erasure.ForgetReport.days` (:data:`STATE_TABLE`), a line per file first in its notes."""
    from costline.lake._erasure import DayRows

    days = tuple(DayRows(STATE_TABLE, day, n) for s in states for day, n in s.history)
    lines = tuple(line for s in states for line in s.lines(report.dry_run))
    return replace(report, days=report.days + days, notes=lines + report.notes)


def state_failure(report: ForgetReport, states: Sequence[StateErasure]) -> str | None:
    """The error a forget (not a dry run) ends with when it could not erase the tenants from a state file, or their
    rows' old bytes may be left in one (:attr:`StateErasure.residue`); None: it could, they are not."""
    if report.dry_run:
        return None
    who = ", ".join(repr(t) for t in report.tenants)
    if failed := [s for s in states if s.error is not None]:
        return (f"forget removed {report.rows:,} rows, but could not erase {who} from the alert state file "
                f"{', '.join(str(s.path) for s in failed)} ({failed[0].error}); the next `costline alerts run` "
                "exports their alert history again until it does")
    if left := [s for s in states if s.residue is not None]:
        return (f"forget removed {report.rows:,} rows and erased {who} from the alert state, but "
                + "; ".join(f"the alert state file {s.path}: {s.residue}" for s in left))
    return None


def forget_in_config(config: Config, report: ForgetReport) -> ForgetReport:
    """For ``[lake] mode = "table"``, whose :meth:`~costline.tablelake.TableLake.forget` rewrites the three tables
    only: the tenants of ``report`` erased from the alert state files too (``[alerts] state_path``, and the default
    one under ``[lake] path`` when there is one), then their rows removed from the result tables ``alerts`` and
    ``alerts_history`` (:func:`forget_result_tables`: whether a state file is there or not, one moved or lost leaves
    them there). Returns ``report`` with what was done; raises :class:`~costline.lake._erasure.ErasureIncomplete`
    when a state file or a result table could not be changed."""
    from costline.alerts.service import state_path
    from costline.alerts.store import default_state_path
    from costline.errors import LakeError
    from costline.lake._erasure import ErasureIncomplete

    states = forget_in_states([state_path(config), default_state_path(config.lake.path)], report.tenants,
                              before=report.before, dry_run=report.dry_run)
    report = with_states(report, states)
    failures = [state_failure(report, states)]
    try:  # after the state files: an export that read one before the forget writes again (export_history)
        report = forget_result_tables(config, report)
    except (LakeError, OSError) as exc:
        failures.append(f"forget removed {report.rows:,} rows, but could not remove these tenants' rows from the "
                        f"result tables alerts and alerts_history ({exc}): run the forget again once that works")
    if failure := "; ".join(f for f in failures if f):
        raise ErasureIncomplete(failure, report)
    return report


def forget_result_tables(config: Config, report: ForgetReport) -> ForgetReport:
    """The rows of the tenants of ``report`` (their :func:`export_labels`; with its ``before``, those of the days
    before it) removed from the alerts' Iceberg result tables (``[lake] mode = "table"``: what
    :func:`costline.alerts.view.export_history` writes there, :data:`~costline.alerts.view.RESULT_NAMES`), as
    ``lake forget`` removes them from the local exported files; ``report`` with them counted (a dry run: counted
    only)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from costline.alerts.view import RESULT_NAMES
    from costline.lake._erasure import ALERT_FILES, DayRows, totals
    from costline.tablelake import ResultTables

    sink = ResultTables(config.lake)
    wanted = pa.array(export_labels(report.tenants), pa.string())
    days: list[DayRows] = []
    for table, (_folder, time_col) in ALERT_FILES.items():
        rows = sink.rows(table, RESULT_NAMES[table])
        if rows is None or not rows.num_rows:
            continue
        hit = pc.fill_null(pc.is_in(rows.column("tenant"), value_set=wanted), False)
        when = rows.column(time_col)
        if report.before is not None:
            cut = pa.scalar(datetime.combine(report.before, time.min), when.type)
            hit = pc.and_(hit, pc.fill_null(pc.less(when, cut), False))
        if not pc.any(hit).as_py():
            continue
        per_day = pc.value_counts(pc.fill_null(pc.strftime(pc.filter(when, hit), format="%Y-%m-%d"), "no time"))
        days += [DayRows(table, c["values"], c["counts"])
                 for c in sorted(per_day.to_pylist(), key=lambda c: c["values"])]
        if not report.dry_run:
            sink.write(table, RESULT_NAMES[table], rows.filter(pc.invert(hit)))
    return replace(report, days=report.days + tuple(days), tables=report.tables + totals(ALERT_FILES, days, {}))
