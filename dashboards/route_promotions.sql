-- Routing policy promotions and rollbacks (costline route promote / rollback, written to
-- <lake>/jobs/route_promotions): the dashboard marks them on the cost and tier-match charts.
SELECT ts,
       action,
       substr(policy_sha256, 1, 12) AS policy,
       passed,
       note
FROM route_promotions
ORDER BY ts;
