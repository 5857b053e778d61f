"""Exceptions of costline.serving (router, semantic cache, backends).

::

    CostlineError
     └── ServingError               root of everything raised here
          ├── CacheError            the semantic cache cannot do what was asked
          │    └── CacheCorruptError  a saved cache fails its checksum or does not match the embedder
          ├── RoutingError          no policy, tier or backend for what a request needs
          │    └── PolicyFileError  a learned routing policy file is missing or unreadable
          ├── BackendError          a tier failed after the SDK's own retries (carries error_type)
          └── GatewayError          `costline serve` cannot start

MissingExtraError (the `serving` extra is not installed) is :class:`costline.errors.MissingExtraError`,
re-exported here.
"""

from __future__ import annotations

from costline.errors import CostlineError, MissingExtraError

__all__ = [
    "ServingError",
    "MissingExtraError",
    "CacheError",
    "CacheCorruptError",
    "INSTALL_HINT",
    "RoutingError",
    "PolicyFileError",
    "BackendError",
    "GatewayError",
]

#: What to run when an optional dependency of serving is missing.
INSTALL_HINT = "pip install 'costline[serving]'"


class ServingError(CostlineError):
    """Root of the errors raised by :mod:`costline.serving`."""


class CacheError(ServingError):
    """The semantic cache cannot do what was asked (the message says why and what to do)."""


class CacheCorruptError(CacheError):
    """A saved cache is incomplete, fails its checksum, or was built with another embedding model."""


class RoutingError(ServingError):
    """No policy, tier or backend exists for what a request needs (the message names the key)."""


class PolicyFileError(RoutingError):
    """A learned routing policy file is missing, unreadable or was written for another featurizer."""


class BackendError(ServingError):
    """A tier failed after the SDK's own retries; ``error_type`` is the SDK error's class name."""

    def __init__(self, tier: str, error_type: str, message: str) -> None:
        self.tier = tier
        self.error_type = error_type
        super().__init__(f"tier {tier!r} failed ({error_type}): {message}")


class GatewayError(ServingError):
    """`costline serve` cannot start (port taken, bad config)."""
