"""Run in a smolagents venv ($SMOLAGENTS_VENV): a smolagents ToolCallingAgent (OpenAIServerModel, asking for
``gpt-4o-mini``) traced by OpenInference's smolagents and OpenAI instrumentors together, against an
OpenAI-compatible endpoint (the driver's: the stand-in, or a proxy in front of it).
argv: URL, mode, out. Modes: dated (the proxy answers with the dated snapshot, as api.openai.com does),
echo (the stand-in answers with the model asked for). One agent run of at most two steps (a tool call, then the
answer after the step limit): three model calls, each an ``OpenAIModel.generate`` LLM span (smolagents', no
response id) with OpenInference's ``ChatCompletion`` span inside it."""
import base64, gzip, json, sys
from collections import defaultdict

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

url, mode, out = sys.argv[1], sys.argv[2], sys.argv[3]
exporter = InMemorySpanExporter()
provider = TracerProvider(resource=Resource.create({"service.name": "smol-app"}))
provider.add_span_processor(SimpleSpanProcessor(exporter))
from openinference.instrumentation.openai import OpenAIInstrumentor  # noqa: E402
from openinference.instrumentation.smolagents import SmolagentsInstrumentor  # noqa: E402

SmolagentsInstrumentor().instrument(tracer_provider=provider)
OpenAIInstrumentor().instrument(tracer_provider=provider)
from smolagents import OpenAIServerModel, ToolCallingAgent, tool  # noqa: E402


@tool
def lookup_refund(order: str) -> str:
    """Look up the refund status of an order.

    Args:
        order: the order id
    """
    return "refunded"


model = OpenAIServerModel(model_id="gpt-4o-mini", api_base=url + "/v1", api_key="sk-test")
agent = ToolCallingAgent(tools=[lookup_refund], model=model, max_steps=2, verbosity_level=0)
answer = agent.run("Use lookup_refund for order 42 and tell me")
provider.force_flush()
by_trace = defaultdict(list)
for s in exporter.get_finished_spans():
    by_trace[s.context.trace_id].append(s)
messages = [base64.b64encode(gzip.compress(encode_spans(ss).SerializeToString(), mtime=0)).decode()
            for ss in by_trace.values()]
llm = [(s.instrumentation_scope.name, s.name, s.attributes.get("llm.model_name"))
       for s in exporter.get_finished_spans() if s.attributes.get("openinference.span.kind") == "LLM"]
json.dump({"otlp_gzip": messages, "runs": [{"answer": str(answer)[:200], "llm_spans": llm}]}, open(out, "w"))
print(json.dumps(llm, indent=0))
