"""Routing on what the end user wrote, not on how it is padded: the rule policy's length and keyword rules and the
learned policy's features read the query's visible text (invisible, control and combining characters and runs of
whitespace do not count), keywords match whole words, a long query's head and tail are read and no more, and
features or probabilities that are not finite numbers make the Router fall back (logged) instead of routing as if
sure. Expected tiers are worked out by hand from the default rules: classification or fewer than 200 characters →
budget; coding or the word "explain" → mid; complex_reasoning → upper; else frontier."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from costline.config import Config
from costline.serving.errors import RoutingError
from costline.serving.registry import ModelRegistry
from costline.serving.routing.learned import HashingFeaturizer, LearnedPolicy, _features, read_rows, train_policy
from costline.serving.routing.router import ROUTE_TEXT_CHARS, Router, RulePolicy
from costline.serving.settings import RouteRulesConfig
from costline.textutil import visible_text

DATA = Path(__file__).parent.parent / "serving" / "routing" / "data"
SHORT = "What is the capital of France?"  # 30 characters: under 200, budget
#: 204 visible characters, no keyword, task type "general": frontier (the default tier).
LONG = ("Walk me through the quarterly revenue figures for each of our regions and compare them with last year, "
        "noting any region whose growth rate changed by more than five points and what drove the change there.")
FAMILY = "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466"  # 4 emoji joined by 3 ZWJ: 7 code points


# -- visible_text ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    (SHORT + "\u200b" * 200, SHORT),                     # zero-width spaces (Cf)
    (SHORT + " " * 200, SHORT),
    (SHORT + "\x00" * 200, SHORT),                       # NUL (Cc)
    ("\n" * 100 + SHORT + "\n" * 100, SHORT),
    ("a\t\tb\r\n\x0bc\u2028d", "a b c d"),             # whitespace controls separate words
    ("ex\u200bpl\u00adain", "explain"),                  # ZWSP and a soft hyphen (both Cf) inside a word
    ("\uff45\uff58\uff50\uff4c\uff41\uff49\uff4e", "explain"),  # fullwidth: NFKC
    ("\ufb01ne", "fine"),                                # the ligature fi: NFKC
    ("erkla\u0308re", "erkl\u00e4re"),                   # a + combining diaeresis composes to one letter
    ("x" + "\u0301" * 170, "x"),                        # x has no accented form: its 170 accents are dropped
    (FAMILY * 2, "\U0001F468\U0001F469\U0001F467\U0001F466" * 2),  # the joiners go, the emoji stay
    ("a\U000E0041\U000E0042b", "ab"),                    # tag characters (Cf, above the BMP)
    ("a\U0001D167\U0001D168b", "ab"),                    # musical combining marks (Mn, above the BMP)
    ("\ud800x", "x"),                                    # a lone surrogate
    ("caf\u00e9 \U0001F600", "caf\u00e9 \U0001F600"),    # ordinary text is itself
])
def test_visible_text(text: str, expected: str) -> None:
    assert visible_text(text) == expected


def test_visible_text_reads_a_long_texts_head_and_tail_only() -> None:
    text = "a" * 10 + "MIDDLE" + "b" * 10
    assert visible_text(text, max_chars=8) == "aaaaaaaa bbbbbbbb"
    assert visible_text(text, max_chars=13) == text  # 26 characters: not over 2 * 13


# -- the rule policy's length rule ---------------------------------------------------------------------------
@pytest.mark.parametrize("query", [
    SHORT + " " * 200,
    SHORT + "\u200b" * 200,
    SHORT + "\u200b\u200c\u200d\u2060\ufeff" * 40,
    SHORT + "\x00" * 200,
    SHORT + "\n" * 200,
    "\n" * 120 + SHORT + "\t" * 120,
    "\n".join([""] * 300 + [SHORT]),                      # many empty text blocks joined by newlines
    SHORT + "\u0301" * 170,
    SHORT + "\U000E0020" * 200,                           # tag spaces
    FAMILY * 30,                                          # 210 code points, 120 emoji
    "\uff37\uff48\uff41\uff54 is the capital of France?" + "\u3000" * 200,  # fullwidth, ideographic spaces
], ids=["spaces", "zwsp", "zero-width-mix", "nul", "newlines", "around", "empty-blocks", "accents", "tags",
        "zwj-emoji", "fullwidth"])
def test_padding_does_not_make_a_short_question_long(query: str) -> None:
    assert len(query) >= 200  # raw: it used to count as long and go to frontier
    decision = RulePolicy().route(query, "general")
    assert (decision.tier, decision.reason) == ("budget", "query under 200 characters")


# -- the rule policy's keywords ------------------------------------------------------------------------------
@pytest.mark.parametrize(("suffix", "tier"), [
    (" (unexplained)", "frontier"),       # not the word explain
    (" It was explained before.", "frontier"),  # whole words only: list "explained" to match it
    (" EXPLAINS", "frontier"),
    (" ex\u200bplain it", "mid"),          # a zero-width space inside the word
    (" ex\u00adplain it", "mid"),          # a soft hyphen inside the word
    (" \uff45\uff58\uff50\uff4c\uff41\uff49\uff4e it", "mid"),  # fullwidth
    (" e\u0334xplain it", "mid"),         # a mark that NFKC cannot compose (tilde overlay) is dropped
])
def test_keywords_match_whole_visible_words(suffix: str, tier: str) -> None:
    assert len(LONG) == 204 and "explain" not in LONG.lower()  # long, and any keyword is in the suffix
    assert RulePolicy().route(LONG + suffix, "general").tier == tier


def test_configured_keywords_are_read_as_the_queries_are() -> None:
    policy = RulePolicy(RouteRulesConfig(mid_keywords=("Step by step", "c++", "\uff52\uff45\uff56\uff49\uff45\uff57")))
    assert policy.route(LONG + " Go step\nby\u200b step.", "general").reason == "keyword 'step by step'"
    assert policy.route(LONG + " In C++, please.", "general").reason == "keyword 'c++'"
    assert policy.route(LONG + " REVIEW it", "general").reason == "keyword 'review'"
    assert policy.route(LONG + " a preview", "general").tier == "frontier"
    # Negation is not parsed (docs/serving.md: mid_keywords can be steered by end users).
    assert policy.route(LONG + " Do not go step by step.", "general").tier == "mid"


@pytest.mark.parametrize("keyword", ["", "   ", "\u200b"])
def test_a_keyword_without_visible_characters_is_refused(keyword: str) -> None:
    """It matched every query (the empty string is in every text): every long query went to mid."""
    with pytest.raises(RoutingError, match=r"mid_keywords.*remove it"):
        RulePolicy(RouteRulesConfig(mid_keywords=("explain", keyword)))


def test_the_rules_read_a_huge_querys_head_and_tail() -> None:
    """A keyword past the first and last ROUTE_TEXT_CHARS characters is not read (the work is bounded)."""
    filler = "lorem ipsum " * (ROUTE_TEXT_CHARS // 12 + 1)
    assert RulePolicy().route(filler + " explain " + filler, "general").tier == "frontier"
    assert RulePolicy().route(filler + filler + " explain", "general").tier == "mid"


# -- the learned policy ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    return ModelRegistry.from_config(Config())


@pytest.fixture(scope="module")
def hashing_policy() -> LearnedPolicy:
    pytest.importorskip("sklearn")
    return train_policy(read_rows(DATA / "route_train.jsonl"), featurizer_name="hashing", min_adequacy=0.9)


PADDINGS = {
    "400 spaces": lambda q: q + " " * 400,
    "2000 zwsp": lambda q: q + "\u200b" * 2000,
    "newlines around": lambda q: "\n" * 300 + q + "\n" * 300,
    "50 leading spaces": lambda q: " " * 50 + q,
    "nul inside": lambda q: q.replace(" ", " \x00", 3),
}


@pytest.mark.parametrize("pad", list(PADDINGS), ids=list(PADDINGS))
def test_padding_moves_no_learned_decision(hashing_policy: LearnedPolicy, pad: str) -> None:
    """400 trailing spaces moved 4 of the 242 shipped eval queries (the length feature counted them)."""
    rows = [json.loads(line) for line in (DATA / "route_eval.jsonl").read_text().splitlines() if line.strip()]
    assert len(rows) == 242
    queries, types = [r["query"] for r in rows], [r["task_type"] for r in rows]
    padded = [PADDINGS[pad](q) for q in queries]
    assert np.array_equal(_features(HashingFeaturizer(), padded, types, hashing_policy.task_types),
                          _features(HashingFeaturizer(), queries, types, hashing_policy.task_types))
    assert hashing_policy.route_many(padded, types) == hashing_policy.route_many(queries, types)


def test_the_length_feature_counts_visible_characters() -> None:
    x = _features(HashingFeaturizer(), [SHORT + "\u200b" * 500 + " " * 500], ["faq"], ["faq"])
    assert x[0, -1] == pytest.approx(np.log1p(30) / 8.0)  # log1p(len) / 8 of the 30 visible characters


def test_the_hashing_featurizer_reads_a_huge_querys_head_and_tail() -> None:
    filler = "lorem ipsum " * (ROUTE_TEXT_CHARS // 12 + 1)
    f = HashingFeaturizer()
    a, b, c = f.encode([filler + " alpha " + filler, filler + " omega " + filler, "gamma " + filler + filler])
    assert np.array_equal(a, b)  # the middle is not read
    assert not np.array_equal(a, c)  # the head is


def _minilm_policy(hashing_policy: LearnedPolicy) -> LearnedPolicy:
    """The hashing policy's weights read as a MiniLM policy: decides on a given 384-dim vector."""
    return LearnedPolicy(coef=hashing_policy.coef, intercept=hashing_policy.intercept, classes=hashing_policy.classes,
                         task_types=hashing_policy.task_types, featurizer_name="minilm",
                         featurizer=HashingFeaturizer(), min_adequacy=0.9)


