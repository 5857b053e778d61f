"""Routing labels from production: the shadow job's verdicts and the escalations, read from the lake.

What a request tells about its *cheapest adequate tier* (the learned policy's label; tiers
ordered budget < mid < upper < frontier, and a tier that is adequate is assumed adequate
on every tier above it):

* a ``shadow_items`` row ``(tier t, match)`` — the nightly shadow job re-ran the request on
  ``t + 1`` and scored ``t``'s answer against it: ``match`` → ``t`` is adequate (the
  cheapest adequate tier is ``t`` or cheaper); no match → ``t`` is not (it is above ``t``);
* an escalation — every tier whose answer the application rejected (validator or low
  confidence; API errors say nothing about quality) is inadequate. The tier that served a request is not, even
  when the request is no success: a refusal (the model declined: the pipeline never sends one up a tier) and a
  turn Anthropic paused (``pause_turn``: a server tool's long turn, no answer yet; the app sends it back, and that
  request, which gets the answer, is the one that says how the tier did) say nothing of its quality.

Each request therefore yields an interval ``[lo, hi]``: ``lo`` is the tier above the
dearest one shown inadequate (budget when none was), ``hi`` the cheapest one shown adequate
(unknown when none was). The label is **exact** when ``lo == hi`` (e.g. budget failed and
mid matched upper); otherwise it is **censored**: with only one pair compared, a match
says "``hi`` or cheaper" and a miss "above ``t``". Training uses ``hi`` when it is known
(never labels a request cheaper than any evidence allows) and ``lo`` otherwise; the
candidate-vs-incumbent gate (:mod:`costline.serving.routing.gate`) judges a policy's choice
against the whole interval and asks for more evidence where the interval cannot say.
Contradicting evidence (a tier shown adequate below one shown inadequate) drops the request.

A request is its ``(trace_id, request_id)``: request ids are the application's, and two apps (or two tenants'
requests) may share one, so neither their calls nor their shadow verdicts are pooled. A ``shadow_items`` row an older
costline wrote (no ``trace_id``) still labels the request of its id where that id names one request of the window;
where it names several it is left out (``LabelSet.ambiguous``), never given to each of them.

The policy has no tenant dimension: what one tenant's requests teach it routes every tenant's. So one tenant's
labels make at most :data:`MAX_TENANT_SHARE` of a task type's labels (:func:`cap_tenants`): where several tenants
labelled a task type, each keeps its latest labels up to the largest count ``c`` with ``c <= share x (the labels
kept of that task type)``; the others are left out (``LabelSet.capped``). A task type only one tenant labelled is
kept whole (there is no other tenant's evidence to outweigh). Requests without labels (``include_unlabelled``: the
traffic an evaluation replays) are not capped.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from costline import contract
from costline.serving.errors import RoutingError
from costline.serving.routing.learned import LabelledQuery

if TYPE_CHECKING:  # pragma: no cover
    from costline.config import Config

__all__ = ["LakeLabel", "LabelSet", "NotEnoughLabelsError", "labels_from_lake", "shadow_per_night", "LABELS_SQL",
           "AMBIGUOUS_SQL", "PAUSED_SQL", "MAX_TENANT_SHARE", "cap_tenants"]

_ORDER = {t: i for i, t in enumerate(contract.API_TIERS)}

#: The largest share of one task type's training labels one tenant's requests may make (see the module docstring):
#: a tenant cannot outweigh the others' evidence about a task type they share, nor make up most of it.
MAX_TENANT_SHARE = 0.5


class NotEnoughLabelsError(RoutingError):
    """The lake holds too few routing labels to train on (the message says how many more are needed)."""


def _judged(tier: str) -> str:
    """The API tier a choice is judged as (the student as budget, as the eval does)."""
    return contract.TIER_BUDGET if tier == contract.TIER_STUDENT else tier


@dataclass(frozen=True, slots=True)
class LakeLabel:
    """One request's evidence: the cheapest adequate tier lies in ``[lo, hi]`` (``hi`` None: unknown)."""

    request_id: str
    ts: datetime
    query: str
    task_type: str
    subtype: str | None
    #: The tier that served the request and the one the policy in service chose first.
    served_tier: str | None
    routed_tier: str | None
    lo: str
    hi: str | None
    #: Where the evidence came from: "shadow", "escalation" or both.
    source: str
    input_tokens: int = 0
    output_tokens: int = 0
    #: The captured conversation (GenAI messages JSON), for judging the request again.
    messages_doc: str | None = None
    #: The tenant whose request it was (None: the request said none).
    tenant: str | None = None
    #: The trace of the request: with ``request_id``, what identifies it (another trace may use the same id).
    trace_id: str | None = None

    @property
    def labelled(self) -> bool:
        return self.hi is not None or self.lo != contract.API_TIERS[0]

    @property
    def exact(self) -> bool:
        return self.hi == self.lo

    @property
    def tier(self) -> str:
        """The training label: ``hi`` when some tier was shown adequate, else ``lo``."""
        return self.hi if self.hi is not None else self.lo

    def adequate(self, tier: str) -> bool | None:
        """Whether ``tier`` answers this request adequately: True, False, or None (the labels cannot say)."""
        t = _ORDER[_judged(tier)]
        if self.hi is not None and t >= _ORDER[self.hi]:
            return True
        if t < _ORDER[self.lo]:
            return False
        return None

    def row(self) -> LabelledQuery:
        return LabelledQuery(self.query, self.task_type, self.tier, self.input_tokens, self.output_tokens)


