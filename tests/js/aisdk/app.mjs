// A small Vercel AI SDK app whose OpenTelemetry spans go to an OTLP/HTTP endpoint (costline's
// OtlpReceiver in tests/test_ingest_aisdk.py). It makes real AI SDK calls against costline's stand-in
// APIs (Anthropic Messages + an OpenAI-compatible chat completions server; OpenAI's embeddings API with
// --scenario embeddings), then prints ONE JSON line on stdout: what the SDK itself reported per call (its
// `usage` objects, the response id, whether the call failed) and the spans it ended, and force-flushes and
// shuts the tracer provider down before exiting.
//
//   node app.mjs --otlp http://127.0.0.1:4318/v1/traces \
//                --anthropic http://127.0.0.1:8080/v1 --openai http://127.0.0.1:8080/v1 \
//                [--telemetry genai|legacy] [--protocol json|proto] [--scenario chat|embeddings|modifiers]
//                [--provider-metadata on|off]
//
// Each flag may come from the environment instead: OTLP_ENDPOINT, ANTHROPIC_BASE_URL, OPENAI_BASE_URL,
// AISDK_TELEMETRY, OTLP_PROTOCOL, AISDK_SCENARIO, AISDK_PROVIDER_METADATA.
//
// --telemetry picks the AI SDK 7 integration from @ai-sdk/otel: `genai` is `OpenTelemetry` (GenAI
// semantic conventions: `invoke_agent {model}` > `step {n}` > `chat {model}`), `legacy` is
// `LegacyOpenTelemetry` (`ai.generateText` > `ai.generateText.doGenerate`, `ai.streamText` >
// `ai.streamText.doStream`, the spans AI SDK <= 6 made with experimental_telemetry).
// --protocol picks @opentelemetry/exporter-trace-otlp-http (OTLP JSON) or -otlp-proto (protobuf).
// --scenario picks the calls: `chat` (the default: generateText / streamText, below) or `embeddings`
// (`embed` / `embedMany` on the OpenAI provider's embeddings API: legacy `ai.embed` > `ai.embed.doEmbed`,
// `ai.embedMany` > one `ai.embedMany.doEmbed` per chunk; genai `embeddings {model}` > `embeddings {model}`).
// `modifiers`: Anthropic calls billed otherwise than by their tokens alone: a one-hour cache write and a read of
// it, a web search (the provider's server tool), US-only inference streamed. Nothing fails in it.
// --provider-metadata on makes the genai integration record `ai.response.providerMetadata` (a supplemental
// attribute, off by default; the legacy integration always records it): the provider's own response fields
// as JSON, where Anthropic's raw usage (one-hour writes, searches, geography) is.
// In AI SDK 7 the per-call `telemetry` option (formerly `experimental_telemetry`, still accepted) emits
// no span unless an integration is registered with registerTelemetry, as below.
//
// Versions (package-lock.json): ai 7 and @ai-sdk/* declare `engines: node >= 22` yet run on the
// machines' Node 20; the OpenTelemetry JS SDK is its 2.x line (sdk-trace-* 2.12.1, exporters 0.223.1,
// api 1.9.1: the api @ai-sdk/otel pins, so one copy), because OTel JS 3.x requires Node >= 22.15.
//
// The FIRST model request is expected to fail: the driving test makes the stand-in answer 400 to the
// next Anthropic request (chat) or the next OpenAI request (embeddings) before it starts this program.
//
// The report also lists every ended span (scope, name, ids, parent, status, attributes: long values cut).

