-- One row per request: its request span with the cost of its calls (call_links_content: call_links with the
-- content of the span kept for each call, for a standalone call's row) and its share of the
-- student's hosting hour; a call no request span owns is a request of its own (standalone).
-- tier is the cost report's classification (jobs/cost_report.py, COST_SQL), so that tier_hourly, the charts and the
-- report agree: a request stamped `costline.tier = cache` that still made a text generation call (operation chat,
-- text_completion or generate_content: cost_report.GENERATION_OPERATIONS) that succeeded or was billed is no cache
-- answer: it takes its answering call's tier (its last generation call without error, by ts then span id; if every
-- one failed, its last one), and what it paid shows under that tier.
-- An app that records its own requests and calls the gateway inside them (call_links: part_span_id): each gateway
-- request is a request (its own task type and subtype: the router's), with the app request's tenant where it names
-- one, and its success only when the app's request succeeded too; the app's request is no request of its own unless
-- it made calls besides (a call straight to a model: then it is a request of those).
CREATE OR REPLACE VIEW requests AS
WITH cl AS MATERIALIZED (
  SELECT * FROM call_links_content  -- once (each reference to a view computes it again)
), c AS (
  SELECT *, lag(tier) OVER (PARTITION BY trace_id, linked_span_id ORDER BY started, span_id) AS prev_tier
  FROM cl WHERE linked_span_id IS NOT NULL AND NOT coalesce(part_answer, false)
), agg AS (
  SELECT trace_id, linked_span_id,
         sum(cost_usd) AS call_cost_usd, count(*) FILTER (WHERE cost_usd IS NULL) AS unpriced_calls,
         sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, count(*) AS calls,
         bool_or(pricing_status = 'student') AS shares_hosting,
         coalesce(arg_max(tier, started) FILTER (WHERE error_type IS NULL), arg_max(tier, started)) AS call_tier,
         count(*) FILTER (WHERE prev_tier IS NOT NULL AND tier <> prev_tier) AS tier_changes,
         count(*) FILTER (WHERE gen AND (error_type IS NULL OR coalesce(cost_usd, 0) <> 0)) AS paid_generations,
         coalesce(arg_max(tier, (ts, span_id)) FILTER (WHERE gen AND error_type IS NULL),
                  arg_max(tier, (ts, span_id)) FILTER (WHERE gen)) AS answer_tier
  FROM (SELECT *, coalesce(operation, 'chat') IN ('chat', 'text_completion', 'generate_content') AS gen FROM c) c
  GROUP BY ALL
), part_of AS (
  SELECT DISTINCT trace_id AS app_trace_id, linked_span_id AS app_span_id, part_trace_id, part_span_id
  FROM cl WHERE part_span_id IS NOT NULL
), apps AS (
  SELECT p.part_trace_id, p.part_span_id, any_value(a.tenant) AS tenant, bool_and(coalesce(a.success, true)) AS success
  FROM part_of p JOIN requests_raw a ON a.trace_id = p.app_trace_id AND a.span_id = p.app_span_id
  GROUP BY ALL
), raw AS (
  SELECT r.* REPLACE (coalesce(a.tenant, r.tenant) AS tenant,
                      CASE WHEN a.part_span_id IS NULL THEN r.success ELSE r.success AND a.success END AS success)
  FROM requests_raw r LEFT JOIN apps a ON a.part_trace_id = r.trace_id AND a.part_span_id = r.span_id
  -- an app's request of gateway requests only: they are the requests
  ANTI JOIN (SELECT app_trace_id, app_span_id FROM part_of p
             ANTI JOIN agg g ON g.trace_id = p.app_trace_id AND g.linked_span_id = p.app_span_id) w
    ON w.app_trace_id = r.trace_id AND w.app_span_id = r.span_id
), base AS (
  SELECT r.request_id, r.trace_id, r.ts, r.tenant, r.task_type, r.subtype,
         CASE WHEN r.tier = 'cache' AND a.paid_generations > 0 THEN coalesce(a.answer_tier, a.call_tier, 'unknown')
              ELSE coalesce(r.tier, a.call_tier, CASE WHEN r.cache_hit THEN 'cache' END) END AS tier, r.routed_tier,
         coalesce(r.cache_hit, false) AS cache_hit,
         CASE WHEN coalesce(r.attempts, 0) < coalesce(a.calls, 0) THEN a.calls ELSE coalesce(r.attempts, 1) END
           AS attempts,
         CASE WHEN r.tier IS NULL OR r.escalations IS NULL THEN coalesce(a.tier_changes, r.escalations, 0)
              ELSE r.escalations END AS escalations,
         r.success,
         coalesce(a.call_cost_usd, 0.0) AS call_cost_usd,
         coalesce(a.input_tokens, 0) AS input_tokens, coalesce(a.output_tokens, 0) AS output_tokens,
         coalesce(a.unpriced_calls, 0) AS unpriced_calls, coalesce(a.calls, 0) AS calls,
         false AS standalone, coalesce(a.shares_hosting, false) AS shares_hosting,
         r.error_type, r.duration_ms, r.input_messages, r.output_messages, r.span_id, r.rejected_attempts,
         r.service_name, r.route_reason, r.route_confidence
  FROM raw r LEFT JOIN agg a ON a.trace_id = r.trace_id AND a.linked_span_id = r.span_id
  UNION ALL
  SELECT c.span_id, c.trace_id, c.ts, c.tenant, NULL, NULL, c.tier, NULL,
         false, 1, 0,
         -- no error, and not declined: a refusal or a provider's safety/content filter stopped the answer; nor
         -- paused (Anthropic's pause_turn: no answer yet, the app sends the turn back and that call is the success)
         c.error_type IS NULL AND NOT regexp_matches(
           ',' || lower(array_to_string(coalesce(c.finish_reasons, []::VARCHAR[]), ',')) || ',',
           ',(refusal|content_filter|content_filtered|guardrail_intervened|safety|prohibited_content|blocklist|spii|pause_turn),'),
         coalesce(c.cost_usd, 0.0),
         coalesce(c.input_tokens, 0), coalesce(c.output_tokens, 0),
         CASE WHEN c.cost_usd IS NULL THEN 1 ELSE 0 END, 1,
         true, c.pricing_status = 'student',
         c.error_type, c.duration_ms, c.input_messages, c.output_messages, c.span_id, NULL, c.service_name,
         NULL, NULL
  FROM cl c WHERE c.linked_span_id IS NULL
), sharing AS (
  SELECT date_trunc('hour', ts) AS window_start, count(*) AS n FROM base WHERE shares_hosting GROUP BY 1
), share AS (
  SELECT h.window_start, h.hosting_usd / s.n AS share
  FROM student_hosting_hourly h JOIN sharing s ON s.window_start = h.window_start
)
SELECT b.request_id, b.trace_id, b.ts, b.tenant, b.task_type, b.subtype, b.tier, b.routed_tier,
       b.cache_hit, b.attempts, b.escalations, b.success,
       b.call_cost_usd + coalesce(h.share, 0.0) AS cost_usd,
       b.input_tokens, b.output_tokens,
       b.unpriced_calls, b.calls, b.standalone, coalesce(h.share, 0.0) AS hosting_cost_usd,
       b.call_cost_usd, b.error_type, b.duration_ms, b.input_messages, b.output_messages, b.span_id,
       b.shares_hosting, b.rejected_attempts, b.service_name, b.route_reason, b.route_confidence
FROM base b
LEFT JOIN share h ON b.shares_hosting AND h.window_start = date_trunc('hour', b.ts)
