"""A refusal through the gateway's OpenAI routes comes back as OpenAI's API gives one, read through the real
``openai`` SDK.

* Chat Completions: ``message.refusal`` holds what the tier wrote (``content`` null; a refusal with no text says
  :data:`~costline.serving.gateway.openai_api.DEFAULT_REFUSAL`), ``finish_reason: "content_filter"``; streamed
  buffered, ``delta.refusal`` chunks and never ``delta.content``; streamed live, the text went out as content before
  the model said it declined, and is not sent again as a ``delta.refusal`` (only ``finish_reason`` says it); a
  refusal without text is one ``delta.refusal``; ``chat.completions.parse`` with a pydantic ``response_format``
  raises ``ContentFilterFinishReasonError`` whose completion holds the refusal. The refusal's message sent back
  (``messages.append(choice.message)``: ``content`` null, ``refusal`` its text; its ``model_dump()``; a ``refusal``
  content part) is the assistant's turn: the tier is asked with that text, not a 400.
* Responses: the message's content is a ``refusal`` part (``output_text`` empty), streamed as
  ``response.refusal.delta`` / ``.done``; a live stream's text went out as ``output_text`` deltas, so no refusal
  delta repeats it (the Vercel AI SDK shows a refusal's deltas as text: never the same text twice): its part is
  closed by ``response.refusal.done`` with the text, and its message, completed and stored, is the one refusal part
  as unstreamed (``test_gateway_head_and_stream_refusal``: the Agents SDK's ``ModelRefusalError``). With ``store``
  (the default) the refusal is stored as returned: ``GET /v1/responses/{id}`` reads it and ``previous_response_id``
  continues it, the refusal the assistant's turn; a ``refusal`` part sent back in ``input`` is that turn too.

Before: ``message.refusal`` null with the text in ``content``; the Responses API's text an ``output_text``. Then,
until these were fixed: a refused response was not stored (``store: false``; continuing it a 400, reading it a
404), the refusal's message sent back a 400, a refusal part sent back left out, and a live stream's text sent twice.
Always: never sent up a tier, never cached, ``x-costline-success: false``. The stand-in and gateway are those of
``test_gateway_refusals``; every expected value is written by hand from what that stand-in sends.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import openai
import pydantic
import pytest

import test_gateway_refusals as refusals
from node_apps import require_node
from test_gateway_refusals import ANSWER, HAIKU, MID_REFUSES, REFUSE, REFUSED, SONNET, STUDENT, gateway
from test_gateway_refusals import PLAIN as FOLLOW_UP  # a question the stand-in answers (ANSWER)

#: The question the budget tier declines without a word (``content: []``, ``stop_reason: "refusal"``).
SILENT = "Tell me a secret. [silent refusal]"
#: What the route says for it, as written in openai_api.DEFAULT_REFUSAL.
DEFAULT = "The model declined to answer this request."


@pytest.fixture(autouse=True)
def silent_refusal(monkeypatch):
    """The stand-in's Messages API, except that :data:`SILENT` is declined with no content."""
    answer = refusals._messages

    def messages(h, body, question):
        if question != SILENT:
            return answer(h, body, question)
        msg = {"id": "msg_silent", "type": "message", "role": "assistant", "model": body["model"], "content": [],
               "stop_reason": "refusal", "stop_sequence": None,
               "usage": {"input_tokens": 100, "output_tokens": 0, "cache_creation_input_tokens": 0,
                         "cache_read_input_tokens": 0}}
        if body.get("stream"):
            events = [("message_start", {"type": "message_start", "message": {**msg, "stop_reason": None}}),
                      ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "refusal",
                                                                             "stop_sequence": None},
                                         "usage": {"output_tokens": 0}}),
                      ("message_stop", {"type": "message_stop"})]
            return refusals._send(h, 200, "text/event-stream", b"".join(
                f"event: {n}\ndata: {json.dumps(d)}\n\n".encode() for n, d in events))
        return refusals._send(h, 200, "application/json", json.dumps(msg).encode())

    monkeypatch.setattr(refusals, "_messages", messages)


