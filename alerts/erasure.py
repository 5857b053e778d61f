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
    is not lost, with the tenant's lines (and the query to dig in, which may be its) taken out. A sent message's
    text is erased (its row is kept: the Slack thread of its incident is found through it);
  - a notification group keyed on its ``tenant`` label keeps its incident numbers, without that label.

  Where the current state also holds another tenant's alerts (a group of every tenant's), those are left as they
  are. With ``before``, the current state is left as it is (the tenant's recent data, which it reflects, is too):
  the engine's own retention ages it out.

Matching goes by the tenant's label (:func:`costline.alerts.rules.tenant_label`: the tenant ``(none)`` is
``"(none)"``, never the tenant-less series), in any spelling costline stored it (:func:`~costline.alerts.rules.
canonical_label`). It is one ``BEGIN IMMEDIATE`` transaction, as an evaluation of ``costline alerts run`` is: one
waits for the other, and the engine never acts on alerts the forget deleted. The deleted rows are overwritten
(``secure_delete``) and the write-ahead log checkpointed. A dry run opens the file read-only.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
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

__all__ = ["CLOSED_NOTE", "STATE_TABLE", "StateErasure", "export_labels", "forget_in_config", "forget_in_states",
           "forget_tenants", "state_failure", "with_states"]

log = logging.getLogger(__name__)

#: The table name of the state file's history rows in :attr:`ForgetReport.days
#: <costline.lake._erasure.ForgetReport.days>` (a dry run lists them per day).
STATE_TABLE: Final = "alert_state"

#: What the closing message of an incident a forget closed says, in place of its alerts.
CLOSED_NOTE: Final = ("Closed by `costline lake forget`: this incident's alerts were of a tenant whose data was "
                      "erased.")

#: A sent message's payload once its text is erased.
_ERASED_PAYLOAD: Final = "(erased by costline lake forget)"


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
    #: Why the file could not be read or changed (nothing of it was).
    error: str | None = None

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
        ) if n]
        return [f"alert state {self.path}: {verb} {', '.join(parts)}" + (f" ({'; '.join(more)})" if more else "")]


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


def _trimmed(payload: str, labels_texts: Sequence[str]) -> str:
    """A rendered message without the members whose labels read ``labels_texts``: their line of its text, their
    blocks (the section headed ``*<labels>*`` and the section of figures after it) and the query to dig in (it may
    be one of theirs)."""
    msg = json.loads(payload)
    lines = tuple(f"• {t}: " for t in labels_texts)
    heads = tuple(f"*{t}*" for t in labels_texts)
    msg["text"] = "\n".join(ln for ln in msg["text"].splitlines() if not ln.startswith(lines))
    blocks: list[Any] = []
    dropping = False
    for b in msg.get("blocks") or []:
        text = (b.get("text") or {}).get("text") if isinstance(b, dict) and b.get("type") == "section" else None
        if isinstance(text, str) and (text.startswith(heads) or text.startswith("*Dig in*")):
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

    @property
    def empty(self) -> bool:
        return not (self.history or self.alerts or self.silences or self.groups or self.dropped or self.erased
                    or self.trimmed or self.closing)


def _plan(con: sqlite3.Connection, spellings: frozenset[str], before: date | None, at: datetime) -> _Plan:
    """What to change for the tenants (``spellings``: their :func:`export_labels`): with ``before``, their history
    rows before it only; else every row of theirs (see the module)."""
    cut = None if before is None else to_epoch(datetime.combine(before, time.min, tzinfo=UTC))
    seen: dict[str, dict[str, Any]] = {}  # the labels of their alerts, ever: their messages' member lines
    history = []
    for r in con.execute("SELECT id, at, labels FROM history ORDER BY id"):
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
    rows = [dict(r) for r in con.execute("SELECT id, group_key, incident, kind, target, op, payload, sent_at "
                                         "FROM outbox ORDER BY id")]
    dropped_at = _plan_messages(plan, rows, theirs, list(seen.values()))
    _plan_closing(plan, groups, rows, plan.closed | dropped_at, severity, at)
    return plan


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


def _plan_messages(plan: _Plan, rows: Sequence[Mapping[str, Any]], theirs: set[str],
                   labels: Sequence[Mapping[str, Any]]) -> set[tuple[str, int]]:
    """The messages (outbox ``rows``) naming their alerts (whose ``labels`` are these), or of a group keyed on
    theirs: a sent one's text erased, an unsent one dropped when it is about theirs only, else trimmed. Returns the
    incidents ``(group_key, incident)`` an unsent message was dropped of."""
    from costline.alerts.message import _labels_text

    texts = [_labels_text(one) for one in labels]
    prefixes = tuple(f"• {t}: " for t in texts)
    dropped_at: set[tuple[str, int]] = set()
    for r in rows:
        found = _member_lines(r["payload"])
        if found is None:
            continue
        lines, whole = found
        named = [ln for ln in lines if ln.startswith(prefixes)] if prefixes else []
        if not named and not (r["group_key"] in theirs and lines):
            continue
        if r["sent_at"] is not None:
            plan.erased.append((int(r["id"]), r["kind"]))
        elif r["group_key"] in theirs or (whole and len(named) == len(lines)):
            plan.dropped.append(int(r["id"]))
            dropped_at.add((r["group_key"], int(r["incident"])))
        else:
            plan.trimmed.append((int(r["id"]), _trimmed(r["payload"], texts)))
    return dropped_at


