"""``costline serve`` (the Anthropic-compatible gateway) and ``costline standin`` (local model APIs)."""

from __future__ import annotations

import dataclasses
import signal

import click

from costline.cli import pass_config
from costline.config import Config

__all__ = ["serve", "standin"]


@click.command("serve")
@click.option("--host", default=None, help="Interface (default [serving.gateway] host).")
@click.option("--port", type=int, default=None, help="Port (default [serving.gateway] port, 8787).")
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
@pass_config
def serve(config: Config, host: str | None, port: int | None, with_standin: bool, with_cache: bool,
          telemetry: bool, metrics: bool | None, insecure: bool) -> None:
    """Run the gateway: the Anthropic Messages API (POST /v1/messages) and the OpenAI Chat
    Completions API (POST /v1/chat/completions) in front of routing, the semantic cache,
    escalation and telemetry. Apps only change their base_url. SIGTERM drains it.

    \b
    Example:
        costline serve --standin --port 8787
        # then: Anthropic(base_url="http://127.0.0.1:8787", default_headers={"x-costline-tenant": "acme"})
        costline keys add acme   # from now on a key is required, and it decides the tenant
        # OpenAI apps: OpenAI(base_url="http://127.0.0.1:8787/v1") (POST /v1/chat/completions)
        COSTLINE_COLLECTOR_METRICS_PROMETHEUS=true costline serve --standin --metrics
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
    if with_standin:
        from costline.sim.standin import StandInServer

        standin = StandInServer(config.serving.standin, pricing=config.pricing, port=0)
        standin.start()
        backends = dataclasses.replace(config.serving.backends, anthropic_base_url=standin.url,
                                       student_base_url=standin.openai_url)
        config = config.replace(serving=dataclasses.replace(config.serving, backends=backends))
        click.echo(f"stand-in APIs on {standin.url}")
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
    cache = None
    if with_cache:
        from costline.serving.cache.semantic import SemanticCache
        from costline.serving.embedding_onnx import make_embedder  # [serving.cache] embedder: torch | onnx

        c = config.serving.cache
        cache = SemanticCache(make_embedder(c), c, kafka=config.kafka)
        cache.start()  # with [serving.cache] replication_topic: bootstrap (snapshot + topic), then follow it
        if cache.replication is not None:
            click.echo(f"cache replicated on topic {c.replication_topic} as replica {cache.replication.replica_id}")
    pipeline = Pipeline.from_config(config, recorder=recorder, cache=cache)
    gateway = Gateway(pipeline, config.serving.gateway, host=host, port=port)
    gateway.bind()
    click.echo(f"costline gateway on {gateway.url} (policy {config.serving.router.policy}); Ctrl-C stops it")
    from costline.serving.gateway.auth import open_mode_note

    note = open_mode_note(config.serving.gateway, bind, gateway.guard)
    if note:
        click.echo(note, err=True)
    # SIGTERM: the server drains (/readyz 503, requests in flight finish, at most drain_timeout_s),
    # then this handler, restored, ends the process through the finally below, which flushes telemetry.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        gateway.serve_forever()  # uvicorn in this thread: the event loop, requests on a bounded pool
    finally:
        pipeline.close()
        if cache is not None:
            cache.shutdown()  # publishes what is queued, stops following, saves a snapshot when path is set
        provider.shutdown()
        if telemetry_metrics is not None:
            telemetry_metrics.shutdown()  # the last export
        if standin is not None:
            standin.shutdown()


def _exit_on_sigterm(signum: int, frame: object) -> None:  # noqa: ARG001
    raise SystemExit(0)


@click.command("standin")
@click.option("--host", default=None, help="Interface (default [serving.standin] host).")
@click.option("--port", type=int, default=None, help="Port (default [serving.standin] port, 8700).")
@click.option("--latency-scale", type=float, default=None, help="Multiply the per-tier latencies (0: none).")
@click.option("--degrade", multiple=True, help="A keyword of the shifted slice the student answers badly.")
@click.option("--burst", multiple=True, metavar="STATUS:COUNT",
              help="Fail the next COUNT Anthropic requests with STATUS (429, 529, 500).")
@pass_config
def standin(config: Config, host: str | None, port: int | None, latency_scale: float | None,
            degrade: tuple[str, ...], burst: tuple[str, ...]) -> None:
    """Run local stand-ins of the Anthropic Messages + Message Batches APIs and of a vLLM
    OpenAI-compatible server, with deterministic synthetic answers.

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
