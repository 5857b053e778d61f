// Shared by the gateway apps (gateway_agent.mjs, gateway_structured.mjs): the command line and the three models,
// each pointed at costline's gateway by its base URL only — @ai-sdk/anthropic (the Messages API), @ai-sdk/openai's
// default model (the Responses API) and its .chat model (Chat Completions).

import { createAnthropic } from '@ai-sdk/anthropic';
import { createOpenAI } from '@ai-sdk/openai';

export function option(flag, fallback) {
  const i = process.argv.indexOf(flag);
  if (i >= 0 && i + 1 < process.argv.length) return process.argv[i + 1];
  if (fallback !== undefined) return fallback;
  throw new Error(`missing ${flag}`);
}

export function gatewayModels() {
  const gateway = option('--gateway');
  const headers = { 'x-costline-task-type': option('--task-type', 'support') };
  const anthropic = createAnthropic({ baseURL: `${gateway}/v1`, apiKey: 'unused', headers });
  const openai = createOpenAI({ baseURL: `${gateway}/v1`, apiKey: 'unused', headers });
  return {
    messages: anthropic('claude-haiku-4-5'),
    responses: openai('gpt-5-mini'), // the provider's default: the Responses API
    chat: openai.chat('gpt-5-mini'), // Chat Completions
  };
}
