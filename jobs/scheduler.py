"""Running the jobs: one at a time per job, recorded in ``job_runs``, failed windows retried.

* :class:`JobLock` — an ``flock`` on ``<lake>/jobs/locks/<job>.lock``: two runs of one job never
  overlap (across processes too); the kernel releases it when a process dies.
* :func:`run_job` — runs one job for one window under its lock and records ``running`` then
  ``succeeded`` / ``failed`` (with the error) / ``skipped`` (no data, or busy) in ``job_runs``.
* :func:`nightly` — drift, shadow, cost report in that order for the window ending at ``until``
  (default: the latest ``[jobs] schedule`` time, UTC, so that runs from cron in any zone tile),
  after retrying every window of the last ``retry_days`` whose last run failed, was interrupted or
  was skipped as busy
  (the drift and shadow runs resume from their checkpoints: nothing is paid twice).
* :class:`NightlyService` — runs :func:`nightly` at the ``[jobs] schedule`` times (UTC), catching
  up, oldest first, on every scheduled time of the last ``retry_days`` it missed (while it was down);
  ``costline jobs serve``.
* opt-in (``[serving.router.loop] nightly``): after the shadow job, ``route-retrain`` trains a
  routing candidate on the latest labels and gates it against the policy in service when the
  ``routing_tier_match_drop`` condition holds (:mod:`costline.serving.routing.loop`).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

from costline.config import Config
from costline.jobs.errors import JobBusyError, JobsError, NoDataError
from costline.jobs.store import JobStore, job_store, utc_naive

__all__ = ["JOBS", "JobLock", "JobOutcome", "Runner", "run_job", "nightly", "default_runners", "NightlyService",
           "parse_schedule", "previous_due", "ROUTE_RETRAIN", "route_retrain_runner"]

log = logging.getLogger(__name__)

JOBS: tuple[str, ...] = ("drift", "shadow", "cost-report")

#: ``runner(config, since, until) -> (result id, rows, cost_usd)``
Runner = Callable[[Config, datetime, datetime], tuple[str, int, float]]


class JobLock:
    """Exclusive, non-blocking lock of one job (``with JobLock(store, "drift"):``)."""

    def __init__(self, store: JobStore, job: str) -> None:
        self.path = store.locks / f"{job}.lock"
        self.job = job
        self._fd: int | None = None

    def acquire(self) -> "JobLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JobBusyError(f"another `{self.job}` run holds {self.path}: wait for it to finish") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "JobLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass(frozen=True)
class JobOutcome:
    run_id: str
    job: str
    since: datetime
    until: datetime
    status: str  # succeeded | failed | skipped
    rows: int = 0
    cost_usd: float = 0.0
    error: str | None = None
    result_id: str | None = None
    attempt: int = 1


def default_runners(*, client: Any = None, student: Any = None, embedder: Any = None, batch: bool = False,
                    seed: int = 0, sleep: Callable[[float], None] | None = None,
                    show_progress: bool = False,
                    now: Callable[[], datetime] | None = None) -> dict[str, Runner]:
    """The three jobs as runners (clients and the clock injected for tests and the demo)."""
    clock: dict[str, Any] = {} if now is None else {"now": now}
    from costline.jobs.cost_report import run_cost_report
    from costline.jobs.drift import run_drift
    from costline.jobs.shadow import run_shadow

    def drift(config: Config, since: datetime, until: datetime) -> tuple[str, int, float]:
        r = run_drift(config, since=since, until=until, seed=seed, batch=batch, client=client, student=student,
                      embedder=embedder, sleep=sleep, show_progress=show_progress, **clock)
        if r.flagged:  # opt-in ([distill] redistill_on_drift): export fresh traffic of the drifted subtypes
            from costline.distill.redistill import on_drift

            on_drift(config, r.flagged, until, drift_run_id=r.run_id, **clock)
        return r.run_id, len(r.rows), r.cost_usd

    def shadow(config: Config, since: datetime, until: datetime) -> tuple[str, int, float]:
        r = run_shadow(config, since=since, until=until, seed=seed, batch=batch, client=client, embedder=embedder,
                       sleep=sleep, show_progress=show_progress, **clock)
        return r.run_id, len(r.rows), r.cost_usd

    def cost(config: Config, since: datetime, until: datetime) -> tuple[str, int, float]:
        r = run_cost_report(config, since=since, until=until)
        return r.report_id, len(r.stages), 0.0

    return {"drift": drift, "shadow": shadow, "cost-report": cost,
            ROUTE_RETRAIN: route_retrain_runner(client=client, embedder=embedder, now=now)}


#: The opt-in routing step of the nightly run (not one of :data:`JOBS`).
ROUTE_RETRAIN = "route-retrain"


def route_retrain_runner(*, client: Any = None, embedder: Any = None,
                         now: Callable[[], datetime] | None = None) -> Runner:
    """Retrain and gate a routing candidate when ``routing_tier_match_drop`` holds (else: no data)."""

    def run(config: Config, since: datetime, until: datetime) -> tuple[str, int, float]:
        from costline.serving.routing.labels import NotEnoughLabelsError
        from costline.serving.routing.loop import retrain_candidate, tier_match_breaches

        breaches = tier_match_breaches(config, until)
        if not breaches:
            raise NoDataError("the tier-match rate holds on every tier: no routing candidate trained")
        try:
            r = retrain_candidate(config, until=until, client=client, embedder=embedder, breaches=breaches,
                                  **({} if now is None else {"now": now}))
        except NotEnoughLabelsError as exc:
            raise NoDataError(str(exc)) from None
        log.warning("routing: %s", r.summary())
        return r.summary(), r.labels, r.cost_usd

    return run


def _record(store: JobStore, o: JobOutcome, *, started: datetime, finished: datetime | None, seq: int,
            retry_of: str | None, now: datetime) -> None:
    store.write("job_runs", f"{o.run_id}.{seq}", [{
        "run_id": o.run_id, "job": o.job, "window_since": o.since, "window_until": o.until, "started_at": started,
        "finished_at": finished, "status": o.status, "rows": o.rows, "cost_usd": o.cost_usd, "error": o.error,
        "attempt": o.attempt, "retry_of": retry_of, "result_id": o.result_id, "updated_at": now,
    }])


def _rows(con: Any, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    cur = con.execute(sql, params)
    cols = [c[0] for c in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def _attempts(config: Config, job: str, until: datetime) -> list[dict[str, Any]]:
    from costline.jobs.store import job_runs_lake

    con = job_runs_lake(config)
    try:
        return _rows(con, "SELECT * FROM job_runs WHERE job = $j AND window_until = $u ORDER BY started_at",
                     {"j": job, "u": until})
    finally:
        con.close()


def run_job(
    config: Config,
    job: str,
    *,
    since: datetime,
    until: datetime,
    runner: Runner,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> JobOutcome:
    """Run ``job`` for ``[since, until)`` under its lock; record it; never raises for a job failure."""
    since, until = utc_naive(since), utc_naive(until)
    store = job_store(config).init()
    previous = _attempts(config, job, until)
    attempt = len(previous) + 1
    retry_of = previous[-1]["run_id"] if previous else None
    run_id = f"{job}@{until:%Y%m%dT%H%M}#{attempt}"
    lock = JobLock(store, job)
    started = utc_naive(now())
    try:
        lock.acquire()
    except JobBusyError as exc:
        o = JobOutcome(run_id, job, since, until, "skipped", error=f"busy: {exc}", attempt=attempt)
        _record(store, o, started=started, finished=started, seq=0, retry_of=retry_of, now=started)
        return o
    try:
        _record(store, JobOutcome(run_id, job, since, until, "running", attempt=attempt), started=started,
                finished=None, seq=0, retry_of=retry_of, now=started)
        try:
            result_id, rows, cost = runner(config, since, until)
            o = JobOutcome(run_id, job, since, until, "succeeded", rows, cost, None, result_id, attempt)
        except NoDataError as exc:
            o = JobOutcome(run_id, job, since, until, "skipped", error=f"no data: {exc}", attempt=attempt)
        except Exception as exc:  # noqa: BLE001 - recorded with its reason and retried next time
            log.exception("job %s for the window ending %s failed", job, until)
            why = f"{type(exc).__name__}: {exc}"
            if previous and previous[-1].get("error"):
                why += f" (attempt {attempt}; previous: {previous[-1]['error']})"
            o = JobOutcome(run_id, job, since, until, "failed", error=why, attempt=attempt)
        finished = utc_naive(now())
        _record(store, o, started=started, finished=finished, seq=1, retry_of=retry_of, now=finished)
        return o
    finally:
        lock.release()


def _failed_windows(config: Config, until: datetime) -> list[tuple[str, datetime, datetime]]:
    """(job, since, until) of earlier windows whose latest run failed, never finished, or was skipped
    because another run of the job held its lock (``busy``: that night was never evaluated)."""
    from costline.jobs.store import job_runs_lake

    horizon = until - timedelta(days=config.jobs.retry_days)
    con = job_runs_lake(config)
    try:
        rows = _rows(con, """
            SELECT job, window_since, window_until FROM (
              SELECT *, row_number() OVER (PARTITION BY job, window_until ORDER BY updated_at DESC, attempt DESC) AS k
              FROM job_runs)
            WHERE k = 1 AND (status IN ('failed', 'running') OR (status = 'skipped' AND starts_with(error, 'busy:')))
              AND window_until < $u AND window_until >= $h
            ORDER BY window_until""", {"u": until, "h": horizon})
    finally:
        con.close()
    return [(r["job"], r["window_since"], r["window_until"]) for r in rows]


def nightly(
    config: Config,
    *,
    until: datetime | None = None,
    runners: Mapping[str, Runner] | None = None,
    jobs: Sequence[str] = JOBS,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    notify: bool = False,
) -> list[JobOutcome]:
    """Retry failed earlier windows, then run ``jobs`` in order for ``[until - window_hours, until)``.

    ``until`` defaults to the latest ``[jobs] schedule`` time (UTC) at or before now: not the current hour, so
    that consecutive runs started by cron tile the timeline whatever the host's zone and its DST changes (a run
    fired an hour late or early still ends its window where the previous one's next window starts). One job
    failing does not stop the next.
    With ``notify`` the alert rules over the jobs' views are evaluated afterwards.
    """
    runners = runners or default_runners()
    for job in jobs:
        if job not in runners:
            raise JobsError(f"unknown job {job!r}: choose from {', '.join(runners)}")
    end = previous_due(parse_schedule(config.jobs.schedule), now()) if until is None else utc_naive(until)
    start = end - timedelta(hours=config.jobs.window_hours)
    out: list[JobOutcome] = []
    for job, since, wuntil in _failed_windows(config, end):
        if job in jobs:
            log.info("retrying %s for the window ending %s", job, wuntil)
            out.append(run_job(config, job, since=since, until=wuntil, runner=runners[job], now=now))
    for job in jobs:
        out.append(run_job(config, job, since=start, until=end, runner=runners[job], now=now))
    if config.serving.router.loop.nightly and "shadow" in jobs:
        runner = runners.get(ROUTE_RETRAIN) or route_retrain_runner()
        out.append(run_job(config, ROUTE_RETRAIN, since=start, until=end, runner=runner, now=now))
    if notify:
        try:
            from costline.alerts import evaluate_job_rules

            evaluate_job_rules(config, now=now())
        except Exception as exc:  # noqa: BLE001 - alerting is best effort here; the results are stored
            log.warning("could not evaluate the job alert rules: %s", exc)
    return out


def parse_schedule(times: Sequence[str]) -> list[time]:
    """``["02:00", "14:30"]`` → sorted times of day; raises :class:`JobsError` naming a bad entry."""
    out = []
    for t in times:
        try:
            hh, mm = t.strip().split(":")
            out.append(time(int(hh), int(mm)))
        except ValueError:
            raise JobsError(f"[jobs] schedule: {t!r} is not a time of day HH:MM (UTC)") from None
    if not out:
        raise JobsError("[jobs] schedule: give at least one time of day, e.g. [\"02:00\"]")
    return sorted(out)


def previous_due(times: Sequence[time], at: datetime) -> datetime:
    """The latest of the times of day ``times`` (UTC, from :func:`parse_schedule`) at or before ``at`` (naive UTC)."""
    at = utc_naive(at)
    for days_back in range(0, 2):
        day = (at - timedelta(days=days_back)).date()
        for t in sorted(times, reverse=True):
            due = datetime.combine(day, t)
            if due <= at:
                return due
    raise JobsError("[jobs] schedule: give at least one time of day, e.g. [\"02:00\"]")


class NightlyService:
    """Runs :func:`nightly` at each scheduled time. ``now`` and ``wait`` are injectable for tests."""

    def __init__(self, config: Config, *, runners: Mapping[str, Runner] | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC), notify: bool = True) -> None:
        self.config = config
        self.times = parse_schedule(config.jobs.schedule)
        self.runners = runners
        self.now = now
        self.notify = notify
        self.last_due: datetime | None = None

    def previous_due(self, at: datetime) -> datetime:
        """The latest scheduled time at or before ``at`` (naive UTC)."""
        return previous_due(self.times, at)

    def next_due(self, after: datetime) -> datetime:
        after = utc_naive(after)
        for days_ahead in range(0, 2):
            day = (after + timedelta(days=days_ahead)).date()
            for t in self.times:
                due = datetime.combine(day, t)
                if due > after:
                    return due
        raise AssertionError("unreachable")

    def missed(self, due: datetime) -> list[datetime]:
        """The scheduled times of the last ``retry_days`` up to ``due``, oldest first, whose window some job of
        :data:`JOBS` has not evaluated: the nights the service (or its host) was down, and ``due`` when it has not run.
        A job evaluated a night's window when one of its recorded windows (``job_runs``, any outcome) covers more
        than half of it: after ``[jobs] schedule`` or ``window_hours`` changed, the nights the old schedule evaluated
        are not run (and paid for) again under the new times. Before ``due``, only times after the earliest window
        any job recorded count: a fresh lake starts with the latest scheduled time, not with days of back runs."""
        from costline.jobs.store import job_runs_lake

        hours = timedelta(hours=self.config.jobs.window_hours)
        horizon = due - timedelta(days=self.config.jobs.retry_days)
        con = job_runs_lake(self.config)
        try:
            rows = _rows(con, "SELECT DISTINCT job, window_since, window_until FROM job_runs "
                              "WHERE list_contains($j, job) AND window_until > $h",
                         {"j": list(JOBS), "h": horizon - hours})
            first = con.execute("SELECT min(window_until) FROM job_runs WHERE list_contains($j, job)",
                                {"j": list(JOBS)}).fetchone()[0]
        finally:
            con.close()
        windows: dict[str, list[tuple[datetime, datetime]]] = {}
        for r in rows:
            if r["window_since"] is not None and r["window_until"] is not None:
                windows.setdefault(r["job"], []).append((r["window_since"], r["window_until"]))

        def evaluated(job: str, since: datetime, until: datetime) -> bool:
            return any(min(until, b) - max(since, a) > (until - since) / 2 for a, b in windows.get(job, ()))

        out = []
        at = self.next_due(horizon - timedelta(microseconds=1))  # the first scheduled time at or after the horizon
        while at <= due:
            if (not all(evaluated(job, at - hours, at) for job in JOBS)
                    and (at == due or (first is not None and at > first))):
                out.append(at)
            at = self.next_due(at)
        return out

    def tick(self) -> list[JobOutcome]:
        """Run the nightly jobs for each scheduled time that has passed and was not run: the latest one and, oldest
        first before it, those of the last ``retry_days`` with no recorded run (missed while the service was down;
        a night whose run failed or was interrupted is retried by :func:`nightly` itself)."""
        due = self.previous_due(self.now())
        if self.last_due is not None and due <= self.last_due:
            return []
        self.last_due = due
        pending = self.missed(due)
        late = [d for d in pending if d < due]
        if late:
            log.warning("catching up on %d scheduled run(s) missed while the service was down: the windows ending "
                        "%s UTC", len(late), ", ".join(f"{d:%Y-%m-%d %H:%M}" for d in late))
        out: list[JobOutcome] = []
        for d in pending:  # the job alert rules once, after the last
            out += nightly(self.config, until=d, runners=self.runners, now=self.now,
                           notify=self.notify and d == pending[-1])
        return out

    def run_forever(self, stop: threading.Event, *, on_outcomes: Callable[[list[JobOutcome]], None] | None = None
                    ) -> None:
        """Tick until ``stop`` is set, sleeping until the next scheduled time (at most ``poll_s``)."""
        while not stop.is_set():
            outcomes = self.tick()
            if outcomes and on_outcomes is not None:
                on_outcomes(outcomes)
            gap = (self.next_due(self.now()) - utc_naive(self.now())).total_seconds()
            stop.wait(max(0.05, min(gap, self.config.jobs.poll_s)))

