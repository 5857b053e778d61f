"""Run in $MLFLOW_VENV: MLflow Tracing's autologging against costline's stand-in, exported over OTLP.

argv: stand-in URL, mode, output JSON path. The driver queues one 400 first: the first call fails.
MLflow exports its spans to an OTLP/HTTP endpoint (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, as its docs say
to reach an OpenTelemetry Collector); this probe is that endpoint and keeps each request's body as sent.
Modes: ``anthropic`` (mlflow.anthropic.autolog), ``openai`` (mlflow.openai.autolog), ``langchain``
(mlflow.langchain.autolog with mlflow.anthropic.autolog: two spans of each call), ``semconv`` (the anthropic
calls with ``MLFLOW_ENABLE_OTEL_GENAI_SEMCONV=true``: MLflow's GenAI-conventions export).
"""
import asyncio
import base64
import gzip
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

url, mode, out = sys.argv[1], sys.argv[2], sys.argv[3]
bodies = []


class Receiver(BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def do_POST(self):  # noqa: N802 (http.server's name)
        raw = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.headers.get("content-encoding") == "gzip":
            raw = gzip.decompress(raw)
        bodies.append(raw)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()


receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
threading.Thread(target=receiver.serve_forever, daemon=True).start()
os.environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = f"http://127.0.0.1:{receiver.server_port}/v1/traces"
os.environ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] = "http/protobuf"
os.environ["OTEL_SERVICE_NAME"] = f"mlflow-{mode}"
if mode == "semconv":
    os.environ["MLFLOW_ENABLE_OTEL_GENAI_SEMCONV"] = "true"

import anthropic  # noqa: E402
import mlflow  # noqa: E402
import openai  # noqa: E402

SYSTEM = [{"type": "text", "text": f"Mode {mode}. " + "You answer questions about our refund policy. " * 40,
           "cache_control": {"type": "ephemeral"}}]
runs = []


def _text(got):
    """The answer's text as the SDK returned it (Anthropic's blocks, a chat completion, a response, LangChain's)."""
    if hasattr(got, "output_text"):
        return got.output_text
    if hasattr(got, "choices"):
        return got.choices[0].message.content
    if isinstance(getattr(got, "content", None), str):
        return got.content
    return "".join(b.text for b in getattr(got, "content", None) or [] if getattr(b, "type", "") == "text") or None


def attempt(label, call):
    try:
        got = call()
        runs.append({"label": label, "ok": True, "usage": str(getattr(got, "usage", None)), "text": _text(got),
                     "tool_uses": [b.model_dump() for b in getattr(got, "content", None) or []
                                   if getattr(b, "type", "") == "tool_use"]})
        return got
    except Exception as exc:  # the queued 400
        runs.append({"label": label, "ok": False, "error": f"{type(exc).__module__}.{type(exc).__name__}"})


if mode in ("anthropic", "semconv"):
    mlflow.anthropic.autolog()
    client = anthropic.Anthropic(base_url=url, api_key="x", max_retries=0)
    ask = dict(model="claude-haiku-4-5", max_tokens=64, system=SYSTEM)
    attempt("400", lambda: client.messages.create(**ask, messages=[{"role": "user", "content": "bad"}]))
    attempt("cache write", lambda: client.messages.create(**ask, messages=[
        {"role": "user", "content": "Where is my parcel?"}]))
    attempt("cache read", lambda: client.messages.create(**ask, messages=[
        {"role": "user", "content": "Can I return shoes?"}]))

    async def async_call():
        aclient = anthropic.AsyncAnthropic(base_url=url, api_key="x", max_retries=0)
        return await aclient.messages.create(model="claude-haiku-4-5", max_tokens=32,
                                             messages=[{"role": "user", "content": "Async: what is a refund?"}])
    attempt("async", lambda: asyncio.run(async_call()))

    def streamed():
        stream = client.messages.create(model="claude-haiku-4-5", max_tokens=32, stream=True,
                                        messages=[{"role": "user", "content": "Streamed: how long is shipping?"}])
        return [e.type for e in stream]
    attempt("stream=True", streamed)
    tools = [{"name": "order_status", "description": "An order's status",
              "input_schema": {"type": "object", "properties": {"order": {"type": "string"}}}}]
    attempt("tools", lambda: client.messages.create(model="claude-haiku-4-5", max_tokens=64, tools=tools,
                                                    messages=[{"role": "user", "content": "What does order_status say for order 41?"}]))
elif mode == "openai":
    mlflow.openai.autolog()
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    chat = dict(model="costline-student", max_tokens=48)
    attempt("400", lambda: client.chat.completions.create(**chat, messages=[{"role": "user", "content": "bad"}]))
    attempt("chat", lambda: client.chat.completions.create(**chat, messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where is my parcel?"}]))

    def streamed():
        stream = client.chat.completions.create(**chat, stream=True, stream_options={"include_usage": True},
                                                messages=[{"role": "user", "content": "Streamed: shipping time?"}])
        return [c.usage for c in stream if c.usage]
    attempt("stream include_usage", streamed)
    attempt("embeddings", lambda: client.embeddings.create(model="costline-embed", input=["refund", "parcel"]))
    attempt("responses", lambda: client.responses.create(model="costline-student", input="Can I return shoes?",
                                                         max_output_tokens=48))
elif mode == "langchain":
    from langchain_anthropic import ChatAnthropic

    mlflow.langchain.autolog()
    mlflow.anthropic.autolog()
    llm = ChatAnthropic(model="claude-haiku-4-5", base_url=url, api_key="x", max_tokens=64, max_retries=0)
    attempt("400", lambda: llm.invoke("bad"))
    attempt("invoke", lambda: llm.invoke("Where is my parcel?"))
    attempt("invoke again", lambda: llm.invoke("Can I return shoes?"))

from mlflow.tracing.provider import provider  # noqa: E402 (MLflow's own tracer provider)

provider.get().force_flush()
messages = [base64.b64encode(gzip.compress(b, mtime=0)).decode() for b in bodies]
json.dump({"otlp_gzip": messages, "runs": runs}, open(out, "w"))
print("\n".join(map(str, runs)))
