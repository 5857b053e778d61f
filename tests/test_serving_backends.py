"""The stand-in APIs and the backends, through the real anthropic and openai SDK clients."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costline import contract as c
from costline.collectors import Recorder
from costline.config import Config
from costline.serving.backends import Prompt, build_backends
from costline.serving.errors import BackendError
from costline.serving.registry import ModelRegistry
from costline.serving.settings import BackendsConfig, StandInConfig
from costline.sim.standin import StandInServer
from costline.serving.confidence import parse_confidence
from costline.sim.standin_model import count_tokens, reference_tag, reference_validator, synthesize

FAST = StandInConfig(latency_scale=0.0, min_cache_tokens=20, retry_after_ms=1)


@pytest.fixture
def standin():
    server = StandInServer(FAST, port=0)
    server.start()
    yield server
    server.shutdown()


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Recorder(provider), exporter
    provider.shutdown()


def client(server: StandInServer, retries: int = 2) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="test", max_retries=retries)


def ask(cl, text: str, model: str = "claude-haiku-4-5", **kw):
    return cl.messages.create(model=model, max_tokens=kw.pop("max_tokens", 200),
                              messages=[{"role": "user", "content": text}], **kw)


def test_messages_are_deterministic_with_real_token_counts(standin: StandInServer) -> None:
    cl = client(standin)
    first = ask(cl, "How do I reset my password?")
    again = ask(cl, "How do I reset my password?")
    assert first.content[0].text == again.content[0].text
    assert first.model == "claude-haiku-4-5" and first.stop_reason == "end_turn"
    text = first.content[0].text
    assert first.usage.output_tokens == count_tokens(text)
    assert first.usage.input_tokens == count_tokens("How do I reset my password?")
    assert text == synthesize("claude-haiku-4-5", "budget", "How do I reset my password?").text
    assert reference_validator("How do I reset my password?", text)
    assert parse_confidence(text) is not None
    hard = ask(cl, "Design a novel multi-step agent for churn.")
    assert not reference_validator("Design a novel multi-step agent for churn.", hard.content[0].text)
    frontier = ask(cl, "Design a novel multi-step agent for churn.", model="claude-fable-5")
    assert f"[ref:{reference_tag('Design a novel multi-step agent for churn.')}]" in frontier.content[0].text
    short = ask(cl, "How do I reset my password?", max_tokens=5)
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 5


def test_prompt_cache_blocks_are_created_then_read(standin: StandInServer) -> None:
    cl = client(standin)
    system = [{"type": "text", "text": "You are the support agent of acme. " * 4, "cache_control": {"type": "ephemeral"}}]
    prefix = count_tokens(system[0]["text"])
    one = cl.messages.create(model="claude-sonnet-4-6", max_tokens=50, system=system,
                             messages=[{"role": "user", "content": "where is my invoice?"}])
    two = cl.messages.create(model="claude-sonnet-4-6", max_tokens=50, system=system,
                             messages=[{"role": "user", "content": "and my refund?"}])
    assert (one.usage.cache_creation_input_tokens, one.usage.cache_read_input_tokens) == (prefix, 0)
    assert (two.usage.cache_creation_input_tokens, two.usage.cache_read_input_tokens) == (0, prefix)
    assert two.usage.input_tokens == count_tokens("and my refund?")
    other_model = cl.messages.create(model="claude-haiku-4-5", max_tokens=50, system=system,
                                     messages=[{"role": "user", "content": "and my refund?"}])
    assert other_model.usage.cache_creation_input_tokens == prefix  # caches are per model
    plain = cl.messages.create(model="claude-sonnet-4-6", max_tokens=50, system=system[0]["text"],
                               messages=[{"role": "user", "content": "x"}])
    assert plain.usage.cache_read_input_tokens == plain.usage.cache_creation_input_tokens == 0


def test_count_tokens_counts_what_a_message_would_bill_and_is_not_a_paid_call(standin: StandInServer) -> None:
    cl = client(standin)
    system = "You are the support agent of acme. " * 3
    messages = [{"role": "user", "content": "where is my invoice?"}, {"role": "assistant", "content": "Which one?"},
                {"role": "user", "content": "the one from May"}]
    counted = cl.messages.count_tokens(model="claude-sonnet-4-6", system=system, messages=messages)
    billed = cl.messages.create(model="claude-sonnet-4-6", max_tokens=50, system=system, messages=messages).usage
    assert counted.input_tokens == billed.input_tokens > 0
    assert [r.model for r in standin.log.entries()] == ["claude-sonnet-4-6"]  # only the message
    with pytest.raises(anthropic.NotFoundError):
        cl.messages.count_tokens(model="no-such-model", messages=messages)
    with pytest.raises(anthropic.BadRequestError):
        cl.messages.count_tokens(model="claude-sonnet-4-6", messages=[])


@pytest.mark.parametrize("fields", [{"system": 5}, {"messages": [{"role": "user", "content": 5}]}])
def test_the_standin_answers_a_malformed_system_or_content_with_the_apis_400(standin: StandInServer, fields) -> None:
    """As the Messages API does: a 400 invalid_request_error, not the stand-in's own TypeError (a 500)."""
    cl = client(standin)
    body = {"model": "claude-sonnet-4-6", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}], **fields}
    with pytest.raises(anthropic.BadRequestError, match="a string or a list of (content|text) blocks"):
        cl.messages.create(**body)
    with pytest.raises(anthropic.BadRequestError, match="a string or a list of (content|text) blocks"):
        cl.messages.count_tokens(**{k: v for k, v in body.items() if k != "max_tokens"})


