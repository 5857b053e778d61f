"""costline.textutil's tables of combining marks: one read of Unicode's data serves visible_text, stream_safe, the
router's keyword words and the learned router's version-1 mark filter."""

from __future__ import annotations

import re
import unicodedata

import pytest

from costline import textutil
from costline.serving.routing import learned
from costline.textutil import combining_marks, mark_code_points

# Marks by their category in UnicodeData.txt (looked up by hand):
ACUTE = 0x0301  # COMBINING ACUTE ACCENT: Mn
VOWEL_SIGN_I = 0x093F  # DEVANAGARI VOWEL SIGN I: Mc
ENCLOSING_CIRCLE = 0x20DD  # COMBINING ENCLOSING CIRCLE: Me
BRAHMI_VIRAMA = 0x11046  # BRAHMI VIRAMA: Mn, above the BMP
LETTER_A = 0x0061


@pytest.mark.parametrize(("categories", "inside", "outside"), [
    ((), {ACUTE, VOWEL_SIGN_I, ENCLOSING_CIRCLE, BRAHMI_VIRAMA}, {LETTER_A}),
    (("Mn",), {ACUTE, BRAHMI_VIRAMA}, {VOWEL_SIGN_I, ENCLOSING_CIRCLE, LETTER_A}),
    (("Mc",), {VOWEL_SIGN_I}, {ACUTE, ENCLOSING_CIRCLE, BRAHMI_VIRAMA}),
    (("Me",), {ENCLOSING_CIRCLE}, {ACUTE, VOWEL_SIGN_I}),
    (("Mn", "Me"), {ACUTE, ENCLOSING_CIRCLE, BRAHMI_VIRAMA}, {VOWEL_SIGN_I}),  # what version 1 dropped
], ids=["all", "Mn", "Mc", "Me", "Mn+Me"])
def test_mark_code_points_by_category(categories: tuple[str, ...], inside: set[int], outside: set[int]) -> None:
    cps = mark_code_points(*categories)
    assert list(cps) == sorted(set(cps))
    assert inside <= set(cps) and not outside & set(cps)


def test_mark_code_points_refuses_a_category_that_is_not_a_mark() -> None:
    with pytest.raises(ValueError, match="Lu: not a combining mark's category"):
        mark_code_points("Mn", "Lu")


def test_the_mark_class_and_the_version_1_table_hold_the_marks() -> None:
    mark = re.compile(f"[{combining_marks()}]")
    assert all(mark.fullmatch(chr(cp)) for cp in (ACUTE, VOWEL_SIGN_I, ENCLOSING_CIRCLE, BRAHMI_VIRAMA))
    assert not mark.search("a1 _\u00e9")  # é is a letter (NFC), not a mark
    # version 1 of the hashing featurizer deleted Mn and Me, kept Mc
    assert "e\u0301\u093f\u20dd".translate(learned._marks_table()) == "e\u093f"


def test_the_tables_read_unicode_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """visible_text's and stream_safe's tables, the router's mark class and version 1's mark filter are built from
    one read of every code point's category (each used to read all 1,114,112 of its own: start-up 0.45 -> 0.77 s)."""
    reads = 0
    category = unicodedata.category

    def counted(ch: str) -> str:
        nonlocal reads
        reads += 1
        return category(ch)

    built = (textutil._unicode, textutil._tables, textutil._stream_tables, textutil.combining_marks,
             learned._marks_table)
    for table in built:
        table.cache_clear()
    monkeypatch.setattr(unicodedata, "category", counted)
    try:
        textutil.visible_text("नमस्ते, आप कैसे हैं?")
        combining_marks()
        learned._marks_table()
        assert 0x110000 <= reads < 0x110000 + 20_000  # every code point once, and a few thousand marks again
    finally:
        monkeypatch.undo()
        for table in built:  # built again, with the real category, by whoever needs them next
            table.cache_clear()
