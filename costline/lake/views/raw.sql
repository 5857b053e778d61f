-- <table>_raw: every data file of one table, each span once (delivery upstream is at least once).
-- Filled in by costline.lake.views_sql: {table} (requests, calls, lookups), {source} (the
-- read_parquet over the table's files) and {one_row_per_span} (the QUALIFY that keeps one row per span).
CREATE OR REPLACE VIEW {table}_raw AS SELECT * FROM {source} {one_row_per_span}
