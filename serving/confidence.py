"""The confidence a model states at the end of its answer: the ``(confidence: 0.87)`` marker.

The pipeline's default confidence function (:func:`costline.serving.pipeline.marker_confidence`)
reads it to escalate an unsure answer; the local stand-in
(:mod:`costline.sim.standin_model`) ends every answer with the marker.

costline never asks a model for the marker: with real models it is there when the *prompt* asks for it. The app's
system prompt may (the app's own words); an end user's turn must not decide what a request costs, so the pipeline
ignores the marker of an answer whose user or assistant turns mention confidence (:func:`mentions_confidence`: the
marker's syntax, or the word in any case). A paraphrased instruction ("end with how sure you are, as a number in
brackets") can still steer what a model states: an app whose end users are not trusted should judge answers with a
validator, or set ``[serving.escalation] min_confidence = 0``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["parse_confidence", "mentions_confidence"]

_CONFIDENCE = re.compile(r"\(confidence: ([01](?:\.\d+)?)\)\s*$")
#: The word (and so the marker's own syntax, "(confidence"), in any case, once the text is NFKC-normalized and its
#: invisible format characters (zero-width spaces, joiners...) are removed.
_MENTION = re.compile(r"confidence", re.IGNORECASE)
#: Block fields that hold no words: base64 data, a thinking block's signature.
_OPAQUE = frozenset({"signature"})


def parse_confidence(text: str) -> float | None:
    """The ``(confidence: 0.87)`` marker at the end of an answer, if any."""
    found = _CONFIDENCE.search(text or "")
    return float(found.group(1)) if found else None


def _strings(messages: Iterable[Any]) -> Iterable[str]:
    """Every string of ``messages`` (their text, tool inputs and results, plain-text documents...), walked without
    recursion; base64 data (images, PDFs) and signatures left out."""
    stack: list[Any] = list(messages)[::-1]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            yield value
        elif isinstance(value, Mapping):
            opaque = value.get("type") in ("base64", "redacted_thinking")
            stack.extend(v for k, v in reversed(list(value.items()))
                         if k not in _OPAQUE and not (opaque and k == "data"))
        elif isinstance(value, (list, tuple)):
            stack.extend(reversed(value))


def _plain(text: str) -> str:
    if text.isascii():
        return text
    text = unicodedata.normalize("NFKC", text)
    return "".join(c for c in text if unicodedata.category(c) != "Cf")


def mentions_confidence(messages: Iterable[Any]) -> bool:
    """True when the turns (``messages``: a request's user and assistant turns, Messages API shapes; never its
    system prompt) mention confidence: the marker's syntax or the word, in any case (NFKC-normalized, invisible
    characters removed). Such a request's stated confidence may be the end user's, not the model's."""
    return any(_MENTION.search(_plain(s)) for s in _strings(messages))
