"""costline.sdk: one API-key policy for every SDK client costline builds.

A key from the environment always wins; without one only a loopback base_url (a local stand-in,
a vLLM on this host) gets a placeholder; anything else is an error naming the variable to set.
"""

from __future__ import annotations

import dataclasses

import anthropic
import openai
import pytest

from costline.collectors import Recorder
from costline.config import Config
from costline.errors import ConfigError
from costline.jobs.teacher import anthropic_client, student_client
from costline.sdk import PLACEHOLDER_API_KEY, MissingApiKeyError, is_loopback_url, resolve_api_key
from costline.serving.backends import build_backends
from costline.serving.registry import ModelRegistry
from costline.serving.settings import BackendsConfig

REMOTE = "https://vllm.internal.example:8000/v1"


@pytest.mark.parametrize(("url", "loopback"), [
    ("http://127.0.0.1:8000/v1", True),
    ("http://127.9.9.9", True),
    ("http://localhost:8787", True),
    ("http://[::1]:8787", True),
    ("https://api.anthropic.com", False),
    (REMOTE, False),
    ("http://0.0.0.0:8000", False),
    ("http://127.0.0.1.evil.example", False),  # the old substring test said yes
    ("http://localhost.evil.example", False),
    (None, False),
    ("", False),
])
def test_loopback_urls(url: str | None, loopback: bool) -> None:
    assert is_loopback_url(url) is loopback


@pytest.mark.parametrize(("env", "url", "key"), [
    ({"K": "sk-real"}, REMOTE, "sk-real"),
    ({"K": "sk-real"}, "http://127.0.0.1:8000/v1", "sk-real"),
    ({}, "http://127.0.0.1:8000/v1", PLACEHOLDER_API_KEY),
    ({"K": ""}, "http://localhost:1", PLACEHOLDER_API_KEY),
])
def test_key_resolution(env: dict[str, str], url: str, key: str) -> None:
    assert resolve_api_key("K", url, service="x", env=env) == key


@pytest.mark.parametrize("url", [REMOTE, None, "http://127.0.0.1.evil.example"])
def test_no_key_beyond_loopback_is_an_error_naming_the_variable(url: str | None) -> None:
    with pytest.raises(MissingApiKeyError, match=r"\$MY_KEY.*export MY_KEY=") as info:
        resolve_api_key("MY_KEY", url, service="tier 'student'", env={})
    assert isinstance(info.value, ConfigError)


def _registry(backends: BackendsConfig) -> ModelRegistry:
    config = Config()
    return ModelRegistry.from_config(config.replace(serving=dataclasses.replace(config.serving, backends=backends)))


def test_serving_backends_send_no_placeholder_to_a_remote_student() -> None:
    settings = BackendsConfig(anthropic_base_url="http://127.0.0.1:9", student_base_url=REMOTE)
    registry = _registry(settings)
    rec = Recorder(None, env={})
    with pytest.raises(MissingApiKeyError, match=r"COSTLINE_STUDENT_API_KEY.*tier 'student'"):
        build_backends(registry, settings, rec, tiers=["student"], env={})
    built = build_backends(registry, settings, rec, tiers=["student"], env={"COSTLINE_STUDENT_API_KEY": "sk-v"})
    assert isinstance(built["student"].client, openai.OpenAI) and built["student"].client.api_key == "sk-v"


def test_serving_backends_need_a_key_for_the_default_anthropic_url() -> None:
    settings = BackendsConfig(anthropic_base_url=None)
    registry = _registry(settings)
    with pytest.raises(MissingApiKeyError, match=r"ANTHROPIC_API_KEY"):
        build_backends(registry, settings, Recorder(None, env={}), tiers=["mid"], env={})


def test_serving_backends_use_the_placeholder_on_loopback() -> None:
    settings = BackendsConfig(anthropic_base_url="http://127.0.0.1:9", student_base_url="http://127.0.0.1:9/v1")
    built = build_backends(_registry(settings), settings, Recorder(None, env={}), tiers=["mid", "student"], env={})
    assert isinstance(built["mid"].client, anthropic.Anthropic)
    assert built["mid"].client.api_key == PLACEHOLDER_API_KEY == built["student"].client.api_key


def test_jobs_clients_follow_the_same_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    monkeypatch.delenv("COSTLINE_STUDENT_API_KEY", raising=False)
    config = Config()
    remote = config.replace(serving=dataclasses.replace(
        config.serving, backends=dataclasses.replace(config.serving.backends, student_base_url=REMOTE)))
    with pytest.raises(MissingApiKeyError, match=r"ANTHROPIC_API_KEY"):
        anthropic_client(config)  # the SDK's default URL: never a placeholder
    with pytest.raises(MissingApiKeyError, match=r"COSTLINE_STUDENT_API_KEY"):
        student_client(remote)
    assert student_client(config).api_key == PLACEHOLDER_API_KEY  # the default student is on loopback
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://localhost:8787")
    assert anthropic_client(config).api_key == PLACEHOLDER_API_KEY
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant")
    assert anthropic_client(config).api_key == "sk-ant"
