"""Stratified, reproducible samples of requests with captured content, read from the lake with DuckDB.

Only requests the tier served **successfully** are candidates: ``success`` true (the app accepted the
answer, docs/telemetry.md) and no cache hit. A failed request (its answer rejected by a validator, every
tier down) or one answered from the semantic cache has no answer of ``tier`` to judge: scoring it would
read a rejected or cached answer as the tier's own.

A request's prompt and answer come from the request span's captured messages, else from its last
successful model call of the served tier (where the recorder puts them). The rows are the ones the
lake's ``requests_raw`` / ``calls_raw`` views read, in either ``[lake] mode`` (the local files or the
Iceberg tables), with the window's filters applied before the views' one-row-per-span rule so a night's
sample never scans the whole lake. Selection within a subtype is by ``hash(trace_id, request_id, seed)``
(a request id is the app's: two tenants, or an app's retries, may use one): the same lake, window and
seed always give the same sample, and a re-run resumes the same work.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["SampledRequest", "allocate", "sample_requests", "parse_messages", "CANDIDATES_SQL", "candidates_sql"]

NO_SUBTYPE = "(none)"

#: Requests served successfully by ``$tier`` in ``[$since, $until)`` with their captured content. A call
#: belongs to the request of the same ``(trace_id, request_id)``, else to its parent request span; each
#: span is read once (``{one_row_per_span}``, after the window's filters: the copies of a span are equal).
#: ``{requests}`` / ``{calls}`` are the rows behind the lake's ``requests_raw`` / ``calls_raw`` views,
#: ``{requests_days}`` / ``{calls_days}`` the partition filters their source can prune on (or nothing).
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
)
SELECT request_id, trace_id, ts, coalesce(subtype, '(none)') AS subtype, task_type, tier,
       coalesce(r_in, c_in) AS input_messages, coalesce(r_out, c_out) AS output_messages
FROM linked
WHERE coalesce(r_in, c_in) IS NOT NULL AND coalesce(r_out, c_out) IS NOT NULL
"""

#: The local lake's date partitions of the window (the hive ``date`` column: the UTC date of ``ts``).
_REQUEST_DAYS = "date >= CAST($since AS DATE) AND date <= CAST($until AS DATE) AND "
_CALL_DAYS = "date >= CAST($since AS DATE) - 1 AND date <= CAST($until AS DATE) AND "


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


def parse_messages(doc: str | None) -> list[tuple[str, str]]:
    """Captured GenAI messages (``[{"role", "parts": [{"type": "text", "content"}]}]``) → (role, text)."""
    if not doc:
        return []
    try:
        items = json.loads(doc)
    except (TypeError, ValueError):
        return [("user", doc)]
    out = []
    for m in items if isinstance(items, list) else []:
        if not isinstance(m, Mapping):
            continue
        parts = m.get("parts")
        if parts is None and "content" in m:
            parts = [{"type": "text", "content": m["content"]}]
        text = "".join(str(p.get("content", p.get("text", ""))) for p in parts or []
                       if isinstance(p, Mapping) and p.get("type", "text") == "text")
        out.append((str(m.get("role", "user")), text))
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


def _to_anthropic(turns: list[tuple[str, str]]) -> tuple[tuple[Mapping[str, Any], ...], str | None]:
    system = "\n".join(t for r, t in turns if r == "system") or None
    msgs = [{"role": "assistant" if r == "assistant" else "user", "content": t} for r, t in turns if r != "system"]
    while msgs and msgs[-1]["role"] == "assistant":  # the teacher answers the last user turn
        msgs.pop()
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
) -> list[SampledRequest]:
    """A stratified (by subtype) sample of the requests ``tier`` served successfully (no cache hit) with
    content in ``[since, until)``.

    The rows are those of the connection's lake views (:func:`costline.lake.open_lake`, either ``[lake]
    mode``); ``lake_path`` is only read on a connection without them.
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
    for request_id, trace_id, ts, subtype, task_type, served, inp, outp, *_ in rows:
        turns = parse_messages(inp)
        messages, system = _to_anthropic(turns)
        if not messages:
            continue
        query = str(messages[-1]["content"])
        answer = "".join(t for r, t in parse_messages(outp) if r != "user")
        out.append(SampledRequest(request_id, trace_id, ts, subtype, task_type, served, messages, system, query,
                                  answer))
    return out
