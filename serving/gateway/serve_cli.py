"""``costline serve`` (the Anthropic-compatible gateway) and ``costline standin`` (local model APIs)."""

from __future__ import annotations

import dataclasses
import signal
from typing import Any

import click

from costline.cli import pass_config
from costline.config import Config

__all__ = ["serve", "settle_heap", "standin"]


@click.command("serve")
@click.option("--host", default=None, help="Interface (default [serving.gateway] host).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Port (default [serving.gateway] port, 8787).")
@click.option("--standin/--no-standin", "with_standin", default=False,
              help="Also start the local stand-in APIs and point every tier at them.")
@click.option("--cache/--no-cache", "with_cache", default=True, show_default=True,
              help="Answer repeated questions from the semantic cache ([serving.cache]).")
@click.option("--telemetry/--no-telemetry", default=True, show_default=True,
              help="Export spans to Kafka ([kafka]); off: no spans leave the process.")
@click.option("--metrics/--no-metrics", default=None,
              help="Record the OTel GenAI and costline metrics, exported per [collector] metrics_otlp / "
                   "metrics_prometheus (default [serving.gateway] metrics).")
@click.option("--insecure", is_flag=True, default=False,
              help="Listen beyond loopback without API keys (only behind a proxy that authenticates).")
@click.option("--workers", type=int, default=None,
              help="Gateway processes on the port (default [serving.gateway] workers, 1); more than 1 needs "
                   "[serving.cache] replication_topic (they share the cache over Kafka) or --no-cache.")
@click.option("--worker-index", type=int, default=None, hidden=True,
              help="Set by the supervisor of --workers: this process is worker K.")
@click.option("--supervisor-pid", type=int, default=None, hidden=True,
              help="Set by the supervisor of --workers: its pid (the worker drains and exits once it is gone).")
@click.option("--rate-table", type=click.Path(dir_okay=False), default=None, hidden=True,
              help="Set by the supervisor of --workers: the rate-limit buckets the workers share.")
@click.option("--tenant-table", type=click.Path(dir_okay=False), default=None, hidden=True,
              help="Set by the supervisor of --workers: each tenant's requests in flight, counted across the workers.")
@click.option("--responses-store", type=click.Path(dir_okay=False), default=None, hidden=True,
              help="Set by the supervisor of --workers: the Responses API's stored responses the workers share.")