import { diag, DiagConsoleLogger, DiagLogLevel, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { OTLPTraceExporter as OTLPJsonTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { OTLPTraceExporter as OTLPProtoTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { createAnthropic } from '@ai-sdk/anthropic';
import { createOpenAI } from '@ai-sdk/openai';
import { LegacyOpenTelemetry, OpenTelemetry } from '@ai-sdk/otel';
import { embed, embedMany, generateText, registerTelemetry, streamText, wrapEmbeddingModel } from 'ai';

function option(flag, env, fallback) {
  const i = process.argv.indexOf(flag);
  if (i >= 0 && i + 1 < process.argv.length) return process.argv[i + 1];
  if (process.env[env]) return process.env[env];
  if (fallback !== undefined) return fallback;
  throw new Error(`missing ${flag} (or $${env})`);
}

const otlpEndpoint = option('--otlp', 'OTLP_ENDPOINT');
const anthropicBaseURL = option('--anthropic', 'ANTHROPIC_BASE_URL');
const openaiBaseURL = option('--openai', 'OPENAI_BASE_URL');
const telemetryKind = option('--telemetry', 'AISDK_TELEMETRY', 'genai');
const protocol = option('--protocol', 'OTLP_PROTOCOL', 'json');
const scenario = option('--scenario', 'AISDK_SCENARIO', 'chat');
const providerMetadata = option('--provider-metadata', 'AISDK_PROVIDER_METADATA', 'off');
if (!['on', 'off'].includes(providerMetadata)) throw new Error(`--provider-metadata: on or off, not ${providerMetadata}`);
if (!['genai', 'legacy'].includes(telemetryKind)) throw new Error(`--telemetry: genai or legacy, not ${telemetryKind}`);
if (!['json', 'proto'].includes(protocol)) throw new Error(`--protocol: json or proto, not ${protocol}`);
if (!['chat', 'embeddings', 'modifiers'].includes(scenario)) {
  throw new Error(`--scenario: chat, embeddings or modifiers, not ${scenario}`);
}

diag.setLogger(new DiagConsoleLogger(), DiagLogLevel.WARN); // export failures on stderr

// The exporter, wrapped to account for what the endpoint accepted (printed with the results).
const Exporter = protocol === 'proto' ? OTLPProtoTraceExporter : OTLPJsonTraceExporter;
const otlp = new Exporter({ url: otlpEndpoint, timeoutMillis: 10000 });
const exported = { ended: 0, accepted: 0, batches: 0, failures: [] };
const exporter = {
  export(spans, done) {
    otlp.export(spans, (result) => {
      exported.batches += 1;
      if (result.code === 0) exported.accepted += spans.length;
      else {
        const e = result.error;
        exported.failures.push([e?.code, e?.message, e?.data].filter((x) => x !== undefined && x !== '').join(' '));
      }
      done(result);
    });
  },
  forceFlush: () => otlp.forceFlush(),
  shutdown: () => otlp.shutdown(),
};
// Every ended span, for the report (the test prints it on failure; it documents what each integration emits).
const cut = (v) => (typeof v === 'string' && v.length > 160 ? `${v.slice(0, 160)}...(${v.length} chars)` : v);
const cutAll = (attrs) => Object.fromEntries(Object.entries(attrs ?? {}).map(([k, v]) => [k, cut(v)]));
const spans = [];
const countEnded = {
  onStart() {},
  onEnd(span) {
    exported.ended += 1;
    spans.push({
      name: span.name,
      scope: span.instrumentationScope?.name ?? span.instrumentationLibrary?.name,
      kind: span.kind,
      traceId: span.spanContext().traceId,
      spanId: span.spanContext().spanId,
      parent: span.parentSpanContext?.spanId ?? span.parentSpanId ?? null,
      start: span.startTime,
      end: span.endTime,
      status: span.status,
      attributes: cutAll(span.attributes),
      events: span.events.map((e) => ({ name: e.name, attributes: cutAll(e.attributes) })),
    });
  },
  forceFlush: () => Promise.resolve(),
  shutdown: () => Promise.resolve(),
};
const provider = new NodeTracerProvider({
  resource: resourceFromAttributes({ 'service.name': 'aisdk-faq-app' }),
  spanProcessors: [countEnded, new BatchSpanProcessor(exporter, { scheduledDelayMillis: 200 })],
});
provider.register(); // global tracer provider + AsyncLocalStorage context manager (parent spans)
registerTelemetry(telemetryKind === 'legacy' ? new LegacyOpenTelemetry()
  : new OpenTelemetry({ providerMetadata: providerMetadata === 'on' }));

const anthropic = createAnthropic({ baseURL: anthropicBaseURL, apiKey: 'test' });
const openai = createOpenAI({ baseURL: openaiBaseURL, apiKey: 'test' });
const claude = anthropic('claude-haiku-4-5');
const student = openai.chat('costline-student'); // Chat Completions API, not the Responses API
// The embeddings API, at most EMBED_CHUNK values a request (OpenAI's own limit is 2048): embedMany splits
// its values into chunks, one doEmbed (one HTTP request) each, sent in parallel (supportsParallelCalls).
const EMBED_MODEL = 'text-embedding-3-small';
const EMBED_CHUNK = 2;
const embedder = wrapEmbeddingModel({
  model: openai.embedding(EMBED_MODEL),
  middleware: { overrideMaxEmbeddingsPerCall: () => EMBED_CHUNK },
});

// Long enough to pass the stand-in's minimum cacheable prefix: the first call writes it, later ones read.
const SYSTEM = 'You answer questions about our refund policy. '.repeat(60);
const cachedInstructions = {
  role: 'system',
  content: SYSTEM,
  providerOptions: { anthropic: { cacheControl: { type: 'ephemeral' } } },
};
const telemetry = { isEnabled: true, functionId: 'faq-bot' };
const common = { maxRetries: 0, maxOutputTokens: 64, telemetry };

const tracer = trace.getTracer('aisdk-faq-app');
const results = [];

// Like a web framework's server span around a handler: the AI SDK's spans become its children.
function inServerSpan(name, fn) {
  return tracer.startActiveSpan(name, { kind: SpanKind.SERVER }, async (span) => {
    try {
      return await fn();
    } finally {
      span.end();
    }
  });
}

async function call(name, api, stream, parent, fn) {
  const run = async () => {
    try {
      const r = await fn();
      // chat: usage, responseId, modelId, the answer's text; embeddings: usage ({ tokens }), responses, and the vectors' count
      results.push({ name, api, stream, parent, failed: false, ...r });
    } catch (err) {
      // the handler answers 500: its server span failed too
      if (parent) trace.getActiveSpan()?.setStatus({ code: SpanStatusCode.ERROR, message: String(err?.message) });
      results.push({ name, api, stream, parent, failed: true, error: err?.name ?? String(err),
                     statusCode: err?.statusCode ?? null, message: String(err?.message ?? err) });
    }
  };
  return parent ? inServerSpan(parent, run) : run();
}

async function generate(opts) {
  const r = await generateText(opts);
  return { usage: r.usage, responseId: r.response?.id, modelId: r.response?.modelId, text: r.text,
           providerMetadata: r.providerMetadata ?? null };
}

async function embedOne(opts) {
  const r = await embed(opts);
  return { usage: r.usage, responses: 1, dimensions: r.embedding.length };
}

async function embedAll(opts) {
  const r = await embedMany(opts);
  return { usage: r.usage, responses: r.responses?.length ?? null, embeddings: r.embeddings.length };
}

async function stream(opts) {
  const r = streamText(opts);
  let text = '';
  for await (const delta of r.textStream) text += delta; // consumed to the end
  const response = await r.response;
  if (!text) throw new Error('empty stream');
  return { usage: await r.usage, responseId: response?.id, modelId: response?.modelId, text,
           providerMetadata: (await r.providerMetadata) ?? null };
}

async function chatScenario() {
  // 0: the stand-in answers this one 400 (armed by the test): an APICallError, not retried.
  await call('fails', 'anthropic', false, 'POST /ask', () =>
    generate({ ...common, model: claude, prompt: 'Can I return a damaged item?' }));
  // 1-3: a long cached system prompt: a cache write, then reads (two in a server span, one without).
  for (let i = 0; i < 3; i++) {
    await call(`cached-${i}`, 'anthropic', false, i < 2 ? 'POST /ask' : null, () =>
      generate({ ...common, model: claude, instructions: cachedInstructions,
                 prompt: `Question ${i}: can I return a damaged item?` }));
  }
  // 4: a plain call without a parent span.
  await call('plain', 'anthropic', false, null, () =>
    generate({ ...common, model: claude, prompt: 'Where is order 42?' }));
  // 5: streamed, with the cached system prompt, consumed to the end.
  await call('streamed', 'anthropic', true, 'POST /chat', () =>
    stream({ ...common, model: claude, instructions: cachedInstructions,
             prompt: 'Question 3: how long do refunds take?' }));
  // 6: the OpenAI-compatible student (Chat Completions), in a server span.
  await call('student', 'openai', false, 'POST /summarise', () =>
    generate({ ...common, model: student, maxOutputTokens: 32, prompt: 'Summarise ticket 7' }));
  // 7: the student streamed, without a parent span.
  await call('student-streamed', 'openai', true, null, () =>
    stream({ ...common, model: student, maxOutputTokens: 32, prompt: 'Summarise ticket 8' }));
}

// The cached system prompt, kept an hour (Anthropic bills the write at 2x the input price, not 1.25x).
const oneHourInstructions = { ...cachedInstructions,
                              providerOptions: { anthropic: { cacheControl: { type: 'ephemeral', ttl: '1h' } } } };

async function modifiersScenario() {
  // 0-1: a one-hour cache write, then a read of it (in a server span).
  for (let i = 0; i < 2; i++) {
    await call(`one-hour-${i}`, 'anthropic', false, 'POST /ask', () =>
      generate({ ...common, model: claude, instructions: oneHourInstructions,
                 prompt: `Question ${i}: can I return a damaged item?` }));
  }
  // 2: the web search server tool (the stand-in searches once, and once more per " and "), no parent span.
  await call('web-search', 'anthropic', false, null, () =>
    generate({ ...common, model: claude, tools: { web_search: anthropic.tools.webSearch_20250305({ maxUses: 3 }) },
               prompt: 'What changed in the refund policy and when?' }));
  // 3: US-only inference (1.1x every token), streamed, reading the one-hour prompt.
  await call('us-only', 'anthropic', true, 'POST /chat', () =>
    stream({ ...common, model: claude, instructions: oneHourInstructions,
             providerOptions: { anthropic: { inferenceGeo: 'us' } }, prompt: 'Question 2: how long do refunds take?' }));
}

// 5 values, at most EMBED_CHUNK a request: 3 requests.
const DOCS = ['Refunds take five working days.', 'Damaged items can be returned within 30 days.',
              'Order 42 shipped on Monday.', 'Gift cards cannot be refunded.', 'Returns are free in the EU.'];

async function embeddingsScenario() {
  const opts = { model: embedder, maxRetries: 0, telemetry };
  // 0: the stand-in answers this one 400 (armed by the test): an APICallError, not retried.
  await call('embed-fails', 'openai', false, 'POST /search', () =>
    embedOne({ ...opts, value: 'Can I return a damaged item?' }));
  // 1: embed of one value (one request), without a parent span.
  await call('embed', 'openai', false, null, () => embedOne({ ...opts, value: 'Where is order 42?' }));
  // 2: embedMany of 5 values in a server span: 3 requests (2 + 2 + 1 values), in parallel.
  await call('embed-many', 'openai', false, 'POST /index', () => embedAll({ ...opts, values: DOCS }));
}

try {
  await ({ chat: chatScenario, embeddings: embeddingsScenario, modifiers: modifiersScenario })[scenario]();
} finally {
  // an export the endpoint refused rejects the flush: it is in exported.failures, reported below
  await provider.forceFlush().catch((err) => exported.flushError = String(err?.message ?? err));
  await provider.shutdown().catch((err) => exported.shutdownError = String(err?.message ?? err));
}
process.stdout.write(JSON.stringify({ telemetry: telemetryKind, protocol, scenario, providerMetadata, calls: results,
                                     export: exported, spans }) + '\n');
