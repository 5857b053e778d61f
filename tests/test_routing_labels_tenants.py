"""The learned router has no tenant dimension, so one tenant's labels must not decide a task type's routing for
everyone (a tenant that makes its requests escalate — e.g. by asking for a low confidence marker — fed the
router "budget is inadequate" labels in any number). ``labels_from_lake`` keeps each tenant to at most half of a
task type's labels. The expected labels are worked out by hand below, on a real DuckDB with the tables the
labels' SQL reads."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import duckdb
import pytest

from costline.config import Config
from costline.serving.errors import RoutingError
from costline.serving.routing.labels import MAX_TENANT_SHARE, labels_from_lake

T0 = datetime(2026, 11, 1, 9)


def _lake(requests: list[tuple[str, str, str, bool]]) -> duckdb.DuckDBPyConnection:
    """``(request_id, tenant, task_type, escalated)`` in time order, one a minute. An escalated request: budget's
    answer rejected, mid's accepted (budget is inadequate: label [mid, ?]); any other: budget answered (no label)."""
    con = duckdb.connect()
    con.execute("CREATE TABLE requests (request_id VARCHAR, trace_id VARCHAR, ts TIMESTAMP, tenant VARCHAR, "
                "task_type VARCHAR, subtype VARCHAR, tier VARCHAR, routed_tier VARCHAR, escalations BIGINT, "
                "success BOOLEAN, input_messages VARCHAR, standalone BOOLEAN, cache_hit BOOLEAN)")
    con.execute("CREATE TABLE calls (request_id VARCHAR, trace_id VARCHAR, ts TIMESTAMP, tier VARCHAR, "
                "error_type VARCHAR, input_messages VARCHAR, input_tokens BIGINT, output_tokens BIGINT, "
                "standalone BOOLEAN, finish_reasons VARCHAR[])")
    con.execute("CREATE TABLE shadow_items (request_id VARCHAR, trace_id VARCHAR, tier VARCHAR, match BOOLEAN, "
                "run_id VARCHAR)")
    for i, (rid, tenant, task, escalated) in enumerate(requests):
        ts = T0 + timedelta(minutes=i)
        doc = json.dumps([{"role": "user", "parts": [{"type": "text", "content": f"question {rid}"}]}])
        trace = f"trace-{rid}"  # each request its own trace
        con.execute("INSERT INTO requests VALUES (?, ?, ?, ?, ?, NULL, ?, 'budget', ?, true, ?, false, false)",
                    [rid, trace, ts, tenant, task, "mid" if escalated else "budget", 1 if escalated else 0, doc])
        con.execute("INSERT INTO calls VALUES (?, ?, ?, 'budget', NULL, ?, 100, 20, false, NULL)", [rid, trace, ts, doc])
        if escalated:
            con.execute("INSERT INTO calls VALUES (?, ?, ?, 'mid', NULL, ?, 100, 20, false, NULL)",
                        [rid, trace, ts + timedelta(seconds=1), doc])
    con.execute("ALTER TABLE requests ADD COLUMN rejected_attempts VARCHAR")  # NULL: none rejected
    return con


def _labels(requests, **kw):
    con = _lake(requests)
    try:
        return labels_from_lake(Config(), since=T0, until=T0 + timedelta(days=1), con=con, **kw)
    finally:
        con.close()


def _escalated(tenant: str, task: str, n: int, start: int = 0) -> list[tuple[str, str, str, bool]]:
    return [(f"{tenant}-{task}-{start + i}", tenant, task, True) for i in range(n)]


def test_one_tenant_keeps_at_most_half_of_a_task_types_labels() -> None:
    """support: evil 9 labels, good 3. The cap c is the largest with c <= 0.5 x (min(9, c) + min(3, c)):
    c = 3 gives 3 <= 3, c = 4 gives 4 > 3.5; so evil keeps its 3 latest, good its 3. faq: only evil (4), kept whole.
    10 labels, 6 left out."""
    evil = _escalated("evil", "support", 9)
    good = _escalated("good", "support", 3)
    faq = _escalated("evil", "faq", 4)
    # interleaved in time: evil's first six, then good's, then the rest
    labels = _labels(evil[:6] + good + evil[6:] + faq)
    got = sorted(lb.request_id for lb in labels.labels)
    assert got == sorted(["evil-support-6", "evil-support-7", "evil-support-8",
                          "good-support-0", "good-support-1", "good-support-2",
                          "evil-faq-0", "evil-faq-1", "evil-faq-2", "evil-faq-3"])
    assert labels.capped == 6 and labels.summary()["capped"] == 6
    assert "6 past one tenant's share" in labels.format()
    assert {lb.tenant for lb in labels.labels} == {"evil", "good"}
    assert all(lb.tier == "mid" and lb.lo == "mid" and lb.hi is None for lb in labels.labels)
    assert labels.counts_by_task() == {"faq": {"mid": 4}, "support": {"mid": 6}}


def test_with_a_third_tenant_the_largest_keeps_half_of_what_is_kept() -> None:
    """support: evil 9, good 3, other 3: c <= 0.5 x (min(9, c) + 6): c = 6 gives 6 <= 6, c = 7 gives 7 > 6.5; evil
    keeps 6 of 12 kept, half."""
    labels = _labels(_escalated("evil", "support", 9) + _escalated("good", "support", 3)
                     + _escalated("other", "support", 3))
    per = {t: sum(lb.tenant == t for lb in labels.labels) for t in ("evil", "good", "other")}
    assert per == {"evil": 6, "good": 3, "other": 3} and labels.capped == 3
    assert {lb.request_id for lb in labels.labels if lb.tenant == "evil"} == {f"evil-support-{i}" for i in range(3, 9)}


def test_a_larger_share_and_tenants_within_it_lose_nothing() -> None:
    """share 0.75: c <= 0.75 x (min(9, c) + 3) holds up to c = 9: nothing left out. Two tenants of 5 and 4 at 0.5:
    c = 5 gives 5 <= 4.5, no; c = 4 gives 4 <= 4: the larger keeps 4."""
    reqs = _escalated("evil", "support", 9) + _escalated("good", "support", 3)
    assert len(_labels(reqs, max_tenant_share=0.75).labels) == 12
    near = _labels(_escalated("a", "support", 5) + _escalated("b", "support", 4))
    assert (len(near.labels), near.capped) == (8, 1)
    assert "a-support-0" not in near.request_ids  # the oldest goes


def test_requests_without_labels_are_not_capped_and_a_request_without_a_tenant_is_one_tenant() -> None:
    plain = [(f"evil-plain-{i}", "evil", "support", False) for i in range(5)]
    reqs = _escalated("evil", "support", 4) + [("anon-0", None, "support", True)] + plain
    labels = _labels(reqs, include_unlabelled=True)
    # labelled: evil 4, (no tenant) 1: c <= 0.5 x (min(4, c) + 1): c = 1; evil keeps 1. The 5 unlabelled stay.
    assert sorted(labels.request_ids) == sorted(["evil-support-3", "anon-0", *(r[0] for r in plain)])
    assert labels.capped == 3


def test_a_share_that_could_leave_every_label_out_is_refused() -> None:
    with pytest.raises(RoutingError, match="0.5 to 1"):
        _labels(_escalated("a", "support", 1), max_tenant_share=0.3)
    assert MAX_TENANT_SHARE == 0.5
