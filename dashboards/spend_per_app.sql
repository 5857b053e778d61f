-- Spend per day by the app that sent it (each request span's resource service.name; a standalone call's own), USD,
-- over the dashboard's window ([dashboard] days: the {{window_days}} days up to the newest data, never past the
-- build day). cost_usd includes failed attempts, escalations and the student's GPU hosting share; the hosting
-- hours no request shared (the student's idle hours, billed all the same; up to the build day, {{build_day}}: a
-- schedule dated ahead of today bills nothing yet) are a series of their own,
-- "(idle student hosting)", so a day's bars add up to what it cost (tier_hourly, the savings waterfall, the cost
-- report). An app whose name could be read as one of these series names or as another app's (it starts with "(" or a
-- double quote, is '', has spaces around it, or holds a character that does not print: a zero-width space, a
-- right-to-left override, any control or format character, {{unprintable}}) is shown JSON-quoted, each character
-- that does not print written as its \uXXXX escape ("acme-app\u200b", not a second "acme-app").
-- Only finite call costs are summed, as the cost report does: a NaN or infinite one (a lake written before ingest
-- validation) is left out and counted in bad_costs; unpriced_calls counts the calls of models the pricing table
-- does not know (cost unknown, summed as $0). Where either is above 0, the bar is a lower bound.
WITH r AS (
  SELECT trace_id, span_id, ts, service_name, call_cost_usd, hosting_cost_usd, unpriced_calls, shares_hosting
  FROM requests
  WHERE ts >= {{since}}
), bad AS (
  -- the requests of r with a NaN or infinite call cost: the sum of their finite ones (finite_usd), and how
  -- many were left out (bad_costs)
  {{finite_call_costs}}
), labels AS (
  SELECT name,
         {{name_label}} AS label
  FROM (SELECT DISTINCT service_name AS name FROM r WHERE service_name IS NOT NULL)
), per AS (
  SELECT CAST(date_trunc('day', r.ts) AS DATE) AS day,
         coalesce(l.label, '(unnamed)') AS service,
         r.hosting_cost_usd + CASE WHEN isfinite(r.call_cost_usd) THEN r.call_cost_usd
                                   ELSE coalesce(b.finite_usd, 0.0) END AS cost_usd,
         1 AS requests, r.unpriced_calls, coalesce(b.bad_costs, 0) AS bad_costs
  FROM r LEFT JOIN bad b ON b.trace_id = r.trace_id AND b.span_id = r.span_id
         LEFT JOIN labels l ON l.name = r.service_name
  UNION ALL
  -- an hour of the hosting schedule that no request shared: billed all the same
  SELECT CAST(date_trunc('day', h.window_start) AS DATE), '(idle student hosting)', h.hosting_usd, 0, 0, 0
  FROM student_hosting_hourly h
  ANTI JOIN (SELECT DISTINCT date_trunc('hour', ts) AS window_start FROM r WHERE shares_hosting) s
    ON s.window_start = h.window_start
  WHERE h.window_start >= {{since}} AND h.window_start < {{build_day}} + INTERVAL 1 DAY
)
SELECT day,
       service,
       sum(cost_usd)                        AS cost_usd,
       CAST(sum(requests) AS BIGINT)        AS requests,
       CAST(sum(unpriced_calls) AS BIGINT)  AS unpriced_calls,
       CAST(sum(bad_costs) AS BIGINT)       AS bad_costs
FROM per
GROUP BY ALL
ORDER BY day, service;
