-- Requests per day by the tier that answered them: cache, student, budget, mid, upper, frontier.
WITH daily AS (
  SELECT CAST(date_trunc('day', window_start) AS DATE) AS day, tier, sum(requests) AS requests
  FROM tier_hourly
  GROUP BY ALL
)
SELECT day, tier, requests,
       requests / sum(requests) OVER (PARTITION BY day)  AS share
FROM daily
ORDER BY day, tier;