@dataclass
class LabelSet:
    """The labels of ``[since, until)`` and what was left out."""

    since: datetime
    until: datetime
    labels: list[LakeLabel] = field(default_factory=list)
    #: Requests whose evidence contradicts itself, and labelled requests without captured content.
    conflicting: int = 0
    no_query: int = 0
    #: Labelled requests left out because an earlier training run used them.
    excluded: int = 0
    #: Labelled requests left out because their tenant's labels passed its share of their task type's.
    capped: int = 0
    #: Request ids whose shadow verdicts without a trace id (an older costline's) were left out: several requests
    #: of the window have that id, and which one was shadowed cannot be told.
    ambiguous: int = 0

    @property
    def request_ids(self) -> list[str]:
        return [lb.request_id for lb in self.labels]

    def rows(self) -> list[LabelledQuery]:
        return [lb.row() for lb in self.labels]

    def counts(self) -> dict[str, int]:
        """Training labels per tier (API tier order)."""
        c = Counter(lb.tier for lb in self.labels)
        return {t: c[t] for t in contract.API_TIERS if c[t]}

    def counts_by_task(self) -> dict[str, dict[str, int]]:
        out: dict[str, Counter[str]] = {}
        for lb in self.labels:
            out.setdefault(lb.task_type or "(none)", Counter())[lb.tier] += 1
        return {k: {t: v[t] for t in contract.API_TIERS if v[t]} for k, v in sorted(out.items())}

    def summary(self) -> dict[str, Any]:
        return {"since": self.since.isoformat(), "until": self.until.isoformat(), "labels": len(self.labels),
                "exact": sum(lb.exact for lb in self.labels),
                "censored": sum(not lb.exact for lb in self.labels),
                "from_escalations": sum("escalation" in lb.source for lb in self.labels),
                "per_tier": self.counts(), "per_task_type": self.counts_by_task(),
                "conflicting": self.conflicting, "no_query": self.no_query, "excluded": self.excluded,
                "capped": self.capped, "ambiguous": self.ambiguous}

    def format(self) -> str:
        s = self.summary()
        lines = [f"{s['labels']} labels from {self.since:%Y-%m-%d %H:%M} to {self.until:%Y-%m-%d %H:%M} UTC: "
                 f"{s['exact']} exact, {s['censored']} censored, {s['from_escalations']} with an escalation; "
                 f"left out: {self.conflicting} contradicting, {self.no_query} without captured content, "
                 f"{self.excluded} used by an earlier training run, {self.capped} past one tenant's share of its "
                 "task type"
                 + (f"; {self.ambiguous} request ids' shadow verdicts without a trace id left out (the id names "
                    "several requests)" if self.ambiguous else "")]
        tiers = list(contract.API_TIERS)
        lines.append(f"{'task type':<20}" + "".join(f"{t:>10}" for t in tiers) + f"{'all':>10}")
        for task, per in s["per_task_type"].items():
            lines.append(f"{task:<20}" + "".join(f"{per.get(t, 0):>10}" for t in tiers) + f"{sum(per.values()):>10}")
        lines.append(f"{'all':<20}" + "".join(f"{s['per_tier'].get(t, 0):>10}" for t in tiers) + f"{s['labels']:>10}")
        return "\n".join(lines)

    def check(self, *, min_labels: int, min_per_tier: int, per_night: int | None = None) -> None:
        """Raise :class:`NotEnoughLabelsError` saying how many more labels the shadow job must produce."""
        counts = self.counts()
        enough_tiers = [t for t, n in counts.items() if n >= min_per_tier]
        missing_total = max(0, min_labels - len(self.labels))
        # Two tiers with min_per_tier each: what the tiers closest to it still lack.
        short = sorted((max(0, min_per_tier - counts.get(t, 0)), t) for t in contract.API_TIERS)[:2]
        missing_tiers = sum(n for n, _ in short) if len(enough_tiers) < 2 else 0
        missing = max(missing_total, missing_tiers)
        if missing == 0:
            return
        why = [f"{len(self.labels)} usable labels between {self.since:%Y-%m-%d %H:%M} and "
               f"{self.until:%Y-%m-%d %H:%M} UTC"]
        if missing_total:
            why.append(f"need {min_labels} ([serving.router.loop] min_labels)")
        if missing_tiers:
            why.append(f"need {min_per_tier} on at least two tiers ([serving.router.loop] min_per_tier; have "
                       + (", ".join(f"{t} {n}" for t, n in counts.items()) or "none") + ")")
        msg = "; ".join(why) + f": the shadow job needs about {missing} more labelled requests"
        if per_night:
            msg += (f" (about {math.ceil(missing / per_night)} more nightly runs at {per_night} a night; "
                    "or widen --since, or raise [jobs.shadow] per_tier)")
        raise NotEnoughLabelsError(msg)


