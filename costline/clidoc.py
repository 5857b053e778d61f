"""The command reference (``docs/cli.md``), generated from each command's ``--help``.

Regenerate after changing a command::

    python -m costline.clidoc > docs/cli.md

``tests/test_cli.py`` fails when the checked-in file differs from what this renders, so the
reference can never drift from the CLI.
"""

from __future__ import annotations

import click

__all__ = ["command_paths", "render_reference"]

_HEADER = """\
# Command reference

Generated from each command's `--help` by `python -m costline.clidoc > docs/cli.md`;
`tests/test_cli.py` checks that this file is current. Every command also takes the global
options of `costline` (`--config FILE`, `-v`).
"""


def command_paths() -> list[tuple[str, click.Command]]:
    """Every command and group under ``costline``, depth first, in name order."""
    from costline.cli import _register_area_commands, cli

    _register_area_commands()
    out: list[tuple[str, click.Command]] = []

    def walk(prefix: str, cmd: click.Command) -> None:
        out.append((prefix, cmd))
        if isinstance(cmd, click.Group):
            for name in sorted(cmd.commands):
                walk(f"{prefix} {name}".strip(), cmd.commands[name])

    walk("", cli)
    return out



def _render_help(path: str, command: click.Command) -> str:
    from costline.cli import cli

    # The root group's context_settings (e.g. ``-h``) are what a real invocation sees; children inherit.
    ctx = click.Context(cli, info_name="costline", terminal_width=100, max_content_width=100, **cli.context_settings)
    cmd: click.Command = cli
    for name in path.split():
        assert isinstance(cmd, click.Group)
        cmd = cmd.commands[name]
        ctx = click.Context(cmd, info_name=name, parent=ctx, terminal_width=100, max_content_width=100)
    return command.get_help(ctx)


def render_reference() -> str:
    """``docs/cli.md``: one section per command with its full help text."""
    parts = [_HEADER]
    for path, command in command_paths():
        title = f"costline {path}".strip()
        parts.append(f"\n## `{title}`\n\n```text\n{_render_help(path, command).rstrip()}\n```\n")
    return "".join(parts)


if __name__ == "__main__":  # pragma: no cover
    print(render_reference(), end="")
