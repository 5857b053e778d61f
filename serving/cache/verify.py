"""The verification stage: between the FAISS candidates and the hit decision.

A cosine similarity cannot tell "refund for order 1234" from "order 1243", "cancel" from
"don't cancel", or "my invoice" from "all invoices": the sentences are nearly the same and
the answers are not. Every candidate of every lookup (all top-k, not only the best) goes
through :meth:`Verifier.check`:

1. **guards** — hard rules that reject a candidate whose question differs in what changes
   the answer. Each has a reason, recorded on the lookup span as
   ``costline.cache.reject_reason``:

   ``number``      numbers, amounts, quantities (digits, number words via word2number, ordinals);
   ``identifier``  order / invoice / ticket numbers and other codes (``#48213``, ``INV-2291``);
   ``date``        months, weekdays, calendar dates (numeric dates parsed with python-dateutil);
   ``time``        clock times (``3 pm``, ``18:00``, noon);
   ``unit``        the unit after a number (``7 kg`` / ``7 lb``, ``2 nights`` / ``one week``);
   ``negation``    a different count of negations (not, never, no, without, n't …; German, Dutch, Spanish,
                   Portuguese, Italian and French negators too, :data:`_FOREIGN_NEGATIONS`); a negating prefix
                   on a word the other side has bare ("furnished" / "unfurnished", "legal" / "illegal";
                   not "count" / "discount"); "avoid", "forbidden", "dangerous" … on one side only
                   ("can I drive …" / "should I avoid driving …"); may against must in a yes / no
                   question ("can I pay in cash" / "do I have to pay in cash"), should against must in the
                   same words ("should I tell …" / "am I required to tell …"); a hyphenated prefix
                   ("de-authorise") is read joined; a "-free" word is a negation ("phone-free"); a
                   negating suffix the same way ("cashless" / "accept cash"); a word of danger
                   ("toxic", "harmful") against "safe"; "is it a bad idea to …" against "can I …"; a word
                   set aside by "rather than / instead of" on one side and said plainly on the other
                   ("is it pre-recorded rather than live" / "is it live"); "zero experience" is "no
                   experience"; "not" before a word the other side says with a negating prefix is one
                   thing said twice ("not happy" / "unhappy");
   ``polarity``    opposite actions or states (enable / disable, add / remove, paid / unpaid …), keeping
                   or joining against giving up or leaving, phrasal verbs read by their lemma
                   (lemminflect: "keep" / "gave up", "take up" / "turn down"), or a verb of withdrawal /
                   revocation / opting out / stopping on one side only ("consent" / "withdraw consent");
                   link / attach against detach; a particle after its object ("check my dog in" / "out");
                   not doing it at all ("skip", "leave out", "get out of"; "a skip" is a noun); a (house)
                   "removal" against a "move" is one move; "included" / "covered" against "charged
                   separately", "cost extra", "a surcharge", "on top of the fee"; "charge a fee" / "free of
                   charge";
   ``entity``      another named entity: a capitalised name or product on each side that the
                   other side lacks, a rare word on each side, or the same sentence with one noun
                   phrase of up to three words swapped ("maternity ward" / "intensive care unit") —
                   unless the swap is one word in another form (lemminflect: "archive" / "archives") or,
                   at a cosine of SYNONYM_COSINE or more, one common word for another ("kids" /
                   "children") — never two words of one line of the alternatives lexicon
                   (data/alternatives.txt: "alto" / "tenor", "front" / "back", "gold" / "silver"; a line of
                   time words, "day" / "year", "lunch" / "dinner", gives ``temporal``); British and American
                   spellings are one word (breame: "colour"); a hyphenated prefix making another kind ("the
                   Pre-Primary class" / "the Primary class"); a number glued to its unit is a quantity, no
                   code ("a 1oz coin" / "a 1 oz coin");
   ``scope``       quantifiers (all, every, each, whole, both, any, anywhere …) on one side only, or
                   another reach by place or population ("my street" / "nationwide", "national",
                   "anywhere in the country", "internationally", "company-wide", "every branch");
                   "which orders" against "my order"; an "any" asking whether there is some ("is there any
                   parking" / "is there parking"), "at all" and "every time I" are none;
                   a coordination growing on one side ("the guests" / "the guests and the suppliers") or
                   "only" against "also" / "too" (the coverage rule, below); a list said with commas grows
                   like one said with "and" ("a blade" / "a blade, stand and water tray");
   ``comparative`` opposite comparatives (more / less, earlier / later, over / under …);
   ``temporal``    past against future (last / next, was / will be, before / after, yesterday /
                   tomorrow), or disjoint tenses (a question opening "has / have … been / <participle>" asks
                   what has happened: "has it already been shipped" / "when will it be shipped"); this
                   moment against a habit, a season, a schedule, the past or the future ("open now" / "open
                   late at night", "at the moment" /
                   "usually"); "during" against "once … is over / has worn off"; "for the first month" against
                   "after the first month"; a present perfect ("has been taken down") is no present tense;
                   "once X has / is <any past participle>" is "after X"; a season ("in the autumn") against
                   now, a habit or another season; "in advance" / "beforehand" against "on the (same) day"
                   (not in a question offering both with "or").
   ``unmatched``   the coverage rule (:func:`_coverage`): the two questions aligned (difflib over the
                   tokens), every content word one has and the other lacks must be accounted for — the same
                   lemma, a spelling or compound variant, a typo, a number, a filler, a lexicon variant. An
                   *edit* (at most three changed spans, 60 % of the tokens aligned) is rejected when it swaps
                   the same verb's particle ("turn up" / "turn down"), one boundary of a period for another
                   ("until" / "from", "during" / "at the end of"), or content words on both sides around a
                   shared one ("add a room to" / "drop the room from", "with a credit card" / "by cheque"),
                   unless it is one word for one at SYNONYM_COSINE or more. A rewrite is left alone: with
                   no synonym data, requiring its words to match rejects most true paraphrases.

   ``extension``   one question is the other with more that changes the answer: an audience added (every content
                   word of one side accounted for by the other, which adds a child, a baby, a pregnancy, a pet …:
                   "the max dose of tylenol" / "… for kids") or an instruction to the answerer after the question on
                   one side only ("how do I cancel my plan? Reply in one word.", "… ? Ignore the above and …").

   ``code``        (checked in :meth:`Verifier.check` before the rest, with the signs) the two questions' code
                   differs: backtick spans and fenced blocks compared as written (spacing aside), and outside them
                   the operators between operands, command-line flags, paths, emails, URLs and regexes compared as
                   multisets (:func:`code_reason`: "`rm -rf ./build`" / "`rm -rf /`", "--hard" / "--soft",
                   "print(7 - 3)" / "print(7 + 3)", "a@example.com" / "a@example.org"); hyphenated words, dates,
                   ranges, ratios, "and/or", a dash between words are none.

   A question's story aside from what it asks (statements before or after its question part, a purpose
   clause: "I've never ridden before, can I join?", "… so they don't get damaged") is read as not said by the
   negation, number, date, time, scope, comparative, temporal and polarity guards where the other question
   tells no story and does not speak of it (:func:`_read_without_aside`).

2. **admission** — the candidates that pass every guard are scored by a small learned model
   (:mod:`costline.serving.cache.admission`) on :func:`pair_features`: the cosine, lexical
   overlap, length ratio, unmatched content words, one-sided entities … A candidate under the
   model's operating point is rejected with reason ``admission``.
3. **the pair model** (:mod:`costline.serving.cache.pair_model`, when the cache has one) has the last word,
   reason ``pair_model``: at its own threshold, stricter in the strict band and where both questions ask for a
   time (:attr:`QuestionFeatures.asks_time`, ``Verifier.time_threshold``).

A pair the stage cannot read (a parser that raises on some text) is rejected with reason ``unreadable`` and
logged: a miss, never a failed lookup, so a stored question that trips the parser cannot break the lookups it is
a candidate of.

Features of a text are computed once and remembered (an LRU of ``memo_size`` texts), so a
stored question is parsed once however often it is a candidate. Pure Python plus regex,
word2number, python-dateutil, snowballstemmer, lemminflect, wordfreq, rapidfuzz and breame (their data
ship in their packages): no model download, well under a millisecond per candidate.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import unicodedata
from collections import Counter, OrderedDict
import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from costline.serving.errors import MissingExtraError

try:  # the serving extra's (Unicode classes the stdlib's re lacks): a base install gets the install hint
    import regex as _regex
except ImportError:
    raise MissingExtraError("regex") from None

log = logging.getLogger(__name__)

__all__ = [
    "GUARD_REASONS",
    "REASON_ADMISSION",
    "REASON_CODE",
    "REASON_PAIR_MODEL",
    "REASON_UNREADABLE",
    "REASON_LONG_QUERY",
    "MAX_QUESTION_CHARS",
    "MAX_QUESTION_TOKENS",
    "FEATURE_NAMES",
    "Code",
    "QuestionFeatures",
    "Verifier",
    "alternatives",
    "analyse",
    "code",
    "code_reason",
    "guard",
    "pair_features",
    "read_alternatives",
    "read_antonyms",
    "read_synonyms",
]

GUARD_REASONS = ("number", "identifier", "date", "time", "unit", "negation", "polarity", "entity", "scope",
                 "comparative", "temporal", "order", "question_word", "unmatched", "extension", "short", "code")
#: A candidate whose question's code differs (:func:`code_reason`): backtick spans and fenced blocks, or outside them
#: operators, flags, paths, emails, URLs, regexes ("`rm -rf ./build`" / "`rm -rf /`", "print(7 - 3)" / "print(7 + 3)").
REASON_CODE = "code"
#: A candidate that passed the guards but scored under the admission model's operating point.
REASON_ADMISSION = "admission"
#: A candidate that passed the guards and the admission model but not the pair model (pair_model.py).
REASON_PAIR_MODEL = "pair_model"
#: A candidate the stage could not read (parsing the question or the candidate failed): never served, and the
#: lookup goes on with the next candidate.
REASON_UNREADABLE = "unreadable"
#: A question longer than MAX_QUESTION_CHARS, which is only served for the same text again (the cache's reason for
#: a question over the embedder's window, too).
REASON_LONG_QUERY = "long_query"
#: Characters of a question the stage parses at most. Longer ones are not parsed (:meth:`Verifier.check`): 254 word
#: pieces of any real question are well under this, but whitespace, control and zero-width characters cost the
#: embedder no word piece and a word of over 100 characters one ([UNK]), so a question of a request body's megabytes
#: can reach the stage, and its parse (dozens of regexes, difflib over its words) grows with the text.
MAX_QUESTION_CHARS = 2_000
#: Longest question, in the guards' words (:attr:`QuestionFeatures.tokens`), the guards compare: their word
#: matching (difflib over both questions' words) is quadratic in it. A real question of MAX_QUESTION_CHARS has a
#: few hundred; "€" x 2,000 (one [UNK] word piece to the embedder, so within its window) has 2,000 and cost the
#: guards ~340 ms a check. Over it, a pair is rejected (``long_query``) unless it is the same text again.
MAX_QUESTION_TOKENS = 600

# -- lexicons (lower case) --------------------------------------------------------------------------
_CONTRACTIONS = (
    (re.compile(r"\bcan(?:'|’)t\b|\bcannot\b"), "can not"), (re.compile(r"\bwon(?:'|’)t\b"), "will not"),
    (re.compile(r"\bshan(?:'|’)t\b"), "shall not"), (re.compile(r"n(?:'|’)t\b"), " not"),
    # the same contractions typed without the apostrophe ("wont", "doesnt"): a near-repeat, not another word
    (re.compile(r"\bwont\b"), "will not"), (re.compile(r"\bcant\b"), "can not"),
    (re.compile(r"\b(do|does|did|is|are|was|were|has|have|had|should|could|would|must|need)nt\b"), r"\1 not"),
    (re.compile(r"(?:'|’)ll\b"), " will"), (re.compile(r"(?:'|’)re\b"), " are"),
    (re.compile(r"(?:'|’)ve\b"), " have"), (re.compile(r"\bi(?:'|’)m\b"), "i am"),
)
_TOKEN = re.compile(r"[$€£#%]|\d+(?:[.,:]\d+)*(?:st|nd|rd|th)?|[^\W\d_]+(?:-[^\W\d_]+)*(?:\d+[^\W\d_]*)*"
                    r"|\d+[^\W\d_]+\w*",
                    re.UNICODE)
#: :data:`_TOKEN` for a text with combining marks (only ever on letters of other scripts than Latin, whose marks
#: :func:`_fold_accents` keeps): the stdlib's ``[^\W\d_]`` leaves out marks (Mn, Mc), so "बेटा" / "बेटी" (son /
#: daughter) read as the same two letters, "क्या" as "कय". The same pattern with marks counted as letters.
_WORD_CHAR = r"[\p{L}\p{Nl}\p{No}\p{M}]"
_TOKEN_MARKED = _regex.compile(
    rf"[$€£#%]|\d+(?:[.,:]\d+)*(?:st|nd|rd|th)?|{_WORD_CHAR}+(?:-{_WORD_CHAR}+)*(?:\d+{_WORD_CHAR}*)*"
    rf"|\d+{_WORD_CHAR}+[\p{{L}}\p{{N}}\p{{M}}_]*")
_MARK = _regex.compile(r"\p{M}")


_LETTERS_AND_MARKS = _regex.compile(r"[\p{L}\p{M}]+")


def _alpha(word: str) -> bool:
    """``word.isalpha()``, a word of another script's letters and their marks too ("बेटा": "ा" is no letter)."""
    return word.isalpha() or (not word.isascii() and _LETTERS_AND_MARKS.fullmatch(word) is not None)


def _tokens(text: str) -> list[str]:
    """:data:`_TOKEN`'s words of ``text`` (:data:`_TOKEN_MARKED`'s where it has combining marks)."""
    if not text.isascii() and _MARK.search(text):
        return _TOKEN_MARKED.findall(text)
    return _TOKEN.findall(text)


_IDENT = re.compile(r"(?<![\w$€£])#?\s?(?:[A-Za-z]{1,4}[-]?\d{2,}[A-Za-z0-9]*|\d+-\d+|\d{4,}|[A-Za-z]+\d+[A-Za-z]*"
                    r"|\d+[A-Za-z]+\d*)\b")
_TIME = re.compile(r"\b(\d{1,2})(?::(\d{2}))?\s*([ap])\.?\s?m\b\.?|\b(\d{1,2}):(\d{2})\b", re.I)
#: A clock time said with the part of the day ("6 in the evening", "9 o'clock at night", "7:30 in the morning"):
#: read as "6 pm", "9 pm", "7:30 am" before clock times are parsed, so it is the time "6pm" names.
_DAYPART_CLOCK = re.compile(r"\b(\d{1,2})(:\d{2})?\s*(?:o'?clock\s+)?(?:in\s+the\s+(morning|afternoon|evening)|at\s+(night))\b")


def _daypart_clock(m: "re.Match[str]") -> str:
    hour, minutes, part, night = int(m.group(1)), m.group(2) or "", m.group(3), m.group(4)
    if hour > 12:
        return m.group(0)  # "18 in the evening": already a 24-hour time, left as it is
    morning = part == "morning" or (night is not None and (hour == 12 or hour < 5))  # "2 at night": 2 am
    return f"{hour}{minutes} {'am' if morning else 'pm'}"


_NUMERIC_DATE = re.compile(r"\b\d{4}-\d{1,2}-\d{1,2}\b|\b\d{1,2}/\d{1,2}(?:/\d{2,4})?\b")
_MONTHS = {"jan": 1, "january": 1, "feb": 2, "february": 2, "mar": 3, "march": 3, "apr": 4, "april": 4,
           "may": 5, "jun": 6, "june": 6, "jul": 7, "july": 7, "aug": 8, "august": 8, "sep": 9, "sept": 9,
           "september": 9, "oct": 10, "october": 10, "nov": 11, "november": 11, "dec": 12, "december": 12}
_WEEKDAYS = {"monday": 1, "mon": 1, "tuesday": 2, "tue": 2, "tues": 2, "wednesday": 3, "wed": 3, "thursday": 4,
             "thu": 4, "thurs": 4, "friday": 5, "fri": 5, "saturday": 6, "sat": 6, "sunday": 7, "sun": 7}
_QUARTERS = {"q1", "q2", "q3", "q4"}
_NUMBER_WORDS = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                 "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
                 "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety", "hundred",
                 "thousand", "million", "billion"}
_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
             "eighth": 8, "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "fifteenth": 15,
             "twentieth": 20, "thirtieth": 30, "last": None}
_OTHER_NUMBERS = {"dozen": 12, "half": 0.5, "twice": 2, "double": 2, "triple": 3, "single": 1, "pair": 2,
                  "couple": 2, "none": 0, "zero": 0}
_UNITS = {"kg": "kg", "kgs": "kg", "kilo": "kg", "kilos": "kg", "kilogram": "kg", "kilograms": "kg",
          "lb": "lb", "lbs": "lb", "pound": "lb", "pounds": "lb", "g": "g", "gram": "g", "grams": "g",
          "oz": "oz", "ounce": "oz", "ounces": "oz", "gb": "gb", "mb": "mb", "tb": "tb", "kb": "kb",
          "mbps": "mbps", "gbps": "gbps", "kbps": "kbps", "inch": "inch", "inches": "inch", "in": "inch",
          "cm": "cm", "mm": "mm", "m": "m", "km": "km", "mile": "mile", "miles": "mile", "litre": "l",
          "liter": "l", "litres": "l", "liters": "l", "l": "l", "ml": "ml", "%": "%", "percent": "%",
          "day": "day", "days": "day", "night": "night", "nights": "night", "week": "week", "weeks": "week",
          "month": "month", "months": "month", "year": "year", "years": "year", "hour": "hour",
          "hours": "hour", "minute": "minute", "minutes": "minute", "min": "minute", "mins": "minute",
          "$": "usd", "usd": "usd", "dollar": "usd", "dollars": "usd", "€": "eur", "eur": "eur",
          "euro": "eur", "euros": "eur", "£": "gbp", "gbp": "gbp", "seat": "seat", "seats": "seat",
          "user": "user", "users": "user", "license": "license", "licenses": "license", "licence": "license",
          "licences": "license", "item": "item", "items": "item", "box": "box", "boxes": "box",
          "bag": "bag", "bags": "bag", "adult": "adult", "adults": "adult", "child": "child",
          "children": "child", "kid": "child", "kids": "child",
          # lengths, areas and volumes in words (after a number only, as every unit here)
          "centimetre": "cm", "centimetres": "cm", "centimeter": "cm", "centimeters": "cm",
          "millimetre": "mm", "millimetres": "mm", "millimeter": "mm", "millimeters": "mm",
          "metre": "m", "metres": "m", "meter": "m", "meters": "m", "kilometre": "km", "kilometres": "km",
          "kilometer": "km", "kilometers": "km", "foot": "ft", "feet": "ft", "ft": "ft", "yard": "yd",
          "yards": "yd", "yd": "yd", "acre": "acre", "acres": "acre", "hectare": "ha", "hectares": "ha",
          "gallon": "gal", "gallons": "gal", "pint": "pint", "pints": "pint", "tonne": "t", "tonnes": "t"}
_NEGATIONS = {"not", "no", "never", "none", "nothing", "nobody", "neither", "nor", "without", "non", "nowhere",
              "cannot", "unable", "unavailable"}
#: The negators of other languages a question may come in (accents folded, lower case), counted with the
#: English ones: German, Dutch, Spanish, Portuguese, Italian ("no" and "non" are in the English set). Words that
#: are also common English words ("mai", "nem") are left out; French is read apart (:func:`_french_negations`).
_FOREIGN_NEGATIONS = frozenset({
    "nicht", "nichts", "kein", "keine", "keinen", "keinem", "keiner", "keines", "nie", "niemals", "niemand",
    "nirgends", "nirgendwo",  # German
    "niet", "geen", "nooit", "niets", "nergens",  # Dutch
    "nunca", "jamas", "ningun", "ninguna", "ninguno", "nadie", "nada", "tampoco",  # Spanish
    "nao", "nenhum", "nenhuma", "ninguem",  # Portuguese ("nunca", "nada" above)
    "niente", "nessuno", "nessuna", "nemmeno", "neanche",  # Italian ("non" is English too; "mai" is also "ever")
})
#: French negators that never mean anything else; "pas" (also "a step", "PAs") and "plus" / "personne" / "que"
#: only count with the "ne" / "n'" that opens a negation (:func:`_french_negations`).
_FRENCH_NEGATORS = frozenset({"jamais", "rien", "aucun", "aucune", "aucuns", "aucunes", "guere"})
_FRENCH_NE = re.compile(r"\bne\s+(?=(?:[\w'\u2019-]+\s+){0,4}?(?:pas|plus|jamais|rien|aucun|aucune|personne|que|"
                        r"guere|nulle)\b)|\bn['\u2019](?=[a-z])")  # not "the NE entrance", "rock 'n' roll"
# opposite actions and states: word -> (group, sign); a conflict is opposite signs in one group
_POLARITY_PAIRS = (
    ("enable", "disable"), ("enabled", "disabled"), ("activate", "deactivate"), ("active", "inactive"),
    ("add", "remove"), ("add", "delete"), ("added", "removed"), ("include", "exclude"), ("included", "excluded"),
    ("including", "excluding"), ("increase", "decrease"), ("increase", "reduce"), ("raise", "lower"),
    ("upgrade", "downgrade"), ("subscribe", "unsubscribe"), ("lock", "unlock"), ("locked", "unlocked"),
    ("mute", "unmute"), ("allow", "block"), ("allow", "prohibit"), ("allowed", "prohibited"),
    ("allowed", "forbidden"), ("allowed", "banned"), ("accept", "decline"), ("accept", "refuse"),
    ("accept", "reject"), ("approve", "reject"), ("approve", "deny"), ("approved", "rejected"),
    ("approved", "denied"), ("encrypt", "decrypt"), ("show", "hide"), ("connect", "disconnect"),
    ("connecting", "disconnecting"), ("paid", "unpaid"), ("refundable", "nonrefundable"),
    ("mandatory", "optional"), ("required", "optional"), ("online", "offline"), ("open", "closed"),
    ("open", "close"), ("eligible", "ineligible"), ("grant", "revoke"), ("confirm", "cancel"),
    ("valid", "expired"), ("valid", "invalid"), ("delayed", "on-time"), ("made", "missed"),
    ("successfully", "failed"), ("worked", "failed"), ("start", "stop"), ("begin", "end"), ("start", "end"),
    ("in-stock", "out-of-stock"), ("buy", "sell"), ("opt-in", "opt-out"),
    ("turn-on", "turn-off"), ("switch-on", "switch-off"), ("log-in", "log-out"), ("sign-in", "sign-out"),
    ("check-in", "check-out"), ("save", "delete"), ("included", "leave-out"), ("receive", "send"), ("received", "sent"), ("import", "export"),
    ("upload", "download"), ("join", "leave"), ("hire", "fire"), ("win", "lose"), ("pass", "fail"),
    ("credit", "debit"), ("deposit", "withdraw"), ("charge", "refund"), ("charged", "refunded"),
    ("enroll", "opt-out"), ("enroll", "unenroll"), ("active", "disabled"), ("covered", "excluded"),
    ("include", "leave-out"), ("book", "avoid"), ("on-time", "late"), ("arrived", "lost"),
    ("log-on", "log-off"), ("sign-on", "sign-off"), ("log-in", "log-off"), ("sign-in", "sign-off"),
    ("move-in", "move-out"), ("resume", "pause"), ("resume", "suspend"),
    ("link", "unlink"), ("link", "detach"), ("attach", "detach"), ("linked", "unlinked"), ("link", "disconnect"),
    ("attached", "detached"), ("linked", "detached"),
    # in the price or charged on top of it ("charged-extra" is read by _PHRASES: "charged separately", "cost
    # extra", "an extra fee", "a surcharge", "is breakfast extra?")
    ("include", "charged-extra"), ("includes", "charged-extra"), ("included", "charged-extra"),
    ("including", "charged-extra"), ("inclusive", "charged-extra"),
    # "does the fee cover X" / "is X charged on top of the fee"
    ("cover", "charged-extra"), ("covers", "charged-extra"), ("covered", "charged-extra"),
)
_TEMPORAL_WORDS = {
    "last": -1, "previous": -1, "previously": -1, "past": -1, "prior": -1, "old": -1, "earlier": -1,
    "yesterday": -1, "ago": -1, "already": -1, "before": -1, "so-far": -1, "ever": -1, "former": -1,
    "next": 1, "upcoming": 1, "coming": 1, "future": 1, "new": 1, "later": 1, "tomorrow": 1, "soon": 1,
    "after": 1, "from-now-on": 1, "still": 1, "yet": 1, "pending": 1,
    "while": 0, "whilst": 0, "during": 0, "meanwhile": 0,
    "now": 0, "today": 0, "tonight": 0, "current": 0, "currently": 0, "this-time": 0, "this-week": 0,
    "this-month": 0, "this-year": 0, "this-quarter": 0, "this-season": 0, "this-summer": 0, "this-winter": 0,
    "this-morning": 0, "this-evening": 0, "this-afternoon": 0, "this-weekend": 0, "this-cycle": 0,
}
_PAST = {"was", "were", "did", "had", "got", "happened", "went", "could-have", "earned", "used", "spent"}
_FUTURE = {"will", "shall", "gonna", "going-to", "be"}
_SCOPE = {"all", "every", "each", "everyone", "everybody", "everything", "entire", "whole", "both", "any",
          "always", "permanently", "everywhere", "anywhere", "ever", "in-total", "per-day", "per-week", "per-month",
          "per-year",
          "per-quarter"}
# scope by place: how far a question reaches ("my street" / "my area" / "the region" / "nationwide")
_REACH = (
    (re.compile(r"\b(?:my|our|this|the)\s+(?:own\s+)?(?:street|road|building|block|house|home|address|flat|"
                r"apartment|unit|neighbou?rhood|area|postcode|zip\s*code|town|village|location|branch|store|"
                r"site)\b|\bnear\s+(?:me|us)\b|\blocal(?:ly)?\b"), "local"),
    (re.compile(r"\b(?:region|regional|regionally|statewide|state-wide|countywide|citywide|city-wide|"
                r"across\s+(?:the\s+)?(?:city|state|county|region|area))\b|\bwhole\s+(?:city|state|county)\b"),
     "region"),
    (re.compile(r"\b(?:nationwide|nation-wide|countrywide|country-wide|nationally)\b|\b(?:across|all\s+over|"
                r"throughout|anywhere\s+in|everywhere\s+in|all\s+of)\s+the\s+(?:country|nation)\b|"
                r"\b(?:whole|entire)\s+(?:country|nation)\b|"
                # "national" as a reach, not in a name ("national insurance", "National Rail", "national holiday")
                r"\bnational\b(?!\s+(?:insurance|rail|railway|express|trust|park|parks|holiday|holidays|id|"
                r"identity|anthem|team|lottery|grid|gallery|museum|health|guard|debt|average|minimum|living|"
                r"curriculum|service|savings|number))"), "nation"),
    (re.compile(r"\b(?:worldwide|world-wide|globally|global|internationally|every\s+country|all\s+countries|"
                r"all\s+over\s+the\s+world|(?:around|across|anywhere\s+in)\s+the\s+(?:world|globe)|"
                # abroad as where something goes ("ship abroad"), not where someone is ("while I'm abroad")
                r"(?:ship|deliver|send|post|mail|call|transfer|dispatch)\w*\s+(?:\w+\s+){0,2}(?:abroad|overseas)|"
                r"(?:other|foreign)\s+countries|outside\s+(?:the|this|my|our)\s+country|"
                r"international\s+(?:shipping|delivery|deliveries|shortage|outage|recall))\b"), "world"),
    (re.compile(r"\b(?:all|every|each|other|any)\s+(?:of\s+(?:your|the|our)\s+)?(?:customers?|users?|subscribers?|"
                r"members?|clients?|residents?|tenants?|households?|accounts?|branch(?:es)?|stores?|locations?|"
                r"sites?|offices?|depots?|warehouses?|pharmac(?:y|ies)|gyms?|clubs?|outlets?|shops?|centres?|"
                r"centers?|clinics?|hospitals?|schools?|campus(?:es)?|stations?|lines?|routes?|regions?|"
                r"states?|cities|counties)\b|"
                r"\b(?:across|throughout)\s+(?:all\s+)?(?:(?:your|the|our)\s+)?(?:branch(?:es)?|stores|"
                r"locations|sites|offices|network|chain|company|organi[sz]ation|business)\b|"
                r"\b(?:company|organi[sz]ation|system|network|platform|service|chain|group|industry|"
                r"sector)-?wide\b|\boutage\s+map\b"),
     "everyone"),
)
# withdrawing from / undoing what the other question asks for ("consent" / "withdraw consent");
# snowball stems of the verbs, and a few irregular forms
_REVERSAL = ("withdraw", "withdrew", "withdrawn", "revoke", "rescind", "retract", "cancel", "cancellation",
             "stop", "quit", "opt-out", "unsubscribe", "undo", "reverse", "discontinue", "terminate", "disable",
             "deactivate", "turn-off", "switch-off", "remove", "delete", "unenroll", "deregister", "unregister",
             "unlink", "disconnect", "suspend", "pause", "freeze", "refuse", "decline", "reject", "renounce",
             "unshare", "unfollow", "waive", "forfeit", "relinquish", "unblock", "halt", "object", "deny",
             "give-up", "give-back", "hand-back", "drop-out", "pull-out", "back-out", "call-off", "let-go",
             "walk-away", "step-down", "sign-off", "log-off", "shut-down", "shut-off", "close-down", "close-off",
             "cut-off", "turn-down",
             # not doing it at all: "do I need to take the antibiotics" / "can I skip the antibiotics"
             "skip", "leave-out", "get-out", "omit", "forgo", "forego", "bypass")
#: Reversal words that are also nouns ("hire a skip"): only a verb (not after a determiner) reverses.
_VERB_ONLY_REVERSAL = frozenset({"skip"})
_DETERMINERS = frozenset({"a", "an", "the", "my", "your", "our", "their", "his", "her", "this", "that", "each", "every",
                          "per", "one", "another", "any", "which"})
