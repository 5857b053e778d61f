-- One row per model call (call_links), with the request it belongs to (itself when standalone) and the content its
-- spans captured (call_content: left out of a query that does not select it). An app's span of a gateway request's
-- answer inside the app's own request (call_links: part_span_id, the gateway's request span; part_answer) is no call:
-- the gateway's calls are.
CREATE OR REPLACE VIEW calls AS
SELECT x.span_id, x.trace_id, ts, provider, model, tier, input_tokens, output_tokens, cache_read_tokens,
       cache_creation_tokens, error_type, cost_usd, duration_ms,
       coalesce(linked_request_id, x.span_id) AS request_id, linked_span_id IS NULL AS standalone,
       parent_span_id, operation, response_model, batch, finish_reasons, pricing_status, pricing_version,
       cc.input_messages, cc.output_messages, kafka_partition, kafka_offset,
       coalesce(linked_span_id, x.span_id) AS request_span_id, response_id, instrumentation, data_quality,
       CASE WHEN cache_creation_tokens IS NOT NULL THEN coalesce(cache_creation_1h_tokens, 0) END
         AS cache_creation_1h_tokens,
       coalesce(web_search_requests, 0) AS web_search_requests, coalesce(fast, false) AS fast,
       service_tier, inference_geo, coalesce(request_tenant, tenant) AS tenant, endpoint_scope, service_name
FROM call_links x LEFT JOIN call_content cc ON cc.trace_id = x.trace_id AND cc.span_id = x.span_id
WHERE NOT coalesce(x.part_answer, false)
