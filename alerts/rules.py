"""Alert rules: pure functions from an aggregates snapshot to observations.

``evaluate(rule, snapshot, now)`` looks only at the :class:`Snapshot` (rows
queried from the lake views by :class:`~costline.alerts.source.AlertSource`, or
written by hand in tests) and returns one :class:`Observation` per series
(tenant, tier, subtype...) with a three-way :class:`Condition`:

* ``BREACH`` — the alert condition holds (fire, or stay firing);
* ``BAND`` — inside the hysteresis band or too little data: keep the current state;
* ``OK`` — clearly back to normal (resolve).

It returns ``None`` when the rule could not be evaluated at all (its view does
not exist yet): the state machine then leaves that rule's alerts untouched.

Hourly rules judge the last *closed* hour: the hour ending at or before
``now - settle`` (see :func:`closed_window`).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from costline.alerts.message import shown_value
from costline.alerts.settings import (
    AlertsConfig,
    CacheHitRateDropSettings,
    CostPerSuccessRiseSettings,
    DlqGrowingSettings,
    LakeUnreadableSettings,
    PipelineSilentSettings,
    RejectedAttemptsRiseSettings,
    RoutingTierMatchDropSettings,
    RuleSettings,
    StudentDriftSettings,
)
from costline.sqlutil import sql_str
from costline.timeutil import utc_naive as _naive

__all__ = [
    "Condition",
    "Observation",
    "Snapshot",
    "Rule",
    "RULE_NAMES",
    "STREAM_RULES",
    "HOURLY_RULES",
    "JOB_RULES",
    "evaluate",
    "rules_from_config",
    "closed_window",
    "POOL_HOURS",
    "fingerprint",
    "two_proportion_p_value",
    "no_data_summary",
    "NO_TENANT",
    "tenant_label",
    "label_value",
    "visible_json",
    "canonical_label",
    "sql_shown",
]

Row = Mapping[str, Any]

log = logging.getLogger(__name__)


def _finite(*values: Any) -> bool:
    """True when every value is a finite number (None and NaN are not)."""
    try:
        return all(v is not None and math.isfinite(float(v)) for v in values)
    except (TypeError, ValueError):
        return False


class Condition(str, enum.Enum):
    BREACH = "breach"
    BAND = "band"
    OK = "ok"


def fingerprint(rule: str, labels: Mapping[str, str]) -> str:
    """Identity of an alert: its rule and its sorted labels (16 hex)."""
    text = json.dumps([rule, sorted((str(k), str(v)) for k, v in labels.items())], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Observation:
    """What a rule saw for one series at one evaluation."""

    rule: str
    labels: Mapping[str, str]
    condition: Condition
    #: The measured figure (hit rate, cost per success, gap, seconds silent...).
    value: float | None
    #: The figure it is compared with when firing.
    threshold: float | None
    summary: str
    #: The window judged, as text ("2026-11-07 10:00–11:00 UTC").
    window: str = ""
    #: Extra figures for the message, in display order.
    figures: Mapping[str, Any] = field(default_factory=dict)
    #: A ready DuckDB query to dig in.
    query: str = ""
    #: Where the data judged ends (naive UTC: the closed hour's end, the run's finish): an alert whose
    #: series then vanishes has had "no data since" this.
    data_until: datetime | None = None
    #: How far past its threshold the figure is, in the rule's units, bigger is worse (a grouped message shows its
    #: worst members first); None: the message reads it off ``value`` and ``threshold``.
    excess: float | None = None

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.rule, self.labels)


@dataclass(frozen=True)
class Snapshot:
    """Rows a rule needs. ``None`` means "not available" (the rule is skipped)."""

    #: ``cache_hit_rate_7d`` rows (window_start, tenant, hit_rate, avg_7d, lookups, hits, lookups_7d, and the
    #: same hour of day's avg_7d_hour, lookups_7d_hour; a row without those two keys, written by hand or by an
    #: older source, is judged on the rolling baseline).
    cache: Sequence[Row] | None = None
    #: Per tier: window_start, tier, requests, successes, cost_usd, cost_per_success,
    #: and the preceding 168 hours' cost_usd_7d, successes_7d; ``recent`` (optional): the hours before the
    #: closed one, newest first, that a quiet hour is pooled with (:data:`POOL_HOURS`).
    tiers: Sequence[Row] | None = None
    #: Per tier: window_start, tier, attempts, rejected, problems (the hour), attempts_7d, rejected_7d (the
    #: preceding 168 hours), ``recent`` as for ``tiers``, from ``rejections_hourly``.
    rejections: Sequence[Row] | None = None
    #: ``eval_runs`` rows (run_id, finished_at, subtype, gap, gap_ci_low, gap_ci_high, threshold, n, and the drift
    #: job's verdict: flagged, reason).
    eval_runs: Sequence[Row] | None = None
    #: ``shadow_runs`` rows (run_id, finished_at, until, tier, tier_match_rate, n).
    shadow_runs: Sequence[Row] | None = None
    #: ``route_retrains`` rows: the opt-in nightly retrain's verdict, one row per gated tier.
    route_retrains: Sequence[Row] | None = None
    #: Newest span end time in the lake at or before now (naive UTC); None: lake empty.
    last_span_at: datetime | None = None
    #: Whether the lake could be read for last_span_at.
    spans_known: bool = False
    #: (time, total dead-lettered messages) samples, oldest first; None: no DLQ counter.
    dlq_samples: Sequence[tuple[datetime, int]] | None = None
    #: ``(what, error)`` of every lake query that failed for this snapshot; None: not checked.
    query_errors: Sequence[tuple[str, str]] | None = None
    #: Lake files set aside as unreadable or misplaced (costline.lake), still there: their rows are in no figure.
    set_aside: Sequence[str] = ()
    #: ``distill_exports`` rows the drift job started (run_id, drift_run_id, subtype): re-distillation.
    redistills: Sequence[Row] | None = None


def closed_window(now: datetime, settle_s: float = 0.0) -> datetime:
    """Start (naive UTC) of the last hourly window that closed at or before ``now - settle_s``."""
    t = _naive(now) - timedelta(seconds=settle_s)
    return t.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)


def ratio_rise_p_value(now: "Mapping[str, float]", base: "Mapping[str, float]") -> float | None:
    """One-sided p-value that the cost per success of ``now`` is over that of ``base``; each is the sums of one
    sample of requests: ``n`` requests, ``cost`` (Σ xᵢ, each request's call cost), ``successes`` (Σ sᵢ, sᵢ 1 when
    it succeeded), ``cost_sq`` (Σ xᵢ²) and ``success_cost`` (Σ xᵢsᵢ).

    Cost per success is a ratio of two means, R = Σx / Σs; its variance by the delta method is
    n / (n − 1) · Σ(xᵢ − R·sᵢ)² / (Σs)² (the linearised residuals zᵢ = xᵢ − R·sᵢ sum to zero, sᵢ² = sᵢ), and the
    test is z = (R_now − R_base) / √(V_now + V_base) on the normal. None when a sample lacks the sums (a row of an
    older source) or has fewer than 2 requests: the rule then judges on the rise alone."""
    from scipy.stats import norm

    def ratio_var(d: "Mapping[str, float]") -> tuple[float, float] | None:
        try:
            n, x, k = float(d["n"]), float(d["cost"]), float(d["successes"])
            x2, xs = float(d["cost_sq"]), float(d["success_cost"])
        except (KeyError, TypeError, ValueError):
            return None
        if not _finite(n, x, k, x2, xs) or n < 2 or k <= 0:
            return None
        r = x / k
        residuals = max(x2 - 2.0 * r * xs + r * r * k, 0.0)  # Σ(xᵢ − R sᵢ)², rounding kept at ≥ 0
        return r, n / (n - 1.0) * residuals / (k * k)

    a, b = ratio_var(now), ratio_var(base)
    if a is None or b is None:
        return None
    se = math.sqrt(a[1] + b[1])
    if se == 0:
        return 0.0 if a[0] > b[0] else 1.0
    return float(norm.sf((a[0] - b[0]) / se))


def _window_text(start: datetime) -> str:
    return f"{start:%Y-%m-%d %H:%M}–{start + timedelta(hours=1):%H:%M} UTC"


def two_proportion_p_value(hits1: int, n1: int, hits2: int, n2: int) -> float:
    """One-sided p-value that proportion 1 is lower than proportion 2 (pooled z-test)."""
    from scipy.stats import norm

    if n1 <= 0 or n2 <= 0:
        return 1.0
    p1, p2 = hits1 / n1, hits2 / n2
    pooled = (hits1 + hits2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0 if p1 < p2 else 1.0
    return float(norm.cdf((p1 - p2) / se))


# --- the rules ------------------------------------------------------------------------------


#: The tenant label of lookups recorded without one (``costline.tenant`` unset: the recorder's default,
#: other instrumentations): judged as a series of its own, as docs/sql.md shows them. No tenant id has this
#: label: a tenant literally named ``(none)`` is labelled ``"(none)"`` (see :func:`tenant_label`).
NO_TENANT = "(none)"


def label_value(value: object) -> str:
    """The label (alert key, message line, silence matcher) of a value from data: a tier, subtype, task type, slice
    name, or any other text from the lake shown in a summary.

    A value that could be read as another one or could forge text around it — an empty one, one starting with a
    double quote, with whitespace around it, or with characters that do not print (a newline that would start a
    line of its own in the on-call message, a terminal escape, a zero-width space, a bidi override) — is JSON-quoted
    (``""``, ``"\\"a\\""``, ``"student\\n• tier=budget"``) with every character that does not print written as its
    ``\\uXXXX`` escape (:func:`visible_json`): the tenant ``ac`` U+200B ``me`` is labelled ``"ac\\u200bme"``, which
    Slack, the console, ``costline alerts list`` and a silence all show and take alike. Every other value is its own
    label. A quoted label starts with ``"`` and an unquoted one never does, so two different values never share a
    label."""
    name = str(value)
    if not name or name[0] == '"' or name != name.strip() or not name.isprintable():
        return visible_json(name)
    return name


def visible_json(name: str) -> str:
    """``name`` JSON-quoted with every character that does not print (``str.isprintable``: control and format
    characters — C0, DEL, C1, zero-width spaces and joiners, bidi overrides and isolates, U+FEFF, tag characters —,
    line and paragraph separators, private-use, unassigned and lone surrogate code points, and every space but the
    ASCII one) written as JSON's own ``\\uXXXX`` escape (a UTF-16 pair past U+FFFF), as the dashboard's
    ``quoted_name`` writes a name (``costline.dashboards.charts.QUOTED_NAME_SQL``): the label reads visibly different
    from a look-alike (``"ac\\u200bme"``), copies as plain text, and is still JSON (``json.loads`` gives the name
    back)."""
    text = json.dumps(name, ensure_ascii=False)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else json.dumps(ch)[1:-1] for ch in text)


def canonical_label(label: object) -> str:
    """The one spelling of a label, for comparing labels (a silence's matcher with an alert's label): a JSON-quoted
    label is re-written by :func:`visible_json`, so ``"ac\\u200bme"`` and the spelling costline stored before
    labels escaped invisible characters (the raw U+200B between the quotes) are the same label; any other label is
    itself. A quoted label stays quoted (``"(none)"`` is the tenant ``(none)``, never the tenant-less series)."""
    text = str(label)
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            name = json.loads(text)
        except ValueError:
            return text
        if isinstance(name, str):
            return visible_json(name)
    return text


def tenant_label(tenant: str | None) -> str:
    """The ``tenant`` label (alert key, Slack line, silence matcher) of a tenant id; None: no tenant.

    A tenant id is anything a request carried, ``(none)`` included, so the label of the tenant-less series,
    :data:`NO_TENANT`, is kept out of the ids' range: ``(none)`` itself is labelled JSON-quoted (``"(none)"``), as
    is any id :func:`label_value` quotes (``""``, ``"\\"a\\""``); every other id is its own label. A quoted label
    starts with ``"`` and an unquoted one never does, so two different series never share a label: the tenant
    ``(none)`` and the lookups without a tenant have their own alert, message and dedup, and read apart.
    """
    if tenant is None:
        return NO_TENANT
    name = str(tenant)
    return visible_json(name) if name == NO_TENANT else label_value(name)


def _shown(value: object) -> str:
    """A value from data as a summary or figure shows it: its label (:func:`label_value`), neutralised for Slack's
    mrkdwn (:func:`costline.alerts.message.shown_value`)."""
    return shown_value(label_value(value))


#: Characters a dig-in query writes as ``chr()`` besides those that do not print: a backtick (it would end the
#: message's code block) and the ``@`` of ``@here``/``@channel``/``@everyone`` (Slack would get a zero-width space
#: after it).
_SQL_SPELLED = re.compile(r"[`]|@(?=(?:channel|here|everyone)\b)", re.IGNORECASE)


def sql_shown(text: object) -> str:
    """``text`` as a SQL string expression that reads the same in a Slack code block as it runs: a single-quoted
    literal (:func:`costline.sqlutil.sql_str`), with every character that does not print (a zero-width space, a
    newline, a bidi override), a backtick, and the ``@`` of ``@here`` written as a DuckDB ``chr()`` call joined with
    ``||`` — ``'ac' || chr(8203) || 'me'`` in parentheses — so the query copied from the message selects the rows
    of the series it names (Slack would show U+FFFD for an invisible character, end its code block at a backtick,
    put a zero-width space after ``@here``)."""
    name = str(text)
    if name.isprintable() and not _SQL_SPELLED.search(name):
        return sql_str(name)
    parts: list[str] = []
    run: list[str] = []
    for i, ch in enumerate(name):
        if ch.isprintable() and not _SQL_SPELLED.match(name, i):
            run.append(ch)
            continue
        if run:
            parts.append(sql_str("".join(run)))
            run = []
        parts.append(f"chr({ord(ch)})")
    if run:
        parts.append(sql_str("".join(run)))
    return "(" + " || ".join(parts) + ")"


def _cache_baseline(s: CacheHitRateDropSettings, row: Row) -> tuple[str, Any, Any, str]:
    """(baseline used, its hit rate, its lookups, its words) for a ``cache_hit_rate_7d`` row."""
    if s.baseline == "hour_of_day" and "avg_7d_hour" in row:
        return "hour_of_day", row.get("avg_7d_hour"), row.get("lookups_7d_hour"), "the same hour's 7-day average"
    return "rolling", row.get("avg_7d"), row.get("lookups_7d"), "7-day average"


def _cache_query(where: str, window: datetime) -> str:
    return ("SELECT window_start, tenant, lookups, round(hit_rate, 3) AS hit_rate, round(avg_7d_hour, 3) AS "
            "avg_7d_hour,\n       round(avg_7d, 3) AS avg_7d\n"
            f"FROM cache_hit_rate_7d WHERE {where}\n"
            f"  AND window_start >= TIMESTAMP '{window - timedelta(hours=24):%Y-%m-%d %H:%M:%S}'\n"
            "ORDER BY window_start")


def _cache_series_query(tenant: str | None, window: datetime) -> str:
    """The dig-in query of one series: the tenant-less one is ``tenant IS NULL``, a tenant its own id."""
    return _cache_query("tenant IS NULL" if tenant is None else f"tenant = {sql_shown(tenant)}", window)


def _cache_no_hour_baseline(row: Row, tenant: str, raw: str | None, window: datetime) -> Observation:
    rate = float(row["hit_rate"]) if _finite(row.get("hit_rate")) else None
    return Observation(
        rule="cache_hit_rate_drop", labels={"tenant": tenant}, condition=Condition.BAND, value=rate, threshold=None,
        summary=(f"cache hit rate of {shown_value(tenant)} {'-' if rate is None else f'{rate:.1%}'}; no lookups at "
                 f"{window:%H}:00 UTC in the 7 days before, so no same-hour baseline: too little history to "
                 "judge, state kept"),
        window=_window_text(window),
        figures={"hit rate": "-" if rate is None else f"{rate:.1%}", "lookups": int(row.get("lookups") or 0),
                 f"lookups ({window:%H}:00, 7 days)": 0},
        query=_cache_series_query(raw, window),
        data_until=window + timedelta(hours=1),
    )


#: The ``excess`` of a series whose lookups stopped: past every drop (a drop's excess is under 1), so it is
#: shown first in a grouped message.
STOPPED_EXCESS = 1.0


def _cache_stopped(s: CacheHitRateDropSettings, row: Row, tenant: str, raw: str | None, window: datetime
                   ) -> Observation | None:
    """A series with no lookups in the closed hour (``lookups`` 0) while other series have some: a BREACH when its
    baseline had at least ``min_lookups_7d`` lookups (its traffic stopped: a broken client, a lost route), else
    nothing (too little history to expect any)."""
    baseline, _avg, lookups_base_raw, _words = _cache_baseline(s, row)
    if not _finite(lookups_base_raw) or int(lookups_base_raw) < s.min_lookups_7d:
        return None
    lookups_base = int(lookups_base_raw)
    if baseline == "hour_of_day":
        per_hour, words = lookups_base / 7, f"the same hour's 7-day average {lookups_base / 7:.0f} lookups"
        base_key = f"lookups ({window:%H}:00, 7 days)"
    else:
        per_hour, words = lookups_base / 168, f"the 7-day average {lookups_base / 168:.0f} lookups an hour"
        base_key = "lookups (7 days)"
    return Observation(
        rule="cache_hit_rate_drop", labels={"tenant": tenant}, condition=Condition.BREACH, value=None,
        threshold=None,
        summary=(f"no lookups for {shown_value(tenant)} this hour, {words}, while other series' lookups arrive: "
                 "its traffic "
                 "stopped or no longer reaches the cache; check its client and routing"),
        window=_window_text(window),
        figures={"lookups": 0, base_key: lookups_base, "expected an hour": f"{per_hour:.0f}",
                 "fires at": f"0 lookups with ≥ {s.min_lookups_7d} in the baseline"},
        query=_cache_series_query(raw, window),
        data_until=window + timedelta(hours=1),
        excess=STOPPED_EXCESS,
    )


def _cache_hit_rate_drop(s: CacheHitRateDropSettings, snap: Snapshot, now: datetime, settle_s: float,
                         window: datetime | None = None) -> list[Observation] | None:
    """The closed hour's hit rate per tenant against its baseline: by default the same hour of day over the 7 days
    before (``avg_7d_hour``: a tenant whose nights are quieter and hit less is not paged every night), or with
    ``baseline = "rolling"`` all 168 hours before (``avg_7d``). A series with a solid baseline and no lookups at
    all in the hour, while other series have some, is a breach too (:func:`_cache_stopped`). ``window``: the hour
    judged (default: the last closed one)."""
    if snap.cache is None:
        return None
    window = closed_window(now, settle_s) if window is None else _naive(window)
    rows = [r for r in snap.cache if _naive(r["window_start"]) == window]
    # the pipeline is alive for this hour when some series has lookups in it: silence of one series is then its own
    alive = any(_finite(r.get("lookups")) and int(r["lookups"]) > 0 for r in rows)
    out = []
    for row in rows:
        raw = None if row.get("tenant") is None else str(row["tenant"])
        tenant = tenant_label(raw)  # the series' key and display: never the same for two series
        if "lookups" in row and not (_finite(row.get("lookups")) and int(row["lookups"]) > 0):
            stopped = _cache_stopped(s, row, tenant, raw, window) if alive else None
            if stopped is not None:
                out.append(stopped)
            continue
        baseline, avg_raw, lookups_base_raw, words = _cache_baseline(s, row)
        if row.get("avg_7d") is None and avg_raw is None:
            continue  # no history at all for this series (a new tenant): no baseline to judge against
        if avg_raw is None:  # history, but none at this hour of day: too little to judge, the state is kept
            out.append(_cache_no_hour_baseline(row, tenant, raw, window))
            continue
        if not _finite(row.get("hit_rate"), avg_raw):
            log.warning("alerts: cache_hit_rate_drop: %s at %s has a NaN/NULL hit rate (%r, %s %r): ignored",
                        tenant, _window_text(window), row.get("hit_rate"), words, avg_raw)
            continue
        rate, avg = float(row["hit_rate"]), float(avg_raw)
        lookups, hits = int(row["lookups"]), int(row["hits"])
        lookups_base = int(lookups_base_raw or 0)
        hits_base = round(avg * lookups_base)
        p = two_proportion_p_value(hits, lookups, hits_base, lookups_base)
        enough = lookups >= s.min_lookups and lookups_base >= s.min_lookups_7d
        drop = avg - rate
        if enough and drop >= s.drop - 1e-12 and p < s.max_p_value:
            cond = Condition.BREACH
        elif enough and drop <= s.resolve_within + 1e-12:
            cond = Condition.OK  # a quiet hour (2 lookups, both hits) is too little data to resolve on
        else:
            cond = Condition.BAND
        query = _cache_series_query(raw, window)
        if baseline == "hour_of_day":
            base_figures: dict[str, Any] = {
                "same hour's 7-day average": f"{avg:.1%}",
                "drop": f"{drop * 100:.1f} points", "lookups": lookups,
                f"lookups ({window:%H}:00, 7 days)": lookups_base}
        else:
            base_figures = {"7-day average": f"{avg:.1%}", "drop": f"{drop * 100:.1f} points",
                            "lookups": lookups, "lookups (7 days)": lookups_base}
        figures = {"hit rate": f"{rate:.1%}", **base_figures,
                   "p-value": f"{p:.2g}", "fires at": f"{s.drop * 100:.0f} points under",
                   "resolves within": f"{s.resolve_within * 100:.0f} points"}
        if baseline == "hour_of_day" and _finite(row.get("avg_7d")):
            figures["all hours' 7-day average"] = f"{float(row['avg_7d']):.1%}"
        out.append(Observation(
            rule="cache_hit_rate_drop", labels={"tenant": tenant}, condition=cond,
            value=rate, threshold=avg - s.drop, excess=(avg - s.drop) - rate,
            summary=(f"cache hit rate of {shown_value(tenant)} {rate:.1%} vs {words} {avg:.1%} "
                     f"({drop * 100:+.1f} points under)" if drop >= 0 else
                     f"cache hit rate of {shown_value(tenant)} {rate:.1%} vs {words} {avg:.1%}"),
            window=_window_text(window),
            figures=figures,
            query=query,
            data_until=window + timedelta(hours=1),
        ))
    return out


#: How many hours, the closed one included, a low-volume tier's hour may be pooled with (the hours just before it)
#: to reach ``min_attempts`` / ``min_successes`` (``cost_per_success_rise``, ``rejected_attempts_rise``): a tier
#: with 2 requests an hour is then judged over its last 15 hours instead of never. A tier that does not reach the
#: minimum in this many hours is not judged (BAND, as before). The source reads this many hours.
POOL_HOURS = 24


def _pooled(row: Row, window: datetime, first: Mapping[str, float], key: str, minimum: int
            ) -> tuple[int, dict[str, float], dict[str, float], list[Row]] | None:
    """Pool the closed hour ``window`` (its figures ``first``) with the hours just before it, newest first, until
    ``first[key]`` summed reaches ``minimum``: (hours pooled K, the K hours' sums, the sums of the K-1 hours before
    the closed one, their rows) — or None when :data:`POOL_HOURS` hours do not reach it or the row has no
    ``recent`` hours (a row written by hand or by an older source). ``row["recent"]``: the per-hour rows of the
    ``POOL_HOURS - 1`` hours before ``window`` (window_start and the figures of ``first``); a row outside them or
    with a figure that is not a count (a cost: a finite number ≥ 0) is left out."""
    recent = row.get("recent")
    if not isinstance(recent, (list, tuple)):
        return None
    by_hour: dict[datetime, list[Row]] = {}
    for r in recent:
        if not isinstance(r, Mapping) or not isinstance(r.get("window_start"), datetime):
            continue
        start = _naive(r["window_start"])
        if not window - timedelta(hours=POOL_HOURS - 1) <= start < window:
            continue
        if any(not _finite(r.get(f) or 0) or float(r.get(f) or 0) < 0 for f in first):
            continue
        by_hour.setdefault(start, []).append(r)
    total = {f: float(v) for f, v in first.items()}
    before = {f: 0.0 for f in first}
    used: list[Row] = []
    for k in range(1, POOL_HOURS):
        if total[key] >= minimum:
            return k, total, before, used
        for r in by_hour.get(window - timedelta(hours=k), ()):
            for f in first:
                v = float(r.get(f) or 0)
                total[f] += v
                before[f] += v
            used.append(r)
    if total[key] >= minimum:
        return POOL_HOURS, total, before, used
    return None


def _merge_problems(texts: Iterable[Any]) -> str | None:
    """The reasons of several hours (``'validator 12, output_format 3'`` each) summed per reason, most first;
    an item that does not read as ``<reason> <count>`` is kept as it is."""
    counts: dict[str, int] = {}
    odd: list[str] = []
    for text in texts:
        for item in str(text or "").split(","):
            item = item.strip()
            if not item:
                continue
            name, _, n = item.rpartition(" ")
            if name and n.isdigit():
                counts[name] = counts.get(name, 0) + int(n)
            elif item not in odd:
                odd.append(item)
    parts = [f"{name} {n}" for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))] + odd
    return ", ".join(parts) or None


def _span_text(start: datetime, hours: int) -> str:
    """The pooled hours as text: "2026-11-08 01:00–11:00 UTC", "2026-11-07 20:00–2026-11-08 11:00 UTC"."""
    end = start + timedelta(hours=hours)
    return f"{start:%Y-%m-%d %H:%M}–{end.strftime('%H:%M' if end.date() == start.date() else '%Y-%m-%d %H:%M')} UTC"


def _cost_per_success_rise(s: CostPerSuccessRiseSettings, snap: Snapshot, now: datetime, settle_s: float,
                           window: datetime | None = None
                           ) -> list[Observation] | None:
    """A tier's cost per success in the last hour against its 7-day level; an hour with fewer than
    ``min_successes`` successes is pooled with the hours just before it (:func:`_pooled`)."""
    if snap.tiers is None:
        return None
    window = closed_window(now, settle_s) if window is None else _naive(window)
    out = []
    for row in snap.tiers:
        tier = row.get("tier")
        if _naive(row["window_start"]) != window or tier is None or tier in s.exclude_tiers:
            continue
        if not _finite(row.get("cost_usd") or 0.0, row.get("cost_usd_7d") or 0.0,
                       row.get("successes") or 0, row.get("successes_7d") or 0):
            log.warning("alerts: cost_per_success_rise: tier %s at %s has NaN figures (cost %r, 7-day %r): ignored",
                        tier, _window_text(window), row.get("cost_usd"), row.get("cost_usd_7d"))
            continue
        successes, succ_7d = int(row.get("successes") or 0), int(row.get("successes_7d") or 0)
        cost, cost_7d = float(row.get("cost_usd") or 0.0), float(row.get("cost_usd_7d") or 0.0)
        # the sums the significance test needs (None: a row without them, judged on the rise alone)
        spread = {f: row.get(f) for f in ("n", "cost_sq", "success_cost")}
        spread_7d = {f: row.get(f"{f}_7d") for f in ("n", "cost_sq", "success_cost")}
        ignored, ignored_7d = int(row.get("ignored") or 0), int(row.get("ignored_7d") or 0)
        if ignored or ignored_7d:
            log.warning("alerts: cost_per_success_rise: tier %s at %s: ignored %d hourly cost figure(s) that were "
                        "NaN/NULL (%d this hour)", tier, _window_text(window), ignored + ignored_7d, ignored)
        if succ_7d <= 0 or successes <= 0 or cost_7d <= 0:
            continue
        hours, alone = 1, successes
        if successes < s.min_successes:  # a quiet tier: judge its last hours together (see POOL_HOURS)
            first = {"successes": successes, "cost_usd": cost}
            if all(v is not None for v in (*spread.values(), *spread_7d.values())):
                first.update({f: float(v) for f, v in spread.items()})  # type: ignore[arg-type]
            pool = _pooled(row, window, first, "successes", s.min_successes)
            if pool is not None:
                k, total, before, _rows = pool
                # the 7 days before the closed hour, less the pooled hours: hour and baseline never overlap
                base_succ, base_cost = succ_7d - int(before["successes"]), cost_7d - before["cost_usd"]
                if base_succ > 0 and base_cost > 0:
                    hours, successes, cost = k, int(total["successes"]), total["cost_usd"]
                    succ_7d, cost_7d = base_succ, base_cost
                    if "n" in first:
                        spread = {f: total[f] for f in spread}
                        spread_7d = {f: float(spread_7d[f]) - before[f] for f in spread_7d}  # type: ignore[arg-type]
        start = window - timedelta(hours=hours - 1)
        pooled = (f"over the last {hours} hours ({alone} successes in the closed hour alone, under min_successes "
                  f"{s.min_successes}): " if hours > 1 else "")
        cps, base = cost / successes, cost_7d / succ_7d
        rise = (cps / base - 1.0) * 100.0
        enough = successes >= s.min_successes and succ_7d >= s.min_successes_7d
        # one-sided: the window's cost per success is over the 7 days' (a rise within its requests' spread — a
        # few long answers among 20 — is noise, not routing or pricing gone wrong)
        p = ratio_rise_p_value({**spread, "cost": cost, "successes": successes},
                               {**spread_7d, "cost": cost_7d, "successes": succ_7d})
        if enough and rise >= s.rise_pct - 1e-9 and (p is None or p < s.max_p_value):
            cond = Condition.BREACH
        elif enough and rise <= s.resolve_pct + 1e-9:
            cond = Condition.OK  # too few successes to call it back to normal: keep the state
        else:
            cond = Condition.BAND
        query = (
            "SELECT window_start, tier, requests, successes, round(call_cost_usd, 4) AS call_cost_usd,\n"
            "       round(call_cost_usd / nullif(successes, 0), 6) AS call_cost_per_success\n"
            f"FROM tier_hourly WHERE tier = {sql_shown(tier)}\n"
            f"  AND window_start >= TIMESTAMP '{window - timedelta(hours=24):%Y-%m-%d %H:%M:%S}'\n"
            "ORDER BY window_start"
        )
        out.append(Observation(
            rule="cost_per_success_rise", labels={"tier": label_value(tier)}, condition=cond,
            value=cps, threshold=base * (1 + s.rise_pct / 100), excess=(rise - s.rise_pct) / 100,
            summary=(f"{pooled}cost per successful request on tier {_shown(tier)} ${cps:.5f} vs 7-day ${base:.5f} "
                     f"({rise:+.0f}%; what the calls cost, the student's hosting left out)"),
            window=_window_text(window) if hours == 1 else _span_text(start, hours),
            figures={"cost per success": f"${cps:.5f}", "7-day level": f"${base:.5f}", "rise": f"{rise:+.1f}%",
                     "successes": successes, "successes (7 days)": succ_7d,
                     **({"pooled": f"last {hours} hours ({alone} successes in the closed hour; the 7-day level "
                                   "leaves them out)"} if hours > 1 else {}),
                     **({"p-value": f"{p:.2g} (fires under {s.max_p_value:g})"} if p is not None else {}),
                     "fires at": f"+{s.rise_pct:g}%", "resolves under": f"+{s.resolve_pct:g}%",
                     **({"ignored (NaN/NULL cost)": f"{ignored + ignored_7d} hourly figure(s)"}
                        if ignored or ignored_7d else {})},
            query=query,
            data_until=window + timedelta(hours=1),
        ))
    return out


def _rejected_attempts_rise(s: RejectedAttemptsRiseSettings, snap: Snapshot, now: datetime, settle_s: float,
                           window: datetime | None = None
                            ) -> list[Observation] | None:
    """A tier whose answers were turned down (quality gates, broken schemas, API errors) in the last hour clearly
    more often than over the 7 days before: the student drifting, a router sending work too low, an API failing.
    An hour with fewer than ``min_attempts`` calls is pooled with the hours just before it (:func:`_pooled`)."""
    if snap.rejections is None:
        return None
    window = closed_window(now, settle_s) if window is None else _naive(window)
    out = []
    for row in snap.rejections:
        tier = row.get("tier")
        if _naive(row["window_start"]) != window or tier is None:
            continue
        attempts, rejected = int(row.get("attempts") or 0), int(row.get("rejected") or 0)
        attempts_7d, rejected_7d = int(row.get("attempts_7d") or 0), int(row.get("rejected_7d") or 0)
        if attempts <= 0 or attempts_7d <= 0:
            continue
        hours, alone, problems = 1, attempts, row.get("problems")
        if attempts < s.min_attempts:  # a quiet tier: judge its last hours together (see POOL_HOURS)
            pool = _pooled(row, window, {"attempts": attempts, "rejected": rejected}, "attempts", s.min_attempts)
            if pool is not None:
                k, total, before, used = pool
                # the 7 days before the closed hour, less the pooled hours: the two samples are disjoint, so the
                # two-proportion test below stays valid for the pooled counts
                base_att = attempts_7d - int(before["attempts"])
                base_rej = max(rejected_7d - int(before["rejected"]), 0)
                if base_att > 0:
                    hours, attempts, rejected = k, int(total["attempts"]), int(total["rejected"])
                    attempts_7d, rejected_7d = base_att, base_rej
                    problems = _merge_problems([row.get("problems"), *(r.get("problems") for r in used)])
        start = window - timedelta(hours=hours - 1)
        pooled = (f"over the last {hours} hours ({alone} calls in the closed hour alone, under min_attempts "
                  f"{s.min_attempts}): " if hours > 1 else "")
        share, base = min(rejected / attempts, 1.0), min(rejected_7d / attempts_7d, 1.0)
        # one-sided: the hour's share of accepted answers is lower than the 7 days'
        p = two_proportion_p_value(attempts - min(rejected, attempts), attempts,
                                   attempts_7d - min(rejected_7d, attempts_7d), attempts_7d)
        enough = attempts >= s.min_attempts and attempts_7d >= s.min_attempts_7d
        rise = share - base
        if enough and rise >= s.rise - 1e-12 and p < s.max_p_value:
            cond = Condition.BREACH
        elif enough and rise <= s.resolve_within + 1e-12:
            cond = Condition.OK
        else:
            cond = Condition.BAND
        why = _shown(problems) if problems else "no reasons recorded"
        query = (
            "SELECT request_id, ts, routed_tier, tier, rejected_attempts, task_type, tenant\n"
            # the tier's own attempts (',tier:' in the comma-separated 'tier:problem' list, a plain substring): a LIKE
            # pattern read a "_" or "%" in a tier's name as a wildcard, and "budget:" inside "eu-budget:" as this tier
            f"FROM requests WHERE contains(',' || rejected_attempts, {sql_shown(',' + tier + ':')})\n"
            f"  AND ts >= TIMESTAMP '{start:%Y-%m-%d %H:%M:%S}'\n"
            f"  AND ts < TIMESTAMP '{window + timedelta(hours=1):%Y-%m-%d %H:%M:%S}'\n"
            "ORDER BY ts"
        )
        out.append(Observation(
            rule="rejected_attempts_rise", labels={"tier": label_value(tier)}, condition=cond,
            value=share, threshold=base + s.rise, excess=share - (base + s.rise),
            summary=(f"{pooled}answers of tier {_shown(tier)} turned down {share:.1%} of the time vs 7-day "
                     f"{base:.1%} ({rise * 100:+.1f} points): {why}"),
            window=_window_text(window) if hours == 1 else _span_text(start, hours),
            figures={"turned down": f"{rejected} of {attempts} ({share:.1%})", "7-day share": f"{base:.1%}",
                     "rise": f"{rise * 100:+.1f} points",
                     ("why (this hour)" if hours == 1 else f"why (last {hours} hours)"): _shown(problems) if problems
                     else "-",
                     "attempts (7 days)": attempts_7d, "p-value": f"{p:.2g}",
                     **({"pooled": f"last {hours} hours ({alone} calls in the closed hour; the 7-day share leaves "
                                   "them out)"} if hours > 1 else {}),
                     "fires at": f"{s.rise * 100:.0f} points over",
                     "resolves within": f"{s.resolve_within * 100:.0f} points"},
            query=query,
            data_until=window + timedelta(hours=1),
        ))
    return out


def _latest_by(rows: Iterable[Row], key: str) -> dict[str, list[Row]]:
    """Rows per key value, newest (by finished_at) first."""
    by: dict[str, list[Row]] = {}
    for row in rows:
        if row.get(key) is None or row.get("finished_at") is None:
            continue
        by.setdefault(str(row[key]), []).append(row)
    for runs in by.values():
        runs.sort(key=lambda r: _naive(r["finished_at"]), reverse=True)
    return by


#: At most this many characters of an eval run's ``reason`` (written by the drift job) go into a message.
_MAX_REASON = 300


def _student_drift(s: StudentDriftSettings, snap: Snapshot, now: datetime, settle_s: float
                   ) -> list[Observation] | None:
    """One observation per subtype, on its latest eval run: BREACH when that run has at least ``min_n`` queries and
    either its whole gap CI is over its threshold or the drift job flagged it (``eval_runs.flagged``: the job's CI,
    baseline-shift — Fisher / Mann-Whitney — or trend — Mann-Kendall — rule; its ``reason`` says which, and the
    message quotes it); OK when judged, not flagged and the CI is wholly at or under the threshold; else BAND."""
    if snap.eval_runs is None:
        return None
    out = []
    limit = _naive(now)
    rows = [r for r in snap.eval_runs if r.get("finished_at") is not None and _naive(r["finished_at"]) <= limit]
    for subtype, runs in sorted(_latest_by(rows, "subtype").items()):
        # Judge the latest run only: an older run is no evidence about the student today. A latest run
        # too small to judge (n < min_n) is no fresh evidence either way: BAND keeps the state.
        run = runs[0]
        n = int(run.get("n") or 0)
        judged = n >= s.min_n and _finite(run.get("gap"))
        gap = float(run["gap"]) if _finite(run.get("gap")) else None
        threshold = float(run["threshold"]) if run.get("threshold") is not None else s.max_gap
        lo = float(run["gap_ci_low"]) if run.get("gap_ci_low") is not None else gap
        hi = float(run["gap_ci_high"]) if run.get("gap_ci_high") is not None else gap
        # The job's verdict (a row written before the column existed, or by hand, reads as not flagged); its reason
        # is data from the lake: bounded, and shown as every other value from data is (label_value, shown_value).
        flagged = run.get("flagged") is True
        reason = str(run.get("reason") or "")[:_MAX_REASON] if flagged else ""
        why = _shown(reason) if reason else "no reason recorded"
        redistill = sorted({str(r["run_id"]) for r in snap.redistills or ()
                            if r.get("drift_run_id") == run.get("run_id") and r.get("subtype") == subtype})
        if judged and (flagged or (lo is not None and lo > threshold)):
            cond = Condition.BREACH  # the job's rules flagged it, or the whole CI is over the tolerated gap
        elif judged and hi is not None and hi <= threshold:
            cond = Condition.OK
        else:
            cond = Condition.BAND
        ci = f" (CI {lo:.3f}–{hi:.3f})" if lo is not None and hi is not None else ""
        measured = f"{gap:.3f}{ci}" if gap is not None else "not measured"
        too_few = (f"; only {n} queries evaluated (fewer than min_n {s.min_n}): too few to judge, state kept"
                   if n < s.min_n else "")
        out.append(Observation(
            rule="student_drift", labels={"subtype": label_value(subtype)}, condition=cond, value=gap,
            threshold=threshold,
            summary=f"student-teacher quality gap on {_shown(subtype)} {measured} vs {threshold:.3f}"
                    + (f"; flagged by the drift job: {why}" if flagged else "") + too_few
                    + (f"; fresh traffic exported for re-distillation as run {', '.join(redistill)}"
                       if redistill else ""),
            window=f"eval run {_shown(run.get('run_id'))} finished {_naive(run['finished_at']):%Y-%m-%d %H:%M} UTC",
            figures={"gap": f"{gap:.3f}" if gap is not None else "-",
                     "gap CI": f"{lo:.3f} – {hi:.3f}" if lo is not None and hi is not None else "-",
                     "tolerated gap": f"{threshold:.3f}",
                     "queries evaluated": n if n >= s.min_n else f"{n} (too few to judge: min_n {s.min_n})",
                     **({"flagged by the job": why} if flagged else {}),
                     "run": _shown(run.get("run_id")),
                     **({"re-distillation": f"exported {', '.join(redistill)}: `costline distill teacher "
                                            f"--run {redistill[-1]}`, then train, eval, gate"}
                        if redistill else {})},
            query=("SELECT run_id, finished_at, subtype, n, gap, gap_ci_low, gap_ci_high, threshold, flagged, reason\n"
                   f"FROM eval_runs WHERE subtype = {sql_shown(subtype)} ORDER BY finished_at DESC LIMIT 10"),
            data_until=_naive(run["finished_at"]),
        ))
    return out


def _pct_ci(rate: float | None, lo: float | None, hi: float | None) -> str:
    if rate is None:
        return "not judged"
    ci = f" (95% CI {lo:.1%}–{hi:.1%})" if lo is not None and hi is not None else ""
    return f"{rate:.1%}{ci}"


def _retrain_for(snap: Snapshot, latest: Row, tier: str, now: datetime) -> list[Row]:
    """The rows of the newest retrain that ran on this shadow run's results and was triggered by ``tier``."""
    if not snap.route_retrains:
        return []
    limit = _naive(now)
    after = _naive(latest["finished_at"])
    shadow_until = latest.get("until")
    runs: dict[str, list[Row]] = {}
    for r in snap.route_retrains:
        at = r.get("evaluated_at")
        if at is None or _naive(at) > limit or _naive(at) < after:
            continue
        if shadow_until is not None and r.get("window_until") is not None and \
                _naive(r["window_until"]) < _naive(shadow_until):
            continue
        if tier not in str(r.get("trigger") or "").split(","):
            continue
        runs.setdefault(str(r["retrain_id"]), []).append(r)
    if not runs:
        return []
    return max(runs.values(), key=lambda rows: _naive(rows[0]["evaluated_at"]))


