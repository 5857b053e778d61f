// A Vercel AI SDK app asking for structured output through costline's gateway, changed only by its base URL:
// generateText / streamText with `output: Output.object({ schema })`, and the older generateObject, on
// @ai-sdk/anthropic (the Messages API), @ai-sdk/openai's default model (the Responses API) and its .chat model (Chat
// Completions). Driven by tests/test_gateway_structured.py, which starts the gateway in front of costline's
// stand-in; prints ONE JSON line: per case, the object the SDK parsed (or the error).
//
//   node gateway_structured.mjs --gateway http://127.0.0.1:8787 [--task-type support|classify]

import { generateObject, generateText, jsonSchema, Output, streamText } from 'ai';
import { gatewayModels } from './gateway_models.mjs';

const models = gatewayModels();
const schema = jsonSchema({
  type: 'object',
  properties: {
    title: { type: 'string' },
    priority: { type: 'string', enum: ['low', 'high'] },
    tags: { type: 'array', items: { type: 'string' } },
  },
  required: ['title', 'priority', 'tags'],
  additionalProperties: false,
});

const report = {};
for (const [name, model] of Object.entries(models)) {
  for (const mode of ['output', 'stream', 'generateObject']) {
    const prompt = `File a ticket: the export button does nothing (${name}, ${mode})`;
    try {
      let object;
      if (mode === 'output') {
        object = (await generateText({ model, prompt, output: Output.object({ schema }), maxRetries: 0 })).output;
      } else if (mode === 'stream') {
        const r = streamText({ model, prompt, output: Output.object({ schema }), maxRetries: 0 });
        for await (const _ of r.textStream) { /* drain */ }
        object = await r.output;
      } else {
        object = (await generateObject({ model, prompt, schema, maxRetries: 0 })).object;
      }
      report[`${name}/${mode}`] = { object };
    } catch (e) {
      report[`${name}/${mode}`] = { error: String(e?.message ?? e).slice(0, 400) };
    }
  }
}
console.log(JSON.stringify(report));
