"""One config object for all of costline: a TOML file plus environment variables.

Precedence, highest first: environment variables, the TOML file, defaults.

* the file is ``--config PATH`` on the CLI, else ``$COSTLINE_CONFIG``, else
  ``./costline.toml`` when it exists; no file at all is fine;
* every scalar key ``[section] key`` can be set as ``COSTLINE_SECTION_KEY``
  (e.g. ``COSTLINE_LAKE_PATH``, ``COSTLINE_KAFKA_PORT``); a list is comma-separated (``a,b``) or a JSON
  array of strings (``["a","b"]``: a value starting with ``[``); tables (``[[pricing.models]]``, a
  ``key = value`` table) have no environment form. A ``COSTLINE_*`` variable that looks like a key
  but names none (a typo, ``__`` for ``_``, a table) is ignored with a warning naming the closest key. A variable
  set but empty (or blank) is an error naming it, never a cleared key (an empty list is ``[]``); the one exception is
  ``COSTLINE_COLLECTOR_GRPC_PORT=`` (unset: no gRPC listener). A bad value from a variable is reported under its name;
* ``COSTLINE_*`` names that are not keys: ``COSTLINE_CONFIG``, the tests' ``COSTLINE_REQUIRE_EXTRAS``,
  ``COSTLINE_CHROMIUM`` and ``COSTLINE_PYTHON``, and any variable a ``*_env`` key names (an API key);
* ``KAFKA_BOOTSTRAP_SERVERS`` points at an existing cluster (nothing is started);
* ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`` turns on content capture.

The core sections are defined here; each area (serving, jobs, alerts, ...) declares its own
section in its ``settings.py`` and is found through :mod:`costline.areas`.

Everything is validated on load: an unknown key, a wrong type or a bad value
raises :class:`~costline.errors.ConfigError` naming the key and what to do. The file is UTF-8, with or
without a BOM; duration and window keys (``*_ms``, ``*_s``, ``*_hours``, ``*_days``) are at most 100 years.
"""

from __future__ import annotations

import codecs
import dataclasses
import difflib
import json
import logging
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from costline import contract
from costline.areas import AREAS, area_sections
from costline.errors import ConfigError
from costline.lazy import import_optional
from costline.timeutil import utc_naive
from costline.validate import Section, is_http_url

if TYPE_CHECKING:  # the areas' own sections (costline.areas finds them at run time)
    from costline.alerts.settings import AlertsConfig
    from costline.dashboards.settings import DashboardConfig
    from costline.distill.settings import DistillConfig
    from costline.jobs.settings import JobsConfig
    from costline.serving.settings import ServingConfig

__all__ = [
    "Config",
    "KafkaConfig",
    "LakeConfig",
    "CollectorConfig",
    "ProcessorConfig",
    "CaptureConfig",
    "PricingConfig",
    "ModelPrice",
    "HostingPeriod",
    "parse_utc",
    "load_config",
    "DEFAULT_MODELS",
]

ENV_CONFIG_FILE = "COSTLINE_CONFIG"
ENV_KAFKA_BOOTSTRAP = "KAFKA_BOOTSTRAP_SERVERS"
ENV_PREFIX = "COSTLINE_"

#: ``COSTLINE_*`` variables read elsewhere that are no config keys: never warned about (nor is a variable that
#: a ``*_env`` key of the loaded config names, e.g. ``[serving.backends] student_api_key_env``).
_ENV_NOT_KEYS = frozenset({
    ENV_CONFIG_FILE,            # the config file (--config)
    "COSTLINE_REQUIRE_EXTRAS",  # tests/conftest.py, scripts/test
    "COSTLINE_CHROMIUM",        # the dashboard's browser tests (docs/dashboard.md)
    "COSTLINE_PYTHON",          # tests/data/recorders
})

log = logging.getLogger(__name__)


def _default_folder(key: str, xdg_var: str, under_home: str) -> Path:
    """``$<xdg_var>/costline`` (``~/<under_home>/costline``): the default of ``key``, worked out when the folder is
    used, not on load, so a process without a home directory (HOME unset and no passwd entry: ``env -i``, an
    arbitrary container UID) loads the config. :class:`ConfigError` naming the key when that default is needed
    and there is no home."""
    base = os.environ.get(xdg_var)
    if base:
        return Path(base) / "costline"
    try:
        return Path.home() / under_home / "costline"
    except RuntimeError:  # Path.home(): HOME unset and no passwd entry for this user
        raise ConfigError(key, f"is unset and its default (${xdg_var}/costline/..., else ~/{under_home}/costline/...) "
                          f"needs a home directory, and there is none (HOME is unset and user id {os.getuid()} has "
                          f"no passwd entry): set {key} or {xdg_var}") from None


@dataclass(frozen=True)
class KafkaConfig:
    #: An existing cluster ("host:port,host:port"); None means costline runs a local broker.
    bootstrap_servers: str | None = None
    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int = 9093
    #: Apache Kafka release fetched from Maven Central (org.apache.kafka:kafka_2.13).
    version: str = "4.1.1"
    #: Where the broker's jars are cached (outside the repository); None: ``$XDG_CACHE_HOME/costline/kafka``
    #: (``~/.cache/costline/kafka``), worked out when the local broker needs it (:attr:`jars_home`).
    home: Path | None = None
    #: Where the local broker keeps its log segments and pid file; None: ``$XDG_STATE_HOME/costline/kafka``
    #: (``~/.local/state/costline/kafka``), worked out when the local broker needs it (:attr:`state_dir`).
    data_dir: Path | None = None
    heap: str = "512m"
    topic: str = "otlp_spans"
    dlq_topic: str = "otlp_spans.dlq"
    partitions: int = 6
    #: Copies of each partition of the topics costline creates: -1 takes the cluster's
    #: ``default.replication.factor`` (1 on the local broker; 3 on most managed clusters, some of which refuse
    #: any other value).
    replication_factor: int = -1
    start_timeout_s: float = 60.0
    # -- an existing cluster's security (costline/kafka_security.py; the local broker speaks PLAINTEXT) --------
    #: PLAINTEXT, SSL (TLS; with ssl_certfile: mutual TLS), SASL_PLAINTEXT or SASL_SSL (SASL over TLS: managed
    #: clusters such as Confluent Cloud, Amazon MSK with SCRAM, Aiven, Redpanda Cloud).
    security_protocol: str = "PLAINTEXT"
    #: With SASL_*: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, as ``sasl_username`` with the password held by the
    #: environment variable ``sasl_password_env`` names (never in the file); or OAUTHBEARER, with a token from
    #: the OAuth 2.0 token endpoint ``sasl_oauth_token_url`` (client credentials: ``sasl_oauth_client_id``, the
    #: secret in the variable ``sasl_oauth_client_secret_env`` names, ``sasl_oauth_scope`` if the provider
    #: wants one; costline/kafka_oauth.py).
    sasl_mechanism: str = "PLAIN"
    sasl_username: str = ""
    sasl_password_env: str = "KAFKA_SASL_PASSWORD"
    sasl_oauth_token_url: str = ""
    sasl_oauth_client_id: str = ""
    sasl_oauth_client_secret_env: str = "KAFKA_OAUTH_CLIENT_SECRET"
    sasl_oauth_scope: str = ""
    #: With SSL / SASL_SSL: the CA bundle (PEM) the brokers' certificates are checked against (unset: the
    #: system's CAs), and for mutual TLS the client's certificate and key (PEM; a key's passphrase in the
    #: variable ``ssl_key_password_env`` names, when it has one). Hostnames are checked unless turned off.
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_key_password_env: str = ""
    ssl_check_hostname: bool = True

    @property
    def jars_home(self) -> Path:
        """``home``, else its default; :class:`~costline.errors.ConfigError` naming ``[kafka] home`` when that
        default needs a home directory and there is none."""
        if self.home is not None:
            return self.home
        return _default_folder("[kafka] home (COSTLINE_KAFKA_HOME)", "XDG_CACHE_HOME", ".cache") / "kafka"

    @property
    def state_dir(self) -> Path:
        """``data_dir``, else its default; :class:`~costline.errors.ConfigError` naming ``[kafka] data_dir`` when
        that default needs a home directory and there is none."""
        if self.data_dir is not None:
            return self.data_dir
        return _default_folder("[kafka] data_dir (COSTLINE_KAFKA_DATA_DIR)", "XDG_STATE_HOME",
                               ".local/state") / "kafka"

    @property
    def bootstrap(self) -> str:
        """The bootstrap servers clients connect to."""
        return self.bootstrap_servers or f"{self.host}:{self.port}"

    @property
    def external(self) -> bool:
        """True when an existing cluster is used and nothing is started locally."""
        return bool(self.bootstrap_servers)


