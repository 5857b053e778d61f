-- Hourly semantic-cache hit rate per tenant, its rolling 7-day average (the preceding 168 hours)
-- and the alert band: an hour is under it when hit_rate < avg_7d - {{cache_alert_band}}
-- (and it had at least {{cache_alert_min_lookups}} lookups, so one miss in a quiet hour is not a breach).
SELECT window_start,
       tenant,
       hit_rate,
       avg_7d,
       avg_7d - {{cache_alert_band}}                                   AS alert_below,
       coalesce(hit_rate < avg_7d - {{cache_alert_band}}
                AND lookups >= {{cache_alert_min_lookups}}, false)    AS breach,
       lookups,
       hits
FROM cache_hit_rate_7d
ORDER BY tenant, window_start;
