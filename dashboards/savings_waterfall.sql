-- Savings waterfall: the daily cost after each lever, baseline -> routing -> cache -> student.
-- From the latest cost report (`costline jobs cost-report`, view cost_report_days) when one was run;
-- until then computed here from requests and calls, the same way:
--   baseline  every call priced at the frontier model ({{frontier_model}}: ${{frontier_input_per_mtok}} in /
--             ${{frontier_output_per_mtok}} out per MTok) with its actual tokens; a cache hit is priced at its
--             day's average frontier cost of an uncached request of the same task type;
--   routing   every API call at what it actually cost; student calls at the budget model's prices
--             ({{budget_model}}: ${{budget_input_per_mtok}} / ${{budget_output_per_mtok}}), as if there were no
--             student; a cache hit at its day's average routed cost of an uncached request of its task type;
--   cache     cache hits cost nothing;
--   student   what was paid: sum(tier_hourly.cost_usd), the student's GPU hosting included (idle hours too).
WITH per_request AS (
  SELECT r.request_id, CAST(r.ts AS DATE) AS day, r.task_type, r.cache_hit,
         any_value(r.cost_usd) AS actual_usd,
         coalesce(sum((c.input_tokens * {{frontier_input_per_mtok}}
                       + c.output_tokens * {{frontier_output_per_mtok}}) / 1e6), 0) AS frontier_usd,
         coalesce(sum(CASE WHEN c.tier = 'student'
                           THEN (c.input_tokens * {{budget_input_per_mtok}}
                                 + c.output_tokens * {{budget_output_per_mtok}}) / 1e6
                           ELSE coalesce(c.cost_usd, 0) END), 0) AS routed_usd
  FROM requests r
  LEFT JOIN calls c ON c.trace_id = r.trace_id AND c.request_span_id = r.span_id
  GROUP BY r.request_id, r.trace_id, day, r.task_type, r.cache_hit
), typical_day AS (
  SELECT day, task_type, avg(frontier_usd) AS frontier_usd, avg(routed_usd) AS routed_usd
  FROM per_request WHERE NOT cache_hit GROUP BY ALL
), typical AS (
  SELECT task_type, avg(frontier_usd) AS frontier_usd, avg(routed_usd) AS routed_usd
  FROM per_request WHERE NOT cache_hit GROUP BY ALL
), paid AS (
  SELECT CAST(window_start AS DATE) AS day, sum(cost_usd) AS usd FROM tier_hourly GROUP BY ALL
), levels AS (
  SELECT p.day,
         sum(CASE WHEN p.cache_hit THEN coalesce(d.frontier_usd, t.frontier_usd, 0) ELSE p.frontier_usd END) AS baseline,
         sum(CASE WHEN p.cache_hit THEN coalesce(d.routed_usd, t.routed_usd, 0) ELSE p.routed_usd END)       AS routing,
         sum(CASE WHEN p.cache_hit THEN 0 ELSE p.routed_usd END)                                             AS cache,
         any_value(coalesce(pd.usd, 0))                                                                      AS student
  FROM per_request p
  LEFT JOIN typical_day d ON d.day = p.day AND d.task_type = p.task_type
  LEFT JOIN typical t ON t.task_type = p.task_type
  LEFT JOIN paid pd ON pd.day = p.day
  GROUP BY p.day
), computed AS (
  SELECT day, 1 AS step, 'baseline' AS stage, baseline AS cost_usd FROM levels
  UNION ALL SELECT day, 2, 'routing', routing FROM levels
  UNION ALL SELECT day, 3, 'cache', cache FROM levels
  UNION ALL SELECT day, 4, 'student', student FROM levels
), report AS (
  SELECT day, step, stage, cost_usd FROM cost_report_days
  WHERE report_id = (SELECT arg_max(report_id, generated_at) FROM cost_report_days)
)
SELECT * FROM report
UNION ALL SELECT * FROM computed WHERE NOT EXISTS (SELECT 1 FROM report)
ORDER BY day, step;
