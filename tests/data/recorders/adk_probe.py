"""Run in an ADK venv ($ADK1_VENV: google-adk 1.x; $ADK2_VENV: 2.x): Google ADK agents against the stand-in's
Gemini API with ADK's own tracing (scope ``gcp.vertex.agent``), no other instrumentation.
argv: URL, mode, out. Modes: adk1 (1.x, its only schema), adk2_legacy (2.x with
``ADK_TELEMETRY_SCHEMA_VERSION_OPT_IN=1``, which the recorder sets), adk2 (2.x, its default schema),
adk1_openinference (1.x with OpenInference's google-genai instrumentor too: its span inside ADK's two).
The driver (record_adk.py) queues one 500 first; each run is an invocation (a trace) of its own:

* ``failed``: gemini-2.0-flash answered the queued 500 (``retry_options``: one attempt);
* ``thinking``: one LlmAgent on gemini-2.5-flash (a thinking model: thoughts billed as output);
* ``two agents``: a SequentialAgent of two LlmAgents (gemini-2.0-flash, then gemini-2.5-flash): two model calls
  in one trace;
* ``streamed``: gemini-2.5-flash with ``StreamingMode.SSE``.
"""
import asyncio, base64, gzip, json, os, sys
from collections import defaultdict

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

url, mode, out = sys.argv[1], sys.argv[2], sys.argv[3]
exporter = InMemorySpanExporter()
provider = TracerProvider(resource=Resource.create({"service.name": "adk-app"}))
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)  # ADK traces to the global tracer provider
if mode.endswith("_openinference"):
    from openinference.instrumentation.google_genai import GoogleGenAIInstrumentor
    GoogleGenAIInstrumentor().instrument(tracer_provider=provider)

from google.adk.agents import LlmAgent, SequentialAgent  # noqa: E402
from google.adk.agents.run_config import RunConfig, StreamingMode  # noqa: E402
from google.adk.models.google_llm import Gemini  # noqa: E402
from google.adk.runners import InMemoryRunner  # noqa: E402
from google.genai import types  # noqa: E402

os.environ["GOOGLE_API_KEY"] = "x"
runs = []


def model(name):
    return Gemini(model=name, base_url=url, retry_options=types.HttpRetryOptions(attempts=1))


async def run(label, agent, text, **kw):
    runner = InMemoryRunner(agent=agent, app_name="app")
    s = await runner.session_service.create_session(app_name="app", user_id="u")
    usage = []
    try:
        async for ev in runner.run_async(user_id="u", session_id=s.id, **kw,
                                         new_message=types.Content(role="user", parts=[types.Part(text=text)])):
            if ev.usage_metadata is not None and not ev.partial:
                u = ev.usage_metadata
                usage.append({"prompt": u.prompt_token_count, "candidates": u.candidates_token_count,
                              "thoughts": u.thoughts_token_count})
        runs.append({"run": label, "usage": usage})
    except Exception as exc:
        runs.append({"run": label, "usage": usage, "failed": f"{type(exc).__module__}.{type(exc).__name__}"})


async def main():
    await run("failed", LlmAgent(name="failing", model=model("gemini-2.0-flash"),
                                 instruction="Answer refund questions."), "And the refund window?")
    await run("thinking", LlmAgent(name="support", model=model("gemini-2.5-flash"),
                                   instruction="Answer refund questions."), "Where is my refund for order 42?")
    await run("two agents", SequentialAgent(name="desk", sub_agents=[
        LlmAgent(name="triage", model=model("gemini-2.0-flash"), instruction="Say which team handles this."),
        LlmAgent(name="answer", model=model("gemini-2.5-flash"), instruction="Answer refund questions.")]),
        "Can I return a damaged parcel?")
    await run("streamed", LlmAgent(name="streamer", model=model("gemini-2.5-flash"),
                                   instruction="Answer refund questions."), "Stream the refund steps",
              run_config=RunConfig(streaming_mode=StreamingMode.SSE))

asyncio.run(main())
provider.force_flush()
by_trace = defaultdict(list)
for s in exporter.get_finished_spans():
    by_trace[s.context.trace_id].append(s)
messages = [base64.b64encode(gzip.compress(encode_spans(ss).SerializeToString(), mtime=0)).decode()
            for ss in by_trace.values()]
json.dump({"otlp_gzip": messages, "runs": runs}, open(out, "w"))
print(json.dumps(runs, indent=0))
