"""`costline route eval` says where its labels come from, in one line: the shipped files' sidecars,
and, for a file without one, a warning when every label is the stand-in's own keyword-table label."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from costline.cli import _register_area_commands, cli
from costline.serving.routing.learned import LabelledQuery, read_rows
from costline.serving.routing.evaluation import label_provenance, oracle_label_share

DATA = Path(__file__).resolve().parents[1] / "serving" / "routing" / "data"
WARNING = "labels: WARNING every row's label is the stand-in's own rule"
UNKNOWN = "labels: as given in the file (their provenance is unknown to costline)"


def test_the_shipped_sets_are_what_their_sidecars_say() -> None:
    # route_eval.about says "oracle-labelled by the stand-in's own rules": every label agrees with them
    assert "oracle-labelled" in (DATA / "route_eval.about").read_text()
    assert oracle_label_share(read_rows(DATA / "route_eval.jsonl")) == 1.0
    # the judged set (the default) was labelled by scoring the stand-in's answers; the stand-in answers
    # adequately exactly where its keyword table says, so the judgement reproduces the table row for row
    assert "judged" in (DATA / "route_eval_judged.about").read_text()
    assert oracle_label_share(read_rows(DATA / "route_eval_judged.jsonl")) == 1.0


def test_provenance_lines() -> None:
    oracle = read_rows(DATA / "route_eval.jsonl")
    relabelled = [LabelledQuery(r.query, r.task_type, "frontier" if r.tier != "frontier" else "budget")
                  for r in oracle]
    assert label_provenance("oracle-labelled by\n the rules", oracle) == "labels: oracle-labelled by the rules"
    assert label_provenance("judged: by answers", relabelled) == "labels: judged: by answers"
    assert label_provenance("judged: by answers", oracle) == (
        "labels: judged: by answers; note: every label equals the stand-in's own rule label, so against the "
        "stand-in this measures agreement with its keyword table")
    assert label_provenance(None, oracle).startswith(WARNING)
    assert label_provenance(None, oracle[:5]) == UNKNOWN  # too few rows to tell
    assert oracle_label_share(relabelled) == 0.0 and label_provenance(None, relabelled) == UNKNOWN
    assert oracle_label_share([]) == 0.0


def test_route_eval_warns_once_about_an_oracle_labelled_file_without_a_sidecar(tmp_path: Path) -> None:
    copy = tmp_path / "my_eval.jsonl"
    shutil.copy(DATA / "route_eval.jsonl", copy)
    _register_area_commands()
    runner = CliRunner()
    result = runner.invoke(cli, ["route", "eval", "--data", str(copy), "--policy", "rules"], env={"COSTLINE_CONFIG": ""})
    assert result.exit_code == 0, result.output
    assert result.output.count(WARNING) == 1
    # a file of the same queries labelled otherwise gets no warning
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps({"query": r.query, "task_type": r.task_type, "tier": "frontier"}) + "\n"
                             for r in read_rows(DATA / "route_eval.jsonl") if r.tier != "frontier"))
    result = runner.invoke(cli, ["route", "eval", "--data", str(other), "--policy", "rules"], env={"COSTLINE_CONFIG": ""})
    assert result.exit_code == 0, result.output
    assert WARNING not in result.output and UNKNOWN in result.output
