-- Savings waterfall: the daily cost after each lever, baseline -> routing -> cache -> student, per whole UTC day.
-- Each day is the cost report's own computation (jobs/cost_report.py, COST_SQL) over that whole day of the lake,
-- unless a stored cost report (`costline jobs cost-report`, views cost_reports / cost_report_days) covers the whole
-- day, was made after the day ended, and the lake still has the figures of the day it was computed from (its
-- requests, cache hits, calls, call cost and hosting, stored per day): then that report's figures for it (the latest
-- such report). Late spans of the day, or a report made while the day was still running, make the day computed
-- afresh; so does a report stored before those figures were (NULL: it cannot be checked). A report's part of a day
-- is never shown as the day: the nightly report's window runs from 02:00 to 02:00, so its first and last days are
-- part-days (each a fraction of the day's traffic and hosting), and only the latest report's days would hide every
-- earlier day.
--   baseline  each request's answering attempt (its answering generation call and the calls on that call's tier
--             right before it) repriced at the baseline model ({{baseline_model}}) with its actual tokens, cache
--             reads and writes (one-hour ones too), batch, a long-prompt band, US-only inference and web searches
--             as its prices bill them: an attempt that was rejected and redone is not repriced, an all-frontier
--             world would not have made it; a call that is no text generation (embeddings) at what it cost; a
--             cache hit at its day's average baseline cost of an uncached request of its task type (else the task
--             type's, else all requests');
--   routing   every API call at what it actually cost; the answering attempt's student calls at the replaced
--             tier's model's prices ({{replaced_model}}), as if there were no student, a rejected student answer
--             left out; a cache hit imputed as above at routed prices;
--   cache     cache hits cost nothing (a request flagged as a hit that then made a paid call is no hit);
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
), stored AS (
  -- per day of the window, the latest stored report whose range [since, until) holds the whole day, made after the
  -- day ended, whose figures of the day are still the lake's (the same counts; the same costs but for summing order)
  SELECT d.day, d.report_id
  FROM (SELECT report_id, generated_at, day, min(requests) AS requests, min(cache_hits) AS cache_hits,
               min(calls) AS calls, min(call_cost_usd) AS call_cost_usd, min(hosting_usd) AS hosting_usd
        FROM cost_report_days GROUP BY ALL) d
  JOIN (SELECT DISTINCT report_id, since, until FROM cost_reports) r ON r.report_id = d.report_id
  LEFT JOIN per_day p ON p.day = d.day
  LEFT JOIN hosting h ON h.day = d.day
  WHERE r.since <= CAST(d.day AS TIMESTAMP) AND r.until >= CAST(d.day AS TIMESTAMP) + INTERVAL 1 DAY
    AND d.day >= CAST({{since}} AS DATE) AND d.day <= {{build_day}}
    AND d.generated_at >= CAST(d.day AS TIMESTAMP) + INTERVAL 1 DAY
    AND d.requests = coalesce(p.requests, 0) AND d.cache_hits = coalesce(p.hits, 0)
    AND d.calls = coalesce(p.calls, 0)
    AND abs(d.call_cost_usd - coalesce(p.student_api, 0)) <= 1e-9 * greatest(abs(d.call_cost_usd), 1e-3)
    AND abs(d.hosting_usd - coalesce(h.usd, 0)) <= 1e-9 * greatest(abs(d.hosting_usd), 1e-3)
  QUALIFY row_number() OVER (PARTITION BY d.day ORDER BY d.generated_at DESC, d.report_id DESC) = 1
), report AS (
  SELECT c.day, c.step, c.stage, c.cost_usd FROM cost_report_days c
  JOIN stored s ON s.day = c.day AND s.report_id = c.report_id
)
SELECT * FROM report
UNION ALL SELECT * FROM computed WHERE day NOT IN (SELECT day FROM stored)
ORDER BY day, step;
