-- Each hour's cache hit rate beside two baselines of the 7 days before it (the alerts' baselines):
--   avg_7d, lookups_7d:           all 168 preceding hours, lookups-weighted (busy hours dominate);
--   avg_7d_hour, lookups_7d_hour: the same hour of day (UTC) on the 7 preceding days, lookups-weighted over
--                                 those <= 7 hours (a tenant's nights are compared with its nights).
-- A tenant-less series (tenant NULL) is a partition of its own.
CREATE OR REPLACE VIEW cache_hit_rate_7d AS
SELECT window_start, tenant, hit_rate,
       sum(hits) OVER w / nullif(sum(lookups) OVER w, 0) AS avg_7d,
       lookups, hits, sum(lookups) OVER w AS lookups_7d,
       sum(hits) OVER h / nullif(sum(lookups) OVER h, 0) AS avg_7d_hour,
       sum(lookups) OVER h AS lookups_7d_hour
FROM cache_hourly
WINDOW w AS (PARTITION BY tenant ORDER BY window_start
             RANGE BETWEEN INTERVAL 168 HOURS PRECEDING AND INTERVAL 1 HOUR PRECEDING),
       h AS (PARTITION BY tenant, hour(window_start) ORDER BY window_start
             RANGE BETWEEN INTERVAL 168 HOURS PRECEDING AND INTERVAL 1 HOUR PRECEDING)
