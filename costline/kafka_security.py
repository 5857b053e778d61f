"""How costline's Kafka clients reach a cluster that wants TLS, SASL or both.

Every producer, consumer and admin client costline makes (the collector's forwarder, the processor, the cache's
replication, the alert source, topic creation) takes its security settings from one place,
:func:`client_options` over the ``[kafka]`` section, so a cluster that asks for SASL_SSL is reached the same way
by all of them:

.. code-block:: toml

    [kafka]
    bootstrap_servers = "pkc-1234.eu-west-1.aws.confluent.cloud:9092"   # or KAFKA_BOOTSTRAP_SERVERS
    security_protocol = "SASL_SSL"
    sasl_mechanism = "PLAIN"            # or SCRAM-SHA-256 / SCRAM-SHA-512
    sasl_username = "ABCDEFG123"
    sasl_password_env = "KAFKA_SASL_PASSWORD"   # the variable holding the secret; never the secret itself
    # or sasl_mechanism = "OAUTHBEARER" with sasl_oauth_token_url, sasl_oauth_client_id and the secret in
    # $KAFKA_OAUTH_CLIENT_SECRET (costline/kafka_oauth.py)

Secrets are read from the environment when a client is made (a missing one is a
:class:`~costline.errors.ConfigError` naming the key and the variable), never from the file, and never logged.
The local broker costline starts speaks PLAINTEXT on loopback only; any other protocol needs an existing cluster
(``KAFKA_BOOTSTRAP_SERVERS``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from costline.errors import ConfigError
from costline.netsec import is_loopback

if TYPE_CHECKING:  # pragma: no cover
    from costline.config import KafkaConfig
    from costline.validate import Section

__all__ = ["SASL_MECHANISMS", "client_options", "make_client", "validate_security"]

_Client = TypeVar("_Client")

#: The SASL mechanisms costline's clients speak (kafka-python's, less GSSAPI, which needs a Kerberos setup of its
#: own); OAUTHBEARER with client-credentials tokens (costline/kafka_oauth.py).
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
_OAUTH_KEYS = ("sasl_oauth_token_url", "sasl_oauth_client_id", "sasl_oauth_scope")


def validate_security(kafka: "KafkaConfig", s: "Section") -> None:
    """The ``[kafka]`` security keys make sense together (on load). What depends on the machine — the TLS files,
    the secrets' variables, an existing cluster to talk to — is checked when a client is made
    (:func:`client_options`), so a command that never touches Kafka (``costline sql`` on an analyst's laptop)
    loads a config written for the servers."""
    protocol = kafka.security_protocol
    sasl, tls = protocol.startswith("SASL_"), protocol in ("SSL", "SASL_SSL")
    s.need(sasl or not kafka.sasl_username, "sasl_username",
           f"is set, but security_protocol is {protocol}: a SASL login needs SASL_SSL (or SASL_PLAINTEXT)")
    if sasl:
        s.one_of("sasl_mechanism", kafka.sasl_mechanism, SASL_MECHANISMS)
    oauth = sasl and kafka.sasl_mechanism == "OAUTHBEARER"
    for key in _OAUTH_KEYS:
        s.need(oauth or not getattr(kafka, key), key, 'is set, but the login is not sasl_mechanism = "OAUTHBEARER" '
               "over SASL_SSL (or SASL_PLAINTEXT): remove it, or set those")
    if oauth:
        url = urlsplit(kafka.sasl_oauth_token_url)
        try:
            port_ok = url.port is None or url.port > 0
        except ValueError:
            port_ok = False
        s.need(url.scheme in ("http", "https") and bool(url.hostname) and port_ok, "sasl_oauth_token_url",
               "must be the identity provider's OAuth 2.0 token endpoint, an https:// URL")
        s.need(url.username is None and url.password is None, "sasl_oauth_token_url",
               "must not carry a user or password (the client secret goes in $sasl_oauth_client_secret_env)")
        s.need(url.scheme == "https" or is_loopback(url.hostname or ""), "sasl_oauth_token_url",
               "must be https:// (the client secret is sent to it); plain http only on loopback")
        s.need(bool(kafka.sasl_oauth_client_id.strip()), "sasl_oauth_client_id",
               "must name the OAuth client costline logs in as")
        s.need(bool(kafka.sasl_oauth_client_secret_env.strip()), "sasl_oauth_client_secret_env",
               "must name the environment variable that holds the client secret (e.g. KAFKA_OAUTH_CLIENT_SECRET)")
        s.need(not kafka.sasl_username, "sasl_username",
               "is set, but OAUTHBEARER logs in as sasl_oauth_client_id: remove it")
    elif sasl:
        s.need(bool(kafka.sasl_username.strip()), "sasl_username",
               f"must name the SASL user when security_protocol is {protocol}")
        s.need(bool(kafka.sasl_password_env.strip()), "sasl_password_env",
               "must name the environment variable that holds the SASL password (e.g. KAFKA_SASL_PASSWORD)")
    for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        s.need(getattr(kafka, key) is None or tls, key,
               f"is set, but security_protocol is {protocol}: TLS files are used with SSL or SASL_SSL")
    s.need(kafka.ssl_keyfile is None or kafka.ssl_certfile is not None, "ssl_keyfile",
           "is set without ssl_certfile: a client key goes with its certificate (mutual TLS)")


def client_options(kafka: "KafkaConfig", env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """kafka-python keyword arguments (``security_protocol``, ``sasl_*``, ``ssl_*``) for any producer, consumer or
    admin client of the cluster ``kafka`` describes; ``{}`` for PLAINTEXT. ConfigError when a secret's variable
    is unset."""
    protocol = kafka.security_protocol
    if protocol == "PLAINTEXT":
        return {}
    if not kafka.external:
        raise ConfigError("[kafka] security_protocol", f"is {protocol}, but the local broker costline starts speaks "
                          "PLAINTEXT: set bootstrap_servers (or KAFKA_BOOTSTRAP_SERVERS) to the cluster that wants "
                          "it, or security_protocol = \"PLAINTEXT\"")
    for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        path = getattr(kafka, key)
        if path is not None and not (path.is_file() and os.access(path, os.R_OK)):
            raise ConfigError(f"[kafka] {key}", f"{str(path)!r} is not a file this process can read (PEM)")
    env = os.environ if env is None else env
    out: dict[str, Any] = {"security_protocol": protocol}
    if protocol.startswith("SASL_") and kafka.sasl_mechanism == "OAUTHBEARER":
        from costline.kafka_oauth import ClientCredentialsTokenProvider

        secret = env.get(kafka.sasl_oauth_client_secret_env, "")
        if not secret:
            raise ConfigError("[kafka] sasl_oauth_client_secret_env",
                              f"names ${kafka.sasl_oauth_client_secret_env}, which is unset or empty: export it with "
                              f"the client secret of {kafka.sasl_oauth_client_id!r}", source="environment")
        out.update(sasl_mechanism="OAUTHBEARER", sasl_oauth_token_provider=ClientCredentialsTokenProvider(
            kafka.sasl_oauth_token_url, kafka.sasl_oauth_client_id, secret, kafka.sasl_oauth_scope,
            secret_env=kafka.sasl_oauth_client_secret_env))
    elif protocol.startswith("SASL_"):
        password = env.get(kafka.sasl_password_env, "")
        if not password:
            raise ConfigError("[kafka] sasl_password_env",
                              f"names ${kafka.sasl_password_env}, which is unset or empty: export it with the SASL "
                              f"password of {kafka.sasl_username!r}", source="environment")
        out.update(sasl_mechanism=kafka.sasl_mechanism, sasl_plain_username=kafka.sasl_username,
                   sasl_plain_password=password)
    if protocol in ("SSL", "SASL_SSL"):
        out["ssl_check_hostname"] = kafka.ssl_check_hostname
        if kafka.ssl_cafile is not None:
            out["ssl_cafile"] = str(kafka.ssl_cafile)
        if kafka.ssl_certfile is not None:
            out["ssl_certfile"] = str(kafka.ssl_certfile)
            if kafka.ssl_keyfile is not None:
                out["ssl_keyfile"] = str(kafka.ssl_keyfile)
        if kafka.ssl_key_password_env and kafka.ssl_certfile is not None:
            secret = env.get(kafka.ssl_key_password_env, "")
            if not secret:
                raise ConfigError("[kafka] ssl_key_password_env",
                                  f"names ${kafka.ssl_key_password_env}, which is unset "
                                  "or empty: export it with the client key's passphrase (or set the key to \"\" for a "
                                  "key without one)", source="environment")
            out["ssl_password"] = secret
    return out


def make_client(cls: type[_Client], **configs: Any) -> _Client:
    """``cls(**configs)`` (a kafka-python KafkaAdminClient or KafkaConsumer), whose I/O thread is stopped when it
    cannot bootstrap. kafka-python 3.0 starts that thread before it connects and leaves it running when the
    constructor raises: a gateway retrying a cluster that refuses its login would gain a thread every try."""
    client = cls.__new__(cls)
    try:
        client.__init__(**configs)  # type: ignore[misc]
    except BaseException:
        net = getattr(client, "_net", None)
        if net is not None and hasattr(net, "stop"):
            with contextlib.suppress(Exception):
                net.stop(timeout_ms=2000)
        raise
    return client
