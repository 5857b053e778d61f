"""A request is its ``(trace_id, request_id)``: request ids are the application's, so two apps or two tenants may
send one id. The routing labels must keep such requests apart: each its own calls and its own shadow verdicts
(``shadow_items`` carries ``trace_id`` beside ``request_id``), never the other's (a wrong tier label for the learned
router, and one tenant's verdict on another tenant's request). A shadow row an older costline wrote (``trace_id``
NULL) still labels the request of its id where that id names one request of the window, and is left out (counted)
where it names several.

A real DuckDB with the columns the labels' SQL reads; every expected interval is worked out by hand in the
docstrings (tiers budget < mid < upper < frontier; a match at ``t`` shows ``t`` adequate, a miss inadequate)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import duckdb
import pytest

from costline.config import Config
from costline.serving.routing.labels import labels_from_lake

T0 = datetime(2026, 11, 1, 9)

#: One request: (request_id, trace_id, tenant, task_type, tiers answered in order (the last one accepted)).
Req = tuple[str, str, str, str, tuple[str, ...]]
#: One shadow verdict: (request_id, trace_id or None (an older costline's row), tier, match, run_id).
Shadow = tuple[str, str | None, str, bool, str]


def _lake(requests: list[Req], shadow: list[Shadow]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("CREATE TABLE requests (request_id VARCHAR, trace_id VARCHAR, ts TIMESTAMP, tenant VARCHAR, "
                "task_type VARCHAR, subtype VARCHAR, tier VARCHAR, routed_tier VARCHAR, escalations BIGINT, "
                "success BOOLEAN, input_messages VARCHAR, standalone BOOLEAN, cache_hit BOOLEAN)")
    con.execute("CREATE TABLE calls (request_id VARCHAR, trace_id VARCHAR, ts TIMESTAMP, tier VARCHAR, "
                "error_type VARCHAR, input_messages VARCHAR, input_tokens BIGINT, output_tokens BIGINT, "
                "standalone BOOLEAN, finish_reasons VARCHAR[])")
    con.execute("CREATE TABLE shadow_items (run_id VARCHAR, request_id VARCHAR, trace_id VARCHAR, tier VARCHAR, "
                "next_tier VARCHAR, subtype VARCHAR, metric VARCHAR, score DOUBLE, match BOOLEAN)")
    for i, (rid, trace, tenant, task, tiers) in enumerate(requests):
        ts = T0 + timedelta(minutes=i)
        doc = json.dumps([{"role": "user", "parts": [{"type": "text", "content": f"{tenant}'s question"}]}])
        con.execute("INSERT INTO requests VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?, true, ?, false, false)",
                    [rid, trace, ts, tenant, task, tiers[-1], tiers[0], len(tiers) - 1, doc])
        for j, tier in enumerate(tiers):
            con.execute("INSERT INTO calls VALUES (?, ?, ?, ?, NULL, ?, 100, 20, false, NULL)",
                        [rid, trace, ts + timedelta(seconds=j), tier, doc])
    for rid, trace, tier, match, run in shadow:
        con.execute("INSERT INTO shadow_items VALUES (?, ?, ?, ?, NULL, NULL, 'exact', ?, ?)",
                    [run, rid, trace, tier, 1.0 if match else 0.0, match])
    con.execute("ALTER TABLE requests ADD COLUMN rejected_attempts VARCHAR")  # NULL: none rejected
    return con


def _labels(requests: list[Req], shadow: list[Shadow], **kw):
    con = _lake(requests, shadow)
    try:
        return labels_from_lake(Config(), since=T0, until=T0 + timedelta(days=1), con=con, **kw)
    finally:
        con.close()


def _got(labels) -> list[tuple[str, str | None, str, str | None]]:
    """``(request_id, tenant, lo, hi)`` per label, sorted."""
    return sorted((lb.request_id, lb.tenant, lb.lo, lb.hi) for lb in labels.labels)


def _traces(labels) -> dict[str | None, str | None]:
    """tenant -> the trace of its label (the tests give each tenant at most one label)."""
    return {lb.tenant: lb.trace_id for lb in labels.labels}


ACME = ("req-7", "trace-acme", "acme", "faq", ("budget",))
GLOBEX = ("req-7", "trace-globex", "globex", "faq", ("budget",))


@pytest.mark.parametrize(("shadow", "expected"), [
    pytest.param(
        # acme: budget matched mid -> budget adequate: [budget, budget] (exact).
        # globex: budget missed mid (inadequate: lo = mid), mid matched upper (hi = mid): [mid, mid] (exact).
        # Pooled by request id, the two budget verdicts (one run) become one, either tenant's, and one label stands
        # for both requests.
        [("req-7", "trace-acme", "budget", True, "shadow-1"),
         ("req-7", "trace-globex", "budget", False, "shadow-1"), ("req-7", "trace-globex", "mid", True, "shadow-1")],
        [("req-7", "acme", "budget", "budget"), ("req-7", "globex", "mid", "mid")],
        id="pooled-would-contradict"),
    pytest.param(
        # acme: mid matched upper -> [budget, mid] (censored: mid or cheaper).
        # globex: budget missed mid -> [mid, unknown].
        # Pooled they make one exact [mid, mid] label: acme's verdict deciding globex's request and the reverse.
        [("req-7", "trace-acme", "mid", True, "shadow-1"), ("req-7", "trace-globex", "budget", False, "shadow-1")],
        [("req-7", "acme", "budget", "mid"), ("req-7", "globex", "mid", None)],
        id="pooled-would-mix"),
])
def test_two_requests_in_two_traces_sharing_an_id_get_their_own_labels(shadow, expected) -> None:
    labels = _labels([ACME, GLOBEX], shadow)
    assert _got(labels) == expected
    assert (labels.conflicting, labels.capped) == (0, 0)
    # each label's query is its own tenant's prompt, and it names its own trace
    assert {lb.tenant: lb.query for lb in labels.labels} == {"acme": "acme's question", "globex": "globex's question"}
    assert _traces(labels) == {"acme": "trace-acme", "globex": "trace-globex"}
    assert labels.ambiguous == 0


def test_escalations_are_not_pooled_across_traces_either() -> None:
    """globex's req-7 escalated (budget's answer rejected, mid's accepted): [mid, unknown], from the escalation.
    acme's req-7 was answered by budget, no verdict: no evidence, [budget, unknown] (only with the unlabelled)."""
    glob_esc = ("req-7", "trace-globex", "globex", "faq", ("budget", "mid"))
    labels = _labels([ACME, glob_esc], [])
    assert _got(labels) == [("req-7", "globex", "mid", None)]
    assert labels.labels[0].source == "escalation" and labels.labels[0].served_tier == "mid"
    every = _labels([ACME, glob_esc], [], include_unlabelled=True)
    assert _got(every) == [("req-7", "acme", "budget", None), ("req-7", "globex", "mid", None)]
    assert _traces(every) == {"acme": "trace-acme", "globex": "trace-globex"}


