"""The default `costline route eval` set is labelled by judging answers, not by the stand-in's rules:
relabelling a slice of it from the stand-in's answers, scored with the drift job's metric, gives the
shipped labels; the oracle-labelled files say what they are."""

from __future__ import annotations

from pathlib import Path

import anthropic

from costline.config import Config
from costline.sim.nightly_demo import demo_jobs_config
from costline.serving.routing.learned import LabelledQuery, read_rows
from costline.serving.routing.evaluation import judged_rows
from costline.serving.settings import StandInConfig
from costline.sim.standin import StandInServer

DATA = Path(__file__).parent.parent / "serving" / "routing" / "data"


def test_the_judged_eval_set_is_what_judging_the_stand_ins_answers_gives(tmp_path: Path) -> None:
    shipped = read_rows(DATA / "route_eval_judged.jsonl")
    rows = [LabelledQuery(r.query, r.task_type, "frontier") for r in shipped[::8]]  # labels thrown away
    with StandInServer(StandInConfig(port=0, latency_scale=0.0)) as srv:
        client = anthropic.Anthropic(base_url=srv.url, api_key="costline-standin", max_retries=1)
        got = judged_rows(rows, client=client, config=demo_jobs_config(Config()), checkpoint=tmp_path / "c.sqlite")
        paid = len(srv.log.paid())
    assert [g.tier for g in got] == [r.tier for r in shipped[::8]]
    assert {g.tier for g in got} == {"budget", "mid", "upper", "frontier"}
    assert paid == 4 * len(rows)  # every tier answered every query once
    assert "judged" in (DATA / "route_eval_judged.about").read_text()
    for name in ("route_eval", "route_train"):
        assert "oracle-labelled" in (DATA / f"{name}.about").read_text()
