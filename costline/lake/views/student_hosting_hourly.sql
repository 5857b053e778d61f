-- The student's hosting cost, hour by hour, from the dated schedule (materialised here, never a rate
-- applied to history). A period's explicit ends are taken as given. An open `since` covers the runs of
-- student calls: hours with student calls, and the idle hours between two of them at most
-- {open_gap_hours} hours apart ([pricing] hosting_open_gap_hours), up to the lake's end; a longer
-- silence is not billed, so one call stamped years early (a client's clock) bills its own hour, not
-- every hour since. The lake's end is the hour after its newest span, but never past the current hour
-- (UTC): one span from a client whose clock is years ahead must not bill every hour until then.
CREATE OR REPLACE VIEW student_hosting_hourly AS
WITH bounds AS (
  SELECT (SELECT least(date_trunc('hour', max(ts)), date_trunc('hour', make_timestamp(epoch_us(now()))))
                 + INTERVAL 1 HOUR FROM (
            SELECT max(ts) AS ts FROM requests_raw UNION ALL SELECT max(ts) FROM calls_raw)) AS lake_end
), student_hours AS (
  SELECT DISTINCT date_trunc('hour', c.ts) AS h
  FROM calls_raw c CROSS JOIN bounds b
  WHERE c.tier = 'student' AND c.ts IS NOT NULL AND date_trunc('hour', c.ts) < b.lake_end
), runs AS (
  -- each student-call hour reaches the next one (or the lake's end) when that is close enough
  SELECT h AS run_start,
         CASE WHEN nxt - h <= INTERVAL {open_gap_hours} HOUR THEN nxt ELSE h + INTERVAL 1 HOUR END AS run_end
  FROM (SELECT s.h, coalesce(lead(s.h) OVER (ORDER BY s.h), b.lake_end) AS nxt
        FROM student_hours s CROSS JOIN bounds b)
), periods AS (
  SELECT s.since, coalesce(s.until, b.lake_end) AS until, s.usd_per_hour
  FROM hosting_schedule s CROSS JOIN bounds b WHERE s.since IS NOT NULL
  UNION ALL
  SELECT r.run_start AS since, least(r.run_end, coalesce(s.until, r.run_end)) AS until, s.usd_per_hour
  FROM hosting_schedule s CROSS JOIN runs r WHERE s.since IS NULL
), hours AS (
  SELECT since, until, usd_per_hour, unnest(range(date_trunc('hour', since), until, INTERVAL 1 HOUR)) AS window_start
  FROM periods WHERE since IS NOT NULL AND until IS NOT NULL AND since < until
)
SELECT window_start,
       sum(usd_per_hour * (epoch(least(until, window_start + INTERVAL 1 HOUR)) - epoch(greatest(since, window_start)))
           / 3600.0) AS hosting_usd
FROM hours GROUP BY window_start
