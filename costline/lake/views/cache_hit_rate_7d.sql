-- Each hour's cache hit rate beside the rate of the 7 days before it (the alerts' baseline).
CREATE OR REPLACE VIEW cache_hit_rate_7d AS
SELECT window_start, tenant, hit_rate,
       sum(hits) OVER w / nullif(sum(lookups) OVER w, 0) AS avg_7d,
       lookups, hits, sum(lookups) OVER w AS lookups_7d
FROM cache_hourly
WINDOW w AS (PARTITION BY tenant ORDER BY window_start
             RANGE BETWEEN INTERVAL 168 HOURS PRECEDING AND INTERVAL 1 HOUR PRECEDING)