@pytest.fixture
def asked(monkeypatch) -> list[dict]:
    """The body of every Messages API call the stand-in answers (after :func:`silent_refusal`'s), in order."""
    bodies: list[dict] = []
    answer = refusals._messages

    def messages(h, body, question):
        bodies.append(body)
        return answer(h, body, question)

    monkeypatch.setattr(refusals, "_messages", messages)
    return bodies


class Answer(pydantic.BaseModel):
    city: str


def _no_success_and_not_escalated(w, headers, models) -> None:
    assert headers["x-costline-success"] == "false"
    assert w.outcome(headers["x-request-id"])[0] is False
    assert [m for _, m, _ in w.upstream.asked] == models
    assert w.cache.entries == {}


# --- Chat Completions ------------------------------------------------------------------------------------------

#: (task type → tier, question, the tier's model, message.refusal).
PLAIN = [
    ("support", REFUSE, HAIKU, REFUSED),  # Anthropic's stop_reason "refusal"
    ("classify", REFUSE, STUDENT, REFUSED),  # an OpenAI-compatible tier's finish_reason "content_filter"
    ("support", SILENT, HAIKU, DEFAULT),  # a refusal without a word
]


@pytest.mark.parametrize("task,question,model,refusal", PLAIN, ids=["anthropic", "content_filter", "silent"])
def test_chat_completion_refusal_is_message_refusal(tmp_path, task, question, model, refusal) -> None:
    with gateway(tmp_path) as w:
        raw = w.chat(task).chat.completions.with_raw_response.create(
            model="gpt-4o", max_tokens=16, messages=[{"role": "user", "content": question}])
        done = raw.parse()
        choice = done.choices[0]
        assert (choice.message.refusal, choice.message.content, choice.finish_reason) == (
            refusal, None, "content_filter")
        _no_success_and_not_escalated(w, raw.headers, [model])


def _stream(client, question):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", max_tokens=16, stream=True, messages=[{"role": "user", "content": question}])
    chunks = list(raw.parse())
    deltas = [(ch.choices[0].delta.content, ch.choices[0].delta.refusal) for ch in chunks if ch.choices]
    return raw.headers, deltas, [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1]


def test_a_buffered_stream_of_a_refusal_is_refusal_deltas(tmp_path) -> None:
    """The validator turns the budget answer down, mid refuses: settled before it streams, so its text comes as
    ``delta.refusal`` (6-character pieces are the stand-in's, joined by the pipeline into one)."""
    with gateway(tmp_path, validator=lambda query, text: "BUDGET" not in text) as w:
        headers, deltas, finish = _stream(w.chat(), MID_REFUSES)
        assert headers["x-costline-stream-mode"] == "buffered"
        assert deltas == [(None, ""), (None, REFUSED), (None, None)]
        assert finish == "content_filter"
        assert headers["x-costline-success"] == "false"
        assert [m for _, m, _ in w.upstream.asked] == [HAIKU, SONNET]  # not sent up to upper
        assert w.cache.entries == {}


#: (question, the deltas as (content, refusal), the SDK helper's final (content, refusal)).
LIVE = [
    # the stand-in's 6-character pieces go out as content before its last event says "refusal": not sent again as
    # a refusal (before: a last (None, "I can't help with"), the text twice in a client that shows both)
    (REFUSE, [("", None), ("I can'", None), ("t help", None), (" with", None), (None, None)], (REFUSED, None)),
    # no piece at all: the answer is settled before the first chunk, so it is a refusal from the start
    (SILENT, [(None, ""), (None, DEFAULT), (None, None)], (None, DEFAULT)),
]


@pytest.mark.parametrize("question,deltas,final", LIVE, ids=["text", "silent"])
def test_a_live_stream_of_a_refusal_sends_its_text_once(tmp_path, question, deltas, final) -> None:
    """No gate: the budget tier streams live; its pieces go out as content before its last event says
    ``refusal``; ``finish_reason: content_filter`` says it declined, no refusal delta repeats the text. The SDK's
    stream helper raises, as it does on any ``content_filter``, with the completion it accumulated."""
    with gateway(tmp_path) as w:
        client = w.chat()
        headers, got, finish = _stream(client, question)
        assert headers["x-costline-stream-mode"] == "live"
        assert got == deltas
        assert "".join(c or "" for c, _ in got) + "".join(r or "" for _, r in got) == (
            REFUSED if question == REFUSE else DEFAULT)  # every delta's text together: the text once
        assert finish == "content_filter"
        assert w.outcome(headers["x-request-id"])[0] is False
        with client.chat.completions.stream(model="gpt-4o", max_tokens=16,
                                            messages=[{"role": "user", "content": question}]) as s:
            with pytest.raises(openai.ContentFilterFinishReasonError) as err:  # the helper's on any content_filter
                s.get_final_completion()
        message = err.value.completion.choices[0].message
        assert (message.content, message.refusal) == final
        assert [m for _, m, _ in w.upstream.asked] == [HAIKU, HAIKU]
        assert w.cache.entries == {}


