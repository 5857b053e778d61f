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
