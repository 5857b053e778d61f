"""The ``costline`` command line.

Each area contributes its commands from its own ``cli`` module (found through
:mod:`costline.areas`); they are imported when ``main()`` runs, never when :mod:`costline` is imported.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click

from costline.areas import area_cli_modules
from costline.config import Config, load_config
from costline.errors import CostlineError

__all__ = ["main", "cli", "pass_config"]


class _Ctx:
    def __init__(self, config_path: Path | None) -> None:
        self._config_path = config_path
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self._config_path)
        return self._config


pass_ctx = click.make_pass_decorator(_Ctx)


def pass_config(f):  # type: ignore[no-untyped-def]
    """Decorator: inject the loaded :class:`Config` as the first argument."""

    @pass_ctx
    @click.pass_context
    def wrapper(click_ctx: click.Context, ctx: _Ctx, *args, **kwargs):  # type: ignore[no-untyped-def]
        return click_ctx.invoke(f, ctx.config, *args, **kwargs)

    wrapper.__name__ = f.__name__
    wrapper.__doc__ = f.__doc__
    return wrapper


class UTCFormatter(logging.Formatter):
    """The command line's log lines: ``2026-11-08T02:00:05.123Z LEVEL logger: message``, the time in UTC (every
    message names times in UTC; the host's zone would be hours off with no marker). Only this formatter's clock:
    ``logging.Formatter.converter`` itself is left alone."""

    converter = time.gmtime

    def __init__(self) -> None:
        super().__init__(fmt="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%Y-%m-%dT%H:%M:%S")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's
        return f"{super().formatTime(record, datefmt)}.{int(record.msecs):03d}Z"


class _OutputClosed(Exception):
    """stdout (or stderr) was closed by its reader (``costline sql ... | head -1``): raised instead of the
    ``BrokenPipeError``, which click would turn into a silent exit 1."""


def _is_broken_pipe(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno == errno.EPIPE


class _Group(click.Group):
    """The top ``costline`` group: a write to a closed pipe anywhere below it (a command's output, --help)
    surfaces as :class:`_OutputClosed` for :func:`main`."""

    def make_context(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return super().make_context(*args, **kwargs)
        except OSError as exc:
            if _is_broken_pipe(exc):
                raise _OutputClosed() from exc
            raise

    def invoke(self, ctx: click.Context):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except OSError as exc:
            if _is_broken_pipe(exc):
                raise _OutputClosed() from exc
            raise


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              envvar="COSTLINE_CONFIG", help="TOML config file (default: ./costline.toml if present).")
@click.option("-v", "--verbose", count=True,
              help="More logging (-v info, -vv debug; -vvv also kafka-python's debug log, which prints its "
                   "configuration: SASL passwords included).")
@click.version_option(package_name="costline")
@click.pass_context
def cli(click_ctx: click.Context, config_path: Path | None, verbose: int) -> None:
    """costline: cheaper LLM inference, proven to stay good.

    Example:

        costline kafka up && costline process --until-idle 5
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler()
    handler.setFormatter(UTCFormatter())
    logging.basicConfig(level=level, handlers=[handler])
    if verbose < 3:  # kafka-python's DEBUG lines hold its configuration, a SASL password included
        logging.getLogger("kafka").setLevel(logging.ERROR if verbose < 2 else logging.INFO)
    click_ctx.obj = _Ctx(config_path)


@cli.group()
def kafka() -> None:
    """Run a local single-node Apache Kafka broker (KRaft).

    Example:

        costline kafka up; costline kafka status; costline kafka down
    """


@kafka.command("up")
@pass_config
def kafka_up(config: Config) -> None:
    """Fetch Kafka (once), start it on loopback and create the topics. Idempotent.

    With KAFKA_BOOTSTRAP_SERVERS set, only creates the topics on that cluster.

    Example:

        costline kafka up
    """
    from costline.localkafka import LocalKafka

    status = LocalKafka(config.kafka, progress=click.echo).up()
    click.echo(status.describe())


@kafka.command("down")
@pass_config
def kafka_down(config: Config) -> None:
    """Stop the local broker (its data stays for the next `up`).

    Example:

        costline kafka down
    """
    from costline.localkafka import LocalKafka

    stopped = LocalKafka(config.kafka, progress=click.echo).down()
    click.echo("stopped" if stopped else "no local broker was running")


@kafka.command("status")
@pass_config
def kafka_status(config: Config) -> None:
    """Tell whether Kafka runs, where, and which topics it has.

    Example:

        costline kafka status
    """
    from costline.localkafka import LocalKafka

    click.echo(LocalKafka(config.kafka).status().describe())


#: ``[kafka]`` keys whose default is worked out when the folder is used (KafkaConfig's property of it).
_WORKED_OUT = {"home": "jars_home", "data_dir": "state_dir"}


def _worked_out(section: object, prop: str) -> str:
    """The folder a None ``[kafka] home`` / ``data_dir`` stands for, or why there is none (no home directory)."""
    from costline.errors import ConfigError

    try:
        return f"{getattr(section, prop)} (default)"
    except ConfigError as exc:
        return f"None ({exc})"


@cli.command("config")
@pass_config
def show_config(config: Config) -> None:
    """Print the effective configuration (file + environment + defaults).

    Example:

        COSTLINE_LAKE_PATH=/data/lake costline config
    """
    import dataclasses

    from costline.netsec import mask_secret, redact_url
    from costline import contract
    from costline.pricing import (cache_prices, cache_write_1h_price, regional_endpoint_price, us_inference_price,
                                  web_search_price)

    def show(name: str, section: object) -> None:
        click.echo(f"[{name}]")
        nested = []
        for sf in dataclasses.fields(section):  # type: ignore[arg-type]
            value = getattr(section, sf.name)
            if sf.name == "models":
                for m in value:
                    read, write = cache_prices(m, section)
                    click.echo(f"  model {m.model} tier={m.tier} in=${m.input_per_mtok}/MTok "
                               f"out=${m.output_per_mtok}/MTok cache read=${read:g}/MTok write=${write:g}/MTok "
                               f"write 1h=${cache_write_1h_price(m, section):g}/MTok "
                               f"web search=${web_search_price(m, section):g}/1k"
                               + (f" (over {m.long_context_above_tokens:,} input tokens: in=${m.long_input_per_mtok}"
                                  f"/MTok out=${m.long_output_per_mtok}/MTok)" if m.long_context_above_tokens else "")
                               + (f" fast={m.fast_multiplier:g}x" if m.fast_multiplier is not None else "")
                               + (f" priority={m.priority_multiplier:g}x" if m.priority_multiplier is not None else "")
                               + (f" us-only={us_inference_price(m, section):g}x"
                                  if m.provider.startswith(contract.PROVIDER_ANTHROPIC) else "")
                               + (f" cloud-regional={regional_endpoint_price(m, section):g}x"
                                  if regional_endpoint_price(m, section) != 1.0 else ""))
                continue
            if dataclasses.is_dataclass(value):
                nested.append((f"{name}.{sf.name}", value))
                continue
            if value is None and name == "kafka" and sf.name in _WORKED_OUT:  # its default, worked out where used
                value = _worked_out(section, _WORKED_OUT[sf.name])
            elif value is not None and is_secret_key(sf.name):
                value = mask_secret(value)  # tokens, keys, webhook URLs: never printed
            else:
                value = _without_passwords(value, redact_url)  # a catalog / endpoint URL's password neither
            click.echo(f"  {sf.name} = {value}")
        for sub_name, sub in nested:
            show(sub_name, sub)

    click.echo(f"# source: {config.source or 'defaults + environment'}")
    for name, section in config.sections().items():
        show(name, section)


def _without_passwords(value: object, redact: Callable[[str], str]) -> object:
    """``value`` with the password of every URL in it (a string, or one in a list or table) redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, tuple):
        return tuple(_without_passwords(v, redact) for v in value)
    if isinstance(value, dict):
        return {k: _without_passwords(v, redact) for k, v in value.items()}
    return value


#: Config keys holding secrets (``*_env`` keys name environment variables, which are not secret).
_SECRET_WORDS = ("token", "secret", "password", "webhook_url", "api_key")


def is_secret_key(name: str) -> bool:
    """True for a config key whose value is a secret (masked by `costline config`)."""
    return not name.endswith(("_env", "_file", "_tokens")) and any(w in name for w in _SECRET_WORDS)


def _register_area_commands() -> None:
    for module in area_cli_modules():
        for command in module.commands:
            cli.add_command(command)


#: The exit status of a process whose output's reader went away (128 + SIGPIPE, what ``seq 100 | head -1`` gives
#: ``seq``): under ``set -o pipefail`` a script tells it from a failure.
EXIT_OUTPUT_CLOSED = 141
#: The exit status after Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130


def _interrupted(exc: BaseException) -> bool:
    """Ctrl-C, as Python or DuckDB reports it: a KeyboardInterrupt, DuckDB's ``InterruptException``, or the
    ``RuntimeError("Query interrupted")`` DuckDB raises when SIGINT arrives during a query."""
    if isinstance(exc, KeyboardInterrupt):
        return True
    interrupt = getattr(sys.modules.get("duckdb"), "InterruptException", None)
    if isinstance(interrupt, type) and isinstance(exc, interrupt):
        return True
    return isinstance(exc, RuntimeError) and str(exc).strip().startswith("Query interrupted")


def _output_closed() -> None:
    """Exit :data:`EXIT_OUTPUT_CLOSED`, silently: stdout now goes to /dev/null (the Python documentation's advice,
    so the flush at exit cannot fail again and print "Exception ignored ... BrokenPipeError")."""
    for stream in (sys.stdout, sys.stderr):
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):  # replaced by a test's capture, or closed
            continue
        if stream is sys.stderr and not _pipe_closed(fd):
            continue  # stderr still has a reader: leave it be
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, fd)
            finally:
                os.close(devnull)
        except OSError:
            pass
    sys.exit(EXIT_OUTPUT_CLOSED)


def _pipe_closed(fd: int) -> bool:
    """Whether ``fd`` is a pipe or socket whose reader went away (poll says POLLERR)."""
    import select

    try:
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poller.poll(0))
    except (AttributeError, OSError, ValueError):
        return False


def main(argv: list[str] | None = None) -> None:
    try:
        _register_area_commands()
        rv = cli.main(args=argv, prog_name="costline", standalone_mode=False)
        sys.stdout.flush()  # what is still buffered: a closed pipe shows here, not in the flush at exit
    except _OutputClosed:
        _output_closed()
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except CostlineError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except BaseException as exc:
        if _is_broken_pipe(exc):
            _output_closed()
        if not _interrupted(exc):
            raise
        click.echo("aborted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if isinstance(rv, int) and rv:
        sys.exit(rv)
