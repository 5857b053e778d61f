"""Jobs, alerts and dashboards on data and conditions they were not written against: huge names in Slack
messages, a NaN cost in the lake, a quiet hour inside an incident, a night skipped as busy, a one-item subtype,
a span dated in the future."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import pytest

from costline.alerts.engine import _obs_dict
from costline.alerts.message import render
from costline.alerts.notify import Outgoing, SlackBotNotifier, SlackWebhookNotifier
from costline.alerts.rules import Rule, Snapshot, evaluate
from costline.alerts.settings import CacheHitRateDropSettings
from costline.config import Config, HostingPeriod, LakeConfig, PricingConfig
from costline.jobs.cost_report import build_cost_report
from costline.jobs.store import open_jobs_lake
from costline.lake import Lake
from costline.processors.buffer import rows_to_tables
from costline.processors.records import CallRow, RequestRow
from costline.sim.slack_standin import SlackStandIn

W = dt.datetime(2026, 11, 7, 10)
NOW = dt.datetime(2026, 11, 7, 11, 1, tzinfo=dt.UTC)

# -- Slack: messages must fit Slack's Block Kit limits whatever the lake's names are ------------------

#: Slack's documented limits (api.slack.com/reference/block-kit/blocks): a longer text object makes
#: chat.postMessage answer invalid_blocks (permanent: the message and its thread would wait forever).
HEADER_MAX, SECTION_MAX, FIELD_MAX, TEXT_MAX = 150, 3000, 2000, 4000


def _long_label_message(tenant: str) -> Outgoing:
    row = {"window_start": W, "tenant": tenant, "hit_rate": 0.30, "avg_7d": 0.45, "lookups": 200, "hits": 60,
           "lookups_7d": 5000}
    (obs,) = evaluate(Rule("cache_hit_rate_drop", CacheHitRateDropSettings(), 30), Snapshot(cache=[row]), NOW)
    member = {"fingerprint": obs.fingerprint, "labels": dict(obs.labels), "state": "firing",
              "observation": _obs_dict(obs)}
    payload = render("firing", rule="cache_hit_rate_drop", group_labels={"rule": "cache_hit_rate_drop",
                     "tenant": tenant}, severity="warning", incident=1, members=[member], at=NOW)
    return Outgoing("post", payload, "k-long", created_at=0.0)


def _assert_fits_block_kit(text: str, blocks: list[dict]) -> None:
    assert len(text) <= TEXT_MAX, len(text)
    for b in blocks:
        if b["type"] == "header":
            assert len(b["text"]["text"]) <= HEADER_MAX
        if b["type"] == "section":
            if "text" in b:
                assert len(b["text"]["text"]) <= SECTION_MAX, len(b["text"]["text"])
            assert len(b.get("fields", [])) <= 10
            for f in b.get("fields", []):
                assert len(f["text"]) <= FIELD_MAX, len(f["text"])
        for e in b.get("elements", []):
            assert len(e.get("text", "")) <= SECTION_MAX


@pytest.mark.parametrize("tenant", [
    "t" * 10_000,                       # a 10,000-character tenant name
    "a&b<" * 2_500,                     # grows 3x when escaped: clip after escaping
    "x" * 85 + " @here @here @here",   # the header's @-mention breaker must not push it over 150
])
@pytest.mark.parametrize("via", ["bot", "webhook"])
def test_slack_messages_with_huge_names_fit_block_kit_limits(tenant: str, via: str) -> None:
    with SlackStandIn() as slack:
        if via == "bot":
            notifier = SlackBotNotifier("xoxb-test", "#alerts", base_url=slack.base_url, timeout_s=5)
        else:
            notifier = SlackWebhookNotifier(slack.webhook_url, timeout_s=5)
        assert notifier.send(_long_label_message(tenant)).ok
        (msg,) = slack.messages("#alerts") if via == "bot" else slack.webhook_posts()
    _assert_fits_block_kit(msg["text"], msg["blocks"])
    body = json.dumps(msg)
    for t in [msg["text"]] + [b["text"]["text"] for b in msg["blocks"] if b.get("type") == "section" and "text" in b]:
        # a clipped text never ends in half an escape (&am…) and says it was clipped
        tail = t[-8:]
        assert "&" not in tail or ";" in tail[tail.index("&"):], tail
    if len(tenant) > SECTION_MAX:
        assert msg["blocks"][1]["text"]["text"].endswith("…")
    assert "30.0%" in msg["text"] or "30.0%" in body  # the figures are still there


# -- cost report: a NaN cost in the lake ------------------------------------------------------------

DAY = dt.datetime(2026, 11, 7)


def _us(t: dt.datetime) -> int:
    return int(t.replace(tzinfo=dt.UTC).timestamp() * 1_000_000)


def _req(rid: str, hour: int, tier: str, task: str, hit: bool = False) -> RequestRow:
    return RequestRow(rid, f"t-{rid}", f"s-{rid}", _us(DAY + dt.timedelta(hours=hour)), "acme", task, "x", tier, tier,
                      hit, 1, 0, True, None, 5.0, None, None, 0, 0)


def _call(rid: str, hour: int, tier: str, model: str, inp: int, out: int, cost: float | None) -> CallRow:
    status = "student" if tier == "student" else "priced"
    return CallRow(f"c-{rid}", f"t-{rid}", f"s-{rid}", rid, _us(DAY + dt.timedelta(hours=hour)), "chat",
                   "vllm" if tier == "student" else "anthropic", model, model, tier, inp, out, 0, 0, False, ["stop"],
                   None, cost, status, "2026-06", 5.0, None, None, 0, 0)


def _cost_lake(path: Path, bad_cost: float | None) -> Config:
    cfg = Config(lake=LakeConfig(path=path), pricing=PricingConfig(hosting=(
        HostingPeriod(2.74, since="2026-11-07T00:00:00Z", until="2026-11-08T00:00:00Z"),)))
    reqs = [_req("R1", 1, "budget", "faq"), _req("R2", 2, "student", "cls"), _req("R3", 3, "cache", "faq", hit=True),
            _req("R4", 4, "frontier", "faq"), _req("R5", 5, "budget", "faq")]
    calls = [_call("R1", 1, "budget", "claude-haiku-4-5", 1000, 100, 0.0012),
             _call("R2", 2, "student", "costline-student", 2000, 50, 0.0),
             _call("R4", 4, "frontier", "claude-fable-5", 500, 100, 0.0082),
             _call("R5", 5, "budget", "claude-haiku-4-5", 1000, 100, bad_cost)]
    Lake(path).init().commit_batch("otlp_spans", 0, 0, 9, {
        "requests": rows_to_tables("requests", reqs), "calls": rows_to_tables("calls", calls)})
    return cfg


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_call_cost_is_left_out_of_the_cost_report_and_said_so(tmp_path: Path, bad: float) -> None:
    """A lake written before validation holds a NaN cost: one such call must not turn every stage into $nan."""
    good = _cost_lake(tmp_path / "good", 0.0)   # the same traffic with that call at $0
    poisoned = _cost_lake(tmp_path / "bad", bad)
    reports = []
    for cfg in (good, poisoned):
        con = open_jobs_lake(cfg)
        try:
            reports.append(build_cost_report(con, cfg, since=DAY, until=DAY + dt.timedelta(days=1)))
        finally:
            con.close()
    want, got = reports
    for w, g in zip(want.stages, got.stages):
        assert math.isfinite(g.total_cost_usd), (g.stage, g.total_cost_usd)
        assert g.total_cost_usd == pytest.approx(w.total_cost_usd), g.stage
        assert g.cumulative_saving == pytest.approx(w.cumulative_saving)
    # by hand (Haiku $0.80 / $4 per MTok): the non-hit requests as routed — R1 $0.0012, R2's student call at the
    # budget price it replaced (2000 in, 50 out: $0.0018), R4 $0.0082, R5's bad cost left out — and as paid,
    # the student's GPU for the day's 24 scheduled hours at $2.74 on top
    by_stage = {g.stage: g.total_cost_usd for g in got.stages}
    assert by_stage["cache"] == pytest.approx(0.0012 + (2000 * 0.80 + 50 * 4.0) / 1e6 + 0.0082)
    assert by_stage["student"] == pytest.approx(0.0012 + 0.0082 + 24 * 2.74)
    assert all(math.isfinite(d["cost_usd"]) for d in got.per_day)
    assert got.ignored_costs == 1 and want.ignored_costs == 0
    assert "1 call cost that was NaN/infinite was left out" in got.to_text()
    assert "nan" not in got.to_text().lower().replace("nan/", "")
    assert json.loads(got.to_json())["ignored_costs"] == 1


# -- hourly rules: a quiet hour is too little data to resolve on ------------------------------------

def _cache_row(start: dt.datetime, lookups: int, hits: int, avg: float = 0.45, lookups_7d: int = 5000) -> dict:
    return {"window_start": start, "tenant": "acme", "hit_rate": hits / lookups, "avg_7d": avg, "lookups": lookups,
            "hits": hits, "lookups_7d": lookups_7d}


def _tier_row(start: dt.datetime, cost: float, succ: int) -> dict:
    return {"window_start": start, "tier": "mid", "requests": succ, "successes": succ, "cost_usd": cost,
            "successes_7d": 10_000, "cost_usd_7d": 100.0}


@pytest.mark.parametrize(("rule", "snap", "expected"), [
    # one lookup, a hit: 100% vs 45% says nothing about recovery (fires only from 50 lookups)
    ("cache_hit_rate_drop", Snapshot(cache=[_cache_row(W, 1, 1)]), "band"),
    ("cache_hit_rate_drop", Snapshot(cache=[_cache_row(W, 3, 3)]), "band"),
    ("cache_hit_rate_drop", Snapshot(cache=[_cache_row(W, 200, 90)]), "ok"),             # enough data: resolves
    ("cache_hit_rate_drop", Snapshot(cache=[_cache_row(W, 1, 1, lookups_7d=20)]), "band"),  # no baseline yet
    # one success at the usual price: not enough to call the cost back to normal
    ("cost_per_success_rise", Snapshot(tiers=[_tier_row(W, 0.01, 1)]), "band"),
    ("cost_per_success_rise", Snapshot(tiers=[_tier_row(W, 1.0, 100)]), "ok"),
])
def test_an_hour_with_too_little_data_keeps_the_alert_state(rule: str, snap: Snapshot, expected: str) -> None:
    from costline.alerts.settings import AlertsConfig

    cfg = AlertsConfig()
    (obs,) = evaluate(Rule(rule, getattr(cfg, rule), 30), snap, NOW)
    assert obs.condition.value == expected


def test_a_quiet_hour_inside_an_incident_does_not_resolve_and_reopen_it(tmp_path: Path) -> None:
    """Fires at 10:00 (200 lookups, 30% vs 45%); at 11:00 two lookups, both hits; at 12:00 30% again:
    one incident, one message — not firing, resolved, firing."""
    from costline.alerts.engine import AlertEngine
    from costline.alerts.settings import AlertsConfig
    from costline.alerts.store import AlertStore
    from costline.alerts.testing import outbox_kinds

    cfg = AlertsConfig()
    store = AlertStore(tmp_path / "state.sqlite")
    engine = AlertEngine(store, cfg, targets=("console",))
    rule = Rule("cache_hit_rate_drop", cfg.cache_hit_rate_drop, cfg.settle_s)
    for hour, (lookups, hits) in enumerate([(200, 60), (2, 2), (200, 60)]):
        start = W + dt.timedelta(hours=hour)
        now = start + dt.timedelta(hours=1, minutes=1)
        engine.apply({rule.name: evaluate(rule, Snapshot(cache=[_cache_row(start, lookups, hits)]),
                                          now.replace(tzinfo=dt.UTC))}, now.replace(tzinfo=dt.UTC))
    assert outbox_kinds(store) == ["firing"]
    store.close()


# -- scheduling: a night skipped because the job was busy is not lost --------------------------------

def test_a_window_skipped_as_busy_is_retried_the_next_night(tmp_path: Path) -> None:
    """02:00: a manual `costline jobs drift --since -7d` still holds the drift lock, so tonight's drift is
    'skipped: busy'. The next night must run it (like a failed window), not leave the night unevaluated."""
    from costline.jobs.scheduler import JobLock, nightly
    from costline.jobs.store import JobStore

    u = dt.datetime(2026, 11, 8, 2, 0)
    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"))
    seen: list[tuple[str, dt.datetime]] = []

    def runner(job: str):  # noqa: ANN202
        def run(config: Config, since: dt.datetime, until: dt.datetime) -> tuple[str, int, float]:
            seen.append((job, until))
            return f"{job}-r", 1, 0.0
        return run

    runners = {j: runner(j) for j in ("drift", "shadow", "cost-report")}
    with JobLock(JobStore(cfg.lake.path).init(), "drift"):
        first = nightly(cfg, until=u, runners=runners, now=lambda: u)
    assert [o.status for o in first] == ["skipped", "succeeded", "succeeded"] and "busy" in first[0].error
    nxt = u + dt.timedelta(days=1)
    second = nightly(cfg, until=nxt, runners=runners, now=lambda: nxt)
    assert ("drift", u) in seen, seen
    assert [(o.job, o.until, o.status) for o in second][0] == ("drift", u, "succeeded")
    third = nightly(cfg, until=nxt + dt.timedelta(days=1), runners=runners)
    assert [o.until for o in third] == [nxt + dt.timedelta(days=1)] * 3  # nothing left to retry


# -- drift: one evaluated item has no confidence interval ---------------------------------------------

@pytest.mark.parametrize(("student", "teacher"), [
    ([0.0], [1.0]),      # exact match: the one answer of a rare subtype missed
    ([0.62], [1.0]),     # cosine: one so-so answer
])
def test_a_subtype_with_a_single_item_is_not_flagged_on_a_zero_width_interval(student, teacher) -> None:
    """A rare subtype with one student-served request tonight: the bootstrap of one value is that value,
    so 'the whole 95% CI is over the threshold' held on one answer (and started an opt-in re-distillation)."""
    from scipy.stats import binomtest

    from costline.jobs.drift import SubtypeScores, assess_subtypes
    from costline.jobs.settings import DriftConfig

    cfg = DriftConfig()
    # independently: one miss out of one gives an exact (Clopper-Pearson) 95% CI of the miss rate whose
    # lower bound (0.025) is far under max_gap: no evidence the gap is over it
    assert binomtest(1, 1).proportion_ci(0.95).low < cfg.max_gap
    current = {"rare": SubtypeScores.of(student, teacher),
               "common": SubtypeScores.of([1.0] * 120, [1.0] * 120)}
    by = {a.subtype: a for a in assess_subtypes(current, cfg)}
    assert not by["rare"].flagged, by["rare"].reason
    assert by["rare"].n == 1 and by["rare"].gap == pytest.approx(teacher[0] - student[0])
    assert math.isnan(by["rare"].gap_ci_low) and math.isnan(by["rare"].gap_ci_high)
    assert not by["common"].flagged


# -- dashboard: a span stamped in the future (a client's skewed clock) --------------------------------

_RANGE_HARNESS = r"""
const fs = require("fs");
const data = fs.readFileSync(process.argv[2], "utf8");
const els = {};
function el(id) {
  return { id, textContent: id === "costline-data" ? data : "", dataset: {}, hidden: false, value: "",
           clientWidth: 800, listeners: {}, addEventListener(t, f) { this.listeners[t] = f; },
           getAttribute(k) { return this.attrs ? this.attrs[k] : null; }, replaceChildren() {}, appendChild() {} };
}
const buttons = ["1", "7", "all"].map((r) => Object.assign(el("b" + r), { attrs: { "data-range": r } }));
global.document = { getElementById: (id) => (els[id] = els[id] || el(id)),
                    querySelectorAll: (sel) => sel.startsWith("button[data-range]") ? buttons : [],
                    body: { dataset: {} }, createElement: () => el("x") };
