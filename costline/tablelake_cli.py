"""``costline lake up | down | status``: the table lake's local object store and catalog."""

from __future__ import annotations

import click

from costline.cli import pass_config
from costline.config import Config

__all__ = ["lake_up", "lake_down", "lake_status", "local_object_store"]


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
