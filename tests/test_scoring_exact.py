"""The ``exact`` metric: equal answers up to case, Unicode form, spacing, surrounding quotes and trailing sentence
punctuation; different whenever a sign, a separator or a symbol differs. Every expected score is by hand."""

from __future__ import annotations

import re

import pytest

from costline.jobs.scoring import ScoreRequest, Scorer, exact_match, normalize

#: the default [jobs.drift] answer_pattern
REF = re.compile(r"\[ref:([0-9a-f]{8})\]")


@pytest.mark.parametrize("student, teacher", [
    ("-5", "5"),
    ("-$1,200.50", "$1,200.50"),
    ("1.5", "1,5"),
    ("1,200", "1.200"),
    ("C++", "C#"),
    ("A+", "A-"),
    ("👍", "👎"),
    ("2024-01-05", "2024/01/05"),
    ("x<3", "x>3"),
    ("", "?"),
    ("", "positive"),
    ("positive", "positive-ish"),
    ("50%", "50"),
    ("?", "!"),
])
def test_answers_that_differ_in_meaning_bearing_characters_do_not_match(student, teacher):
    assert exact_match(student, teacher, REF) == 0.0
    assert exact_match(teacher, student, REF) == 0.0


@pytest.mark.parametrize("student, teacher", [
    ("Positive", "positive"),
    ("positive.", "Positive"),
    ("  positive!! ", "POSITIVE"),
    ('"positive"', "positive"),
    ('"Positive."', "positive"),
    ("'positive'.", "positive"),
    ("\u201cpositive\u201d", "positive"),
    ("Ｐｏｓｉｔｉｖｅ！", "positive"),  # fullwidth letters and "!" (NFKC)
    ("ﬁne", "fine"),  # the "fi" ligature (NFKC)
    ("STRASSE", "straße"),  # casefold, not lower
    ("new\n  york;", "New York"),
    ("-$1,200.50.", "-$1,200.50"),
    ("C++", "c++"),
    ("", ""),
    ("   ", None),
    ("?", "?"),
])
def test_answers_equal_up_to_case_unicode_spacing_quotes_and_trailing_punctuation_match(student, teacher):
    assert exact_match(student, teacher, REF) == 1.0


@pytest.mark.parametrize("text, expected", [
    ("-5", "-5"),
    ("-$1,200.50", "-$1,200.50"),
    ("C++", "c++"),
    ("x<3", "x<3"),
    ("👎", "👎"),
    ('  "The answer: 42."  ', "the answer: 42"),
    ("positive...", "positive"),
    ("?", "?"),
    ("", ""),
    (None, ""),
])
def test_normalize(text, expected):
    assert normalize(text) == expected


def test_the_pattern_group_is_compared_when_both_answers_have_it():
    assert exact_match("see [ref:0000abcd].", "The source is [ref:0000abcd]", REF) == 1.0
    assert exact_match("see [ref:0000abcd]", "see [ref:0000abce]", REF) == 0.0


def test_the_scorer_scores_exact_items_on_the_new_rule():
    items = [ScoreRequest("a", "exact", "q", "-5", "5"), ScoreRequest("b", "exact", "q", "Positive.", "positive"),
             ScoreRequest("c", "exact", "q", "", "?")]
    assert Scorer(answer_pattern=REF.pattern).score(items) == [(0.0, 1.0), (1.0, 1.0), (0.0, 1.0)]
