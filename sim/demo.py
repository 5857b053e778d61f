"""``costline demo``: the whole telemetry path on a fresh machine, in about a minute.

1. starts Kafka (or uses ``KAFKA_BOOTSTRAP_SERVERS``) and gives this run its own topic;
2. starts the processor (``costline process``) and the OTLP/HTTP collector (``costline collect``)
   as child processes, exactly as an operator would run them;
3. sends simulated days of traffic (:func:`costline.sim.traffic.serving_traffic`: support FAQs and
   their paraphrases, classification, extraction, coding, analysis; three tenants; documents that
   change) through the real serving path (:class:`costline.sim.demo_app.DemoApp`: router → semantic
   cache → the ``anthropic``/``openai`` SDKs → the local stand-in APIs, with escalation), with two
   incidents: a document updated without invalidation (stale answers are served, then the hit rate
   falls once it is invalidated late) and a traffic shift the student handles badly. Two tenants'
   spans go straight to Kafka with ``KafkaSpanExporter``, the third's through the collector with the
   standard OTLP/HTTP exporter;
4. waits until the processor has written everything to the Parquet lake, then prints per-tier
   cost per successful request, cache hit rates per day, the hours where a tenant's hit rate fell
   10 points under its baseline (the alert's: by default the same hour of day over the 7 days before),
   and the DuckDB queries that show them.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from costline.alerts.settings import CacheHitRateDropSettings
from costline.cli import pass_config
from costline.config import Config
from costline.errors import CostlineError
from costline.collectors import Recorder
from costline.sim.demo_app import DemoStats, SimClock
from costline.sim.traffic import RequestPlan, TrafficSpec

__all__ = ["commands", "replay", "replay_one", "SimClock", "DemoRun", "run_demo", "REPORT_QUERIES",
           "report_queries", "demo_cache_rule", "demo_spec", "DEMO_CACHE_TTL_S"]

#: How long the demo's semantic cache keeps an answer (simulated time): two days.
DEMO_CACHE_TTL_S = 2 * 86_400.0

#: The queries the demo prints (:func:`report_queries`), the cache drop's as the default config judges it; each runs
#: as is in `costline sql` or `duckdb costline.duckdb`.
_BASE_QUERIES: dict[str, str] = {
    "cost per successful request, per tier": """
SELECT coalesce(tier, '(none)')      AS tier,   -- (none): every attempt failed, nobody answered
       sum(requests)                      AS requests,
       sum(successes)                     AS successes,
       round(sum(cost_usd), 4)            AS cost_usd,
       round(sum(cost_usd) / nullif(sum(successes), 0), 6) AS cost_per_success
FROM tier_hourly GROUP BY ALL ORDER BY cost_per_success DESC NULLS LAST""",
    "cache hit rate per day and tenant": """
SELECT CAST(window_start AS DATE) AS day, tenant,
       sum(lookups) AS lookups, round(sum(hits) / sum(lookups), 3) AS hit_rate
FROM cache_hourly GROUP BY ALL ORDER BY day, tenant""",
    "student escalation rate per day (a traffic shift shows here first)": """
SELECT CAST(ts AS DATE) AS day, count(*) AS routed_to_student,
       round(avg(CASE WHEN escalations > 0 THEN 1 ELSE 0 END), 3) AS escalated,
       round(avg(CASE WHEN success THEN 1 ELSE 0 END), 3) AS success_rate
FROM requests WHERE routed_tier = 'student' GROUP BY ALL ORDER BY day""",
}

#: The cache hit-rate drop's baselines: the ``cache_hit_rate_7d`` columns of each (rate, lookups) and its words.
_BASELINES: dict[str, tuple[str, str, str]] = {
    "hour_of_day": ("avg_7d_hour", "lookups_7d_hour", "the same hour's 7-day average"),
    "rolling": ("avg_7d", "lookups_7d", "the 7-day average (all hours)"),
}


def _demo_thresholds(settings: CacheHitRateDropSettings) -> CacheHitRateDropSettings:
    return dataclasses.replace(settings, min_lookups=15, min_lookups_7d=30, max_p_value=3e-5)


def demo_cache_rule(config: Config) -> CacheHitRateDropSettings:
    """``[alerts.cache_hit_rate_drop]`` as the demo judges it (its alert replay and its report alike).

    The demo's tenants make ~20 cache lookups an hour, so the hourly rule's minimum sample is lowered to 15
    lookups (the default, 50, suits production volumes), and its baseline's to 30 (the same hour of day on the
    demo's first days: 2-3 hours of ~20 lookups; the default, 200, suits a week of production traffic); with
    ~300 tenant-hours judged the z-test asks for p < 3e-5 (~0.01 over the whole run) so chance alone is unlikely
    to page. The baseline and the drop are the config's.
    """
    return _demo_thresholds(config.alerts.cache_hit_rate_drop)


def _breach_query(rule: CacheHitRateDropSettings) -> tuple[str, str]:
    """(title, SQL) of the hours the cache rule ``rule`` pages for: its baseline, drop, minimum lookups (hour and
    baseline) and one-sided pooled two-proportion z-test (p < max_p_value, as z over its normal quantile)."""
    from statistics import NormalDist

    avg, lookups_base, words = _BASELINES[rule.baseline]
    z_min = NormalDist().inv_cdf(1.0 - rule.max_p_value)
    title = (f"hours {rule.drop * 100:g}+ points under {words}, and significantly so "
             f"(what the alert pages for, baseline = \"{rule.baseline}\")")
    sql = f"""