#: Every Anthropic tier of the stand-in declines :data:`REFUSE`: budget, mid, upper.
ALL_TIERS = [HAIKU, SONNET, "claude-opus-4-8"]


def test_parse_with_a_pydantic_format_raises_content_filter_with_the_refusal(tmp_path) -> None:
    with gateway(tmp_path) as w:
        with pytest.raises(openai.ContentFilterFinishReasonError) as err:
            w.chat().chat.completions.parse(model="gpt-4o", max_tokens=16, response_format=Answer,
                                            messages=[{"role": "user", "content": REFUSE}])
        message = err.value.completion.choices[0].message
        assert (message.refusal, message.content) == (REFUSED, None)
        assert w.cache.entries == {}


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_a_refusal_to_a_structured_request_is_not_sent_up_a_tier(tmp_path, api) -> None:
    with gateway(tmp_path) as w:
        if api == "chat":
            with pytest.raises(openai.ContentFilterFinishReasonError):
                w.chat().chat.completions.parse(model="gpt-4o", max_tokens=16, response_format=Answer,
                                                messages=[{"role": "user", "content": REFUSE}])
        else:
            w.chat().responses.parse(model="gpt-4o", input=REFUSE, text_format=Answer, store=False)
        assert [m for _, m, _ in w.upstream.asked] == [HAIKU]


def test_a_parse_stream_has_the_refusal_on_its_snapshot(tmp_path) -> None:
    with gateway(tmp_path) as w:
        with w.chat().chat.completions.stream(model="gpt-4o", max_tokens=16, response_format=Answer,
                                              messages=[{"role": "user", "content": REFUSE}]) as s:
            events = []
            with pytest.raises(openai.ContentFilterFinishReasonError) as err:
                for event in s:
                    events.append(event.type)
        assert "content.delta" not in events and "refusal.delta" in events
        message = err.value.completion.choices[0].message
        assert (message.refusal, message.content) == (REFUSED, None)


# --- Responses -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("question,refusal", [(REFUSE, REFUSED), (SILENT, DEFAULT)], ids=["text", "silent"])
def test_responses_refusal_is_a_refusal_part(tmp_path, question, refusal) -> None:
    with gateway(tmp_path) as w:
        raw = w.chat().responses.with_raw_response.create(model="gpt-4o", input=question, store=False)
        done = raw.parse()
        assert done.status == "completed"
        assert [(o.type, [c.model_dump() for c in o.content]) for o in done.output] == [
            ("message", [{"type": "refusal", "refusal": refusal}])]
        assert done.output_text == ""
        _no_success_and_not_escalated(w, raw.headers, [HAIKU])


def test_responses_parse_leaves_a_refusal_unparsed(tmp_path) -> None:
    with gateway(tmp_path) as w:
        done = w.chat().responses.parse(model="gpt-4o", input=REFUSE, text_format=Answer, store=False)
        assert done.output_parsed is None
        assert [c.model_dump() for c in done.output[0].content] == [{"type": "refusal", "refusal": REFUSED}]


def _events(w, question):
    raw = w.chat().responses.with_raw_response.create(model="gpt-4o", input=question, store=False, stream=True)
    events = list(raw.parse())
    return raw.headers, events


