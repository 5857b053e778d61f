"""One config object for all of costline: a TOML file plus environment variables.

Precedence, highest first: environment variables, the TOML file, defaults.

* the file is ``--config PATH`` on the CLI, else ``$COSTLINE_CONFIG``, else
  ``./costline.toml`` when it exists; no file at all is fine;
* every scalar key ``[section] key`` can be set as ``COSTLINE_SECTION_KEY``
  (e.g. ``COSTLINE_LAKE_PATH``, ``COSTLINE_KAFKA_PORT``);
* ``KAFKA_BOOTSTRAP_SERVERS`` points at an existing cluster (nothing is started);
* ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`` turns on content capture.

Everything is validated on load: an unknown key, a wrong type or a bad value
raises :class:`~costline.errors.ConfigError` naming the key and what to do.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from costline import contract
from costline.errors import ConfigError

__all__ = [
    "Config",
    "KafkaConfig",
    "LakeConfig",
    "CollectorConfig",
    "ProcessorConfig",
    "CaptureConfig",
    "PricingConfig",
    "ModelPrice",
    "load_config",
    "DEFAULT_MODELS",
]

ENV_CONFIG_FILE = "COSTLINE_CONFIG"
ENV_KAFKA_BOOTSTRAP = "KAFKA_BOOTSTRAP_SERVERS"
ENV_PREFIX = "COSTLINE_"


def _default_cache_home() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "costline"


def _default_state_home() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "costline"


@dataclass(frozen=True)
class KafkaConfig:
    #: An existing cluster ("host:port,host:port"); None means costline runs a local broker.
    bootstrap_servers: str | None = None
    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int = 9093
    #: Apache Kafka release fetched from Maven Central (org.apache.kafka:kafka_2.13).
    version: str = "4.1.1"
    #: Where the broker's jars are cached (outside the repository).
    home: Path = field(default_factory=lambda: _default_cache_home() / "kafka")
    #: Where the local broker keeps its log segments and pid file.
    data_dir: Path = field(default_factory=lambda: _default_state_home() / "kafka")
    heap: str = "512m"
    topic: str = "otlp_spans"
    dlq_topic: str = "otlp_spans.dlq"
    partitions: int = 6
    start_timeout_s: float = 60.0

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


@dataclass(frozen=True)
class CollectorConfig:
    host: str = "127.0.0.1"
    port: int = 4318
    #: Bodies over this (compressed or not) are refused with 413.
    max_body_bytes: int = 16 * 1024 * 1024
    #: Seconds a client is asked to wait (Retry-After) when Kafka cannot take data.
    retry_after_s: int = 5
    #: How long to wait for Kafka to acknowledge a forwarded request before answering 503.
    produce_timeout_s: float = 10.0


@dataclass(frozen=True)
class ProcessorConfig:
    group_id: str = "costline-processor"
    #: Write to the lake after this many spans are buffered...
    batch_max_spans: int = 50_000
    #: ...or this many seconds after the first buffered one, whichever comes first.
    flush_interval_s: float = 2.0
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    #: Encoding assumed when a message has no content-type header: "auto", "otlp_proto", "otlp_json".
    encoding: str = "auto"


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


#: The article's June 2026 prices (USD per million tokens).
DEFAULT_MODELS: tuple[ModelPrice, ...] = (
    ModelPrice("claude-haiku-4-5", contract.TIER_BUDGET, input_per_mtok=0.80, output_per_mtok=4.0),
    ModelPrice("claude-sonnet-4-6", contract.TIER_MID, input_per_mtok=3.0, output_per_mtok=15.0),
    ModelPrice("claude-opus-4-8", contract.TIER_UPPER, input_per_mtok=5.0, output_per_mtok=25.0),
    ModelPrice("claude-fable-5", contract.TIER_FRONTIER, input_per_mtok=10.0, output_per_mtok=50.0),
)


@dataclass(frozen=True)
class PricingConfig:
    version: str = "2026-06"
    models: tuple[ModelPrice, ...] = DEFAULT_MODELS
    cache_read_multiplier: float = 0.1
    cache_write_multiplier: float = 1.25
    batch_multiplier: float = 0.5
    #: The student has no token price: its GPU hosting cost is spread over the
    #: student requests of each hourly window. ~$2,000/month A100 (the article).
    student_usd_per_hour: float = 2.74
    #: Calls from these providers are served by the self-hosted student.
    student_providers: tuple[str, ...] = (contract.PROVIDER_VLLM,)


@dataclass(frozen=True)
class Config:
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    lake: LakeConfig = field(default_factory=LakeConfig)
    collector: CollectorConfig = field(default_factory=CollectorConfig)
    processor: ProcessorConfig = field(default_factory=ProcessorConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    pricing: PricingConfig = field(default_factory=PricingConfig)
    #: The file it was loaded from, if any.
    source: Path | None = None

    def replace(self, **sections: Any) -> "Config":
        """A copy with some sections (or keys, as ``section={"key": value}``) replaced."""
        changes: dict[str, Any] = {}
        for name, value in sections.items():
            if isinstance(value, Mapping):
                changes[name] = dataclasses.replace(getattr(self, name), **value)
            else:
                changes[name] = value
        return dataclasses.replace(self, **changes)


_SECTIONS: dict[str, type] = {
    "kafka": KafkaConfig,
    "lake": LakeConfig,
    "collector": CollectorConfig,
    "processor": ProcessorConfig,
    "capture": CaptureConfig,
    "pricing": PricingConfig,
}

_CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("processor", "encoding"): ("auto", "otlp_proto", "otlp_json"),
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


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
    raw: dict[str, Any] = {}
    if file is not None:
        try:
            raw = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(str(file), "file not found: check the path or unset COSTLINE_CONFIG") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(file), f"not valid TOML ({exc}): fix the syntax", source=str(file)) from None
    source = str(file) if file else "config"
    sections: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in _SECTIONS:
            raise ConfigError(name, f"unknown section{_suggest(name, _SECTIONS)}", source=source)
        if not isinstance(value, Mapping):
            raise ConfigError(name, "must be a table, e.g. [" + name + "]", source=source)
    for name, cls in _SECTIONS.items():
        values = dict(raw.get(name, {}))
        values.update(_env_overrides(name, cls, env))
        sections[name] = _build_section(name, cls, values, source)
    _validate(sections, source)
    return Config(**sections, source=file)


def _find_file(path: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path | None:
    if path is not None:
        return Path(path)
    if env.get(ENV_CONFIG_FILE):
        return Path(env[ENV_CONFIG_FILE])
    default = Path("costline.toml")
    return default if default.is_file() else None


def _env_overrides(section: str, cls: type, env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key = f"{ENV_PREFIX}{section}_{f.name}".upper()
        if key in env and f.name != "models":
            out[f.name] = _EnvValue(key, env[key])
    if section == "kafka" and env.get(ENV_KAFKA_BOOTSTRAP):
        out["bootstrap_servers"] = _EnvValue(ENV_KAFKA_BOOTSTRAP, env[ENV_KAFKA_BOOTSTRAP])
    if section == "capture" and contract.ENV_CAPTURE_MESSAGE_CONTENT in env:
        out["message_content"] = _EnvValue(
            contract.ENV_CAPTURE_MESSAGE_CONTENT, env[contract.ENV_CAPTURE_MESSAGE_CONTENT]
        )
    return out


@dataclass(frozen=True)
class _EnvValue:
    """A string from the environment, converted to the field's type on build."""

    name: str
    text: str