@dataclass(frozen=True)
class LakeConfig:
    path: Path = Path("costline-lake")
    #: "local": Parquet files + offset manifests under ``path`` (one host). "table": Apache Iceberg
    #: tables on S3-compatible storage with a SQL catalog, many hosts (docs/scale.md).
    mode: str = "local"
    # -- table mode (costline/tablelake.py) ------------------------------------------------------
    #: SQLAlchemy URL of the Iceberg SQL catalog (PostgreSQL when several hosts write); None:
    #: ``sqlite:///<objstore_dir>/catalog.db`` (one host).
    catalog_uri: str | None = None
    catalog_name: str = "costline"
    namespace: str = "costline"
    #: Where table data and metadata go (``s3://bucket/prefix``).
    warehouse: str = "s3://costline-lake/warehouse"
    #: S3 endpoint (``http://host:port``); None: the local object store (``costline lake up``).
    s3_endpoint: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str = "costline"
    s3_secret_access_key: str = "costline-local-only"
    #: The local SeaweedFS object store of ``costline lake up``: S3 port and data folder.
    objstore_port: int = 8333
    objstore_dir: Path = Path("costline-objstore")
    #: A table commit that loses the catalog's optimistic-concurrency race re-reads and retries this often.
    commit_retries: int = 30
    #: While the object store or the catalog is unreachable, a table commit / claim / offset read
    #: retries (backoff up to 5 s) for this many seconds, then fails with the error (docs/scale.md).
    outage_retry_s: float = 120.0
    # -- content retention (docs/sql.md, "Erasure and retention") ----------------------------------
    #: Days the prompts and answers (the ``input_messages`` / ``output_messages`` of requests and calls) are kept:
    #: ``costline lake redact`` and ``costline lake compact`` set them to NULL in every day older than this,
    #: keeping every figure. 0: kept forever.
    content_retention_days: int = 0


@dataclass(frozen=True)
class CollectorConfig:
    host: str = "127.0.0.1"
    port: int = 4318
    #: Also receive OTLP/gRPC (``TraceService/Export``, what many SDKs send by default) on this port,
    #: same host, tokens, TLS and limits; None: off (4317 is the convention; set it to turn gRPC on).
    grpc_port: int | None = None
    #: Bodies over this (compressed or not) are refused with 413.
    max_body_bytes: int = 16 * 1024 * 1024
    #: Seconds a client is asked to wait (Retry-After) when Kafka cannot take data.
    retry_after_s: int = 1
    #: How long to wait for Kafka to acknowledge a forwarded request before answering 503. Keep it well
    #: under the senders' export timeout (the OTel SDKs' default is 10 s): a 503 that comes after the
    #: sender gave up is never seen, and the sender drops the batch instead of retrying it.
    produce_timeout_s: float = 3.0
    # -- security (docs/security.md) --------------------------------------------------------------
    #: Accept only requests with ``Authorization: Bearer <token>`` (the OTel Collector's
    #: bearertokenauth): this token and/or the tokens of this file (one a line, re-read on change).
    bearer_token: str | None = None
    bearer_token_file: Path | None = None
    #: Listen beyond loopback without a bearer token (something in front must authenticate).
    allow_insecure: bool = False
    #: HTTPS: PEM certificate chain and private key (both or neither).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    max_header_bytes: int = 32 * 1024
    idle_timeout_s: float = 15.0
    read_timeout_s: float = 10.0
    #: Seconds a whole request body (HTTP, 408 past it) or gRPC message (the call is cancelled) may take
    #: to arrive, however steadily it trickles: a slow sender holds a worker and bytes in flight no longer.
    body_timeout_s: float = 30.0
    #: Requests handled at once, and accepted connections waiting beyond those; past both: 503.
    max_workers: int = 8
    max_pending: int = 32
    #: Request bytes held at once over all requests, counted decompressed plus the parsed spans' objects
    #: (docs/security.md); past it: 503 + Retry-After (back-pressure), 413 for a request that alone is over it.
    max_inflight_bytes: int = 64 * 1024 * 1024
    #: Spans one export request may hold (counted on the wire before parsing); past it: 413.
    max_spans_per_request: int = 100_000
    #: The largest Kafka message the receiver produces (the broker's message.max.bytes and the
    #: producer's max.request.size are 1 MiB by default): traces are grouped into messages up to this.
    max_message_bytes: int = 1_000_000
    # -- metrics (collectors/metrics.py, docs/telemetry.md): GenAI client metrics + costline's own --
    #: Push metrics with the OTLP/HTTP metric exporter every metrics_export_interval_s seconds...
    metrics_otlp: bool = False
    #: ...to this URL (None: $OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, else the exporter's default).
    metrics_otlp_endpoint: str | None = None
    metrics_export_interval_s: float = 60.0
    #: Serve a Prometheus scrape endpoint (http://host:port/metrics; port 0 = any free port).
    metrics_prometheus: bool = False
    metrics_prometheus_host: str = "127.0.0.1"
    metrics_prometheus_port: int = 9464


@dataclass(frozen=True)
class ProcessorConfig:
    group_id: str = "costline-processor"
    #: Write to the lake after this many spans are buffered...
    batch_max_spans: int = 50_000
    #: ...or this many seconds after the first buffered one, whichever comes first. Each flush
    #: writes a file per table and date, so seconds make a lake of tiny files; the alert rules
    #: judge closed hours, so half a minute of delay costs nothing.
    flush_interval_s: float = 30.0
    #: ...or once the buffered messages of a partition hold this many bytes (their Kafka values:
    #: captured prompt text can make 50,000 spans gigabytes).
    batch_max_bytes: int = 64 * 1024 * 1024
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    #: Encoding assumed when a message has no content-type header: "auto", "otlp_proto", "otlp_json".
    encoding: str = "auto"
    #: A span's time counts only within a window around its Kafka record's timestamp (else, for a record
    #: without one, the processor's clock): at most this many days before it... Outside, the row is kept with
    #: ``ts`` NULL (filed under date=1970-01-01) and ``data_quality`` ``ts:out_of_window``: a sender's made-up
    #: times must not write a file per table and day for years of days. 0: no bound.
    span_time_max_age_days: float = 400.0
    #: ...and at most this many seconds after it (clocks run ahead; a day is generous). 0: no bound.
    span_time_max_ahead_s: float = 86_400.0


