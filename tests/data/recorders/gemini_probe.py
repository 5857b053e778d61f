"""Run in $GEMINI_VENV: google-genai against the stand-in's Gemini API under each instrumentation.
argv: URL, mode, out. Modes: official (opentelemetry-instrumentation-google-genai), openinference
(openinference-instrumentation-google-genai), openllmetry (opentelemetry-instrumentation-google-generativeai),
all (the three together; all_app: each call inside an app's own span, as under a web framework's server
span), logfire (logfire.instrument_google_genai). The driver queues one 429 first."""
import asyncio, base64, contextlib, gzip, json, os, sys
from collections import defaultdict

os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "gen_ai_latest_experimental")
from google import genai
from google.genai import types
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

url, mode, out = sys.argv[1], sys.argv[2], sys.argv[3]
# a mode ending in _vertex makes the same calls to Gemini on Vertex AI (genai.Client(vertexai=True)); Vertex's
# embeddings are another API (:predict), so that mode makes no embedding call
vertex = mode.endswith("_vertex")
mode = mode.removesuffix("_vertex")
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
if mode == "logfire":
    import logfire
    logfire.configure(send_to_logfire=False, console=False, additional_span_processors=[SimpleSpanProcessor(exporter)])
    logfire.instrument_google_genai()
app_tracer = provider.get_tracer("app")


def app():
    """The app's own span around a call (all_app), else nothing."""
    return app_tracer.start_as_current_span("app.request") if mode.endswith("_app") else contextlib.nullcontext()


if mode in ("official", "all", "all_app"):
    from opentelemetry.instrumentation.google_genai import GoogleGenAiSdkInstrumentor
    GoogleGenAiSdkInstrumentor().instrument(tracer_provider=provider)
if mode in ("openinference", "all", "all_app"):
    from openinference.instrumentation.google_genai import GoogleGenAIInstrumentor
    GoogleGenAIInstrumentor().instrument(tracer_provider=provider)
if mode in ("openllmetry", "all", "all_app"):
    from opentelemetry.instrumentation.google_generativeai import GoogleGenerativeAiInstrumentor
    GoogleGenerativeAiInstrumentor().instrument(tracer_provider=provider)

http_options = types.HttpOptions(base_url=url, retry_options=types.HttpRetryOptions(attempts=1))
if vertex:
    from google.oauth2.credentials import Credentials
    client = genai.Client(vertexai=True, project="costline-probe", location="us-central1",
                          credentials=Credentials(token="x"), http_options=http_options)
else:
    client = genai.Client(api_key="x", http_options=http_options)
SYSTEM = f"Gemini {mode}. " + "You answer questions about our refund policy. " * 14
plain = types.GenerateContentConfig(system_instruction=SYSTEM, max_output_tokens=64)
runs = []


def usage(r):
    u = r.usage_metadata
    return {"prompt": u.prompt_token_count, "cached": u.cached_content_token_count,
            "candidates": u.candidates_token_count, "thoughts": u.thoughts_token_count,
            "total": u.total_token_count, "id": r.response_id}


def fails(label, **kw):
    try:
        with app():
            client.models.generate_content(**kw)
        runs.append({"call": label, "failed": None})
    except Exception as exc:
        runs.append({"call": label, "failed": f"{type(exc).__module__}.{type(exc).__name__}"})


fails("injected 429", model="gemini-2.0-flash", contents="bad", config=plain)
for label, q in (("plain", "Where is my parcel?"), ("cached", "Where is my parcel now?")):
    with app():
        runs.append({"call": label, **usage(client.models.generate_content(model="gemini-2.0-flash", contents=q,
                                                                             config=plain))})
last = None
with app():
    for chunk in client.models.generate_content_stream(model="gemini-2.0-flash", contents="Stream the refund steps",
                                                       config=plain):
        last = chunk
runs.append({"call": "stream cached", **usage(last)})
with app():
    runs.append({"call": "thinking", **usage(client.models.generate_content(
        model="gemini-2.5-flash", contents="Think about refunds for damaged items"))})
with app():
    for chunk in client.models.generate_content_stream(
            model="gemini-2.5-flash", contents="Stream and think about the refund steps",
            config=types.GenerateContentConfig(thinking_config=types.ThinkingConfig(include_thoughts=True))):
        last = chunk
runs.append({"call": "thinking stream", **usage(last)})


async def aio():
    with app():
        r = await client.aio.models.generate_content(
            model="gemini-2.5-flash", contents="Answer without thinking: what is a refund?",
            config=types.GenerateContentConfig(thinking_config=types.ThinkingConfig(thinking_budget=0)))
    runs.append({"call": "async no thinking", **usage(r)})
    with app():
        async for chunk in await client.aio.models.generate_content_stream(
                model="gemini-2.0-flash-thinking-exp", contents="Async stream: think about exchanges"):
            last = chunk
    runs.append({"call": "async thinking stream", **usage(last)})

asyncio.run(aio())
fails("unknown model 404", model="palm-2", contents="hello")
if not vertex:
    with app():
        e = client.models.embed_content(model="text-embedding-004", contents=["refund policy", "parcel tracking"])
    runs.append({"call": "embed", "vectors": len(e.embeddings)})

provider.force_flush()
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
print(json.dumps(runs, indent=0))
