// A Vercel AI SDK app that searches the web through costline's gateway, the app changed only by its base URL:
// generateText and streamText with @ai-sdk/anthropic's web search tool (webSearch_20250305: the Messages API's
// server tool) and with @ai-sdk/openai's (webSearch: the Responses API's hosted tool, which the gateway turns into
// Anthropic's). Driven by tests/test_gateway_tool_frameworks.py, which starts the gateway in front of costline's
// stand-in; prints ONE JSON line: per case, the final text, the sources the SDK read (their URLs) and the web
// search calls it saw (tool calls the provider executed).
//
//   node gateway_search.mjs --gateway http://127.0.0.1:8787 [--task-type support|classify]

import { generateText, streamText } from 'ai';
import { createAnthropic } from '@ai-sdk/anthropic';
import { createOpenAI } from '@ai-sdk/openai';
import { option } from './gateway_models.mjs';

const gateway = option('--gateway');
const headers = { 'x-costline-task-type': option('--task-type', 'support') };
const anthropic = createAnthropic({ baseURL: `${gateway}/v1`, apiKey: 'unused', headers });
const openai = createOpenAI({ baseURL: `${gateway}/v1`, apiKey: 'unused', headers });
const cases = {
  messages: { model: anthropic('claude-haiku-4-5'), tools: { web_search: anthropic.tools.webSearch_20250305({ maxUses: 5 }) } },
  responses: { model: openai('gpt-5-mini'), tools: { web_search: openai.tools.webSearch({ searchContextSize: 'low' }) } },
};
const prompt = 'What changed in the refund policy and in the shipping rules?';

const report = {};
for (const [name, { model, tools }] of Object.entries(cases)) {
  for (const mode of ['generate', 'stream']) {
    const opts = { model, tools, prompt, maxRetries: 0 };
    try {
      let r;
      if (mode === 'generate') {
        r = await generateText(opts);
      } else {
        r = streamText(opts);
        for await (const _ of r.textStream);  // read it all, as an app would
      }
      const text = await r.text;
      const sources = (await r.sources).map((s) => s.url);
      const searches = (await r.toolCalls).filter((c) => c.providerExecuted).map((c) => c.toolName);
      report[`${name}/${mode}`] = { text, sources, searches };
    } catch (e) {
      report[`${name}/${mode}`] = { error: String(e?.message ?? e).slice(0, 400) };
    }
  }
}
console.log(JSON.stringify(report));
