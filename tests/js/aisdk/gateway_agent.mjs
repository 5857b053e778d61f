// A Vercel AI SDK agent whose tool loop runs through costline's gateway, the app changed only by its base URL:
// generateText and streamText with a `get_weather` tool and up to three steps, on @ai-sdk/anthropic (the Messages
// API), @ai-sdk/openai's default model (the Responses API) and its .chat model (Chat Completions). Driven by
// tests/test_gateway_tool_frameworks.py, which starts the gateway in front of costline's stand-in; prints ONE JSON
// line: per case, the final text, the tool calls the SDK ran (name and input) and the number of steps.
//
//   node gateway_agent.mjs --gateway http://127.0.0.1:8787 [--task-type support|classify]

import { generateText, isStepCount, jsonSchema, streamText, tool } from 'ai';
import { gatewayModels } from './gateway_models.mjs';

const models = gatewayModels();

const ran = [];
const tools = {
  get_weather: tool({
    description: 'The current weather of a city.',
    inputSchema: jsonSchema({
      type: 'object', properties: { city: { type: 'string' } }, required: ['city'], additionalProperties: false,
    }),
    execute: async ({ city }) => {
      ran.push(city);
      return `-3 C in ${city}`;
    },
  }),
};
const prompt = 'Please use get_weather: is it cold in Oslo?';

const report = {};
for (const [name, model] of Object.entries(models)) {
  for (const mode of ['generate', 'stream']) {
    ran.length = 0;
    const opts = { model, tools, prompt, stopWhen: isStepCount(3), maxRetries: 0 };
    try {
      let text, steps;
      if (mode === 'generate') {
        const r = await generateText(opts);
        text = r.text;
        steps = r.steps.length;
      } else {
        const r = streamText(opts);
        text = '';
        for await (const piece of r.textStream) text += piece;
        steps = (await r.steps).length;
      }
      report[`${name}/${mode}`] = { text, ran: [...ran], steps };
    } catch (e) {
      report[`${name}/${mode}`] = { error: String(e?.message ?? e).slice(0, 400) };
    }
  }
}
console.log(JSON.stringify(report));