def test_an_old_shadow_row_without_a_trace_labels_a_unique_request_and_never_a_shared_id() -> None:
    """req-u is the only request of its id: its old rows (trace_id NULL) label it. budget: shadow-1 (old) missed,
    shadow-2 (with the trace) matched: the later run wins, budget adequate; mid (old, shadow-1) matched:
    [budget, budget]. req-v, unique too, old row only: budget missed mid -> [mid, unknown], from the shadow job.
    req-7 is two requests: its old row (budget matched) could be either's: left out, counted once; each keeps only
    its own verdicts (acme: mid missed upper -> [upper, unknown]; globex: none -> no label)."""
    reqs = [ACME, GLOBEX, ("req-u", "trace-u", "acme", "faq", ("budget",)),
            ("req-v", "trace-v", "initech", "support", ("budget",))]
    shadow = [("req-u", None, "budget", False, "shadow-1"), ("req-u", "trace-u", "budget", True, "shadow-2"),
              ("req-u", None, "mid", True, "shadow-1"),
              ("req-v", None, "budget", False, "shadow-1"),
              ("req-7", None, "budget", True, "shadow-1"), ("req-7", "trace-acme", "mid", False, "shadow-2")]
    labels = _labels(reqs, shadow)
    assert _got(labels) == [("req-7", "acme", "upper", None), ("req-u", "acme", "budget", "budget"),
                            ("req-v", "initech", "mid", None)]
    assert {lb.request_id: lb.trace_id for lb in labels.labels} == {
        "req-7": "trace-acme", "req-u": "trace-u", "req-v": "trace-v"}
    assert all(lb.source == "shadow" for lb in labels.labels)
    assert (labels.ambiguous, labels.conflicting, labels.capped) == (1, 0, 0)
    assert labels.summary()["ambiguous"] == 1
    assert "1 request ids' shadow verdicts without a trace id left out" in labels.format()