@dataclass(frozen=True)
class CaptureConfig:
    #: Record prompt and answer text as gen_ai.input.messages / gen_ai.output.messages.
    message_content: bool = False
    #: Truncate each captured message to this many characters.
    max_chars: int = 8_000


@dataclass(frozen=True)
class ModelPrice:
    """One model of the registry: which tier it serves and what a million tokens cost."""

    model: str
    tier: str
    provider: str = contract.PROVIDER_ANTHROPIC
    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0
    aliases: tuple[str, ...] = ()
    #: USD per million input tokens read from the provider's prompt cache; unset: ``input_per_mtok`` x
    #: ``[pricing] cache_read_multiplier`` (Anthropic's 0.1). Set it where the provider discounts otherwise
    #: (Gemini's implicit cache: a quarter of the input price; OpenAI's: a half or a tenth, by model).
    cache_read_per_mtok: float | None = None
    #: USD per million input tokens written to the prompt cache; unset: ``input_per_mtok`` x
    #: ``[pricing] cache_write_multiplier`` (Anthropic's 1.25; providers that charge no write: the input price).
    cache_write_per_mtok: float | None = None
    #: USD per million input tokens written to the prompt cache with a one-hour lifetime (Anthropic's
    #: ``cache_control: {"ttl": "1h"}``); unset: ``input_per_mtok`` x ``[pricing] cache_write_1h_multiplier``
    #: (Anthropic's 2). Those are the part of the cache writes a span reports as
    #: ``anthropic.usage.cache_creation.ephemeral_1h_input_tokens``; the rest price as ``cache_write_per_mtok``.
    cache_write_1h_per_mtok: float | None = None
    #: A long-prompt price band: a call whose input (cache reads and writes included) is over this many tokens
    #: is billed, all of it, at ``long_input_per_mtok`` / ``long_output_per_mtok``, its cached tokens at their
    #: prices scaled as the input's (``long_input_per_mtok / input_per_mtok``). Gemini 2.5 / 3 Pro and Claude's
    #: 1M-token context bill prompts over 200,000 tokens so (about 2 x the input, 1.5 x the output). Unset: one
    #: price whatever the length. The three are set together.
    long_context_above_tokens: int | None = None
    long_input_per_mtok: float | None = None
    long_output_per_mtok: float | None = None
    #: USD per 1,000 web searches the model's server tool makes (Anthropic's ``web_search``); unset:
    #: ``[pricing] web_search_per_1k``.
    web_search_per_1k: float | None = None
    #: Anthropic's fast mode (``speed: "fast"``, Opus models): its calls cost this many times the standard token
    #: prices, prompt caching on top (2 for Opus 5 and 4.8, 6 for 4.6 / 4.7 in 2026). Unset: a fast call of this
    #: model is left unpriced (``pricing_status`` ``no_fast_price``), never priced as a standard one.
    fast_multiplier: float | None = None
    #: OpenAI's priority processing (the answer's ``service_tier: "priority"``): its calls cost this many times the
    #: standard token prices, cached input included (2 for gpt-5 and gpt-5.2, 1.75 for gpt-4.1, 1.8 for gpt-5-mini
    #: in 2026). Unset: a priority call of this model is left unpriced (``no_priority_price``), never guessed.
    priority_multiplier: float | None = None
    #: Anthropic's US-only inference (the answer's ``usage.inference_geo: "us"``): its tokens cost this many
    #: times the global prices; unset: ``[pricing] us_inference_multiplier``.
    us_inference_multiplier: float | None = None
    #: A call of this model through a cloud's regional endpoint (Amazon Bedrock's in-region ids and geography
    #: inference profiles, ``us.anthropic.…``; Google Vertex AI's regional locations, ``us-east5``) costs this many
    #: times the global endpoint's prices. Unset: ``[pricing] regional_endpoint_multiplier`` for Claude models from
    #: Sonnet 4.5 and Haiku 4.5 on (the clouds' global / regional split), 1 for the others. Set 1 on an entry
    #: whose prices already are a region's.
    regional_endpoint_multiplier: float | None = None


#: The article's June 2026 prices (USD per million tokens).
DEFAULT_MODELS: tuple[ModelPrice, ...] = (
    ModelPrice("claude-haiku-4-5", contract.TIER_BUDGET, input_per_mtok=0.80, output_per_mtok=4.0),
    ModelPrice("claude-sonnet-4-6", contract.TIER_MID, input_per_mtok=3.0, output_per_mtok=15.0),
    ModelPrice("claude-opus-4-8", contract.TIER_UPPER, input_per_mtok=5.0, output_per_mtok=25.0),
    ModelPrice("claude-fable-5", contract.TIER_FRONTIER, input_per_mtok=10.0, output_per_mtok=50.0),
)


@dataclass(frozen=True)
class HostingPeriod:
    """One period of the student's GPU hosting (``[[pricing.hosting]]``).

    ``replicas`` GPUs at ``usd_per_hour`` each, from ``since`` (inclusive) until ``until``
    (exclusive): ISO 8601 UTC strings (``"2026-11-01T00:00:00Z"``); an empty ``since`` starts at the
    first student call in the lake, an empty ``until`` runs to the lake's newest span.
    """

    usd_per_hour: float
    replicas: int = 1
    since: str | None = None
    until: str | None = None


@dataclass(frozen=True)
class PricingConfig:
    version: str = "2026-06"
    models: tuple[ModelPrice, ...] = DEFAULT_MODELS
    cache_read_multiplier: float = 0.1
    cache_write_multiplier: float = 1.25
    #: Anthropic's one-hour cache writes (``cache_control: {"ttl": "1h"}``) cost 2 x the input price, the
    #: five-minute ones 1.25 x.
    cache_write_1h_multiplier: float = 2.0
    #: USD per 1,000 web searches a model's server tool makes (Anthropic's list price, and OpenAI's for its web
    #: search tool), on top of the tokens; a model's own ``web_search_per_1k`` wins. Not batch-discounted.
    web_search_per_1k: float = 10.0
    batch_multiplier: float = 0.5
    #: Anthropic's US-only inference (``inference_geo: "us"``, models from February 2026 on) costs 1.1 x the
    #: global token prices, every kind of token; a model's own ``us_inference_multiplier`` wins.
    us_inference_multiplier: float = 1.1
    #: Claude on Amazon Bedrock or Google Vertex AI through a regional endpoint (a Bedrock in-region id or
    #: geography profile such as ``us.anthropic.…``, a Vertex location other than ``global``) costs 1.1 x the global
    #: endpoint's prices, for models from Sonnet 4.5 and Haiku 4.5 on; a model's own
    #: ``regional_endpoint_multiplier`` wins.
    regional_endpoint_multiplier: float = 1.1
    #: The student has no token price: its GPU hosting cost is shared by the requests of each
    #: hour that used it (docs/sql.md). ~$2,000/month A100 (the article). The simplest form of
    #: the schedule: one GPU at this rate over the runs of student calls (``hosting_open_gap_hours``),
    #: used when ``hosting`` is empty. Changing it re-prices history; a dated ``hosting`` schedule does not.
    student_usd_per_hour: float = 2.74
    #: The dated hosting schedule (``[[pricing.hosting]]``); overlapping periods add up.
    hosting: tuple[HostingPeriod, ...] = ()
    #: A period with an open ``since`` (``student_usd_per_hour`` alone is one) bills the hours the student
    #: ran, read off its calls: hours with student calls and the idle hours between two of them at most
    #: this many hours apart (a week: nights and weekends are idle hours of a running GPU). A longer
    #: silence is not billed, so one call stamped years early bills its own hour, not every hour since.
    hosting_open_gap_hours: int = 168
    #: Calls from these providers are served by the self-hosted student.
    student_providers: tuple[str, ...] = (contract.PROVIDER_VLLM,)


