-- The content of each model-call span (calls_raw) as the call's spans captured it: the calls view (and the requests
-- view's standalone calls) take their input_messages / output_messages from here, by (trace_id, span_id). One row
-- per span (a GROUP BY on that key), so DuckDB drops the join from a query that does not select the content.
--
-- When several instrumentations report one call, the span kept for its figures often has no content (the SDK's own,
-- capture off by default, beside OpenLLMetry's or OpenInference's, which capture by default). A span's content is
-- that of the spans of its trace with its response id that ran when it did (a server may give an id again later:
-- a caching proxy, a stand-in), itself included: of each side, one that is not a sender's cut text (flagged
-- gen_ai.*.messages:not_json / :too_deep), the span's own, then the longest.
CREATE OR REPLACE VIEW call_content AS
SELECT trace_id, span_id,
       arg_max(input_messages, (NOT coalesce(contains(data_quality, 'gen_ai.input.messages:'), false), own,
                                length(input_messages))) FILTER (WHERE input_messages IS NOT NULL) AS input_messages,
       arg_max(output_messages, (NOT coalesce(contains(data_quality, 'gen_ai.output.messages:'), false), own,
                                 length(output_messages))) FILTER (WHERE output_messages IS NOT NULL)
         AS output_messages
FROM (
  SELECT trace_id, span_id, input_messages, output_messages, data_quality, true AS own FROM calls_raw
  UNION ALL
  SELECT s.trace_id, s.span_id, t.input_messages, t.output_messages, t.data_quality, false
  FROM calls_raw s JOIN calls_raw t
    ON t.trace_id = s.trace_id AND t.response_id = s.response_id AND t.span_id <> s.span_id
  WHERE (t.input_messages IS NOT NULL OR t.output_messages IS NOT NULL)
    AND t.ts - to_microseconds(CAST(coalesce(t.duration_ms, 0) * 1000 AS BIGINT)) <= s.ts
    AND s.ts - to_microseconds(CAST(coalesce(s.duration_ms, 0) * 1000 AS BIGINT)) <= t.ts
) pairs
GROUP BY trace_id, span_id
