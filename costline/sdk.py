"""The one place costline builds SDK clients (``anthropic``, ``openai``) and decides their API key.

The key policy, for every client costline builds (serving tiers, nightly jobs' teacher, the student):

* the key is read from the environment variable the config names
  (``[serving.backends] anthropic_api_key_env``, ``student_api_key_env``, ``[jobs.teacher] api_key_env``);
* without one, a **loopback** ``base_url`` (a local stand-in, a vLLM on this host) gets a placeholder
  key, since such servers take any key or none;
* any other ``base_url`` (a remote vLLM, the SDK's default api.anthropic.com) without a key is a
  :class:`MissingApiKeyError` naming the variable to set: no placeholder key ever leaves this host.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from costline.errors import ConfigError
from costline.netsec import is_loopback

__all__ = ["PLACEHOLDER_API_KEY", "MissingApiKeyError", "anthropic_client", "bedrock_client", "is_loopback_url",
           "openai_client", "resolve_api_key"]

#: What a loopback server without a configured key is sent (stand-ins and a local vLLM accept any key).
PLACEHOLDER_API_KEY = "costline-local"


class MissingApiKeyError(ConfigError):
    """No API key in the environment for a server beyond this host; the message names the variable."""

    def __init__(self, key_env: str, service: str, base_url: str | None) -> None:
        where = base_url or "the SDK's default URL"
        super().__init__(f"${key_env}", f"not set, and {service} at {where} is not on this host: "
                         f"export {key_env}=<your key>, or point the base_url at a local stand-in "
                         f"(`costline standin`)", source="environment")


def is_loopback_url(url: str | None) -> bool:
    """True when ``url``'s host is 127.0.0.0/8, ::1 or localhost (``None``: the SDK default, not loopback)."""
    if not url:
        return False
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    return bool(host) and is_loopback(host)


def resolve_api_key(key_env: str, base_url: str | None, *, service: str,
                    env: Mapping[str, str] | None = None) -> str:
    """The key for ``service`` at ``base_url``: ``$key_env``, else a placeholder on loopback, else an error."""
    env = os.environ if env is None else env
    key = env.get(key_env)
    if key:
        return key
    if is_loopback_url(base_url):
        return PLACEHOLDER_API_KEY
    raise MissingApiKeyError(key_env, service, base_url)


def anthropic_client(*, base_url: str | None, key_env: str, env: Mapping[str, str] | None = None,
                     service: str = "the Anthropic API", **kwargs: Any) -> Any:
    """An ``anthropic.Anthropic``; ``base_url`` None falls back to ``$ANTHROPIC_BASE_URL``, then the SDK default."""
    import anthropic

    env = os.environ if env is None else env
    base_url = base_url or env.get("ANTHROPIC_BASE_URL") or None
    key = resolve_api_key(key_env, base_url, service=service, env=env)
    return anthropic.Anthropic(api_key=key, base_url=base_url, **kwargs)


def bedrock_client(*, base_url: str | None, region: str | None, key_env: str | None,
                   env: Mapping[str, str] | None = None, service: str = "Amazon Bedrock", where: str = "",
                   **kwargs: Any) -> Any:
    """An ``anthropic.AnthropicBedrock``: Claude through Bedrock Runtime's InvokeModel.

    Credentials, first found: ``$key_env`` (a Bedrock API key, sent as a bearer token; ``key_env`` named but unset
    is an error), ``$AWS_BEARER_TOKEN_BEDROCK``, else SigV4 with ``$AWS_ACCESS_KEY_ID`` /
    ``$AWS_SECRET_ACCESS_KEY`` / ``$AWS_SESSION_TOKEN`` or AWS's own chain (profile, SSO, instance role; boto3).
    A loopback ``base_url`` (the stand-in) without any gets a placeholder bearer key; a remote one is a
    :class:`~costline.errors.ConfigError` naming what to set. ``region``: else ``$AWS_REGION``,
    ``$AWS_DEFAULT_REGION``, the profile's; ``us-east-1`` on loopback; else an error naming ``where``'s key.
    ``base_url`` None: ``$ANTHROPIC_BEDROCK_BASE_URL``, else Bedrock Runtime's endpoint in the region."""
    import anthropic

    env = os.environ if env is None else env
    base_url = base_url or env.get("ANTHROPIC_BEDROCK_BASE_URL") or None
    local = is_loopback_url(base_url)
    region = region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None
    keys: dict[str, Any] = {}
    if key_env:
        keys["api_key"] = resolve_api_key(key_env, base_url, service=service, env=env)
    elif env.get("AWS_BEARER_TOKEN_BEDROCK"):
        keys["api_key"] = env["AWS_BEARER_TOKEN_BEDROCK"]
    elif env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        keys.update(aws_access_key=env["AWS_ACCESS_KEY_ID"], aws_secret_key=env["AWS_SECRET_ACCESS_KEY"],
                    aws_session_token=env.get("AWS_SESSION_TOKEN") or None)
    else:  # AWS's own chain: a profile, SSO, the instance's or task's role
        try:
            import boto3
        except ImportError:
            boto3 = None
        session = boto3.Session(region_name=region) if boto3 is not None else None
        region = region or (session.region_name if session is not None else None)
        if session is None or session.get_credentials() is None:
            if not local:
                raise ConfigError(f"{where} api_key_env".strip(), f"{service} at {base_url or 'its AWS endpoint'} "
                                  "needs credentials: export AWS_BEARER_TOKEN_BEDROCK (a Bedrock API key), or "
                                  "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or configure an AWS profile or role "
                                  "(pip install 'costline[bedrock]' for boto3, which signs with them)")
            keys["api_key"] = PLACEHOLDER_API_KEY
    if not region:
        if not local:
            raise ConfigError(f"{where} region".strip(), f"{service} needs an AWS region: set it here, or export "
                              "AWS_REGION")
        region = "us-east-1"
    if "api_key" not in keys and importlib.util.find_spec("boto3") is None:  # SigV4 signs through botocore
        raise ConfigError(f"{where} api_key_env".strip(), f"{service}: signing requests with AWS credentials needs "
                          "boto3: pip install 'costline[bedrock]' (or use a Bedrock API key: AWS_BEARER_TOKEN_BEDROCK)")
    return anthropic.AnthropicBedrock(aws_region=region, base_url=base_url, **keys, **kwargs)


def openai_client(*, base_url: str | None, key_env: str, env: Mapping[str, str] | None = None,
                  service: str = "the OpenAI-compatible server", **kwargs: Any) -> Any:
    """An ``openai.OpenAI`` (vLLM's OpenAI-compatible server, or OpenAI itself)."""
    import openai

    env = os.environ if env is None else env
    base_url = base_url or env.get("OPENAI_BASE_URL") or None
    key = resolve_api_key(key_env, base_url, service=service, env=env)
    return openai.OpenAI(api_key=key, base_url=base_url, **kwargs)
