-- Spend per day by the app that sent it (each request span's resource service.name; a standalone call's own), USD.
-- cost_usd includes failed attempts, escalations and the student's GPU hosting share.
SELECT CAST(date_trunc('day', ts) AS DATE)   AS day,
       coalesce(service_name, '(unnamed)')   AS service,
       sum(cost_usd)                         AS cost_usd,
       count(*)                              AS requests
FROM requests
GROUP BY ALL
ORDER BY day, service;
