"""The alerting loop: evaluate the rules, apply them to the state, deliver the outbox.

:class:`AlertService` ties the parts together; ``costline alerts run`` runs
:meth:`AlertService.run` (every ``[alerts] interval_s``, 60 s by default: an
hourly window closes, is evaluated ``settle_s`` later and its message is sent
in the same tick — well under two minutes). The nightly jobs call
:func:`evaluate_job_rules` when they finish.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from costline.alerts.engine import AlertEngine, TickResult
from costline.alerts.notify import Notifier, build_notifiers
from costline.alerts.outbox import DeliveryStats, Outbox
from costline.alerts.rules import JOB_RULES, Observation, Rule, evaluate, rules_from_config
from costline.alerts.source import AlertSource
from costline.alerts.store import AlertStore, default_state_path
from costline.alerts.view import export_history
from costline.config import Config
from costline.errors import LakeError
from costline.lake import NoLake
from costline.timeutil import utc_now as _utc_now

__all__ = ["AlertService", "TickReport", "evaluate_job_rules", "state_path"]

log = logging.getLogger(__name__)


def state_path(config: Config) -> Path:
    """The SQLite state file: ``[alerts] state_path``, else ``<lake>/_alerts/state.sqlite``."""
    return Path(config.alerts.state_path or default_state_path(config.lake.path))


@dataclass
class TickReport:
    at: datetime
    observations: dict[str, list[Observation] | None] = field(default_factory=dict)
    tick: TickResult = field(default_factory=TickResult)
    delivery: DeliveryStats = field(default_factory=DeliveryStats)


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

    def tick(self, now: datetime | None = None, *, rules: Iterable[str] | None = None) -> TickReport:
        """Evaluate (all enabled rules, or ``rules``), apply, deliver what is due."""
        now = now or self.now()
        selected = self.rules(rules)
        snapshot = self.source.snapshot(now, [r.name for r in selected])
        report = TickReport(at=now)
        for rule in selected:
            report.observations[rule.name] = evaluate(rule, snapshot, now)
        report.tick = self.engine.apply(report.observations, now)
        report.delivery = self.outbox.deliver_due(now)
        if self.export and report.tick.transitions:
            try:
                export_history(self.store, self.config)
            except (OSError, LakeError) as exc:  # LakeError: table mode, its store or catalog down
                log.warning("cannot export alert history to the lake: %s", exc)
        return report

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
                out.append(self.tick(t))
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