def test_responses_buffered_stream_of_a_refusal(tmp_path) -> None:
    with gateway(tmp_path, validator=lambda query, text: "BUDGET" not in text) as w:
        headers, events = _events(w, MID_REFUSES)
        assert headers["x-costline-stream-mode"] == "buffered"
        kinds = [e.type for e in events]
        assert "response.output_text.delta" not in kinds
        assert [(e.type, e.content_index) for e in events if "refusal" in e.type] == [
            ("response.refusal.delta", 0), ("response.refusal.done", 0)]
        assert [e.delta for e in events if e.type == "response.refusal.delta"] == [REFUSED]
        final = events[-1]
        assert final.type == "response.completed"
        assert [c.model_dump() for c in final.response.output[0].content] == [{"type": "refusal", "refusal": REFUSED}]
        assert [m for _, m, _ in w.upstream.asked] == [HAIKU, SONNET]


def test_responses_live_stream_of_a_refusal_sends_its_text_once(tmp_path) -> None:
    """Live: the text went out as output_text deltas of part 0, which ``response.refusal.done`` closes as the refusal
    without the text again (before: a ``response.refusal.delta`` of the whole text and a part 1 holding it; then an
    output_text part and an empty refusal part 1, which the Agents SDK took for an answer)."""
    with gateway(tmp_path) as w:
        headers, events = _events(w, REFUSE)
        assert headers["x-costline-stream-mode"] == "live"
        assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == REFUSED
        assert [e for e in events if e.type == "response.refusal.delta"] == []
        assert [(e.type, e.content_index) for e in events if e.type.startswith("response.content_part")] == [
            ("response.content_part.added", 0), ("response.content_part.done", 0)]
        assert [e.refusal for e in events if e.type == "response.refusal.done"] == [REFUSED]
        final = events[-1].response
        assert [c.model_dump() for c in final.output[0].content] == [{"type": "refusal", "refusal": REFUSED}]
        assert w.outcome(headers["x-request-id"])[0] is False


# --- a refusal stored, sent back, and continued -----------------------------------------------------------------

#: (task type, question, streamed live, the stored message's content, the assistant turn a continuation sends).
STORED = [
    ("support", REFUSE, False, [{"type": "refusal", "refusal": REFUSED}], REFUSED),
    ("support", SILENT, False, [{"type": "refusal", "refusal": DEFAULT}], DEFAULT),
    ("classify", REFUSE, False, [{"type": "refusal", "refusal": REFUSED}], REFUSED),  # the student's content_filter
    ("support", REFUSE, True, [{"type": "refusal", "refusal": REFUSED}], REFUSED),  # streamed live as output_text
]


@pytest.mark.parametrize("task,question,stream,content,said", STORED,
                         ids=["anthropic", "silent", "content_filter", "live"])
def test_a_stored_refusal_is_read_back_and_continued(tmp_path, asked, task, question, stream, content, said) -> None:
    """``store`` defaults to true: the refusal is stored as it was returned, ``GET /v1/responses/{id}`` reads it,
    and ``previous_response_id`` continues it with the refusal as the assistant's turn (before: ``store: false``,
    the continuation a 400, the read a 404)."""
    with gateway(tmp_path) as w:
        if stream:
            done = list(w.chat(task).responses.create(model="gpt-4o", input=question, stream=True))[-1].response
        else:
            done = w.chat(task).responses.create(model="gpt-4o", input=question)
        assert done.store is True
        assert [c.model_dump() for c in done.output[0].content] == content
        assert w.chat().responses.retrieve(done.id).model_dump() == done.model_dump()
        after = w.chat().responses.create(model="gpt-4o", input=FOLLOW_UP, previous_response_id=done.id)
        assert after.output_text == ANSWER
        assert asked[-1]["messages"] == [{"role": "user", "content": question},
                                         {"role": "assistant", "content": said},
                                         {"role": "user", "content": FOLLOW_UP}]


#: How an app sends a Chat Completions refusal back in its history: the openai SDK's message object itself
#: (``messages.append(choice.message)``: ``content`` null, ``refusal`` the text), LiteLLM's ``model_dump()`` of it
#: (every field, ``None`` ones too), or a ``refusal`` content part (OpenAI's schema has that form too).
SENT_BACK = {
    "message": lambda m: m,
    "model_dump": lambda m: m.model_dump(),
    "refusal_part": lambda m: {"role": "assistant", "content": [{"type": "refusal", "refusal": m.refusal}]},
}


