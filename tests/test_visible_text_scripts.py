"""visible_text keeps the marks that are part of a letter, and still drops the ones that pad a text.

It dropped every combining mark NFKC could not compose, which is right for the accents Latin, Greek and Cyrillic share
(NFKC composes each into its letter; "x" + 170 accents is one letter) but deleted parts of real letters elsewhere:
Devanagari / Bengali / Tamil / Thai / Khmer / Myanmar vowel signs and viramas, Hebrew points, Arabic harakat. A Hindi
question read ~13 % short, and near the router's 200-character boundary went to the budget tier while its English
translation went to frontier. A script's own mark now counts when it follows a letter of that script, at most
MAX_MARKS_PER_LETTER (4) after one letter; after a space, at the start, after a symbol or digit, after a letter of
another script, or past the fourth, it is still dropped.

How the lengths below were counted, by hand: one per code point of the sentence as written (in NFC), so one per letter
(consonant or independent vowel), one per vowel sign, virama / asat / coeng, anusvara, nukta, Hebrew point or Arabic
haraka, one per space between words and one per punctuation mark. "before" is what the old code counted: the same
less the marks of category Mn (it kept category Mc: Devanagari ा ी, Bengali ি া ে, Tamil ு ி ே, Myanmar ြ ေ း).
"""

from __future__ import annotations

import unicodedata

import pytest

from costline.serving.routing.router import RulePolicy
from costline.serving.settings import RouteRulesConfig
from costline.textutil import visible_text

# Our own sentences, with each word's code points counted.
HINDI = "क्या आप मेरी मदद करेंगे?"  # "Will you help me?"
# क ् य ा (4) · आ प (2) · म े र ी (4) · म द द (3) · क र े ं ग े (6) · ? = 19 + 4 spaces + 1 = 24; Mn: ् े े ं े (5)
BENGALI = "আমার কম্পিউটার চালু হচ্ছে না।"  # "My computer does not turn on."
# আ ম া র (4) · ক ম ্ প ি উ ট া র (9) · চ া ল ু (4) · হ চ ্ ছ ে (5) · ন া (2) · । = 24 + 4 + 1 = 29; Mn: ্ ু ্ (3)
TAMIL = "எனக்கு உதவி வேண்டும்."  # "I need help."
# எ ன க ் க ு (6) · உ த வ ி (4) · வ ே ண ் ட ு ம ் (8) · . = 18 + 2 + 1 = 21; Mn: the three viramas ்
THAI = "คุณพูดภาษาไทยได้ไหม"  # "Can you speak Thai?" (no spaces between words)
# ค ุ ณ (3) พ ู ด (3) ภ า ษ า (4) ไ ท ย (3) ไ ด ้ (3) ไ ห ม (3) = 19; Mn: ุ ู ้ (3)
HEBREW = "מָה שְׁלוֹמְךָ?"  # "How are you?", pointed
# מ ָ ה (3) · ש ְ ׁ ל ו ֹ מ ְ ך ָ (10) · ? = 13 + 1 + 1 = 15; Mn: the six points (qamats, sheva, shin dot, holam...)
ARABIC = "كَيْفَ حَالُكَ؟"  # "How are you?", with harakat
# ك َ ي ْ ف َ (6) · ح َ ا ل ُ ك َ (7) · ؟ = 13 + 1 + 1 = 15; Mn: the six harakat
VIETNAMESE = "Tôi muốn đặt một bàn cho hai người."  # "I want to book a table for two."
# T ô i (3) m u ố n (4) đ ặ t (3) m ộ t (3) b à n (3) c h o (3) h a i (3) n g ư ờ i (5) = 27 + 7 spaces + "." = 35
MYANMAR = "မင်္ဂလာပါ"  # "Hello" (mingalaba): မ င ် ္ ဂ လ ာ ပ ါ = 9; Mn: asat and virama after င (2)
MYANMAR_HEAVY = "ကြွေး"  # "debt": က + medial ra, medial wa, vowel sign E, visarga: 4 marks on one letter, 5; Mn: ွ
KHMER = "សួស្តី"  # "Hello" (suosdei): ស ួ ស ្ ត ី = 6; Mn: ួ ្ ី (3)
# Three marks on one letter, in common words: ज of चीज़ें ("things") carries nukta, vowel sign E and anusvara:
# च ी ज ़ े ं = 6 (Mn: ़ े ं); the shin of הַשַּׁבָּת ("the Sabbath") patah, dagesh and shin dot:
# ה ַ ש ַ ּ ׁ ב ָ ּ ת = 10 (all 6 points Mn); Tibetan སྒྲུབ ("accomplish") two subjoined letters and a vowel on ས:
# ས ྒ ྲ ུ བ = 5 (Mn: 3).
THREE_MARKS = {"hindi": "चीज़ें", "hebrew": "הַשַּׁבָּת", "tibetan": "སྒྲུབ"}


