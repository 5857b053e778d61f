"""`costline jobs cost-report`: what did each lever save, on real traffic?

The article's stacking table, computed from the lake for ``[since, until)``:

1. **baseline** — every request priced on the baseline (frontier) model with its actual tokens
   (every call it made; cache reads/writes, batch, US-only inference and a cloud's regional endpoint at their
   multipliers; fast mode and OpenAI's priority tier, premiums of the model that ran, are not carried over); a
   cache hit, which made no call, at its day's average baseline cost of an uncached request of its task type
   (else that task type's average over the range, else all requests');
2. **+ routing** — every API call at what it actually cost; student calls at the prices of the
   tier the student replaced (``student_replaces_tier``, budget) as if there were no student;
   cache hits imputed as above at routed prices;
3. **+ semantic cache** — cache hits cost nothing;
4. **+ distillation** — what was paid for calls (a student call with an explicit
   ``costline.cost_usd`` at that price), plus the student's GPU for every hour of the range that
   the hosting schedule covers (``[[pricing.hosting]]`` / ``student_usd_per_hour``), idle or not:
   read from the lake's ``student_hosting_hourly`` view, so the report and the views agree to the
   cent on the same (whole-hour) window.

Daily cost = total / days in the range; monthly = daily x ``days_per_month`` (30); cumulative
saving = 1 - stage / baseline. **Break-even** of the student = GPU cost per day / what one
student-served request saves (its price at the replaced tier): the requests per day at which the
student stops costing more than it saves (the article: ~100,000).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from costline.config import Config, ModelPrice
from costline.pricing import (cache_prices, cache_write_1h_price, long_prices, regional_endpoint_price,
                              us_inference_price, web_search_price)
from costline.jobs.errors import JobsError, NoDataError
from costline.timeutil import utc_naive as _utc

__all__ = ["StageRow", "CostReport", "build_cost_report", "run_cost_report", "cost_sql", "tier_model", "COST_SQL",
           "HOSTING_SQL", "STAGES"]

log = logging.getLogger(__name__)

STAGES: tuple[tuple[str, str], ...] = (
    ("baseline", "every request on the baseline model with its actual tokens"),
    ("routing", "each request on the tier the router chose (student calls at the replaced tier's price)"),
    ("cache", "semantic-cache hits cost nothing"),
    ("student", "student calls on the self-hosted GPU (hosting included)"),
)

_PRICE = """(greatest(c.input_tokens - c.cache_read_tokens - c.cache_creation_tokens, 0) * {inp}
          + c.cache_read_tokens * {read}
          + (c.cache_creation_tokens - least(coalesce(c.cache_creation_1h_tokens, 0), c.cache_creation_tokens))
            * {write}
          + least(coalesce(c.cache_creation_1h_tokens, 0), c.cache_creation_tokens) * {write_1h}
          + c.output_tokens * {out}) / 1e6 * CASE WHEN coalesce(c.batch, false) THEN {batch} ELSE 1 END
          * CASE WHEN c.inference_geo = 'us' THEN {us} ELSE 1 END
          * CASE WHEN c.endpoint_scope = 'regional' THEN {regional} ELSE 1 END
          + coalesce(c.web_search_requests, 0) * {search} / 1000.0"""
#: A model with a long-prompt band: each call priced in the band its own input falls in.
_BANDED = "(CASE WHEN c.input_tokens > {above} THEN {long} ELSE {short} END)"

#: Per day: request counts and the four stage totals (before hosting, which is added in Python).
#: A call cost that is NaN or infinite (a lake written before validation) is left out of the sums and
#: counted (``ignored_costs``): one bad figure must not turn every stage into NaN.
COST_SQL = """
WITH per_request AS (
  SELECT r.request_id, r.trace_id, CAST(r.ts AS DATE) AS day, coalesce(r.task_type, '(none)') AS task_type,
         r.cache_hit OR r.tier = 'cache' AS hit, r.tier = 'student' AS student,
         coalesce(sum({frontier}), 0) AS frontier_usd,
         coalesce(sum(CASE WHEN c.tier = 'student' THEN {replaced}
                           WHEN isfinite(c.cost_usd) THEN c.cost_usd ELSE 0 END), 0) AS routed_usd,
         coalesce(sum(CASE WHEN isfinite(c.cost_usd) THEN c.cost_usd ELSE 0 END), 0) AS paid_usd,
         count(c.cost_usd) FILTER (WHERE NOT isfinite(c.cost_usd)) AS ignored_costs
  FROM requests r
  LEFT JOIN calls c ON c.trace_id = r.trace_id AND c.request_span_id = r.span_id
  WHERE r.ts >= $since AND r.ts < $until
  GROUP BY ALL
), typical_day AS (
  SELECT day, task_type, avg(frontier_usd) AS f, avg(routed_usd) AS r FROM per_request WHERE NOT hit GROUP BY ALL
), typical AS (
  SELECT task_type, avg(frontier_usd) AS f, avg(routed_usd) AS r FROM per_request WHERE NOT hit GROUP BY ALL
), overall AS (
  SELECT avg(frontier_usd) AS f, avg(routed_usd) AS r FROM per_request WHERE NOT hit
)
SELECT p.day, count(*) AS requests, count(*) FILTER (WHERE p.hit) AS hits,
       count(*) FILTER (WHERE p.student AND NOT p.hit) AS student_requests,
       sum(CASE WHEN p.hit THEN coalesce(d.f, t.f, o.f, 0) ELSE p.frontier_usd END) AS baseline,
       sum(CASE WHEN p.hit THEN coalesce(d.r, t.r, o.r, 0) ELSE p.routed_usd END) AS routing,
       sum(CASE WHEN p.hit THEN 0 ELSE p.routed_usd END) AS cache,
       sum(CASE WHEN p.hit THEN 0 ELSE p.paid_usd END) AS student_api,
       sum(CASE WHEN p.student AND NOT p.hit THEN p.routed_usd - p.paid_usd ELSE 0 END) AS student_saved,
       sum(p.ignored_costs) AS ignored_costs