#: The sections costline's core owns; the areas add theirs (:func:`section_types`).
_CORE_SECTIONS: dict[str, type[Any]] = {
    "kafka": KafkaConfig,
    "lake": LakeConfig,
    "collector": CollectorConfig,
    "processor": ProcessorConfig,
    "capture": CaptureConfig,
    "pricing": PricingConfig,
}


def section_types() -> dict[str, type[Any]]:
    """``name -> settings dataclass`` of every section: the core's, then each area's (costline.areas)."""
    areas = area_sections()
    clash = sorted(set(areas) & set(_CORE_SECTIONS))
    if clash:
        raise TypeError(f"an area declares the core section [{clash[0]}]: pick another SECTION name")
    return {**_CORE_SECTIONS, **areas}


class Config:
    """All of costline's settings, one immutable object: a section per attribute.

    ``Config(lake=LakeConfig(...))`` gives the other sections their defaults; :meth:`replace`
    returns a changed copy. The areas' sections (below ``TYPE_CHECKING``) are declared by the areas
    themselves (:mod:`costline.areas`).
    """

    kafka: KafkaConfig
    lake: LakeConfig
    collector: CollectorConfig
    processor: ProcessorConfig
    capture: CaptureConfig
    pricing: PricingConfig
    if TYPE_CHECKING:
        serving: ServingConfig
        jobs: JobsConfig
        alerts: AlertsConfig
        dashboard: DashboardConfig
        distill: DistillConfig
    #: The file it was loaded from, if any.
    source: Path | None

    def __init__(self, *, source: Path | None = None, **sections: Any) -> None:
        types_ = section_types()
        unknown = sorted(set(sections) - set(types_))
        if unknown:
            raise TypeError(f"Config has no section {unknown[0]!r}{_suggest(unknown[0], types_)}")
        for name, cls in types_.items():
            object.__setattr__(self, name, sections[name] if name in sections else cls())
        object.__setattr__(self, "source", source)

    def sections(self) -> dict[str, Any]:
        """``name -> section`` for every section, the core's first."""
        return {name: getattr(self, name) for name in section_types()}

    def replace(self, **sections: Any) -> "Config":
        """A copy with some sections (or keys, as ``section={"key": value}``) replaced."""
        current = self.sections()
        for name, value in sections.items():
            if name in current and isinstance(value, Mapping):
                value = dataclasses.replace(current[name], **value)
            current[name] = value
        source = current.pop("source", self.source)
        return Config(source=source, **current)

    def __setattr__(self, name: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}: use Config.replace")

    def __delattr__(self, name: str) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Config):
            return NotImplemented
        return (self.sections(), self.source) == (other.sections(), other.source)

    __hash__ = None  # type: ignore[assignment]  # sections hold dicts

    def __repr__(self) -> str:
        body = ", ".join(f"{name}={section!r}" for name, section in self.sections().items())
        return f"Config({body}, source={self.source!r})"


_CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("processor", "encoding"): ("auto", "otlp_proto", "otlp_json"),
    ("lake", "mode"): ("local", "table"),
    ("kafka", "security_protocol"): ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
}

#: The keys whose ``COSTLINE_*`` variable may be set empty, meaning "unset" (None): ``COSTLINE_COLLECTOR_GRPC_PORT=``
#: turns the optional gRPC listener off (tests/test_collectors_grpc.py). Any other empty variable is an error.
_ENV_EMPTY_IS_UNSET = frozenset({("collector", "grpc_port")})

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}  # an empty value is neither: `COSTLINE_..._REQUIRE_AUTH=` must not turn a check off


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Load and validate the configuration.

    ``path`` wins over ``$COSTLINE_CONFIG`` and ``./costline.toml``; ``env``
    defaults to ``os.environ`` (pass a dict in tests).
    """
    env = os.environ if env is None else env
    file = _find_file(path, env)
    raw = _read_file(file) if file is not None else {}
    loader = _Loader(env, str(file) if file else "config")
    overrides: dict[str, Any] = {}
    if env.get(ENV_KAFKA_BOOTSTRAP):
        overrides[("kafka", "bootstrap_servers")] = _EnvValue(ENV_KAFKA_BOOTSTRAP, env[ENV_KAFKA_BOOTSTRAP])
    # the OTel variable as the OpenTelemetry spec reads one: empty (or blank) is unset, not an error
    if env.get(contract.ENV_CAPTURE_MESSAGE_CONTENT, "").strip():
        overrides[("capture", "message_content")] = _EnvValue(
            contract.ENV_CAPTURE_MESSAGE_CONTENT, env[contract.ENV_CAPTURE_MESSAGE_CONTENT]
        )
    loader.overrides = overrides
    tables = dataclasses.make_dataclass(  # one field per section, so the loader checks the top level too
        "Sections", [(name, cls, field(default_factory=cls)) for name, cls in section_types().items()], frozen=True)
    try:
        built = loader.build(tables, raw, path=())
        for warning in _env_warnings(env, loader.env_names, built):
            log.warning("%s", warning)
        config = Config(source=file, **vars(built))
        _validate(config, loader.source)
        _validate_areas(config, loader.source)
        for var, problem in loader.blank.items():
            raise ConfigError(var, problem, source="environment")
    except ConfigError as exc:
        blamed = loader.env_error(exc)
        if blamed is None:
            raise
        raise blamed from None
    return config


def _validate_areas(config: Config, source: str) -> None:
    """Each area's own checks, on load like the core's: ``validate(config)`` in its settings module or package."""
    for package in AREAS:
        for module in (import_optional(f"{package}.settings"), import_optional(package)):
            check = getattr(module, "validate", None)
            if callable(check):
                try:
                    check(config)
                except ConfigError as exc:
                    if exc.source != "config":
                        raise
                    raise ConfigError(exc.key, exc.problem, source=source) from None
                break


def _read_file(file: Path) -> dict[str, Any]:
    """The TOML tables of ``file``; a file that cannot be read or parsed is a ConfigError naming it."""
    flag = "--config / COSTLINE_CONFIG"
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(flag, "file not found: check the path or unset COSTLINE_CONFIG", source=str(file)) from None
    except IsADirectoryError:
        raise ConfigError(flag, "is a directory: give the TOML file (e.g. costline.toml)", source=str(file)) from None
    except OSError as exc:
        raise ConfigError(flag, f"cannot read it ({exc.strerror}): check its permissions", source=str(file)) from None
    if data.startswith(codecs.BOM_UTF8):  # "UTF-8 with BOM" (Windows Notepad, PowerShell): the mark is no TOML
        data = data[len(codecs.BOM_UTF8):]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"line {line}", f"not UTF-8 text (byte 0x{data[exc.start]:02x}): save the file as UTF-8",
                          source=str(file)) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("not valid TOML", f"{exc}: fix the syntax", source=str(file)) from None


def _find_file(path: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path | None:
    if path is not None:
        return Path(path)
    if env.get(ENV_CONFIG_FILE):
        return Path(env[ENV_CONFIG_FILE])
    default = Path("costline.toml")
    return default if default.is_file() else None


@dataclass(frozen=True)
class _EnvValue:
    """A string from the environment, converted to the field's type on build."""

    name: str
    text: str