def _plan_closing(plan: _Plan, groups: Mapping[str, dict[str, Any]], rows: Sequence[Mapping[str, Any]],
                  incidents: set[tuple[str, int]], severity: Mapping[str, str], at: datetime) -> None:
    """Of ``incidents`` (closed now, or with unsent messages dropped), each one closed whose firing message went
    out to a target and no resolve is left for it there: a closing message naming no tenant, in its thread."""
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
                              and r["sent_at"] is not None}):
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
    con.executemany("UPDATE outbox SET payload = ? WHERE id = ?", [
        (json.dumps({"kind": kind, "title": _ERASED_PAYLOAD, "text": _ERASED_PAYLOAD, "blocks": []}), i)
        for i, kind in plan.erased])
    con.executemany("UPDATE outbox SET payload = ? WHERE id = ?", [(payload, i) for i, payload in plan.trimmed])
    con.executemany("INSERT INTO outbox (group_key, incident, kind, target, op, payload, created_at, next_attempt_at) "
                    "VALUES (?, ?, 'resolved', ?, ?, ?, ?, ?)",
                    [(gk, inc, target, op, json.dumps(payload), t, t) for gk, inc, target, op, payload in plan.closing])
    done = con.execute("SELECT max(value) FROM samples WHERE name = ?", (ERASURES,)).fetchone()[0]
    con.execute("DELETE FROM samples WHERE name = ?", (ERASURES,))
    con.execute("INSERT INTO samples (name, at, value) VALUES (?, ?, ?)", (ERASURES, t, int(done or 0) + 1))


def _result(path: Path, plan: _Plan) -> StateErasure:
    days: dict[str, int] = {}
    for _, day in plan.history:
        days[day] = days.get(day, 0) + 1
    return StateErasure(path, tuple(sorted(days.items())), len(plan.alerts), plan.firing, len(plan.closed),
                        len({(gk, inc, target) for gk, inc, target, _, _ in plan.closing}), len(plan.silences),
                        len(plan.dropped), len(plan.erased), len(plan.trimmed))


def forget_tenants(path: Path | str, tenants: Iterable[str], *, before: date | None = None, dry_run: bool = False,
                   now: Callable[[], datetime] = utc_now) -> StateErasure | None:
    """Erase ``tenants`` from the alert state file at ``path`` (see the module); None when there is no file there.
    A file that cannot be opened, locked (an evaluation holding it past the store's 30 s) or changed is left as it
    was: the result says why (:attr:`StateErasure.error`)."""
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
        store.con.execute("PRAGMA secure_delete = ON")  # the deleted rows' bytes are overwritten, not left free
        with store.transaction() as con:
            plan = _plan(con, spellings, before, at)
            if not plan.empty:
                _apply(con, plan, at)
    except (AlertsStateError, sqlite3.Error) as exc:
        store.close()
        return StateErasure(path, error=str(exc) if dry_run else (
            f"{exc}: nothing of it was changed; check its permissions and the disk (a `costline alerts run` "
            "evaluating holds it for a moment only) and run the forget again"))
    try:
        if not plan.empty:  # the old pages out of the write-ahead log too
            store.con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    except sqlite3.Error as exc:  # erased all the same: a reader held the log, the next checkpoint overwrites it
        log.warning("alert state %s: the forget's rows are erased, but its write-ahead log could not be truncated "
                    "now (%s): the next checkpoint overwrites the old pages", path, exc)
    finally:
        store.close()
    return _result(path, plan)


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
    """The error a forget (not a dry run) ends with when it could not erase the tenants from a state file; None:
    it could."""
    failed = [s for s in states if s.error is not None]
    if report.dry_run or not failed:
        return None
    return (f"forget removed {report.rows:,} rows, but could not erase {', '.join(repr(t) for t in report.tenants)} "
            f"from the alert state file {', '.join(str(s.path) for s in failed)} ({failed[0].error}); the next "
            "`costline alerts run` exports their alert history again until it does")


def forget_in_config(config: Config, report: ForgetReport) -> ForgetReport:
    """For ``[lake] mode = "table"``, whose :meth:`~costline.tablelake.TableLake.forget` rewrites the three tables
    only: the tenants of ``report`` erased from the alert state files too (``[alerts] state_path``, and the default
    one under ``[lake] path`` when there is one), and the result tables ``alerts`` and ``alerts_history``
    exported again from the configured one (not in a dry run). Returns ``report`` with what was done; raises
    :class:`~costline.lake._erasure.ErasureIncomplete` when a state file or the export failed."""
    from costline.alerts.service import state_path
    from costline.alerts.store import default_state_path
    from costline.alerts.view import export_history
    from costline.errors import LakeError
    from costline.lake._erasure import ErasureIncomplete

    configured = state_path(config)
    states = forget_in_states([configured, default_state_path(config.lake.path)], report.tenants,
                              before=report.before, dry_run=report.dry_run)
    report = with_states(report, states)
    failure = state_failure(report, states)
    if failure is None and not report.dry_run and configured.is_file():
        store = None
        try:
            store = AlertStore(configured)
            export_history(store, config)
        except (AlertsStateError, LakeError, OSError) as exc:
            failure = (f"forget removed {report.rows:,} rows and erased these tenants from the alert state, but "
                       f"could not export it to the result tables alerts and alerts_history ({exc}): they hold "
                       "the tenants' alert rows until the next export; run the forget again once that works")
        finally:
            if store is not None:
                store.close()
    if failure is not None:
        raise ErasureIncomplete(failure, report)
    return report
