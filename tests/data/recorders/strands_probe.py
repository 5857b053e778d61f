"""Run in $STRANDS_VENV: Strands Agents (AnthropicModel) against costline's stand-in.

argv: stand-in URL, mode ("alone" | "openllmetry"), output JSON path.
The stand-in has one 400 queued (the driver injects it): the first agent run fails.
Writes {"messages": [base64 OTLP ExportTraceServiceRequest, one per trace], "runs": [...]}.
"""
import asyncio
import base64
import json
import sys
from collections import defaultdict

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from strands import Agent
from strands.models.anthropic import AnthropicModel
from strands.models.model import CacheConfig
from strands.telemetry import StrandsTelemetry

url, mode, out = sys.argv[1], sys.argv[2], sys.argv[3]
telemetry = StrandsTelemetry()  # what Strands' docs do: a provider of its own, made the global one
exporter = InMemorySpanExporter()
telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
if mode == "openllmetry":
    import os
    os.environ["TRACELOOP_TRACE_CONTENT"] = "false"  # keeps the recording small
    from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor

    AnthropicInstrumentor().instrument(tracer_provider=telemetry.tracer_provider)

SYSTEM = f"Strands {mode}. " + "You answer questions about our refund policy. " * 14


def agent() -> Agent:
    client_args = {"base_url": url, "api_key": "x", "max_retries": 0}
    if mode == "sdk":  # anthropic >= 2: the SDK's own spans, on when the client has a tracer provider
        client_args["open_telemetry"] = {"tracer_provider": telemetry.tracer_provider}
    model = AnthropicModel(client_args=client_args,
                           model_id="claude-haiku-4-5", max_tokens=64)
    # the system prompt with a cache point of its own (a cache_config would add one to the last user
    # message too, a prefix that differs every run)
    return Agent(model=model, system_prompt=[{"text": SYSTEM}, {"cachePoint": {"type": "default"}}],
                 callback_handler=None)


async def main() -> list:
    runs = []
    try:
        await agent().invoke_async("bad")
        runs.append("failed: no exception")
    except Exception as exc:  # the injected 400
        runs.append(f"failed: {type(exc).__module__}.{type(exc).__name__}")
    r = await agent().invoke_async("Where is my parcel?")
    runs.append(f"plain: {r.metrics.accumulated_usage}")
    r = await agent().invoke_async("Where is my parcel now?")
    runs.append(f"plain cached: {r.metrics.accumulated_usage}")
    last = None
    async for event in agent().stream_async("Stream the refund steps"):
        if "result" in event:
            last = event["result"]
    runs.append(f"streamed: {last.metrics.accumulated_usage}")
    # a tool: the Anthropic stand-in never answers tool_use; its Responses API calls a function tool
    # whose name the user message mentions, so this run goes through Strands' OpenAI Responses provider
    from strands import tool
    from strands.models.openai_responses import OpenAIResponsesModel

    @tool
    def get_order_status(order_id: str) -> str:
        """Look an order up."""
        return f"order {order_id} shipped"

    model = OpenAIResponsesModel(client_args={"base_url": url + "/v1", "api_key": "x", "max_retries": 0},
                                 model_id="costline-student", params={"max_output_tokens": 64})
    r = await Agent(model=model, tools=[get_order_status], callback_handler=None).invoke_async(
        "Call get_order_status for order 42")
    runs.append(f"tool: {r.metrics.accumulated_usage} {r.metrics.tool_metrics.keys()}")
    return runs


runs = asyncio.run(main())
spans = exporter.get_finished_spans()
by_trace = defaultdict(list)
for s in spans:
    by_trace[s.context.trace_id].append(s)
messages = [base64.b64encode(encode_spans(ss).SerializeToString()).decode() for ss in by_trace.values()]
summary = [(s.instrumentation_scope.name, s.name, s.parent.span_id if s.parent else None, s.context.span_id,
            dict(s.attributes), s.status.status_code.name, [e.name for e in s.events]) for s in spans]
json.dump({"messages": messages, "runs": runs}, open(out, "w"))
json.dump(summary, open(out + ".summary.json", "w"), indent=1, default=str)
print("\n".join(runs))