@pass_config
def serve(config: Config, host: str | None, port: int | None, with_standin: bool, with_cache: bool,
          telemetry: bool, metrics: bool | None, insecure: bool, workers: int | None,
          worker_index: int | None, supervisor_pid: int | None, rate_table: str | None, tenant_table: str | None,
          responses_store: str | None) -> None:
    """Run the gateway: the Anthropic Messages API (POST /v1/messages), the OpenAI Chat
    Completions API (POST /v1/chat/completions) and the OpenAI Responses API (POST /v1/responses)
    in front of routing, the semantic cache, escalation and telemetry. Apps only change their
    base_url. SIGTERM drains it.

    \b
    Example:
        costline serve --standin --port 8787
        # then: Anthropic(base_url="http://127.0.0.1:8787", default_headers={"x-costline-tenant": "acme"})
        costline keys add acme   # from now on a key is required, and it decides the tenant
        # OpenAI apps: OpenAI(base_url="http://127.0.0.1:8787/v1") (chat.completions or responses)
        COSTLINE_COLLECTOR_METRICS_PROMETHEUS=true costline serve --standin --metrics
        # four processes on one port, sharing the cache over Kafka (docs/serving.md, "Workers"):
        COSTLINE_SERVING_CACHE_REPLICATION_TOPIC=costline_cache costline serve --workers 4
    """
    from costline.collectors import Recorder, setup_tracing
    from costline.serving.gateway.app import Gateway
    from costline.serving.pipeline import Pipeline

    if insecure:
        gw_cfg = dataclasses.replace(config.serving.gateway, allow_insecure=True)
        config = config.replace(serving=dataclasses.replace(config.serving, gateway=gw_cfg))
    from costline.netsec import refuse_open_bind
    from costline.serving.gateway.auth import GatewayGuard

    bind = host or config.serving.gateway.host
    guard = GatewayGuard(config.serving.gateway, host=bind)  # refuse before anything else starts
    refuse_open_bind("the gateway", bind, authenticated=guard.auth_required(),
                     insecure=config.serving.gateway.allow_insecure,
                     how="add API keys with `costline keys add TENANT`")
    standin = None
    if with_standin:  # with --workers, one for every worker, in the supervisor
        from costline.sim.standin import StandInServer

        standin = StandInServer(config.serving.standin, pricing=config.pricing, port=0)
    workers = config.serving.gateway.workers if workers is None else workers
    if worker_index is None and workers != 1:
        from costline.serving.gateway.auth import open_mode_note

        _supervise(config, bind=bind, port=port, workers=workers, standin=standin, with_cache=with_cache,
                   telemetry=telemetry, metrics=metrics, insecure=insecure,
                   note=open_mode_note(config.serving.gateway, bind, guard), authenticated=guard.auth_required())
        return
    if supervisor_pid is not None:  # started by _supervise: drain and exit if it dies
        from costline.serving.gateway.workers import watch_parent

        watch_parent(supervisor_pid)
    if standin is not None:
        config = _started(standin, config)
    if telemetry:
        provider = setup_tracing("costline-gateway", config=config)
    else:
        from opentelemetry.sdk.trace import TracerProvider

        provider = TracerProvider()
    telemetry_metrics = None
    if config.serving.gateway.metrics if metrics is None else metrics:
        from costline.collectors.metrics import setup_metrics

        telemetry_metrics = setup_metrics("costline-gateway", config=config)
        if telemetry_metrics.prometheus_url:
            click.echo(f"metrics on {telemetry_metrics.prometheus_url}")
    recorder = Recorder(provider, capture=config.capture,
                        metrics=telemetry_metrics.metrics if telemetry_metrics is not None else None)
    cache = embedder = None
    if with_cache:
        from costline.serving.cache.semantic import SemanticCache
        from costline.serving.embedding_onnx import make_embedder  # [serving.cache] embedder: torch | onnx | openvino

        c = config.serving.cache
        embedder = make_embedder(c)
        # where the ONNX export goes, worked out now: no folder this user can write (a read-only HOME, no temporary
        # folder) fails here in one line, not as a gateway that answers every request without its cache
        check = getattr(embedder, "check_export_folder", None)
        if check is not None:
            check()
        cache = SemanticCache(embedder, c, kafka=config.kafka)
        cache.start()  # with [serving.cache] replication_topic: bootstrap (snapshot + topic), then follow it
        if cache.replication is not None:
            click.echo(f"cache replicated on topic {c.replication_topic} as replica {cache.replication.replica_id}")
    if telemetry_metrics is not None and cache is not None:
        telemetry_metrics.metrics.observe_cache(cache.stats)  # entries, removals, refused stores
        if cache.replication is not None:  # published, dropped, retried invalidations, skipped records, lag
            telemetry_metrics.metrics.observe_replication(cache.replication.stats)
    pipeline = Pipeline.from_config(config, recorder=recorder, cache=cache)
    limiter = None
    if rate_table is not None:
        from costline.serving.gateway.shared_limits import SharedRateLimiter

        g = config.serving.gateway
        limiter = SharedRateLimiter(rate_table, g.rate_limit_per_minute, g.rate_limit_burst)
    tenant_counts = None
    if tenant_table is not None and worker_index is not None and config.serving.gateway.max_in_flight_per_tenant > 0:
        from costline.serving.gateway.shared_limits import SharedTenantCounts

        tenant_counts = SharedTenantCounts(tenant_table, config.serving.gateway.max_in_flight_per_tenant, worker_index)
        tenant_counts.clear()  # what a previous worker of this index held when it died
    gateway = Gateway(pipeline, config.serving.gateway, host=host, port=port, worker=worker_index, limiter=limiter,
                      after_warm_up=settle_heap, responses_store=responses_store,
                      tenant_counts=tenant_counts)  # the cap holds across the workers
    # SIGTERM: the server drains (/readyz 503, requests in flight finish, at most drain_timeout_s),
    # then this handler, restored, ends the process through the finally below, which flushes telemetry.
    # Installed before the address is announced: whoever reads it may stop the gateway at once.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        gateway.bind()
        if worker_index is None:
            click.echo(f"costline gateway on {gateway.url} (policy {config.serving.router.policy}); Ctrl-C stops it")
        else:
            import os

            click.echo(f"costline gateway worker {worker_index} on {gateway.url} (pid {os.getpid()})")
        from costline.serving.gateway.auth import open_mode_note

        note = open_mode_note(config.serving.gateway, bind, gateway.guard)
        if note and worker_index is None:  # a worker's supervisor said it once
            click.echo(note, err=True)
        gateway.serve_forever()  # uvicorn in this thread: the event loop, requests on a bounded pool
    finally:
        pipeline.close()
        if cache is not None:
            cache.shutdown()  # publishes what is queued, stops following, saves a snapshot when path is set
        if embedder is not None and hasattr(embedder, "shutdown"):
            embedder.shutdown()  # its micro-batch thread ends before the interpreter does (the ONNX runtime's)
            _say_batches(getattr(embedder, "batcher", None))
        provider.shutdown()
        if telemetry_metrics is not None:
            telemetry_metrics.shutdown()  # the last export
        if standin is not None:
            standin.shutdown()