SELECT window_start, tenant, lookups, round(hit_rate, 3) AS hit_rate, round({avg}, 3) AS {avg},
       {lookups_base}, round(z, 1) AS z
FROM (
  SELECT *, ({avg} - hit_rate) / sqrt(p * (1 - p) * (1.0 / lookups + 1.0 / {lookups_base})) AS z
  FROM (SELECT *, (hits + {avg} * {lookups_base}) / (lookups + {lookups_base}) AS p FROM cache_hit_rate_7d
        WHERE {lookups_base} > 0)
)
-- as the alert judges an hour: >= {rule.min_lookups} lookups in it and >= {rule.min_lookups_7d} in its baseline, {rule.drop:g}
-- or more under the baseline, and one-sided p < {rule.max_p_value:g} (z > {z_min:.4f}): ~0.01 over the ~300
-- tenant-hours of a demo run (a scan of every hour is hundreds of tests)
WHERE lookups >= {rule.min_lookups} AND {lookups_base} >= {rule.min_lookups_7d}
  AND {avg} - hit_rate >= {rule.drop!r} - 1e-12 AND z > {z_min:.6f}
ORDER BY window_start, tenant NULLS FIRST"""
    return title, sql


def report_queries(config: Config | None = None) -> dict[str, str]:
    """The queries the demo's report prints, ``{title: SQL}``: the cache drop's follows ``config``'s
    ``[alerts.cache_hit_rate_drop]`` (its baseline, by default the same hour of day, and drop) with the demo's
    thresholds (:func:`demo_cache_rule`), so the report lists the hours the demo's alerts page for.
    ``config`` None: the configuration the CLI would load (``COSTLINE_CONFIG``, ``costline.toml``, env)."""
    if config is None:
        from costline.config import load_config

        config = load_config()
    title, sql = _breach_query(demo_cache_rule(config))
    return {**_BASE_QUERIES, title: sql}


#: The report's queries under the default config (the cache drop against the same hour's 7-day average);
#: :func:`report_queries` gives them for a config.
REPORT_QUERIES: dict[str, str] = {**_BASE_QUERIES, **dict([_breach_query(_demo_thresholds(CacheHitRateDropSettings()))])}


@dataclass
class DemoRun:
    config: Config
    topic: str
    lake: Path
    requests: int
    spans_hint: int
    #: What the demo's app saw (cache hits, stale answers, escalations...).
    stats: DemoStats | None = None


def replay(
    plans: Iterable[RequestPlan],
    recorder_for: Callable[[RequestPlan], Recorder],
    clock: SimClock,
    *,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Replay plans through costline recorders that share ``clock``; returns how many."""
    n = 0
    for plan in plans:
        replay_one(plan, recorder_for(plan), clock)
        n += 1
        if progress is not None:
            progress(1)
    return n


