-- Rejected near-misses per namespace and reason, per day: candidates the vector search found that
-- the verified cache's checks turned down (lookups.reject_reason: one reason per rejected candidate,
-- comma-separated, most similar first). 'similarity' (the first candidate under the cosine floor) is
-- a plain miss, not a near-miss, and is left out. Many rejections of one kind in a namespace show
-- where its traffic holds traps (numbers, negations, entities...), see docs/cache.md.
WITH reasons AS (
  SELECT CAST(date_trunc('day', ts) AS DATE)    AS day,
         coalesce(namespace, '(default)')        AS namespace,
         unnest(string_split(reject_reason, ',')) AS reason
  FROM lookups
  WHERE reject_reason IS NOT NULL
)
SELECT day,
       namespace,
       trim(reason)                     AS reason,
       namespace || ' · ' || trim(reason) AS series,
       count(*)                         AS rejected
FROM reasons
WHERE trim(reason) NOT IN ('', 'similarity')
GROUP BY ALL
ORDER BY day, namespace, reason;
