"""A local, single-node Apache Kafka broker (KRaft, combined broker + controller).

``costline kafka up`` fetches ``org.apache.kafka:kafka_2.13`` and its runtime
dependencies from Maven Central with Maven into a cache folder outside the
repository (``[kafka] home``; Maven's own download cache is ``~/.m2``, or ``<[kafka] home>/m2`` when that
cannot be written), formats KRaft storage once (``[kafka] data_dir``), starts the broker on
loopback, waits until it answers metadata requests and creates the topics.
``up`` is idempotent; ``down`` stops it; ``status`` tells what runs where.

With ``KAFKA_BOOTSTRAP_SERVERS`` set nothing is fetched or started: the
topics are created on that cluster if missing.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from costline.config import KafkaConfig
from costline.fsutil import cannot_write
from costline.errors import CostlineError, KafkaSetupError
from costline.kafka_security import client_options, make_client
from costline.procutil import pid_alive as _pid_alive
from costline.procutil import port_open as _port_open

__all__ = ["LocalKafka", "KafkaStatus", "diagnose", "ensure_topics", "wait_for_broker"]

log = logging.getLogger(__name__)

_SLF4J_BINDING = ("org.apache.logging.log4j", "log4j-slf4j-impl", "2.24.3")
_JAVA_HINT = (
    "install a Java 17+ runtime (e.g. `apt-get install openjdk-17-jre-headless`) "
    "or set KAFKA_BOOTSTRAP_SERVERS to an existing Kafka cluster"
)
_MAVEN_HINT = (
    "install Maven (e.g. `apt-get install maven`) so costline can fetch Kafka from Maven Central, "
    "or set KAFKA_BOOTSTRAP_SERVERS to an existing Kafka cluster"
)


@dataclass(frozen=True)
class KafkaStatus:
    bootstrap: str
    external: bool
    running: bool
    pid: int | None
    data_dir: Path | None
    jars: Path | None
    topics: tuple[str, ...] = ()
    #: Why an external cluster is not reachable (its refusal and the [kafka] keys to check), when it is not.
    problem: str | None = None

    def describe(self) -> str:
        if self.external:
            state = "reachable" if self.running else f"NOT reachable: {self.problem or 'no metadata'}"
            return f"external cluster {self.bootstrap} ({state}); nothing is run locally"
        if not self.running:
            return f"local broker not running (would listen on {self.bootstrap}; data in {self.data_dir})"
        topics = ", ".join(self.topics) or "none"
        return (
            f"local broker running: pid {self.pid}, {self.bootstrap}\n"
            f"  data: {self.data_dir}\n  jars: {self.jars}\n  topics: {topics}"
        )


class LocalKafka:
    """Lifecycle of the local broker described by a :class:`KafkaConfig`."""

    def __init__(
        self,
        config: KafkaConfig,
        *,
        extra_properties: Mapping[str, str] | None = None,
        jvm_options: Sequence[str] = (),
        now: Callable[[], float] = time.monotonic,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.extra_properties = dict(extra_properties or {})
        #: Extra JVM options of the broker (``-Dorg.apache.kafka.sasl.oauthbearer.allowed.urls=…``).
        self.jvm_options = tuple(jvm_options)
        self._now = now
        self._progress = progress or (lambda msg: log.info("%s", msg))

    # -- paths ----------------------------------------------------------------
    @property
    def jars_dir(self) -> Path:
        return self.config.jars_home / self.config.version / "libs"

    @property
    def data_dir(self) -> Path:
        return self.config.state_dir

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.out"

    # -- lifecycle --------------------------------------------------------------
    def up(self) -> KafkaStatus:
        """Start the broker if it is not running, then make sure the topics exist."""
        cfg = self.config
        if cfg.external:
            wait_for_broker(cfg.bootstrap, timeout_s=cfg.start_timeout_s, now=self._now, security=client_options(cfg))
            ensure_topics(cfg)
            return self.status()
        pid = self._running_pid()
        if pid is None:
            if _port_open(cfg.host, cfg.port):
                raise KafkaSetupError(
                    f"port {cfg.host}:{cfg.port} is taken by another program: stop it, set "
                    "[kafka] port (COSTLINE_KAFKA_PORT) to a free port, or point "
                    "KAFKA_BOOTSTRAP_SERVERS at that cluster if it is Kafka"
                )
            _require_java()
            self.fetch()
            self._format()
            self._start()
        else:
            self._progress(f"Kafka already running (pid {pid}) on {cfg.bootstrap}")
        wait_for_broker(cfg.bootstrap, timeout_s=cfg.start_timeout_s, now=self._now, alive=self._alive_check)
        ensure_topics(cfg)
        return self.status()

    def down(self, timeout_s: float = 30.0) -> bool:
        """Stop the local broker; True if one was running."""
        if self.config.external:
            return False
        pid = self._running_pid()
        if pid is None:
            return False
        self._progress(f"stopping Kafka (pid {pid})")
        _signal_group(pid, signal.SIGTERM)
        deadline = self._now() + timeout_s
        while self._now() < deadline and _pid_alive(pid):
            time.sleep(0.2)
        if _pid_alive(pid):
            _signal_group(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True

    def status(self) -> KafkaStatus:
        cfg = self.config
        if cfg.external:
            security = client_options(cfg)
            failed = _probe(cfg.bootstrap, security)
            return KafkaStatus(cfg.bootstrap, True, failed is None, None, None, None,
                               _topics(cfg.bootstrap, security) if failed is None else (),
                               None if failed is None else failed[0])
        pid = self._running_pid()
        topics = _topics(cfg.bootstrap) if pid and _port_open(cfg.host, cfg.port) else ()
        return KafkaStatus(cfg.bootstrap, False, pid is not None, pid, self.data_dir, self.jars_dir, topics)

    # -- steps ---------------------------------------------------------------------
    def fetch(self) -> Path:
        """Fetch the broker's jars with Maven (once per version)."""
        libs = self.jars_dir
        marker = libs / ".complete"
        if marker.exists():
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaSetupError(f"Maven (mvn) not found: {_MAVEN_HINT}")
        self._progress(f"fetching Apache Kafka {self.config.version} from Maven Central into {libs} (once)")
        _make_writable_dir(libs.parent, _HOME_FIX)
        g, a, v = _SLF4J_BINDING
        pom = f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.costline</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{self.config.version}</version></dependency>
    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version></dependency>
  </dependencies>
