"""``costline lake up | down | status``: the table lake's local object store and catalog."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import click

from costline.cli import pass_config
from costline.config import Config

__all__ = ["lake_up", "lake_down", "lake_status", "local_object_store", "compact_once", "compact_loop"]


def local_object_store(config: Config):  # type: ignore[no-untyped-def]
    """The SeaweedFS store ``[lake]`` describes (objstore_dir, objstore_port, the S3 key, the bucket)."""
    from costline.localobjstore import LocalObjectStore

    lake = config.lake
    bucket = lake.warehouse.split("://", 1)[1].split("/", 1)[0]
    return LocalObjectStore(lake.objstore_dir, port=lake.objstore_port, access_key=lake.s3_access_key_id,
                            secret_key=lake.s3_secret_access_key, buckets=(bucket,), progress=click.echo)


@click.command("up")
@pass_config
def lake_up(config: Config) -> None:
    """Start the local S3 object store (SeaweedFS) and create the Iceberg tables.

    With [lake] s3_endpoint set, nothing is started: the tables are created
    there. The catalog is [lake] catalog_uri (default: SQLite under
    [lake] objstore_dir). Use with [lake] mode = "table" (docs/scale.md).

    \b
    Example:
        COSTLINE_LAKE_MODE=table costline lake up && COSTLINE_LAKE_MODE=table costline process
    """
    from costline.tablelake import TableLake, catalog_properties

    if config.lake.s3_endpoint is None:
        click.echo(local_object_store(config).up().describe())
    TableLake(config.lake).init()
    click.echo(f"tables {config.lake.namespace}.{{requests,calls,lookups}} in {config.lake.warehouse} "
               f"(catalog {_shown(catalog_properties(config.lake)['uri'])})")


@click.command("down")
@pass_config
def lake_down(config: Config) -> None:
    """Stop the local object store (its data stays in [lake] objstore_dir).

    \b
    Example:
        costline lake down
    """
    stopped = local_object_store(config).down()
    click.echo("object store stopped" if stopped else "object store was not running")


@click.command("status")
@pass_config
def lake_status(config: Config) -> None:
    """Tell the lake's mode, the object store's state and each table's snapshot.

    \b
    Example:
        costline lake status
    """
    lake = config.lake
    click.echo(f"mode: {lake.mode}")
    if lake.mode == "local":
        click.echo(f"lake: {lake.path}")
        return
    if lake.s3_endpoint is None:
        click.echo(local_object_store(config).status().describe())
    else:
        click.echo(f"object store: {lake.s3_endpoint}")
    from costline.tablelake import TableLake

    try:
        tl = TableLake(lake)
        for table in ("requests", "calls", "lookups"):
            if not tl.catalog.table_exists(tl.identifier(table)):
                click.echo(f"{tl.identifier(table)}: missing (run `costline lake up`)")
                continue
            snap = tl.table(table).current_snapshot()
            click.echo(f"{tl.identifier(table)}: " + (f"snapshot {snap.snapshot_id}, {snap.summary.get('total-records')} "
                                                      "rows" if snap else "empty"))
    except Exception as exc:  # noqa: BLE001 - status reports, never fails on a down server
        click.echo(f"catalog/tables not reachable: {exc}")


def _shown(uri: str) -> str:
    from costline.tablelake import _redact

    return _redact(uri)


def compact_once(config: Config, *, before: Any = None, expire_older_than: float = 3600.0) -> list[str]:
    """One maintenance pass for ``[lake] mode``: lines telling what it did.

    Table mode: :meth:`~costline.tablelake.TableLake.compact` then
    :meth:`~costline.tablelake.TableLake.expire_snapshots`; local mode: ``Lake.compact``."""
    if config.lake.mode != "table":
        from costline.lake import Lake

        done = Lake(config.lake.path).compact(before=before)
        lines = [f"{table} {day}: {files} files -> 1 ({rows:,} rows)" for table, day, files, rows in done]
        return lines + [f"compacted {len(done)} table-days" if done else "nothing to compact"]
    from costline.tablelake import TableLake

    lake = TableLake(config.lake)
    done = lake.compact()
    lines = [f"{c.table} {c.partition}: {c.files} files -> "
             f"{c.new_files} ({c.rows:,} rows, {c.lost_races} lost races)" for c in done]
    lines.append(f"compacted {len(done)} table partitions" if done else "nothing to compact")
    expired = lake.expire_snapshots(older_than_s=expire_older_than)
    lines.append("expired snapshots: " + ", ".join(f"{t} {n}" for t, n in expired.items()))
    return lines


def compact_loop(config: Config, *, before: Any = None, every: float | None = None,
                 expire_older_than: float = 3600.0, sleep: Callable[[float], None] = time.sleep,
                 passes: int | None = None) -> None:
    """:func:`compact_once`, then again every ``every`` seconds (until interrupted, or ``passes``).

    A pass that fails (the store or catalog down past ``[lake] outage_retry_s``, or any other error of
    that pass: an ``OSError``, a SQLAlchemy error, a :class:`~costline.errors.LakeError`) is reported and
    the next one runs on schedule: maintenance never needs to be restarted by hand. Only an interrupt
    (``KeyboardInterrupt``, ``SystemExit``) stops the loop; a single pass (``every`` None) raises."""
    from costline.errors import LakeError

    n = 0
    while True:
        try:
            for line in compact_once(config, before=before, expire_older_than=expire_older_than):
                click.echo(line)
        except Exception as exc:  # noqa: BLE001 - one failed pass must not end the scheduled job
            if every is None:
                raise
            shown = str(exc) if isinstance(exc, LakeError) else f"{type(exc).__name__}: {exc}"
            click.echo(f"maintenance pass failed: {shown}", err=True)
        n += 1
        if every is None or (passes is not None and n >= passes):
            return
        sleep(every)
