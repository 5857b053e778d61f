"""The alerting loop: evaluate the rules, apply them to the state, deliver the outbox.

:class:`AlertService` ties the parts together; ``costline alerts run`` runs
:meth:`AlertService.run` (every ``[alerts] interval_s``, 60 s by default: an
hourly window closes, is evaluated ``settle_s`` later and its message is sent
in the same tick — well under two minutes). The nightly jobs call
:func:`evaluate_job_rules` when they finish.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from costline.alerts.engine import AlertEngine, TickResult
from costline.alerts.errors import AlertsStateError
from costline.alerts.notify import Notifier, build_notifiers
from costline.alerts.outbox import DeliveryStats, Outbox
from costline.alerts.rules import (
    HOURLY_RULES,
    JOB_RULES,
    Observation,
    Rule,
    Snapshot,
    closed_window,
    evaluate,
    rules_from_config,
)
from costline.alerts.source import AlertSource
from costline.alerts.store import AlertStore, default_state_path, from_epoch, to_epoch
from costline.alerts.view import export_history
from costline.config import Config
from costline.errors import LakeError
from costline.lake import NoLake
from costline.timeutil import utc_naive as _naive
from costline.timeutil import utc_now as _utc_now

__all__ = ["AlertService", "TickReport", "evaluate_job_rules", "state_path"]

log = logging.getLogger(__name__)

#: The snapshot part each hourly rule reads.
_PART = {"cache_hit_rate_drop": "cache", "cost_per_success_rise": "tiers", "rejected_attempts_rise": "rejections"}


def state_path(config: Config) -> Path:
    """The SQLite state file: ``[alerts] state_path``, else ``<lake>/_alerts/state.sqlite``."""
    return Path(config.alerts.state_path or default_state_path(config.lake.path))


@dataclass
class TickReport:
    at: datetime
    observations: dict[str, list[Observation] | None] = field(default_factory=dict)
    tick: TickResult = field(default_factory=TickResult)
    delivery: DeliveryStats = field(default_factory=DeliveryStats)
    #: Past hours judged this tick because their data landed late: (rule, hour start, observations), oldest first.
    late: list[tuple[str, datetime, list[Observation] | None]] = field(default_factory=list)


#: How far back a tick looks for closed hours not judged yet (their data landed after a processor outage).
LATE_HOURS = 24
#: The ``samples`` name under which the alert state keeps, per hourly rule, the newest hour it judged.
_JUDGED = "judged_hour:"


def _has_data(rule: str, rows: Sequence[Mapping[str, Any]] | None) -> bool:
    """Whether an hourly rule's rows for an hour hold any of its series' data."""
    key = {"cache_hit_rate_drop": "lookups", "cost_per_success_rise": "requests",
           "rejected_attempts_rise": "attempts"}[rule]
    return any((r.get(key) or 0) > 0 for r in rows or ())


def _merge(into: TickResult, res: TickResult) -> None:
    into.transitions.extend(res.transitions)
    into.queued.extend(res.queued)
    into.muted.update(res.muted)
    into.stale = into.stale or res.stale


class AlertService:
    """Rules + state + outbox over one config. Every collaborator can be injected for tests."""

    def __init__(
        self,
        config: Config,
        *,
        now: Callable[[], datetime] = _utc_now,
        store: AlertStore | None = None,
        source: AlertSource | None = None,
        notifiers: Mapping[str, Notifier] | None = None,
        echo: Callable[[str], None] | None = None,
        dlq_count: Callable[[], int | None] | None = None,
        export: bool = True,
    ) -> None:
        self.config = config
        self.now = now
        self.store = store or AlertStore(state_path(config))
        self.source = source or AlertSource(config, store=self.store, dlq_count=dlq_count)
        self.notifiers = dict(notifiers) if notifiers is not None else build_notifiers(config.alerts, echo=echo)
        self.engine = AlertEngine(self.store, config.alerts, targets=tuple(self.notifiers), now=now)
        self.outbox = Outbox(self.store, self.notifiers, config.alerts.outbox, now=now)
        self.export = export

    def rules(self, names: Iterable[str] | None = None) -> list[Rule]:
        return rules_from_config(self.config.alerts, names)

    def tick(self, now: datetime | None = None, *, rules: Iterable[str] | None = None,
             catch_up: bool = True) -> TickReport:
        """Evaluate (all enabled rules, or ``rules``), apply, deliver what is due.

        An hourly rule judges the last closed hour; with ``catch_up`` it also judges, once and oldest first, each
        closed hour of the last :data:`LATE_HOURS` after the newest one it judged that has data now but had none
        when it closed (a backlog that landed after a processor outage) — as soon as the Kafka records of every
        partition are in past the hour's end (:meth:`_late_hours`). The newest hour judged is kept per rule in the
        alert state. Its observations say which hour. When a ``costline lake forget`` ran on the state file while
        the tick read the lake, nothing is applied (``report.tick.stale``): the next tick evaluates again."""
        now = now or self.now()
        selected = self.rules(rules)
        erasures = self.store.erasures()  # before the lake is read: a forget meanwhile makes the applies skip
        snapshot = self.source.snapshot(now, [r.name for r in selected])
        report = TickReport(at=now)
        for rule in selected:
            report.observations[rule.name] = evaluate(rule, snapshot, now)
        late = self._late_hours(selected, snapshot, now) if catch_up else {}
        if not late:
            report.tick = self.engine.apply(report.observations, now, erasures=erasures)
        else:
            # the other rules first (a pipeline_silent that ends as the backlog lands no longer mutes its pages),
            # then per rule its late hours, oldest first, then its current hour
            _merge(report.tick, self.engine.apply(
                {k: v for k, v in report.observations.items() if k not in late}, now, erasures=erasures))
            for rule in selected:
                for w in late.get(rule.name, ()):
                    obs = evaluate(rule, self.source.snapshot(now, [rule.name], window=w), now, window=w)
                    report.late.append((rule.name, w, obs))
                    _merge(report.tick, self.engine.apply({rule.name: obs}, now, erasures=erasures))
                if rule.name in late:
                    _merge(report.tick, self.engine.apply({rule.name: report.observations[rule.name]}, now,
                                                          erasures=erasures))
        if catch_up and not report.tick.stale:  # not applied: its hours are judged again next tick
            try:
                self._mark_judged(selected, snapshot, late, now)
            except (AlertsStateError, sqlite3.Error) as exc:  # judged again next tick: the state machine dedups
                log.warning("alerts: cannot record the hours judged in the alert state: %s", exc)
        report.delivery = self.outbox.deliver_due(now)
        if self.export and report.tick.transitions:
            try:
                export_history(self.store, self.config)
            except (OSError, LakeError) as exc:  # LakeError: table mode, its store or catalog down
                log.warning("cannot export alert history to the lake: %s", exc)
        return report

    def _judged(self, rule: str) -> datetime | None:
        """The newest hour ``rule`` judged (naive UTC), None: none recorded."""
        rows = self.store.query("SELECT max(value) AS v FROM samples WHERE name = ?", (_JUDGED + rule,))
        v = rows[0]["v"] if rows else None
        return None if v is None else _naive(from_epoch(float(v)))

    def _record_mark(self) -> datetime | None:
        """How far the backlog has got, in the order spans reached Kafka: the oldest of the partitions' record
        times (:meth:`AlertSource.record_times`), leaving out partitions that recorded none and idle ones — whose
        record time is more than :data:`LATE_HOURS` behind the newest partition's (no traffic reaches them; a
        partition a processor is still catching up on is never that far behind, or its hours are past judging
        late anyway). None: no partition recorded one (table mode, a lake of an older costline)."""
        read = getattr(self.source, "record_times", None)  # an injected source may know none
        times = [t for t in (read() if read is not None else {}).values() if t is not None]
        if not times:
            return None
        newest = max(times)
        return min(t for t in times if t >= newest - timedelta(hours=LATE_HOURS))

    def _late_hours(self, selected: Sequence[Rule], snapshot: Snapshot, now: datetime) -> dict[str, list[datetime]]:
        """Per hourly rule, the closed hours to judge late, oldest first: after the newest it judged, within the
        last :data:`LATE_HOURS`, before the last closed one, holding data, and in: every active partition's Kafka
        record time (:meth:`_record_mark`) is at or after the hour's end + ``settle_s`` (arrival order: a span
        stamped by a clock that runs ahead cannot make an hour look complete). Where the lake records no record
        times, data of a later hour in the lake says the backlog has got past the hour."""
        current = closed_window(now, self.config.alerts.settle_s)
        settle = timedelta(seconds=self.config.alerts.settle_s)
        out: dict[str, list[datetime]] = {}
        mark: datetime | None = None
        marked = False
        for rule in selected:
            if rule.name not in HOURLY_RULES or getattr(snapshot, _PART[rule.name]) is None:
                continue
            last = self._judged(rule.name)
            if last is None:
                continue  # nothing judged yet (a first start): the last closed hour only, no pages for old hours
            first = max(last + timedelta(hours=1), current - timedelta(hours=LATE_HOURS))
            if first >= current:
                continue
            if not marked:
                mark, marked = self._record_mark(), True
            hours = self.source.hours_with_data(rule.name, first, current + timedelta(hours=1))
            if mark is not None:
                todo = sorted(h for h in hours if first <= h < current and h + timedelta(hours=1) + settle <= mark)
            else:
                todo = sorted(h for h in hours if first <= h < current and any(later > h for later in hours))
            if todo:
                out[rule.name] = todo
        return out

    def _mark_judged(self, selected: Sequence[Rule], snapshot: Snapshot, late: Mapping[str, list[datetime]],
                     now: datetime) -> None:
        current = closed_window(now, self.config.alerts.settle_s)
        for rule in selected:
            if rule.name not in HOURLY_RULES:
                continue
            rows = getattr(snapshot, _PART[rule.name])
            judged = list(late.get(rule.name, ()))
            if rows is not None and _has_data(rule.name, [r for r in rows if _naive(r["window_start"]) == current]):
                judged.append(current)
            if not judged:
                continue
            newest = max(judged)
            last = self._judged(rule.name)
            if last is None or newest > last:
                self.store.add_sample(_JUDGED + rule.name, now, to_epoch(newest), keep_s=8 * 86400.0)

    def run(self, *, interval_s: float | None = None, stop: threading.Event | None = None,
            sleep: Callable[[float], None] | None = None, max_ticks: int | None = None) -> int:
        """Tick every ``interval_s`` until ``stop`` is set (or ``max_ticks``); between ticks,
        deliver retries as they fall due. Returns the number of ticks."""
        interval = interval_s if interval_s is not None else self.config.alerts.interval_s
        stop = stop or threading.Event()
        wait = sleep or stop.wait
        ticks = 0
        while not stop.is_set():
            started = self.now()
            try:
                self.tick(started)
            except NoLake:
                if not ticks:  # a mistyped [lake] path: an error at start, not a log line every interval
                    raise
                log.exception("alert evaluation failed")
            except Exception:  # noqa: BLE001 - keep watching; the next tick retries
                log.exception("alert evaluation failed")
            ticks += 1
            if max_ticks is not None and ticks >= max_ticks:
                break
            next_tick = started + timedelta(seconds=interval)
            while not stop.is_set():  # between ticks: deliver retries as they fall due
                now = self.now()
                if now >= next_tick:
                    break
                gap = (next_tick - now).total_seconds()
                try:
                    due = self.outbox.next_due()
                except Exception:  # noqa: BLE001 - as in tick: log, keep going (the next tick retries)
                    log.exception("cannot read the alert outbox between ticks")
                    due = None
                if due is not None:
                    gap = min(gap, max(1.0, (due - now).total_seconds()))
                wait(max(0.05, gap))
                if due is not None and self.now() >= due:
                    try:
                        self.outbox.deliver_due()
                    except Exception:  # noqa: BLE001 - a delivery pass that fails must not end `alerts run`
                        log.exception("alert delivery failed between ticks")
        return ticks

    def replay(self, start: datetime, end: datetime, *, step_s: float | None = None) -> list[TickReport]:
        """Evaluate as of each ``step_s`` from ``start`` to ``end`` (a backfill over past data)."""
        step = timedelta(seconds=step_s or self.config.alerts.interval_s)
        out, t = [], start
        with self.source.frozen():  # one pass over the lake, not one per step
            while t <= end:
                out.append(self.tick(t, catch_up=False))  # each step judges its own closed hour, as live did
                t += step
        return out

    def shutdown(self) -> None:
        self.outbox.shutdown()
        self.store.close()


def evaluate_job_rules(config: Config, *, now: datetime | None = None, **kwargs: Any) -> TickReport:
    """For the nightly jobs, at the end of a run: evaluate ``student_drift`` and
    ``routing_tier_match_drop`` and deliver (console, and Slack when configured)."""
    service = AlertService(config, **kwargs)
    try:
        return service.tick(now, rules=JOB_RULES)
    finally:
        service.shutdown()
