"""``costline process``, ``costline sql`` and ``costline lake views``."""

from __future__ import annotations

import contextlib
import re
import select
import socket
import threading

import signal
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import click

from costline.cli import pass_config
from costline.config import Config
from costline.sqlutil import DEFAULT_TABLE_ROWS, FORMATS, fetch_chunks, more_rows_note, render_rows, write_rows

__all__ = ["commands", "process", "sql", "lake", "format_result"]


@click.command("process")
@click.option("--until-idle", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Exit once caught up and idle this many seconds (after committing).")
@click.option("--from-beginning", "start", flag_value="beginning",
              help="Partitions the lake has no offsets for: read from their first offset.")
@click.option("--from-committed", "start", flag_value="committed",
              help="Partitions the lake has no offsets for: start at the group's committed offsets.")
@click.option("--accept-new-topic", is_flag=True, default=False,
              help="Partitions whose lake offsets belong to a deleted and re-created topic (or a wiped broker): "
                   "keep their old data and read the new topic from its beginning.")
@pass_config
def process(config: Config, until_idle: float | None, start: str | None, accept_new_topic: bool) -> None:
    """Consume OTLP spans from Kafka and write the Parquet lake (exactly-once in effect).

    Runs as one member of the consumer group [processor] group_id: start more
    instances to scale out. SIGTERM / Ctrl-C commit what is buffered and exit.
    Partitions resume from the lake's offset manifests. A lake without them for
    partitions the group already consumed is refused unless --from-beginning or
    --from-committed says where to start (docs/sql.md). A partition whose
    offsets in the lake belong to an earlier lifetime of the topic (deleted
    and created again, a wiped broker, another cluster) is refused unless
    --accept-new-topic sets its history aside (still read) and reads the new
    topic from its beginning.

    \b
    Example:
        costline process                 # run until stopped
        costline process --until-idle 5  # drain the topic, then exit
        costline process --from-beginning  # a new lake for an existing group
        costline process --accept-new-topic  # the topic was created again
    """
    from kafka.errors import AuthorizationError, KafkaTimeoutError

    from costline.processors.table_sink import make_processor

    proc = make_processor(config, start=start or "lake", accept_new_topic=accept_new_topic)

    def _stop(signum: int, frame: Any) -> None:  # noqa: ARG001
        proc.stop()

    old_term = signal.signal(signal.SIGTERM, _stop)
    old_int = signal.signal(signal.SIGINT, _stop)
    try:
        stats = proc.run(until_idle=until_idle, announce=lambda line: click.echo(line, err=True))
    except AuthorizationError as exc:  # the cluster's ACLs: what to grant, to whom
        user = config.kafka.sasl_username or "this client's principal"
        raise click.ClickException(
            f"the cluster at {config.kafka.bootstrap} refused {user} ({type(exc).__name__}): grant it READ on consumer "
            f"group {config.processor.group_id!r}, READ and DESCRIBE on topic {config.kafka.topic!r}, and WRITE on "
            f"{config.kafka.dlq_topic!r} (its dead letters)") from None
    except KafkaTimeoutError as exc:
        from costline.localkafka import diagnose

        if config.kafka.external and (why := diagnose(config.kafka)) is not None:
            raise click.ClickException(f"cannot reach Kafka at {config.kafka.bootstrap}: {why}") from None
        raise click.ClickException(f"cannot reach Kafka at {config.kafka.bootstrap} ({exc}): start the local broker "
                                   "with `costline kafka up`, or point KAFKA_BOOTSTRAP_SERVERS at your cluster") from None
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
    click.echo(stats.describe())


def format_result(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "table") -> str:
    """Render a query result as an aligned table, CSV or JSON (a list of objects; NaN and infinities as null,
    repeated column names suffixed)."""
    return render_rows(columns, rows, fmt)


def _lock_down(con: Any, config: Config) -> None:
    """DuckDB reads files under the lake's directory only, and the settings cannot be changed back. Its spill
    directory (which DuckDB allows itself too: by default ``.tmp`` under the working directory, whatever is in it)
    is a fresh, empty one of this process's."""
    import atexit
    import shutil
    import tempfile
    from pathlib import Path

    spill = tempfile.mkdtemp(prefix="costline-sql-")
    atexit.register(shutil.rmtree, spill, True)
    con.execute("SET temp_directory = ?", [spill])
    lake_dir = str(Path(config.lake.path).resolve())
    con.execute("SET allowed_directories = [?]", [lake_dir.rstrip("/") + "/"])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def _run_read_only(con: Any, query: str, fmt: str, max_rows: int | None, guard_formulas: bool = True) -> None:
    """Run ``query`` if every statement in it only reads (SELECT, EXPLAIN)."""
    import duckdb

    try:
        statements = con.extract_statements(query)
    except duckdb.Error as exc:
        raise click.ClickException(str(exc)) from None
    for st in statements:
        kind = st.type.name
        if kind == "EXPLAIN":  # EXPLAIN ANALYZE runs what it explains: that must only read too
            kind = _explained_kind(con, st.query)
        if kind != "SELECT":
            raise click.ClickException(f"{kind} statements are refused: `costline sql` only reads the lake "
                                       "(pass --unsafe to run anything)")
    _run_query(con, query, fmt, max_rows, guard_formulas)


#: ``EXPLAIN``, ``EXPLAIN ANALYZE`` (or ``ANALYSE``) and ``EXPLAIN (options)`` before the statement they explain.
_EXPLAIN = re.compile(r"^\s*EXPLAIN(?:\s+ANALY[SZ]E)?(?:\s*\([^()]*\))?\s+", re.IGNORECASE)


def _explained_kind(con: Any, text: str) -> str:
    """The kind of statement an EXPLAIN statement explains ("UNKNOWN" when it cannot be told)."""
    import duckdb

    inner = text
    for _ in range(8):  # EXPLAIN EXPLAIN ...
        stripped = _EXPLAIN.sub("", inner, count=1)
        if stripped == inner:
            return "UNKNOWN"
        try:
            found = con.extract_statements(stripped)
        except duckdb.Error:
            return "UNKNOWN"
        if len(found) != 1:
            return "UNKNOWN"
        if found[0].type.name != "EXPLAIN":
            return found[0].type.name
        inner = stripped
    return "UNKNOWN"


@contextlib.contextmanager
def _ctrl_c_interrupts(con: Any) -> Iterator[None]:
    """Within: Ctrl-C (SIGINT) interrupts ``con``'s query at once. DuckDB looks for a pending signal only between
    the tasks the calling thread runs itself: while that thread waits for DuckDB's workers (a ``range()`` scan, one
    long task another thread took) Ctrl-C did nothing. Here the signal's wakeup byte (:func:`signal.set_wakeup_fd`,
    written by the C-level handler even while the main thread is inside DuckDB) wakes a watcher thread that calls
    ``con.interrupt()``. Only on the main thread with Python's own SIGINT handler in place; else a no-op."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    try:
        previous = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
    except (ValueError, OSError):
        wake_r.close()
        wake_w.close()
        yield
        return
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            try:
                if not select.select([wake_r], [], [], 0.2)[0]:
                    continue
                got = wake_r.recv(64)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                return
            if signal.SIGINT in got:
                try:
                    con.interrupt()
                except Exception:  # the connection is closing: the KeyboardInterrupt still comes
                    pass

    watcher = threading.Thread(target=watch, name="costline-sql-ctrl-c", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join(1.0)
        signal.set_wakeup_fd(previous)
        wake_r.close()
        wake_w.close()


def _run_query(con: Any, query: str, fmt: str, max_rows: int | None, guard_formulas: bool = True) -> None:
    """Run ``query`` and print its result as it is fetched, a chunk at a time; rows past ``max_rows`` (None: the
    format's default) are counted on stderr, never held. ``guard_formulas``: see :func:`costline.sqlutil.csv_cell`."""
    import duckdb

    if max_rows is None:
        max_rows = DEFAULT_TABLE_ROWS if fmt == "table" else 0
    try:
        with _ctrl_c_interrupts(con):
            cur = con.execute(query)
            if cur is None:  # nothing but comments or whitespace: DuckDB ran no statement
                raise click.ClickException("no statement to run: the query holds only comments or whitespace")
            if cur.description is None:
                click.echo("ok")
                return
            columns = [d[0] for d in cur.description]
            hidden = write_rows(columns, fetch_chunks(cur), fmt, lambda text: click.echo(text, nl=False),
                                max_rows=max_rows, guard_formulas=guard_formulas)
    except duckdb.InterruptException:  # Ctrl-C: `costline` says "aborted" and exits 130, as for any interrupt
        raise
    except duckdb.Error as exc:  # also while fetching: a streamed result fails where its rows do
        raise click.ClickException(str(exc)) from None
    if hidden:
        click.echo(more_rows_note(hidden, fmt), err=True)


class _SqlCommand(click.Command):
    """``costline sql``: a QUERY that starts with ``-`` but holds whitespace (``-- a comment\nSELECT ...``, as every
    dashboard chart's SQL starts) is the query, not an unknown option: no option name holds whitespace. Such an
    argument is moved behind a ``--`` (or the one given), so the options around it still parse."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        names = {n for p in self.params for n in getattr(p, "opts", ()) + getattr(p, "secondary_opts", ())}

        def is_query(arg: str) -> bool:
            return (arg.startswith("-") and any(ch.isspace() for ch in arg)
                    and arg.split("=", 1)[0] not in names)

        args = list(args)
        end = args.index("--") if "--" in args else len(args)
        queries = [a for a in args[:end] if is_query(a)]
        if queries:
            args = [a for a in args[:end] if not is_query(a)] + ["--"] + queries + args[end + 1:]
        return super().parse_args(ctx, args)


@click.command("sql", cls=_SqlCommand)
@click.argument("query", required=False)
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), default="table", show_default=True,
              help="Output format: an aligned table, or csv, json, jsonl (one object a line) streamed as the rows "
                   "come, e.g. --format csv.")
@click.option("--max-rows", type=click.IntRange(min=0), default=None, metavar="N",
              help=f"Print at most N rows, 0 for all; stderr counts the rest. Default: {DEFAULT_TABLE_ROWS} for "
                   "the table, all for the other formats. E.g. --max-rows 0.")
@click.option("--unsafe", is_flag=True, default=False,
              help="Allow any statement (COPY, CREATE...) and files outside the lake.")
@click.option("--csv-formulas", "csv_formulas", is_flag=True, default=False,
              help="--format csv: write text cells starting with = + - @, a tab or a carriage return as they are "
                   "(by default they get a ' in front, so a spreadsheet shows them instead of running them), "
                   "e.g. --format csv --csv-formulas for a program that reads the CSV.")
@pass_config
def sql(config: Config, query: str | None, fmt: str, max_rows: int | None, unsafe: bool,
        csv_formulas: bool) -> None:
    """Query the lake's views with DuckDB SQL (docs/sql.md lists them).

    Without QUERY, reads statements ending in ';' from stdin (an interactive
    prompt on a terminal; `.quit` or Ctrl-D leaves).

    Output is bounded: the table shows the first 100 rows (--max-rows) and
    says on stderr how many more there are; csv, json and jsonl stream
    every row, a chunk at a time, so a result of any size never fills memory.
    A csv text cell that a spreadsheet would run as a formula (it starts
    with = + - @, a tab or a carriage return: a tenant or app name from a
    span can) gets a ' in front; --csv-formulas writes it as it is.

    Read-only by default: only SELECT (SHOW, DESCRIBE, SUMMARIZE) and EXPLAIN
    run, and DuckDB may read files under the lake's directory only (so
    neither COPY ... TO over lake files nor reading /proc/self/environ works);
    --unsafe lifts both.

    \b
    Example:
        costline sql "SELECT * FROM tier_hourly ORDER BY window_start DESC LIMIT 10"
        costline sql --format csv "SELECT tier, sum(cost_usd) FROM requests GROUP BY tier"
        costline sql --format csv --csv-formulas "SELECT tenant, cost_usd FROM requests" > raw.csv
        costline sql --format jsonl "SELECT * FROM calls" > calls.jsonl
        costline sql --max-rows 0 "SELECT * FROM cache_hourly"
        costline sql "$(costline dashboard --sql traffic_mix)"
    """
    from costline.lake import open_lake, views_in

    # a mistyped [lake] path is an error, not "(0 rows)"; one query: only the views it names (and what they read)
    con = open_lake(config, create=False, views=None if query is None else views_in(query))
    if not unsafe:
        _lock_down(con, config)
    guard = not csv_formulas
    run = _run_query if unsafe else _run_read_only
    if query is not None:
        run(con, query, fmt, max_rows, guard)
        return
    interactive = sys.stdin.isatty()
    pending: list[str] = []
    while True:
        if interactive:
            click.echo("costline> " if not pending else "     ...> ", nl=False)
        line = sys.stdin.readline()
        if not line:
            break
        if not pending and line.strip() in (".quit", ".exit", "quit", "exit"):
            break
        pending.append(line)
        text = "".join(pending).strip()
        if text.endswith(";"):
            pending.clear()
            try:
                run(con, text, fmt, max_rows, guard)
            except click.ClickException as exc:
                click.echo(f"error: {exc.message}", err=True)
    if "".join(pending).strip():
        run(con, "".join(pending), fmt, max_rows, guard)


@click.group("lake")
def lake() -> None:
    """The Parquet lake: views and layout.

    \b
    Example:
        costline lake views && duckdb costline-lake/costline.duckdb
    """


@lake.command("compact")
@click.option("--before", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="Compact the days before this date (default: today, UTC: every closed day). Local mode.")
@click.option("--every", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="Run again every SECONDS until interrupted (a scheduled maintenance job).")
@click.option("--expire-older-than", type=click.FloatRange(min=0), default=3600.0, show_default=True, metavar="SECONDS",
              help="Table mode: expire snapshots older than this (the newest 10 and the current one are kept).")
@pass_config
def lake_compact(config: Config, before: Any, every: float | None, expire_older_than: float) -> None:
    """Merge small files (safe while `process` runs); table mode: expire snapshots, remove orphans.

    Each processor flush writes a file per table and day; compaction keeps queries fast. Only
    files an offset manifest committed are merged, and the views read every row once meanwhile.
    In [lake] mode = "table" each day partition's small data files are rewritten into one
    (an Iceberg snapshot that carries the processors' offsets forward), old snapshots expire and
    data files no retained snapshot references are deleted once an hour old (`lake remove-orphans`).
    With [lake] content_retention_days set, each pass also sets the prompts and
    answers of the days past it to NULL, as `lake redact` does.

    \b
    Example:
        costline lake compact
        costline lake compact --before 2026-11-01
        COSTLINE_LAKE_MODE=table costline lake compact --every 600
    """
    from costline.tablelake_cli import compact_loop

    compact_loop(config, before=before.date() if before else None, every=every,
                 expire_older_than=expire_older_than)


#: What neither forget nor redact can reach: the raw spans the Kafka topic keeps (one line of their output).
_TOPIC_NOTE = ("note: the Kafka topic {topic!r} keeps the raw spans (prompts and answers included) until its "
               "retention.ms passes; this command cannot reach them (shorten retention.ms on the broker to erase "
               "them sooner); the processor never re-reads committed offsets, so they come back only if the lake "
               "is rebuilt from the topic")


def _erasing_lake(config: Config) -> Any:
    """The lake forget and redact rewrite: the local one (``Lake``), or the Iceberg tables in table mode."""
    if config.lake.mode == "table":
        from costline.tablelake import TableLake

        return TableLake(config.lake).init()
    from costline.lake import Lake

    return Lake(config.lake.path)


#: `lake forget`'s exit status when it did its work but left rows committed while it ran, or a writer's staged
#: file too new to delete (its `not covered:` lines): run it again. 1 is a file it could not read, 2 a usage error.
EXIT_NOT_COVERED = 3


def _erasure_result(run: Any, topic: str) -> None:
    """Run ``run()`` (a forget or redact), print its report's lines and what the Kafka ``topic`` keeps; fail with
    what to do when it could not read a file; exit with :data:`EXIT_NOT_COVERED` when a forget (not a dry run)
    left rows committed while it ran or a staged file too new to delete."""
    from costline.lake._erasure import ErasureIncomplete

    try:
        report = run()
    except ErasureIncomplete as exc:
        for line in exc.report.lines() + [_TOPIC_NOTE.format(topic=topic)]:
            click.echo(line)
        raise click.ClickException(str(exc)) from None
    for line in report.lines() + [_TOPIC_NOTE.format(topic=topic)]:
        click.echo(line)
    if (getattr(report, "not_covered", ()) or getattr(report, "staged_left", ())) and not report.dry_run:
        click.echo(f"error: files that may hold rows of these tenants were left (the not covered lines above): run "
                   f"the forget again (exit status {EXIT_NOT_COVERED})", err=True)
        raise click.exceptions.Exit(EXIT_NOT_COVERED)


@lake.command("forget")
@click.option("--tenant", "tenants", multiple=True, required=True, metavar="TENANT",
              help="A tenant whose rows go, exactly as the rows name it (repeat for several): --tenant acme.")
@click.option("--before", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="Forget only the days before this date (UTC), e.g. --before 2026-11-01 (default: every day, "
                   "today's included).")
@click.option("--dry-run", is_flag=True, help="Print, per table and day, how many rows would go; change nothing.")
@pass_config
def lake_forget(config: Config, tenants: tuple[str, ...], before: Any, dry_run: bool) -> None:
    """Remove every row of a tenant from the lake (an erasure request).

    Rewrites each committed file of requests, calls and lookups holding the
    tenant's rows (today's too), the alerts' exported files and the nightly
    jobs' and distillation's per-request items (an item that names no tenant
    goes with its request; distillation exports are named, not rewritten),
    and erases it from the alert state file ([alerts] state_path): its
    alert history, and without --before its alerts, silences and messages
    (an open incident of its alerts is closed with a message naming no
    tenant).
    The tenant's calls and lookups are those the views give it: a call span that names no
    tenant (an SDK instrumentation's, inside a costline request) goes with
    its request, and so do the second spans of its calls the views leave out;
    such spans in a trace shared with another tenant are left and counted
    ("left: ... traces shared"). Other rows whose tenant is NULL are kept.
    Safe while `process` runs: a batch committed after the forget started is
    left as it is and reported as not covered. It waits for a running
    compaction (a dry run of a lake it cannot write takes the lock shared,
    or reads without it when the lake has no lock file, and says so).
    A file it cannot read is set aside and the command fails naming it. In
    [lake] mode = "table" one snapshot per table replaces the files holding
    them, the alerts' result tables too (older snapshots keep the old files
    until `lake compact` expires them). The Kafka topic keeps the raw spans
    until its retention.ms (docs/sql.md).

    \b
    Exit status:
        0  done (a dry run: counted)
        1  a file it could not read was set aside, or the alert state file
           could not be changed: its rows were not erased; or a process
           reading the alert state file kept its write-ahead log, which may
           hold their old bytes: run it again once that process is done
        3  done, but rows committed while it ran, or a killed writer's
           staged file under ten minutes old, were left (not
           covered): run it again

    \b
    Example:
        costline lake forget --tenant acme --dry-run
        costline lake forget --tenant acme --tenant acme-eu
        costline lake forget --tenant acme --before 2026-11-01
    """
    if any(not t.strip() for t in tenants):
        raise click.BadParameter("a tenant name is empty: name the tenant as its rows hold it (rows without a "
                                 "tenant are never forgotten)", param_hint="--tenant")
    _erasure_result(lambda: _forget(config, tenants, before.date() if before else None, dry_run), config.kafka.topic)


def _forget(config: Config, tenants: tuple[str, ...], before: Any, dry_run: bool) -> Any:
    """The forget of ``lake forget``: the lake's, and the alert state's (``[alerts] state_path``, else under the lake;
    in table mode, after the tables, then the alerts' result tables)."""
    from costline.alerts.erasure import forget_in_config
    from costline.alerts.service import state_path

    if config.lake.mode == "table":
        return forget_in_config(config, _erasing_lake(config).forget(tenants, before=before, dry_run=dry_run))
    return _erasing_lake(config).forget(tenants, before=before, dry_run=dry_run, alert_state=state_path(config))


@lake.command("redact")
@click.option("--dry-run", is_flag=True, help="Print, per table and day, how many rows' content would be set to "
                                              "NULL; change nothing.")
@pass_config
def lake_redact(config: Config, dry_run: bool) -> None:
    """Set the prompts and answers older than the content retention to NULL.

    Every day older than [lake] content_retention_days (env
    COSTLINE_LAKE_CONTENT_RETENTION_DAYS) keeps its rows and every figure
    (tokens, cost, success, tenant, ts) but loses input_messages and
    output_messages in requests and calls. Running it again rewrites
    nothing; `lake compact` does it on every pass when the key is set. A
    dry run of a lake it cannot write takes the maintenance lock shared, or
    reads without it when the lake has no lock file (it says so).

    \b
    Example:
        COSTLINE_LAKE_CONTENT_RETENTION_DAYS=30 costline lake redact --dry-run
        COSTLINE_LAKE_CONTENT_RETENTION_DAYS=30 costline lake redact
    """
    days = config.lake.content_retention_days
    if days == 0:
        raise click.UsageError("[lake] content_retention_days is 0 (prompts and answers are kept forever): set it "
                               "(or COSTLINE_LAKE_CONTENT_RETENTION_DAYS) to the days they are kept, e.g. 30")
    _erasure_result(lambda: _erasing_lake(config).redact(days, dry_run=dry_run), config.kafka.topic)


@lake.command("views")
@pass_config
def lake_views(config: Config) -> None:
    """Write <lake>/costline.duckdb holding the views, for the plain `duckdb` CLI.

    \b
    Example:
        costline lake views
    """
    from costline.lake import write_views_db

    path = write_views_db(config, create=False)  # no lake at [lake] path: an error, nothing created
    click.echo(f"duckdb {path}")


from costline.tablelake_cli import lake_down, lake_remove_orphans, lake_status, lake_up  # noqa: E402 - the table lake's servers

for _command in (lake_up, lake_down, lake_status, lake_remove_orphans):
    lake.add_command(_command)

commands = [process, sql, lake]
