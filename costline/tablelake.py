"""The lake as Apache Iceberg tables on S3-compatible storage (``[lake] mode = "table"``).

The tables ``requests``, ``calls`` and ``lookups`` (the local lake's schemas, partitioned by
``day(ts)``) live in namespace ``[lake] namespace`` of a pyiceberg SQL catalog (SQLite for one
host, PostgreSQL for several), their data and metadata under ``[lake] warehouse`` on S3.

**Commit protocol** (exactly-once in effect across hosts, docs/scale.md). Iceberg commits one
table at a time: the catalog swaps a table's metadata pointer only if it still names the metadata the
commit was based on (optimistic concurrency); a writer that loses the race re-reads and retries.

- *Offsets in the snapshot.* Each table's current snapshot carries, in its summary property
  :data:`OFFSETS_PROPERTY`, a JSON map ``{topic: {partition: last committed offset}}`` of every Kafka
  partition ever committed to it (each commit carries the map forward and moves its own partition),
  as Iceberg's Kafka Connect sink does. A batch's data files and its offsets land in one snapshot.
- *Fencing.* :meth:`TableLake.claim` bumps the partition's claim on every table, before recovery
  reads the offsets: a snapshot without files whose summary property :data:`CLAIMS_PROPERTY` carries
  ``{topic: {partition: claim}}`` forward like the offsets. A commit checks the claim on the snapshot it
  is based on, and Iceberg commits a snapshot only while its parent is still the table's current one
  (``AssertRefSnapshotId``): a claim made after the writer's read fails the writer's commit, the
  retry sees the new claim and raises :class:`~costline.lake.WriterFenced`. A rebalanced-away
  instance can therefore never commit. (Claims are not table properties: a property change does not
  move the snapshot, so a stale writer's append would still pass the catalog's check.)
- *Three tables.* The three tables' commits of a batch run concurrently; a crash between them leaves
  the tables at different offsets. Recovery
  resumes the partition at the smallest committed offset + 1, and every later commit appends only the
  rows past its own table's committed offset (rows carry ``kafka_offset``), so each row lands once.
  Every flush commits to all three tables (a snapshot with no files when a table got no rows) so
  their offsets move together.

- *Topic lifetimes.* Each commit records, in :data:`TOPIC_IDS_PROPERTY`, the Kafka topic id its offsets belong
  to (``{topic: {partition: id}}``, carried forward like the offsets): a claim on a topic deleted and created
  again is refused (``TopicLifetimeError``) unless ``--accept-new-topic`` sets the partition's history aside
  (:meth:`TableLake.retire_partition`: its offsets leave the map, its rows stay).
- *Claimants.* Each claim records who made it (consumer group, Kafka cluster id, host, pid) in
  :data:`CLAIMANTS_PROPERTY`, so a writer fenced by another consumer group's claim can tell
  (:meth:`TableLake.claimant`; the processor stops with ``OtherWriterError``).

Data files of a commit that lost every retry (or of a crashed writer) are written but referenced by no
snapshot: invisible to readers, removed by :meth:`TableLake.remove_orphans` (``costline lake remove-orphans``,
and each ``costline lake compact`` pass) once older than :data:`DEFAULT_ORPHAN_AGE_S`. A commit never
references data files written more than :data:`FILES_FRESH_S` before its attempt (it writes them again), so a
file that old which no snapshot names can no longer be committed.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pyarrow as pa

from costline.config import Config, LakeConfig
from costline.errors import LakeError
from costline.lake import SCHEMAS, TABLES, WriterFenced
from costline.netsec import redact_url as _redact

if TYPE_CHECKING:  # pragma: no cover
    import duckdb

__all__ = [
    "TableLake",
    "TableCommit",
    "TableManifest",
    "Orphans",
    "TOPIC_IDS_PROPERTY",
    "CLAIMANTS_PROPERTY",
    "RETIRED_PROPERTY",
    "FILES_FRESH_S",
    "MIN_ORPHAN_AGE_S",
    "DEFAULT_ORPHAN_AGE_S",
    "ClaimContested",
    "Compaction",
    "OFFSETS_PROPERTY",
    "CLAIMS_PROPERTY",
    "catalog_properties",
    "create_table_views",
    "table_datasets",
    "open_table_lake",
    "ResultTables",
    "RESULT_NAME_COLUMN",
    "result_schema",
    "result_sink",
    "result_table_schemas",
    "create_result_views",
]

log = logging.getLogger(__name__)

class ClaimContested(WriterFenced):
    """:meth:`TableLake.claim_many` found some partitions claimed by a newer writer meanwhile:
    ``partitions`` names them (the others were not claimed by this call either)."""

    def __init__(self, message: str, partitions: Iterable[int]) -> None:
        super().__init__(message)
        self.partitions = sorted(partitions)


#: Snapshot summary property holding ``{topic: {partition: last committed offset}}`` (JSON).
OFFSETS_PROPERTY: Final = "costline.kafka-offsets"
#: Snapshot summary property naming the batch a snapshot committed (``topic/partition/first-last/claim``).
BATCH_PROPERTY: Final = "costline.kafka-batch"
#: pyiceberg re-applies a transaction that lost the catalog's race on top of the newer snapshot
#: (``commit.retry.num-retries``, default 4): that would skip the claim check, so it is off and
#: :class:`TableLake` retries itself, checking the claim again each time.
_TABLE_PROPERTIES: Final = {"commit.retry.num-retries": "0"}
#: Snapshot summary property of a maintenance snapshot (a compaction), which carries offsets and claims forward.
MAINTENANCE_PROPERTY: Final = "costline.maintenance"
#: Snapshot summary property holding ``{topic: {partition: claim}}`` (JSON), see :meth:`TableLake.claim`.
CLAIMS_PROPERTY: Final = "costline.kafka-claims"
#: Snapshot summary property holding ``{topic: {partition: Kafka topic id}}`` (JSON): the lifetime of the topic
#: the partition's offsets belong to (:meth:`TableLake.commit_batch`'s ``topic_id``).
TOPIC_IDS_PROPERTY: Final = "costline.kafka-topic-ids"
#: Snapshot summary property holding ``{topic: {partition: {group_id, cluster_id, host, pid, epoch}}}`` (JSON): who
#: made each partition's current claim (:meth:`TableLake.claim`'s ``claimant``; ``epoch`` is the claim).
CLAIMANTS_PROPERTY: Final = "costline.kafka-claimants"
#: Snapshot summary property holding ``{topic: {partition: {last_offset, topic_id, reason}}}`` (JSON): the history
#: :meth:`TableLake.retire_partition` set aside (the largest offset any retirement of the partition set aside).
RETIRED_PROPERTY: Final = "costline.kafka-retired"
#: The maps every snapshot costline writes carries forward from its parent (the processors read the current one).
_CARRIED: Final = (OFFSETS_PROPERTY, CLAIMS_PROPERTY, TOPIC_IDS_PROPERTY, CLAIMANTS_PROPERTY, RETIRED_PROPERTY)
#: A commit attempt (a batch's, a compaction's) whose data files were written longer ago than this (seconds, by
#: the writer's monotonic clock) writes them again first: no commit references a file older than this when it
#: starts, whatever stalled the writer (an outage, lost races, a long pause).
FILES_FRESH_S: Final = 300.0
#: The youngest ``remove-orphans --older-than`` accepted: :data:`FILES_FRESH_S`, plus the longest one commit
#: attempt can take once started (``commit_retries`` backoffs of at most 1.5 s, a catalog round trip), plus 10
#: minutes for the object store's clock running behind this host's (file ages come from the store's mtimes).
MIN_ORPHAN_AGE_S: Final = 900.0
#: The default age past which a data file no retained snapshot references is removed.
DEFAULT_ORPHAN_AGE_S: Final = 3600.0
#: What a forget or redact in table mode says last: the snapshots before it still reference the old files.
_OLD_SNAPSHOTS_NOTE: Final = (
    "note: the tables' older snapshots still reference the old data files (time travel reads them) until "
    "`costline lake compact` expires them (--expire-older-than, the newest 10 kept) and removes the files no "
    "snapshot references")


def _dump(m: Mapping[str, Any]) -> str:
    return json.dumps(m, sort_keys=True, separators=(",", ":"))


def catalog_properties(lake: LakeConfig) -> dict[str, str]:
    """The pyiceberg SQL catalog's properties for ``[lake]`` (S3 through pyarrow's filesystem)."""
    uri = lake.catalog_uri or f"sqlite:///{Path(lake.objstore_dir).resolve() / 'catalog.db'}"
    endpoint = lake.s3_endpoint or f"http://127.0.0.1:{lake.objstore_port}"
    return {
        "uri": uri,
        "warehouse": lake.warehouse,
        "py-io-impl": "pyiceberg.io.pyarrow.PyArrowFileIO",
        "s3.endpoint": endpoint,
        "s3.region": lake.s3_region,
        "s3.access-key-id": lake.s3_access_key_id,
        "s3.secret-access-key": lake.s3_secret_access_key,
        "s3.force-virtual-addressing": "false",
    }


@dataclass(frozen=True)
class Compaction:
    """One partition of one table compacted: ``files`` small files -> ``new_files``, ``rows`` rows."""

    table: str
    partition: str
    files: int
    new_files: int
    rows: int
    lost_races: int


@dataclass(frozen=True)
class TableManifest:
    """What the tables committed for a partition (the local lake's ``Manifest`` as the processor asks it):
    ``last_offset``, the smallest table's last committed offset; ``topic_id``, the Kafka topic id those offsets
    were recorded under (None: not recorded, a lake from before ids were recorded). Tables that recorded
    different ids (a crash in the middle of setting a history aside) read as an id naming both, which no live
    topic has: the claim is refused until ``--accept-new-topic`` sets the history aside again."""

    last_offset: int
    topic_id: str | None = None


@dataclass(frozen=True)
class Orphans:
    """What :meth:`TableLake.remove_orphans` found in one table's data folder: ``files`` ``(path, bytes, age s)``
    that no retained snapshot references and older than the bound (removed unless a dry run), ``kept_young``
    such files still younger (a commit may still name them), ``referenced`` the files the snapshots name."""

    table: str
    files: tuple[tuple[str, int, float], ...]
    kept_young: int
    referenced: int
    removed: bool

    @property
    def bytes(self) -> int:
        return sum(size for _, size, _ in self.files)


@dataclass(frozen=True)
class TableCommit:
    """What one batch commit did, per table: rows appended (after skipping already-committed ones)."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int
    rows: Mapping[str, int]
    retries: int


class TableLake:
    """The Iceberg tables of one ``[lake]`` config: create, claim, recover, commit, read."""

    #: :meth:`commit_batch` takes ``topic_id`` and records it; :meth:`last_manifest` tells it (the processor asks).
    records_topic_id = True
    #: :meth:`claim` / :meth:`claim_many` take ``claimant`` and :meth:`claimant` tells it (the processor asks).
    records_claimant = True

    def __init__(self, lake: LakeConfig, *, sleep: Callable[[float], None] = time.sleep,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.settings = lake
        self.path = lake.warehouse  # for messages (the local Lake's ``path``)
        self._sleep = sleep
        self._now = now
        self._catalog: Any = None
        self._tables: dict[str, Any] = {}
        self._claimed: dict[tuple[str, int], int] = {}  # the claims this instance made (retire_partition's fence)

    # -- catalog and tables ------------------------------------------------------------------------
    @property
    def catalog(self) -> Any:
        if self._catalog is None:
            from pyiceberg.catalog.sql import SqlCatalog

            props = catalog_properties(self.settings)
            if props["uri"].startswith("sqlite:///"):
                Path(props["uri"].removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            last: Exception | None = None
            for _ in range(10):  # several processes creating the catalog's own tables at once
                try:
                    self._catalog = SqlCatalog(self.settings.catalog_name, **props)
                    break
                except Exception as exc:  # noqa: BLE001 - sqlalchemy's race on CREATE TABLE
                    last = exc
                    self._sleep(0.2 + random.random() * 0.3)
            else:
                raise LakeError(f"cannot open the Iceberg catalog {_redact(props['uri'])} ({last}): check "
                                "[lake] catalog_uri and that the database is up") from last
        return self._catalog

    def identifier(self, table: str) -> str:
        return f"{self.settings.namespace}.{table}"

    def init(self) -> "TableLake":
        """Create the namespace and the tables if missing (safe from several processes at once)."""
        return _Outage(self, "opening the tables").call(self._init_once)

    def _init_once(self) -> "TableLake":
        from pyiceberg.exceptions import NamespaceAlreadyExistsError, TableAlreadyExistsError
        from pyiceberg.transforms import DayTransform

        cat = self.catalog
        try:
            cat.create_namespace_if_not_exists(self.settings.namespace)
        except NamespaceAlreadyExistsError:
            pass
        for table in TABLES:
            if cat.table_exists(self.identifier(table)):
                self._ensure_properties(table)
                self._ensure_columns(table)
                continue
            try:
                tx = cat.create_table_transaction(self.identifier(table), schema=SCHEMAS[table],
                                                  properties=_TABLE_PROPERTIES)
                with tx.update_spec() as spec:
                    spec.add_field("ts", DayTransform(), "ts_day")
                tx.commit_transaction()
            except TableAlreadyExistsError:
                pass
            except Exception as exc:  # noqa: BLE001 - a concurrent creator won (sqlite/pg unique key)
                if not cat.table_exists(self.identifier(table)):
                    raise LakeError(f"cannot create Iceberg table {self.identifier(table)}: {exc}") from exc
        return self

    def _ensure_properties(self, table: str) -> None:
        from pyiceberg.exceptions import CommitFailedException

        for attempt in range(self.settings.commit_retries):
            tbl = self.table(table)
            if all(tbl.properties.get(k) == v for k, v in _TABLE_PROPERTIES.items()):
                return
            try:
                tx = tbl.transaction()
                tx.set_properties(_TABLE_PROPERTIES)
                tx.commit_transaction()
                return
            except CommitFailedException:
                self._backoff(attempt)

    def _ensure_columns(self, table: str, schema: pa.Schema | None = None) -> None:
        """Add the columns a newer costline writes (``requests.rejected_attempts``...) to a table an older one made:
        its existing rows read them as NULL, and this version's batches append (Iceberg refuses a batch with a
        column its table lacks). Columns are only added, never changed or dropped; a concurrent opener adding
        the same ones is retried. ``schema``: the columns wanted (default: the span table's ``SCHEMAS``; the
        result tables pass the columns of the rows they write)."""
        from pyiceberg.exceptions import CommitFailedException

        want = SCHEMAS[table] if schema is None else schema
        for attempt in range(self.settings.commit_retries):
            tbl = self.table(table)
            have = {f.name for f in tbl.schema().fields}
            if all(name in have for name in want.names):
                return
            try:
                with tbl.update_schema() as update:
                    update.union_by_name(want)
                return
            except CommitFailedException:
                self._backoff(attempt)
        raise LakeError(f"cannot add the new columns of {self.identifier(table)}: the catalog kept refusing the "
                        f"schema update ({self.settings.commit_retries} tries); retry, or check the catalog")

    def table(self, table: str, *, refresh: bool = True) -> Any:
        t = self._tables.get(table)
        if t is None:
            t = self._tables[table] = self.catalog.load_table(self.identifier(table))
        elif refresh:
            t.refresh()
        return t

    # -- offsets and claims ------------------------------------------------------------------------
    @staticmethod
    def _summary_map(tbl: Any, prop: str) -> dict[str, Any]:
        snap = tbl.current_snapshot()
        if snap is None or snap.summary is None:
            return {}
        raw = snap.summary.additional_properties.get(prop)
        try:
            got = json.loads(raw) if raw else {}
        except ValueError as exc:
            raise LakeError(f"{tbl.name()}: snapshot {snap.snapshot_id}'s {prop} is not JSON ({exc}): the table was "
                            "written by something else than costline; restore its previous snapshot") from exc
        return got if isinstance(got, dict) else {}

    def _offsets_of(self, tbl: Any) -> dict[str, dict[str, int]]:
        return self._summary_map(tbl, OFFSETS_PROPERTY)

    def _carried(self, tbl: Any) -> dict[str, dict[str, Any]]:
        """The maps of the table's current snapshot that every new snapshot carries forward (:data:`_CARRIED`)."""
        return {prop: self._summary_map(tbl, prop) for prop in _CARRIED}

    @staticmethod
    def _snapshot_props(maps: Mapping[str, Mapping[str, Any]], **extra: str) -> dict[str, str]:
        return {**{prop: _dump(m) for prop, m in maps.items()}, **extra}

    def committed_offsets(self, topic: str, partition: int) -> dict[str, int | None]:
        """Per table, the last offset of ``partition`` committed to it (None: none yet)."""
        return {t: by_p[partition][0] for t, by_p in self._committed_many(topic, [partition]).items()}

    def _committed_many(self, topic: str, partitions: Iterable[int]) -> dict[str, dict[int, tuple[int | None, str | None]]]:
        """Per table and partition, ``(last committed offset or None, the topic id it was recorded under or None)``."""
        parts = list(partitions)
        return _Outage(self, f"reading the offsets of partitions {parts}").call(
            lambda: self._committed_many_once(topic, parts))

    def _committed_many_once(self, topic: str, partitions: Iterable[int]
                             ) -> dict[str, dict[int, tuple[int | None, str | None]]]:
        out: dict[str, dict[int, tuple[int | None, str | None]]] = {}
        parts = list(partitions)
        for table in TABLES:
            tbl = self.table(table)
            by_topic = self._offsets_of(tbl).get(topic, {})
            ids = self._summary_map(tbl, TOPIC_IDS_PROPERTY).get(topic, {})
            out[table] = {p: (None if by_topic.get(str(p)) is None else int(by_topic[str(p)]),
                              ids.get(str(p)) if isinstance(ids.get(str(p)), str) else None) for p in parts}
        return out

    def last_manifest(self, topic: str, partition: int) -> TableManifest | None:
        """What every table committed for the partition (the local Lake's ``last_manifest`` question, "does the
        lake hold offsets for it, and of which topic?"): the smallest table's last offset and the topic id the
        tables recorded (:class:`TableManifest`); None when some table has none."""
        by_table = self._committed_many(topic, [partition])
        state = [by_table[t][partition] for t in TABLES]
        if any(o is None for o, _ in state):
            return None
        ids = sorted({i for _, i in state if i is not None})
        topic_id = ids[0] if len(ids) == 1 else (f"{' / '.join(ids)} (the tables disagree)" if ids else None)
        return TableManifest(min(o for o, _ in state if o is not None), topic_id)

    def recover(self, topic: str, partition: int) -> tuple[int | None, list[Path]]:
        """``(offset to resume from or None, [])``: nothing to delete (uncommitted files are invisible)."""
        return self.recover_many(topic, [partition])[partition], []

    def recover_many(self, topic: str, partitions: Iterable[int]) -> dict[int, int | None]:
        """Per partition, the offset to resume from: the smallest table's last committed offset + 1;
        None when some table holds none (a first batch committed to some tables only: from the start,
        the tables that hold it skip its rows)."""
        parts = list(partitions)
        by_table = self._committed_many(topic, parts)
        out: dict[int, int | None] = {}
        for p in parts:
            offsets = [by_table[t][p][0] for t in TABLES]
            out[p] = None if any(o is None for o in offsets) else min(o for o in offsets if o is not None) + 1
        return out

    def claim(self, topic: str, partition: int, *, claimant: Mapping[str, Any] | None = None) -> int:
        """Claim a partition on every table: returns the new claim; older claims can no longer commit.
        ``claimant``: who claims (:meth:`claim_many`)."""
        return self.claim_many(topic, [partition], claimant=claimant)[partition]

    def claim_many(self, topic: str, partitions: Iterable[int], *,
                   claimant: Mapping[str, Any] | None = None) -> dict[int, int]:
        """Claim partitions on every table, one snapshot per table (a rebalance assigns several at once).

        ``claimant`` (JSON values: the processor's consumer group, Kafka cluster id, host and pid) is recorded
        with each claim in the same snapshot (:data:`CLAIMANTS_PROPERTY`), so that a writer fenced later can tell
        who claimed the partition (:meth:`claimant`): a rebalance of its own consumer group, or a writer of another
        group, which no rebalance of its group ever hands the partition back from. None: an unknown claimant (no
        earlier record may name it).

        Retried whole through an outage: a claim that landed before the answer was lost is simply
        bumped again (claims only ever grow, and this writer holds the highest)."""
        parts = sorted(set(partitions))
        who = None
        if claimant is not None:
            try:
                who = json.loads(_dump(dict(claimant)))
            except (TypeError, ValueError) as exc:
                raise LakeError(f"cannot claim partitions {parts} of {topic!r}: the claimant is not JSON ({exc})") from exc
        mine = _Outage(self, f"claiming partitions {parts}").call(lambda: self._claim_many_once(topic, parts, who))
        self._claimed.update({(topic, p): c for p, c in mine.items()})
        return mine

    def _claim_many_once(self, topic: str, parts: list[int], claimant: dict[str, Any] | None) -> dict[int, int]:
        from pyiceberg.exceptions import CommitFailedException

        if not parts:
            return {}

        def claims_of(tbl: Any) -> dict[str, int]:
            return self._summary_map(tbl, CLAIMS_PROPERTY).get(topic, {})

        current = [claims_of(self.table(t)) for t in TABLES]
        mine = {p: 1 + max(int(c.get(str(p), 0)) for c in current) for p in parts}
        for table in TABLES:
            for attempt in range(self.settings.commit_retries):
                tbl = self.table(table)
                maps = self._carried(tbl)
                claims = maps[CLAIMS_PROPERTY]
                theirs = claims.get(topic, {})
                # This call writes each table once, so a claim equal to this writer's number on a
                # table it has not written yet is another writer's, made concurrently from the same
                # reading: two writers must never hold the same claim (both could commit).
                contested = [p for p in parts if int(theirs.get(str(p), 0)) >= mine[p]]
                if contested:
                    raise ClaimContested(
                        f"partition(s) {', '.join(map(str, contested))} of {topic!r} were claimed by another "
                        f"writer (claims {', '.join(str(theirs[str(p)]) for p in contested)}) while this one "
                        f"claimed them ({', '.join(str(mine[p]) for p in contested)})", contested)
                claims.setdefault(topic, {}).update({str(p): mine[p] for p in parts})
                who = maps[CLAIMANTS_PROPERTY].setdefault(topic, {})
                for p in parts:
                    if claimant is None:
                        who.pop(str(p), None)
                    else:
                        who[str(p)] = {**claimant, "epoch": mine[p]}
                props = self._snapshot_props(maps, **{BATCH_PROPERTY: f"{topic}/{','.join(map(str, parts))}/claim"})
                try:
                    tx = tbl.transaction()
                    with tx.update_snapshot(snapshot_properties=props).fast_append():
                        pass
                    tx.commit_transaction()
                    break
                except CommitFailedException:
                    self._backoff(attempt)
            else:
                raise LakeError(f"could not claim partitions {parts} on {self.identifier(table)} after "
                                f"{self.settings.commit_retries} tries (catalog contention)")
        return mine

    def claimant(self, topic: str, partition: int) -> dict[str, Any] | None:
        """Who made the partition's current claim (the highest of the tables'), as :meth:`claim_many` recorded it
        (``epoch`` is the claim); None when unknown: no claim yet, a claim made without ``claimant`` (an older
        costline), or a record of another claim."""
        def once() -> dict[str, Any] | None:
            best: tuple[int, Any] = (0, None)
            for table in TABLES:
                tbl = self.table(table)
                claim = int(self._summary_map(tbl, CLAIMS_PROPERTY).get(topic, {}).get(str(partition), 0))
                if claim > best[0]:
                    best = (claim, self._summary_map(tbl, CLAIMANTS_PROPERTY).get(topic, {}).get(str(partition)))
            claim, record = best
            if not isinstance(record, dict) or record.get("epoch") != claim:
                return None
            return record

        return _Outage(self, f"reading who claimed partition {partition}").call(once)

    def retire_partition(self, topic: str, partition: int, reason: str) -> str:
        """Set a partition's committed history aside so that it is read again from offset 0 (a new topic of the
        same name, ``--accept-new-topic``): one snapshot per table removes the partition's offsets and topic id
        from the carried maps and records them, with ``reason``, in :data:`RETIRED_PROPERTY`. No row is deleted
        (the old topic's rows stay readable). Fenced by the claim this instance made (:meth:`claim`): a newer
        owner's commits are never set aside. A crash in between leaves some tables set aside: the partition
        then resumes from its start, and a table still holding the old topic's offsets (another topic id) takes
        the new topic's rows from offset 0 (:meth:`commit_batch`). Returns what was done (for messages)."""
        from pyiceberg.exceptions import CommitFailedException

        epoch = self._claimed.get((topic, partition))
        done: list[str] = []
        for table in TABLES:
            def once(table: str = table) -> None:
                for attempt in range(self.settings.commit_retries):
                    tbl = self.table(table)
                    maps = self._carried(tbl)
                    current = int(maps[CLAIMS_PROPERTY].get(topic, {}).get(str(partition), 0))
                    if epoch is not None and current != epoch:
                        raise WriterFenced(f"partition {partition} of {topic!r} was claimed by another writer (claim "
                                           f"{current}, this writer's {epoch}): its history is not set aside")
                    last = maps[OFFSETS_PROPERTY].get(topic, {}).pop(str(partition), None)
                    old_id = maps[TOPIC_IDS_PROPERTY].get(topic, {}).pop(str(partition), None)
                    if last is None:
                        return
                    before = maps[RETIRED_PROPERTY].get(topic, {}).get(str(partition), {})
                    kept = max(int(last), int(before.get("last_offset", -1)) if isinstance(before, dict) else -1)
                    maps[RETIRED_PROPERTY].setdefault(topic, {})[str(partition)] = {
                        "last_offset": kept, "topic_id": old_id, "reason": reason[:2000]}
                    props = self._snapshot_props(maps, **{BATCH_PROPERTY: f"{topic}/{partition}/retired/{epoch}"})
                    try:
                        tx = tbl.transaction()
                        with tx.update_snapshot(snapshot_properties=props).fast_append():
                            pass
                        tx.commit_transaction()
                        done.append(f"{table} (offsets up to {last})")
                        return
                    except CommitFailedException:
                        self._backoff(attempt)
                raise LakeError(f"could not set aside partition {partition}'s history on {self.identifier(table)} "
                                f"after {self.settings.commit_retries} tries (catalog contention): start again")

            _Outage(self, f"setting aside the history of partition {partition}").call(once)
        log.warning("partition %d of %r: committed history set aside in %s (its rows stay readable): %s", partition,
                    topic, ", ".join(done) or "no table (none held offsets)", reason)
        return ", ".join(done)

    # -- commit --------------------------------------------------------------------------------------
    def commit_batch(
        self,
        topic: str,
        partition: int,
        first_offset: int,
        last_offset: int,
        tables: Mapping[str, Any],
        *,
        epoch: int | None = None,
        topic_id: str | None = None,
    ) -> TableCommit:
        """Append one batch of one partition to every table, its offsets in the same snapshots.

        ``tables`` is ``{table: arrow table}`` or the local lake's ``{table: {date: arrow table}}``.
        ``epoch`` is this writer's :meth:`claim`; a writer whose claim is stale raises
        :class:`~costline.lake.WriterFenced` and commits nothing more. ``topic_id`` (the Kafka topic's id) is
        recorded with the offsets (:data:`TOPIC_IDS_PROPERTY`), so a later claim can tell a new topic of the same
        name; a table whose offsets for the partition were recorded under another id holds an earlier lifetime's
        (a history set aside on some tables only) and takes the batch's rows from its first offset.
        """
        if last_offset < first_offset:
            raise LakeError(f"empty offset range {first_offset}..{last_offset} for partition {partition}")
        for name in tables:
            if name not in SCHEMAS:
                raise LakeError(f"unknown lake table {name!r}")
        from concurrent.futures import ThreadPoolExecutor

        rows: dict[str, int] = {}
        retries = 0
        t0 = time.perf_counter()
        # The tables commit concurrently (their S3 writes and catalog round trips overlap): each is
        # fenced and offset-checked on its own, and recovery takes the smallest table's offset, so
        # the order they land in does not matter.
        # load them here, so that the threads only refresh
        _Outage(self, f"loading the tables for batch {first_offset}..{last_offset} of partition {partition}").call(
            lambda: [self.table(table, refresh=False) for table in TABLES])
        with ThreadPoolExecutor(len(TABLES), thread_name_prefix="costline-table-commit") as pool:
            futures = {table: pool.submit(self._commit_table, table, topic, partition, first_offset, last_offset,
                                          _as_table(table, tables.get(table)), epoch, topic_id) for table in TABLES}
            errors = []
            for table, fut in futures.items():
                try:
                    rows[table], r = fut.result()
                    retries += r
                except Exception as exc:  # noqa: BLE001 - re-raised below, a fence first
                    errors.append(exc)
        if errors:
            raise next((e for e in errors if isinstance(e, WriterFenced)), errors[0])
        log.debug("table commit: partition %d offsets %d..%d, %d rows, %.4f s, %d retries", partition,
                  first_offset, last_offset, sum(rows.values()), time.perf_counter() - t0, retries)
        return TableCommit(topic, partition, first_offset, last_offset, rows, retries)

    def _commit_table(self, table: str, topic: str, partition: int, first: int, last: int,
                      arrow: pa.Table, epoch: int | None, topic_id: str | None = None) -> tuple[int, int]:
        from pyiceberg.exceptions import CommitFailedException
        from pyiceberg.io.pyarrow import _dataframe_to_data_files

        data_files: list[Any] | None = None
        written_after: int | None = None  # the committed offset the data files were filtered by
        written_at = 0.0  # when (self._now) they were written
        appended = 0
        lost = 0  # optimistic races lost
        outage = _Outage(self, f"batch {first}..{last} of partition {partition} -> {self.identifier(table)}")
        while True:
            try:
                tbl = self.table(table)
                if tbl.properties.get("commit.retry.num-retries") != "0":
                    raise LakeError(f"{self.identifier(table)} lets pyiceberg retry commits on its own, which "
                                    "would bypass the claim check: run `costline process` once to reset it")
                maps = self._carried(tbl)
                claims = maps[CLAIMS_PROPERTY]
                current = int(claims.get(topic, {}).get(str(partition), 0))
                if epoch is not None and current != epoch:
                    raise WriterFenced(
                        f"partition {partition} of {topic!r} was claimed by another writer (claim {current}, this "
                        f"writer's {epoch}): batch {first}..{last} not committed to {table}, the new owner "
                        "reprocesses it")
                offsets, ids = maps[OFFSETS_PROPERTY], maps[TOPIC_IDS_PROPERTY]
                done = int(offsets.get(topic, {}).get(str(partition), -1))
                recorded = ids.get(topic, {}).get(str(partition))
                if done >= 0 and topic_id is not None and recorded is not None and recorded != topic_id:
                    if written_after is None:
                        log.warning("table lake: %s holds offsets up to %d of partition %d recorded under topic id %s, "
                                    "not %s: an earlier lifetime of the topic (its history was set aside on the other "
                                    "tables); this batch's rows are taken from offset %d", self.identifier(table), done,
                                    partition, recorded, topic_id, first)
                    done = -1
                if done >= last:  # committed before (a replay after a crash between tables, or a
                    outage.over()  # commit whose answer the outage swallowed)
                    return 0, lost
                if data_files is None or written_after != done or self._now() - written_at > FILES_FRESH_S:
                    keep = arrow.filter(pa.compute.greater(arrow["kafka_offset"], done)) if done >= first else arrow
                    appended = keep.num_rows
                    # Written once per batch, committed by reference on each retry (pyiceberg's own
                    # append rewrites the files on every attempt).
                    # (and again when written more than FILES_FRESH_S ago: orphan removal may take older ones)
                    written_at = self._now()
                    data_files = list(_dataframe_to_data_files(
                        table_metadata=tbl.metadata, write_uuid=uuid.uuid4(), df=keep, io=tbl.io)) if appended else []
                    written_after = done
                offsets.setdefault(topic, {})[str(partition)] = last
                if topic_id is not None:
                    ids.setdefault(topic, {})[str(partition)] = topic_id
                else:  # offsets of an unknown lifetime: no earlier id may vouch for them
                    ids.get(topic, {}).pop(str(partition), None)
                props = self._snapshot_props(maps, **{BATCH_PROPERTY: f"{topic}/{partition}/{first}-{last}/{epoch}"})
                tx = tbl.transaction()
                with tx.update_snapshot(snapshot_properties=props).fast_append() as fa:
                    for f in data_files:
                        fa.append_data_file(f)
                tx.commit_transaction()
                outage.over()
                return appended, lost
            except CommitFailedException:
                lost += 1
                if lost >= self.settings.commit_retries:
                    raise LakeError(
                        f"could not commit batch {first}..{last} of partition {partition} to "
                        f"{self.identifier(table)} after {self.settings.commit_retries} tries (catalog "
                        "contention): nothing past its last commit is lost, a restart resumes there") from None
                self._backoff(lost)
            except Exception as exc:  # noqa: BLE001 - an outage retries, anything else is raised
                if not _unreachable(exc):
                    raise
                # A store that died may have lost files it acknowledged: write them again. A commit that
                # landed before the answer was lost is found by the offsets check on the next try.
                data_files = None
                outage.wait(exc)

    def _backoff(self, attempt: int) -> None:
        self._sleep(min(1.0, 0.01 * 2 ** attempt) * (0.5 + random.random()))

    # -- maintenance -----------------------------------------------------------------------------------
    def compact(self, *, target_file_bytes: int = 128 * 1024 * 1024,
                tables: Iterable[str] = TABLES) -> list[Compaction]:
        """Rewrite each partition's small data files (under ``target_file_bytes``; two or more) into
        one, per table; safe beside running writers.

        Each partition is one snapshot that deletes the small files and adds the rewritten one, based
        on the current snapshot and carrying its offsets and claims forward (the processors resume
        from the current snapshot only). Like a writer's commit it is optimistic: a commit that lost
        the race to a writer retries on the new snapshot (the rows it rewrote are still exactly those
        files': writers only add files), carrying the new offsets; a partition whose files another
        compaction replaced meanwhile is left alone."""
        out = []
        for table in tables:
            def plan(table: str = table) -> dict[tuple[int, str], list[Any]]:
                # loading the table and planning its files both read the object store: one outage retry
                tbl = self.table(table)
                groups: dict[tuple[int, str], list[Any]] = {}
                for task in tbl.scan().plan_files():
                    f = task.file
                    if f.file_size_in_bytes < target_file_bytes:
                        groups.setdefault((f.spec_id, _partition_label(tbl, f)), []).append(f)
                return groups

            groups = _Outage(self, f"planning the compaction of {self.identifier(table)}").call(plan)
            for (_, partition), files in sorted(groups.items(), key=lambda kv: kv[0][1]):
                if len(files) >= 2:
                    done = self._compact_files(table, partition, files)
                    if done is not None:
                        out.append(done)
        return out

    def _compact_files(self, table: str, partition: str, files: list[Any]) -> "Compaction | None":
        """Rewrite ``files`` (one partition's) as one snapshot. The rows are read and written with the table's
        current Iceberg schema, not this version's :data:`SCHEMAS`: a column a newer costline added (a rolling
        upgrade) is kept, never dropped with the files it was in."""
        from pyiceberg.exceptions import CommitFailedException

        what = f"compacting {len(files)} files of {self.identifier(table)} {partition}"
        rows = sum(f.record_count for f in files)
        paths = {f.file_path for f in files}
        outage = _Outage(self, what)
        new_files: list[Any] | None = None
        written_at = 0.0
        lost = 0
        while True:
            try:
                tbl = self.table(table)
                live = {t.file.file_path: t for t in tbl.scan().plan_files()}
                if not paths <= live.keys():
                    log.info("table lake: %s: another compaction replaced them meanwhile; skipped", what)
                    return None
                if new_files is None or self._now() - written_at > FILES_FRESH_S:  # (orphan removal: FILES_FRESH_S)
                    written_at = self._now()
                    new_files = self._rewrite(tbl, table, what, [live[p] for p in sorted(paths)], rows)
                props = self._snapshot_props(self._carried(tbl),
                                             **{MAINTENANCE_PROPERTY: f"compaction of {len(files)} files"})
                tx = tbl.transaction()
                with tx.update_snapshot(snapshot_properties=props).overwrite() as ow:
                    for f in files:
                        ow.delete_data_file(f)
                    for f in new_files:
                        ow.append_data_file(f)
                tx.commit_transaction()
                outage.over()
                log.info("table lake: %s: %d rows -> %d file(s) (%d lost races)", what, rows, len(new_files), lost)
                return Compaction(table, partition, len(files), len(new_files), rows, lost)
            except CommitFailedException:
                lost += 1
                if lost >= self.settings.commit_retries:
                    log.warning("table lake: %s: lost the catalog's race %d times, left for the next run", what, lost)
                    return None
                self._backoff(lost)
            except Exception as exc:  # noqa: BLE001 - an outage retries, anything else is raised
                if not _unreachable(exc):
                    raise
                new_files = None
                outage.wait(exc)

    def _rewrite(self, tbl: Any, table: str, what: str, tasks: list[Any], rows: int) -> list[Any]:
        """The data files holding the rows of ``tasks``, read by field id with the table's current schema (the
        columns this version does not know included) and written back sorted by Kafka partition and offset.
        A column that cannot be carried over is a :class:`LakeError` naming it: nothing is compacted then."""
        from pyiceberg.exceptions import ResolveError
        from pyiceberg.expressions import AlwaysTrue
        from pyiceberg.io.pyarrow import ArrowScan, _dataframe_to_data_files

        schema = tbl.schema()
        try:
            arrow = ArrowScan(tbl.metadata, tbl.io, schema, AlwaysTrue()).to_table(tasks)
            if arrow.num_rows != rows:
                raise LakeError(f"{what}: read {arrow.num_rows} rows, the manifests say {rows}")
            names = [f.name for f in schema.fields]
            if arrow.schema.names != names:
                lost = sorted(set(names) - set(arrow.schema.names))
                raise LakeError(f"{what}: the rows read lack the column(s) {', '.join(lost)} of the table: "
                                "not compacted (that would drop their values)")
            keys = [(k, "ascending") for k in ("kafka_partition", "kafka_offset") if k in names]
            if keys:
                arrow = arrow.sort_by(keys)
            return list(_dataframe_to_data_files(table_metadata=tbl.metadata, write_uuid=uuid.uuid4(), df=arrow,
                                                 io=tbl.io))
        except (ValueError, TypeError, NotImplementedError, ResolveError) as exc:
            known = set(SCHEMAS[table].names) if table in SCHEMAS else set()
            odd = [f"{f.name} ({f.field_type})" for f in schema.fields if f.name not in known]
            if not odd:
                raise
            raise LakeError(f"{what}: cannot carry the column(s) {', '.join(odd)} through a rewrite "
                            f"({type(exc).__name__}: {exc}): {self.identifier(table)} is not compacted; compact it "
                            "with the costline version that added them") from exc

    # -- erasure and content retention (costline.lake._erasure; docs/sql.md, "Erasure and retention") ---------
    def forget(self, tenants: Iterable[str], *, before: date | None = None, dry_run: bool = False) -> Any:
        """Remove every row of ``tenants`` (exact names) from the three tables; with ``before``, only the rows
        whose ``ts`` is before that date (a NULL ``ts`` counts as before any). A row goes when its ``tenant`` is one
        of them or, in ``calls`` and ``lookups``, when the views give it to them or it is a second span of such a
        call (:func:`~costline.lake._erasure.find_tenant_keys`, as in local mode); the other rows whose tenant is
        NULL are kept. Returns a :class:`~costline.lake._erasure.ForgetReport`.

        Per table, one snapshot replaces each data file holding such rows by one without them (copy-on-write),
        carrying the offsets and claims forward as a compaction does; a commit that lost the race to a writer
        plans and reads again (writers only add files). Rows a processor commits after that snapshot's plan
        are reported as not covered (the tenants' calls and lookups found again first). The older snapshots still
        reference the old files until they expire (``costline lake compact``) and the orphans are removed: the
        report says so."""
        from costline.lake._erasure import ForgetReport, NotCovered, tenant_list, totals

        names = tenant_list(tenants)
        limit = None if before is None else datetime.combine(before, datetime.min.time())
        keys, shared = self._tenant_keys(names, before)
        days: list[Any] = []
        files: dict[str, int] = {}
        for table in TABLES:
            what = f"forgetting {len(names)} tenant(s) in {self.identifier(table)}"
            per_day, files[table] = self._rewrite_rows(
                table, what, *_forget_filter(names, keys.get(table), limit), _without, dry_run)
            days += per_day
        not_covered = []
        if not dry_run:
            keys, _shared = self._tenant_keys(names, before)  # the rows committed meanwhile' too
            for table in TABLES:
                what = f"forgetting {len(names)} tenant(s) in {self.identifier(table)}"
                if left := self._count_rows(table, what, *_forget_filter(names, keys.get(table), limit)):
                    not_covered.append(NotCovered(self.identifier(table), left))
        return ForgetReport(names, before, dry_run, tuple(days), totals(TABLES, days, files), tuple(not_covered),
                            notes=(_OLD_SNAPSHOTS_NOTE,) if any(files.values()) and not dry_run else (),
                            shared=shared)

    def _tenant_keys(self, names: tuple[str, ...], before: date | None) -> tuple[dict[str, pa.Table], int]:
        """Per table (``calls``, ``lookups``, ``requests``), the ``(trace_id, span_id)`` of the rows of ``names`` their own row does
        not name (:func:`~costline.lake._erasure.find_tenant_keys` over the current snapshots), and the call rows
        left as shared."""
        import duckdb

        from costline.lake._erasure import _KEYED, KEYS_TABLE, find_tenant_keys

        def once() -> tuple[dict[str, pa.Table], int]:
            con = duckdb.connect()
            try:
                sources = {}
                for table, dataset in self.datasets().items():
                    con.register(f"{table}_iceberg", dataset)
                    sources[table] = (f"(SELECT *, coalesce(CAST(ts AS DATE), DATE '1970-01-01') AS date "
                                      f"FROM {table}_iceberg)")
                shared = find_tenant_keys(con, names, sources, before=before)
                keys = {t: con.sql(f"SELECT DISTINCT trace_id, span_id FROM {KEYS_TABLE} WHERE tbl = '{t}' "
                                   "AND NOT shared").to_arrow_table() for t in _KEYED}
                return keys, shared
            finally:
                con.close()

        return _Outage(self, f"finding the calls and lookups of {len(names)} tenant(s)").call(once)

    def redact(self, older_than_days: int, *, now: Callable[[], datetime] | None = None,
               dry_run: bool = False) -> Any:
        """Set :data:`~costline.lake._erasure.CONTENT_COLUMNS` to NULL in every row whose ``ts`` is before the day
        ``(now() - older_than_days).date()`` (a NULL ``ts`` counts as before), every other column kept; returns a
        :class:`~costline.lake._erasure.RedactReport`. Idempotent: a data file whose content columns are NULL
        already (its column statistics say so) is not even read. Committed as :meth:`forget` commits."""
        from pyiceberg.expressions import And, IsNull, LessThan, NotNull, Or

        from costline.lake._erasure import CONTENT_COLUMNS, RedactReport, redact_cutoff, totals
        from costline.timeutil import utc_now

        cutoff = redact_cutoff(older_than_days, now or utc_now)
        limit = datetime.combine(cutoff, datetime.min.time())
        tables = tuple(t for t in TABLES if CONTENT_COLUMNS[t])
        days: list[Any] = []
        files: dict[str, int] = {}
        for table in tables:
            cols = CONTENT_COLUMNS[table]

            def hits(arrow: pa.Table, cols: tuple[str, ...] = cols) -> pa.Array:
                import pyarrow.compute as pc

                ts = arrow.column("ts")
                old = pc.fill_null(pc.less(ts, pa.scalar(limit, ts.type)), True)
                held = pc.is_valid(arrow.column(cols[0]))
                for c in cols[1:]:
                    held = pc.or_(held, pc.is_valid(arrow.column(c)))
                return pc.and_(old, held)

            def nulled(arrow: pa.Table, hit: pa.Array, cols: tuple[str, ...] = cols) -> pa.Table:
                import pyarrow.compute as pc

                for c in cols:
                    i = arrow.schema.get_field_index(c)
                    col = arrow.column(i)
                    arrow = arrow.set_column(i, arrow.schema.field(i), pc.if_else(hit, pa.scalar(None, col.type), col))
                return arrow

            content: Any = NotNull(cols[0])
            for c in cols[1:]:
                content = Or(content, NotNull(c))
            row_filter = And(Or(LessThan("ts", limit.isoformat()), IsNull("ts")), content)
            per_day, files[table] = self._rewrite_rows(
                table, f"redacting the content of {self.identifier(table)} before {cutoff}", row_filter, hits,
                nulled, dry_run)
            days += per_day
        return RedactReport(older_than_days, cutoff, dry_run, tuple(days), totals(tables, days, files),
                            notes=(_OLD_SNAPSHOTS_NOTE,) if any(files.values()) and not dry_run else ())

    def _rewrite_rows(self, table: str, what: str, row_filter: Any, hits: Callable[[pa.Table], pa.Array],
                      rewrite: Callable[[pa.Table, pa.Array], pa.Table], dry_run: bool) -> tuple[list[Any], int]:
        """Replace each data file of ``table`` that ``row_filter`` may match and whose rows ``hits`` marks by
        ``rewrite(rows, hits)``, in one snapshot carrying the offsets and claims forward; return ``([DayRows],
        files replaced)`` (``dry_run``: what would be, nothing written). Rows are read by field id with the
        table's current schema, as a compaction reads them: a column a newer costline added is kept."""
        import pyarrow.compute as pc
        from pyiceberg.exceptions import CommitFailedException
        from pyiceberg.expressions import AlwaysTrue
        from pyiceberg.io.pyarrow import ArrowScan, _dataframe_to_data_files

        from costline.lake._erasure import DayRows

        outage = _Outage(self, what)
        lost = 0
        while True:
            try:
                tbl = self.table(table)
                if tbl.current_snapshot() is None:
                    return [], 0
                schema = tbl.schema()
                changed: list[tuple[Any, pa.Table]] = []
                per_day: dict[str, int] = {}
                for task in tbl.scan(row_filter=row_filter).plan_files():
                    arrow = ArrowScan(tbl.metadata, tbl.io, schema, AlwaysTrue()).to_table([task])
                    hit = hits(arrow)
                    if not pc.any(hit).as_py():
                        continue
                    day = pc.fill_null(pc.strftime(pc.filter(arrow.column("ts"), hit), format="%Y-%m-%d"),
                                       "1970-01-01")
                    for entry in pc.value_counts(day).to_pylist():
                        per_day[entry["values"]] = per_day.get(entry["values"], 0) + entry["counts"]
                    changed.append((task, rewrite(arrow, hit)))
                days = [DayRows(table, d, n) for d, n in sorted(per_day.items())]
                if dry_run or not changed:
                    return days, len(changed)
                new_files = [f for _task, rows in changed if rows.num_rows
                             for f in _dataframe_to_data_files(table_metadata=tbl.metadata, write_uuid=uuid.uuid4(),
                                                               df=rows, io=tbl.io)]
                props = self._snapshot_props(self._carried(tbl), **{MAINTENANCE_PROPERTY: what})
                tx = tbl.transaction()
                with tx.update_snapshot(snapshot_properties=props).overwrite() as ow:
                    for task, _rows in changed:
                        ow.delete_data_file(task.file)
                    for f in new_files:
                        ow.append_data_file(f)
                tx.commit_transaction()
                outage.over()
                log.info("table lake: %s: %d file(s) rewritten (%d lost races)", what, len(changed), lost)
                return days, len(changed)
            except CommitFailedException:
                lost += 1
                if lost >= self.settings.commit_retries:
                    raise LakeError(f"{what}: lost the catalog's race {lost} times to other writers: nothing of it "
                                    "was committed; run it again") from None
                self._backoff(lost)
            except Exception as exc:  # noqa: BLE001 - an outage retries, anything else is raised
                if not _unreachable(exc):
                    raise
                outage.wait(exc)

    def _count_rows(self, table: str, what: str, row_filter: Any, hits: Callable[[pa.Table], pa.Array]) -> int:
        """How many rows of ``table``'s current snapshot ``hits`` marks (of the files ``row_filter`` may match)."""
        import pyarrow.compute as pc

        def once() -> int:
            tbl = self.table(table)
            if tbl.current_snapshot() is None:
                return 0
            arrow = tbl.scan(row_filter=row_filter).to_arrow()
            return int(pc.sum(pc.cast(hits(arrow), pa.int64())).as_py() or 0) if arrow.num_rows else 0

        return _Outage(self, what).call(once)

    def expire_snapshots(self, *, older_than_s: float, keep_last: int = 10, now_ms: int | None = None,
                         tables: Iterable[str] = TABLES) -> dict[str, int]:
        """Expire each table's snapshots older than ``older_than_s`` except the newest ``keep_last``
        and any whose offsets the current snapshot does not cover (the processors resume from the
        current snapshot's offsets; every commit carries the whole map forward, so none should be
        left uncovered — checked, not assumed; offsets of a history :meth:`retire_partition` set aside count as
        covered). The current snapshot is never expired. Returns per table the number expired. Data files only
        the expired snapshots referenced stay in the object store until :meth:`remove_orphans` takes them."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        cut = now_ms - int(older_than_s * 1000)
        out = {}
        for table in tables:
            def once(table: str = table) -> int:
                tbl = self.table(table)
                current = tbl.current_snapshot()
                if current is None:
                    return 0
                have = self._offsets_of(tbl)
                retired = self._summary_map(tbl, RETIRED_PROPERTY)

                def covered(t: str, p: str, o: Any) -> bool:
                    aside = retired.get(t, {}).get(p)
                    return (int(have.get(t, {}).get(p, -1)) >= int(o)
                            or (isinstance(aside, dict) and int(aside.get("last_offset", -1)) >= int(o)))

                newest = sorted(tbl.snapshots(), key=lambda s: (s.timestamp_ms, s.sequence_number or 0))
                keep = {s.snapshot_id for s in newest[-keep_last:]} | {current.snapshot_id}
                ids = []
                for snap in newest:
                    if snap.snapshot_id in keep or snap.timestamp_ms >= cut:
                        continue
                    raw = (snap.summary.additional_properties.get(OFFSETS_PROPERTY) if snap.summary else None)
                    theirs = json.loads(raw) if raw else {}
                    if all(covered(t, p, o) for t, by_p in theirs.items() for p, o in by_p.items()):
                        ids.append(snap.snapshot_id)
                    else:
                        log.warning("table lake: %s snapshot %d holds offsets the current one lacks: kept",
                                    self.identifier(table), snap.snapshot_id)
                if ids:
                    # no requirement: the catalog applies the removal to its current metadata, so a
                    # writer's commit meanwhile is kept (and this never races a writer's own check)
                    tbl.maintenance.expire_snapshots().by_ids(ids).commit()
                return len(ids)

            out[table] = _Outage(self, f"expiring snapshots of {self.identifier(table)}").call(once)
        return out

    def remove_orphans(self, *, older_than_s: float = DEFAULT_ORPHAN_AGE_S, dry_run: bool = False,
                       tables: Iterable[str] = TABLES, now: Callable[[], float] = time.time,
                       progress: Callable[[str], None] | None = None) -> list[Orphans]:
        """Delete the files under each table's data folder that no retained snapshot references and that are older
        than ``older_than_s`` (by the object store's modification time against ``now``, wall-clock seconds): the
        data files of a crashed writer, of a commit that lost every retry, of a commit attempt cut off by an outage,
        and those only expired snapshots named. ``dry_run``: list them, delete nothing. ``progress`` gets a line per
        file. Safe beside running writers and compactions: ``older_than_s`` may not be under
        :data:`MIN_ORPHAN_AGE_S` (a commit attempt never references a file written more than :data:`FILES_FRESH_S`
        before it started); the data folder is listed before the snapshots are read, so a file a commit names
        meanwhile is seen as referenced. A file any retained snapshot holds (an added or existing entry of one of
        its manifests) is kept. Nothing outside the data folder is touched (metadata files stay)."""
        if not older_than_s >= MIN_ORPHAN_AGE_S:
            raise LakeError(f"remove-orphans --older-than {older_than_s:g} s is under {MIN_ORPHAN_AGE_S:g} s: a younger "
                            "data file may belong to a commit still in flight; use a larger age")
        from pyarrow.fs import FileSelector, FileType

        from costline.localobjstore import s3_filesystem

        s = self.settings
        fs = s3_filesystem(s.s3_endpoint or f"http://127.0.0.1:{s.objstore_port}", s.s3_access_key_id,
                           s.s3_secret_access_key, s.s3_region)
        say = progress or (lambda line: None)

        def bare(path: str) -> str:
            return path.split("://", 1)[-1]

        out = []
        for table in tables:
            def once(table: str = table) -> Orphans:
                tbl = self.table(table)
                data = bare(tbl.location_provider().data_path).rstrip("/")
                if not data or data.count("/") < 1:  # a bucket's root: never
                    raise LakeError(f"{self.identifier(table)}: its data folder {data!r} is no folder of its own: not "
                                    "cleaned")
                # listed first, the snapshots read second: a file committed in between is referenced
                listing = fs.get_file_info(FileSelector(data, recursive=True, allow_not_found=True))
                tbl = self.table(table)
                referenced: set[str] = set()
                seen: set[str] = set()
                for snap in tbl.snapshots():
                    for manifest in snap.manifests(tbl.io):
                        if manifest.manifest_path in seen:
                            continue
                        seen.add(manifest.manifest_path)
                        for entry in manifest.fetch_manifest_entry(tbl.io, discard_deleted=True):
                            referenced.add(bare(entry.data_file.file_path))
                cut = now() - older_than_s
                found, young = [], 0
                for info in listing:
                    if info.type != FileType.File or not info.path.startswith(data + "/") or info.path in referenced:
                        continue
                    mtime = info.mtime.timestamp() if info.mtime is not None else None
                    if mtime is None or mtime > cut:
                        young += 1
                        continue
                    found.append((f"s3://{info.path}", int(info.size or 0), now() - mtime))
                for path, size, age in found:
                    if not dry_run:
                        fs.delete_file(bare(path))
                    say(f"{'would remove' if dry_run else 'removed'} {path} ({size:,} bytes, {age / 3600:.1f} h old)")
                return Orphans(table, tuple(found), young, len(referenced), not dry_run)

            out.append(_Outage(self, f"removing orphan files of {self.identifier(table)}").call(once))
        return out

    # -- reading ---------------------------------------------------------------------------------------
    def datasets(self, schemas: Mapping[str, pa.Schema] | None = None) -> dict[str, Any]:
        """Per table (default: the span tables), a ``pyarrow.dataset`` over the current snapshot's
        data files (re-scannable)."""
        import pyarrow.dataset as ds

        from costline.localobjstore import s3_filesystem

        s = self.settings
        fs = s3_filesystem(s.s3_endpoint or f"http://127.0.0.1:{s.objstore_port}", s.s3_access_key_id,
                           s.s3_secret_access_key, s.s3_region)
        schemas = schemas if schemas is not None else {t: SCHEMAS[t] for t in TABLES}
        out = {}
        for table in schemas:
            tbl = self.table(table)
            paths = []
            for task in tbl.scan().plan_files():
                if task.delete_files:
                    raise LakeError(f"{self.identifier(table)} has delete files, which costline's readers "
                                    "do not apply yet: rewrite the table without deletes")
                paths.append(task.file.file_path.split("://", 1)[1])
            out[table] = ds.dataset(paths, schema=schemas[table], format="parquet", filesystem=fs)
        return out

    def last_data_commits(self, tables: Iterable[str] = TABLES) -> dict[str, datetime | None]:
        """Per table, when (UTC, naive) its newest snapshot that added rows was committed; None when no snapshot.

        Every row of the current snapshot was committed then or earlier, so no row arrived later: what
        ``pipeline_silent`` bounds event times by (a client whose clock runs ahead cannot keep it quiet).
        Snapshots that add no rows (claims) or rewrite them (compactions, any ``replace``) are walked past;
        when the walk reaches an expired parent, the oldest snapshot reached is the bound (still no row is newer)."""
        from datetime import datetime, timezone

        from pyiceberg.table.snapshots import Operation

        def adds_rows(snap: Any) -> bool:
            summary = snap.summary
            if summary is None:
                return True  # unknown: the snapshot's own time is a bound anyway
            if summary.operation == Operation.REPLACE or MAINTENANCE_PROPERTY in summary.additional_properties:
                return False
            try:
                return int(summary.get("added-records") or 0) > 0
            except (TypeError, ValueError):
                return True

        def once() -> dict[str, datetime | None]:
            out: dict[str, datetime | None] = {}
            for table in tables:
                tbl = self.table(table)
                by_id = {s.snapshot_id: s for s in tbl.snapshots()}
                snap, at = tbl.current_snapshot(), None
                while snap is not None:
                    at = snap.timestamp_ms
                    if adds_rows(snap):
                        break
                    snap = by_id.get(snap.parent_snapshot_id) if snap.parent_snapshot_id is not None else None
                out[table] = (None if at is None else
                              datetime.fromtimestamp(at / 1000, tz=timezone.utc).replace(tzinfo=None))
            return out

        return _Outage(self, "reading the tables' last commits").call(once)


def _unreachable(exc: BaseException) -> str | None:
    """What an error says is unreachable ("object store", "catalog"), None when it is no outage.

    pyarrow's S3 filesystem raises ``OSError`` (connection refused, reset, timed out); SQLAlchemy
    raises ``OperationalError`` / ``InterfaceError`` (PostgreSQL down or restarted, SQLite locked) or
    a ``DBAPIError`` that invalidated its connection."""
    if isinstance(exc, OSError):
        return "object store"
    try:
        from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
        from sqlalchemy.exc import TimeoutError as PoolTimeout
    except ImportError:  # pragma: no cover - sqlalchemy comes with pyiceberg[sql-*]
        return None
    if isinstance(exc, (OperationalError, InterfaceError, DisconnectionError, PoolTimeout)):
        return "catalog"
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return "catalog"
    return None


class _Outage:
    """Bounded retries of one operation while the object store or the catalog is unreachable.

    Backs off 0.25 s doubling to 5 s, logs each retry and the recovery, and gives up with a
    :class:`LakeError` ``[lake] outage_retry_s`` seconds after the first failure."""

    def __init__(self, lake: TableLake, what: str) -> None:
        self.lake, self.what = lake, what
        self.first: float | None = None
        self.tries = 0

    def call(self, fn: Callable[[], Any]) -> Any:
        while True:
            try:
                out = fn()
            except Exception as exc:  # noqa: BLE001 - only an outage is retried
                if not _unreachable(exc):
                    raise
                self.wait(exc)
                continue
            self.over()
            return out

    def wait(self, exc: BaseException) -> None:
        lake = self.lake
        budget = lake.settings.outage_retry_s
        now = lake._now()
        if self.first is None:
            self.first = now
        self.tries += 1
        waited = now - self.first
        what = _unreachable(exc) or "object store or catalog"
        cause = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        if waited >= budget:
            log.error("table lake: %s: %s still unreachable after %.0f s and %d tries (%s): giving up",
                      self.what, what, waited, self.tries, cause)
            raise LakeError(
                f"{self.what}: the {what} has been unreachable for {waited:.0f} s ({self.tries} tries; last: "
                f"{cause}); gave up after [lake] outage_retry_s = {budget:g}. Nothing past the last commit is "
                "lost: once it is back, run `costline process` again, it resumes from the tables") from exc
        delay = max(0.0, min(5.0, 0.25 * 2 ** (self.tries - 1), budget - waited))
        log.warning("table lake: %s: %s unreachable (%s); retry %d in %.2f s (gives up %.0f s after the first "
                    "failure)", self.what, what, cause, self.tries, delay, budget)
        lake._sleep(delay)

    def over(self) -> None:
        if self.tries:
            log.warning("table lake: %s: reachable again, done after %d retries (%.1f s)", self.what, self.tries,
                        self.lake._now() - (self.first or 0.0))
            self.first, self.tries = None, 0


#: Above this many traces of a table's rows to forget by key, the scan is not narrowed to them (every file read).
_KEY_TRACES_FILTERED: Final = 1000


def _forget_filter(names: tuple[str, ...], keys: pa.Table | None,
                   limit: datetime | None) -> tuple[Any, Callable[[pa.Table], pa.Array]]:
    """What :meth:`TableLake.forget` removes from one table: the files it may be in (an Iceberg row filter) and
    which of their rows (``hits``): a ``tenant`` of ``names``, or a span of ``keys`` (``trace_id``, ``span_id``);
    with ``limit``, of those, the rows whose ``ts`` is before it (or NULL)."""
    import pyarrow.compute as pc
    from pyiceberg.expressions import AlwaysTrue, And, In, IsNull, LessThan, Or

    wanted = pa.array(names, pa.string())
    keyed = None
    row_filter: Any = In("tenant", names)
    if keys is not None and keys.num_rows:
        keyed = pc.binary_join_element_wise(keys.column("trace_id"), keys.column("span_id"), "\x1f").combine_chunks()
        traces = set(keys.column("trace_id").drop_null().to_pylist())
        row_filter = Or(row_filter, In("trace_id", traces)) if len(traces) <= _KEY_TRACES_FILTERED else AlwaysTrue()

    def hits(arrow: pa.Table) -> pa.Array:
        hit = pc.fill_null(pc.is_in(arrow.column("tenant"), value_set=wanted, skip_nulls=True), False)
        if keyed is not None:
            span = pc.binary_join_element_wise(arrow.column("trace_id"), arrow.column("span_id"), "\x1f")
            hit = pc.or_(hit, pc.fill_null(pc.is_in(span, value_set=keyed, skip_nulls=True), False))
        if limit is not None:
            ts = arrow.column("ts")
            hit = pc.and_(hit, pc.fill_null(pc.less(ts, pa.scalar(limit, ts.type)), True))
        return hit

    if limit is not None:
        row_filter = And(row_filter, Or(LessThan("ts", limit.isoformat()), IsNull("ts")))
    return row_filter, hits


def _without(arrow: pa.Table, hit: pa.Array) -> pa.Table:
    """``arrow`` less the rows ``hit`` marks."""
    import pyarrow.compute as pc

    return arrow.filter(pc.invert(hit))


def _partition_label(tbl: Any, data_file: Any) -> str:
    """A data file's partition as people read it (``2026-03-01``, not ``Record[20513]``)."""
    spec = tbl.specs().get(data_file.spec_id)
    if spec is None or len(spec.fields) != len(data_file.partition):
        return str(data_file.partition)
    shown = []
    for i, field in enumerate(spec.fields):
        value = data_file.partition[i]
        try:
            shown.append(field.transform.to_human_string(tbl.schema().find_type(field.source_id), value))
        except Exception:  # noqa: BLE001 - a dropped source column or an odd transform: the raw value
            shown.append(str(value))
    return shown[0] if len(shown) == 1 else ", ".join(f"{f.name}={v}" for f, v in zip(spec.fields, shown))


def _as_table(table: str, value: Any) -> pa.Table:
    schema = SCHEMAS[table]
    if value is None:
        return schema.empty_table()
    if isinstance(value, Mapping):
        parts = [t for t in value.values() if t.num_rows]
        return pa.concat_tables(parts).cast(schema) if parts else schema.empty_table()
    return value.cast(schema)


def open_table_lake(config: Config) -> TableLake:
    return TableLake(config.lake).init()


def table_datasets(config: Config) -> dict[str, Any]:
    return open_table_lake(config).datasets()


def create_table_views(con: "duckdb.DuckDBPyConnection", config: Config) -> None:
    """The lake's views (:func:`costline.lake.views_sql`) over the Iceberg tables' current snapshots.

    Each ``<table>_raw`` view reads a pyarrow dataset of the table's data files (registered as
    ``<table>_iceberg``) instead of the local files, with the ``date`` column the local lake's hive
    partitioning gives. The other areas' views (``VIEW_PROVIDERS``) still read ``[lake] path``."""
    from costline.lake import Lake, RawSource, _provided_views, name_raw_sources, read_table_sql, views_sql
    from costline.pricing import hosting_schedule

    lake_path = config.lake.path
    Lake(lake_path).init()
    for table, dataset in table_datasets(config).items():
        con.register(f"{table}_iceberg", dataset)
    stmts = views_sql(lake_path, hosting=hosting_schedule(config.pricing),
                      open_gap_hours=config.pricing.hosting_open_gap_hours)
    sources = {}
    for table in TABLES:
        local = read_table_sql(lake_path, table)
        source = (f"(SELECT *, coalesce(CAST(ts AS DATE), DATE '1970-01-01') AS date FROM {table}_iceberg)")
        hits = [i for i, s in enumerate(stmts) if local in s]
        if not hits:
            raise LakeError(f"the views no longer read {table} through read_table_sql: update tablelake.py")
        for i in hits:
            stmts[i] = stmts[i].replace(local, source)
        sources[table] = RawSource(source, date_partitioned=False)  # the date column is computed: no pruning
    for stmt in stmts:
        con.execute(stmt)
    name_raw_sources(con, sources)
    for stmt in _provided_views(lake_path):
        con.execute(stmt)
    create_result_views(con, config)


def result_table_schemas() -> dict[str, pa.Schema]:
    """The result tables of table mode: the jobs', distillation's and the alerts' exports."""
    from costline.alerts.view import ALERTS_SCHEMA, HISTORY_SCHEMA
    from costline.distill.store import DISTILL_SCHEMAS
    from costline.jobs.store import JOB_SCHEMAS

    return {**JOB_SCHEMAS, **DISTILL_SCHEMAS, "alerts": ALERTS_SCHEMA, "alerts_history": HISTORY_SCHEMA}


def create_result_views(con: "duckdb.DuckDBPyConnection", config: Config) -> None:
    """Replace the result views of the local files (``VIEW_PROVIDERS``) by views of the Iceberg result
    tables: the same names and columns (``_name`` left out). ``job_runs`` keeps each run's last state,
    ties broken by the write's name as the local view breaks them by file name; ``cost_report``
    reads ``cost_reports`` by name, so it follows."""
    for table, dataset in ResultTables(config.lake).datasets(result_table_schemas()).items():
        con.register(f"{table}_iceberg", dataset)
        src = f"(SELECT * EXCLUDE ({RESULT_NAME_COLUMN}) FROM {table}_iceberg)"
        if table == "job_runs":
            con.execute(f"CREATE OR REPLACE VIEW job_runs AS SELECT * EXCLUDE ({RESULT_NAME_COLUMN}) FROM "
                        f"{table}_iceberg QUALIFY row_number() OVER (PARTITION BY run_id ORDER BY updated_at DESC, "
                        f"{RESULT_NAME_COLUMN} DESC) = 1")
        else:
            con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM {src}")


#: The column a result table adds to its rows: the name a write replaces (the local file's stem).
RESULT_NAME_COLUMN: Final = "_name"


class ResultTables:
    """The jobs' (and distillation's, alerts') result tables as Iceberg tables in the same catalog.

    The local store writes ``<table>/<name>.parquet``, replacing a file of that name; here a write
    replaces, in one snapshot, the rows whose :data:`RESULT_NAME_COLUMN` is ``name``
    (``Table.overwrite`` with a filter: pyiceberg rewrites the data files holding such rows and
    appends the new ones). pyiceberg's own commit retry stays on for these tables (nothing is fenced);
    an outage retries like the processors' commits. A write whose rows have columns the table lacks (a
    table an older costline made) first adds them by name (:meth:`TableLake._ensure_columns`). Read by
    :func:`create_table_views`."""

    def __init__(self, lake: LakeConfig, *, sleep: Callable[[float], None] = time.sleep,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.lake = TableLake(lake, sleep=sleep, now=now)

    def _table(self, table: str, schema: pa.Schema) -> Any:
        from pyiceberg.exceptions import NoSuchTableError, TableAlreadyExistsError

        lake = self.lake
        ident = lake.identifier(table)
        try:
            return lake.table(table)
        except NoSuchTableError:
            pass
        lake.catalog.create_namespace_if_not_exists(lake.settings.namespace)
        try:
            lake._tables[table] = lake.catalog.create_table(ident, schema=result_schema(schema))
        except TableAlreadyExistsError:
            lake._tables[table] = lake.catalog.load_table(ident)
        return lake._tables[table]

    def init(self, schemas: Mapping[str, pa.Schema]) -> "ResultTables":
        """Create the tables that are missing (so the views read empty tables before any write)."""
        for table, schema in schemas.items():
            _Outage(self.lake, f"creating result table {table}").call(lambda t=table, s=schema: self._table(t, s))
        return self

    def write(self, table: str, name: str, arrow: pa.Table) -> str:
        """Replace the rows of ``name`` in ``table`` by ``arrow``; returns where (for messages)."""
        from pyiceberg.expressions import EqualTo

        rows = arrow.append_column(RESULT_NAME_COLUMN, pa.array([name] * arrow.num_rows, pa.string()))

        def once() -> None:
            import warnings

            tbl = self._table(table, arrow.schema)
            have = {f.name for f in tbl.schema().fields}
            if not all(n in have for n in rows.schema.names):  # made by an older costline: add the new columns
                self.lake._ensure_columns(table, rows.schema)
                tbl = self.lake.table(table, refresh=False)
            with warnings.catch_warnings():  # a first write of a name replaces nothing, as it should
                warnings.filterwarnings("ignore", "Delete operation did not match any records")
                tbl.overwrite(rows, overwrite_filter=EqualTo(RESULT_NAME_COLUMN, name),
                              snapshot_properties={"costline.result": name})

        _Outage(self.lake, f"writing {name} to result table {table}").call(once)
        return f"{self.lake.identifier(table)}[{RESULT_NAME_COLUMN}={name!r}]"

    def exists(self, table: str, name: str) -> bool:
        from pyiceberg.exceptions import NoSuchTableError
        from pyiceberg.expressions import EqualTo

        def once() -> bool:
            try:
                tbl = self.lake.table(table)
            except NoSuchTableError:
                return False
            return bool(tbl.scan(row_filter=EqualTo(RESULT_NAME_COLUMN, name), limit=1).to_arrow().num_rows)

        return bool(_Outage(self.lake, f"reading result table {table}").call(once))

    def rows(self, table: str, name: str) -> pa.Table | None:
        """The rows of ``name`` in ``table`` as :meth:`write` took them (:data:`RESULT_NAME_COLUMN` left out); None
        when there is no such table."""
        from pyiceberg.exceptions import NoSuchTableError
        from pyiceberg.expressions import EqualTo

        def once() -> pa.Table | None:
            try:
                tbl = self.lake.table(table)
            except NoSuchTableError:
                return None
            arrow = tbl.scan(row_filter=EqualTo(RESULT_NAME_COLUMN, name)).to_arrow()
            return arrow.drop_columns([RESULT_NAME_COLUMN]) if RESULT_NAME_COLUMN in arrow.schema.names else arrow

        return _Outage(self.lake, f"reading result table {table}").call(once)

    def datasets(self, schemas: Mapping[str, pa.Schema]) -> dict[str, Any]:
        """Per table, a ``pyarrow.dataset`` over its current snapshot's files (schema + ``_name``)."""
        self.init(schemas)
        return self.lake.datasets({t: result_schema(s) for t, s in schemas.items()})


def result_schema(schema: pa.Schema) -> pa.Schema:
    """A result table's schema: the local file's columns and :data:`RESULT_NAME_COLUMN`."""
    return schema if RESULT_NAME_COLUMN in schema.names else schema.append(pa.field(RESULT_NAME_COLUMN, pa.string()))


def result_sink(config: Config) -> ResultTables | None:
    """The result tables of ``[lake] mode = "table"``; None in local mode (the local files)."""
    return ResultTables(config.lake) if config.lake.mode == "table" else None