global.window = { addEventListener() {}, history: null };
global.history = null;
global.location = { hash: "" };
global.Plotly = { react() {}, purge() {} };
eval(fs.readFileSync(process.argv[3], "utf8"));
buttons[1].listeners.click();   // "last 7 days"
console.log(JSON.stringify({ from: els["date-from"].value, to: els["date-to"].value }));
"""


@pytest.mark.skipif(__import__("shutil").which("node") is None, reason="no node to run dashboard.js")
def test_last_7_days_ends_at_the_build_day_not_at_a_future_dated_span(tmp_path: Path) -> None:
    import shutil
    import subprocess

    from costline.dashboards import CHARTS

    chart = next(c for c in CHARTS if c.name == "traffic_mix")
    days = [f"2026-11-{d:02d}" for d in range(1, 10)] + ["2031-01-01"]  # one span from a clock 4 years ahead
    rows = [[d if c == chart.x else ("budget" if c == "tier" else 1) for c in chart.columns] for d in days]
    data = tmp_path / "data.json"
    data.write_text(json.dumps({"built_at": "2026-11-09T08:00:00", "lake": "x", "refresh_s": None, "marks": {},
                                "charts": [{"name": chart.name, "title": chart.title, "kind": chart.kind,
                                            "x": chart.x, "options": chart.options, "status": "ok", "message": "",
                                            "columns": list(chart.columns), "rows": rows}]}))
    harness = tmp_path / "harness.js"
    harness.write_text(_RANGE_HARNESS)
    js = Path(__file__).resolve().parents[1] / "dashboards" / "dashboard.js"
    out = subprocess.run([shutil.which("node"), str(harness), str(data), str(js)], capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout) == {"from": "2026-11-03", "to": "2026-11-09"}
