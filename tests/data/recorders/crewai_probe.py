"""Run in $CREWAI_VENV: CrewAI against costline's stand-in, with its instrumentors.

argv: stand-in URL, mode, output JSON path. The driver queues one 400 first: the first kickoff fails.
"""
import base64
import gzip
import json
import os
import sys
from collections import defaultdict

os.environ["CREWAI_DISABLE_TELEMETRY"] = "true"
os.environ["CREWAI_DISABLE_TRACKING"] = "true"
os.environ["OTEL_SDK_DISABLED"] = "false"
os.environ["TRACELOOP_TRACE_CONTENT"] = "false"

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

url, mode, out = sys.argv[1], sys.argv[2], sys.argv[3]
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
if mode in ("openllmetry", "openllmetry_both", "openllmetry_litellm"):
    from opentelemetry.instrumentation.crewai import CrewAIInstrumentor
    CrewAIInstrumentor().instrument(tracer_provider=provider)
if mode == "openllmetry_both":
    from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor
    AnthropicInstrumentor().instrument(tracer_provider=provider)
if mode == "openinference":
    from openinference.instrumentation.crewai import CrewAIInstrumentor
    CrewAIInstrumentor().instrument(tracer_provider=provider)

from crewai import LLM, Agent, Crew, Task

if mode == "openllmetry_litellm":  # CrewAI's LiteLLM route (crewai.llm.LLM): OpenLLMetry wraps LLM.call
    llm = LLM(model="anthropic/claude-haiku-4-5", is_litellm=True, base_url=url, api_key="x", max_tokens=64,
              num_retries=0)
else:  # CrewAI's native Anthropic provider (the anthropic SDK)
    llm = LLM(model="anthropic/claude-haiku-4-5", base_url=url, api_key="x", max_tokens=64, max_retries=0)
print("llm class", type(llm), getattr(llm, "model", None))


def crew(question: str) -> Crew:
    agent = Agent(role="Support agent", goal="Answer customers", backstory="You work for a shop.", llm=llm,
                  max_iter=1, max_retry_limit=0, verbose=False)
    task = Task(description=question, expected_output="A short answer", agent=agent)
    return Crew(agents=[agent], tasks=[task], verbose=False)


runs = []
try:
    crew("bad").kickoff()
    runs.append("failed: no exception")
except Exception as exc:
    runs.append(f"failed: {type(exc).__module__}.{type(exc).__name__}")
for q in ("Where is my parcel?", "Where is my parcel now?"):
    r = crew(q).kickoff()
    runs.append(f"ok: {r.token_usage}")
spans = exporter.get_finished_spans()
by_trace = defaultdict(list)
for s in spans:
    by_trace[s.context.trace_id].append(s)
messages = [base64.b64encode(gzip.compress(encode_spans(ss).SerializeToString(), mtime=0)).decode()
            for ss in by_trace.values()]
summary = [(s.instrumentation_scope.name, s.name, s.parent.span_id if s.parent else None, s.context.span_id,
            hex(s.context.trace_id)[-6:], dict(s.attributes), s.status.status_code.name, [e.name for e in s.events])
           for s in spans]
json.dump({"otlp_gzip": messages, "runs": runs}, open(out, "w"))
json.dump(summary, open(out + ".summary.json", "w"), indent=1, default=str)
print("\n".join(runs))
