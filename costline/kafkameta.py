"""What costline reads of a Kafka cluster's metadata that kafka-python hands over raw: topic ids (KIP-516).

A topic's id tells one lifetime of a topic name from the next: deleted and created again (or a broker whose storage
was wiped), the name stays and the offsets start over at 0, but the id changes. The processor's lake manifests
and the replicated cache's snapshots record it, so neither resumes at offsets of a topic that no longer exists.
"""

from __future__ import annotations

import uuid
from typing import Any

__all__ = ["topic_id_text"]


def topic_id_text(value: Any) -> str | None:
    """A topic id as kafka-python's metadata or admin client holds it (a UUID), as text; None for none, a value
    that is no UUID, or the zero UUID (what a broker before Kafka 2.8 says: no id)."""
    if value is None:
        return None
    try:
        parsed = value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except ValueError:
        return None
    return None if parsed.int == 0 else str(parsed)
