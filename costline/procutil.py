"""Small helpers for the local servers costline starts (Kafka, the object store): is a port open, is a pid alive."""

from __future__ import annotations

import os
import socket

__all__ = ["port_open", "pid_alive"]


def port_open(host: str, port: int) -> bool:
    """True when something accepts TCP connections on ``host:port`` (half a second at most)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


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
