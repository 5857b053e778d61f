-- The student's hosting cost, hour by hour, from the dated schedule (materialised here, never a rate
-- applied to history): open ends run from the first student call to the lake's newest span, but never
-- past the current hour (UTC): one span from a client whose clock is years ahead must not bill every
-- hour until then.
CREATE OR REPLACE VIEW student_hosting_hourly AS
WITH bounds AS (
  SELECT (SELECT date_trunc('hour', min(ts)) FROM calls_raw WHERE tier = 'student') AS first_student,
         (SELECT least(date_trunc('hour', max(ts)), date_trunc('hour', make_timestamp(epoch_us(now()))))
                 + INTERVAL 1 HOUR FROM (
            SELECT max(ts) AS ts FROM requests_raw UNION ALL SELECT max(ts) FROM calls_raw)) AS lake_end
), periods AS (
  SELECT coalesce(s.since, b.first_student) AS since, coalesce(s.until, b.lake_end) AS until, s.usd_per_hour
  FROM hosting_schedule s CROSS JOIN bounds b
), hours AS (
  SELECT since, until, usd_per_hour, unnest(range(date_trunc('hour', since), until, INTERVAL 1 HOUR)) AS window_start
  FROM periods WHERE since IS NOT NULL AND until IS NOT NULL AND since < until
)
SELECT window_start,
       sum(usd_per_hour * (epoch(least(until, window_start + INTERVAL 1 HOUR)) - epoch(greatest(since, window_start)))
           / 3600.0) AS hosting_usd
FROM hours GROUP BY window_start