def _retrain_text(rows: Sequence[Row]) -> tuple[str, dict[str, Any]]:
    """The verdict of a nightly retrain as a line of the alert's text and its message fields."""
    import shlex

    head = rows[0]
    if head.get("status") == "skipped":
        why = _shown(head.get("reason") or "too few labels")
        return (f"nightly retrain skipped: {why}", {"nightly retrain": "skipped: too few labels"})
    cand = str(head.get("candidate"))
    moved = int(head.get("moved_down") or 0)
    up = int(head.get("moved_up") or 0)  # the gate judges quality only: a candidate may cost more and pass

    def tier_text(r: Row) -> str:
        judged = int(r.get("tier_judged") or 0)
        rate = int(r.get("tier_adequate") or 0) / judged if judged else None
        return (f"{_shown(r['tier'])}: {int(r.get('tier_moved') or 0)} moved, adequate "
                f"{_pct_ci(rate, r.get('ci_low'), r.get('ci_high'))}"
                f"{'' if r.get('tier_passed') else ' — FAILS the gate'}")

    per_tier = "; ".join(tier_text(r) for r in rows if r.get("tier")) or "no request moves to a cheaper tier"
    gate = head.get("gate")
    gate_txt = f" (needs the 95% CI's lower bound ≥ {float(gate):.0%})" if gate is not None else ""
    if head.get("promoted"):
        verdict, then = "PASSED, promoted", "roll back with `costline route rollback`"
    elif head.get("passed"):
        verdict, then = "PASSED", f"promote with `costline route promote {shlex.quote(cand)}`"
    else:
        verdict = f"REFUSED (fails on {_shown(head.get('failing') or '?')})"
        then = (f"not promoted, {head.get('incumbent')} stays in service (the moved requests are in "
                f"{cand}.manifest.json)")
    text = (f"nightly retrain: candidate {cand} ({int(head.get('labels') or 0)} labels) vs "
            f"{head.get('incumbent')}: gate {verdict}{gate_txt}; it moves {moved} requests to cheaper tiers "
            f"({per_tier}){f' and {up} to dearer tiers' if up else ''}; {then}")
    fields: dict[str, Any] = {
        "nightly retrain": f"gate {verdict}", "moved to cheaper tiers": moved,
        **({"moved to dearer tiers": up} if up else {}),
        "adequacy of moved (95% CI)": per_tier[:300], "candidate": cand, "next step": then[:300]}
    return text, fields