class _Loader:
    """Builds (nested) config dataclasses from TOML values and COSTLINE_* variables.

    Field types drive the conversion: bool, int, float, str, Path, ``X | None``,
    ``tuple[str, ...]``, ``dict[str, scalar]``, nested dataclasses (TOML tables;
    env ``COSTLINE_SECTION_SUB_KEY``) and ``tuple[Dataclass, ...]`` (arrays of tables).
    """

    def __init__(self, env: Mapping[str, str], source: str) -> None:
        self.env = env
        self.source = source
        self.overrides: dict[tuple[str, ...], _EnvValue] = {}
        #: Every env name a field of what was built would have: ``name -> (key path, kind)``; kind ``key`` (it
        #: can be set), ``table`` (a section), ``array`` (of tables) or ``map`` (``key = value``): those cannot.
        self.env_names: dict[str, tuple[tuple[str, ...], str]] = {}
        #: The keys an environment variable set: ``how the key is named in messages -> variable`` (``[kafka] port
        #: -> COSTLINE_KAFKA_PORT``), so that a later check of the value blames the variable, not the file.
        self.env_set: dict[str, str] = {}
        #: ``variable -> problem`` of the variables set to only whitespace: refused once the keys' own checks passed.
        self.blank: dict[str, str] = {}

    def env_error(self, exc: ConfigError) -> ConfigError | None:
        """``exc`` about a key an environment variable set, reworded to name the variable and the key (None: not such
        a key): ``environment: COSTLINE_KAFKA_PORT sets [kafka] port: must be a TCP port ...``."""
        var = self.env_set.get(exc.key)
        if var is None or exc.source == "environment":
            return None
        return ConfigError(f"{var} sets {exc.key}", exc.problem, source="environment")

    def build(self, cls: type, values: Mapping[str, Any], *, path: tuple[str, ...], skip: tuple[str, ...] = ()) -> Any:
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
        for key in values:
            if key not in fields:
                what = "unknown section" if not path else "unknown key"
                raise ConfigError(_where((*path, key)) if path else key, f"{what}{_suggest(key, fields)}",
                                  source=self.source)
        kwargs: dict[str, Any] = {}
        for name, f in fields.items():
            key_path = (*path, name)
            hint = hints[name]
            in_array = any(p.startswith("#") for p in key_path)
            env_name = "" if in_array else (ENV_PREFIX + "_".join(key_path)).upper()
            if env_name:
                self.env_names.setdefault(env_name, (key_path, _env_kind(hint)))
            if dataclasses.is_dataclass(hint):
                sub = values.get(name, {})
                if not isinstance(sub, Mapping):
                    raise ConfigError(_where(key_path) if path else name,
                                      f"must be a table, e.g. [{'.'.join(key_path)}]", source=self.source)
                kwargs[name] = self.build(hint, sub, path=key_path)
                continue
            value: Any = values.get(name, _MISSING)
            if key_path in self.overrides:
                value = self.overrides[key_path]
            elif env_name and env_name in self.env and _env_settable(hint):
                value = _EnvValue(env_name, self.env[env_name])
            if isinstance(value, _EnvValue):
                self.env_set[_where(key_path)] = value.name
            if value is _MISSING:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise ConfigError(_where(key_path), "is required", source=self.source)
                continue
            kwargs[name] = self.convert(key_path, hint, value)
        return cls(**kwargs)

    def convert(self, path: tuple[str, ...], hint: Any, value: Any) -> Any:
        where = _where(path)
        text = value.text if isinstance(value, _EnvValue) else None
        if text is not None:
            where = value.name
        src = "environment" if text is not None else self.source
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if (text is not None and not text.strip() and value.name.startswith(ENV_PREFIX)
                and path not in _ENV_EMPTY_IS_UNSET and not (hint is Path and text == "")):
            # a compose / k8s template whose secret is unset gives `COSTLINE_X=`: clearing the file's token or list
            # with it (Slack off, the collector open, student calls unpriced) is never what was meant
            problem = _blank_problem(hint, text)
            if text == "":
                raise ConfigError(where, problem, source=src)
            # only whitespace: the key's own checks speak first (they say what the key wants), this after them
            self.blank.setdefault(where, problem)
        if origin in (typing.Union, types.UnionType) and type(None) in args:
            inner = next(a for a in args if a is not type(None))
            if value is None or text == "":
                return None
            return self.convert(path, inner, value)
        if origin is tuple and args and dataclasses.is_dataclass(args[0]):
            if text is not None or not isinstance(value, list):
                raise ConfigError(where, "must be an array of tables", source=src)
            items = []
            for i, item in enumerate(value):
                if not isinstance(item, Mapping):
                    raise ConfigError(_where((*path, f"#{i + 1}")), "must be a table", source=src)
                items.append(self.build(args[0], item, path=(*path, f"#{i + 1}")))
            return tuple(items)
        if origin is dict:
            if text is not None or not isinstance(value, Mapping):
                raise ConfigError(where, "must be a table of key = value", source=src)
            return {str(k): self.convert((*path[:-1], f"{path[-1]}.{k}"), args[1], v) for k, v in value.items()}
        if hint is Path and (text if text is not None else value) == "":
            unset = f"unset {where}" if text is not None else "remove the key"
            raise ConfigError(where, f"must not be empty (that is the current directory): give a path, or {unset} "
                              "for the default", source=src)
        if text is not None and origin is tuple and _is_json_list(text):
            return _json_list(where, text, src)
        try:
            return _scalar(hint, value, text)
        except (TypeError, ValueError):
            shown = text if text is not None else value
            raise ConfigError(where, f"expected {_type_word(hint)}, got {_shown(path[-1] if path else '', shown)}",
                              source=src) from None


_MISSING: Any = object()


def _blank_problem(hint: Any, text: str) -> str:
    """What to say of a ``COSTLINE_*`` variable set to ``text``, empty or only whitespace, for a key of type ``hint``."""
    blank = "empty" if text == "" else "blank (only whitespace)"
    hints = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if any(typing.get_origin(h) is tuple for h in hints):
        also = "; an empty list is written []"
    elif bool in hints:
        also = ", or set it to true or false (an empty value is neither)"
    else:
        also = ""
    return f"is set but {blank}: unset it to keep the file's value (or the default){also}"


def _where(path: tuple[str, ...]) -> str:
    """How a key is named in messages: ``[kafka] port``, ``[[pricing.models]] #2 tier``."""
    if not path:
        return "config"
    for i, part in enumerate(path):
        if part.startswith("#"):
            rest = " ".join(path[i + 1 :])
            return f"[[{'.'.join(path[:i])}]] {part}" + (f" {rest}" if rest else "")
    if len(path) == 1:
        return f"[{path[0]}]"
    return f"[{'.'.join(path[:-1])}] {path[-1]}"


