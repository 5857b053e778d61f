"""`costline jobs cost-report`: what did each lever save, on real traffic?

The article's stacking table, computed from the lake for ``[since, until)``:

1. **baseline** — every request priced on the baseline (frontier) model with its actual tokens: the generation
   calls of its *answering attempt* (its answering call — the last that succeeded, else the last — and the calls
   on that call's tier right before it, an agent's steps), since an all-frontier world makes one attempt, not the
   budget attempt that was rejected and then redone on the frontier; cache reads/writes, batch, US-only inference
   and a cloud's regional endpoint at their multipliers; fast mode and OpenAI's priority tier, premiums of the
   model that ran, are not carried over; a cache hit (a request flagged as one that made no generation call that
   succeeded or was billed) at its day's average baseline cost of an uncached request of its task type (else
   that task type's average over the range, else all requests');
2. **+ routing** — every API call at what it actually cost; the answering attempt's student calls at the prices
   of the tier the student replaced (``student_replaces_tier``, budget) as if there were no student, and a
   rejected student attempt dropped (with no student it would not have been made); cache hits imputed as above
   at routed prices;
3. **+ semantic cache** — cache hits cost nothing;
4. **+ distillation** — what was paid for calls (a student call with an explicit
   ``costline.cost_usd`` at that price), plus the student's GPU for every hour of the range that
   the hosting schedule covers (``[[pricing.hosting]]`` / ``student_usd_per_hour``), idle or not:
   read from the lake's ``student_hosting_hourly`` view, so the report and the views agree to the
   cent on the same (whole-hour) window; an hour the range covers in part (a range that starts or ends on a half
   hour) counts the part of its hosting inside the range; a range with hosting and no request is a report too.

Only text generation calls (:data:`GENERATION_OPERATIONS`) are repriced: any other call (an embeddings call) is
carried at what it cost in every stage, and a request of such calls alone (the gateway's ``/v1/embeddings``) is
left out of the request count and of the averages a cache hit is imputed with.

Daily cost = total / days in the range; monthly = daily x ``days_per_month`` (30); cumulative
saving = 1 - stage / baseline. **Break-even** of the student = GPU cost per day it was hosted (hosting /
(hosted hours / 24)) / what one student-served request saves (its price at the replaced tier): the requests per
hosted day at which the student stops costing more than it saves (the article: ~100,000).
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

#: The operations a call generates text with (an instrumentation that names none: a chat call). Only these calls are
#: repriced at the baseline or the replaced tier's model; any other (an embeddings call, which no other model would
#: have made for less) is carried at what it cost in every stage, and a request of such calls alone is no request.
GENERATION_OPERATIONS: tuple[str, ...] = ("chat", "text_completion", "generate_content")

#: Per day: request counts and the four stage totals (before hosting, which is added in Python), and the day's
#: calls (``calls``: how many the lake had; with ``requests``, ``hits`` and ``student_api``, what a stored report's
#: day is checked against before the savings waterfall shows it).
#: A call cost that is NaN or infinite (a lake written before validation) is left out of the sums and
#: counted (``ignored_costs``): one bad figure must not turn every stage into NaN.
#:
#: A request's *answering attempt* is its answering generation call (the last that succeeded; if every one failed,
#: the last one) and the calls on that call's tier right before it (an agent's steps), back to the last call on
#: another tier: what the request would have made on one model. The baseline reprices only those (an all-frontier
#: world makes no budget attempt that the frontier then redoes); the routing stage drops a student call outside
#: them (a student answer that was rejected: with no student, the tier that answered would have been asked
#: first) and reprices the answering attempt's student calls at the replaced tier. A request flagged as a cache
#: hit that still made a generation call that succeeded or was billed is no hit: its calls count in every stage.
COST_SQL = """
WITH rq AS (
  SELECT request_id, trace_id, span_id, CAST(ts AS DATE) AS day, coalesce(task_type, '(none)') AS task_type,
         coalesce(cache_hit OR tier = 'cache', false) AS flagged_hit, coalesce(tier = 'student', false) AS student
  FROM requests WHERE ts >= $since AND ts < $until
), rc AS (
  SELECT c.trace_id, c.request_span_id, c.span_id, c.ts, c.tier, c.error_type, c.cost_usd,
         coalesce(c.operation, 'chat') IN ({generation}) AS gen,
         CASE WHEN isfinite(c.cost_usd) THEN c.cost_usd ELSE 0 END AS paid,
         {frontier} AS frontier_usd,
         {replaced} AS replaced_usd
  FROM calls c SEMI JOIN rq ON rq.trace_id = c.trace_id AND rq.span_id = c.request_span_id
), g AS (
  SELECT trace_id, request_span_id, span_id, tier, error_type,
         row_number() OVER (PARTITION BY trace_id, request_span_id ORDER BY ts, span_id) AS n
  FROM rc WHERE gen
), answer AS (
  SELECT trace_id, request_span_id, coalesce(max(n) FILTER (WHERE error_type IS NULL), max(n)) AS n
  FROM g GROUP BY trace_id, request_span_id
), attempt AS (
  SELECT a.trace_id, a.request_span_id, a.n AS last,
         coalesce(max(o.n) FILTER (WHERE o.n < a.n AND o.tier IS DISTINCT FROM x.tier), 0) AS after
  FROM answer a
  JOIN g x ON x.trace_id = a.trace_id AND x.request_span_id = a.request_span_id AND x.n = a.n
  JOIN g o ON o.trace_id = a.trace_id AND o.request_span_id = a.request_span_id
  GROUP BY a.trace_id, a.request_span_id, a.n
), marked AS (
  SELECT rc.*, coalesce(g.n > t.after AND g.n <= t.last, false) AS answering
  FROM rc
  LEFT JOIN g ON g.trace_id = rc.trace_id AND g.request_span_id = rc.request_span_id AND g.span_id = rc.span_id
  LEFT JOIN attempt t ON t.trace_id = rc.trace_id AND t.request_span_id = rc.request_span_id
), per_request AS (
  SELECT r.day, r.task_type, r.student,
         r.flagged_hit AND count(m.span_id) FILTER (
           WHERE m.gen AND (m.error_type IS NULL OR coalesce(m.cost_usd, 0) <> 0)) = 0 AS hit,
         NOT r.flagged_hit AND count(m.span_id) > 0 AND count(m.span_id) FILTER (WHERE m.gen) = 0 AS other_only,
         count(m.span_id) AS calls,
         coalesce(sum(m.frontier_usd) FILTER (WHERE m.gen AND m.answering), 0) AS frontier_usd,
         coalesce(sum(CASE WHEN m.tier <> 'student' OR m.tier IS NULL THEN m.paid
                           WHEN m.answering THEN m.replaced_usd ELSE 0 END) FILTER (WHERE m.gen), 0) AS routed_usd,
         coalesce(sum(m.paid) FILTER (WHERE m.gen), 0) AS paid_usd,
         coalesce(sum(m.paid) FILTER (WHERE NOT m.gen), 0) AS other_usd,
         count(m.cost_usd) FILTER (WHERE NOT isfinite(m.cost_usd)) AS ignored_costs
  FROM rq r
  LEFT JOIN marked m ON m.trace_id = r.trace_id AND m.request_span_id = r.span_id
  GROUP BY r.trace_id, r.span_id, r.request_id, r.day, r.task_type, r.student, r.flagged_hit
), uncached AS (
  SELECT * FROM per_request WHERE NOT hit AND NOT other_only
), typical_day AS (
  SELECT day, task_type, avg(frontier_usd) AS f, avg(routed_usd) AS r FROM uncached GROUP BY ALL
), typical AS (
  SELECT task_type, avg(frontier_usd) AS f, avg(routed_usd) AS r FROM uncached GROUP BY ALL
), overall AS (
  SELECT avg(frontier_usd) AS f, avg(routed_usd) AS r FROM uncached
)
SELECT p.day, count(*) FILTER (WHERE NOT p.other_only) AS requests, count(*) FILTER (WHERE p.hit) AS hits,
       count(*) FILTER (WHERE p.student AND NOT p.hit AND NOT p.other_only) AS student_requests,
       sum(p.other_usd + CASE WHEN p.hit THEN coalesce(d.f, t.f, o.f, 0) ELSE p.frontier_usd END) AS baseline,
       sum(p.other_usd + CASE WHEN p.hit THEN coalesce(d.r, t.r, o.r, 0) ELSE p.routed_usd END) AS routing,
       sum(p.other_usd + CASE WHEN p.hit THEN p.paid_usd ELSE p.routed_usd END) AS cache,
       sum(p.other_usd + p.paid_usd) AS student_api,
       sum(CASE WHEN p.student AND NOT p.hit AND NOT p.other_only THEN p.routed_usd - p.paid_usd ELSE 0 END)
         AS student_saved,
       sum(p.ignored_costs) AS ignored_costs, sum(p.calls) AS calls
