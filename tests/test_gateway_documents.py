"""Documents, search results and citations through the gateway, driven by the real ``anthropic`` SDK: a plain-text
document reaches the student (an OpenAI-compatible tier) as text; a PDF, or a source that asks for citations,
is not sent there (that tier fails and the request goes up to an Anthropic tier) — never answered by a model that
did not see it; an answer's citations come back on its text blocks, created and streamed; a request that asks for
citations is never cached. Expected citations are written out from the document text here (the stand-in quotes a
source's first sentence, as documented in costline.sim.standin_documents). An app on the ``openai`` SDK sends a PDF or
a text file as a file input: it becomes a document block the same way."""

from __future__ import annotations

import base64

import anthropic
import openai
import pytest
from gateways import DictCache, anthropic_client, openai_client, routed_gateway

from costline.serving.gateway.app import CACHE_MODEL

POLICY = "The refund window is 30 days from delivery. Opened software is not refundable."
QUESTION = "How long is the refund window?"


def _doc(*, cite: bool = False, pdf: bool = False, text: str = POLICY) -> dict:
    source = ({"type": "base64", "media_type": "application/pdf", "data": base64.b64encode(b"%PDF-1.4\n%%EOF").decode()}
              if pdf else {"type": "text", "media_type": "text/plain", "data": text})
    return {"type": "document", "source": source, "title": "Refund policy",
            **({"citations": {"enabled": True}} if cite else {})}


@pytest.fixture(scope="module")
def setup(standin, tmp_path_factory):
    cache = DictCache()
    with routed_gateway(standin, tmp_path_factory.mktemp("keys") / "keys.json", cache=cache) as gw:
        yield gw, cache


@pytest.mark.parametrize("route, cite, pdf, tier, escalations", [
    ("anthropic", False, False, "budget", "0"),
    ("anthropic", True, False, "budget", "0"),
    ("anthropic", False, True, "budget", "0"),
    ("student", False, False, "student", "0"),  # a text document: the student reads it as text
    ("student", True, False, "mid", "1"),  # citations: the student cannot give them
    ("student", False, True, "mid", "1"),  # a PDF: the student cannot read it
])
def test_which_tier_answers_a_question_about_a_document(setup, standin, route, cite, pdf, tier, escalations) -> None:
    gw, _ = setup
    paid = len(standin.log.paid())
    raw = anthropic_client(gw, route, f"doc-{route}-{cite}-{pdf}").messages.with_raw_response.create(
        model="claude-haiku-4-5", max_tokens=300,
        messages=[{"role": "user", "content": [_doc(cite=cite, pdf=pdf), {"type": "text", "text": QUESTION}]}])
    message = raw.parse()
    assert (raw.headers["x-costline-tier"], raw.headers["x-costline-escalations"]) == (tier, escalations)
    # a tier that cannot read the document is never called: no paid call to the student
    assert [e.api for e in standin.log.paid()[paid:]] == (["openai"] if tier == "student" else ["anthropic"])
    cited = [c for b in message.content if b.type == "text" for c in (b.citations or [])]
    if cite:
        assert [(c.type, c.cited_text, c.start_char_index, c.end_char_index, c.document_index) for c in cited] == [
            ("char_location", "The refund window is 30 days from delivery.", 0, 43, 0)]
    else:
        assert cited == []


def test_the_student_reads_the_documents_text(setup, standin) -> None:
    """The student's prompt holds the document: the same question costs more input tokens with it than without."""
    gw, _ = setup
    client = anthropic_client(gw, "student", "doc-read")
    long_text = " ".join(["Clause"] * 200) + "."
    sizes = []
    for content in ([{"type": "text", "text": QUESTION}], [_doc(text=long_text), {"type": "text", "text": QUESTION}]):
        paid = len(standin.log.paid())
        client.messages.create(model="m", max_tokens=100, messages=[{"role": "user", "content": content}])
        (entry,) = standin.log.paid()[paid:]
        assert entry.api == "openai"
        sizes.append(entry.input_tokens)
    assert sizes[1] - sizes[0] >= 200


@pytest.mark.parametrize("route", ["anthropic", "student"])
def test_citations_stream_to_the_sdk(setup, route) -> None:
    gw, _ = setup
    with anthropic_client(gw, route, "doc-stream").messages.stream(
            model="claude-haiku-4-5", max_tokens=300,
            messages=[{"role": "user", "content": [_doc(cite=True), {"type": "text", "text": QUESTION}]}]) as s:
        streamed = "".join(s.text_stream)
        message = s.get_final_message()
    assert streamed == "".join(b.text for b in message.content if b.type == "text")
    cited = [c for b in message.content for c in (b.citations or [])]
    assert [(c.type, c.cited_text, c.document_title) for c in cited] == [
        ("char_location", "The refund window is 30 days from delivery.", "Refund policy")]


