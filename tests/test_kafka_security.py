"""costline's Kafka clients against a cluster that wants TLS and SASL, as managed clusters do.

A real Apache Kafka broker (the same jars as every Kafka test) with three client listeners: SASL_SSL (PLAIN,
SCRAM-SHA-256 and SCRAM-SHA-512 users), SSL with client certificates required (mutual TLS), and PLAINTEXT for
nothing but starting it and creating the SCRAM users. Its certificates come from a CA this module makes with
``cryptography``. Spans go the way an app's do — the OTel SDK, costline's exporter or its OTLP receiver and
forwarder, the secured listener, ``costline process`` — and the lake must hold every one of them; the expected
counts are the spans the SDK recorded. The config checks below are table-driven and need no broker.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from test_processor_kafka import read_topic

from costline.collectors import KafkaForwarder, KafkaSpanExporter, OtlpReceiver, Recorder, setup_tracing
from costline.config import CollectorConfig, Config, KafkaConfig, LakeConfig, ProcessorConfig, load_config
from costline.errors import ConfigError
from costline.kafka_security import client_options
from costline.lake import open_lake
from costline.processors.processor import Processor

PASSWORDS = {"alice": "alice-plain-secret", "scram256": "s256-secret", "scram512": "s512-secret",
             "limited": "limited-secret"}
#: The broker's authorizer lets these do anything; "limited" (SCRAM-SHA-256) logs in but has no ACL at all.
#: "costline-svc" is the OAuth client whose tokens' subject the OAUTHBEARER login names.
SUPER_USERS = ("User:ANONYMOUS;User:alice;User:scram256;User:scram512;User:CN=costline-processor;User:costline-svc;"
               "User:rotated-svc")
#: The OAuth clients of the test's identity provider (tests/oauth_issuer.py): id -> secret. "wrong-audience"'s
#: tokens are for another service, so the broker refuses them; "rotated-svc"'s first token has expired already.
OAUTH_CLIENTS = {"costline-svc": "svc-oauth-secret", "wrong-audience": "wa-secret", "rotated-svc": "rot-secret"}


# -- the config: table-driven, no broker --------------------------------------------------------------------
def _load(tmp_path: Path, kafka_toml: str, env: dict[str, str] | None = None) -> Config:
    path = tmp_path / "costline.toml"
    path.write_text("[kafka]\n" + kafka_toml)
    return load_config(path, env=env or {})


@pytest.mark.parametrize(("toml", "key", "says"), [
    ('security_protocol = "TLS"', "[kafka] security_protocol", "SASL_SSL"),
    ('bootstrap_servers = "k:9093"\nsecurity_protocol = "SASL_SSL"', "[kafka] sasl_username", "SASL user"),
    ('bootstrap_servers = "k:9093"\nsecurity_protocol = "SSL"\nsasl_username = "u"', "[kafka] sasl_username",
     "needs SASL_SSL"),
    ('bootstrap_servers = "k:9093"\nsecurity_protocol = "SASL_SSL"\nsasl_username = "u"\nsasl_mechanism = "GSSAPI"',
     "[kafka] sasl_mechanism", "SCRAM-SHA-512"),
    ('bootstrap_servers = "k:9093"\nsecurity_protocol = "SASL_SSL"\nsasl_username = "u"\nsasl_password_env = ""',
     "[kafka] sasl_password_env", "environment variable"),
    ('bootstrap_servers = "k:9093"\nssl_cafile = "CA"', "[kafka] ssl_cafile", "security_protocol is PLAINTEXT"),
    ('bootstrap_servers = "k:9093"\nsecurity_protocol = "SSL"\nssl_keyfile = "CA"', "[kafka] ssl_keyfile",
     "without ssl_certfile"),
])
def test_a_security_mistake_names_its_key(tmp_path, toml, key, says) -> None:
    (tmp_path / "CA").write_text("pem")
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, toml.replace('"CA"', repr(str(tmp_path / "CA")).replace("'", '"')))
    assert err.value.key == key and says in err.value.problem, str(err.value)


@pytest.mark.parametrize(("toml", "key", "says"), [
    ('security_protocol = "SASL_SSL"\nsasl_username = "u"', "[kafka] security_protocol", "local broker"),
    ('bootstrap_servers = "k:9093"\nsecurity_protocol = "SSL"\nssl_cafile = "/nonexistent/ca.pem"',
     "[kafka] ssl_cafile", "can read"),
    ('bootstrap_servers = "k:9093"\nsecurity_protocol = "SSL"\nssl_certfile = "CA"\nssl_key_password_env = "NOPE"',
     "[kafka] ssl_key_password_env", "NOPE"),
])
def test_what_depends_on_the_machine_is_checked_when_a_client_is_made(tmp_path, toml, key, says) -> None:
    """A config written for the servers loads anywhere (an analyst's `costline sql` never makes a Kafka client);
    the TLS files, an existing cluster and the secrets' variables are checked when a client is made."""
    (tmp_path / "CA").write_text("pem")
    cfg = _load(tmp_path, toml.replace('"CA"', repr(str(tmp_path / "CA")).replace("'", '"')))
    with pytest.raises(ConfigError) as err:
        client_options(cfg.kafka, {})
    assert err.value.key == key and says in err.value.problem, str(err.value)


def test_the_environment_sets_the_security_keys_and_the_secret_stays_in_its_variable(tmp_path) -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": "k:9093", "COSTLINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
           "COSTLINE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "COSTLINE_KAFKA_SASL_USERNAME": "svc-costline",
           "COSTLINE_KAFKA_SSL_CHECK_HOSTNAME": "false", "KAFKA_SASL_PASSWORD": "hunter2"}
    cfg = _load(tmp_path, 'security_protocol = "PLAINTEXT"\n', env)
    assert client_options(cfg.kafka, env) == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "svc-costline",
        "sasl_plain_password": "hunter2", "ssl_check_hostname": False}
    assert "hunter2" not in repr(cfg)
    with pytest.raises(ConfigError) as err:  # the variable unset where a client is made
        client_options(cfg.kafka, {})
    assert err.value.key == "[kafka] sasl_password_env" and "KAFKA_SASL_PASSWORD" in err.value.problem
    assert client_options(KafkaConfig()) == {}  # PLAINTEXT: kafka-python's defaults, nothing added


