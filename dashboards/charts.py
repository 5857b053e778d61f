"""The dashboard's charts: one :class:`Chart` per ``.sql`` file in this package.

A chart is its SQL (``<name>.sql`` next to this module, package data) plus how
the page draws the rows it returns: which renderer (``kind``), which column is
the time axis (the date-range selector filters on it), and which columns the
renderer reads. SQL files may use ``{{parameter}}`` placeholders, filled from the
config by :func:`sql_params`; the page shows (and ``costline dashboard --sql``
prints) the filled-in SQL, which runs as is in ``costline sql`` or ``duckdb``.

Adding a chart: write ``<name>.sql``, add a :class:`Chart` to :data:`CHARTS`
(see docs/dashboard.md).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from costline import contract
from costline.config import Config, ModelPrice
from costline.dashboards.errors import ChartSqlError

__all__ = ["Chart", "CHARTS", "chart_by_name", "chart_sql", "raw_sql", "sql_params", "since_sql", "build_day_sql", "KINDS", "MARKS",
           "marks_sql", "LOWER_BOUND", "UNDATED_SQL", "UNDATED_COUNT_SQL", "UNPRINTABLE_RE",
           "QUOTED_NAME_SQL"]

#: Events a ``lines`` chart can mark with vertical lines (``options["marks"]``): name → ``<name>.sql``,
#: returning ``ts`` and ``action`` (and anything else, shown on hover).
MARKS = ("route_promotions",)


def marks_sql(name: str) -> str:
    """The SQL of the marks ``name`` (one of :data:`MARKS`)."""
    if name not in MARKS:
        raise ChartSqlError(f"no marks {name!r}: known are {', '.join(MARKS)}")
    return resources.files("costline.dashboards").joinpath(f"{name}.sql").read_text(encoding="utf-8").strip() + "\n"

#: Tenants the cache hit-rate chart draws a panel for at most (the ones with the most lookups in the range).
CACHE_MAX_TENANTS = 20
#: The ``costline sql`` query the page gives for the tenants it leaves out: ``{where}`` becomes the selected
#: range (`` WHERE window_start >= ... AND window_start < ...``, or nothing), ``{shown}`` the panels drawn.
CACHE_LEFT_OUT_SQL = ("SELECT tenant, sum(lookups) AS lookups, sum(hits) AS hits, "
                      "round(sum(hits) / sum(lookups), 3) AS hit_rate FROM cache_hit_rate_7d{where} "
                      "GROUP BY tenant ORDER BY lookups DESC, tenant OFFSET {shown}")

#: The counts a cost chart returns beside its USD (``options["lower_bound"]``): where one is above 0 the point is a
#: lower bound, marked on the chart and counted in a note under it. Column → what one of them is (singular, plural).
LOWER_BOUND = {
    "unpriced_calls": ("call of a model the pricing table does not know (priced $0)",
                       "calls of models the pricing table does not know (priced $0)"),
    "bad_costs": ("NaN/infinite call cost left out", "NaN/infinite call costs left out"),
}
#: The ``costline sql`` query the page gives to list what :data:`LOWER_BOUND` counts in the selected range.
LOWER_BOUND_SQL = ("SELECT ts, tenant, service_name, provider, model, pricing_status, cost_usd FROM calls "
                   "WHERE (cost_usd IS NULL OR NOT isfinite(cost_usd)){where} ORDER BY ts")

#: The ``costline sql`` query the cost charts give for the requests in no day (:data:`UNDATED_COUNT_SQL`).
UNDATED_SQL = ("SELECT request_id, trace_id, tenant, service_name, tier, success, cost_usd FROM requests "
               "WHERE ts IS NULL ORDER BY cost_usd DESC NULLS LAST, request_id")
#: Requests whose span time the processor could not use (a client clock more than a day ahead, or before 2000:
#: ``ts`` is NULL and ``requests_raw.data_quality`` names ``ts:``): they fall in no day, so every chart leaves
#: them out; the cost charts count them, and their finite cost, in their lower-bound note. Not windowed: a
#: request without a time cannot be placed in the window.
UNDATED_COUNT_SQL = ("SELECT count(*) AS requests, "
                     "coalesce(sum(cost_usd) FILTER (WHERE isfinite(cost_usd)), 0.0) AS cost_usd "
                     "FROM requests WHERE ts IS NULL")

#: A name is shown JSON-quoted (see :data:`QUOTED_NAME_SQL`) when it holds a character of this RE2 class: what
#: Python's ``str.isprintable`` (the alerts' ``tenant_label``) refuses, that DuckDB's regexes can name: control and
#: format characters (zero-width spaces and joiners, bidi overrides and isolates, soft hyphen, BOM: category C),
#: line and paragraph separators, and every space but the ASCII one. ``acme\u200b`` or ``\u202eemca`` would
#: otherwise be drawn exactly like ``acme``.
UNPRINTABLE_RE = r"'[\p{C}\p{Zl}\p{Zp}\x{00A0}\x{1680}\x{2000}-\x{200A}\x{202F}\x{205F}\x{3000}]'"
#: A name (a column ``name``) JSON-quoted, each character of :data:`UNPRINTABLE_RE` written as its ``\uXXXX``
#: escape (UTF-16 pairs past U+FFFF), so a look-alike name reads visibly different (``"acme\u200b"``) and the
#: label is still JSON (``json.loads`` gives the name back). No lambdas: DuckDB before 1.3 runs it too.
QUOTED_NAME_SQL = ("(SELECT string_agg(CASE WHEN NOT regexp_matches(ch, " + UNPRINTABLE_RE + ") THEN ch\n"
                   "                      WHEN unicode(ch) > 65535 THEN printf('\\u%04x\\u%04x', "
                   "55296 + ((unicode(ch) - 65536) >> 10), 56320 + ((unicode(ch) - 65536) & 1023))\n"
                   "                      ELSE printf('\\u%04x', unicode(ch)) END, '' ORDER BY i)\n"
                   "   FROM (SELECT unnest(l) AS ch, generate_subscripts(l, 1) AS i\n"
                   "         FROM (SELECT string_split(CAST(to_json(name) AS VARCHAR), '') AS l)))")

#: A ``name``'s label where names starting with "(" are costline's own (``(default)``, ``(unnamed)``): a name that
#: could be read as one of those or as another name (it starts with "(" or a double quote, is '', has spaces around
#: it, or holds a character that does not print) is shown JSON-quoted (:data:`QUOTED_NAME_SQL`), else as it is.
NAME_LABEL_SQL = ("CASE WHEN starts_with(name, '(') OR starts_with(name, '\"') OR name = '' OR name <> trim(name)\n"
                  "                   OR regexp_matches(name, " + UNPRINTABLE_RE + ")\n"
                  "              THEN " + QUOTED_NAME_SQL + " ELSE name END")

#: Renderers the page knows (see dashboard.js).
KINDS = ("lines", "band", "stacked_bar", "waterfall", "table")

_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_][a-z0-9_]*)\s*\}\}")


@dataclass(frozen=True)
class Chart:
    """One chart of the page: its SQL file and how its rows are drawn."""

    #: File stem of its SQL (``<name>.sql``) and the id of its section on the page.
    name: str
    title: str
    #: One sentence under the title: what to look for.
    description: str
    #: Renderer: one of :data:`KINDS`.
    kind: str
    #: Column the date-range selector filters on (a DATE or TIMESTAMP).
    x: str
    #: Columns the query must return (the renderer reads them).
    columns: tuple[str, ...]
    #: Renderer options (y columns, series column, axis titles...): see dashboard.js.
    options: dict[str, Any] = field(default_factory=dict)
    #: Where the views it reads come from, for the "no data yet" message of a lake without them.
    source: str = "the processor (costline process)"

    @property
    def sql_file(self) -> str:
        return f"{self.name}.sql"


CHARTS: tuple[Chart, ...] = (
    Chart(
        "cost_per_success", "Cost per successful request, by tier",
        "What one accepted answer costs on each tier, per day (failed attempts, escalations and student "
        "GPU hosting included; log scale).",
        "lines", x="day", columns=("day", "tier", "cost_per_success", "successes"),
        options={"y": ["cost_per_success"], "series": "tier", "y_title": "USD per success",
                 "y_format": "$.4f", "log_y": True, "marks": "route_promotions",
                 "lower_bound": LOWER_BOUND, "lower_bound_sql": LOWER_BOUND_SQL, "undated_sql": UNDATED_SQL},
    ),
    Chart(
        "spend_per_app", "Spend per app",
        "What each app (its OpenTelemetry service.name) spent per day, hosting share included, and the "
        "student's idle hosting hours no request shared: a day's bars add up to its bill. Where to look first "
        "when the bill jumps.",
        "stacked_bar", x="day", columns=("day", "service", "cost_usd", "requests"),
        options={"y": "cost_usd", "series": "service", "y_title": "USD", "y_format": "$.2f",
                 "lower_bound": LOWER_BOUND, "lower_bound_sql": LOWER_BOUND_SQL, "undated_sql": UNDATED_SQL},
    ),
    Chart(
        "cache_hit_rate", "Cache hit rate per tenant, with its 7-day average and alert band",
        "Hourly hit rate (solid), the 7-day average the alert compares it with (dashed: the same hour of day "
        "over the 7 days before, or all hours with [alerts.cache_hit_rate_drop] baseline = \"rolling\") and the "
        "band down to the alert threshold; red dots are hours under it — often a document changed without "
        "cache invalidation.",
        "band", x="window_start",
        columns=("window_start", "tenant", "hit_rate", "avg_7d", "alert_below", "breach", "lookups"),
        options={"facet": "tenant", "y": "hit_rate", "avg": "avg_7d", "low": "alert_below", "flag": "breach",
                 "y_title": "hit rate", "y_format": ".0%",
                 # One 190 px panel per tenant: at most CACHE_MAX_TENANTS, those with the most lookups in the
                 # selected range; a note under the chart counts the others and gives this query to list them.
                 "max_facets": CACHE_MAX_TENANTS, "rank": "lookups", "facet_noun": "tenants",
                 "rank_noun": "cache lookups", "more_sql": CACHE_LEFT_OUT_SQL},
    ),
    Chart(
        "traffic_mix", "Traffic mix by tier",
        "Requests per day by who answered them: the semantic cache, the distilled student or an API tier.",
        "stacked_bar", x="day", columns=("day", "tier", "requests", "share"),
        options={"y": "requests", "series": "tier", "y_title": "requests"},
    ),
    Chart(
        "cache_rejections", "Rejected near-misses per namespace and reason",
        "Candidates the semantic cache found similar but its verification turned down, per day: a namespace "
        "with many of one reason (number, negation, entity...) is where the traffic holds traps that a "
        "threshold alone would have answered wrongly.",
        "stacked_bar", x="day", columns=("day", "namespace", "reason", "series", "rejected"),
        options={"y": "rejected", "series": "series", "y_title": "rejected candidates"},
        source="the verified semantic cache (lookups.reject_reason)",
    ),
    Chart(
        "rejected_attempts", "Answers turned down (sent up a tier, or refused), by tier and reason",
        "Attempts whose answer was not used, per day: the quality gates (validator, low confidence), a "
        "structured answer that broke its schema (output_format), an API error. A growing band on the student "
        "is drift; on one API tier, a router sending work too low.",
        "stacked_bar", x="day", columns=("day", "tier", "problem", "series", "rejected"),
        options={"y": "rejected", "series": "series", "y_title": "rejected attempts"},
        source="the serving pipeline (requests.rejected_attempts)",
    ),
    Chart(
        "student_vs_teacher", "Student vs teacher score per subtype",
        "Nightly blind evaluation on production queries: student (solid) against teacher (dashed); "
        "a widening gap signals drift and re-distillation.",
        "lines", x="finished_at", columns=("finished_at", "subtype", "student_score", "teacher_score", "gap", "n"),
        options={"y": ["student_score", "teacher_score"], "series": "subtype", "y_title": "score",
                 "y_format": ".2f"},
        source="the nightly student-drift job (eval_runs)",
    ),
    Chart(
        "tier_match_rate", "Tier-match rate per tier",
        "Nightly shadow routing: the share of sampled requests whose routed tier's answer was adequate; "
        "a falling rate means the router needs retraining.",
        "lines", x="finished_at", columns=("finished_at", "tier", "tier_match_rate", "n"),
        options={"y": ["tier_match_rate"], "series": "tier", "y_title": "tier-match rate", "y_format": ".0%",
                 "marks": "route_promotions"},
        source="the nightly shadow-routing job (shadow_runs)",
    ),
    Chart(
        "savings_waterfall", "Savings waterfall: baseline → routing → cache → student",
        "Cost of the selected days if every request went to the frontier model, and what each lever took off "
        "(or added: the student's GPU is a fixed cost).",
        "waterfall", x="day", columns=("day", "step", "stage", "cost_usd"),
        options={"stage": "stage", "step": "step", "y": "cost_usd", "y_title": "USD", "y_format": "$.2f"},
    ),
    Chart(
        "alerts", "Firing and recent alerts",
        "Alerts raised on the lake's metrics with their latest state: firing ones on top in red, then the "
        "most recently fired.",
        "table", x="fired_at", columns=("fired_at", "state", "rule", "summary"),
        options={},
        source="costline.alerts (the alerts view)",
    ),
)


def chart_by_name(name: str) -> Chart:
    """The chart called ``name``; :class:`ChartSqlError` naming the known ones otherwise."""
    for chart in CHARTS:
        if chart.name == name:
            return chart
    raise ChartSqlError(f"no chart {name!r}: known charts are {', '.join(c.name for c in CHARTS)}")


def raw_sql(chart: Chart) -> str:
    """The chart's ``.sql`` file as shipped (placeholders not filled in)."""
    try:
        return resources.files("costline.dashboards").joinpath(chart.sql_file).read_text(encoding="utf-8")
    except (FileNotFoundError, OSError) as exc:
        raise ChartSqlError(f"the SQL of chart {chart.name!r} ({chart.sql_file}) is missing from "
                            f"costline.dashboards ({exc}): reinstall costline") from exc


