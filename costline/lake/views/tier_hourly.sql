-- Requests, successes and cost per hour and tier; an hour of hosting no request shared still shows
-- its cost, under the student. call_cost_usd is cost_usd without the student's hosting (what the calls
-- themselves cost: tokens, failed attempts, escalations). call_cost_sq and success_call_cost (the sum of each
-- request's call cost squared, and of the successful requests' call cost) give the spread of cost per success
-- (the cost_per_success_rise alert's significance test: docs/alerts.md).
CREATE OR REPLACE VIEW tier_hourly AS
WITH r AS MATERIALIZED (
  SELECT date_trunc('hour', ts) AS window_start, tier, success, cost_usd, call_cost_usd, unpriced_calls, shares_hosting
  FROM requests
), per AS (
  SELECT window_start, tier, 1 AS n, CASE WHEN success THEN 1 ELSE 0 END AS ok, cost_usd, call_cost_usd, unpriced_calls,
         call_cost_usd * call_cost_usd AS call_cost_sq, CASE WHEN success THEN call_cost_usd ELSE 0.0 END AS ok_cost
  FROM r
  UNION ALL
  -- an hour of the hosting schedule that no request shared: its cost still shows, under the student
  SELECT h.window_start, 'student', 0, 0, h.hosting_usd, 0.0, 0, 0.0, 0.0
  FROM student_hosting_hourly h ANTI JOIN (SELECT DISTINCT window_start FROM r WHERE shares_hosting) s
    ON s.window_start = h.window_start
)
SELECT window_start, tier,
       CAST(sum(n) AS BIGINT) AS requests, CAST(sum(ok) AS BIGINT) AS successes,
       sum(cost_usd) AS cost_usd,
       sum(cost_usd) / nullif(sum(ok), 0) AS cost_per_success,
       sum(unpriced_calls) AS unpriced_calls,
       sum(call_cost_usd) AS call_cost_usd,
       sum(call_cost_sq) AS call_cost_sq,
       sum(ok_cost) AS success_call_cost
FROM per GROUP BY ALL
