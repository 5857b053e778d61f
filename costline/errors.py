"""Exceptions of costline's core.

Every costline error derives from :class:`CostlineError`; each package area has
its own root below it, with short subclasses whose message tells the operator
what to do::

    CostlineError
     ├── ConfigError            a config key is missing, unknown or has a bad value
     ├── PricingError           a pricing table is inconsistent
     │    └── UnknownModelError a call's model is in no pricing table
     ├── KafkaSetupError        the local broker cannot be fetched or started
     ├── LakeError              the Parquet lake cannot be read or written
     ├── collectors.CollectorError
     └── processors.ProcessorError
"""

from __future__ import annotations

__all__ = [
    "CostlineError",
    "ConfigError",
    "PricingError",
    "UnknownModelError",
    "KafkaSetupError",
    "LakeError",
]


class CostlineError(Exception):
    """Root of every error costline raises on purpose."""


class ConfigError(CostlineError):
    """A configuration key is unknown, missing or invalid; the message names the key."""

    def __init__(self, key: str, problem: str, *, source: str = "config") -> None:
        self.key = key
        self.problem = problem
        self.source = source
        super().__init__(f"{source}: {key}: {problem}")


class PricingError(CostlineError):
    """The pricing table is inconsistent (duplicate model, negative price...)."""


class UnknownModelError(PricingError):
    """A model id matches no entry of the pricing table."""

    def __init__(self, model: str) -> None:
        self.model = model
        super().__init__(
            f"model {model!r} is not in the pricing table: add it under [[pricing.models]] "
            "in costline.toml (or set costline.cost_usd on the span) so its calls are priced"
        )


class KafkaSetupError(CostlineError):
    """The local Kafka broker cannot be fetched, formatted or started."""


class LakeError(CostlineError):
    """The Parquet lake is missing, unreadable or cannot be written."""
