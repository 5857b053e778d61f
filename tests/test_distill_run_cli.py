"""`costline distill run --promote` chains the steps from the command line: the teacher is the
stand-in reached through [jobs.teacher] base_url, the base model a local folder, and the config
file ends up gating classification to the student."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from distill_world import LabellingStandIn, labelled_plans, make_query, tiny_base_model, world_config  # noqa: E402

from costline.serving.settings import StandInConfig  # noqa: E402

pytest.importorskip("peft")


def test_distill_run_chains_export_teacher_train_eval_gate_promote(tmp_path):
    from click.testing import CliRunner
    from lakes import lake_from_plans

    from costline.cli import _register_area_commands, cli
    from costline.config import load_config
    from costline.distill.model import format_prompt

    cfg = world_config(tmp_path, tenants=("*",))
    lake_from_plans(labelled_plans(640), cfg)  # 29+ held-out items a subtype: a perfect student passes 0.1

    class Plain:
        chat_template = None

    rng = random.Random(1)
    texts = [format_prompt(Plain, None, [{"role": "user", "content": make_query(rng, s)}])
             for s in ("sentiment", "topic") for _ in range(300)] + ["positive negative billing shipping"]
    base = tiny_base_model(tmp_path / "base", texts)
    toml = tmp_path / "costline.toml"
    with LabellingStandIn(StandInConfig(port=0, latency_scale=0.0)) as srv:
        toml.write_text(f"""
[lake]
path = "{tmp_path / 'lake'}"
[capture]
message_content = true
[jobs.teacher]
base_url = "{srv.url}"
poll_interval_s = 0.0
[distill]
tenants = ["*"]
task_types = ["classification"]
near_duplicate_threshold = 0.0
eval_fraction = 0.15
target_modules = ["all-linear"]
modules_to_save = ["lm_head", "embed_tokens"]
lora_r = 8
lora_alpha = 16
lora_dropout = 0.0
epochs = 3
learning_rate = 0.005
max_new_tokens = 3
max_gap = 0.1
min_eval_per_subtype = 5
torch_threads = 1
""")
        _register_area_commands()
        r = CliRunner().invoke(cli, ["--config", str(toml), "distill", "run", "--since", "2026-11-01", "--until",
                                     "2026-11-02", "--base-model", str(base), "--no-spans", "--promote"])
        assert r.exit_code == 0, (r.output, r.exception)
        assert srv.log.duplicate_paid_keys() == {} and srv.log.paid("anthropic-batch")
        # run again by its id (as after a crash of a run whose --until was now): nothing exported anew,
        # the teacher's answers reused, not paid twice
        run_id = r.output.split("run ", 1)[1].split(":", 1)[0]
        paid = len(srv.log.paid())
        again = CliRunner().invoke(cli, ["--config", str(toml), "distill", "run", "--run", run_id, "--base-model",
                                         str(base), "--no-spans"])
        assert again.exit_code == 0, (again.output, again.exception)
        assert f"run {run_id}: resuming" in again.output and len(srv.log.paid()) == paid
        refused = CliRunner().invoke(cli, ["--config", str(toml), "distill", "run", "--run", run_id, "--since", "-1d"])
        assert refused.exit_code == 2 and "drop --since / --until / --size" in refused.output
    assert "PASSED the gate" in r.output and "vllm serve" in r.output
    after = load_config(toml)
    assert after.serving.router.rules.student_subtypes == {"classification": ("sentiment", "topic")}
    assert after.serving.backends.student_model == "costline-student-lora"
