-- Hourly semantic-cache hit rate per tenant, the 7-day average the alert compares it with, and the alert
-- band: an hour is under it when hit_rate < avg_7d - {{cache_alert_band}} (and it had at least
-- {{cache_alert_min_lookups}} lookups, so one miss in a quiet hour is not a breach). avg_7d is the alert's
-- baseline ([alerts.cache_hit_rate_drop] baseline): by default the same hour of day over the 7 days before
-- (avg_7d_hour), or all 168 hours before (avg_7d) with baseline = "rolling".
-- tenant is the panel's name: NULL for the lookups without a tenant (the page shows "(none)"); a tenant whose id
-- could be read as that or as another one ("(none)" itself, '', a leading double quote, spaces around it, control
-- characters) is shown JSON-quoted, as the alert labels it (the tenant (none) in double quotes), so no two series
-- share a panel.
WITH hours AS (SELECT *, {{cache_baseline}} AS baseline FROM cache_hit_rate_7d)
SELECT window_start,
       CASE WHEN tenant = '(none)' OR tenant = '' OR starts_with(tenant, '"') OR tenant <> trim(tenant)
                 OR regexp_matches(tenant, '[[:cntrl:]]')
            THEN CAST(to_json(tenant) AS VARCHAR) ELSE tenant END AS tenant,
       hit_rate,
       baseline                                                        AS avg_7d,
       baseline - {{cache_alert_band}}                                 AS alert_below,
       coalesce(hit_rate < baseline - {{cache_alert_band}}
                AND lookups >= {{cache_alert_min_lookups}}, false)    AS breach,
       lookups,
       hits
FROM hours
ORDER BY tenant, window_start;
