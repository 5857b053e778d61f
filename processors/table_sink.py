"""Where a processor commits its batches: the local lake, or the Iceberg tables (``[lake] mode``).

Both sinks answer the same calls the processor makes — ``init``, ``claim``, ``recover``,
``last_manifest``, ``commit_batch`` (raising :class:`costline.lake.WriterFenced` for a writer whose
claim is stale) — so the processor's loop and fencing are one code path:

- ``local``: :class:`costline.lake.Lake` (Parquet files + offset manifests, flock epochs; one host);
- ``table``: :class:`costline.tablelake.TableLake` (files and Kafka offsets in one Iceberg snapshot
  per table, claims in the snapshot summary; many hosts on one catalog + object store).

Both record the topic id with the offsets (``records_topic_id``: a topic deleted and created again is refused
with ``TopicLifetimeError`` unless ``--accept-new-topic``) and who made each claim (``records_claimant``: a
processor fenced by another consumer group's claim stops with ``OtherWriterError``), through the processor's
shared checks (``_check_lifetime``, ``_check_other_writer``).

A catalog commit takes a few hundred milliseconds (the S3 round trips of a metadata file, a manifest
list and a manifest, and the catalog's compare-and-swap), too slow for Kafka's rebalance listener,
which runs on the consumer's IO thread and holds up its heartbeats. :class:`TableProcessor` therefore
moves that work to the poll loop: an assigned partition is paused, and claimed (all of a rebalance's
partitions in one snapshot per table), recovered and resumed by the main thread right after ``poll``;
a revoked partition's buffer is dropped instead of flushed (its new owner reads those messages again,
from the tables' committed offsets).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from costline.config import Config
from costline.lake import WriterFenced
from costline.processors.processor import Processor

__all__ = ["lake_writer", "make_processor", "TableProcessor"]

log = logging.getLogger(__name__)


def lake_writer(config: Config) -> Any:
    """The sink ``[lake] mode`` selects (nothing of the table mode is imported in local mode)."""
    if config.lake.mode == "table":
        from costline.tablelake import TableLake

        return TableLake(config.lake)
    from costline.lake import Lake

    return Lake(config.lake.path)


def make_processor(config: Config, **kwargs: Any) -> Processor:
    """The processor for ``[lake] mode``: :class:`TableProcessor` for tables, else :class:`Processor`."""
    return TableProcessor(config, **kwargs) if config.lake.mode == "table" else Processor(config, **kwargs)


class TableProcessor(Processor):
    """A :class:`Processor` whose catalog work happens on the main thread, not in rebalance listeners."""

    def __init__(self, config: Config, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self._pending: set[Any] = set()  # assigned TopicPartitions not yet claimed and recovered

    def _check_start_position(self) -> None:
        """:class:`Processor`'s check, reading Kafka's committed offsets *before* the tables.

        In the other order, a running member that commits a partition's first batch between the two
        reads (the tables, then Kafka's mirror of them) looks like skipped history, and this instance
        refuses to start. Kafka's offset is mirrored only after every table holds the batch, so a
        committed offset read first is always covered by the tables read next."""
        if self.start != "lake":
            return
        from kafka import TopicPartition

        deadline = time.monotonic() + 5.0  # a fresh topic can read as unknown for a moment
        while not (partitions := self._consumer.partitions_for_topic(self.topic) or set()) \
                and time.monotonic() < deadline:
            time.sleep(0.25)
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        committed = {tp: self._consumer.committed(tp) for tp in tps}
        fresh = [tp for tp in tps if committed[tp] is not None
                 and self.lake.last_manifest(self.topic, tp.partition) is None]
        if not fresh:
            return
        firsts = self._consumer.beginning_offsets(fresh)
        skipped = [f"{tp.partition} (offsets {firsts.get(tp, 0)}..{committed[tp] - 1})" for tp in fresh
                   if committed[tp] > firsts.get(tp, 0)]
        self._refuse_skipping(skipped)

    # kafka's IO thread: bookkeeping only (no catalog calls, no blocking Kafka calls)
    def _on_assigned(self, assigned: Any) -> None:
        mine = [tp for tp in assigned if tp.topic == self.topic]
        for tp in mine:
            self._buffers.pop(tp.partition, None)
            self._epochs.pop(tp.partition, None)
        if mine:
            self._consumer.pause(*mine)
            self._pending.update(mine)
        self._joined = True
        self._last_activity = self._now()

    def _on_revoked(self, revoked: Any) -> None:
        for tp in revoked:
            if tp.topic == self.topic:
                self._pending.discard(tp)
                self._drop(tp.partition)
        self._last_activity = self._now()

    def _on_lost(self, lost: Any) -> None:
        for tp in lost:
            self._pending.discard(tp)
        super()._on_lost(lost)

    def _drop(self, partition: int) -> None:
        buf = self._buffers.pop(partition, None)
        if buf is not None and not buf.empty:
            log.info("partition %d revoked: offsets %s..%s left to its next owner", partition,
                     buf.first_offset, buf.last_offset)
        self._commit_kafka.pop(partition, None)
        self._epochs.pop(partition, None)

    # the main thread, right after each poll
    def flush_due(self, now: float) -> None:
        if self._pending:
            self._claim_pending()
        super().flush_due(now)

    def _claim_pending(self) -> None:
        pending = sorted(self._pending, key=lambda tp: tp.partition)
        assigned = self._consumer.assignment()
        pending = [tp for tp in pending if tp in assigned]
        self._pending.clear()
        if not pending:
            return
        # Claim first: from here on a previous owner that missed the rebalance cannot commit, so
        # the offsets read next stay the truth. Partitions another member claimed meanwhile (this
        # instance sat in a long commit past a rebalance: its assignment is stale for them) are left
        # paused and uncommitted here until the next rebalance, and the others are claimed again in
        # one batch: claiming those one by one would outbid the newer owner and steal them back.
        partitions = [tp.partition for tp in pending]
        epochs: dict[int, int] = {}
        who = {"claimant": self._claimant()} if getattr(self.lake, "records_claimant", False) else {}
        while partitions:
            try:
                epochs = self.lake.claim_many(self.topic, partitions, **who)
                break
            except WriterFenced as exc:
                lost = set(getattr(exc, "partitions", None) or partitions)
                for partition in sorted(lost):  # another consumer group's claim: stop (OtherWriterError)
                    self._check_other_writer(partition, exc)
                log.warning("%s: leaving partition(s) %s to the newer owner", exc, sorted(lost))
                self.stats.fenced += len(lost)
                partitions = [p for p in partitions if p not in lost]
        pending = [tp for tp in pending if tp.partition in epochs]
        if not pending:
            return
        resume = self.lake.recover_many(self.topic, partitions)
        for tp in pending:
            self._epochs[tp.partition] = epochs[tp.partition]
            # the tables resume as the local lake does: refused when their offsets belong to an earlier
            # lifetime of the topic (another topic id, or past the partition's end), or set aside and read from
            # the beginning with --accept-new-topic
            next_offset, retired = self._check_lifetime(tp, resume[tp.partition])
            if retired:
                self._consumer.seek_to_beginning(tp)
            else:
                self._position(tp, next_offset, "table snapshot")
        self._consumer.resume(*pending)
        self._last_activity = self._now()

    def _caught_up(self) -> bool:
        return not self._pending and super()._caught_up()