def replay_one(plan: RequestPlan, recorder: Recorder, clock: SimClock) -> None:
    """Record one planned request with the spans, times and outcomes the plan says."""
    clock.set(plan.start)
    with recorder.request(
        task_type=plan.task_type,
        tenant=plan.tenant,
        subtype=plan.subtype,
        request_id=plan.request_id,
        routed_tier=plan.routed_tier,
    ) as req:
        if plan.lookup is not None:
            with req.cache_lookup(namespace=plan.lookup.namespace) as lk:
                lk.result(hit=plan.lookup.hit, similarity=plan.lookup.similarity)
                clock.set(plan.lookup_end)
        at = plan.start + timedelta(milliseconds=2)
        for i, c in enumerate(plan.calls):
            clock.set(at)
            # every call but an accepted last one was turned down: by its API's error, else by the validator
            if c.error_type or i < len(plan.calls) - 1 or not plan.success:
                req.attempt_rejected(c.tier, c.error_type or "validator")
            with req.call(provider=c.provider, model=c.model, tier=c.tier) as call:
                call.usage(
                    input_tokens=c.input_tokens,
                    output_tokens=c.output_tokens,
                    cache_read_tokens=c.cache_read_tokens,
                    cache_creation_tokens=c.cache_creation_tokens,
                )
                if c.error_type:
                    call.error(c.error_type)
                else:
                    call.response(model=c.model, finish_reasons=["end_turn"])
                    call.content([plan.query], [plan.answer])
                at += timedelta(milliseconds=c.duration_ms)
                clock.set(at)
        req.served_by(plan.served_by)
        if plan.success:
            req.accept()
        else:
            req.reject("validator rejected the answer")
        clock.set(plan.end)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_env(config: Config, lake: Path, topic: str, group: str, collector_port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": config.kafka.bootstrap,
            "COSTLINE_KAFKA_TOPIC": topic,
            "COSTLINE_KAFKA_DLQ_TOPIC": f"{topic}.dlq",
            "COSTLINE_LAKE_PATH": str(lake),
            "COSTLINE_PROCESSOR_GROUP_ID": group,
            "COSTLINE_PROCESSOR_FLUSH_INTERVAL_S": "1",
            # the demo replays a fixed simulated month (from 2026-11-01) with records stamped now: no age bound
            "COSTLINE_PROCESSOR_SPAN_TIME_MAX_AGE_DAYS": "0",
            "COSTLINE_COLLECTOR_PORT": str(collector_port),
        }
    )
    if config.source is not None:
        env["COSTLINE_CONFIG"] = str(config.source)
    return env


