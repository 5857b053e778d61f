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
     ├── MissingExtraError      an optional extra is not installed (also an ImportError; every area raises this one)
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
    "MissingExtraError",
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


class MissingExtraError(CostlineError, ImportError):
    """An optional dependency is not installed; the message names the extra to install.

    The one class for every area (serving, jobs, distill re-export it): ``except ImportError``
    and ``except CostlineError`` both catch it.
    """

    def __init__(self, missing: str, extra: str = "serving", *, needed_for: str | None = None) -> None:
        self.missing = missing
        self.extra = extra
        self.install_hint = f"pip install 'costline[{extra}]'"
        why = f" ({needed_for} needs it)" if needed_for else ""
        super().__init__(f"{missing} is not installed{why}: {self.install_hint}", name=missing.split(" ")[0])