def test_an_old_shadow_row_of_a_request_outside_the_window_is_not_counted() -> None:
    """The old row's id names no request of the window: nothing to label, nothing ambiguous."""
    labels = _labels([ACME], [("req-gone", None, "budget", True, "shadow-1")])
    assert labels.labels == [] and labels.ambiguous == 0


def test_tenants_sharing_request_ids_each_count_their_own_labels_toward_the_cap() -> None:
    """acme and globex both number their requests 0..2, all escalated budget -> mid: 6 labels [mid, unknown], 3 per
    tenant. Cap c <= 0.5 x (min(3, c) + min(3, c)) holds up to c = 3: nothing left out, 3 each, each its tenant's."""
    reqs = [(f"req-{i}", f"trace-{tenant}-{i}", tenant, "faq", ("budget", "mid"))
            for i in range(3) for tenant in ("acme", "globex")]
    labels = _labels(reqs, [])
    assert sorted((lb.request_id, lb.tenant) for lb in labels.labels) == sorted(
        (f"req-{i}", t) for i in range(3) for t in ("acme", "globex"))
    assert labels.capped == 0
    assert all((lb.lo, lb.hi) == ("mid", None) for lb in labels.labels)
    assert sorted(lb.trace_id for lb in labels.labels) == sorted(
        f"trace-{t}-{i}" for i in range(3) for t in ("acme", "globex"))


@pytest.mark.parametrize(("rejected", "expected"), [
    # budget refused (served, no success): a refusal says nothing of budget's quality: unlabelled, as a plain
    # answer is ([budget, None] with include_unlabelled; before: budget inadequate, [mid, None])
    ("budget:refusal", [("req-1", "acme", "budget", None)]),
    ("budget:content_filter", [("req-1", "acme", "budget", None)]),
    # budget's answer failed the validator and mid's was served, a refusal (success false): budget is inadequate
    # (lo = mid), mid's refusal no verdict: [mid, None] (before: [upper, None])
    ("budget:validator,mid:refusal", [("req-1", "acme", "mid", None)]),
    # budget's answer failed the validator, mid's was served and the request is no success for another reason
    # (an app's own reject): both answered tiers were turned down: [upper, None]
    ("budget:validator", [("req-1", "acme", "upper", None)]),
])
def test_a_refused_answer_is_no_verdict_on_its_tier(rejected, expected):
    """A request whose served tier declined to answer (``<tier>:refusal`` in ``rejected_attempts``, success false) does
    not label that tier inadequate: the pipeline never sends a refusal up a tier, and the same request would be
    refused there too."""
    tiers = ("budget", "mid") if "validator" in rejected else ("budget",)  # a validator's rejection went up to mid
    con = _lake([("req-1", "trace-1", "acme", "faq", tiers)], [])
    con.execute("UPDATE requests SET success = false, rejected_attempts = ?", [rejected])
    try:
        got = labels_from_lake(Config(), since=T0, until=T0 + timedelta(days=1), con=con, include_unlabelled=True)
    finally:
        con.close()
    assert _got(got) == expected
