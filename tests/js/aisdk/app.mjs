// A small Vercel AI SDK app whose OpenTelemetry spans go to an OTLP/HTTP endpoint (costline's
// OtlpReceiver in tests/test_ingest_aisdk.py). It makes real AI SDK calls against costline's stand-in
// APIs (Anthropic Messages + an OpenAI-compatible chat completions server), then prints ONE JSON line
// on stdout: what the SDK itself reported per call (its `usage` objects, the response id, whether the
// call failed), and force-flushes and shuts the tracer provider down before exiting.
//
//   node app.mjs --otlp http://127.0.0.1:4318/v1/traces \
//                --anthropic http://127.0.0.1:8080/v1 --openai http://127.0.0.1:8080/v1 \
//                [--telemetry genai|legacy] [--protocol json|proto]
//
// Each flag may come from the environment instead: OTLP_ENDPOINT, ANTHROPIC_BASE_URL, OPENAI_BASE_URL,
// AISDK_TELEMETRY, OTLP_PROTOCOL.
//
// --telemetry picks the AI SDK 7 integration from @ai-sdk/otel: `genai` is `OpenTelemetry` (GenAI
// semantic conventions: `invoke_agent {model}` > `step {n}` > `chat {model}`), `legacy` is
// `LegacyOpenTelemetry` (`ai.generateText` > `ai.generateText.doGenerate`, `ai.streamText` >
// `ai.streamText.doStream`, the spans AI SDK <= 6 made with experimental_telemetry).
// --protocol picks @opentelemetry/exporter-trace-otlp-http (OTLP JSON) or -otlp-proto (protobuf).
// In AI SDK 7 the per-call `telemetry` option (formerly `experimental_telemetry`, still accepted) emits
// no span unless an integration is registered with registerTelemetry, as below.
//
// Versions (package-lock.json): ai 7 and @ai-sdk/* declare `engines: node >= 22` yet run on the
// machines' Node 20; the OpenTelemetry JS SDK is its 2.x line (sdk-trace-* 2.12.1, exporters 0.223.1,
// api 1.9.1: the api @ai-sdk/otel pins, so one copy), because OTel JS 3.x requires Node >= 22.15.
//
// The FIRST model request is expected to fail: the driving test makes the stand-in answer 400 to the
// next Anthropic request before it starts this program.

import { diag, DiagConsoleLogger, DiagLogLevel, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { OTLPTraceExporter as OTLPJsonTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { OTLPTraceExporter as OTLPProtoTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { createAnthropic } from '@ai-sdk/anthropic';
import { createOpenAI } from '@ai-sdk/openai';
import { LegacyOpenTelemetry, OpenTelemetry } from '@ai-sdk/otel';
import { generateText, registerTelemetry, streamText } from 'ai';

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
if (!['genai', 'legacy'].includes(telemetryKind)) throw new Error(`--telemetry: genai or legacy, not ${telemetryKind}`);
if (!['json', 'proto'].includes(protocol)) throw new Error(`--protocol: json or proto, not ${protocol}`);

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
const countEnded = {
  onStart() {},
  onEnd() { exported.ended += 1; },
  forceFlush: () => Promise.resolve(),
  shutdown: () => Promise.resolve(),
};
const provider = new NodeTracerProvider({
  resource: resourceFromAttributes({ 'service.name': 'aisdk-faq-app' }),
  spanProcessors: [countEnded, new BatchSpanProcessor(exporter, { scheduledDelayMillis: 200 })],
});
provider.register(); // global tracer provider + AsyncLocalStorage context manager (parent spans)
registerTelemetry(telemetryKind === 'legacy' ? new LegacyOpenTelemetry() : new OpenTelemetry());

const anthropic = createAnthropic({ baseURL: anthropicBaseURL, apiKey: 'test' });
const openai = createOpenAI({ baseURL: openaiBaseURL, apiKey: 'test' });
const claude = anthropic('claude-haiku-4-5');
const student = openai.chat('costline-student'); // Chat Completions API, not the Responses API

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
      results.push({ name, api, stream, parent, failed: false, usage: r.usage, responseId: r.responseId,
                     modelId: r.modelId });
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
  return { usage: r.usage, responseId: r.response?.id, modelId: r.response?.modelId };
}

async function stream(opts) {
  const r = streamText(opts);
  let text = '';
  for await (const delta of r.textStream) text += delta; // consumed to the end
  const response = await r.response;
  if (!text) throw new Error('empty stream');
  return { usage: await r.usage, responseId: response?.id, modelId: response?.modelId };
}

try {
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
} finally {
  // an export the endpoint refused rejects the flush: it is in exported.failures, reported below
  await provider.forceFlush().catch((err) => exported.flushError = String(err?.message ?? err));
  await provider.shutdown().catch((err) => exported.shutdownError = String(err?.message ?? err));
}
process.stdout.write(JSON.stringify({ telemetry: telemetryKind, protocol, calls: results, export: exported }) + '\n');
