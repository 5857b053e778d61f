"""Run in $AF_ANTHROPIC_VENV: Agent Framework's Anthropic client against the stand-in.
argv: URL, mode ("alone" | "sdk"), out. The driver queues one 400 first."""
import asyncio, base64, gzip, json, sys
from collections import defaultdict
import anthropic
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
import agent_framework
from agent_framework import Agent, observability
from agent_framework.anthropic import AnthropicClient

url, mode, out = sys.argv[1], sys.argv[2], sys.argv[3]
exporter = InMemorySpanExporter(); provider = TracerProvider(); provider.add_span_processor(SimpleSpanProcessor(exporter))
observability.get_tracer = lambda *a, **k: provider.get_tracer("agent_framework", agent_framework.__version__)
observability.enable_instrumentation(enable_sensitive_data=False)
SYSTEM = f"Agent Framework {mode}. " + "You answer questions about our refund policy. " * 14
kw = {"open_telemetry": {"tracer_provider": provider}} if mode == "sdk" else {}
sdk = anthropic.AsyncAnthropic(base_url=url, api_key="x", max_retries=0, **kw)
client = AnthropicClient(model="claude-haiku-4-5", anthropic_client=sdk)
opts = {"max_tokens": 64, "instructions": [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}]}

async def main():
    runs = []
    agent = Agent(client=client)
    try:
        await agent.run("bad", options=opts); runs.append("failed: none")
    except Exception as exc:
        runs.append(f"failed: {type(exc).__module__}.{type(exc).__name__}")
    r = await agent.run("Where is my parcel?", options=opts); runs.append(f"plain {r.usage_details}")
    r = await agent.run("Where is my parcel now?", options=opts); runs.append(f"cached {r.usage_details}")
    async for _ in agent.run("Stream the refund steps", options=opts, stream=True):
        pass
    runs.append("streamed")
    return runs

runs = asyncio.run(main())
spans = exporter.get_finished_spans()
by_trace = defaultdict(list)
for s in spans:
    by_trace[s.context.trace_id].append(s)
messages = [base64.b64encode(gzip.compress(encode_spans(ss).SerializeToString(), mtime=0)).decode() for ss in by_trace.values()]
summary = [(s.instrumentation_scope.name, s.name, s.parent.span_id if s.parent else None, s.context.span_id,
            hex(s.context.trace_id)[-6:], dict(s.attributes), s.status.status_code.name, [e.name for e in s.events]) for s in spans]
json.dump({"otlp_gzip": messages, "runs": runs}, open(out, "w"))
json.dump(summary, open(out + ".summary.json", "w"), indent=1, default=str)
print("\n".join(runs))
