-- Savings waterfall: the daily cost after each lever, baseline -> routing -> cache -> student.
-- From the latest cost report (`costline jobs cost-report`, view cost_report_days) when one was run;
-- until then the cost report's own computation (jobs/cost_report.py, COST_SQL) over the lake's whole days:
--   baseline  every call repriced at the baseline model ({{baseline_model}}) with its actual tokens, cache reads
--             and writes (one-hour ones too), batch, a long-prompt band, US-only inference and web searches as
--             its prices bill them; a cache hit at its day's average baseline cost of an uncached request of its
--             task type (else the task type's, else all requests');
--   routing   every API call at what it actually cost; student calls at the replaced tier's model's prices
--             ({{replaced_model}}), as if there were no student; a cache hit imputed as above at routed prices;
--   cache     cache hits cost nothing;
--   student   what was paid for calls, plus the student's GPU for every hour its hosting schedule covers
--             (student_hosting_hourly: idle hours too).
-- The lake's whole days run from the first day with a request or a hosted hour to the last one: a GPU left running
-- before the first request or after the last (a quiet weekend) is billed all the same. Hosted hours count up to
-- the build day ({{build_day}}) at most, as the window does: a schedule dated ahead of today bills nothing yet.
WITH hosted AS (
  SELECT min(window_start) AS first, max(window_start) AS last
  FROM student_hosting_hourly WHERE window_start < {{build_day}} + INTERVAL 1 DAY
), lake_days AS (
  SELECT CAST(CAST(least(r.first, h.first) AS DATE) AS TIMESTAMP) AS since,
         CAST(greatest(CAST(r.last AS DATE), CAST(h.last AS DATE)) AS TIMESTAMP) + INTERVAL 1 DAY AS until
  FROM (SELECT min(ts) AS first, max(ts) AS last FROM requests) r CROSS JOIN hosted h
), per_day AS (
{{cost_days_sql}}
), hosting AS (
  SELECT CAST(window_start AS DATE) AS day, sum(hosting_usd) AS usd
  FROM student_hosting_hourly
  WHERE window_start >= (SELECT since FROM lake_days) AND window_start < (SELECT until FROM lake_days)
  GROUP BY 1
), days AS (
  SELECT day FROM per_day UNION SELECT day FROM hosting
), computed AS (
  SELECT d.day, s.step, s.stage,
         CASE s.stage WHEN 'baseline' THEN coalesce(p.baseline, 0) WHEN 'routing' THEN coalesce(p.routing, 0)
                      WHEN 'cache' THEN coalesce(p.cache, 0)
                      ELSE coalesce(p.student_api, 0) + coalesce(h.usd, 0) END AS cost_usd
  FROM days d
  CROSS JOIN (VALUES (1, 'baseline'), (2, 'routing'), (3, 'cache'), (4, 'student')) s(step, stage)
  LEFT JOIN per_day p ON p.day = d.day
  LEFT JOIN hosting h ON h.day = d.day
), report AS (
  SELECT day, step, stage, cost_usd FROM cost_report_days
  WHERE report_id = (SELECT arg_max(report_id, generated_at) FROM cost_report_days)
)
SELECT * FROM report
UNION ALL SELECT * FROM computed WHERE NOT EXISTS (SELECT 1 FROM report)
ORDER BY day, step;