def _routing_tier_match_drop(s: RoutingTierMatchDropSettings, snap: Snapshot, now: datetime, settle_s: float
                             ) -> list[Observation] | None:
    if snap.shadow_runs is None:
        return None
    out = []
    limit = _naive(now)
    rows = [r for r in snap.shadow_runs if r.get("finished_at") is not None and _naive(r["finished_at"]) <= limit]
    for tier, runs in sorted(_latest_by(rows, "tier").items()):
        # the latest run is judged, never an older one; one too small to judge (n < min_n) is no fresh evidence
        # (BAND keeps the state), and only runs big enough make the baseline
        latest = runs[0]
        n = int(latest.get("n") or 0)
        earlier = [r for r in runs[1:] if int(r.get("n") or 0) >= s.min_n][: s.baseline_runs]
        rate = float(latest["tier_match_rate"])
        base = sum(float(r["tier_match_rate"]) for r in earlier) / len(earlier) if earlier else None
        threshold = max(s.min_rate, base - s.drop) if base is not None else s.min_rate
        if n < s.min_n or rate != rate:
            cond = Condition.BAND
        elif rate < threshold - 1e-12:
            cond = Condition.BREACH
        elif rate >= threshold + s.resolve_within - 1e-12:
            cond = Condition.OK
        else:
            cond = Condition.BAND
        summary = (f"tier-match rate on {_shown(tier)} {rate:.1%}"
                   + (f" vs {base:.1%} over the previous {len(earlier)} runs" if base is not None else "")
                   + (f"; only {n} queries shadowed (fewer than min_n {s.min_n}): too few to judge, state kept"
                      if n < s.min_n else ""))
        figures: dict[str, Any] = {
            "tier-match rate": f"{rate:.1%}", "baseline": f"{base:.1%}" if base is not None else "n/a",
            "fires under": f"{threshold:.1%}",
            "queries shadowed": n if n >= s.min_n else f"{n} (too few to judge: min_n {s.min_n})"}
        query = ("SELECT run_id, finished_at, tier, tier_match_rate, n\n"
                 f"FROM shadow_runs WHERE tier = {sql_shown(tier)} ORDER BY finished_at DESC LIMIT 10")
        retrain = _retrain_for(snap, latest, tier, now) if cond != Condition.OK else []
        if retrain:
            line, more = _retrain_text(retrain)
            summary += "\n" + line
            figures.update(more)
            query += (";\nSELECT evaluated_at, status, candidate, passed, moved_down, tier, tier_moved, "
                      "tier_adequate, tier_judged, ci_low, ci_high, reason\n"
                      f"FROM route_retrains WHERE retrain_id = {sql_shown(retrain[0]['retrain_id'])}")
        out.append(Observation(
            rule="routing_tier_match_drop", labels={"tier": label_value(tier)}, condition=cond, value=rate,
            threshold=threshold,
            summary=summary,
            window=(f"shadow run {_shown(latest.get('run_id'))} finished "
                    f"{_naive(latest['finished_at']):%Y-%m-%d %H:%M} UTC"),
            figures=figures, query=query, data_until=_naive(latest["finished_at"]),
        ))
        out += _shadow_slices(s, latest, tier)
    return out


