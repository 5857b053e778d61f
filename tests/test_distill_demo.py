"""`costline demo --distill`'s step on a small lake: a day of classification traffic recorded into the
lake, exported, answered by the stand-in's Batches API, a tiny model trained, gated, promoted, served by
`costline distill serve`'s server and fresh requests routed to it through the serving pipeline."""

from __future__ import annotations

import re
import tomllib
from datetime import UTC, datetime

import pytest

from costline.config import Config, LakeConfig

pytest.importorskip("peft")

START = datetime(2026, 11, 5, tzinfo=UTC)


@pytest.mark.parametrize("query,label", [
    ('Classify the sentiment of this review as positive, negative or neutral: "The box was superb"', "positive"),
    ('Classify the intent of this message as billing, shipping, account or other: "My tracking"', "shipping"),
    ('Classify the urgency of this ticket as low, medium or high: "Fix it whenever"', "low"),
    ('Classify the urgency of this ticket as low, medium or high: ""', "other"),
])
def test_the_demo_teacher_labels_by_the_last_word(query, label):
    from costline.sim.distill_demo import demo_label

    assert demo_label(query) == label


def test_the_demo_distill_step_trains_gates_promotes_and_routes_to_the_student(tmp_path):
    from costline.sim.distill_demo import demo_label, run_distill_demo
    from costline.lake import open_lake

    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"))
    lines: list[str] = []
    # the demo's own size: about 45 held-out items a subtype, where a perfect student passes the gate's 0.1
    # (one-sided 95 % Clopper-Pearson: 1 - 0.05 ** (1 / 45) = 0.064; at 300 requests, 15 items: 0.181)
    r = run_distill_demo(cfg, start=START, workdir=tmp_path, requests=900, routed=12, echo=lines.append)

    assert set(r.exported) == {"sentiment", "intent", "urgency"}
    assert all(c["eval"] >= 29 for c in r.exported.values())
    assert r.teacher_answers == sum(c["train"] + c["eval"] for c in r.exported.values())
    assert r.gate_passed, r.gate_text
    promoted = tomllib.loads(r.config_file.read_text())
    assert promoted["serving"]["router"]["rules"]["student_subtypes"] == {
        "classification": ["intent", "sentiment", "urgency"]}
    assert promoted["serving"]["backends"]["student_model"] == "costline-demo-student"
    assert r.routed == {"student": 12} and r.student_answered == 12
    assert r.student_correct >= 10  # the gate let through at most a 0.1 gap on the held-out set
    assert any(re.search(r"vllm serve .* --enable-lora --lora-modules costline-demo-student=", ln) for ln in lines)

    con = open_lake(cfg)
    try:
        by_tier = dict(con.execute("SELECT tier, count(*) FROM requests WHERE task_type = 'classification' "
                                   "GROUP BY ALL").fetchall())
        gate = dict(con.execute("SELECT subtype, passed FROM distill_runs WHERE run_id = $r",
                                {"r": r.run_id}).fetchall())
        teacher = con.execute("SELECT count(*), sum(cost_usd) FROM calls WHERE batch").fetchone()
    finally:
        con.close()
    assert by_tier.get("student", 0) >= 12  # the routed requests, served by the trained student, are in the lake
    assert gate == {"sentiment": True, "intent": True, "urgency": True}
    assert teacher[0] == r.teacher_answers and teacher[1] == pytest.approx(r.teacher_cost_usd)  # teacher spans
    assert demo_label('Classify the intent of this message as billing, shipping, account or other: "x refund"') \
        == "billing"
