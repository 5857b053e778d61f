"""`costline serve` streams token by token where no gate needs the whole answer: the real anthropic
SDK's streaming against the gateway, wired to the stand-in whose pace the test holds in its hand."""

from __future__ import annotations

import dataclasses
import threading

import anthropic
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from gateways import DictCache

from costline import contract as c
from costline.collectors import Recorder
from costline.config import Config
from costline.serving.gateway.app import CACHE_MODEL, STREAM_MODE_HEADER, Gateway
from costline.serving.pipeline import Pipeline
from costline.serving.settings import BackendsConfig, EscalationConfig, StandInConfig
from costline.sim.standin import StandInServer
from costline.sim.standin_model import reference_validator

EASY = "How do I reset my password?"  # routed to budget, which answers it well
HARD = "Reason step by step about the legal risks of these renewal terms."  # routed to budget, too hard for it


class Pace:
    """The stand-in's clock: each simulated pause waits for a permit the test hands out."""

    def __init__(self) -> None:
        self.permits = threading.Semaphore(0)
        self.passed = 0

    def sleep(self, seconds: float) -> None:
        assert self.permits.acquire(timeout=30), "the test never let the stand-in go on"
        self.passed += 1

    def allow(self, n: int = 10_000) -> None:
        for _ in range(n):
            self.permits.release()


@pytest.fixture
def pace():
    return Pace()


@pytest.fixture
def standin(pace):
    server = StandInServer(StandInConfig(retry_after_ms=1), port=0, sleep=pace.sleep)
    server.start()
    yield server
    server.shutdown()


@pytest.fixture
def exporter():
    return InMemorySpanExporter()


@pytest.fixture
def serve(standin, exporter):
    made = []

    def start(*, gated: bool, max_escalations: int = 3):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        cfg = Config()
        serving = dataclasses.replace(
            cfg.serving,
            backends=BackendsConfig(anthropic_base_url=standin.url, student_base_url=standin.openai_url,
                                    max_retries=0),
            escalation=EscalationConfig(max_escalations=max_escalations),
        )
        kwargs = {} if gated else {"confidence": None}
        pipeline = Pipeline.from_config(cfg.replace(serving=serving), recorder=Recorder(provider), cache=DictCache(),
                                        validator=reference_validator if gated else None, env={}, **kwargs)
        gateway = Gateway(pipeline, port=0)
        gateway.start()
        made.append((gateway, pipeline))
        return anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0,
                                   default_headers={"x-costline-tenant": "acme"})

    yield start
    for gateway, pipeline in made:
        gateway.shutdown()
        pipeline.close()


def ask(query):
    return {"model": "any", "max_tokens": 300, "messages": [{"role": "user", "content": query}]}


def request_spans(exporter):
    return [dict(s.attributes) for s in exporter.get_finished_spans() if s.name == c.SPAN_REQUEST]


def call_spans(exporter):
    return [s for s in exporter.get_finished_spans() if s.kind.name == "CLIENT"]


def test_without_a_gate_the_answer_streams_before_the_model_has_finished(serve, pace, standin, exporter):
    app = serve(gated=False)
    pace.allow(1)  # the model's prefill only: then it holds after its first piece
    with app.messages.with_streaming_response.create(**ask(EASY), stream=True) as raw:
        assert raw.headers[STREAM_MODE_HEADER] == "live" and raw.headers["x-costline-tier"] == "budget"
        events = raw.parse()
        seen = []
        for event in events:
            seen.append(event)
            if event.type == "content_block_delta":
                break
        assert pace.passed == 1  # the client holds a token while the model is still writing
        pace.allow()
        seen.extend(events)
    text = "".join(e.delta.text for e in seen if e.type == "content_block_delta")
    (logged,) = standin.log.entries()
    (delta,) = [e for e in seen if e.type == "message_delta"]
    assert delta.usage.output_tokens == logged.output_tokens and delta.usage.input_tokens == logged.input_tokens
    assert len([e for e in seen if e.type == "content_block_delta"]) > 1
    (req,) = request_spans(exporter)
    assert (req[c.COSTLINE_TIER], req[c.COSTLINE_ATTEMPTS], req[c.COSTLINE_SUCCESS]) == ("budget", 1, True)
    (call,) = call_spans(exporter)
    assert call.attributes[c.GEN_AI_REQUEST_STREAM] is True
    assert call.attributes[c.GEN_AI_USAGE_OUTPUT_TOKENS] == logged.output_tokens
    pace.allow()
    again = app.messages.create(**ask(EASY))  # the streamed answer was stored in the cache
    assert again.model == CACHE_MODEL and again.content[0].text == text