</project>
"""
        with tempfile.TemporaryDirectory(prefix="costline-kafka-") as tmp:
            staging = Path(tmp) / "libs"
            (Path(tmp) / "pom.xml").write_text(pom)
            cmd = [mvn, "-q", "-B", "dependency:copy-dependencies", f"-DoutputDirectory={staging}",
                   "-DincludeScope=runtime", *self._maven_repo_option()]
            proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
            if proc.returncode != 0:
                tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
                raise KafkaSetupError(
                    f"Maven could not fetch org.apache.kafka:kafka_2.13:{self.config.version}:\n  "
                    + "\n  ".join(tail)
                    + "\ncheck network access to Maven Central or [kafka] version, "
                    "or set KAFKA_BOOTSTRAP_SERVERS to an existing cluster"
                )
            if libs.exists():
                shutil.rmtree(libs)
            shutil.move(str(staging), libs)
        marker.write_text(self.config.version)
        return libs

    def _maven_repo_option(self) -> list[str]:
        """Maven's own download cache: its default (``~/.m2/repository``, shared with other builds) when that
        can be written; else ``<[kafka] home>/m2`` (``-Dmaven.repo.local``), so a user whose HOME is read-only or
        absent but who set ``[kafka] home`` or XDG_CACHE_HOME can still fetch."""
        try:
            default = Path.home() / ".m2" / "repository"
        except RuntimeError:  # no home directory
            default = None
        if default is not None and cannot_write(default) is None:
            return []
        own = self.config.jars_home / "m2"
        _make_writable_dir(own, _HOME_FIX)
        return [f"-Dmaven.repo.local={own}"]

    def _write_properties(self) -> Path:
        cfg = self.config
        logs = self.data_dir / "log-segments"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{cfg.host}:{cfg.controller_port}",
            "listeners": f"PLAINTEXT://{cfg.host}:{cfg.port},CONTROLLER://{cfg.host}:{cfg.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{cfg.host}:{cfg.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(logs),
            "num.partitions": str(cfg.partitions),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Group joins take seconds, not the default wait for more members.
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            **self.extra_properties,
        }
        path = self.data_dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        log4j = self.data_dir / "log4j2.properties"
        log4j.write_text(
            "status = warn\n"
            "appender.file.type = File\nappender.file.name = FILE\n"
            f"appender.file.fileName = {self.data_dir / 'server.log'}\n"
            "appender.file.layout.type = PatternLayout\n"
            "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = warn\nrootLogger.appenderRef.file.ref = FILE\n"
            "logger.kafka.name = kafka.server.KafkaRaftServer\nlogger.kafka.level = info\n"
        )
        return path

    def _java_cmd(self, main: str, *args: str) -> list[str]:
        return [
            _java(), f"-Xmx{self.config.heap}", f"-Xms{self.config.heap}",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}", *self.jvm_options,
            "-cp", f"{self.jars_dir}/*", main, *args,
        ]

    def _format(self) -> None:
        _make_writable_dir(self.data_dir, _DATA_FIX)
        props = self._write_properties()
        if (self.data_dir / "log-segments" / "meta.properties").exists():
            return
        self._progress(f"formatting KRaft storage in {self.data_dir}")
        cluster_id = _kraft_cluster_id()
        proc = subprocess.run(
            self._java_cmd("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)),
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise KafkaSetupError(
                f"formatting Kafka storage in {self.data_dir} failed:\n{proc.stdout}{proc.stderr}\n"
                f"remove {self.data_dir} if it is left from another Kafka version, then run `costline kafka up` again"
            )

    def _start(self) -> None:
        cfg = self.config
        self._progress(f"starting Kafka {cfg.version} on {cfg.bootstrap}")
        out = open(self.log_file, "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(
                self._java_cmd("kafka.Kafka", str(self.data_dir / "server.properties")),
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=self.data_dir,
            )
        finally:
            out.close()
        self.pid_file.write_text(str(proc.pid))

    def _running_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def _alive_check(self) -> None:
        if self._running_pid() is None:
            tail = ""
            for name in ("broker.out", "server.log"):
                path = self.data_dir / name
                if path.exists():
                    tail += "".join(path.read_text(errors="replace").splitlines(keepends=True)[-20:])
            raise KafkaSetupError(f"the Kafka broker exited while starting; last log lines:\n{tail}")


#: What to set when the jars' folder / the broker's data folder cannot be written.
_HOME_FIX = "set [kafka] home (COSTLINE_KAFKA_HOME) or XDG_CACHE_HOME to a folder this user can write"
_DATA_FIX = "set [kafka] data_dir (COSTLINE_KAFKA_DATA_DIR) or XDG_STATE_HOME to a folder this user can write"


def _make_writable_dir(folder: Path, fix: str) -> None:
    """Create ``folder`` if missing; KafkaSetupError naming it, why and ``fix`` when it cannot be created or written."""
    why = cannot_write(folder)
    if why is not None:
        raise KafkaSetupError(f"cannot write in {folder} ({why}): {fix}")


def ensure_topics(config: KafkaConfig) -> None:
    """Create ``topic`` and ``dlq_topic`` if they do not exist (on any cluster); KafkaSetupError when the cluster
    does not let this client create them (ACLs), saying what to create instead."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import ClusterAuthorizationFailedError, TopicAlreadyExistsError, TopicAuthorizationFailedError

    admin = make_client(KafkaAdminClient, bootstrap_servers=config.bootstrap, client_id="costline-admin",
                        **client_options(config))
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(config.topic, num_partitions=config.partitions, replication_factor=config.replication_factor),
            NewTopic(config.dlq_topic, num_partitions=1, replication_factor=config.replication_factor),
        ]
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
            except (TopicAuthorizationFailedError, ClusterAuthorizationFailedError) as exc:
                user = config.sasl_username or "this client's principal"
                raise KafkaSetupError(
                    f"the cluster at {config.bootstrap} does not let {user} create "
                    + " and ".join(f"{t.name!r} ({t.num_partitions} partitions)" for t in missing)
                    + f" ({type(exc).__name__}): have them created, or grant CREATE on them (and READ, WRITE, "
                    "DESCRIBE on the topics, READ on costline's consumer groups)") from None
    finally:
        admin.close()


