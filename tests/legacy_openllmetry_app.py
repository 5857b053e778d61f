"""An app traced by OpenLLMetry as it was before 0.57 (content as ``gen_ai.prompt.N`` / ``gen_ai.completion.N``).

Run by tests/test_ingest_content.py in a process of its own, with OpenLLMetry 0.52.6 first on its PYTHONPATH
(scripts/test installs it apart: the compat extra has the newest). It makes the calls below against the stand-in,
writes each trace's spans as an OTLP ``ExportTraceServiceRequest`` to ``OUT/<n>.pb`` and prints what the SDKs
returned (texts and tool call ids) as JSON, so the test's expected values come from the responses, not from
costline.

    python tests/legacy_openllmetry_app.py ANTHROPIC_URL OPENAI_URL OUT
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import version
from pathlib import Path

import anthropic
import openai
from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor
from opentelemetry.instrumentation.openai import OpenAIInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costline.otlp import encode_sdk_spans_by_trace

TIME_SCHEMA = {"type": "object", "properties": {"zone": {"type": "string"}}}


def main(anthropic_url: str, openai_url: str, out: Path) -> None:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    AnthropicInstrumentor().instrument(tracer_provider=provider)
    OpenAIInstrumentor().instrument(tracer_provider=provider)
    seen: dict[str, object] = {"versions": [version("opentelemetry-instrumentation-anthropic"),
                                            version("opentelemetry-instrumentation-openai")]}

    claude = anthropic.Anthropic(base_url=anthropic_url, api_key="test", max_retries=0)
    r = claude.messages.create(model="claude-haiku-4-5", max_tokens=64, system="Answer in one line.", messages=[
        {"role": "user", "content": "Where is my invoice?"},
        {"role": "assistant", "content": "Which month?"},
        {"role": "user", "content": [{"type": "text", "text": "The May one, please."}]}])
    seen["claude_text"] = r.content[0].text
    tools = [{"name": "get_time", "input_schema": TIME_SCHEMA}]
    asked = [{"role": "user", "content": "What does get_time say for Paris?"}]
    r = claude.messages.create(model="claude-haiku-4-5", max_tokens=64, tools=tools, messages=asked)
    use = next(b for b in r.content if b.type == "tool_use")
    seen["claude_tool"] = {"text": r.content[0].text, "id": use.id, "input": use.input}
    r = claude.messages.create(model="claude-haiku-4-5", max_tokens=64, tools=tools, messages=[
        *asked, {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in r.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "12:00"}]}])
    seen["claude_after_tool"] = r.content[0].text
    with claude.messages.stream(model="claude-haiku-4-5", max_tokens=64,
                                messages=[{"role": "user", "content": "Stream the refund steps"}]) as stream:
        seen["claude_stream"] = stream.get_final_message().content[0].text

    gpt = openai.OpenAI(base_url=openai_url, api_key="test", max_retries=0)
    a = gpt.chat.completions.create(model="costline-student", max_tokens=32, messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Summarise ticket 4"}])
    seen["gpt_text"] = a.choices[0].message.content
    openai_tools = [{"type": "function", "function": {"name": "get_time", "parameters": TIME_SCHEMA}}]
    a = gpt.chat.completions.create(model="costline-student", max_tokens=32, tools=openai_tools, messages=asked)
    call = a.choices[0].message.tool_calls[0]
    seen["gpt_tool"] = {"id": call.id, "arguments": call.function.arguments}

    out.mkdir(parents=True, exist_ok=True)
    for n, (_trace, body) in enumerate(encode_sdk_spans_by_trace(exporter.get_finished_spans())):
        (out / f"{n:03d}.pb").write_bytes(body)
    print(json.dumps(seen))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