#: The requests of ``[$since, $until)`` that can carry a label, one row per ``(trace_id, request_id)``: a request
#: id is the application's (two apps, or two tenants counting from 0, may use one), the trace tells them apart.
_REQ_SQL = """req AS (
  SELECT trace_id, request_id, any_value(ts) AS ts, any_value(tenant) AS tenant, any_value(task_type) AS task_type,
         any_value(subtype) AS subtype,
         any_value(tier) AS tier, any_value(routed_tier) AS routed_tier, max(escalations) AS escalations,
         bool_or(success) AS success, any_value(input_messages) AS r_in,
         any_value(rejected_attempts) AS rejected_attempts
  FROM requests
  WHERE ts >= $since AND ts < $until AND NOT standalone AND NOT cache_hit
  GROUP BY trace_id, request_id
)"""

#: Per request of ``[$since, $until)`` (keyed ``(trace_id, request_id)``): its shadow verdicts, the tiers whose
#: answers it rejected (calls without an API error that were not the accepted last one), whether its last answer
#: was a paused turn (``{paused}``: :data:`PAUSED_SQL`) and its captured prompt.
#: A shadow row without ``trace_id`` (written before the column existed) goes to the request of its request id
#: only where that id names one request of the window (``uniq``); else it is left out (:data:`AMBIGUOUS_SQL`
#: counts those), never spread over several requests.
LABELS_SQL = "WITH " + _REQ_SQL + """, uniq AS (
  SELECT request_id, any_value(trace_id) AS trace_id FROM req GROUP BY request_id HAVING count(*) = 1
), sh AS (
  SELECT coalesce(s.trace_id, u.trace_id) AS trace_id, s.request_id, s.tier, arg_max(s.match, s.run_id) AS match
  FROM shadow_items s LEFT JOIN uniq u ON s.trace_id IS NULL AND u.request_id = s.request_id
  WHERE s.trace_id IS NOT NULL OR u.trace_id IS NOT NULL
  GROUP BY ALL
), cl AS (
  SELECT c.trace_id, c.request_id, list(c.tier ORDER BY c.ts) FILTER (WHERE c.error_type IS NULL) AS answered,
         {paused} AS paused,
         arg_min(c.input_messages, c.ts) FILTER (WHERE c.input_messages IS NOT NULL) AS c_in,
         arg_min(c.input_tokens, c.ts) AS input_tokens, arg_max(c.output_tokens, c.ts) AS output_tokens
  FROM calls c JOIN (SELECT trace_id, request_id FROM req) k ON k.trace_id = c.trace_id AND k.request_id = c.request_id
  WHERE NOT c.standalone AND c.ts >= $since - INTERVAL 1 DAY AND c.ts < $until + INTERVAL 1 DAY
  GROUP BY c.trace_id, c.request_id
), verdicts AS (
  SELECT trace_id, request_id, list(tier) FILTER (WHERE match) AS adequate,
         list(tier) FILTER (WHERE NOT match) AS inadequate
  FROM sh GROUP BY trace_id, request_id
)
SELECT r.request_id, r.trace_id, r.ts, r.tenant, r.task_type, r.subtype, r.tier, r.routed_tier, r.escalations,
       r.success, r.rejected_attempts, coalesce(cl.paused, false) AS paused,
       coalesce(r.r_in, cl.c_in) AS input_messages, cl.answered, cl.input_tokens,
       cl.output_tokens, v.adequate, v.inadequate
FROM req r LEFT JOIN cl USING (trace_id, request_id) LEFT JOIN verdicts v USING (trace_id, request_id)
WHERE {where}
ORDER BY r.ts, r.request_id, r.trace_id
"""