def _env_settable(hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return True
    if origin is tuple:
        return not (args and dataclasses.is_dataclass(args[0]))
    return origin is None


def _env_kind(hint: Any) -> str:
    if dataclasses.is_dataclass(hint):
        return "table"
    if _env_settable(hint):
        return "key"
    return "map" if typing.get_origin(hint) is dict else "array"


def _named_env_vars(value: Any) -> set[str]:
    """The variables that ``*_env`` keys of ``value`` (a built config, any depth) name."""
    out: set[str] = set()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            if f.name.endswith("_env") and isinstance(v, str):
                out.add(v)
            else:
                out |= _named_env_vars(v)
    elif isinstance(value, (tuple, list)):
        for v in value:
            out |= _named_env_vars(v)
    elif isinstance(value, Mapping):
        for v in value.values():
            out |= _named_env_vars(v)
    return out


def _env_warnings(env: Mapping[str, str], names: Mapping[str, tuple[tuple[str, ...], str]], built: Any) -> list[str]:
    """What to tell the operator about ``COSTLINE_*`` variables that look like config keys but set none.

    ``names``: every env name of the config (:attr:`_Loader.env_names`). A variable is reported when it names a
    table (no env form), differs from a key only in case or in ``__`` separators, starts like a section
    (``COSTLINE_SERVING_...``) or is close to a key's name; other ``COSTLINE_*`` names are left alone.
    """
    keys = {name: path for name, (path, kind) in names.items() if kind == "key"}
    sections = tuple(name + "_" for name, (path, _) in names.items() if len(path) == 1)
    quiet = _ENV_NOT_KEYS | _named_env_vars(built)
    out: list[str] = []
    for var in sorted(env):
        upper = var.upper()
        if var in keys or var in quiet or not upper.startswith(ENV_PREFIX) or upper == ENV_PREFIX:
            continue
        collapsed = re.sub(r"_+", "_", upper).rstrip("_")
        if upper in names and var == upper:
            out.append(_table_warning(var, *names[upper], keys))
        elif upper in keys:
            out.append(f"{var} is ignored: environment variables are case-sensitive and costline reads {upper} "
                       f"({_where(keys[upper])})")
        elif collapsed in keys:
            out.append(f"{var} is ignored: costline joins section, table and key with a single '_': set "
                       f"{collapsed} ({_where(keys[collapsed])})")
        elif collapsed in names:
            out.append(_table_warning(var, *names[collapsed], keys))
        else:
            close = difflib.get_close_matches(collapsed, list(keys), n=1, cutoff=0.6)
            looks_like_key = collapsed.startswith(sections) or bool(
                difflib.get_close_matches(collapsed, list(keys), n=1, cutoff=0.8))
            if not looks_like_key:
                continue
            hint = (f"did you mean {close[0]} ({_where(keys[close[0]])})?" if close
                    else "no key is close to it (`costline config` shows them all)")
            out.append(f"{var} names no config key and is ignored: {hint}")
    return out


def _table_warning(var: str, path: tuple[str, ...], kind: str, keys: Mapping[str, tuple[str, ...]]) -> str:
    if kind == "table":
        inside = sorted(name for name, p in keys.items() if p[: len(path)] == path)
        example = f" (e.g. {inside[0]})" if inside else ""
        return (f"{var} is ignored: [{'.'.join(path)}] is a table, which has no environment form; set its keys "
                f"one by one{example} or in the config file")
    what = f"an array of tables ([[{'.'.join(path)}]])" if kind == "array" else "a table of key = value"
    return (f"{var} is ignored: {_where(path)} is {what}, which has no environment form; set it in the config "
            "file")


def _scalar(hint: Any, value: Any, text: str | None) -> Any:
    if hint is bool:
        if text is not None:
            low = text.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError
        return _strict(bool, value)
    if hint is int:
        if isinstance(value, bool):
            raise ValueError
        return int(text) if text is not None else _strict(int, value)
    if hint is float:
        if isinstance(value, bool):
            raise ValueError
        return float(text) if text is not None else float(_strict((int, float), value))
    if hint is Path:
        return Path(text if text is not None else _strict(str, value)).expanduser()
    if hint is str:
        return text if text is not None else _strict(str, value)
    if typing.get_origin(hint) is tuple:
        if text is not None:
            return tuple(p.strip() for p in text.split(",") if p.strip())
        return tuple(_strict(str, v) for v in _strict(list, value))
    raise TypeError(f"unsupported config type {hint!r}")


#: A bracketed IPv6 address (``[::1]``, ``[fd00::1]:8050``) opens a comma list, not a JSON one.
_IPV6_LITERAL = re.compile(r"\[[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*(%[\w.-]+)?\]")


def _is_json_list(text: str) -> bool:
    """True when an environment list is written as JSON (``["a","b"]``): it starts with ``[``, and not with an
    IPv6 address in brackets."""
    stripped = text.strip()
    return stripped.startswith("[") and not _IPV6_LITERAL.match(stripped)


def _json_list(name: str, text: str, source: str) -> tuple[str, ...]:
    """An environment list given as a JSON array of strings: the strings as they are (as a TOML array gives them).

    Anything else is a ConfigError naming the variable, without echoing its value (it may hold a secret)."""
    try:
        items = json.loads(text)
    except ValueError as exc:
        pos = f" at character {exc.pos + 1}" if isinstance(exc, json.JSONDecodeError) else ""
        raise ConfigError(name, f"starts with '[', so it is read as a JSON list, but it is not valid JSON "
                          f"({getattr(exc, 'msg', exc)}{pos}): write it as [\"a\", \"b\"] (double quotes), "
                          "or as a,b", source=source) from None
    if not isinstance(items, list):
        raise ConfigError(name, "must be a JSON list of strings such as [\"a\", \"b\"], or a,b", source=source)
    for i, item in enumerate(items, 1):
        if not isinstance(item, str):
            raise ConfigError(name, f"must be a JSON list of strings such as [\"a\", \"b\"], or a,b; item {i} is "
                              f"{_json_type(item)}: quote it", source=source)
    return tuple(items)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    return "a list" if isinstance(value, list) else "an object"


def _strict(types_: type | tuple[type, ...], value: Any) -> Any:
    if not isinstance(value, types_):
        raise TypeError
    return value


def _type_word(hint: Any) -> str:
    if typing.get_origin(hint) is tuple:
        return "a list of strings"
    return {bool: "true or false", int: "a whole number", float: "a number", Path: "a path (string)"}.get(
        hint, "a string"
    )


#: A URL's scheme, as :func:`_shown_url` tells it from a ``user:password@`` that has none.
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
#: Words of a key name whose value is a secret, shown masked when an error quotes it (``bearer_token``,
#: ``s3_secret_access_key``, a ``headers.Authorization`` entry); a key ending in ``_env`` / ``_file`` / ``_path`` /
#: ``_dir`` names where the secret is, and is shown.
_SECRET_WORDS = frozenset({"password", "passwd", "pwd", "secret", "token", "credential", "credentials",
                           "authorization", "apikey", "webhook"})
#: Words of a key name whose value is a URL: shown with its credentials masked (:func:`_shown_url`).
_URL_WORDS = frozenset({"url", "uri", "endpoint", "dsn"})


def _shown_url(value: object) -> str:
    """A URL-like value as an error quotes it (its ``repr``), with no credential in it: whatever comes before the
    last ``@`` of its authority (``user:password``) becomes ``***`` — with or without a scheme, so a value refused for
    lacking one (``minio:secret@objstore:9000``) is masked too — and credential query parameters are ``***``
    (:func:`~costline.netsec.redact_url`)."""
    from costline.netsec import redact_url

    text = str(value)
    scheme, sep, rest = text.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):
        scheme, sep, rest = "", "", text
    rest = redact_url("x://" + rest)[len("x://"):]
    at = rest.rfind("@")
    if at >= 0:
        rest = "***" + rest[at:]
    return repr(f"{scheme}{sep}{rest}")


