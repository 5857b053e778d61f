"""Learned-policy files from the real world: truncated by a full disk or a half-finished copy, written by an
older version, or naming features this version no longer computes. Each is refused when it is loaded (at
start, with :class:`PolicyFileError` saying to retrain) — never loaded to fail, or to misroute, on every request.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from costline.serving.errors import PolicyFileError
from costline.serving.routing.learned import LearnedPolicy, read_rows, train_policy
from costline.serving.routing.router import build_policy
from costline.serving.settings import RouterConfig, ServingConfig

DATA = Path(__file__).parent.parent / "serving" / "routing" / "data"


@pytest.fixture(scope="module")
def policy() -> LearnedPolicy:
    return train_policy(read_rows(DATA / "route_train.jsonl"), featurizer_name="hashing", min_adequacy=0.9)


def _write(path: Path, meta, coef, intercept) -> Path:
    with path.open("wb") as f:
        np.savez(f, coef=coef, intercept=intercept, meta=np.array(json.dumps(meta)))
    return path


def _meta(policy: LearnedPolicy, **over) -> dict:
    return {"format": "costline-route-policy/1", "classes": list(policy.classes),
            "task_types": list(policy.task_types), "featurizer": policy.featurizer_name, **over}


@pytest.mark.parametrize("cut", [0.5, 0.0, 0.95])
def test_a_truncated_policy_file_is_a_policy_file_error(policy, tmp_path: Path, cut: float) -> None:
    whole = policy.save(tmp_path / "p.npz").read_bytes()
    bad = tmp_path / "cut.npz"
    bad.write_bytes(whole[:int(len(whole) * cut)])
    with pytest.raises(PolicyFileError, match="retrain"):
        LearnedPolicy.load(bad)


def test_the_served_policy_truncated_stops_the_start_with_a_policy_file_error(policy, tmp_path: Path) -> None:
    whole = policy.save(tmp_path / "p.npz").read_bytes()
    served = tmp_path / "served.npz"
    served.write_bytes(whole[:len(whole) // 3])
    serving = dataclasses.replace(ServingConfig(), router=RouterConfig(policy="learned", policy_path=served))
    with pytest.raises(PolicyFileError, match="served.npz"):
        build_policy(serving)


@pytest.mark.parametrize(("what", "meta"), [
    ("no classes (an older writer)", lambda p: {k: v for k, v in _meta(p).items() if k != "classes"}),
    ("no featurizer", lambda p: {k: v for k, v in _meta(p).items() if k != "featurizer"}),
    ("meta is a list", lambda p: ["costline-route-policy/1"]),
    ("meta is a number", lambda p: 1),
])
def test_metadata_of_another_shape_is_a_policy_file_error(policy, tmp_path: Path, what, meta) -> None:
    path = _write(tmp_path / "p.npz", meta(policy), policy.coef, policy.intercept)
    with pytest.raises(PolicyFileError, match="retrain"):
        LearnedPolicy.load(path)


def test_a_featurizer_this_version_lacks_is_refused_at_load(policy, tmp_path: Path) -> None:
    # before: it loaded, then every request raised RoutingError("featurizer = 'tfidf'")
    path = _write(tmp_path / "p.npz", _meta(policy, featurizer="tfidf"), policy.coef, policy.intercept)
    with pytest.raises(PolicyFileError, match="tfidf"):
        LearnedPolicy.load(path)


def test_task_types_that_do_not_match_the_weights_are_refused_at_load(policy, tmp_path: Path) -> None:
    # one task type fewer than the weights were fitted on: before, it loaded and every request raised ValueError
    meta = _meta(policy, task_types=list(policy.task_types)[:-1])
    path = _write(tmp_path / "p.npz", meta, policy.coef, policy.intercept)
    with pytest.raises(PolicyFileError, match="features"):
        LearnedPolicy.load(path)


def test_weights_for_another_embedding_size_are_refused_at_load(policy, tmp_path: Path) -> None:
    path = _write(tmp_path / "p.npz", _meta(policy), policy.coef[:, :100], policy.intercept)
    with pytest.raises(PolicyFileError, match="features"):
        LearnedPolicy.load(path)


def test_classes_that_do_not_match_the_weights_are_refused_rather_than_misrouting(policy, tmp_path: Path) -> None:
    # four rows of weights, three classes named: before, the fourth column was silently dropped by zip()
    assert len(policy.classes) == 4
    meta = _meta(policy, classes=list(policy.classes)[:3])
    path = _write(tmp_path / "p.npz", meta, policy.coef, policy.intercept)
    with pytest.raises(PolicyFileError, match="classes"):
        LearnedPolicy.load(path)


def test_a_good_file_still_loads_and_routes_the_same(policy, tmp_path: Path) -> None:
    loaded = LearnedPolicy.load(policy.save(tmp_path / "p.npz"), min_adequacy=0.9)
    q = "Explain the difference between the two invoices and which one we should pay first. " * 3
    assert loaded.route(q, "faq") == policy.route(q, "faq")