def wait_for_broker(
    bootstrap: str,
    *,
    timeout_s: float = 60.0,
    now: Callable[[], float] = time.monotonic,
    alive: Callable[[], None] | None = None,
    security: Mapping[str, Any] | None = None,
) -> None:
    """Block until the cluster answers a metadata request, or raise KafkaSetupError (``security``: the cluster's
    :func:`~costline.kafka_security.client_options`)."""
    deadline = now() + timeout_s
    last: str | None = None
    told = 0  # probes that heard the cluster refuse this client (kept over a later probe's bare timeout)
    while now() < deadline and told < 2:  # refused twice: waiting longer will not change the password
        if alive is not None:
            alive()
        failed = _probe(bootstrap, security)
        if failed is None:
            return
        if failed[1] or not told:
            last = failed[0]
        told += failed[1]
        time.sleep(0.5)
    if told >= 2:
        raise KafkaSetupError(f"Kafka at {bootstrap} refused this client: {last}")
    raise KafkaSetupError(
        f"Kafka at {bootstrap} did not answer within {timeout_s:.0f}s ({last or 'no metadata'}): "
        "check `costline kafka status` and the broker log"
    )


def diagnose(config: KafkaConfig, *, attempts: int = 3) -> str | None:
    """Why ``config``'s cluster does not answer (a refused login or TLS handshake names the [kafka] keys to
    check), or None when it does: for the error an operator reads. Up to ``attempts`` probes of ~3 s, until one
    hears the cluster refuse (kafka-python does not always read the refusal before the connection closes)."""
    try:
        security = client_options(config)
    except CostlineError as exc:  # a secret's variable unset
        return str(exc)
    why = None
    for _ in range(max(attempts, 1)):
        failed = _probe(config.bootstrap, security)
        if failed is None:
            return None
        why = failed[0]
        if failed[1]:
            break
    return why


