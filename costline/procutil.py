"""Small helpers for the local servers costline starts (Kafka, the object store): is a port open, is a pid alive."""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
from typing import Any

__all__ = ["port_open", "pid_alive"]


def port_open(host: str, port: int, *, timeout_s: float = 0.5, resolve_timeout_s: float = 2.0) -> bool:
    """True when something accepts TCP connections on ``host:port``: ``timeout_s`` to connect, after a name lookup of
    ``resolve_timeout_s`` at most (the resolver takes no timeout: it is asked on a thread of its own, left to finish
    when it does not answer in time). IPv4 or IPv6, the first address that takes the connection."""
    try:
        addresses = _resolve(host, port, resolve_timeout_s)
    except (OSError, TimeoutError):
        return False
    for family, kind, proto, _name, address in addresses[:4]:
        with socket.socket(family, kind, proto) as s:
            s.settimeout(timeout_s)
            if s.connect_ex(address) == 0:
                return True
    return False


def _resolve(host: str, port: int, timeout_s: float) -> list[tuple[Any, ...]]:
    """``socket.getaddrinfo`` for TCP, bounded by ``timeout_s`` (TimeoutError past it); a literal address at once."""
    def lookup() -> list[tuple[Any, ...]]:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)

    try:  # a literal IP address needs no resolver
        ipaddress.ip_address(host)
        return lookup()
    except ValueError:
        pass
    done: list[Any] = []

    def run() -> None:
        try:
            done.append(lookup())
        except OSError as exc:
            done.append(exc)

    asking = threading.Thread(target=run, name="costline-resolve", daemon=True)
    asking.start()
    asking.join(timeout_s)
    if not done:
        raise TimeoutError(f"{host!r} was not resolved within {timeout_s:.0f} s")
    if isinstance(done[0], OSError):
        raise done[0]
    return done[0]


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie child of ours counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