def settle_heap() -> None:
    """Collect what starting left behind, then freeze the rest (``gc.freeze``): the libraries and models a
    gateway loads (PyTorch, transformers, the tokenizers, ONNX Runtime, the verifier's lexicons) are millions of
    objects that live as long as the process, and every full collection of the cyclic garbage collector walked
    them all, holding the GIL: 0.3-0.4 s in which no request moved, measured on bench/gateway.py (its p99). Frozen,
    they are left out of every later collection; their memory is still freed if they are dropped (reference
    counts), only a reference cycle among them would outlive them. Called once, before /readyz says ready."""
    import gc

    gc.collect()
    gc.freeze()


def _say_batches(batcher: Any) -> None:
    """One line on stderr: how the embedder's micro-batches filled ([serving.cache] embed_max_batch and
    embed_batch_wait_ms trade CPU per query against latency; the mean batch says where they stand)."""
    if batcher is not None and batcher.batches:
        click.echo(f"embedder: {batcher.texts} queries in {batcher.batches} batches "
                   f"(mean {batcher.texts / batcher.batches:.1f} a batch)", err=True)


def _exit_on_sigterm(signum: int, frame: object) -> None:  # noqa: ARG001
    raise SystemExit(0)


def _started(standin: Any, config: Config) -> Config:
    """Start the stand-in APIs and return ``config`` with every tier pointed at them."""
    standin.start()
    click.echo(f"stand-in APIs on {standin.url}")
    backends = dataclasses.replace(config.serving.backends, anthropic_base_url=standin.url,
                                   student_base_url=standin.openai_url, embeddings_base_url=standin.openai_url)
    return config.replace(serving=dataclasses.replace(config.serving, backends=backends))


def _preflight(config: Config) -> None:
    """Build (and close) what every worker builds first, the pipeline without its cache, so a setup no worker
    could start with (a missing API key, a broken tier) is refused once, here, before any worker starts."""
    from opentelemetry.sdk.trace import TracerProvider

    from costline.collectors import Recorder
    from costline.serving.pipeline import Pipeline

    Pipeline.from_config(config, recorder=Recorder(TracerProvider()), cache=None).close()


