"""`costline sql` and `costline lake views` (no broker)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from costline.cli import _register_area_commands, cli
from costline.lake import Lake
from costline.processors.cli import format_result


def _run(tmp_path, *args, input=None):
    """Run costline on an existing lake with no data yet (what `costline process` leaves before its first batch;
    tests/test_missing_lake.py has the commands on a path that holds no lake)."""
    _register_area_commands()
    Lake(tmp_path / "lake").init()
    env = {"COSTLINE_LAKE_PATH": str(tmp_path / "lake"), "COSTLINE_CONFIG": ""}
    return CliRunner().invoke(cli, list(args), env=env, input=input, catch_exceptions=False)


def test_format_result_table_csv_json():
    cols, rows = ["tier", "cost"], [("mid", 0.25), ("cache", None)]
    assert format_result(cols, rows, "table").splitlines() == [
        "tier   cost", "-----  ----", "mid    0.25", "cache  NULL", "(2 rows)"]
    assert format_result(cols, rows, "csv") == "tier,cost\nmid,0.25\ncache,"
    assert json.loads(format_result(cols, rows, "json")) == [{"tier": "mid", "cost": 0.25},
                                                            {"tier": "cache", "cost": None}]


@pytest.mark.parametrize(("value", "shown"), [
    ("acme\nglobex      9999", "acme\\nglobex      9999"),  # no row of its own
    ("acme\x1b]0;owned\x07\x1b[1A\x1b[2K", "acme\\x1b]0;owned\\x07\\x1b[1A\\x1b[2K"),  # no terminal escape
    ("ev\u202elive", "ev\\u202elive"),  # no right-to-left override
    ("tab\there", "tab\\there"),
    ("café 日本 ✓", "café 日本 ✓"),  # printable text stays as it is
])
def test_table_cells_show_control_characters_escaped(value, shown):
    assert format_result(["tenant"], [(value,)], "table").splitlines()[2].rstrip() == shown


def test_sql_command_on_an_empty_lake(tmp_path):
    res = _run(tmp_path, "sql", "--format", "json", "SELECT count(*) AS n FROM requests")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == [{"n": 0}]


def test_sql_reads_statements_from_stdin(tmp_path):
    res = _run(tmp_path, "sql", "--format", "csv", input="SELECT 1 AS a;\nSELECT\n 2 AS b;\n")
    assert res.output.splitlines() == ["a", "1", "b", "2"]


def test_lake_views_prints_the_duckdb_command(tmp_path):
    res = _run(tmp_path, "lake", "views")
    path = tmp_path / "lake" / "costline.duckdb"
    assert res.output.strip() == f"duckdb {path}"
    assert path.is_file()