def test_search_results_from_a_tool_are_cited(setup) -> None:
    gw, _ = setup
    result = {"type": "search_result", "source": "https://help.example.com/refunds", "title": "Refunds",
              "content": [{"type": "text", "text": POLICY}], "citations": {"enabled": True}}
    turns = [{"role": "user", "content": QUESTION},
             {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "search_help",
                                                "input": {"query": "refund window"}}]},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [result]}]}]
    tools = [{"name": "search_help", "description": "Searches the help centre.",
              "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}}}]
    for route in ("anthropic", "student"):
        raw = anthropic_client(gw, route, "doc-search").messages.with_raw_response.create(
            model="claude-haiku-4-5", max_tokens=300, messages=turns, tools=tools)
        message = raw.parse()
        assert raw.headers["x-costline-tier"] != "student"
        cited = [c for b in message.content if b.type == "text" for c in (b.citations or [])]
        assert [(c.type, c.source, c.search_result_index, c.cited_text) for c in cited] == [
            ("search_result_location", "https://help.example.com/refunds", 0,
             "The refund window is 30 days from delivery.")]


def test_a_request_for_citations_is_never_cached_and_a_document_is_part_of_the_key(setup, standin) -> None:
    gw, _ = setup
    client = anthropic_client(gw, "anthropic", "doc-cache")

    def ask(doc: dict) -> anthropic.types.Message:
        return client.messages.create(model="claude-haiku-4-5", max_tokens=300, messages=[
            {"role": "user", "content": [doc, {"type": "text", "text": QUESTION}]}])

    paid = len(standin.log.paid())
    assert ask(_doc(cite=True)).model != CACHE_MODEL
    again = ask(_doc(cite=True))
    assert again.model != CACHE_MODEL and any(b.citations for b in again.content)
    assert ask(_doc()).model != CACHE_MODEL
    assert ask(_doc()).model == CACHE_MODEL  # the same document and question, no citations asked: cached
    assert ask(_doc(text="Refunds are accepted for 14 days.")).model != CACHE_MODEL  # another document: another key
    assert len(standin.log.paid()) == paid + 4


PDF_DATA = "data:application/pdf;base64," + base64.b64encode(b"%PDF-1.4\n%%EOF").decode()
TEXT_DATA = "data:text/plain;base64," + base64.b64encode(POLICY.encode()).decode()


@pytest.mark.parametrize("api", ["chat", "responses"])
@pytest.mark.parametrize("route, data, tier", [
    ("anthropic", PDF_DATA, "budget"),
    ("student", PDF_DATA, "mid"),  # the student cannot read a PDF: not sent there
    ("student", TEXT_DATA, "student"),  # a plain-text file: read as text
])
def test_an_openai_apps_file_reaches_the_tiers_as_a_document(setup, standin, api, route, data, tier) -> None:
    """The openai SDK's file inputs (a ``file`` part of a chat message, an ``input_file`` of a response) become a
    Messages ``document`` block: an Anthropic tier reads the PDF; until 2026-12-03 they were refused with a 400."""
    gw, _ = setup
    client = openai_client(gw, route, f"file-{api}-{route}")
    paid = len(standin.log.paid())
    if api == "chat":
        raw = client.chat.completions.with_raw_response.create(model="gpt-5-mini", messages=[{"role": "user", "content": [
            {"type": "file", "file": {"file_data": data, "filename": "policy.pdf"}},
            {"type": "text", "text": QUESTION}]}])
        assert raw.parse().choices[0].message.content
    else:
        raw = client.responses.with_raw_response.create(model="gpt-5-mini", input=[{"role": "user", "content": [
            {"type": "input_file", "file_data": data, "filename": "policy.pdf"},
            {"type": "input_text", "text": QUESTION}]}])
        assert raw.parse().output_text
    assert raw.headers["x-costline-tier"] == tier
    assert [e.api for e in standin.log.paid()[paid:]] == (["openai"] if tier == "student" else ["anthropic"])


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_a_file_stored_at_openai_is_refused_naming_the_part(setup, api) -> None:
    gw, _ = setup
    client = openai_client(gw, "anthropic", "file-id")
    with pytest.raises(openai.BadRequestError) as refused:
        if api == "chat":
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": [
                {"type": "file", "file": {"file_id": "file-abc"}}, {"type": "text", "text": QUESTION}]}])
        else:
            client.responses.create(model="m", input=[{"role": "user", "content": [
                {"type": "input_file", "file_id": "file-abc"}, {"type": "input_text", "text": QUESTION}]}])
    assert "file_id names a file stored at OpenAI" in str(refused.value)