#: The shadow job's slice kinds (``shadow_runs.slices``) and the label each one's alert carries.
_SLICE_LABELS: Mapping[str, str] = {"subtype": "subtype", "task_type": "task_type"}
#: At most this many slices of one tier are read from a row (the rest are ignored).
_MAX_SLICES = 200


def _slice_rows(raw: Any) -> list[dict[str, Any]]:
    """``shadow_runs.slices`` (a JSON list written by the shadow job; NULL in older rows) → the well-formed slices;
    anything else is skipped (an unreadable value reads as no slices)."""
    if raw is None:
        return []
    try:
        items = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
    except (ValueError, TypeError):
        log.warning("alerts: shadow_runs.slices is not JSON: slices of this run skipped")
        return []
    out = []
    for it in items[:_MAX_SLICES] if isinstance(items, list) else []:
        try:
            kind, name = str(it["kind"]), str(it["name"])[:200]
            n, hits = int(it["n"]), int(it["matches"])
            upper = None if it.get("upper") is None else float(it["upper"])
        except (KeyError, TypeError, ValueError):
            continue
        if kind in _SLICE_LABELS and name and 0 <= hits <= n:
            out.append({"kind": kind, "name": name, "n": n, "matches": hits, "upper": upper,
                        "flagged": it.get("flagged") is True, "reason": str(it.get("reason") or "")[:300]})
    return out


