"""Labelled routing samples: ``(query, task_type, cheapest adequate tier)`` rows.

The rows under ``serving/routing/data/`` (``route_train.jsonl``, ``route_eval.jsonl``) were written by
``python -m costline.sim.samples serving/routing/data``: deterministic queries over the task types
of :mod:`costline.sim.traffic` (short and long, plain and hard), each labelled with the cheapest
API tier whose stand-in answer passes the reference validator
(:func:`costline.sim.standin_model.cheapest_adequate_tier`). The eval rows are held out
by a hash of the query, so no query is in both files.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from collections.abc import Iterator
from pathlib import Path

from costline.sim.standin_model import cheapest_adequate_tier, count_tokens, synthesize

__all__ = ["generate_rows", "write_samples", "DATA_DIR"]

#: Where the packaged samples live (package data of costline.serving).
DATA_DIR = Path(__file__).resolve().parents[1] / "serving" / "routing" / "data"

_TEMPLATES: dict[str, tuple[str, ...]] = {
    "faq": (
        "How do I {x}?",
        "Where can I {x}? I looked in the settings page but could not find it.",
        "What is the way to {x} on my account?",
        "I have been a customer for years and today I need to {x}. The help centre article seems "
        "out of date and the button it mentions is gone. How do I {x} now?",
    ),
    "classification": (
        "Classify the sentiment of: '{y}'",
        "Label the intent of this message: '{y}'",
        "Classify the urgency of this ticket: '{y}'. Answer with low, medium or high only.",
    ),
    "extraction": (
        "Extract the {z} fields from this text as JSON: '{y}'",
        "Extract the {z} from the following email and return JSON with one key per field. The email "
        "is long and mentions several unrelated things before it gets to the point: '{y}'",
    ),
    "coding": (
        "Write a python function that parses {z} and handles empty input.",
        "Fix the bug in this SQL query that double counts {z} rows when joining orders to refunds.",
        "Write a regex and a unit test that validate {z} strings, and explain the edge cases it covers "
        "in detail so a junior engineer can maintain it.",
    ),
    "explain": (
        "Explain the difference between {z} and gross revenue.",
        "Explain why does our {z} report disagree with the finance dashboard every month end, and "
        "what we should check first when it happens again.",
    ),
    "analysis": (
        "Analyse last quarter's {z} numbers across regions.",
        "Compare the {z} trend of the last two quarters across regions and tell me what changed, "
        "why it matters, and which regions need attention before the next board meeting.",
        "Forecast next quarter's {z} from the trend in the attached table.",
    ),
    "complex_reasoning": (
        "Reason step by step about the risks in these {z} terms.",
        "Given the {z} contract terms below, reason step by step about the legal risks, the "
        "trade-offs of each negotiating option, and what strategy we should take.",
    ),
    "creative": (
        "Design a novel onboarding flow for {z}.",
        "Invent a multi-step agent that plans, researches and writes a creative synthesis of our "
        "{z} interviews, and describe how it checks its own work.",
    ),
}
_X = ("reset my password", "update my billing address", "cancel my subscription", "download an invoice",
      "change the shipping address", "track my order", "add a team member", "turn on two-factor login",
      "request a refund", "export my data")
_Y = ("my order arrived late and the box was damaged", "thanks, the new dashboard is great",
      "the app crashes every time I log in", "can someone call me back about pricing",
      "I was charged twice this month", "where is my parcel?", "love it, but it is slow on mobile")
_Z = ("churn", "invoice", "address", "net revenue", "pricing", "supplier", "renewal", "vendor",
      "customer support", "partnership", "subscription", "refund")


def _split(query: str) -> str:
    h = hashlib.blake2b(query.encode(), digest_size=2).digest()[0]
    return "eval" if h < 52 else "train"  # ~20% held out


def generate_rows(n: int = 1600, *, seed: int = 11) -> Iterator[dict[str, object]]:
    """``n`` distinct labelled rows (deterministic)."""
    rng = random.Random(seed)
    seen: set[str] = set()
    kinds = list(_TEMPLATES)
    per_kind = dict.fromkeys(kinds, 0)
    cap = n // len(kinds) + 1  # no task type crowds out the others
    attempts = 0
    while len(seen) < n and attempts < n * 50:
        attempts += 1
        task = rng.choice(kinds)
        query = rng.choice(_TEMPLATES[task]).format(x=rng.choice(_X), y=rng.choice(_Y), z=rng.choice(_Z))
        if rng.random() < 0.25:
            query += " " + rng.choice(("Please keep it short.", "Thanks in advance!",
                                       "This is for a customer waiting on the phone.",
                                       "Our team needs this today."))
        if query in seen or per_kind[task] >= cap:
            continue
        seen.add(query)
        per_kind[task] += 1
        tier = cheapest_adequate_tier(query)
        answer = synthesize("label", tier, query)
        task_type = "faq" if task in ("explain", "creative") and rng.random() < 0.5 else task
        yield {"query": query, "task_type": task_type, "tier": tier, "input_tokens": count_tokens(query),
               "output_tokens": count_tokens(answer.text), "split": _split(query)}


def write_samples(folder: str | Path, n: int = 1600) -> dict[str, int]:
    """Write ``route_train.jsonl`` and ``route_eval.jsonl`` into ``folder``; return row counts."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    counts = {"train": 0, "eval": 0}
    files = {k: (folder / f"route_{k}.jsonl").open("w", encoding="utf-8") for k in counts}
    try:
        for row in generate_rows(n):
            split = str(row.pop("split"))
            files[split].write(json.dumps(row) + "\n")
            counts[split] += 1
    finally:
        for f in files.values():
            f.close()
    return counts


if __name__ == "__main__":  # pragma: no cover
    print(write_samples(sys.argv[1] if len(sys.argv) > 1 else DATA_DIR))
