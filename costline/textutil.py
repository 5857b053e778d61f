"""Text helpers shared by the areas that read text from outside (the receivers, the gateway, the pipeline).

* :func:`well_formed` — a string with each lone UTF-16 surrogate as U+FFFD. JSON's ``"\\ud83d"`` escape decodes
  to one (OpenTelemetry JS cuts attributes by UTF-16 units and writes half an emoji so; a raw client can send
  one on purpose), and nothing downstream takes it: protobuf refuses the string, a tokenizer raises on it, and
  UTF-8 cannot encode it. U+FFFD is what a UTF-8 decoder reads for a byte it cannot.
* :func:`visible_text` — the text a reader sees, for rules that measure or search an end user's text (the
  router's length and keyword rules, the learned router's length feature): invisible and control characters,
  combining marks that are no part of a letter (accent stuffing) and runs of whitespace do not pad it, a letter's
  own marks (a Hindi vowel sign, a Hebrew point) are kept, and compatibility forms (fullwidth letters, ligatures)
  read as their plain letters.
* :func:`stream_safe` — a text in UAX #15's Stream-Safe Text Format: never more than 30 non-starters (combining
  marks) in a row, a U+034F COMBINING GRAPHEME JOINER put after each 30th. Normalise untrusted text (NFC, NFKC) only
  through it: CPython's ``unicodedata.normalize`` puts a run of combining marks in order with an insertion sort,
  quadratic in the run's length (``"a" + "\u0301\u0316" * 50_000``: seconds of CPU with the GIL held), and no real
  text has a run of more than 30 (UAX #15), so a real text is returned as it is.
* :func:`mark_code_points` / :func:`combining_marks` — the combining marks (Mn, Mc, Me), as code points or as a
  regex character class's body, for word patterns that take a mark for part of its word (the router's keywords, the
  learned router's words).

Every table here is built from one read of Unicode's data (:func:`_unicode`, ~0.15 s), on first use, once.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Iterable
from itertools import groupby
from typing import NamedTuple

__all__ = ["well_formed", "visible_text", "stream_safe", "mark_code_points", "combining_marks", "MAX_NON_STARTERS",
           "MAX_MARKS_PER_LETTER"]


def well_formed(text: str) -> str:
    """``text`` with each lone surrogate as U+FFFD (``text`` itself, at the cost of one encode, when it has none)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


#: Unicode categories :func:`visible_text` drops: format characters (zero-width spaces and joiners, bidi controls,
#: tags), controls that are not whitespace (NUL, ESC, ...), lone surrogates.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})
_MARK_CATEGORIES = frozenset({"Mn", "Mc", "Me"})
#: The categories of the code points whose Unicode data is the default (no decomposition, combining class 0, no name):
#: unassigned ones and private use. Nine in ten code points; not read one by one.
_NO_DATA = frozenset({"Cn", "Co"})
_WHITESPACE = re.compile(r"\s+")
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")

#: The most combining marks of a letter's own script :func:`visible_text` keeps after it. Real text carries up to
#: three (the ज़ें of Hindi चीज़ें: nukta, vowel sign E, anusvara; the שַּׁ of pointed Hebrew הַשַּׁבָּת: patah, dagesh,
#: shin dot; Tibetan སྒྲུ: two subjoined letters and a vowel) and Burmese four (ကြွေး: medials ra and wa, vowel sign
#: E, visarga; its rare five-mark syllables, မျှော်, lose the last). More after one letter is stuffing.
MAX_MARKS_PER_LETTER = 4


def _class(ranges: list[tuple[int, int]]) -> str:
    return "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges)


def _set(cps: Iterable[int]) -> str:
    """A regex character class's body holding the code points ``cps`` (sorted), as runs."""
    ranges: list[tuple[int, int]] = []
    for cp in cps:
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1] = (ranges[-1][0], cp)
        else:
            ranges.append((cp, cp))
    return _class(ranges)


def _guard(cps: Iterable[int]) -> str:
    """A class's body holding the 1,024-code-point blocks that hold any of ``cps``: a cheap first test before a class
    of many ranges above the BMP (each such range is another comparison for every character tested)."""
    blocks: list[tuple[int, int]] = []
    for block in sorted({cp >> 10 for cp in cps}):
        if blocks and blocks[-1][1] == block - 1:
            blocks[-1] = (blocks[-1][0], block)
        else:
            blocks.append((block, block))
    return _class([(a << 10, ((b + 1) << 10) - 1) for a, b in blocks])


def _pattern(cps: list[int]) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """Runs of the code points ``cps`` (sorted): (those of the BMP, those above it). Two patterns, as a character class
    of the BMP only is one table lookup a character, while each range above it is another comparison for every
    character; the second, guarded by the few 1,024-code-point blocks that hold any, runs only on a text with
    characters above the BMP (emoji pass its guard at once)."""
    bmp, astral = [cp for cp in cps if cp < 0x10000], [cp for cp in cps if cp >= 0x10000]
    return re.compile(f"[{_set(bmp)}]+"), re.compile(f"(?=[{_guard(astral)}])[{_set(astral)}]+")