def test_the_alert_sources_dlq_count_refuses_an_unset_secret_at_start(monkeypatch) -> None:
    """`costline alerts` with the DLQ rule on a SASL cluster whose password variable is unset: an error naming
    the key when the service starts, not a warning on every tick."""
    from costline.alerts.source import kafka_dlq_counter

    monkeypatch.delenv("KAFKA_SASL_PASSWORD", raising=False)
    kafka = KafkaConfig(bootstrap_servers="k:9093", security_protocol="SASL_SSL", sasl_username="svc")
    with pytest.raises(ConfigError) as err:
        kafka_dlq_counter(kafka)
    assert err.value.key == "[kafka] sasl_password_env"


# -- a real broker that wants TLS and SASL ---------------------------------------------------------------------
@dataclass(frozen=True)
class SecureBroker:
    plaintext: str
    sasl_ssl: str
    mtls: str
    ca: Path
    client_cert: Path
    client_key: Path
    oauth: Any  # tests/oauth_issuer.OAuthIssuer

    def config(self, protocol: str, *, mechanism: str = "PLAIN", user: str = "", password_env: str = "",
               cert: bool = True) -> KafkaConfig:
        suffix = uuid.uuid4().hex[:8]
        base = KafkaConfig(bootstrap_servers=self.sasl_ssl if protocol == "SASL_SSL" else self.mtls,
                           topic=f"otlp_spans_{suffix}", dlq_topic=f"otlp_spans_{suffix}.dlq", partitions=3,
                           security_protocol=protocol, ssl_cafile=self.ca)
        if protocol == "SASL_SSL" and mechanism == "OAUTHBEARER":  # ``user`` is the OAuth client
            return dataclasses.replace(base, sasl_mechanism=mechanism, sasl_oauth_token_url=self.oauth.token_url,
                                       sasl_oauth_client_id=user, sasl_oauth_client_secret_env=password_env,
                                       sasl_oauth_scope="kafka")
        if protocol == "SASL_SSL":
            return dataclasses.replace(base, sasl_mechanism=mechanism, sasl_username=user,
                                       sasl_password_env=password_env)
        return dataclasses.replace(base, ssl_certfile=self.client_cert if cert else None,
                                   ssl_keyfile=self.client_key if cert else None)


