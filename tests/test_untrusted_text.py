"""Text from outside in what costline shows and sends: labels that Slack, the console, the CLI and a silence show and
take alike; a Slack message too long in all; the CLI's alert lines; the HTTP servers' access logs; the input-drift
reason. Hostile values: U+200B, U+202E, U+009B, U+2028, ESC, CR, ``<!channel>``. Expected texts are written out
by hand (or computed by DuckDB from the dashboard's own SQL), never with costline's label functions."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner, Result
from slack_sdk.errors import SlackApiError
from slack_sdk.web.slack_response import SlackResponse

from costline.alerts.engine import AlertEngine
from costline.alerts.message import render
from costline.alerts.notify import Outgoing, SlackBotNotifier, slack_payload
from costline.alerts.rules import Condition, Observation, label_value, tenant_label
from costline.alerts.settings import AlertsConfig
from costline.alerts.store import AlertStore, Silence
from costline.config import Config
from costline.dashboards.charts import QUOTED_NAME_SQL
from costline.jobs.drift import assess_inputs

T = datetime(2026, 11, 8, 3, 1, tzinfo=UTC)

# --- labels ----------------------------------------------------------------------------------------------------

# a value from data, its label written out by hand: JSON-quoted, each character that does not print as \uXXXX
LABELS = [
    ("ac\u200bme", '"ac\\u200bme"'),            # zero-width space (Cf)
    ("ev\u202eil-corp", '"ev\\u202eil-corp"'),  # right-to-left override (Cf)
    ("acme\x9b2J", '"acme\\u009b2J"'),          # C1 CSI (Cc)
    ("beta\u2028FIRING", '"beta\\u2028FIRING"'),  # line separator (Zl)
    ("a\u2029b", '"a\\u2029b"'),                # paragraph separator (Zp)
    ("esc\x1b[2J", '"esc\\u001b[2J"'),          # ESC: JSON's own escape
    ("cr\rx", '"cr\\rx"'),                      # CR: JSON's own escape
    ("nb\u00a0sp", '"nb\\u00a0sp"'),            # a space that is not the ASCII one (Zs)
    ("tag\U000e0041", '"tag\\udb40\\udc41"'),   # a tag character past U+FFFF (Cf): its UTF-16 pair, as JSON writes it
    ("priv\ue000", '"priv\\ue000"'),            # private use (Co)
    ("<!channel>", "<!channel>"),               # prints: its own label (Slack escaping is the notifier's part)
    ("caf\u00e9", "caf\u00e9"),                 # prints: its own label, not escaped
]


def test_a_label_writes_every_character_that_does_not_print_as_its_escape() -> None:
    """One table (the values that print, ESC and CR were labelled so before too: they are the controls)."""
    wrong = [(value, label_value(value), tenant_label(value)) for value, want in LABELS
             if not label_value(value) == tenant_label(value) == want]
    assert wrong == []
    for value, want in LABELS:  # the table itself: a quoted label prints, and JSON gives the value back
        assert (want.isprintable() and json.loads(want) == value) if want.startswith('"') else want == value


def test_a_label_is_the_dashboards_quoted_name() -> None:
    """The dashboard's ``quoted_name`` (DuckDB SQL) and the alerts' label write a name alike (hex digits' case
    aside): a tenant reads the same on the page, in Slack and in a silence."""
    con = duckdb.connect()
    try:
        for value, _want in LABELS:
            if value.isprintable():
                continue
            (page,) = con.execute(f"SELECT {QUOTED_NAME_SQL} FROM (SELECT ? AS name)", [value]).fetchone()
            low = re.sub(r"\\u([0-9A-Fa-f]{4})", lambda m: "\\u" + m.group(1).lower(), page)
            assert label_value(value) == low, value
    finally:
        con.close()


# --- silences ----------------------------------------------------------------------------------------------------

def _silence(matcher: str) -> Silence:
    return Silence(1, "cache_hit_rate_drop", {"tenant": matcher}, T - timedelta(hours=1), T + timedelta(hours=1), "x")


# (the alert's tenant label, the --label value typed, matches?)
SILENCE_CASES = [
    # typed as costline now shows the label (Slack, console, CLI)
    (tenant_label("ac\u200bme"), '"ac\\u200bme"', True),
    (tenant_label("ev\u202eil"), '"ev\\u202eil"', True),
    (tenant_label("acme\x9b2J"), '"acme\\u009b2J"', True),
    (tenant_label("beta\u2028x"), '"beta\\u2028x"', True),
    (tenant_label("esc\x1b"), '"esc\\u001b"', True),
    (tenant_label("cr\rx"), '"cr\\rx"', True),
    # the label an older costline stored (the raw character between the quotes) and a silence typed today
    ('"ac\u200bme"', '"ac\\u200bme"', True),
    ('"acme\x9b2J"', '"acme\\u009b2J"', True),
    # a silence stored with the raw character (pasted, or from an older costline) and the label now
    (tenant_label("ev\u202eil"), '"ev\u202eil"', True),
    # what Slack showed before (U+FFFD) names nothing: no match (the CLI warns)
    (tenant_label("ac\u200bme"), '"ac\ufffdme"', False),
    (tenant_label("ac\u200bme"), "acme", False),
    # a quoted label stays apart from the unquoted one: the tenant "(none)" is not the tenant-less series
    (tenant_label(None), '"(none)"', False),
    (tenant_label("(none)"), "(none)", False),
    (tenant_label("<!channel>"), "<!channel>", True),
]


def test_a_silence_typed_from_the_shown_label_matches() -> None:
    """One table (the rows that must not match, and ESC and CR, are the controls)."""
    wrong = [(label, typed, matches) for label, typed, matches in SILENCE_CASES
             if _silence(typed).matches("cache_hit_rate_drop", {"tenant": label}, T) is not matches]
    assert wrong == []


def _observation(label: str, summary: str | None = None) -> Observation:
    return Observation("cache_hit_rate_drop", {"tenant": label}, Condition.BREACH, 0.2, 0.7,
                       summary or f"cache hit rate of {label} 20.0%", window="w", figures={"hit rate": "20%"})


def test_after_upgrade_a_silence_in_the_shown_form_mutes_the_old_and_the_new_alert(tmp_path: Path) -> None:
    """An alert fired under the old raw label (U+200B between the quotes) keeps its fingerprint until it closes
    for lack of data (``no_data_resolve_s``); the same tenant now fires under ``"ac\\u200bme"``. A silence typed
    as costline shows the label mutes both."""
    store = AlertStore(tmp_path / "state.sqlite")
    try:
        engine = AlertEngine(store, AlertsConfig(), targets=("console",), now=lambda: T)
        old = _observation('"ac\u200bme"')  # what costline stored before this change
        engine.apply({"cache_hit_rate_drop": [old]}, T - timedelta(minutes=5))
        store.add_silence("cache_hit_rate_drop", {"tenant": '"ac\\u200bme"'}, starts_at=T - timedelta(minutes=1),
                          ends_at=T + timedelta(hours=2), reason="as console and Slack show it")
        new = _observation(tenant_label("ac\u200bme"))
        res = engine.apply({"cache_hit_rate_drop": [new]}, T)
        assert new.fingerprint != old.fingerprint
        assert res.muted.get(new.fingerprint) == "silenced by #1"
        assert res.muted.get(old.fingerprint) == "silenced by #1"
    finally:
        store.close()


def _invoke(tmp_path: Path, *args: str) -> Result:
    from costline.cli import _register_area_commands, cli

    _register_area_commands()
    toml = tmp_path / "costline.toml"
    toml.write_text(f'[lake]\npath = "{tmp_path / "lake"}"\n[alerts]\nstate_path = "{tmp_path / "state.sqlite"}"\n',
                    encoding="utf-8")
    return CliRunner().invoke(cli, ["--config", str(toml), "alerts", *args], catch_exceptions=False)


def test_a_silence_that_matches_no_known_alert_is_said_out_loud(tmp_path: Path) -> None:
    store = AlertStore(tmp_path / "state.sqlite")
    try:
        AlertEngine(store, AlertsConfig(), now=lambda: T).apply(
            {"cache_hit_rate_drop": [_observation(tenant_label("ac\u200bme"))]}, T)
    finally:
        store.close()
    # (typed --label, warned?)
    for typed, warned in [('tenant="ac\\u200bme"', False), ('tenant="ac\ufffdme"', True), ("tenant=acme", True),
                          ('tenant="ac\u200bme"', False)]:
        result = _invoke(tmp_path, "silence", "cache_hit_rate_drop", "--label", typed, "--for", "1h", "--reason", "x")
        assert result.exit_code == 0, result.output
        assert ("matches no alert costline knows of" in result.stderr) is warned, (typed, result.stderr)
        assert "silence #" in result.stdout


# --- the CLI's alert lines -------------------------------------------------------------------------------------

RAW = "\u202e\x9b\u2028\x1b\r\u200b"


def test_alerts_list_and_history_print_no_character_that_does_not_print(tmp_path: Path) -> None:
    """A state file written before labels were escaped (the raw characters in a label) and a summary carrying them:
    every line printed is one printable line, each character written as its escape."""
    store = AlertStore(tmp_path / "state.sqlite")
    try:
        obs = _observation('"ev\u202eil"', summary="hit rate of ev\u202eil \x9b2J \u2028FIRING fake\x1b[2K\rok\u200b")
        AlertEngine(store, AlertsConfig(), now=lambda: T).apply({"cache_hit_rate_drop": [obs]}, T)
    finally:
        store.close()
    want_summary = "hit rate of ev\\u202eil \\x9b2J \\u2028FIRING fake\\x1b[2K\\rok\\u200b"
    listed = _invoke(tmp_path, "list")
    assert listed.exit_code == 0, listed.output
    (line,) = listed.stdout.splitlines()
    assert line.startswith("firing   cache_hit_rate_drop tenant=\"ev\\u202eil\" since ")
    assert line.endswith(f": {want_summary}")
    history = _invoke(tmp_path, "history")
    assert history.exit_code == 0, history.output
    (line,) = history.stdout.splitlines()
    assert line.endswith(f" cache_hit_rate_drop tenant=\"ev\\u202eil\" inactive -> firing: {want_summary}")
    for out in (listed.stdout, history.stdout):
        assert not any(ch in out for ch in RAW)
        assert all(text.isprintable() for text in out.split("\n"))


# --- Slack: a message too long in all --------------------------------------------------------------------------

#: Where Slack refuses a message's blocks (their texts in all): slackapi/bolt-js#2509 measured 13,297.
SLACK_REFUSES_PAST = 13_200


def _texts(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in ([v] if k == "text" and isinstance(v, str) else _texts(v))]
    if isinstance(value, list):
        return [t for v in value for t in _texts(v)]
    return []


class _Slack:
    """A ``WebClient`` stand-in that answers as Slack does: ``msg_blocks_too_long`` past
    :data:`SLACK_REFUSES_PAST` characters of block text (or for any blocks, with ``refuse_blocks``)."""

    def __init__(self, *, refuse_blocks: bool = False) -> None:
        self.refuse_blocks = refuse_blocks
        self.calls: list[dict[str, Any]] = []

    def chat_postMessage(self, **kw: Any) -> dict[str, Any]:  # noqa: N802 - slack_sdk's name
        self.calls.append(kw)
        blocks = kw.get("blocks")
        if blocks is not None and (self.refuse_blocks or sum(map(len, _texts(blocks))) > SLACK_REFUSES_PAST):
            raise SlackApiError("refused", SlackResponse(
                client=None, http_verb="POST", api_url="chat.postMessage", req_args={},
                data={"ok": False, "error": "msg_blocks_too_long"}, headers={}, status_code=200))
        return {"ok": True, "channel": "C1", "ts": f"{len(self.calls)}.000001"}

    def chat_update(self, **kw: Any) -> dict[str, Any]:
        return self.chat_postMessage(**kw)


HOSTILE = ["ac\u200bme", "ev\u202eil", "acme\x9b2J", "beta\u2028x", "esc\x1b[2J", "cr\rx", "<!channel>"]


def _members(hostile: str, n: int = 8, pad: int = 1200) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        label = tenant_label(f"{hostile}-{i}-" + "x" * pad)
        out.append({"labels": {"tenant": label}, "state": "resolved" if i % 2 else "firing", "observation": {
            "rule": "cache_hit_rate_drop", "value": 0.2, "threshold": 0.7, "window": "2026-11-08 02:00–03:00 UTC",
            "summary": f"cache hit rate of {label} 20.0% vs the same hour's 7-day average 80.0%",
            "figures": {"hit rate": "20.0%", "tenant": label, "lookups": 60}, "query": f"SELECT 1 -- {i}"}})
    return out


@pytest.mark.parametrize("hostile", HOSTILE)
@pytest.mark.parametrize("kind", ["firing", "update"])
def test_eight_long_members_still_go_out_as_blocks(hostile: str, kind: str) -> None:
    payload = render(kind, rule="cache_hit_rate_drop", group_labels={"rule": "cache_hit_rate_drop"},
                     severity="warning", incident=3, members=_members(hostile), at=T)
    text, blocks = slack_payload(payload)
    texts = _texts(blocks)
    assert sum(map(len, texts)) <= 12_000  # well inside what Slack takes
    assert blocks[0] == {"type": "header", "text": {"type": "plain_text",
                                                    "text": f"{kind.upper()} [warning] cache_hit_rate_drop"}}
    assert blocks[-1]["elements"][0]["text"].startswith("2026-11-08 03:01:00 UTC · incident #3 · severity warning")
    member_heads = [t.split("\n")[0] for t in texts if t.startswith("*tenant=")]
    assert len(member_heads) == 8
    if kind == "update":  # each member's state is kept at the end of its head line
        assert sum(h.endswith("* — firing") for h in member_heads) == 4
        assert sum(h.endswith("* — resolved") for h in member_heads) == 4
    else:  # the "Dig in" query is kept whole
        assert "*Dig in* (`costline sql`):\n```SELECT 1 -- 0```" in texts
    assert any(t.startswith("_Figures of 8 alerts left out") for t in texts)
    for t in texts:  # nothing a sender wrote reaches Slack raw
        assert "<!channel>" not in t and not any(ch in t for ch in RAW)


def test_a_short_message_keeps_its_figures() -> None:
    payload = render("firing", rule="cache_hit_rate_drop", group_labels={"rule": "cache_hit_rate_drop"},
                     severity="warning", incident=1, members=_members("ac\u200bme", n=2, pad=10), at=T)
    _text, blocks = slack_payload(payload)
    assert [b["type"] for b in blocks] == ["header", "section", "section", "section", "section", "section", "context"]
    assert blocks[2]["fields"][1]["text"].startswith('*tenant*\n"ac\\u200bme-0-')


@pytest.mark.parametrize("hostile", HOSTILE)
def test_slack_takes_the_message_as_blocks(hostile: str) -> None:
    slack = _Slack()
    payload = render("firing", rule="cache_hit_rate_drop", group_labels={"rule": "cache_hit_rate_drop"},
                     severity="warning", incident=1, members=_members(hostile), at=T)
    result = SlackBotNotifier("xoxb-t", "C1", client=slack).send(Outgoing("post", payload, "k1"))
    assert result.ok, result
    assert len(slack.calls) == 1 and slack.calls[0]["blocks"] is not None


@pytest.mark.parametrize("op", ["post", "update"])
def test_blocks_too_long_for_slack_are_sent_again_as_text_only(op: str) -> None:
    """Slack refusing the blocks with msg_blocks_too_long: the message goes out as its text at once, not retried
    for ever."""
    slack = _Slack(refuse_blocks=True)
    payload = render("firing", rule="cache_hit_rate_drop", group_labels={"rule": "cache_hit_rate_drop"},
                     severity="warning", incident=1, members=_members("<!channel>", n=1, pad=10), at=T)
    result = SlackBotNotifier("xoxb-t", "C1", client=slack).send(
        Outgoing(op, payload, "k1", channel="C1", thread_ts="1.000001" if op == "update" else None))
    assert result.ok, result
    assert [c["blocks"] is None for c in slack.calls] == [False, True]
    assert "&lt;!channel&gt;" in slack.calls[1]["text"] and "<!channel>" not in slack.calls[1]["text"]


# --- the HTTP servers' access logs -----------------------------------------------------------------------------

def _handlers() -> list[Any]:
    from costline.collectors.receiver import _Handler as Receiver
    from costline.dashboards.serve import _Handler as Dashboard

    return [Dashboard, Receiver]


# a request line as http.server decodes it (ISO-8859-1), and as the log shows it: the stdlib's escapes
REQUEST_LINES = [
    ("GET /x\x1b]0;owned\x07 HTTP/1.0", "GET /x\\x1b]0;owned\\x07 HTTP/1.0"),
    ("GET /x\rINFO costline.alerts: all clear HTTP/1.0", "GET /x\\x0dINFO costline.alerts: all clear HTTP/1.0"),
    ("GET /x\x9b2J HTTP/1.0", "GET /x\\x9b2J HTTP/1.0"),
    ("GET /x\\x1b HTTP/1.0", "GET /x\\\\x1b HTTP/1.0"),  # a backslash typed by the client reads apart from an escape
    ("GET /\u202eevil\u2028x HTTP/1.0", "GET /\\u202eevil\\u2028x HTTP/1.0"),  # (from an error message's args)
    ("GET /<!channel> HTTP/1.0", "GET /<!channel> HTTP/1.0"),
]


def test_an_access_log_line_is_escaped(caplog: pytest.LogCaptureFixture) -> None:
    """The dashboard's and the OTLP receiver's access log, one table (``<!channel>`` is the control)."""
    wrong = []
    for handler_cls in _handlers():
        handler = handler_cls.__new__(handler_cls)  # no socket: log_message needs only the client's address
        handler.client_address = ("127.0.0.1", 5555)
        for line, want in REQUEST_LINES:
            caplog.clear()
            with caplog.at_level(logging.DEBUG):
                handler.log_message('"%s" %s %s', line, "400", "-")
            (record,) = [r for r in caplog.records if "127.0.0.1" in r.getMessage()]
            if not record.getMessage().endswith(f'"{want}" 400 -'):
                wrong.append((handler_cls.__module__, record.getMessage()))
    assert wrong == []


# --- the input-drift reason ------------------------------------------------------------------------------------

# a new subtype (costline.subtype, from a span), and how the reason names it: written out by hand
DRIFT_NAMES = [
    ("faq\x1b]0;owned\x07\x1b[2K\rinput drift: none", '"faq\\u001b]0;owned\\u0007\\u001b[2K\\rinput drift: none"'),
    ("ev\u202eil", '"ev\\u202eil"'),
    ("x\x9b2J", '"x\\u009b2J"'),
    ("a\u2028b", '"a\\u2028b"'),
    ("ac\u200bme", '"ac\\u200bme"'),
    ("medical, legal", '"medical, legal"'),  # one name, not two
    ("<!channel>", "<!channel>"),
]


def test_the_input_drift_reason_names_new_subtypes_by_their_label() -> None:
    cfg = Config().jobs.drift
    now = ["faq"] * 30 + [name for name, _ in DRIFT_NAMES for _ in range(10)]
    r = assess_inputs(now, [10.0] * len(now), ["faq"] * 100, [10.0] * 100, cfg)
    assert r.drifted
    shown = [want for _, want in sorted(DRIFT_NAMES)]  # listed in the order of the names
    assert r.reason.endswith(f" (new: {', '.join(shown)})"), r.reason
    assert r.reason.isprintable()