def _script(ch: str) -> str:
    """The script of a letter or a combining mark, as its Unicode name tells it: the name's first word (DEVANAGARI
    LETTER KA, DEVANAGARI VOWEL SIGN I; HEBREW POINT SHEVA; ARABIC FATHA). The standard library has no Script
    property, and the name is what is wanted here anyway: Scripts.txt files Arabic's harakat under "Inherited", as it
    does the accents shared by Latin, Greek and Cyrillic, whose names all begin COMBINING."""
    return unicodedata.name(ch, "").partition(" ")[0]


class _Unicode(NamedTuple):
    """The code points the tables are built from, each ascending."""

    hidden: tuple[int, ...]  # format and control characters that are not whitespace, lone surrogates (Cc, Cf, Cs)
    marks: tuple[int, ...]  # combining marks (Mn, Mc, Me)
    letters: tuple[int, ...]  # letters (L*)
    decomposing: tuple[int, ...]  # not surrogates: a combining class or a decomposition (what stream_safe counts)


@functools.cache
def _unicode() -> _Unicode:
    """One read of every code point's Unicode data (~0.15 s, once, on first use): what :func:`visible_text`,
    :func:`stream_safe` and the mark tables are built from. The categories of all 1,114,112 are read in one C-level
    pass, as ~3,300 runs of one category; only the ~150,000 code points that are assigned and not private use
    (:data:`_NO_DATA`) are looked at one by one."""
    hidden: list[int] = []
    marks: list[int] = []
    letters: list[int] = []
    decomposing: list[int] = []
    start = 0
    for category, run in groupby(map(unicodedata.category, map(chr, range(0x110000)))):
        cps = range(start, start + len(list(run)))
        start = cps.stop
        if category in _NO_DATA:
            continue
        if category in _HIDDEN_CATEGORIES:
            hidden.extend(cp for cp in cps if not chr(cp).isspace())  # whitespace separates words: it is kept
        elif category in _MARK_CATEGORIES:
            marks.extend(cps)
        elif category[0] == "L":
            letters.extend(cps)
        if category != "Cs":
            decomposing.extend(cp for cp in cps
                               if unicodedata.combining(chr(cp)) or unicodedata.decomposition(chr(cp)))
    return _Unicode(tuple(hidden), tuple(marks), tuple(letters), tuple(decomposing))


def mark_code_points(*categories: str) -> tuple[int, ...]:
    """The code points of the combining marks of ``categories`` (``"Mn"`` nonspacing, ``"Mc"`` spacing, ``"Me"``
    enclosing; none named: all three), ascending. From :func:`_unicode`: built once, on first use."""
    wanted = frozenset(categories) or _MARK_CATEGORIES
    if not wanted <= _MARK_CATEGORIES:
        raise ValueError(f"{', '.join(sorted(wanted - _MARK_CATEGORIES))}: not a combining mark's category (Mn, Mc, Me)")
    return tuple(cp for cp in _unicode().marks if unicodedata.category(chr(cp)) in wanted)


@functools.cache
def combining_marks() -> str:
    """The body of a regex character class of every combining mark (categories Mn, Mc, Me: a Hindi vowel sign, a Thai
    tone mark, an accent), for the word patterns that must take a mark for part of its word (``\\w`` does not: a
    mark is not alphanumeric). Built once, on first use."""
    return _set(mark_code_points())


class _Tables(NamedTuple):
    hidden: tuple[re.Pattern[str], re.Pattern[str]]  # format and control characters, lone surrogates
    hidden_or_loose: tuple[re.Pattern[str], re.Pattern[str]]  # those, and the marks of no script (COMBINING ACUTE...)
    stray_bmp: re.Pattern[str]  # a script's mark that is not part of a letter, and the rest of its run: BMP text
    stray: re.Pattern[str]  # the same, in any text
    astral_script: re.Pattern[str]  # a letter or mark above the BMP of a script that has marks of its own