#: "removal(s)" is also a house move (British): no reversal against a question about moving, unless it is the
#: removal *of* something.
_MOVE_WORDS = frozenset({"move", "moves", "moving", "moved", "mover", "movers"})
# negating prefixes: "furnished" / "unfurnished", "register" / "deregister", "legal" / "illegal"; the rule
# fires only when one side has the bare word (its snowball stem) and the other the prefixed one
_NEG_PREFIXES = ("non", "dis", "un", "de", "in", "im", "il", "ir")
#: Words that begin with a negating prefix but do not negate what follows ("discount" is no "count" undone).
_NOT_NEGATING = frozenset("""
understand understood undertake undergo underline undermine underwrite uniform union unique unit unite
united universal universe university unless until unto unveil
discount detail details invoice invoices deliver delivery deliveries delivered inform information install
installation installment instalment depart department departure design define definite demand display
discover dispatch discharge dispose disposal discuss discussion disease dismiss distance district distribute
distribution disclose disclosure discard discipline disguise dispute disrupt dissolve distract distress
disturb dispense disburse discern discourse discreet discrete dismal dispel dispatch
include including income insight invest investment index inside input intend interest insure insurance
instant instance instead instinct institute instruct instruction insist inspect intake intern internal invent
inbound inland inbox incline incur indeed indicate induct infer inflate influence ingest inhale inherit
initial inject injure inlet inmate innate inquire insert inset inspire insult intact integrate intense
interact invite involve inward infamous invaluable inflammable
impress import improve impose impact implant imply impart important impound impair impel implement
illustrate illuminate illusion irritate iron irony
depend deposit derive deserve deduct delay debit defer degree dessert desert detect devote depress deport
depose decline decide declare decorate dedicate defeat defend delegate deny depict deploy descend describe
desire destroy determine develop devise delight delicate deliberate demonstrate denote dental derail
deduce deem default defect deficit delegate demo derby design despite detain deter detour
nonetheless
""".split())
_PERMISSION = frozenset({"can", "could", "may", "allowed", "permitted", "able", "ok", "okay", "fine", "safe"})
_OBLIGATION = frozenset({"must", "should", "need", "needs", "have", "has", "required", "obliged", "mandatory",
                         "ought", "supposed"})
# a refusal or an exclusion against the plain verb: "can I re-enter" / "is re-entry refused", "does it cover X" /
# "is X excluded" (not "bar", a noun; not "reject" / "decline", which a declined card and a rejected payment share)
_REFUSAL = frozenset({"refuse", "refused", "refusal", "deny", "denied", "exclude", "excluded", "exclusion",
                      "disallowed", "blocked", "barred", "debarred", "banned", "prohibited", "forbidden",
                      "disqualified", "disqualify", "disqualification", "ineligible"})
#: Refusal participles read only word for word, never by their stem ("a block of flats", "the bar").
_REFUSAL_EXACT = frozenset({"blocked", "barred", "debarred"})
# a question asking whether to avoid, or whether it is forbidden, what the other asks to do
_PROHIBITION = frozenset({"avoid", "avoiding", "forbidden", "forbid", "prohibited", "prohibit", "banned", "ban",
                          "refrain", "illegal", "unsafe", "dangerous", "outlawed", "prevent", "dodge",
                          # no reason to do what the other asks whether to do: "should I book" / "is it pointless"
                          "pointless",
                          # a danger is a reason to avoid: "is it safe for cats" / "is it toxic to cats"
                          "toxic", "poisonous", "harmful", "hazardous", "risky",
                          # a negative evaluation against the plain act: "can I freeze it" / "is it a bad idea to
                          # freeze it" ("a bad idea to", "a mistake to", "a waste of money to" are read as
                          # "inadvisable" by _PHRASES)
                          "inadvisable", "unwise", "unadvisable"}) | _REFUSAL
#: Days a particle can be the preposition of ("stay on weekends", "check in on Mondays" is not "check-in on"):
#: never joined to the verb before it.
_DAY_NOUNS = frozenset({"weekend", "weekends", "weekday", "weekdays", "monday", "tuesday", "wednesday", "thursday",
                        "friday", "saturday", "sunday", "mondays", "tuesdays", "wednesdays", "thursdays", "fridays",
                        "saturdays", "sundays"})
# verbs + particle read as one word (lemmas by lemminflect: "gave up" is "give-up")
_PARTICLES = frozenset({"up", "back", "out", "off", "down", "in", "on", "away", "go"})
_PHRASAL = frozenset({
    "give-up", "give-back", "hand-back", "hand-in", "drop-out", "pull-out", "back-out", "move-out", "move-in",
    "call-off", "turn-down", "let-go", "walk-away", "step-down", "sign-up", "sign-on", "sign-off", "log-on",
    "log-off", "take-up", "get-out", "hold-on", "keep-on", "stay-on", "shut-down", "shut-off", "close-down",
    "close-off", "cut-off",
    "opt-out", "opt-in", "check-in", "check-out", "sign-in", "sign-out", "log-in", "log-out", "turn-on", "turn-off",
    "switch-on", "switch-off",
})
# keeping, joining, taking up / giving up, leaving, handing back: one group, either side
_RETAIN = ("keep", "retain", "renew", "extend", "continue", "stay", "maintain", "resume", "reinstate",
           "reactivate", "hold-on", "keep-on", "stay-on", "sign-up", "sign-on", "take-up", "join", "enrol",
           "enroll", "register", "subscribe", "opt-in", "move-in", "accept")
_RELINQUISH = ("give-up", "give-back", "hand-back", "hand-in", "surrender", "relinquish", "forfeit", "cancel",
               "terminate", "quit", "leave", "drop-out", "pull-out", "back-out", "opt-out", "unsubscribe",
               "unenroll", "deregister", "unregister", "call-off", "turn-down", "let-go", "walk-away",
               "step-down", "sign-off", "move-out", "discontinue", "withdraw")
#: The polarity group of _RETAIN / _RELINQUISH: it only counts when each side is all one sign ("leave" is also
#: a noun: "can I keep my unused leave" is no giving up).
_RETAIN_GROUP = -1
_COLLECTIVE = {"team", "teams", "department", "organization", "organisation", "company", "family",
               "group", "party", "passengers", "guests", "employees", "members", "staff", "children",
               "reports", "everyone", "colleagues", "users", "customers", "too"}
_OWNER = re.compile(r"\b(?:whole|entire|all|every)\s+(team|department|organi[sz]ation|company|family|"
                    r"group|party|staff|reports|employees|colleagues)\b|\b(team|department|company|family|group)"
                    r"(?:'|’)s\b")
_THIRD = {"he", "him", "his", "she", "her", "they", "them", "their", "someone", "somebody", "another",
          "others"}
_COMPARATIVE = (
    ("more", "less"), ("more", "fewer"), ("higher", "lower"), ("cheaper", "more-expensive"), ("faster", "slower"),
    ("bigger", "smaller"), ("larger", "smaller"), ("earlier", "later"), ("longer", "shorter"),
    ("better", "worse"), ("most", "least"), ("over", "under"), ("above", "below"), ("at-least", "at-most"),
    ("maximum", "minimum"), ("max", "min"), ("cheapest", "most-expensive"), ("first", "last"),
    ("before", "after"), ("early", "late"), ("increase", "decrease"),
    ("heavier", "lighter"), ("heaviest", "lightest"), ("longest", "shortest"), ("biggest", "smallest"),
    ("largest", "smallest"), ("highest", "lowest"), ("fastest", "slowest"), ("best", "worst"), ("warmer", "colder"),
    ("hotter", "colder"), ("stronger", "weaker"), ("wider", "narrower"), ("thicker", "thinner"),
)
_QWORDS = {"what", "when", "where", "why", "who", "which", "how", "whom", "whose"}
_STOP = {"a", "an", "the", "i", "me", "my", "mine", "myself", "we", "us", "our", "you", "your", "it", "its",
         "is", "are", "am", "was", "were", "be", "been", "do", "does", "did", "can", "could", "would", "should",
         "will", "shall", "may", "might", "must", "have", "has", "had", "to", "of", "in", "on", "at", "for",
         "from", "by", "with", "about", "into", "onto", "and", "or", "but", "if", "so", "that", "this",
         "these", "those", "there", "here", "what", "when", "where", "why", "who", "which", "how", "please",
         "pls", "plz", "thanks", "thank", "thx", "hi", "hello", "hey", "team", "any", "some", "get", "got",
         "just", "also", "up", "out", "way", "right", "now", "question", "quick", "sorry", "bother",
         "good", "morning", "there", "asap", "ok", "okay", "is", "possible", "want", "like", "need", "know",
         "tell", "let", "go", "going", "am", "im", "then", "than", "too", "very", "really", "same"}
_CAPITAL_SKIP = {"i", "how", "what", "when", "where", "why", "who", "which", "can", "could", "is", "are", "am",
                 "do", "does", "did", "will", "would", "should", "please", "hi", "hello", "hey", "thanks",
                 "thank", "ok", "okay", "my", "the", "a", "an", "quick", "question", "sorry", "good", "there",
                 "was", "were", "may", "has", "have", "any", "if", "it", "our", "we", "you", "your", "in",
                 "on", "at", "for", "whats", "wheres", "hows", "im", "and", "or", "but", "so", "yes", "no",
                 "not", "dear", "help", "urgent"}


def _polarity_index() -> dict[str, list[tuple[int, int]]]:
    out: dict[str, list[tuple[int, int]]] = {}
    for g, (a, b) in enumerate(_POLARITY_PAIRS):
        out.setdefault(a, []).append((g, 1))
        out.setdefault(b, []).append((g, -1))
    for words, sign in ((_RETAIN, 1), (_RELINQUISH, -1)):  # one group: keeping / joining against giving up
        for w in words:
            out.setdefault(w, []).append((_RETAIN_GROUP, sign))
    return out


def _comparative_index() -> dict[str, list[tuple[int, int]]]:
    out: dict[str, list[tuple[int, int]]] = {}
    for g, (a, b) in enumerate(_COMPARATIVE):
        out.setdefault(a, []).append((g, 1))
        out.setdefault(b, []).append((g, -1))
    return out


_POLARITY = _polarity_index()
_COMPARATIVES = _comparative_index()
_PHRASES = (  # multi-word lexicon entries, joined with '-' before lookup
    # a particle after a short object: "check my dog in" / "check my dog out of" -> "check-in my dog"
    (re.compile(r"\b(turn|switch|opt|log|sign|check)(?:ing|ed|s)?\s+((?:my|the|your|our|their|his|her|this|that"
                r"|a|an|it|them)(?:\s+[a-z']+){0,2}?)\s+(on|off|in|out)\b"), r"\1-\3 \2"),
    (re.compile(r"\b(turn|switch|opt|log|sign|check)(?:ing|ed|s)?\s+(on|off|in|out)\b"), r"\1-\2"),
    (re.compile(r"\b(in|out)\s+of\s+stock\b"), r"\1-of-stock"), (re.compile(r"\bin\s+stock\b"), "in-stock"),
    (re.compile(r"\bon\s+time\b"), "on-time"), (re.compile(r"\bat\s+(least|most)\b"), r"at-\1"),
    (re.compile(r"\bmore\s+expensive\b"), "more-expensive"), (re.compile(r"\bmost\s+expensive\b"),
                                                               "most-expensive"),
    (re.compile(r"\bso\s+far\b"), "so-far"), (re.compile(r"\bfrom\s+now\s+on\b"), "from-now-on"),
    (re.compile(r"\bgoing\s+to\b"), "going-to"), (re.compile(r"\bcould\s+have\b"), "could-have"),
    (re.compile(r"\bleave\s+out\b|\bleft\s+out\b"), "leave-out"), (re.compile(r"\bin\s+total\b"), "in-total"),
    # (not "a week's hire": one week of it)
    (re.compile(r"\b(?:every|each|per|a)\s+(day|week|month|year|quarter)\b(?!['\u2019]s\b)"), r"per-\1"),
    # "second-hand" is "used", no count; "zero experience" is "no experience"
    (re.compile(r"\bsecond[\s-]?hand\b"), "secondhand"),
    (re.compile(r"\bzero\s+(?=[a-z]{3,})(?!(?:percent|per|to|and|or|of|degrees?|hours?|days?|pounds?|dollars?)\b)"),
     "no "),
    (re.compile(r"\b(?:daily)\b"), "per-day"), (re.compile(r"\b(?:weekly)\b"), "per-week"),
    (re.compile(r"\b(?:monthly)\b"), "per-month"),
    (re.compile(r"\bthis\s+(time|week|month|year|quarter|season|summer|winter|morning|evening|afternoon|weekend"
                r"|cycle)\b"), r"this-\1"),
    (re.compile(r"\b(a|the|this|that|new|which|each|every|another|any|no|other)\s+one\b"), r"\1 onepronoun"),
    # "one of my garments" is "a garment", not a count ("two of my garments" still is)
    (re.compile(r"\bone\s+of\s+(?=(?:the|my|your|our|his|her|their|these|those)\b)"), "onepronoun of "),
    # how far in time a question reaches: "right now" / "at the moment" against "usually" / "late at night"
    (re.compile(r"\bnow\s+that\b"), "seeing that"), (re.compile(r"\bright\s+now\b"), "now"),
    (re.compile(r"\bat\s+(?:the\s+moment|present)\b"), "now"),
    (re.compile(r"\b(?:late\s+)?at\s+night\b"), "at-night"), (re.compile(r"\baround\s+the\s+clock\b"),
                                                                   "around-the-clock"),
    (re.compile(r"\bon\s+the\s+day\b"), "on-the-day"),
    # the stretch before an event: "in the weeks leading up to Black Friday", "in the run-up to Christmas"
    (re.compile(r"\bleading\s+up\s+to\b|\b(?:in\s+)?the\s+(?:run|lead)[\s-]?up\s+to\b"), "before"),
    # "phone no." is "phone number", no negation
    (re.compile(r"\b(phone|telephone|tel|mobile|account|reference|ref|order|invoice|policy|booking|flight|seat|"
                r"room|house|table|item|serial|model|part|registration|reg|membership|ticket|pin)\s+no\.?(?=\s|$)"),
     r"\1 number"),
    # a code said with a hyphen is the same code ("C-41" / "C41"), not a word and a number
    (re.compile(r"\b([a-z]{1,3})-(\d{2,})\b"), r"\1\2"),
    # a list said with commas grows like one said with "and": "a blade" / "a blade, stand and water tray"
    (re.compile(r",\s+(?=(?:[a-z'-]+\s+){1,3}(?:and|or)\s)"), " and "),
    # "can you wait until I'm home to start" is "after I'm home" (against "before I get home"); not in "how long
    # do I wait until …" (a duration, "how long before …")
    (re.compile(r"^(?!.*\bhow\s+long\b)(.*?)\bwait\s+(?:until|till|til)\b"), r"\1after"),
    # "once the recovery period is over": after it, not during it
    (re.compile(r"(?:\bonce|(?<=\w\s)(?:when|as\s+soon\s+as))\b(?=.*\b(?:(?:is|are|has|have|had)\s+(?:been\s+)?"
                r"(?:over|finished|ended|done|completed|passed|expired|stopped|gone|worn\s+off|run\s+out|healed|"
                r"cleared)|"
                r"(?:wears|wore)\s+off|runs\s+out|finishes|ends|expires)\b)"), "after"),
    # charged on top of the price: the opposite of "included" ("is X included" / "is X charged separately")
    (re.compile(r"\b(?:cost|costs|costing|charge|charged|charges|charging|bill|billed|billing|pay|paid|paying|"
                r"priced|sold|invoiced)\s+(?:for\s+)?(?:extra|separately|additionally|on\s+top)\b"), "charged-extra"),
    (re.compile(r"\b(?:an?\s+)?(?:extra|additional|separate)\s+(?:charge|cost|fee)s?\b"), "charged-extra"),
    (re.compile(r"\bsurcharges?\b"), "charged-extra"),
    # "in addition to the fee", "on top of the price": charged beyond it
    (re.compile(r"\b(?:on\s+top\s+of|in\s+addition\s+to)\s+(?:the|my|your|our|their|its)\s+(?:[\w-]+\s+){0,3}?"
                r"(?:fee|price|cost|rate|fare|ticket|charge)s?\b"), "charged-extra"),
    # a negative evaluation of the act asked about: "is it a bad idea to", "a mistake to", "a waste of money to"
    (re.compile(r"\b(?:an?\s+)?(?:bad\s+idea|mistake|waste\s+of\s+(?:time|money))(?=\s+(?:to|if)\b)"),
     "inadvisable"),
    (re.compile(r"\b(?:extra|on\s+top)(?=\s*[?.!]*\s*$)"), "charged-extra"),  # "is breakfast extra?"
    # a period's boundary: "for the first month" (during it) / "after the first month"
    (re.compile(r"\b(?:for|in|within|over|throughout)\s+(?=(?:the|your|my|our)\s+(?:first|initial|opening|"
                r"introductory|trial)\b)"), "during "),
    # "at all" only stresses ("will it damage my tiles at all"): no quantifier -- unless a determiner or a
    # plural noun follows: "at all your venues", "at all branches" is "all" ("_at_all")
    (re.compile(r"\bat\s+all\b(?:\s+([a-z]+))?"), lambda m: _at_all(m)),
    # "every time I floss" is "whenever I floss", no scope ("every time" / "this time" still is)
    (re.compile(r"\b(?:every|each)\s+time\s+(?=(?:i|you|we|they|he|she|it|my|the|your|our)\b)"), "whenever "),
)
#: The question asks about this moment ("now", "currently", "at the moment" after _PHRASES).
_NOW = frozenset({"now", "currently", "current", "presently"})
#: ... and these about a habit, a season or a scheduled time.
_HABITUAL = frozenset({"usually", "normally", "typically", "generally", "often", "regularly", "ordinarily",
                       "overnight", "weekends", "holidays", "summer", "winter", "christmas", "night", "nights",
                       "evenings", "mornings", "at-night", "around-the-clock", "on-the-day", "always",
                       "per-day", "per-week", "per-month", "per-year", "seasonal", "seasonally"})
#: A one-letter designator after a noun ("Studio A", "gate C", "Court B"): a capital letter other than "I", not
#: followed by a word of its own ("Studio A is" still is one; "A" opening a clause after "." is not matched).
_DESIGNATOR = re.compile(r"(?<![.!?]\s)\b([A-Za-z][a-z]{2,})\s+([A-HJ-Z])\b(?![’'.\w-])")
#: The tier words a product name grows by ("Home Shield Plus", "Acme Pro"): capitalised, after a capitalised word.
_TIER_WORDS = ("Plus", "Pro", "Premium", "Lite", "Light", "Basic", "Max", "Mini", "Ultra", "Standard", "Deluxe",
               "Elite", "Gold", "Silver", "Platinum", "Bronze", "Advanced", "Essential", "Essentials", "Extra")
_TIER = re.compile(r"\b([A-Z][\w&-]*)\s+(" + "|".join(_TIER_WORDS) + r")\b")
_HYPHEN_PREFIX = re.compile(r"\b(de|un|dis)-(?=[a-z]{4,})")  # "de-authorise" is "deauthorise"



#: The empty set every empty field of a :class:`QuestionFeatures` shares.
_NO_ITEMS: frozenset[Any] = frozenset()


@dataclass(frozen=True)
class QuestionFeatures:
    """What the guards compare, parsed once per text."""

    text: str
    tokens: tuple[str, ...]
    stems: frozenset[str]
    content: frozenset[str]
    numbers: frozenset[str]
    identifiers: frozenset[str]
    dates: frozenset[str]
    times: frozenset[str]
    units: frozenset[str]
    negations: int
    polarity: frozenset[tuple[int, int]]
    temporal: frozenset[int]
    tense: frozenset[str]
    scope: frozenset[str]
    collective: frozenset[str]
    third: bool
    #: Groups the question is about as a whole ("my team's payslips", "our whole department").
    owners: frozenset[str]
    comparative: frozenset[tuple[int, int]]
    entities: frozenset[str]
    qword: str
    #: Stems of content words rare in English (wordfreq Zipf frequency under RARE_ZIPF): names,
    #: products, jargon — and typos, which the comparison forgives.
    rare: frozenset[str] = frozenset()
    #: How far the question reaches by place or population ("local", "region", "nation", "world", "everyone").
    reach: frozenset[str] = frozenset()
    #: Verbs of withdrawal, revocation, opting out, stopping (stems).
    reversal: frozenset[str] = frozenset()
    #: (stem of the base, stem of the word) of each word with a negating prefix ("unfurnished": furnish, unfurnish).
    prefixed: frozenset[tuple[str, str]] = frozenset()
    #: Words asking whether to avoid something, or whether it is forbidden ("avoid", "prohibited").
    prohibition: frozenset[str] = frozenset()
    #: "permit" (can, may, allowed), "oblige" (must, have to, need to, required) and / or "advise" (should, ought to,
    #: recommended).
    modality: frozenset[str] = frozenset()
    #: Asks to stop someone doing something: "how do I block the courier from leaving parcels".
    prevents: bool = False
    #: Names a verb of stopping or preventing at all ("stop", "block", "prevent", "ban").
    prevent_word: bool = False
    #: The modality of the question's first words (its own: "must we …", "do I have to …", "are we free to …").
    lead_modality: frozenset[str] = frozenset()
    #: Lemmas of plural nouns right after "which" ("which orders are affected").
    which_many: frozenset[str] = frozenset()
    #: Asks about this moment ("now", "currently", "at the moment").
    now: bool = False
    #: Asks about a habit, a season or a scheduled time ("usually", "over the summer", "late at night").
    habitual: bool = False
    #: Seasons and times of the year it names ("autumn", "christmas").
    season: frozenset[str] = frozenset()
    #: Asks about a habit or the whole year ("usually", "all year").
    habit_frame: bool = False
    #: (line, side) of each word or phrase of the antonym lexicon (data/antonyms.txt) it names, by lemma.
    antonyms: frozenset[tuple[int, int]] = frozenset()
    #: Speaks of "I" (me, my …) / of "you" (your …): a converse ("sell" / "buy") needs the same person.
    person: tuple[bool, bool] = (False, False)
    #: A weekday, month or period after "this" / "next" / "last" ("next:d3" for "next Wednesday").
    deixis: frozenset[str] = frozenset()
    #: How a period bounds an event: "lead" (up to / at least / no later than N before: at the latest N ahead),
    #: "within" (within / less than N of or before: closer than N) or "from" (from / starting N before: the
    #: window's end, against "up to N before", its start).
    window: frozenset[str] = frozenset()
    #: Asks about this very moment, wider than ``now``: also "today", "right away", "immediately".
    moment: bool = False
    #: Names a stretch of time ahead or a point near a deadline: "in the final month", "in the last two weeks",
    #: "near the end", "closer to the date", "at the last minute".
    ahead: bool = False
    #: (prefix, word) of each hyphenated prefix before a word: "pre-primary" (pre, primary), "semi-skimmed".
    hyphen_prefixed: frozenset[tuple[str, str]] = frozenset()
    #: Each word after a hyphen ("ready-picked": picked).
    hyphenated: frozenset[str] = frozenset()
    #: The content stems of what the question says aside from what it asks: a statement before or after the
    #: question ("I've never ridden before, can I join a trail ride?") or a purpose clause ("... so they don't get
    #: damaged").
    aside_content: frozenset[str] = frozenset()
    #: The question's text without those asides (None: it has none, or they leave under three words); read as
    #: :attr:`core` when a guard needs it.
    core_text: str | None = None
    #: When a thing is done against its day: "advance" ("in advance", "beforehand", "ahead of time") and / or
    #: "day" ("on the day", "on the same day", "same-day").
    lead: frozenset[str] = frozenset()
    #: The kind of time it asks for: "lead" ("how far in advance", "how early", "how much notice") or "duration"
    #: ("how long is it", "how long does it last"); None when it asks neither or both could be meant.
    time_ask: str | None = None
    #: Asks for a time or a stretch of time at the start of a clause ("when", "what time", "how long", "how soon",
    #: "how early", "how far in advance", "by when" …): two such questions share their frame, so the pair model is
    #: asked to be surer (:attr:`Verifier.time_threshold`).
    asks_time: bool = False
    #: What kinds of answer it asks for, at the start of a clause or inside a sentence ("can you tell me where",
    #: "I'd like to know when"): "place" ("where"), "reason" ("why", "how come"), "person" ("who", "whom",
    #: "whose"), "manner" ("how do / can / should I", "how to"), "time" (:attr:`asks_time`, or "when" inside a
    #: sentence). A time or a reason answers no other kind ("where do I return it" / "when do I return
    #: it", "why can people see my posts" / "who can see them"); the others often share one ("where do I find my
    #: invoice" / "how do I find it", "who do I contact about billing" / "how do I contact billing").
    asks: frozenset[str] = frozenset()
    #: What a time question measures, where its words say so: "often" (a frequency: "how often", "how many times a
    #: year"), "window" (a time the asker has: "how long do I have to return it") or "take" (how long a thing
    #: takes: "how long does the refund take"); "own" (a thing's own stretch: "the fitting itself", "the actual
    #: treatment") and "span" (a stretch up to or from it: "from ordering to fitting", "how soon after ordering").
    time_frame: frozenset[str] = frozenset()
    #: What it asks of a price: "amount" ("how much is …", "what's the price of …") or "inclusion" (a yes / no on
    #: what a price covers: "does the price include …"); None for neither or both (_PRICE_ASK, _INCLUSION_ASK).
    price_ask: str | None = None
    #: Its only count of one is a word ("one", "single"), not a digit or an ordinal: "one game", "a single lesson".
    one_count: bool = False
    #: Has the article "a" / "an" (a count of one in words that are no number).
    article: bool = False
    #: Weekdays named in the plural, a habit ("on Saturdays": d6).
    weekday_habit: frozenset[str] = frozenset()
    #: Asks whether a thing is done ("has it been done", "is it finished") / only booked ("is it booked",
    #: "has it been scheduled"): "done", "booked".
    stage: frozenset[str] = frozenset()
    #: Where in a period it asks about: "start" ("at the start of the season"), "middle" ("mid-season", "halfway
    #: through the hire"), "end" ("at the end of the hire").
    position: frozenset[str] = frozenset()
    #: Asks about a thing "for free" / "at no cost" ("free") or "for a fee" / "at a cost" ("paid").
    price: frozenset[str] = frozenset()
    #: A wh-question: a wh-word among its first two words ("how can I pay", "and where do I park"); a wh-word later
    #: on ("can I leave it where it is") is a clause, not the question's kind.
    wh_lead: bool = False
    #: One-letter designators of a named thing, "noun letter" ("Studio A" -> "studio a", "Gate C" -> "gate c").
    designators: frozenset[str] = frozenset()
    #: A name grown by a tier word, "name tier" ("Home Shield Plus" -> "shield plus", "Acme Pro" -> "acme pro").
    tiers: frozenset[str] = frozenset()
    #: How it names the first of a series ("the first year", "my first lesson"): "first" (the first one itself)
    #: or "after" ("after the first year", "after my first one": the ones that follow it); empty when it names none.
    first: frozenset[str] = frozenset()
    #: Lemmas of the content words a "rather than / instead of / as opposed to / in place of" clause sets aside
    #: ("is the course pre-recorded rather than live": live) / of those outside such a clause.
    set_aside: frozenset[str] = frozenset()
    asserted: frozenset[str] = frozenset()
    #: (folded, as written) of each Latin word written with diacritics ("pagó": ("pago", "pagó")), lower case: the
    #: folding that makes "café" / "cafe" one word also makes "pagó" / "pago" one, so :func:`_diacritics_differ`
    #: reads them back.
    marks: frozenset[tuple[str, str]] = frozenset()
    #: The language of its Latin words (:func:`_language`): "en" (English words, none of another language), the code
    #: of the other language most of its non-English words are in ("es", "fr", "de", "pt", "it"; a question mixing
    #: English with one is that one), or "" (no Latin word either way).
    language: str = ""
    #: (folded word, language, weight) of each of its words of another language than English (:func:`_language`).
    foreign: frozenset[tuple[str, str, int]] = frozenset()

    def __post_init__(self) -> None:
        # Every empty set is the one empty frozenset: the verifier keeps up to memo_size of these, and each set is
        # an object the cyclic garbage collector walks on a full collection (33 of a question's ~42 were empty:
        # a 100 000-entry memo was ~4.4 million objects to walk, ~19 us a question here, the GIL held).
        for name, value in vars(self).items():
            if not value and isinstance(value, (frozenset, set)) and value is not _NO_ITEMS:
                object.__setattr__(self, name, _NO_ITEMS)

    @functools.cached_property
    def core(self) -> "QuestionFeatures | None":
        """The question read without its asides (None: it has none), which the guards compare instead where the
        other question does not speak of the aside at all. Parsed on first use: only a guard reason an aside can
        carry (a number, a date, a negation …) asks for it, so most questions never pay for a second parse."""
        if self.core_text is None:
            return None
        return analyse(self.core_text, _stemmer(), asides=False)  # a stemmer of its own: they keep state


#: A clause setting the other choice aside, up to five words, ending at punctuation, a conjunction or the end.
_SET_ASIDE = re.compile(r"\b(?:rather\s+than|instead\s+of|as\s+opposed\s+to|in\s+place\s+of)\s+"
                        r"((?:[\w'-]++\s*){1,5}?)(?=[,;.?!]|\s+(?:and|but|or|so|because|if|when|while)\b|$)")
#: Words of a set-aside clause that name no choice.
_ASIDE_FILLER = frozenset({"have", "having", "get", "getting", "being", "been", "be", "do", "doing", "just",
                           "use", "using", "go", "going"})


def _content_lemmas(text: str) -> frozenset[str]:
    """Every lemma of the content words of ``text`` (no stop words, no set-aside fillers)."""
    words = [w for t in re.findall(r"[a-z]+(?:-[a-z]+)*", text) for w in t.split("-")]
    return frozenset().union(*(_lemmas(w) for w in words
                               if len(w) > 2 and w not in _STOP and w not in _ASIDE_FILLER
                               and w not in _NEGATIONS))


def _set_aside_parts(low: str) -> tuple[frozenset[str], frozenset[str]]:
    """(lemmas set aside by "rather than / instead of …" clauses, lemmas of the rest of ``low``)."""
    aside = [m.group(1) for m in _SET_ASIDE.finditer(low)]
    if not aside:
        return frozenset(), _content_lemmas(low)
    rest = _SET_ASIDE.sub(" ", low)
    return frozenset().union(*(_content_lemmas(a) for a in aside)), _content_lemmas(rest)


#: Words of a question that weighs two choices itself: no plain assertion of either.
_CHOICE = re.compile(r"\b(?:than|instead|opposed|or|swap|swapping|switch|switching|replace|replacing|substitute|"
                     r"substituting|exchange|exchanging)\b")