def test_error_bursts_use_anthropics_format_and_the_sdk_retries(standin: StandInServer) -> None:
    cl = client(standin, retries=2)
    standin.inject_errors(429, 2)
    ok = ask(cl, "hi", extra_headers={"Idempotency-Key": "req-1"})
    assert ok.content[0].text
    assert standin.log.paid_count("req-1") == 1 and standin.log.duplicate_paid_keys() == {}
    assert [e.status for e in standin.log.entries("anthropic")] == [429, 429, 200]
    standin.inject_errors(529, 3)
    with pytest.raises(anthropic.OverloadedError) as err:
        ask(cl, "hi")
    assert err.value.body["error"]["type"] == "overloaded_error"
    standin.inject_errors(500, 1)
    with pytest.raises(anthropic.InternalServerError) as err:
        ask(client(standin, retries=0), "hi")
    assert err.value.body == {"type": "error", "error": {"type": "api_error",
                                                         "message": "Internal server error (stand-in burst)"}}
    standin.inject_errors(429, 1)
    with pytest.raises(anthropic.RateLimitError) as err:
        ask(client(standin, retries=0), "hi")
    assert err.value.response.headers["retry-after"] == "1"
    with pytest.raises(anthropic.NotFoundError):
        ask(cl, "hi", model="claude-unknown-9")


def test_message_batches_end_with_jsonl_results_and_count_paid_custom_ids(standin: StandInServer) -> None:
    now = [0.0]
    server = StandInServer(StandInConfig(latency_scale=0.0, batch_delay_s=60.0), port=0, now=lambda: now[0])
    server.start()
    try:
        cl = client(server)
        params = {"model": "claude-haiku-4-5", "max_tokens": 100}
        batch = cl.messages.batches.create(requests=[
            {"custom_id": "a", "params": {**params, "messages": [{"role": "user", "content": "How do I pay?"}]}},
            {"custom_id": "b", "params": {**params, "model": "nope", "messages": [{"role": "user", "content": "x"}]}},
        ])
        assert batch.processing_status == "in_progress" and batch.request_counts.processing == 2
        now[0] = 61.0
        done = cl.messages.batches.retrieve(batch.id)
        assert done.processing_status == "ended" and done.results_url
        assert (done.request_counts.succeeded, done.request_counts.errored) == (1, 1)
        results = {r.custom_id: r.result for r in cl.messages.batches.results(batch.id)}
        assert results["a"].type == "succeeded" and results["a"].message.usage.output_tokens > 0
        assert results["b"].type == "errored"
        assert server.log.paid_count("a") == 1 and server.log.paid_count("b") == 0
        assert [b.id for b in cl.messages.batches.list()] == [batch.id]
    finally:
        server.shutdown()