def _build_section(section: str, cls: type, values: dict[str, Any], source: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"[{section}] {key}", f"unknown key{_suggest(key, fields)}", source=source)
        where = value.name if isinstance(value, _EnvValue) else f"[{section}] {key}"
        kwargs[key] = _convert(where, fields[key], value, section, source)
    return cls(**kwargs)


def _convert(where: str, f: dataclasses.Field[Any], value: Any, section: str, source: str) -> Any:
    kind = str(f.type)
    if f.name == "models":
        return _convert_models(value, source)
    text = value.text if isinstance(value, _EnvValue) else None
    src = "environment" if text is not None else source
    try:
        if kind == "bool":
            if text is not None:
                low = text.strip().lower()
                if low in _TRUE:
                    return True
                if low in _FALSE:
                    return False
                raise ValueError
            if not isinstance(value, bool):
                raise ValueError
            return value
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError
            return int(text) if text is not None else _strict(int, value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(text) if text is not None else float(_strict((int, float), value))
        if kind == "Path":
            return Path(text if text is not None else _strict(str, value)).expanduser()
        if kind.startswith("tuple"):
            if text is not None:
                return tuple(p.strip() for p in text.split(",") if p.strip())
            return tuple(_strict(str, v) for v in _strict(list, value))
        if kind.startswith("str"):
            got = text if text is not None else _strict(str, value)
            return got if got != "" or "None" not in kind else None
    except (TypeError, ValueError):
        shown = text if text is not None else value
        raise ConfigError(where, f"expected {_type_word(kind)}, got {shown!r}", source=src) from None
    raise AssertionError(f"unhandled config type {kind} for {where}")  # a bug, not bad input


def _strict(types: type | tuple[type, ...], value: Any) -> Any:
    if not isinstance(value, types):
        raise TypeError
    return value


def _type_word(kind: str) -> str:
    return {
        "bool": "true or false",
        "int": "a whole number",
        "float": "a number",
        "Path": "a path (string)",
    }.get(kind, "a list of strings" if kind.startswith("tuple") else "a string")


def _convert_models(value: Any, source: str) -> tuple[ModelPrice, ...]:
    if isinstance(value, _EnvValue) or not isinstance(value, list):
        raise ConfigError("[[pricing.models]]", "must be an array of tables", source=source)
    names = {f.name: f for f in dataclasses.fields(ModelPrice)}
    models = []
    for i, item in enumerate(value):
        where = f"[[pricing.models]] #{i + 1}"
        if not isinstance(item, Mapping):
            raise ConfigError(where, "must be a table with model, tier and prices", source=source)
        for key in item:
            if key not in names:
                raise ConfigError(f"{where} {key}", f"unknown key{_suggest(key, names)}", source=source)
        for key in ("model", "tier"):
            if not isinstance(item.get(key), str) or not item[key]:
                raise ConfigError(f"{where} {key}", "is required (a non-empty string)", source=source)
        kwargs: dict[str, Any] = {}
        for key, val in item.items():
            kwargs[key] = _convert(f"{where} {key}", names[key], val, "pricing", source)
        models.append(ModelPrice(**kwargs))
    return tuple(models)


def _validate(sections: dict[str, Any], source: str) -> None:
    for (section, key), choices in _CHOICES.items():
        value = getattr(sections[section], key)
        if value not in choices:
            raise ConfigError(f"[{section}] {key}", f"must be one of {', '.join(choices)}; got {value!r}", source=source)
    kafka: KafkaConfig = sections["kafka"]
    for key in ("port", "controller_port"):
        port = getattr(kafka, key)
        if not 0 < port < 65536:
            raise ConfigError(f"[kafka] {key}", f"must be a TCP port (1-65535); got {port}", source=source)
    if kafka.port == kafka.controller_port:
        raise ConfigError("[kafka] controller_port", "must differ from [kafka] port", source=source)
    if kafka.partitions < 1:
        raise ConfigError("[kafka] partitions", "must be at least 1", source=source)
    if not kafka.topic or not kafka.dlq_topic or kafka.topic == kafka.dlq_topic:
        raise ConfigError("[kafka] dlq_topic", "topic and dlq_topic must be set and differ", source=source)
    collector: CollectorConfig = sections["collector"]
    if not 0 < collector.port < 65536:
        raise ConfigError("[collector] port", f"must be a TCP port (1-65535); got {collector.port}", source=source)
    if collector.max_body_bytes < 1024:
        raise ConfigError("[collector] max_body_bytes", "must be at least 1024", source=source)
    processor: ProcessorConfig = sections["processor"]
    if processor.batch_max_spans < 1:
        raise ConfigError("[processor] batch_max_spans", "must be at least 1", source=source)
    if processor.flush_interval_s <= 0:
        raise ConfigError("[processor] flush_interval_s", "must be above 0 seconds", source=source)
    pricing: PricingConfig = sections["pricing"]
    for key in ("cache_read_multiplier", "cache_write_multiplier", "batch_multiplier", "student_usd_per_hour"):
        if getattr(pricing, key) < 0:
            raise ConfigError(f"[pricing] {key}", "must not be negative", source=source)
    seen: dict[str, str] = {}
    for m in pricing.models:
        if m.input_per_mtok < 0 or m.output_per_mtok < 0:
            raise ConfigError(f"[[pricing.models]] {m.model}", "prices must not be negative", source=source)
        for name in (m.model, *m.aliases):
            if name in seen:
                raise ConfigError(
                    f"[[pricing.models]] {m.model}",
                    f"model id {name!r} is listed twice (also under {seen[name]!r}); keep one",
                    source=source,
                )
            seen[name] = m.model


def _suggest(word: str, known: Mapping[str, Any] | dict[str, Any]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    options = ", ".join(sorted(known))
    return f": did you mean {close[0]!r}?" if close else f" (known: {options})"
