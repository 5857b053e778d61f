"""``costline collect``: the OTLP/HTTP (and, when configured, OTLP/gRPC) receivers in front of Kafka."""

from __future__ import annotations

import click

from costline.cli import pass_config
from costline.config import Config

__all__ = ["commands", "collect"]


@click.command("collect")
@click.option("--host", default=None, help="Interface to listen on (default: [collector] host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="TCP port (default: [collector] port, 4318).")
@click.option("--grpc-port", type=click.IntRange(1, 65535), default=None,
              help="Also receive OTLP/gRPC on this port, e.g. 4317 (default: [collector] grpc_port, off).")
@click.option("--insecure", is_flag=True, default=False,
              help="Listen beyond loopback without a bearer token (only behind a proxy that authenticates).")
@pass_config
def collect(config: Config, host: str | None, port: int | None, grpc_port: int | None, insecure: bool) -> None:
    """Receive OTLP/HTTP (and OTLP/gRPC) traces and forward them to Kafka.

    Apps in any language point their OTLP exporter here; each trace becomes
    one Kafka message on the spans topic (key = trace id). OTLP/HTTP listens on
    --port; OTLP/gRPC, what many SDKs send by default (Python, .NET), on
    --grpc-port or [collector] grpc_port, with the same tokens, TLS and limits.
    Runs until Ctrl-C or SIGTERM.

    Beyond loopback, set [collector] bearer_token (or bearer_token_file) and give
    exporters the header: OTEL_EXPORTER_OTLP_HEADERS="Authorization=Bearer <token>".

    Example:

    \b
        costline collect --port 4318 --grpc-port 4317 &
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://127.0.0.1:4318/v1/traces python app.py
        OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 python grpc_app.py   # OTLP/gRPC
    """
    import signal

    from costline.collectors.forwarder import KafkaForwarder
    from costline.collectors.receiver import OtlpReceiver
    from costline.collectors.receiver_grpc import OtlpGrpcReceiver

    import dataclasses

    c = config.collector
    if insecure:
        c = dataclasses.replace(c, allow_insecure=True)
    if grpc_port is not None:
        c = dataclasses.replace(c, grpc_port=grpc_port)
    if c.grpc_port is not None and c.grpc_port == (c.port if port is None else port):
        raise click.UsageError(f"the gRPC port {c.grpc_port} is the HTTP port too: give each its own "
                               "(--port 4318 --grpc-port 4317)")
    # One forwarder (one Kafka producer) for both listeners; closing it twice is harmless.
    forwarder = KafkaForwarder(config.kafka, produce_timeout_s=c.produce_timeout_s, retry_after_s=c.retry_after_s)
    receiver = OtlpReceiver(c, forwarder, host=host, port=port)
    grpc_receiver = OtlpGrpcReceiver(c, forwarder, host=host) if c.grpc_port is not None else None
    receiver.bind()
    endpoints = f"{receiver.endpoint} (OTLP/HTTP)"
    if grpc_receiver is not None:
        try:
            grpc_receiver.start()
        except BaseException:
            receiver.shutdown()
            raise
        endpoints += f", {grpc_receiver.endpoint} (OTLP/gRPC)"
    click.echo(f"costline collect: {endpoints} -> Kafka {config.kafka.bootstrap} topic {config.kafka.topic}")
    def _stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)  # stop cleanly under process managers too
    try:
        receiver.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopping: flushing to Kafka", err=True)
    finally:
        if grpc_receiver is not None:
            grpc_receiver.shutdown()  # RPCs in flight finish first (a grace period)
        receiver.shutdown()


commands = [collect]