def _model_of_tier(config: Config, tier: str) -> ModelPrice:
    for m in config.pricing.models:
        if m.tier == tier:
            return m
    raise ChartSqlError(f"the pricing table has no {tier!r} model, which the savings waterfall prices "
                        f"against: add one under [[pricing.models]] with tier = {tier!r}")


def build_day_sql(now: Callable[[], dt.datetime] | None = None) -> str:
    """The day of ``now()`` (UTC; the build's clock) as a SQL ``DATE`` literal: no chart reaches past it."""
    at = (now or (lambda: dt.datetime.now(dt.UTC)))()
    if at.tzinfo is not None:
        at = at.astimezone(dt.UTC)
    return "DATE '" + at.date().isoformat() + "'"


def since_sql(config: Config, now: Callable[[], dt.datetime] | None = None, *, extra_days: int = 0) -> str:
    """The first instant of the dashboard's window, as a SQL expression over the lake's views: midnight (UTC) of
    the ``[dashboard] days``-th day back (less ``extra_days``) from the newest day with a span, or from the day of
    ``now()`` (UTC; the build's clock) when that is earlier: a span stamped in the future (a client's skewed clock)
    must not move the window past today."""
    back = int(config.dashboard.days) - 1 + int(extra_days)
    return ("(SELECT CAST(least(CAST(max(ts) AS DATE), " + build_day_sql(now) + ") - INTERVAL " + str(back)
            + " DAY AS TIMESTAMP) FROM (SELECT max(ts) AS ts FROM requests_raw UNION ALL SELECT max(ts) FROM "
            "calls_raw UNION ALL SELECT max(ts) FROM lookups_raw))")


