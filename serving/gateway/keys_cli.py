"""``costline keys add|list|revoke``: the gateway's API keys (stored hashed; see docs/security.md)."""

from __future__ import annotations

from pathlib import Path

import click

from costline.cli import pass_config
from costline.config import Config

__all__ = ["keys"]


def _store(config: Config, path: Path | None):  # type: ignore[no-untyped-def]
    from costline.serving.gateway.auth import KeyStore

    return KeyStore(path or config.serving.gateway.keys_file)


_FILE = click.option("--file", "path", type=click.Path(path_type=Path), default=None,
                     help="The keys file (default [serving.gateway] keys_file, else "
                          "$XDG_STATE_HOME/costline/gateway-keys.json).")


@click.group("keys")
def keys() -> None:
    """Manage the gateway's API keys: each key is one tenant's, and decides the tenant.

    Once a key was added, `costline serve` requires a key on every request
    (x-api-key or Authorization: Bearer). Keys are stored as salted SHA-256 hashes;
    the key itself is printed once, by `add`.

    Example:

    \b
        costline keys add acme --name "acme backend"
        costline keys list
        costline keys revoke 3f9a0c1d2b4e
    """


@keys.command("add")
@click.argument("tenant")
@click.option("--name", default="", help="A note to recognise the key by (who holds it).")
@_FILE
@pass_config
def keys_add(config: Config, tenant: str, name: str, path: Path | None) -> None:
    """Create an API key for TENANT and print it (only this once: it is stored hashed).

    Example:

    \b
        costline keys add acme --name "acme backend"
        # then: Anthropic(base_url="http://127.0.0.1:8787", api_key="clk_...")
    """
    store = _store(config, path)
    key, secret = store.add(tenant, name)
    click.echo(secret)
    click.echo(f"key {key.id} for tenant {key.tenant!r} added to {store.path}; "
               "store it now: it cannot be shown again", err=True)


@keys.command("list")
@_FILE
@pass_config
def keys_list(config: Config, path: Path | None) -> None:
    """List the keys: id, tenant, name, created, revoked (never the keys themselves).

    Example:

    \b
        costline keys list
    """
    store = _store(config, path)
    rows = store.keys()
    if not rows:
        click.echo(f"no keys in {store.path}: the gateway is open on loopback only")
        return
    click.echo(f"{'id':<14}{'tenant':<20}{'created':<27}{'status':<30}name")
    for k in rows:
        status = "active" if k.active else f"revoked {k.revoked_at}"
        click.echo(f"{k.id:<14}{k.tenant:<20}{k.created_at:<27}{status:<30}{k.name}")


@keys.command("revoke")
@click.argument("key_id")
@_FILE
@pass_config
def keys_revoke(config: Config, key_id: str, path: Path | None) -> None:
    """Revoke the key KEY_ID (a running gateway refuses it from its next request).

    Example:

    \b
        costline keys revoke 3f9a0c1d2b4e
    """
    key = _store(config, path).revoke(key_id)
    click.echo(f"key {key.id} of tenant {key.tenant!r} revoked at {key.revoked_at}")