def test_openai_chat_completions_serve_the_student_and_degrade_on_the_shifted_slice() -> None:
    server = StandInServer(StandInConfig(latency_scale=0.0, degrade_keywords=("sarcasm",)), port=0)
    server.start()
    try:
        oc = openai.OpenAI(base_url=server.openai_url, api_key="test", max_retries=0)
        fine = "Classify the intent of: 'where is my parcel?'"
        shifted = "Classify the sarcasm of: 'great, late again'"
        r = oc.chat.completions.create(model="costline-student-lora", max_tokens=100,
                                       messages=[{"role": "user", "content": fine}])
        assert reference_validator(fine, r.choices[0].message.content)
        assert r.usage.prompt_tokens == count_tokens(fine)
        assert r.usage.completion_tokens == count_tokens(r.choices[0].message.content)
        bad = oc.chat.completions.create(model="costline-student-lora", max_tokens=100,
                                         messages=[{"role": "user", "content": shifted}])
        text = bad.choices[0].message.content
        assert not reference_validator(shifted, text) and parse_confidence(text) >= 0.7  # confidently wrong
        with pytest.raises(openai.NotFoundError):
            oc.chat.completions.create(model="gpt-x", messages=[{"role": "user", "content": "x"}])
        server.inject_errors(429, 1, api="openai")
        with pytest.raises(openai.RateLimitError):
            oc.chat.completions.create(model="costline-student", messages=[{"role": "user", "content": "x"}])
        assert "costline-student-lora" in {m.id for m in oc.models.list()}
    finally:
        server.shutdown()



def _responses_server() -> StandInServer:
    from costline.config import ModelPrice, PricingConfig

    return StandInServer(StandInConfig(latency_scale=0.0, min_cache_tokens=20, retry_after_ms=1), port=0,
                         pricing=PricingConfig(models=(ModelPrice("gpt-5-mini", "budget", provider="openai"),)))


def test_openai_responses_api_answers_with_exact_usage_and_reads_its_automatic_prompt_cache() -> None:
    """``POST /v1/responses`` through the openai SDK: a string or a list of items as input, instructions,
    usage counted as the chat endpoint counts it (input includes the cached tokens), OpenAI's automatic
    prompt cache (no cache_control: the instructions' prefix is read by the next request), the log."""
    server = _responses_server()
    server.start()
    try:
        oc = openai.OpenAI(base_url=server.openai_url, api_key="test", max_retries=0)
        system = "You answer questions about our refund policy. " * 5
        q1 = "Classify the intent of: 'where is my parcel?'"
        r = oc.responses.create(model="gpt-5-mini", instructions=system, input=q1)
        assert r.object == "response" and r.status == "completed" and r.id.startswith("resp_")
        assert reference_validator(q1, r.output_text)
        assert r.usage.input_tokens == count_tokens(system) + count_tokens(q1)
        assert r.usage.output_tokens == count_tokens(r.output_text)
        assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
        assert r.usage.input_tokens_details.cached_tokens == 0 and r.usage.output_tokens_details.reasoning_tokens == 0
        q2 = "Classify the intent of: 'can I get a refund?'"
        r2 = oc.responses.create(model="gpt-5-mini", instructions=system, input=[
            {"role": "user", "content": [{"type": "input_text", "text": q2}]}])
        assert r2.usage.input_tokens_details.cached_tokens == count_tokens(system)  # the instructions' prefix
        assert r2.usage.input_tokens == count_tokens(system) + count_tokens(q2)
        short = oc.responses.create(model="costline-student", input="hi", max_output_tokens=2)
        assert short.status == "incomplete" and short.incomplete_details.reason == "max_output_tokens"
        assert short.usage.output_tokens == 2 and short.usage.input_tokens_details.cached_tokens == 0
        paid = server.log.paid()
        assert [(e.api, e.input_tokens, e.output_tokens, e.cache_read_tokens) for e in paid] == [
            ("openai", u.input_tokens, u.output_tokens, u.input_tokens_details.cached_tokens)
            for u in (r.usage, r2.usage, short.usage)]
        with pytest.raises(openai.NotFoundError):  # an Anthropic model is no OpenAI model
            oc.responses.create(model="claude-haiku-4-5", input="x")
        server.inject_errors(429, 1, api="openai")
        with pytest.raises(openai.RateLimitError):
            oc.responses.create(model="gpt-5-mini", input="x")
        with pytest.raises(openai.BadRequestError):
            oc.responses.create(model="gpt-5-mini", input=[])
        assert len(server.log.paid()) == 3
    finally:
        server.shutdown()


