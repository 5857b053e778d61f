"""Where rules get their rows: the lake's DuckDB views, the alert state, a DLQ counter.

:class:`AlertSource` runs a few small SQL queries through
:func:`costline.lake.open_lake` and returns a :class:`~costline.alerts.rules.Snapshot`.
A view the nightly jobs have not created yet leaves its part ``None`` (the rules
that need it are skipped). A query that fails (a corrupt Parquet file in the lake)
also leaves its part ``None`` — those rules keep their state — and is logged as a
warning and listed in the snapshot's ``query_errors``, which the ``lake_unreadable``
rule turns into an alert of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from costline.alerts.rules import JOB_RULES, POOL_HOURS, RULE_NAMES, Snapshot, closed_window
from costline.alerts.store import AlertStore
from costline.config import Config, KafkaConfig
from costline.kafka_security import client_options, make_client
from costline.timeutil import utc_naive as _naive

__all__ = ["AlertSource", "kafka_dlq_counter", "CACHE_SQL", "TIERS_SQL", "REJECTIONS_SQL", "LAST_SPAN_SQL"]

log = logging.getLogger(__name__)

#: The hourly lookups and hits per tenant that the hit-rate rule judges (``lookup_links``: the ``lookups`` view's
#: rows before it names their tenant). A lookup with no tenant of its own that names its request
#: (``costline.request.id``) while that request's span is not in the lake (yet) is left out: whose it is is not
#: known yet — a miss's request span ends after its model call and often lands after the hour's first evaluation
#: — so counting it under the tenant-less series ``(none)`` made that series' hit rate drop (and acme's rise) at
#: every hour boundary. A lookup with no request at all stays in ``(none)``. ``$lo``/``$hi``: the times read.
CACHE_HOURLY_SQL = """
SELECT date_trunc('hour', ts) AS window_start, coalesce(tenant, request_tenant) AS tenant,
       count(*) AS lookups, count(*) FILTER (WHERE hit) AS hits
FROM lookup_links
WHERE ts >= $lo AND ts < $hi
  AND NOT (tenant IS NULL AND request_tenant IS NULL AND linked_span_id IS NULL AND request_id IS NOT NULL)
GROUP BY ALL"""


def _cache_sql(hourly: str) -> str:
    """Per tenant (the tenant-less series too), the closed hour ``$w``'s lookups and hits beside its two baselines,
    as ``cache_hit_rate_7d`` has them (``avg_7d``/``lookups_7d``: the 168 hours before; ``avg_7d_hour``/
    ``lookups_7d_hour``: the same hour of day on the 7 days before), over ``hourly`` (rows of
    :data:`CACHE_HOURLY_SQL`). A tenant with history but no lookups in ``$w`` has a row with ``lookups`` 0 and
    ``hit_rate`` NULL: the rule reports a tenant whose lookups stopped."""
    return f"""
SELECT $w AS window_start, tenant,
       coalesce(sum(hits) FILTER (WHERE window_start = $w), 0)
         / nullif(coalesce(sum(lookups) FILTER (WHERE window_start = $w), 0), 0) AS hit_rate,
       sum(hits) FILTER (WHERE window_start < $w) / nullif(sum(lookups) FILTER (WHERE window_start < $w), 0)
         AS avg_7d,
       coalesce(sum(lookups) FILTER (WHERE window_start = $w), 0) AS lookups,
       coalesce(sum(hits) FILTER (WHERE window_start = $w), 0) AS hits,
       sum(lookups) FILTER (WHERE window_start < $w) AS lookups_7d,
       sum(hits) FILTER (WHERE window_start < $w AND hour(window_start) = hour($w))
         / nullif(sum(lookups) FILTER (WHERE window_start < $w AND hour(window_start) = hour($w)), 0) AS avg_7d_hour,
       sum(lookups) FILTER (WHERE window_start < $w AND hour(window_start) = hour($w)) AS lookups_7d_hour