@pytest.mark.parametrize("form", list(SENT_BACK))
def test_a_refusal_sent_back_in_chat_messages_is_the_assistant_turn(tmp_path, asked, form) -> None:
    """Before: ``400 messages[1].content: text (a string or text parts) is required`` — the gateway refused the
    message it had returned one turn earlier, and the conversation could not go on."""
    with gateway(tmp_path) as w:
        client = w.chat()
        first = client.chat.completions.create(model="gpt-4o", max_tokens=16,
                                               messages=[{"role": "user", "content": REFUSE}])
        assert (first.choices[0].message.content, first.choices[0].message.refusal) == (None, REFUSED)
        history = [{"role": "user", "content": REFUSE}, SENT_BACK[form](first.choices[0].message),
                   {"role": "user", "content": FOLLOW_UP}]
        after = client.chat.completions.create(model="gpt-4o", max_tokens=16, messages=history)
        assert after.choices[0].message.content == ANSWER
        assert asked[-1]["messages"] == [{"role": "user", "content": REFUSE},
                                         {"role": "assistant", "content": REFUSED},
                                         {"role": "user", "content": FOLLOW_UP}]


def test_a_refusal_part_sent_back_in_responses_input_is_the_assistant_turn(tmp_path, asked) -> None:
    """A client that keeps its own history (``store: false``) sends the refused output back as input. Before, the
    refusal part was left out: the assistant turn was empty and dropped, and the tier was asked the declined question
    again with the new one."""
    with gateway(tmp_path) as w:
        client = w.chat()
        first = client.responses.create(model="gpt-4o", input=REFUSE, store=False)
        history = [{"role": "user", "content": REFUSE}, *(o.model_dump() for o in first.output),
                   {"role": "user", "content": FOLLOW_UP}]
        after = client.responses.create(model="gpt-4o", input=history, store=False)
        assert after.output_text == ANSWER
        assert asked[-1]["messages"] == [{"role": "user", "content": REFUSE},
                                         {"role": "assistant", "content": REFUSED},
                                         {"role": "user", "content": FOLLOW_UP}]


# --- the Vercel AI SDK's streamText -----------------------------------------------------------------------------

#: The AI SDK app folder (its pinned packages in node_modules: ``npm ci --prefix tests/js/aisdk``).
AISDK_APP = Path(__file__).parent / "js" / "aisdk"
#: @ai-sdk/openai's chat model and its default (Responses) model, each a ``streamText`` of the question: the text
#: it shows (``textStream``) and its finish reason. Run from tests/js/aisdk so its packages resolve.
AISDK_STREAM = """
import { createOpenAI } from '@ai-sdk/openai';
import { streamText } from 'ai';
const openai = createOpenAI({ baseURL: process.env.GATEWAY, apiKey: 'unused',
                              headers: { 'x-costline-task-type': process.env.TASK, 'x-costline-tenant': 'acme' } });
const out = {};
for (const [name, model] of [['chat', openai.chat('gpt-4o')], ['responses', openai('gpt-4o')]]) {
  const s = streamText({ model, prompt: process.env.QUESTION, maxRetries: 0 });
  let text = '';
  for await (const piece of s.textStream) text += piece;
  out[name] = { text, finish: await s.finishReason };
}
console.log(JSON.stringify(out));
"""


@pytest.mark.parametrize("task", ["support", "classify"], ids=["anthropic", "content_filter"])
def test_the_vercel_ai_sdk_shows_a_live_refusal_once(tmp_path, task) -> None:
    """The AI SDK adds a ``delta.refusal`` (chat) and a ``response.refusal.delta`` (Responses) to the text it shows.
    Before: ``I can't help withI can't help with`` on both APIs, both tiers. It still finishes ``content-filter``:
    from ``finish_reason`` (chat), from the refusal part's ``response.refusal.done`` (Responses)."""
    node = require_node(AISDK_APP, ("ai", "@ai-sdk/openai"))
    with gateway(tmp_path) as w:
        done = subprocess.run([node, "--input-type=module", "-e", AISDK_STREAM], cwd=AISDK_APP, capture_output=True,
                              text=True, timeout=120, check=False,
                              env={**os.environ, "GATEWAY": f"http://127.0.0.1:{w.gw.port}/v1", "TASK": task,
                                   "QUESTION": REFUSE})
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "chat": {"text": REFUSED, "finish": "content-filter"},
        "responses": {"text": REFUSED, "finish": "content-filter"}}