FROM per_request p
LEFT JOIN typical_day d ON d.day = p.day AND d.task_type = p.task_type
LEFT JOIN typical t ON t.task_type = p.task_type
CROSS JOIN overall o
GROUP BY p.day ORDER BY p.day
"""

#: Per day: the student's hosting over ``[since, until)`` from the views' hourly schedule.
HOSTING_SQL = """
SELECT CAST(window_start AS DATE) AS day, sum(hosting_usd) AS hosting_usd
FROM student_hosting_hourly WHERE window_start >= $since AND window_start < $until
GROUP BY 1 ORDER BY 1
"""


@dataclass(frozen=True)
class StageRow:
    step: int
    stage: str
    what: str
    total_cost_usd: float
    daily_cost_usd: float
    monthly_cost_usd: float
    cumulative_saving: float | None


@dataclass
class CostReport:
    report_id: str
    since: datetime
    until: datetime
    days: float
    requests: int
    cache_hits: int
    student_requests: int
    hosting_usd: float
    stages: list[StageRow]
    #: Student requests per day at which its GPU pays for itself (None: no student traffic).
    break_even_requests_per_day: float | None
    student_requests_per_day: float
    per_day: list[dict[str, Any]] = field(default_factory=list)
    generated_at: datetime | None = None
    #: Call costs left out because they were NaN or infinite in the lake.
    ignored_costs: int = 0

    # -- renderings ---------------------------------------------------------------------------
    def _cells(self) -> tuple[list[str], list[list[str]]]:
        cols = ["stage", "what changes", "daily cost", "monthly cost", "cumulative saving"]
        rows = [[("" if s.step == 1 else "+ ") + s.stage, s.what, f"${s.daily_cost_usd:,.2f}",
                 f"${s.monthly_cost_usd:,.2f}",
                 "—" if s.step == 1 or s.cumulative_saving is None else f"{s.cumulative_saving:.0%}"]
                for s in self.stages]
        return cols, rows

    def _footer(self) -> str:
        be = ("n/a (no student traffic)" if self.break_even_requests_per_day is None
              else f"{self.break_even_requests_per_day:,.0f} student requests/day")
        return (f"{self.requests:,} requests from {self.since:%Y-%m-%d %H:%M} to {self.until:%Y-%m-%d %H:%M} UTC "
                f"({self.days:g} days; {self.cache_hits:,} cache hits, {self.student_requests:,} on the student). "
                f"Student break-even: {be}; it served {self.student_requests_per_day:,.0f}/day." + self._ignored_note())

    def _ignored_note(self) -> str:
        n = self.ignored_costs
        if not n:
            return ""
        what = "1 call cost that was NaN/infinite was" if n == 1 else f"{n:,} call costs that were NaN/infinite were"
        return f" {what} left out (find them: SELECT * FROM calls WHERE NOT isfinite(cost_usd))."

    def to_text(self) -> str:
        cols, rows = self._cells()
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths)), "  ".join("-" * w for w in widths)]
        lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
        return "\n".join(lines + ["", self._footer()])

    def to_markdown(self) -> str:
        cols, rows = self._cells()
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines + ["", self._footer()])

    def to_json(self) -> str:
        def enc(v: Any) -> Any:
            if isinstance(v, (datetime, date)):
                return v.isoformat()
            if isinstance(v, float) and not math.isfinite(v):
                return None
            return v

        doc = asdict(self)
        doc = json.loads(json.dumps(doc, default=enc))
        return json.dumps(doc, indent=1)


def tier_model(config: Config, tier: str) -> ModelPrice | None:
    """The model the cost report prices ``tier`` at: the one ``[serving.backends]`` runs it on, else the first
    ``[[pricing.models]]`` entry of that tier; None when there is none."""
    name = config.serving.backends.tier_models.get(tier)
    for m in config.pricing.models:
        if (name and (m.model == name or name in m.aliases)) or (not name and m.tier == tier):
            return m
    return None


def _model_for(config: Config, tier: str) -> ModelPrice:
    found = tier_model(config, tier)
    if found is None:
        raise JobsError(f"no [[pricing.models]] entry of tier {tier!r}: the cost report prices with it")
    return found


def _price_sql(m: ModelPrice, config: Config) -> str:
    """The SQL of a call's price at ``m`` (its tokens as they were), in ``m``'s long-prompt band where it has one."""
    p = config.pricing
    read, write = cache_prices(m, p)

    def price(inp: float, out: float, scale: float) -> str:
        return _PRICE.format(inp=repr(float(inp)), out=repr(float(out)), read=repr(float(read * scale)),
                             write=repr(float(write * scale)),
                             write_1h=repr(float(cache_write_1h_price(m, p) * scale)),
                             batch=repr(float(p.batch_multiplier)), search=repr(float(web_search_price(m, p))),
                             us=repr(float(us_inference_price(m, p))),
                             regional=repr(float(regional_endpoint_price(m, p))))

    short = price(m.input_per_mtok, m.output_per_mtok, 1.0)
    if m.long_context_above_tokens is None:
        return short
    return _BANDED.format(above=int(m.long_context_above_tokens), long=price(*long_prices(m)), short=short)


def cost_sql(config: Config) -> str:
    """:data:`COST_SQL` with the baseline and the replaced tier's prices filled in from ``config`` (its ``$since``
    and ``$until`` left as parameters); :class:`JobsError` when the pricing table has no model for one of them.
    The dashboard's savings waterfall runs it too, over the lake's whole days, until a report is stored."""
    cfg = config.jobs.cost_report
    return COST_SQL.format(frontier=_price_sql(_model_for(config, cfg.baseline_tier), config),
                           replaced=_price_sql(_model_for(config, cfg.student_replaces_tier), config))


def build_cost_report(con: Any, config: Config, *, since: datetime, until: datetime,
                      generated_at: datetime | None = None) -> CostReport:
    """Compute the stacking table from a connection with the lake's views."""
    since, until = _utc(since), _utc(until)
    if until <= since:
        raise JobsError(f"empty range: --until ({until}) must be after --since ({since})")
    cfg = config.jobs.cost_report
    sql = cost_sql(config)
    cur = con.execute(sql, {"since": since, "until": until})
    cols = [c[0] for c in cur.description]
    days_rows = [dict(zip(cols, r)) for r in cur.fetchall()]
    if not days_rows:
        raise NoDataError(f"no requests between {since:%Y-%m-%d %H:%M} and {until:%Y-%m-%d %H:%M} UTC")
    hours = (until - since).total_seconds() / 3600.0
    days = hours / 24.0
    hosting_by_day = {d: float(usd) for d, usd in con.execute(HOSTING_SQL, {"since": since, "until": until}).fetchall()}
    student_n = sum(int(d["student_requests"]) for d in days_rows)
    hosting = sum(hosting_by_day.values())
    totals = {
        "baseline": sum(float(d["baseline"]) for d in days_rows),
        "routing": sum(float(d["routing"]) for d in days_rows),
        "cache": sum(float(d["cache"]) for d in days_rows),
        "student": sum(float(d["student_api"]) for d in days_rows) + hosting,
    }
    base = totals["baseline"]
    stages = []
    for step, (name, what) in enumerate(STAGES, 1):
        total = totals[name]
        daily = total / days
        stages.append(StageRow(step, name, what, total, daily, daily * cfg.days_per_month,
                               None if step == 1 else (1.0 - total / base if base > 0 else None)))
    saved = sum(float(d["student_saved"]) for d in days_rows)
    per_request_saving = saved / student_n if student_n else 0.0
    break_even = (hosting / days / per_request_saving) if per_request_saving > 0 and hosting > 0 else None
    per_day = []
    by_day = {d["day"]: d for d in days_rows}
    for day in sorted(set(by_day) | set(hosting_by_day)):  # an idle day still costs its hosting
        d = by_day.get(day) or dict.fromkeys(("baseline", "routing", "cache", "student_api"), 0.0)
        day_hosting = hosting_by_day.get(day, 0.0)
        for step, (name, _) in enumerate(STAGES, 1):
            cost = float(d["student_api"]) + day_hosting if name == "student" else float(d[name])
            per_day.append({"day": day, "step": step, "stage": name, "cost_usd": cost})
    ignored = sum(int(d["ignored_costs"] or 0) for d in days_rows)
    if ignored:
        log.warning("cost report %s–%s: left out %d call cost(s) that were NaN/infinite", since, until, ignored)
    rid_src = f"{since.isoformat()}|{until.isoformat()}|{(generated_at or datetime.now(UTC)).isoformat()}"
    report_id = f"cost-{until:%Y%m%dT%H%M}-{hashlib.blake2b(rid_src.encode(), digest_size=3).hexdigest()}"
    return CostReport(report_id, since, until, days, sum(int(d["requests"]) for d in days_rows),
                      sum(int(d["hits"]) for d in days_rows), student_n, hosting, stages, break_even,
                      student_n / days, per_day, generated_at, ignored)