FROM {hourly}
WHERE window_start >= $w - INTERVAL 168 HOURS AND window_start <= $w
GROUP BY tenant"""


CACHE_SQL = _cache_sql("(" + CACHE_HOURLY_SQL.replace("$lo", "($w - INTERVAL 168 HOURS)")
                       .replace("$hi", "($w + INTERVAL 1 HOUR)") + ")")
#: The frozen copy of :data:`CACHE_HOURLY_SQL` (a backfill reads it instead of the lake).
_FROZEN_CACHE = "alert_cache_hourly"

#: What the calls cost per success (``call_cost_usd``): the student's GPU hosting is a fixed cost per
#: hour, so its share per request follows the hour's volume (a quiet night hour costs 10x a busy one per
#: request) and says nothing about routing or quality; it is left out here and shown by every other figure.
#: An hour whose cost is NaN / NULL is left out of the sums (its successes too) and counted
#: (``ignored``), so one bad figure cannot turn a week of cost per success into NaN. ``recent``: the
#: ``POOL_HOURS - 1`` hours before ``$w``, one entry per hour with a finite cost (window_start, successes,
#: cost_usd), which the rule pools with a quiet hour (:data:`costline.alerts.rules.POOL_HOURS`).
TIERS_SQL = f"""
SELECT $w AS window_start, tier,
       sum(requests)  FILTER (WHERE window_start = $w) AS requests,
       sum(successes) FILTER (WHERE window_start = $w AND isfinite(call_cost_usd)) AS successes,
       sum(call_cost_usd) FILTER (WHERE window_start = $w AND isfinite(call_cost_usd)) AS cost_usd,
       sum(successes) FILTER (WHERE window_start < $w AND isfinite(call_cost_usd)) AS successes_7d,
       sum(call_cost_usd) FILTER (WHERE window_start < $w AND isfinite(call_cost_usd)) AS cost_usd_7d,
       count(*) FILTER (WHERE window_start = $w AND NOT coalesce(isfinite(call_cost_usd), false)) AS ignored,
       count(*) FILTER (WHERE window_start < $w AND NOT coalesce(isfinite(call_cost_usd), false)) AS ignored_7d,
       sum(requests) FILTER (WHERE window_start = $w AND isfinite(call_cost_usd)) AS n,
       sum(call_cost_sq) FILTER (WHERE window_start = $w AND isfinite(call_cost_usd)) AS cost_sq,
       sum(success_call_cost) FILTER (WHERE window_start = $w AND isfinite(call_cost_usd)) AS success_cost,
       sum(requests) FILTER (WHERE window_start < $w AND isfinite(call_cost_usd)) AS n_7d,
       sum(call_cost_sq) FILTER (WHERE window_start < $w AND isfinite(call_cost_usd)) AS cost_sq_7d,
       sum(success_call_cost) FILTER (WHERE window_start < $w AND isfinite(call_cost_usd)) AS success_cost_7d,
       list({{'window_start': window_start, 'successes': successes, 'cost_usd': call_cost_usd, 'n': requests,
              'cost_sq': call_cost_sq, 'success_cost': success_call_cost}}
            ORDER BY window_start DESC)
         FILTER (WHERE window_start < $w AND window_start >= $w - INTERVAL {POOL_HOURS - 1} HOURS
                 AND isfinite(call_cost_usd)) AS recent
FROM tier_hourly
WHERE window_start >= $w - INTERVAL 168 HOURS AND window_start <= $w
GROUP BY tier"""

#: Per tier: the closed hour's attempts, rejected answers and reasons, and the preceding 168 hours' sums;
#: ``recent``: the ``POOL_HOURS - 1`` hours before ``$w``, one entry per hour (window_start, attempts, rejected,
#: problems), which the rule pools with a quiet hour (:data:`costline.alerts.rules.POOL_HOURS`).
REJECTIONS_SQL = f"""
SELECT $w AS window_start, tier,
       sum(attempts) FILTER (WHERE window_start = $w) AS attempts,
       sum(rejected) FILTER (WHERE window_start = $w) AS rejected,
       max(problems) FILTER (WHERE window_start = $w) AS problems,
       sum(attempts) FILTER (WHERE window_start < $w) AS attempts_7d,
       sum(rejected) FILTER (WHERE window_start < $w) AS rejected_7d,
       list({{'window_start': window_start, 'attempts': attempts, 'rejected': rejected, 'problems': problems}}
            ORDER BY window_start DESC)
         FILTER (WHERE window_start < $w AND window_start >= $w - INTERVAL {POOL_HOURS - 1} HOURS) AS recent
