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

import functools
import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

from costline.textutil import stream_safe

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


#: How much of a long string is read normalised: its first and its last ``MAX_MENTION_CHARS`` characters (as
#: :func:`~costline.textutil.visible_text` reads a routed text); the whole of it is searched as it was sent.
MAX_MENTION_CHARS = 65_536


@functools.cache
def _format_characters() -> re.Pattern[str]:
    """Runs of the format characters NFKC leaves (zero-width spaces and joiners, bidi controls, tags...): built once,
    on first use."""
    ranges: list[list[int]] = []
    for cp in range(0x110000):
        if not 0xD800 <= cp < 0xE000 and unicodedata.category(chr(cp)) == "Cf":
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1][1] = cp
            else:
                ranges.append([cp, cp])
    return re.compile("[%s]+" % "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges))


def _plain(text: str) -> str:
    """``text`` NFKC-normalised (through :func:`~costline.textutil.stream_safe`: linear in its length whatever its
    combining marks), its format characters removed; a longer text than 2 × :data:`MAX_MENTION_CHARS` as its head and
    tail only, so the work is bounded."""
    if text.isascii():
        return text
    if len(text) > 2 * MAX_MENTION_CHARS:
        text = f"{text[:MAX_MENTION_CHARS]}\n{text[-MAX_MENTION_CHARS:]}"
    return _format_characters().sub("", unicodedata.normalize("NFKC", stream_safe(text)))


def mentions_confidence(messages: Iterable[Any]) -> bool:
    """True when the turns (``messages``: a request's user and assistant turns, Messages API shapes; never its
    system prompt) mention confidence: the marker's syntax or the word, in any case (NFKC-normalized, invisible
    characters removed). Such a request's stated confidence may be the end user's, not the model's.

    Each string is searched whole as sent, and its normalised form within its first and last
    :data:`MAX_MENTION_CHARS` characters (bounded work per string): a mention spelled in other forms (fullwidth,
    zero-width joiners) in the middle of a longer string is not seen — as a paraphrase is not (the module's note)."""
    return any(_MENTION.search(s) or (not s.isascii() and _MENTION.search(_plain(s))) for s in _strings(messages))
