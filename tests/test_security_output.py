"""Output injection: Slack mrkdwn built from lake values, dashboard labels, the dashboard's Host check."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from costline.alerts.message import render
from costline.alerts.notify import Outgoing, SlackBotNotifier, SlackWebhookNotifier, slack_escape
from costline.sim.slack_standin import SlackStandIn

HOSTILE = {
    "tenant": "<!channel> acme",
    "tier": "<https://evil.example|Click to re-authenticate>",
    "task_type": "@here & <@U012345>",
    "subtype": "<!subteam^S123|@oncall> <#C123>",
}
AT = dt.datetime(2026, 11, 9, 8, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(("raw", "want"), [
    ("<!channel>", "&lt;!channel&gt;"),
    ("a & b", "a &amp; b"),
    ("<https://x|y>", "&lt;https://x|y&gt;"),
    ("@here now", "@\u200bhere now"),
    ("&lt;", "&amp;lt;"),
    ("plain", "plain"),
])
def test_slack_escape(raw: str, want: str) -> None:
    assert slack_escape(raw) == want


def _hostile_message() -> Outgoing:
    payload = render("firing", rule="cache_hit_rate_drop", group_labels=HOSTILE, severity="warning", incident=1,
                     members=[{"labels": HOSTILE, "state": "firing",
                               "observation": {"summary": f"hit rate of {HOSTILE['tenant']} fell",
                                               "figures": {"tenant": HOSTILE["tenant"], "tier": HOSTILE["tier"]},
                                               "window": "<!everyone>"}}],
                     at=AT, note="tier <!here>")
    return Outgoing("post", payload, "k1", created_at=0.0)


def _mrkdwn_texts(value) -> list[str]:  # type: ignore[no-untyped-def]
    if isinstance(value, dict):
        out = [value["text"]] if value.get("type") == "mrkdwn" else []
        return out + [t for v in value.values() for t in _mrkdwn_texts(v)]
    if isinstance(value, list):
        return [t for v in value for t in _mrkdwn_texts(v)]
    return []


def _assert_inert(text: str) -> None:
    # Slack forms mentions, links and channel references only from "<...>"; none may remain.
    assert "<" not in text and ">" not in text, text
    assert not re.search(r"@(channel|here|everyone)\b", text), text


def test_bot_messages_carry_no_mention_or_link_from_user_fields() -> None:
    with SlackStandIn() as slack:
        notifier = SlackBotNotifier("xoxb-test", "#alerts", base_url=slack.base_url, timeout_s=2)
        assert notifier.send(_hostile_message()).ok
        (msg,) = slack.messages("#alerts")
    for text in [msg["text"], *_mrkdwn_texts(msg.get("blocks"))]:
        _assert_inert(text)
    assert "&lt;!channel&gt; acme" in msg["text"]  # still readable as what it was


def test_webhook_messages_carry_no_mention_or_link_from_user_fields() -> None:
    with SlackStandIn() as slack:
        notifier = SlackWebhookNotifier(slack.webhook_url, timeout_s=2)
        assert notifier.send(_hostile_message()).ok
        (post,) = slack.webhook_posts()
    for text in [post["text"], *_mrkdwn_texts(post.get("blocks"))]:
        _assert_inert(text)


# -- the dashboard ---------------------------------------------------------------------------------
NODE = shutil.which("node")
HARNESS = r"""
const fs = require("fs");
const data = fs.readFileSync(process.argv[2], "utf8");
const drawn = [];
function el(id) {
  return { id, textContent: id === "costline-data" ? data : "", dataset: {}, hidden: false, value: "",
           clientWidth: 800, addEventListener() {}, replaceChildren() {}, appendChild() {} };
}
const els = {};
global.document = { getElementById: (id) => (els[id] = els[id] || el(id)), querySelectorAll: () => [],
                    body: { dataset: {} }, createElement: () => el("x") };
