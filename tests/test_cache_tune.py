"""Threshold tuning (table-driven, then the CLI on the shipped sample with the real model),
the [serving.cache] config section, and the missing-extra message."""

from __future__ import annotations

import builtins
import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from costline.cli import _register_area_commands, cli
from costline.config import load_config
from costline.serving.cache.tune import (
    DEFAULT_THRESHOLDS,
    default_pairs_path,
    read_pairs,
    tune_thresholds,
)
from costline.serving.errors import INSTALL_HINT, CacheError, MissingExtraError


def test_thresholds_are_085_to_099():
    assert DEFAULT_THRESHOLDS[0] == 0.85 and DEFAULT_THRESHOLDS[-1] == 0.99 and len(DEFAULT_THRESHOLDS) == 15


@pytest.mark.parametrize(
    ("sims", "labels", "target", "recommended"),
    [
        # false pairs top out at 0.905: 0.91 is the first with no false hit
        ([0.99, 0.95, 0.92, 0.905, 0.80], [True, True, True, False, False], 0.01, 0.91),
        # a false pair at 0.995: nothing up to 0.99 is clean
        ([0.99, 0.995], [True, False], 0.01, None),
        # one false hit in 4 = 25% is under a 30% target from the start
        ([0.97, 0.96, 0.86, 0.2, 0.3, 0.4], [True, True, False, False, False, False], 0.30, 0.85),
    ],
)
def test_recommends_the_lowest_threshold_under_the_target(sims, labels, target, recommended):
    report = tune_thresholds(np.array(sims), np.array(labels), max_false_hit_rate=target)
    assert report.recommended == recommended


def test_rates_per_threshold():
    report = tune_thresholds(np.array([0.95, 0.90, 0.86, 0.94]), np.array([True, True, False, False]))
    row = report.row(0.90)
    assert (row.true_hits, row.false_hits, row.hit_rate, row.false_hit_rate) == (2, 1, 1.0, 0.5)
    assert report.row(0.95).hit_rate == 0.5 and report.row(0.95).false_hit_rate == 0.0
    assert report.recommended == 0.95
    with pytest.raises(CacheError, match="both kinds"):
        tune_thresholds(np.array([0.9]), np.array([True]))


def test_bad_lines_are_named_and_the_valid_ones_kept(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join([
        json.dumps({"a": "x", "b": "y", "same_answer": True}),
        "{broken",
        json.dumps({"a": "x", "b": "", "same_answer": False}),
        json.dumps({"a": "x", "b": "z", "same_answer": "yes"}),
        "",
        json.dumps({"a": "p", "b": "q", "same_answer": False}),
    ]))
    pairs, problems = read_pairs(path)
    assert [(p.a, p.b, p.same_answer) for p in pairs] == [("x", "y", True), ("p", "q", False)]
    assert [p.split(":")[0] for p in problems] == ["line 2", "line 3", "line 4"]
    with pytest.raises(CacheError, match="cannot read"):
        read_pairs(tmp_path / "missing.jsonl")


def test_the_shipped_sample_has_both_kinds_and_negation_traps():
    pairs, problems = read_pairs(default_pairs_path())
    assert not problems and len(pairs) >= 100
    assert sum(p.same_answer for p in pairs) >= 40 and sum(not p.same_answer for p in pairs) >= 40
    assert any(p.a == "Cancel my subscription" and p.b == "Don't cancel my subscription" and not p.same_answer
               for p in pairs)


def test_cache_section_of_the_config(tmp_path):
    path = tmp_path / "costline.toml"
    path.write_text('[serving.cache]\nthreshold = 0.95\nindex = "hnsw"\n'
                    '[serving.cache.namespace_thresholds]\nbilling = 0.98\n')
    cfg = load_config(path, env={"COSTLINE_SERVING_CACHE_TTL_S": "600"}).serving.cache
    assert (cfg.threshold, cfg.index, cfg.namespace_thresholds, cfg.ttl_s) == (0.95, "hnsw", {"billing": 0.98}, 600)
    defaults = load_config(None, env={}).serving.cache
    assert defaults.threshold == 0.93 and defaults.index == "exact"


