-- Requests per day by the tier that answered them: cache, student, budget, mid, upper, frontier. share is NULL on
-- a day with no request (only the student's idle hosting hours): a share of nothing, not NaN.
WITH daily AS (
  SELECT CAST(date_trunc('day', window_start) AS DATE) AS day, tier, sum(requests) AS requests
  FROM tier_hourly
  GROUP BY ALL
)
SELECT day, tier, requests,
       requests / nullif(sum(requests) OVER (PARTITION BY day), 0) AS share
FROM daily
ORDER BY day, tier;
