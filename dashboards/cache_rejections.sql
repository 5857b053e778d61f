-- Rejected near-misses per namespace and reason, per day: candidates the vector search found that
-- the verified cache's checks turned down (lookups.reject_reason: one reason per rejected candidate,
-- comma-separated, most similar first). 'similarity' (the first candidate under the cosine floor) is
-- a plain miss, not a near-miss, and is left out. Many rejections of one kind in a namespace show
-- where its traffic holds traps (numbers, negations, entities...), see docs/cache.md.
-- A namespace (a tenant's, by default) that could be read as "(default)" or as another one (it starts with "(" or a
-- double quote, is '', has spaces around it, or holds a character that does not print: a zero-width space, a
-- right-to-left override, {{unprintable}}) is shown JSON-quoted, each character that does not print written as its
-- \uXXXX escape, as the spend and cache hit-rate charts show names.
WITH rejected AS (
  SELECT ts, namespace, reject_reason FROM lookups WHERE reject_reason IS NOT NULL
), labels AS (
  SELECT name,
         {{name_label}} AS label
  FROM (SELECT DISTINCT namespace AS name FROM rejected WHERE namespace IS NOT NULL)
), reasons AS (
  SELECT CAST(date_trunc('day', r.ts) AS DATE)    AS day,
         coalesce(l.label, '(default)')            AS namespace,
         unnest(string_split(reject_reason, ','))   AS reason
  FROM rejected r LEFT JOIN labels l ON l.name = r.namespace
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
