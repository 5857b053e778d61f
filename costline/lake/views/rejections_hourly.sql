-- Per hour and tier: the model calls requests made on it (attempts) and how many of their answers were turned
-- down (requests.rejected_attempts: a quality gate or the tier's API), with the reasons ('validator 12,
-- output_format 3'). Refusals made before any call (ContentNotSent, ImageUrlNotSent: the tier could not be
-- given the request) are in problems but not in rejected, so rejected / attempts is a share of calls.
CREATE OR REPLACE VIEW rejections_hourly AS
WITH attempts AS (
  SELECT date_trunc('hour', ts) AS window_start, tier, count(*) AS attempts
  FROM calls WHERE tier IS NOT NULL AND NOT standalone GROUP BY ALL
), items AS (
  SELECT date_trunc('hour', ts) AS window_start, split_part(item, ':', 1) AS tier, split_part(item, ':', 2) AS problem
  FROM (SELECT ts, unnest(string_split(rejected_attempts, ',')) AS item FROM requests
        WHERE rejected_attempts IS NOT NULL)
  WHERE item <> ''
), problems AS (
  SELECT window_start, tier, problem, count(*) AS n FROM items GROUP BY ALL
), rejected AS (
  SELECT window_start, tier,
         coalesce(sum(n) FILTER (WHERE problem NOT IN ('ContentNotSent', 'ImageUrlNotSent')), 0) AS rejected,
         string_agg(problem || ' ' || n, ', ' ORDER BY n DESC, problem) AS problems
  FROM problems GROUP BY ALL
)
SELECT coalesce(a.window_start, r.window_start) AS window_start, coalesce(a.tier, r.tier) AS tier,
       CAST(coalesce(a.attempts, 0) AS BIGINT) AS attempts, CAST(coalesce(r.rejected, 0) AS BIGINT) AS rejected,
       r.problems
FROM attempts a FULL JOIN rejected r ON a.window_start = r.window_start AND a.tier = r.tier