@pytest.mark.parametrize(("name", "vector"), [
    ("nan", np.full(384, np.nan, np.float32)),
    ("inf", np.full(384, np.inf, np.float32)),
    ("-inf", np.full(384, -np.inf, np.float32)),
    ("one nan", np.r_[np.full(383, 384 ** -0.5, np.float32), np.float32(np.nan)]),
    ("1e30", np.full(384, 1e30, np.float32)),
    ("zero", np.zeros(384, np.float32)),
    ("length 2", np.full(384, 2 * 384 ** -0.5, np.float32)),
])
def test_a_vector_the_embedder_cannot_have_made_falls_back(hashing_policy, registry, caplog, name, vector) -> None:
    """All-NaN went to frontier 'no tier reached min_adequacy' at confidence 1.0; 1e30 to budget at 1.0."""
    policy = _minilm_policy(hashing_policy)
    unit = HashingFeaturizer().encode([SHORT])[0]  # a vector the embedder could have made is routed
    assert Router(policy, registry).route(SHORT, "faq", embedding=unit).confidence > 0
    with pytest.raises(RoutingError, match="check the embedder"):
        policy.route(SHORT, "faq", embedding=vector)
    with caplog.at_level(logging.WARNING, logger="costline.serving.routing.router"):
        decision = Router(policy, registry).route(SHORT, "faq", embedding=vector)
    assert (decision.tier, decision.confidence) == ("frontier", 0.0)
    assert decision.reason.startswith("fallback to frontier: the routing policy failed (RoutingError")
    assert "the routing policy failed" in caplog.text


@pytest.mark.parametrize("probs", [[np.nan, 0.5, 0.5, 0.0], [np.inf, 0.0, 0.0, 0.0], [0.1, 0.1, 0.1, 0.1]])
def test_decide_refuses_probabilities_that_are_not_a_distribution(hashing_policy, probs) -> None:
    with pytest.raises(RoutingError, match="probabilities"):
        hashing_policy.decide(np.array(probs))


def test_a_featurizer_that_returns_nan_falls_back(hashing_policy, registry) -> None:
    class Broken:
        def encode(self, texts):
            return np.full((len(texts), 384), np.nan, np.float32)

    policy = LearnedPolicy(coef=hashing_policy.coef, intercept=hashing_policy.intercept,
                           classes=hashing_policy.classes, task_types=hashing_policy.task_types,
                           featurizer_name="hashing", featurizer=Broken(), min_adequacy=0.9)
    decision = Router(policy, registry).route(SHORT, "faq")
    assert (decision.tier, decision.confidence) == ("frontier", 0.0) and "not finite" in decision.reason