FROM rejections_hourly
WHERE window_start >= $w - INTERVAL 168 HOURS AND window_start <= $w
GROUP BY tier"""

#: Per hourly rule, the hours in ``[$lo, $hi]`` that hold its data (:meth:`AlertSource.hours_with_data`).
_HOURS_SQL = {
    "cache_hit_rate_drop": "SELECT DISTINCT date_trunc('hour', ts) FROM lookups_raw "
                           "WHERE ts >= $lo AND ts < $hi + INTERVAL 1 HOUR",
    "cost_per_success_rise": "SELECT DISTINCT window_start FROM tier_hourly "
                             "WHERE window_start >= $lo AND window_start <= $hi AND requests > 0",
    "rejected_attempts_rise": "SELECT DISTINCT window_start FROM rejections_hourly "
                              "WHERE window_start >= $lo AND window_start <= $hi AND attempts > 0",
}

#: The tables whose arrivals say whether spans still arrive (``<name>_raw`` in the lake).
_SPAN_TABLES = ("requests", "calls", "lookups")


def _last_span_sql(source: Callable[[str], str]) -> str:
    """When the newest span at or before ``$now`` reached the lake, over :data:`_SPAN_TABLES`; ``source(table)`` is
    the relation (a name or a subquery) read for each, with ``arrived`` (when the row reached the lake) and ``ts``
    (its event time). A row counts at its arrival; one that arrived after ``$now`` (a backfill judged as of a past
    time, or a writer whose clock runs ahead of this one) at its event time, if that is not after ``$now``."""
    newest = "\n  UNION ALL ".join(
        f"SELECT max(CASE WHEN arrived <= $now THEN arrived WHEN ts <= $now THEN ts END) AS ts FROM {source(t)}"
        for t in _SPAN_TABLES)
    return f"\nSELECT max(ts) FROM (\n  {newest})"


LAST_SPAN_SQL = _last_span_sql(lambda table: f"{table}_raw")


def _arrived_sql(lake_path: Any, table: str) -> str:
    """A local lake's ``table`` as ``ts`` and ``arrived``: when its data file was written (its mtime). Arrival, not
    the span's own time, says the pipeline is alive: an app host whose clock lags by more than ``silent_s`` must
    not page while its spans keep arriving, nor one whose clock runs ahead keep the rule quiet after the pipeline
    died. A compacted file (``c-...``: written by ``costline lake compact`` long after its spans arrived) counts
    each row at its event time, capped at the file's mtime, as before."""
    from costline.lake._files import check_glob_free
    from costline.sqlutil import sql_str

    glob = sql_str(check_glob_free(lake_path) / table / "*" / "*.parquet")
    mtime = "timezone('UTC', b.last_modified)"
    return (f"SELECT d.ts AS ts, CASE WHEN starts_with(parse_filename(d.filename), 'c-') "
            f"THEN least(d.ts, {mtime}) ELSE {mtime} END AS arrived "
            f"FROM read_parquet({glob}, filename = true, union_by_name = true) d "
            f"JOIN read_blob({glob}) b ON b.filename = d.filename")


def _raw_ts_sql(config: Config, table: str, committed: dict[str, datetime | None] | None = None) -> str:
    """What :data:`LAST_SPAN_SQL` reads as ``<table>_raw``: the event times and arrivals. A local lake's rows arrived
    when their file was written (:func:`_arrived_sql`); table mode's when the table last committed rows
    (``committed``, :func:`_last_commits`, read now when not given): no span of the snapshot arrived later."""
    if config.lake.mode == "local":
        return _arrived_sql(config.lake.path, table)
    at = (_last_commits(config) if committed is None else committed).get(table)
    if at is None:  # no snapshot, so no rows
        return f"SELECT ts, CAST(NULL AS TIMESTAMP) AS arrived FROM {table}_raw"
    return f"SELECT ts, TIMESTAMP '{at:%Y-%m-%d %H:%M:%S.%f}' AS arrived FROM {table}_raw"