#: Whether a request's last answered call (no API error: the one served) is a paused turn: its ``finish_reasons``
#: say ``pause_turn`` (any case, as ``requests.sql`` reads them).
PAUSED_SQL = ("coalesce(contains(',' || lower(array_to_string(arg_max(c.finish_reasons, c.ts) FILTER (WHERE "
              "c.error_type IS NULL), ',')) || ',', ',pause_turn,'), false)")

#: How many request ids of ``[$since, $until)`` have shadow rows without ``trace_id`` that :data:`LABELS_SQL`
#: leaves out: the id names several requests of the window, so which one was shadowed cannot be told.
AMBIGUOUS_SQL = "WITH " + _REQ_SQL + """
SELECT count(DISTINCT request_id) FROM shadow_items
WHERE trace_id IS NULL AND request_id IN (SELECT request_id FROM req GROUP BY request_id HAVING count(*) > 1)
"""


#: The problems of a rejected attempt that are the model declining to answer (costline.serving.pipeline.declined).
_DECLINED = frozenset({"refusal", "content_filter"})


def _declined_by(tier: str | None, rejected_attempts: str | None) -> bool:
    """Whether the request's served ``tier`` answered with a refusal (``<tier>:refusal`` in its rejected attempts):
    served as the answer, but no success."""
    if not tier or not rejected_attempts:
        return False
    return any(a.strip() in {f"{tier}:{p}" for p in _DECLINED} for a in rejected_attempts.split(","))


def _query_of(doc: str | None) -> str | None:
    from costline.jobs.sampling import parse_messages

    users = [t for r, t in parse_messages(doc) if r == "user" and t.strip()]
    return users[-1] if users else None


def _interval(adequate: Collection[str], inadequate: Collection[str]) -> tuple[str, str | None] | None:
    """``(lo, hi)``; None when the evidence contradicts itself; ``("", None)`` when there is none."""
    tiers = contract.API_TIERS
    hi_i = min((_ORDER[_judged(t)] for t in adequate if _judged(t) in _ORDER), default=None)
    bad = [_ORDER[_judged(t)] for t in inadequate if _judged(t) in _ORDER and t != contract.TIER_STUDENT]
    if hi_i is None and not bad:
        return "", None
    lo_i = min(max(bad) + 1, len(tiers) - 1) if bad else 0
    if hi_i is not None and hi_i < lo_i:
        return None
    return tiers[lo_i], (tiers[hi_i] if hi_i is not None else None)


def _tenant_cap(counts: Collection[int], share: float) -> int:
    """The most labels each tenant of a task type keeps, its tenants having ``counts``: the largest ``c`` with
    ``c <= share * sum(min(n, c) for n in counts)`` (so that no tenant makes more than ``share`` of what is kept).
    The condition holds from 0 up to that ``c`` (concave in ``c``, 0 at 0): found by bisection."""
    lo, hi = 0, max(counts, default=0)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if mid <= share * sum(min(n, mid) for n in counts):
            lo = mid
        else:
            hi = mid - 1
    return lo


def cap_tenants(labels: list[LakeLabel], share: float = MAX_TENANT_SHARE) -> tuple[list[LakeLabel], int]:
    """``labels`` (in time order) with each tenant's labelled requests of a task type bounded to ``share`` of that
    task type's kept labels (the module docstring), and how many were left out. A tenant keeps its latest labels;
    a task type one tenant labelled is kept whole; unlabelled requests are all kept. ``share`` in [0.5, 1]."""
    if not 0.5 <= share <= 1:
        raise RoutingError(f"a tenant's share of a task type's labels must be from 0.5 to 1; got {share!r}")
    groups: dict[str, dict[str | None, list[int]]] = {}
    for i, lb in enumerate(labels):
        if lb.labelled:
            groups.setdefault(lb.task_type, {}).setdefault(lb.tenant, []).append(i)
    drop: set[int] = set()
    for per_tenant in groups.values():
        if len(per_tenant) < 2:
            continue
        cap = _tenant_cap([len(ix) for ix in per_tenant.values()], share)
        for ix in per_tenant.values():
            drop.update(ix[:max(len(ix) - cap, 0)])  # the oldest go
    return [lb for i, lb in enumerate(labels) if i not in drop], len(drop)