def _supervise(config: Config, *, bind: str, port: int | None, workers: int, standin: Any, with_cache: bool,
               telemetry: bool, metrics: bool | None, insecure: bool, note: str | None,
               authenticated: bool = False) -> None:
    """``costline serve --workers N``: reserve the port, start N worker processes on it, restart one
    that dies, drain them all on SIGTERM / Ctrl-C (costline.serving.gateway.workers). The workers
    share one set of rate-limit buckets and, with an explicit ``max_in_flight_per_tenant``, one count of each
    tenant's requests in flight (files in a private temporary folder). ``standin``: a stand-in
    server (not started yet) every worker's tiers point at, or None. ``authenticated``: the gateway started with
    authentication on, so every worker, one restarted after the keys file was lost included, keeps it on."""
    import os
    import shutil
    import socket
    import sys
    import tempfile

    from costline.serving.gateway.shared_limits import SharedRateLimiter, SharedTenantCounts
    from costline.serving.gateway.workers import WorkerSupervisor, check_workers, worker_env

    c = config.serving.cache
    check_workers(workers, cache=with_cache, replication_topic=c.replication_topic)
    root = click.get_current_context().find_root()
    config_path = root.params.get("config_path")
    verbose = int(root.params.get("verbose") or 0)
    metrics_on = config.serving.gateway.metrics if metrics is None else metrics
    prometheus_port = config.collector.metrics_prometheus_port \
        if metrics_on and config.collector.metrics_prometheus else None
    replica_base = c.replica_id or f"{socket.gethostname()}-{os.getpid()}"
    base_env = dict(os.environ)
    if authenticated:  # a worker restarted while the keys file is gone must refuse everyone, never open the gateway
        base_env["COSTLINE_SERVING_GATEWAY_REQUIRE_AUTH"] = "true"
    state = tempfile.mkdtemp(prefix="costline-gateway-")  # mode 0700: this user's processes only
    rate_table = SharedRateLimiter.create(os.path.join(state, "rate-limits"))
    # an explicit cap holds across the workers (the derived default, 0, is each worker's own)
    tenant_table = SharedTenantCounts.create(os.path.join(state, "tenants-in-flight"), workers) \
        if config.serving.gateway.max_in_flight_per_tenant > 0 else None
    # the Responses API's stored responses: one database for every worker (a response stored by one is continued
    # by whichever the next request lands on), [serving.gateway] responses_store_path when set
    stored = None if config.serving.gateway.responses_store_path else os.path.join(state, "responses.sqlite3")
    from costline.serving.gateway.response_store import ResponseStore

    ResponseStore(stored or config.serving.gateway.responses_store_path).close()  # made once, before the workers

    def command(index: int) -> list[str]:
        argv = [sys.executable, "-m", "costline", *(["-" + "v" * verbose] if verbose else [])]
        if config_path is not None:
            argv += ["--config", str(os.path.abspath(config_path))]
        argv += ["serve", "--host", bind, "--port", str(supervisor.port), "--worker-index", str(index),
                 "--supervisor-pid", str(os.getpid()), "--rate-table", str(rate_table),
                 *(["--tenant-table", str(tenant_table)] if tenant_table else []),
                 *(["--responses-store", stored] if stored else []),
                 "--cache" if with_cache else "--no-cache", "--telemetry" if telemetry else "--no-telemetry"]
        if metrics is not None:
            argv.append("--metrics" if metrics else "--no-metrics")
        if insecure:
            argv.append("--insecure")
        return argv

    supervisor = WorkerSupervisor(
        workers, command,
        lambda index: worker_env(base_env, index, replica_base=replica_base,
                                 cache_path=str(c.path) if c.path is not None else None,
                                 prometheus_port=prometheus_port),
        host=bind, port=config.serving.gateway.port if port is None else port,
        drain_timeout_s=config.serving.gateway.drain_timeout_s, echo=click.echo,
        # a worker that died held its tenants' slots: free them before it is started again
        on_exit=(lambda index: SharedTenantCounts.clear_worker(tenant_table, index)) if tenant_table else None)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: supervisor.stop())
    codes: list[int | None] = []
    try:
        supervisor.reserve_port()
        checked = config
        if standin is not None:  # one stand-in for every worker, in this process; they learn its URLs by env
            checked = _started(standin, config)
            base_env["COSTLINE_SERVING_BACKENDS_ANTHROPIC_BASE_URL"] = standin.url
            base_env["COSTLINE_SERVING_BACKENDS_STUDENT_BASE_URL"] = standin.openai_url
            base_env["COSTLINE_SERVING_BACKENDS_EMBEDDINGS_BASE_URL"] = standin.openai_url
        _preflight(checked)
        supervisor.start()
        if note:
            click.echo(note, err=True)
        host = f"[{bind}]" if ":" in bind else bind
        scheme = "https" if config.serving.gateway.tls_cert_file else "http"
        click.echo(f"costline gateway on {scheme}://{host}:{supervisor.port} ({workers} workers, pids "
                   f"{', '.join(str(p) for p in supervisor.pids())}; cache "
                   f"{'replica ' + replica_base + '-w*' if with_cache else 'off'}); Ctrl-C stops it")
        try:
            supervisor.run()
        except KeyboardInterrupt:
            pass  # Ctrl-C ends supervising; the finally below drains every worker
    finally:
        codes = supervisor.shutdown()
        signal.signal(signal.SIGTERM, previous)
        if standin is not None:
            standin.shutdown()
        shutil.rmtree(state, ignore_errors=True)
    click.echo(f"costline gateway stopped (workers' exit status: {', '.join(str(code) for code in codes)})")
    if supervisor.failed:
        from costline.serving.errors import GatewayError

        raise GatewayError(supervisor.failed)


