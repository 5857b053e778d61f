-- Hourly semantic-cache hit rate per tenant, the 7-day average the alert compares it with, and the alert
-- band: an hour is under it when hit_rate < avg_7d - {{cache_alert_band}} (and it had at least
-- {{cache_alert_min_lookups}} lookups, so one miss in a quiet hour is not a breach). avg_7d is the alert's
-- baseline ([alerts.cache_hit_rate_drop] baseline): by default the same hour of day over the 7 days before
-- (avg_7d_hour), or all 168 hours before (avg_7d) with baseline = "rolling".
-- tenant is the panel's name: NULL for the lookups without a tenant (the page shows "(none)"); a tenant whose id
-- could be read as that or as another one ("(none)" itself, '', a leading double quote, spaces around it, or a
-- character that does not print: control and format characters such as a zero-width space or a right-to-left
-- override, line separators, spaces other than ' ', the {{unprintable}} class) is shown JSON-quoted, as the alert
-- labels it (the tenant (none) in double quotes), with each character that does not print written as its \uXXXX
-- escape ("acme\u200b", not an "acme" that looks like acme): no two series share a panel, nor look alike.
WITH hours AS (SELECT *, {{cache_baseline}} AS baseline FROM cache_hit_rate_7d),
labels AS (
  SELECT name,
         CASE WHEN name = '(none)' OR name = '' OR starts_with(name, '"') OR name <> trim(name)
                   OR regexp_matches(name, {{unprintable}})
              THEN {{quoted_name}} ELSE name END AS label
  FROM (SELECT DISTINCT tenant AS name FROM hours WHERE tenant IS NOT NULL)
)
SELECT h.window_start,
       l.label                                                           AS tenant,
       h.hit_rate,
       h.baseline                                                        AS avg_7d,
       h.baseline - {{cache_alert_band}}                                 AS alert_below,
       coalesce(h.hit_rate < h.baseline - {{cache_alert_band}}
                AND h.lookups >= {{cache_alert_min_lookups}}, false)    AS breach,
       h.lookups,
       h.hits
FROM hours h LEFT JOIN labels l ON l.name = h.tenant
ORDER BY tenant, window_start;