def _shown(key: str, value: object) -> str:
    """``value`` of the key ``key`` as an error quotes it: masked when the key holds a secret (:data:`_SECRET_WORDS`,
    :func:`~costline.netsec.mask_secret`) or a URL (:func:`_shown_url`), else its ``repr``."""
    name = key.lower()
    if name.endswith(("_env", "_file", "_path", "_dir")):
        return repr(value)
    words = set(re.split(r"[^a-z0-9]+", name))
    if words & _SECRET_WORDS or ("key" in words and words & {"api", "access", "private", "secret", "signing"}):
        from costline.netsec import mask_secret

        return f"{mask_secret(value)!r} (masked)"
    if words & _URL_WORDS:
        return _shown_url(value)
    return repr(value)


def _validate_lake(lake: LakeConfig, source: str) -> None:
    s = Section("lake", source=source)
    # the numbers in any mode: a bad one must not wait for the day the lake moves to table mode
    s.port("objstore_port", lake.objstore_port)
    s.at_least("commit_retries", lake.commit_retries, 1)
    s.above_zero("outage_retry_s", lake.outage_retry_s,
                 what="must be a finite number of seconds above 0 (how long a table commit retries while the object "
                      f"store or catalog is down; the default is 120); got {lake.outage_retry_s}")
    s.need(lake.content_retention_days >= 0, "content_retention_days",
           "must be a whole number of days, 0 or more (0: prompts and answers are kept forever); "
           f"got {lake.content_retention_days!r}")
    if lake.mode != "table":
        return
    s.need(lake.warehouse.startswith(("s3://", "s3a://")) and len(lake.warehouse.split("://", 1)[1].strip("/")) > 0,
           "warehouse", f"must be s3://bucket[/prefix]; got {_shown_url(lake.warehouse)}")
    s.need(lake.s3_endpoint is None or is_http_url(lake.s3_endpoint), "s3_endpoint",
           f"must be http(s)://host:port; got {_shown_url(lake.s3_endpoint)}")
    s.need(lake.catalog_uri is None or "://" in lake.catalog_uri, "catalog_uri",
           "must be a SQLAlchemy URL (postgresql+psycopg2://user@host/db "
           f"or sqlite:////path/catalog.db); got {_shown_url(lake.catalog_uri)}")
    s.need(lake.namespace.isidentifier(), "namespace", f"must be an identifier; got {lake.namespace!r}")