def _shadow_slices(s: RoutingTierMatchDropSettings, latest: Row, tier: str) -> list[Observation]:
    """One observation per slice of ``tier`` in its latest shadow run, labelled tier + subtype (or task_type): fires
    when the job flagged the slice (its exact upper bound under the floor at the tier's Bonferroni level), clears
    when judged, not flagged and at or over ``min_rate``; a slice too small to judge keeps its state: one the job
    did not judge, or one with fewer than the rule's ``min_n`` requests (the tier's own minimum: a slice is judged
    on no less evidence than its tier)."""
    out = []
    for sl in _slice_rows(latest.get("slices")):
        kind, name, n, hits = sl["kind"], sl["name"], sl["n"], sl["matches"]
        rate = hits / n if n else float("nan")
        judged = sl["upper"] is not None and n >= s.min_n
        if sl["flagged"] and judged:
            cond = Condition.BREACH
        elif judged and rate >= s.min_rate - 1e-12:
            cond = Condition.OK
        else:
            cond = Condition.BAND
        label = _SLICE_LABELS[kind]
        upper = f"{sl['upper']:.1%}" if sl["upper"] is not None else "not judged"
        summary = (f"tier-match rate on {_shown(tier)}, {kind} {_shown(name)}: {hits}/{n} matched ({rate:.1%}, "
                   f"upper bound {upper})"
                   + (" under" if cond == Condition.BREACH else " vs") + f" the floor {s.min_rate:.0%}"
                   + ("" if judged else f"; too few to judge (min_n {s.min_n}), state kept"))
        out.append(Observation(
            rule="routing_tier_match_drop", labels={"tier": label_value(tier), label: label_value(name)},
            condition=cond, value=rate,
            threshold=s.min_rate, summary=summary,
            window=(f"shadow run {_shown(latest.get('run_id'))} finished "
                    f"{_naive(latest['finished_at']):%Y-%m-%d %H:%M} UTC"),
            figures={"slice": f"{kind} {_shown(name)}", "matched": f"{hits}/{n}", "upper bound": upper,
                     "floor": f"{s.min_rate:.0%}", **({"job's verdict": _shown(sl["reason"])} if sl["reason"] else {})},
            query=("SELECT request_id, trace_id, subtype, task_type, metric, score, match\n"
                   f"FROM shadow_items WHERE run_id = {sql_shown(latest.get('run_id'))} AND tier = {sql_shown(tier)} "
                   f"AND {kind} = {sql_shown(name)} ORDER BY score"),
            data_until=_naive(latest["finished_at"]),
        ))
    return out


