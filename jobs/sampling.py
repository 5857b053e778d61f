"""Stratified, reproducible samples of requests with captured content, read from the lake with DuckDB.

Only requests the tier served **successfully** are candidates: ``success`` true (the app accepted the
answer, docs/telemetry.md) and no cache hit. A failed request (its answer rejected by a validator, every
tier down) or one answered from the semantic cache has no answer of ``tier`` to judge: scoring it would
read a rejected or cached answer as the tier's own.

A request's prompt and answer come from the request span's captured messages, else from its last
successful model call of the served tier (where the recorder puts them). The rows are the ones the
lake's ``requests_raw`` / ``calls_raw`` views read, in either ``[lake] mode`` (the local files or the
Iceberg tables), with the window's filters applied before the views' one-row-per-span rule so a night's
sample never scans the whole lake.

Agentic conversations: a captured tool call (``tool_call`` part) and a tool's answer (``tool_call_response``)
reach the teacher as text (``[tool call NAME(ARGS)]``, ``[tool result: …]``, each bounded by
:data:`TOOL_TEXT_MAX`), since the teacher is asked without the app's tools; a turn left without text (only an
image, a reasoning part) is dropped (Anthropic's Messages API refuses an empty message). A request whose last
user turn still has no text is left out, with its reason (a warning, and ``skipped`` when passed). A lone
surrogate (half an emoji, escaped in the stored JSON) is read as U+FFFD.

Selection within a subtype is by ``hash(trace_id, request_id, seed)`` (a request id is the app's: two
tenants, or an app's retries, may use one): the same lake, window and seed always give the same sample, and
a re-run resumes the same work.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["SampledRequest", "allocate", "sample_requests", "parse_messages", "anthropic_messages", "tool_call_text",
           "tool_result_text", "CANDIDATES_SQL", "candidates_sql"]

log = logging.getLogger(__name__)

NO_SUBTYPE = "(none)"

#: The most characters of a tool call's arguments, or of a tool's result, put in the teacher's prompt.
TOOL_TEXT_MAX = 2_000
#: Why :func:`sample_requests` leaves a request out (besides the SQL's rules).
SKIP_NO_USER_TURN = "no user turn in the captured prompt"
SKIP_EMPTY_LAST_TURN = "the last user turn has no text (blank, or only images, files or other non-text parts)"

#: Requests served successfully by ``$tier`` in ``[$since, $until)`` with their captured content. A call
#: belongs to the request of the same ``(trace_id, request_id)``, else to its parent request span; each
#: span is read once (``{one_row_per_span}``, after the window's filters: the copies of a span are equal).
#: ``{requests}`` / ``{calls}`` are the rows behind the lake's ``requests_raw`` / ``calls_raw`` views,
#: ``{requests_days}`` / ``{calls_days}`` the partition filters their source can prune on (or nothing).
#: ``tenant``: the one its request spans name, NULL when they name none or several (or one and none): every request
#: span of its ``(trace_id, request_id)``, whatever its tier, success or cache hit (``own``: the window's days and
#: the day on either side, ``{owner_days}``), not only the spans sampled: what the jobs' items say the request's
#: tenant is (``costline lake forget`` removes them with the tenant's rows).
CANDIDATES_SQL = """
WITH req AS (
  SELECT * FROM {requests}
  WHERE {requests_days}ts >= $since AND ts < $until AND tier = $tier
    AND success AND NOT coalesce(cache_hit, false)
  {one_row_per_span}
), cl AS (
  SELECT * FROM {calls}
  WHERE {calls_days}ts >= CAST(CAST($since AS DATE) - 1 AS TIMESTAMP) AND ts < CAST(CAST($until AS DATE) + 1 AS TIMESTAMP)
    AND tier = $tier AND error_type IS NULL AND output_messages IS NOT NULL
  {one_row_per_span}
), linked AS (
  SELECT r.request_id, r.trace_id, any_value(r.ts) AS ts, any_value(r.subtype) AS subtype,
         any_value(r.task_type) AS task_type, any_value(r.tier) AS tier,
         any_value(r.input_messages) AS r_in, any_value(r.output_messages) AS r_out,
         arg_max(c.input_messages, c.ts) AS c_in, arg_max(c.output_messages, c.ts) AS c_out
  FROM req r
  LEFT JOIN cl c ON c.trace_id = r.trace_id
   AND (c.request_id = r.request_id OR (c.request_id IS NULL AND c.parent_span_id = r.span_id))
  GROUP BY r.request_id, r.trace_id
), own AS (
  SELECT o.trace_id, o.request_id,
         CASE WHEN count(o.tenant) = count(*) AND min(o.tenant) = max(o.tenant) THEN min(o.tenant) END AS tenant
  FROM {requests} o SEMI JOIN (SELECT DISTINCT trace_id, request_id FROM req) k
    ON k.trace_id IS NOT DISTINCT FROM o.trace_id AND k.request_id = o.request_id
  WHERE {owner_days}o.ts >= CAST(CAST($since AS DATE) - 1 AS TIMESTAMP)
    AND o.ts < CAST(CAST($until AS DATE) + 2 AS TIMESTAMP)
  GROUP BY o.trace_id, o.request_id
)
SELECT l.request_id, l.trace_id, l.ts, coalesce(l.subtype, '(none)') AS subtype, l.task_type, l.tier,
       coalesce(l.r_in, l.c_in) AS input_messages, coalesce(l.r_out, l.c_out) AS output_messages, o.tenant