@click.command("standin")
@click.option("--host", default=None, help="Interface (default [serving.standin] host).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Port (default [serving.standin] port, 8700).")
@click.option("--latency-scale", type=float, default=None, help="Multiply the per-tier latencies (0: none).")
@click.option("--degrade", multiple=True, help="A keyword of the shifted slice the student answers badly.")
@click.option("--burst", multiple=True, metavar="STATUS:COUNT",
              help="Fail the next COUNT Anthropic requests with STATUS (429, 529, 500).")
@pass_config
def standin(config: Config, host: str | None, port: int | None, latency_scale: float | None,
            degrade: tuple[str, ...], burst: tuple[str, ...]) -> None:
    """Run local stand-ins of the model APIs, with deterministic synthetic answers.

    One server speaks the Anthropic Messages + Message Batches APIs, a vLLM OpenAI-compatible server
    (chat completions, also on Azure OpenAI's deployment paths; Responses; embeddings), the Gemini API
    (also on Vertex AI's paths) and Amazon Bedrock Runtime's Converse, InvokeModel (streamed too) and
    CountTokens: point each SDK's base URL (boto3's endpoint_url) at it.

    \b
    Example:
        costline standin --port 8700 --degrade sarcasm --burst 529:3
    """
    from costline.sim.standin import StandInServer

    cfg = config.serving.standin
    changes: dict[str, object] = {}
    if latency_scale is not None:
        changes["latency_scale"] = latency_scale
    if degrade:
        changes["degrade_keywords"] = tuple(degrade)
    server = StandInServer(dataclasses.replace(cfg, **changes), pricing=config.pricing, host=host, port=port)
    for spec in burst:
        status, _, count = spec.partition(":")
        try:
            server.inject_errors(int(status), int(count or 1))
        except ValueError:
            raise click.BadParameter(f"{spec!r}: use STATUS:COUNT, e.g. 429:3", param_hint="--burst") from None
    server.start()
    click.echo(f"Anthropic API stand-in on {server.url}  (Anthropic(base_url={server.url!r}))")
    click.echo(f"vLLM stand-in on {server.openai_url}  (OpenAI(base_url={server.openai_url!r}), "
               f"models {', '.join(cfg.student_models)})")
    server.serve_forever()
