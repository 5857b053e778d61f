"""Exceptions of the stream processor::

    CostlineError
     └── ProcessorError            the processor cannot go on (the message says what to do)
          ├── DeadLetterError      a poison message could not be written to the DLQ topic
          ├── DeadLetterTopicError the DLQ topic is not on the cluster (checked before consuming)
          ├── StartPositionError   a fresh lake would silently skip what the group already consumed
          └── TopicLifetimeError   the topic's offsets started over (created again, a wiped broker): the lake's
                                   offsets belong to the old one
"""

from __future__ import annotations

from costline.errors import CostlineError

__all__ = ["ProcessorError", "DeadLetterError", "DeadLetterTopicError", "StartPositionError", "TopicLifetimeError",
           "OtherWriterError"]


class ProcessorError(CostlineError):
    """Root of the stream processor's errors."""


class DeadLetterError(ProcessorError):
    """A message that cannot be decoded could not be written to the DLQ; nothing is committed past it."""


class DeadLetterTopicError(ProcessorError):
    """``[kafka] dlq_topic`` is not on the cluster (or this client may not see it): the processor does not start,
    rather than stall on the first message it must dead-letter."""


class StartPositionError(ProcessorError):
    """The lake has no manifest for partitions the consumer group already committed offsets for."""


class TopicLifetimeError(ProcessorError):
    """A partition's offsets in the lake belong to another lifetime of the topic (deleted and created again, a
    broker whose storage was wiped, a new cluster): resuming there would skip the new records, and writing them
    would collide with committed batches. The processor stops instead (``--accept-new-topic`` says what to do)."""


class OtherWriterError(ProcessorError):
    """A processor of another consumer group (or of this group id on another Kafka cluster) claimed a partition
    this one holds: two groups write one lake, and each would keep taking the partitions from the other."""
