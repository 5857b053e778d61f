"""Re-distillation on drift: the flagged subtypes' fresh traffic is exported (opt-in), nothing otherwise."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from distill_world import labelled_plans, world_config  # noqa: E402

UNTIL = datetime(2026, 11, 2)


def test_drifted_subtypes_are_exported_only_when_opted_in(tmp_path):
    from lakes import lake_from_plans

    from costline.distill.redistill import on_drift

    cfg = world_config(tmp_path, redistill_on_drift=True)
    lake_from_plans(labelled_plans(120), cfg)
    assert on_drift(cfg.replace(distill={"redistill_on_drift": False}), ["sentiment"], UNTIL) is None
    assert on_drift(cfg, [], UNTIL) is None
    run_id = on_drift(cfg, ["sentiment"], UNTIL)
    assert run_id is not None
    manifest = json.loads((tmp_path / "lake" / "distill" / run_id / "dataset" / "manifest.json").read_text())
    assert list(manifest["counts"]) == ["sentiment"] and manifest["params"]["subtypes"] == ["sentiment"]
    # a subtype with no traffic: nothing to export, and the drift job is not disturbed
    assert on_drift(cfg, ["no-such-subtype"], UNTIL) is None
