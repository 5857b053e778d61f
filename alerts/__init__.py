"""costline.alerts — alert rules over the lake, Alertmanager-grade state, Slack via slack_sdk.

Importing this package is cheap: only the settings and errors load eagerly;
the other public names are imported on first use (``slack_sdk``, ``duckdb``
and ``scipy`` load only when a notifier, source or rule needs them).
See ``docs/alerts.md``.
"""

from __future__ import annotations

from costline.alerts.errors import AlertsError, AlertsStateError, NotifierError, SilenceError
from costline.alerts.settings import AlertsConfig
from costline.lazy import lazy_loader

__all__ = [
    "AlertsConfig",
    "AlertsError",
    "AlertsStateError",
    "NotifierError",
    "SilenceError",
    # rules
    "Condition",
    "Observation",
    "Snapshot",
    "Rule",
    "evaluate",
    "rules_from_config",
    # state, delivery
    "AlertStore",
    "AlertEngine",
    "Outbox",
    "SendResult",
    "Outgoing",
    "ConsoleNotifier",
    "InMemoryNotifier",
    "SlackBotNotifier",
    "SlackWebhookNotifier",
    # wiring
    "AlertSource",
    "AlertService",
    "evaluate_job_rules",
    "kafka_dlq_counter",
    "alerts_view_sql",
    "export_history",
]

#: Where each lazily imported public name lives (read-only mapping of constants).
_LAZY: dict[str, str] = {
    "Condition": "rules", "Observation": "rules", "Snapshot": "rules", "Rule": "rules", "evaluate": "rules",
    "rules_from_config": "rules",
    "AlertStore": "store", "AlertEngine": "engine", "Outbox": "outbox",
    "SendResult": "notify", "Outgoing": "notify", "ConsoleNotifier": "notify", "InMemoryNotifier": "notify",
    "SlackBotNotifier": "notify", "SlackWebhookNotifier": "notify",
    "AlertSource": "source", "kafka_dlq_counter": "source",
    "AlertService": "service", "evaluate_job_rules": "service",
    "alerts_view_sql": "view", "export_history": "view",
}

__getattr__, __dir__ = lazy_loader(__name__, _LAZY)
