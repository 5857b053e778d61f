-- Cost per successful request, per answering tier and day (USD), over the dashboard's window ([dashboard] days:
-- the {{window_days}} days up to the newest data, never past the build day). As tier_hourly: cost_usd includes
-- failed attempts, escalations and the student's GPU hosting (its share of each hour, and the hours no request
-- shared, under the student). Who answered is the requests view's tier, the cost report's classification: a request
-- stamped as served by the cache that still made a generation call that succeeded or was billed is under the tier
-- of its answering call. Cache answers are left out (see the traffic mix for their share) while they cost nothing;
-- on a day they cost something (an embeddings call of their own, a share of the student's hosting hour through a
-- failed student call; or a call cost unknown or left out) the cache is a tier of the chart too, so the chart's
-- costs add up to tier_hourly's.
-- Only finite call costs are summed, as the cost report does: a NaN or infinite one (a lake written before ingest
-- validation) is left out and counted in bad_costs; unpriced_calls counts the calls of models the pricing table
-- does not know (cost unknown, summed as $0). Where either is above 0, the point is a lower bound.
WITH r AS (
  SELECT trace_id, span_id, ts, tier, success, call_cost_usd, hosting_cost_usd, unpriced_calls, shares_hosting
  FROM requests
  WHERE ts >= {{since}}
), bad AS (
  -- the requests of r with a NaN or infinite call cost: the sum of their finite ones (finite_usd), and how
  -- many were left out (bad_costs)
  {{finite_call_costs}}
), per AS (
  SELECT CAST(date_trunc('day', r.ts) AS DATE) AS day, r.tier,
         1 AS n, CASE WHEN r.success THEN 1 ELSE 0 END AS ok,
         r.hosting_cost_usd + CASE WHEN isfinite(r.call_cost_usd) THEN r.call_cost_usd
                                   ELSE coalesce(b.finite_usd, 0.0) END AS cost_usd,
         r.unpriced_calls, coalesce(b.bad_costs, 0) AS bad_costs
  FROM r LEFT JOIN bad b ON b.trace_id = r.trace_id AND b.span_id = r.span_id
  UNION ALL
  -- an hour of the hosting schedule that no request shared: its cost still shows, under the student (up to the
  -- build day, {{build_day}}: a schedule dated ahead of today bills nothing yet)
  SELECT CAST(date_trunc('day', h.window_start) AS DATE), 'student', 0, 0, h.hosting_usd, 0, 0
  FROM student_hosting_hourly h
  ANTI JOIN (SELECT DISTINCT date_trunc('hour', ts) AS window_start FROM r WHERE shares_hosting) s
    ON s.window_start = h.window_start
  WHERE h.window_start >= {{since}} AND h.window_start < {{build_day}} + INTERVAL 1 DAY
)
SELECT day,
       tier,
       sum(cost_usd) / nullif(sum(ok), 0)   AS cost_per_success,
       CAST(sum(ok) AS BIGINT)              AS successes,
       CAST(sum(n) AS BIGINT)               AS requests,
       sum(cost_usd)                        AS cost_usd,
       CAST(sum(unpriced_calls) AS BIGINT)  AS unpriced_calls,
       CAST(sum(bad_costs) AS BIGINT)       AS bad_costs
FROM per
GROUP BY ALL
HAVING tier <> 'cache' OR sum(cost_usd) <> 0 OR sum(unpriced_calls) > 0 OR sum(bad_costs) > 0
ORDER BY day, tier;
