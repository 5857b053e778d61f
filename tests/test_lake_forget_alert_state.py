"""``costline lake forget`` and the alerts' state file (``[alerts] state_path``, default
``<lake>/_alerts/state.sqlite``), which ``costline alerts run`` exports to the lake on every change: the forget
erases the tenant there too, so the next export does not put its alert rows back.

The state is made by the real engine (:class:`AlertEngine`) over a real SQLite file, read back with SQL and
DuckDB; every expected row, count and line is worked out by hand from the observations each test applies.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner

from costline.alerts.engine import AlertEngine
from costline.alerts.erasure import CLOSED_NOTE, forget_tenants
from costline.alerts.outbox import Outbox
from costline.alerts.settings import AlertsConfig
from costline.alerts.store import AlertStore, default_state_path
from costline.alerts.testing import ManualClock, ScriptedNotifier, obs
from costline.alerts.view import export_history
from costline.lake import Lake
from costline.lake._erasure import DayRows, ErasureIncomplete, TableTotal

T0 = datetime(2026, 11, 7, 11, 1, tzinfo=UTC)  # the engine's ticks: 2026-11-07 11:01, then a day later
RULE = "cache_hit_rate_drop"


def _engine(path: Path, clock: ManualClock, *, group_by: tuple[str, ...] = ("rule",),
            targets: tuple[str, ...] = ("console",)) -> tuple[AlertStore, AlertEngine]:
    store = AlertStore(path)
    return store, AlertEngine(store, AlertsConfig(group_by=group_by), targets=targets, now=clock)


def _fired_and_resolved(path: Path, tenants: tuple[str, ...] = ("acme", "globex")) -> AlertStore:
    """Each tenant's alert fires at 2026-11-07 11:01 and resolves at 2026-11-08 11:01: two history rows a tenant,
    one alert each (resolved), and the console's firing and resolved messages (one of each, naming every tenant),
    marked sent."""
    clock = ManualClock(T0)
    store, engine = _engine(path, clock)
    engine.apply({RULE: [obs("breach", t) for t in tenants]})
    clock.advance(days=1)
    engine.apply({RULE: [obs("ok", t) for t in tenants]})
    with store.transaction() as con:
        con.execute("UPDATE outbox SET sent_at = ? WHERE sent_at IS NULL", (clock.epoch(),))
    return store


def _tenants(store: AlertStore, table: str) -> list[str]:
    return sorted(json.loads(r["labels"]).get("tenant", "-") for r in store.query(f"SELECT labels FROM {table}"))


def _exported(lake_path: Path, folder: str) -> list[str]:
    glob = lake_path / "alerts" / folder / "*.parquet"
    return sorted(r[0] for r in duckdb.sql(f"SELECT tenant FROM read_parquet('{glob}')").fetchall())


def _payloads(store: AlertStore) -> str:
    return " ".join(r["payload"] for r in store.query("SELECT payload FROM outbox"))


# -- the regression: the next export puts nothing back ------------------------------------------------------------
@pytest.mark.parametrize(("before", "history_left", "alerts_left", "line", "state_days"), [
    # every acme row: its 2 history rows (one a day), its resolved alert, the text of the 2 sent messages
    (None, ["globex", "globex"], ["globex"],
     "removed 2 history rows of 2 day(s), 1 alert(s), 0 silence(s), 0 unsent message(s) "
     "(the text of 2 sent message(s) erased)", [("2026-11-07", 1), ("2026-11-08", 1)]),
    # before 2026-11-08: its firing row of 2026-11-07 only; its alert and messages are current state, kept
    (date(2026, 11, 8), ["acme", "globex", "globex"], ["acme", "globex"],
     "removed 1 history rows of 1 day(s), 0 alert(s), 0 silence(s), 0 unsent message(s)", [("2026-11-07", 1)]),
])
def test_the_next_export_after_a_forget_does_not_put_the_tenant_back(
        tmp_path: Path, before: date | None, history_left: list[str], alerts_left: list[str], line: str,
        state_days: list[tuple[str, int]]) -> None:
    lake = Lake(tmp_path / "lake").init()
    state = default_state_path(lake.path)
    store = _fired_and_resolved(state)
    export_history(store, lake.path)
    assert _exported(lake.path, "history") == ["acme", "acme", "globex", "globex"]

    report = lake.forget(["acme"], before=before)

    assert _tenants(store, "history") == history_left and _tenants(store, "alerts") == alerts_left
    assert [d for d in report.days if d.table == "alert_state"] == [DayRows("alert_state", *d) for d in state_days]
    assert f"alert state {state}: {line}" in report.lines()
    # the exported files: acme's episode (fired 2026-11-07) and its history rows before the cut, as before
    cut = len(state_days)
    assert report.tables[3:5] == (TableTotal("alerts", 1, 1, 1), TableTotal("alerts_history", cut, cut, 1))
    # what `costline alerts run` does on its next change: export the state file again. With the cut, acme's
    # resolve of 2026-11-08 is left, without the firing row of its episode: no episode
    export_history(store, lake.path)
    assert _exported(lake.path, "history") == history_left
    assert _exported(lake.path, "episodes") == ["globex"]
    store.close()


def test_a_dry_run_counts_the_same_and_changes_nothing(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake").init()
    state = default_state_path(lake.path)
    _fired_and_resolved(state).close()
    files = {p.name: p.read_bytes() for p in state.parent.iterdir()}

    dry = lake.forget(["acme"], dry_run=True)

    assert {p.name: p.read_bytes() for p in state.parent.iterdir()} == files
    assert (f"alert state {state}: would remove 2 history rows of 2 day(s), 1 alert(s), 0 silence(s), 0 unsent "
            "message(s) (the text of 2 sent message(s) would be erased)") in dry.lines()
    assert "alert_state 2026-11-07: 1 rows would go" in dry.lines()
    real = lake.forget(["acme"])
    assert [d for d in real.days if d.table == "alert_state"] == [d for d in dry.days if d.table == "alert_state"]


def test_an_export_that_read_the_state_before_a_forget_writes_again(tmp_path: Path) -> None:
    """`alerts run` reads the history, a forget erases acme and rewrites the exported files, then the export writes
    what it read: it must write again from what is left, or acme is back in the lake."""
    lake = Lake(tmp_path / "lake").init()
    state = default_state_path(lake.path)

    class Racing(AlertStore):
        raced = False

        def query(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
            rows = super().query(sql, params)
            if sql.startswith("SELECT * FROM history") and not self.raced:
                self.raced = True
                lake.forget(["acme"])  # another process, between the read and the write
            return rows

    _fired_and_resolved(state).close()
    racing = Racing(state)
    export_history(racing, lake.path)
    assert racing.raced and _exported(lake.path, "history") == ["globex", "globex"]
    racing.close()


# -- the tenant's current state: what an on-call engineer sees ------------------------------------------------------
def test_a_firing_alert_of_the_tenant_goes_and_its_thread_is_closed_naming_no_tenant(tmp_path: Path) -> None:
    """One incident a tenant ([alerts] group_by = rule, tenant), both firing messages posted to Slack (ts 1.0 and
    2.0, in the order of the groups' keys). The forget deletes acme's alert, closes its incident and queues a
    closing message in its thread (a reply, and the original message edited into it) that names no tenant."""
    clock = ManualClock(T0)
    store, engine = _engine(tmp_path / "state.sqlite", clock, group_by=("rule", "tenant"), targets=("slack",))
    slack = ScriptedNotifier("slack")
    outbox = Outbox(store, {"slack": slack}, AlertsConfig().outbox, now=clock)
    engine.apply({RULE: [obs("breach", "acme"), obs("breach", "globex")]})
    assert outbox.deliver_due().sent == 2
    # ScriptedNotifier answers the n-th send with ts "n.0"
    (acme_ts,) = [f"{n}.0" for n, m in enumerate(slack.attempts, 1) if "tenant=acme" in m.payload["text"]]

    result = forget_tenants(store.path, ["acme"], now=clock)

    assert result is not None and result.lines(False) == [
        f"alert state {store.path}: removed 1 history rows of 1 day(s), 1 alert(s), 0 silence(s), 0 unsent message(s) "
        "(1 of the alerts firing; 1 open incident(s) closed; 1 closing message(s) naming no tenant queued; the text "
        "of 1 sent message(s) erased)"]
    assert _tenants(store, "alerts") == ["globex"] and _tenants(store, "history") == ["globex"]
    groups = {json.loads(g["labels"]).get("tenant", "-"): (g["open"], g["incident"]) for g in store.query(
        "SELECT * FROM groups")}
    assert groups == {"globex": (1, 1), "-": (0, 1)}  # acme's group: closed, its label gone, its number kept
    assert "acme" not in _payloads(store)

    clock.advance(minutes=1)
    assert outbox.deliver_due().sent == 2
    post, edit = slack.attempts[2:]
    assert (post.op, post.thread_ts, edit.op, edit.thread_ts) == ("post", acme_ts, "update", acme_ts)
    for m in (post, edit):
        assert m.payload["kind"] == "resolved" and CLOSED_NOTE in m.payload["text"] and "acme" not in str(m.payload)

    # the next evaluation, acme's data gone: nothing of acme comes back, globex goes on as before
    clock.advance(minutes=1)
    engine.apply({RULE: [obs("ok", "globex")]})
    assert _tenants(store, "history") == ["globex", "globex"] and "acme" not in _payloads(store)
    store.close()


def test_a_message_about_other_alerts_too_is_kept_without_the_tenants_lines(tmp_path: Path) -> None:
    """group_by = rule: acme fires (its message posted), then globex joins: the update (a reply naming globex, who
    joined, and the original message edited to list both) is not sent yet. The forget keeps the edit without acme's
    line and blocks, so that globex's page goes out."""
    clock = ManualClock(T0)
    store, engine = _engine(tmp_path / "state.sqlite", clock, targets=("slack",))
    engine.apply({RULE: [obs("breach", "acme"), obs("ok", "globex")]})
    with store.transaction() as con:
        con.execute("UPDATE outbox SET sent_at = ?, channel = 'C1', ts = '1.0'", (clock.epoch(),))
    clock.advance(minutes=1)
    engine.apply({RULE: [obs("breach", "acme"), obs("breach", "globex")]})

    result = forget_tenants(store.path, ["acme"], now=clock)

    assert result is not None and (result.erased, result.trimmed, result.dropped, result.closed) == (1, 1, 0, 0)
    unsent = [json.loads(r["payload"]) for r in store.outbox(unsent_only=True)]
    assert [(p["kind"], [ln for ln in p["text"].splitlines() if ln.startswith("• ")]) for p in unsent] == [
        ("update", ["• tenant=globex: cache_hit_rate_drop globex is breach (0.3)"]),
        ("firing", ["• tenant=globex: cache_hit_rate_drop globex is breach (0.3)"])]  # the original, edited
    assert all(any("*tenant=globex*" in json.dumps(b) for b in p["blocks"]) for p in unsent)
    assert "acme" not in _payloads(store)
    (group,) = store.query("SELECT open, members FROM groups")
    assert group["open"] == 1 and len(json.loads(group["members"])) == 1  # globex's alert fires on
    store.close()


def test_an_unsent_message_about_the_tenant_only_is_dropped_and_its_silences_deleted(tmp_path: Path) -> None:
    """Slack down: acme's firing message was never sent. It is dropped (nothing was shown, nothing to close), and
    so are acme's silences; globex's silence and one of every tenant of the rule are kept."""
    clock = ManualClock(T0)
    store, engine = _engine(tmp_path / "state.sqlite", clock, targets=("slack",))
    until = T0 + timedelta(hours=2)
    for matchers in ({"tenant": "acme"}, {"tenant": "globex"}, {}, {"tenant": "acme"}):
        store.add_silence(RULE, matchers, starts_at=T0 + timedelta(hours=1), ends_at=until, reason="deploy")
    engine.apply({RULE: [obs("breach", "acme")]})

    result = forget_tenants(store.path, ["acme"], now=clock)

    assert result is not None and (result.dropped, result.silences, result.closed, result.queued) == (1, 2, 1, 0)
    assert store.outbox() == []
    assert sorted(s.matchers.get("tenant", "*") for s in store.silences()) == ["*", "globex"]
    assert store.query("SELECT open FROM groups")[0]["open"] == 0
    store.close()


# -- which rows are the tenant's: its label ------------------------------------------------------------------------
@pytest.mark.parametrize(("tenant", "stored", "gone"), [
    # the tenant named (none) is labelled "(none)" quoted: the tenant-less series' label, (none), is no tenant's
    ("(none)", ["(none)", '"(none)"'], ['"(none)"']),
    # a name with a space around it is quoted; the spelling of an older costline (raw name) goes too
    (" acme", ["acme", '" acme"', " acme"], ['" acme"', " acme"]),
    # a zero-width space: written as its escape, or raw between the quotes by an older costline
    ("ac\u200bme", ["acme", '"ac\\u200bme"', '"ac\u200bme"'], ['"ac\\u200bme"', '"ac\u200bme"']),
    ("acme", ["acme", "acme-eu", "ACME"], ["acme"]),
])
def test_the_tenants_rows_are_those_of_its_label(tmp_path: Path, tenant: str, stored: list[str],
                                                 gone: list[str]) -> None:
    lake = Lake(tmp_path / "lake").init()
    clock = ManualClock(T0)
    store, engine = _engine(default_state_path(lake.path), clock)
    engine.apply({RULE: [obs("breach", label) for label in stored]})
    export_history(store, lake.path)

    report = lake.forget([tenant])

    left = sorted(set(stored) - set(gone))
    assert _tenants(store, "history") == left and _tenants(store, "alerts") == left
    assert _exported(lake.path, "history") == left and _exported(lake.path, "episodes") == left
    assert report.tables[3:5] == (TableTotal("alerts", len(gone), 1, 1), TableTotal("alerts_history", len(gone), 1, 1))
    store.close()


# -- where the state file is, and when it cannot be changed -------------------------------------------------------
def test_the_cli_erases_the_configured_state_file(tmp_path: Path) -> None:
    from costline.cli import _register_area_commands, cli

    lake = Lake(tmp_path / "lake").init()
    state = tmp_path / "elsewhere" / "alerts.sqlite"
    _fired_and_resolved(state).close()
    toml = tmp_path / "costline.toml"
    toml.write_text(f'[lake]\npath = "{lake.path}"\n[alerts]\nstate_path = "{state}"\n')
    _register_area_commands()
    out = CliRunner().invoke(cli, ["--config", str(toml), "lake", "forget", "--tenant", "acme"],
                             env={"COSTLINE_CONFIG": ""})
    assert out.exit_code == 0, out.output
    assert (f"alert state {state}: removed 2 history rows of 2 day(s), 1 alert(s), 0 silence(s), 0 unsent "
            "message(s) (the text of 2 sent message(s) erased)") in out.output
    store = AlertStore(state)
    assert _tenants(store, "history") == ["globex", "globex"]
    store.close()


def test_the_erased_rows_are_not_left_in_the_file(tmp_path: Path) -> None:
    """The bytes of the deleted rows are overwritten, and the write-ahead log checkpointed: the name is nowhere in
    the file, even with `alerts run` holding the file open meanwhile."""
    state = tmp_path / "state.sqlite"
    store = _fired_and_resolved(state, ("acme-7f3c9", "globex"))
    assert b"acme-7f3c9" in b"".join(p.read_bytes() for p in tmp_path.iterdir())
    forget_tenants(state, ["acme-7f3c9"])
    assert b"acme-7f3c9" not in b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert _tenants(store, "history") == ["globex", "globex"]
    store.close()


def test_a_state_file_it_cannot_change_fails_the_forget_after_the_rest(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake").init()
    state = default_state_path(lake.path)
    state.parent.mkdir(parents=True)
    state.write_bytes(b"not a database, whatever it is" * 100)

    dry = lake.forget(["acme"], dry_run=True)
    assert any(line.startswith(f"alert state {state}: cannot be read: ") for line in dry.lines())
    with pytest.raises(ErasureIncomplete, match="could not erase 'acme' from the alert state file") as err:
        lake.forget(["acme"])
    assert any(line.startswith(f"alert state {state}: not erased: ") for line in err.value.report.lines())


def test_no_state_file_is_made_where_there_is_none(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake").init()
    report = lake.forget(["acme"], alert_state=tmp_path / "none.sqlite")
    assert not (lake.path / "_alerts").exists() and not (tmp_path / "none.sqlite").exists()
    assert not any(line.startswith("alert state") for line in report.lines())


# -- table mode ------------------------------------------------------------------------------------------------------
@pytest.mark.objstore
def test_the_cli_in_table_mode_erases_the_state_and_exports_the_result_tables_again(objstore, tmp_path: Path) -> None:
    pytest.importorskip("pyiceberg")
    from costline.cli import _register_area_commands, cli
    from costline.config import Config
    from costline.tablelake import TableLake
    from tests.tablelake_helpers import table_lake_config

    cfg = table_lake_config(objstore, tmp_path)
    lake = TableLake(cfg).init()
    store = _fired_and_resolved(default_state_path(cfg.path))
    export_history(store, Config(lake=cfg))
    store.close()

    def exported() -> list[str]:
        return sorted(lake.table("alerts_history").scan().to_arrow().column("tenant").to_pylist())

    assert exported() == ["acme", "acme", "globex", "globex"]
    keys = ("mode", "catalog_uri", "warehouse", "namespace", "s3_endpoint", "s3_access_key_id", "s3_secret_access_key",
            "path", "objstore_dir")
    env = {"COSTLINE_CONFIG": "", **{f"COSTLINE_LAKE_{k.upper()}": str(getattr(cfg, k)) for k in keys}}
    _register_area_commands()
    out = CliRunner().invoke(cli, ["lake", "forget", "--tenant", "acme"], env=env)
    assert out.exit_code == 0, out.output
    assert f"alert state {default_state_path(cfg.path)}: removed 2 history rows of 2 day(s)" in out.output
    assert exported() == ["globex", "globex"]


# -- review of the erasure of the state file --------------------------------------------------------------------------
@pytest.mark.parametrize("reached", [True, False])
def test_an_attempted_message_about_the_tenant_only_is_kept_naming_no_tenant_and_its_thread_closed(
        tmp_path: Path, reached: bool) -> None:
    """acme's firing message was attempted and got no answer: Slack may show it (``reached``: it does). The forget
    keeps it, naming no tenant, and queues the closing message behind it: the duplicate check finds the post that
    went out (and the reply threads under it), or the post goes out naming no tenant, then the closing reply."""
    from costline.alerts.notify import SendResult

    clock = ManualClock(T0)
    store, engine = _engine(tmp_path / "state.sqlite", clock, targets=("slack",))
    slack = ScriptedNotifier("slack", [SendResult(ok=False, ambiguous=reached, error="timed out")])
    outbox = Outbox(store, {"slack": slack}, AlertsConfig().outbox, now=clock)
    engine.apply({RULE: [obs("breach", "acme")]})
    assert outbox.deliver_due().failed == 1

    result = forget_tenants(store.path, ["acme"], now=clock)

    assert result is not None and (result.dropped, result.kept, result.closed, result.queued) == (0, 1, 1, 1)
    assert "acme" not in _payloads(store)
    clock.advance(minutes=10)  # past the failed attempt's backoff
    stats = outbox.deliver_due()
    assert (stats.recovered, stats.sent) == ((1, 2) if reached else (0, 3))
    sent = slack.attempts[1:]  # after the attempt that got no answer
    if not reached:  # the kept message itself: posted naming no tenant
        first = sent.pop(0)
        assert (first.op, first.thread_ts, first.payload["kind"]) == ("post", None, "firing")
    thread = "found.0" if reached else "2.0"  # found by the duplicate check / ScriptedNotifier's 2nd send
    assert [(m.op, m.thread_ts, m.payload["kind"]) for m in sent] == [("post", thread, "resolved"),
                                                                      ("update", thread, "resolved")]
    assert all(CLOSED_NOTE in m.payload["text"] for m in sent)
    assert "acme" not in " ".join(json.dumps(m.payload) for m in slack.attempts[1:])
    assert store.outbox(unsent_only=True) == []
    store.close()


def test_a_tenant_whose_name_starts_with_the_forgotten_ones_keeps_its_lines(tmp_path: Path) -> None:
    """``acme: eu``'s member line reads ``• tenant=acme: eu: …``, which starts with acme's ``• tenant=acme: ``:
    forgetting acme leaves its line and blocks, in an unsent message about both (and globex)."""
    clock = ManualClock(T0)
    store, engine = _engine(tmp_path / "state.sqlite", clock, targets=("slack",))
    engine.apply({RULE: [obs("breach", t) for t in ("acme", "acme: eu", "globex")]})

    result = forget_tenants(store.path, ["acme"], now=clock)

    assert result is not None and (result.trimmed, result.dropped) == (1, 0)
    (msg,) = [json.loads(r["payload"]) for r in store.outbox(unsent_only=True)]
    # obs(): summary "<rule> <tenant> is <condition> (<value>)"
    assert [ln for ln in msg["text"].splitlines() if ln.startswith("• ")] == [
        "• tenant=acme: eu: cache_hit_rate_drop acme: eu is breach (0.3)",
        "• tenant=globex: cache_hit_rate_drop globex is breach (0.3)"]
    heads = [b["text"]["text"].split("\n")[0] for b in msg["blocks"] if b["type"] == "section" and "text" in b]
    assert heads == ["*tenant=acme: eu*", "*tenant=globex*"]
    store.close()


def test_an_evaluation_that_read_the_lake_before_a_forget_is_not_applied(tmp_path: Path) -> None:
    """`alerts run` reads the lake (acme breaching), a forget erases acme meanwhile, then the tick applies what it
    read: acme must not come back. The next tick evaluates again."""
    from costline.alerts.rules import Snapshot, closed_window
    from costline.alerts.service import AlertService
    from costline.config import Config, LakeConfig

    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"), alerts=AlertsConfig(state_path=tmp_path / "state.sqlite"))
    forget = [False]

    class Source:
        def snapshot(self, now: datetime, rules: Any, window: Any = None) -> Snapshot:
            w = closed_window(now, cfg.alerts.settle_s).replace(tzinfo=None)
            rows = [{"window_start": w, "tenant": t, "hit_rate": 0.2, "avg_7d": 0.6, "avg_7d_hour": 0.6,
                     "lookups": 1000, "hits": 200, "lookups_7d": 5000, "lookups_7d_hour": 5000}
                    for t in ("acme", "globex")]
            if forget[0]:  # another process, after the lake was read
                forget[0] = False
                forget_tenants(cfg.alerts.state_path, ["acme"])
            return Snapshot(cache=rows)

        def hours_with_data(self, *args: Any) -> set[datetime]:
            return set()

        def record_times(self) -> dict[int, datetime]:
            return {}

    svc = AlertService(cfg, source=Source(), notifiers={"console": ScriptedNotifier("console")}, export=False)
    assert sorted(r.labels["tenant"] for r in svc.tick(rules=[RULE]).observations[RULE] or []) == ["acme", "globex"]
    assert _tenants(svc.store, "alerts") == ["acme", "globex"]
    forget[0] = True
    report = svc.tick(rules=[RULE])
    assert report.tick.stale and report.tick.transitions == []
    assert _tenants(svc.store, "alerts") == ["globex"] and _tenants(svc.store, "history") == ["globex"]
    svc.shutdown()


def _holds_rows_of(folder: Path, name: bytes) -> bool:
    return any(name in p.read_bytes() for p in folder.iterdir() if p.is_file())


def test_rows_the_engine_deleted_without_secure_delete_leave_no_bytes_after_a_forget(tmp_path: Path) -> None:
    """On a SQLite built without SECURE_DELETE (simulated: turned off on the engine's connection), the outbox rows
    the engine pruned leave the tenant's name in free pages; the forget rebuilds the file."""
    state = tmp_path / "state.sqlite"
    clock = ManualClock(T0)
    store, engine = _engine(state, clock)
    store.con.execute("PRAGMA secure_delete = OFF")
    outbox = Outbox(store, {"console": ScriptedNotifier("console")}, AlertsConfig().outbox, now=clock)
    engine.apply({RULE: [obs("breach", "acme-7f3c9"), obs("breach", "globex")]})
    outbox.deliver_due()
    clock.advance(minutes=5)
    engine.apply({RULE: [obs("ok", "acme-7f3c9"), obs("ok", "globex")]})
    outbox.deliver_due()
    clock.advance(days=8)
    assert outbox.prune() == 2  # the sent firing and resolved messages, past keep_sent_s (7 days)
    store.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert store.query("SELECT count(*) FROM outbox")[0][0] == 0 and _holds_rows_of(tmp_path, b"acme-7f3c9")

    forget_tenants(state, ["acme-7f3c9"], now=clock)

    assert not _holds_rows_of(tmp_path, b"acme-7f3c9")
    assert _tenants(store, "history") == ["globex", "globex"]
    store.close()


def test_a_reader_holding_the_write_ahead_log_is_reported_and_fails_the_forget(tmp_path: Path) -> None:
    """A process keeps a read of the state file open: the log cannot be truncated, and its old pages may hold the
    erased rows. The forget says so, and fails; run again once the reader is done, it truncates the log."""
    from costline.alerts.erasure import state_failure
    from costline.lake._erasure import ForgetReport

    state = tmp_path / "state.sqlite"
    _fired_and_resolved(state, ("acme-7f3c9", "globex")).close()
    reader = sqlite3.connect(state, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM history").fetchone()  # holds the log's current snapshot

    result = forget_tenants(state, ["acme-7f3c9"], wal_wait_s=0.1)

    assert result is not None and result.history_rows == 2 and result.residue is not None
    assert result.lines(False)[1].startswith(
        f"alert state {state}: not covered: its write-ahead log {state}-wal may still hold the erased rows' old bytes")
    failure = state_failure(ForgetReport(("acme-7f3c9",), None, False, (), ()), [result])
    assert failure is not None and f"{state}-wal" in failure
    reader.execute("COMMIT")
    reader.close()
    again = forget_tenants(state, ["acme-7f3c9"], wal_wait_s=0.1)
    assert again is not None and again.residue is None and not _holds_rows_of(tmp_path, b"acme-7f3c9")


@pytest.mark.objstore
@pytest.mark.parametrize(("state_is", "exit_code"), [("moved", 0), ("corrupt", 1)])
def test_table_mode_removes_the_tenants_rows_of_the_result_tables_without_a_state_file(
        objstore, tmp_path: Path, state_is: str, exit_code: int) -> None:
    """The state file moved away ([alerts] state_path changed, the file lost) or unreadable: the tenant's rows of
    the result tables alerts and alerts_history go all the same (a corrupt state file still fails the forget)."""
    pytest.importorskip("pyiceberg")
    from costline.cli import _register_area_commands, cli
    from costline.config import Config
    from costline.tablelake import TableLake
    from tests.tablelake_helpers import table_lake_config

    cfg = table_lake_config(objstore, tmp_path)
    lake = TableLake(cfg).init()
    state = default_state_path(cfg.path)
    store = _fired_and_resolved(state)
    export_history(store, Config(lake=cfg))
    store.close()
    if state_is == "moved":
        state.rename(tmp_path / "old-state.sqlite")
    else:
        state.write_bytes(b"x" * 4096)
    keys = ("mode", "catalog_uri", "warehouse", "namespace", "s3_endpoint", "s3_access_key_id", "s3_secret_access_key",
            "path", "objstore_dir")
    env = {"COSTLINE_CONFIG": "", **{f"COSTLINE_LAKE_{k.upper()}": str(getattr(cfg, k)) for k in keys}}
    _register_area_commands()
    out = CliRunner().invoke(cli, ["lake", "forget", "--tenant", "acme"], env=env)

    assert out.exit_code == exit_code, out.output
    for table, left in (("alerts", ["globex"]), ("alerts_history", ["globex", "globex"])):
        assert sorted(lake.table(table).scan().to_arrow().column("tenant").to_pylist()) == left
    # acme: fired 2026-11-07 (its episode, and a history row), resolved 2026-11-08 (a history row)
    assert "alerts: removed 1 rows of 1 day(s)" in out.output
    assert "alerts_history: removed 2 rows of 2 day(s)" in out.output


def _locked(path: Path) -> bool:
    """Whether another open file holds an flock on ``path``."""
    import fcntl
    import os

    fd = os.open(path, os.O_RDONLY | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_the_export_and_the_forget_rewrite_the_exported_files_under_one_lock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DuckDB reads a Parquet file by its name more than once a query: a forget reading an exported file that the
    export replaces meanwhile reads garbage (and sets it aside as unreadable). Each holds the lock while it writes."""
    import costline.alerts.view as view
    import costline.lake._erasure as erasure

    lake = Lake(tmp_path / "lake").init()
    lock = lake.path / "alerts" / view.EXPORT_LOCK
    store = _fired_and_resolved(default_state_path(lake.path))
    held: list[tuple[str, bool]] = []
    write, rewrite = view._write, erasure._forget_result_file

    def export_writes(table: Any, path: Path) -> None:
        if path.name != "_empty.parquet":
            held.append(("export", _locked(lock)))
        write(table, path)

    def forget_rewrites(p: Any, view_name: str, path: Path, *args: Any) -> bool:
        held.append(("forget", _locked(lock)))
        return rewrite(p, view_name, path, *args)

    monkeypatch.setattr(view, "_write", export_writes)
    monkeypatch.setattr(erasure, "_forget_result_file", forget_rewrites)
    export_history(store, lake.path)
    lake.forget(["acme"])
    assert held == [("export", True)] * 2 + [("forget", True)] * 2
    store.close()
