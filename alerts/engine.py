"""The alert state machine, in the manner of Prometheus Alertmanager.

Per alert (fingerprint = rule + sorted labels)::

    inactive ──BREACH──▶ pending ──BREACH for `for_s`──▶ firing ──OK──▶ resolved
        ▲                   │ OK / not observed                │ BAND (hysteresis): stays
        └───────────────────┘                                  └ no observation for no_data_resolve_s ─▶ resolved

Per group (the ``group_by`` labels; ``rule`` is the rule's name) an *incident*
opens when its first un-muted alert fires (one ``firing`` message), changes
when alerts join or recover (``update``, in the thread), is reminded of every
``repeat_interval_s`` (``reminder``) and closes when none of its alerts fires
any more (``resolved``, in the thread, and the original message is updated).

An alert is *muted* while a silence matches it or a firing rule inhibits its
rule (``pipeline_silent`` inhibits the rate rules): muted alerts keep their
state but open no incident and cause no reminders. The resolve of an incident
whose firing message went out is always sent, so no thread is left red.

One :meth:`AlertEngine.apply` is one SQLite transaction: the state changes and
the outbox rows they cause commit together.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from costline.alerts.message import render
from costline.alerts.rules import RULE_NAMES, Condition, Observation, fingerprint, no_data_summary
from costline.alerts.settings import AlertsConfig
from costline.alerts.store import AlertStore, from_epoch, to_epoch
from costline.timeutil import utc_now as _utc_now

__all__ = ["AlertEngine", "TickResult", "ops_for", "MAX_UNSENT_PER_TARGET", "BASELINE_S", "HISTORY_KEEP_S",
           "HISTORY_KEEP_MIN", "retention_s"]

log = logging.getLogger(__name__)

INACTIVE, PENDING, FIRING, RESOLVED = "inactive", "pending", "firing", "resolved"

#: Unsent outbox rows kept per target: past it (a target failing for days with many open groups) the oldest
#: reminders and updates are dropped, with an ERROR; firing and resolved messages are never dropped.
MAX_UNSENT_PER_TARGET = 1000

#: The longest baseline a rule judges against: the 7 days before the hour (the hourly rules) or 7 nightly runs
#: (``student_drift``; ``routing_tier_match_drop`` its ``baseline_runs`` nights when more).
BASELINE_S = 7 * 86400.0
#: State changes kept in ``history`` (what ``costline alerts history`` and the ``alerts_history`` view show): 90
#: days, and at least the newest :data:`HISTORY_KEEP_MIN` whatever their age.
HISTORY_KEEP_S = 90 * 86400.0
HISTORY_KEEP_MIN = 1000

#: The alert columns a tick may change: a row is written only when one of them did.
_SAVED = ("group_key", "state", "severity", "pending_since", "fired_at", "resolved_at", "last_observed_at",
          "observation")


def retention_s(settings: Any) -> float:
    """How long an inactive or resolved alert of a rule with these settings is kept after it was last observed
    (or last changed state): the rule's baseline window (:data:`BASELINE_S`, or ``baseline_runs`` nights) plus its
    ``no_data_resolve_s``. Past it the row is deleted; the series starts afresh if it breaches again."""
    runs = getattr(settings, "baseline_runs", 0) or 0
    return max(BASELINE_S, float(runs) * 86400.0) + float(getattr(settings, "no_data_resolve_s", 3 * 3600.0))


def ops_for(target: str, kind: str) -> list[str]:
    """Outbox rows one message makes for a target: Slack threads replies and updates the original."""
    if target != "slack":
        return ["post"]
    if kind in ("update", "resolved"):
        return ["post", "update"]
    return ["post"]


@dataclass
class TickResult:
    """What one evaluation changed."""

    transitions: list[tuple[str, str, str]] = field(default_factory=list)  # (fingerprint, from, to)
    queued: list[tuple[str, str]] = field(default_factory=list)  # (group_key, kind)
    muted: dict[str, str] = field(default_factory=dict)  # fingerprint -> why
    #: Not applied: a ``costline lake forget`` ran on the state file after the evaluation read the lake (see
    #: :meth:`AlertEngine.apply`); the next tick evaluates again.
    stale: bool = False


def _obs_dict(obs: Observation) -> dict[str, Any]:
    d = asdict(obs)
    d["condition"] = obs.condition.value
    d["labels"] = dict(obs.labels)
    d["figures"] = {k: (v if isinstance(v, (int, float, str)) or v is None else str(v))
                    for k, v in obs.figures.items()}
    d["data_until"] = obs.data_until.isoformat() if obs.data_until is not None else None
    return d


def _no_data_observation(row: Mapping[str, Any], now: datetime, no_data_s: float) -> dict[str, Any]:
    """The stored observation of an alert closed because its series vanished: it says what stopped since when,
    and carries none of the last figures (a hit rate of hours ago is no current figure)."""
    old = json.loads(row.get("observation") or "{}")
    since: datetime | None = None
    if old.get("data_until"):
        try:
            since = datetime.fromisoformat(str(old["data_until"]))
        except ValueError:
            since = None
    if since is None:  # stored before data_until existed: the last evaluation that saw data
        since = from_epoch(row.get("last_observed_at"))
    labels = json.loads(row["labels"])
    figures = {"last data": str(old.get("window") or "-"),
               "closed": f"after {no_data_s / 3600:g} h without data (no_data_resolve_s)"}
    return {**old, "condition": "no_data", "no_data": True, "value": None, "threshold": None, "window": "",
            "summary": no_data_summary(row["rule"], labels, since, now), "figures": figures}


class AlertEngine:
    """Applies rule observations to the durable state and queues the messages they cause."""

    def __init__(
        self,
        store: AlertStore,
        config: AlertsConfig,
        *,
        targets: Sequence[str] = ("console",),
        now: Callable[[], datetime] = _utc_now,
        max_unsent: int = MAX_UNSENT_PER_TARGET,
    ) -> None:
        self.store = store
        self.config = config
        self.targets = tuple(targets)
        self.now = now
        self.max_unsent = max(int(max_unsent), 1)

    # -- helpers ----------------------------------------------------------------------------
    def _settings(self, rule: str) -> Any:
        return getattr(self.config, rule) if rule in RULE_NAMES else None

    def _group_labels(self, rule: str, labels: Mapping[str, str]) -> dict[str, str]:
        return {k: (rule if k == "rule" else str(labels.get(k, ""))) for k in self.config.group_by}

    def group_key(self, rule: str, labels: Mapping[str, str]) -> str:
        return fingerprint("group", self._group_labels(rule, labels))

    # -- the tick ---------------------------------------------------------------------------
    def apply(self, results: Mapping[str, Sequence[Observation] | None], now: datetime | None = None, *,
              erasures: int | None = None) -> TickResult:
        """Apply one evaluation: ``{rule: observations, or None when it was skipped}``.

        ``erasures``: the state file's count of forgets (:meth:`AlertStore.erasures`) read before the evaluation
        read the lake. When a forget ran since, nothing is applied (:attr:`TickResult.stale`): the observations may
        be of a tenant it erased, which they would put back."""
        now = now or self.now()
        t = to_epoch(now)
        res = TickResult()
        with self.store.transaction() as con:
            if erasures is not None and self.store.erasures() != erasures:
                log.info("alerts: a `costline lake forget` ran while this evaluation read the lake: not applied, the "
                         "next tick evaluates again")
                res.stale = True
                return res
            rows = {r["fingerprint"]: dict(r) for r in con.execute("SELECT * FROM alerts")}
            stored = {fp: tuple(r[k] for k in _SAVED) for fp, r in rows.items()}
            for rule, observations in results.items():
                if observations is None:
                    continue
                settings = self._settings(rule)
                for_s = float(getattr(settings, "for_s", 0.0))
                seen = set()
                for obs in observations:
                    fp = obs.fingerprint
                    seen.add(fp)
                    row = rows.get(fp)
                    if row is None:
                        if obs.condition is not Condition.BREACH:
                            # in band or fine and no state yet: nothing to keep (a series seen once, a tenant name
                            # made up by a span sender, leaves no row behind)
                            continue
                        row = {"fingerprint": fp, "rule": obs.rule, "labels": json.dumps(dict(obs.labels), sort_keys=True),
                               "group_key": self.group_key(obs.rule, obs.labels), "state": INACTIVE,
                               "pending_since": None, "fired_at": None, "resolved_at": None}
                        rows[fp] = row
                    row["severity"] = getattr(settings, "severity", "warning")
                    row["last_observed_at"] = t
                    row["observation"] = json.dumps(_obs_dict(obs))
                    row["_obs"] = obs
                    self._step(row, obs.condition.value, for_s, t, res)
                no_data_s = float(getattr(settings, "no_data_resolve_s", 3 * 3600.0))
                for fp, row in rows.items():
                    if row["rule"] != rule or fp in seen:
                        continue
                    if row["state"] == PENDING:
                        self._move(row, INACTIVE, t, res)
                    elif row["state"] == FIRING and t - float(row.get("last_observed_at") or t) >= no_data_s:
                        # its messages and history say it closed for lack of data, not the stale figures
                        row["observation"] = json.dumps(_no_data_observation(row, now, no_data_s))
                        self._move(row, RESOLVED, t, res, note="no data")
            res.muted = self._muted(rows, now)
            for fp, row in rows.items():
                if stored.get(fp) != tuple(row.get(k) for k in _SAVED):  # new, or changed this tick
                    self._save_alert(con, row, t)
            for fp, frm, to in res.transitions:
                row = rows[fp]
                obs = json.loads(row.get("observation") or "{}")
                con.execute(
                    "INSERT INTO history (at, fingerprint, rule, labels, from_state, to_state, value, threshold, "
                    "summary, severity, muted) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (t, fp, row["rule"], row["labels"], frm, to, obs.get("value"), obs.get("threshold"),
                     row.get("_note") or obs.get("summary"), row.get("severity"), res.muted.get(fp)))
            self._groups(con, rows, res, now)
            self._prune(con, rows, res, t)
        return res

    def _prune(self, con: Any, rows: Mapping[str, dict[str, Any]], res: TickResult, t: float) -> None:
        """Bound the state: delete inactive and resolved alerts not observed (nor changed state) for their rule's
        :func:`retention_s`, unless a silence in effect matches them or they are still members of an open
        incident; closed groups none of whose alerts and messages are left; history older than
        :data:`HISTORY_KEEP_S` past the newest :data:`HISTORY_KEEP_MIN` rows. Firing and pending alerts, open
        groups, silences and undelivered messages are never deleted."""
        in_open = {fp for (m,) in con.execute("SELECT members FROM groups WHERE open = 1") for fp in json.loads(m)}
        changed = {fp for fp, _, _ in res.transitions}
        gone = []
        for fp, row in rows.items():
            if (row["state"] not in (INACTIVE, RESOLVED) or fp in in_open or fp in changed
                    or res.muted.get(fp, "").startswith("silenced")):
                continue
            seen = [float(v) for v in (row.get("last_observed_at"), row.get("resolved_at"), row.get("fired_at"),
                                       row.get("pending_since")) if v is not None]
            if not seen or t - max(seen) > retention_s(self._settings(row["rule"])):
                gone.append(fp)
        if gone:
            con.executemany("DELETE FROM alerts WHERE fingerprint = ?", [(fp,) for fp in gone])
            log.info("alerts: dropped %d inactive/resolved alert(s) not seen for their rule's retention", len(gone))
        con.execute("DELETE FROM groups WHERE open = 0 "
                    "AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.group_key = groups.group_key) "
                    "AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.group_key = groups.group_key)")
        newest = con.execute("SELECT id FROM history ORDER BY id DESC LIMIT 1 OFFSET ?",
                             (HISTORY_KEEP_MIN - 1,)).fetchone()
        if newest is not None:
            con.execute("DELETE FROM history WHERE at < ? AND id < ?", (t - HISTORY_KEEP_S, newest[0]))

    def _move(self, row: dict[str, Any], to: str, t: float, res: TickResult, *, note: str | None = None) -> None:
        frm = row["state"]
        if frm == to:
            return
        row["state"] = to
        if to == PENDING:
            row["pending_since"] = t
        elif to == FIRING:
            row["fired_at"] = t
            row["resolved_at"] = None
        elif to == RESOLVED:
            row["resolved_at"] = t
        if to in (INACTIVE, RESOLVED):
            row["pending_since"] = None
        if note:
            row["_note"] = f"{note}: {json.loads(row.get('observation') or '{}').get('summary', '')}".rstrip(": ")
        res.transitions.append((row["fingerprint"], frm, to))

    def _step(self, row: dict[str, Any], cond: str, for_s: float, t: float, res: TickResult) -> None:
        st = row["state"]
        if cond == "breach":
            if st in (INACTIVE, RESOLVED):
                if for_s <= 0:
                    self._move(row, FIRING, t, res)
                else:
                    self._move(row, PENDING, t, res)
            elif st == PENDING and t - float(row["pending_since"] or t) >= for_s:
                self._move(row, FIRING, t, res)
        elif cond == "ok":
            if st == PENDING:
                self._move(row, INACTIVE, t, res)
            elif st == FIRING:
                self._move(row, RESOLVED, t, res)
        # "band": inside the hysteresis band or too little data: keep the state

    def _muted(self, rows: Mapping[str, dict[str, Any]], now: datetime) -> dict[str, str]:
        silences = self.store.silences(at=now)
        inhibited: dict[str, str] = {}
        for row in rows.values():
            if row["state"] == FIRING:
                for target in getattr(self._settings(row["rule"]), "inhibits", ()) or ():
                    inhibited.setdefault(target, row["rule"])
        muted: dict[str, str] = {}
        for fp, row in rows.items():
            labels = json.loads(row["labels"])
            for s in silences:
                if s.matches(row["rule"], labels, now):
                    muted[fp] = f"silenced by #{s.id}"
                    break
            else:
                if row["rule"] in inhibited:
                    muted[fp] = f"inhibited by {inhibited[row['rule']]}"
        return muted

    def _save_alert(self, con: Any, row: dict[str, Any], t: float) -> None:
        con.execute(
            "INSERT INTO alerts (fingerprint, rule, labels, group_key, state, severity, pending_since, fired_at, "
            "resolved_at, last_observed_at, updated_at, observation) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (fingerprint) DO UPDATE SET state = excluded.state, severity = excluded.severity, "
            "pending_since = excluded.pending_since, fired_at = excluded.fired_at, resolved_at = excluded.resolved_at, "
            "last_observed_at = excluded.last_observed_at, updated_at = excluded.updated_at, "
            "observation = excluded.observation, group_key = excluded.group_key",
            (row["fingerprint"], row["rule"], row["labels"], row["group_key"], row["state"], row.get("severity"),
             row.get("pending_since"), row.get("fired_at"), row.get("resolved_at"), row.get("last_observed_at"),
             t, row.get("observation")))

    # -- groups and messages ------------------------------------------------------------------
    def _groups(self, con: Any, rows: Mapping[str, dict[str, Any]], res: TickResult, now: datetime) -> None:
        t = to_epoch(now)
        groups = {r["group_key"]: dict(r) for r in con.execute("SELECT * FROM groups")}
        by_group: dict[str, list[dict[str, Any]]] = {}
        for row in rows.values():
            by_group.setdefault(row["group_key"], []).append(row)
        for gk, alerts in sorted(by_group.items()):
            g = groups.get(gk)
            firing = [a for a in alerts if a["state"] == FIRING]
            unmuted = [a for a in firing if a["fingerprint"] not in res.muted]
            if g is None:
                if not unmuted:
                    continue
                labels = self._group_labels(alerts[0]["rule"], json.loads(alerts[0]["labels"]))
                g = {"group_key": gk, "rule": ", ".join(sorted({a["rule"] for a in alerts})),
                     "labels": json.dumps(labels, sort_keys=True), "incident": 0, "open": 0,
                     "opened_at": None, "closed_at": None, "last_notified_at": None, "members": "[]"}
            members = list(json.loads(g["members"]))
            rule = ", ".join(sorted({a["rule"] for a in alerts}))
            severity = max((a.get("severity") or "warning" for a in alerts), key=lambda s: s == "critical")
            if not g["open"]:
                if not unmuted:
                    continue
                g.update(open=1, incident=int(g["incident"]) + 1, opened_at=t, closed_at=None, last_notified_at=t,
                         members=json.dumps(sorted(a["fingerprint"] for a in unmuted)))
                self._queue(con, g, "firing", rule, severity, unmuted, now, res)
            else:
                firing_fps = {a["fingerprint"] for a in firing}
                by_fp = {a["fingerprint"]: a for a in alerts}
                recovered = [by_fp[fp] for fp in members if fp not in firing_fps and fp in by_fp]
                joined = [a for a in unmuted if a["fingerprint"] not in members]
                if not firing:
                    if self.config.send_resolved:
                        covered = [by_fp[fp] for fp in members if fp in by_fp]
                        self._queue(con, g, "resolved", rule, severity, covered or alerts, now, res)
                    g.update(open=0, closed_at=t, members="[]")
                elif joined or recovered:
                    new_members = sorted((set(members) - {a["fingerprint"] for a in recovered})
                                         | {a["fingerprint"] for a in joined})
                    if joined or self.config.send_resolved:
                        self._queue(con, g, "update", rule, severity, joined + recovered, now, res,
                                    root_members=[by_fp[fp] for fp in new_members if fp in by_fp] + recovered)
                        g["last_notified_at"] = t
                    g["members"] = json.dumps(new_members)
                elif unmuted and t - float(g["last_notified_at"] or t) >= self.config.repeat_interval_s:
                    self._queue(con, g, "reminder", rule, severity, unmuted, now, res)
                    g["last_notified_at"] = t
            con.execute(
                "INSERT INTO groups (group_key, rule, labels, incident, open, opened_at, closed_at, last_notified_at, "
                "members) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (group_key) DO UPDATE SET "
                "rule = excluded.rule, incident = excluded.incident, open = excluded.open, "
                "opened_at = excluded.opened_at, closed_at = excluded.closed_at, "
                "last_notified_at = excluded.last_notified_at, members = excluded.members",
                (gk, g["rule"], g["labels"], g["incident"], g["open"], g["opened_at"], g["closed_at"],
                 g["last_notified_at"], g["members"]))

    def _queue(self, con: Any, g: Mapping[str, Any], kind: str, rule: str, severity: str,
               members: Sequence[Mapping[str, Any]], now: datetime, res: TickResult, *,
               root_members: Sequence[Mapping[str, Any]] | None = None) -> None:
        def view(a: Mapping[str, Any]) -> dict[str, Any]:
            return {"fingerprint": a["fingerprint"], "labels": json.loads(a["labels"]), "state": a["state"],
                    "observation": json.loads(a.get("observation") or "{}")}

        group_labels = json.loads(g["labels"])
        opened = from_epoch(g["opened_at"])
        note = ""
        if kind == "resolved" and opened is not None:
            lasted = f"{(now - opened).total_seconds() / 60:.0f} min"
            no_data = bool(members) and all(json.loads(a.get("observation") or "{}").get("no_data") for a in members)
            note = f"Closed after {lasted} for lack of data." if no_data else f"Resolved after {lasted}."
        elif kind == "reminder" and opened is not None:
            note = f"Still firing, for {(now - opened).total_seconds() / 60:.0f} min."
        common = dict(rule=rule, group_labels=group_labels, severity=severity, incident=int(g["incident"]), at=now)
        payload = render(kind, members=[view(a) for a in members], note=note, **common)
        root = None
        if kind in ("update", "resolved"):
            root_kind = "resolved" if kind == "resolved" else "firing"
            root = render(root_kind, members=[view(a) for a in (root_members or members)],
                          note=note if kind == "resolved" else "Updated; see the thread.", **common)
        t = to_epoch(now)
        for target in self.targets:
            if kind in ("reminder", "resolved"):
                # a newer reminder supersedes an unsent older one, a resolve every unsent one: when the target
                # comes back after an outage it gets the incident's current state, not a backlog of reminders
                gone = con.execute(
                    "DELETE FROM outbox WHERE group_key = ? AND incident = ? AND target = ? AND kind = 'reminder' "
                    "AND sent_at IS NULL", (g["group_key"], int(g["incident"]), target)).rowcount
                if gone:
                    log.info("%s: %d unsent reminder(s) of %s (incident #%s) superseded by the %s", target, gone,
                             rule, g["incident"], kind)
            for op in ops_for(target, kind):
                body = root if op == "update" else payload
                con.execute(
                    "INSERT INTO outbox (group_key, incident, kind, target, op, payload, created_at, next_attempt_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (g["group_key"], int(g["incident"]), kind, target, op, json.dumps(body), t, t))
            self._bound(con, target)
        res.queued.append((g["group_key"], kind))
        log.info("queued %s for %s (incident #%s)", kind, rule, g["incident"])

    def _bound(self, con: Any, target: str) -> None:
        """Keep at most ``max_unsent`` unsent rows per target: past it the oldest reminders and updates go
        (loudly); a firing or resolved message is never dropped, only reported."""
        unsent = int(con.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL AND target = ?",
                                 (target,)).fetchone()[0])
        if unsent <= self.max_unsent:
            return
        dropped = con.execute(
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE sent_at IS NULL AND target = ? "
            "AND kind IN ('reminder', 'update') ORDER BY id LIMIT ?)", (target, unsent - self.max_unsent)).rowcount
        left = unsent - dropped
        log.error("outbox: %d unsent messages for %s, over the bound of %d (it has been failing: see `costline alerts "
                  "list --outbox` and the errors logged): dropped the %d oldest reminder/update message(s); %d kept "
                  "(firing and resolved messages are never dropped)", unsent, target, self.max_unsent, dropped, left)