def _pipeline_silent(s: PipelineSilentSettings, snap: Snapshot, now: datetime, settle_s: float
                     ) -> list[Observation] | None:
    if not snap.spans_known:
        return None
    if snap.last_span_at is None:
        return []  # nothing ever arrived: not an outage of a running pipeline
    silent = (_naive(now) - _naive(snap.last_span_at)).total_seconds()
    cond = Condition.BREACH if silent >= s.silent_s else Condition.OK
    return [Observation(
        rule="pipeline_silent", labels={}, condition=cond, value=silent, threshold=s.silent_s,
        summary=f"no spans in the lake for {silent / 60:.0f} minutes (last at {_naive(snap.last_span_at):%Y-%m-%d %H:%M:%S} UTC)",
        window=f"up to {_naive(now):%Y-%m-%d %H:%M} UTC",
        figures={"last span": f"{_naive(snap.last_span_at):%Y-%m-%d %H:%M:%S} UTC",
                 "silent for": f"{silent / 60:.1f} min", "fires after": f"{s.silent_s / 60:g} min"},
        query="-- the rule goes by when spans reached the lake (its files' times); these are the spans' own times,\n"
              "-- as the apps' clocks stamped them\n"
              "SELECT max(ts) AS last_request FROM requests_raw;\n"
              "SELECT date_trunc('minute', ts) AS minute, count(*) FROM calls_raw\n"
              "WHERE ts >= timezone('UTC', now()) - INTERVAL 2 HOURS GROUP BY 1 ORDER BY 1",
    )]