FROM per_request p
LEFT JOIN typical_day d ON d.day = p.day AND d.task_type = p.task_type
LEFT JOIN typical t ON t.task_type = p.task_type
CROSS JOIN overall o
GROUP BY p.day ORDER BY p.day
"""

#: Per day: the student's hosting over ``[since, until)`` from the views' hourly schedule, and its hosted hours (those
#: that cost something: the break-even divides by the days the GPU was up, not by the range's).
#:
#: A range need not start or end on a whole hour (a report for a local day at +05:30): an hour the range covers only
#: in part counts the share of its hosting that falls inside the range, which is that hour's hosting times the
#: schedule's rate-weighted time inside the range over its rate-weighted time in the whole hour (every boundary the
#: view adds besides the schedule's own is on a whole hour, so within one hour the rate changes only at a
#: ``[[pricing.hosting]]`` since/until); its hosted hours are the part of it inside the range. An hour the range
#: covers whole is taken from the view as it is.
HOSTING_SQL = """
WITH h AS (
  SELECT window_start, window_start + INTERVAL 1 HOUR AS window_end, hosting_usd,
         greatest(window_start, $since) AS lo, least(window_start + INTERVAL 1 HOUR, $until) AS hi
  FROM student_hosting_hourly
  WHERE window_start < $until AND window_start + INTERVAL 1 HOUR > $since
), edge AS (
  SELECT h.window_start,
         sum(s.usd_per_hour * greatest(0, epoch(least(h.hi, coalesce(s.until, h.hi)))
                                          - epoch(greatest(h.lo, coalesce(s.since, h.lo))))) AS inside,
         sum(s.usd_per_hour * greatest(0, epoch(least(h.window_end, coalesce(s.until, h.window_end)))
                                          - epoch(greatest(h.window_start, coalesce(s.since, h.window_start)))))
           AS whole
  FROM h CROSS JOIN hosting_schedule s
  WHERE h.lo > h.window_start OR h.hi < h.window_end
  GROUP BY h.window_start
), part AS (
  SELECT h.window_start, h.lo, h.hi,
         CASE WHEN NOT (h.lo > h.window_start OR h.hi < h.window_end) THEN h.hosting_usd
              WHEN e.whole > 0 THEN h.hosting_usd * e.inside / e.whole ELSE 0 END AS hosting_usd
  FROM h LEFT JOIN edge e ON e.window_start = h.window_start
)
SELECT CAST(window_start AS DATE) AS day, sum(hosting_usd) AS hosting_usd,
       sum(CASE WHEN hosting_usd > 0 THEN epoch(hi) - epoch(lo) ELSE 0 END) / 3600.0 AS hosted_hours
