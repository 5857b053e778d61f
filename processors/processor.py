"""The stream processor: ``otlp_spans`` → rows → Parquet lake, exactly-once in effect.

One :class:`Processor` is one member of the consumer group ``[processor] group_id``;
scaling out is running more of them. Each assigned partition has its own
:class:`~costline.processors.buffer.PartitionBuffer`; a buffer is committed to the
lake (:meth:`costline.lake.Lake.commit_batch`: data files, then the offset manifest
as the commit point) when it holds ``batch_max_spans`` spans or ``batch_max_bytes`` bytes of
messages, ``flush_interval_s``
after its first message, before its partition is revoked, and on shutdown.

On assignment the processor asks the lake, not Kafka, where to resume
(:meth:`~costline.lake.Lake.recover`: orphans of a crashed batch are deleted and
the consumer seeks to the last manifest + 1). Kafka's committed offset only
follows the lake (for lag dashboards: past offsets that hold no record too, such as
transaction markers; see :meth:`Processor._mirror_positions`) and is used when a
partition has no manifest yet.

Topic lifetimes: Kafka offsets start over at 0 when the topic is deleted and created again (or the broker's
storage is wiped, or the processor is pointed at a new cluster), and the lake's offsets then mean nothing.
Every manifest records the topic's id (:func:`topic_lifetime_change`); on claim, a partition whose recorded
id differs from the topic's, or whose next offset lies past the partition's end, is refused
(:class:`~costline.processors.errors.TopicLifetimeError`) instead of resuming there, which would skip the new
records (and kafka-python's reset to offset 0 would write batches over committed ones). ``--accept-new-topic``
(``accept_new_topic``) sets the partition's history aside (:meth:`~costline.lake.Lake.retire_partition`:
renamed, still read) and reads the new topic from its beginning. A manifest without an id (a lake from before
ids were recorded) gets the offset check alone; the next commit records the id. The lake itself refuses a
batch that covers committed offsets (:class:`~costline.lake.OffsetsWentBack`), whatever reached it.

Fencing: before recovering a partition the processor claims it in the lake
(:meth:`~costline.lake.Lake.claim` bumps the partition's epoch), and every commit
carries that epoch. An instance that missed a rebalance (stalled past
``max.poll.interval.ms``, a long GC pause) and wakes up with a buffer cannot
commit it: the lake refuses the stale epoch, the batch is dropped, and the new
owner, which resumed from the last manifest, writes those offsets instead. A fenced
partition is read no further (paused) until the group's rebalance hands it out again.

The claim records who made it (the consumer group, the Kafka cluster's id, host and pid). A processor of
another consumer group (or of this group id on another Kafka cluster) that claims a partition fences this one
for good: no rebalance of this group ever hands it back. A processor fenced by such a writer stops with
:class:`OtherWriterError` (exit status 2) instead of running on without writing; what it held uncommitted is
read again on restart, from the lake's last manifest.

Rebalances (kafka-python 3): the rebalance listener runs on the consumer's IO thread, the
thread that also sends the group heartbeats, while the main thread waits inside ``poll()``.
Anything slow in the listener (a Parquet flush, a claim written to disk) stops the heartbeats;
past ``session_timeout_ms`` the broker expels the member in the middle of the rebalance, and
its JoinGroup / LeaveGroup then fail with UnknownMemberIdError. So the listener only records
what happened and pauses newly assigned partitions; the main thread does the work after
``poll()`` returns: it flushes revoked buffers (their commit is fenced if the new owner
claimed first) and then claims, recovers, seeks and resumes the assigned partitions. Before
that, as soon as the group wants to rebalance, the main thread stops handling the records of
the current poll (the unhandled ones are read again), flushes what it holds and polls, so
the group is not kept waiting: heartbeats come from the IO thread, so a busy main thread is
never expelled, and the broker would hold the whole group up to ``max_poll_interval_ms``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from costline import contract
from costline.config import Config
from costline.kafka_security import client_options
from costline.kafkameta import topic_id_text
from costline.kafkaheaders import read_header_keys_like_java
from costline.lake import OffsetsWentBack, WriterFenced
from costline.otlp import JsonSalvage, OtlpDecodeError, ProtobufSalvage
from costline.pricing import NO_FAST_PRICE, NO_PRIORITY_PRICE
from costline.processors.attributes import MIN_TIME_NS
from costline.processors.buffer import PartitionBuffer
from costline.processors.decode import decode_message, flatten_into, invalid_spans_request
from costline.processors.errors import (
    DeadLetterError,
    DeadLetterTopicError,
    OtherWriterError,
    StartPositionError,
    TopicLifetimeError,
)
from costline.processors.records import CallRow, MemoPricingTable, null_times_outside, null_times_past_days

__all__ = ["Processor", "ProcessorStats", "START_POSITIONS", "topic_lifetime_change"]

log = logging.getLogger(__name__)

#: Where a partition the lake holds no manifest for starts (``costline process`` flags):
#: "lake" refuses when the consumer group already committed past the partition's first offset
#: (a fresh lake on an old group would silently skip that history); "committed" accepts Kafka's
#: committed offsets (--from-committed); "beginning" reads from the partition's first offset
#: (--from-beginning). Partitions with a manifest always resume from the lake.
START_POSITIONS = ("lake", "committed", "beginning")

#: The DLQ producer's request limit (kafka-python's default is 1 MiB): a dead-lettered value is the message as
#: read, uncompressed. A record the DLQ topic still cannot hold is dead-lettered without its value.
DLQ_MAX_REQUEST_BYTES = 32 << 20
#: How long the DLQ producer's ``send()`` may block waiting for the DLQ topic's metadata (ms; kafka-python's default
#: is 60 s): a DLQ topic deleted while the processor runs stops it in bounded time (DeadLetterError). Meanwhile
#: kafka-python's own ``kafka.cluster`` logger writes an ERROR for each metadata answer without the topic, ~9 a second
#: (its metadata retry backoff, 100 ms, is not configurable through the producer in kafka-python 3.0); that logger is
#: the application's to set, so ~90 lines, not the ~580 of the 60 s default.
DLQ_MAX_BLOCK_MS = 10_000
#: How long the start check waits for ``[kafka] dlq_topic`` to show in the cluster's metadata (s): a topic created
#: moments ago can still read as unknown for a moment.
DLQ_TOPIC_WAIT_S = 5.0
#: kafka-python's errors for a record too large for the producer's limit or the topic's ``max.message.bytes``.
_TOO_LARGE = frozenset({"MessageSizeTooLargeError", "RecordListTooLargeError"})
#: Distinct unpriced model names the processor names in its log and summary (the rest: "and more").
MAX_UNKNOWN_MODELS = 100
#: An unpriced model's name is cut to this many characters in the log and summary.
MAX_MODEL_NAME_CHARS = 120
#: Records one ``poll()`` returns at most.
MAX_POLL_RECORDS = 1000
#: Records handled between two checks whether the group wants to rebalance.
REJOIN_CHECK_RECORDS = 100
#: How long the "caught up?" check of ``--until-idle`` may wait for the broker (ms).
IDLE_CHECK_TIMEOUT_MS = 2000
#: Per-partition and per-request fetch sizes (kafka-python defaults: 1 MiB, 50 MiB).
MAX_PARTITION_FETCH_BYTES = 4 * 1024 * 1024
FETCH_MAX_BYTES = 64 * 1024 * 1024
#: How long the broker holds a fetch that finds nothing new (kafka-python's default: 500 ms). A fetch
#: returns as soon as a record arrives, so a longer hold delays nothing; it only means fewer empty
#: fetches for the client to send and parse while the topic is quiet.
FETCH_MAX_WAIT_MS = 2000
#: How long the main thread may go between two ``poll()`` calls before the group expels this member
#: (kafka-python's default, set here so it is said): a buffer's flush runs between polls and writes a file
#: per table and UTC day its rows fall on, at most :data:`MAX_DAYS_PER_FLUSH` (64) of them; a flush of
#: hundreds of days once took minutes.
MAX_POLL_INTERVAL_MS = 300_000
#: A record timestamp before this (2000-01-01; Kafka's "none" is -1) is no reference time: the wall clock is.
_MIN_RECORD_TIMESTAMP_MS: Final = MIN_TIME_NS // 1_000_000
#: The most UTC days one flush writes per table (besides ``date=1970-01-01``, where rows without a time go): a
#: span of a record whose time falls on another day once a batch's rows cover this many is kept with ``ts`` NULL
#: (``ts:out_of_window``), so records whose timestamps (a producer's clock) walk over years, each inside its own
#: span-time window, cannot make a file per table and day either. A batch of live traffic covers a day or two; a
#: replay of an old topic, whose records come in their order, a day or a few per batch.
MAX_DAYS_PER_FLUSH: Final = 64


class _BatchTimes:
    """What a partition's buffer was read with, beside its rows: the record timestamps trusted as the span-time
    window's reference (ms, capped at the wall clock), and per table the UTC days its rows' times fall on."""

    __slots__ = ("buf", "record_ms", "days")

    def __init__(self, buf: PartitionBuffer) -> None:
        self.buf = weakref.ref(buf)  # a buffer dropped unflushed (a lost partition) is not kept alive by this
        self.record_ms: list[int] = []
        self.days: dict[str, set[int]] = {"requests": set(), "calls": set(), "lookups": set()}

    def record_time_ms(self) -> int | None:
        """The batch's record time for its manifest: the median (low) of its trusted record timestamps, so a
        few records stamped by a fast clock (the in-app exporter lets the app host's clock stamp them) cannot
        carry it ahead; None: no record carried a trusted one."""
        if not self.record_ms:
            return None
        ordered = sorted(self.record_ms)
        return ordered[(len(ordered) - 1) // 2]
#: The longest one ``poll()`` waits for records (s). The loop polls sooner when a buffer falls due
#: (``flush_interval_s``) or ``--until-idle`` may end; otherwise each empty poll round only costs CPU.
#: With this and :data:`FETCH_MAX_WAIT_MS`, an idle processor takes ~4 ms of CPU per second
#: instead of ~12 (200 ms polls, 500 ms fetches), measured on the 2-core VM; it is also how soon
#: :meth:`Processor.stop` is noticed.
POLL_MAX_WAIT_S = 1.0
#: The shortest wait (s): a buffer due now is flushed after a poll that returns at once anyway,
#: and a loop that waits to be caught up must not spin.
POLL_MIN_WAIT_S = 0.05
#: The cyclic GC's generation-0 threshold while a processor runs (CPython's default: 700). Buffers
#: hold thousands of row tuples until they become Arrow batches, so with the default every 700 rows
#: set off a collection that walks the rows held (measured: ~220 gen-0 and ~20 gen-1 collections per
#: 100k spans, about 4 µs of GC CPU per span, 8-9 % of the end-to-end CPU; none in the bare decode,
#: which holds no rows). Above the rows a processor holds at once, the rows are gone before a
#: collection comes; cycles are still collected, after 50k allocations instead of 700.
GC_GEN0_THRESHOLD = 50_000
_gc_lock = threading.Lock()
_gc_users = 0
_gc_saved: tuple[int, int, int] | None = None


def topic_lifetime_change(recorded_id: str | None, live_id: str | None, next_offset: int | None,
                          end_offset: int | None) -> str | None:
    """Why a partition's offsets in the lake belong to another lifetime of the topic, or None when resuming at
    ``next_offset`` is right.

    ``recorded_id``: the topic id the partition's last manifest recorded (None: a lake from before ids were
    recorded, or a broker without ids); ``live_id``: the topic's id now (None: unknown); ``next_offset``: the
    lake's next offset (None: no manifest, nothing to resume); ``end_offset``: the partition's end offset now
    (None: unknown). Another id means the topic was deleted and created again; a next offset past the end
    means the log holds fewer records than the lake already read (created again, a wiped broker, a new cluster)."""
    if next_offset is None:
        return None
    if recorded_id is not None and live_id is not None and recorded_id != live_id:
        return (f"the topic's id is now {live_id}, the lake's last manifest recorded {recorded_id}: the topic was "
                f"deleted and created again, and the lake's next offset {next_offset} belongs to the old one")
    if end_offset is not None and next_offset > end_offset:
        return (f"the partition ends at offset {end_offset}, before the lake's next offset {next_offset}: its log "
                "started over (the topic was created again, the broker's storage was wiped, or this is another "
                "cluster)")
    return None




@contextlib.contextmanager
def _gc_for_buffers() -> Iterator[None]:
    """Raise the GC's generation-0 threshold (never lower it) while any processor of this
    interpreter runs; the first one in saves the old thresholds, the last one out restores them."""
    global _gc_users, _gc_saved
    with _gc_lock:
        if _gc_users == 0:
            _gc_saved = gc.get_threshold()
            gen0, gen1, gen2 = _gc_saved
            gc.set_threshold(max(gen0, GC_GEN0_THRESHOLD), gen1, gen2)
        _gc_users += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_users -= 1
            if _gc_users == 0 and _gc_saved is not None:
                gc.set_threshold(*_gc_saved)
                _gc_saved = None


#: pricing_status of a known model's call on a premium mode it has no multiplier for -> (the stats set naming those
#: models, how it ran, the key to set, an example value): named once each in the log.
_PREMIUMS: Final = {
    NO_FAST_PRICE: ("no_fast_price_models", 'in fast mode (speed "fast")', "fast_multiplier", "2 or 6"),
    NO_PRIORITY_PRICE: ("no_priority_price_models", 'on OpenAI\'s priority tier (service_tier "priority")',
                        "priority_multiplier", "1.75 or 2"),
}


@dataclass
class ProcessorStats:
    """Counters of one processor run."""

    messages: int = 0
    spans: int = 0
    ignored_spans: int = 0
    #: Spans left out while the rest of their message was kept (they go to the DLQ): malformed ids, an OTLP/JSON
    #: span that does not decode on its own, a span that does not flatten.
    invalid_spans: int = 0
    rows: dict[str, int] = field(default_factory=lambda: {"requests": 0, "calls": 0, "lookups": 0})
    dlq: int = 0
    unknown_model_calls: int = 0
    #: Names of unpriced models seen (at most :data:`MAX_UNKNOWN_MODELS`, each cut to
    #: :data:`MAX_MODEL_NAME_CHARS`: a sender inventing ids must not grow it, or the log, without bound).
    unknown_models: set[str] = field(default_factory=set)
    #: Known models whose fast-mode calls came without a ``fast_multiplier`` to price them (named once each).
    no_fast_price_models: set[str] = field(default_factory=set)
    #: Known models whose OpenAI priority calls came without a ``priority_multiplier`` (named once each).
    no_priority_price_models: set[str] = field(default_factory=set)
    #: Whether more distinct unpriced models came than ``unknown_models`` keeps.
    unknown_models_more: bool = False
    commits: int = 0
    #: Batches refused because another instance had claimed their partition (a rebalance).
    fenced: int = 0

    def describe(self) -> str:
        rows = ", ".join(f"{k} {v}" for k, v in self.rows.items())
        more = ", and more" if self.unknown_models_more else ""
        unknown = f" ({', '.join(sorted(self.unknown_models))}{more})" if self.unknown_models else ""
        invalid = f", left out {self.invalid_spans}" if self.invalid_spans else ""
        return (f"messages {self.messages}, spans {self.spans} (ignored {self.ignored_spans}{invalid}); rows: {rows}; "
                f"dlq {self.dlq}; unknown-model calls {self.unknown_model_calls}{unknown}; "
                f"lake commits {self.commits}" + (f"; fenced batches {self.fenced}" if self.fenced else ""))


#: On a DLQ record: the names of the original's headers whose value was null (comma-separated, each once, in
#: order). Kafka allows a null header value (the Java client writes ``new RecordHeader(k, null)``; kafka-python reads
#: it as ``None``) but kafka-python's producer sends bytes only: such a value goes to the DLQ as ``b""``.
HEADER_DLQ_NULL_HEADERS: Final = "costline.dlq.null_headers"
#: On a DLQ record sent without the original's headers, because the producer refused them: why.
HEADER_DLQ_HEADERS_DROPPED: Final = "costline.dlq.headers_dropped"
#: costline's own DLQ headers: one the original message carries is not forwarded (it would pass for costline's).
_OWN_DLQ_HEADERS: Final = frozenset({contract.HEADER_DLQ_REASON, contract.HEADER_DLQ_SOURCE,
                                     contract.HEADER_DLQ_VALUE_DROPPED, HEADER_DLQ_NULL_HEADERS,
                                     HEADER_DLQ_HEADERS_DROPPED})


def _header_name(key: Any) -> str:
    """A header key as kafka-python's producer takes it: a ``str`` that encodes to UTF-8 (bytes are decoded with
    U+FFFD for what is not UTF-8, as Kafka's Java client reads a key; a lone surrogate becomes U+FFFD too)."""
    if not isinstance(key, str):
        key = (bytes(key).decode("utf-8", "replace") if isinstance(key, (bytes, bytearray, memoryview))
               else str(key))
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        key = "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in key)
    return key


