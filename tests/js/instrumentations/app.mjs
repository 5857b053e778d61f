// A small Node app using the official Anthropic and OpenAI TypeScript SDKs, instrumented by OpenLLMetry JS
// (@traceloop/instrumentation-anthropic, -openai) or OpenInference JS (@arizeai/openinference-instrumentation-
// anthropic, -openai), whose spans go to an OTLP/HTTP (JSON) endpoint: costline's OtlpReceiver in
// tests/test_ingest_js_instrumentations.py. It calls costline's stand-in APIs (Anthropic Messages and an
// OpenAI-compatible chat completions server), then prints ONE JSON line on stdout: what the SDKs reported
// per call (their `usage` objects, the response id, whether the call failed), what the exporter did, and
// every span it ended (name, scope, kind, status, attributes with long strings cut, events), and
// force-flushes and shuts the tracer provider down before exiting.
//
//   node app.mjs --otlp http://127.0.0.1:4318/v1/traces \
//                --anthropic http://127.0.0.1:8080 --openai http://127.0.0.1:8080/v1 \
//                [--family openllmetry|openinference]
//
// Each flag may come from the environment instead: OTLP_ENDPOINT, ANTHROPIC_BASE_URL, OPENAI_BASE_URL,
// INSTRUMENTATION_FAMILY.
//
// This is an ES module: the SDKs are imported before any require-hook could patch them, so each
// instrumentation is applied with its `manuallyInstrument(module)` API, as their READMEs say for ESM.
// What each expects differs: OpenLLMetry's Anthropic one the module namespace (it wraps
// `module.Anthropic.{Completions,Messages,Beta.Messages}.prototype.create`), its OpenAI one the OpenAI
// class (`module.Chat.Completions.prototype`); OpenInference's take the namespace (`module.default ||
// module`, `module.OpenAI.Chat.Completions`).
//
// Versions (package-lock.json): @anthropic-ai/sdk is the last 0.x (0.99.0), because OpenLLMetry's
// instrumentation-anthropic 0.27.0 wraps `Anthropic.Completions.prototype` unconditionally and SDK 1.x
// has no Completions (a TypeError on patching); openai is 6.x (6.49.0): OpenLLMetry's instrumentation-
// openai 0.27.0 patches only `openai >=4 <7`, and openai 7 declares `engines: node >= 22`. The
// OpenTelemetry JS SDK is its 2.x line (sdk-trace-* 2.12.1, exporter 0.223.1, api 1.9.1), because OTel
// JS 3.x requires Node >= 22.15.
//
// The FIRST model request is expected to fail: the driving test makes the stand-in answer 400 to the
// next Anthropic request before it starts this program.

import { diag, DiagConsoleLogger, DiagLogLevel } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import * as anthropicModule from '@anthropic-ai/sdk';
import * as openaiModule from 'openai';

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
const family = option('--family', 'INSTRUMENTATION_FAMILY', 'openllmetry');
if (!['openllmetry', 'openinference'].includes(family)) {
  throw new Error(`--family: openllmetry or openinference, not ${family}`);
}

diag.setLogger(new DiagConsoleLogger(), DiagLogLevel.WARN); // export failures on stderr

// The exporter, wrapped to account for what the endpoint accepted (printed with the results).
const otlp = new OTLPTraceExporter({ url: otlpEndpoint, timeoutMillis: 10000 });
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

// Every ended span, for the report (the test prints it on failure; it documents what each family emits).
const cut = (v) => (typeof v === 'string' && v.length > 160 ? `${v.slice(0, 160)}...(${v.length} chars)` : v);
const cutAll = (attrs) => Object.fromEntries(Object.entries(attrs ?? {}).map(([k, v]) => [k, cut(v)]));
const spans = [];
const recordEnded = {
  onStart() {},
  onEnd(span) {
    exported.ended += 1;
    spans.push({
      name: span.name,
      scope: span.instrumentationScope?.name ?? span.instrumentationLibrary?.name,
      kind: span.kind,
      traceId: span.spanContext().traceId,
      parent: span.parentSpanContext?.spanId ?? span.parentSpanId ?? null,
      status: span.status,
      attributes: cutAll(span.attributes),
      events: span.events.map((e) => ({ name: e.name, attributes: cutAll(e.attributes) })),
    });
  },
  forceFlush: () => Promise.resolve(),
  shutdown: () => Promise.resolve(),
};
const provider = new NodeTracerProvider({
  resource: resourceFromAttributes({ 'service.name': `${family}-js-app` }),
  spanProcessors: [recordEnded, new BatchSpanProcessor(exporter, { scheduledDelayMillis: 200 })],
});
provider.register(); // global tracer provider + AsyncLocalStorage context manager

