"""``costline collect``: the OTLP/HTTP receiver in front of Kafka."""

from __future__ import annotations

import click

from costline.cli import pass_config
from costline.config import Config

__all__ = ["commands", "collect"]


@click.command("collect")
@click.option("--host", default=None, help="Interface to listen on (default: [collector] host, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="TCP port (default: [collector] port, 4318).")
@click.option("--insecure", is_flag=True, default=False,
              help="Listen beyond loopback without a bearer token (only behind a proxy that authenticates).")
@pass_config
def collect(config: Config, host: str | None, port: int | None, insecure: bool) -> None:
    """Receive OTLP/HTTP traces on POST /v1/traces and forward them to Kafka.

    Apps in any language point their OTLP/HTTP exporter here; each trace becomes
    one Kafka message on the spans topic (key = trace id). Runs until Ctrl-C
    or SIGTERM.

    Beyond loopback, set [collector] bearer_token (or bearer_token_file) and give
    exporters the header: OTEL_EXPORTER_OTLP_HEADERS="Authorization=Bearer <token>".

    Example:

    \b
        costline collect --port 4318 &
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://127.0.0.1:4318/v1/traces python app.py
    """
    import signal

    from costline.collectors.forwarder import KafkaForwarder
    from costline.collectors.receiver import OtlpReceiver

    import dataclasses

    c = config.collector
    if insecure:
        c = dataclasses.replace(c, allow_insecure=True)
    forwarder = KafkaForwarder(config.kafka, produce_timeout_s=c.produce_timeout_s, retry_after_s=c.retry_after_s)
    receiver = OtlpReceiver(c, forwarder, host=host, port=port)
    receiver.bind()
    click.echo(f"costline collect: {receiver.endpoint} -> Kafka {config.kafka.bootstrap} topic {config.kafka.topic}")
    def _stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)  # stop cleanly under process managers too
    try:
        receiver.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopping: flushing to Kafka", err=True)
    finally:
        receiver.shutdown()


commands = [collect]
