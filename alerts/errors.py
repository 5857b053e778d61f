"""Exceptions of costline.alerts::

    CostlineError
     └── AlertsError            root of the alerting errors
          ├── AlertsStateError  the SQLite state file cannot be opened or written
          ├── SilenceError      a silence is malformed or unknown
          └── NotifierError     a notifier is misconfigured (token without channel, bad URL)

Failed deliveries are not exceptions: notifiers return a :class:`~costline.alerts.notify.SendResult`
and the outbox retries.
"""

from __future__ import annotations

from costline.errors import CostlineError

__all__ = ["AlertsError", "AlertsStateError", "SilenceError", "NotifierError"]


class AlertsError(CostlineError):
    """Root of costline.alerts' errors."""


class AlertsStateError(AlertsError):
    """The alert state file cannot be used; the message names the file and what to do."""


class SilenceError(AlertsError):
    """A silence cannot be created or removed as asked."""


class NotifierError(AlertsError):
    """A notifier cannot be built from the config."""
