-- Tier-match rate per tier across the nightly shadow-routing runs (shadow_runs is written by
-- the nightly shadow job): the share of sampled requests whose cheaper answer was adequate.
SELECT finished_at, run_id, tier, tier_match_rate, n
FROM shadow_runs
ORDER BY tier, finished_at;
