"""The Parquet lake: layout, schemas, the offset-manifest commit protocol, DuckDB views.

This package is the one place that knows the lake's paths, file schemas and views, one concern a module
(all private: import from ``costline.lake``)::

    _schema.py      the tables' Parquet schemas, the view names, one row per span
    _files.py       file naming (data files, temporaries), the offset manifest, reading a table's files
    _lake.py        Lake: folders, the commit protocol, writer fencing (claim / epochs)
    _recovery.py    Lake.recover: a crashed committed batch completed, uncommitted files deleted
    _compaction.py  Lake.compact: each closed day's committed files merged into one
    _erasure.py     Lake.forget: a tenant's rows removed; Lake.redact: prompts and answers set to NULL past the
                    content retention (both rewrite committed files as compaction does, under its lock)
    _oddfiles.py    files the views cannot read (crashed writes, hand-copied, misplaced) set aside, logged
    _views.py       the DuckDB views: views_sql, create_views, open_lake, write_views_db (create=False, for
                    the commands that only read: no lake at the path is NoLake, nothing created; views=: only
                    those and the views they read, views_in(sql) the ones a query names),
                    require_lake; raw_source (the rows
                    behind a connection's <table>_raw view, as create_views recorded them)
    views/*.sql     every view's SQL, one file a view, read by _views.py (docs/sql.md explains them)

Layout::

    <lake>/requests/date=YYYY-MM-DD/p003-000000000101-000000000150.otlp_spans.parquet
    <lake>/calls/date=.../...
    <lake>/lookups/date=.../...
    <lake>/<table>/date=1970-01-01/_empty.parquet       zero-row schema file (views work on an empty lake)
    <lake>/_offsets/<topic>/p003/000000000150.json      manifest: the commit point of a batch
    <lake>/costline.duckdb                              views for the plain ``duckdb`` CLI

Rows are hive-partitioned by the UTC date of their event time ``ts`` (the span's
end time, stored as a naive ``TIMESTAMP`` in UTC). A data file is named by the
Kafka partition, the offset range of the batch that wrote it and its topic (sanitised:
characters outside ``[A-Za-z0-9._-]`` become ``_``), so that lakes fed from another topic
(``[kafka] topic`` changed) keep their files. Lakes written before topics were in the
names hold ``p003-000000000101-000000000150.parquet`` files: they are read as before, and
recovery only touches them for a topic whose newest manifest is of that era.

**Commit protocol** (exactly-once effect, see :meth:`Lake.commit_batch`): the
data files of one batch of one partition are written under temporary names
(``.*.tmp``, never matched by the views' ``*.parquet`` globs) and fsynced; then a
manifest naming the files, the offset range and the staged files' writer token is
written atomically (tmp + fsync + rename): the manifest is the commit point, and
only after it are the files renamed into place. So no data file is visible before
its batch is committed. Before a partition is consumed again :meth:`Lake.recover`
finishes the renames of a committed batch a crash interrupted, deletes temporaries
and the data files of that topic's partition whose first offset lies beyond the last
manifest (left by a costline that renamed before writing its manifest), and returns
the offset to resume from. Between a crash after a manifest and that recovery, part
of the committed batch may be missing from the views, never uncommitted data.
"""

from __future__ import annotations

from costline.lake._files import (
    MANIFEST_FORMAT,
    Manifest,
    data_file_name,
    data_file_topic,
    day_of_us,
    parse_data_file_name,
    read_table_sql,
    topic_tag,
)
from costline.lake._lake import Lake, NoLake, OffsetsWentBack, WriterFenced, lake_exists
from costline.lake._oddfiles import set_aside_files, set_aside_odd_files
from costline.lake._schema import (
    CALLS_SCHEMA,
    LOOKUPS_SCHEMA,
    ONE_ROW_PER_SPAN,
    REQUESTS_SCHEMA,
    SCHEMAS,
    TABLES,
    VIEWS,
)
from costline.lake._views import (
    COSTLINE_SCOPE,
    VIEW_PROVIDERS,
    RawSource,
    create_views,
    name_raw_sources,
    open_lake,
    provided_views,
    require_lake,
    raw_source,
    views_in,
    views_sql,
    write_views_db,
)

#: The name costline.tablelake imports (kept while it does).
_provided_views = provided_views

__all__ = [
    "Lake",
    "Manifest",
    "WriterFenced",
    "OffsetsWentBack",
    "TABLES",
    "REQUESTS_SCHEMA",
    "CALLS_SCHEMA",
    "LOOKUPS_SCHEMA",
    "SCHEMAS",
    "VIEWS",
    "open_lake",
    "write_views_db",
    "create_views",
    "views_sql",
    "views_in",
    "data_file_name",
    "parse_data_file_name",
    "data_file_topic",
    "topic_tag",
    "MANIFEST_FORMAT",
    "VIEW_PROVIDERS",
    "ONE_ROW_PER_SPAN",
    "read_table_sql",
    "set_aside_files",
    "set_aside_odd_files",
    "RawSource",
    "raw_source",
    "name_raw_sources",
    "NoLake",
    "lake_exists",
    "require_lake",
]
