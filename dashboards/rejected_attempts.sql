-- Rejected attempts per day, by the tier that gave the answer and why it was turned down
-- (requests.rejected_attempts: 'tier:problem', comma-separated, in order). Each is a paid call whose answer was
-- not used: 'validator' and 'low_confidence' are the quality gates, 'output_format' a structured answer that broke
-- its schema, an error class name an API error after the SDK's retries. A growing band on the student is drift;
-- on one API tier, a router sending work too low.
WITH reasons AS (
  SELECT CAST(date_trunc('day', ts) AS DATE)          AS day,
         unnest(string_split(rejected_attempts, ',')) AS reason
  FROM requests
  WHERE rejected_attempts IS NOT NULL
)
SELECT day,
       split_part(reason, ':', 1)                                     AS tier,
       split_part(reason, ':', 2)                                     AS problem,
       split_part(reason, ':', 1) || ' · ' || split_part(reason, ':', 2) AS series,
       count(*)                                                       AS rejected
FROM reasons
WHERE reason <> ''
GROUP BY ALL
ORDER BY day, tier, problem;
