"""The commands that only read the lake refuse a ``[lake] path`` that holds no lake (a mistyped path, nothing
processed yet) with an error naming it, and create nothing there; on an existing lake with no data yet (what a
fresh `costline process` leaves) they work. Writers still create the lake."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from costline.cli import main
from costline.config import Config, LakeConfig
from costline.lake import Lake, NoLake, lake_exists, open_lake, require_lake, write_views_db

#: command -> its arguments ({tmp} is the test's folder) and what its output holds on an empty lake.
READERS = {
    "sql": (["sql", "--format", "csv", "SELECT count(*) AS n FROM requests"], "n\n0"),
    "lake views": (["lake", "views"], "duckdb {lake}/costline.duckdb"),
    "jobs nightly": (["jobs", "nightly"], "cost-report"),
    "jobs runs": (["jobs", "runs"], "job"),
    "dashboard": (["dashboard", "--out", "{tmp}/site/dash.html"], "wrote {tmp}/site/dash.html"),
    "alerts run --once": (["alerts", "run", "--once"], "evaluated"),
    "alerts run --from --to": (["alerts", "run", "--from", "2026-11-01", "--to", "2026-11-01T02:00:00",
                                "--interval", "3600"], "replayed 3 evaluations"),
}


def _fill(text: str, tmp: Path, lake: Path) -> str:
    return text.replace("{tmp}", str(tmp)).replace("{lake}", str(lake))


def _costline(monkeypatch, capsys, tmp: Path, lake: Path, args: list[str]) -> tuple[int, str, str]:
    monkeypatch.chdir(tmp)
    monkeypatch.setenv("COSTLINE_CONFIG", os.devnull)
    monkeypatch.setenv("COSTLINE_LAKE_PATH", str(lake))
    # the alert state lives elsewhere here, so that "nothing created at the lake path" covers alerts run too
    monkeypatch.setenv("COSTLINE_ALERTS_STATE_PATH", str(tmp / "state" / "alerts.sqlite"))
    (tmp / "state").mkdir(exist_ok=True)
    capsys.readouterr()
    try:
        main([_fill(a, tmp, lake) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", sorted(READERS))
def test_a_read_command_refuses_a_path_without_a_lake_and_works_once_there_is_one(command, tmp_path, monkeypatch,
                                                                               capsys):
    args, shown = READERS[command]
    missing = tmp_path / "lak"  # mistyped
    code, out, err = _costline(monkeypatch, capsys, tmp_path, missing, args)
    assert code == 2, (out, err)
    assert f"error: no lake at {missing}: the path does not exist" in err
    assert "COSTLINE_LAKE_PATH" in err and "costline process" in err
    assert not missing.exists()  # no empty lake made up at the mistyped path
    assert not (tmp_path / "site").exists()

    empty = tmp_path / "empty"  # a folder, but no lake in it
    empty.mkdir()
    code, out, err = _costline(monkeypatch, capsys, tmp_path, empty, args)
    assert code == 2, (out, err)
    assert f"error: no lake at {empty}: the path holds none of the lake's tables" in err
    assert list(empty.iterdir()) == []

    lake = tmp_path / "lake"
    Lake(lake).init()  # what `costline process` leaves before its first batch
    code, out, err = _costline(monkeypatch, capsys, tmp_path, lake, args)
    assert code == 0, (out, err)
    assert _fill(shown, tmp_path, lake) in out


@pytest.mark.parametrize(("layout", "expected"), [
    ((), False),                      # nothing at the path
    (("./",), False),                 # an empty folder
    (("jobs/", "_alerts/"), False),   # only what the jobs' or alerts' state leave: not a lake
    (("requests",), False),           # a file named like a table
    (("requests/",), True),           # a first committed batch makes its table's folder
    (("calls/", "_offsets/"), True),
])
def test_lake_exists_needs_a_table_folder(tmp_path, layout, expected):
    path = tmp_path / "lake"
    for entry in layout:
        target = path / entry
        if entry.endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("")
    assert lake_exists(path) is expected


def test_a_file_at_the_lake_path_is_no_lake(tmp_path):
    path = tmp_path / "lake"
    path.write_text("")
    with pytest.raises(NoLake, match="is not a folder"):
        require_lake(Config(lake=LakeConfig(path=path)))


def test_readers_create_nothing_and_writers_still_create_the_lake(tmp_path):
    config = Config(lake=LakeConfig(path=tmp_path / "lake"))
    with pytest.raises(NoLake):
        open_lake(config, create=False)
    with pytest.raises(NoLake):
        write_views_db(config, create=False)
    assert not (tmp_path / "lake").exists()
    open_lake(config).close()  # a writer's default: the lake is made
    assert lake_exists(tmp_path / "lake")
    con = open_lake(config, create=False)  # and from then on read
    try:
        assert con.execute("SELECT count(*) FROM requests").fetchone() == (0,)
    finally:
        con.close()


def test_table_mode_is_not_checked_against_the_local_path(tmp_path):
    """In table mode the tables live in the catalog: the local path holding no lake is no error."""
    require_lake(Config(lake=LakeConfig(path=tmp_path / "nothing-here", mode="table")))


#: the alert commands that read or write the alert state, which lives under the lake unless [alerts] state_path
STATE_COMMANDS = {
    "alerts list": ["alerts", "list"],
    "alerts history": ["alerts", "history"],
    "alerts silence": ["alerts", "silence", "cache_hit_rate_drop", "--label", "tenant=acme", "--for", "1h",
                       "--reason", "maintenance"],
}


@pytest.mark.parametrize("command", sorted(STATE_COMMANDS))
def test_alert_state_under_a_missing_lake_is_refused_and_made_nowhere(command, tmp_path, monkeypatch, capsys):
    """A silence written to a fresh state file under a mistyped lake path would never apply to the real alerts."""
    args = STATE_COMMANDS[command]
    missing = tmp_path / "lak"
    code, out, err = _costline(monkeypatch, capsys, tmp_path, missing, args)  # state_path set: no lake needed
    assert code == 0, (out, err)
    monkeypatch.delenv("COSTLINE_ALERTS_STATE_PATH")  # the default: <lake>/_alerts/state.sqlite
    capsys.readouterr()
    monkeypatch.setenv("COSTLINE_LAKE_PATH", str(missing))
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    _, err = capsys.readouterr()
    assert code == 2 and f"error: no lake at {missing}" in err
    assert not missing.exists()
    lake = tmp_path / "lake"
    Lake(lake).init()
    monkeypatch.setenv("COSTLINE_LAKE_PATH", str(lake))
    main(args)  # the real lake: its state file is made there
    assert (lake / "_alerts").is_dir()