def _spawn(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen([sys.executable, "-m", "costline", *args], env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    finally:
        log.close()


def _wait_http(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DemoError(f"costline collect exited early (code {proc.returncode}); see its log")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise DemoError(f"costline collect did not listen on port {port} within {timeout_s:.0f}s")


def _stop(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class DemoError(CostlineError):
    """The demo could not run; the message says which step failed and where its log is."""


def demo_spec(days: int = 4, per_day: int = 3000, seed: int = 7) -> TrafficSpec:
    """The demo's traffic: the stale document on the second-to-last day, the shift on the last."""
    return TrafficSpec(days=days, requests_per_day=per_day, seed=seed,
                       stale_day=days - 2 if days >= 3 else None, shift_day=days - 1 if days >= 2 else None)


def run_demo(
    config: Config,
    *,
    spec: TrafficSpec,
    workdir: Path,
    echo: Callable[[str], None] = click.echo,
    keep_kafka: bool = False,
    show_progress: bool = True,
    embedder: Any = None,
) -> DemoRun:
    """Run the whole telemetry path on simulated traffic through the serving path; return where it all went."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from tqdm import tqdm

    from costline.collectors import KafkaSpanExporter, setup_tracing
    from costline.sim.demo_app import DemoApp, start_standin
    from costline.localkafka import LocalKafka, ensure_topics
    from costline.sim.traffic import ServingRequest, serving_traffic, warmup_traffic

    workdir = workdir.resolve()
    lake = workdir / "lake"
    logs = workdir / "logs"
    try:
        if lake.exists():
            shutil.rmtree(lake)  # each demo run starts from an empty lake
        logs.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a folder this user cannot write (a read-only image, another user's folder)
        raise DemoError(f"cannot set up the demo's folder {workdir}: {exc.strerror or exc}"
                        f"{f' ({exc.filename})' if exc.filename else ''}: pass --workdir with a folder this user "
                        "can write") from None

    cache_cfg = dataclasses.replace(config.serving.cache, ttl_s=DEMO_CACHE_TTL_S)
    config = config.replace(serving=dataclasses.replace(config.serving, cache=cache_cfg))
    items = list(serving_traffic(spec))
    requests = [r for r in items if isinstance(r, ServingRequest)]
    primer = warmup_traffic(spec, ttl_s=cache_cfg.ttl_s)
    # The embedding model loads and embeds every FAQ text while Kafka starts (one batch, then memoised).
    texts = list(dict.fromkeys([r.query for r in primer] + [r.query for r in requests if r.cacheable]))
    embedded = _Background(lambda: _embedder(config, embedder, texts))

    broker = LocalKafka(config.kafka, progress=echo)
    already_running = config.kafka.external or broker.status().running
    echo(f"1/6 Kafka: {'using ' + config.kafka.bootstrap if config.kafka.external else 'starting a local broker'}")
    broker.up()
    run_id = time.strftime("%Y%m%d%H%M%S") + "-" + uuid.uuid4().hex[:4]
    topic = f"{config.kafka.topic}.demo-{run_id}"
    kafka_cfg = dataclasses.replace(config.kafka, bootstrap_servers=config.kafka.bootstrap, topic=topic,
                                    dlq_topic=f"{topic}.dlq")
    ensure_topics(kafka_cfg)

    collector_port = _free_port()
    env = _child_env(config, lake, topic, f"costline-demo-{run_id}", collector_port)
    echo(f"2/6 starting `costline process` and `costline collect` (logs in {logs})")
    processor = _spawn(["process"], env, logs / "process.log")
    collector = _spawn(["collect"], env, logs / "collect.log")
    app = None
    standin = None
    try:
        _wait_http(collector_port, collector)
        clock = SimClock()
        cfg = config.replace(kafka=kafka_cfg)
        direct = setup_tracing("demo-app", config=cfg, exporter=KafkaSpanExporter(kafka_cfg),
                               set_global=False, max_queue_size=500_000)
        via_collector = setup_tracing(
            "demo-app-otlp", exporter=OTLPSpanExporter(endpoint=f"http://127.0.0.1:{collector_port}/v1/traces"),
            set_global=False, max_queue_size=500_000,
        )
        # Content capture on: the nightly drift job samples the query and answer of student requests.
        capture = dataclasses.replace(cfg.capture, message_content=True)
        recorders = {
            "direct": Recorder(direct, capture=capture, now=clock),
            "otlp": Recorder(via_collector, capture=capture, now=clock),
        }
        otlp_tenant = spec.tenants[-1]
        standin = start_standin(cfg, clock)
        app = DemoApp(cfg, recorders=recorders, clock=clock, standin=standin, embedder=embedded.result(),
                      recorder_for=lambda tenant: "otlp" if tenant == otlp_tenant else "direct")
        cached = app.prime(primer)
        if cache_cfg.mode == "verified":
            matching = (f"serves a candidate from cosine {cache_cfg.verify_min_similarity} that passes the verification "
                        "stage" + (" and its pair model" if cache_cfg.verify_pair_model else ""))
        else:
            matching = f"matches at cosine {cache_cfg.threshold}"
        echo(f"3/6 serving {spec.days} simulated days through the serving path: {len(requests):,} requests "
             f"(router → semantic cache → anthropic/openai SDKs → local stand-in APIs); the cache starts with "
             f"{cached} answers from the days before, keeps them {cache_cfg.ttl_s / 3600:.0f} h (simulated "
             f"clock), {matching}; tenant {otlp_tenant!r} exports OTLP/HTTP "
             "through the collector, the others straight to Kafka")
        with tqdm(total=len(requests), unit="req", disable=not show_progress, leave=False) as bar:
            stats = app.run(items, progress=bar.update)
        direct.shutdown()
        via_collector.shutdown()
        echo("4/6 waiting for the processor to write every request to the lake")
        _wait_for_lake(config.replace(lake={"path": lake}), stats.requests, processor)
    finally:
        if app is not None:
            app.close()
        if standin is not None:
            standin.shutdown()
        _stop(collector)
        _stop(processor)
        if not keep_kafka and not already_running:
            broker.down()
    return DemoRun(config.replace(kafka=kafka_cfg, lake={"path": lake}), topic, lake, stats.requests, stats.spans,
                   stats)


def _embedder(config: Config, embedder: Any, texts: list[str]) -> Any:
    """The cache's embedding model, loaded, with ``texts`` embedded into its memo."""
    from costline.serving.embedding_onnx import make_embedder

    c = config.serving.cache
    if embedder is None:
        embedder = make_embedder(c, memo_size=len(texts) + 4096)  # [serving.cache] embedder: torch | onnx | openvino
    embedder.load()
    warm = getattr(embedder, "warm", None)
    if warm is not None:
        warm(texts)
    return embedder


class _Background:
    """Run ``fn`` in a thread now; :meth:`result` waits for it (and re-raises what it raised)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        # Not a daemon: if the demo stops early (Kafka did not start, Ctrl-C), the interpreter waits for the load
        # to finish instead of finalising under ONNX Runtime / PyTorch, which aborts the process (SIGABRT).
        self._thread = threading.Thread(target=self._run, args=(fn,), name="costline-demo-embed", daemon=False)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self._value = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            self._error = exc

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def app_summary(stats: DemoStats) -> list[str]:
    """What the app saw, for the console: the incidents as the app lived them."""
    lines = [f"{stats.requests:,} requests, {stats.calls:,} model calls; {stats.lookups:,} cache lookups, "
             f"{stats.hits:,} hits ({stats.semantic_hits:,} on another wording of a stored question, "
             f"{stats.other_question_hits:,} of them answering another question: wrong answers); "
             f"{stats.escalated:,} requests escalated, {stats.failed:,} failed; {stats.call_errors:,} calls failed "
             f"after the SDK's retries in {stats.error_bursts} bursts of overload errors"]
    lines += stats.events
    for doc, n in sorted(stats.stale_by_doc.items()):
        lines.append(f"stale answers served from {doc} before its late invalidation: {n}")
    if stats.stale_after_invalidation:
        lines.append(f"stale answers served after an invalidation: {stats.stale_after_invalidation} (a bug!)")
    return lines


def _wait_for_lake(config: Config, expected_requests: int, processor: subprocess.Popen[bytes],
                   stall_timeout_s: float = 90.0) -> None:
    """Wait until the lake holds every request; give up only when nothing moved for a while."""
    from costline.lake import open_lake

    seen = -1
    deadline = time.monotonic() + stall_timeout_s
    while time.monotonic() < deadline:
        if processor.poll() is not None:
            raise DemoError(f"`costline process` exited early (code {processor.returncode}); see its log")
        con = open_lake(config)
        try:
            count = con.execute("SELECT count(*) FROM requests").fetchone()[0]
        finally:
            con.close()
        if count >= expected_requests:
            return
        if count > seen:
            seen = count
            deadline = time.monotonic() + stall_timeout_s
        time.sleep(0.5)
    raise DemoError(
        f"only {seen} of {expected_requests} requests reached the lake, and none more for "
        f"{stall_timeout_s:.0f}s: see the processor's log"
    )


def replay_alerts(run: DemoRun, spec: TrafficSpec) -> list[str]:
    """Run the alert rules as of one minute past every simulated hour; return what the console said.

    The cache hit-rate rule runs with the demo's thresholds (:func:`demo_cache_rule`), those the report's
    query of the hours under the baseline uses.
    """
    from costline.alerts import AlertService

    config = run.config.replace(alerts={"cache_hit_rate_drop": demo_cache_rule(run.config)})
    said: list[str] = []
    service = AlertService(config, echo=said.append)
    try:
        first = spec.start + timedelta(hours=1, minutes=1)
        service.replay(first, spec.start + timedelta(days=spec.days, minutes=2), step_s=3600)
    finally:
        service.shutdown()
    return said


def report(run: DemoRun, echo: Callable[[str], None] = click.echo) -> None:
    """Print the demo's figures and the queries behind them."""
    from costline.lake import open_lake, write_views_db
    from costline.processors.cli import format_result

    con = open_lake(run.config)
    try:
        for n, (title, sql) in enumerate(report_queries(run.config).items(), 1):
            cur = con.execute(sql)
            cols = [d[0] for d in cur.description]
            rows = cur.fetchall()
            if title.startswith("cache hit rate per day"):
                cols, rows = _pivot_hit_rates(rows)
            echo(f"\n== {title} ==")
            echo(format_result(cols, rows) if rows else "(none)")
            if title.startswith("cost per successful request"):
                echo(_student_note(con, run.config))
    finally:
        con.close()
    views = write_views_db(run.config)
    echo("\nEvery figure above is a query over the lake. Run them yourself:")
    echo(f"  COSTLINE_LAKE_PATH={run.lake} costline sql \"SELECT * FROM tier_hourly LIMIT 5\"")
    echo(f"  duckdb {views}        # views: requests, calls, tier_hourly, cache_hourly, cache_hit_rate_7d")
    echo("The queries: python -c 'from costline.sim.demo import report_queries as q; print(*q().values(), sep=\"\\n\")'")


def _student_note(con, config: Config) -> str:  # type: ignore[no-untyped-def]
    """The student's cost per request is its utilisation: say so against the article's break-even."""
    row = con.execute(
        "SELECT count(*) / greatest(count(DISTINCT CAST(ts AS DATE)), 1) FROM requests WHERE tier = 'student'"
    ).fetchone()
    per_day = float(row[0] or 0)
    if not per_day:
        return ""
    hosting_day = config.pricing.student_usd_per_hour * 24
    return (
        f"note: the student's GPU (${config.pricing.student_usd_per_hour}/h) served {per_day:,.0f} requests a day, "
        f"so each carries ${hosting_day / per_day:.4f} of hosting; the article puts break-even near "
        "100,000 requests a day - below it, routing and the cache pay better."
    )


def _pivot_hit_rates(rows: list[tuple]) -> tuple[list[str], list[tuple]]:  # type: ignore[type-arg]
    """(day, tenant, lookups, hit_rate) rows → one row per day, one column per tenant."""
    tenants = sorted({r[1] for r in rows})
    by_day: dict = {}
    for day, tenant, _lookups, rate in rows:
        by_day.setdefault(day, {})[tenant] = rate
    return ["day", *tenants], [(day, *(by_day[day].get(t) for t in tenants)) for day in sorted(by_day)]


@click.command("demo")
@click.option("--days", default=4, show_default=True, type=click.IntRange(min=1), help="Simulated days of traffic.")
@click.option("--per-day", default=3000, show_default=True, type=click.IntRange(min=1), help="Requests per simulated day.")
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("costline-demo"), show_default=True,
              help="Where the demo's lake and logs go (the lake is recreated on each run).")
@click.option("--seed", default=7, show_default=True, help="Seed of the traffic.")
@click.option("--keep-kafka", is_flag=True, help="Leave the local broker running afterwards.")
@click.option("--distill", "distill", is_flag=True,
              help="Then distil the classification traffic into a student costline trains, serves and routes to "
                   "(needs the distill extra; a few minutes more).")
@pass_config
def demo(config: Config, days: int, per_day: int, workdir: Path, seed: int, keep_kafka: bool, distill: bool) -> None:
    """Run the whole pipeline on simulated traffic and print what it measured.

    Starts Kafka (or uses KAFKA_BOOTSTRAP_SERVERS), `costline process` and
    `costline collect`, sends simulated days of traffic through the real
    serving path (router, semantic cache, SDK calls to local stand-in APIs)
    with two incidents (a document updated without invalidation, invalidated
    late; a traffic shift the student handles badly), then prints cost per
    successful request per tier, cache hit rates per day, the hours that
    breach the 7-day alert band, the nightly jobs' findings and the alerts.
    With --distill it then distils a day of classification traffic
    (export, teacher, LoRA training of a tiny model, gate, promote) and
    routes fresh classification requests to the student it trained.

    \b
    Example:
        costline demo --days 4 --per-day 3000
        costline demo --distill
    """
    started = time.monotonic()
    if distill:  # fail before the demo runs, not after it
        from costline.distill.model import require_extra

        require_extra()
    spec = demo_spec(days, per_day, seed)
    run = run_demo(config, spec=spec, workdir=workdir, keep_kafka=keep_kafka)
    click.echo(f"5/6 done: {run.requests:,} requests ({run.spans_hint:,} spans) in the lake at {run.lake}")
    if run.stats is not None:
        click.echo("\n== what the app saw ==")
        click.echo("\n".join(app_summary(run.stats)))
    report(run)
    click.echo("\n== nightly jobs after each simulated day: student drift and shadow routing "
               "(teacher and tiers answered by the local stand-in API server) ==")
    from costline.sim.nightly_demo import run_nightly_demo

    run_nightly_demo(run.config, start=spec.start, days=spec.days, echo=click.echo)
    click.echo("\n6/6 evaluating the alert rules hour by hour over the simulated days (as `costline alerts run` does)")
    alerts = replay_alerts(run, spec)
    click.echo("\n== alerts the rules raised (console; Slack too when [alerts.slack] is configured) ==")
    click.echo("\n".join(alerts) if alerts else "(none)")
    from costline.dashboards import announce_dashboard

    click.echo("")
    announce_dashboard(run.config, run.lake.parent / "dashboard.html")
    if distill:
        click.echo("\n== distillation: the next day's classification traffic -> a student costline trains, "
                   "serves and routes to (docs/distill.md) ==")
        from costline.sim.distill_demo import run_distill_demo

        run_distill_demo(run.config, start=spec.start + timedelta(days=spec.days), workdir=run.lake.parent,
                         echo=click.echo)
    click.echo(f"\n(demo took {time.monotonic() - started:.0f}s)")


commands = [demo]
