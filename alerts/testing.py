"""Test doubles that ship with the product (like OTel's ``InMemorySpanExporter``):
a settable clock, a notifier that answers from a script, and observation shorthands.

Used by costline's own tests; handy for anyone testing rules or notifiers.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from costline.alerts.notify import Outgoing, SendResult
from costline.alerts.rules import Condition, Observation

__all__ = ["T0", "ManualClock", "ScriptedNotifier", "obs", "outbox_kinds", "payload"]

T0 = datetime(2026, 11, 7, 11, 1, tzinfo=UTC)


class ManualClock:
    """A ``now=`` callable that moves only when told to."""

    def __init__(self, t: datetime = T0) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t

    def advance(self, **kw: float) -> datetime:
        self.t += timedelta(**kw)
        return self.t

    def epoch(self) -> float:
        return self.t.timestamp()


def obs(cond: str, tenant: str = "acme", rule: str = "cache_hit_rate_drop", value: float = 0.30) -> Observation:
    labels = {"tenant": tenant} if rule == "cache_hit_rate_drop" else {}
    return Observation(rule, labels, Condition(cond), value, 0.35, f"{rule} {tenant} is {cond} ({value})",
                       window="2026-11-07 10:00–11:00 UTC", figures={"hit rate": f"{value:.0%}"},
                       query="SELECT * FROM cache_hit_rate_7d")


class ScriptedNotifier:
    """Answers sends from a script of results (then ok); can 'deliver silently' (Slack got it, we did not hear)."""

    def __init__(self, name: str = "slack", script: list[SendResult] | None = None) -> None:
        self.name = name
        self.script = list(script or [])
        self.attempts: list[Outgoing] = []
        self.delivered: dict[str, Outgoing] = {}
        self.finds = 0

    def send(self, message: Outgoing) -> SendResult:
        self.attempts.append(message)
        result = self.script.pop(0) if self.script else SendResult(ok=True, channel="C1", ts=f"{len(self.attempts)}.0")
        if result.ok or result.ambiguous:  # an ambiguous failure reached the server
            self.delivered.setdefault(message.dedup_key, message)
        return result if not result.ok else SendResult(ok=True, channel="C1", ts=result.ts or f"{len(self.attempts)}.0")

    def find(self, message: Outgoing) -> SendResult | None:
        self.finds += 1
        return SendResult(ok=True, channel="C1", ts="found.0") if message.dedup_key in self.delivered else None

    def kinds(self) -> list[str]:
        return [m.payload["kind"] for m in self.delivered.values() if m.op == "post"]

    def shutdown(self) -> None:
        pass


def outbox_kinds(store: Any, target: str = "console") -> list[str]:
    return [r["kind"] for r in store.outbox() if r["target"] == target and r["op"] == "post"]


def payload(row: Any) -> dict[str, Any]:
    return json.loads(row["payload"])