FROM linked l LEFT JOIN own o ON o.trace_id IS NOT DISTINCT FROM l.trace_id AND o.request_id = l.request_id
WHERE coalesce(l.r_in, l.c_in) IS NOT NULL AND coalesce(l.r_out, l.c_out) IS NOT NULL
"""

#: The local lake's date partitions of the window (the hive ``date`` column: the UTC date of ``ts``).
_REQUEST_DAYS = "date >= CAST($since AS DATE) AND date <= CAST($until AS DATE) AND "
_CALL_DAYS = "date >= CAST($since AS DATE) - 1 AND date <= CAST($until AS DATE) AND "
_OWNER_DAYS = "date >= CAST($since AS DATE) - 1 AND date <= CAST($until AS DATE) + 1 AND "


def candidates_sql(lake_path: Any = None, *, con: Any = None) -> str:
    """:data:`CANDIDATES_SQL` over the lake: the rows the connection's ``requests_raw`` / ``calls_raw``
    views read, as :func:`costline.lake.raw_source` names them (made by :func:`costline.lake.open_lake` in
    either ``[lake] mode``), else, on a connection without them (or with none given), the local files
    under ``lake_path``."""
    from costline.lake import ONE_ROW_PER_SPAN, raw_source, read_table_sql

    parts: dict[str, str] = {}
    for table in ("requests", "calls"):
        src = raw_source(con, table) if con is not None else None
        has_view = con is not None and bool(con.execute(
            "SELECT count(*) FROM duckdb_views() WHERE view_name = $v", {"v": f"{table}_raw"}).fetchone()[0])
        if src is not None:  # what the lake opened, filtered before its dedupe (pruned where the source can)
            source, days = f"(SELECT * FROM {src.sql})", src.date_partitioned
        elif has_view:  # a view the lake did not name (made by hand, an older costline): one row a span already
            source, days = f"{table}_raw", False
        elif lake_path is not None:
            source, days = read_table_sql(lake_path, table), True
        else:
            raise ValueError("pass lake_path: the connection has no requests_raw / calls_raw views of a costline "
                             "lake (open it with costline.lake.open_lake)")
        parts[table] = source
        parts[f"{table}_days"] = (_REQUEST_DAYS if table == "requests" else _CALL_DAYS) if days else ""
        if table == "requests":
            parts["owner_days"] = _OWNER_DAYS if days else ""
    return CANDIDATES_SQL.format(one_row_per_span=ONE_ROW_PER_SPAN, **parts)


@dataclass(frozen=True)
class SampledRequest:
    request_id: str
    trace_id: str
    ts: datetime
    subtype: str
    task_type: str | None
    tier: str
    #: The conversation in Anthropic's shape (user / assistant turns), system prompt apart.
    messages: tuple[Mapping[str, Any], ...]
    system: str | None
    #: The last user message (what drift tests and judges look at).
    query: str
    #: The captured answer of the tier that served it.
    answer: str
    #: The tenant its request spans name (None: none, or not one: see :data:`CANDIDATES_SQL`).
    tenant: str | None = None


def parse_messages(doc: str | None, *, tools: bool = False) -> list[tuple[str, str]]:
    """Captured GenAI messages (``[{"role", "parts": [{"type": "text", "content"}]}]``) → (role, text).

    Only text parts count, unless ``tools``: then a tool call and a tool's result are rendered as text too
    (:func:`tool_call_text`, :func:`tool_result_text`), each on a line of its own. Roles are kept as captured
    (a tool's answer is ``tool``)."""
    return [(role, text) for role, text, _own in _read_turns(doc, tools=tools)]


def _valid(text: str) -> str:
    """``text`` with each lone surrogate (from an escaped half emoji in the JSON) read as U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _bounded(text: str, limit: int = TOOL_TEXT_MAX) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):  # a cycle, a NaN under allow_nan... never from parsed JSON, but be safe
        return str(value)


def tool_call_text(part: Mapping[str, Any]) -> str:
    """``[tool call NAME(ARGS)]`` of a captured ``tool_call`` part (arguments as JSON, bounded)."""
    name = _bounded(_as_text(part.get("name") or "?"), 200)
    args = part.get("arguments")
    return f"[tool call {name}({_bounded(_as_text(args)) if args is not None else ''})]"


def tool_result_text(part: Mapping[str, Any]) -> str:
    """``[tool result: TEXT]`` of a captured ``tool_call_response`` part (bounded)."""
    response = part.get("response", part.get("result", part.get("content")))
    return f"[tool result: {_bounded(_as_text(response)) if response is not None else ''}]"


def _read_turns(doc: str | None, *, tools: bool) -> list[tuple[str, str, str]]:
    """(role, text, the turn's own text parts only) of each captured message."""
    if not doc:
        return []
    try:
        items = json.loads(doc)
    except (TypeError, ValueError):
        return [("user", _valid(doc), _valid(doc))]
    out = []
    for m in items if isinstance(items, list) else []:
        if not isinstance(m, Mapping):
            continue
        parts = m.get("parts")
        if parts is None and "content" in m:
            parts = [{"type": "text", "content": m["content"]}]
        pieces: list[str] = []
        own: list[str] = []
        texts: list[str] = []  # text parts in a row join as they always did (no separator)
        for p in parts if isinstance(parts, list) else []:
            if not isinstance(p, Mapping):
                continue
            kind = p.get("type", "text")
            if kind == "text":
                t = str(p.get("content", p.get("text", "")))
                texts.append(t)
                own.append(t)
                continue
            if tools and kind in ("tool_call", "tool_call_response"):
                if texts:
                    pieces.append("".join(texts))
                    texts = []
                pieces.append(tool_call_text(p) if kind == "tool_call" else tool_result_text(p))
        if texts:
            pieces.append("".join(texts))
        text = "\n".join(x for x in pieces if x) if len(pieces) > 1 else "".join(pieces)
        out.append((str(m.get("role", "user")), _valid(text), _valid("".join(own))))
    return out


def allocate(counts: Mapping[str, int], total: int, min_per: int = 0) -> dict[str, int]:
    """Stratified allocation: proportional to ``counts`` with a floor of ``min_per`` (largest remainder).

    Never more than a stratum has; sums to ``min(total, sum(counts))``.
    """
    avail = {k: int(v) for k, v in counts.items() if v > 0}
    total = min(int(total), sum(avail.values()))
    if total <= 0:
        return {k: 0 for k in counts}
    alloc = {k: min(v, min_per) for k, v in avail.items()}
    if sum(alloc.values()) > total:  # the floors alone exceed the budget: deal units round-robin
        alloc = {k: 0 for k in avail}
        left = total
        while left > 0:
            for k in sorted(avail):
                if left and alloc[k] < avail[k]:
                    alloc[k] += 1
                    left -= 1
        return {k: alloc.get(k, 0) for k in counts}
    left = total - sum(alloc.values())
    while left > 0:
        room = {k: avail[k] - alloc[k] for k in avail if avail[k] > alloc[k]}
        if not room:
            break
        weight = sum(avail[k] for k in room)
        quotas = {k: left * avail[k] / weight for k in room}
        add = {k: min(room[k], math.floor(q)) for k, q in quotas.items()}
        given = sum(add.values())
        if given == 0:  # hand out single units by largest remainder
            for k in sorted(room, key=lambda k: (-(quotas[k] - math.floor(quotas[k])), k))[:left]:
                add[k] = add.get(k, 0) + 1
            given = sum(add.values())
        for k, a in add.items():
            alloc[k] += a
        left -= given
    return {k: alloc.get(k, 0) for k in counts}


def anthropic_messages(turns: list[tuple[str, str]]) -> tuple[tuple[Mapping[str, Any], ...], str | None]:
    """Messages-API turns (user / assistant; a tool's answer is the user's) and the system prompt. A turn of no
    text before the last is left out (the API refuses it); the last, the one the teacher answers, is a user
    turn, and may be empty: :func:`sample_requests` leaves such a request out."""
    from costline.serving.translate import without_empty_turns

    system = "\n".join(t for r, t in turns if r == "system") or None
    msgs = [{"role": "assistant" if r == "assistant" else "user", "content": t} for r, t in turns if r != "system"]
    while msgs and msgs[-1]["role"] == "assistant":  # the teacher answers the last user turn
        msgs.pop()
    msgs = without_empty_turns(msgs)
    # Consecutive turns of one role (around a dropped one, or a user turn then a tool's answer) are left as they
    # are: the Messages API reads them as one turn.
    return tuple(msgs), system


def sample_requests(
    con: Any,
    *,
    lake_path: Any = None,
    tier: str,
    since: datetime,
    until: datetime,
    size: int,
    seed: int = 0,
    min_per_subtype: int = 0,
    skipped: MutableMapping[tuple[str, str], str] | None = None,
) -> list[SampledRequest]:
    """A stratified (by subtype) sample of the requests ``tier`` served successfully (no cache hit) with
    content in ``[since, until)``.

    The rows are those of the connection's lake views (:func:`costline.lake.open_lake`, either ``[lake]
    mode``); ``lake_path`` is only read on a connection without them. A sampled request whose captured
    prompt gives the teacher nothing to answer (no user turn, or a last user turn of no text) is left out
    with a warning, and put in ``skipped`` (``(trace_id, request_id)`` → why) when given.
    """
    params = {"tier": tier, "since": since, "until": until}
    con.execute(f"CREATE OR REPLACE TEMP TABLE _jobs_candidates AS {candidates_sql(lake_path, con=con)}", params)
    try:
        counts = dict(con.execute("SELECT subtype, count(*) FROM _jobs_candidates GROUP BY ALL").fetchall())
        alloc = allocate(counts, size, min_per_subtype)
        if not any(alloc.values()):
            return []
        rows = con.execute(
            """
            SELECT * EXCLUDE (rn) FROM (
              SELECT *, row_number() OVER (
                  PARTITION BY subtype
                  ORDER BY hash(concat(trace_id, '#', request_id, '#', $seed)), trace_id, request_id) AS rn
              FROM _jobs_candidates)
            JOIN (SELECT unnest($subs) AS s, unnest($ks) AS k) a ON a.s = subtype
            WHERE rn <= a.k ORDER BY subtype, request_id, trace_id""",
            {"seed": str(seed), "subs": list(alloc), "ks": list(alloc.values())},
        ).fetchall()
    finally:
        con.execute("DROP TABLE IF EXISTS _jobs_candidates")
    out = []
    why_counts: Counter[str] = Counter()
    for request_id, trace_id, ts, subtype, task_type, served, inp, outp, tenant, *_ in rows:
        turns = _read_turns(inp, tools=True)
        messages, system = anthropic_messages([(r, t) for r, t, _own in turns])
        why = SKIP_NO_USER_TURN if not messages else \
            SKIP_EMPTY_LAST_TURN if not str(messages[-1]["content"]).strip() else None
        if why is not None:
            why_counts[why] += 1
            if skipped is not None:
                skipped[(trace_id, request_id)] = why
            continue
        # the question: the last thing the user wrote (not a tool's answer), else the last turn's text
        query = next((own for r, _t, own in reversed(turns)
                      if r not in ("assistant", "system", "tool") and own.strip()), str(messages[-1]["content"]))
        answer = "".join(t for r, t, _own in _read_turns(outp, tools=False) if r != "user")
        out.append(SampledRequest(request_id, trace_id, ts, subtype, task_type, served, messages, system, query,
                                  answer, tenant))
    for why, n in sorted(why_counts.items()):
        log.warning("%s sample %s..%s: %d request(s) left out: %s", tier, since, until, n, why)
    return out