_FINITE_CALL_COSTS = """SELECT c.trace_id, c.request_span_id AS span_id,
         coalesce(sum(c.cost_usd) FILTER (WHERE isfinite(c.cost_usd)), 0.0) AS finite_usd,
         count(*) FILTER (WHERE NOT isfinite(c.cost_usd))                   AS bad_costs
  FROM calls c
  SEMI JOIN (SELECT trace_id, span_id FROM r WHERE NOT isfinite(call_cost_usd)) x
    ON x.trace_id = c.trace_id AND x.span_id = c.request_span_id
  GROUP BY ALL"""


def sql_params(config: Config, now: Callable[[], dt.datetime] | None = None) -> dict[str, str]:
    """The values of the ``{{parameter}}`` placeholders, as SQL literals or expressions, from ``config`` (and
    ``now``, the build's clock, for the window: ``since``, ``lookups_since``, ``window_days``)."""
    params = {
        # the window ([dashboard] days): its first instant, and 7 days earlier for a 7-day baseline of its first day
        "since": since_sql(config, now),
        "lookups_since": since_sql(config, now, extra_days=7),
        "window_days": str(int(config.dashboard.days)),
        # the build's day (UTC): the savings waterfall counts no hosting hour after it
        "build_day": build_day_sql(now),
        # the names shown JSON-quoted because they hold a character that does not print, and how they are shown
        "unprintable": UNPRINTABLE_RE,
        "quoted_name": QUOTED_NAME_SQL,
        "name_label": NAME_LABEL_SQL,
        "cache_alert_band": repr(float(config.dashboard.cache_alert_band)),
        "cache_alert_min_lookups": str(int(config.dashboard.cache_alert_min_lookups)),
        # the column the hit-rate alert compares an hour with (a validated choice, never free text)
        "cache_baseline": ("avg_7d" if config.alerts.cache_hit_rate_drop.baseline == "rolling" else "avg_7d_hour"),
        # the cost charts' requests r whose call cost is NaN or infinite, per (trace_id, span_id): their finite calls'
        # sum and how many were left out (a lake written before ingest validation; the cost report does the same)
        "finite_call_costs": _FINITE_CALL_COSTS,
    }
    for tier, prefix in ((contract.TIER_FRONTIER, "frontier"), (contract.TIER_BUDGET, "budget")):
        try:
            m = _model_of_tier(config, tier)
        except ChartSqlError:
            continue  # only the waterfall needs these; it reports the error itself
        params[f"{prefix}_model"] = m.model
        params[f"{prefix}_input_per_mtok"] = repr(float(m.input_per_mtok))
        params[f"{prefix}_output_per_mtok"] = repr(float(m.output_per_mtok))
    return params


