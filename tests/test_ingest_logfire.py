"""Logfire's LLM integrations (``logfire.instrument_anthropic`` / ``instrument_openai``), real package, real
SDK clients, costline's stand-in: each call once, at the price the stand-in served.

``logfire.configure`` installs a global tracer provider, so the app runs in a child process that writes
its spans (OTLP protobuf) to a file; they go through the processor's decode / flatten / commit path into
a lake in tmp_path. A streamed call is two records in Logfire: the request's span (no usage) and, when
the stream ends, a log with the usage (often in another trace): one call.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from costline.serving.settings import StandInConfig
from costline.sim.standin import StandInServer

from figures_lake import lake_from_messages
from test_ingest_instrumentations import STUDENT_MODEL, _served_usd, cfg, q  # noqa: F401 (cfg: a fixture)

pytest.importorskip("logfire")

APP = r"""
import sys
import anthropic, logfire, openai
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

anthropic_url, openai_url, student, out = sys.argv[1:5]
exporter = InMemorySpanExporter()
logfire.configure(send_to_logfire=False, console=False, additional_span_processors=[SimpleSpanProcessor(exporter)])
claude = anthropic.Anthropic(base_url=anthropic_url, api_key="test", max_retries=0)
gpt = openai.OpenAI(base_url=openai_url, api_key="test", max_retries=0)
logfire.instrument_anthropic(claude)
logfire.instrument_openai(gpt)
try:  # the stand-in answers the first request 400
    claude.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": "bad"}])
except anthropic.BadRequestError:
    pass
system = [{"type": "text", "text": "Logfire. " + "You answer questions about our refund policy. " * 60,
           "cache_control": {"type": "ephemeral"}}]
for i in range(2):  # a cache write, then a read
    claude.messages.create(model="claude-haiku-4-5", max_tokens=64, system=system,
                           messages=[{"role": "user", "content": f"Question {i}: can I return it?"}])
with claude.messages.stream(model="claude-haiku-4-5", max_tokens=64, system=system,
                            messages=[{"role": "user", "content": "Stream the refund steps"}]) as stream:
    for _ in stream.text_stream:
        pass
gpt.chat.completions.create(model=student, max_tokens=32, messages=[{"role": "user", "content": "Summarise 1"}])
for _ in gpt.chat.completions.create(model=student, max_tokens=32, stream=True, stream_options={"include_usage": True},
                                     messages=[{"role": "user", "content": "Summarise 2"}]):
    pass
logfire.force_flush()
with open(out, "wb") as f:
    f.write(encode_spans(exporter.get_finished_spans()).SerializeToString())
"""


def test_logfire_calls_count_once_at_the_served_price(cfg, tmp_path):  # noqa: F811 (the imported fixture)
    standin = StandInServer(StandInConfig(port=0, latency_scale=0.0, min_cache_tokens=100))
    standin.start()
    out = tmp_path / "spans.otlp"
    try:
        standin.inject_errors(400, 1)
        proc = subprocess.run([sys.executable, "-c", APP, standin.url, standin.openai_url, STUDENT_MODEL, str(out)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
    finally:
        standin.shutdown()
    paid = standin.log.paid()
    assert len(paid) == 5 and any(e.cache_read_tokens for e in paid) and any(e.cache_creation_tokens for e in paid)
    lake_from_messages([out.read_bytes()], cfg)
    _, served = _served_usd(standin)
    assert q(cfg, "SELECT count(*), count(error_type), sum(cost_usd), sum(input_tokens), sum(cache_read_tokens), "
                  "sum(cache_creation_tokens), sum(output_tokens) FROM calls") == [
        (6, 1, pytest.approx(served, rel=1e-9), sum(e.input_tokens for e in paid),
         sum(e.cache_read_tokens for e in paid), sum(e.cache_creation_tokens for e in paid),
         sum(e.output_tokens for e in paid))]
    assert q(cfg, "SELECT count(*), count(*) FILTER (WHERE success) FROM requests") == [(6, 5)]
