"""Config: TOML + env (env wins), validated with errors that name the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from costline.config import Config, load_config
from costline.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "costline.toml"
    path.write_text(text)
    return path


def test_defaults_without_file_or_env() -> None:
    cfg = load_config(env={})
    assert cfg == Config()
    assert cfg.kafka.bootstrap == "127.0.0.1:9092"
    assert not cfg.kafka.external
    assert cfg.kafka.topic == "otlp_spans" and cfg.kafka.dlq_topic == "otlp_spans.dlq"
    assert cfg.kafka.partitions == 6
    assert cfg.capture.message_content is False


def test_file_values_are_loaded(tmp_path: Path) -> None:
    path = write(tmp_path, '[kafka]\nport = 19092\n[lake]\npath = "/data/lake"\n[processor]\nflush_interval_s = 1\n')
    cfg = load_config(path, env={})
    assert cfg.kafka.port == 19092
    assert cfg.lake.path == Path("/data/lake")
    assert cfg.processor.flush_interval_s == 1.0
    assert cfg.source == path


def test_env_wins_over_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[kafka]\nport = 19092\n")
    cfg = load_config(path, env={"COSTLINE_KAFKA_PORT": "29092", "COSTLINE_LAKE_PATH": "/x"})
    assert cfg.kafka.port == 29092
    assert cfg.lake.path == Path("/x")


def test_config_file_from_env_var(tmp_path: Path) -> None:
    path = write(tmp_path, "[kafka]\npartitions = 3\n")
    assert load_config(env={"COSTLINE_CONFIG": str(path)}).kafka.partitions == 3


def test_kafka_bootstrap_servers_env_means_external_cluster() -> None:
    cfg = load_config(env={"KAFKA_BOOTSTRAP_SERVERS": "broker-1:9092,broker-2:9092"})
    assert cfg.kafka.external
    assert cfg.kafka.bootstrap == "broker-1:9092,broker-2:9092"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("1", True), ("yes", True), ("false", False), ("0", False)],
)
def test_capture_env_var_of_the_genai_conventions(value: str, expected: bool) -> None:
    cfg = load_config(env={"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": value})
    assert cfg.capture.message_content is expected


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_genai_capture_variable_is_unset_as_the_otel_spec_says(tmp_path: Path, value: str) -> None:
    """OpenTelemetry's environment variables: "an empty value is treated as unset" — the file's setting stands
    (a deployment template that leaves the variable empty must not stop every process at start)."""
    path = write(tmp_path, "[capture]\nmessage_content = true\n")
    cfg = load_config(path, env={"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": value})
    assert cfg.capture.message_content is True


def test_pricing_models_from_toml(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[pricing]\nversion = "v2"\nstudent_usd_per_hour = 1.5\n'
        '[[pricing.models]]\nmodel = "claude-haiku-4-5"\ntier = "budget"\ninput_per_mtok = 1\noutput_per_mtok = 5\n'
        'aliases = ["haiku"]\n',
    )
    cfg = load_config(path, env={})
    assert cfg.pricing.version == "v2"
    assert cfg.pricing.student_usd_per_hour == 1.5
    assert len(cfg.pricing.models) == 1
    model = cfg.pricing.models[0]
    assert (model.model, model.tier, model.input_per_mtok, model.aliases) == ("claude-haiku-4-5", "budget", 1.0, ("haiku",))


@pytest.mark.parametrize(
    ("toml", "env", "needle"),
    [
        ("[kafka]\nprot = 1\n", {}, "[kafka] prot: unknown key: did you mean 'port'?"),
        ("[kafak]\n", {}, "kafak: unknown section: did you mean 'kafka'?"),
        ('[kafka]\nport = "x"\n', {}, "[kafka] port: expected a whole number, got 'x'"),
        ("[kafka]\nport = 70000\n", {}, "[kafka] port: must be a TCP port"),
        ("[kafka]\nport = 9093\n", {}, "[kafka] controller_port: must differ"),
        ("", {"COSTLINE_KAFKA_PORT": "abc"}, "COSTLINE_KAFKA_PORT: expected a whole number, got 'abc'"),
        ("", {"COSTLINE_CAPTURE_MESSAGE_CONTENT": "maybe"}, "COSTLINE_CAPTURE_MESSAGE_CONTENT: expected true or false"),
        ('[processor]\nencoding = "avro"\n', {}, "[processor] encoding: must be one of auto, otlp_proto, otlp_json"),
        ("[processor]\nflush_interval_s = 0\n", {}, "[processor] flush_interval_s: must be above 0"),
        ("[pricing]\nbatch_multiplier = -1\n", {}, "[pricing] batch_multiplier: must not be negative"),
        ('[[pricing.models]]\nmodel = "m"\n', {}, "[[pricing.models]] #1 tier: is required"),
        ('[[pricing.models]]\nmodel = "m"\ntier = "budget"\nprice = 3\n', {}, "#1 price: unknown key"),
        ('[[pricing.models]]\nmodel = "m"\ntier = "budget"\ncache_read_per_mtok = -0.1\n', {},
         "[[pricing.models]] m cache_read_per_mtok: must be a finite price"),
        ('[[pricing.models]]\nmodel = "m"\ntier = "budget"\ninput_per_mtok = inf\n', {},
         "[[pricing.models]] m input_per_mtok: must be a finite price"),
        (
            '[[pricing.models]]\nmodel = "m"\ntier = "budget"\n[[pricing.models]]\nmodel = "m"\ntier = "mid"\n',
            {},
            "model id 'm' is listed twice",
        ),
        # the cache's choice keys fail when the config loads, not when a cache is first built
        ('[serving.cache]\nembedder = "openvinoo"\n', {},
         "[serving.cache] embedder: must be one of auto, torch, onnx, openvino; got 'openvinoo'"),
        ("", {"COSTLINE_SERVING_CACHE_EMBEDDER": "onnx-int8"}, "[serving.cache] embedder: onnx-int8 is not offered"),
        ('[serving.cache]\nmode = "fuzzy"\n', {}, "[serving.cache] mode: must be one of verified, threshold"),
        ("", {"COSTLINE_SERVING_CACHE_INDEX": "ivf"}, "[serving.cache] index: must be one of exact, hnsw; got 'ivf'"),
        ("[kafka\n", {}, "not valid TOML"),
        ("lake = 3\n", {}, "lake: must be a table"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, toml: str, env: dict[str, str], needle: str) -> None:
    path = write(tmp_path, toml)
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env)
    assert needle in str(info.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml", env={})


def test_replace_section_keys() -> None:
    cfg = Config().replace(kafka={"port": 1234})
    assert cfg.kafka.port == 1234 and cfg.kafka.topic == "otlp_spans"


@dataclass(frozen=True)
class Rule:
    drop_points: float = 10.0
    enabled: bool = True


@dataclass(frozen=True)
class Section:
    rule: Rule = field(default_factory=Rule)
    thresholds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Root:
    sec: Section = field(default_factory=Section)


def test_nested_tables_dicts_and_env_of_nested_keys() -> None:
    from costline.config import _Loader

    loader = _Loader({"COSTLINE_SEC_RULE_ENABLED": "false"}, "test.toml")
    root = loader.build(Root, {"sec": {"rule": {"drop_points": 12}, "thresholds": {"acme": 0.95}}}, path=())
    assert root.sec.rule == Rule(drop_points=12.0, enabled=False)
    assert root.sec.thresholds == {"acme": 0.95}
    with pytest.raises(ConfigError, match=r"\[sec.rule\] drop_pionts: unknown key: did you mean 'drop_points'"):
        loader.build(Root, {"sec": {"rule": {"drop_pionts": 1}}}, path=())
    with pytest.raises(ConfigError, match=r"\[sec\] thresholds.acme: expected a number"):
        loader.build(Root, {"sec": {"thresholds": {"acme": "high"}}}, path=())