def test_openai_responses_api_streams_the_events_the_sdk_assembles() -> None:
    """``stream: true``: response.created … output_text.delta … response.completed with the usage, in the
    order the API sends them; the SDK's stream helper assembles the same text; an injected mid-stream error."""
    server = _responses_server()
    server.start()
    try:
        oc = openai.OpenAI(base_url=server.openai_url, api_key="test", max_retries=0)
        events = list(oc.responses.create(model="gpt-5-mini", input="Stream the refund steps, please", stream=True))
        kinds = [e.type for e in events]
        deltas = kinds.count("response.output_text.delta")
        assert deltas >= 2
        assert kinds == (["response.created", "response.in_progress", "response.output_item.added",
                          "response.content_part.added"] + ["response.output_text.delta"] * deltas
                         + ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                            "response.completed"])
        assert [e.sequence_number for e in events] == list(range(len(events)))
        done = events[-1].response
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert done.output_text == text == events[-4].text
        assert done.usage.output_tokens == count_tokens(text)
        assert done.usage.input_tokens == count_tokens("Stream the refund steps, please")
        assert events[0].response.usage is None and events[0].response.status == "in_progress"
        with oc.responses.stream(model="gpt-5-mini", input="Stream the refund steps, please") as stream:
            assert "".join(e.delta for e in stream if e.type == "response.output_text.delta") == text
            assert stream.get_final_response().usage.output_tokens == done.usage.output_tokens
        server.inject_stream_errors(after_deltas=1, api="openai")  # the API's ResponseErrorEvent, then the end
        broken = list(oc.responses.create(model="gpt-5-mini", input="Stream again", stream=True))
        assert [e.type for e in broken[-2:]] == ["response.output_text.delta", "error"]
        assert broken[-1].code == "server_error" and "response.completed" not in {e.type for e in broken}
    finally:
        server.shutdown()


def test_openai_responses_api_calls_a_named_function_tool_once() -> None:
    """A function tool the last user message names is called (streamed too: function_call_arguments
    events); its output coming back gets a text answer."""
    server = _responses_server()
    server.start()
    try:
        oc = openai.OpenAI(base_url=server.openai_url, api_key="test", max_retries=0)
        tools = [{"type": "function", "name": "lookup_order", "description": "Look an order up.", "strict": True,
                  "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
                                 "required": ["order_id"], "additionalProperties": False}}]
        r = oc.responses.create(model="gpt-5-mini", input="please lookup_order 42", tools=tools)
        (call,) = r.output
        assert call.type == "function_call" and call.name == "lookup_order"
        assert list(json.loads(call.arguments)) == ["order_id"]
        assert r.usage.output_tokens > 0
        follow = oc.responses.create(model="gpt-5-mini", tools=tools, input=[
            {"role": "user", "content": "please lookup_order 42"}, call.model_dump(exclude_none=True),
            {"type": "function_call_output", "call_id": call.call_id, "output": "shipped"}])
        assert follow.output[0].type == "message" and follow.output_text
        kinds = [e.type for e in oc.responses.create(model="gpt-5-mini", input="please lookup_order 42", tools=tools,
                                                     stream=True)]
        assert "response.function_call_arguments.done" in kinds and kinds[-1] == "response.completed"
        assert oc.responses.create(model="gpt-5-mini", input="no tool here", tools=tools).output[0].type == "message"
    finally:
        server.shutdown()

