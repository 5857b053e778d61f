"""Registry, the rule policy (the article's heuristic), the learned policy and `costline route eval`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from costline.cli import _register_area_commands, cli
from costline.config import Config, load_config
from costline.serving.errors import PolicyFileError, RoutingError
from costline.serving.routing.learned import HashingFeaturizer, LabelledQuery, LearnedPolicy, read_rows, train_policy
from costline.serving.registry import ModelRegistry
from costline.serving.routing.evaluation import evaluate
from costline.serving.routing.router import Router, RulePolicy, StudentGate, build_policy
from costline.serving.settings import RouteRulesConfig, RouterConfig, ServingConfig
from costline.sim.standin_model import cheapest_adequate_tier

DATA = Path(__file__).parent.parent / "serving" / "routing" / "data"
LONG = "x" * 210


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    return ModelRegistry.from_config(Config())


@pytest.fixture(scope="module")
def train_rows() -> list[LabelledQuery]:
    return read_rows(DATA / "route_train.jsonl")


@pytest.fixture(scope="module")
def eval_rows() -> list[LabelledQuery]:
    """Held-out rows labelled by judging the stand-in's answers (not by the rules the training rows
    were labelled with): adequacy here is a judgement, see tests/test_route_judged_set.py."""
    return read_rows(DATA / "route_eval_judged.jsonl")


@pytest.fixture(scope="module")
def hashing_policy(train_rows: list[LabelledQuery]) -> LearnedPolicy:
    return train_policy(train_rows, featurizer_name="hashing", min_adequacy=0.9)


# -- registry -------------------------------------------------------------------------------
def test_registry_maps_the_articles_tiers_and_the_student(registry: ModelRegistry) -> None:
    assert registry.names == ("student", "budget", "mid", "upper", "frontier")
    assert [registry.tier(t).model for t in registry.api_tiers] == [
        "claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-8", "claude-fable-5"]
    assert registry.tier("frontier").input_per_mtok == 10.0 and registry.tier("frontier").output_per_mtok == 50.0
    student = registry.tier("student")
    assert (student.provider, student.model) == ("vllm", "costline-student-lora")
    assert registry.ladder("budget", 2) == ["budget", "mid", "upper"]
    assert registry.ladder("upper", 5) == ["upper", "frontier"]
    assert registry.ladder("student", 1) == ["student", "mid"]
    assert registry.estimate_cost("mid", input_tokens=1_000_000, output_tokens=0) == pytest.approx(3.0)


def test_registry_from_toml_overrides_tier_models_and_endpoints(tmp_path: Path) -> None:
    toml = tmp_path / "costline.toml"
    toml.write_text(
        '[serving.backends]\nanthropic_base_url = "http://127.0.0.1:9"\nstudent_model = "acme-lora"\n'
        '[serving.backends.tier_models]\nbudget = "claude-haiku-4-5-20251001"\n'
        '[[pricing.models]]\nmodel = "claude-haiku-4-5"\ntier = "budget"\naliases = ["claude-haiku-4-5-20251001"]\n'
        'input_per_mtok = 1.0\noutput_per_mtok = 5.0\n')
    registry = ModelRegistry.from_config(load_config(toml, env={}))
    budget = registry.tier("budget")
    assert (budget.model, budget.base_url, budget.input_per_mtok) == ("claude-haiku-4-5-20251001", "http://127.0.0.1:9", 1.0)
    assert registry.tier("student").model == "acme-lora"
    assert "mid" not in registry  # only the budget model is listed in that file
    with pytest.raises(RoutingError, match="tier_models.budget"):
        cfg = Config()
        backends = dataclasses.replace(cfg.serving.backends, tier_models={"budget": "gpt-nope"})
        ModelRegistry.from_config(cfg.replace(serving=dataclasses.replace(cfg.serving, backends=backends)))


# -- rule policy --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("query", "task_type", "tier"),
    [
        ("Classify the sentiment of this long review. " + LONG, "classification", "budget"),
        ("How do I reset my password?", "faq", "budget"),  # under 200 characters
        ("Write a function. " + LONG, "coding", "mid"),
        ("Please EXPLAIN the invoice. " + LONG, "faq", "mid"),
        ("Reason about the contract. " + LONG, "complex_reasoning", "upper"),
        ("Write a poem about our quarter. " + LONG, "creative", "frontier"),
        ("short", "coding", "budget"),  # the length rule comes before coding, as in the article
    ],
)
def test_rule_policy_is_the_articles_heuristic(query: str, task_type: str, tier: str) -> None:
    assert RulePolicy().route(query, task_type).tier == tier


def test_rules_come_from_toml_and_student_gated_task_types_go_to_the_student(tmp_path: Path) -> None:
    toml = tmp_path / "costline.toml"
    toml.write_text('[serving.router.rules]\nstudent_task_types = ["classification"]\nshort_query_chars = 50\n'
                    'upper_task_types = ["analysis", "complex_reasoning"]\ndefault_tier = "upper"\n')
    rules = load_config(toml, env={}).serving.router.rules
    policy = RulePolicy(rules)
    assert policy.route("Classify: great", "classification").tier == "student"
    assert policy.route("How do I reset my password? " + "x" * 40, "faq").tier == "upper"  # 50-char limit, default
    assert policy.route("Analyse churn. " + LONG, "analysis").tier == "upper"
    with pytest.raises(RoutingError, match="default_tier"):
        RulePolicy(RouteRulesConfig(default_tier="platinum"))


def test_policy_registry_and_router_checks(registry: ModelRegistry, tmp_path: Path) -> None:
    serving = ServingConfig()
    assert isinstance(build_policy(serving), RulePolicy)
    with pytest.raises(RoutingError, match="use one of rules, learned"):
        build_policy(serving, "magic")
    missing = dataclasses.replace(serving, router=RouterConfig(policy="learned", policy_path=tmp_path / "none.npz"))
    with pytest.raises(PolicyFileError, match="costline route train"):
        build_policy(missing)
    small = ModelRegistry({t.name: t for t in registry if t.name != "student"})
    gated = StudentGate(RulePolicy(), ("classification",))
    with pytest.raises(RoutingError, match="registry lacks"):
        Router(gated, small).route("Classify: ok", "classification")


# -- learned policy ------------------------------------------------------------------------------
def test_sample_labels_are_the_cheapest_adequate_tier(train_rows: list[LabelledQuery]) -> None:
    assert {r.tier for r in train_rows} == {"budget", "mid", "upper", "frontier"}
    for row in train_rows[:50]:
        assert row.tier == cheapest_adequate_tier(row.query)
    assert not {r.query for r in train_rows} & {r.query for r in read_rows(DATA / "route_eval.jsonl")}


def test_learned_policy_saves_as_plain_arrays_and_routes_the_same(hashing_policy: LearnedPolicy,
                                                                  tmp_path: Path) -> None:
    path = hashing_policy.save(tmp_path / "p.npz")
    loaded = LearnedPolicy.load(path, min_adequacy=0.9)
    queries = ["How do I reset my password?", "Design a novel onboarding flow for renewal.",
               "Compare the churn trend of the last two quarters across regions and tell me what changed."]
    tasks = ["faq", "creative", "analysis"]
    assert [d.tier for d in loaded.route_many(queries, tasks)] == [hashing_policy.route(q, t).tier
                                                                   for q, t in zip(queries, tasks)]
    assert loaded.route(queries[0], "faq").tier == "budget"
    assert loaded.route(queries[1], "creative").tier == "frontier"
    assert 0.9 <= loaded.route(queries[0], "faq").confidence <= 1.0
    (tmp_path / "bad.npz").write_bytes(b"not a policy")
    with pytest.raises(PolicyFileError, match="retrain"):
        LearnedPolicy.load(tmp_path / "bad.npz")


def test_learned_policy_beats_the_heuristic_on_held_out_rows(hashing_policy: LearnedPolicy,
                                                              eval_rows: list[LabelledQuery],
                                                              registry: ModelRegistry) -> None:
    rules = evaluate(RulePolicy(), eval_rows, registry)
    learned = evaluate(hashing_policy, eval_rows, registry)
    assert learned.adequacy >= 0.95 > rules.adequacy
    # The heuristic looks cheap on first attempts but pays for its escalations.
    assert rules.cost_with_escalation_usd > rules.cost_usd * 1.5
    assert learned.cost_with_escalation_usd < rules.cost_with_escalation_usd
    assert learned.cost_with_escalation_usd < learned.frontier_cost_usd / 2
    assert learned.failing_tiers(0.9) == [] and "budget" in rules.failing_tiers(0.9)


def test_eval_counts_escalation_costs_exactly(registry: ModelRegistry) -> None:
    rows = [LabelledQuery("q1", "faq", "upper", 1000, 100), LabelledQuery("q2", "faq", "budget", 1000, 100)]
    report = evaluate(RulePolicy(), rows, registry, max_escalations=2)  # both short: budget
    budget = report.tiers["budget"]
    cost = {t: registry.estimate_cost(t, input_tokens=1000, output_tokens=100) for t in ("budget", "mid", "upper")}
    assert (budget.routed, budget.adequate) == (2, 1)
    assert budget.cost_usd == pytest.approx(2 * cost["budget"])
    assert budget.cost_with_escalation_usd == pytest.approx(2 * cost["budget"] + cost["mid"] + cost["upper"])
    assert budget.failed_after_escalation == 0
    tight = evaluate(RulePolicy(), rows[:1], registry, max_escalations=1)
    assert tight.tiers["budget"].failed_after_escalation == 1


def test_learned_policy_on_minilm_embeddings(train_rows: list[LabelledQuery]) -> None:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("sklearn")
    rows = [r for i, r in enumerate(train_rows) if i % 6 == 0]
    policy = train_policy(rows, featurizer_name="minilm", min_adequacy=0.8)
    assert policy.featurizer.encode(["x"]).shape == (1, 384)
    assert policy.route("How do I reset my password?", "faq").tier == "budget"
    assert policy.route("Design a novel onboarding flow for churn.", "creative").tier == "frontier"


def test_hashing_featurizer_is_normalised_and_deterministic() -> None:
    v = HashingFeaturizer().encode(["How do I reset my password?", ""])
    assert v.shape == (2, 384) and abs(float((v[0] ** 2).sum()) - 1.0) < 1e-5 and not v[1].any()
    assert (HashingFeaturizer().encode(["How do I reset my password?"]) == v[:1]).all()


# -- CLI ---------------------------------------------------------------------------------------------
def test_route_train_and_eval_commands(tmp_path: Path) -> None:
    _register_area_commands()
    rows = [json.loads(line) for line in (DATA / "route_train.jsonl").read_text().splitlines()[::3]]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "policy.npz"
    runner = CliRunner()
    result = runner.invoke(cli, ["route", "train", "--data", str(data), "--out", str(out), "--featurizer", "hashing"],
                           env={"COSTLINE_CONFIG": ""})
    assert result.exit_code == 0, result.output
    assert out.exists() and "trained on" in result.output
    result = runner.invoke(cli, ["route", "eval", "--policy", "learned", "--policy-path", str(out),
                                 "--min-adequacy", "0.9", "--gate", "0.8"])
    assert result.exit_code == 0, result.output
    assert "budget" in result.output and "quality gate passed" in result.output
    result = runner.invoke(cli, ["route", "eval", "--gate", "0.95"])
    assert result.exit_code == 1 and "quality gate FAILED" in result.output
    assert "route_eval_judged.jsonl" in result.output and "labels: judged" in result.output
    result = runner.invoke(cli, ["route", "eval", "--data", str(DATA / "route_eval.jsonl")])
    assert result.exit_code == 0 and "labels: oracle-labelled by the stand-in's own rules" in result.output
    result = runner.invoke(cli, ["route", "show", "How do I reset my password?", "--task-type", "faq"])
    assert result.exit_code == 0 and result.output.startswith("budget (claude-haiku-4-5)")


def test_bad_rows_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "rows.jsonl"
    bad.write_text('{"query": "q", "task_type": "faq", "tier": "budget"}\n{"query": "q", "tier": "gold"}\n')
    with pytest.raises(RoutingError, match=r"rows.jsonl:2: bad row"):
        read_rows(bad)


def test_a_given_embedding_is_used_instead_of_embedding_the_query_again(train_rows, registry) -> None:
    class Counting(HashingFeaturizer):
        calls = 0

        def encode(self, texts):
            Counting.calls += len(texts)
            return super().encode(texts)

    feat = Counting()
    policy = train_policy(train_rows[::4], featurizer_name="minilm", featurizer=feat, min_adequacy=0.9)
    queries = [("How do I reset my password?", "faq"), ("Design a novel onboarding flow for renewal.", "creative"),
               ("Write a python function that parses the invoice and handles empty input.", "coding")]
    vecs = HashingFeaturizer().encode([q for q, _ in queries])
    before = Counting.calls
    given = [Router(StudentGate(policy, ()), registry).route(q, t, embedding=v) for (q, t), v in zip(queries, vecs)]
    assert Counting.calls == before  # the featurizer was not asked again
    assert given == [policy.route(q, t) for q, t in queries] and Counting.calls == before + 3
    # A vector of another size (not this policy's featurizer) is ignored: the query is embedded.
    assert policy.route(queries[0][0], "faq", embedding=vecs[0][:10]) == given[0] and Counting.calls == before + 4

    class Legacy:  # a policy written before the keyword existed still routes
        def route(self, query, task_type):
            return RulePolicy().route(query, task_type)

    assert Router(Legacy(), registry).route("How do I reset my password?", "faq", embedding=vecs[0]).tier == "budget"
