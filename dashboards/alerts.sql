-- Firing and recent alerts, from the alerts view (costline.alerts: one row per firing episode):
-- the firing ones first, then the most recently fired.
SELECT fired_at, state, rule, severity, tenant, tier, subtype, value, threshold,
       coalesce(resolved_summary, summary) AS summary, coalesce(resolved_at, fired_at) AS changed_at
FROM alerts
ORDER BY state = 'firing' DESC, fired_at DESC
LIMIT 200;