def test_a_missing_extra_names_the_install_command(monkeypatch):
    real_import = builtins.__import__

    def no_faiss(name, *args, **kwargs):
        if name == "faiss" or name.startswith("faiss."):
            raise ImportError("No module named 'faiss'", name="faiss")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "faiss", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_faiss)
    from costline.serving.cache.semantic import SemanticCache

    with pytest.raises(MissingExtraError, match=r"pip install 'costline\[serving\]'") as info:
        SemanticCache(None, dim=4)
    assert isinstance(info.value, ImportError) and INSTALL_HINT in str(info.value)


def test_serving_modules_import_without_the_heavy_dependencies():
    code = (
        "import sys\n"
        "import costline.serving.cache.semantic, costline.serving.embedding, costline.serving.cli\n"
        "heavy = [m for m in ('faiss', 'torch', 'sentence_transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the CLI (loads the real model once) --------------------------------------------------------
def test_cli_train_then_tune_on_labelled_pairs(tmp_path):
    from costline.serving.cache.admission import AdmissionModel, default_pair_set_path

    _register_area_commands()
    rows = [json.loads(line) for line in default_pair_set_path().read_text().splitlines()]
    picked = []
    for category in ("paraphrase", "near_repeat", "negation", "entity_swap", "number_date", "scope", "temporal"):
        for split in ("train", "test"):
            picked += [r for r in rows if r["category"] == category and r["split"] == split][:(12 if split ==
                                                                                                   "train" else 4)]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in picked))
    runner = CliRunner()
    model = tmp_path / "admission.json"
    result = runner.invoke(cli, ["cache", "train", "--pairs", str(pairs), "--out", str(model)],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "trained on 84 pairs" in result.output
    loaded = AdmissionModel.load(model)
    assert loaded.trained_on["pairs"] == "pairs.jsonl" and loaded.points
    (tmp_path / "c.toml").write_text(f'[serving.cache]\nadmission_model = "{model}"\n')
    result = runner.invoke(cli, ["--config", str(tmp_path / "c.toml"), "cache", "tune", "--pairs", str(pairs),
                                 "--target", "0.01"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "(split test): 8 true pairs, 20 false pairs" in out
    assert "threshold-only cache" in out and "verified cache" in out
    header = [line.split() for line in out.splitlines() if line.strip().startswith("threshold ")][0]
    assert header[3:] == ["entity_swap", "negation", "number_date", "scope", "temporal"]
    thresholds = [float(line.split()[0]) for line in out.splitlines()
                  if line.count("%") >= 7 and line.split()[0][0] == "0" and "<- operating" not in line]
    assert thresholds[:len(DEFAULT_THRESHOLDS)] == list(DEFAULT_THRESHOLDS)
    assert "<- operating point for target 1.0%" in out and "traps rejected by guard:" in out


def test_cli_help_carries_examples():
    _register_area_commands()
    runner = CliRunner()
    for args in (["cache"], ["cache", "tune"], ["cache", "train"], ["cache", "stats"], ["cache", "invalidate"]):
        result = runner.invoke(cli, [*args, "--help"])
        assert result.exit_code == 0 and "Example:" in result.output, args


def test_cli_stats_and_invalidate_on_a_saved_cache(tmp_path):
    from costline.serving.cache.semantic import SemanticCache

    class Named:  # the packaged model's name and size; nothing is embedded
        model_name, dim = "all-MiniLM-L6-v2", 384

    rng = np.random.default_rng(0)
    cache = SemanticCache(Named(), dim=384)
    cache.store_vectors(rng.normal(size=(6, 384)), ["x"] * 6, tenant="acme", doc_hashes=[["d1"]] * 2 + [[]] * 4)
    cache.store_vectors(rng.normal(size=(3, 384)), ["y"] * 3, tenant="globex")
    cache.save(tmp_path / "c")
    _register_area_commands()
    runner = CliRunner()
    out = runner.invoke(cli, ["cache", "stats", "--path", str(tmp_path / "c")], catch_exceptions=False).output
    assert "entries=9 tenants=2 indexes=2" in out
    result = runner.invoke(cli, ["cache", "invalidate", "--path", str(tmp_path / "c"), "--doc", "d1",
                                 "--tenant", "globex"], catch_exceptions=False)
    assert result.exit_code == 0 and "removed 5 entries; 4 left" in result.output
    out = runner.invoke(cli, ["cache", "stats", "--path", str(tmp_path / "c")], catch_exceptions=False).output
    assert "entries=4 tenants=1 indexes=1" in out
    result = runner.invoke(cli, ["cache", "invalidate", "--path", str(tmp_path / "c")])
    assert result.exit_code != 0 and "--doc" in result.output
    # no saved cache and no replication topic: a running gateway's cache (in its memory) is out of reach, and the
    # command says so instead of failing on "save one first", which a gateway never does
    result = runner.invoke(cli, ["cache", "invalidate", "--path", str(tmp_path / "none"), "--doc", "d1"])
    assert result.exit_code != 0 and "replication_topic" in result.output and "restart the gateway" in result.output
    assert not (tmp_path / "none").exists()


def test_tune_shows_the_pair_model_per_threshold_and_its_configured_row_is_what_the_cache_serves(tmp_path):
    """With verify_pair_model (the default) tune adds a row per pair-model threshold; the configured row's recall
    and false-hit rate are those of a real cache looking the pairs up one by one (computed here, not by tune)."""
    from costline.serving.cache.admission import default_pair_set_path
    from costline.serving.cache.semantic import SemanticCache
    from costline.serving.embedding import Embedder
    from costline.serving.settings import CacheConfig

    _register_area_commands()
    rows = [json.loads(line) for line in default_pair_set_path().read_text().splitlines()]
    picked = []
    for category in ("paraphrase", "near_repeat", "negation", "entity_swap", "number_date", "scope", "temporal"):
        picked += [r for r in rows if r["category"] == category and r["split"] == "test"][:6]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in picked))
    (tmp_path / "c.toml").write_text('[serving.cache]\nembedder = "torch"\n')
    runner = CliRunner()
    result = runner.invoke(cli, ["--config", str(tmp_path / "c.toml"), "cache", "tune", "--pairs", str(pairs)],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = result.output.splitlines()
    start = next(i for i, line in enumerate(out) if line.startswith("verified cache + pair model"))
    assert "torch;" in out[start]
    table = [line.split() for line in out[start + 2:start + 10] if "%" in line]
    assert [r[0] for r in table] == ["0.01", "0.02", "0.05", "0.10", "0.20", "0.30", "0.50"]
    recalls = [float(r[1].rstrip("%")) for r in table]
    assert recalls == sorted(recalls, reverse=True)  # a higher threshold never serves more
    configured = next(r for r, line in zip(table, out[start + 2:]) if "<- configured" in line)
    assert configured[0] == "0.05"
    cache = SemanticCache(Embedder().load(), CacheConfig(path=tmp_path / "c", embedder="torch"))
    served = []
    for i, r in enumerate(picked):
        cache.store(r["q1"], "answer", tenant="t", namespace=f"p{i}")
        served.append(cache.lookup(r["q2"], tenant="t", namespace=f"p{i}") is not None)
    same = [s for s, r in zip(served, picked) if r["same_answer"]]
    traps = [s for s, r in zip(served, picked) if not r["same_answer"]]
    assert configured[1] == f"{100 * sum(same) / len(same):.1f}%"
    assert configured[2] == f"{100 * sum(traps) / len(traps):.1f}%"
    (tmp_path / "off.toml").write_text('[serving.cache]\nverify_pair_model = false\n')
    result = runner.invoke(cli, ["--config", str(tmp_path / "off.toml"), "cache", "tune", "--pairs", str(pairs)],
                           catch_exceptions=False)
    assert "pair model" not in result.output