FROM part GROUP BY 1 ORDER BY 1
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
    #: Student requests per day the GPU is hosted at which it pays for itself (None: no student traffic).
    break_even_requests_per_day: float | None
    student_requests_per_day: float
    per_day: list[dict[str, Any]] = field(default_factory=list)
    generated_at: datetime | None = None
    #: Call costs left out because they were NaN or infinite in the lake.
    ignored_costs: int = 0
    #: Days the student's GPU was hosted in the range (hosted hours / 24): what the break-even is per.
    hosted_days: float = 0.0

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
              else f"{self.break_even_requests_per_day:,.0f} student requests per day the GPU is hosted")
        return (f"{self.requests:,} requests from {self.since:%Y-%m-%d %H:%M} to {self.until:%Y-%m-%d %H:%M} UTC "
                f"({_days(self.days)}; {self.cache_hits:,} cache hits, {self.student_requests:,} on the student). "
                f"Student break-even: {be}; it served {self.student_requests_per_day:,.0f}/day{self._hosted_note()}."
                + self._ignored_note())

    def _hosted_note(self) -> str:
        if not self.hosted_days or self.hosted_days >= self.days:
            return ""
        per = self.student_requests / self.hosted_days
        return f" ({per:,.0f} per day hosted; hosted {_days(self.hosted_days, unit=False)} of {_days(self.days)})"

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