def _validate(config: Config, source: str) -> None:
    sections = config.sections()
    for (section, key), choices in _CHOICES.items():
        Section(section, source=source).one_of(key, getattr(sections[section], key), choices)
    kafka: KafkaConfig = sections["kafka"]
    s = Section("kafka", source=source)
    for key in ("port", "controller_port"):
        s.port(key, getattr(kafka, key))
    s.need(kafka.port != kafka.controller_port, "controller_port", "must differ from [kafka] port")
    s.at_least("partitions", kafka.partitions, 1)
    s.need(kafka.replication_factor == -1 or kafka.replication_factor >= 1, "replication_factor",
           f"must be -1 (the cluster's default.replication.factor) or 1 or more; got {kafka.replication_factor}")
    s.need(bool(kafka.topic and kafka.dlq_topic) and kafka.topic != kafka.dlq_topic, "dlq_topic",
           "topic and dlq_topic must be set and differ")
    s.above_zero("start_timeout_s", kafka.start_timeout_s,
                 what="must be a finite number of seconds above 0 (how long `costline kafka up` waits for the local "
                      f"broker; the default is 60); got {kafka.start_timeout_s}")
    from costline.kafka_security import validate_security

    validate_security(kafka, s)
    _validate_lake(sections["lake"], source)
    collector: CollectorConfig = sections["collector"]
    s = Section("collector", source=source)
    s.port("port", collector.port)
    if collector.grpc_port is not None:
        s.need(1 <= collector.grpc_port <= 65535, "grpc_port",
               f"must be a TCP port (1-65535; 4317 is OTLP/gRPC's), or unset to receive OTLP/HTTP only; "
               f"got {collector.grpc_port}")
        s.need(collector.grpc_port != collector.port, "grpc_port",
               f"must differ from [collector] port ({collector.port}, OTLP/HTTP): gRPC needs its own port, "
               "e.g. 4317")
    s.at_least("max_body_bytes", collector.max_body_bytes, 1024)
    s.above_zero("produce_timeout_s", collector.produce_timeout_s,
                 what="must be a finite number of seconds above 0 (how long an export waits for Kafka's "
                      "acknowledgement before the answer is 503; the default is 3); "
                      f"got {collector.produce_timeout_s}")
    from costline.netsec import validate_limits

    validate_limits("collector", collector)
    s.at_least("max_message_bytes", collector.max_message_bytes, 16 * 1024)
    s.need(collector.max_inflight_bytes >= collector.max_body_bytes, "max_inflight_bytes",
           "must be at least max_body_bytes")
    s.at_least("max_spans_per_request", collector.max_spans_per_request, 1,
               "must be at least 1 (spans one export request may hold; larger requests are refused with 413; the "
               f"default is 100000); got {collector.max_spans_per_request}")
    s.above_zero("metrics_export_interval_s", collector.metrics_export_interval_s, unit="seconds")
    s.need(0 <= collector.metrics_prometheus_port < 65536, "metrics_prometheus_port",
           f"must be a TCP port (1-65535, or 0 for any free one); got {collector.metrics_prometheus_port}")
    s.need(bool(collector.metrics_prometheus_host), "metrics_prometheus_host",
           "must be an interface (127.0.0.1 keeps it local)")
    endpoint = collector.metrics_otlp_endpoint
    s.need(endpoint is None or is_http_url(endpoint), "metrics_otlp_endpoint",
           f"must be an http(s) URL such as http://127.0.0.1:4318/v1/metrics; got {_shown_url(endpoint)}")
    processor: ProcessorConfig = sections["processor"]
    s = Section("processor", source=source)
    s.at_least("batch_max_spans", processor.batch_max_spans, 1)
    s.above_zero("flush_interval_s", processor.flush_interval_s, unit="seconds")
    s.at_least("batch_max_bytes", processor.batch_max_bytes, 1024,
               f"must be at least 1024 bytes; got {processor.batch_max_bytes}")
    session, heartbeat = processor.session_timeout_ms, processor.heartbeat_interval_ms
    s.above_zero("session_timeout_ms", session,
                 what="must be a number of milliseconds above 0 (how long the broker waits for the processor's "
                      f"heartbeats before it expels the processor from the group; the default is 10000); got {session}")
    s.above_zero("heartbeat_interval_ms", heartbeat,
                 what="must be a number of milliseconds above 0 (how often the processor tells the broker it is "
                      f"alive; the default is 3000); got {heartbeat}")
    # kafka-python refuses a consumer whose heartbeat interval is not below its session timeout
    s.need(heartbeat < session, "heartbeat_interval_ms",
           f"must be below [processor] session_timeout_ms ({session}), as Kafka requires; a third of it or less is "
           f"usual (the defaults are 3000 and 10000); got {heartbeat}")
    for key, what in (("span_time_max_age_days", "days a span's time may lie before its Kafka record's timestamp "
                                                 "(the default is 400)"),
                      ("span_time_max_ahead_s", "seconds a span's time may lie after its Kafka record's timestamp "
                                                "(the default is 86400)")):
        value = getattr(processor, key)
        s.not_negative(key, value, f"must be a finite number of {what}, or 0 for no bound; got {value}")
    capture: CaptureConfig = sections["capture"]
    Section("capture", source=source).at_least(
        "max_chars", capture.max_chars, 1,
        f"must be at least 1 (each captured message is cut to this many characters; the default is 8000); "
        f"got {capture.max_chars}")
    pricing: PricingConfig = sections["pricing"]
    for key in ("cache_read_multiplier", "cache_write_multiplier", "cache_write_1h_multiplier", "batch_multiplier",
                "student_usd_per_hour", "web_search_per_1k", "us_inference_multiplier",
                "regional_endpoint_multiplier"):
        Section("pricing", source=source).not_negative(key, getattr(pricing, key))
    Section("pricing", source=source).at_least("hosting_open_gap_hours", pricing.hosting_open_gap_hours, 1)
    for i, period in enumerate(pricing.hosting, 1):
        where = f"[[pricing.hosting]] #{i}"
        if not period.usd_per_hour >= 0 or period.usd_per_hour == float("inf"):
            raise ConfigError(f"{where} usd_per_hour", "must be a finite number, not negative", source=source)
        if period.replicas < 1:
            raise ConfigError(f"{where} replicas", "must be at least 1", source=source)
        bounds = {}
        for key in ("since", "until"):
            text = getattr(period, key)
            if text is None:
                continue
            try:
                bounds[key] = parse_utc(text)
            except _OutOfRange as exc:
                raise ConfigError(f"{where} {key}", str(exc), source=source) from None
            except ValueError:
                raise ConfigError(f"{where} {key}", f"must be an ISO 8601 time like \"2026-11-01T00:00:00Z\"; "
                                  f"got {text!r}", source=source) from None
        if "since" in bounds and "until" in bounds and bounds["until"] <= bounds["since"]:
            raise ConfigError(f"{where} until", "must be after since", source=source)
    seen: dict[str, str] = {}
    tiers = (contract.TIER_STUDENT, *contract.API_TIERS)
    for i, m in enumerate(pricing.models, 1):
        if m.tier not in tiers:
            raise ConfigError(f"[[pricing.models]] #{i} tier", f"must be one of {', '.join(tiers)}; got {m.tier!r} "
                              f"(model {m.model!r})", source=source)
        long_band = (m.long_context_above_tokens, m.long_input_per_mtok, m.long_output_per_mtok)
        if any(v is not None for v in long_band) and any(v is None for v in long_band):
            raise ConfigError(f"[[pricing.models]] {m.model} long_context_above_tokens",
                              "set long_context_above_tokens, long_input_per_mtok and long_output_per_mtok together "
                              "(e.g. 200000, 2.5, 15.0), or none of them", source=source)
        if m.long_context_above_tokens is not None and not (
                isinstance(m.long_context_above_tokens, int) and m.long_context_above_tokens >= 1):
            raise ConfigError(f"[[pricing.models]] {m.model} long_context_above_tokens",
                              "must be a whole number of input tokens, at least 1; "
                              f"got {m.long_context_above_tokens!r}", source=source)
        for key, what in (*((k, "price in USD per million tokens") for k in (
                "input_per_mtok", "output_per_mtok", "cache_read_per_mtok", "cache_write_per_mtok",
                "cache_write_1h_per_mtok", "long_input_per_mtok", "long_output_per_mtok")),
                ("web_search_per_1k", "price in USD per 1,000 searches"),
                ("fast_multiplier", "multiple of the standard prices (e.g. 2 or 6)"),
                ("priority_multiplier", "multiple of the standard prices (e.g. 1.75 or 2)"),
                ("us_inference_multiplier", "multiple of the global prices (e.g. 1.1)"),
                ("regional_endpoint_multiplier", "multiple of the global endpoint's prices (e.g. 1.1, or 1)")):
            v = getattr(m, key)
            if v is not None and not 0 <= v < float("inf"):
                raise ConfigError(f"[[pricing.models]] {m.model} {key}", f"must be a finite {what}, not negative; "
                                  f"got {v!r}", source=source)
        for name in (m.model, *m.aliases):
            if name in seen:
                raise ConfigError(
                    f"[[pricing.models]] {m.model}",
                    f"model id {name!r} is listed twice (also under {seen[name]!r}); keep one",
                    source=source,
                )
            seen[name] = m.model
    _validate_durations(sections, source)


#: The longest duration or window a key may hold: 100 years fits ``timedelta``, a window reaching back from now
#: (``datetime``'s year 1 to 9999) and ``time.sleep`` / ``Event.wait`` (``threading.TIMEOUT_MAX``, ~292 years).
MAX_DURATION_S = 100 * 365.25 * 86400
#: Duration keys by the suffix of their name: the suffix, seconds per unit, the unit's name.
_DURATION_UNITS = (("_ms", 1e-3, "milliseconds"), ("_s", 1.0, "seconds"), ("_hours", 3600.0, "hours"),
                   ("_days", 86400.0, "days"))
#: Keys named like a duration that are an amount, not a wait or a window.
_NOT_DURATIONS = frozenset({"train_gpu_hours"})


def _validate_durations(sections: Mapping[str, Any], source: str) -> None:
    """Every duration / window key (``*_ms``, ``*_s``, ``*_hours``, ``*_days``) of every section, the areas' too, is
    at most :data:`MAX_DURATION_S`: a larger one passes the keys' own checks, then overflows a datetime or a sleep."""
    for name, section in sections.items():
        _check_durations((name,), section, source)


def _check_durations(path: tuple[str, ...], obj: Any, source: str) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            _check_durations((*path, f.name), value, source)
            continue
        unit = next(((scale, word) for suffix, scale, word in _DURATION_UNITS if f.name.endswith(suffix)), None)
        if unit is None or f.name in _NOT_DURATIONS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        limit = MAX_DURATION_S / unit[0]
        if value > limit and not math.isinf(value):  # infinity: the key's own check says if it means "no bound"
            raise ConfigError(_where((*path, f.name)), f"must be at most {limit:.0f} {unit[1]} (100 years); "
                              f"got {value!r}", source=source)


class _OutOfRange(ValueError):
    """An ISO 8601 time that parses but lies outside what a UTC datetime can hold."""


def parse_utc(text: str) -> datetime:
    """An ISO 8601 time as a naive UTC datetime (a time without an offset is taken as UTC).

    A ValueError when ``text`` is no ISO 8601 time, or one outside 0001-01-01 .. 9999-12-31 once taken to UTC
    (``0001-01-01T00:00:00+01:00``)."""
    ts = datetime.fromisoformat(text.strip())
    try:
        return utc_naive(ts)
    except OverflowError:
        raise _OutOfRange(f"is out of range once taken to UTC: give a time from 0001-01-02 to 9999-12-30; "
                          f"got {text!r}") from None


def _suggest(word: str, known: Mapping[str, Any] | dict[str, Any]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    options = ", ".join(sorted(known))
    return f": did you mean {close[0]!r}?" if close else f" (known: {options})"