def run_cost_report(config: Config, *, since: datetime, until: datetime,
                    now: Callable[[], datetime] = lambda: datetime.now(UTC), write: bool = True) -> CostReport:
    """Build the report from the lake and (``write``) store it as ``cost_reports`` / ``cost_report_days``."""
    from costline.jobs import validate
    from costline.jobs.store import job_store, open_jobs_lake

    validate(config)
    generated = _utc(now())
    con = open_jobs_lake(config)
    try:
        report = build_cost_report(con, config, since=since, until=until, generated_at=generated)
    finally:
        con.close()
    if write:
        store = job_store(config).init()
        store.write("cost_report_days", report.report_id, [
            {"report_id": report.report_id, "generated_at": generated, **d} for d in report.per_day])
        store.write("cost_reports", report.report_id, [{
            "report_id": report.report_id, "generated_at": generated, "since": report.since, "until": report.until,
            "days": report.days, "step": s.step, "stage": s.stage, "what": s.what, "requests": report.requests,
            "total_cost_usd": s.total_cost_usd, "daily_cost_usd": s.daily_cost_usd,
            "monthly_cost_usd": s.monthly_cost_usd, "cumulative_saving": s.cumulative_saving,
            "student_requests_per_day": report.student_requests_per_day,
            "break_even_requests_per_day": report.break_even_requests_per_day,
        } for s in report.stages])
    return report
