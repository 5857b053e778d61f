"""End to end on CPU: export from a lake the test fills, teacher through the stand-in's Message Batches
API, LoRA-train a tiny model until the gate passes it, reject an untrained student naming its failing
subtypes, promote and see the router send the passed subtypes to the student."""

from __future__ import annotations

import dataclasses
import json
import sys
from datetime import datetime
from pathlib import Path

import anthropic
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from distill_world import LabellingStandIn, label_of, labelled_plans, tiny_base_model, world_config  # noqa: E402

from costline.serving.settings import StandInConfig  # noqa: E402

pytest.importorskip("peft")

SINCE, UNTIL = datetime(2026, 11, 1), datetime(2026, 11, 2)


def test_distill_end_to_end_gate_passes_trained_rejects_untrained_and_promote_gates_the_router(tmp_path):
    from lakes import lake_from_plans

    from costline.config import load_config
    from costline.distill.dataset import export_dataset
    from costline.distill.errors import GateFailedError
    from costline.distill.evaluate import evaluate_student, gate_run
    from costline.distill.model import format_prompt
    from costline.distill.promote import promote_run
    from costline.distill.runs import read_jsonl
    from costline.distill.teacher import run_teacher
    from costline.distill.train import train_student
    from costline.distill.store import open_distill_lake
    from costline.serving.routing.router import build_policy

    cfg = world_config(tmp_path, tenants=("*",))
    # about 45 held-out items per subtype: a perfect student passes its threshold 0.1 from 29 (one-sided 95 %
    # Clopper-Pearson: 1 - 0.05 ** (1 / 29) = 0.098)
    lake_from_plans(labelled_plans(800), cfg)

    ex = export_dataset(cfg, since=SINCE, until=UNTIL, run_id="good")
    assert set(ex.counts) == {"sentiment", "topic"} and ex.eval >= 2 * 5
    assert ex.skipped.get("exact duplicate", 0) > 0  # the generator repeats some queries

    with LabellingStandIn(StandInConfig(port=0, latency_scale=0.0)) as srv:
        client = anthropic.Anthropic(base_url=srv.url, api_key="x", max_retries=0)
        t = run_teacher(cfg, ex.run, client=client, sleep=lambda s: None)
        assert t.batch and t.answered == ex.train + ex.eval
        assert len(srv.log.paid("anthropic-batch")) == t.answered and srv.log.duplicate_paid_keys() == {}
        under = export_dataset(cfg, since=SINCE, until=UNTIL, run_id="under")
        run_teacher(cfg, under.run, client=client, sleep=lambda s: None)

    # the base model: random weights, a tokenizer trained on the export (prompts as the student sees them)
    class Plain:  # no chat template: format_prompt's plain layout
        chat_template = None

    rows = read_jsonl(ex.run.dataset / "train.jsonl") + read_jsonl(ex.run.dataset / "eval.jsonl")
    texts = [format_prompt(Plain, r["system"], r["messages"]) for r in rows] + sorted(set(map(label_of, (
        r["query"] for r in rows))))
    base = tiny_base_model(tmp_path / "base", texts)
    cfg = cfg.replace(distill={"base_model": str(base)})

    tr = train_student(cfg, ex.run)
    assert tr.steps > 0 and tr.final_loss is not None and tr.final_loss < 0.1
    manifest = json.loads((ex.run.adapter / "training_manifest.json").read_text())
    assert manifest["hyperparameters"]["lora_r"] == 8 and manifest["base_model"] == str(base)
    assert list(ex.run.checkpoints.glob("checkpoint-*"))

    good = evaluate_student(cfg, ex.run)
    assert good.passed, good.describe()
    assert gate_run(ex.run).passed

    train_student(cfg, under.run, max_steps=0)
    bad = evaluate_student(cfg, under.run)
    gate = gate_run(under.run)
    assert not bad.passed and not gate.passed
    assert gate.failing == ["sentiment", "topic"]
    assert "sentiment" in gate.describe() and "topic" in gate.describe()

    con = open_distill_lake(cfg)
    try:
        passed = dict(con.execute("SELECT run_id, bool_and(passed) FROM distill_runs GROUP BY ALL").fetchall())
        n_items = con.execute("SELECT count(*) FROM distill_items WHERE run_id = 'good'").fetchone()[0]
    finally:
        con.close()
    assert passed == {"good": True, "under": False} and n_items == ex.eval

    toml = tmp_path / "costline.toml"
    toml.write_text("# ops config\n[serving.router.rules]\nstudent_task_types = [\"faq\"]\n")
    with pytest.raises(GateFailedError, match="sentiment, topic"):
        promote_run(cfg, under.run, toml)
    assert "classification" not in toml.read_text()
    query = "Classify the sentiment: ok"
    before = build_policy(load_config(toml).serving).route(query, "classification", subtype="sentiment")
    p = promote_run(cfg, ex.run, toml)
    after_cfg = load_config(toml)
    assert after_cfg.serving.router.rules.student_subtypes == {"classification": ("sentiment", "topic")}
    assert after_cfg.serving.router.rules.student_task_types == ("faq",)
    assert after_cfg.serving.backends.student_model == cfg.distill.adapter_name
    assert before.tier != "student"
    after = build_policy(after_cfg.serving)
    assert after.route(query, "classification", subtype="sentiment").tier == "student"
    assert after.route(query, "classification", subtype="sarcasm").tier != "student"  # never evaluated
    assert toml.read_text().startswith("# ops config")
    # the promoted adapter served through the OpenAI SDK, as the gateway and the drift job reach vLLM
    import openai

    from costline.distill.serve import StudentServer

    with StudentServer(base, ex.run.adapter, cfg.distill.adapter_name, port=0, max_new_tokens=3) as srv:
        client = openai.OpenAI(base_url=srv.openai_url, api_key="none", max_retries=0)
        assert cfg.distill.adapter_name in [m.id for m in client.models.list().data]
        for query in ("Classify the sentiment: my order was awful", "Classify the topic: the new invoice"):
            resp = client.chat.completions.create(model=cfg.distill.adapter_name, max_tokens=3,
                                                  messages=[{"role": "user", "content": query}])
            assert resp.choices[0].message.content == label_of(query)
            assert resp.usage.completion_tokens >= 1
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="other", messages=[{"role": "user", "content": "hi"}])
    assert p.vllm_command.startswith(f"vllm serve {base} --enable-lora --lora-modules {cfg.distill.adapter_name}=")