def _cost_days_sql(config: Config, now: Callable[[], dt.datetime] | None = None) -> dict[str, str]:
    """The cost report's per-day SQL (:func:`costline.jobs.cost_report.cost_sql`) over the lake's whole days (a
    ``lake_days`` CTE of the chart's) in the dashboard's window, and the two models it prices with: the waterfall
    before a report is run."""
    from costline.jobs.cost_report import cost_sql, tier_model

    cfg = config.jobs.cost_report
    models = {}
    for tier in (cfg.baseline_tier, cfg.student_replaces_tier):
        models[tier] = tier_model(config, tier)
        if models[tier] is None:
            raise ChartSqlError(f"the pricing table has no {tier!r} model, which the savings waterfall prices "
                                f"against: add one under [[pricing.models]] with tier = {tier!r}")
    sql = cost_sql(config).replace("$since", f"greatest((SELECT since FROM lake_days), {since_sql(config, now)})").replace(
        "$until", "(SELECT until FROM lake_days)")
    return {"cost_days_sql": sql.strip(), "baseline_model": models[cfg.baseline_tier].model,
            "replaced_model": models[cfg.student_replaces_tier].model}


def chart_sql(chart: Chart, config: Config, now: Callable[[], dt.datetime] | None = None) -> str:
    """The chart's SQL with its placeholders filled in from ``config`` (``now``: the build's clock, for the
    window's ``{{since}}``): runnable in duckdb as is."""
    params = sql_params(config, now)
    text = raw_sql(chart)
    if "{{cost_days_sql}}" in text:
        params.update(_cost_days_sql(config, now))

    def fill(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in params:
            if name.startswith(("frontier_", "budget_")):
                _model_of_tier(config, name.split("_", 1)[0])  # raises the helpful error
            raise ChartSqlError(f"{chart.sql_file} uses an unknown parameter {{{{{name}}}}}: known are "
                                f"{', '.join(sorted(params))}")
        return params[name]

    return _PLACEHOLDER.sub(fill, text).strip() + "\n"
