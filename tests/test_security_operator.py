"""Operator surfaces: `costline config` masks secrets; `costline sql` only reads, and only the lake."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from costline.cli import _register_area_commands, cli

SLACK_TOKEN = "xoxb-1111111111-2222222222-abcdefghijklmnop"
BEARER = "collector-bearer-token-0123456789abcdef"
WEBHOOK = "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX"


def run(args: list[str], env: dict[str, str]):  # type: ignore[no-untyped-def]
    _register_area_commands()
    return CliRunner().invoke(cli, args, env=env)


def test_config_masks_every_secret() -> None:
    env = {"COSTLINE_ALERTS_SLACK_TOKEN": SLACK_TOKEN, "COSTLINE_ALERTS_SLACK_WEBHOOK_URL": WEBHOOK,
           "COSTLINE_COLLECTOR_BEARER_TOKEN": BEARER, "COSTLINE_CONFIG": ""}
    result = run(["config"], env)
    assert result.exit_code == 0, result.output
    for secret in (SLACK_TOKEN, BEARER, WEBHOOK):
        assert secret not in result.output
        assert secret[:-4] not in result.output
    lines = {line.strip() for line in result.output.splitlines()}
    assert "token = ****mnop" in lines and "bearer_token = ****cdef" in lines
    assert "max_tokens = 1024" in lines  # not a secret
    assert "anthropic_api_key_env = ANTHROPIC_API_KEY" in lines  # the variable's name, not its value


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    from costline.lake import Lake

    path = tmp_path / "lake"
    Lake(path).init()
    (path / "notes.txt").write_text("inside the lake\n")
    return path


def sql(lake: Path, *args: str):  # type: ignore[no-untyped-def]
    return run(["sql", *args], {"COSTLINE_LAKE_PATH": str(lake), "COSTLINE_CONFIG": ""})


def test_sql_reads_the_lake_views(lake: Path) -> None:
    result = sql(lake, "SELECT count(*) AS n FROM requests")
    assert result.exit_code == 0, result.output
    assert "(1 row)" in result.output


@pytest.mark.parametrize("query", [
    "COPY (SELECT 1 AS x) TO '{lake}/requests/evil.parquet' (FORMAT parquet)",
    "COPY (SELECT 1 AS x) TO '{tmp}/out.csv'",
    "CREATE TABLE t AS SELECT 1",
    "ATTACH '{tmp}/other.duckdb' AS other",
    "INSTALL httpfs",
    "SET enable_external_access = true",
    "SELECT 1; COPY (SELECT 1) TO '{tmp}/second.csv'",
    # EXPLAIN ANALYZE runs the statement it explains
    "EXPLAIN ANALYZE COPY (SELECT 1 AS x) TO '{lake}/requests/evil.parquet' (FORMAT parquet)",
    "explain analyse CREATE TABLE t AS SELECT 1",
    "EXPLAIN (FORMAT json) COPY (SELECT 1 AS x) TO '{lake}/forged.csv'",
])
def test_sql_refuses_writes(lake: Path, tmp_path: Path, query: str) -> None:
    assert sql(lake, "SELECT 1").exit_code == 0  # the first run lays out the lake's folders
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    result = sql(lake, query.format(lake=lake, tmp=tmp_path))
    assert result.exit_code != 0
    assert "refused" in result.output
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("path", ["/proc/self/environ", "/etc/passwd", "{lake}/../outside.txt"])
def test_sql_reads_no_file_outside_the_lake(lake: Path, path: str) -> None:
    (lake.parent / "outside.txt").write_text("secret\n")
    result = sql(lake, f"SELECT * FROM read_text('{path.format(lake=lake)}')")
    assert result.exit_code != 0
    # DuckDB's sandbox refuses the read itself (enable_external_access off, allowed_directories = the lake)
    assert "Permission Error: Cannot access file" in result.output
    assert "secret" not in result.output


def test_sql_reads_files_inside_the_lake(lake: Path) -> None:
    result = sql(lake, f"SELECT content FROM read_text('{lake}/notes.txt')")
    assert result.exit_code == 0, result.output
    assert "inside the lake" in result.output


def test_sql_unsafe_lifts_the_restrictions(lake: Path, tmp_path: Path) -> None:
    result = sql(lake, "--unsafe", f"COPY (SELECT 1 AS x) TO '{tmp_path}/out.csv'")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("query", ["EXPLAIN SELECT count(*) FROM requests", "EXPLAIN ANALYZE SELECT count(*) FROM calls"])
def test_sql_explains_a_select(lake: Path, query: str) -> None:
    result = sql(lake, query)
    assert result.exit_code == 0, result.output


def test_sql_reads_nothing_in_the_working_directorys_spill_folder(lake: Path, tmp_path: Path, monkeypatch) -> None:
    """DuckDB allows its spill directory itself (by default .tmp in the working directory): not one with files."""
    (tmp_path / ".tmp").mkdir()
    (tmp_path / ".tmp" / "notes.txt").write_text("secret\n")
    monkeypatch.chdir(tmp_path)
    result = sql(lake, "SELECT content FROM read_text('.tmp/notes.txt')")
    assert result.exit_code != 0
    assert "secret" not in result.output