def _certificates(folder: Path) -> tuple[Path, Path, Path, Path]:
    """A CA, the broker's certificate (127.0.0.1 and localhost) with its key, and a client's: PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def issue(subject: str, key, issuer_key, issuer: x509.Name, *, ca: bool = False, san=None, usage=None):
        b = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(issuer)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        if usage:
            b = b.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        if ca:
            b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                              content_commitment=False, key_encipherment=False,
                                              data_encipherment=False, key_agreement=False, encipher_only=False,
                                              decipher_only=False), critical=True)
        return b.sign(issuer_key, hashes.SHA256())

    def pem_key(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    def pem(cert) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue("costline test CA", ca_key, ca_key, name("costline test CA"), ca=True)
    broker_key = ec.generate_private_key(ec.SECP256R1())
    broker = issue("localhost", broker_key, ca_key, ca.subject,
                   san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
                   usage=[ExtendedKeyUsageOID.SERVER_AUTH])
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = issue("costline-processor", client_key, ca_key, ca.subject, usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
    paths = folder / "ca.pem", folder / "broker.pem", folder / "client.pem", folder / "client.key"
    paths[0].write_bytes(pem(ca))
    paths[1].write_bytes(pem_key(broker_key) + pem(broker) + pem(ca))  # Kafka's PEM key store: key, then chain
    paths[2].write_bytes(pem(client))
    paths[3].write_bytes(pem_key(client_key))
    return paths


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory) -> Iterator[SecureBroker]:
    from kafka.admin import KafkaAdminClient, ScramMechanism, UserScramCredentialUpsertion

    from costline.localkafka import LocalKafka

    from oauth_issuer import OAuthIssuer

    folder = tmp_path_factory.mktemp("secure-kafka")
    ca, broker_pem, client_cert, client_key = _certificates(folder)
    oauth = OAuthIssuer(folder, OAUTH_CLIENTS, audiences={"wrong-audience": "another-service"},
                        stale_first=frozenset({"rotated-svc"})).start()
    jwks = oauth.jwks_file.as_uri()
    plain, sasl, mtls = free_port(), free_port(), free_port()
    cfg = KafkaConfig(port=plain, controller_port=free_port(), data_dir=folder / "data", heap="384m", partitions=3)
    jaas = "org.apache.kafka.common.security"
    users = " ".join(f'user_{u}="{p}"' for u, p in PASSWORDS.items() if u == "alice")
    broker = LocalKafka(cfg, extra_properties={
        "listeners": f"PLAINTEXT://127.0.0.1:{plain},SASL_SSL://127.0.0.1:{sasl},SSL://127.0.0.1:{mtls},"
                     f"CONTROLLER://127.0.0.1:{cfg.controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{plain},SASL_SSL://127.0.0.1:{sasl},SSL://127.0.0.1:{mtls}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL,CONTROLLER:PLAINTEXT",
        "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512,OAUTHBEARER",
        # OAUTHBEARER: JSON Web Tokens checked by Kafka's own validator against the identity provider's keys
        "listener.name.sasl_ssl.oauthbearer.sasl.jaas.config": f"{jaas}.oauthbearer.OAuthBearerLoginModule required;",
        "listener.name.sasl_ssl.oauthbearer.sasl.server.callback.handler.class":
            f"{jaas}.oauthbearer.OAuthBearerValidatorCallbackHandler",
        # Kafka 4.1's handler verifies signatures, audience and issuer only with the broker's validator named (and
        # these keys unprefixed: per listener they were not read): its default, DefaultJwtValidator made without a
        # key resolver, falls back to the client-side validator, which lets any well-formed token in, signed by
        # anyone (seen here: a token of a foreign key was accepted)
        "sasl.oauthbearer.jwt.validator.class": "org.apache.kafka.common.security.oauthbearer.BrokerJwtValidator",
        "sasl.oauthbearer.jwks.endpoint.url": jwks,
        "sasl.oauthbearer.expected.audience": oauth.audience,
        "sasl.oauthbearer.expected.issuer": oauth.issuer,
        "listener.name.sasl_ssl.plain.sasl.jaas.config": f"{jaas}.plain.PlainLoginModule required {users};",
        "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config": f"{jaas}.scram.ScramLoginModule required;",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": f"{jaas}.scram.ScramLoginModule required;",
        "listener.name.ssl.ssl.client.auth": "required",
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": SUPER_USERS,
        "ssl.keystore.type": "PEM", "ssl.keystore.location": str(broker_pem),
        "ssl.truststore.type": "PEM", "ssl.truststore.location": str(ca),
    }, jvm_options=[f"-Dorg.apache.kafka.sasl.oauthbearer.allowed.urls={jwks}"])
    try:
        broker.up()
    except BaseException:
        oauth.stop()
        raise
    try:
        admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{plain}")
        try:
            admin.alter_user_scram_credentials([
                UserScramCredentialUpsertion("scram256", ScramMechanism.SCRAM_SHA_256, PASSWORDS["scram256"]),
                UserScramCredentialUpsertion("scram512", ScramMechanism.SCRAM_SHA_512, PASSWORDS["scram512"]),
                UserScramCredentialUpsertion("limited", ScramMechanism.SCRAM_SHA_256, PASSWORDS["limited"])])
        finally:
            admin.close()
        yield SecureBroker(f"127.0.0.1:{plain}", f"127.0.0.1:{sasl}", f"127.0.0.1:{mtls}", ca, client_cert,
                           client_key, oauth)
    finally:
        broker.down()
        oauth.stop()


def _process(kafka: KafkaConfig, tmp_path: Path):
    cfg = Config(kafka=kafka, lake=LakeConfig(path=tmp_path / "lake"),
                 processor=ProcessorConfig(group_id=f"costline-secure-{uuid.uuid4().hex[:8]}",
                                           session_timeout_ms=6000, heartbeat_interval_ms=1000, flush_interval_s=0.5))
    stats = Processor(cfg).run(until_idle=1.0)  # exits once caught up to the end offsets: all was sent before
    with open_lake(cfg) as lake:
        ids = lake.sql("SELECT span_id FROM calls UNION ALL SELECT span_id FROM requests "
                       "UNION ALL SELECT span_id FROM lookups").fetchall()
    return stats, {i for (i,) in ids}


def _record(provider: TracerProvider, n: int) -> None:
    rec = Recorder(provider, env={})
    for i in range(n):
        with rec.request(tenant="acme", task_type="faq") as req:
            with req.cache_lookup(namespace="acme") as lk:
                lk.result(hit=False, similarity=0.31)
            with req.call("anthropic", "claude-haiku-4-5", tier="budget") as call:
                call.usage(120 + i, 17)
            req.accept()


CLIENTS = [
    pytest.param("SASL_SSL", "PLAIN", "alice", id="sasl_ssl-plain"),
    pytest.param("SASL_SSL", "SCRAM-SHA-256", "scram256", id="sasl_ssl-scram-sha-256"),
    pytest.param("SASL_SSL", "SCRAM-SHA-512", "scram512", id="sasl_ssl-scram-sha-512"),
    pytest.param("SASL_SSL", "OAUTHBEARER", "costline-svc", id="sasl_ssl-oauthbearer"),
    pytest.param("SSL", "", "", id="mutual-tls"),
]


@pytest.mark.kafka
@pytest.mark.parametrize(("protocol", "mechanism", "user"), CLIENTS)
def test_an_apps_spans_reach_the_lake_over_the_secured_listener(secure_broker, tmp_path, monkeypatch, protocol,
                                                                 mechanism, user) -> None:
    """The app's exporter writes, topic creation, the processor's consumer and the alert source's DLQ counter all
    reach the broker with the same [kafka] keys; the lake holds exactly the spans the SDK recorded."""
    from costline.alerts.source import kafka_dlq_counter
    from costline.localkafka import LocalKafka, ensure_topics

    monkeypatch.setenv("COSTLINE_TEST_KAFKA_PASSWORD", PASSWORDS.get(user) or OAUTH_CLIENTS.get(user, ""))
    kafka = secure_broker.config(protocol, mechanism=mechanism, user=user, password_env="COSTLINE_TEST_KAFKA_PASSWORD")
    ensure_topics(kafka)
    status = LocalKafka(kafka).status()
    assert status.running and kafka.topic in status.topics
    memory = InMemorySpanExporter()
    provider = setup_tracing("faq-bot", exporter=KafkaSpanExporter(kafka, connect_timeout_s=10.0), set_global=False)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    _record(provider, 5)
    assert provider.force_flush(30_000)
    provider.shutdown()
    sent = {f"{s.context.span_id:016x}" for s in memory.get_finished_spans()}
    assert len(sent) == 15
    stats, stored = _process(kafka, tmp_path)
    assert stored == sent and stats.dlq == 0, stats.describe()
    assert kafka_dlq_counter(kafka)() == 0


@pytest.mark.kafka
def test_the_receiver_forwards_over_sasl_ssl(secure_broker, tmp_path, monkeypatch) -> None:
    """An app's OTLP/HTTP exporter -> costline's receiver -> the SASL_SSL listener -> the lake."""
    from costline.localkafka import ensure_topics

    monkeypatch.setenv("COSTLINE_TEST_KAFKA_PASSWORD", PASSWORDS["scram512"])
    kafka = secure_broker.config("SASL_SSL", mechanism="SCRAM-SHA-512", user="scram512",
                                 password_env="COSTLINE_TEST_KAFKA_PASSWORD")
    ensure_topics(kafka)
    receiver = OtlpReceiver(CollectorConfig(), KafkaForwarder(kafka, produce_timeout_s=15.0, connect_timeout_s=10.0),
                            host="127.0.0.1", port=0)
    receiver.start()
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=receiver.endpoint, timeout=20)))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    try:
        _record(provider, 3)
    finally:
        provider.shutdown()
        receiver.shutdown()
    stats, stored = _process(kafka, tmp_path)
    assert stored == {f"{s.context.span_id:016x}" for s in memory.get_finished_spans()}
    assert len(stored) == 9 and stats.dlq == 0


@pytest.mark.kafka
@pytest.mark.parametrize(("case", "check"), [("wrong password", "sasl_password_env"),
                                           ("no client certificate", "ssl_certfile"),
                                           ("plaintext to a TLS port", "security_protocol"),
                                           ("oauth secret the identity provider refuses", "invalid_client"),
                                           ("oauth token for another audience", "sasl_oauth_token_url")])
def test_a_client_the_cluster_refuses_never_connects_and_says_so(secure_broker, monkeypatch, case, check) -> None:
    """A wrong secret, a missing client certificate or a PLAINTEXT client on a TLS listener: the cluster is
    reported unreachable within the bound (never a hang), and nothing reaches a topic."""
    from costline.localkafka import LocalKafka, diagnose, wait_for_broker
    from costline.errors import KafkaSetupError

    monkeypatch.setenv("COSTLINE_TEST_KAFKA_PASSWORD", "not-the-password")
    monkeypatch.setenv("COSTLINE_TEST_OAUTH_SECRET", OAUTH_CLIENTS["wrong-audience"])
    kafka = {"wrong password": secure_broker.config("SASL_SSL", mechanism="SCRAM-SHA-512", user="scram512",
                                                    password_env="COSTLINE_TEST_KAFKA_PASSWORD"),
             "oauth secret the identity provider refuses": secure_broker.config(
                 "SASL_SSL", mechanism="OAUTHBEARER", user="costline-svc", password_env="COSTLINE_TEST_KAFKA_PASSWORD"),
             "oauth token for another audience": secure_broker.config(  # a valid token, for another service
                 "SASL_SSL", mechanism="OAUTHBEARER", user="wrong-audience", password_env="COSTLINE_TEST_OAUTH_SECRET"),
             "no client certificate": secure_broker.config("SSL", cert=False),
             "plaintext to a TLS port": KafkaConfig(bootstrap_servers=secure_broker.sasl_ssl)}[case]

    def refused() -> str:
        with pytest.raises(KafkaSetupError) as err:
            wait_for_broker(kafka.bootstrap, timeout_s=5.0, security=client_options(kafka))
        return str(err.value)

    started = time.monotonic()
    # the three ways in, side by side: each probe waits out kafka-python's bootstrap timeout, and each probe's
    # client hears only its own refusal (localkafka._Heard), so they need not take turns
    with ThreadPoolExecutor(3) as pool:
        waited, diagnosed, status = (pool.submit(refused),
                                     pool.submit(diagnose, kafka),  # what `costline process` adds to "cannot reach"
                                     pool.submit(LocalKafka(kafka).status))  # `costline kafka status`
        waited, diagnosed, status = waited.result(), diagnosed.result(), status.result()
    assert kafka.bootstrap in waited and check in waited, waited
    assert check in (diagnosed or "")
    assert not status.running and "NOT reachable" in status.describe() and check in status.describe()
    # each failed probe's kafka-python I/O thread was stopped (kafka-python leaves it running when it cannot
    # bootstrap: a gateway retrying a refused login would gain one a try)
    deadline = time.monotonic() + 10  # stopped and joined (2 s each); a loaded machine may take a moment more
    while [t for t in threading.enumerate() if t.name.startswith("kafka-io-costline-probe")]:
        assert time.monotonic() < deadline, "a refused probe left its kafka-python I/O thread running"
        time.sleep(0.1)
    assert time.monotonic() - started < 60



@pytest.mark.kafka
def test_a_token_the_broker_refuses_is_replaced_at_the_next_login_not_after_its_hour(secure_broker,
                                                                                  monkeypatch) -> None:
    """The collector's producer logs in with a token the identity provider says is good for an hour but the broker
    refuses (expired by its own ``exp``: as a revoked token or a rotated signing key): the refusal drops it, and the
    producer's next login (kafka-python's own retry) carries a new one and forwards, within seconds rather than after
    48 minutes of refused logins."""
    from costline.collectors.errors import KafkaUnavailable
    from costline.localkafka import ensure_topics

    monkeypatch.setenv("COSTLINE_TEST_OAUTH_SECRET", OAUTH_CLIENTS["costline-svc"])
    monkeypatch.setenv("COSTLINE_TEST_OAUTH_ROTATED", OAUTH_CLIENTS["rotated-svc"])
    svc = secure_broker.config("SASL_SSL", mechanism="OAUTHBEARER", user="costline-svc",
                               password_env="COSTLINE_TEST_OAUTH_SECRET")
    ensure_topics(svc)
    kafka = dataclasses.replace(svc, sasl_oauth_client_id="rotated-svc",
                                sasl_oauth_client_secret_env="COSTLINE_TEST_OAUTH_ROTATED")
    forwarder = KafkaForwarder(kafka, produce_timeout_s=5.0, connect_timeout_s=3.0)
    started, refused = time.monotonic(), 0
    try:
        while True:
            try:
                forwarder.forward([("k", b"after the refusal")])
                break
            except KafkaUnavailable:
                refused += 1
                assert time.monotonic() - started < 45, "the refused token was never replaced"
                time.sleep(0.5)
        provider = forwarder._producer._settings["sasl_oauth_token_provider"]
        # kafka-python's own retry of the bootstrap login (its backoff: 50 ms) already carries the new token
        assert provider.refusals >= 1 and provider.fetches == 2, (provider.refusals, provider.fetches, refused)
    finally:
        forwarder.close()
    # the forwarder is closed: every record it wrote is below the end offsets
    assert [m.value for m in read_topic(svc.bootstrap, kafka.topic, **client_options(svc))] == [b"after the refusal"]


@pytest.mark.kafka
def test_the_collector_says_why_the_cluster_refuses_it_once_not_every_retry(secure_broker, monkeypatch,
                                                                           caplog) -> None:
    """`costline collect` with a wrong password: apps get 503 (never a hang), and the collector's log names the
    refused login and the keys to check once, not only "unreachable" every retry."""
    import logging

    from costline.collectors.errors import KafkaUnavailable

    monkeypatch.setenv("COSTLINE_TEST_KAFKA_PASSWORD", "not-the-password")
    kafka = secure_broker.config("SASL_SSL", mechanism="SCRAM-SHA-512", user="scram512",
                                 password_env="COSTLINE_TEST_KAFKA_PASSWORD")
    forwarder = KafkaForwarder(kafka, produce_timeout_s=2.0, connect_timeout_s=2.0)
    try:
        with caplog.at_level(logging.WARNING, logger="costline.collectors.producer"):
            for _ in range(2):
                with pytest.raises(KafkaUnavailable):
                    forwarder.forward([("k", b"v")])
            explainer = forwarder._producer._explainer
            assert explainer is not None
            explainer.join(30)
        said = [r for r in caplog.records if r.name == "costline.collectors.producer"]
        assert [r.levelname for r in said] == ["WARNING", "ERROR"], [r.getMessage() for r in said]
        assert "sasl_password_env" in said[1].getMessage()
    finally:
        forwarder.close()


@pytest.mark.kafka
def test_cache_replicas_share_stores_over_sasl_ssl(secure_broker, monkeypatch) -> None:
    """Two gateway caches replicating over the SASL_SSL listener with [kafka]'s keys: a store on one is served by
    the other (its topic created, produced and read with the same login)."""
    import numpy as np

    from costline.serving.cache.semantic import SemanticCache
    from costline.serving.settings import CacheConfig

    monkeypatch.setenv("COSTLINE_TEST_KAFKA_PASSWORD", PASSWORDS["scram256"])
    kafka = secure_broker.config("SASL_SSL", mechanism="SCRAM-SHA-256", user="scram256",
                                 password_env="COSTLINE_TEST_KAFKA_PASSWORD")
    topic = f"cache-secure-{uuid.uuid4().hex[:8]}"
    vector = np.zeros(8, dtype=np.float32)
    vector[3] = 1.0
    caches = [SemanticCache(None, CacheConfig(mode="threshold", threshold=0.99, ttl_s=0, replication_topic=topic,
                                              replica_id=f"r{i}", replication_snapshot_interval_s=0),
                            dim=8, kafka=kafka) for i in range(2)]
    for c in caches:
        c.start()
    try:
        for c in caches:
            assert c.replication is not None and c.replication.wait_ready(30)
        caches[0].store_vector(vector, "the refund answer", tenant="acme", namespace="billing", query="refunds?")
        deadline = time.monotonic() + 30
        while caches[1].lookup_vector(vector, tenant="acme", namespace="billing") is None:
            assert time.monotonic() < deadline, "the store never reached the other replica"
            time.sleep(0.05)
        assert caches[1].lookup_vector(vector, tenant="acme", namespace="billing").answer == "the refund answer"
    finally:
        for c in caches:
            c.shutdown()


@pytest.mark.kafka
def test_a_login_without_the_acl_to_create_topics_is_told_what_to_create(secure_broker, monkeypatch) -> None:
    """A managed cluster's service account that may not create topics: `costline kafka up` (ensure_topics) says
    which topics with how many partitions to have created, or which ACLs to grant — not a bare error code."""
    from costline.errors import KafkaSetupError
    from costline.localkafka import ensure_topics

    monkeypatch.setenv("COSTLINE_TEST_KAFKA_PASSWORD", PASSWORDS["limited"])
    kafka = secure_broker.config("SASL_SSL", mechanism="SCRAM-SHA-256", user="limited",
                                 password_env="COSTLINE_TEST_KAFKA_PASSWORD")
    with pytest.raises(KafkaSetupError) as err:
        ensure_topics(kafka)
    said = str(err.value)
    assert "limited" in said and f"'{kafka.topic}' (3 partitions)" in said and "grant CREATE" in said, said


@pytest.mark.kafka
def test_costline_process_without_read_acls_says_what_to_grant(secure_broker, tmp_path, monkeypatch) -> None:
    """`costline process` as an account that may log in but not read: the group, topics and ACLs to grant, not a
    traceback."""
    from click.testing import CliRunner

    from costline.cli import _register_area_commands, cli
    from costline.localkafka import ensure_topics

    monkeypatch.setenv("COSTLINE_TEST_KAFKA_PASSWORD", PASSWORDS["scram512"])
    kafka = secure_broker.config("SASL_SSL", mechanism="SCRAM-SHA-512", user="scram512",
                                 password_env="COSTLINE_TEST_KAFKA_PASSWORD")
    ensure_topics(kafka)  # made by an account that may
    _register_area_commands()
    (tmp_path / "costline.toml").write_text("")
    env = {"COSTLINE_CONFIG": str(tmp_path / "costline.toml"), "KAFKA_BOOTSTRAP_SERVERS": secure_broker.sasl_ssl,
           "COSTLINE_KAFKA_TOPIC": kafka.topic, "COSTLINE_KAFKA_DLQ_TOPIC": kafka.dlq_topic,
           "COSTLINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "COSTLINE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
           "COSTLINE_KAFKA_SASL_USERNAME": "limited", "KAFKA_SASL_PASSWORD": PASSWORDS["limited"],
           "COSTLINE_KAFKA_SSL_CAFILE": str(secure_broker.ca), "COSTLINE_LAKE_PATH": str(tmp_path / "lake"),
           "COSTLINE_PROCESSOR_GROUP_ID": "costline-limited"}
    result = CliRunner().invoke(cli, ["process", "--until-idle", "2"], env=env)
    assert result.exit_code == 1, result.output
    assert "refused limited" in result.output and "READ on consumer group 'costline-limited'" in result.output
    assert kafka.topic in result.output and "Traceback" not in result.output
