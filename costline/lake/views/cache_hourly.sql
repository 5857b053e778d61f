-- Cache lookups, hits and hit rate per hour and tenant.
CREATE OR REPLACE VIEW cache_hourly AS
SELECT date_trunc('hour', ts) AS window_start, tenant,
       count(*) AS lookups, count(*) FILTER (WHERE hit) AS hits,
       count(*) FILTER (WHERE hit) / count(*) AS hit_rate
FROM lookups GROUP BY ALL
