"""The quality gate before widening a cheap tier: replay labelled queries through a policy.

Each held-out row says the cheapest adequate API tier of its query. The policy's choice is
*adequate* when it is that tier or a more capable one (a student choice is judged as
budget). Costs use the registry's prices on the row's token counts; "with escalation"
adds what the ladder spends when the first answer is not adequate (each failed tier
is paid for, then the next one up, at most ``max_escalations`` times), which is the
article's warning: over-routing costs more than it saves once escalations are counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from costline import contract
from costline.serving.routing.learned import LabelledQuery
from costline.serving.registry import ModelRegistry
from costline.serving.routing.router import Decision, RoutingPolicy

__all__ = ["TierStats", "EvalReport", "evaluate", "judged_rows", "oracle_label_share", "label_provenance"]


@dataclass
class TierStats:
    tier: str
    routed: int = 0
    adequate: int = 0
    #: Cost of the first attempt on the chosen tier.
    cost_usd: float = 0.0
    #: Cost once inadequate answers are escalated up the ladder.
    cost_with_escalation_usd: float = 0.0
    #: Rows still inadequate after the ladder ran out.
    failed_after_escalation: int = 0

    @property
    def adequacy(self) -> float:
        return self.adequate / self.routed if self.routed else 0.0


@dataclass
class EvalReport:
    rows: int
    tiers: dict[str, TierStats] = field(default_factory=dict)
    #: Every row on the frontier tier, and every row on its labelled (cheapest adequate) tier.
    frontier_cost_usd: float = 0.0
    oracle_cost_usd: float = 0.0

    @property
    def adequate(self) -> int:
        return sum(t.adequate for t in self.tiers.values())

    @property
    def adequacy(self) -> float:
        return self.adequate / self.rows if self.rows else 0.0

    @property
    def cost_usd(self) -> float:
        return sum(t.cost_usd for t in self.tiers.values())

    @property
    def cost_with_escalation_usd(self) -> float:
        return sum(t.cost_with_escalation_usd for t in self.tiers.values())

    def failing_tiers(self, min_adequacy: float) -> list[str]:
        """Tiers whose adequacy is under ``min_adequacy``: widening them is not yet proven safe."""
        return [t.tier for t in self.tiers.values() if t.routed and t.adequacy < min_adequacy]

    def format(self) -> str:
        lines = [f"{'tier':<10}{'routed':>8}{'adequate':>10}{'cost $':>12}{'w/ escalation $':>18}{'unresolved':>12}"]
        for t in self.tiers.values():
            lines.append(f"{t.tier:<10}{t.routed:>8}{t.adequacy:>9.1%} {t.cost_usd:>12.4f}"
                         f"{t.cost_with_escalation_usd:>18.4f}{t.failed_after_escalation:>12}")
        lines.append(f"{'all':<10}{self.rows:>8}{self.adequacy:>9.1%} {self.cost_usd:>12.4f}"
                     f"{self.cost_with_escalation_usd:>18.4f}"
                     f"{sum(t.failed_after_escalation for t in self.tiers.values()):>12}")
        lines.append(f"baseline: everything on frontier ${self.frontier_cost_usd:.4f}; "
                     f"every row on its cheapest adequate tier ${self.oracle_cost_usd:.4f}")
        return "\n".join(lines)


def _decisions(policy: RoutingPolicy, rows: Sequence[LabelledQuery]) -> list[Decision]:
    many = getattr(policy, "route_many", None)
    if callable(many):
        return list(many([r.query for r in rows], [r.task_type for r in rows]))
    return [policy.route(r.query, r.task_type) for r in rows]


def evaluate(policy: RoutingPolicy, rows: Sequence[LabelledQuery], registry: ModelRegistry, *,
             max_escalations: int = 2) -> EvalReport:
    """Replay ``rows`` through ``policy``; per chosen tier: adequacy and cost."""
    report = EvalReport(rows=len(rows))
    order = list(contract.API_TIERS)
    for name in registry.names:
        report.tiers[name] = TierStats(name)

    def adequate(tier: str, label: str) -> bool:
        judged = contract.TIER_BUDGET if tier == contract.TIER_STUDENT else tier
        return order.index(judged) >= order.index(label)

    def cost(tier: str, row: LabelledQuery) -> float:
        return registry.estimate_cost(tier, input_tokens=row.input_tokens, output_tokens=row.output_tokens)

    for row, decision in zip(rows, _decisions(policy, rows)):
        stats = report.tiers.setdefault(decision.tier, TierStats(decision.tier))
        stats.routed += 1
        first = cost(decision.tier, row)
        stats.cost_usd += first
        report.frontier_cost_usd += cost(order[-1], row)
        report.oracle_cost_usd += cost(row.tier, row)
        if adequate(decision.tier, row.tier):
            stats.adequate += 1
            stats.cost_with_escalation_usd += first
            continue
        spent, resolved = first, False
        for tier in registry.ladder(decision.tier, max_escalations)[1:]:
            spent += cost(tier, row)
            if adequate(tier, row.tier):
                resolved = True
                break
        stats.cost_with_escalation_usd += spent
        stats.failed_after_escalation += 0 if resolved else 1
    report.tiers = {k: v for k, v in report.tiers.items() if v.routed}
    return report


def judged_rows(
    rows: Sequence[LabelledQuery],
    *,
    client: Any,
    config: Any,
    checkpoint: Any,
) -> list[LabelledQuery]:
    """Relabel ``rows`` by an adequacy judgement instead of a rule: every API tier answers each query
    (``client``: an ``anthropic.Anthropic``), each answer is scored against the frontier's with the
    drift job's metric for the row's task type (:mod:`costline.jobs.scoring`), and the label is the
    cheapest tier whose score reaches ``[jobs.shadow] match_threshold`` (frontier when none does).
    Token counts are the frontier answer's. ``checkpoint``: a path for the answers (resumable).
    """
    from costline.jobs.drift import teacher_model
    from costline.jobs.scoring import ScoreRequest, Scorer, metric_for
    from costline.jobs.teacher import AnswerRequest, Checkpoint, Regenerator
    from costline.pricing import PricingTable

    dcfg, tcfg = config.jobs.drift, config.jobs.teacher
    tiers = list(contract.API_TIERS)
    asks = [[AnswerRequest.of(f"row{i}", teacher_model(config, t), r.query, max_tokens=tcfg.max_tokens,
                              purpose=f"route-eval-{t}") for t in tiers] for i, r in enumerate(rows)]
    with Checkpoint(checkpoint) as ckpt:
        res = Regenerator(client, ckpt, pricing=PricingTable(config.pricing), concurrency=tcfg.concurrency,
                          max_error_rate=0.0).run([a for per in asks for a in per])
    items = []
    for r, per in zip(rows, asks):
        ref = res.answers[per[-1].key].text
        metric = metric_for(None, r.task_type, dcfg.metrics, dcfg.default_metric)
        metric = "cosine" if metric == "judge" else metric  # agreement, as the shadow job scores (jobs/shadow.py)
        items += [ScoreRequest(a.request_id, metric, r.query, res.answers[a.key].text, ref, task_type=r.task_type)
                  for a in per[:-1]]
    scores = iter(Scorer(answer_pattern=dcfg.answer_pattern, answer_patterns=dcfg.answer_patterns,
                         cosine_checks=dcfg.cosine_checks).score(items))
    out = []
    threshold = config.jobs.shadow.match_threshold
    for r, per in zip(rows, asks):
        ok = [next(scores)[0] >= threshold for _ in per[:-1]]
        label = next((t for t, good in zip(tiers, ok) if good), tiers[-1])
        ref = res.answers[per[-1].key]
        out.append(LabelledQuery(r.query, r.task_type, label, ref.input_tokens, ref.output_tokens))
    return out


def oracle_label_share(rows: Sequence[LabelledQuery]) -> float:
    """Share of ``rows`` whose label is the stand-in's own rule label (``cheapest_adequate_tier``, a
    keyword table). At 1.0 the set measures agreement with that table, not adequacy of answers."""
    if not rows:
        return 0.0
    from costline.sim.standin_model import cheapest_adequate_tier  # the simulation, only when asked

    return sum(cheapest_adequate_tier(r.query) == r.tier for r in rows) / len(rows)


#: Fewer rows than this say nothing about where their labels came from.
_MIN_ROWS_TO_JUDGE_PROVENANCE = 20


def label_provenance(about: str | None, rows: Sequence[LabelledQuery]) -> str:
    """One line saying how an eval set's labels were made: the shipped file's sidecar text when there
    is one; else a warning when every label is the stand-in's rule label (oracle-labelled rows).

    A judged set whose every label still equals the rule label says so too: on the stand-in, whose
    answers are adequate exactly where its keyword table says, judging answers reproduces the table.
    """
    all_oracle = len(rows) >= _MIN_ROWS_TO_JUDGE_PROVENANCE and oracle_label_share(rows) == 1.0
    if about:
        line = "labels: " + " ".join(about.split())
        if all_oracle and "oracle-labelled" not in about:
            line += ("; note: every label equals the stand-in's own rule label, so against the stand-in this "
                     "measures agreement with its keyword table")
        return line
    if all_oracle:
        return ("labels: WARNING every row's label is the stand-in's own rule (standin_model.cheapest_adequate_tier, "
                "a keyword table): oracle-labelled, so adequacy here is agreement with that table, not a "
                "judgement of answers")
    return "labels: as given in the file (their provenance is unknown to costline)"