def _last_commits(config: Config) -> dict[str, datetime | None]:
    """Table mode: per span table, when its newest snapshot that added rows was committed (UTC)."""
    from costline.tablelake import TableLake

    return TableLake(config.lake).last_data_commits(_SPAN_TABLES)


def _live_last_span_sql(config: Config) -> str:
    """:data:`LAST_SPAN_SQL` over the live views, each span table's times bounded by arrival."""
    committed = None if config.lake.mode == "local" else _last_commits(config)  # read once, after the views
    return _last_span_sql(lambda t: f"({_raw_ts_sql(config, t, committed)})")


_JOB_VIEWS = {"student_drift": "eval_runs", "routing_tier_match_drop": "shadow_runs"}
#: The nightly routing retrain's verdicts, reported in the routing_tier_match_drop alert.
_RETRAINS = "route_retrains"
#: Exports the drift job started (costline.distill.redistill): the student_drift alert names them.
_REDISTILL_VIEW = "distill_exports"


class AlertSource:
    """Builds snapshots from the lake. ``connect`` opens a DuckDB connection with the views
    (default :func:`costline.lake.open_lake`); ``dlq_count`` returns the dead-letter topic's size."""

    def __init__(
        self,
        config: Config,
        *,
        store: AlertStore | None = None,
        connect: Callable[[Config], Any] | None = None,
        dlq_count: Callable[[], int | None] | None = None,
        job_history_days: int = 60,
    ) -> None:
        self.config = config
        self.store = store
        self._connect = connect
        self.dlq_count = dlq_count
        self.job_history_days = job_history_days
        self._frozen: Any = None

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """Within the block every snapshot reads one copy of what the rules query, taken once.

        For backfills (:meth:`AlertService.replay`): evaluating hundreds of past hours then costs
        one pass over the lake instead of one per hour. Only past windows are judged, so data
        arriving meanwhile is not missed by a live service (which never freezes).
        """
        import duckdb

        self._require_lake()
        live = self._open()
        snap = duckdb.connect()
        try:
            committed = None if self.config.lake.mode == "local" else _last_commits(self.config)
            snap.execute("SET TimeZone = 'UTC'")
            tables = {
                _FROZEN_CACHE: CACHE_HOURLY_SQL.replace("$lo", "TIMESTAMP '0001-01-01'").replace(
                    "$hi", "TIMESTAMP '9999-12-31'"),
                "tier_hourly": "SELECT * FROM tier_hourly",
                "rejections_hourly": "SELECT * FROM rejections_hourly",
                # LAST_SPAN_SQL only needs the event times and arrivals (as live).
                **{f"{t}_raw": _raw_ts_sql(self.config, t, committed) for t in _SPAN_TABLES},
            }
            views = {r[0] for r in live.execute("SELECT table_name FROM information_schema.tables").fetchall()}
            tables.update({v: f"SELECT * FROM {v}" for v in (*_JOB_VIEWS.values(), _RETRAINS, _REDISTILL_VIEW)
                           if v in views})
            for name, sql in tables.items():
                rel = live.sql(sql)
                # DuckDB 2 names it to_arrow_table, 1.x arrow(); read by name in the next statement.
                data = rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()  # noqa: F841
                snap.execute(f"CREATE TABLE {name} AS SELECT * FROM data")
        finally:
            live.close()
        self._frozen = snap
        try:
            yield
        finally:
            self._frozen = None
            snap.close()

    def _require_lake(self) -> None:
        """No lake at ``[lake] path`` is :class:`costline.lake.NoLake` for the rules over the span tables,
        not an empty lake made up on the spot that every rule finds quiet (a mistyped path). The job
        rules read only the jobs' results: they may run on a lake that has nothing else yet."""
        if self._connect is None and self._frozen is None:
            from costline.lake import require_lake

            require_lake(self.config)

    def _open(self) -> Any:
        if self._frozen is not None:
            return _NoClose(self._frozen)
        if self._connect is not None:
            return self._connect(self.config)
        from costline.lake import open_lake

        return open_lake(self.config)

    @staticmethod
    def _rows(con: Any, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        cur = con.execute(sql, params)
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row)) for row in cur.fetchall()]

    def _try(self, what: str, fn: Callable[[], Any], errors: list[tuple[str, str]] | None = None) -> Any:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - duckdb.Error and friends: skip the rule, keep going
            log.warning("alerts: %s could not be read, the rules that need it are skipped: %s", what, exc)
            if errors is not None:
                errors.append((what, f"{type(exc).__name__}: {exc}"))
            return None

    def hours_with_data(self, rule: str, since: datetime, until: datetime) -> set[datetime]:
        """The hours (naive UTC starts) in ``[since, until]`` that hold data of an hourly rule's series: lookups for
        ``cache_hit_rate_drop``, requests for ``cost_per_success_rise``, attempts for ``rejected_attempts_rise``.
        A query that fails is logged and reads as no hour."""
        sql = _HOURS_SQL.get(rule)
        if sql is None:
            return set()
        con = self._try("the lake's views", self._open)
        if con is None:
            return set()
        try:
            rows = self._try(f"hours with data for {rule}", lambda: con.execute(
                sql, {"lo": _naive(since), "hi": _naive(until)}).fetchall()) or []
        finally:
            con.close()
        return {_naive(r[0]) for r in rows if r[0] is not None}

    def record_times(self) -> dict[int, datetime | None]:
        """Per partition of ``[kafka] topic``, how far its records are in the lake: the newest Kafka record time its
        committed batches recorded (naive UTC; :meth:`costline.lake.Lake.record_times`), None where none recorded
        (manifests of an older costline). Empty when unknown: table mode (its snapshots record none), no lake, or
        an unreadable ``_offsets`` folder (logged)."""
        if self.config.lake.mode != "local":
            return {}
        from costline.lake import Lake

        def read() -> dict[int, datetime | None]:
            got = Lake(self.config.lake.path).record_times(self.config.kafka.topic)
            return {p: None if ms is None else _naive(datetime.fromtimestamp(ms / 1000, UTC)) for p, ms in got.items()}

        return self._try("the lake's record times", read) or {}

    def snapshot(self, now: datetime, rules: Iterable[str] = RULE_NAMES, *, window: datetime | None = None
                 ) -> Snapshot:
        """The rows the ``rules`` need as of ``now``; ``window``: the hour the hourly rules read (default: the last
        closed one), to judge an hour whose data landed late."""
        wanted = set(rules)
        w = closed_window(now, self.config.alerts.settle_s) if window is None else _naive(window)
        n = _naive(now)
        errors: list[tuple[str, str]] = []
        cache = tiers = rejections = evals = shadows = retrains = redistills = None
        last_span, spans_known = None, False
        if not wanted <= set(JOB_RULES):
            self._require_lake()
        con = self._try("the lake's views", self._open, errors)
        if con is None:
            return Snapshot(query_errors=errors if "lake_unreadable" in wanted else None)
        try:
            views = {r[0] for r in con.execute(
                "SELECT table_name FROM information_schema.tables").fetchall()}
            if "cache_hit_rate_drop" in wanted:
                cache_sql = _cache_sql(_FROZEN_CACHE) if self._frozen is not None else CACHE_SQL
                cache = self._try("cache_hit_rate_7d", lambda: self._rows(con, cache_sql, {"w": w}), errors)
            if "cost_per_success_rise" in wanted:
                tiers = self._try("tier_hourly", lambda: self._rows(con, TIERS_SQL, {"w": w}), errors)
            if "rejected_attempts_rise" in wanted:
                rejections = self._try("rejections_hourly",
                                       lambda: self._rows(con, REJECTIONS_SQL, {"w": w}), errors)
            job_rows: dict[str, Any] = {}
            for rule in JOB_RULES:
                view = _JOB_VIEWS[rule]
                if rule not in wanted:
                    continue
                if view not in views:
                    log.debug("alerts: view %s does not exist yet: %s skipped", view, rule)
                    continue
                since = n - timedelta(days=self.job_history_days)
                job_rows[rule] = self._try(view, lambda v=view: self._rows(
                    con, f"SELECT * FROM {v} WHERE finished_at >= $since", {"since": since}), errors)
            evals, shadows = job_rows.get("student_drift"), job_rows.get("routing_tier_match_drop")
            retrains = None
            if shadows is not None and _RETRAINS in views:  # optional: the alert works without it
                since = n - timedelta(days=self.job_history_days)
                retrains = self._try(_RETRAINS, lambda: self._rows(
                    con, f"SELECT * FROM {_RETRAINS} WHERE evaluated_at >= $since", {"since": since}))
            if evals and _REDISTILL_VIEW in views:
                redistills = self._try(_REDISTILL_VIEW, lambda: self._rows(
                    con, f"SELECT run_id, drift_run_id, subtype FROM {_REDISTILL_VIEW} WHERE trigger = 'drift' "
                    "AND drift_run_id IN (SELECT unnest($ids))",
                    {"ids": sorted({str(r["run_id"]) for r in evals})}))
            if "pipeline_silent" in wanted or "lake_unreadable" in wanted:  # reads every file of the lake
                got = self._try("last span", lambda: con.execute(
                    LAST_SPAN_SQL if self._frozen is not None  # the frozen tables hold the bounded times
                    else _live_last_span_sql(self.config), {"now": n}).fetchone(), errors)
                if got is not None and "pipeline_silent" in wanted:
                    last_span, spans_known = got[0], True
        finally:
            con.close()
        dlq = None
        if "dlq_growing" in wanted and self.dlq_count is not None and self.store is not None:
            count = self._try("DLQ size", self.dlq_count)
            if count is not None:
                window = self.config.alerts.dlq_growing.window_s
                self.store.add_sample("dlq", now, float(count), keep_s=max(4 * window, 3600.0))
                dlq = self.store.samples("dlq", since=now - timedelta(seconds=window))
        aside: list[str] = []
        if "lake_unreadable" in wanted and self._frozen is None and self.config.lake.mode == "local":
            from costline.lake import set_aside_files  # opening the views set them aside; they stay missing

            aside = self._try("set-aside files", lambda: [str(p) for p in set_aside_files(self.config.lake.path)],
                              errors) or []
        return Snapshot(cache=cache, tiers=tiers, rejections=rejections, eval_runs=evals, shadow_runs=shadows,
                        route_retrains=retrains,
                        redistills=redistills,
                        last_span_at=last_span, spans_known=spans_known, dlq_samples=dlq,
                        query_errors=errors if "lake_unreadable" in wanted else None, set_aside=aside)