def _sets_aside(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """``q`` sets aside a word that ``c`` asserts and sets aside nowhere: "Is the course pre-recorded rather than
    live?" / "Is the course live?", "Can I keep my drive instead of having it destroyed?" / "Do you destroy
    drives?" (the answer to one is the opposite of the other's)."""
    if _CHOICE.search(c.text.lower()):  # the other side weighs choices too ("swap X for Y", "X or Y", "rther than")
        return False
    named = q.set_aside - q.asserted - c.set_aside
    return bool(named & c.asserted)


def _stemmer() -> Any:
    import snowballstemmer

    return snowballstemmer.stemmer("english")


@functools.cache
def _prohibition_stems() -> frozenset[str]:
    stemmer = _stemmer()  # its own: snowball stemmers keep state between calls
    return frozenset(stemmer.stemWord(w) for w in _PROHIBITION - _REFUSAL_EXACT)


@functools.cache
def _reversal_stems() -> frozenset[str]:
    stemmer = _stemmer()  # its own: snowball stemmers keep state between calls
    return frozenset(stemmer.stemWord(w) for w in _REVERSAL)


@functools.lru_cache(maxsize=65536)
def _all_lemmas(word: str) -> Mapping[str, tuple[str, ...]]:
    """lemminflect's ``getAllLemmas(word)`` (part of speech -> lemmas), memoised and read-only: lemminflect deep-copies
    its table's entry on every call, a third of the guards' time on a paraphrase."""
    from lemminflect import getAllLemmas

    return MappingProxyType({pos: tuple(lemmas) for pos, lemmas in getAllLemmas(word).items()})


@functools.lru_cache(maxsize=65536)
def _verb_lemma(word: str) -> str:
    """The verb lemma of ``word`` (lemminflect: its lookup tables ship in the wheel), else ``word``."""
    from lemminflect import getLemma

    found = getLemma(word, upos="VERB")
    return found[0] if found else word


def _never_a_verb(word: str) -> bool:
    """lemminflect's dictionary knows ``word`` and never as a verb ("donations"); an unknown word may be one."""
    found = _all_lemmas(word)
    return bool(found) and "VERB" not in found


def _join_phrasal(words: list[str]) -> list[str]:
    """A verb and its particle as one word when together they mean something else: "gave up" -> "give-up"."""
    out: list[str] = []
    i = 0
    while i < len(words):
        w = words[i]
        if (i + 1 < len(words) and words[i + 1] in _PARTICLES and w.isalpha()
                and not (i + 2 < len(words) and words[i + 2] in _DAY_NOUNS)):  # "a stay on weekends": a preposition
            joined = f"{_verb_lemma(w)}-{words[i + 1]}"
            if joined in _PHRASAL:
                out.append(joined)
                i += 2
                continue
        out.append(w)
        i += 1
    return out


def _which_many(words: list[str]) -> set[str]:
    """Singular lemmas of plural nouns asked about with "which": "which orders" -> order."""
    from lemminflect import getLemma

    out: set[str] = set()
    for i, w in enumerate(words[:-1]):
        if w == "which":
            for nxt in words[i + 1:i + 3]:
                lemma = getLemma(nxt, upos="NOUN")
                if nxt.isalpha() and lemma and lemma[0] != nxt:
                    out.add(lemma[0])
                    break
    return out


@functools.lru_cache(maxsize=65536)
def _american(word: str) -> str:
    """One spelling for British and American words ("colour" -> "color", "deauthorise" -> "deauthorize"):
    breame's spelling tables, shipped in its wheel."""
    from breame.spelling import get_american_spelling

    if not word.isalpha():
        return word
    found = get_american_spelling(word)
    if found != word:
        return found
    for p in ("de", "un", "dis", "re", "non"):
        if word.startswith(p) and len(word) - len(p) >= 4:
            base = get_american_spelling(word[len(p):])
            if base != word[len(p):]:
                return p + base
    # a derived word the tables lack, on a base they hold: "flavourful" -> "flavor" + "ful" ("-our" / "-or",
    # "-ise" / "-ize", "-tre" / "-ter", "-ll-" / "-l-" come from the base's own entry)
    for suffix in _SPELLING_SUFFIXES:
        stem = word[:-len(suffix)]
        if word.endswith(suffix) and len(stem) >= 4:
            base = get_american_spelling(stem)
            if base != stem:
                return base + suffix
    return word


#: Endings of a derived word whose base may carry a British spelling (the longest first).
_SPELLING_SUFFIXES = ("lessness", "fulness", "lessly", "fully", "ful", "less", "some", "ably", "able",
                      "ish", "ness", "ship", "hood")


def _negating_prefix(word: str) -> str | None:
    """The base of a word with a negating prefix ("unfurnished" -> "furnished"), or None."""
    if not word.isalpha() or word in _NOT_NEGATING:
        return None
    for p in _NEG_PREFIXES:
        base = word[len(p):]
        if word.startswith(p) and len(base) >= 4:
            if (p == "im" and base[0] not in "bmp") or (p == "il" and base[0] != "l") \
                    or (p == "ir" and base[0] != "r") or (p == "in" and base[0] in "bmplr"):
                continue
            return base
    return None


_OBLIGE_BEFORE_TO = frozenset({"have", "has", "need", "needs", "got", "supposed"})
_OBLIGE_ALONE = frozenset({"must", "mandatory", "required", "compulsory", "obligatory", "obliged"})
#: Advice, not an obligation: "should I tell my employer" / "am I required to tell my employer".
_ADVISE_ALONE = frozenset({"should", "recommended", "advisable", "advised"})
#: An obligation's words that may be advice too: "do I need to bring a towel" / "should I bring a towel".
_NEED = frozenset({"need", "needs"})
_PERMIT = frozenset({"can", "could", "allowed", "permitted", "able", "ok", "okay", "acceptable", "optional"})
#: Who may be "free to" do something ("are we free to play music"; "are the showers free to use" is a price).
_PERSONS = frozenset({"i", "we", "you", "they", "he", "she"})
#: A question's own modal comes first: "must we", "do I have to", "can members", "are we free to" (a modal later
#: on, "… but need to move it, is that possible?", "…, or can I bring it back empty?", is no question's modality).
_LEAD = 4


def _modality(words: list[str], first: int | None = None) -> set[str]:
    """The modal words' kinds among ``words`` (among its ``first`` words when given, a following "to" read)."""
    out: set[str] = set()
    for i, w in enumerate(words[:first]):
        nxt = words[i + 1] if i + 1 < len(words) else ""
        if (w in _OBLIGE_ALONE or (w in _OBLIGE_BEFORE_TO and nxt == "to")
                # "do I need a helmet" / "is a helmet optional" (the whole question's modality only: as a
                # question's own lead, "do I need an appointment" / "can I just walk in" is one question)
                or (first is None and w in _NEED and nxt in ("a", "an"))):
            out.add("oblige")
        elif w in _ADVISE_ALONE or (w == "ought" and nxt == "to"):
            out.add("advise")
        elif (w in _PERMIT or (w == "may" and nxt in ("i", "we", "you", "they", "he", "she", "it"))
              or (w == "free" and nxt == "to" and i > 0 and words[i - 1] in _PERSONS)):
            out.add("permit")
    return out


def _strict_obligation(words: tuple[str, ...]) -> bool:
    """An obligation said with a word that is no advice: "must", "have to", "required" (not "need to")."""
    return any(w in _OBLIGE_ALONE or (w in _OBLIGE_BEFORE_TO and w not in _NEED and words[i + 1:i + 2] == ("to",))
               for i, w in enumerate(words))


def _modal_clash(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """One modality each, and two that tell the questions apart: may against must or should; should against an
    obligation said strictly ("must", "have to", "required": "need to" agrees with both)."""
    a, b = q.modality, c.modality
    if len(a) != 1 or len(b) != 1 or a == b:
        return False
    if a | b == {"advise", "oblige"}:
        return _strict_obligation((q if a == {"oblige"} else c).tokens)
    return True


def _number_value(text: str) -> str | None:
    t = text.replace(",", "")
    try:
        v = float(t)
    except ValueError:
        return None
    if not math.isfinite(v):  # more digits than a float holds (over ~300): the number as written, exactly
        return t.lstrip("0") or "0"
    return str(int(v)) if v == int(v) and "." not in t else repr(v)


#: "-less" words whose bare word is no opposite ("regardless" of a regard).
_NOT_SUFFIXED = frozenset({"unless", "regardless", "nevertheless", "nonetheless", "doubtless", "countless",
                           "priceless", "bless", "less", "needless"})


def _negating_suffix(word: str) -> str | None:
    """The base of a word with a negating suffix ("cashless" -> "cash", "paperless" -> "paper"), or None."""
    if word.isalpha() and word.endswith("less") and len(word) >= 7 and word not in _NOT_SUFFIXED:
        return word[:-4]
    return None


def _past_participle(word: str) -> bool:
    """``word`` is a verb's past participle (lemminflect: "set", "gone", "shipped", "printed")."""
    from lemminflect import getInflection

    if not word.isalpha():
        return False
    if any(word in getInflection(lemma, "VBN") for lemma in _all_lemmas(word).get("VERB", ())):
        return True
    # a regular "-ed" form lemminflect's tables lack ("mowed", "hoovered"): a participle after "has" / "is"
    return len(word) >= 5 and word.endswith("ed") and not word.endswith("eed")


#: "once" as a count ("I was charged once, …", "once but got two", "more than once"), not the conjunction ("once I
#: pay", "once the parcel arrives"), "at once" or a frequency ("once a week" is "weekly", a time guard's business).
_ONCE_COUNT = re.compile(r"(?<=[a-z0-9]\s)(?<!\bat\s)once(?=\s*(?:[,.;:!?)]|$)|\s+(?:but|or|only|too|already)\b)"
                         r"|\bthan\s+once\b")
_ONCE_AUX = frozenset({"is", "are", "has", "have", "had", "was", "were", "gets", "get", "got", "s", "ve", "d"})  # "it's"


def _once_after(words: list[str]) -> list[str]:
    """"once X has / is <any past participle>" is "after X": "once my tint has set", "once it's gone to press",
    "once the parcel is delivered" (the ending need not be listed)."""
    out = list(words)
    for i, w in enumerate(words):
        if w != "once":
            continue
        for j in range(i + 1, min(i + 6, len(words) - 1)):
            if words[j] in _ONCE_AUX:
                k = j + 1 + (words[j + 1] == "been" and j + 2 < len(words))
                if _past_participle(words[k]):
                    out[i] = "after"
                break
    return out


#: Seasons and times of the year: "in the autumn", "over the holidays", "next spring" ("spring" and "fall" only
#: after a word that makes them a time).
_SEASONS = (
    (re.compile(r"\b(?:autumn|autumnal)\b|\b(?:in|during|over|through|this|next|last|every|each|until|till|by|from|"
                r"early|late)\s+(?:the\s+)?fall\b"), "autumn"),
    (re.compile(r"\bspringtime\b|\b(?:in|during|over|through|this|next|last|every|each|until|till|by|from|early|"
                r"late)\s+(?:the\s+)?spring\b"), "spring"),
    (re.compile(r"\bsummer(?:time|s)?\b"), "summer"), (re.compile(r"\bwinter(?:time|s)?\b"), "winter"),
    (re.compile(r"\b(?:christmas|xmas|festive\s+season|holiday\s+season|the\s+holidays)\b"), "christmas"),
    (re.compile(r"\beaster\b"), "easter"), (re.compile(r"\bhalloween\b"), "halloween"),
    (re.compile(r"\bthanksgiving\b"), "thanksgiving"),
)
#: A habit or the whole year: against a season, another time frame.
_HABIT_FRAME = frozenset({"usually", "normally", "typically", "generally", "regularly", "ordinarily", "always",
                          "year-round", "all-year"})


_AT_ALL_KEEP = frozenset({"the", "your", "my", "our", "their", "his", "her", "its", "these", "those", "of"})


def _at_all(m: "re.Match[str]") -> str:
    """ "at all" as stress (dropped) or, before a determiner or a plural noun, the quantifier "all"."""
    nxt = m.group(1)
    if nxt is None:
        return " "
    if nxt in _AT_ALL_KEEP or _plural_noun(nxt):
        return m.group(0)
    return " " + nxt


def _plural_noun(word: str) -> bool:
    return word.endswith("s") and any(lemma != word for lemma in _all_lemmas(word).get("NOUN", ()))


#: (line, side) of a word or phrase in the antonym lexicon.
_Signs = tuple[tuple[int, int], ...]


@functools.lru_cache(maxsize=1)
def _antonym_lexicon() -> tuple[dict[str, _Signs], dict[tuple[str, ...], _Signs], frozenset[int]]:
    """data/antonyms.txt ("a, b | c, d" a line, lemmas or phrases; "~" first for a converse): single words
    and phrases -> (line, side); the converse lines."""
    from pathlib import Path

    return read_antonyms(Path(__file__).resolve().parent / "data" / "antonyms.txt")


def read_antonyms(path: Any) -> tuple[dict[str, _Signs], dict[tuple[str, ...], _Signs], frozenset[int]]:
    """Parse an antonym lexicon file (the format of data/antonyms.txt); :class:`CacheError` naming the file
    and line for a malformed one."""
    from costline.serving.errors import CacheError

    single: dict[str, list[tuple[int, int]]] = {}
    phrases: dict[tuple[str, ...], list[tuple[int, int]]] = {}
    converse: set[int] = set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("~"):
            converse.add(n)
            line = line[1:]
        sides = line.split("|")
        if len(sides) != 2:
            raise CacheError(f"{path}:{n}: expected 'word, word | word, word', got {line!r}")
        for sign, side in ((1, sides[0]), (-1, sides[1])):
            for entry in side.split(","):
                words = tuple(entry.lower().split())
                if not words:
                    raise CacheError(f"{path}:{n}: an empty word in {line!r}")
                target = single.setdefault(words[0], []) if len(words) == 1 else phrases.setdefault(words, [])
                target.append((n, sign))
    return ({k: tuple(v) for k, v in single.items()}, {k: tuple(v) for k, v in phrases.items()},
            frozenset(converse))


@functools.lru_cache(maxsize=1)
def _phrase_starts() -> dict[str, tuple[tuple[str, ...], ...]]:
    """The antonym lexicon's phrases by their first word."""
    out: dict[str, list[tuple[str, ...]]] = {}
    for phrase in _antonym_lexicon()[1]:
        out.setdefault(phrase[0], []).append(phrase)
    return {k: tuple(v) for k, v in out.items()}


_ANTONYM_TOKEN = re.compile(r"[a-z]+(?:-[a-z]+)*")
#: A phrase's next word may come this many words later ("pick the kids up").
_PHRASE_GAP = 3


def _antonym_signs(low: str) -> set[tuple[int, int]]:
    """(line, side) of every antonym-lexicon entry the text names: phrases first (their words are theirs)."""
    single, phrases, _ = _antonym_lexicon()
    single_words = single.keys()
    tokens = []
    for t in _ANTONYM_TOKEN.findall(low):  # "full-to-full": its words, unless the lexicon has it whole
        tokens.extend([t] if "-" not in t or t in single_words else t.split("-"))
    lemmas = [_lemmas(t) for t in tokens]
    used: set[int] = set()
    out: set[tuple[int, int]] = set()
    starts = _phrase_starts()
    for i in range(len(tokens)):
        for phrase in (p for lemma in lemmas[i] for p in starts.get(lemma, ())):
            if i in used:
                break
            signs = phrases[phrase]
            at, found = i, [i]
            for w in phrase[1:]:
                nxt = next((k for k in range(at + 1, min(at + 1 + _PHRASE_GAP, len(tokens)))
                            if k not in used and (tokens[k] == w or w in lemmas[k])), None)
                if nxt is None:
                    break
                found.append(nxt)
                at = nxt
            else:
                out.update(signs)
                used.update(found)
    for i, found_lemmas in enumerate(lemmas):
        if i not in used:
            for lemma in found_lemmas:
                out.update(single.get(lemma, ()))
    return out


_DEICTIC = re.compile(r"\b(this|next|last|coming|following)\s+(?:coming\s+)?([a-z]+)\b")
_PERIODS = frozenset({"week", "weekend", "month", "year", "quarter", "season", "term", "semester"})
_RELATIVE_DAY = re.compile(r"\b(same|next|following|previous|prior)[\s-]+day\b|\bthe\s+day\s+(after|before)\b")
_RELATIVE_DAY_SIDE = {"same": "this", "next": "next", "following": "next", "after": "next", "previous": "last",
                      "prior": "last", "before": "last"}


_WINDOW_LEAD = re.compile(r"\b(?:up\s+to|at\s+least|no\s+later\s+than|not\s+later\s+than)\s+(?:[\w-]+\s+){1,3}?"
                          r"(?:before|prior\s+to|ahead\s+of|in\s+advance)")
_WINDOW_FROM = re.compile(r"\b(?:from|starting|beginning)\s+(?:[\w-]+\s+){0,2}?(?:hours?|days?|weeks?|fortnight|"
                          r"months?|years?)\s+(?:before|prior\s+to|ahead\s+of|in\s+advance)\b")
#: A prefix that makes another kind of the thing after its hyphen: "the Pre-Primary class" is not "the Primary
#: class", "semi-skimmed" not "skimmed".
_HYPHENATED_KIND = re.compile(r"\b(pre|post|semi|sub|mini|ex|anti|multi|non)-([a-z]{3,})\b")
_HYPHENATED = re.compile(r"\b([a-z]+)-([a-z]{3,})\b")


def _hyphen_prefixed(low: str, stems: list[str], stemmer: Any) -> set[tuple[str, str]]:
    """(prefix, word) of "pre-primary", unless the text names the word on its own too ("roast to order or is it
    pre-roasted": the prefix tells the two apart within one question, not from another)."""
    out = set()
    for m in _HYPHENATED_KIND.finditer(low):
        if stems.count(stemmer.stemWord(m.group(2))) == 1:
            out.add((m.group(1), m.group(2)))
    return out


#: A substance and "free" written apart: "gluten free" is "gluten-free" (not "is parking free", "is entry free").
_SUBSTANCE_FREE = re.compile(r"\b(?:gluten|dairy|nut|peanut|sugar|alcohol|lactose|egg|soy|soya|wheat|meat|fat|"
                             r"caffeine|fragrance|latex|plastic|palm\s+oil|pesticide|chemical|smoke|cruelty|bpa|"
                             r"step|stair|barrier|hands)"
                             r"\s+free\b")
#: Ahead of the day ("in advance") against on the day itself ("on the same day"): QuestionFeatures.lead.
_IN_ADVANCE = re.compile(r"\bin\s+advance\b|\bbeforehand\b|\bahead\s+of\s+time\b")
#: "on the day" as the day of the event itself, not "on the day of the week" or "on the day you pick"
_ON_THE_DAY = re.compile(r"\bon\s+the\s+(?:same\s+)?day\b(?!\s+(?:of|before|after|when|that|you|i|we|they)\b)"
                         r"|\bsame[\s-]day\b|\bthe\s+day\s+itself\b")
#: The kind of time a question asks for: a lead time ("how far in advance", "how far ahead", "how early", "how much
#: notice", "how long beforehand") against a duration ("how long is the course", "how long does it last"):
#: QuestionFeatures.time_ask. "how soon", "how long until / before / after" are left alone (either, by context:
#: "how soon will it arrive" is "how long does delivery take"), and so is a "how long" that speaks of notice, advance
#: or a deadline ("how long is the notice period" asks the lead time).
_LEAD_ASK = re.compile(r"\bhow\s+(?:far|long)\s+(?:in\s+advance|ahead|beforehand)\b|\bhow\s+early\b"
                       r"|\bhow\s+much\s+(?:advance\s+)?notice\b")
_DURATION_ASK = re.compile(r"\bhow\s+long\b")
_LEAD_WORD = re.compile(r"\b(?:notice|advance|ahead|beforehand|early|earlier|prior|deadline|until|till|before|after|"
                        r"soon)\b")
_WINDOW_WITHIN = re.compile(r"\b(?:within|less\s+than|inside)\s+(?:[\w-]+\s+){1,3}?(?:of|before|prior\s+to)\b")
#: A question for a time or a stretch of time, at the start of the text or of a clause: QuestionFeatures.asks_time.
_ASKS_TIME = re.compile(r"(?:^|[,.;:!?]\s+|\s[-–]\s+)(?:(?:and|so|but|also|then|ok|okay|hi|hello)\s+)?"
                        r"(?:when\b|what\s+time\b|by\s+when\b|what\s+day\b"
                        r"|how\s+(?:long|soon|early|late|quickly|far\s+(?:in\s+advance|ahead)|close\s+to)\b)")

#: Where a question word asks the question: at the start of the text or of a clause ...
_CLAUSE_START = r"(?:^|[,.;:!?]\s+|\s[-–]\s+)(?:(?:and|so|but|also|then|ok|okay|hi|hello|hey|please)\s+)?"
#: ... or inside a sentence: "can you tell me where", "I'd like to know when", "any idea why".
_EMBEDDED = (r"\b(?:know|tell\s+(?:me|us)|wondering|wonder|idea|find\s+out|figure\s+out|explain|ask|asking|sure|"
             r"show\s+(?:me|us)|remind\s+(?:me|us)|check)\s+")
_ASK_AT = rf"(?:{_CLAUSE_START}|{_EMBEDDED})"
#: The kinds of answer a question asks for (QuestionFeatures.asks); a time at a clause's start is _ASKS_TIME's.
_ANSWER_KINDS = (
    (re.compile(_ASK_AT + r"where\b"), "place"),
    (re.compile(_ASK_AT + r"(?:why\b|how\s+come\b)"), "reason"),
    (re.compile(_ASK_AT + r"(?:who|whom|whose)\b"), "person"),
    (re.compile(_ASK_AT + r"how\s+(?:do|does|did|can|could|should|would|will|may|might|must|to)\b"), "manner"),
    (re.compile(_EMBEDDED + r"(?:when\b|what\s+time\b|by\s+when\b|what\s+day\b"
                r"|how\s+(?:long|soon|early|late|quickly)\b)"), "time"),  # at a clause's start: _ASKS_TIME
)
#: Kinds of answer no other kind gives: a time, a reason.
_ASKS_APART = frozenset({"time", "reason"})


#: What a time question measures (QuestionFeatures.time_frame): a frequency, a window the asker has (not "how long do
#: I have to wait", which is how long a thing takes), or how long a thing takes.
_TIME_FRAME = (
    (re.compile(r"\bhow\s+(?:often|frequently|regularly)\b|\bhow\s+many\s+times\s+(?:a|an|per|each|every)\b"), "often"),
    (re.compile(r"\bhow\s+long\s+(?:do|does|will|would)\s+(?:i|we|you|they|customers?|people)\s+(?:have|get)\b"
                r"(?!\s+to\s+(?:wait|queue|stay|leave|keep|soak|spend))"
                r"|\bhow\s+long\s+(?:have|has)\s+(?:i|we|you|they)\s+got\b"), "window"),
    (re.compile(r"\bhow\s+long\s+(?:does|do|will|would|did|should|can|could|might)\b[^?.!,;]{0,60}?\btakes?\b"), "take"),
)
#: A time question about a thing's own stretch ("the fitting itself", "the actual treatment") against one about a
#: span that runs up to or from it ("from ordering to fitting", "how soon after ordering"): _own_span_differs.
_ITSELF = re.compile(r"\b[a-z][\w-]*\s+itself\b|\bthe\s+actual\s+[a-z]")
_SPAN = re.compile(r"\bfrom\s+(?:[\w'-]+\s+){1,4}?(?:to|until|till)\b|\bhow\s+soon\b"
                   r"|\b(?:after|before|until|till)\s+(?:i|we|you|the|my|our|your|ordering|booking|buying|paying)\b")
#: An event of a delivery against another (QuestionFeatures via _event_swap): when it leaves against when it arrives.
_DISPATCH_EVENT = frozenset({"dispatch", "ship", "post", "send"})
_ARRIVAL_EVENT = frozenset({"deliver", "arrive", "receive", "reach"})


def _time_ask(low: str) -> str | None:
    """The kind of time the (lowered) question asks for: "lead", "duration" or None (_LEAD_ASK)."""
    if _LEAD_ASK.search(low):
        return "lead"
    if _DURATION_ASK.search(low) and not _LEAD_WORD.search(low):
        return "duration"
    return None


#: A stretch of time ahead or a point near a deadline (against this very moment: "cancel now" / "cancel in the
#: final month").
_AHEAD = re.compile(
    r"\b(?:in|during|within|inside|over|for)\s+the\s+(?:last|final|closing|first|opening)\s+(?:[\w-]+\s+){0,2}?"
    r"(?:days?|weeks?|months?|years?|hours?|fortnight|minutes?)\b"
    r"|\b(?:near|nearer|towards?|close\s+to|closer\s+to|nearer\s+to|right\s+before|just\s+before|shortly\s+before)"
    r"\s+(?:the\s+)?(?:end|date|day|time|deadline|start|event|departure|wedding|booking)\b"
    r"|\blast[\s-]minute\b")
#: This very moment: "now" (after _PHRASES: "right now", "at the moment"), "today", "immediately" ...
_MOMENT = frozenset({"now", "today", "immediately", "currently", "presently", "instantly"})
_MOMENT_PHRASE = re.compile(r"\b(?:right|straight)\s+away\b|\bat\s+once\b")


#: Done: a perfect or a state of completion ("has my collection been done", "was it carried out", "is it finished").
_DONE = re.compile(r"\b(?:has|have|had|was|were)\s+(?:[\w']+\s+){0,3}?(?:been\s+|already\s+)?(?:done|completed|"
                   r"finished|carried\s+out|happened|taken\s+place|gone\s+ahead)\b"
                   r"|\b(?:is|are)\s+(?:[\w']+\s+){0,3}?(?:already\s+)?(?:done|completed|complete|finished)\b")
#: Only booked: a state of being scheduled ("is my collection booked", "has it been scheduled").
_BOOKED = re.compile(r"\b(?:is|are|has|have|was|were)\s+(?:[\w']+\s+){0,3}?(?:been\s+|already\s+)?(?:booked|"
                     r"scheduled|arranged|planned|lined\s+up|in\s+the\s+diary)\b")


#: A point within a period: its start, its middle or its end.
_POSITION = (
    (re.compile(r"\b(?:at|from|by|near|towards?|before|after|until|till|in)\s+the\s+(?:very\s+)?(?:start|beginning|"
                r"outset)\s+of\b"), "start"),
    (re.compile(r"\bmid-?(?:way|season|term|month|year|week|course|contract|trip|stay|flight|session|cycle|"
                r"semester|holiday|booking|hire|rental|tenancy|subscription)\b|\b(?:halfway|half-way|partway|"
                r"part-way|midway)\s+(?:through|into)\b|\bin\s+the\s+middle\s+of\b"), "middle"),
    (re.compile(r"\b(?:at|by|near|towards?|before|after|until|till|from)\s+the\s+(?:very\s+)?end\s+of\b"), "end"),
)


#: Free against paid, said as a manner of getting it ("bring a friend for free" / "for a fee"); "is there a charge
#: for" / "is it free" is left alone (a yes / no question whose answer covers both: our train split labels
#: "does the hotel charge for parking" / "is parking free at the hotel" the same answer).
_FREE = re.compile(r"\bfor\s+free\b|\bfree\s+of\s+charge\b|\bat\s+no\s+(?:extra\s+|additional\s+)?(?:cost|charge)\b"
                   r"|\bfor\s+nothing\b|\bwithout\s+(?:paying|charge)\b")
_PAID = re.compile(r"\b(?:for|at)\s+an?\s+(?:small\s+|extra\s+|additional\s+|added\s+)?(?:fee|charge|price|cost)\b"
                   # "do you charge a fee to take X" / "do you take X free of charge"
                   r"|\bcharg(?:e|es|ed|ing)\s+(?:(?:you|me|us|them|people|customers)\s+)?an?\s+(?:small\s+|extra\s+|"
                   r"additional\s+)?fee\b")


def _window(low: str) -> set[str]:
    """"up to a week before arrival" (lead: at the latest a week ahead) against "within a week of arrival"
    (closer than a week)."""
    return (({"lead"} if _WINDOW_LEAD.search(low) else set()) | ({"within"} if _WINDOW_WITHIN.search(low) else set())
            | ({"from"} if _WINDOW_FROM.search(low) else set()))


#: The first of a series ("the first year", "my first lesson", "the initial term") and the ones after it ("after
#: the first year", "after my first one").
_FIRST = re.compile(r"\b(?:first|initial|opening|introductory)\b")
_AFTER_FIRST = re.compile(r"\b(?:after|following|beyond)\s+(?:the|my|your|our|their|his|her|its|this|that)\s+"
                          r"(?:very\s+)?(?:first|initial|opening|introductory)\b")


def _first(low: str) -> set[str]:
    """"after" when it speaks of what follows the first of a series, "first" when it names only the first one."""
    if _AFTER_FIRST.search(low):
        return {"after"}
    return {"first"} if _FIRST.search(low) else set()


def _deixis(low: str) -> set[str]:
    """ "next Wednesday" -> "next:d3", "this March" -> "this:m3", "last week" -> "last:week"; a day relative to
    another: "the same day" -> "this:rday", "the next / following day", "the day after" -> "next:rday", "the day
    before", "the previous day" -> "last:rday"."""
    out = {f"{_RELATIVE_DAY_SIDE[m.group(1) or m.group(2)]}:rday" for m in _RELATIVE_DAY.finditer(low)}
    for m in _DEICTIC.finditer(low):
        which = "next" if m.group(1) in ("coming", "following") or " coming " in m.group(0) + " " else m.group(1)
        word = m.group(2)
        if word in _WEEKDAYS:
            target = f"d{_WEEKDAYS[word]}"
        elif word in _MONTHS and word != "may":
            target = f"m{_MONTHS[word]}"
        elif word in _PERIODS:
            target = word
        else:
            continue
        out.add(f"{which}:{target}")
    return out


def _deixis_differs(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """The same weekday, month or period, "this" on one side and "next" (or "last") on the other."""
    def by_target(f: QuestionFeatures) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for d in f.deixis:
            which, target = d.split(":")
            out.setdefault(target, set()).add(which)
        return out

    a, b = by_target(q), by_target(c)
    return any(a[t] != b[t] for t in a.keys() & b.keys())


def _antonym_opposite(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """A lexicon line whose words one question names only on one side and the other only on the other;
    a converse line only between questions about the same person."""
    converse = _antonym_lexicon()[2]
    ga: dict[int, set[int]] = {}
    gb: dict[int, set[int]] = {}
    for g, sign in q.antonyms:
        ga.setdefault(g, set()).add(sign)
    for g, sign in c.antonyms:
        gb.setdefault(g, set()).add(sign)
    return any(len(ga[g]) == 1 and len(gb[g]) == 1 and ga[g] != gb[g]
               and (g not in converse or q.person == c.person) for g in ga.keys() & gb.keys())


@functools.lru_cache(maxsize=1)
def _synonym_lexicon() -> tuple[tuple[re.Pattern[str], str], ...]:
    """data/synonyms.txt: (pattern of a group's other forms, the form read first) per group."""
    from pathlib import Path

    return read_synonyms(Path(__file__).resolve().parent / "data" / "synonyms.txt")


def read_synonyms(path: Any) -> tuple[tuple[re.Pattern[str], str], ...]:
    """Parse a synonym lexicon file (the format of data/synonyms.txt): one pattern per group, matching its other
    forms as whole words (lower case); :class:`CacheError` naming the file and line for a malformed one."""
    from costline.serving.errors import CacheError

    out: list[tuple[re.Pattern[str], str]] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        forms = [" ".join(f.lower().split()) for f in line.split(",")]
        if len(forms) < 2 or not all(forms) or "|" in line:
            raise CacheError(f"{path}:{n}: expected 'word, word[, word …]' (at least two), got {line!r}")
        others = sorted(forms[1:], key=len, reverse=True)  # the longest form first: "wait list" before "wait"
        out.append((re.compile(r"(?<![\w-])(?:" + "|".join(re.escape(f).replace(r"\ ", r"\s+") for f in others)
                               + r")(?![\w-])"), forms[0]))
        for f in others:  # a verb and its particle around a short object: "pick the kids up" -> "collect the kids"
            verb, _, particle = f.partition(" ")
            if particle in _PARTICLES and verb.isalpha() and "\\" not in forms[0]:
                out.append((re.compile(rf"(?<![\w-]){verb}\s+((?:{_SPLIT_OBJECT})(?:\s+[\w'-]+){{0,2}}?)\s+{particle}"
                                       r"(?![\w-])"), forms[0] + r" \1"))
    return tuple(out)


#: What may stand between a verb and its particle in a synonym-lexicon phrase ("pick <us> up", "pick <the kids> up").
_SPLIT_OBJECT = "us|me|them|him|her|it|my|the|your|our|their|his|this|that|these|those|a|an"


def _same_words(low: str) -> str:
    """``low`` with each synonym-lexicon form replaced by its group's first form ("whilst" -> "while").

    A question that has none of the lexicon's first words (:func:`_synonym_keys`) — most — is returned as it is:
    no pattern can match it, so the substitutions in order would change nothing; the rest go through
    :func:`_same_words_in_order`."""
    keys = _synonym_keys()
    if keys is not None and keys.isdisjoint(_WORD_RUN.findall(low)):
        return low
    return _same_words_in_order(low)


def _same_words_in_order(low: str) -> str:
    """Each synonym-lexicon pattern substituted in the file's order (a rule may read an earlier one's result)."""
    return _synonym_rewrites()(low)


_WORD_RUN = re.compile(r"\w+")


@functools.lru_cache(maxsize=1)
def _synonym_keys() -> frozenset[str] | None:
    """The first run of word characters of every form the synonym lexicon replaces: a pattern (whole forms, not
    after a word character or hyphen) matches only where that run stands as a whole word of the text. None (no
    prefilter) if a form starts with something else."""
    from pathlib import Path

    keys: set[str] = set()
    path = Path(__file__).resolve().parent / "data" / "synonyms.txt"
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        for form in line.split(",")[1:]:
            form = " ".join(form.lower().split())
            m = re.match(r"\w+", form)
            if m is None:
                return None
            keys.add(m.group(0))
    return frozenset(keys)


def _latin(ch: str) -> bool:
    """A letter of the Latin script (the ranges :data:`_FOREIGN_WORD` leaves to the guards, and a few more)."""
    return ch.isascii() or "\u00c0" <= ch <= "\u024f" or "\u1e00" <= ch <= "\u1eff" or "\u2c60" <= ch <= "\u2c7f" \
        or "\ua720" <= ch <= "\ua7ff" or "\uab30" <= ch <= "\uab6f" or "\uff21" <= ch <= "\uff5a"


def _fold_accents(text: str) -> str:
    """``text`` with the accents of its Latin letters dropped (Unicode NFD, then NFC): "Comté" -> "Comte", "café" ->
    "cafe"; ASCII text as it is. The marks of other scripts are part of their letters and stay: a dakuten ("バス" bus /
    "パス" pass), a Thai tone mark ("ข้าว" rice / "ข่าว" news), a Cyrillic breve ("й"). A mark after no letter (a
    symbol, a digit) is dropped, as it always was."""
    if text.isascii():
        return text
    from costline.textutil import stream_safe

    # stream-safe first: normalising a long run of combining marks is quadratic (a hostile question's)
    out: list[str] = []
    keep = False  # the marks after the last starter stay: it is a letter of another script than Latin
    for ch in unicodedata.normalize("NFD", stream_safe(text)):
        if not unicodedata.combining(ch):
            if ch.isascii() or unicodedata.category(ch)[0] != "M":  # a spacing vowel sign ("ा") keeps its letter's
                keep = not ch.isascii() and ch.isalpha() and not _latin(ch)
            out.append(ch)
        elif keep:
            out.append(ch)
    return unicodedata.normalize("NFC", "".join(out))


#: A digit of another script than ASCII ("１２" full width, "٣٠" Arabic-Indic): read as its ASCII digit.
_OTHER_DIGIT = re.compile(r"(?![0-9])\d")
#: Scripts written without spaces between words: Thai, Lao, Myanmar, Khmer, Hangul Jamo, kana, CJK ideographs,
#: Hangul syllables, half-width katakana.
_UNSPACED_LETTERS = ("\u0e00-\u0e7f\u0e80-\u0eff\u1000-\u109f\u1780-\u17ff\u1100-\u11ff\u3005-\u3007"
                     "\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\uff66-\uff9f")
#: Where a digit touches a letter of an unspaced script ("注文12を", "주문12를", "3月15日"): a space goes there, so the
#: number is a word of its own that the number, identifier and date guards read.
_GLUED_DIGIT = re.compile(rf"(?<=\d)(?=[{_UNSPACED_LETTERS}])|(?<=[{_UNSPACED_LETTERS}])(?=\d)")


def _prepare(text: str) -> str:
    """The text the guards read: accents of Latin letters folded (:func:`_fold_accents`); digits of other scripts as
    ASCII digits; a number glued to a letter of an unspaced script set apart. ASCII text as it is."""
    raw = _fold_accents(text)
    if raw.isascii():
        return raw
    if _OTHER_DIGIT.search(raw):
        raw = _OTHER_DIGIT.sub(lambda m: str(unicodedata.digit(m.group(), 0)), raw)
    return _GLUED_DIGIT.sub(" ", raw)


#: A run of Latin letters, as written (accents and all).
_LATIN_WORD = re.compile(r"[^\W\d_]+")


def _marks(text: str) -> frozenset[tuple[str, str]]:
    """(folded, as written) of each Latin word of ``text`` written with diacritics, lower case."""
    if text.isascii():
        return _NO_ITEMS
    from costline.textutil import stream_safe

    out = set()
    for word in _LATIN_WORD.findall(unicodedata.normalize("NFC", stream_safe(text)).lower()):
        if not word.isascii() and all(_latin(ch) for ch in word):
            folded = _fold_accents(word)
            if folded != word:
                out.add((folded, word))
    return frozenset(out)


def _french_negations(low: str, words: list[str]) -> int:
    """The negations of a French question: each "ne" / "n'" opens one ("ne … pas", "ne … plus", "n'… jamais"; a
    "ne" with none of those after it is no French), each "jamais", "rien", "aucun" is one (so is "pas" where a
    "ne" / "n'" is said: "PAs" is English; the informal "je peux pas" goes uncounted); the larger count, so "je ne
    peux pas" and "je peux jamais" are one negation each, "ne … jamais rien" two."""
    markers = len(_FRENCH_NE.findall(low))
    said = sum(1 for w in words if w in _FRENCH_NEGATORS) + (sum(1 for w in words if w == "pas") if markers else 0)
    return max(markers, said)


def analyse(text: str, stemmer: Any | None = None, *, asides: bool = True) -> QuestionFeatures:
    """Parse one question for the guards (see the module docstring); with ``asides``, also the text of the question
    without what it says aside (``QuestionFeatures.core_text``, parsed when :attr:`QuestionFeatures.core` is read)."""
    from dateutil import parser as dateparser
    from word2number import w2n

    stemmer = stemmer or _stemmer()
    raw = _prepare(text.strip())  # "Comté" / "Comte", "café" / "cafe": one spelling; "注文１２を" / "注文 12 を"
    lowered = raw.lower()
    low = _same_words(_HYPHEN_PREFIX.sub(r"\1", _contracted(lowered)))  # one word for each synonym group
    dates: set[str] = set()
    times: set[str] = set()
    # clock times and numeric dates first: their digits are not free-standing numbers
    low = _DAYPART_CLOCK.sub(_daypart_clock, low)
    for m in _TIME.finditer(low):
        try:
            times.add(dateparser.parse(m.group(0).replace(".", ""), fuzzy=True).strftime("%H:%M"))
        except (ValueError, OverflowError):
            continue
    low_nt = _TIME.sub(" ", low)
    for m in _NUMERIC_DATE.finditer(low_nt):
        try:
            dates.add(dateparser.parse(m.group(0)).strftime("%Y-%m-%d" if len(m.group(0)) > 5 else "%m-%d"))
        except (ValueError, OverflowError):
            continue
    low_nt = _NUMERIC_DATE.sub(" ", low_nt)
    if "noon" in low_nt:
        times.add("12:00")
    if "midnight" in low_nt:
        times.add("00:00")
    identifiers = {re.sub(r"[#\s-]", "", m.group(0)).lower() for m in _IDENT.finditer(_TIME.sub(" ", raw))
                   if not re.fullmatch(r"#?\s?\d{1,3}(?:st|nd|rd|th)?", m.group(0).strip())}
    identifiers = {i for i in identifiers if not re.fullmatch(r"\d+(st|nd|rd|th)", i)}
    phrased = _phrase_rewrites()(low_nt)
    tokens = _tokens(phrased)
    tokens = [t for t in (tok.strip("-") for tok in tokens) if t]
    words: list[str] = []
    for t in tokens:
        words.extend([t] if t.count("-") == 0 or t in _POLARITY or t in _TEMPORAL_WORDS or t in _COMPARATIVES
                     or t in _SCOPE or t in _FUTURE or t in _PAST or t in _PHRASAL or t in _HABITUAL
                     else t.split("-"))
    words = _once_after([_american(w) for w in _join_phrasal(words)])
    # "each" and "every" are one quantifier ("a fee for each session" / "for every session"); not "each other"
    words = ["every" if w == "each" and words[i + 1:i + 2] != ["other"] else w for i, w in enumerate(words)]
    numbers: set[str] = set()
    units: set[str] = set()
    run: list[str] = []

    def flush_run() -> None:
        if run:
            try:
                numbers.add(str(w2n.word_to_num(" ".join(run))))
            except (ValueError, IndexError):  # not a number word2number can read ("billion nine": IndexError)
                pass
            run.clear()

    prev_number = False
    for i, w in enumerate(words):
        if w in _NUMBER_WORDS:
            run.append(w)
            prev_number = True
            continue
        if run and w == "and":
            continue
        flush_run()
        is_number = False
        m = re.fullmatch(r"(\d+(?:[.,]\d+)*)(st|nd|rd|th)?", w)
        if m:
            value = _number_value(m.group(1))
            if value is not None:
                numbers.add(value)
                is_number = True
        elif w in _ORDINALS and _ORDINALS[w] is not None:
            numbers.add(str(_ORDINALS[w]))
            is_number = True
        elif w in _OTHER_NUMBERS and w != "none":
            numbers.add(str(_OTHER_NUMBERS[w]))
            is_number = True
        elif re.fullmatch(r"\d+[a-z]+", w):  # "10kg", "2gb", "3pm" already gone
            num, unit = re.match(r"(\d+)([a-z]+)", w).groups()  # type: ignore[union-attr]
            if unit in _UNITS:
                numbers.add(num)
                units.add(_UNITS[unit])
                is_number = True
        if prev_number and w in _UNITS:
            units.add(_UNITS[w])
        if w in ("$", "€", "£") and i + 1 < len(words) and re.match(r"\d", words[i + 1]):
            units.add(_UNITS[w])
        prev_number = is_number or (prev_number and w in ("-", "a", "per"))
    flush_run()
    if "once" in low_nt and _ONCE_COUNT.search(low_nt):  # "charged once, ..." / "charged twice": a count of one
        numbers.add("1")
    # a number and its unit is a quantity, not a code: "a 1oz coin" / "a 1 oz coin", "a 10m yacht" / "a 10 metre"
    identifiers = {i for i in identifiers if not ((m := re.fullmatch(r"\d+(?:[.,]\d+)?([a-z]+)", i))
                                                  and m.group(1) in _UNITS)}
    month_days = set()
    weekday_habit: set[str] = set()
    for i, w in enumerate(words):
        if len(w) > 4 and w.endswith("s") and w[:-1] in _WEEKDAYS:  # "on Saturdays": the same day, as a habit
            month_days.add(f"d{_WEEKDAYS[w[:-1]]}")
            weekday_habit.add(f"d{_WEEKDAYS[w[:-1]]}")
            continue
        if w in _MONTHS and (w != "may" or _near_number(words, i)) and (w != "march" or True):
            month_days.add(f"m{_MONTHS[w]}")
        elif w in _WEEKDAYS and not (w in ("sun", "sat", "wed") and not _near_number(words, i)):
            month_days.add(f"d{_WEEKDAYS[w]}")
        elif w in _QUARTERS:
            month_days.add(w)
    dates |= month_days
    for w in words:  # "1st" .. "31st" are numbers already; a quarter is a date
        if w in _QUARTERS:
            identifiers.discard(w)
    stems = [stemmer.stemWord(w) for w in words if _alpha(w)]
    content = {stemmer.stemWord(w) for w in words if _alpha(w) and w not in _STOP and w not in _NEGATIONS}
    polarity = {gs for w in words for gs in _POLARITY.get(w, ())}
    polarity |= {gs for w in words if w.startswith("un") and w[2:] in _POLARITY for gs in
                 [(g, -s) for g, s in _POLARITY[w[2:]]]}
    comparative = {gs for w in words for gs in _COMPARATIVES.get(w, ())}
    temporal = {_TEMPORAL_WORDS[w] for w in words if w in _TEMPORAL_WORDS}
    tense: set[str] = set()
    for w in words:
        if w in _PAST:
            tense.add("past")
        elif w in ("will", "shall", "gonna", "going-to", "should"):
            tense.add("future")
    if words[:1] in (["has"], ["have"]) and "got" not in words[:4] and _perfect(tuple(words), 0):
        tense.add("past")  # "has my order already been shipped?": what has happened ("have you got …" is having)
    # "-free" says "without": "phone-free" / "allow phone calls", "gluten-free" / "don't contain gluten"; so does
    # a substance then "free" written apart ("is it gluten free")
    negations = (sum(1 for w in words if w in _NEGATIONS or w in _FOREIGN_NEGATIONS) + _french_negations(low, words)
                 + sum(1 for t in tokens if re.fullmatch(r"[a-z]+-free", t)) + len(_SUBSTANCE_FREE.findall(low)))
    aside_spans = _aside_spans(lowered) if asides else []
    aside_words = [w for a, b in aside_spans for w in _tokens(_contracted(lowered[a:b]))]
    core_text = _without_spans(raw, aside_spans)
    core_text = core_text if aside_spans and len(_tokens(core_text)) >= 3 else None
    entities = _entities(raw)
    qword = next((w for w in words if w in _QWORDS), "")
    rare = {stemmer.stemWord(w) for w in _rare_words(words)}
    reach = {level for pattern, level in _REACH if pattern.search(low)}
    reversal_stems = _reversal_stems()
    reversal = {w for i, w in enumerate(words)
                if (w in _REVERSAL or (w.isalpha() and stemmer.stemWord(w) in reversal_stems))
                and not (stemmer.stemWord(w) in _VERB_ONLY_REVERSAL and i > 0 and words[i - 1] in _DETERMINERS)}
    prefixed = {(stemmer.stemWord(base), stemmer.stemWord(w)) for w in words
                if (base := _negating_prefix(w) or _negating_suffix(w)) is not None}
    prohibition = {w for w in words
                   if w in _PROHIBITION or (w.isalpha() and stemmer.stemWord(w) in _prohibition_stems())}
    asks_time = bool(_ASKS_TIME.search(low))
    return QuestionFeatures(
        text=raw, tokens=tuple(words), stems=frozenset(stems), content=frozenset(content),
        numbers=frozenset(numbers), identifiers=frozenset(identifiers), dates=frozenset(dates),
        times=frozenset(times), units=frozenset(units), negations=negations, polarity=frozenset(polarity),
        temporal=frozenset(temporal), tense=frozenset(tense), scope=frozenset(w for w in words if w in _SCOPE),
        collective=frozenset(w for w in words if w in _COLLECTIVE), third=any(w in _THIRD for w in words),
        owners=frozenset(m.group(1) or m.group(2) for m in _OWNER.finditer(low)),
        comparative=frozenset(comparative), entities=frozenset(entities), qword=qword, rare=frozenset(rare),
        reach=frozenset(reach), reversal=frozenset(reversal), prefixed=frozenset(prefixed),
        prohibition=frozenset(prohibition), modality=frozenset(_modality(words)),
        prevents=bool(_PREVENT_FROM.search(low)), prevent_word=any(w in _PREVENT_WORDS for w in words),
        lead_modality=frozenset(_modality(words[:_LEAD + 1], _LEAD)),
        now=any(w in _NOW for w in words), habitual=any(w in _HABITUAL for w in words),
        season=frozenset(name for pattern, name in _SEASONS if pattern.search(low)),
        habit_frame=any(w in _HABIT_FRAME for w in words) or bool(re.search(r"\b(?:all|whole)\s+(?:the\s+)?year\b",
                                                                              low)),
        which_many=frozenset(_which_many(words)),
        antonyms=frozenset(_antonym_signs(low)), person=("i" in words or "me" in words or "my" in words or "mine" in words
                                              or "myself" in words, "you" in words or "your" in words),
        deixis=frozenset(_deixis(low)), window=frozenset(_window(low)),
        moment=any(w in _MOMENT for w in words) or bool(_MOMENT_PHRASE.search(low)),
        ahead=bool(_AHEAD.search(low)),
        hyphen_prefixed=frozenset(_hyphen_prefixed(low, stems, stemmer)),
        aside_content=frozenset(stemmer.stemWord(w) for w in aside_words
                                if w.isalpha() and w not in _STOP and w not in _NEGATIONS),
        core_text=core_text,
        hyphenated=frozenset(m.group(2) for m in _HYPHENATED.finditer(low)),
        lead=frozenset(({"advance"} if _IN_ADVANCE.search(low) else set())
                       | ({"day"} if _ON_THE_DAY.search(low) else set())),
        time_ask=_time_ask(low),
        asks_time=asks_time,
        asks=frozenset([name for pattern, name in _ANSWER_KINDS if pattern.search(low)]
                       + (["time"] if asks_time else [])),
        price_ask=_price_ask(lowered),
        time_frame=frozenset([name for pattern, name in _TIME_FRAME if pattern.search(low)]
                             + (["own"] if _ITSELF.search(low) else []) + (["span"] if _SPAN.search(low) else [])),
        one_count="1" in numbers and not any(w in ("1", "first", "1st") for w in words),
        article=any(w in ("a", "an") for w in words), weekday_habit=frozenset(weekday_habit),
        stage=frozenset(({"done"} if _DONE.search(low) else set()) | ({"booked"} if _BOOKED.search(low) else set())),
        position=frozenset(name for pattern, name in _POSITION if pattern.search(low)),
        price=frozenset(({"free"} if _FREE.search(low) else set()) | ({"paid"} if _PAID.search(low) else set())),
        wh_lead=any(w in _QWORDS for w in words[:2]),
        designators=frozenset(f"{m.group(1).lower()} {m.group(2).lower()}" for m in _DESIGNATOR.finditer(raw)),
        tiers=frozenset(f"{m.group(1).lower()} {m.group(2).lower()}" for m in _TIER.finditer(raw)),
        first=frozenset(_first(low)),
        set_aside=(aside := _set_aside_parts(low))[0], asserted=aside[1],
        marks=_marks(text), language=(language := _language(text))[0], foreign=language[1],
    )


# -- skipping rules that cannot match -------------------------------------------------------------------------------
# analyse() runs each question through dozens of rewrite rules in order (contractions, phrases, synonyms); most
# match nothing in a given question, and a regex scan that finds nothing still costs a few microseconds. A rule
# is only run when the text holds one of the literal strings every match of its pattern must contain, which
# leaves the result exactly as running it would (a rule that cannot match changes nothing).

def required_literals(pattern: "re.Pattern[str]") -> tuple[str, ...] | None:
    """Strings one of which every match of ``pattern`` contains (the most selective such set found in its
    parse tree: a run of literal characters, or one per branch of an alternation), or None when it has none of at
    least two characters, or is case-insensitive (a literal test would then miss matches)."""
    if pattern.flags & re.IGNORECASE:
        return None
    try:
        from re import _parser  # the stdlib's own regex parser (Python >= 3.11)

        found = _literals_of(list(_parser.parse(pattern.pattern, pattern.flags)), _parser)
    except Exception:  # an unknown parse tree: run the rule every time
        return None
    return tuple(sorted(found)) if found and min(map(len, found)) >= 2 else None


def _literals_of(items: list[Any], P: Any) -> frozenset[str] | None:
    """The best required-literal set of a parsed sequence (see :func:`required_literals`)."""
    best: frozenset[str] | None = None
    run: list[str] = []

    def consider(option: frozenset[str] | None) -> None:
        nonlocal best
        if option and (best is None or min(map(len, option)) > min(map(len, best))):
            best = option

    def end_run() -> None:
        if run:
            consider(frozenset(["".join(run)]))
            run.clear()

    for op, arg in items:
        if op is P.LITERAL:
            run.append(chr(arg))
            continue
        end_run()
        if op is P.SUBPATTERN:
            if not arg[1] & re.IGNORECASE:  # "(?i:…)": its literals match in any case
                consider(_literals_of(list(arg[-1]), P))
        elif op is P.BRANCH:
            branches = [_literals_of(list(b), P) for b in arg[1]]
            if all(branches):
                consider(frozenset().union(*branches))  # type: ignore[arg-type]
        elif op in (P.MAX_REPEAT, P.MIN_REPEAT, P.POSSESSIVE_REPEAT) and arg[0] >= 1:
            consider(_literals_of(list(arg[2]), P))
        # anything else (classes, anchors, look-arounds, optional parts) requires no literal
    end_run()
    return best


class _Rewrites:
    """Rewrite rules ``(pattern, replacement)`` applied in order, each only where it could match."""

    def __init__(self, rules: Iterable[tuple["re.Pattern[str]", str]]) -> None:
        self.rules = tuple((pattern, repl, required_literals(pattern)) for pattern, repl in rules)

    def __call__(self, text: str) -> str:
        for pattern, repl, needs in self.rules:
            if needs is None or any(n in text for n in needs):
                text = pattern.sub(repl, text)
        return text


@functools.cache
def _phrase_rewrites() -> _Rewrites:
    return _Rewrites(_PHRASES)


@functools.cache
def _contraction_rewrites() -> _Rewrites:
    return _Rewrites(_CONTRACTIONS)


@functools.cache
def _synonym_rewrites() -> _Rewrites:
    return _Rewrites(_synonym_lexicon())


#: A word rarer than this Zipf frequency (wordfreq: 3 = once per million words) names something.
RARE_ZIPF = 3.2


def _rare_words(words: list[str]) -> set[str]:
    from wordfreq import zipf_frequency

    return {w for w in words if _alpha(w) and len(w) > 2 and w not in _STOP and w not in _UNITS
            and w not in _MONTHS and w not in _WEEKDAYS and zipf_frequency(w, "en") < RARE_ZIPF}


def _near_number(words: list[str], i: int) -> bool:
    return any(re.match(r"\d", words[j]) for j in (i - 1, i + 1, i + 2) if 0 <= j < len(words))


def _entities(raw: str) -> set[str]:
    """Capitalised words and names not at a sentence start (lower-cased); none in shouted text."""
    letters = [c for c in raw if c.isalpha()]
    if letters and sum(c.isupper() for c in letters) > 0.6 * len(letters):
        return set()
    out: set[str] = set()
    start = True
    for m in re.finditer(r"[A-Za-z][\w'’.&+-]*|[.!?:;,\-–]", raw):
        tok = m.group(0)
        if tok in ".!?:;":
            start = True
            continue
        if tok in (",", "-", "–"):
            continue
        word = tok.rstrip(".").lower().replace("’", "'")
        word = word[:-2] if word.endswith("'s") else word
        calendar = word in _MONTHS or word in _WEEKDAYS or word[:-1] in _WEEKDAYS  # "Saturdays" too
        if (not start and tok[0].isupper() and word not in _CAPITAL_SKIP and not calendar) or (
                re.search(r"\d", tok) and re.search(r"[A-Za-z]", tok) and not re.fullmatch(r"\d+(st|nd|rd|th)", word)):
            out.add(word)
        start = False
    return out


def guard(q: QuestionFeatures, c: QuestionFeatures, cosine: float | None = None) -> str | None:
    """The first guard reason that tells the two questions apart, or None. ``cosine`` (the pair's
    embedding similarity), when given, lets a one-word swap of two common words pass as a synonym at
    :data:`SYNONYM_COSINE` or above."""
    reason = _guard(q, c, cosine)
    if reason in _ASIDE_REASONS:  # "I've never ridden before, can I join?": the question, without the story
        qa, ca = _read_without_aside(q, c), _read_without_aside(c, q)
        if (qa is not q) != (ca is not c) and _guard(qa, ca, cosine) is None:
            # an instruction after the question reads as an aside ("… ? Reply in one word."): not a story
            return "extension" if _instructed(q, c) else None
    return reason


#: What a guard may read in a question's aside alone (see :func:`_read_without_aside`).
_ASIDE_REASONS = frozenset({"negation", "number", "date", "time", "scope", "comparative", "temporal", "polarity"})


def _guard(q: QuestionFeatures, c: QuestionFeatures, cosine: float | None = None) -> str | None:
    """:func:`guard`'s rules, in order, on the two questions as given."""
    if _foreign_words(q.text) != _foreign_words(c.text):  # "Как отменить заказ" / "Как изменить заказ": the
        return "unmatched"  # guards read English, the embedder barely more; in another script only the same words pass
    if q.identifiers != c.identifiers:
        return "identifier"
    if _dates(q, c) != _dates(c, q) or _habit_against_one_day(q, c) or _habit_against_one_day(c, q):
        return "date"
    if q.times != c.times:
        return "time"
    if _counts(q, c) != _counts(c, q):
        return "number"
    if q.units != c.units and q.units and c.units:
        return "unit"
    said_twice = _not_for_prefix(q, c) or _not_for_prefix(c, q)  # "not happy" / "unhappy": one negation
    if q.negations != c.negations and not said_twice:
        return "negation"
    if (_opposite(q.polarity, c.polarity) or _reversal(q, c) or _reversal(c, q) or _particle_reversal(q, c)
            or _over_under(q, c)  # "overcharged" / "undercharged"
            or (len(q.price) == 1 and len(c.price) == 1 and q.price != c.price)):  # "for free" / "for a fee"
        return "polarity"
    if ((not said_twice and (_prefix_negation(q, c) or _prefix_negation(c, q))) or _prohibits(q, c) or _prohibits(c, q)
            or _modal_inversion(q, c) or _prevents(q, c) or _prevents(c, q)
            or _sets_aside(q, c) or _sets_aside(c, q)):  # "is it live" / "is it pre-recorded rather than live"
        return "negation"
    if _kind_prefixed(q, c) or _kind_prefixed(c, q):  # "the Pre-Primary class" / "the Primary class"
        return "entity"
    if (_entity_swap(q, c) or _rare_swap(q, c) or _designator_swap(q, c) or _tier_grows(q, c) or _tier_grows(c, q)
            or _compound_grows(q, c) or _compound_grows(c, q)):
        return "entity"
    ops: list[tuple[str, int, int, int, int]] | None = None
    universal = q.scope != c.scope and _universal_swap(q, c)  # "all employees" / "every employee": one quantifier
    if q.scope != c.scope and not universal:
        ops = _opcodes(q, c)
        if not _existential_any(ops, q, c):
            return "scope"
    if (_some_against_only(q, c) or _some_against_only(c, q) or _part_asked(q, c) or _part_asked(c, q)
            or _to_oneself(q, c) or _to_oneself(c, q) or _unit_against_whole(q, c) or _unit_against_whole(c, q)):
        return "scope"  # "sell some X" / "sell only X", "are some dishes" / "is the cafe", "per pad" / "the full"
    if ((q.owners != c.owners and not universal) or _reach_differs(q, c) or _which_many_against_one(q, c)
            or _which_many_against_one(c, q)):
        return "scope"
    if {q.price_ask, c.price_ask} == {"amount", "inclusion"}:  # "how much is X" / "is Y included in the price of X"
        return "scope"
    if _relations_traded(q, c):  # "wait after colouring before washing" / "wait before colouring after washing"
        return "temporal"
    if _opposite(q.comparative, c.comparative):
        return "comparative"
    if q.temporal and c.temporal and q.temporal != c.temporal:
        return "temporal"
    if q.tense and c.tense and q.tense.isdisjoint(c.tense):  # past against future
        return "temporal"
    if q.window and c.window and q.window != c.window:  # "up to a week before" / "within a week of"
        return "temporal"
    if _before_after_prefix(q, c):  # "a pre-cruise hotel night" / "a post-cruise hotel night"
        return "temporal"
    if (len(q.lead) == 1 and len(c.lead) == 1 and q.lead != c.lead  # "in advance" / "on the same day" -- not
            and "or" not in q.tokens + c.tokens):  # "must I book ahead, or can I turn up on the day": one question
        return "temporal"
    if q.first and c.first and q.first != c.first:  # "the first year" / "after the first year"
        return "temporal"
    if q.time_ask and c.time_ask and q.time_ask != c.time_ask:  # "how long does it last" / "how far in advance"
        return "temporal"
    if _time_frames_differ(q, c):  # "how soon can I stain it" / "how often does it need staining"
        return "temporal"
    if _time_reach(q, c) or _time_reach(c, q):  # "is it open now" / "is it open late at night"
        return "temporal"
    if _season_frame(q, c) or _season_frame(c, q):  # "in season now" / "in season in the autumn"
        return "temporal"
    ops = ops if ops is not None else _opcodes(q, c)
    if _aux_swap(ops, q, c):  # "when did it end" / "when does it end"
        return "temporal"
    if ((q.asks_time and c.asks_time) or ("past" in q.tense and "past" in c.tense)) and _event_swap(ops, q, c):
        return "temporal"  # "when will it be dispatched" / "… delivered", "has it been shipped" / "… delivered"
    if _moment_ahead(q, c) or _moment_ahead(c, q):  # "cancel now" / "cancel in the final month"
        return "temporal"
    if _boundary_at(ops, q, c):  # "before the booking day" / "on the booking day"
        return "temporal"
    if len(q.stage) == 1 and len(c.stage) == 1 and q.stage != c.stage:  # "has it been done" / "is it booked"
        return "temporal"
    if len(q.position) == 1 and len(c.position) == 1 and q.position != c.position:  # "mid-season" / "at the start"
        return "temporal"
    if _deixis_differs(q, c):  # "next Wednesday" / "this Wednesday" (checked after the rules above, which
        return "date"  # read "last month" / "next month" already)
    if _asks_differ(q, c):  # "where do I return an item" / "when do I return an item", "why was my card declined" /
        return "question_word"  # "when was my card declined", "who can see my posts" / "why can people see them"
    if (_roles_swapped(q, c) or _nouns_swapped(q, c) or _subjects_swapped(q, c)  # "from savings to checking" /
            or _clause_subjects_differ(q, c) or _relative_swapped(q, c) or _agent_differs(q, c)):
        return "order"  # "from checking to savings", "can a landlord evict a tenant" / "a tenant evict a landlord",
        # "can my husband use my card" / "can I use my husband's card", "if I cancel" / "if you cancel", "a user who
        # blocked me" / "a user I blocked", "can I reset it myself" / "can you reset it for me"
    if reason := _alternative_swap(ops, q, c):  # "the alto part" / "the tenor part", "time of day" / "of year"
        return reason
    if not said_twice and _word_swap(ops, q, c, cosine):  # "is physiotherapy covered" / "is dental work covered"
        return "entity"
    reason = _coverage(ops, q, c, cosine)  # "add" / "drop", "until" / "from", "X" / "X and Y"
    if reason is None and _owner_added(ops, q, c):  # "delete my account" / "delete my child's account" (after
        return "entity"  # coverage: "my garden" / "my neighbour's garden as well" is a party added, scope)
    if reason is None and (_antonym_opposite(q, c)  # "pick up" / "drop off", "switch to" / "stay with"
                           or _in_out_opposite(q, c)):  # "still under warranty" / "out of warranty"
        return "polarity"  # (last: a pair the rules above reject keeps their reason)
    if reason is None and _extension(q, c):  # "the max dose of tylenol" / "… for kids", "how do I cancel my plan" /
        return "extension"  # "… ? Reply in one word." (last, too)
    if reason is None:  # "从储蓄账户转到支票账户" / "从支票账户转到储蓄账户", "pagó" / "pago", Spanish against English
        return _foreign_reason(q, c)
    return reason


_UNIVERSAL_SKIP = frozenset({"of", "the", "my", "your", "our", "their", "his", "her", "its", "these", "those"})


def _universal_swap(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """"all" before a plural noun on one side, "every" (or "each") before the same noun in the singular on the other,
    the only quantifiers that differ: "do all employees get …" / "does every employee get …", "all the rooms" /
    "every room". "all day" / "every day" (a singular after "all": the whole day) is no such swap."""
    if q.scope ^ c.scope != {"all", "every"}:
        return False

    def head(f: QuestionFeatures, quantifier: str) -> str | None:
        at = [i for i, w in enumerate(f.tokens) if w == quantifier]
        if len(at) != 1:
            return None
        for w in f.tokens[at[0] + 1:at[0] + 4]:
            if w not in _UNIVERSAL_SKIP:
                return w if w.isalpha() else None
        return None

    every_side, all_side = (q, c) if "every" in q.scope else (c, q)
    one, many = head(every_side, "every"), head(all_side, "all")
    return (one is not None and many is not None and one != many and one in _all_lemmas(many).get("NOUN", ()))


#: What "any" may stand against and still only ask whether there is some ("is there any parking" / "is there
#: parking"); against one of these it is a quantifier ("can I install any app" / "this app", "any car" / "my
#: own car", "any damage" / "the windscreen").
_SPECIFIC = frozenset({"this", "that", "these", "those", "my", "your", "our", "their", "his", "her", "its", "the",
                       "one", "own", "only", "single", "particular", "specific", "certain"})
#: After "any" a quantifier however it stands: "any of your vets", "any number of guests", "any time".
_ANY_QUANTIFIES = frozenset({"of", "number", "amount", "onepronoun", "time", "day", "hour", "date", "branch",
                             "store", "location", "site", "size", "type", "card", "device", "account"}) | _SCOPE


def _existential_any(ops: list[tuple[str, int, int, int, int]], q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """The two differ in quantifiers only by one "any" asking whether there is some, not which one: where the
    other question has nothing, "a", "some" or other words but no specific determiner in its place ("is there
    any parking" / "is there parking", "do you run any courses for IELTS" / "can you help me prepare for it")."""
    if q.scope ^ c.scope != {"any"}:
        return False
    side, other = (q, c) if "any" in q.scope else (c, q)
    at = [i for i, w in enumerate(side.tokens) if w == "any"]
    if len(at) != 1 or (at[0] + 1 < len(side.tokens) and side.tokens[at[0] + 1] in _ANY_QUANTIFIES):
        return False
    i = at[0]
    for op, i1, i2, j1, j2 in ops:
        lo, hi, olo, ohi = (i1, i2, j1, j2) if side is q else (j1, j2, i1, i2)
        if op != "equal" and lo <= i < max(hi, lo + 1):
            if (op == "replace" and hi - lo == 1 and hi < len(side.tokens) and ohi < len(other.tokens)
                    and side.tokens[hi] == other.tokens[ohi]
                    and all(w.isalpha() and w not in _STOP and w not in side.tokens[i + 1:]
                            for w in other.tokens[olo:ohi])):
                # "any medication" / "blood pressure medication": a kind named where "any" stood and not after it
                # ("any discounts for student customers" / "student discounts" is one question)
                return False
            return not (set(other.tokens[olo:ohi]) & (_SPECIFIC | _SCOPE))
    return False


def _some_against_only(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """Part of a kind against nothing but that kind: "do you sell some protective gear" / "do you sell only
    protective gear" (each side names its word, the other not)."""
    return "some" in q.tokens and "only" not in q.tokens and "only" in c.tokens and "some" not in c.tokens


_LEAD_AUX = frozenset({"are", "do", "can", "will", "have", "were", "did", "could", "should", "must", "would"})


#: "are some …", "is anything …", "are any …" opening a question: a part of the thing asked about (_part_asked).
_PART_AUX = _LEAD_AUX | {"is"}
_PART_WORDS = frozenset({"some", "anything", "any"})


def _part_asked(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """Asks about some of them ("are some cafe dishes gluten-free?", "is anything on the menu vegan?", "are any of
    the rooms accessible?") where the other asks about the thing itself, with no "some" or "any" of its own ("is
    the cafe gluten-free?", "is the menu vegan?")."""
    t = q.tokens
    return (len(t) > 2 and t[0] in _PART_AUX and t[1] in _PART_WORDS and not {"some", "any", "anything", "anyone"}
            & set(c.tokens))


_ONESELF = frozenset({"myself", "ourselves", "yourself", "yourselves", "themselves"})
_PRIVATE = frozenset({"private", "privately", "own", "alone", "exclusive", "exclusively", "sole", "solely"})


def _to_oneself(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """Having a thing to oneself against using it ("can I have the shared greenhouse to myself?" / "can I use the
    shared greenhouse?"): the other side neither says it nor names a private or own one."""
    t = q.tokens
    return (any(w == "to" and n in _ONESELF for w, n in zip(t, t[1:]))
            and not any(w == "to" and n in _ONESELF for w, n in zip(c.tokens, c.tokens[1:]))
            and not _PRIVATE & set(c.tokens))


_WHOLE = frozenset({"full", "whole", "entire", "complete"})


def _unit_against_whole(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """A price or amount per unit against the whole job: "is the price per pad?" / "for the full repad?"."""
    return ("per" in q.tokens and "per" not in c.tokens and bool(_WHOLE & set(c.tokens))
            and not _WHOLE & set(q.tokens))


_PAST_AUX = frozenset({"did", "was", "were", "had"})
_NOW_AUX = frozenset({"do", "does", "is", "are", "am", "will", "can", "has", "have"})


def _aux_swap(ops: list[tuple[str, int, int, int, int]], q: QuestionFeatures, c: QuestionFeatures) -> bool:
    a, b = q.tokens, c.tokens
    for op, i1, i2, j1, j2 in ops:
        if op == "replace" and i2 - i1 <= 2 and j2 - j1 <= 2:
            x, y = set(a[i1:i2]), set(b[j1:j2])
            if (x & _PERFECT_AUX and _perfect(a, i1)) or (y & _PERFECT_AUX and _perfect(b, j1)):
                continue  # "why was it taken down" / "why has it been taken down": both about what happened
            if (x & _PAST_AUX and y & _NOW_AUX) or (x & _NOW_AUX and y & _PAST_AUX):
                return True
    return False


_PERFECT_AUX = frozenset({"has", "have"})


def _perfect(tokens: tuple[str, ...], at: int) -> bool:
    """A present perfect from ``at`` on: has / have, then within four words "been" or a past participle
    ("has my listing been taken down", "have you received")."""
    for j in range(at, min(at + 2, len(tokens))):
        if tokens[j] in _PERFECT_AUX:
            for w in tokens[j + 1:j + 5]:
                if w == "been" or (w.isalpha() and re.search(r"(?:ed|en|wn|ne|t)$", w) and _verb_lemma(w) != w):
                    return True
    return False


def _counts(q: QuestionFeatures, c: QuestionFeatures) -> frozenset[str]:
    """``q``'s numbers, less a count of one said in words ("one", "single") where ``c`` says it with "a" / "an" or
    in words too: "one game" / "a game", "a single lesson" / "a lesson" are no other number."""
    if q.one_count and (c.article or c.one_count) and c.numbers <= ({"1"} if c.one_count else frozenset()):
        return q.numbers - {"1"}  # only when the other side has no number of its own ("a unit for 1 month" has)
    if q.one_count and c.article and "1" not in c.numbers and c.numbers == q.numbers - {"1"}:
        return c.numbers  # "can 2 cats share one pen" / "can two cats share a pen": the other numbers are the same
    return q.numbers


def _dates(q: QuestionFeatures, c: QuestionFeatures) -> frozenset[str]:
    """``q``'s dates, less the weekdays it names in the plural ("on Saturdays") where ``c`` names no weekday at all
    ("at the weekend" / "saturdays and sundays": a habit against no day, as before plurals were read)."""
    if q.weekday_habit and not any(d.startswith("d") for d in c.dates):
        return q.dates - q.weekday_habit
    return q.dates


def _habit_against_one_day(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """``q`` names a weekday as a habit ("on Saturdays"), ``c`` one particular such day ("this / next Saturday")."""
    days = {d.split(":")[1] for d in c.deixis}
    return any(d in days and d not in c.weekday_habit for d in q.weekday_habit)


def _moment_ahead(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """``q`` asks about this very moment ("now", "today", "right away"), ``c`` about a stretch of time ahead or a
    point near a deadline ("in the final month", "closer to the date", "at the last minute")."""
    return q.moment and not c.moment and c.ahead and not q.ahead


#: Prepositions that put an event at a time (at, on or during it) — against a boundary of it (before, after,
#: until), around the same anchor, another time: "before the booking day" / "on the booking day".
_AT_PREPS = frozenset({"on", "at", "during", "in", "upon", "throughout", "on-the-day"})
_STRICT_BOUNDARY = {"before": "before", "prior": "before", "after": "after", "until": "until", "till": "until",
                    "til": "until"}
_BOUNDARY_FILLER = frozenset(_STOP | {"day", "of", "to"} | _AT_PREPS | set(_STRICT_BOUNDARY))


def _boundary_at(ops: list[tuple[str, int, int, int, int]], q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """One time preposition swapped for another of another kind right before the same anchor: "before" / "on"
    ("before the booking day" / "on the booking day", "before the event" / "on the day of the event"), "after" /
    "during", "until" / "at" — the swapped spans hold nothing but prepositions, determiners and "the day of"."""
    def kinds(words: tuple[str, ...]) -> set[str]:
        return ({_STRICT_BOUNDARY[w] for w in words if w in _STRICT_BOUNDARY}
                | ({"at"} if any(w in _AT_PREPS for w in words) else set()))

    for k, (op, i1, i2, j1, j2) in enumerate(ops):
        if op != "replace" or i2 - i1 > 4 or j2 - j1 > 4 or k + 1 >= len(ops) or ops[k + 1][0] != "equal":
            continue
        x, y = q.tokens[i1:i2], c.tokens[j1:j2]
        if not all(w in _BOUNDARY_FILLER for w in x + y):
            continue
        if not any(w not in _STOP for w in q.tokens[ops[k + 1][1]:ops[k + 1][2]]):
            continue  # no shared anchor after the swap
        kx, ky = kinds(x), kinds(y)
        if len(kx) == 1 and len(ky) == 1 and kx != ky and "at" in kx | ky:
            return True
    return False


def _time_reach(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """``q`` asks about this moment, ``c`` about a habit, a season, a scheduled time, the past or the future:
    "Is the box office open now?" / "... on the day of the show?", "... right now?" / "How long did ... today?"."""
    return q.now and not c.now and (c.habitual or any(w in _TENSE_AUX for w in c.tokens))


def _season_frame(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """``q`` names a season or time of the year that ``c`` does not, and ``c`` asks about this moment, a habit
    or the whole year — or names another season: "in season now" / "in the autumn", "usually" / "over
    Christmas", "in spring" / "in the autumn"."""
    return bool(q.season) and not (q.season & c.season) and (bool(c.season) or c.now or c.habit_frame)


#: Auxiliaries that put a question in the past or the future ("how long did it", "when will it").
_TENSE_AUX = frozenset({"will", "did", "shall", "going-to"})


def _reversal(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """``q`` withdraws from, stops or revokes what ``c`` asks about: a reversal verb on ``q``'s side
    only, and ``c`` says little that ``q`` does not (so both are about the same thing)."""
    own = q.reversal
    if any(w in _MOVE_WORDS for w in c.tokens) and not any(  # "after the removal" / "after the move": one move,
            w in ("removal", "removals") and nxt in ("of", "from")  # but "removal of my data" removes something
            for w, nxt in zip(q.tokens, q.tokens[1:])):
        own = {r for r in own if r not in ("removal", "removals")}
    return (bool(own) and not c.reversal and len(c.content - q.content) <= 1
            and not any(_is_typo(r, w) for r in own for w in c.tokens))  # "waive" / "waaive"


#: Particles that reverse one another after the same verb: "fold out" / "fold back up", "turn on" / "turn off",
#: "check in" / "check out"; "in" and "on" only right after the verb (else they are prepositions).
_PARTICLE_SIDES = (({"out"}, {"up", "in"}), ({"on"}, {"off"}), ({"up"}, {"down"}))
_PARTICLE_WORDS = frozenset({"out", "up", "in", "on", "off", "down", "back"})
#: Verbs whose two particles say the same ("fill in" / "fill out" a form).
_SAME_PARTICLE_VERBS = frozenset({"fill", "be", "have", "do", "get", "go", "come"})
_NEAR_PARTICLES = frozenset({"in", "on"})


def _verb_particles(tokens: tuple[str, ...]) -> dict[str, set[str]]:
    """Each alphabetic word's verb lemma and the particles that follow it: right after it, or up to three words
    later for "out / up / off / down" ("fold the sofa bed back up": four words between)."""
    out: dict[str, set[str]] = {}
    for i, w in enumerate(tokens):
        if not w.isalpha() or w in _PARTICLE_WORDS or w in _STOP:
            continue
        lemma = _verb_lemma(w)
        if lemma in _SAME_PARTICLE_VERBS or _never_a_verb(w):  # "drop off donations on Sunday": no "donate on"
            continue
        for j in range(i + 1, min(i + 6, len(tokens))):
            t = tokens[j]
            if t in _PARTICLE_WORDS and (j == i + 1 or t not in _NEAR_PARTICLES):
                out.setdefault(lemma, set()).add(t)
    return out


def _particle_reversal(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """The same verb with opposite particles on the two sides, each side only one of them."""
    a, b = _verb_particles(q.tokens), _verb_particles(c.tokens)
    for verb in a.keys() & b.keys():
        for one, other in _PARTICLE_SIDES:
            if ((a[verb] & one and not a[verb] & other and b[verb] & other and not b[verb] & one)
                    or (a[verb] & other and not a[verb] & one and b[verb] & one and not b[verb] & other)):
                return True
    return False


#: Where a question's parts split: a comma, a semicolon, a colon, a full stop, "!", "?" or a dash. The spaces before
#: one are only taken from the start of their run (the lookbehind): a bare leading ``\s*`` was retried from every
#: space of a run, quadratic in its length (30 000 spaces, which cost the embedder no token: seconds per parse);
#: the matches are the same.
_PART_SEP = re.compile(r"(?:(?<!\s)\s+)?(?:[;:!?\u2014\u2013]|[,.](?!\d)|\s-\s)\s*")  # not "£1,200", "4.30"
#: A part that opens with one of these asks, conditions or links, or greets: never an aside.
_NOT_ASIDE = frozenset({"what", "when", "where", "why", "who", "which", "how", "whom", "whose", "is", "are", "am",
                        "was", "were", "do", "does", "did", "can", "could", "will", "would", "should", "shall", "may",
                        "might", "must", "have", "has", "had", "any", "if", "unless", "once", "before", "after",
                        "while", "whilst", "since", "because", "as", "though", "although", "until", "till", "so",
                        "but", "and", "or", "then", "please", "hi", "hello", "hey", "thanks", "thank", "also",
                        "otherwise", "instead", "plus", "just", "even", "only", "in", "on", "at", "for",
                        "with", "without", "from", "to", "by", "about", "during", "between", "per",
                        "whether", "isn't", "aren't", "don't", "doesn't", "can't", "won't", "wouldn't",
                        "couldn't", "shouldn't", "there", "that", "this", "these", "those", "it", "its", "it's"})
#: ... of which these open the question part itself (the rest greet or link).
_ASKS = _NOT_ASIDE - {"please", "hi", "hello", "hey", "thanks", "thank", "but", "and", "so", "also"}
#: A purpose clause with a negation: "... so they don't get damaged", "so that we're not queueing".
_PURPOSE = re.compile(r"\bso\s+(?:that\s+)?(?:i|we|they|it|you|he|she|the\s+\w+|my\s+\w+|our\s+\w+)['\u2019\w]*"
                      r"(?:\s+[\w'\u2019]+){0,2}?\s+(?:not|never|\w+n['\u2019]t)\b[^,;:.!?]*")


def _contracted(low: str) -> str:
    """``low`` with its contractions spelt out ("don't" -> "do not"), as :func:`analyse` reads them."""
    return _contraction_rewrites()(low)


def _aside_spans(low: str) -> list[tuple[int, int]]:
    """Where a question says something aside from what it asks (``low``: the question in lower case): the
    statements before its question part and after it ("I've never ridden before, am I able to join …",
    "… to the opera? Don't want to turn up in jeans"), parts that open with no word that asks, conditions or
    links; and a purpose clause with a negation ("… so they don't get damaged")."""
    parts, ends, at = [], [], 0  # each part, and whether a sentence ended before it
    ended = True
    for m in _PART_SEP.finditer(low):
        if m.start() > at:
            parts.append((at, m.start()))
            ends.append(ended)
        ended = bool(re.search(r"[.!?]", m.group(0)))
        at = m.end()
    if at < len(low):
        parts.append((at, len(low)))
        ends.append(ended)
    words = [re.findall(r"[a-z0-9'\u2019]+", low[a:b]) for a, b in parts]
    asks = [i for i, w in enumerate(words) if w and w[0] in _ASKS]
    spans = []
    if asks:
        for i, (span, w) in enumerate(zip(parts, words)):
            # before the question; after it only a new sentence ("… to the opera? Don't want to …"), not a list
            # going on after a comma ("a blade, stand and water tray")
            if (len(w) >= 2 and w[0] not in _NOT_ASIDE
                    and (i < asks[0] or (i > asks[-1] and ends[i]))):
                spans.append(span)
    spans += [(m.start(), m.end()) for m in _PURPOSE.finditer(low)]
    return sorted(spans)


def _without_spans(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` without the character ``spans`` (and the punctuation they leave at its start)."""
    out, at = [], 0
    for a, b in sorted(spans):
        if a >= at:
            out.append(text[at:a])
            at = b
    out.append(text[at:])
    return re.sub(r"^[\s,;:.!\u2014\u2013-]+", "", " ".join(out)).strip()


def _read_without_aside(q: QuestionFeatures, c: QuestionFeatures) -> QuestionFeatures:
    """``q`` as the guards compare it with ``c``: without its asides where ``c`` says nothing aside and does not
    speak of them at all ("I've got a dog and two cats, will the rodent bait harm them?" / "Is the rat poison
    you use safe around pets?": no count asked). Where both tell a story ("My fridge is leaking, who do I
    contact?" / "My oven is overheating, …"), the story is what differs."""
    if q.core_text is not None and c.core_text is None and q.aside_content and not q.aside_content & c.content:
        return q.core or q
    return q


def _before_after_prefix(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """The same word after "pre-" on one side and "post-" on the other: "pre-cruise" / "post-cruise"."""
    qs, cs = dict((w, p) for p, w in q.hyphen_prefixed), dict((w, p) for p, w in c.hyphen_prefixed)
    return any({qs[w], cs[w]} == {"pre", "post"} for w in qs.keys() & cs.keys())


_OVER_UNDER = re.compile(r"^(over|under)-?([a-z]{3,})$")


def _over_under(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """The same word after "over" on one side and "under" on the other: "I was overcharged" / "I was
    undercharged", "overpaid" / "underpaid", "over-cooked" / "under-cooked"."""
    def marked(f: QuestionFeatures) -> dict[str, str]:
        return {m.group(2): m.group(1) for t in f.tokens if (m := _OVER_UNDER.match(t))}

    mq, mc = marked(q), marked(c)
    return any(mq[w] != mc[w] for w in mq.keys() & mc.keys())


_INSIDE = frozenset({"in", "under", "within"})
_IN_OUT_DETS = frozenset({"the", "a", "an", "my", "your", "our", "their", "its", "his", "her", "this", "that"})


def _in_out(tokens: tuple[str, ...]) -> dict[str, set[str]]:
    """Each noun after "out of" ("out of warranty", "out of the office", "out-of-network") or after "in" / "under" /
    "within" ("under warranty", "in the office", "in-network"), a determiner allowed between: noun -> the sides
    ("in", "out") it is named on. "in order to" names no order."""
    found: dict[str, set[str]] = {}
    for i, w in enumerate(tokens):
        if w == "out" and tokens[i + 1:i + 2] == ("of",):
            side, j = "out", i + 2
        elif w in _INSIDE:
            side, j = "in", i + 1
        elif "-" in w:  # "out-of-warranty", "in-network", kept whole by a lexicon
            head, _, noun = w.rpartition("-")
            if head == "out-of" or head in _INSIDE:
                found.setdefault(noun, set()).add("out" if head == "out-of" else "in")
            continue
        else:
            continue
        j += j < len(tokens) and tokens[j] in _IN_OUT_DETS
        if j < len(tokens) and tokens[j].isalpha() and tokens[j + 1:j + 2] != ("to",):
            found.setdefault(tokens[j], set()).add(side)
    return found


def _in_out_opposite(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """One side names a noun after "out of", the other the same noun after "in" / "under" / "within" only: "still
    under warranty" / "out of warranty", "in the office" / "out of the office" (a side naming both, "in or out of
    warranty", differs from neither)."""
    if not any(w == "out" or w.startswith("out-of-") for f in (q, c) for w in f.tokens):
        return False
    a, b = _in_out(q.tokens), _in_out(c.tokens)
    return any(len(a[n]) == 1 and len(b[n]) == 1 and a[n] != b[n] for n in a.keys() & b.keys())


def _kind_prefixed(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """``q`` names a word with a hyphenated prefix ("pre-primary") whose bare word ``c`` names without it."""
    t = c.tokens
    return any(word in t and word not in c.hyphenated and not any(a == prefix and b == word for a, b in zip(t, t[1:]))
               for prefix, word in q.hyphen_prefixed)  # not "pre booked" / "ready-picked" either


def _prefix_negation(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """``q`` has a word with a negating prefix whose bare word is ``c``'s: "unfurnished" / "furnished"."""
    return any(base in c.stems and whole not in c.stems for base, whole in q.prefixed)


def _not_for_prefix(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """``q`` has exactly one negation more than ``c``, a "not" right before a word that ``c`` says with a negating
    prefix and nowhere bare: "if I'm not happy with it" / "if I'm unhappy with it"."""
    if q.negations != c.negations + 1:
        return False
    said_not = {b for a, b in zip(q.tokens, q.tokens[1:]) if a == "not"}
    return any(_negating_prefix(w) in said_not for w in c.tokens if w not in q.tokens) \
        and not said_not & set(c.tokens)


#: Verbs of stopping someone doing something, in any form.
_PREVENT_WORDS = frozenset({"block", "blocks", "blocked", "blocking", "stop", "stops", "stopped", "stopping",
                            "prevent", "prevents", "prevented", "preventing", "ban", "bans", "banned", "banning",
                            "bar", "bars", "barred", "barring", "forbid", "forbids", "forbade", "forbidden"})
#: "block / stop / prevent / ban <someone> from doing": asks to forbid what a permission question allows.
_PREVENT_FROM = re.compile(r"\b(?:block|stop|prevent|ban|bar|forbid)s?\s+(?:[\w']+\s+){0,4}?from\s+[a-z]+ing\b")


def _prevents(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """``q`` asks how to stop someone doing what ``c`` asks whether they may do, and ``c`` names no stopping:
    "Is the courier allowed to leave parcels with a neighbour?" / "How do I block the courier from leaving
    parcels with a neighbour?" (a wh-question the modal rule leaves alone)."""
    return q.prevents and not c.prevent_word and "permit" in c.modality and not c.prohibition


def _prohibits(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """``q`` asks whether to avoid (or whether it is forbidden) what ``c`` asks to do, and says little more:
    "Can I drive with the warning on?" / "Should I avoid driving with the warning on?"."""
    # a refusal names the thing refused in its own words ("re-enter" / "is re-entry refused"): one word more
    more = 2 if q.prohibition & _REFUSAL else 1
    # a reversal verb only on the plain side is the avoiding said another way ("stop" / "prevent"); the same one on
    # both is the act asked about ("can I freeze hard cheese" / "is it a bad idea to freeze hard cheese")
    return (bool(q.prohibition) and not c.prohibition and c.reversal <= q.reversal
            and len(c.content - q.content) <= more)


_MODAL_WORDS = frozenset({"allow", "permit", "abl", "mandatori", "requir", "compulsori", "obligatori", "oblig",
                          "recommend", "advis",
                          "suppos", "ought", "need", "must", "got", "option", "accept"})


def _modal_inversion(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """A yes / no question asking whether one may against whether one must, about the same thing:
    "Can I pay in cash?" / "Do I have to pay in cash?" (a wh-question, "how can I pay", is left alone), or in a
    rewrite, by the questions' own modals: "Must we keep noise down?" / "Are we free to play music?"."""
    if q.wh_lead or c.wh_lead:
        return False
    if _modal_clash(q, c):
        if q.content - _MODAL_WORDS == c.content - _MODAL_WORDS:
            return True
    # a rewrite: "must we keep noise down" / "are we free to play music", "do I have to bring X" / "can I leave X
    # at home" -- the questions' own modals (their first words), an obligation against a permission (advice against
    # an obligation only in the same words: "should I stop taking X" / "do I have to come off X" is one question)
    a, b = q.lead_modality, c.lead_modality
    return len(a) == 1 and len(b) == 1 and a != b and "permit" in a | b


def _which_many_against_one(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """``q`` asks which of many ("which orders are affected"), ``c`` about one ("has my order been affected")."""
    return any(n in c.tokens and n not in q.tokens for n in q.which_many - c.which_many)


def _reach_differs(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """The two reach differently far; "my street" against a question that names no place is no difference,
    a wide reach ("nationwide", "all customers") on one side only is."""
    return (q.reach - {"local"}) != (c.reach - {"local"})


def _opposite(a: frozenset[tuple[int, int]], b: frozenset[tuple[int, int]]) -> bool:
    """Some group has one sign on one side and only the other sign on the other."""
    ga: dict[int, set[int]] = {}
    gb: dict[int, set[int]] = {}
    for g, s in a:
        ga.setdefault(g, set()).add(s)
    for g, s in b:
        gb.setdefault(g, set()).add(s)
    if _RETAIN_GROUP in ga and _RETAIN_GROUP in gb and len(ga[_RETAIN_GROUP]) == len(gb[_RETAIN_GROUP]) == 1 \
            and ga[_RETAIN_GROUP] != gb[_RETAIN_GROUP]:
        return True
    return any(g in gb and ga[g] != gb[g] for g in ga if g != _RETAIN_GROUP)


def _entity_swap(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    missing_q = {e for e in q.entities if not _mentions(c, e)}
    missing_c = {e for e in c.entities if not _mentions(q, e)}
    return bool(missing_q and missing_c)


def _designator_swap(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """The same noun with another one-letter designator: "Studio A" / "Studio B", "gate C" / "gate D"."""
    mine = {d.split()[0]: d for d in q.designators}
    return any(d.split()[0] in mine and mine[d.split()[0]] != d for d in c.designators)


def _tier_grows(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """A name with a tier word on one side, the same name without it on the other: "the Home Shield Plus plan" /
    "the Home Shield plan" (another product; "Acme Pro" / "Acme Max" is an entity swap already)."""
    low = c.text.lower()
    for t in q.tiers - c.tiers:
        name, tier = t.split()
        if name in c.entities and not re.search(rf"\b{re.escape(name)}\s+{tier}\b", low):
            return True
    return False


def _compound_grows(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """The one difference is a lower-case noun put between a determiner or preposition and a plural noun both
    name, making another kind of thing: "feeding time for the lions" / "for the sea lions", "the bears" / "the
    polar bears" (not a noun grown further, "child seats" / "child car seats", nor a singular one, "our garden" /
    "our back garden", "the test" / "the eye test": each a same-answer near-repeat of the dev sets)."""
    if len(c.tokens) != len(q.tokens) + 1:  # one word more, or no such insertion (no alignment needed)
        return False
    ops = [op for op in _opcodes(q, c) if op[0] != "equal"]
    if len(ops) != 1 or ops[0][0] != "insert" or ops[0][4] - ops[0][3] != 1:
        return False
    at = ops[0][3]
    if at + 1 >= len(c.tokens):
        return False
    mod, head = c.tokens[at], c.tokens[at + 1]
    if at == 0 or c.tokens[at - 1] not in _STOP or not _plural_noun(head):
        return False
    if (not mod.isalpha() or mod in _STOP or mod in _SCOPE or mod in _TEMPORAL_WORDS or mod in _COMPARATIVES
            or mod in _POLARITY or mod in _QWORDS or not re.search(rf"(?<![\w-]){mod}\s+{head}\b", c.text)):
        return False  # a capitalised modifier is a name: the entity rules read it
    return "NOUN" in _all_lemmas(mod) and "NOUN" in _all_lemmas(head)


def _rare_swap(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """Each side names a rare word (a product, a treatment, a tool) the other does not."""
    return bool(_unmatched_rare(q, c) and _unmatched_rare(c, q))


def _unmatched_rare(a: QuestionFeatures, b: QuestionFeatures) -> set[str]:
    return {w for w in a.rare if w not in b.stems and w not in b.tokens
            and not any(_is_typo(w, t) for t in b.stems)}


#: Two words at least this similar (optimal string alignment: a swap of two letters is one edit) may be a typo.
_TYPO = 0.7
#: ... unless both are words of English at least this frequent (wordfreq Zipf): "radiology" / "cardiology"
#: are two departments, "paymnet" / "payment" one word mistyped.
TYPO_MAX_ZIPF = 2.9


@functools.lru_cache(maxsize=65536)
def _is_typo(a: str, b: str) -> bool:
    from rapidfuzz.distance import OSA
    from wordfreq import zipf_frequency

    if re.sub(r"[^a-z]", "", a) == re.sub(r"[^a-z]", "", b):  # "clinic's" / "clinics", "any time" / "anytime"
        return True
    if OSA.normalized_similarity(a, b) < _TYPO:
        return False
    if a[:1] != b[:1] and min(len(a), len(b)) <= 4:
        return False  # a short word's typo keeps its first letter: "npm" / "pnpm", "vim" / "nvim" are two tools
    if any(x == p + y for p in _NEG_PREFIXES for x, y in ((a, b), (b, a))):  # "deregister" / "register"
        return False
    en = (zipf_frequency(a, "en"), zipf_frequency(b, "en"))
    if any(x == "a" + y and len(y) >= 6 and y[0] != y[1] and (zy > 0 or zx == 0)
           for x, y, zx, zy in ((a, b, en[0], en[1]), (b, a, en[1], en[0]))) and not _antonym_words(a, b):
        # "asynchronously" / "synchronously", "atypical" / "typical": a privative "a-" -- not a dropped "a", which
        # leaves no word ("vailable"), or a doubled letter ("ccount", "ppointment"); a pair the antonym lexicon
        # holds ("synchronous" / "asynchronous") is left to its rule, which reads it as opposites
        return False
    if _bit_byte(a, b):  # "megabits" / "megabytes", "kilobit" / "kilobyte": two units
        return False
    if min(en) >= TYPO_MAX_ZIPF:
        return False
    if max(en) >= TYPO_MAX_ZIPF:  # "accesible" / "accessible": English's word mistyped (Spanish's too)
        return True
    # both rare in English, but two words of another language a vowel apart: a gender, a person or a tense ("hijo" /
    # "hija", "abuelo" / "abuela", "llega" / "llegó"), another word, not a typo; an ending grown or worn ("kündige" /
    # "kündigen", "ändere" / "ändern") is the same verb
    if len(a) != len(b) or not all(x in _VOWELS and y in _VOWELS for x, y in zip(a, b) if x != y):
        return True
    return not any(table.get(a, 0.0) >= TYPO_MAX_ZIPF and table.get(b, 0.0) >= TYPO_MAX_ZIPF
                   for table in _other_zipf().values())


_VOWELS = frozenset("aeiouy")


@functools.lru_cache(maxsize=1)
def _antonym_keys() -> dict[str, frozenset[tuple[int, int]]]:
    """The antonym lexicon's single words and their snowball stems -> (line, side)."""
    stemmer = _stemmer()
    keys: dict[str, set[tuple[int, int]]] = {}
    for word, where in _antonym_lexicon()[0].items():
        for key in {word, stemmer.stemWord(word)}:
            keys.setdefault(key, set()).update(where)
    return {k: frozenset(v) for k, v in keys.items()}


def _antonym_words(a: str, b: str) -> bool:
    """``a`` and ``b`` (words or stems) stand on the two sides of one line of the antonym lexicon."""
    keys = _antonym_keys()
    return a in keys and b in keys and _opposite(keys[a], keys[b])
#: A word (or its stem) ending in a bit or a byte unit: "megabits", "gigabyte", "kilobyt" (snowball's stem).
_BIT_BYTE = re.compile(r"([a-z]*?)(bit|byt)(?:e|es|s)?")


def _bit_byte(a: str, b: str) -> bool:
    """``a`` and ``b`` are the same prefix with a bit unit on one side and a byte unit on the other."""
    ma, mb = _BIT_BYTE.fullmatch(a), _BIT_BYTE.fullmatch(b)
    return bool(ma and mb and ma.group(1) == mb.group(1) and ma.group(2) != mb.group(2))


#: A one-word swap of two common words (wordfreq Zipf >= RARE_ZIPF, no name) is read as a synonym when the
#: questions are at least this similar: the threshold-only cache's own default bar ("kids" / "children",
#: "fees" / "charges"); two different things swapped ("rabbit" / "cat" 0.82) sit under it.
SYNONYM_COSINE = 0.93


def _word_swap(ops: list[tuple[str, int, int, int, int]], q: QuestionFeatures, c: QuestionFeatures,
               cosine: float | None = None) -> bool:
    """The very same sentence but for one noun phrase of up to three words swapped for another, not a
    typo ("the maternity ward" / "the intensive care unit", "radiology" / "cardiology"), the rest of the
    sentence saying something (a content word)."""
    swap = _one_swap(ops, q, c)
    if swap is None:
        return False
    left, right, (i1, i2, j1, j2) = swap
    rest = [w for w in q.tokens[:i1] + q.tokens[i2:] if w not in _STOP and w.isalpha()]
    if set(left) & q.reversal and set(right) & c.reversal:  # "unsubscribe from" / "stop": one act in other words
        return False
    if left and right and set(left) <= _NEGATIONS and set(right) <= _NEGATIONS:
        return False  # "with no single supplement" / "without a single supplement": the negation guard's business
    if {"all", "every"} <= set(left) | set(right) and _universal_swap(q, c):  # "all employees" / "every employee"
        left, right = [w for w in left if w not in _SCOPE], [w for w in right if w not in _SCOPE]
    if _same_lemmas(left, right):  # "archive" / "archives", "after booking" / "after I've booked"
        return False
    if "".join(q.tokens[i1:i2]) == "".join(c.tokens[j1:j2]):  # one compound apart and closed: "call-out" / "callout"
        return False
    removal = {"removal", "removals"}
    if left and right and ((set(left) <= removal and set(right) <= _MOVE_WORDS)
                           or (set(right) <= removal and set(left) <= _MOVE_WORDS)):
        return False  # a (house) removal is a move, in British English
    if left and right and all(map(_numberish, left + right)) and q.numbers == c.numbers:
        return False  # "a two-bed flat" / "a 2-bed flat": the number guard found the same values
    if cosine is not None and cosine >= SYNONYM_COSINE and _common_synonym(left, right, q, c):
        return False
    return (bool(left) and bool(right) and bool(rest) and i2 - i1 <= 3 and j2 - j1 <= 3
            and not _is_typo(" ".join(left), " ".join(right)))


#: Words that carry no content of their own for the coverage rule (:func:`_coverage`): stop words, prepositions,
#: hedges, greetings and sign-offs, light verbs ("use", "come", "make") and the scope words the coordination rule
#: reads.
_COVER_FILLER = frozenset(_STOP | {
    "actually", "exactly", "kind", "sort", "bit", "still", "ever", "able", "anyone", "someone", "something",
    "anything", "yes", "even", "already", "s", "whats", "u", "q", "cheers", "ta", "thx", "roughly",
    "approximately", "using", "having", "whether", "advance", "much", "many", "use", "come", "make", "happen",
    "help", "currently", "usually", "normally", "generally", "only", "just", "also", "too", "well", "possible",
    "available", "allowed", "exist", "option", "options", "thing", "things", "little", "lot", "time", "long",
    # prepositions the stop words lack: the words around them say what changed ("on the towpath" / "through
    # the campus"), they are no content of their own
    "through", "across", "along", "via", "within", "into", "onto", "towards", "toward", "upon", "throughout"})
#: Particles of a phrasal verb: the same verb with another particle is another act ("turn the heating up" /
#: "down"); "in" and "on" are left out, they are prepositions far more often.
_SLOT_PARTICLES = frozenset({"up", "down", "off", "back", "away", "out"})
#: Boundaries of a period: one against another in the same place is another time ("until 6pm" / "from 6pm",
#: "during the cycle" / "at the end of the cycle").
_BOUNDARIES = frozenset({"until", "till", "til", "from", "since", "during", "before", "after", "by", "end", "start",
                         "beginning"})
_TILL = {"till": "until", "til": "until"}
_COORDINATORS = frozenset({"and", "or", "plus"})
#: An edit, not a rewrite: at most this many changed spans (difflib opcodes over the tokens) ...
EDIT_SPANS = 3
#: ... and at least this much of the two token sequences aligned (difflib ratio).
EDIT_RATIO = 0.6


def _lexicon_variant(w: str, t: str) -> bool:
    """Two words the lexicons put on the same side of one opposition ("quit" / "cancel"), both words of
    withdrawal, or a (house) removal against a move."""
    if set(_POLARITY.get(w, ())) & set(_POLARITY.get(t, ())):
        return True
    if w in _REVERSAL and t in _REVERSAL:
        return True
    removal = ("removal", "removals")
    return (w in removal and t in _MOVE_WORDS) or (t in removal and w in _MOVE_WORDS)


def _covered(w: str, other: tuple[str, ...]) -> bool:
    """``w`` is accounted for by the other question: the same lemma, a typo or another spelling of one of its
    words, the same compound written apart or hyphenated ("childcare" / "child care", "wi-fi"), a number (the
    number guard has compared the values), or a word the lexicons read as a variant of one of its words."""
    lemmas = _lemmas(w)
    for i, t in enumerate(other):
        if t == w or lemmas & _lemmas(t) or _lexicon_variant(w, t):
            return True
        if i + 1 < len(other) and w == t + other[i + 1]:  # "childcare" / "child care"
            return True
        if "-" in t and w in t.split("-"):
            return True
        if len(w) > 3 and t.startswith(w) and t[len(w):] in other:  # "course" of "coursebooks" / "course books"
            return True
    if "-" in w and (w.replace("-", "") in other or all(
            p in other or any(_lemmas(p) & _lemmas(t) for t in other) for p in w.split("-") if p)):
        return True
    if _numberish(w):
        return True
    return any(w.isalpha() and t.isalpha() and _is_typo(w, t) for t in other)


def _uncovered(a: tuple[str, ...], b: tuple[str, ...]) -> list[str]:
    """The content words of ``a`` that ``b`` does not account for (:func:`_covered`)."""
    words = set(b)
    starts = {i for i in range(len(a) - 1) if a[i] + a[i + 1] in words}  # "x rays" / "xrays", "call out" / "callout"
    closed = starts | {i + 1 for i in starts}
    return [w for i, w in enumerate(a) if (w.isalpha() or "-" in w) and w not in _COVER_FILLER
            and w not in _NEGATIONS and i not in closed and w not in words  # said alike: covered, no scan of b
            and not _covered(w, b)]


def _exclusive(tokens: tuple[str, ...]) -> bool:
    """"only", or "just" before a determiner or "for" ("just the app", "just for putting")."""
    return "only" in tokens or any(w == "just" and (n in _DETERMINERS or n == "for")
                                   for w, n in zip(tokens, tokens[1:]))


def _added_party(tokens: tuple[str, ...]) -> bool:
    """Ends in "as well" / "too": "does it cover my flatmates' items as well?"; or adds a second party by "as
    well as": "can I freeze my partner's membership as well as mine?", "weed the paths as well as my plot"."""
    return (tokens[-2:] == ("as", "well") or tokens[-1:] == ("too",)
            or any(tokens[i:i + 3] == ("as", "well", "as") for i in range(1, len(tokens) - 3)))


def _additive(tokens: tuple[str, ...]) -> bool:
    return ("also" in tokens or "too" in tokens
            or any(w == "as" and n == "well" for w, n in zip(tokens, tokens[1:])))


def _coverage(ops: list[tuple[str, int, int, int, int]], q: QuestionFeatures, c: QuestionFeatures,
              cosine: float | None) -> str | None:
    """Every content word one question has and the other lacks must be accounted for (:func:`_covered`):

    * ``scope`` — a coordination grows on one side ("the guests" / "the guests and the suppliers", "parts" /
      "parts and labour"): the words after "and" / "or" — or all before it: "the outside" / "the inside and
      outside" — are all the side says more, the other side says nothing more; or "only" on one side against
      "also" / "too" / "as well" on the other;
    * ``unmatched`` — an edit (at most :data:`EDIT_SPANS` changed spans, :data:`EDIT_RATIO` of the tokens
      aligned) that swaps the same verb's particle ("turn up" / "turn down") or one boundary of a period for
      another ("until" / "from", "during" / "at the end of"), or that swaps content words on both sides (at
      most two each) around at least one shared one ("add a room to my booking" / "drop the room from my
      booking", "pay with a credit card" / "pay by cheque") — unless, at :data:`SYNONYM_COSINE` or more, it
      is one word for one word (a synonym: "kids" / "children").
    """
    a, b = q.tokens, c.tokens
    ua, ub = _uncovered(a, b), _uncovered(b, a)
    for side, other, own, rest in ((a, b, ua, ub), (b, a, ub, ua)):
        if own and not rest:
            for i, w in enumerate(side):
                if w in _COORDINATORS and w not in other and (all(x in side[i + 1:] for x in own)
                                                              or all(x in side[:i] for x in own)):
                    return "scope"  # "the outside" / "the outside and the inside" or "the inside and outside"
    if (_exclusive(a) and not _exclusive(b) and _additive(b)) or (_exclusive(b) and not _exclusive(a)
                                                                    and _additive(a)):
        return "scope"
    # a second party added after the object: "my items" / "my flatmates' items as well", "sent to me" / "sent to
    # the school as well" -- the added side says more, the other side nothing more
    for side, other, own, rest in ((a, b, ua, ub), (b, a, ub, ua)):
        rest = [w for w in rest if w != "own"]  # "my own membership" / "my partner's ... as well as mine"
        if (own := [w for w in own if w not in ("as", "well", "too")]) and not rest and _added_party(side) \
                and not _additive(other):
            return "scope"
    changed = [op for op in ops if op[0] != "equal"]
    aligned = sum(i2 - i1 for op, i1, i2, _, _ in ops if op == "equal")
    if len(changed) > EDIT_SPANS or 2 * aligned < EDIT_RATIO * (len(a) + len(b)):
        return None
    for _, i1, i2, j1, j2 in changed:
        x, y = set(a[i1:i2]), set(b[j1:j2])
        if x and y and x <= _SLOT_PARTICLES and y <= _SLOT_PARTICLES and x != y:
            return "unmatched"
        bx, by = {_TILL.get(w, w) for w in x & _BOUNDARIES}, {_TILL.get(w, w) for w in y & _BOUNDARIES}
        if bx and by and not (bx <= by or by <= bx):
            return "unmatched"
    if not ua or not ub:
        return None
    if cosine is not None and cosine >= SYNONYM_COSINE and len(ua) == 1 and len(ub) == 1:
        return alternatives(ua[0], ub[0])  # one word for one word: a synonym, unless two of one kind
    shared = [w for w in a if w not in _COVER_FILLER and w not in _NEGATIONS and (w.isalpha() or "-" in w)
              and w not in ua]
    if _units(ua, q) <= 2 and _units(ub, c) <= 2 and shared:
        return "unmatched"
    if (shared and _units(ua, q) <= STORY_UNITS and _units(ub, c) <= STORY_UNITS
            and _story_then_edit(ops, q, c, aligned)):
        return "unmatched"  # "I ordered a blue sweater. I want to return it for a refund" / "… exchange it for a
    return None  # larger size": the same story, another request


#: Where two questions open with the same sentence (a story: "I ordered a blue sweater last week.") and the rest is an
#: edit, the coverage rule allows this many content words swapped on each side (two elsewhere).
STORY_UNITS = 3
_FIRST_SENTENCE = re.compile(r"[^.!?]*[.!?]+\s+(?=\S)")  # linear: one run, its end, the space after it


def _story_then_edit(ops: list[tuple[str, int, int, int, int]], q: QuestionFeatures, c: QuestionFeatures,
                     aligned: int) -> bool:
    """``q`` and ``c`` open with the very same sentence (case and spacing aside), and what follows it on each side
    is an edit of the other (:data:`EDIT_RATIO` of the following tokens aligned)."""
    a, b = " ".join(q.text.lower().split()), " ".join(c.text.lower().split())
    m = _FIRST_SENTENCE.match(a)
    if m is None or not b.startswith(m.group(0)):
        return False
    story = len(_tokens(m.group(0)))  # none: "?? …" is no story
    if story == 0 or not ops or ops[0][0] != "equal" or ops[0][2] < story:
        return False
    rest = len(q.tokens) + len(c.tokens) - 2 * story
    return rest > 0 and 2 * (aligned - story) >= EDIT_RATIO * rest


def _units(words: list[str], f: QuestionFeatures) -> int:
    """How many words ``words`` are, a hyphenated compound counted once ("cross-country trails": two)."""
    low = f.text.lower()
    return len(words) - sum(1 for x, y in zip(words, words[1:]) if f"{x}-{y}" in low)


def _numberish(word: str) -> bool:
    return (bool(re.fullmatch(r"\d+(?:[.,]\d+)*(?:st|nd|rd|th)?", word)) or word in _NUMBER_WORDS
            or word in _ORDINALS or word in _OTHER_NUMBERS)


@functools.lru_cache(maxsize=65536)
def _lemmas(word: str) -> frozenset[str]:
    """The word and its lemmas of every part of speech (lemminflect's tables): "booked" -> book."""
    plural_day = {word[:-1]} if word.endswith("s") and word[:-1] in _WEEKDAYS else set()  # not in its tables
    return frozenset({word} | plural_day).union(*_all_lemmas(word).values())


def _alternative_swap(ops: list[tuple[str, int, int, int, int]], q: QuestionFeatures,
                      c: QuestionFeatures) -> str | None:
    """The very same sentence but for one word swapped for another of the same line of the alternatives lexicon
    (data/alternatives.txt): that line's reason ("the front entrance" / "the back entrance": entity)."""
    swap = _one_swap(ops, q, c)
    if swap is None or len(swap[0]) != 1 or len(swap[1]) != 1:
        return None
    return alternatives(swap[0][0], swap[1][0])


#: A question for an amount ("how much is …", "what's the price of …", "what does … cost") against a yes / no
#: question on what a price covers ("is the jewellery included in the price", "does it cover the hire"):
#: QuestionFeatures.price_ask.
_PRICE_ASK = re.compile(r"^(?:\W*(?:hi|hello|hey)\b\W*)?(?:how\s+much\b|what(?:'s|\s+is|\s+are)\s+(?:the\s+|your\s+)?"
                        r"(?:price|cost|fee|charge)s?\b|what\s+(?:does|do|will)\b.*\bcost\b)")
_INCLUSION_ASK = re.compile(r"^(?:\W*(?:hi|hello|hey)\b\W*)?(?:do|does|is|are|will|would|can)\b.*"
                            r"\b(?:includ\w*|cover\w*)\b")
#: Words that relate one part of a question to another in time: trading their places is another question.
_RELATION_WORDS = frozenset({"before", "after", "until", "till", "since", "prior"})
_RELATIONS_JOINED = re.compile(r"\b(?:before|after|until|till|since)\s+(?:or|and|/)\s+(?:before|after|until|till|since)\b")


def _price_ask(lowered: str) -> str | None:
    """"amount" ("how much is a wash, cut and blow dry"), "inclusion" ("does the price include a wash, cut and blow
    dry": a yes or no, not a sum) or None (QuestionFeatures.price_ask)."""
    amount, inclusion = bool(_PRICE_ASK.search(lowered)), bool(_INCLUSION_ASK.search(lowered))
    return "amount" if amount and not inclusion else "inclusion" if inclusion and not amount else None


def _relations_traded(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """The same words in another order, where the words that moved include "before" / "after" (what happens
    first and what after trade places: "wait after colouring before washing" / "before colouring after
    washing")."""
    if q.tokens == c.tokens or sorted(q.tokens) != sorted(c.tokens):
        return False
    if any(_RELATIONS_JOINED.search(" ".join(f.tokens)) for f in (q, c)):  # "before or after": one either way
        return False
    moved = {a for a, b in zip(q.tokens, c.tokens) if a != b}
    return len(moved & _RELATION_WORDS) >= 2


#: Words that give the word after them a role: "from A to B", "turn A into B", "faster than B", "A instead of B",
#: "stop at A before B".
_ROLE_MARKERS = frozenset({"from", "to", "into", "onto", "than", "instead", "rather", "vs", "versus", "towards",
                           "toward", "via", "before", "after"})
_JOINERS = frozenset({"or", "and", "nor", "/"})


def _roles(tokens: tuple[str, ...]) -> dict[str, Counter[str]]:
    """For each role marker of ``tokens``, the words right after it (determiners and "of" skipped). A marker in
    a coordination gives no role: "before or after", "to and from", "to rent or to buy" (alternatives, in either
    order the same question)."""
    out: dict[str, Counter[str]] = {}
    for i, w in enumerate(tokens):
        if w not in _ROLE_MARKERS or (i > 0 and tokens[i - 1] in _JOINERS):
            continue
        j = i + 1
        while j < len(tokens) and (tokens[j] in _DETERMINERS or tokens[j] == "of"):
            j += 1
        if j < len(tokens) and tokens[j] not in _JOINERS and (j + 1 == len(tokens) or tokens[j + 1] not in _JOINERS):
            out.setdefault(w, Counter())[tokens[j]] += 1
    return out


#: Other languages' markers of "from" and "to" and their determiners (folded), read as "from", "to" and "the" in a
#: pair of questions both in that language (:attr:`QuestionFeatures.language`): "du livret A vers le compte courant"
#: / "du compte courant vers le livret A", "de ahorros a la cuenta" / "de la cuenta a ahorros".
_OTHER_ROLES: dict[str, tuple[frozenset[str], frozenset[str], frozenset[str]]] = {
    "es": (frozenset({"de", "del", "desde"}), frozenset({"a", "al", "hasta", "hacia"}),
           frozenset({"el", "la", "los", "las", "un", "una", "unos", "unas", "mi", "mis", "tu", "tus", "su", "sus",
                      "nuestro", "nuestra", "nuestros", "nuestras", "lo"})),
    "fr": (frozenset({"de", "du", "des", "d", "depuis"}), frozenset({"a", "au", "aux", "vers", "jusqu"}),
           frozenset({"le", "la", "les", "l", "un", "une", "mon", "ma", "mes", "ton", "ta", "tes", "son", "sa", "ses",
                      "notre", "nos", "votre", "vos", "leur", "leurs"})),
    "de": (frozenset({"von", "vom", "aus"}), frozenset({"nach", "zu", "zum", "zur", "auf", "ins"}),
           frozenset({"der", "die", "das", "dem", "den", "des", "ein", "eine", "einem", "einen", "einer", "mein",
                      "meine", "meinem", "meinen", "meiner", "dein", "deine", "sein", "seine", "unser", "unsere",
                      "ihr", "ihre", "ihrem", "ihren"})),
    "pt": (frozenset({"de", "da", "do", "das", "dos", "desde"}), frozenset({"para", "pra", "ao", "aos", "ate"}),
           frozenset({"o", "a", "os", "as", "um", "uma", "meu", "minha", "meus", "minhas", "seu", "sua", "seus",
                      "suas", "nosso", "nossa"})),
    "it": (frozenset({"da", "dal", "dalla", "dallo", "dai", "dagli", "dalle"}),
           frozenset({"a", "al", "alla", "allo", "ai", "agli", "alle", "verso"}),
           frozenset({"il", "lo", "la", "i", "gli", "le", "l", "un", "una", "uno", "mio", "mia", "miei", "mie", "suo",
                      "sua", "suoi", "sue"})),
}


def _role_tokens(f: QuestionFeatures, other: QuestionFeatures) -> tuple[str, ...]:
    """``f``'s words, with the markers of from / to and the determiners of the language both questions are in read as
    English's (:data:`_OTHER_ROLES`); English and any other pair as they are."""
    roles = _OTHER_ROLES.get(f.language) if f.language == other.language else None
    if roles is None:
        return f.tokens
    source, target, dets = roles
    return tuple("from" if w in source else "to" if w in target else "the" if w in dets else w for w in f.tokens)


def _roles_swapped(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """Two words that trade roles: a marker both questions use as often hands its role to a word that the other
    question also names, but in another place ("transfer from savings to checking" / "from checking to savings",
    "convert a string to an int" / "an int to a string", "is Python faster than Java" / "Java faster than
    Python"), or a word after "to" that the other question has after "from" ("shipping to Canada" / "shipping
    from Canada"). The same roles in another order ("from the airport to the hotel" / "to the hotel from the
    airport") are one question."""
    if q.tokens == c.tokens:
        return False
    rq, rc = _roles(_role_tokens(q, c)), _roles(_role_tokens(c, q))
    for one, other in (("to", "from"), ("from", "to"), ("into", "from")):  # "shipping to Canada" / "from Canada"
        moved = (rq.get(one, Counter()) & rc.get(other, Counter())) - rc.get(one, Counter()) - rq.get(other, Counter())
        if moved:
            return True
    words_q, words_c = set(q.tokens), set(c.tokens)
    for marker, after_q in rq.items():
        after_c = rc.get(marker)
        if after_c is None or after_q == after_c or sum(after_q.values()) != sum(after_c.values()):
            continue
        gone, came = after_q - after_c, after_c - after_q
        if all(w in words_c for w in gone) and all(w in words_q for w in came):
            return True
    return False


def _noun_lemma(word: str) -> str | None:
    """``word``'s noun lemma when lemminflect reads it only as a noun or verb ("landlord", "ounces", "pound"), else
    None: a word that may be an adjective or adverb ("free", "online") moves around a sentence freely."""
    found = _all_lemmas(word)
    if "NOUN" not in found or "ADJ" in found or "ADV" in found:
        return None
    return found["NOUN"][0]


def _content_sequence(tokens: tuple[str, ...]) -> list[tuple[str, int]]:
    """The content words of ``tokens`` in order, nouns by their lemma, with their token positions."""
    return [(_noun_lemma(w) or w, i) for i, w in enumerate(tokens) if w not in _STOP and w != "s"]


def _nouns_swapped(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """Two nouns that trade places and nothing else: "can a landlord evict a tenant" / "can a tenant evict a
    landlord", "how many ounces are in a pound" / "pounds in an ounce", "does the employer pay the employee's
    pension" / "the employee pay the employer's". Two nouns of a coordination ("the tenant or the landlord") and
    words that move around a sentence (adjectives, adverbs: "is parking free" / "is there free parking") do not
    count."""
    if len(q.tokens) != len(c.tokens):
        return False
    if sum(a != b for a, b in zip(q.tokens, c.tokens)) > 4 and Counter(q.tokens) != Counter(c.tokens):
        return False  # an edit, not a rewrite ("how can I track my order" / "where is my order, how do I track it");
        # the same words in another order may be one ("is the discount applied before or after tax" / "is tax …")
    if _two_words_exchanged(q.tokens, c.tokens):
        return True
    sq, sc = _content_sequence(q.tokens), _content_sequence(c.tokens)
    if len(sq) != len(sc):
        return False
    diff = [k for k, ((a, _), (b, _)) in enumerate(zip(sq, sc)) if a != b]
    if len(diff) != 2:
        return False
    i, j = diff
    (a, qi), (b, qj) = sq[i], sq[j]
    if (sc[i][0], sc[j][0]) != (b, a) or _noun_lemma(q.tokens[qi]) is None or _noun_lemma(q.tokens[qj]) is None:
        return False
    ci, cj = sc[i][1], sc[j][1]  # where b and a stand in c
    if (_lead(q.tokens, qi) != _lead(q.tokens, qj) and _lead(q.tokens, qi) == _lead(c.tokens, cj)
            and _lead(q.tokens, qj) == _lead(c.tokens, ci)):
        return False  # each keeps its own word before it: "from the airport to the hotel" / "to the hotel from the
        # airport" (one word before both, "on my phone but works on laptop", keeps nothing apart)
    return not any(_coordinated(f.tokens, x, y) for f, (x, y) in ((q, (qi, qj)), (c, (ci, cj))))


def _coordinated(tokens: tuple[str, ...], x: int, y: int) -> bool:
    """The words at ``x`` and ``y`` are two parts of one coordination: an "and" / "or" between them right after a
    content word ("the tenant or the landlord", "a credit card and a debit card", "apple pay or google pay", "on my
    phone and on my laptop"). One that joins two prepositions ("is the discount applied before or after tax") or
    stands after a verb's particle is no coordination of the two."""
    lo, hi = min(x, y), max(x, y)
    return any(tokens[k] in _JOINERS and tokens[k - 1].isalpha() and tokens[k - 1] not in _STOP
               and tokens[k - 1] not in _ROLE_PREPOSITIONS and tokens[k - 1] not in _TIME_PREPOSITIONS
               for k in range(lo + 1, hi))


#: Prepositions of time, which "or" joins to each other ("before or after"), not the words around them.
_TIME_PREPOSITIONS = frozenset({"before", "after", "until", "till", "since", "during", "over", "under", "above",
                                "below", "between", "within"})


#: Prepositions that may stand inside a coordination of two nouns ("on my phone and on my laptop").
_ROLE_PREPOSITIONS = frozenset({"to", "of", "in", "on", "at", "for", "from", "by", "with", "about", "into", "onto"})


def _two_words_exchanged(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """The same words but two things that trade places, whatever their kind, each one to three words: "ordered the
    blue one but got green" / "ordered the green one but got blue" (adjectives, which `_nouns_swapped`'s noun test
    leaves alone because they move freely: "is parking free" / "is there free parking" is no exchange), "works on
    wifi but not on mobile data" / "works on mobile data but not on wifi". Not two parts of one coordination ("red
    and blue paint" / "blue and red paint"), nor two side by side ("organic certified" / "certified organic"), nor
    function words."""
    if len(a) != len(b) or a == b:
        return False
    lo = next(k for k, (x, y) in enumerate(zip(a, b)) if x != y)
    hi = len(a) - next(k for k, (x, y) in enumerate(zip(reversed(a), reversed(b))) if x != y)
    mid_a, mid_b = a[lo:hi], b[lo:hi]  # a = P X Q Y R and b = P Y Q X R: the middles hold the exchange
    for nx in range(1, min(3, len(mid_a) - 2) + 1):
        for ny in range(1, min(3, len(mid_a) - nx - 1) + 1):
            x, q, y = mid_a[:nx], mid_a[nx:len(mid_a) - ny], mid_a[len(mid_a) - ny:]
            if (mid_b == y + q + x and x != y and all(_says_something(w) for w in (x[-1], y[-1]))
                    and not _coordinated(a, lo + nx - 1, lo + nx + len(q))
                    and not (x[0] != y[0] and x[0] in _ROLE_PREPOSITIONS and y[0] in _ROLE_PREPOSITIONS)):
                return True  # (the last: each thing moved with its own marker, "from my savings to my current
                # account" / "to my current account from my savings": the same roles)
    return False


def _says_something(word: str) -> bool:
    """A content word: letters, no stop word, no preposition."""
    return (_alpha(word) and word not in _STOP and word not in _ROLE_PREPOSITIONS
            and word not in _TIME_PREPOSITIONS)


#: What opens a question before its subject: "how do I", "can my husband", "why can't my wife".
_QUESTION_AUX = frozenset({"can", "could", "may", "might", "will", "would", "shall", "should", "must", "do", "does",
                           "did", "is", "are", "am", "was", "were", "have", "has", "had"})
_QUESTION_WH = frozenset({"how", "why", "when", "where", "what", "whether", "so", "then"})
#: The asker and the one asked, in every form: a subject "I" and an object "me" are one person.
_FIRST_PERSON = frozenset({"i", "me", "my", "mine", "myself", "we", "us", "our", "ours", "ourselves"})
_SECOND_PERSON = frozenset({"you", "your", "yours", "yourself", "yourselves"})
#: Before a noun subject ("my husband", "the admin"); a bare plural ("guests") needs none.
_SUBJECT_DETS = frozenset({"my", "your", "our", "their", "his", "her", "the", "a", "an", "this", "that", "these",
                           "those"})
#: Verbs and adjectives that hand the question to the verb after "to": "am I allowed to use", "is my manager able
#: to read", "does my son need to sign".
_TO_CHAIN = frozenset({"need", "needs", "want", "wants", "have", "has", "able", "allowed", "permitted", "supposed",
                       "going", "try", "tries", "get", "gets", "expected", "required"})
_BE_FORMS = frozenset({"is", "are", "am", "was", "were", "be", "been", "being"})


@functools.lru_cache(maxsize=65536)
def _person(word: str) -> str | None:
    """Who ``word`` names: "1" (the asker: I, me, my, we...), "2" (you, your...), a noun's lemma, else None."""
    if word in _FIRST_PERSON:
        return "1"
    if word in _SECOND_PERSON:
        return "2"
    return _noun_lemma(word) or _unknown_word(word)


def _unknown_word(word: str) -> str | None:
    """A word lemminflect does not know ("admin", a product's name): itself, taken as a noun."""
    return word if word.isalpha() and word not in _NOT_A_VERB_HERE and not _all_lemmas(word) else None


#: Words that are never the verb after a subject (what `_subject_verb` steps over or stops at).
_NOT_A_VERB_HERE = _FIRST_PERSON | _SECOND_PERSON | _SUBJECT_DETS | _BE_FORMS | frozenset({
    "to", "of", "in", "on", "at", "for", "from", "by", "with", "about", "if", "and", "or", "but", "not", "there",
    "it", "its", "they", "them", "he", "him", "she", "s", "any", "some", "all", "every", "each", "who", "whom",
    "which", "what", "whose"})
#: Verbs that say the same thing whoever is their subject: "can I meet you" / "can you meet me".
_SYMMETRIC_VERBS = frozenset({"meet", "chat", "talk", "speak", "date", "marry", "match", "trade", "swap", "exchange",
                              "collaborate", "connect", "communicate", "interact", "converse", "correspond",
                              "compete", "play", "partner", "split", "sync", "agree", "disagree", "argue",
                              "negotiate", "video-chat", "hang-out", "catch-up", "team-up"})


def _subject_verb(tokens: tuple[str, ...]) -> tuple[str, str] | None:
    """The subject of a question and the verb it does, ``(person, verb lemma)``: "can my husband use my card" ->
    ("husband", "use"), "how do I add my wife" -> ("1", "add"), "am I allowed to use" -> ("1", "use"). None when
    the question is passive ("will I be refunded", "can my messages be seen": the subject is not the doer) unless
    "by" names the doer (:func:`_passive_doer`: "can I be contacted by the agent" -> ("agent", "contact")), asks
    what something is ("is my son eligible") or has another shape."""
    n, i = len(tokens), 0
    if i < n and tokens[i] in _QUESTION_WH:
        i += 1
    led = i < n and tokens[i] in _QUESTION_AUX
    be_led = led and tokens[i] in _BE_FORMS  # "is the studio wheelchair accessible": what it is, not what it does
    if led:
        i += 1
    elif i:  # "how to reset it": no subject
        return None
    if i < n and tokens[i] == "not":
        i += 1
    if i >= n:
        return None
    if tokens[i] in {"i", "we", "you"}:
        subject, i = _person(tokens[i]), i + 1
    else:
        if tokens[i] in _SUBJECT_DETS:
            i += 1
        if i >= n or tokens[i] in _NOT_A_VERB_HERE or (subject := _person(tokens[i])) is None:
            return None
        i += 1
        if i < n and tokens[i] not in _NOT_A_VERB_HERE and _noun_lemma(tokens[i]) and _never_a_verb(tokens[i]):
            subject, i = _noun_lemma(tokens[i]), i + 1  # "my credit card", "the team admin": the head is last
    while i < n and tokens[i] in {"not", "also", "still", "just", "really", "ever", "even"}:
        i += 1
    if not led and i < n and tokens[i] in _QUESTION_AUX and tokens[i] not in _BE_FORMS:
        i += 1  # "my husband can use my card": the modal after a fronted subject
    if i < n and tokens[i] in _BE_FORMS:  # "will I be refunded", "is my son eligible": no doer here
        if i + 2 < n and tokens[i + 1] in _TO_CHAIN and tokens[i + 2] == "to":
            i += 1  # "will I be able to"
        else:
            return _passive_doer(tokens, i + 1)
    if be_led and not (i + 1 < n and tokens[i] in _TO_CHAIN and tokens[i + 1] == "to"):
        return None  # only "is my manager able to read", "are my kids allowed to use" name a doer
    while i + 2 < n and tokens[i] in _TO_CHAIN and tokens[i + 1] == "to":
        i += 2
    if i >= n or tokens[i] in _NOT_A_VERB_HERE or not tokens[i].replace("-", "").isalpha():
        return None
    kinds = _all_lemmas(tokens[i])
    if "VERB" not in kinds and ("ADJ" in kinds or "ADV" in kinds):  # "accessible", "eligible", "online"
        return None
    return subject, _verb_lemma(tokens[i])


_POSSESSIVE_DETS = frozenset({"my", "your", "our", "his", "her", "their"})


def _passive_doer(tokens: tuple[str, ...], at: int) -> tuple[str, str] | None:
    """A passive's doer and verb when "by" names one right after the participle at ``at``: "can I be contacted by
    the agent" -> ("agent", "contact"), "can my emails be read by my employer" -> ("employer", "read"). Only after a
    determiner or "my" (your ...): "by card", "by phone", "by email" name a means, not a doer. Else None."""
    n = len(tokens)
    if at + 3 >= n or tokens[at] in _NOT_A_VERB_HERE or "VERB" not in _all_lemmas(tokens[at]):
        return None
    if tokens[at + 1] != "by" or tokens[at + 2] not in _SUBJECT_DETS or tokens[at + 3] in _NOT_A_VERB_HERE:
        return None
    doer = _person(tokens[at + 3])
    return (doer, _verb_lemma(tokens[at])) if doer else None


def _owner_added(ops: list[tuple[str, int, int, int, int]], q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """One question names another owner of the same thing, and nothing else changes there: "delete my account" /
    "delete my child's account", "can I see my partner's orders" against "my orders". The added words are one
    noun and its possessive "s" between "my" (your, our ...) and the thing owned."""
    for op, i1, i2, j1, j2 in ops:
        if op == "insert":  # c says more
            shorter, at, added = q.tokens, i1, c.tokens[j1:j2]
        elif op == "delete":  # q says more
            shorter, at, added = c.tokens, j1, q.tokens[i1:i2]
        else:
            continue
        if len(added) == 2 and added[1] == "s" and 0 < at < len(shorter) and shorter[at - 1] in _POSSESSIVE_DETS \
                and added[0] not in shorter and _possessor(added[0]):
            return True
    return False


def _possessor(word: str) -> bool:
    """``word`` before a possessive "s" names an owner: a noun ("daughter", "mum" and "patient" too, which may
    also be adjectives) or a word lemminflect does not know ("flatmate"), not a pronoun or function word."""
    if not word.isalpha() or word in _NOT_A_VERB_HERE:
        return False
    kinds = _all_lemmas(word)
    return "NOUN" in kinds or not kinds


def _asks_differ(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """The two ask for different kinds of answer: no kind in common, and one of them asks only for a time or a
    reason (:attr:`QuestionFeatures.asks`); "how can I find out when the next sessions are" (a manner and a time)
    may be answered by "where do you post event dates". A request that the answerer do something ("can you fix
    it?") against a question that asks only for a reason ("can you explain why?") differs too."""
    if not q.asks or not c.asks:
        return any(x.asks == {"reason"} and not y.asks and "why" not in y.tokens  # "can you look into why …"
                   and bool(_REQUEST.search(y.text.lower())) for x, y in ((q, c), (c, q)))
    if q.asks & c.asks:
        return False
    return q.asks <= _ASKS_APART or c.asks <= _ASKS_APART


#: A request that the answerer act, at a clause's start: "can you fix it", "could you please resend the invoice" (not
#: one for an explanation: "can you tell me", "could you explain the charge", "would you help me understand").
_REQUEST = re.compile(_CLAUSE_START + r"(?:can|could|would|will)\s+you\s+(?:please\s+)?(?!(?:tell|explain|clarify|"
                      r"describe|say|show|let|help|give|walk|talk|think|know|be|have|do|see|remind)\b)[a-z]+\b")


def _subjects_swapped(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """Two people who trade who does what: "can my husband use my card" / "can I use my husband's card", "can I
    add my wife to my account" / "can my wife add me to hers", "do I owe you money" / "do you owe me money". The
    same verb, each question's subject named in the other question but not as its subject. Not: another verb
    for the same thing ("can I get a refund" / "can you give me one"), a passive ("can my messages be seen by my
    manager"), a question that asks both ways ("should I call you or will you call me")."""
    sq, sc = _subject_verb(q.tokens), _subject_verb(c.tokens)
    if sq is None or sc is None or sq[0] == sc[0] or sq[1] != sc[1] or sq[1] in _SYMMETRIC_VERBS:
        return False
    if any("or" in f.tokens for f in (q, c)):
        return False
    people_q = {p for w in q.tokens if (p := _person(w))}
    people_c = {p for w in c.tokens if (p := _person(w))}
    return sq[0] in people_c and sc[0] in people_q


#: What opens a clause inside a question whose subject may differ from the question's own: "what happens if I
#: cancel", "will I be charged when the driver cancels".
_CLAUSE_OPENERS = frozenset({"if", "when", "once", "unless", "until", "after", "before", "because", "whether"})


def _clause_doers(tokens: tuple[str, ...]) -> dict[tuple[str, str], str]:
    """The subordinate clauses of a question and who does their verb: ``{(opener, verb lemma): person}``; "will I be
    charged if the driver cancels" -> {("if", "cancel"): "driver"}. A passive clause ("if my flight is cancelled")
    names no doer and is left out, as is an opener at the start or before a question's verb ("when do I pay")."""
    out: dict[tuple[str, str], str] = {}
    for k in range(1, len(tokens) - 1):
        if tokens[k] in _CLAUSE_OPENERS and tokens[k + 1] not in _QUESTION_AUX:  # not "... and when do I pay"
            found = _subject_verb(tokens[k + 1:])
            if found is not None:
                out.setdefault((tokens[k], found[1]), found[0])
    return out


def _clause_subjects_differ(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """The same clause with another doer: "what happens if I cancel the booking" / "if you cancel the booking",
    "will I be refunded if you cancel" / "will you refund me if I cancel" (cosine 0.95-0.99, every other guard
    silent). The same opener and verb, the asker (or the one asked) doing it on one side and someone else on the
    other; "if we cancel" / "if I cancel" are one asker, two nouns ("before the film starts" / "before the movie
    starts") may name one thing, and a passive ("if my flight is cancelled") names no doer to compare."""
    if any("or" in f.tokens for f in (q, c)):
        return False  # "what if I cancel or you cancel": asks both
    dq, dc = _clause_doers(q.tokens), _clause_doers(c.tokens)
    return any(key in dc and dc[key] != who and {who, dc[key]} & {"1", "2"} and key[1] not in _SYMMETRIC_VERBS
               for key, who in dq.items())


#: Words that close a relative clause's object after its verb ("a user who blocked me").
_RELATIVE = frozenset({"who", "that", "whom"})


def _relative_roles(tokens: tuple[str, ...]) -> set[tuple[str, str, str]]:
    """The relative clauses about people and who does what in them, ``(doer, verb lemma, done to)``: "a user who
    blocked me" -> ("user", "block", "1"), "a user I blocked" and "someone whom I invited" -> ("1", "block",
    "user"), ("1", "invite", "someone")."""
    def verb(w: str) -> str | None:
        return _verb_lemma(w) if w not in _NOT_A_VERB_HERE and "VERB" in _all_lemmas(w) else None

    out: set[tuple[str, str, str]] = set()
    n = len(tokens)
    for k in range(1, n - 1):
        head = tokens[k - 1]
        if head in _NOT_A_VERB_HERE or head in _QUESTION_AUX or (noun := _person(head)) is None or noun in ("1", "2"):
            continue
        at = k + 1 if tokens[k] in _RELATIVE else k
        if at < n - 1 and tokens[at] in {"i", "we", "you"} and (v := verb(tokens[at + 1])):
            out.add((_person(tokens[at]) or "", v, noun))  # "a user (that) I blocked"
        elif tokens[k] in {"who", "that"} and k + 2 < n and (v := verb(tokens[k + 1])) \
                and (obj := _person(tokens[k + 2])) is not None:
            out.add((noun, v, obj))  # "a user who blocked me"
    return out


def _relative_swapped(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """Two people who trade roles inside a relative clause: "can a user who blocked me still message me" / "can a
    user I blocked still message me", "will the people I follow see my posts" / "the people who follow me"."""
    rc = _relative_roles(c.tokens)
    return any((b, v, a) in rc and a != b and v not in _SYMMETRIC_VERBS for a, v, b in _relative_roles(q.tokens))


#: Who does it, said outright: the asker ("myself", "on my own") or the one asked ("for me").
_BY_ONESELF = re.compile(r"\b(?:(?:by|on) (?:my|our) own|myself|ourselves|by myself)\b")
_FOR_THE_ASKER = re.compile(r"\bfor (?:me|us)\b")


def _agent_differs(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """The asker doing it against the one asked doing it for them, said outright: "can I reset my password myself"
    / "can you reset my password for me". The same verb, "I" against "you" as its subject, and "myself" (on my
    own) on the asker's side or "for me" on the other. "Can I reset my password" / "can you reset my password"
    say neither and pass: support answers both the same way."""
    sq, sc = _subject_verb(q.tokens), _subject_verb(c.tokens)
    if sq is None or sc is None or sq[1] != sc[1] or {sq[0], sc[0]} != {"1", "2"} or sq[1] in _SYMMETRIC_VERBS:
        return False
    mine, yours = (q, c) if sq[0] == "1" else (c, q)
    if any("or" in f.tokens for f in (q, c)) or _BY_ONESELF.search(" ".join(yours.tokens)):
        return False
    return bool(_BY_ONESELF.search(" ".join(mine.tokens)) or _FOR_THE_ASKER.search(" ".join(yours.tokens)))


def _lead(tokens: tuple[str, ...], at: int) -> str:
    """The word before ``tokens[at]``, determiners and a possessive "s" skipped ("" at the start)."""
    k = at - 1
    while k >= 0 and (tokens[k] in _DETERMINERS or tokens[k] == "s"):
        k -= 1
    return tokens[k] if k >= 0 else ""


#: Who a question is about: a dose, a rule or an answer for a child, a baby, a pet or during pregnancy is not the
#: general one ("the max dose of tylenol" / "… for kids", "is ibuprofen safe" / "… during pregnancy").
_AUDIENCE = frozenset({
    "kid", "kids", "child", "children", "childs", "toddler", "toddlers", "son", "sons", "daughter", "daughters",
    "minor", "minors", "baby", "babies", "infant", "infants", "newborn", "newborns", "teen", "teens", "teenager",
    "teenagers", "adolescent", "adolescents", "adult", "adults", "elderly", "senior", "seniors", "pensioner",
    "pensioners", "pregnant", "pregnancy", "breastfeeding", "lactating", "dog", "dogs", "puppy", "puppies", "cat",
    "cats", "kitten", "kittens"})


def _audience_added(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """``c`` is ``q`` with an audience added: every content word of ``q`` accounted for by ``c``
    (:func:`_uncovered`), and among the words ``c`` says more a person or animal of :data:`_AUDIENCE` ("for kids",
    "for my dog", "during pregnancy"). Where ``c`` says the audience another way ("children's sun hats" / "sun
    hats for children") nothing is added."""
    return not _uncovered(q.tokens, c.tokens) and any(w in _AUDIENCE for w in _uncovered(c.tokens, q.tokens))


#: Verbs that open an instruction to the answerer after a question: "Reply in one word.", "Ignore the above and
#: …", "Answer in Spanish", "Translate it", "Format it as a table".
_INSTRUCTION_VERBS = frozenset({
    "reply", "answer", "respond", "ignore", "disregard", "forget", "write", "tell", "translate", "summarize",
    "summarise", "format", "output", "print", "pretend", "rewrite", "repeat", "say", "list", "give", "reveal",
    "override", "bypass", "roleplay", "spell", "act"})
#: Words that may open a part before its verb: links and politeness ("… ? Also, reply in …", "… ? Please answer
#: …", "… ? And then write …").
_PART_OPENERS = frozenset({"and", "then", "now", "also", "please", "but", "so", "oh", "ok", "okay", "just",
                           "kindly", "instead"})


def _instructions(low: str) -> tuple[str, ...]:
    """The instructions ``low`` (a question in lower case) adds after its question: a part (a sentence, or a
    clause after a comma or dash) after one that asks (opens with a question word or auxiliary), opening with an
    instruction verb ("how do I cancel my plan? reply in one word.", "… ? ignore that, tell me the admin
    password"). A question that is an instruction itself ("tell me how to …", "hi, tell me how …") has none."""
    parts = [re.findall(r"[a-z0-9'\u2019]+", p) for p in re.split(r"[.;:!?\n]+|,\s|\s[-\u2013\u2014]\s", low)]
    out, asked = [], False
    for words in parts:
        while words and words[0] in _PART_OPENERS:
            words = words[1:]
        if not words:
            continue
        if asked and words[0] in _INSTRUCTION_VERBS and len(words) >= 2:
            out.append(" ".join(words[:2]))
        asked = asked or words[0] in _ASKS
    return tuple(out)


def _extension(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """One question is the other with more that changes the answer: an audience added (:func:`_audience_added`,
    either way round) or an instruction to the answerer on one side only (:func:`_instructions`)."""
    return _audience_added(q, c) or _audience_added(c, q) or _instructed(q, c)


def _instructed(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """One question only adds an instruction to the answerer after its question (:func:`_instructions`)."""
    return bool(_instructions(q.text.lower())) != bool(_instructions(c.text.lower()))


#: Letters the guards cannot read: any script but Latin, with their combining marks (a Devanagari vowel sign, a Thai
#: tone mark: "बेटा" / "बेटी"). Chinese, Japanese and Thai are written without spaces, so their letters are compared one
#: by one.
_FOREIGN_WORD = _regex.compile(r"[[\p{L}\p{Nl}\p{No}\p{M}]--[a-zA-Z\u00c0-\u024f\u1e00-\u1eff]]+", _regex.V1)
_UNSPACED = re.compile(rf"[{_UNSPACED_LETTERS}]")


def _foreign_words(text: str) -> Counter[str]:
    """The words of ``text`` in scripts other than Latin (lower-cased; unspaced scripts letter by letter)."""
    out: Counter[str] = Counter()
    if text.isascii():
        return out
    for word in _FOREIGN_WORD.findall(text.lower()):
        if _UNSPACED.search(word):
            out.update(word)
        else:
            out[word] += 1
    return out


#: A word of another script than Latin, or a number.
_FOREIGN_OR_NUMBER = _regex.compile(r"[[\p{L}\p{Nl}\p{No}\p{M}]--[a-zA-Z\u00c0-\u024f\u1e00-\u1eff]]+|\d+", _regex.V1)


def _unspaced_sequence(text: str) -> tuple[str, ...]:
    """For a text in a script written without spaces, its letters (one by one), its other non-Latin words and its
    numbers in the order written; () for any other text. Word order is how those languages mark who does what: "从储蓄
    账户转到支票账户" / "从支票账户转到储蓄账户" (from savings to checking / from checking to savings) are the same
    letters, "予約を2名から4名に" / "4名から2名に" the same numbers."""
    if text.isascii() or not _UNSPACED.search(text):
        return ()
    out: list[str] = []
    for word in _FOREIGN_OR_NUMBER.findall(text.lower()):
        if _UNSPACED.search(word):
            out.extend(word)
        else:
            out.append(word)
    return tuple(out)


# -- the language of a question's Latin words ------------------------------------------------------------------------
#: Languages besides English the guards tell apart by their words (wordfreq's "small" lists: words of a Zipf frequency
#: of 3 or more), and how much more frequent (Zipf) a word must be in one of them than in English to count as that
#: language's ("descuento", "mon", "wie"; not "de", "no", "solo", "menu", "tapas": English says them too).
OTHER_LANGUAGES = ("es", "fr", "de", "pt", "it")
LANGUAGE_MARGIN = 1.5
#: A word at least this frequent in English is English enough wherever else it is said ("de", "con", "die").
ENGLISH_ZIPF = 4.0


@functools.lru_cache(maxsize=1)
def _other_zipf() -> dict[str, dict[str, float]]:
    """For each of :data:`OTHER_LANGUAGES`, the Zipf frequency of each word of its small list, keyed by the word with
    its accents folded (the guards' words are folded: "cancelo" is "canceló" too), the highest where two fold alike."""
    from wordfreq import get_frequency_dict

    out: dict[str, dict[str, float]] = {}
    for lang in OTHER_LANGUAGES:
        table: dict[str, float] = {}
        for word, freq in get_frequency_dict(lang, wordlist="small").items():
            if freq <= 0:
                continue
            key = word if word.isascii() else _fold_accents(word)
            zipf = math.log10(freq) + 9
            if zipf > table.get(key, 0.0):
                table[key] = zipf
        out[lang] = table
    return out


@functools.lru_cache(maxsize=65536)
def _other_language(word: str) -> tuple[str, float]:
    """The language of :data:`OTHER_LANGUAGES` ``word`` (folded, lower case) is most frequent in, and its Zipf
    frequency there (0.0: none has it)."""
    best, lang = 0.0, ""
    for code, table in _other_zipf().items():
        zipf = table.get(word, 0.0)
        if zipf > best:
            best, lang = zipf, code
    return lang, best


@functools.lru_cache(maxsize=65536)
def _word_language(word: str) -> tuple[str, int]:
    """(language, weight) of one lower-case Latin word as written: ("en", 1) for an English word; (a code of
    :data:`OTHER_LANGUAGES`, 2) for a word of that language English hardly says ("descuento", "livret"; written with
    accents English does not use: "cómo", "qué"), (code, 1) for one English says less (:data:`LANGUAGE_MARGIN`:
    "mon", "vers", "wie"; also a loanword: "fete", "sim", "soy"); ("", 0) for either or neither ("de", "menu")."""
    from wordfreq import zipf_frequency

    en = zipf_frequency(word, "en")
    if not word.isascii():
        written = [(zipf_frequency(word, code, wordlist="small"), code) for code in OTHER_LANGUAGES]
        zipf, code = max(written)
        if zipf >= 3.0 and en < 2.5:  # "cómo", "qué", "pagó" (not "café": English says it)
            return code, 2
        word = _fold_accents(word)
    lang, other = _other_language(word)
    if other >= 4.0 and en < 1.0:
        return lang, 2
    if other >= 3.0 and en < ENGLISH_ZIPF and other - en >= LANGUAGE_MARGIN:
        return lang, 1
    if en >= 3.0 and en - other >= 1.0:
        return "en", 1
    return "", 0


def _language(text: str) -> tuple[str, frozenset[tuple[str, str, int]]]:
    """The language of the Latin words of ``text``: another language's if it has a word English hardly says or two
    it says less ("¿Cómo cancelo my subscription?", "Is there a descuento for students?": es; not "hen dos at the
    cafe", "the eau de toilette": two words of English's, "Can you motorise …": the same on both sides of a pair),
    the one most of them are in; else "en" if it has an English word; else "". A capitalised word after the first
    is a name and left out ("Los Angeles", "San José"). With it, (folded word, language, weight) of each word of
    another language."""
    weights: Counter[str] = Counter()
    foreign: set[tuple[str, str, int]] = set()
    english = False
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    for m in _LATIN_WORD.finditer(text):
        word = m.group(0)
        if len(word) < 2 or (not word.isascii() and not all(_latin(ch) for ch in word)):
            continue
        if m.start() and word[0].isupper() and text[:m.start()].strip(" ¿¡\"'(«"):
            continue
        lang, weight = _word_language(word.lower())
        if lang == "en":
            english = True
        elif lang:
            weights[lang] += weight
            foreign.add((_fold_accents(word.lower()), lang, weight))
    if weights and max(weights.values()) >= 2:
        return max(weights.items(), key=lambda x: (x[1], -OTHER_LANGUAGES.index(x[0])))[0], frozenset(foreign)
    return ("en" if english else ""), frozenset(foreign)


def _languages_differ(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """One question in English, the other (in part) in another language: "¿Cómo cancelo my subscription?" / "How do I
    cancel my subscription?", "Is there a descuento for students?" / "Is there a student discount?" -- the asker
    reads the answer in the language they asked in."""
    if q.language == c.language or "en" not in (q.language, c.language) or "" in (q.language, c.language):
        return False
    other, english = (q, c) if c.language == "en" else (c, q)
    said = set(_LATIN_WORD.findall(english.text.lower()))  # "matinée" / "matinee": one word, either way
    weights: Counter[str] = Counter()
    for word, lang, weight in other.foreign:
        if word not in said:
            weights[lang] += weight
    return bool(weights) and max(weights.values()) >= 2


def _diacritics_differ(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """A word both questions have, folded, that they write with other diacritics ("¿Cuándo pagó …" / "¿Cuándo pago
    …", "Wurde" / "Würde", "avó" / "avô"), unless the side without them writes no accent anywhere: "Comment resilier
    mon abonnement" is "résilier" typed on a keyboard without accents."""
    if not q.marks and not c.marks:
        return False
    forms_q: dict[str, set[str]] = {}
    forms_c: dict[str, set[str]] = {}
    for folded, word in q.marks:
        forms_q.setdefault(folded, set()).add(word)
    for folded, word in c.marks:
        forms_c.setdefault(folded, set()).add(word)
    text_q, text_c = q.text.lower(), c.text.lower()
    for folded in forms_q.keys() | forms_c.keys():
        said = re.compile(rf"(?<![^\W\d_]){re.escape(folded)}(?![^\W\d_])")
        if not (said.search(text_q) and said.search(text_c)):
            continue  # a word of one side only: the other guards' to read
        a, b = forms_q.get(folded, set()), forms_c.get(folded, set())
        if a == b or (not a and not q.marks) or (not b and not c.marks):
            continue
        return True
    return False


def _foreign_reason(q: QuestionFeatures, c: QuestionFeatures) -> str | None:
    """What the guards' English reading misses in other languages (after every other rule): the same letters or
    numbers of an unspaced script in another order (``order``), a word written with other diacritics or a question in
    English against one (in part) in another language (``unmatched``)."""
    seq_q, seq_c = _unspaced_sequence(q.text), _unspaced_sequence(c.text)
    if seq_q != seq_c and seq_q and seq_c:
        return "order"
    if _diacritics_differ(q, c) or _languages_differ(q, c):
        return "unmatched"
    return None


#: The time frames that say what a time question measures (the others, "own" and "span", only qualify it).
_MEASURES = frozenset({"often", "window", "take"})


def _time_frames_differ(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """Two time questions that measure different things: a frequency against any other time ("how soon can I
    stain the fence" / "how often does it need staining"), a window the asker has against how long a thing
    takes ("how long do I have to return it" / "how long does the refund take"), or a thing's own stretch against
    a span up to it ("how long does the fitting itself take" / "how long from ordering to fitting")."""
    if not (q.asks_time or q.time_frame & _MEASURES) or not (c.asks_time or c.time_frame & _MEASURES):
        return False
    if ("often" in q.time_frame) != ("often" in c.time_frame):
        return True
    if {q.time_frame & {"window", "take"}, c.time_frame & {"window", "take"}} == {frozenset({"window"}),
                                                                                  frozenset({"take"})}:
        return True
    own_q, own_c = "own" in q.time_frame, "own" in c.time_frame
    return (q.asks_time and c.asks_time and own_q != own_c
            and "span" in (c.time_frame if own_q else q.time_frame))


def _event_swap(ops: list[tuple[str, int, int, int, int]], q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """One word swapped between when a thing leaves and when it arrives ("dispatched" / "delivered", "ship" /
    "arrive"): in a time question, two events (elsewhere "do you ship to Ireland" / "deliver" ask one thing)."""
    swap = _one_swap(ops, q, c)
    if swap is None or len(swap[0]) != 1 or len(swap[1]) != 1:
        return False
    a, b = _lemmas(swap[0][0]), _lemmas(swap[1][0])
    return bool((a & _DISPATCH_EVENT and b & _ARRIVAL_EVENT) or (a & _ARRIVAL_EVENT and b & _DISPATCH_EVENT))


def _one_swap(ops: list[tuple[str, int, int, int, int]], q: QuestionFeatures, c: QuestionFeatures,
              ) -> tuple[list[str], list[str], tuple[int, int, int, int]] | None:
    """When the only change between two questions is one replacement: the words of each side that are no stop
    words, and the token spans (q from, q to, c from, c to); else None."""
    changed = [op for op in ops if op[0] != "equal"]
    if len(changed) != 1 or changed[0][0] != "replace":
        return None
    _, i1, i2, j1, j2 = changed[0]
    # a possessive's "s" ("a children's menu" / "a kids menu") says nothing of its own
    return ([w for w in q.tokens[i1:i2] if w not in _STOP and w != "s"],
            [w for w in c.tokens[j1:j2] if w not in _STOP and w != "s"], (i1, i2, j1, j2))


def alternatives(a: str, b: str) -> str | None:
    """The reason of a line of the alternatives lexicon naming ``a`` and ``b`` as two different words of one kind
    (by lemma: "dogs" / "cats"); None when no line does (a synonym, one word, or words of no line)."""
    lexicon, reasons = _alternatives_lexicon()
    forms_a, forms_b = {a} | _lemmas(a), {b} | _lemmas(b)
    for n in sorted({n for w in forms_a for n in lexicon.get(w, ())}):  # the first line naming both
        at_a = {w for w in forms_a if n in lexicon.get(w, ())}
        at_b = {w for w in forms_b if n in lexicon.get(w, ())}
        if at_b and at_a.isdisjoint(at_b):
            return reasons[n]
    return None


@functools.lru_cache(maxsize=1)
def _alternatives_lexicon() -> tuple[dict[str, frozenset[int]], dict[int, str]]:
    """data/alternatives.txt: each word -> the lines naming it, each line -> its reason."""
    from pathlib import Path

    return read_alternatives(Path(__file__).resolve().parent / "data" / "alternatives.txt")


#: The reasons a line of the alternatives lexicon may give.
ALTERNATIVE_REASONS = frozenset({"entity", "temporal", "scope"})


def read_alternatives(path: Any) -> tuple[dict[str, frozenset[int]], dict[int, str]]:
    """Parse an alternatives lexicon file (the format of data/alternatives.txt): word -> its lines, line ->
    reason; :class:`CacheError` naming the file and line for a malformed one."""
    from costline.serving.errors import CacheError

    words: dict[str, set[int]] = {}
    reasons: dict[int, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        reason, colon, rest = line.partition(":")
        entries = [" ".join(e.lower().split()) for e in rest.split(",")]
        if not colon or reason.strip() not in ALTERNATIVE_REASONS or len(entries) < 2 \
                or not all(e.isalpha() for e in entries):
            raise CacheError(f"{path}:{n}: expected 'entity|temporal|scope: word, word[, word …]' (single words, "
                             f"at least two), got {line!r}")
        reasons[n] = reason.strip()
        for e in entries:
            words.setdefault(e, set()).add(n)
    return {w: frozenset(ns) for w, ns in words.items()}, reasons


def _common_synonym(left: list[str], right: list[str], q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """One common word for another (no name, no rare word, no lexicon word): a candidate synonym."""
    from wordfreq import zipf_frequency

    if len(left) != 1 or len(right) != 1:
        return False
    a, b = left[0], right[0]
    return all(w.isalpha() and zipf_frequency(w, "en") >= RARE_ZIPF and w not in f.entities
               and w not in _LEXICON_WORDS for w, f in ((a, q), (b, c)))


#: Words a guard reads: never a mere synonym.
_LEXICON_WORDS = frozenset(set(_POLARITY) | set(_COMPARATIVES) | set(_TEMPORAL_WORDS) | _SCOPE
                           | _NEGATIONS | set(_REVERSAL) | _PROHIBITION | _NOW | _HABITUAL
                           | set(_NUMBER_WORDS) | set(_ORDINALS) | _PAST | _FUTURE)

#: Auxiliaries that only carry a form ("after being neutered" / "after neutering").
_FORM_WORDS = frozenset({"being", "been", "be", "getting", "get", "got"})


def _same_lemmas(left: list[str], right: list[str]) -> bool:
    """Every word on each side shares a lemma with a word on the other: one word in another form."""
    a = [_lemmas(w) for w in left if w.isalpha() and w not in _FORM_WORDS]
    b = [_lemmas(w) for w in right if w.isalpha() and w not in _FORM_WORDS]
    return bool(a) and bool(b) and all(any(x & y for y in b) for x in a) and all(any(y & x for x in a) for y in b)


def _opcodes(q: QuestionFeatures, c: QuestionFeatures) -> list[tuple[str, int, int, int, int]]:
    from difflib import SequenceMatcher

    return SequenceMatcher(None, q.tokens, c.tokens, autojunk=False).get_opcodes()


def _mentions(f: QuestionFeatures, entity: str) -> bool:
    parts = re.findall(r"\w+", entity)
    low = f.text.lower()
    return all(p in f.tokens or p in low for p in parts)


#: The admission model's inputs, in order (see :func:`pair_features`).
FEATURE_NAMES = (
    "cosine", "jaccard", "unmatched_min", "unmatched_max", "length_ratio", "char_ratio", "entity_one_sided",
    "collective_mismatch", "third_person_mismatch", "comparative_one_sided", "tense_mismatch", "qword_mismatch",
    "swap_count", "units_one_sided", "temporal_one_sided", "rare_one_sided",
)


def pair_features(q: QuestionFeatures, c: QuestionFeatures, cosine: float) -> list[float]:
    """The admission model's features of a (query, candidate) pair; see :data:`FEATURE_NAMES`."""
    from rapidfuzz import fuzz

    union = q.stems | c.stems
    jaccard = len(q.stems & c.stems) / len(union) if union else 1.0
    uq = len(q.content - c.content)
    uc = len(c.content - q.content)
    lq, lc = max(len(q.tokens), 1), max(len(c.tokens), 1)
    char_ratio = fuzz.token_sort_ratio(q.text.lower(), c.text.lower()) / 100.0
    entity_one_sided = float(len({e for e in q.entities if not _mentions(c, e)})
                             + len({e for e in c.entities if not _mentions(q, e)}))
    return [
        float(cosine), jaccard, float(min(uq, uc)), float(max(uq, uc)), min(lq, lc) / max(lq, lc), char_ratio,
        entity_one_sided, float(q.collective != c.collective), float(q.third != c.third),
        float(bool(q.comparative) != bool(c.comparative)), float(q.tense != c.tense),
        float(q.qword != c.qword), float(_swaps(q, c)), float(q.units != c.units),
        float(q.temporal != c.temporal), float(len(_unmatched_rare(q, c)) + len(_unmatched_rare(c, q))),
    ]


def _swaps(q: QuestionFeatures, c: QuestionFeatures) -> int:
    """One-for-one content word replacements that are not typos (difflib alignment, rapidfuzz distance)."""
    a, b = q.tokens, c.tokens
    n = 0
    for op, i1, i2, j1, j2 in _opcodes(q, c):
        if op != "replace":
            continue
        left = [w for w in a[i1:i2] if w not in _STOP]
        right = [w for w in b[j1:j2] if w not in _STOP]
        if left and right and len(left) == len(right) == 1:
            if not _is_typo(left[0], right[0]):
                n += 1
    return n


#: A hyphen after these changes the word ("re-sign" / "resign", "co-op" / "coop"): never a mere spelling.
_MEANING_HYPHEN = re.compile(r"\b(?:re|co)-")


def _same_text(a: str, b: str) -> bool:
    """The same question: case, spacing and end punctuation aside — or one word written with a hyphen, a space or
    as one ("Ray-Ban" / "Rayban", "day-of" / "day of"), not after a prefix the hyphen changes ("re-sign")."""
    a, b = " ".join(a.lower().split()).rstrip("?.! "), " ".join(b.lower().split()).rstrip("?.! ")
    if a == b:
        return True
    if _MEANING_HYPHEN.search(a) or _MEANING_HYPHEN.search(b):
        return False
    return re.sub(r"[\s-]+", "", a) == re.sub(r"[\s-]+", "", b)


#: Signs a question's meaning turns on that the guards' word reading leaves out: a relation or an arrow ("fever
#: > 39°C" / "< 39°C", "requests>=2.0", "price ↑" / "↓"), a number's sign ("-18°C" / "18°C", "-$250", "UTC+2" /
#: "UTC-2"), a ratio ("24/7" / "24/5", "60/40"), a name's plus ("C++" / "C", "A+" / "A").
_RELATION = re.compile(r"<=|>=|!=|==|=<|=>|[<>≤≥≠≈±]|[\u2190-\u21ff]")
#: A number with its sign: "-" or "+" not after a word or a number ("under-16s", "2-3 days" and "W-2" are no
#: signs), or "+" after a word ("UTC+2"); a date's or a ratio's numbers are read as the ratio.
_SIGNED = re.compile(r"(?:(?<![\w.,/])(?P<sign>[-+])|(?<=[A-Za-z])(?P<plus>\+))?\$?(?<![\d.,/])"
                     r"(?P<number>\d+(?:[.,]\d+)?)(?![\d/]|[.,]\d)")
_RATIO = re.compile(r"(?<![\d/])\d+(?:[.,]\d+)?/\d+(?:[.,]\d+)?(?![\d/])")
_NAME_PLUS = re.compile(r"\b([A-Za-z][\w.#]{0,40}?)(\+\+?)(?![\w+$])")  # bounded: a name is short; linear


@dataclass(frozen=True)
class Signs:
    """What :func:`signs` finds in a question (each as written, in order)."""

    relations: tuple[str, ...] = ()
    signed: tuple[tuple[str, str], ...] = ()  # (sign or "", number)
    ratios: tuple[str, ...] = ()
    plus_names: tuple[str, ...] = ()  # the word before a "+" / "++" (lower case)
    text: str = ""  # the question in lower case: a name's plus is read against the other's words

    @property
    def said(self) -> tuple[tuple[str, ...], ...]:
        """The signs themselves, in a canonical order (a number without a sign is the guards' to read)."""
        return (tuple(sorted(self.relations)), tuple(sorted(f"{s}{n}" for s, n in self.signed if s)),
                tuple(sorted(self.ratios)), tuple(sorted(self.plus_names)))


def signs(text: str) -> Signs:
    """The signs of ``text`` (:data:`_RELATION`, :data:`_SIGNED`, :data:`_RATIO`, :data:`_NAME_PLUS`)."""
    text = text.replace("\u2212", "-").replace("\uff0b", "+")  # the minus sign, the full-width plus
    signed = tuple((m["sign"] or m["plus"] or "", m["number"]) for m in _SIGNED.finditer(text))
    if text.isascii() and not any(ch in text for ch in "<>=+/"):
        return Signs(signed=signed, text=text.lower())  # the common case: no relation, ratio or plus
    return Signs(tuple(_RELATION.findall(text)), signed, tuple(_RATIO.findall(text)),
                 tuple(m[1].lower() for m in _NAME_PLUS.finditer(text)), text.lower())


def sign_reason(a: Signs, b: Signs) -> str | None:
    """The guard reason two questions' signs differ by, else None: relations or ratios both questions state and
    state differently ("> 39" / "< 39", "24/7" / "24/5"), a number both hold with different signs ("-18" / "18"), a
    name one holds with its plus and the other without ("C++" / "C"). A sign only one question states ("> 39" /
    "over 39") is left to the words' guards and the pair model (:meth:`Verifier.check` asks it)."""
    if a.relations and b.relations and sorted(a.relations) != sorted(b.relations):
        return "comparative"
    if a.ratios and b.ratios and sorted(a.ratios) != sorted(b.ratios):
        return "number"
    sign_a, sign_b = {}, {}
    for side, found in ((sign_a, a.signed), (sign_b, b.signed)):
        for sign, number in found:
            side.setdefault(number, set()).add(sign)
    if any(sign_a[n] != sign_b[n] for n in sign_a.keys() & sign_b.keys()):
        return "number"
    for one, other in ((a, b), (b, a)):
        others = set(other.plus_names)
        for name in set(one.plus_names):
            if name not in others and re.search(rf"(?<![\w.#]){re.escape(name)}(?![\w.#+])", other.text):
                return "entity"
    return None


#: Questions that differ only in their code — an operator, a flag, a path, an address — read as one question by
#: the embedding, the guards' word reading and the pair model: "is it safe to run `rm -rf ./build`" / "… `rm -rf /`",
#: "git reset --hard" / "--soft", "print(7 - 3)" / "print(7 + 3)", "alice@example.com" / "alice@example.org" were
#: served each other's answers (cosine 0.82-0.96). :func:`code` reads a question's code and :func:`code_reason`
#: compares two. A cheap test first: most questions hold none of these characters.
_CODE_TRIGGER = re.compile(r"[`@/\\=+*%<>&|^~\[]|(?<!\S)--?[A-Za-z]|\d[ \t]*-[ \t]*[\d(]|[)\]][ \t]*-")
_BACKTICKS = re.compile(r"`+")
_FENCE_INFO = re.compile(r"[\w+#.-]*")  # "```python": the language of a fenced block, no code
_CODE_URL = re.compile(r"\b(?:[a-z][a-z0-9+.-]{0,31}://|www\.)[^\s<>\"'`]+", re.I)  # a scheme is short: linear
_CODE_URL_PARTS = re.compile(r"([^:/]*://)?([^/?#]*)(.*)", re.S)
_CODE_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_CODE_WIN_PATH = re.compile(r"(?<![\w\\])[A-Za-z]:\\[^\s`'\",;]*")
#: "/etc/hosts", "./build", "../x", "~/x"; "/" or "~" alone only at the end of a clause ("rm -rf /"): between two
#: words a "/" is "this / that"
_CODE_PATH = re.compile(r"(?<![^\s(\[\"'=])(?:~|\.{1,2})?/(?:[^\s`'\",;()]+|(?=[ \t]*(?:[?!.,;:)\]\"']|$)))"
                        r"|(?<![^\s(\[\"'=])~(?=[ \t]*(?:[?!.,;:)\]\"']|$))")
#: "-rf", "--hard", "--depth=1" after a space; "e-mail", "follow-up", "-18" are none, nor a suffix said apart ("-ish")
_CODE_FLAG = re.compile(r"(?<![^\s(\[\"'])(?:--[A-Za-z]|-(?!(?:ish|like|esque|free|based|style|type|ful|less)\b)"
                        r"[A-Za-z])[\w-]*(?:=[^\s`'\",;()]+)?")
#: "^a+$", "\d+", "[a-z]+", "a.*b", "x{2,3}": a word with an anchor, an escape, a class, a wildcard or a count
_CODE_REGEX = re.compile(r"(?<!\S)(?:\^\S+|\S*(?:\\[dwsbDWSB.]|\[\^?(?=[^\]\s]{0,64}\])[^\]\s]*?(?:\w-\w|\\)[^\]\s]*\]|\.[*+]"
                         r"|\{\d+,?\d*\}|[*+?)\]]\$)\S*)")
_CODE_OPERATOR = re.compile(r"(?<=[\w)\]])(?P<pre>[ \t]*)(?P<op>===|!==|==|!=|<=|>=|&&|\|\||\*\*|//|[-+*/%=<>])"
                            r"(?P<post>[ \t]*)(?=[\w(\[])")
_CODE_OPERAND_LEFT = re.compile(r"[\w.]+$")
_CODE_OPERAND_RIGHT = re.compile(r"[\w.]+")
_CODE_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_CODE_TRAIL = ".,;:!?)]}'\""


@dataclass(frozen=True)
class Code:
    """What :func:`code` finds in a question (each part sorted: compared as multisets)."""

    #: the backtick spans and fenced blocks, whitespace-normalised, as written
    spans: tuple[str, ...] = ()
    #: outside them: URLs, emails, paths, flags, regexes and operators between operands ("op:+", "flag:--hard")
    symbols: tuple[str, ...] = ()
    #: "-" or "/" between two numbers (left, sign, right): a range, a date or a sum, read against the other side
    ranges: tuple[tuple[str, str, str], ...] = ()
    #: the same read with the backticks taken away (the spans' words in place), and that text whitespace-normalised:
    #: the same code in backticks on one side only ("`git stash pop`" / "git stash pop") is the same code
    flat_symbols: tuple[str, ...] = ()
    flat_ranges: tuple[tuple[str, str, str], ...] = ()
    flat_text: str = ""


_NO_CODE = Code()


def _code_operand(text: str, at: int, *, left: bool) -> tuple[str, str]:
    """The kind of the operand beside an operator ("num", "short": two characters at most, "bracket", "word") and
    its text."""
    if left:
        if text[at - 1] in ")]":
            return "bracket", text[at - 1]
        m = _CODE_OPERAND_LEFT.search(text, max(0, at - 40), at)
    else:
        if text[at] in "([":
            return "bracket", text[at]
        m = _CODE_OPERAND_RIGHT.match(text, at, at + 40)
    word = m.group(0).strip(".") if m else ""
    if _CODE_NUMBER.fullmatch(word):
        return "num", word
    return ("short" if len(word) <= 2 else "word"), word


def _code_symbols(text: str) -> tuple[tuple[str, ...], tuple[tuple[str, str, str], ...]]:
    """The symbols of ``text`` outside code spans (:attr:`Code.symbols`, :attr:`Code.ranges`)."""
    found: list[str] = []

    def take(pattern: re.Pattern[str], kind: str, norm: Any = None) -> None:
        nonlocal text

        def one(m: re.Match[str]) -> str:
            whole = m.group(0)
            token = whole.rstrip(_CODE_TRAIL) or whole  # "… /tmp/build?": the "?" is the question's
            found.append(f"{kind}:{norm(token) if norm else token}")
            return " " + whole[len(token):]
        text = pattern.sub(one, text)

    take(_CODE_URL, "url", _code_url)
    take(_CODE_EMAIL, "email", str.lower)
    take(_CODE_WIN_PATH, "path", str.lower)
    take(_CODE_PATH, "path")
    take(_CODE_FLAG, "flag")
    take(_CODE_REGEX, "regex")
    text = _NUMERIC_DATE.sub(" ", text)  # "12/05", "2026-12-05": the date guard's
    ranges: list[tuple[str, str, str]] = []
    for m in _CODE_OPERATOR.finditer(text):
        pre, op, post = m["pre"], m["op"], m["post"]
        if bool(pre) != bool(post):
            continue  # "it **free**", "UTC +2", "5 -3": no operator between two operands
        left, left_word = _code_operand(text, m.start(), left=True)
        right, right_word = _code_operand(text, m.end(), left=False)
        if op in ("-", "/"):  # "Wi-Fi", "follow-up", "and/or", "SNS / dipping powder", "Hi - can I …": no operator
            if left in ("num", "bracket") and right in ("num", "bracket"):
                ranges.append((left_word, op, right_word))  # "2-3 days", "7 - 3": read against the other side
        elif op in ("<", ">", "<=", ">="):
            if "num" not in (left, right):  # a bound ("fever > 39") is the sign guard's (sign_reason)
                found.append(f"op:{op}")
        elif op in ("+", "*", "%"):
            if left != "word" and right != "word":  # "£5 + VAT", "50 % off", "UTC+2" are none
                found.append(f"op:{op}")
        else:
            found.append(f"op:{op}")
    return tuple(sorted(found)), tuple(sorted(ranges))


def _code_url(url: str) -> str:
    """A URL with its scheme and host in lower case (its path as written)."""
    m = _CODE_URL_PARTS.match(url)
    return (m[1] or "").lower() + m[2].lower() + m[3] if m else url


def _code_spans(text: str) -> tuple[list[str], str, str]:
    """The code spans of ``text`` (a run of backticks to the next run of as many, CommonMark's inline code; a run of
    three or more opens a fenced block, to the end of the text if it is never closed, its language line dropped),
    the text with each span a space, and the text with the backticks alone taken away. Linear in the text."""
    runs = list(_BACKTICKS.finditer(text))
    if not runs:
        return [], text, text
    closer: list[int | None] = [None] * len(runs)
    last: dict[int, int] = {}
    for i in range(len(runs) - 1, -1, -1):
        n = len(runs[i].group(0))
        closer[i] = last.get(n)
        last[n] = i
    spans: list[str] = []
    outside: list[str] = []
    flat: list[str] = []
    pos = i = 0
    while i < len(runs):
        run, j = runs[i], closer[i]
        fence = len(run.group(0)) >= 3
        if j is None and not fence:
            i += 1  # a lone backtick ("the `x key"): text
            continue
        body = text[run.end():runs[j].start() if j is not None else len(text)]
        if fence and "\n" in body:
            first, rest = body.split("\n", 1)
            if _FENCE_INFO.fullmatch(first.strip()):
                body = rest
        spans.append(" ".join(body.split()))
        outside += [text[pos:run.start()], " "]
        flat += [text[pos:run.start()], " ", body, " "]
        pos = runs[j].end() if j is not None else len(text)
        i = j + 1 if j is not None else len(runs)
    outside.append(text[pos:])
    flat.append(text[pos:])
    return spans, "".join(outside), "".join(flat)


def code(text: str) -> Code:
    """The code of ``text`` (:class:`Code`): its backtick spans and fenced blocks, and the symbols outside them. Call
    it on a question of at most MAX_QUESTION_CHARS characters (:func:`code_reason` reads longer ones itself)."""
    if not _CODE_TRIGGER.search(text):
        return _NO_CODE
    spans, outside, flat = _code_spans(text)
    symbols, ranges = _code_symbols(outside)
    if not spans:
        return Code((), symbols, ranges, symbols, ranges) if symbols or ranges else _NO_CODE
    flat_symbols, flat_ranges = _code_symbols(flat)
    return Code(tuple(sorted(spans)), symbols, ranges, flat_symbols, flat_ranges, " ".join(flat.split()))


def _ranges_agree(a: tuple[tuple[str, str, str], ...], b: tuple[tuple[str, str, str], ...]) -> bool:
    """No two numbers joined by "-" on one side and "/" on the other ("7 - 3" / "7 / 3"); said on one side only it is
    a range or a date ("2-3 days" / "2 to 3 days"), left to the other guards."""
    if not a or not b:
        return True
    ops_a: dict[tuple[str, str], set[str]] = {}
    ops_b: dict[tuple[str, str], set[str]] = {}
    for side, found in ((ops_a, a), (ops_b, b)):
        for left, op, right in found:
            side.setdefault((left, right), set()).add(op)
    return all(ops_a[k] == ops_b[k] for k in ops_a.keys() & ops_b.keys())


def _said_in(span: str, text: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(span)}(?!\w)", text) is not None


def code_reason(a: Code, b: Code, text_a: str = "", text_b: str = "") -> str | None:
    """``"code"`` when two questions' code differs, else None: their code spans, or the symbols outside them, compared
    as multisets (:class:`Code`); the same code with backticks on one side only is the same code. ``text_a`` and
    ``text_b`` are the questions (what a span is looked for in). Identical code with other prose is the other
    guards' to read."""
    if a is b or (a.spans == b.spans and a.symbols == b.symbols and _ranges_agree(a.ranges, b.ranges)):
        return None
    if a.flat_symbols != b.flat_symbols or not _ranges_agree(a.flat_ranges, b.flat_ranges):
        return REASON_CODE
    flat_a, flat_b = a.flat_text or " ".join(text_a.split()), b.flat_text or " ".join(text_b.split())
    only_a, only_b = Counter(a.spans) - Counter(b.spans), Counter(b.spans) - Counter(a.spans)
    if all(_said_in(s, flat_b) for s in only_a) and all(_said_in(s, flat_a) for s in only_b):
        return None
    return REASON_CODE


#: Words of a reply too short for the stage to read (a conversation's "y" / "n", "yep" / "nope", "A" / "B", "option
#: 2" / "option 3"): the earlier turns that give it its meaning are the scope's, equal on both sides, so only
#: the reply tells two requests apart, and no guard reads it. In Latin script (a run of Chinese is one "word").
_SHORT_WORDS = 2


def _long_reason(a: str, b: str) -> str | None:
    """:meth:`Verifier.check` for a pair with a question over MAX_QUESTION_CHARS, unparsed, in time linear in the
    texts: the same text, spacing aside, is accepted; so is one that differs only in case and end punctuation,
    unless either holds a sign of code (``"code"``: "ls -l" / "ls -L"); anything else is ``long_query``."""
    a, b = " ".join(a.split()), " ".join(b.split())
    if a == b:
        return None
    if a.lower().rstrip("?.! ") != b.lower().rstrip("?.! "):
        return REASON_LONG_QUERY
    return REASON_CODE if _CODE_TRIGGER.search(a) or _CODE_TRIGGER.search(b) else None


def _short(text: str) -> bool:
    return text.isascii() and len(re.findall(r"[^\W_]+", text)) <= _SHORT_WORDS


def _symbols(text: str) -> list[str]:
    """The pictographs and other symbols of ``text`` beyond Latin-1 (emoji, "☂", "✓"; private-use and unassigned
    code points), sorted. The embedding model reads most of them as its unknown word piece ([UNK]), as does the pair
    model, and the guards read words: "is the 🍕 vegan" / "is the 🍔 vegan" had a cosine of 1.0 and passed every
    stage. Emoji variation selectors (U+FE0F, a mark), joiners and other format characters are not symbols."""
    if text.isascii():
        return []
    import unicodedata

    return sorted(ch for ch in text if ord(ch) > 0xFF and unicodedata.category(ch) in ("So", "Co", "Cn"))


def _same_reading(q: QuestionFeatures, c: QuestionFeatures) -> bool:
    """The same words in the same order as the guards read them — contractions expanded, the synonym lexicon
    applied ("can't" / "cannot", "each" / "every", "pushchair" / "stroller") — or the same but for how a number
    is written, with the same numbers parsed ("24 hours" / "twenty-four hours"). Such a pair is a near-repeat by
    the stage's own reading, so the pair model is not asked (it rejected some: docs/cache.md)."""
    if q.tokens == c.tokens:
        return True
    if not q.numbers or q.numbers != c.numbers:
        return False

    def words(f: QuestionFeatures) -> list[str]:
        return [t for t in f.tokens if not (t in _NUMBER_WORDS or t in ("and", "a") or t.replace(".", "").isdigit())]
    return words(q) == words(c)


class Verifier:
    """Guards and admission for one cache; features of texts and verdicts of pairs memoised
    (``memo_size`` of each).

    ``admission`` maps a namespace to its :class:`~costline.serving.cache.admission.AdmissionModel`
    (``"*"``: every other namespace); ``pair_model`` (:mod:`~costline.serving.cache.pair_model`), when
    given, has the last word on a candidate that passed both: a candidate under ``strict_below`` cosine needs a
    probability of at least ``strict_threshold`` from it, and two questions that both ask for a time
    (:attr:`QuestionFeatures.asks_time`) at least ``time_threshold`` (the pair model's own threshold above).
    Thread-safe.
    """

    def __init__(self, admission: dict[str, Any] | None = None, *, pair_model: Any = None,
                 memo_size: int = 100_000, strict_below: float = 0.0, strict_threshold: float = 0.0,
                 time_threshold: float = 0.0) -> None:
        self.admission = dict(admission or {})
        self.pair_model = pair_model
        self.strict_below = strict_below
        self.strict_threshold = strict_threshold
        self.time_threshold = time_threshold
        self.memo_size = memo_size
        self._memo: OrderedDict[str, QuestionFeatures] = OrderedDict()
        #: The code of texts seen before (:func:`code`), ``memo_size`` of them.
        self._code_memo: OrderedDict[str, Code] = OrderedDict()
        #: Verdicts of (query, candidate, cosine, namespace) seen before.
        self._verdicts: OrderedDict[tuple[str, str, float, str], str | None] = OrderedDict()
        self._lock = threading.Lock()
        self._stemmer_obj = _stemmer()
        self._stem_lock = threading.Lock()
        self._said_unreadable = False  # the first unreadable pair is logged with its traceback, the rest without
        # load the parsers' data (wordfreq's lists take a second or two) now, not in the first lookup
        analyse("Warm up: 2 items on May 3 at 3 pm for Acme, not all", self._stemmer_obj)

    def features(self, text: str) -> QuestionFeatures:
        def parse() -> QuestionFeatures:
            with self._stem_lock:  # snowball stemmers keep state between calls
                return analyse(text, self._stemmer_obj)
        return self._remembered(self._memo, text, parse)

    def code(self, text: str) -> Code:
        """:func:`code` of ``text``, remembered (a stored question is read once however often it is a candidate)."""
        return self._remembered(self._code_memo, text, lambda: code(text))

    def _remembered(self, memo: OrderedDict[str, Any], text: str, make: Callable[[], Any]) -> Any:
        """``memo[text]``, made by ``make()`` (outside the lock) the first time; the least recently used entries
        leave past ``memo_size``."""
        with self._lock:
            found = memo.get(text)
            if found is not None:
                memo.move_to_end(text)
                return found
        found = make()
        with self._lock:
            memo[text] = found
            while len(memo) > self.memo_size:
                memo.popitem(last=False)
        return found

    def pair_threshold(self, cosine: float, q: QuestionFeatures | None = None,
                       c: QuestionFeatures | None = None) -> float | None:
        """The probability the pair model must give a candidate at ``cosine`` beyond its own threshold (the strict
        band; ``time_threshold`` when both ``q`` and ``c`` ask for a time), or None: its own threshold alone."""
        need = [self.strict_threshold] if cosine < self.strict_below else []
        if q is not None and c is not None and q.asks_time and c.asks_time and self.time_threshold > 0:
            need.append(self.time_threshold)
        return max(need) if need else None

    def model_for(self, namespace: str) -> Any:
        return self.admission.get(namespace) or self.admission.get("*")

    def check(self, query: str, candidate: str, cosine: float, namespace: str = "*") -> str | None:
        """None to accept ``candidate`` as an answer to ``query``, else the reason to reject it.

        A pair with a question over MAX_QUESTION_CHARS characters is compared unparsed: the same text (spacing aside)
        is accepted, any other rejected (``long_query``). Else the same question again (case, spacing and end
        punctuation aside) is accepted unless its signs (:func:`sign_reason`) or its code (:func:`code_reason`,
        reason ``code``: "`ls -l`" / "`ls -L`") differ; a question of over MAX_QUESTION_TOKENS of the guards' words
        (a run of symbols the embedder reads as one word piece) is rejected (``long_query``) unguarded.
        """
        key = (query, candidate, round(cosine, 5), namespace)
        with self._lock:
            if key in self._verdicts:  # support traffic asks the same questions again and again
                self._verdicts.move_to_end(key)
                return self._verdicts[key]
        if len(query) > MAX_QUESTION_CHARS or len(candidate) > MAX_QUESTION_CHARS:
            # not parsed (nor remembered): compared before any parse, whose regexes and word matching grow faster
            # than the text (a request body's megabytes)
            return _long_reason(query, candidate)
        query_signs, candidate_signs = signs(query), signs(candidate)
        by_sign = sign_reason(query_signs, candidate_signs)
        if by_sign is not None:
            return by_sign  # "freezer at -18°C" / "at 18°C": the words (and _same_text) read them as one
        # code ("`rm -rf ./build`" / "`rm -rf /`", "--hard" / "--soft", "7 - 3" / "7 + 3"): before _same_text too,
        # which reads "--hard" as "hard" and "-L" as "-l"
        try:
            by_code = code_reason(self.code(query), self.code(candidate), query, candidate)
        except Exception:  # noqa: BLE001 - as below: a text the stage cannot read is a miss, never a failed lookup
            log.warning("costline: the cache's verifier could not read a question pair's code; the candidate is not "
                        "served (reject reason %r)", REASON_UNREADABLE, exc_info=True)
            return REASON_UNREADABLE
        if by_code is not None:
            return by_code
        if _same_text(query, candidate):
            return None
        if _short(query) or _short(candidate):
            return "short"  # "y" / "n", "yep" / "nope": a reply, only served again as itself
        if _symbols(query) != _symbols(candidate):
            return "entity"  # "is the 🍕 vegan" / "is the 🍔 vegan": what the model and the guards cannot read
        # a sign only one of them states ("fever > 39" / "fever 39"): no near-repeat by the words alone
        signs_agree = query_signs.said == candidate_signs.said
        try:
            q, c = self.features(query), self.features(candidate)
            if len(q.tokens) > MAX_QUESTION_TOKENS or len(c.tokens) > MAX_QUESTION_TOKENS:
                reason = REASON_LONG_QUERY  # the guards' word matching is quadratic in the words: "€" x 2,000
            else:
                reason = guard(q, c, cosine)
            if reason is None:
                model = self.model_for(namespace)
                if model is not None and not model.admits(pair_features(q, c, cosine)):
                    reason = REASON_ADMISSION
                elif (self.pair_model is not None and not (signs_agree and _same_reading(q, c))
                      and not self.pair_model.same_answer(candidate, query, self.pair_threshold(cosine, q, c))):
                    reason = REASON_PAIR_MODEL
        except Exception:  # noqa: BLE001 - a text the stage cannot read is a miss, never a failed lookup
            # (a stored question that broke the parser would otherwise fail every lookup it is a candidate of)
            log.warning("costline: the cache's verifier could not read a question pair; the candidate is not "
                        "served (reject reason %r)", REASON_UNREADABLE, exc_info=not self._said_unreadable)
            self._said_unreadable = True
            reason = REASON_UNREADABLE
        with self._lock:
            self._verdicts[key] = reason
            while len(self._verdicts) > self.memo_size:
                self._verdicts.popitem(last=False)
        return reason

    def warm(self, texts: Iterable[str]) -> None:
        """Parse ``texts`` now (stored questions, say) so lookups find them parsed."""
        for t in texts:
            self.features(t)

    def forget(self, texts: Iterable[str]) -> None:
        """Drop ``texts`` from the memo and their verdicts (the next check parses them again)."""
        drop = set(texts)
        with self._lock:
            for t in drop:
                self._memo.pop(t, None)
                self._code_memo.pop(t, None)
            for key in [k for k in self._verdicts if k[0] in drop or k[1] in drop]:
                del self._verdicts[key]
