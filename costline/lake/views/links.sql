-- The request span each call (view call_links_all, over calls_raw) or cache lookup (view lookup_links,
-- over lookups_raw) belongs to: its parent request span first, else the (first) request span of its
-- trace with its costline.request.id. Exactly one, never several.
-- Filled in by costline.lake.views_sql: {view} and {source}, once for calls and once for lookups.
CREATE OR REPLACE VIEW {view} AS
SELECT x.*, coalesce(rp.span_id, rq.span_id) AS linked_span_id,
       coalesce(rp.request_id, rq.request_id) AS linked_request_id,
       coalesce(rp.tenant, rq.tenant) AS request_tenant
FROM {source} x
LEFT JOIN requests_raw rp ON rp.trace_id = x.trace_id AND rp.span_id = x.parent_span_id
LEFT JOIN (SELECT trace_id, request_id, span_id, tenant FROM requests_raw
           QUALIFY row_number() OVER (PARTITION BY trace_id, request_id ORDER BY ts, span_id) = 1) rq
  ON rp.span_id IS NULL AND x.request_id IS NOT NULL AND rq.trace_id = x.trace_id AND rq.request_id = x.request_id
