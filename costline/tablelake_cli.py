"""``costline lake up | down | status | remove-orphans``: the table lake's local object store, catalog and
maintenance (``compact_once`` / ``compact_loop``: ``costline lake compact``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click

from costline.cli import pass_config
from costline.config import Config

__all__ = ["lake_up", "lake_down", "lake_status", "lake_remove_orphans", "local_object_store", "compact_once",
           "compact_loop", "parse_duration"]


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


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds of ``90`` / ``90s`` / ``30m`` / ``1h`` / ``2d`` (one number, one unit); ValueError otherwise."""
    from costline.config import MAX_DURATION_S

    raw = text.strip().lower()
    scale = _UNITS.get(raw[-1:], None)
    number = raw[:-1] if scale is not None else raw
    try:
        value = float(number) * (scale or 1.0)
    except ValueError:
        raise ValueError(f"{text!r} is no duration: write a number of seconds, or one with s, m, h or d "
                         "(90s, 30m, 1h, 2d)") from None
    if not 0 <= value <= MAX_DURATION_S:  # NaN too
        raise ValueError(f"{text!r} is out of range: 0 to {MAX_DURATION_S / 86400:.0f} days")
    return value


class _Duration(click.ParamType):
    name = "DURATION"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _orphan_lines(found: Any, older_than_s: float, dry_run: bool) -> list[str]:
    lines = []
    for o in found:
        verb = "would remove" if dry_run else "removed"
        young = f", {o.kept_young} younger kept" if o.kept_young else ""
        lines.append(f"{o.table}: {verb} {len(o.files)} orphan file(s) ({o.bytes:,} bytes) older than "
                     f"{older_than_s / 3600:g} h; {o.referenced} referenced{young}")
    total = sum(len(o.files) for o in found)
    lines.append(f"{'would remove' if dry_run else 'removed'} {total} orphan file(s)" if total
                 else "no orphan files")
    return lines


@click.command("remove-orphans")
@click.option("--older-than", type=_Duration(), default="1h", show_default=True, metavar="DURATION",
              help="Remove only files older than this (90s, 30m, 1h, 2d; at least 15m: a younger file may "
                   "belong to a commit in flight).")
@click.option("--dry-run", is_flag=True, help="List the files that would go; delete nothing.")
@pass_config
def lake_remove_orphans(config: Config, older_than: float, dry_run: bool) -> None:
    """Delete table-mode data files that no retained snapshot references.

    A processor killed mid-commit, a commit that lost every retry and a
    commit cut off by an outage leave data files that no snapshot names
    (invisible to queries); so do snapshots that expired. This deletes
    those under each table's data folder once older than --older-than;
    `costline lake compact` runs it on every pass too. Table mode only.

    \b
    Example:
        COSTLINE_LAKE_MODE=table costline lake remove-orphans --dry-run
        COSTLINE_LAKE_MODE=table costline lake remove-orphans --older-than 6h
    """
    from costline.tablelake import MIN_ORPHAN_AGE_S, TableLake

    if config.lake.mode != "table":
        raise click.UsageError('remove-orphans is for [lake] mode = "table" (the local lake has no orphan files: '
                               "recovery removes a crashed batch's files)")
    if older_than < MIN_ORPHAN_AGE_S:
        raise click.BadParameter(f"{older_than:g} s is under {MIN_ORPHAN_AGE_S / 60:g} minutes: a younger data file "
                                 "may belong to a commit still in flight", param_hint="--older-than")
    found = TableLake(config.lake).init().remove_orphans(older_than_s=older_than, dry_run=dry_run,
                                                         progress=click.echo)
    for line in _orphan_lines(found, older_than, dry_run):
        click.echo(line)


def compact_once(config: Config, *, before: Any = None, expire_older_than: float = 3600.0,
                 orphans_older_than: float | None = None, now: Callable[[], float] = time.time) -> list[str]:
    """One maintenance pass for ``[lake] mode``: lines telling what it did.

    Table mode: :meth:`~costline.tablelake.TableLake.compact`, then (``[lake] content_retention_days`` set)
    :meth:`~costline.tablelake.TableLake.redact`, then :meth:`~costline.tablelake.TableLake.expire_snapshots`, then
    :meth:`~costline.tablelake.TableLake.remove_orphans` (files older than ``orphans_older_than``, default
    :data:`~costline.tablelake.DEFAULT_ORPHAN_AGE_S`, aged by ``now``, wall-clock seconds); local mode:
    ``Lake.compact``, then, with ``[lake] content_retention_days`` set, ``Lake.redact`` (the prompts and answers of
    the days past it, counted from ``now``, set to NULL: a scheduled compaction keeps the lake within the
    retention)."""
    if config.lake.mode != "table":
        from costline.lake import Lake, lake_exists

        local = Lake(config.lake.path)
        done = local.compact(before=before)
        lines = [f"{table} {day}: {files} files -> 1 ({rows:,} rows)" for table, day, files, rows in done]
        lines.append(f"compacted {len(done)} table-days" if done else "nothing to compact")
        if config.lake.content_retention_days and lake_exists(local.path):
            lines += local.redact(config.lake.content_retention_days,
                                  now=lambda: datetime.fromtimestamp(now(), UTC)).lines()
        return lines
    from costline.tablelake import DEFAULT_ORPHAN_AGE_S, TableLake

    lake = TableLake(config.lake)
    done = lake.compact()
    lines = [f"{c.table} {c.partition}: {c.files} files -> "
             f"{c.new_files} ({c.rows:,} rows, {c.lost_races} lost races)" for c in done]
    lines.append(f"compacted {len(done)} table partitions" if done else "nothing to compact")
    if config.lake.content_retention_days:  # before the expiry: the snapshots it replaces age out with the others
        lines += lake.redact(config.lake.content_retention_days,
                             now=lambda: datetime.fromtimestamp(now(), UTC)).lines()
    expired = lake.expire_snapshots(older_than_s=expire_older_than)
    lines.append("expired snapshots: " + ", ".join(f"{t} {n}" for t, n in expired.items()))
    age = DEFAULT_ORPHAN_AGE_S if orphans_older_than is None else orphans_older_than
    lines += _orphan_lines(lake.remove_orphans(older_than_s=age, now=now), age, False)
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
