"""costline: make LLM inference cheap, and prove it stays good.

Subpackages (each its own folder at the top of the repository):

* :mod:`costline.collectors` — app-side tracing, Kafka span exporter, OTLP/HTTP receiver;
* :mod:`costline.processors` — Kafka → request/call records → Parquet lake;
* :mod:`costline.serving` — router, semantic cache, model backends;
* :mod:`costline.jobs` — nightly DuckDB jobs (drift, shadow routing, cost report);
* :mod:`costline.alerts` — alert rules and notifiers;
* :mod:`costline.dashboards` — the HTML dashboard over the lake.

Importing :mod:`costline` has no side effects and loads nothing heavy.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