def _dlq_growing(s: DlqGrowingSettings, snap: Snapshot, now: datetime, settle_s: float
                 ) -> list[Observation] | None:
    if not snap.dlq_samples:
        return None
    samples = sorted(((_naive(t), int(c)) for t, c in snap.dlq_samples), key=lambda tc: tc[0])
    start = _naive(now) - timedelta(seconds=s.window_s)
    latest = samples[-1][1]
    before = [c for t, c in samples if t <= start]
    base = before[-1] if before else samples[0][1]
    new = latest - base
    cond = Condition.BREACH if new >= s.min_new else Condition.OK
    return [Observation(
        rule="dlq_growing", labels={}, condition=cond, value=float(new), threshold=float(s.min_new),
        summary=f"{new} new dead-lettered messages in {s.window_s / 60:g} minutes ({latest} in the DLQ)",
        window=f"{start:%Y-%m-%d %H:%M}–{_naive(now):%H:%M} UTC",
        figures={"new in window": new, "total in DLQ": latest, "fires at": s.min_new},
        query="-- the DLQ holds the raw messages the processor could not decode:\n"
              "-- kafka-console-consumer.sh --topic otlp_spans.dlq --property print.headers=true",
    )]


def _lake_unreadable(s: LakeUnreadableSettings, snap: Snapshot, now: datetime, settle_s: float
                     ) -> list[Observation] | None:
    if snap.query_errors is None:
        return None
    errors, aside = list(snap.query_errors), list(snap.set_aside)
    if errors:
        first = f"{errors[0][0]}: {errors[0][1]}"
        summary = (f"{len(errors)} lake quer{'y' if len(errors) == 1 else 'ies'} failed, the rules that need "
                   f"{'it' if len(errors) == 1 else 'them'} are skipped: {first[:300]}")
    elif aside:
        summary = (f"{len(aside)} lake file{'' if len(aside) == 1 else 's'} could not be read and "
                   f"{'was' if len(aside) == 1 else 'were'} set aside, so every figure leaves out "
                   f"{'its' if len(aside) == 1 else 'their'} rows: {aside[0][:300]} — restore it (the log of "
                   "the process that set it aside says why) and rename it back, or delete it")
    else:
        summary = "the lake's views are readable again"
    figures = {what: err[:300] for what, err in errors}
    figures.update({f"set aside {i + 1}": path[:300] for i, path in enumerate(aside[:10])})
    return [Observation(
        rule="lake_unreadable", labels={}, condition=Condition.BREACH if errors or aside else Condition.OK,
        value=float(len(errors) + len(aside)), threshold=1.0,
        summary=summary,
        window=f"at {_naive(now):%Y-%m-%d %H:%M} UTC",
        figures=figures,
        query="-- find the file that does not read (each one alone):\n"
              "SELECT filename, count(*) FROM read_parquet('<lake>/*/date=*/*.parquet', filename = true,\n"
              "                                            union_by_name = true) GROUP BY 1",
    )]


