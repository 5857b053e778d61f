"""Text helpers shared by the areas that read text from outside (the receivers, the gateway, the pipeline).

* :func:`well_formed` — a string with each lone UTF-16 surrogate as U+FFFD. JSON's ``"\\ud83d"`` escape decodes
  to one (OpenTelemetry JS cuts attributes by UTF-16 units and writes half an emoji so; a raw client can send
  one on purpose), and nothing downstream takes it: protobuf refuses the string, a tokenizer raises on it, and
  UTF-8 cannot encode it. U+FFFD is what a UTF-8 decoder reads for a byte it cannot.
* :func:`visible_text` — the text a reader sees, for rules that measure or search an end user's text (the
  router's length and keyword rules, the learned router's length feature): invisible and control characters,
  combining marks and runs of whitespace do not pad it, and compatibility forms (fullwidth letters, ligatures)
  read as their plain letters.
"""

from __future__ import annotations

import functools
import re
import unicodedata

__all__ = ["well_formed", "visible_text"]


def well_formed(text: str) -> str:
    """``text`` with each lone surrogate as U+FFFD (``text`` itself, at the cost of one encode, when it has none)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


#: Unicode categories :func:`visible_text` drops: format characters (zero-width spaces and joiners, bidi controls,
#: tags), controls that are not whitespace (NUL, ESC, ...), lone surrogates; and, once NFKC composed what it can,
#: the combining marks left over (a letter followed by 170 accents is one letter).
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})
_MARK_CATEGORIES = frozenset({"Mn", "Me"})
_WHITESPACE = re.compile(r"\s+")
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


def _ranges(categories: frozenset[str], lo: int, hi: int) -> list[tuple[int, int]]:
    """Runs of code points in [lo, hi) of ``categories`` (whitespace excepted: it separates words)."""
    out: list[tuple[int, int]] = []
    for cp in range(lo, hi):
        ch = chr(cp)
        if unicodedata.category(ch) in categories and not ch.isspace():
            if out and out[-1][1] == cp - 1:
                out[-1] = (out[-1][0], cp)
            else:
                out.append((cp, cp))
    return out


def _class(ranges: list[tuple[int, int]]) -> str:
    return "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges)


def _pattern(categories: frozenset[str]) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """Runs of ``categories``' code points: (those of the BMP, those above it). Two patterns, as a character class
    of the BMP only is one table lookup a character, while each range above it is another comparison for every
    character; the second, guarded by the few 1,024-code-point blocks that hold any, runs only on a text with
    characters above the BMP (emoji pass its guard at once)."""
    bmp, astral = _ranges(categories, 0, 0x10000), _ranges(categories, 0x10000, 0x110000)
    blocks: list[tuple[int, int]] = []
    for block in sorted({cp >> 10 for a, b in astral for cp in range(a, b + 1)}):
        if blocks and blocks[-1][1] == block - 1:
            blocks[-1] = (blocks[-1][0], block)
        else:
            blocks.append((block, block))
    guard = [(a << 10, ((b + 1) << 10) - 1) for a, b in blocks]
    return re.compile(f"[{_class(bmp)}]+"), re.compile(f"(?=[{_class(guard)}])[{_class(astral)}]+")


@functools.cache
def _patterns() -> tuple[tuple[re.Pattern[str], re.Pattern[str]], tuple[re.Pattern[str], re.Pattern[str]]]:
    """(hidden characters, hidden characters and combining marks): built once, on first use (~0.2 s)."""
    return _pattern(_HIDDEN_CATEGORIES), _pattern(_HIDDEN_CATEGORIES | _MARK_CATEGORIES)


def _drop(patterns: tuple[re.Pattern[str], re.Pattern[str]], text: str) -> str:
    bmp, astral = patterns
    text = bmp.sub("", text)
    return astral.sub("", text) if _ASTRAL.search(text) else text


def visible_text(text: str, *, max_chars: int | None = None) -> str:
    """``text`` as a reader sees it: format and control characters dropped (whitespace controls such as newlines
    and tabs read as spaces), NFKC-normalised (fullwidth ``ｅｘｐｌａｉｎ`` is ``explain``, ``e`` + U+0301 is ``é``),
    the combining marks NFKC could not compose dropped, every run of whitespace one space, and no whitespace at
    either end. Not case-folded.

    Counting its characters measures what the end user wrote, not the padding around it: 200 zero-width spaces,
    NULs, newlines or accents after a question add nothing, and a ZWJ emoji sequence counts its emoji.

    ``max_chars``: read only the first and the last ``max_chars`` characters of a longer text (its head and tail,
    as one text with a space between), so the work is bounded whatever the text's size; else linear in it."""
    if max_chars is not None and len(text) > 2 * max_chars:
        text = f"{text[:max_chars]}\n{text[-max_chars:]}"
    hidden, hidden_or_marks = _patterns()
    if not text.isascii():
        text = _drop(hidden_or_marks, unicodedata.normalize("NFKC", _drop(hidden, text)))
    else:
        text = hidden[0].sub("", text)
    return _WHITESPACE.sub(" ", text).strip()
