-- Cost per successful request, per answering tier and day (USD).
-- cost_usd includes failed attempts, escalations and the student's GPU hosting share;
-- cache answers cost nothing and are left out (see the traffic mix for their share).
SELECT CAST(date_trunc('day', window_start) AS DATE)   AS day,
       tier,
       sum(cost_usd) / nullif(sum(successes), 0)        AS cost_per_success,
       sum(successes)                                   AS successes,
       sum(requests)                                    AS requests,
       sum(cost_usd)                                    AS cost_usd
FROM tier_hourly
WHERE tier <> 'cache'
GROUP BY ALL
ORDER BY day, tier;