#: What a rule's series is made of, for the message of an alert closed for lack of data:
#: (what stopped, formatted with the alert's labels; what to check).
_NO_DATA: Mapping[str, tuple[str, str]] = {
    "cache_hit_rate_drop": ("no lookups for {tenant}", "check its traffic"),
    "cost_per_success_rise": ("no successful requests on tier {tier}", "check its traffic"),
    "rejected_attempts_rise": ("no calls on tier {tier}", "check its traffic"),
    "student_drift": ("no eval run for subtype {subtype}", "check the nightly drift job"),
    "routing_tier_match_drop": ("no shadow run for tier {tier}", "check the nightly shadow job"),
}


def no_data_summary(rule: str, labels: Mapping[str, str], since: datetime | None, now: datetime) -> str:
    """The line of an alert closed because its series vanished (``no_data_resolve_s``): what stopped since when
    — "no lookups for acme since 11:00 UTC — closed for lack of data; check its traffic" — never the last
    figures, which are no longer current."""
    what, check = _NO_DATA.get(rule, ("", "check where its data comes from"))
    try:
        head = what.format(**{k: shown_value(v) for k, v in labels.items()}) if what else ""
    except (KeyError, IndexError, ValueError):
        head = ""
    if not head:
        shown = ", ".join(f"{k}={shown_value(v)}" for k, v in sorted(labels.items()))
        head = f"no data for {rule}" + (f" ({shown})" if shown else "")
    when = ""
    if since is not None:
        since, now = _naive(since), _naive(now)
        when = f" since {since:%H:%M} UTC" if since.date() == now.date() else f" since {since:%Y-%m-%d %H:%M} UTC"
    return f"{head}{when} — closed for lack of data; {check}"


Evaluator = Callable[[Any, Snapshot, datetime, float], "list[Observation] | None"]

_EVALUATORS: Mapping[str, Evaluator] = {
    "cache_hit_rate_drop": _cache_hit_rate_drop,
    "cost_per_success_rise": _cost_per_success_rise,
    "rejected_attempts_rise": _rejected_attempts_rise,
    "student_drift": _student_drift,
    "routing_tier_match_drop": _routing_tier_match_drop,
    "pipeline_silent": _pipeline_silent,
    "dlq_growing": _dlq_growing,
    "lake_unreadable": _lake_unreadable,
}
RULE_NAMES: tuple[str, ...] = tuple(_EVALUATORS)
_HOURLY: Mapping[str, Callable[..., "list[Observation] | None"]] = {
    "cache_hit_rate_drop": _cache_hit_rate_drop,
    "cost_per_success_rise": _cost_per_success_rise,
    "rejected_attempts_rise": _rejected_attempts_rise,
}
#: The rules that judge closed hours of the lake: an hour whose data lands late is judged when it lands.
HOURLY_RULES: tuple[str, ...] = tuple(_HOURLY)
#: Evaluated every interval over the lake's aggregates.
STREAM_RULES: tuple[str, ...] = ("cache_hit_rate_drop", "cost_per_success_rise", "rejected_attempts_rise",
                                 "pipeline_silent", "dlq_growing", "lake_unreadable")
#: Evaluated over the nightly jobs' results (also every interval: the state machine dedups).
JOB_RULES: tuple[str, ...] = ("student_drift", "routing_tier_match_drop")


@dataclass(frozen=True)
class Rule:
    """A named rule with its settings (``[alerts.<name>]``)."""

    name: str
    settings: RuleSettings
    settle_s: float = 0.0

    @property
    def inhibits(self) -> tuple[str, ...]:
        return tuple(getattr(self.settings, "inhibits", ()))


def evaluate(rule: Rule, snapshot: Snapshot, now: datetime, *, window: datetime | None = None
             ) -> list[Observation] | None:
    """Observations of ``rule`` over ``snapshot`` as of ``now``; None when it cannot be evaluated.

    ``window`` (an :data:`HOURLY_RULES` rule only): judge that hour instead of the last closed one — an hour whose
    data landed late (after a processor outage). Its observations say which hour, and that it was judged late."""
    if window is None or rule.name not in HOURLY_RULES:
        return _EVALUATORS[rule.name](rule.settings, snapshot, now, rule.settle_s)
    window = _naive(window)
    out = _HOURLY[rule.name](rule.settings, snapshot, now, rule.settle_s, window)
    if out is None or window == closed_window(now, rule.settle_s):
        return out
    late = (f" [hour {_window_text(window)}, judged late: its data reached the lake after the hour closed, "
            f"at {_naive(now):%H:%M} UTC]")
    return [dataclasses.replace(o, summary=o.summary + late) for o in out]


def rules_from_config(config: AlertsConfig, names: Iterable[str] | None = None) -> list[Rule]:
    """The enabled rules of the config (optionally only ``names``)."""
    wanted = set(RULE_NAMES if names is None else names)
    out = []
    for name in RULE_NAMES:
        settings = getattr(config, name)
        if name in wanted and settings.enabled:
            out.append(Rule(name, settings, config.settle_s))
    return out