@functools.cache
def _tables() -> _Tables:
    """What :func:`visible_text` drops with: built once, on first use (~0.2 s, with :func:`_unicode`).

    A *script's* mark is a combining mark named for a script that has letters too (a Devanagari vowel sign, a Hebrew
    point, an Arabic haraka, a Thai tone mark): it is part of the letter before it, so it is kept when it follows a
    letter of its script, directly or after other such marks, :data:`MAX_MARKS_PER_LETTER` at most. A *loose* mark is
    any other (the accents of the COMBINING blocks, which NFKC composes with each letter they belong to; variation
    selectors; musical marks): what NFKC left of those is decoration, and dropped."""
    data = _unicode()
    hidden = list(data.hidden)
    marks: dict[str, list[int]] = {}
    for cp in data.marks:
        marks.setdefault(_script(chr(cp)), []).append(cp)
    letters = data.letters
    own: dict[str, list[int]] = {}  # script -> its letters and its marks
    for cp in letters:
        script = _script(chr(cp))
        if script in marks:
            own.setdefault(script, []).append(cp)
    loose = sorted(cp for script, cps in marks.items() if script not in own for cp in cps)
    for script in own:
        own[script] = sorted(own[script] + marks[script])
    scripts = sorted(own, key=lambda s: marks[s][0])
    mark = sorted(cp for s in scripts for cp in marks[s])

    def stray(plane: Callable[[int], bool]) -> re.Pattern[str]:
        # A script's mark past the limit (MAX_MARKS_PER_LETTER marks before it), or that follows neither a letter nor a
        # mark of its own script (after a space, a symbol, a digit, a letter of another script), and the rest of its
        # run. Comparing a mark with the character just before it compares it with its letter: every mark before it in
        # the run passed, so is of the letter's script. Real text holds none: the pattern is one scan of the text
        # (a mark is tested against the character before it, its own script's pair found in a few tests).
        one = _set(cp for cp in mark if plane(cp))
        anyone = _set(cp for cp in sorted(cp for s in scripts for cp in own[s]) if plane(cp))  # letters and marks
        pairs = "|".join(f"[{_set(cp for cp in own[s] if plane(cp))}][{_set(cp for cp in marks[s] if plane(cp))}]"
                         for s in scripts if any(plane(cp) for cp in marks[s]) and any(plane(cp) for cp in own[s]))
        return re.compile(f"[{one}](?:(?<=[{one}]{{{MAX_MARKS_PER_LETTER + 1}}})|(?<![{anyone}].)|(?<!{pairs}))"
                          f"[{one}]*")

    astral = [cp for s in scripts for cp in own[s] if cp >= 0x10000]
    return _Tables(_pattern(hidden), _pattern(sorted(hidden + loose)), stray(lambda cp: cp < 0x10000),
                   stray(lambda cp: True), re.compile(f"(?=[{_guard(astral)}])[{_set(sorted(astral))}]"))


def _drop(patterns: tuple[re.Pattern[str], re.Pattern[str]], text: str) -> str:
    bmp, astral = patterns
    text = bmp.sub("", text)
    return astral.sub("", text) if _ASTRAL.search(text) else text


def _drop_strays(tables: _Tables, text: str) -> str:
    """``text`` without the script marks that are no part of a letter (see :func:`_tables`). The pattern of the BMP
    (one table lookup a character) unless ``text`` holds a letter or mark above it of a script with marks."""
    astral = _ASTRAL.search(text) is not None and tables.astral_script.search(text) is not None
    return (tables.stray if astral else tables.stray_bmp).sub("", text)


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
    """What :func:`stream_safe` counts with: built once, on first use (with :func:`_unicode`).

    Counted as UAX #15 counts, on each character's NFKD: a *non-starter* is a character whose decomposition is all
    combining marks (canonical combining class != 0). That is every mark, and also a few characters of class 0
    (U+0F73 TIBETAN VOWEL SIGN II is U+0F71 U+0F72, halfwidth U+FF9E is U+3099 in NFKC) that
    ``unicodedata.combining`` alone misses and that sort as marks once decomposed. A starter whose decomposition
    ends in marks begins a run with them."""
    weights: dict[str, int] = {}
    trailing: dict[str, int] = {}
    leading: dict[str, int] = {}
    for cp in _unicode().decomposing:
        ch = chr(cp)
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
    the combining marks that are no part of a letter dropped, every run of whitespace one space, and no whitespace at
    either end. Not case-folded.

    A mark is part of a letter when it is its script's own (a Devanagari, Bengali or Tamil vowel sign or virama, a
    Thai tone mark, a Hebrew point, an Arabic haraka) and follows a letter of that script, :data:`MAX_MARKS_PER_LETTER`
    at most: so every vowel sign of a Hindi question counts, as a vowel of an English one does. The accents Latin,
    Greek and Cyrillic share (U+0300 COMBINING GRAVE ACCENT...) are part of the letter NFKC composes them into; what is
    left of those after NFKC is decoration.

    Counting its characters measures what the end user wrote, not the padding around it: 200 zero-width spaces,
    NULs, newlines or accents after a question add nothing (nor do vowel signs after a space, after a symbol, after a
    letter of another script, or past the fourth after one letter), and a ZWJ emoji sequence counts its emoji.

    ``max_chars``: read only the first and the last ``max_chars`` characters of a longer text (its head and tail,
    as one text with a space between), so the work is bounded whatever the text's size; else linear in it."""
    if max_chars is not None and len(text) > 2 * max_chars:
        text = f"{text[:max_chars]}\n{text[-max_chars:]}"
    tables = _tables()
    if not text.isascii():
        text = _drop(tables.hidden_or_loose, unicodedata.normalize("NFKC", stream_safe(_drop(tables.hidden, text))))
        text = _drop_strays(tables, text)
    else:
        text = tables.hidden[0].sub("", text)
    return _WHITESPACE.sub(" ", text).strip()
