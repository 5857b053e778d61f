"""The ``cosine`` metric's contradiction checks: a pair in which one answer is an edit of the other and the semantic
cache's verifier finds a contradiction (another number, date, a negation …) scores 0 — cosine scores "does not want a
refund" against "wants a refund" 0.91, so a student drifting into such errors was never flagged.

* by-hand pairs, the embeddings faked (every pair at one cosine): contradictions score 0, paraphrases keep the cosine;
* ``cosine_checks`` off, the serving extra missing, a pair the verifier cannot read, answers over its bounds;
* the hand-labelled answer pairs (tests/data/answer_pairs.jsonl, real MiniLM cosines): the catches and false alarms
  of every guard reason that docs/jobs.md ("Contradiction checks") documents, so a verifier change that shifts them
  is seen;
* end to end: the drift job flags a student whose answers negate the teacher's and not one that paraphrases them;
  shadow and the distillation gate read the setting too.

Every expected score and count is written here by hand (the counts as measured once and documented).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections import Counter
from pathlib import Path

import httpx2 as httpx
import numpy as np
import pytest

from costline.jobs.scoring import ScoreRequest, Scorer

PAIRS = Path(__file__).parent / "data" / "answer_pairs.jsonl"


class ConstantCosine:
    """Every answer embeds to one vector and every reference to another at ``cosine`` from it (the scorer embeds the
    answers, then the references)."""

    def __init__(self, cosine: float) -> None:
        self.cosine = cosine
        self.calls = 0

    def encode(self, texts):
        row = np.array([1.0, 0.0]) if self.calls % 2 == 0 else np.array([self.cosine, np.sqrt(1 - self.cosine ** 2)])
        self.calls += 1
        return np.tile(row, (len(texts), 1))


def scored(student: str, teacher: str, cosine: float, **kw) -> float:
    [(score, reference)] = Scorer(embedder=ConstantCosine(cosine), **kw).score(
        [ScoreRequest("k", "cosine", "q", student, teacher)])
    assert reference == 1.0
    return score


# (student, teacher): the teacher's answer with one meaning-bearing detail changed
CONTRADICTIONS = [
    ("The customer does not want a refund.", "The customer wants a refund."),  # negation
    ("No fee applies to transfers between your accounts.",  # "No fee" is no "No," opening
     "A fee applies to transfers between your accounts."),
    ("Yes, pets are allowed in the cabin.", "No, pets are not allowed in the cabin."),  # opposite openings
    ("Your order will arrive within 3 to 5 business days.", "Your order will arrive within 5 to 7 business days."),
    ("Take two tablets twice a day.", "Take one tablet twice a day."),  # number words
    ("The courier delivered the parcel on 3 May.", "The courier delivered the parcel on 5 May."),
    ("The meeting was moved to Thursday at 2 pm.", "The meeting was moved to Tuesday at 2 pm."),  # date
    ("The store opens at 9 am on Saturdays.", "The store opens at 10 am on Saturdays."),  # time
    ("Turn on automatic backups in the settings.", "Turn off automatic backups in the settings."),  # polarity
    ("The update is available to all customers.", "The update is available to some customers."),  # scope
    ("Money moves from your savings account to your checking account.",  # order
     "Money moves from your checking account to your savings account."),
    ("The capital of Australia is Canberra.", "The capital of Australia is Sydney."),  # a name for another
    ("Your ticket was assigned to Maria in the Lisbon office.", "Your ticket was assigned to Maria in the Porto office."),
    ("The flat is furnished and available from 1 May.", "The flat is unfurnished and available from 1 May."),  # un-
    ("The customer doesn’t want a refund.", "The customer wants a refund."),  # a typed apostrophe
]

# (student, teacher): the same meaning, or a difference the checks leave to the cosine
KEPT = [
    ("Delivery takes 3 to 5 business days.", "Delivery takes three to five business days."),  # numbers by value
    ("Yes, the plan includes unlimited storage.", "The plan includes unlimited storage."),  # an opening dropped
    ("No, the museum is not open on Mondays.", "The museum is not open on Mondays."),  # "No," is no extra negation
    ("Sure — you can bring a carry-on bag on board.", "You can bring a carry-on bag on board."),
    ("The meeting was moved to Thursday at 2 pm.", "The meeting has been moved to Thursday at 2 pm."),
    ("The flight leaves on 14 March.", "The flight leaves on March 14."),  # a date written another way
    # the negation guard reads "instead of", but no negator is gained or lost: the same move
    ("The meeting was moved from Monday to Tuesday at 3 pm.", "The meeting has been moved to Tuesday at 3 pm instead of Monday."),
    # rewordings are no edit: the guards read every word said another way as a difference ("no fee" / "free")
    ("There is no fee for transfers between your own accounts.", "Transfers between your own accounts are free."),
    ("The customer wants a refund for the damaged blender.",
     "The customer is asking for their money back because the blender arrived damaged."),
    # ...so a reworded contradiction is left to the cosine too (0.59 with MiniLM: a gap of its own)
    ("The customer is asking for their money back.", "The customer does not want a refund."),
    # "entity" on common words fires on paraphrases ("package" / "parcel"), so a common-word swap is not read
    ("Our office is closed on weekends.", "Our office is closed on Saturdays and Sundays."),
    ("The tenant reports a leak under the kitchen sink.", "The tenant reports a leak under the bathroom sink."),
]


@pytest.mark.parametrize("cosine", [0.95, 0.5])
@pytest.mark.parametrize("student, teacher", CONTRADICTIONS)
def test_a_contradicting_edit_scores_0(student, teacher, cosine):
    assert scored(student, teacher, cosine) == 0.0
    assert scored(teacher, student, cosine) == 0.0  # either way round


@pytest.mark.parametrize("cosine", [0.95, 0.5])
@pytest.mark.parametrize("student, teacher", KEPT)
def test_a_paraphrase_or_a_rewording_keeps_its_cosine(student, teacher, cosine):
    assert scored(student, teacher, cosine) == pytest.approx(cosine)


@pytest.mark.parametrize("student, teacher", CONTRADICTIONS[:4])
def test_cosine_checks_off_scores_the_plain_cosine(student, teacher):
    assert scored(student, teacher, 0.91, cosine_checks=False) == pytest.approx(0.91)


def test_only_the_contradicting_items_of_a_batch_score_0():
    items = [ScoreRequest(str(i), "cosine", "q", s, t) for i, (s, t) in enumerate([CONTRADICTIONS[0], KEPT[0],
                                                                                 CONTRADICTIONS[3], KEPT[1]])]
    items.append(ScoreRequest("short", "cosine", "q", "4", "3"))  # short answers: still compared exactly
    items.append(ScoreRequest("exact", "exact", "q", "The customer wants a refund.", "The customer wants a refund."))
    got = Scorer(embedder=ConstantCosine(0.9)).score(items)
    assert got == [(0.0, 1.0), (pytest.approx(0.9), 1.0), (0.0, 1.0), (pytest.approx(0.9), 1.0), (0.0, 1.0),
                   (1.0, 1.0)]


FILLER = "We have checked the order history and the notes on your account with the warehouse team. "


@pytest.mark.parametrize("repeat, contradicts", [
    (22, True),  # 1,994 and 1,986 characters (89 a filler sentence): within the verifier's 2,000
    (23, False),  # 2,083 and 2,075: over it, not parsed, the cosine stands (as in the cache: parse cost)
])
def test_answers_over_the_verifiers_bound_keep_their_cosine(repeat, contradicts):
    student = FILLER * repeat + "The customer does not want a refund."
    teacher = FILLER * repeat + "The customer wants a refund."
    assert (len(student) <= 2000) is contradicts
    assert scored(student, teacher, 0.97) == (0.0 if contradicts else pytest.approx(0.97))


def test_without_the_serving_extra_the_cosine_stands_with_one_warning(monkeypatch, caplog):
    import costline.serving.cache as cache

    # as without the extra: importing the verifier fails (its "import regex" raises MissingExtraError, an ImportError)
    monkeypatch.delattr(cache, "verify", raising=False)
    monkeypatch.setitem(sys.modules, "costline.serving.cache.verify", None)
    items = [ScoreRequest(str(i), "cosine", "q", s, t) for i, (s, t) in enumerate(CONTRADICTIONS[:3])]
    with caplog.at_level(logging.WARNING, logger="costline.jobs.scoring"):
        got = Scorer(embedder=ConstantCosine(0.9)).score(items)
    assert got == [(pytest.approx(0.9), 1.0)] * 3
    warned = [r for r in caplog.records if r.name == "costline.jobs.scoring"]
    assert len(warned) == 1
    assert "pip install 'costline[serving]'" in warned[0].getMessage()
    assert "cosine_checks = false" in warned[0].getMessage()


def test_a_pair_the_verifier_cannot_read_keeps_its_cosine(monkeypatch, caplog):
    from costline.serving.cache import verify

    def broken(text, *a, **kw):
        raise ValueError("a parser tripped")

    monkeypatch.setattr(verify, "analyse", broken)
    with caplog.at_level(logging.WARNING, logger="costline.jobs.scoring"):
        assert scored(*CONTRADICTIONS[0], 0.9) == pytest.approx(0.9)
    assert any("could not read" in r.getMessage() for r in caplog.records)


# -- the labelled answer pairs -----------------------------------------------------------------------------------

#: Measured on tests/data/answer_pairs.jsonl with MiniLM cosines, as docs/jobs.md ("Contradiction checks") has them:
#: reason -> (contradictions it fired on, paraphrases it fired on), over every pair and over the pairs that are edits;
#: None: no guard fired. The first 177 pairs chose the reasons, the last 89 are held out.
ALL = {
    "choose": {None: (2, 64), "comparative": (3, 1), "date": (7, 1), "entity": (13, 4), "identifier": (2, 2),
               "negation": (12, 4), "number": (18, 2), "order": (2, 1), "polarity": (10, 0), "scope": (10, 7),
               "temporal": (0, 1), "time": (2, 0), "unit": (4, 2), "unmatched": (1, 2)},
    "held": {None: (4, 29), "comparative": (3, 0), "date": (3, 2), "entity": (9, 2), "identifier": (0, 3),
             "negation": (7, 2), "number": (9, 1), "polarity": (1, 1), "scope": (4, 4), "time": (1, 0),
             "unit": (1, 0), "unmatched": (1, 2)},
}
EDITS = {
    "choose": {None: (1, 21), "comparative": (3, 1), "date": (5, 0), "entity": (12, 3), "identifier": (2, 1),
               "negation": (11, 0), "number": (16, 1), "order": (2, 0), "polarity": (8, 0), "scope": (9, 0),
               "time": (2, 0), "unit": (3, 1), "unmatched": (1, 2)},
    "held": {None: (2, 7), "comparative": (3, 0), "date": (3, 0), "entity": (8, 2), "identifier": (0, 1),
             "negation": (5, 1), "number": (7, 0), "polarity": (1, 0), "scope": (2, 0), "time": (1, 0),
             "unit": (1, 0), "unmatched": (1, 2)},
}
#: "entity" on edits where each answer names something the other does not: (catches, false alarms).
NAMES_SWAPPED = {"choose": (6, 0), "held": (6, 0)}
#: What the checks do: contradictions scored 0 of all, paraphrases scored 0 of all.
CHOSEN = {"choose": ((59, 86), (1, 91)), "held": ((25, 43), (0, 46))}
#: The paraphrases scored 0, and why.
FALSE_ALARMS = {
    ("The warranty lasts 12 months.", "The warranty lasts one year."): "number",
}


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("sentence_transformers")
    from costline.serving.embedding import Embedder

    return Embedder().load()


def read_pairs() -> list[dict]:
    return [json.loads(line) for line in PAIRS.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_the_labelled_set_is_hand_written_answer_pairs_about_half_paraphrases():
    pairs = read_pairs()
    assert len(pairs) == 266
    assert all(set(p) == {"student", "teacher", "same", "kind"} and isinstance(p["same"], bool) for p in pairs)
    assert Counter(p["same"] for p in pairs) == {True: 137, False: 129}
    assert len({(p["student"], p["teacher"]) for p in pairs}) == 266  # no pair twice


def test_the_documented_catches_and_false_alarms_of_every_guard_reason(minilm):
    from costline.jobs.scoring import check_answers

    pairs = read_pairs()
    a = np.asarray(minilm.encode([p["student"] for p in pairs]))
    b = np.asarray(minilm.encode([p["teacher"] for p in pairs]))
    cosines = np.clip(np.einsum("ij,ij->i", a, b), 0.0, 1.0)
    checks = [check_answers(p["student"], p["teacher"], float(c)) for p, c in zip(pairs, cosines)]
    split = {"choose": range(0, 177), "held": range(177, 266)}
    for name, idx in split.items():
        every: dict = {}
        edits: dict = {}
        names = [0, 0]
        chosen = [0, 0]
        for i in idx:
            side = 1 if pairs[i]["same"] else 0
            check = checks[i]
            every.setdefault(check.reason, [0, 0])[side] += 1
            if check.edit:
                edits.setdefault(check.reason, [0, 0])[side] += 1
                names[side] += check.reason == "entity" and check.names_swapped
            chosen[side] += check.contradiction is not None
        assert {k: tuple(v) for k, v in every.items()} == ALL[name], name
        assert {k: tuple(v) for k, v in edits.items()} == EDITS[name], name
        assert tuple(names) == NAMES_SWAPPED[name], name
        different = sum(not pairs[i]["same"] for i in idx)
        assert ((chosen[0], different), (chosen[1], len(idx) - different)) == CHOSEN[name], name
    alarms = {(p["student"], p["teacher"]): c.contradiction for p, c in zip(pairs, checks)
              if p["same"] and c.contradiction}
    assert alarms == FALSE_ALARMS


# -- end to end ------------------------------------------------------------------------------------------------------

#: (teacher's answer, a paraphrase of it, its negation)
BANK = [
    ("The customer wants a refund for the damaged blender.",
     "The customer is asking for a refund because the blender arrived damaged.",
     "The customer does not want a refund for the damaged blender."),
    ("Yes, the plan includes unlimited storage.", "The plan includes unlimited storage.",
     "No, the plan does not include unlimited storage."),
    ("Your order will arrive within 3 to 5 business days.", "Your order should arrive in three to five business days.",
     "Your order will not arrive within 3 to 5 business days."),
    ("You can cancel your subscription at any time from the billing page.",
     "Cancel the subscription whenever you like on the billing page.",
     "You cannot cancel your subscription at any time from the billing page."),
    ("Breakfast is included in the room rate.", "The room rate includes breakfast.",
     "Breakfast is not included in the room rate."),
    ("The VPN is required to reach internal tools from home.", "You need the VPN to access internal tools from home.",
     "The VPN is not required to reach internal tools from home."),
    ("Unused leave can be carried over to next year.", "You can carry unused leave over into next year.",
     "Unused leave cannot be carried over to next year."),
    ("The warranty covers accidental damage to the screen.", "Accidental screen damage is covered by the warranty.",
     "The warranty does not cover accidental damage to the screen."),
    ("Calculators are allowed in the final exam.", "You may use a calculator in the final exam.",
     "Calculators are not allowed in the final exam."),
    ("The customer is happy with the replacement and asks us to close the ticket.",
     "Happy with the replacement, the customer asks for the ticket to be closed.",
     "The customer is not happy with the replacement and asks us to close the ticket."),
]
PARAPHRASE, NEGATION = 1, 2
DAY = 86_400


def teacher(request) -> httpx.Response:
    from tests.test_jobs_open_world import message, number

    return httpx.Response(200, json=message(BANK[number(request) % len(BANK)][0]))


def support_rows(which: int, *, day: int = 0, tier: str = "student") -> list:
    """60 requests of subtype ``support`` served by ``tier`` on day ``day``, answered with ``BANK[i % 10][which]``."""
    from tests.test_jobs_open_world import req_rows

    rows = []
    for i in range(60):
        rows += req_rows(i, query=f"ticket #{i} reply", answer=BANK[i % len(BANK)][which], sub="support", tier=tier,
                         off=day * DAY)
    return rows


def support_lake(path: Path, rows, **drift):
    from tests.test_jobs_open_world import make_lake, tuned

    # the rows' task type is classification (exact): their subtype is scored by cosine
    return tuned(make_lake(path, rows), drift={"metrics": {"support": "cosine"}, "min_per_subtype": 1, **drift})


def test_drift_flags_a_student_that_negates_the_teacher_and_not_one_that_paraphrases(tmp_path, minilm):
    from costline.jobs.drift import run_drift
    from tests.test_jobs_open_world import T0, T1, anthropic_mock, eval_items

    cfg = support_lake(tmp_path / "lake", support_rows(PARAPHRASE) + support_rows(NEGATION, day=1))
    night1 = run_drift(cfg, since=T0, until=T1, client=anthropic_mock(teacher), embedder=minilm)
    [a] = night1.assessments
    assert (a.subtype, a.n, a.flagged) == ("support", 60, False)
    assert a.gap < 0.15
    # MiniLM cosines of the paraphrases (0.78 to 0.97): none scored 0
    assert min(row[-1] for row in eval_items(cfg, night1.run_id)) > 0.75
    night2 = run_drift(cfg, since=T1, until=T1 + (T1 - T0), client=anthropic_mock(teacher), embedder=minilm)
    [b] = night2.assessments
    # every negation is caught: each item scores 0, the gap is 1
    assert (b.subtype, b.n, b.student_score, b.gap, b.flagged) == ("support", 60, 0.0, 1.0, True)


def test_with_cosine_checks_off_the_negating_student_passes_as_before(tmp_path, minilm):
    from costline.jobs.drift import run_drift
    from tests.test_jobs_open_world import T0, T1, anthropic_mock

    cfg = support_lake(tmp_path / "lake", support_rows(NEGATION), cosine_checks=False)
    [a] = run_drift(cfg, since=T0, until=T1, client=anthropic_mock(teacher), embedder=minilm).assessments
    # MiniLM scores "does not want a refund" against "wants a refund" over 0.84: the gap is under max_gap 0.15
    assert (a.n, a.flagged) == (60, False)
    assert a.gap < 0.15


@pytest.mark.parametrize("checks, matches", [(True, 0), (False, 60)])
def test_shadow_counts_a_contradicting_cheaper_answer_as_no_match(tmp_path, checks, matches):
    from costline.jobs.shadow import run_shadow
    from tests.test_jobs_open_world import T0, T1, anthropic_mock, tuned

    cfg = support_lake(tmp_path / "lake", support_rows(NEGATION, tier="budget"), cosine_checks=checks)
    cfg = tuned(cfg, shadow={"tiers": ("budget",), "per_tier": 60})
    res = run_shadow(cfg, since=T0, until=T1, client=anthropic_mock(teacher), embedder=ConstantCosine(0.95))
    [a] = res.assessments
    assert (a.matches, a.n) == (matches, 60)  # cosine 0.95 is over match_threshold 0.8: a match unless checked


@pytest.mark.parametrize("checks, gap, passed", [(True, 1.0, False), (False, 0.05, True)])
def test_the_distillation_gate_scores_cosine_subtypes_with_the_checks(tmp_path, checks, gap, passed):
    from costline.config import Config, LakeConfig
    from costline.distill.evaluate import evaluate_student
    from costline.distill.runs import DistillRun, write_json, write_jsonl
    from costline.distill.settings import DistillConfig

    run = DistillRun(tmp_path / "runs", "r")
    items = [{"id": f"i{i}", "request_id": f"r{i}", "task_type": "qa", "subtype": "policy", "system": None,
              "messages": [{"role": "user", "content": f"q{i}"}], "query": f"q{i}", "content_hash": f"h{i}",
              "reasoning": False, "split": "eval", "tenant": "t"} for i in range(10)]
    write_jsonl(run.dataset / "eval.jsonl", items)
    write_jsonl(run.dataset / "train.jsonl", [])
    write_json(run.dataset / "manifest.json", {
        "run_id": "r", "counts": {"policy": {"train": 0, "eval": 10}}, "hashes": {"train": [], "eval": []},
        "pairs": [{"task_type": "qa", "subtype": "policy", "train": 0, "eval": 10, "split": {}}],
        "task_types": {"policy": ["qa"]}})
    write_jsonl(run.path("teacher.jsonl"), [{"id": f"i{i}", "split": "eval", "answer": BANK[i][0]} for i in range(10)])
    negations = {f"q{i}": BANK[i][NEGATION] for i in range(10)}
    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"), distill=DistillConfig(max_gap=0.15, min_eval_per_subtype=5))
    cfg = cfg.replace(jobs=dataclasses.replace(cfg.jobs, drift=dataclasses.replace(cfg.jobs.drift,
                                                                                   cosine_checks=checks)))
    g = evaluate_student(cfg, run, student=lambda queries: [negations[q] for q in queries],
                         embedder=ConstantCosine(0.95))
    [v] = g.subtypes
    assert (v.n, v.gap, v.passed) == (10, pytest.approx(gap), passed)
