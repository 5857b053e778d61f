"""SQL text helpers for the places where DuckDB takes no parameters (``CREATE VIEW``, globs)."""

from __future__ import annotations

__all__ = ["sql_str"]


def sql_str(text: object) -> str:
    """``text`` as a single-quoted SQL string literal (quotes doubled): ``it's`` → ``'it''s'``."""
    return "'" + str(text).replace("'", "''") + "'"
