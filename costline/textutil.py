"""Text helpers shared by the areas that read text from outside (the receivers, the gateway, the pipeline).

* :func:`well_formed` — a string with each lone UTF-16 surrogate as U+FFFD. JSON's ``"\\ud83d"`` escape decodes
  to one (OpenTelemetry JS cuts attributes by UTF-16 units and writes half an emoji so; a raw client can send
  one on purpose), and nothing downstream takes it: protobuf refuses the string, a tokenizer raises on it, and
  UTF-8 cannot encode it. U+FFFD is what a UTF-8 decoder reads for a byte it cannot.
* :func:`visible_text` — the text a reader sees, for rules that measure or search an end user's text (the
  router's length and keyword rules, the learned router's length feature): invisible and control characters,
  combining marks and runs of whitespace do not pad it, and compatibility forms (fullwidth letters, ligatures)
  read as their plain letters.
* :func:`stream_safe` — a text in UAX #15's Stream-Safe Text Format: never more than 30 non-starters (combining
  marks) in a row, a U+034F COMBINING GRAPHEME JOINER put after each 30th. Normalise untrusted text (NFC, NFKC) only
  through it: CPython's ``unicodedata.normalize`` puts a run of combining marks in order with an insertion sort,
  quadratic in the run's length (``"a" + "\u0301\u0316" * 50_000``: seconds of CPU with the GIL held), and no real
  text has a run of more than 30 (UAX #15), so a real text is returned as it is.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import NamedTuple

__all__ = ["well_formed", "visible_text", "stream_safe", "MAX_NON_STARTERS"]


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


#: UAX #15's bound on a run of non-starters in Stream-Safe text.
MAX_NON_STARTERS = 30
#: What :func:`stream_safe` puts after each 30th non-starter of a run: U+034F COMBINING GRAPHEME JOINER (UAX #15 §13),
#: a starter that no letter composes with and no reader sees (:func:`visible_text` drops it as a mark).
_CGJ = "\u034f"


class _StreamTables(NamedTuple):
    astral_mark: re.Pattern[str]  # a non-starter above the BMP
    bmp_runs: re.Pattern[str]  # a run of non-starters that may exceed the bound, in a text with none above the BMP
    runs: re.Pattern[str]  # the same in any text
    heavy: re.Pattern[str]  # a non-starter that counts more than one (U+0344, U+0F73: two marks in NFKD)
    weights: dict[str, int]  # how much each of those counts
    leading: dict[str, int]  # the non-starters a starter's NFKD begins with (none in Unicode 15)
    trailing: dict[str, int]  # the non-starters a starter's NFKD ends with (ǖ: u, U+0308, U+0304)


@functools.cache
def _stream_tables() -> _StreamTables:
    """What :func:`stream_safe` counts with: built once, on first use (~0.1 s).

    Counted as UAX #15 counts, on each character's NFKD: a *non-starter* is a character whose decomposition is all
    combining marks (canonical combining class != 0). That is every mark, and also a few characters of class 0
    (U+0F73 TIBETAN VOWEL SIGN II is U+0F71 U+0F72, halfwidth U+FF9E is U+3099 in NFKC) that
    ``unicodedata.combining`` alone misses and that sort as marks once decomposed. A starter whose decomposition
    ends in marks begins a run with them."""
    weights: dict[str, int] = {}
    trailing: dict[str, int] = {}
    leading: dict[str, int] = {}
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        ch = chr(cp)
        if not unicodedata.combining(ch) and not unicodedata.decomposition(ch):
            continue
        marks = [unicodedata.combining(c) != 0 for c in unicodedata.normalize("NFKD", ch)]
        if all(marks):
            weights[ch] = len(marks)
        else:
            if marks[-1]:
                trailing[ch] = marks[::-1].index(False)
            if marks[0]:
                leading[ch] = marks.index(False)
    # A run of fewer non-starters than this never exceeds the bound, whatever starters stand either side of it (their
    # marks counted): only runs this long are looked at (real text has none).
    shortest = ((MAX_NON_STARTERS - max(trailing.values()) - max(leading.values(), default=0))
                // max(weights.values()) + 1)
    ranges: list[tuple[int, int]] = []
    for cp in sorted(ord(c) for c in weights):
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1] = (ranges[-1][0], cp)
        else:
            ranges.append((cp, cp))
    assert all(a >= 0x10000 or b < 0x10000 for a, b in ranges)
    bmp = _class([r for r in ranges if r[1] < 0x10000])
    astral = _class([r for r in ranges if r[0] >= 0x10000])
    blocks: list[tuple[int, int]] = []
    for block in sorted({cp >> 10 for a, b in ranges if a >= 0x10000 for cp in range(a, b + 1)}):
        if blocks and blocks[-1][1] == block - 1:
            blocks[-1] = (blocks[-1][0], block)
        else:
            blocks.append((block, block))
    guard = _class([(a << 10, ((b + 1) << 10) - 1) for a, b in blocks])
    # As in _pattern: a class of the BMP only is one table lookup a character, while each of the ~70 ranges above it
    # is another comparison for every character. So a text is scanned with the BMP's marks alone unless it holds a
    # mark above the BMP (looked for only in the few 1,024-code-point blocks that hold one: emoji pass at once).
    one = f"(?:[{bmp}]|(?=[{guard}])[{astral}])"
    heavy = {c: w for c, w in weights.items() if w > 1}
    return _StreamTables(re.compile(f"(?=[{guard}])[{astral}]"), re.compile(f"(?<![{bmp}])[{bmp}]{{{shortest},}}"),
                         re.compile(f"(?<!{one}){one}{{{shortest},}}"),
                         re.compile("[%s]" % "".join(f"\\U{ord(c):08x}" for c in sorted(heavy))), heavy, leading,
                         trailing)


def stream_safe(text: str) -> str:
    """``text`` in UAX #15's Stream-Safe Text Format: a U+034F COMBINING GRAPHEME JOINER after each 30th non-starter of
    a run (counted in NFKD, as UAX #15 counts), so that NFC / NFKC of it take linear time. A text with no run of more
    than 30 (every real text) is returned as it is, after one regex scan; each longer run costs one more pass."""
    if text.isascii():
        return text
    tables = _stream_tables()
    runs = tables.runs if _ASTRAL.search(text) and tables.astral_mark.search(text) else tables.bmp_runs
    out: list[str] = []
    at = 0
    for found in runs.finditer(text):
        start, end = found.span()
        out.append(text[at:start])
        count = tables.trailing.get(text[start - 1], 0) if start else 0
        run = found.group()
        if tables.heavy.search(run) is None:  # each counts one: a joiner after the first 30 - count, then every 30
            first = MAX_NON_STARTERS - count
            out.append(run[:first])
            out.extend(f"{_CGJ}{run[i:i + MAX_NON_STARTERS]}" for i in range(first, len(run), MAX_NON_STARTERS))
            count = (len(run) - first) % MAX_NON_STARTERS or MAX_NON_STARTERS if len(run) > first else count + len(run)
        else:
            for ch in run:
                weight = tables.weights.get(ch, 1)
                if count + weight > MAX_NON_STARTERS:
                    out.append(_CGJ)
                    count = 0
                out.append(ch)
                count += weight
        if end < len(text) and count + tables.leading.get(text[end], 0) > MAX_NON_STARTERS:
            out.append(_CGJ)
        at = end
    if not out:
        return text
    out.append(text[at:])
    return "".join(out)


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
        text = _drop(hidden_or_marks, unicodedata.normalize("NFKC", stream_safe(_drop(hidden, text))))
    else:
        text = hidden[0].sub("", text)
    return _WHITESPACE.sub(" ", text).strip()