def _header_value(value: Any) -> bytes:
    """A (non-null) header value as kafka-python's producer takes it: exactly ``bytes``."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return (value if isinstance(value, str) else str(value)).encode("utf-8", "replace")


def _dlq_headers(headers: Any) -> list[tuple[str, bytes]]:
    """A message's headers, made sendable for its DLQ record (costline's own DLQ headers left out): a null value
    becomes ``b""`` and the names of those headers go in :data:`HEADER_DLQ_NULL_HEADERS`."""
    out: list[tuple[str, bytes]] = []
    nulls: dict[str, None] = {}
    for key, value in headers or ():
        name = _header_name(key)
        if name in _OWN_DLQ_HEADERS:
            continue
        if value is None:
            nulls[name] = None
            out.append((name, b""))
        else:
            out.append((name, _header_value(value)))
    if nulls:
        out.append((HEADER_DLQ_NULL_HEADERS, ",".join(nulls).encode("utf-8")))
    return out


def _with_content_type(headers: Any, content_type: str) -> list[tuple[str, bytes | None]]:
    """A message's headers with its ``content-type`` replaced by ``content_type`` (a key that is not a ``str``
    is compared as :func:`_header_name` reads it; values, null ones too, are left to :func:`_dlq_headers`)."""
    return ([(k, v) for k, v in (headers or ())
             if (k if isinstance(k, str) else _header_name(k)).lower() != contract.HEADER_CONTENT_TYPE]
            + [(contract.HEADER_CONTENT_TYPE, content_type.encode())])


class _Listener:
    """ConsumerRebalanceListener delegating to the processor (kept tiny: runs on kafka's IO thread)."""

    def __init__(self, processor: "Processor") -> None:
        self._p = processor

    def on_partitions_revoked(self, revoked: Any) -> None:
        self._p._on_revoked(revoked)

    def on_partitions_assigned(self, assigned: Any) -> None:
        self._p._on_assigned(assigned)

    def on_partitions_lost(self, lost: Any) -> None:
        self._p._on_lost(lost)


class Processor:
    """Consume OTLP spans, write the lake. ``run()`` until stopped or idle."""

    def __init__(
        self,
        config: Config,
        *,
        now: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        consumer_factory: Callable[..., Any] | None = None,
        producer_factory: Callable[..., Any] | None = None,
        start: str = "lake",
        accept_new_topic: bool = False,
    ) -> None:
        if start not in START_POSITIONS:
            raise ValueError(f"start must be one of {', '.join(START_POSITIONS)}; got {start!r}")
        self.start = start
        #: A partition whose lake offsets belong to an earlier lifetime of the topic: set its history aside and
        #: read it from its beginning (``--accept-new-topic``), instead of refusing (TopicLifetimeError).
        self.accept_new_topic = accept_new_topic
        self.config = config
        self.topic = config.kafka.topic
        from costline.processors.table_sink import lake_writer  # [lake] mode: local files or Iceberg tables

        self.lake = lake_writer(config)
        self.pricing = MemoPricingTable(config.pricing)
        self.stats = ProcessorStats()
        self._now = now
        #: Seconds since the epoch: the span-time window's reference for a record without a timestamp.
        self._wall_clock = wall_clock
        pcfg = config.processor
        #: The span-time window, in µs either side of the reference time (None: no bound that side).
        self._max_age_us = round(pcfg.span_time_max_age_days * 86_400_000_000) or None
        self._max_ahead_us = round(pcfg.span_time_max_ahead_s * 1_000_000) or None
        self._consumer_factory = consumer_factory
        self._producer_factory = producer_factory
        self._consumer: Any = None
        self._producer: Any = None
        self._buffers: dict[int, PartitionBuffer] = {}
        self._stop = threading.Event()
        self._last_activity = now()
        self._joined = False
        self._commit_kafka: dict[int, int] = {}
        #: Per claimed partition the lake holds a manifest for: the offset last mirrored to Kafka (-1: none yet).
        #: Only these may have the consumer's position mirrored (see :meth:`_mirror_positions`).
        self._mirrored: dict[int, int] = {}
        #: When :meth:`_mirror_positions` may next look at the consumer's positions (the clock of ``now``).
        self._next_position_check = float("-inf")
        #: Per assigned partition, this instance's claim on it in the lake (Lake.claim).
        self._epochs: dict[int, int] = {}
        #: Per claimed partition, the topic id its manifests record (the topic's id at claim; None: unknown).
        self._topic_ids: dict[int, str | None] = {}
        #: Set by the rebalance listener (IO thread), acted on by the main thread after poll():
        #: buffers of revoked partitions with the epoch they were read under, to flush ...
        self._revoked: dict[int, tuple[PartitionBuffer, int | None]] = {}
        #: ... and assigned partitions, paused until they are claimed and recovered.
        self._to_claim: list[Any] = []
        self._unpriced: list[CallRow] = []  # scratch list of handle()
        #: Per partition, what its current buffer was read with (:class:`_BatchTimes`; stale when of another buffer).
        self._batch_times: dict[int, _BatchTimes] = {}

    # -- lifecycle -------------------------------------------------------------------
    def stop(self) -> None:
        """Ask ``run()`` to flush, close and return (safe from signal handlers / other threads)."""
        self._stop.set()

    def run(self, until_idle: float | None = None, *,
            announce: Callable[[str], None] | None = None) -> ProcessorStats:
        """Process until :meth:`stop`, or (``until_idle``) caught up and idle that many seconds: then what is
        buffered is committed at once (not ``flush_interval_s`` later) and it returns.

        ``announce`` gets one line once the group has given this member its partitions (``costline process``
        prints it). While it runs, the interpreter's cyclic GC runs less often (see :data:`GC_GEN0_THRESHOLD`)."""
        with _gc_for_buffers():
            return self._run(until_idle, announce)

    def _announce(self, until_idle: float | None) -> str:
        n = len(self._consumer.assignment())
        until = (f"exits after {until_idle:g} s idle" if until_idle is not None
                 else "runs until stopped (Ctrl-C / SIGTERM)")
        return f"reading {n} partition{'' if n == 1 else 's'} of {self.topic}; {until}"

    def _run(self, until_idle: float | None, announce: Callable[[str], None] | None = None) -> ProcessorStats:
        from kafka.consumer.subscription_state import ConsumerRebalanceListener

        self.lake.init()
        self._consumer = self._make_consumer()
        try:
            self._check_start_position()
            self._check_dlq_topic()  # before consuming: not at the first message it must dead-letter
        except BaseException:
            self._consumer.close(autocommit=False)
            raise
        listener = type("CostlineRebalanceListener", (_Listener, ConsumerRebalanceListener), {})(self)
        self._consumer.subscribe([self.topic], listener=listener)
        self._last_activity = self._now()
        last_report = self._now()
        try:
            while not self._stop.is_set():
                if self._rejoin_pending():  # flush now: the revoke listener must not
                    self.flush_all()
                batch = self._consumer.poll(timeout_ms=self._poll_wait_ms(until_idle),
                                            max_records=MAX_POLL_RECORDS)
                self._settle_rebalance()
                if announce is not None and self._joined:
                    with contextlib.suppress(Exception):  # a closed stderr must not stop the processor
                        announce(self._announce(until_idle))
                    announce = None
                now = self._now()
                if batch:
                    self._last_activity = now
                    self._handle_batch(batch, now)
                self.flush_due(now)
                self._commit_to_kafka()
                if now - last_report >= 10.0:
                    log.info("processor: %s", self.stats.describe())
                    last_report = now
                if until_idle is not None and now - self._last_activity >= until_idle and self._caught_up():
                    log.info("idle for %.1fs and caught up: committing what is buffered and exiting", until_idle)
                    break
            self.flush_all()  # --until-idle, stop(): what is buffered now, not flush_interval_s after it opened
            self._commit_to_kafka(final=True)
        finally:
            try:
                self._consumer.close(autocommit=False)
            finally:
                if self._producer is not None:
                    self._producer.close()
        log.info("processor done: %s", self.stats.describe())
        return self.stats

    def _poll_wait_ms(self, until_idle: float | None) -> int:
        """How long the next ``poll()`` may wait: until the first buffer falls due or ``until_idle``
        may end, within [:data:`POLL_MIN_WAIT_S`, :data:`POLL_MAX_WAIT_S`]."""
        now = self._now()
        wait = POLL_MAX_WAIT_S
        interval = self.config.processor.flush_interval_s
        for buf in self._buffers.values():
            if buf.opened_at is not None:
                wait = min(wait, buf.opened_at + interval - now)
        if until_idle is not None and (idle_left := self._last_activity + until_idle - now) > 0:
            wait = min(wait, idle_left)  # once idle long enough, "caught up?" is asked every poll
        return int(max(wait, POLL_MIN_WAIT_S) * 1000)

    def _handle_batch(self, batch: dict[Any, list[Any]], now: float) -> None:
        """Handle one poll's records; stop early when the group wants to rebalance, rewinding
        each partition to its first unhandled record (read again after the rebalance, by
        whichever member then owns it). Asked every :data:`REJOIN_CHECK_RECORDS` records."""
        handle = self.handle
        step = REJOIN_CHECK_RECORDS
        epochs = self._epochs
        for tp, records in batch.items():
            partition = tp.partition
            for start in range(0, len(records), step):
                if start and self._rejoin_pending():
                    self._rewind(batch, tp, start)
                    return
                for rec in records[start:start + step]:
                    if partition not in epochs:  # fenced (a flush just now): its next claim seeks to the lake's
                        break  # offset; nothing read for a partition not held could ever be committed
                    handle(partition, rec.offset, rec.key, rec.value, rec.headers, now, rec.timestamp)
                else:
                    continue
                break

    def _rewind(self, batch: dict[Any, list[Any]], stopped_at: Any, index: int) -> None:
        later = False
        for tp, records in batch.items():
            if tp == stopped_at:
                later = True
                first = records[index].offset
            elif later and records:
                first = records[0].offset
            else:
                continue
            with contextlib.suppress(Exception):  # unassigned meanwhile: its new owner reads it
                self._consumer.seek(tp, first)
        log.info("the group is rebalancing: left the rest of this poll's records to be read again")

    def _rejoin_pending(self) -> bool:
        """True when this member's consumer must rejoin its group (a rebalance began). kafka-python
        has no public call for it; its coordinator's ``need_rejoin()`` is what ``poll()`` asks."""
        coordinator = getattr(self._consumer, "_coordinator", None)
        try:
            return bool(coordinator is not None and coordinator.need_rejoin())
        except Exception:  # noqa: BLE001 - a client without it: the next poll() rejoins anyway
            return False

    def _settle_rebalance(self) -> None:
        """Main thread, after poll(): the work the rebalance listener left (see the module doc)."""
        if self._revoked:
            revoked, self._revoked = self._revoked, {}
            for partition, (buf, epoch) in revoked.items():
                self._flush_buffer(partition, buf, epoch)
        if self._to_claim:
            assigned, self._to_claim = self._to_claim, []
            owned = self._consumer.assignment()
            for tp in assigned:
                if tp in owned:  # else revoked again meanwhile
                    self._claim(tp)
            self._joined = True
            self._last_activity = self._now()

    def _position(self, tp: Any, next_offset: int | None, where: str) -> None:
        """Seek ``tp`` to ``next_offset`` (what the lake recorded), or to where reading starts without one."""
        if next_offset is not None:
            self._consumer.seek(tp, next_offset)
            log.info("partition %d: resuming at offset %d (%s)", tp.partition, next_offset, where)
            return
        # Always set the position: kafka-python keeps a partition's in-memory position when a
        # rebalance hands it back to the same member, and rows read up to there may never have
        # reached the lake (a lost partition's buffer, a fenced flush). Without a record, the
        # start is Kafka's committed offset for --from-committed, else the first offset (the
        # start check made sure the group committed nothing past it).
        committed = self._consumer.committed(tp) if self.start == "committed" else None
        if committed is not None:
            self._consumer.seek(tp, committed)
        else:
            self._consumer.seek_to_beginning(tp)
        log.info("partition %d: no %s; reading from offset %s", tp.partition, where,
                 committed if committed is not None else "0 (its first)")

    def _claim(self, tp: Any) -> None:
        # Claim first: from here on a previous owner that missed the rebalance (a "zombie")
        # can no longer commit, so what recovery finds stays the truth.
        self._buffers.pop(tp.partition, None)
        if getattr(self.lake, "records_claimant", False):
            self._epochs[tp.partition] = self.lake.claim(self.topic, tp.partition, claimant=self._claimant())
        else:
            self._epochs[tp.partition] = self.lake.claim(self.topic, tp.partition)
        next_offset, removed = self.lake.recover(self.topic, tp.partition)
        if removed:
            log.warning("partition %d: removed %d uncommitted file(s) of a crashed batch",
                        tp.partition, len(removed))
        next_offset, retired = self._check_lifetime(tp, next_offset)
        self._mirrored.pop(tp.partition, None)
        if next_offset is not None:
            self._mirrored[tp.partition] = -1
        if retired:
            self._consumer.seek_to_beginning(tp)
        else:
            self._position(tp, next_offset, "lake manifest")
        self._consumer.resume(tp)

    def _live_topic_id(self) -> str | None:
        """The topic's id in the consumer's cluster metadata (kafka-python 3: KIP-516); None when unknown."""
        try:
            return topic_id_text(self._consumer._client.cluster.topic_id(self.topic))
        except Exception:  # noqa: BLE001 - a client without ids: the offset checks alone
            return None

    def _check_lifetime(self, tp: Any, next_offset: int | None) -> tuple[int | None, bool]:
        """``(offset to resume from, set aside?)`` for a claimed partition whose lake would resume at
        ``next_offset``: raise :class:`TopicLifetimeError` when the lake's offsets belong to an earlier lifetime
        of the topic (:func:`topic_lifetime_change`), or with ``accept_new_topic`` set the partition's history
        aside and return ``(None, True)``: it is read from its beginning. Records the topic id for the
        partition's next manifests (sinks that record one)."""
        partition = tp.partition
        records_ids = getattr(self.lake, "records_topic_id", False)
        live = self._live_topic_id()
        if records_ids:
            self._topic_ids[partition] = live
        if next_offset is None:
            return None, False
        recorded = None
        if records_ids:
            recorded = getattr(self.lake.last_manifest(self.topic, partition), "topic_id", None)
        begin = end = None
        try:  # bounded, as the other checks: an unanswered question must not hold up the poll loop
            begin = self._consumer.beginning_offsets([tp], timeout_ms=IDLE_CHECK_TIMEOUT_MS).get(tp)
            end = self._consumer.end_offsets([tp], timeout_ms=IDLE_CHECK_TIMEOUT_MS).get(tp)
        except Exception as exc:  # noqa: BLE001
            log.warning("partition %d: could not read its first and end offsets (%s): resuming at the lake's "
                        "offset %d without checking that the topic still holds it", partition, exc, next_offset)
        why = topic_lifetime_change(recorded, live, next_offset, end)
        if why is None:
            if begin is not None and next_offset < begin:
                log.warning("partition %d: the topic now starts at offset %d: offsets %d..%d were deleted "
                            "(retention) before they reached the lake; reading from %d", partition, begin,
                            next_offset, begin - 1, begin)
            return next_offset, False
        retire = getattr(self.lake, "retire_partition", None)
        if self.accept_new_topic and retire is not None:
            log.error("partition %d of %r: %s. --accept-new-topic: the lake's history of it is kept and set aside, "
                      "and the new topic is read from its beginning (offset %s)", partition, self.topic, why, begin)
            retire(self.topic, partition, why)
            return None, True
        if self.accept_new_topic:
            todo = ("this lake mode cannot set a partition's history aside: point [lake] at new tables (another "
                    "namespace / warehouse) to read the new topic from its beginning, or restore the old topic")
        else:
            todo = ("run `costline process --accept-new-topic` to keep the lake's data and read the new topic from "
                    "its beginning (its new records get new files; the old ones stay readable), point [lake] path at "
                    "a new lake, or point [kafka] at the cluster the lake was written from")
        msg = (f"partition {partition} of {self.topic!r}: {why}. Resuming there would silently skip the new "
               f"topic's records below offset {next_offset}, so the processor stops: {todo}")
        log.error("%s", msg)
        raise TopicLifetimeError(msg)

    def _check_start_position(self) -> None:
        """Refuse (start "lake") when the group committed offsets the lake has no manifest for."""
        if self.start != "lake":
            return
        from kafka import TopicPartition

        # A topic created moments ago can still read as unknown to the broker's metadata: ask again
        # for a few seconds before concluding it has no partitions (nothing to check then).
        deadline = time.monotonic() + 5.0
        while not (partitions := self._consumer.partitions_for_topic(self.topic) or set()) \
                and time.monotonic() < deadline:
            time.sleep(0.25)
        fresh = [TopicPartition(self.topic, p) for p in sorted(partitions)
                 if self.lake.last_manifest(self.topic, p) is None]
        if not fresh:
            return
        firsts = self._consumer.beginning_offsets(fresh)
        skipped = []
        for tp in fresh:
            committed = self._consumer.committed(tp)
            if committed is not None and committed > firsts.get(tp, 0):
                skipped.append(f"{tp.partition} (offsets {firsts.get(tp, 0)}..{committed - 1})")
        self._refuse_skipping(skipped)

    def _refuse_skipping(self, skipped: list[str]) -> None:
        """Raise when a fresh lake would start past history the group already committed (``skipped``:
        one "partition (offsets a..b)" each)."""
        if skipped:
            raise StartPositionError(
                f"the lake at {self.lake.path} has no offsets for partition(s) {', '.join(skipped)} of "
                f"{self.topic!r}, but consumer group {self.config.processor.group_id!r} already committed past "
                "them: starting there would skip that history. Run `costline process --from-beginning` to "
                "read those partitions from their first offset (rebuilds the lake), or `--from-committed` "
                "to start at the group's committed offsets and leave the earlier messages out")

    def _check_dlq_topic(self) -> None:
        """Refuse to start (DeadLetterTopicError) when ``[kafka] dlq_topic`` is not on the cluster: the first message
        to dead-letter would stop the processor anyway, only later and slower (the DLQ producer waits
        :data:`DLQ_MAX_BLOCK_MS` for the topic). The consumer's metadata of all topics is what is asked, which
        never creates a topic (whatever the broker's ``auto.create.topics.enable``). When this client does not see
        its source topic either, nothing is said here: the cluster shows it no topic (no DESCRIBE, its ACLs) or the
        source is missing too, and what ``poll()`` raises says more (which ACLs to grant)."""
        if not self._consumer.partitions_for_topic(self.topic):
            return
        dlq = self.config.kafka.dlq_topic
        deadline = time.monotonic() + DLQ_TOPIC_WAIT_S
        while not self._consumer.partitions_for_topic(dlq):
            if time.monotonic() >= deadline:
                break
            time.sleep(0.25)
        else:
            return
        kafka = self.config.kafka
        user = kafka.sasl_username or "this client's principal"
        raise DeadLetterTopicError(
            f"DLQ topic {dlq!r} ([kafka] dlq_topic) is not on the cluster at {kafka.bootstrap}, or {user} may not "
            f"see it; the processor would stop at the first message it must dead-letter. Create it: `costline kafka "
            f"up` creates [kafka] topic and dlq_topic (on an external cluster too), or have it created (1 partition "
            f"is enough) and grant {user} WRITE on it; or set [kafka] dlq_topic (env COSTLINE_KAFKA_DLQ_TOPIC) to a "
            "topic that exists")

    def _make_consumer(self) -> Any:
        cfg = self.config
        kwargs = dict(
            bootstrap_servers=cfg.kafka.bootstrap,
            group_id=cfg.processor.group_id,
            client_id=f"costline-processor-{cfg.processor.group_id}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # A transactional producer's aborted records must never reach the lake, nor records of a
            # transaction still open (they may yet be aborted): read up to the last stable offset only.
            isolation_level="read_committed",
            session_timeout_ms=cfg.processor.session_timeout_ms,
            heartbeat_interval_ms=cfg.processor.heartbeat_interval_ms,
            max_poll_interval_ms=MAX_POLL_INTERVAL_MS,
            max_poll_records=MAX_POLL_RECORDS,
            # Bigger fetches: fewer round trips per span when catching up (one trace is ~1 kB).
            max_partition_fetch_bytes=MAX_PARTITION_FETCH_BYTES,
            fetch_max_bytes=FETCH_MAX_BYTES,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            # kafka-python's client metrics (sensors updated on every socket read and fetch response)
            # are read by nothing here: lag is visible through the offsets mirrored to Kafka.
            metrics_enabled=False,
            **client_options(cfg.kafka),
        )
        # One record whose header key is not UTF-8 (sarama / librdkafka can write one) must not stop the
        # partition: kafka-python fails the whole poll() on it, at the same offset on every start.
        read_header_keys_like_java()
        if self._consumer_factory is not None:
            return self._consumer_factory(**kwargs)
        from kafka import KafkaConsumer

        return KafkaConsumer(**kwargs)

    def _dlq_producer(self) -> Any:
        if self._producer is None:
            # Compressed, and a request limit past kafka-python's 1 MiB: a message is read uncompressed, and one
            # that came in a producer's compressed batch may be many times the broker's limit as it is.
            kwargs = dict(bootstrap_servers=self.config.kafka.bootstrap, acks="all", retries=5,
                          client_id="costline-processor-dlq", compression_type="gzip",
                          max_request_size=DLQ_MAX_REQUEST_BYTES, max_block_ms=DLQ_MAX_BLOCK_MS,
                          **client_options(self.config.kafka))
            if self._producer_factory is not None:
                self._producer = self._producer_factory(**kwargs)
            else:
                from kafka import KafkaProducer

                self._producer = KafkaProducer(**kwargs)
        return self._producer

    def _close_dlq_producer(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=5)
            except Exception:  # noqa: BLE001 - a producer in error: the next one is made fresh anyway
                log.debug("closing the DLQ producer failed", exc_info=True)
            self._producer = None

    # -- per message -----------------------------------------------------------------
    def handle(self, partition: int, offset: int, key: bytes | None, value: bytes | None,
               headers: Any, now: float, timestamp_ms: int | None = None) -> None:
        """Decode one message into its partition's buffer, or dead-letter it. ``timestamp_ms``: the Kafka
        record's timestamp in ms (None, or before 2000 as Kafka's -1 is: it has none), the reference time of the
        span-time window (:meth:`_window_times`)."""
        stats = self.stats
        stats.messages += 1
        buf = self._buffers.get(partition)
        if buf is None:
            buf = self._buffers[partition] = PartitionBuffer(partition)
        pcfg = self.config.processor
        pending = buf.rows
        unpriced = self._unpriced
        invalid: list[tuple[Any, Any, Any, str]] = []
        salvaged: list[JsonSalvage | ProtobufSalvage] = []
        marks = len(pending["requests"]), len(pending["calls"]), len(pending["lookups"])
        try:
            # Rows go straight into the buffer's lists. Flattening validates span ids too
            # (decode_message leaves that to it): a span with a malformed id, or one that does not
            # flatten, is left out and its neighbours kept, as an OTLP receiver does; so is a span that does
            # not decode on its own (OTLP/JSON: a value protobuf cannot hold; protobuf: nested past protobuf's
            # depth limit, corrupt). A message of nothing else is dead-lettered whole.
            spans, ignored = flatten_into(decode_message(value, headers, pcfg.encoding, salvaged), self.pricing,
                                          partition, offset, pending["requests"], pending["calls"],
                                          pending["lookups"], unpriced, invalid)
            if (invalid or salvaged) and len(invalid) == spans:
                raise OtlpDecodeError(salvaged[0].reason if salvaged else invalid[0][3])
        except OtlpDecodeError as exc:
            self._dead_letter(partition, offset, key, value, headers, str(exc))
            buf.note(offset, 0, now)
            return
        except Exception as exc:  # noqa: BLE001 - nothing one message holds may stop the loop
            unpriced.clear()
            self._dead_letter(partition, offset, key, value, headers,
                              f"cannot flatten the message: {type(exc).__name__}: {exc}")
            buf.note(offset, 0, now)
            return
        if timestamp_ms is not None:
            self._window_times(self._times_of(partition, buf), pending, marks, timestamp_ms)
        unparsed = salvaged[0].dropped if salvaged else 0  # spans that did not decode on their own
        total = spans + unparsed
        stats.spans += total
        stats.ignored_spans += ignored
        # What the lake does not hold goes to the DLQ: only those spans, so a replay duplicates nothing. Spans that
        # did not decode go as they came: OTLP/JSON ones as OTLP/JSON (protobuf cannot hold them), protobuf ones as
        # their own bytes under their resource and scope (they parse no better there); the others as protobuf.
        if unparsed:
            got = salvaged[0]
            stats.invalid_spans += unparsed
            if isinstance(got, JsonSalvage):
                dead, ctype = got.dropped_json, contract.CONTENT_TYPE_JSON
            else:
                dead, ctype = got.dropped_protobuf, contract.CONTENT_TYPE_PROTOBUF
            self._dead_letter(partition, offset, key, dead, _with_content_type(headers, ctype),
                              f"{unparsed} of the message's {total} spans left out (the others are in the "
                              f"lake): {got.reason}")
        if invalid:
            stats.invalid_spans += len(invalid)
            self._dead_letter(partition, offset, key, invalid_spans_request(invalid),
                              _with_content_type(headers, contract.CONTENT_TYPE_PROTOBUF),
                              f"{len(invalid)} of the message's {total} spans left out (the others are in the "
                              f"lake): {invalid[0][3]}")
        if unpriced:
            self._note_unpriced(unpriced)
        buf.note(offset, spans, now, (offset, key, value, headers), len(value))  # type: ignore[arg-type]
        if buf.rejected:
            self._dead_letter_rejected(partition, buf)
        if buf.spans >= pcfg.batch_max_spans or buf.bytes >= pcfg.batch_max_bytes:
            self.flush_partition(partition)

    def _times_of(self, partition: int, buf: PartitionBuffer) -> _BatchTimes:
        times = self._batch_times.get(partition)
        if times is None or times.buf() is not buf:
            times = self._batch_times[partition] = _BatchTimes(buf)
        return times

    def _window_times(self, times: _BatchTimes, pending: dict[str, list[Any]], marks: tuple[int, int, int],
                      timestamp_ms: int | None) -> None:
        """Null the time of the rows just flattened (from ``marks`` on) whose span time lies outside the window
        ``[processor] span_time_max_age_days`` / ``span_time_max_ahead_s`` around the reference time: the
        record's timestamp (a replayed topic keeps its true times), else the wall clock. A record timestamp is a
        reference only within that same window around the wall clock: one past its far end, or more than
        ``span_time_max_age_days`` behind it, is a producer's clock gone wrong (the in-app exporter lets the app
        host's clock stamp its records). Then, as rows of a day beyond :data:`MAX_DAYS_PER_FLUSH` of the batch's
        days, per table. A trusted record timestamp (capped at the wall clock) is kept for the batch's manifest.
        A message handed in with no record at all (``timestamp_ms`` None: a caller in this process, as the
        tests are, never the consumer loop, whose records always carry one) is not windowed."""
        if timestamp_ms is None:
            return
        wall_us = int(self._wall_clock() * 1_000_000)
        ahead, age = self._max_ahead_us, self._max_age_us
        ref_us = wall_us
        if timestamp_ms >= _MIN_RECORD_TIMESTAMP_MS:
            record_us = timestamp_ms * 1000
            if (ahead is None or record_us <= wall_us + ahead) and (age is None or record_us >= wall_us - age):
                ref_us = record_us
                times.record_ms.append(min(record_us, wall_us) // 1000)
        if age is not None or ahead is not None:
            lo = ref_us - age if age is not None else -(1 << 63)
            hi = ref_us + ahead if ahead is not None else 1 << 63
            for table, mark in zip(("requests", "calls", "lookups"), marks):
                null_times_outside(pending[table], mark, lo, hi)
        for table, mark in zip(("requests", "calls", "lookups"), marks):
            null_times_past_days(pending[table], mark, times.days[table], MAX_DAYS_PER_FLUSH)

    def _note_unpriced(self, calls: list[CallRow]) -> None:
        stats = self.stats
        for row in calls:
            premium = _PREMIUMS.get(row.pricing_status)
            if premium is not None:  # a known model on a premium mode whose multiplier is not configured
                seen_attr, how, key, example = premium
                seen = getattr(stats, seen_attr)
                model = (row.response_model or row.model or "<none>")[:MAX_MODEL_NAME_CHARS]
                if model not in seen and len(seen) < MAX_UNKNOWN_MODELS:
                    seen.add(model)
                    log.warning("model %r ran %s but has no %s: those calls get cost_usd NULL (set it under "
                                "[[pricing.models]], e.g. %s)", model, how, key, example)
                continue
            stats.unknown_model_calls += 1
            model = row.response_model or row.model or "<none>"
            if len(model) > MAX_MODEL_NAME_CHARS:
                model = model[:MAX_MODEL_NAME_CHARS] + "…"
            if model in stats.unknown_models or stats.unknown_models_more:
                continue
            if len(stats.unknown_models) >= MAX_UNKNOWN_MODELS:
                stats.unknown_models_more = True
                log.warning("more than %d distinct models are not in the pricing table: the rest are not named "
                            "(their calls get cost_usd NULL; `SELECT DISTINCT model FROM calls WHERE cost_usd IS "
                            "NULL` lists them)", MAX_UNKNOWN_MODELS)
                continue
            stats.unknown_models.add(model)
            log.warning("model %r is not in the pricing table: its calls get cost_usd NULL "
                        "(add it under [[pricing.models]])", model)
        calls.clear()

    def _dead_letter_rejected(self, partition: int, buf: PartitionBuffer) -> None:
        """Dead-letter the messages whose rows the buffer could not convert to the lake's schema."""
        rejected = buf.rejected[:]
        buf.rejected.clear()
        for (offset, key, value, headers), reason in rejected:
            self._dead_letter(partition, offset, key, value, headers, reason)

    def _dead_letter(self, partition: int, offset: int, key: bytes | None, value: bytes | None,
                     headers: Any, reason: str) -> None:
        own = [
            (contract.HEADER_DLQ_REASON, reason[:1000].encode("utf-8", "replace")),
            (contract.HEADER_DLQ_SOURCE, f"{self.topic}/{partition}/{offset}".encode("utf-8", "replace")),
        ]
        try:
            hdrs = _dlq_headers(headers) + own
        except Exception as exc:  # noqa: BLE001 - not (key, value) pairs at all: sent with costline's own only
            hdrs = own + [(HEADER_DLQ_HEADERS_DROPPED,
                           f"unreadable headers ({type(exc).__name__}: {exc})"[:1000].encode("utf-8", "replace"))]
        try:
            # Durable before any manifest can cover this offset.
            try:
                note = self._send_dead_letter(partition, offset, key, value or b"", hdrs, own)
            except Exception as exc:
                if type(exc).__name__ not in _TOO_LARGE:
                    raise
                # A record the DLQ topic cannot hold would stop the partition here on every start: leave its
                # value out and say where the original is (the source topic, while its retention keeps it).
                dropped = (f"{len(value or b'')} bytes: too large for the DLQ topic ({type(exc).__name__}); the "
                           "original is at costline.dlq.source")
                self._close_dlq_producer()  # kafka-python's sender treats the broker's refusal as fatal
                mark = [(contract.HEADER_DLQ_VALUE_DROPPED, dropped.encode())]
                note = self._send_dead_letter(partition, offset, key, b"", hdrs + mark, own + mark)
                note = f" (value left out: {dropped}){note}"
        except Exception as exc:  # kafka errors of many kinds: all mean "not durable"
            raise DeadLetterError(
                f"cannot write offset {offset} of partition {partition} to DLQ topic "
                f"{self.config.kafka.dlq_topic!r} ({exc}): check the topic exists and Kafka is up; "
                "nothing past it was committed, so a restart resumes there"
            ) from exc
        self.stats.dlq += 1
        log.warning("dead-lettered %s/%d/%d: %s%s", self.topic, partition, offset, reason, note)

    def _send_dead_letter(self, partition: int, offset: int, key: Any, value: Any,
                          hdrs: list[tuple[str, bytes]], own: list[tuple[str, bytes]]) -> str:
        """Send one DLQ record and wait until it is durable; returns what was left out of it ("" if nothing).

        kafka-python's ``send()`` checks the record's key, value and headers before anything goes out and raises
        TypeError / ValueError for one it cannot send: that is a problem of this record, not of the DLQ. It is
        sent again with costline's own headers only; should that fail too, with neither key nor value (a pointer
        to the original at costline.dlq.source), logged as an error. A failure of that pointer, or any other
        error (the broker's, a timeout), is raised: then the DLQ is what fails."""
        topic = self.config.kafka.dlq_topic
        try:
            self._dlq_producer().send(topic, key=key, value=value, headers=hdrs).get(timeout=30)
            return ""
        except (TypeError, ValueError) as exc:
            first = f"{type(exc).__name__}: {exc}"[:500]
        log.error("partition %d offset %d: the DLQ producer refused the record's headers (%s): dead-lettering it "
                  "with costline's headers only", partition, offset, first)
        try:
            self._dlq_producer().send(topic, key=key, value=value, headers=own + [
                (HEADER_DLQ_HEADERS_DROPPED, first.encode("utf-8", "replace"))]).get(timeout=30)
            return f" (headers left out: {first})"
        except (TypeError, ValueError) as exc:
            second = f"{type(exc).__name__}: {exc}"[:500]
        dropped = (f"key, value and headers left out: the DLQ producer refused them ({first}; then {second}); "
                   "the original is at costline.dlq.source")
        log.error("partition %d offset %d: the DLQ producer refused the record itself (%s): only a pointer to "
                  "%s/%d/%d goes to the DLQ; the message is skipped", partition, offset, second, self.topic,
                  partition, offset)
        self._dlq_producer().send(topic, key=None, value=b"", headers=own + [
            (contract.HEADER_DLQ_VALUE_DROPPED, dropped.encode("utf-8", "replace"))]).get(timeout=30)
        return f" ({dropped})"

    # -- commits ---------------------------------------------------------------------
    def flush_due(self, now: float) -> None:
        p = self.config.processor
        for partition, buf in list(self._buffers.items()):
            if buf.due(now, p.batch_max_spans, p.flush_interval_s, p.batch_max_bytes):
                self.flush_partition(partition)

    def flush_all(self) -> None:
        for partition in list(self._buffers):
            self.flush_partition(partition)

    def flush_partition(self, partition: int) -> None:
        """Commit a partition's buffer to the lake (data files, then the manifest)."""
        buf = self._buffers.pop(partition, None)
        if buf is not None:
            self._flush_buffer(partition, buf, self._epochs.get(partition), held=True)

    def _flush_buffer(self, partition: int, buf: PartitionBuffer, epoch: int | None, *, held: bool = False) -> None:
        """``held``: the buffer is of the partition as this member holds it now (not a revoked one's, flushed
        after a rebalance took the partition away)."""
        times = self._batch_times.get(partition)
        if times is not None and times.buf() is buf:
            del self._batch_times[partition]
        else:
            times = None
        if buf.empty:
            return
        assert buf.first_offset is not None and buf.last_offset is not None
        if epoch is None:  # lost or fenced: the partition's new owner reads these messages again
            log.warning("partition %d: not ours any more; dropping offsets %d..%d uncommitted",
                        partition, buf.first_offset, buf.last_offset)
            return
        tables = buf.tables()
        if buf.rejected:  # durable in the DLQ before the manifest covers their offsets
            self._dead_letter_rejected(partition, buf)
        topic_id = self._topic_ids.get(partition)
        extra: dict[str, Any] = {} if topic_id is None else {"topic_id": topic_id}
        if times is not None:
            record_ms = times.record_time_ms()
            if record_ms is not None and getattr(self.lake, "records_record_time", False):
                extra["record_time_ms"] = record_ms
        try:
            self.lake.commit_batch(self.topic, partition, buf.first_offset, buf.last_offset, tables, epoch=epoch,
                                   **extra)
        except OffsetsWentBack as exc:  # never written over committed data: stop, loudly
            raise TopicLifetimeError(
                f"{exc}. The processor stops rather than destroy committed data. Restart it: a partition whose "
                f"lake offsets belong to the old topic is then refused with what to do (`costline process "
                "--accept-new-topic` keeps the old data and reads the new topic from its beginning, or point "
                "[lake] path at a new lake)") from exc
        except WriterFenced as exc:
            self._epochs.pop(partition, None)
            self._commit_kafka.pop(partition, None)
            self._mirrored.pop(partition, None)
            self.stats.fenced += 1
            self._check_other_writer(partition, exc)
            log.warning("%s", exc)
            if held:
                self._stop_reading(partition)
            return
        for table, n in buf.row_counts().items():
            self.stats.rows[table] += n
        self.stats.commits += 1
        self._commit_kafka[partition] = buf.last_offset + 1
        self._mirrored.setdefault(partition, -1)  # the lake holds a manifest for it now

    def _claimant(self) -> dict[str, Any]:
        """What this processor records with its claims (:meth:`costline.lake.Lake.claim`)."""
        import os
        import socket

        cluster_id = None
        with contextlib.suppress(Exception):  # a client without it: the group id alone tells
            cluster_id = self._consumer._client.cluster.cluster_id
        return {"group_id": self.config.processor.group_id,
                "cluster_id": cluster_id if isinstance(cluster_id, str) else None,
                "host": socket.gethostname(), "pid": os.getpid()}

    def _check_other_writer(self, partition: int, fenced: WriterFenced) -> None:
        """Raise :class:`OtherWriterError` when the claim that fenced ``partition`` was made by a processor of
        another consumer group (or of this group id on another Kafka cluster). A claim of this group's (a
        rebalance, a member that missed one) or of an unknown claimant (an older costline, a sink that records
        none) is the usual fencing: nothing is raised."""
        claimant = getattr(self.lake, "claimant", None)
        if claimant is None:
            return
        try:
            theirs = claimant(self.topic, partition)
        except Exception:  # noqa: BLE001 - unknown: the usual fencing
            return
        if not isinstance(theirs, dict):
            return
        ours = self._claimant()
        their_group, their_cluster = theirs.get("group_id"), theirs.get("cluster_id")
        if their_group is None:
            return
        if their_group != ours["group_id"]:
            why = (f"consumer group {their_group!r}; this one's [processor] group_id is {ours['group_id']!r}. Two "
                   f"processors with different [processor] group_id write the lake at {self.lake.path}")
        elif their_cluster is not None and ours["cluster_id"] is not None and their_cluster != ours["cluster_id"]:
            why = (f"the same group_id {their_group!r} on another Kafka cluster (id {their_cluster}; this one's is "
                   f"{ours['cluster_id']}). Processors reading two clusters write the lake at {self.lake.path}")
        else:
            return
        where = f"pid {theirs.get('pid')} on host {theirs.get('host')}"
        msg = (f"partition {partition} of {self.topic!r} was claimed by another processor ({where}, {why}: each "
               "group reads every partition, so they take the partitions from each other and this one would never "
               "write again (no rebalance of its group gives a partition back). Run one consumer group per lake: stop "
               "the other processor (or give it this [processor] group_id, or its own [lake] path), then start this "
               "one again; it resumes after the lake's last committed batch, so what it held uncommitted is read "
               f"again, nothing is lost. ({fenced})")
        log.error("%s", msg)
        raise OtherWriterError(msg) from fenced

    def _stop_reading(self, partition: int) -> None:
        """Pause a partition this member was fenced from while its group still assigns it here: no more of its
        records are read (they could only be dropped) until a rebalance hands it out and it is claimed again."""
        if self._consumer is None:
            return
        from kafka import TopicPartition

        tp = TopicPartition(self.topic, partition)
        with contextlib.suppress(Exception):  # unassigned meanwhile: nothing to pause
            if tp in self._consumer.assignment() and tp not in self._to_claim:
                self._consumer.pause(tp)
                log.warning("partition %d: another writer of this group claimed it (a rebalance this member "
                            "missed): not read any further until the group hands it out again", partition)

    def _commit_to_kafka(self, *, final: bool = False) -> None:
        """Mirror the lake's offsets to Kafka (lag visibility only; the lake is the truth): those of the batches
        just committed, and, every ``flush_interval_s`` (``final``: now), the positions of partitions with
        nothing buffered (:meth:`_mirror_positions`)."""
        if self._consumer is None:
            return
        now = self._now()
        if final or now >= self._next_position_check:
            self._next_position_check = now + self.config.processor.flush_interval_s
            self._mirror_positions()
        if not self._commit_kafka:
            return
        from kafka import TopicPartition
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata

        assigned = self._consumer.assignment()
        offsets = {TopicPartition(self.topic, p): OffsetAndMetadata(o, "", -1)
                   for p, o in self._commit_kafka.items()}
        offsets = {tp: o for tp, o in offsets.items() if tp in assigned}
        self._commit_kafka.clear()
        if not offsets:
            return
        try:  # bounded: while the group rebalances a commit can only fail, and must not hold up poll()
            self._consumer.commit(offsets, timeout_ms=IDLE_CHECK_TIMEOUT_MS)
        except KafkaError as exc:  # harmless: the lake's manifests decide where to resume
            log.info("could not mirror offsets to Kafka (%s); the lake stays authoritative", exc)
            return
        for tp, o in offsets.items():
            if self._mirrored.get(tp.partition, o.offset) < o.offset:
                self._mirrored[tp.partition] = o.offset

    def _mirror_positions(self) -> None:
        """Queue the consumer's position for mirroring, for each partition it is past the offset last mirrored.

        A read_committed consumer never returns a transaction's commit/abort marker nor an aborted record, but
        each takes an offset: after a transactional producer's batches the last record handled + 1 stays short of
        the log end, and a lag dashboard would show a backlog for good. The position is the next offset
        ``poll()`` will return; everything under it was returned (and handled: each poll's records are handled
        before this runs, and a rebalance's unhandled ones were sought back) or skipped by the client as no
        record. So with nothing in the partition's buffer, every record under it is in the lake (or durably in
        the DLQ, its offset covered by a manifest): committing it to Kafka never passes a record not yet in the
        lake. It is also harmless to exactly-once: a partition with a manifest resumes from the lake's manifest,
        never from Kafka's offset (the skipped offsets are read, and skipped, again). Only partitions the lake
        holds a manifest for are mirrored: for one without, Kafka's committed offset is what the start check
        compares with the partition's first offset (and what --from-committed starts at); mirroring a position
        past markers alone there would make the next start refuse a lake that misses nothing."""
        if self._rejoin_pending():  # a commit can only fail now; the next check comes after the rebalance
            return
        buffers = self._buffers
        for partition, last in list(self._mirrored.items()):
            if partition not in self._epochs:  # fenced or not ours: never write its offset
                continue
            buf = buffers.get(partition)
            if buf is not None and not buf.empty:
                continue
            from kafka import TopicPartition

            tp = TopicPartition(self.topic, partition)
            try:  # bounded, as the idle check: never holds up the poll loop
                if tp not in self._consumer.assignment() or tp in self._to_claim:
                    continue
                position = self._consumer.position(tp, timeout_ms=IDLE_CHECK_TIMEOUT_MS)
            except Exception:  # noqa: BLE001 - no position now (a rebalance): asked again at the next check
                continue
            if position is not None and position > max(last, self._commit_kafka.get(partition, -1)):
                self._commit_kafka[partition] = position

    def _caught_up(self) -> bool:
        """Every assigned partition read to its end offset. Rows still buffered do not count against it: the
        caller (``--until-idle``) commits them on its way out, as a flush would (waiting for their
        ``flush_interval_s`` only kept an idle processor from exiting)."""
        if not self._joined or self._to_claim or self._revoked:
            return False
        # Mid-rebalance (or expelled and rejoining) a member holds no partitions yet: that is not
        # "caught up", or an instance could leave with partitions the group was about to give it.
        if self._rejoin_pending() or not self._group_stable():
            return False
        assigned = list(self._consumer.assignment())
        if not assigned:  # a stable group that gives this member nothing (more members than partitions)
            return True
        # Bounded waits: during a rebalance the client's position/offset lookups can block until the
        # group settles, and this check must never hold up the poll loop (it is asked again soon).
        try:
            ends = self._consumer.end_offsets(assigned, timeout_ms=IDLE_CHECK_TIMEOUT_MS)
            return all(self._consumer.position(tp, timeout_ms=IDLE_CHECK_TIMEOUT_MS) >= ends.get(tp, 0)
                       for tp in assigned)
        except Exception:  # noqa: BLE001 - not caught up as far as we can tell
            return False

    def _group_stable(self) -> bool:
        try:
            from kafka.structs import MemberState

            return self._consumer.group_metadata().state is MemberState.STABLE
        except Exception:  # noqa: BLE001 - a client without it: trust the assignment
            return True

    # -- rebalance listener: kafka's IO thread, main thread waiting in poll(). No I/O here ---------
    def _on_revoked(self, revoked: Any) -> None:
        for tp in revoked:
            if tp.topic == self.topic:
                buf = self._buffers.pop(tp.partition, None)
                epoch = self._epochs.pop(tp.partition, None)
                if buf is not None and not buf.empty:  # flushed by the main thread after poll()
                    self._revoked[tp.partition] = (buf, epoch)
                self._commit_kafka.pop(tp.partition, None)
                self._mirrored.pop(tp.partition, None)
        self._to_claim = [tp for tp in self._to_claim if tp not in revoked]
        self._last_activity = self._now()

    def _on_lost(self, lost: Any) -> None:
        for tp in lost:  # another member may own it now: drop, never write
            self._buffers.pop(tp.partition, None)
            self._revoked.pop(tp.partition, None)
            self._commit_kafka.pop(tp.partition, None)
            self._mirrored.pop(tp.partition, None)
            self._epochs.pop(tp.partition, None)
        self._to_claim = [tp for tp in self._to_claim if tp not in lost]
        self._last_activity = self._now()

    def _on_assigned(self, assigned: Any) -> None:
        mine = [tp for tp in assigned if tp.topic == self.topic]
        if mine:  # not a record of them until the main thread has claimed and recovered them
            self._consumer.pause(*mine)
            self._to_claim.extend(mine)
        else:
            self._joined = True
        self._last_activity = self._now()
