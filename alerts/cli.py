"""``costline alerts ...``: run the evaluator, list, history, silences, a test message, the Slack stand-in."""

from __future__ import annotations

import json
import re
import signal
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from costline.cli import pass_config
from costline.config import MAX_DURATION_S, Config
from costline.timeutil import utc_aware

__all__ = ["commands", "alerts", "parse_duration"]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``2h``, ``1h30m``, ``1d`` → timedelta."""
    t = text.strip().lower()
    parts = _DURATION.findall(t)
    if not parts or _DURATION.sub("", t).strip():
        raise click.BadParameter(f"{text!r} is not a duration: use e.g. 30m, 2h, 1h30m, 1d")
    seconds = sum(float(n) * _UNIT[u] for n, u in parts)
    if not seconds <= _MAX_SILENCE_S:  # 3000000d overflowed the silence's end time
        raise click.BadParameter(f"{text!r} is too long: at most {_MAX_SILENCE_S / 86400:.0f}d (100 years)")
    return timedelta(seconds=seconds)


#: The longest ``--for``: 100 years (an end time within datetime's range, whatever the year now).
_MAX_SILENCE_S = MAX_DURATION_S
#: Silence ids are SQLite INTEGERs (64-bit, from 1).
_SILENCE_ID = click.IntRange(1, 2**63 - 1)


def _when(ts: float | None) -> str:
    return "-" if ts is None else f"{datetime.fromtimestamp(ts, UTC):%Y-%m-%d %H:%M:%S}"


def _shown(text: object) -> str:
    """Text from the state file (a summary, a reason, an error) as one terminal line: every character that does not
    print written as its escape (:func:`costline.sqlutil.cell_text`, as the console notifier writes a message), so
    a tenant named with a bidi override, a C1 control or a line separator can neither reorder, rewrite nor add a
    line of what the operator reads."""
    from costline.sqlutil import cell_text

    return cell_text("" if text is None else text)


def _labels_shown(labels: dict[str, Any]) -> str:
    """``key=label ...`` as costline shows labels (:func:`costline.alerts.rules.canonical_label`: a label stored by
    an older costline with a raw invisible character reads as the label now, ``"ac\\u200bme"``), one line."""
    from costline.alerts.rules import canonical_label

    return " ".join(f"{_shown(k)}={_shown(canonical_label(v))}" for k, v in labels.items())


def _known_rule(rule: str, *, star: bool) -> None:
    """Refuse a rule name no rule has (``'*'`` too where ``star``), listing the names."""
    from costline.alerts.rules import RULE_NAMES

    if not (rule in RULE_NAMES or (star and rule == "*")):
        raise click.BadParameter(f"unknown rule {rule!r}; one of: {', '.join(RULE_NAMES)}"
                                 + (" or '*'" if star else ""))


def _known_label_keys(rule: str, matchers: dict[str, str]) -> None:
    """Refuse a ``--label`` key that no alert of ``rule`` carries (the silence would match nothing)."""
    from costline.alerts.settings import RULE_LABELS

    keys = (sorted({k for ks in RULE_LABELS.values() for k in ks}) if rule == "*"
            else list(RULE_LABELS.get(rule, ())))
    for key in matchers:
        if key not in keys:
            who = "any rule" if rule == "*" else f"rule {rule}"
            raise click.BadParameter(
                f"--label {key}=...: no alert of {who} has the label {key!r}, so the silence would match nothing; "
                + (f"use one of: {', '.join(keys)}" if keys else "its alerts have no labels: leave out --label"))


def _warn_slack_off(config: Config) -> None:
    from costline.alerts.notify import slack_off_warning

    warning = slack_off_warning(config.alerts)
    if warning:
        click.echo(f"warning: {warning}", err=True)


def _state_store(config: Config) -> Any:
    """The alert state (``[alerts] state_path``, else under the lake). Kept under the lake, it needs one there: a
    mistyped ``[lake] path`` is refused ("no lake at PATH") rather than given a fresh, empty state file whose
    silences would never apply to the real alerts."""
    from costline.alerts.service import state_path
    from costline.alerts.store import AlertStore

    if config.alerts.state_path is None:
        from costline.lake import require_lake

        require_lake(config)
    return AlertStore(state_path(config))


def _service(config: Config, **kwargs: Any) -> Any:
    from costline.alerts.service import AlertService

    return AlertService(config, echo=click.echo, **kwargs)


@click.group("alerts")
def alerts() -> None:
    """Alert rules over the lake, with Slack notifications (see docs/alerts.md).

    \b
    Example:
        costline alerts run --once && costline alerts list
    """


@alerts.command("run")
@click.option("--once", is_flag=True, help="Evaluate and deliver once, then exit.")
@click.option("--interval", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="Seconds between evaluations (default [alerts] interval_s, 60).")
@click.option("--from", "start", type=click.DateTime(), default=None,
              help="Replay: evaluate as of each interval from this UTC time (past data)...")
@click.option("--to", "end", type=click.DateTime(), default=None, help="...to this UTC time, then exit.")
@click.option("--dlq/--no-dlq", default=False, help="Watch the Kafka DLQ topic's size (dlq_growing).")
@pass_config
def run(config: Config, once: bool, interval: float | None, start: datetime | None, end: datetime | None,
        dlq: bool) -> None:
    """Evaluate the rules and deliver notifications: every minute, or once.

    Notifications always go to this console; to Slack too when [alerts.slack]
    has a token and channel, or a webhook_url. Ctrl-C / SIGTERM stop it.

    \b
    Example:
        costline alerts run                      # every 60 s until stopped
        costline alerts run --once
        costline alerts run --from 2026-11-01 --to 2026-11-09 --interval 3600
    """
    from costline.alerts.source import kafka_dlq_counter
    from costline.lake import require_lake

    require_lake(config)  # a mistyped [lake] path: say so, and leave nothing behind there (its alert state neither)
    _warn_slack_off(config)
    service = _service(config, dlq_count=kafka_dlq_counter(config.kafka) if dlq else None)
    try:
        if start is not None or end is not None:
            if start is None or end is None:
                raise click.UsageError("--from and --to go together")
            reports = service.replay(utc_aware(start), utc_aware(end), step_s=interval or 3600.0)  # type: ignore[arg-type]
            fired = sum(1 for r in reports for _, _, to in r.tick.transitions if to == "firing")
            click.echo(f"replayed {len(reports)} evaluations: {fired} alerts fired; "
                       f"{service.outbox.pending()} messages still queued")
            return
        if once:
            report = service.tick()
            d = report.delivery
            click.echo(f"evaluated {len(report.observations)} rules: {len(report.tick.transitions)} state changes, "
                       f"{d.sent} messages sent, {d.failed} failed (queued for retry)")
            return
        stop = threading.Event()

        def _stop(signum: int, frame: Any) -> None:  # noqa: ARG001
            stop.set()

        old_term, old_int = signal.signal(signal.SIGTERM, _stop), signal.signal(signal.SIGINT, _stop)
        try:
            service.run(interval_s=interval, stop=stop)
        finally:
            signal.signal(signal.SIGTERM, old_term)
            signal.signal(signal.SIGINT, old_int)
    finally:
        service.shutdown()


@alerts.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also inactive and resolved alerts.")
@click.option("--silences", is_flag=True, help="List the silences instead.")
@click.option("--outbox", is_flag=True, help="List undelivered messages instead.")
@pass_config
def list_(config: Config, show_all: bool, silences: bool, outbox: bool) -> None:
    """Show pending and firing alerts (or silences, or the undelivered outbox).

    \b
    Example:
        costline alerts list
        costline alerts list --silences
    """
    store = _state_store(config)
    try:
        now = datetime.now(UTC)
        if silences:
            rows = store.silences(at=now)
            for s in rows:
                click.echo(f"#{s.id} {_shown(s.rule)} {_labels_shown(dict(s.matchers))} until "
                           f"{s.ends_at:%Y-%m-%d %H:%M} UTC: {_shown(s.reason)}")
            if not rows:
                click.echo("no silences")
            return
        if outbox:
            rows = store.outbox(unsent_only=True)
            for r in rows:
                click.echo(f"#{r['id']} {r['kind']} {r['op']} -> {r['target']} attempts={r['attempts']} "
                           f"next={_when(r['next_attempt_at'])} error={_shown(r['last_error'] or '-')}")
            if not rows:
                click.echo("outbox empty")
            return
        rows = store.alerts() if show_all else store.alerts(states=("pending", "firing"))
        for r in rows:
            obs = json.loads(r["observation"] or "{}")
            labels = _labels_shown(json.loads(r["labels"]))
            since = r["fired_at"] if r["state"] == "firing" else r["pending_since"] or r["resolved_at"]
            click.echo(f"{r['state']:<8} {r['rule']} {labels} since {_when(since)}: {_shown(obs.get('summary', ''))}")
        if not rows:
            click.echo("no alerts pending or firing" if not show_all else
                       "no alerts (a series that has not breached in its rule's retention keeps no state)")
    finally:
        store.close()


@alerts.command("history")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--rule", default=None, help="Only this rule.")
@pass_config
def history(config: Config, limit: int, rule: str | None) -> None:
    """Show alert state changes, newest first (also the `alerts` view in `costline sql`).

    \b
    Example:
        costline alerts history --rule cache_hit_rate_drop --limit 20
    """
    if rule is not None:
        _known_rule(rule, star=False)
    store = _state_store(config)
    try:
        rows = store.history(limit=limit, rule=rule)
        for r in rows:
            labels = _labels_shown(json.loads(r["labels"]))
            muted = f" ({_shown(r['muted'])})" if r["muted"] else ""
            click.echo(f"{_when(r['at'])} {r['rule']} {labels} {r['from_state']} -> {r['to_state']}{muted}: "
                       f"{_shown(r['summary'] or '')}")
        if not rows:
            click.echo("no history yet")
    finally:
        store.close()


@alerts.command("silence")
@click.argument("rule")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE",
              help="Only alerts with this label (repeatable); KEY: one the rule's alerts carry (tenant, tier or "
                   "subtype).")
@click.option("--for", "duration", required=True, help="How long: 30m, 2h, 1d.")
@click.option("--reason", required=True, help="Why (shown in `alerts list --silences`).")
@pass_config
def silence(config: Config, rule: str, labels: tuple[str, ...], duration: str, reason: str) -> None:
    """Mute a rule's alerts (or only those with some labels) for a while. RULE may be '*'.

    \b
    Example:
        costline alerts silence cache_hit_rate_drop --label tenant=acme --for 2h --reason "reindexing acme"
    """
    import getpass


    _known_rule(rule, star=True)
    matchers = {}
    for item in labels:
        if "=" not in item:
            raise click.BadParameter(f"--label {item!r}: use KEY=VALUE, e.g. tenant=acme")
        k, v = item.split("=", 1)
        matchers[k.strip()] = v.strip()
    _known_label_keys(rule, matchers)
    now = datetime.now(UTC)
    store = _state_store(config)
    try:
        s = store.add_silence(rule, matchers, starts_at=now, ends_at=now + parse_duration(duration), reason=reason,
                              created_by=getpass.getuser())
        known = store.alerts()
    finally:
        store.close()
    click.echo(f"silence #{s.id} until {s.ends_at:%Y-%m-%d %H:%M} UTC (remove: costline alerts unsilence {s.id})")
    if not any(s.matches(r["rule"], json.loads(r["labels"]), now) for r in known):
        what = f"{rule} {_labels_shown(matchers)}".strip()
        click.echo(f"warning: silence #{s.id} ({what}) matches no alert costline knows of, firing or not (a series "
                   "that has not breached lately keeps no state: a silence set ahead of time for a healthy one says "
                   "this too): if it is meant for an alert, copy its labels as `costline alerts list --all` shows them "
                   "(a character that does not print is written \\uXXXX inside the quotes: tenant=\"ac\\u200bme\"), "
                   f"or remove it (costline alerts unsilence {s.id}); it still mutes such an alert if one fires",
                   err=True)


@alerts.command("unsilence")
@click.argument("silence_id", type=_SILENCE_ID)
@pass_config
def unsilence(config: Config, silence_id: int) -> None:
    """End a silence now.

    \b
    Example:
        costline alerts unsilence 3
    """
    store = _state_store(config)
    try:
        store.remove_silence(silence_id, at=datetime.now(UTC))
    finally:
        store.close()
    click.echo(f"silence #{silence_id} removed")


@alerts.command("test-notify")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True, help="Seconds to keep retrying.")
@pass_config
def test_notify(config: Config, timeout: float) -> None:
    """Send a test message through every configured notifier (console, Slack).

    Exits 1 when a notifier did not take it within --timeout; that test
    message is then dropped (never posted later by `costline alerts run`).
    Works before any lake exists, and then writes nothing there.

    \b
    Example:
        COSTLINE_ALERTS_SLACK_TOKEN=xoxb-... COSTLINE_ALERTS_SLACK_CHANNEL=C0123 costline alerts test-notify
    """
    import os

    from costline.alerts.message import render
    from costline.alerts.outbox import TEST_EXPIRES_AT
    from costline.alerts.store import to_epoch

    _warn_slack_off(config)
    scratch = None
    store = None
    if config.alerts.state_path is None:
        from costline.lake import lake_exists

        if not lake_exists(config.lake.path):  # set up Slack before any lake (or a mistyped path): leave nothing
            import tempfile

            from costline.alerts.store import AlertStore

            scratch = tempfile.TemporaryDirectory(prefix="costline-test-notify-")
            store = AlertStore(Path(scratch.name) / "state.sqlite")
    service = _service(config, export=False, store=store)
    group: str | None = None
    try:
        if not service.notifiers:
            raise click.ClickException("no notifier is configured: set [alerts] console = true, or [alerts.slack] "
                                       "token and channel (or webhook_url)")
        now = service.now()
        payload = render("test", rule="test-notify", group_labels={}, severity="info", incident=0, at=now,
                         members=[], note="costline alerts can reach this channel.")
        t = to_epoch(now)
        # past this the message is dropped, never posted late (also if this process dies before dropping it)
        payload[TEST_EXPIRES_AT] = t + timeout + config.alerts.outbox.claim_s
        group = f"test-{t}-{os.getpid()}"
        with service.store.transaction() as con:
            for target in service.notifiers:
                con.execute("INSERT INTO outbox (group_key, incident, kind, target, op, payload, created_at, "
                            "next_attempt_at) VALUES (?, 0, 'test', ?, 'post', ?, ?, ?)",
                            (group, target, json.dumps(payload), t, t))
        service.outbox.force_flush(timeout, group_key=group)
        rows = {r["target"]: r for r in service.store.query(
            "SELECT target, sent_at, last_error FROM outbox WHERE group_key = ?", (group,))}
    finally:
        try:
            if group is not None:  # not delivered now: not later either (a stale test message, maybe elsewhere)
                service.outbox.drop_unsent(group, kind="test")
        finally:
            service.shutdown()
            if scratch is not None:
                scratch.cleanup()
    sent = [tg for tg in service.notifiers if tg in rows and rows[tg]["sent_at"] is not None]
    failed = {tg: (rows[tg]["last_error"] if tg in rows else None) or "no answer in time"
              for tg in service.notifiers if tg not in sent}
    if failed:
        raise click.ClickException(
            (f"sent to {', '.join(sent)}; " if sent else "")
            + "NOT delivered to " + "; ".join(f"{tg} ({err})" for tg, err in failed.items())
            + f" within {timeout:g} s. The test message was dropped, not queued (nothing is posted later): "
              "fix the notifier's settings ([alerts.slack]) or raise --timeout, and run test-notify again")
    click.echo(f"sent to {', '.join(sent)}")


@alerts.command("slack-standin")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=0, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port.")
def slack_standin(host: str, port: int) -> None:
    """Run the local Slack stand-in (Web API subset + incoming webhooks) until Ctrl-C.

    It is not Slack: it records what it receives, for local runs and the demo.

    \b
    Example:
        costline alerts slack-standin --port 8765 &
        COSTLINE_ALERTS_SLACK_TOKEN=xoxb-local COSTLINE_ALERTS_SLACK_CHANNEL=alerts \\
        COSTLINE_ALERTS_SLACK_BASE_URL=http://127.0.0.1:8765/api/ costline alerts test-notify
    """
    from costline.sim.slack_standin import SlackStandIn

    standin = SlackStandIn(host, port).start()
    click.echo(f"Slack stand-in: base_url {standin.base_url}  webhook_url {standin.webhook_url}")
    stop = threading.Event()
    old = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):  # wake twice a second so Ctrl-C is handled promptly
            continue
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old)
        standin.shutdown()
        for m in standin.messages():
            click.echo(f"{m['channel']} {m['ts']} {'(reply) ' if m.get('thread_ts') else ''}{m['text'][:100]}")
        click.echo(f"{len(standin.webhook_posts())} webhook posts")


commands = [alerts]
