"""``costline jobs ...``: the nightly jobs from the command line."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from costline.cli import pass_config
from costline.config import MAX_DURATION_S, Config
from costline.timeutil import utc_naive, utc_now

__all__ = ["commands", "jobs"]


class _When(click.ParamType):
    """A UTC time: ``2026-11-08``, ``2026-11-08T02:00``, ``now``, ``-24h`` / ``-7d`` (relative to now).

    ``now`` and the relative forms count from the start of the current hour, as the default
    ``--until`` does: a command run again within the hour names the same window, so a drift or
    shadow run resumes (its run id hashes the window) instead of sampling and paying the teacher
    again. An explicit time is taken as it is.
    """

    name = "time"

    def __init__(self, now: Callable[[], datetime] = utc_now) -> None:
        self.now = now

    def this_hour(self) -> datetime:
        """The start of the current hour (naive UTC): what ``now`` and ``-24h`` count from."""
        return utc_naive(self.now()).replace(minute=0, second=0, microsecond=0)

    def convert(self, value: Any, param: Any, ctx: Any) -> datetime:
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        if text == "now":
            return self.this_hour()
        if text.startswith("-") and text[-1:] in ("h", "d"):
            try:
                n = float(text[1:-1])
            except ValueError:
                self.fail(f"{text!r}: use e.g. -24h or -7d", param, ctx)
            if math.isnan(n) or n < 0 or text[1:2] in ("+", "-"):  # "--5d" / "-+5d" / "--inf": no time back
                self.fail(f"{text!r} is not a number of hours or days back: use e.g. -24h or -7d", param, ctx)
            limit = _MAX_BACK_HOURS if text[-1] == "h" else _MAX_BACK_HOURS / 24
            if not abs(n) <= limit:  # infinity and 1000000d overflowed the datetime
                self.fail(f"{text!r} is out of range: go back at most {limit:.0f}{text[-1]} (100 years), e.g. -24h "
                          "or -7d", param, ctx)
            return self.this_hour() - (timedelta(hours=n) if text[-1] == "h" else timedelta(days=n))
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            self.fail(f"{text!r} is not a time: use 2026-11-08, 2026-11-08T02:00, now, -24h or -7d", param, ctx)
        try:
            return utc_naive(dt)
        except OverflowError:  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
            self.fail(f"{text!r} is out of range once taken to UTC: give a time from 0001-01-02 to 9999-12-30",
                      param, ctx)


#: How far back ``-Nh`` / ``-Nd`` may reach: 100 years (the longest window a config key may hold).
_MAX_BACK_HOURS = MAX_DURATION_S / 3600


WHEN = _When()


def _require_lake(config: Config) -> None:
    """The jobs read the lake and write their results into it: no lake at [lake] path (a mistyped path, nothing
    processed yet) is an error naming it, before anything is written there."""
    from costline.lake import require_lake

    require_lake(config)


def _window(config: Config, since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    end = until or WHEN.this_hour()
    return since or end - timedelta(hours=config.jobs.window_hours), end


def _span(since: datetime, until: datetime) -> str:
    return f"{since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC"


def _runner_opts(f: Any) -> Any:
    f = click.option("--seed", default=0, show_default=True, help="Seed of the sample (reproducible).")(f)
    f = click.option("--batch", is_flag=True, help="Regenerate through the Message Batches API (half price).")(f)
    f = click.option("--until", type=WHEN, default=None, help="End of the window (UTC; default: this hour).")(f)
    f = click.option("--since", type=WHEN, default=None, help="Start of the window (default: until - 24h).")(f)
    return f


@click.group("jobs")
def jobs() -> None:
    """Nightly jobs over the lake: student drift, routing shadow, lever cost report.

    \b
    Example:
        costline jobs nightly
    """


@jobs.command("drift")
@_runner_opts
@click.option("--sample", "sample_size", type=int, default=None, help="Requests to sample ([jobs.drift] sample_size).")
@click.option("--rerun", is_flag=True, help="Evaluate again even when this window's run already finished.")
@pass_config
def drift_cmd(config: Config, since: datetime | None, until: datetime | None, batch: bool, seed: int,
              sample_size: int | None, rerun: bool) -> None:
    """Is the student still as good as the teacher? Per subtype, with statistics.

    Samples student-served requests with captured content, regenerates the
    teacher's answers (resumably: a killed run continues where it stopped and
    never pays twice), scores per subtype and writes eval_runs / eval_items.

    \b
    Example:
        costline jobs drift --since -24h --sample 500 --seed 7 --batch
    """
    from costline.jobs.drift import run_drift

    _require_lake(config)
    s, u = _window(config, since, until)
    r = run_drift(config, since=s, until=u, seed=seed, sample_size=sample_size, batch=batch, rerun=rerun,
                  show_progress=True)
    if r.already_done:
        click.echo(f"run {r.run_id} already finished (use --rerun to evaluate again)")
        rows = [(x["subtype"], x["n"], x["gap"], x["gap_ci_low"], x["gap_ci_high"], x["threshold"], x["flagged"],
                 x["reason"]) for x in r.rows]
    else:
        rows = [(a.subtype, a.n, a.gap, a.gap_ci_low, a.gap_ci_high, a.threshold, a.flagged, a.reason)
                for a in r.assessments]
    from costline.processors.cli import format_result

    click.echo(format_result(["subtype", "n", "gap", "ci_low", "ci_high", "threshold", "flagged", "reason"], rows))
    if r.inputs.drifted:
        click.echo(f"input drift: {r.inputs.reason}")
    click.echo(f"run {r.run_id} ({_span(s, u)}): {r.n} requests evaluated, {r.sent} answers paid now, "
               f"{r.resumed} resumed; job cost ${r.cost_usd:.4f}")
    left_out = unusable_line(r.unusable)
    if left_out:
        click.echo(left_out)


def unusable_line(unusable: Mapping[str, int]) -> str | None:
    """The drift or shadow run's line about the answers it paid for but could not score, each kind with
    what it means (None: there were none)."""
    from costline.jobs.teacher import describe_unusable

    if not any(unusable.values()):
        return None
    return f"answers paid for but left out of scoring: {describe_unusable(unusable)}"


@jobs.command("shadow")
@_runner_opts
@click.option("--per-tier", type=int, default=None, help="Requests per tier ([jobs.shadow] per_tier).")
@click.option("--rerun", is_flag=True, help="Evaluate again even when this window's run already finished.")
@pass_config
def shadow_cmd(config: Config, since: datetime | None, until: datetime | None, batch: bool, seed: int,
               per_tier: int | None, rerun: bool) -> None:
    """Is routing still right? Tier-match rate per tier against the next tier up.

    \b
    Example:
        costline jobs shadow --since -24h --per-tier 150
    """
    from costline.jobs.shadow import run_shadow
    from costline.processors.cli import format_result

    _require_lake(config)
    s, u = _window(config, since, until)
    r = run_shadow(config, since=s, until=u, seed=seed, per_tier=per_tier, batch=batch, rerun=rerun,
                   show_progress=True)
    rows = ([(x["tier"], x["n"], x["tier_match_rate"], x["baseline_rate"], x["flagged"], x["reason"]) for x in r.rows]
            if r.already_done else
            [(a.tier, a.n, a.rate, a.baseline_rate, a.flagged, a.reason) for a in r.assessments])
    click.echo(format_result(["tier", "n", "tier_match_rate", "baseline", "flagged", "reason"], rows))
    click.echo(f"run {r.run_id} ({_span(s, u)}): job cost ${r.cost_usd:.4f}")
    left_out = unusable_line(r.unusable)
    if left_out:
        click.echo(left_out)


@jobs.command("cost-report")
@click.option("--since", type=WHEN, default=None, help="Start of the range (default: until - 24h).")
@click.option("--until", type=WHEN, default=None, help="End of the range (UTC; default: this hour).")
@click.option("--format", "fmt", type=click.Choice(["table", "markdown", "json"]), default="table",
              show_default=True)
@click.option("--no-write", is_flag=True, help="Print only; do not store it as the cost_report view.")
@pass_config
def cost_report_cmd(config: Config, since: datetime | None, until: datetime | None, fmt: str, no_write: bool) -> None:
    """What did each lever save? The article's stacking table on real traffic.

    \b
    Example:
        costline jobs cost-report --since 2026-11-01 --until 2026-11-08 --format markdown
    """
    from costline.jobs.cost_report import run_cost_report

    _require_lake(config)
    s, u = _window(config, since, until)
    report = run_cost_report(config, since=s, until=u, write=not no_write)
    click.echo({"table": report.to_text, "markdown": report.to_markdown, "json": report.to_json}[fmt]())


def _print_outcomes(outcomes: list[Any]) -> None:
    from costline.processors.cli import format_result

    click.echo(format_result(["job", "window_until", "status", "rows", "cost_usd", "result", "error"],
                             [(o.job, o.until, o.status, o.rows, round(o.cost_usd, 4), o.result_id, o.error)
                              for o in outcomes]))


@jobs.command("nightly")
@click.option("--until", type=WHEN, default=None,
              help="End of the window (UTC; default: the latest [jobs] schedule time, e.g. 02:00 today).")
@click.option("--batch", is_flag=True, help="Regenerate through the Message Batches API (half price).")
@click.option("--seed", default=0, show_default=True, help="Seed of the samples.")
@click.option("--no-alerts", is_flag=True, help="Do not evaluate the job alert rules afterwards.")
@pass_config
def nightly_cmd(config: Config, until: datetime | None, batch: bool, seed: int, no_alerts: bool) -> int:
    """Run drift, shadow and the cost report in order (for cron); retries failed windows.

    Exits 1 when a job failed (it is retried on the next run, resuming).
    The window ends at the latest [jobs] schedule time (UTC) unless --until
    is given, so that consecutive runs tile; run cron in UTC too.

    \b
    Example:
        CRON_TZ=UTC
        0 2 * * *  costline jobs nightly --batch
    """
    from costline.jobs.scheduler import default_runners, nightly

    _require_lake(config)
    outcomes = nightly(config, until=until, runners=default_runners(batch=batch, seed=seed, show_progress=True),
                       notify=not no_alerts)
    _print_outcomes(outcomes)
    return 1 if any(o.status == "failed" for o in outcomes) else 0


@jobs.command("serve")
@click.option("--batch", is_flag=True, help="Regenerate through the Message Batches API (half price).")
@pass_config
def serve_cmd(config: Config, batch: bool) -> None:
    """Run the nightly jobs on the [jobs] schedule (default 02:00 UTC) until stopped.

    \b
    Example:
        COSTLINE_JOBS_SCHEDULE=02:00,14:00 costline jobs serve
    """
    import signal
    import threading

    from costline.jobs.scheduler import NightlyService, default_runners

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    service = NightlyService(config, runners=default_runners(batch=batch))
    click.echo(f"costline jobs: next run at {service.next_due(datetime.now(UTC))} UTC "
               f"(schedule {', '.join(config.jobs.schedule)})")
    service.run_forever(stop, on_outcomes=_print_outcomes)


@jobs.command("runs")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1))
@pass_config
def runs_cmd(config: Config, limit: int) -> None:
    """Show the latest recorded job runs (the job_runs view).

    \b
    Example:
        costline jobs runs --limit 10
    """
    from costline.jobs.store import open_jobs_lake
    from costline.processors.cli import format_result

    _require_lake(config)
    con = open_jobs_lake(config)
    try:
        cur = con.execute("SELECT job, window_until, status, attempt, started_at, finished_at, rows, "
                          "round(cost_usd, 4) AS cost_usd, error FROM job_runs ORDER BY updated_at DESC LIMIT $n",
                          {"n": limit})
        click.echo(format_result([c[0] for c in cur.description], cur.fetchall()))
    finally:
        con.close()


commands = [jobs]
