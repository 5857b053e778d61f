-- One row per model call, whoever reported it (costline, the SDK's own spans, OpenLLMetry, OpenLIT, ...).
--
-- A call's identity is provider + response id within its trace: every instrumentation of one call
-- reports it in the caller's trace, and an id is only as unique as the server that made it (the
-- stand-ins count from 1 per process). The provider part of a call's identity (family): an
-- OpenAI-compatible server (vLLM) is reported as "vllm" by costline's wrapper and as "openai" by
-- OpenLLMetry / OpenLIT / openai-v2 for the same response, and Azure OpenAI's is "azure" to OpenInference,
-- "azure.ai.openai" to OpenLLMetry and "openai" to openai-v2; Claude on a cloud is "aws.bedrock" /
-- "gcp.vertex_ai" to the anthropic SDK's spans, "aws" / "google" to OpenInference's and "anthropic" to
-- OpenLLMetry's (whose spans keep the cloud's model id: us.anthropic.claude-..., claude-...@date); Gemini is "gemini"
-- to OpenTelemetry's google-genai instrumentation, "gcp.gen_ai" to OpenLLMetry's, "google" to OpenInference's,
-- "google" / "google-cloud" to Pydantic AI's (before its 2.0: "google-gla" / "google-vertex"); Gemini on
-- Vertex AI is "vertex_ai" to OpenTelemetry's google-genai instrumentation on util-genai 1.1. "openai" is also what
-- an OpenAI client library's instrumentation says of any OpenAI-compatible server (DeepSeek, Groq, xAI, OpenRouter,
-- ...), which a framework's span of the same call names: an "openai" span takes the family of the span of its
-- response id that names one, and without a response id it matches a span of any family.
--
-- Which of several spans of one model call is kept (first wins): one with an explicit price
-- (pref_explicit), then the most complete input (pref_input: input and cache tokens counted), then one not of
-- OpenLLMetry's anthropic instrumentation (pref_exact: its 0.62 adds a stream's message_start output count to
-- message_delta's cumulative one, one output token too many a streamed call), then the most complete usage
-- (pref_tokens: most tokens counted), then costline's own span (pref_own), then one that names the cloud endpoint
-- the call went to (pref_endpoint: its price has the regional premium when due), then a fixed order.
--
-- An app behind the gateway (docs/telemetry.md, "Apps behind the gateway"): a call no costline request owns whose
-- response id (its own, or that of a span it stands for) is the id a gateway request gave its client
-- (requests.response_id: costline.response.id, msg_costline_<request id> / chatcmpl-costline-<request id> /
-- resp_costline_<request id>, in any trace) is the app's view of that request, whose own spans count it (the tier that answered, at its price): no
-- call, no standalone request. Only the ids the gateway makes: a backend's own (the gateway's call spans have them)
-- may repeat across servers (the stand-ins', a self-hosted server's count from 1), and another app's direct call of
-- the same id is a call of its own. Over overlapping times, give or take a minute of clock skew.
--
-- An operation's span around its calls is no call: a span with no tokens and no explicit price that is
-- the parent of a call span of the same instrumentation, provider family, model and operation (the
-- Vercel AI SDK's "embeddings <model>" span around the one per HTTP call that embedMany splits its values into).
--
-- An instrumentation's second span of its own call is no call: a call span without a response id inside a span of
-- the same instrumentation, provider family and model (below) without one, with the same input and cache counts and
-- no more output, over overlapping times (Google ADK 1.x, and 2.x on its legacy schema, write "call_llm" with the
-- usage around "generate_content <model>" with the same usage: one model call). The outer span is kept: ADK 1.x
-- writes the thinking tokens (billed as output) only on it, so only its output is the whole of the call's.
--
-- The same model, as instrumentations of one call may name it: the same model_key, or the same model_base (the id
-- without the snapshot suffix pricing's normalize_model_id strips: -2024-07-18, -20251001, @20251001, -v1:0, -v2,
-- -latest) with the same suffix (Vertex AI's @20251001 is -20251001), or where one names the alias (no suffix, or
-- -latest), or the other's snapshot with more after it (Bedrock's -20251001-v1:0 of -20251001): what a framework's
-- span asked for (gpt-4o-mini) and what the SDK's span says answered (gpt-4o-mini-2024-07-18, as OpenAI's API
-- answers). Never two different suffixes (two snapshots -2024-05-13 and -2024-08-06; deepseek-v2 and deepseek-v3;
-- Bedrock's claude-v2 and claude-v2:1): two models.
-- Made twice (costline.lake.views_sql): call_links without the content columns, which the calls view reads from
-- call_content, and call_links_content with the kept span's own, for the requests view's standalone calls.
CREATE OR REPLACE VIEW {view} AS
WITH oi_traces AS (
  -- the traces with an OpenInference anthropic span: which providers the other spans of the trace say, and
  -- whether a call's response id or model id is a cloud's (Bedrock's msg_bdrk_ / anthropic.claude-…, Vertex's
  -- msg_vrtx_ / claude-…@date)
  SELECT trace_id,
         bool_or(provider = 'anthropic' AND NOT regexp_matches(coalesce(response_id, ''), '^msg_(bdrk|vrtx)_')
                 AND NOT regexp_matches(lower(coalesce(model, '')),
                                        '^(([a-z-]{2,8}\.)?anthropic\.claude|arn:aws)|@')) AS has_anthropic,
         bool_or(provider = 'aws.bedrock' OR starts_with(coalesce(response_id, ''), 'msg_bdrk_')) AS has_bedrock,
         bool_or(provider LIKE 'gcp.%' OR starts_with(coalesce(response_id, ''), 'msg_vrtx_')) AS has_vertex
  FROM calls_raw  -- the call rows as written (a repeated row changes no bool_or)
  WHERE trace_id IN (SELECT trace_id FROM calls_raw WHERE instrumentation = 'openinference.instrumentation.anthropic')
  GROUP BY trace_id
), f00 AS (
  -- call_links: the content columns stay out of every step (EXCLUDE, filled in below); the calls view takes them
  -- from call_content, which DuckDB leaves out of a query that does not select them (a query's WHERE, pushed into the
  -- materialized steps, kept every column of them)
  SELECT c.*{without_content}, CASE
                 -- OpenInference's anthropic instrumentation names the anthropic SDK's platform clients by their
                 -- cloud where the SDK says "anthropic" (AnthropicAWS "aws", AnthropicFoundry "azure",
                 -- AnthropicGoogleCloud "google": Anthropic's API all the same), as it names AnthropicBedrock's and
                 -- AnthropicVertex's calls (Vertex's newer ids have no "@date"): read as Anthropic's when its model
                 -- has no cloud spelling and its own response id is no cloud's (msg_bdrk_, msg_vrtx_), or, with no
                 -- response id (outputs hidden), when its trace has an Anthropic span and none of that cloud
                 WHEN c.instrumentation = 'openinference.instrumentation.anthropic'
                      AND c.provider IN ('aws', 'azure', 'google')
                      AND NOT regexp_matches(lower(coalesce(c.model, '')),
                                             '^(([a-z-]{2,8}\.)?anthropic\.claude|arn:aws)|@')
                      AND (CASE WHEN c.response_id IS NOT NULL THEN NOT regexp_matches(c.response_id, '^msg_(bdrk|vrtx)_')
                                ELSE t.has_anthropic AND NOT (c.provider = 'aws' AND t.has_bedrock)
                                     AND NOT (c.provider = 'google' AND t.has_vertex) END)
                      THEN 'anthropic'
                 WHEN provider IN ('vllm', 'openai', 'azure', 'azure.ai.openai', 'az.ai.openai') THEN 'openai'
                 -- Claude through the anthropic SDK's cloud clients, to an instrumentation that only sees the
                 -- SDK (OpenLLMetry: "anthropic"): known by the model's cloud spelling
                 -- (Bedrock's and Vertex's message ids say so too: msg_bdrk_..., msg_vrtx_...)
                 WHEN provider = 'anthropic' AND (starts_with(coalesce(response_id, ''), 'msg_bdrk_')
                      OR regexp_matches(lower(coalesce(model, '')), '^(([a-z-]{2,8}\.)?anthropic\.claude|arn:aws)'))
                      THEN 'aws.bedrock'
                 WHEN provider = 'anthropic' AND (starts_with(coalesce(response_id, ''), 'msg_vrtx_')
                      OR regexp_matches(lower(coalesce(model, '')), '^claude[^@]*@')) THEN 'gcp'
                 WHEN provider IN ('aws', 'aws.bedrock', 'bedrock') THEN 'aws.bedrock'
                 WHEN provider IN ('google', 'gemini', 'vertex_ai', 'google-cloud', 'google-gla', 'google-vertex')
                      OR provider LIKE 'gcp.%' THEN 'gcp'
                 WHEN provider IN ('mistralai', 'mistral_ai') THEN 'mistral_ai'
                 WHEN provider IN ('xai', 'x_ai') THEN 'x_ai'
                 ELSE coalesce(provider, '') END AS family,
         -- the model as instrumentations of one call may spell it differently: Bedrock's cross-region
         -- profile (us.anthropic.claude-...) to OpenTelemetry's botocore, without us.anthropic. to OpenLLMetry's;
         -- LiteLLM's and the routers' provider/ prefix (anthropic/claude-haiku-4-5 to OpenInference's LiteLLM span,
         -- claude-haiku-4-5 to its DSPy span around it): what follows the last "/" (as pricing's normalize_model_id)
         CASE WHEN strpos(model, '.') > 0 OR strpos(model, '/') > 0
              THEN regexp_replace(regexp_replace(lower(model), '^.*/', ''), '^((us|eu|apac|global|us-gov)\.)?(anthropic|amazon|meta|mistral|cohere|ai21|deepseek|qwen|openai|writer)\.', '')
              ELSE lower(model) END AS model_key,
         ts - to_microseconds(CAST(coalesce(duration_ms, 0) * 1000 AS BIGINT)) AS started,
         (pricing_status = 'explicit') AS pref_explicit,
         coalesce(input_tokens, 0) + coalesce(output_tokens, 0) + coalesce(cache_read_tokens, 0)
           + coalesce(cache_creation_tokens, 0) AS pref_tokens,
         (instrumentation IS NOT DISTINCT FROM '{costline_scope}') AS pref_own,
         (endpoint_scope IS NOT NULL) AS pref_endpoint,
         coalesce(input_tokens, 0) + coalesce(cache_read_tokens, 0) + coalesce(cache_creation_tokens, 0)
           AS pref_input,
         (instrumentation IS DISTINCT FROM 'opentelemetry.instrumentation.anthropic') AS pref_exact
  FROM call_links_all c LEFT JOIN oi_traces t ON t.trace_id = c.trace_id
), f0 AS (
  -- model_base: model_key without its snapshot suffix, as pricing's normalize_model_id strips it (once; a Claude
  -- id twice: Bedrock's -20251001-v1:0); model_tag: what was stripped, Vertex AI's @date read as -date
  SELECT *, replace(substr(model_key, length(model_base) + 1), '@', '-') AS model_tag
  FROM (SELECT *, regexp_replace(
                    CASE WHEN starts_with(model_key, 'claude-') THEN regexp_replace(model_key,
                      '(-\d\d\d\d\d\d\d\d|-\d\d\d\d-\d\d-\d\d|@\d\d\d\d\d\d\d\d|-v\d+(:\d+)?|-latest)$', '')
                    ELSE model_key END,
                    '(-\d\d\d\d\d\d\d\d|-\d\d\d\d-\d\d-\d\d|@\d\d\d\d\d\d\d\d|-v\d+(:\d+)?|-latest)$', '') AS model_base
        FROM f00)
), envelopes AS (
  SELECT DISTINCT p.trace_id, p.span_id
  FROM f0 p JOIN f0 ch ON ch.trace_id = p.trace_id AND ch.parent_span_id = p.span_id
  WHERE p.pref_tokens = 0 AND NOT p.pref_explicit AND p.response_id IS NULL
    AND ch.instrumentation IS NOT DISTINCT FROM p.instrumentation AND ch.family = p.family
    AND ch.model_key IS NOT DISTINCT FROM p.model_key AND ch.operation IS NOT DISTINCT FROM p.operation
), doubles AS (
  -- an instrumentation's second span of its own call (see above): the inner one (not where the outer one is an
  -- operation's span around its calls, the outer one dropped)
  SELECT DISTINCT ch.trace_id, ch.span_id
  FROM f0 p JOIN f0 ch ON ch.trace_id = p.trace_id AND ch.parent_span_id = p.span_id
    ANTI JOIN envelopes e ON e.trace_id = p.trace_id AND e.span_id = p.span_id
  WHERE p.response_id IS NULL AND ch.response_id IS NULL AND NOT p.pref_explicit AND NOT ch.pref_explicit
    AND ch.instrumentation IS NOT DISTINCT FROM p.instrumentation AND ch.family = p.family
    AND (ch.model_key = p.model_key
         OR (ch.model_base = p.model_base AND (ch.model_tag = p.model_tag OR ch.model_tag IN ('', '-latest')
                                               OR p.model_tag IN ('', '-latest')
                                               OR starts_with(ch.model_tag, p.model_tag || '-')
                                               OR starts_with(p.model_tag, ch.model_tag || '-'))))
    AND ch.input_tokens IS NOT DISTINCT FROM p.input_tokens
    AND ch.cache_read_tokens IS NOT DISTINCT FROM p.cache_read_tokens
    AND ch.cache_creation_tokens IS NOT DISTINCT FROM p.cache_creation_tokens
    AND (ch.output_tokens IS NOT DISTINCT FROM p.output_tokens OR ch.output_tokens < p.output_tokens)
    AND p.started <= ch.ts AND ch.started <= p.ts
), f AS (
  SELECT * FROM f0 ANTI JOIN envelopes e ON e.trace_id = f0.trace_id AND e.span_id = f0.span_id
    ANTI JOIN doubles d ON d.trace_id = f0.trace_id AND d.span_id = f0.span_id
), k AS (
  SELECT *, CASE WHEN response_id IS NOT NULL THEN trace_id || '|' || family || '|' || response_id END AS call_key
  FROM (
    -- "openai" is what an OpenAI client library's instrumentation says for any server it talks to: a span of
    -- the same response id in the trace that names the provider (a framework's "deepseek", "groq", "x_ai",
    -- ...) names the family
    SELECT * REPLACE (CASE WHEN family = 'openai' AND response_id IS NOT NULL
                           THEN coalesce(max(nullif(nullif(family, 'openai'), '')) OVER (PARTITION BY trace_id, response_id),
                                         'openai')
                           ELSE family END AS family)
    FROM f)
), ranked AS (
  SELECT *,
         row_number() OVER (PARTITION BY call_key ORDER BY pref_explicit DESC, pref_input DESC, pref_exact DESC,
                            pref_tokens DESC, pref_own DESC, pref_endpoint DESC, kafka_partition, kafka_offset,
                            span_id) AS key_rank,
         row_number() OVER (PARTITION BY trace_id ORDER BY pref_explicit DESC, pref_input DESC, pref_exact DESC,
                            pref_tokens DESC, pref_own DESC, pref_endpoint DESC, kafka_partition, kafka_offset,
                            span_id) AS trace_rank,
         CASE WHEN call_key IS NOT NULL THEN max(linked_span_id) OVER (PARTITION BY call_key) END AS key_span_id,
         CASE WHEN call_key IS NOT NULL THEN max(linked_request_id) OVER (PARTITION BY call_key) END AS key_request_id,
         CASE WHEN call_key IS NOT NULL THEN max(request_tenant) OVER (PARTITION BY call_key) END AS key_tenant
  FROM k
), heads AS (
  -- grandparent: a span's parent's parent when that parent is a model-call span too (three
  -- instrumentations wrapped around one call make a chain of three spans), counted or not (an
  -- instrumentation's inner span of its own call, dropped above, between its outer one and another's span)
  SELECT r.*, g.parent_span_id AS grandparent_span_id
  FROM ranked r LEFT JOIN (SELECT DISTINCT trace_id, span_id, parent_span_id FROM f0) g
    ON g.trace_id = r.trace_id AND g.span_id = r.parent_span_id
  WHERE r.call_key IS NULL OR r.key_rank = 1
), shadow_pairs AS (
  -- without a response id: the same call when another instrumentation reported the same provider and
  -- model (the same model as above: an alias and its dated snapshot are one), under the same parent (or one
  -- inside the other, up to two levels, or beside the call span another is inside: OpenInference's span with
  -- OpenTelemetry's inside it and OpenLLMetry's beside it), over
  -- overlapping times; a span that names no provider (Langfuse's, Strands Agents') or "openai" matches any, and one
  -- that names no model (a failed call to an agent framework's bridge, OpenInference's failed OpenAI call)
  -- matches the span it is inside or around, up to two levels
  SELECT a.trace_id, a.span_id, b.span_id AS by_span_id, a.response_id, a.output_tokens AS a_output,
         b.output_tokens AS b_output, coalesce(a.linked_span_id, a.key_span_id) AS a_span_id,
         coalesce(a.linked_request_id, a.key_request_id) AS a_request_id,
         coalesce(a.request_tenant, a.key_tenant) AS a_tenant
  FROM heads a JOIN heads b
    ON b.trace_id = a.trace_id AND b.trace_rank < a.trace_rank
   AND (a.call_key IS NULL OR b.call_key IS NULL)
   AND coalesce(a.instrumentation, '') <> coalesce(b.instrumentation, '')
   AND (a.family = b.family OR a.family IN ('', 'openai') OR b.family IN ('', 'openai'))
   AND (a.model_key IS NOT DISTINCT FROM b.model_key
        OR (a.model_base = b.model_base AND (a.model_tag = b.model_tag OR a.model_tag IN ('', '-latest')
                                             OR b.model_tag IN ('', '-latest')
                                             OR starts_with(a.model_tag, b.model_tag || '-')
                                             OR starts_with(b.model_tag, a.model_tag || '-')))
        OR ((a.model IS NULL OR b.model IS NULL) AND (a.parent_span_id = b.span_id OR b.parent_span_id = a.span_id
                                                       OR a.grandparent_span_id = b.span_id
                                                       OR b.grandparent_span_id = a.span_id)))
   AND (a.parent_span_id IS NOT DISTINCT FROM b.parent_span_id OR a.parent_span_id = b.span_id
        OR b.parent_span_id = a.span_id OR a.grandparent_span_id = b.span_id OR b.grandparent_span_id = a.span_id
        OR a.grandparent_span_id = b.parent_span_id OR b.grandparent_span_id = a.parent_span_id)
   AND a.started <= b.ts AND b.started <= a.ts
), shadowed AS (
  SELECT DISTINCT trace_id, span_id FROM shadow_pairs
), group_ids AS (
  -- the response id of what a kept span stands for: its own, else that of a span it shadowed (OpenInference's
  -- span has none, the OpenTelemetry span inside it has the call's)
  SELECT trace_id, by_span_id AS span_id, max(response_id) AS response_id
  FROM shadow_pairs WHERE response_id IS NOT NULL GROUP BY ALL
), group_outputs AS (
  -- whether every span a kept span stands for counted its output, give or take one token: one answer, not a
  -- framework's span of another call paired with it by model and time (either of them may be the one with the id)
  SELECT trace_id, by_span_id AS span_id,
         bool_and(a_output IS NULL OR b_output IS NULL OR abs(a_output - b_output) <= 1) AS same_output
  FROM shadow_pairs GROUP BY ALL
), group_links AS (
  -- the request of what a kept span stands for, when it has none of its own: that of a span it shadowed (the SDK's
  -- span inside costline's counted the tokens, so it is kept, but only costline's has the request span as parent)
  SELECT trace_id, by_span_id AS span_id, a_span_id, a_request_id, a_tenant
  FROM shadow_pairs WHERE a_span_id IS NOT NULL
  QUALIFY row_number() OVER (PARTITION BY trace_id, by_span_id ORDER BY span_id) = 1
), kept AS (
  SELECT h.* REPLACE (coalesce(h.linked_span_id, h.key_span_id, l.a_span_id) AS linked_span_id,
                      CASE WHEN coalesce(h.linked_span_id, h.key_span_id) IS NOT NULL
                           THEN coalesce(h.linked_request_id, h.key_request_id) ELSE l.a_request_id END
                        AS linked_request_id,
                      CASE WHEN coalesce(h.linked_span_id, h.key_span_id) IS NOT NULL
                           THEN coalesce(h.request_tenant, h.key_tenant) ELSE l.a_tenant END AS request_tenant),
         coalesce(h.response_id, g.response_id) AS group_response_id,
         coalesce(o.same_output, true) AS group_same_output
  FROM heads h ANTI JOIN shadowed s ON s.trace_id = h.trace_id AND s.span_id = h.span_id
  LEFT JOIN group_ids g ON g.trace_id = h.trace_id AND g.span_id = h.span_id
  LEFT JOIN group_outputs o ON o.trace_id = h.trace_id AND o.span_id = h.span_id
  LEFT JOIN group_links l ON l.trace_id = h.trace_id AND l.span_id = h.span_id
), gateway_ids AS (
  -- the ids the gateway's answers gave their clients, with their requests' spans and times
  SELECT response_id, trace_id, span_id, ts,
         ts - to_microseconds(CAST(coalesce(duration_ms, 0) * 1000 AS BIGINT)) AS started
  FROM requests_raw WHERE response_id IS NOT NULL
), serving AS (
  -- an app that records its own requests (costline's recorder) and calls the gateway inside them: its span of the
  -- call, owned by its request, carries the answer id of the gateway's request, a part of the app's request
  -- (docs/telemetry.md, "Apps behind the gateway"): the gateway's request counts the answer, with the app request's
  -- tenant and verdict (requests.sql), and the app's span is no call (part_answer) where it counts the output of the
  -- id's span it stands for (same_output): a framework's span of a direct call, paired with the gateway call's by
  -- model and time, keeps the group a call (the gateway's request is the app's part all the same: its tenant, a
  -- forget's). One app request per gateway request; one level (a gateway request that is itself a part keeps what it
  -- served: a gateway behind a gateway is counted as before)
  SELECT a.trace_id, a.span_id, a.linked_span_id AS app_span_id, a.request_tenant AS app_tenant,
         g.trace_id AS part_trace_id, g.span_id AS part_span_id, a.group_same_output AS part_answer
  FROM kept a JOIN gateway_ids g ON g.response_id = a.group_response_id
  WHERE a.linked_span_id IS NOT NULL
    AND NOT (g.trace_id = a.trace_id AND g.span_id = a.linked_span_id)
    AND coalesce(a.started <= g.ts + INTERVAL 1 MINUTE AND g.started <= a.ts + INTERVAL 1 MINUTE, TRUE)
  QUALIFY row_number() OVER (PARTITION BY g.trace_id, g.span_id ORDER BY a.ts, a.trace_id, a.span_id) = 1
      AND row_number() OVER (PARTITION BY a.trace_id, a.span_id ORDER BY g.ts, g.trace_id, g.span_id) = 1
), parts AS (
  SELECT s.* FROM serving s
  ANTI JOIN serving o ON o.part_trace_id = s.trace_id AND o.part_span_id = s.app_span_id
), answered AS (
  SELECT DISTINCT a.trace_id, a.span_id
  FROM kept a JOIN gateway_ids g ON g.response_id = a.group_response_id
  WHERE a.linked_span_id IS NULL AND a.group_response_id IS NOT NULL
    AND coalesce(a.started <= g.ts + INTERVAL 1 MINUTE AND g.started <= a.ts + INTERVAL 1 MINUTE, TRUE)
), crossed AS (
  -- one response reported in two traces (two instrumentations, neither inside the other, with no span
  -- around them): the same call when the spans' times overlap, as an id repeated by another server would
  -- not; the span linked to a request wins, then the order above. Only what that can be: never two spans
  -- each linked to a request of its own (each is inside its own request: two calls, whatever their ids, e.g.
  -- a self-hosted server's short ones), nor spans of different tenants or services (one process reports
  -- both spans of such a call; a tenant or service.name that is not said matches any)
  SELECT DISTINCT a.trace_id, a.span_id
  FROM kept a JOIN kept b
    ON b.group_response_id = a.group_response_id AND b.trace_id <> a.trace_id
   AND (b.family = a.family OR a.family = 'openai' OR b.family = 'openai')
   AND coalesce(a.instrumentation, '') <> coalesce(b.instrumentation, '')
   AND a.started <= b.ts AND b.started <= a.ts
   AND (coalesce(a.linked_request_id, a.key_request_id) IS NULL
        OR coalesce(b.linked_request_id, b.key_request_id) IS NULL)
   AND coalesce(coalesce(a.request_tenant, a.key_tenant, a.tenant) = coalesce(b.request_tenant, b.key_tenant, b.tenant),
                TRUE)
   AND coalesce(a.service_name = b.service_name, TRUE)
  WHERE a.group_response_id IS NOT NULL
    AND (coalesce(b.linked_request_id, b.key_request_id) IS NOT NULL,
         b.pref_explicit, b.pref_input, b.pref_exact, b.pref_tokens, b.pref_own, b.pref_endpoint, a.span_id)
      > (coalesce(a.linked_request_id, a.key_request_id) IS NOT NULL,
         a.pref_explicit, a.pref_input, a.pref_exact, a.pref_tokens, a.pref_own, a.pref_endpoint, b.span_id)
)
SELECT h.* EXCLUDE (family, model_key, model_base, model_tag, pref_explicit, pref_input, pref_exact, pref_tokens,
                    pref_own, pref_endpoint,
                    call_key,
                    key_rank, trace_rank, key_span_id, key_request_id, key_tenant, linked_span_id, linked_request_id,
                    request_tenant, grandparent_span_id, group_response_id, group_same_output),
       coalesce(h.linked_span_id, h.key_span_id) AS linked_span_id,
       coalesce(h.linked_request_id, h.key_request_id) AS linked_request_id,
       -- a call of a gateway request inside an app's request: the app request's tenant, as the request's (requests.sql)
       CASE WHEN p.app_span_id IS NOT NULL THEN coalesce(p.app_tenant, h.request_tenant, h.key_tenant)
            ELSE coalesce(h.request_tenant, h.key_tenant) END AS request_tenant,
       -- the app's span of a gateway request's answer (its request span), not a call where part_answer (the calls
       -- and requests views leave it out)
       a.part_trace_id, a.part_span_id, a.part_answer
FROM kept h ANTI JOIN crossed s ON s.trace_id = h.trace_id AND s.span_id = h.span_id
  ANTI JOIN answered v ON v.trace_id = h.trace_id AND v.span_id = h.span_id
  LEFT JOIN parts p ON p.part_trace_id = h.trace_id AND p.part_span_id = coalesce(h.linked_span_id, h.key_span_id)
  LEFT JOIN parts a ON a.trace_id = h.trace_id AND a.span_id = h.span_id
