"""`costline distill rollback` undoes a promotion exactly: the two keys promote writes are put back as they were
(a key the file did not set is removed again), comments and other keys untouched, and the vllm line of the
promotion before it is printed. Runs are real run folders that passed the real gate (tests/test_distill_task_pairs
builds them); the config file is read back with costline's own loader and, for exactness, as text."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from costline.cli import _register_area_commands, cli
from costline.config import load_config
from costline.distill.errors import DistillError
from costline.distill.evaluate import evaluate_student
from costline.distill.promote import promote_run, rollback
from costline.distill.runs import DistillRun, distill_root, write_json
from test_distill_task_pairs import _cfg, _run

ORIGINAL = """# the ops team's file
[serving.backends]
student_model = "hand-picked-student"   # chosen by hand

[serving.router.rules]
short_query_chars = 180
"""


def passed_run(tmp_path: Path, cfg, run_id: str, pairs: dict[tuple[str, str], tuple[int, int]]) -> DistillRun:
    run, student = _run(distill_root(cfg), run_id, pairs)
    assert evaluate_student(cfg, run, student=student).passed
    run.adapter.mkdir(parents=True)
    write_json(run.adapter / "training_manifest.json", {"base_model": "/models/base"})
    return run


def test_rollback_restores_each_earlier_state_exactly(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    toml = tmp_path / "costline.toml"
    toml.write_text(ORIGINAL)
    first = passed_run(tmp_path, cfg, "run-a", {("classification", "sentiment"): (40, 0)})
    second = passed_run(tmp_path, cfg, "run-b", {("extraction", "support"): (40, 0)})
    promote_run(cfg, first, toml)
    after_first = toml.read_text()
    promote_run(cfg, second, toml)
    assert load_config(toml).serving.router.rules.student_subtypes == {"extraction": ("support",)}

    back = rollback(cfg, toml)  # run-b undone: run-a's state again, and its adapter's vllm line
    assert toml.read_text() == after_first
    assert (back.undone_run, back.restored_run) == ("run-b", "run-a")
    assert back.vllm_command is not None and str(first.adapter.resolve()) in back.vllm_command
    assert load_config(toml).serving.router.rules.student_subtypes == {"classification": ("sentiment",)}

    back = rollback(cfg, toml)  # run-a undone: the file as the ops team wrote it (no student_subtypes table)
    rules = load_config(toml).serving.router.rules
    assert rules.student_subtypes == {} and rules.short_query_chars == 180
    assert load_config(toml).serving.backends.student_model == "hand-picked-student"
    assert "# the ops team's file" in toml.read_text() and "student_subtypes" not in toml.read_text()
    assert (back.undone_run, back.restored_run, back.vllm_command) == ("run-a", None, None)

    with pytest.raises(DistillError, match="no promotion of .* to roll back"):
        rollback(cfg, toml)


def test_a_key_the_file_did_not_set_is_removed_again(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    toml = tmp_path / "costline.toml"
    toml.write_text("# empty\n")
    promote_run(cfg, passed_run(tmp_path, cfg, "run-a", {("classification", "sentiment"): (40, 0)}), toml)
    rollback(cfg, toml)
    text = toml.read_text()
    assert "student_model" not in text and "student_subtypes" not in text
    assert load_config(toml).serving.backends.student_model == load_config(None).serving.backends.student_model


def test_a_file_edited_since_the_promotion_is_restored_only_with_force(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    toml = tmp_path / "costline.toml"
    toml.write_text(ORIGINAL)
    promote_run(cfg, passed_run(tmp_path, cfg, "run-a", {("classification", "sentiment"): (40, 0)}), toml)
    toml.write_text(toml.read_text().replace('sentiment"]', 'sentiment", "billing"]'))  # gated by hand since
    with pytest.raises(DistillError, match="changed since run run-a was promoted"):
        rollback(cfg, toml)
    rollback(cfg, toml, force=True)
    assert load_config(toml).serving.backends.student_model == "hand-picked-student"


def test_the_cli_rolls_back_and_prints_the_earlier_vllm_line(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    toml = tmp_path / "costline.toml"
    toml.write_text(ORIGINAL + f'\n[lake]\npath = "{tmp_path / "lake"}"\n\n[distill]\nmax_gap = 0.15\n'
                    "min_eval_per_subtype = 5\n")
    cfg = load_config(toml)
    first = passed_run(tmp_path, cfg, "run-a", {("classification", "sentiment"): (40, 0)})
    promote_run(cfg, first, toml)
    promote_run(cfg, passed_run(tmp_path, cfg, "run-b", {("extraction", "support"): (40, 0)}), toml)
    _register_area_commands()
    out = CliRunner().invoke(cli, ["--config", str(toml), "distill", "rollback"])
    assert out.exit_code == 0, out.output
    assert "rolled back run run-b's promotion" in out.output and "vllm serve /models/base" in out.output
    assert str(first.adapter.resolve()) in out.output