def labels_from_lake(
    config: "Config",
    *,
    since: datetime,
    until: datetime,
    exclude: Collection[str] = (),
    include_unlabelled: bool = False,
    con: Any = None,
    max_tenant_share: float = MAX_TENANT_SHARE,
) -> LabelSet:
    """The routing labels of the requests in ``[since, until)`` (see the module docstring).

    ``exclude``: request ids to leave out (those an earlier training run used; an id leaves out every request of
    the window that has it, whatever its trace).
    ``include_unlabelled``: also every other answered request with captured content, as
    ``[budget, unknown]`` (what an evaluation replays: the traffic a policy would move).
    ``max_tenant_share``: the largest share of a task type's labels one tenant's requests make (:func:`cap_tenants`).
    """
    from costline.jobs.store import open_jobs_lake
    from costline.timeutil import utc_naive

    since, until = utc_naive(since), utc_naive(until)
    if since >= until:
        raise RoutingError(f"--since {since:%Y-%m-%d %H:%M} is not before --until {until:%Y-%m-%d %H:%M}")
    own = con is None
    con = con or open_jobs_lake(config)
    try:
        where = "true" if include_unlabelled else "v.request_id IS NOT NULL OR r.escalations > 0"
        cur = con.execute(LABELS_SQL.format(where=where, paused=PAUSED_SQL), {"since": since, "until": until})
        cols = [c[0] for c in cur.description]
        raw = [dict(zip(cols, r)) for r in cur.fetchall()]
        ambiguous = int(con.execute(AMBIGUOUS_SQL, {"since": since, "until": until}).fetchone()[0] or 0)
    finally:
        if own:
            con.close()
    out = LabelSet(since, until, ambiguous=ambiguous)
    skip = set(exclude)
    for r in raw:
        if r["request_id"] in skip:
            out.excluded += 1
            continue
        adequate = list(r["adequate"] or [])
        inadequate = list(r["inadequate"] or [])
        answered = [t for t in (r["answered"] or []) if t]
        # Every answered tier but the accepted one (the served tier of a successful request, of one whose answer
        # the model declined to give, or of one it paused: a refusal and a paused turn say nothing of the tier's
        # quality, and the pipeline sends neither up a tier): the ladder only climbs, so this needs no ordering of
        # calls that share a timestamp.
        accepted = r["success"] or r["paused"] or _declined_by(r["tier"], r.get("rejected_attempts"))
        rejected = [t for t in answered if not (accepted and t == r["tier"])]
        inadequate += rejected
        interval = _interval(adequate, inadequate)
        if interval is None:
            out.conflicting += 1
            continue
        if not interval[0]:  # e.g. only the student's answer was rejected: nothing about the API tiers
            if not include_unlabelled:
                continue
            interval = (contract.API_TIERS[0], None)
        query = _query_of(r["input_messages"])
        if query is None:
            out.no_query += 1
            continue
        source = "+".join(s for s, on in (("shadow", bool(adequate or r["inadequate"])),
                                          ("escalation", bool(rejected))) if on) or "none"
        out.labels.append(LakeLabel(
            request_id=r["request_id"], ts=r["ts"], query=query, task_type=r["task_type"] or "",
            subtype=r["subtype"], served_tier=r["tier"], routed_tier=r["routed_tier"], lo=interval[0],
            hi=interval[1], source=source, input_tokens=int(r["input_tokens"] or 0),
            output_tokens=int(r["output_tokens"] or 0), messages_doc=r["input_messages"], tenant=r["tenant"],
            trace_id=r["trace_id"]))
    out.labels, out.capped = cap_tenants(out.labels, max_tenant_share)
    return out


def shadow_per_night(config: "Config") -> int:
    """How many labels a nightly shadow run adds at most (``per_tier`` x shadowed tiers)."""
    cfg = config.jobs.shadow
    return cfg.per_tier * len(cfg.tiers)