def test_backends_record_one_call_span_per_attempt_with_usage_and_error_type(standin: StandInServer, spans) -> None:
    recorder, exporter = spans
    config = Config()
    registry = ModelRegistry.from_config(config)
    settings = BackendsConfig(anthropic_base_url=standin.url, student_base_url=standin.openai_url, max_retries=1)
    import dataclasses
    registry = ModelRegistry.from_config(config.replace(serving=dataclasses.replace(config.serving, backends=settings)))
    backends = build_backends(registry, settings, recorder)
    system = [{"type": "text", "text": "You answer for acme. " * 8, "cache_control": {"type": "ephemeral"}}]
    reply = backends["mid"].complete(Prompt.of("where is my invoice?", system=system))
    assert reply.cache_creation_tokens > 0 and reply.input_tokens == (
        count_tokens("where is my invoice?") + reply.cache_creation_tokens)
    student = backends["student"].complete(Prompt.of("Classify: fine"))
    assert student.model == "costline-student-lora" and student.output_tokens > 0
    standin.inject_errors(529, 2)
    with pytest.raises(BackendError) as err:
        backends["budget"].complete(Prompt.of("hi"))
    assert (err.value.tier, err.value.error_type) == ("budget", "OverloadedError")
    calls = exporter.get_finished_spans()
    assert [s.attributes[c.COSTLINE_TIER] for s in calls] == ["mid", "student", "budget"]
    mid, stu, failed = calls
    assert mid.attributes[c.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] == reply.cache_creation_tokens
    assert mid.attributes[c.GEN_AI_USAGE_INPUT_TOKENS] == reply.input_tokens
    assert stu.attributes[c.GEN_AI_PROVIDER_NAME] == "vllm"
    assert failed.attributes[c.ERROR_TYPE] == "OverloadedError"
    # costline's call span is the record: the SDK's own span per call (on a global provider) is off
    assert backends["mid"].client.open_telemetry["traces"]["enabled"] is False
    for b in backends.values():
        b.close()


def test_anthropic_complete_records_the_same_call_span_with_one_json_parse_as_through_the_sdk_models(
        standin: StandInServer) -> None:
    """With content capture off the backend reads the raw JSON once and records the call span itself;
    with capture on it goes through messages.create and instrument_anthropic. Same reply, same span."""
    import dataclasses

    from costline.config import CaptureConfig

    config = Config()
    system = [{"type": "text", "text": "You answer for acme. " * 8, "cache_control": {"type": "ephemeral"}}]
    seen = {}
    fresh = StandInServer(FAST, port=0)  # the second pass starts with the stand-in's prompt cache empty too
    fresh.start()
    for capture, server in ((False, standin), (True, fresh)):
        settings = BackendsConfig(anthropic_base_url=server.url, student_base_url=server.openai_url, max_retries=0)
        registry = ModelRegistry.from_config(config.replace(serving=dataclasses.replace(config.serving,
                                                                                        backends=settings)))
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        recorder = Recorder(provider, capture=CaptureConfig(message_content=capture))
        backend = build_backends(registry, settings, recorder, tiers=["mid"])["mid"]
        replies = [backend.complete(Prompt.of("where is my invoice?", system=system)) for _ in range(2)]
        backend.close()
        (created, read) = exporter.get_finished_spans()
        seen[capture] = (replies, created, read)
    fresh.shutdown()
    (raw_replies, raw_created, raw_read), (sdk_replies, sdk_created, sdk_read) = seen[False], seen[True]
    # the first call writes the prompt cache, the second reads it: computed here from the stand-in's tokenizer
    prompt_tokens = count_tokens("where is my invoice?")
    assert raw_replies[0].cache_creation_tokens > 0 and raw_replies[1].cache_read_tokens > 0
    assert raw_replies[1].input_tokens == prompt_tokens + raw_replies[1].cache_read_tokens
    for raw, sdk in zip(raw_replies, sdk_replies):
        assert dataclasses.replace(raw, id=None) == dataclasses.replace(sdk, id=None)
    content_keys = {c.GEN_AI_INPUT_MESSAGES, c.GEN_AI_OUTPUT_MESSAGES, "gen_ai.system_instructions"}
    for raw, sdk in ((raw_created, sdk_created), (raw_read, sdk_read)):
        assert raw.name == sdk.name
        want = {k: v for k, v in sdk.attributes.items() if k not in content_keys and k != c.GEN_AI_RESPONSE_ID}
        got = {k: v for k, v in raw.attributes.items() if k != c.GEN_AI_RESPONSE_ID}
        assert got == want
        assert raw.attributes[c.GEN_AI_RESPONSE_ID].startswith("msg_")
    assert raw_read.attributes[c.GEN_AI_USAGE_INPUT_TOKENS] == raw_replies[1].input_tokens
    assert not any(k in raw_created.attributes for k in content_keys)