def test_the_sentences_are_what_the_test_says() -> None:
    """Each sentence is in its script, in NFC, and has as many code points as counted above."""
    blocks = {HINDI: (0x0900, 0x097F), BENGALI: (0x0980, 0x09FF), TAMIL: (0x0B80, 0x0BFF), THAI: (0x0E00, 0x0E7F),
              HEBREW: (0x0590, 0x05FF), ARABIC: (0x0600, 0x06FF), MYANMAR: (0x1000, 0x109F),
              MYANMAR_HEAVY: (0x1000, 0x109F), KHMER: (0x1780, 0x17FF)}
    for text, (lo, hi) in blocks.items():
        assert all(lo <= ord(c) <= hi for c in text if c.isalpha() or unicodedata.category(c)[0] == "M"), text
    for text, n in [(HINDI, 24), (BENGALI, 29), (TAMIL, 21), (THAI, 19), (HEBREW, 15), (ARABIC, 15),
                    (VIETNAMESE, 35), (MYANMAR, 9), (MYANMAR_HEAVY, 5), (KHMER, 6), (THREE_MARKS["hindi"], 6),
                    (THREE_MARKS["hebrew"], 10), (THREE_MARKS["tibetan"], 5)]:
        assert unicodedata.normalize("NFC", text) == text and len(text) == n, text


@pytest.mark.parametrize(("text", "expected", "length"), [
    (HINDI, HINDI, 24),              # before: 19
    (BENGALI, BENGALI, 29),          # before: 26
    (TAMIL, TAMIL, 21),              # before: 18
    (THAI, THAI, 19),                # before: 16
    (HEBREW, HEBREW, 15),            # before: 9 (the seven letters, the space and "?")
    (ARABIC, ARABIC, 15),            # before: 9
    (MYANMAR, MYANMAR, 9),           # before: 7
    (MYANMAR_HEAVY, MYANMAR_HEAVY, 5),  # before: 4
    (KHMER, KHMER, 6),               # before: 3
    (VIETNAMESE, VIETNAMESE, 35),    # NFC as it is (it was already right: NFKC composes every Vietnamese letter)
    (unicodedata.normalize("NFD", VIETNAMESE), VIETNAMESE, 35),  # stacked tones typed as marks: composed
    (THREE_MARKS["hindi"], THREE_MARKS["hindi"], 6),      # before: 3
    (THREE_MARKS["hebrew"], THREE_MARKS["hebrew"], 10),   # before: 4
    (THREE_MARKS["tibetan"], THREE_MARKS["tibetan"], 5),  # before: 2
], ids=["hindi", "bengali", "tamil", "thai", "hebrew", "arabic", "myanmar", "myanmar-4-marks", "khmer", "vietnamese",
        "vietnamese-nfd", "hindi-3-marks", "hebrew-3-marks", "tibetan-3-marks"])
def test_a_sentence_keeps_every_mark_of_its_letters(text: str, expected: str, length: int) -> None:
    visible = visible_text(text)
    assert visible == expected and len(visible) == length


KA, SIGN_I, SIGN_E = "\u0915", "\u093f", "\u0947"  # Devanagari क, vowel sign ि (Mc), vowel sign े (Mn)


@pytest.mark.parametrize(("text", "expected"), [
    (KA + SIGN_I * 200, KA + SIGN_I * 4),          # a run past 4 marks: the first 4 stay (before: all 200, as Mc)
    (KA + SIGN_E * 200, KA + SIGN_E * 4),          # the same with a Mn sign (before: none)
    (KA + SIGN_I * 4, KA + SIGN_I * 4),            # 4 on one letter: the limit, kept
    (KA + SIGN_I * 5, KA + SIGN_I * 4),            # 5: the fifth goes
    (SIGN_E * 50 + "नमस्ते", "नमस्ते"),              # marks at the start of the text
    ("नमस्ते " + SIGN_I * 50, "नमस्ते"),              # marks after a space
    ("नमस्ते" + "\n" + SIGN_E * 3 + "?", "नमस्ते ?"),  # marks after a newline (a space)
    ("hello" + SIGN_I * 3, "hello"),               # a Devanagari sign after a Latin letter (before: kept, Mc)
    ("42" + SIGN_E * 3, "42"),                     # after a digit
    ("?" + "\u05b8" * 10, "?"),                     # Hebrew qamats after a question mark
    ("\U0001F600" + "\u064e" * 10, "\U0001F600"),    # Arabic fatha after an emoji
    (KA + "\u09bf", KA),                           # a Bengali vowel sign after a Devanagari letter
    ("ש" + "\u064e", "ש"),                         # an Arabic haraka after a Hebrew letter
    ("न\u0301\u0301म\u0316\u0334स्ते", "नमस्ते"),      # the Latin/Greek accents on Indic letters: decoration, dropped
    (KA + "\u0301" + SIGN_I, KA + SIGN_I),         # ... and they do not cut a letter from its own sign
    ("x" + "\u0301" * 170, "x"),                   # accent stuffing, as before
    ("\u2764\ufe0f", "\u2764"),                     # a variation selector, as before
], ids=["200-mc-signs", "200-mn-signs", "4-signs", "5-signs", "at-start", "after-space", "after-newline",
        "after-latin", "after-digit", "after-punctuation", "after-emoji", "bengali-on-devanagari", "arabic-on-hebrew",
        "latin-accents-on-indic", "accent-between-letter-and-sign", "x-170-accents", "variation-selector"])
def test_marks_that_are_no_part_of_a_letter_are_still_dropped(text: str, expected: str) -> None:
    assert visible_text(text) == expected


# -- the router: a Hindi question and its English translation fall in the same length band ------------------------
# The rules' length rule: a query under short_query_chars (200) goes to budget; a long one with no keyword and task
# type "chat" to the default tier, frontier. Devanagari has no WIDE_CHAR_WEIGHT (it counts 1 a code point, as Latin):
# with its vowel signs counted, a Hindi sentence is about as long as its English translation (220 / 207 here).
COMPARE_EN = ("Please compare the monthly and annual plans for a team of twelve people, including the cost of extra "
              "storage and priority support, and tell me which of the two will be cheaper for us over the next two "
              "years.")  # 207 characters
COMPARE_HI = ("कृपया बारह लोगों की टीम के लिए मासिक और वार्षिक योजनाओं की तुलना करें, जिसमें अतिरिक्त स्टोरेज और "
              "प्राथमिकता सहायता की लागत भी शामिल हो, और मुझे बताएं कि अगले दो वर्षों में दोनों में से कौन सी योजना "
              "हमारे लिए सस्ती होगी।")  # 220 code points, 28 of them Mn signs: the old code read 192 (budget)
SHORT_EN = "Which plan is cheaper for a team of twelve?"  # 43
SHORT_HI = "बारह लोगों की टीम के लिए कौन सी योजना सस्ती है?"  # 47


def test_the_router_questions_are_what_the_test_says() -> None:
    assert (len(COMPARE_EN), len(COMPARE_HI), len(SHORT_EN), len(SHORT_HI)) == (207, 220, 43, 47)
    assert sum(unicodedata.category(c) == "Mn" for c in COMPARE_HI) == 28  # 220 - 28 = 192 < 200
    assert all(unicodedata.normalize("NFC", t) == t for t in (COMPARE_HI, SHORT_HI))


@pytest.mark.parametrize(("question", "tier"), [
    (COMPARE_EN, "frontier"),
    (COMPARE_HI, "frontier"),  # before: budget, "query under 200 characters"
    (SHORT_EN, "budget"),
    (SHORT_HI, "budget"),
])
def test_a_hindi_question_and_its_english_translation_get_the_same_tier(question: str, tier: str) -> None:
    assert RulePolicy(RouteRulesConfig()).route(question, "chat").tier == tier


# -- the router's keywords: a mark is part of its word ---------------------------------------------------------------
# COMPARE_HI (long, and with none of these keywords) + a sentence; no keyword matched: the default tier, frontier.
@pytest.mark.parametrize(("keyword", "sentence", "tier"), [
    ("बताइये", " कृपया बताइये।", "mid"),         # "please tell"
    ("बताइये", " कृपया बताइयेगा।", "frontier"),   # another word (with its signs kept, \w alone let it match)
    ("समझ", " मुझे समझे।", "frontier"),          # समझे is not the word समझ + a vowel sign (before: matched)
    ("समझाइए", " कृपया समझाइए।", "mid"),
    ("ได้", " คุณพูดภาษาไทยได้ไหม", "mid"),        # Thai is written without spaces: a word inside a sentence
    ("ได", " คุณพูดภาษาไทยได้ไหม", "frontier"),   # ... but not a letter cut from its tone mark (ได้ is not ได)
], ids=["hindi-word", "hindi-longer-word", "hindi-word-and-sign", "hindi-explain", "thai-in-sentence", "thai-cut"])
def test_a_keyword_ends_where_its_word_does(keyword: str, sentence: str, tier: str) -> None:
    policy = RulePolicy(RouteRulesConfig(mid_keywords=(keyword,)))
    assert policy.route(COMPARE_HI + sentence, "chat").tier == tier