def _probe(bootstrap: str, security: Mapping[str, Any] | None = None) -> tuple[str, bool] | None:
    """None when the cluster answers a metadata request; otherwise why not, for the operator, and whether that is
    the cluster refusing this client's login or TLS handshake. kafka-python reports
    a refused login or handshake only in its log (its error is a bootstrap timeout): what it logs meanwhile is
    read for the cause."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    host, _, port = bootstrap.split(",")[0].rpartition(":")
    if not _port_open(host or "127.0.0.1", int(port or 9092)):
        return "nothing listens there", False
    client_id = f"costline-probe-{uuid.uuid4().hex[:8]}"
    # what this probe's client logs only: its I/O thread's lines (kafka-python names it after the client) and the
    # probing thread's, never another client's refusal in the same process meanwhile
    heard = _Heard({f"kafka-io-{client_id}"}, threading.get_ident())
    kafka_log = logging.getLogger("kafka")
    kafka_log.addHandler(heard)
    try:
        admin = make_client(KafkaAdminClient, bootstrap_servers=bootstrap, request_timeout_ms=3000,
                            bootstrap_timeout_ms=3000, client_id=client_id, **dict(security or {}))
        try:
            admin.describe_cluster()
            return None
        finally:
            admin.close()
    except (KafkaError, OSError, ValueError) as exc:
        return _why(f"{type(exc).__name__}: {exc}", heard.said, security)
    finally:
        kafka_log.removeHandler(heard)


class _Heard(logging.Handler):
    """kafka-python's log lines about a refused login or TLS handshake, while a probe runs: those of the threads named
    ``threads`` and of the thread ``ident`` only."""

    def __init__(self, threads: set[str], ident: int | None) -> None:
        super().__init__(logging.WARNING)
        self.said: list[str] = []
        self._threads = frozenset(threads)
        self._ident = ident

    def emit(self, record: logging.LogRecord) -> None:
        if record.threadName not in self._threads and record.thread != self._ident:
            return  # another client's line
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a log line that cannot be formatted says nothing here
            return
        if (_LOGIN.search(text) or _TLS.search(text)) and len(self.said) < 20:
            self.said.append(text)


#: What kafka-python logs when a cluster refuses a login, or a TLS handshake fails.
_LOGIN = re.compile(r"SaslAuthenticationFailed|Authentication failed|SaslHandshake failed|UnsupportedSaslMechanism|"
                    r"IllegalSaslState|OAuth token endpoint")
_TLS = re.compile(r"\[SSL|SSLError|certificate verify|bad certificate|handshake failure|alert unknown ca",
                  re.IGNORECASE)


def _why(error: str, heard: list[str], security: Mapping[str, Any] | None) -> tuple[str, bool]:
    """A failed probe's error and what kafka-python logged meanwhile, with the [kafka] keys to check; whether the
    cluster refused this client (a login, a TLS handshake)."""
    login = [h for h in heard if _LOGIN.search(h)]
    tls = [h for h in heard if _TLS.search(h)]
    oauth = bool(security) and security.get("sasl_mechanism") == "OAUTHBEARER"
    login_keys = (["sasl_oauth_token_url", "sasl_oauth_client_id", "sasl_oauth_scope",
                   "the client secret in the variable sasl_oauth_client_secret_env names"] if oauth else
                  ["sasl_mechanism", "sasl_username", "the password in the variable sasl_password_env names"])
    if login:
        return f"{login[-1]}; check [kafka] {', '.join(login_keys[:-1])} and {login_keys[-1]}", True
    if tls:
        return (f"{tls[-1]}; check [kafka] security_protocol, ssl_cafile and the client certificate "
                "(ssl_certfile)"), True
    if not security:
        return (f"{error}; if the cluster wants TLS or SASL, set [kafka] security_protocol (PLAINTEXT now) and its "
                "keys"), False
    keys = ["security_protocol", "ssl_cafile"]
    if "sasl_mechanism" in security:  # a broker may close a refused login without saying so to kafka-python
        keys += login_keys
    if "ssl_certfile" in security or security.get("security_protocol") == "SSL":  # it may want a client's
        keys += ["ssl_certfile", "ssl_keyfile"]
    return (f"{error}; if the address is right, the cluster may have closed the TLS handshake or the login "
            f"without a reason: check [kafka] {', '.join(keys)}"), False


def _topics(bootstrap: str, security: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = make_client(KafkaAdminClient, bootstrap_servers=bootstrap, request_timeout_ms=3000,
                            bootstrap_timeout_ms=3000, **dict(security or {}))
        try:
            return tuple(sorted(t for t in admin.list_topics() if not t.startswith("__")))
        finally:
            admin.close()
    except (KafkaError, OSError):
        return ()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise KafkaSetupError(f"Java not found: {_JAVA_HINT}")
    return java


def _require_java() -> None:
    proc = subprocess.run([_java(), "-version"], capture_output=True, text=True)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', proc.stderr + proc.stdout)
    if not match:
        raise KafkaSetupError(f"cannot tell the Java version ({proc.stderr.strip()[:200]}): {_JAVA_HINT}")
    major = int(match.group(1))
    if major == 1:
        major = int(match.group(2) or 0)
    if major < 17:
        raise KafkaSetupError(f"Kafka 4 needs Java 17 or newer, found Java {major}: {_JAVA_HINT}")


def _kraft_cluster_id() -> str:
    """A KRaft cluster id (base64url of a UUID), never starting with '-' (the tool reads that as an option)."""
    import base64

    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid
