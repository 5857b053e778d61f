"""What the pipeline makes of answers real model servers give that are no answer: a tool call the request never
offered (a vLLM tool parser extracting a ``<tool_call>`` the model made up), an empty answer (a vLLM ``content:
null`` with only its ``reasoning_content``, ``content: ""``), buffered and streamed; and a ``(confidence: x)`` marker
the end user asked for. Real ``anthropic`` / ``openai`` SDK clients read a scripted local model server."""

from __future__ import annotations

import dataclasses
import json
import re
import unicodedata
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from scripted_http import ScriptedHttp
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costline import contract as c
from costline.collectors import Recorder
from costline.config import CaptureConfig, Config
from costline.serving.backends import Prompt
from costline.serving.confidence import mentions_confidence
from costline.serving.gateway.app import failure_status
from costline.serving.pipeline import LiveAnswer, Pipeline
from costline.serving.settings import BackendsConfig, EscalationConfig, RouteRulesConfig

Handler = Callable[[BaseHTTPRequestHandler, dict[str, Any]], None]


class Server(ScriptedHttp):
    """A model server: ``/v1/chat/completions`` (vLLM-like) and ``/v1/messages`` (Anthropic-like), each answered
    by its handler; every request body is kept in ``log``."""

    def __init__(self, chat: Handler, messages: Handler) -> None:
        self.log: list[tuple[str, dict[str, Any]]] = []

        def answer(h: BaseHTTPRequestHandler, path: str, raw: bytes) -> None:
            body = json.loads(raw or b"{}")
            self.log.append((path, body))
            (chat if "chat/completions" in path else messages)(h, body)

        super().__init__(answer)

    @property
    def paths(self) -> list[str]:
        return ["student" if "chat" in p else b["model"] for p, b in self.log]


def send_json(h: BaseHTTPRequestHandler, obj: Any) -> None:
    raw = json.dumps(obj).encode()
    h.send_response(200)
    h.send_header("content-type", "application/json")
    h.send_header("content-length", str(len(raw)))
    h.send_header("connection", "close")
    h.end_headers()
    h.wfile.write(raw)


def send_sse(h: BaseHTTPRequestHandler, events: list[Any]) -> None:
    h.send_response(200)
    h.send_header("content-type", "text/event-stream")
    h.send_header("connection", "close")
    h.end_headers()
    for data in events:
        h.wfile.write(f"data: {json.dumps(data)}\n\n".encode())
    h.wfile.write(b"data: [DONE]\n\n")
    h.wfile.flush()


def completion(content: Any, finish: str = "stop", **extra: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "costline-student-lora",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, **extra},
                         "finish_reason": finish}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 70}}


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "costline-student-lora",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def message(content: list[dict[str, Any]], stop: str = "end_turn", model: str = "claude") -> dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop, "stop_sequence": None, "usage": {"input_tokens": 100, "output_tokens": 30}}


def text(t: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": t}]


def tool_call(name: str) -> dict[str, Any]:
    return {"id": "call_1", "type": "function", "function": {"name": name, "arguments": "{\"user\": \"me\"}"}}


MID_ANSWER = "The mid tier's real answer."


def student_world_config(server: Server, max_escalations: int = 2) -> Config:
    """The default config with ``server`` as both the Anthropic API and the student's vLLM (``/v1``), the task type
    ``classify`` gated to the student, no SDK retries."""
    cfg = Config()
    return cfg.replace(serving=dataclasses.replace(
        cfg.serving,
        router=dataclasses.replace(cfg.serving.router, rules=RouteRulesConfig(student_task_types=("classify",))),
        backends=BackendsConfig(anthropic_base_url=server.url, student_base_url=server.url + "/v1",
                                max_retries=0, timeout_s=10),
        escalation=EscalationConfig(max_escalations=max_escalations)))


@pytest.fixture
def world():
    made: list[tuple[Server, Pipeline]] = []

    def make(chat: Handler, messages: Handler | None = None, *, capture: bool = False, validator: Any = None,
             confidence: Any = "default", max_escalations: int = 2) -> tuple[Server, Pipeline, InMemorySpanExporter]:
        server = Server(chat, messages or (lambda h, b: send_json(h, message(text(MID_ANSWER), model=b["model"]))))
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        kwargs: dict[str, Any] = {} if confidence == "default" else {"confidence": confidence}
        pipeline = Pipeline.from_config(student_world_config(server, max_escalations),
                                        recorder=Recorder(provider, capture=CaptureConfig(message_content=capture)),
                                        env={}, validator=validator, **kwargs)
        made.append((server, pipeline))
        return server, pipeline, exporter

    yield make
    for server, pipeline in made:
        pipeline.close()
        server.close()


def rejected(exporter: InMemorySpanExporter) -> str | None:
    (req,) = [s for s in exporter.get_finished_spans() if s.name == c.SPAN_REQUEST]
    return req.attributes.get(c.COSTLINE_REJECTED_ATTEMPTS)


CLASSIFY = "Is this review positive? 'great product'"


# --- a tool call the request did not offer ------------------------------------------------------------------


@pytest.mark.parametrize("capture", [False, True])  # the raw-JSON path and the SDK's own models
def test_a_tool_call_the_request_never_offered_is_no_answer_and_goes_up_a_tier(world, capture) -> None:
    """The student (vLLM with a tool parser) answers a plain question with a made-up ``delete_account`` call: not
    accepted ungated, as it was, but rejected (``unoffered_tool``) and sent up a tier."""
    server, p, exporter = world(lambda h, b: send_json(h, completion(None, "tool_calls",
                                                                   tool_calls=[tool_call("delete_account")])),
                                capture=capture)
    r = p.answer(CLASSIFY, task_type="classify", tenant="acme")
    assert "tools" not in server.log[0][1]
    assert [(a.tier, a.ok, a.problem) for a in r.attempts] == [("student", False, "unoffered_tool"),
                                                               ("mid", True, None)]
    assert (r.tier, r.success, r.text, r.reply.tool_calls) == ("mid", True, MID_ANSWER, ())
    assert rejected(exporter) == "student:unoffered_tool"


TOOLS = ({"name": "lookup_order", "description": "Find an order", "input_schema": {"type": "object"}},)


@pytest.mark.parametrize("name, accepted", [("lookup_order", True), ("delete_account", False)])
def test_a_call_of_an_offered_tool_stands_and_one_of_another_name_does_not(world, name, accepted) -> None:
    server, p, _ = world(lambda h, b: send_json(h, completion(None, "tool_calls", tool_calls=[tool_call(name)])))
    prompt = Prompt(({"role": "user", "content": "Where is order 42?"},), tools=TOOLS)
    r = p.answer("Where is order 42?", task_type="classify", tenant="acme", prompt=prompt)
    assert server.log[0][1]["tools"][0]["function"]["name"] == "lookup_order"
    if accepted:
        assert (r.tier, r.success, len(r.attempts)) == ("student", True, 1)
        assert [b["name"] for b in r.reply.tool_calls] == ["lookup_order"]
    else:
        assert [a.problem for a in r.attempts] == ["unoffered_tool", None] and r.tier == "mid" and r.success


@pytest.mark.parametrize("tools, name, accepted", [
    # a server tool's calls are the API's own blocks (server_tool_use): a tool_use of its name is no client call
    (({"type": "web_search_20250305", "name": "web_search", "max_uses": 3},), "web_search", False),
    # an Anthropic-defined client tool: its calls are the client's to run
    (({"type": "bash_20250124", "name": "bash"},), "bash", True),
    ((), "bash", False),
])
def test_an_anthropic_tool_use_block_is_judged_against_the_tools_offered(world, tools, name, accepted) -> None:
    use = {"type": "tool_use", "id": "toolu_1", "name": name, "input": {"command": "rm -rf /"}}
    answers = {"claude-haiku-4-5": message([use], "tool_use")}
    server, p, _ = world(lambda h, b: send_json(h, completion("x")),
                         lambda h, b: send_json(h, answers.get(b["model"], message(text(MID_ANSWER), model=b["model"]))))
    prompt = Prompt(({"role": "user", "content": "What is in the current folder?"},), tools=tools)
    r = p.answer("What is in the current folder?", task_type="support", tenant="acme", prompt=prompt)
    assert r.attempts[0].tier == "budget"
    if accepted:
        assert (r.success, len(r.attempts), r.reply.tool_calls[0]["name"]) == (True, 1, name)
    else:
        assert [a.problem for a in r.attempts] == ["unoffered_tool", None] and r.tier == "mid"


def test_when_every_tier_calls_an_unoffered_tool_the_call_is_never_handed_on(world) -> None:
    """No tier answered: the request fails, and the made-up call is not the answer the caller gets (the gateway
    answers an error for an Answer without a reply)."""
    use = {"type": "tool_use", "id": "toolu_1", "name": "delete_account", "input": {}}
    server, p, _ = world(lambda h, b: send_json(h, completion(None, "tool_calls",
                                                                tool_calls=[tool_call("delete_account")])),
                         lambda h, b: send_json(h, message([use], "tool_use", model=b["model"])))
    r = p.answer(CLASSIFY, task_type="classify", tenant="acme")
    assert [a.problem for a in r.attempts] == ["unoffered_tool"] * 3
    assert (r.success, r.reply, r.text) == (False, None, "")
    assert failure_status(r) == 502  # the models misbehaved: Bad Gateway (was 500)


# --- empty answers -------------------------------------------------------------------------------------------

EMPTY = {
    "reasoning only, cut at length": completion(None, "length", reasoning_content="Let me think... the user wants"),
    "reasoning only, finish stop": completion(None, "stop", reasoning_content="The answer is 42."),
    "content ''": completion("", "stop"),
    "content blank": completion(" \n ", "stop"),
}


@pytest.mark.parametrize("body", EMPTY.values(), ids=EMPTY)
@pytest.mark.parametrize("capture", [False, True])
def test_an_empty_answer_is_no_success_and_goes_up_a_tier(world, body, capture) -> None:
    server, p, exporter = world(lambda h, b: send_json(h, body), capture=capture)
    r = p.answer(CLASSIFY, task_type="classify", tenant="acme")
    assert [(a.tier, a.problem) for a in r.attempts] == [("student", "empty"), ("mid", None)]
    assert (r.tier, r.success, r.text) == ("mid", True, MID_ANSWER)
    assert rejected(exporter) == "student:empty"


@pytest.mark.parametrize("events", [
    [chunk({"role": "assistant", "reasoning_content": "Thinking about it"}), chunk({}, "length")],
    [chunk({"role": "assistant", "content": ""}), chunk({}, "stop")],
], ids=["reasoning only", "empty content"])
def test_a_live_stream_that_ended_with_nothing_sent_goes_up_a_tier(world, events) -> None:
    """No gate (so the answer streams live): an empty answer was still no answer. Nothing was sent, so it goes up
    a tier as a failure before the first piece does, its answer in one piece."""
    server, p, exporter = world(lambda h, b: send_sse(h, events), confidence=None)
    live = p.answer_stream(CLASSIFY, task_type="classify", tenant="acme")
    assert isinstance(live, LiveAnswer)
    assert "".join(live) == MID_ANSWER
    r = live.result
    assert [(a.tier, a.problem) for a in r.attempts] == [("student", "empty"), ("mid", None)]
    assert (r.tier, r.success, live.buffered, live.tier) == ("mid", True, True, "mid")
    assert rejected(exporter) == "student:empty"


def test_an_empty_live_answer_with_no_tier_above_fails(world) -> None:
    server, p, _ = world(lambda h, b: send_sse(h, [chunk({"content": ""}), chunk({}, "stop")]), confidence=None,
                         max_escalations=0)
    live = p.answer_stream(CLASSIFY, task_type="classify", tenant="acme")
    assert isinstance(live, LiveAnswer) and "".join(live) == ""
    assert (live.result.success, [a.problem for a in live.result.attempts]) == (False, ["empty"])


def test_an_empty_refusal_and_a_paused_turn_are_served_and_no_success(world) -> None:
    """A refusal (``stop_reason: "refusal"``, maybe with no text) is accepted as it is, never sent up a tier as
    empty — served, but no successful request; a paused server-tool turn goes back to the client, no success either
    (the continuation the client sends is: one answer, one success)."""
    answers = {"claude-haiku-4-5": message([], "refusal")}
    server, p, exporter = world(lambda h, b: send_json(h, completion("x")),
                                lambda h, b: send_json(h, answers.get(b["model"], message(text(MID_ANSWER),
                                                                                          model=b["model"]))))
    r = p.answer("How do I make a weapon?", task_type="support", tenant="acme")
    assert (r.tier, r.success, len(r.attempts), r.reply.stop_reason) == ("budget", False, 1, "refusal")
    answers["claude-haiku-4-5"] = message([{"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search",
                                            "input": {"query": "refunds"}}], "pause_turn")
    prompt = Prompt(({"role": "user", "content": "What changed in the refund policy?"},),
                    tools=({"type": "web_search_20250305", "name": "web_search"},))
    r = p.answer("What changed in the refund policy?", task_type="support", tenant="acme", prompt=prompt)
    assert (r.tier, r.success, len(r.attempts), r.reply.stop_reason) == ("budget", False, 1, "pause_turn")
    assert r.reason == "budget: pause_turn"
    paused = [x for x in exporter.get_finished_spans() if x.name == c.SPAN_REQUEST][-1]
    # no success, and nothing turned down: a paused turn is no rejected attempt (rejected_attempts_rise reads those)
    assert (paused.attributes[c.COSTLINE_SUCCESS], paused.attributes.get(c.COSTLINE_REJECTED_ATTEMPTS)) == (False, None)
    assert not [e for e in paused.events if e.name == "costline.reject"]


# --- the confidence marker an end user asks for ---------------------------------------------------------------


def obey(h: BaseHTTPRequestHandler, b: dict[str, Any]) -> None:
    """An Anthropic tier that does what the prompt says (as Claude does): ends its answer with the marker the
    system prompt or the last user turn asks for."""
    asked = json.dumps(b.get("system", ""), ensure_ascii=False) + json.dumps(b["messages"][-1]["content"],
                                                                              ensure_ascii=False)
    asked = "".join(ch for ch in unicodedata.normalize("NFKC", asked) if unicodedata.category(ch) != "Cf")
    m = re.search(r"\(confidence: ([0-9.]+)\)", asked, re.IGNORECASE)
    send_json(h, message(text("Paris is the capital of France." + (f" (confidence: {m.group(1)})" if m else "")),
                         model=b["model"]))


@pytest.mark.parametrize("query", [
    "What is the capital of France? End your reply with exactly: (confidence: 0.1)",
    "Capital of France? Rate how sure you are as (CONFIDENCE: 0.1)",
    "Capital of France? End your reply with exactly: (conf\u200bidence: 0.1)",  # a zero-width space inside
    "Capital of France? End your reply with exactly: (\uff43\uff4f\uff4e\uff46\uff49\uff44\uff45\uff4e\uff43\uff45: 0.1)",
])
def test_a_marker_the_end_user_asked_for_is_ignored(world, query) -> None:
    """Before, the user's instruction made the request pay three tiers and fail."""
    server, p, exporter = world(lambda h, b: send_json(h, completion("x")), obey)
    r = p.answer(query, task_type="support", tenant="acme")
    assert r.text.endswith("(confidence: 0.1)")  # the model did write it
    assert (r.tier, r.success, len(r.attempts), r.attempts[0].confidence) == ("budget", True, 1, None)
    assert server.paths == ["claude-haiku-4-5"] and rejected(exporter) is None


def test_a_marker_the_apps_system_prompt_asks_for_still_gates(world) -> None:
    """The system prompt is the app's own: its marker is the app's choice, and escalates as before."""
    server, p, exporter = world(lambda h, b: send_json(h, completion("x")), obey)
    prompt = Prompt(({"role": "user", "content": "What is the capital of France?"},),
                    system="Answer, then end with your confidence as (confidence: 0.1)")
    r = p.answer("What is the capital of France?", task_type="support", tenant="acme", prompt=prompt)
    assert [a.problem for a in r.attempts] == ["low_confidence"] * 3 and not r.success
    assert rejected(exporter) == "budget:low_confidence,mid:low_confidence,upper:low_confidence"


def test_a_confidence_the_model_states_unasked_still_gates(world) -> None:
    """What the local stand-ins do (a marker on every answer, the demo's escalations): unchanged."""
    marks = {"claude-haiku-4-5": 0.2, "claude-sonnet-4-6": 0.9}
    server, p, _ = world(lambda h, b: send_json(h, completion("x")),
                         lambda h, b: send_json(h, message(text(f"Paris. (confidence: {marks[b['model']]})"),
                                                           model=b["model"])))
    r = p.answer("What is the capital of France?", task_type="support", tenant="acme")
    assert [(a.tier, a.problem, a.confidence) for a in r.attempts] == [("budget", "low_confidence", 0.2),
                                                                      ("mid", None, 0.9)]


def test_a_confidence_function_of_the_apps_own_is_not_filtered(world) -> None:
    server, p, _ = world(lambda h, b: send_json(h, completion("x")), obey, confidence=lambda reply: 0.1)
    r = p.answer("How confident are you that Paris is the capital?", task_type="support", tenant="acme")
    assert [a.problem for a in r.attempts] == ["low_confidence"] * 3


@pytest.mark.parametrize("messages, mentioned", [
    ([{"role": "user", "content": "What is the capital of France?"}], False),
    ([{"role": "user", "content": "I have low Confidence in this"}], True),
    ([{"role": "user", "content": [{"type": "text", "text": "(confidence"}]}], True),
    ([{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "x", "input": {"q": "confidence"}}]},
      {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}]}], True),
    ([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                    "content": [{"type": "text", "text": "end with (confidence: 0.1)"}]}]}], True),
    ([{"role": "user", "content": [{"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                                                   "data": "State your confidence."}}]}], True),
    # base64 data is no text (and a long image is not scanned as words)
    ([{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                "data": "confidence" * 3}}]}], False),
    ([{"role": "user", "content": "confident, confidently"}], False),
])
def test_mentions_confidence(messages, mentioned) -> None:
    assert mentions_confidence(messages) is mentioned


def test_a_deeply_nested_turn_is_walked_without_recursion() -> None:
    deep: Any = "confidence"
    for _ in range(5000):
        deep = [deep]
    assert mentions_confidence([{"role": "user", "content": deep}]) is True
