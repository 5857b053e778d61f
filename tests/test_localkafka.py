"""Local Kafka: clear errors when Java or Maven is missing; a real broker answers when up."""

from __future__ import annotations

from pathlib import Path

import pytest

from costline.config import KafkaConfig
from costline.errors import KafkaSetupError
from costline.localkafka import LocalKafka


def test_missing_maven_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no mvn, no java
    kafka = LocalKafka(KafkaConfig(home=tmp_path / "home", data_dir=tmp_path / "data", port=1, controller_port=2))
    with pytest.raises(KafkaSetupError, match="Maven .* not found.*apt-get install maven.*KAFKA_BOOTSTRAP_SERVERS"):
        kafka.fetch()


def test_missing_java_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    kafka = LocalKafka(KafkaConfig(home=tmp_path / "home", data_dir=tmp_path / "data", port=1, controller_port=2))
    with pytest.raises(KafkaSetupError, match="Java not found.*openjdk.*KAFKA_BOOTSTRAP_SERVERS"):
        kafka.up()


def test_status_when_nothing_runs(tmp_path: Path) -> None:
    status = LocalKafka(KafkaConfig(data_dir=tmp_path, port=1, controller_port=2)).status()
    assert not status.running and not status.external
    assert "not running" in status.describe()


@pytest.mark.kafka
def test_session_broker_is_up_and_up_is_idempotent(kafka: KafkaConfig) -> None:
    if kafka.external:
        pytest.skip("external cluster: nothing local to check")
    broker = LocalKafka(kafka)
    first = broker.status()
    assert first.running and first.pid
    assert {"otlp_spans", "otlp_spans.dlq"} <= set(first.topics)
    again = broker.up()  # second `up` finds it running and changes nothing
    assert again.pid == first.pid


def test_cluster_ids_never_look_like_an_option() -> None:
    from costline.localkafka import _kraft_cluster_id

    ids = [_kraft_cluster_id() for _ in range(3000)]  # ~1 in 64 base64url ids starts with '-'
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(i) == 22 for i in ids)


def test_a_probe_hears_its_own_clients_refusal_not_another_clients() -> None:
    """The diagnosis probe listens on kafka-python's process-wide logger: a refused login logged meanwhile by another
    client (its own I/O thread) is not this probe's; the probe's I/O thread's line and the probing thread's are."""
    import logging
    import threading

    from costline.localkafka import _Heard

    heard = _Heard({"kafka-io-costline-probe-1234abcd"}, threading.get_ident())
    log = logging.getLogger("kafka.net.manager")
    log.addHandler(heard)
    try:
        def say(thread_name: str, text: str) -> None:
            t = threading.Thread(target=log.error, args=(text,), name=thread_name)
            t.start()
            t.join()

        say("kafka-io-costline-collector", "Connection failed: SaslAuthenticationFailedError: the collector's")
        say("kafka-io-costline-probe-1234abcd", "Connection failed: SaslAuthenticationFailedError: the probe's")
        log.error("SSLError: certificate verify failed (the probing thread's)")
        log.error("Connection failed: nothing about a login")  # no refusal: not kept either
    finally:
        log.removeHandler(heard)
    assert heard.said == ["Connection failed: SaslAuthenticationFailedError: the probe's",
                          "SSLError: certificate verify failed (the probing thread's)"]


def test_a_port_check_waits_for_a_name_lookup_a_bounded_time(monkeypatch) -> None:
    """`costline kafka status` and the diagnosis ask whether the broker's port is open: a resolver that hangs costs
    ``resolve_timeout_s``, not the resolver's own minutes; an address that resolves and listens is open, IPv6
    too."""
    import socket
    import threading
    import time

    from costline import procutil

    real = socket.getaddrinfo
    release = threading.Event()

    def hanging(host, *args, **kwargs):
        if host == "kafka.hangs.example":
            release.wait(30)
            raise socket.gaierror("gave up")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    started = time.monotonic()
    assert procutil.port_open("kafka.hangs.example", 9092, resolve_timeout_s=0.3) is False
    assert time.monotonic() - started < 3
    release.set()
    listening = []
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            server = socket.socket(family, socket.SOCK_STREAM)
            server.bind((host, 0))
        except OSError:  # no IPv6 on this machine
            continue
        server.listen()
        listening.append(server)
        assert procutil.port_open(host, server.getsockname()[1]) is True
    assert listening
    free = listening[0].getsockname()[1]
    for server in listening:
        server.close()
    assert procutil.port_open("localhost", free) is False
