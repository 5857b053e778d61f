"""Every `costline` command's help carries an example, and the CLI's surface is what the README shows."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from costline.cli import _register_area_commands, cli


def _commands() -> list[tuple[str, click.Command]]:
    _register_area_commands()
    out: list[tuple[str, click.Command]] = []

    def walk(prefix: str, cmd: click.Command) -> None:
        out.append((prefix, cmd))
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk(f"{prefix} {name}".strip(), sub)

    walk("", cli)
    return out


@pytest.mark.parametrize(("name", "command"), _commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_command_help_has_an_example(name: str, command: click.Command) -> None:
    result = CliRunner().invoke(cli, [*name.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Example:" in result.output, f"`costline {name} --help` has no Example:"


def test_readme_commands_exist() -> None:
    names = {name for name, _ in _commands()}
    for expected in ("kafka up", "kafka down", "kafka status", "collect", "process", "sql", "lake views", "demo",
                     "alerts run", "jobs nightly", "dashboard", "serve", "route train", "cache tune"):
        assert expected in names


def test_command_reference_is_current() -> None:
    """docs/cli.md is generated from --help; regenerate with `python -m costline.clidoc > docs/cli.md`."""
    from pathlib import Path

    from costline.clidoc import render_reference

    import difflib

    checked_in = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text(encoding="utf-8")
    diff = "".join(difflib.unified_diff(checked_in.splitlines(True), render_reference().splitlines(True), n=1))
    assert not diff, f"docs/cli.md is stale (python -m costline.clidoc > docs/cli.md):\n{diff[:3000]}"