class _NoClose:
    """A connection whose ``close`` is left to its owner (the frozen snapshot)."""

    def __init__(self, con: Any) -> None:
        self._con = con

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        return self._con.execute(*args, **kwargs)

    def close(self) -> None:
        """The snapshot's owner closes it."""


def kafka_dlq_counter(kafka: KafkaConfig, *, timeout_ms: int = 5000) -> Callable[[], int | None]:
    """A ``dlq_count`` callable: messages in the DLQ topic (end minus beginning offsets), None if unknown. The
    cluster's security settings are read now: a secret's unset variable is a ConfigError at start, not a warning
    on every tick."""
    security = client_options(kafka)

    def count() -> int | None:
        from kafka import KafkaConsumer, TopicPartition

        consumer = make_client(KafkaConsumer, bootstrap_servers=kafka.bootstrap,
                               request_timeout_ms=max(timeout_ms, 1000) + 1000, enable_auto_commit=False,
                               **security)
        try:
            parts = consumer.partitions_for_topic(kafka.dlq_topic)
            if not parts:
                return 0
            tps = [TopicPartition(kafka.dlq_topic, p) for p in parts]
            end = consumer.end_offsets(tps)
            begin = consumer.beginning_offsets(tps)
            return int(sum(end[tp] - begin[tp] for tp in tps))
        finally:
            consumer.close()

    return count
