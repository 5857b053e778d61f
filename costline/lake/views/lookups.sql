-- One row per semantic-cache lookup, with the request it belongs to.
CREATE OR REPLACE VIEW lookups AS
SELECT span_id, trace_id, ts, coalesce(tenant, request_tenant) AS tenant, namespace, hit, similarity,
       linked_request_id AS request_id, parent_span_id, duration_ms, kafka_partition, kafka_offset,
       reject_reason, service_name
FROM lookup_links