if (family === 'openllmetry') {
  const { AnthropicInstrumentation } = await import('@traceloop/instrumentation-anthropic');
  const { OpenAIInstrumentation } = await import('@traceloop/instrumentation-openai');
  const a = new AnthropicInstrumentation();
  a.setTracerProvider(provider);
  a.manuallyInstrument(anthropicModule); // wraps module.Anthropic.*.prototype.create
  const o = new OpenAIInstrumentation();
  o.setTracerProvider(provider);
  o.manuallyInstrument(openaiModule.OpenAI); // wraps module.Chat.Completions.prototype.create
} else {
  const { AnthropicInstrumentation } = await import('@arizeai/openinference-instrumentation-anthropic');
  const { OpenAIInstrumentation } = await import('@arizeai/openinference-instrumentation-openai');
  const a = new AnthropicInstrumentation({ tracerProvider: provider });
  a.manuallyInstrument(anthropicModule); // module.default || module: the Anthropic class
  const o = new OpenAIInstrumentation({ tracerProvider: provider });
  o.manuallyInstrument(openaiModule); // module.OpenAI.Chat.Completions.prototype.create
}

const anthropic = new anthropicModule.Anthropic({ baseURL: anthropicBaseURL, apiKey: 'test', maxRetries: 0 });
const openai = new openaiModule.OpenAI({ baseURL: openaiBaseURL, apiKey: 'test', maxRetries: 0 });

// Long enough to pass the stand-in's minimum cacheable prefix: the first call writes it, later ones read.
const SYSTEM = 'You answer questions about our refund policy. '.repeat(60);
const cachedSystem = [{ type: 'text', text: SYSTEM, cache_control: { type: 'ephemeral' } }];
const CLAUDE = 'claude-haiku-4-5';
const STUDENT = 'costline-student';

const results = [];

async function call(name, api, stream, fn) {
  try {
    const r = await fn();
    results.push({ name, api, stream, failed: false, ...r });
  } catch (err) {
    results.push({ name, api, stream, failed: true, error: err?.constructor?.name ?? String(err),
                   statusCode: err?.status ?? null, message: String(err?.message ?? err) });
  }
}

async function claudeStream(params) {
  const s = await anthropic.messages.create({ ...params, stream: true });
  let id = null, model = null, text = '';
  const usage = {};
  for await (const ev of s) { // consumed to the end
    if (ev.type === 'message_start') {
      ({ id, model } = ev.message);
      Object.assign(usage, ev.message.usage);
    } else if (ev.type === 'message_delta') {
      for (const [k, v] of Object.entries(ev.usage ?? {})) if (v !== null && v !== undefined) usage[k] = v;
    } else if (ev.type === 'content_block_delta' && ev.delta?.type === 'text_delta') text += ev.delta.text;
  }
  if (!text) throw new Error('empty stream');
  return { usage, responseId: id, model };
}

async function studentStream(params) {
  const s = await openai.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
  let id = null, model = null, usage = null, text = '';
  for await (const chunk of s) { // consumed to the end
    id ??= chunk.id;
    model ??= chunk.model;
    if (chunk.usage) usage = chunk.usage;
    text += chunk.choices?.[0]?.delta?.content ?? '';
  }
  if (!text) throw new Error('empty stream');
  return { usage, responseId: id, model };
}

try {
  // 0: the stand-in answers this one 400 (armed by the test): a BadRequestError, not retried.
  await call('fails', 'anthropic', false, async () => {
    const r = await anthropic.messages.create({ model: CLAUDE, max_tokens: 64,
      messages: [{ role: 'user', content: 'Can I return a damaged item?' }] });
    return { usage: r.usage, responseId: r.id, model: r.model };
  });
  // 1-2: a long system prompt marked for caching: a cache write, then a read.
  for (let i = 0; i < 2; i++) {
    await call(`cached-${i}`, 'anthropic', false, async () => {
      const r = await anthropic.messages.create({ model: CLAUDE, max_tokens: 64, system: cachedSystem,
        messages: [{ role: 'user', content: `Question ${i}: can I return a damaged item?` }] });
      return { usage: r.usage, responseId: r.id, model: r.model };
    });
  }
  // 3: streamed, with the cached system prompt (a cache read), consumed to the end.
  await call('streamed', 'anthropic', true, () => claudeStream({ model: CLAUDE, max_tokens: 64,
    system: cachedSystem, messages: [{ role: 'user', content: 'Question 3: how long do refunds take?' }] }));
  // 4: the OpenAI-compatible student (Chat Completions).
  await call('student', 'openai', false, async () => {
    const r = await openai.chat.completions.create({ model: STUDENT, max_tokens: 32,
      messages: [{ role: 'user', content: 'Summarise ticket 7' }] });
    return { usage: r.usage, responseId: r.id, model: r.model };
  });
  // 5: the student streamed, usage in the last chunk.
  await call('student-streamed', 'openai', true, () => studentStream({ model: STUDENT, max_tokens: 32,
    messages: [{ role: 'user', content: 'Summarise ticket 8' }] }));
} finally {
  // an export the endpoint refused rejects the flush: it is in exported.failures, reported below
  await provider.forceFlush().catch((err) => exported.flushError = String(err?.message ?? err));
  await provider.shutdown().catch((err) => exported.shutdownError = String(err?.message ?? err));
}
process.stdout.write(JSON.stringify({ family, calls: results, export: exported, spans }) + '\n');