def test_anthropic_complete_refuses_an_answer_that_is_not_a_json_object(spans) -> None:
    """A 200 whose body is not a JSON object is the SDK's APIResponseValidationError: a BackendError
    for the pipeline (which escalates on it) and the call span's error.type, never a crash."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Broken(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers["content-length"]))
            body = b"<html>upstream proxy error</html>"
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Broken)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    recorder, exporter = spans
    try:
        settings = BackendsConfig(anthropic_base_url=f"http://127.0.0.1:{server.server_port}", max_retries=0)
        import dataclasses

        config = Config()
        registry = ModelRegistry.from_config(config.replace(serving=dataclasses.replace(config.serving,
                                                                                        backends=settings)))
        backend = build_backends(registry, settings, recorder, tiers=["budget"], env={"ANTHROPIC_API_KEY": "k"})["budget"]
        with pytest.raises(BackendError) as err:
            backend.complete(Prompt.of("hi"))
        backend.close()
    finally:
        server.shutdown()
    assert (err.value.tier, err.value.error_type) == ("budget", "APIResponseValidationError")
    (span,) = exporter.get_finished_spans()
    assert span.attributes[c.ERROR_TYPE] == "APIResponseValidationError"


def test_openai_compatible_complete_records_the_same_call_span_with_one_json_parse_as_through_the_sdk_models(
        standin: StandInServer) -> None:
    """The student (vLLM's OpenAI-compatible API, through the openai SDK): capture off reads the raw
    JSON once, capture on goes through chat.completions.create and instrument_openai. Same reply, same span."""
    import dataclasses

    from costline.config import CaptureConfig

    config = Config()
    settings = BackendsConfig(anthropic_base_url=standin.url, student_base_url=standin.openai_url, max_retries=0)
    registry = ModelRegistry.from_config(config.replace(serving=dataclasses.replace(config.serving, backends=settings)))
    seen = {}
    for capture in (False, True):
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        recorder = Recorder(provider, capture=CaptureConfig(message_content=capture))
        backend = build_backends(registry, settings, recorder, tiers=["student"])["student"]
        reply = backend.complete(Prompt.of("Classify: the invoice was charged twice", system="You classify."))
        backend.close()
        (span,) = exporter.get_finished_spans()
        seen[capture] = (reply, span)
    (raw_reply, raw_span), (sdk_reply, sdk_span) = seen[False], seen[True]
    assert raw_reply.text and raw_reply.model == "costline-student-lora" and raw_reply.output_tokens > 0
    assert dataclasses.replace(raw_reply, id=None) == dataclasses.replace(sdk_reply, id=None)
    content_keys = {c.GEN_AI_INPUT_MESSAGES, c.GEN_AI_OUTPUT_MESSAGES, "gen_ai.system_instructions"}
    assert raw_span.name == sdk_span.name
    want = {k: v for k, v in sdk_span.attributes.items() if k not in content_keys and k != c.GEN_AI_RESPONSE_ID}
    got = {k: v for k, v in raw_span.attributes.items() if k != c.GEN_AI_RESPONSE_ID}
    assert got == want
    assert raw_span.attributes[c.GEN_AI_PROVIDER_NAME] == "vllm"
    assert raw_span.attributes[c.GEN_AI_USAGE_INPUT_TOKENS] == raw_reply.input_tokens