def _days(n: float, *, unit: bool = True) -> str:
    """``n`` days for the summary, to two decimals: "1 day", "2 days", "0.79", "1.04 days" (a range under 0.005 days:
    two significant digits, "0.0035 days", not "0 days")."""
    shown = round(n, 2)
    text = f"{shown:g}" if shown or not n else f"{n:.2g}"
    if not unit:
        return text
    return f"{text} day" if shown == 1 else f"{text} days"


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
    The dashboard's savings waterfall runs it too, over each whole day of the lake no stored report covers whole."""
    cfg = config.jobs.cost_report
    return COST_SQL.format(frontier=_price_sql(_model_for(config, cfg.baseline_tier), config),
                           replaced=_price_sql(_model_for(config, cfg.student_replaces_tier), config),
                           generation=", ".join(f"'{op}'" for op in GENERATION_OPERATIONS))


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
    hosting_rows = con.execute(HOSTING_SQL, {"since": since, "until": until}).fetchall()
    if not days_rows and not any(usd > 0 for _, usd, _ in hosting_rows):
        raise NoDataError(f"no requests and no student hosting between {since:%Y-%m-%d %H:%M} and "
                          f"{until:%Y-%m-%d %H:%M} UTC")
    hours = (until - since).total_seconds() / 3600.0
    days = hours / 24.0
    # a window with hosting and no request is still a report: no requests, the GPU's cost in the student stage
    hosting_by_day = {d: float(usd) for d, usd, _ in hosting_rows}
    hosted_days = sum(float(h) for _, _, h in hosting_rows) / 24.0
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
    # per day the GPU was hosted (hosted hours / 24), not per day of the range: a range with days the GPU was off
    # would otherwise spread its cost thin and understate the traffic it needs on the days it runs
    break_even = (hosting / hosted_days / per_request_saving
                  if per_request_saving > 0 and hosting > 0 and hosted_days > 0 else None)
    per_day = []
    by_day = {d["day"]: d for d in days_rows}
    for day in sorted(set(by_day) | set(hosting_by_day)):  # an idle day still costs its hosting
        d = by_day.get(day) or {**dict.fromkeys(("baseline", "routing", "cache", "student_api"), 0.0),
                                **dict.fromkeys(("requests", "hits", "calls"), 0)}
        day_hosting = hosting_by_day.get(day, 0.0)
        # the lake's figures of the day the stages were computed from: the savings waterfall shows a stored day only
        # while the lake still has them (late spans of the day make it compute the day afresh)
        figures = {"requests": int(d["requests"]), "cache_hits": int(d["hits"]), "calls": int(d["calls"] or 0),
                   "call_cost_usd": float(d["student_api"]), "hosting_usd": day_hosting}
        for step, (name, _) in enumerate(STAGES, 1):
            cost = float(d["student_api"]) + day_hosting if name == "student" else float(d[name])
            per_day.append({"day": day, "step": step, "stage": name, "cost_usd": cost, **figures})
    ignored = sum(int(d["ignored_costs"] or 0) for d in days_rows)
    if ignored:
        log.warning("cost report %s–%s: left out %d call cost(s) that were NaN/infinite", since, until, ignored)
    rid_src = f"{since.isoformat()}|{until.isoformat()}|{(generated_at or datetime.now(UTC)).isoformat()}"
    report_id = f"cost-{until:%Y%m%dT%H%M}-{hashlib.blake2b(rid_src.encode(), digest_size=3).hexdigest()}"
    return CostReport(report_id, since, until, days, sum(int(d["requests"]) for d in days_rows),
                      sum(int(d["hits"]) for d in days_rows), student_n, hosting, stages, break_even,
                      student_n / days, per_day, generated_at, ignored, hosted_days)


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
