"""Citations from the local stand-in: what the Messages API answers when a request's documents or search results ask
for them (``citations: {"enabled": true}``).

:func:`cited_answer` gives the answer's content: a lead-in text block, then per citable source one text block
quoting the source's first sentence, its ``citations`` holding one citation of the source's kind, as the API
writes them — ``char_location`` (a plain-text document: character offsets), ``content_block_location`` (a
document of content blocks), ``page_location`` (a PDF: page 1) and ``search_result_location`` (a search
result). ``document_index`` counts the request's documents in order, ``search_result_index`` its search results
(a tool result's included). A pure function of the request's turns.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["cited_answer"]

_SENTENCE = re.compile(r".+?(?:[.!?](?=\s|$)|$)", re.S)


def _first_sentence(text: str) -> tuple[str, int, int]:
    """(the first sentence, its start and end offsets) of ``text``."""
    start = len(text) - len(text.lstrip())
    found = _SENTENCE.match(text, start)
    end = found.end() if found else len(text)
    return text[start:end], start, end


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    return [str(b.get("text", "")) for b in content or () if isinstance(b, Mapping) and b.get("type") == "text"]


def _sources(messages: list[Any]) -> list[Mapping[str, Any]]:
    """The documents and search results of the turns, in order (a tool result's content included)."""
    out: list[Mapping[str, Any]] = []
    for m in messages:
        content = m.get("content") if isinstance(m, Mapping) else None
        for block in content if isinstance(content, list) else ():
            if not isinstance(block, Mapping):
                continue
            inner = block.get("content") if block.get("type") == "tool_result" else None
            for b in [block, *(inner if isinstance(inner, list) else ())]:
                if isinstance(b, Mapping) and b.get("type") in ("document", "search_result"):
                    out.append(b)
    return out


def _enabled(block: Mapping[str, Any]) -> bool:
    config = block.get("citations")
    return isinstance(config, Mapping) and config.get("enabled") is True


def _citation(block: Mapping[str, Any], doc_index: int, result_index: int) -> dict[str, Any]:
    title = block.get("title")
    if block.get("type") == "search_result":
        texts = _texts(block.get("content"))
        cited = _first_sentence(texts[0] if texts else "")[0]
        return {"type": "search_result_location", "cited_text": cited, "search_result_index": result_index,
                "source": block.get("source"), "title": title, "start_block_index": 0, "end_block_index": 1}
    source = block.get("source") if isinstance(block.get("source"), Mapping) else {}
    if source.get("type") == "text":
        cited, start, end = _first_sentence(str(source.get("data", "")))
        return {"type": "char_location", "cited_text": cited, "document_index": doc_index, "document_title": title,
                "start_char_index": start, "end_char_index": end}
    if source.get("type") == "content":
        texts = _texts(source.get("content"))
        cited = _first_sentence(texts[0] if texts else "")[0]
        return {"type": "content_block_location", "cited_text": cited, "document_index": doc_index,
                "document_title": title, "start_block_index": 0, "end_block_index": 1}
    return {"type": "page_location", "cited_text": "(page 1 of the stand-in's reading)", "document_index": doc_index,
            "document_title": title, "start_page_number": 1, "end_page_number": 2}


def cited_answer(messages: list[Any]) -> list[dict[str, Any]] | None:
    """The answer's content blocks with citations, or None when no document or search result asks for them."""
    blocks: list[dict[str, Any]] = []
    doc_index = result_index = 0
    for source in _sources(messages):
        if _enabled(source):
            citation = _citation(source, doc_index, result_index)
            blocks.append({"type": "text", "text": citation["cited_text"] or "(empty)", "citations": [citation]})
        if source.get("type") == "search_result":
            result_index += 1
        else:
            doc_index += 1
    if not blocks:
        return None
    return [{"type": "text", "text": "According to the sources: "}, *blocks]
