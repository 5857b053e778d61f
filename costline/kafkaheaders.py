"""Record header keys that are not UTF-8, read the way Kafka's Java client reads them.

Kafka's protocol types a record header key as a string, but only the Java producer enforces UTF-8 when it
writes one: sarama, franz-go and librdkafka take header keys as bytes and write what they are given. The
Java consumer decodes a key with ``new String(bytes, UTF_8)``, which puts U+FFFD where the bytes are not
UTF-8. kafka-python (3.0) decodes strictly, inside its record-batch reader: one such key makes ``poll()``
raise ``CorruptRecordError`` naming neither the partition nor the offset, so a consumer can neither skip nor
dead-letter that one message — it fails again at the same offset on every restart, and the partition stops
behind one header (a valid message: its key, value and other headers are fine).

:func:`read_header_keys_like_java` makes kafka-python's reader do what the Java client does, for every
consumer in the process: a record whose header key fails strict decoding is read again with U+FFFD for the
bad bytes. A well-formed record never takes that path (the strict read is tried first), so nothing changes
for it; keys, values and header values stay bytes as before. Call it before creating a consumer; it is
idempotent. If kafka-python's reader is not the one this was written against, it leaves it alone, logs once
and returns False (a consumer then behaves as kafka-python does).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

__all__ = ["read_header_keys_like_java"]

log = logging.getLogger(__name__)

#: Set on the wrapped reader, so a second call does not wrap it again.
_MARK = "_costline_reads_header_keys_like_java"


class _ReplacingSlice(bytearray):
    """A slice of a record batch whose ``decode`` replaces malformed bytes, as Java's String constructor does."""

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:  # noqa: ARG002 - replace, always
        return bytearray.decode(self, encoding, "replace")


class _ReplacingBuffer(bytearray):
    """A record batch's bytes whose slices are :class:`_ReplacingSlice` (single bytes stay ints)."""

    def __getitem__(self, item: Any) -> Any:
        got = bytearray.__getitem__(self, item)
        return _ReplacingSlice(got) if isinstance(item, slice) else got


def read_header_keys_like_java() -> bool:
    """Make kafka-python read a record whose header key is not UTF-8 with U+FFFD in it (the Java client's
    reading) instead of failing the whole ``poll()``. True when in place (now or already)."""
    try:
        from kafka.record.default_records import DefaultRecordBatch
    except ImportError:  # no kafka-python: no consumer to make lenient
        return False
    read = getattr(DefaultRecordBatch, "_read_msg", None)
    if read is None or not hasattr(DefaultRecordBatch, "__next__"):
        log.warning("kafka-python's record reader is not the one costline knows (no DefaultRecordBatch._read_msg): "
                    "a record whose header key is not UTF-8 will stop the consumer at its offset")
        return False
    if getattr(read, _MARK, False):
        return True

    @functools.wraps(read)
    def _read_msg(self: Any, *args: Any, **kwargs: Any) -> Any:
        start = self._pos
        try:
            return read(self, *args, **kwargs)
        except UnicodeDecodeError:  # a header key (the only text in a v2 record): read it again, leniently
            self._pos = start
            if not isinstance(self._buffer, _ReplacingBuffer):
                self._buffer = _ReplacingBuffer(self._buffer)
            return read(self, *args, **kwargs)

    setattr(_read_msg, _MARK, True)
    DefaultRecordBatch._read_msg = _read_msg
    return True