def test_the_stream_helper_gets_the_same_message_as_a_plain_request(serve, pace):
    app = serve(gated=False)
    pace.allow()
    with app.messages.stream(**ask(HARD)) as stream:
        final = stream.get_final_message()
    assert stream.response.headers[STREAM_MODE_HEADER] == "live"
    plain = app.messages.create(**ask(HARD))  # a cache hit now, with the same text
    assert final.content[0].text == plain.content[0].text and final.model == "claude-haiku-4-5"
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0 and final.stop_reason == "end_turn"


def test_cache_hits_stream_live_even_behind_a_gate(serve, pace):
    app = serve(gated=True)
    pace.allow()
    first = app.messages.create(**ask(EASY))
    with app.messages.stream(**ask(EASY)) as stream:
        text = "".join(stream.text_stream)
    assert stream.response.headers[STREAM_MODE_HEADER] == "live"
    assert stream.response.headers["x-costline-cache-hit"] == "true"
    assert text == first.content[0].text


def test_a_gate_that_can_escalate_keeps_the_buffered_mode(serve, pace, exporter):
    app = serve(gated=True)
    pace.allow()
    with app.messages.stream(**ask(HARD)) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert stream.response.headers[STREAM_MODE_HEADER] == "buffered"
    assert int(stream.response.headers["x-costline-escalations"]) >= 1  # budget's answer was never sent
    assert reference_validator(HARD, text) and final.model != "claude-haiku-4-5"


def test_a_gated_tier_with_nowhere_to_escalate_streams_live(serve, pace, exporter):
    app = serve(gated=True, max_escalations=0)
    pace.allow()
    with app.messages.stream(**ask(HARD)) as stream:
        "".join(stream.text_stream)
    assert stream.response.headers[STREAM_MODE_HEADER] == "live"
    (req,) = request_spans(exporter)
    assert req[c.COSTLINE_SUCCESS] is False  # the gate still judged the answer once it was whole


def test_a_model_failing_mid_answer_ends_the_stream_with_an_error_event(serve, pace, standin, exporter):
    app = serve(gated=False)
    pace.allow()
    standin.inject_stream_errors(after_deltas=2)
    deltas = []
    with pytest.raises(anthropic.APIStatusError) as info:
        with app.messages.stream(**ask(EASY)) as stream:
            for text in stream.text_stream:
                deltas.append(text)
    assert info.value.body["error"]["type"] == "overloaded_error" and len(deltas) >= 1
    (req,) = request_spans(exporter)
    assert req[c.COSTLINE_SUCCESS] is False
    (call,) = call_spans(exporter)
    assert c.ERROR_TYPE in call.attributes and call.attributes[c.COSTLINE_USAGE_INCOMPLETE] is True


def test_a_model_failing_before_its_first_token_is_escalated(serve, pace, standin):
    app = serve(gated=False)
    pace.allow()
    standin.inject_errors(529, 1)  # budget is overloaded (no SDK retries): mid answers
    with app.messages.stream(**ask(EASY)) as stream:
        final = stream.get_final_message()
    headers = stream.response.headers
    assert headers[STREAM_MODE_HEADER] == "buffered" and headers["x-costline-attempts"] == "2"
    assert headers["x-costline-tier"] == "mid" and final.content[0].text
    standin.inject_errors(529, 4)  # every tier of the ladder: an error status, as a plain request gets
    with pytest.raises(anthropic.OverloadedError):
        with app.messages.stream(**ask("another question entirely")) as stream:
            stream.until_done()


def test_a_client_that_goes_away_still_ends_the_request(serve, pace, exporter):
    app = serve(gated=False)
    pace.allow(1)
    with app.messages.stream(**ask(EASY)) as stream:
        next(iter(stream.text_stream))
    pace.allow()  # the model goes on; the gateway finds the client gone and stops
    done = threading.Event()
    for _ in range(300):
        if request_spans(exporter):
            done.set()
            break
        done.wait(0.05)
    assert done.is_set()
    (req,) = request_spans(exporter)
    assert req[c.COSTLINE_SUCCESS] is False and c.ERROR_TYPE not in req and req[c.COSTLINE_TIER] == "budget"