global.window = { addEventListener() {}, history: null };
global.history = null;
global.location = { hash: "" };
global.Plotly = { react: (div, traces, layout) => { drawn.push({ traces, layout }); }, purge() {} };
eval(fs.readFileSync(process.argv[3], "utf8"));
console.log(JSON.stringify(drawn));
"""


@pytest.mark.skipif(NODE is None, reason="no node to run dashboard.js")
def test_dashboard_draws_hostile_labels_as_text(tmp_path: Path) -> None:
    from costline.dashboards import CHARTS

    link = '<a href="https://evil.example">acme</a>'
    rows = {
        "lines": lambda c: [],  # built below from the chart's columns
        "band": lambda c: [["2026-11-08T01:00:00", link, 0.5, 0.6, 0.4, True]],
        "stacked_bar": lambda c: [["2026-11-08", link, 10, 0.5]],
        "waterfall": lambda c: [["2026-11-08", 0, link, 5.0], ["2026-11-08", 1, "<b>x</b>", 3.0]],
    }
    charts = []
    for chart in CHARTS:
        if chart.kind not in rows:
            continue
        r = rows[chart.kind](chart)
        if chart.kind == "lines":
            series = chart.options["series"]
            row = {col: None for col in chart.columns}
            row[chart.x], row[series] = "2026-11-08", link
            for y in chart.options["y"]:
                row[y] = 0.5
            r = [[row[col] for col in chart.columns]]
        charts.append({"name": chart.name, "title": chart.title, "kind": chart.kind, "x": chart.x,
                       "options": chart.options, "status": "ok", "message": "", "columns": list(chart.columns),
                       "rows": r})
    data = tmp_path / "data.json"
    data.write_text(json.dumps({"built_at": "2026-11-09T08:00:00", "lake": "x", "refresh_s": None, "charts": charts}))
    harness = tmp_path / "harness.js"
    harness.write_text(HARNESS)
    js = Path(__file__).resolve().parents[1] / "dashboards" / "dashboard.js"
    out = subprocess.run([NODE, str(harness), str(data), str(js)], capture_output=True, text=True, check=True)
    drawn = json.loads(out.stdout)
    assert len(drawn) == len(charts)
    shown: list[str] = []
    for d in drawn:
        for t in d["traces"]:
            shown += [str(t.get("name", "")), *(str(x) for x in (t.get("x") or []) if not str(x)[:1].isdigit())]
        shown += [str(a.get("text", "")) for a in d["layout"].get("annotations", [])]
        shown += [str(v["title"]["text"]) for k, v in d["layout"].items() if k.startswith("yaxis")]
    assert any("&lt;a href" in s for s in shown)  # the label is there, as text
    assert not [s for s in shown if "<" in s], shown


def _get(port: int, host_header: str | None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.putrequest("GET", "/", skip_host=True)
    if host_header is not None:
        conn.putheader("Host", host_header)
    conn.endheaders()
    status = conn.getresponse().status
    conn.close()
    return status


def test_dashboard_server_answers_loopback_host_names_only() -> None:
    from costline.config import Config
    from costline.dashboards import DashboardError, DashboardServer
    from costline.dashboards.settings import DashboardConfig

    with DashboardServer(Config(), port=0, build=lambda: "<p>costs</p>") as server:
        port = int(server.url.rsplit(":", 1)[1].strip("/"))
        assert _get(port, f"localhost:{port}") == 200
        assert _get(port, f"127.0.0.1:{port}") == 200
        assert _get(port, f"evil.example:{port}") == 421  # DNS rebinding
        assert _get(port, "evil.example") == 421
        assert _get(port, None) == 421
    cfg = Config(dashboard=DashboardConfig(allowed_hosts=("costs.internal",)))
    with DashboardServer(cfg, port=0, build=lambda: "<p>costs</p>") as server:
        port = int(server.url.rsplit(":", 1)[1].strip("/"))
        assert _get(port, f"costs.internal:{port}") == 200
    with pytest.raises(DashboardError, match="allowed_hosts"):
        DashboardServer(Config(), host="0.0.0.0", port=0, build=lambda: "")
