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


# -- Markdown emphasis and "_" ----------------------------------------------------------------------------------

@pytest.mark.parametrize("student, teacher", [
    ("**Positive**", "Positive"),
    ("*positive*", "Positive"),
    ("***Positive***", "positive"),
    ("__Positive__", "positive"),
    ("**Positive.**", "positive"),
    ("**Positive**.", "positive"),
    ('"**positive**"', "positive"),
    ("refund_request", "Refund request"),
    ("REFUND_REQUEST", "refund request"),
    ("*-5*", "-5"),
])
def test_emphasis_around_the_whole_answer_and_underscores_do_not_count(student, teacher):
    assert exact_match(student, teacher, REF) == 1.0
    assert exact_match(teacher, student, REF) == 1.0


@pytest.mark.parametrize("student, teacher", [
    ("**Positive**", "Negative"),
    ("*-5*", "5"),
    ("refund_request", "refund-request"),  # a hyphen still counts
    ("**positive** - mostly", "positive"),  # emphasis around part of the answer is not stripped
    ("***", "*"),  # an answer of asterisks is not emphasis
    ("_", ""),  # nor is one of underscores the empty answer
])
def test_emphasis_and_underscores_do_not_hide_a_different_answer(student, teacher):
    assert exact_match(student, teacher, REF) == 0.0


@pytest.mark.parametrize("text, expected", [
    ("**Positive**", "positive"),
    ("*5*", "5"),
    ("__x__", "x"),
    ("refund_request", "refund request"),
    ("***", "***"),
    ("_", "_"),
    ("2*3*4", "2*3*4"),
])
def test_normalize_drops_emphasis_and_reads_underscores_as_spaces(text, expected):
    assert normalize(text) == expected


# -- [jobs.drift.answer_patterns] ----------------------------------------------------------------------------------

#: a sentiment label at the start of the answer (subtype sentiment); "yes"/"no" first (task type classification)
PATTERNS = {"sentiment": r"(?i)^\W*(?:sentiment\W*)?(positive|negative|neutral)\b",
            "classification": r"(?i)^\W*(yes|no)\b"}


@pytest.mark.parametrize("student, teacher, subtype, task_type, expected", [
    # the subtype's pattern
    ("Sentiment: Positive", "Positive", "sentiment", "classification", 1.0),
    ("Positive - the reviewer clearly enjoyed the product.", "positive", "sentiment", "classification", 1.0),
    ("Sentiment: **Negative**", "Positive", "sentiment", "classification", 0.0),
    ("Not positive", "Positive", "sentiment", "classification", 0.0),  # anchored: the negation is no label
    ("The sentiment is positive.", "Positive", "sentiment", "classification", 0.0),  # no match: whole texts
    # the task type's pattern (subtype spam has none)
    ("Yes", "Yes, this is spam.", "spam", "classification", 1.0),
    ("No.", "Yes, this is spam.", "spam", "classification", 0.0),
    # neither: the global answer_pattern (the demo's marker)
    ("see [ref:0000abcd].", "The source is [ref:0000abcd]", "faq", "qa", 1.0),
    ("Sentiment: Positive", "Positive", "faq", "qa", 0.0),
    # a pattern that matches one answer only: the whole texts are compared
    ("Sentiment: Positive", "Good", "sentiment", "classification", 0.0),
    ("positive", "Positive", "sentiment", None, 1.0),
])
def test_exact_match_uses_the_subtypes_pattern_then_the_task_types_then_the_global_one(
        student, teacher, subtype, task_type, expected):
    item = ScoreRequest("k", "exact", "q", student, teacher, subtype=subtype, task_type=task_type)
    assert Scorer(answer_pattern=REF.pattern, answer_patterns=PATTERNS).score([item]) == [(expected, 1.0)]


def test_the_subtypes_pattern_wins_over_its_task_types():
    # the classification pattern (yes/no first) matches neither answer: scored on it, the whole texts would differ
    item = ScoreRequest("k", "exact", "q", "Positive, clearly", "positive", subtype="sentiment",
                        task_type="classification")
    assert Scorer(answer_patterns=PATTERNS).score([item]) == [(1.0, 1.0)]
    assert Scorer(answer_patterns={"classification": PATTERNS["classification"]}).score([item]) == [(0.0, 1.0)]


@pytest.mark.parametrize("pattern, problem", [
    ("(positive|negative", "not a valid regex"),
    ("positive|negative", "has no group"),
])
def test_a_bad_answer_pattern_is_refused_naming_its_key(pattern, problem):
    from costline.jobs.errors import JobsError

    with pytest.raises(JobsError, match=rf"\[jobs.drift.answer_patterns\] sentiment: .*{problem}"):
        Scorer(answer_patterns={"sentiment": pattern})


@pytest.mark.parametrize("toml, key, problem", [
    ('[jobs.drift.answer_patterns]\nsentiment = "(positive|negative"\n', r"\[jobs.drift.answer_patterns\] sentiment",
     "not a valid regex"),
    ('[jobs.drift.answer_patterns]\nsentiment = "positive|negative"\n', r"\[jobs.drift.answer_patterns\] sentiment",
     "has no group"),
    ("[jobs.drift]\njudge_max_tokens = 0\n", r"\[jobs.drift\] judge_max_tokens", "must be at least 1"),
    ('[jobs.drift.metrics]\nextraction = "structural"\n', r"\[jobs.drift.metrics\] extraction",
     "must be exact, cosine or judge, or json"),
])
def test_scoring_settings_are_checked_on_load_naming_the_key(tmp_path, toml, key, problem):
    from costline.config import load_config
    from costline.errors import ConfigError

    f = tmp_path / "costline.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError, match=rf"{key}.*{problem}"):
        load_config(f, env={})


def test_the_scoring_settings_load():
    from costline.config import load_config

    cfg = load_config(None, env={})
    assert cfg.jobs.drift.metrics == {"classification": "exact", "extraction": "json"}
    assert cfg.jobs.drift.answer_patterns == {} and cfg.jobs.drift.judge_max_tokens == 256


def test_answer_patterns_and_the_json_metric_load_from_the_file(tmp_path):
    from costline.config import load_config

    f = tmp_path / "costline.toml"
    f.write_text("[jobs.drift.metrics]\ninvoice = \"json\"\n\n[jobs.drift.answer_patterns]\n"
                 "sentiment = '(?i)\\b(positive|negative|neutral)\\b'\n")
    d = load_config(f, env={}).jobs.drift
    assert d.metrics["invoice"] == "json"
    assert d.answer_patterns == {"sentiment": r"(?i)\b(positive|negative|neutral)\b"}
