"""A stream processor driven in-process, no broker: its DLQ producer records what it is sent.

``claimed_processor(config)`` returns a :class:`~costline.processors.processor.Processor` whose lake is
initialised and whose partition 0 is claimed, so ``handle(0, ...)`` and ``flush_partition(0)`` work as in the
consumer loop; ``processor.dlq.sent`` lists the dead letters as ``(headers dict, value)``."""

from __future__ import annotations

from typing import Any

from costline.config import Config
from costline.processors.processor import Processor


class RecordingDLQ:
    """A DLQ producer stand-in: what the processor sent, as (headers dict, value)."""

    def __init__(self) -> None:
        self.sent: list[tuple[dict, bytes]] = []

    def send(self, topic, key=None, value=None, headers=None):
        self.sent.append((dict(headers or []), value))

        class _Done:
            def get(self, timeout=None):
                return None
        return _Done()

    def flush(self, timeout=None):
        pass

    def close(self, timeout=None):
        pass


def claimed_processor(config: Config, **kwargs: Any) -> Processor:
    """A processor on ``config`` with a :class:`RecordingDLQ` (``.dlq``), its lake initialised and partition 0
    claimed; ``kwargs`` go to :class:`Processor`."""
    dlq = RecordingDLQ()
    p = Processor(config, producer_factory=lambda **kw: dlq, **kwargs)
    p.lake.init()
    p._epochs[0] = p.lake.claim(config.kafka.topic, 0)
    p.dlq = dlq
    return p


def flushed_rows(p: Processor, sql: str) -> list[tuple]:
    """Flush partition 0, then the rows ``sql`` reads from the lake (``requests_raw``...: nothing deduplicated)."""
    from costline.lake import open_lake

    p.flush_partition(0)
    con = open_lake(p.config)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def flushed_tenants(p: Processor) -> list:
    """Flush partition 0, then the tenants of the lake's request rows."""
    return [t for (t,) in flushed_rows(p, "SELECT tenant FROM requests_raw ORDER BY tenant")]
