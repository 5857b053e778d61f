"""Candidate vs. incumbent on recent production: the quality gate before a cheap tier widens.

:func:`compare` replays a held-out slice of production (requests the candidate never trained
on, :mod:`costline.serving.routing.labels`) through both policies and reports, per policy and
per (tier, task type), how often the chosen tier is adequate by the lake's labels (with a
Wilson interval), what the first attempts cost and what they cost once escalations are
paid. The gate looks at the **moved** requests: those the candidate sends to a cheaper tier
than the incumbent. A labelled interval often cannot say whether that cheaper tier is
adequate (the shadow job compared only the tier that served the request with the one above
it), so those requests are **judged** — answered on the cheaper tier and on the tier that
served them, scored like the shadow job does (:mod:`costline.jobs.scoring`), at most
``[serving.router.loop] judge_limit`` of them, through a checkpoint so nothing is paid twice.

A cheap tier passes when the Wilson lower bound (95 %) of its moved requests' adequacy
reaches ``gate`` (``[serving.router.loop] gate``); when it takes fewer than ``min_moved``
requests, too few to bound, every one must be judged and their adequacy itself must reach
``gate``. A tier that takes moved requests none of which could be judged fails: there is no
evidence the widening is safe.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from costline import contract
from costline.jobs.stats import wilson_ci
from costline.serving.errors import RoutingError
from costline.serving.registry import ModelRegistry
from costline.serving.routing.labels import LakeLabel
from costline.serving.routing.router import Decision, RoutingPolicy, StudentGate, build_policy

if TYPE_CHECKING:  # pragma: no cover
    from costline.config import Config

__all__ = ["Cell", "PolicyReplay", "Moved", "TierGate", "GateReport", "compare", "load_policy", "LakeJudge",
           "validate_loop_config"]

_ORDER = {t: i for i, t in enumerate((contract.TIER_STUDENT, *contract.API_TIERS))}


def _rank(tier: str) -> int:
    """Cost order, the student as budget (it is cheaper, but judged as budget)."""
    return _ORDER[tier] if tier != contract.TIER_STUDENT else _ORDER[contract.TIER_BUDGET]


def validate_loop_config(config: "Config") -> None:
    """Raise :class:`RoutingError` naming the ``[serving.router.loop]`` key that is out of range."""
    loop = config.serving.router.loop
    checks = [("min_labels", loop.min_labels >= 1, "at least 1"),
              ("min_per_tier", loop.min_per_tier >= 1, "at least 1"),
              ("eval_days", loop.eval_days > 0, "above 0"),
              ("train_days", loop.train_days > 0, "above 0"),
              ("gate", 0.0 < loop.gate <= 1.0, "in (0, 1]"),
              ("min_moved", loop.min_moved >= 1, "at least 1"),
              ("judge_limit", loop.judge_limit >= 0, "0 or more"),
              ("keep", loop.keep >= 1, "at least 1")]
    for key, ok, want in checks:
        if not ok:
            raise RoutingError(f"[serving.router.loop] {key} = {getattr(loop, key)!r}: must be {want}")


def load_policy(spec: str | Path, config: "Config") -> RoutingPolicy:
    """``"rules"`` (the configured heuristic) or the path of a learned policy file (``.npz``)."""
    from costline.serving.routing.learned import LearnedPolicy

    router = config.serving.router
    if str(spec) == "rules":
        return build_policy(config.serving, "rules")
    policy = LearnedPolicy.load(Path(spec), min_adequacy=router.min_adequacy, serving=config.serving)
    return StudentGate(policy, router.rules.student_task_types)


def _route_all(policy: RoutingPolicy, rows: Sequence[LakeLabel]) -> list[Decision]:
    inner = policy.inner if isinstance(policy, StudentGate) else policy
    many = getattr(inner, "route_many", None)
    if isinstance(policy, StudentGate) and callable(many):
        gated = [bool(r.task_type and r.task_type in policy.task_types) for r in rows]
        rest = [r for r, g in zip(rows, gated) if not g]
        it = iter(many([r.query for r in rest], [r.task_type for r in rest]) if rest else [])
        return [policy.route(r.query, r.task_type) if g else next(it) for r, g in zip(rows, gated)]
    if callable(many):
        return list(many([r.query for r in rows], [r.task_type for r in rows]))
    return [policy.route(r.query, r.task_type) for r in rows]


@dataclass
class Cell:
    """Requests routed to one (tier, task type), how many the labels judge, how many were adequate."""

    routed: int = 0
    judged: int = 0
    adequate: int = 0

    @property
    def rate(self) -> float | None:
        return self.adequate / self.judged if self.judged else None

    @property
    def ci(self) -> tuple[float, float] | None:
        return wilson_ci(self.adequate, self.judged) if self.judged else None

    def add(self, ok: bool | None) -> None:
        self.routed += 1
        if ok is not None:
            self.judged += 1
            self.adequate += int(ok)

    def as_dict(self) -> dict[str, Any]:
        ci = self.ci
        return {"routed": self.routed, "judged": self.judged, "adequate": self.adequate, "rate": self.rate,
                "ci_low": ci[0] if ci else None, "ci_high": ci[1] if ci else None}


@dataclass
class PolicyReplay:
    name: str
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    cost_first_usd: float = 0.0
    cost_with_escalation_usd: float = 0.0
    #: Requests whose escalation cost assumed an adequate answer the labels could not confirm.
    assumed: int = 0

    def tier_cell(self, tier: str) -> Cell:
        c = Cell()
        for (t, _), v in self.cells.items():
            if t == tier:
                c.routed += v.routed
                c.judged += v.judged
                c.adequate += v.adequate
        return c

    @property
    def tiers(self) -> list[str]:
        return sorted({t for t, _ in self.cells}, key=_rank)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "cost_first_usd": self.cost_first_usd,
                "cost_with_escalation_usd": self.cost_with_escalation_usd, "assumed_adequate": self.assumed,
                "tiers": {t: self.tier_cell(t).as_dict() for t in self.tiers},
                "cells": [{"tier": t, "task_type": k, **v.as_dict()} for (t, k), v in sorted(self.cells.items())]}


@dataclass(frozen=True)
class Moved:
    """A request the candidate sends to a cheaper tier than the incumbent does."""

    request_id: str
    task_type: str
    query: str
    from_tier: str
    to_tier: str
    #: Adequate on ``to_tier``: True / False, None when neither the labels nor a judge could say.
    adequate: bool | None
    #: "label", "judge" or "" (unjudged).
    by: str


@dataclass
class TierGate:
    tier: str
    moved: int
    judged: int
    adequate: int
    ci_low: float | None
    ci_high: float | None
    passed: bool
    reason: str

    @property
    def rate(self) -> float | None:
        return self.adequate / self.judged if self.judged else None


@dataclass
class GateReport:
    rows: int
    labelled: int
    gate: float
    candidate: PolicyReplay
    incumbent: PolicyReplay
    moved: list[Moved]
    tiers: list[TierGate]
    #: Requests the candidate sends to a dearer tier (quality can only rise; they cost more).
    moved_up: int = 0
    judge_cost_usd: float = 0.0
    window: tuple[str, str] | None = None

    @property
    def passed(self) -> bool:
        return all(t.passed for t in self.tiers)

    @property
    def failing(self) -> list[str]:
        return [t.tier for t in self.tiers if not t.passed]

    @property
    def cost_change(self) -> float | None:
        """The candidate's cost with escalation relative to the incumbent's (0.25: 25 % more); None without
        a cost. The gate judges quality only: a candidate that over-routes passes it, and this says what it costs."""
        base = self.incumbent.cost_with_escalation_usd
        return self.candidate.cost_with_escalation_usd / base - 1.0 if base > 0 else None

    def dearer_text(self) -> str | None:
        """"N requests to dearer tiers, costs X% more …" when the candidate costs more than the incumbent."""
        change = self.cost_change
        if change is None or change <= 0.005:
            return None
        return (f"{self.moved_up} requests to dearer tiers: it costs {change:.0%} more than the incumbent with "
                f"escalation (${self.candidate.cost_with_escalation_usd:.4f} vs "
                f"${self.incumbent.cost_with_escalation_usd:.4f})")

    def as_dict(self) -> dict[str, Any]:
        return {
            "window": list(self.window) if self.window else None, "rows": self.rows, "labelled": self.labelled,
            "gate": self.gate, "passed": self.passed, "failing": self.failing,
            "candidate": self.candidate.as_dict(), "incumbent": self.incumbent.as_dict(),
            "moved_down": len(self.moved), "moved_up": self.moved_up, "cost_change": self.cost_change,
            "judge_cost_usd": self.judge_cost_usd,
            "moved": [{"request_id": m.request_id, "task_type": m.task_type, "query": m.query, "from": m.from_tier,
                       "to": m.to_tier, "adequate": m.adequate, "by": m.by} for m in self.moved],
            "gate_tiers": [{"tier": t.tier, "moved": t.moved, "judged": t.judged, "adequate": t.adequate,
                            "rate": t.rate, "ci_low": t.ci_low, "ci_high": t.ci_high, "passed": t.passed,
                            "reason": t.reason} for t in self.tiers],
        }

    def format(self, *, moved_examples: int = 5) -> str:
        out = []
        if self.window:
            out.append(f"held-out production {self.window[0]} .. {self.window[1]}: {self.rows} requests, "
                       f"{self.labelled} with shadow/escalation labels")
        for rep in (self.incumbent, self.candidate):
            out.append(f"\n{rep.name}: first attempts ${rep.cost_first_usd:.4f}, with escalation "
                       f"${rep.cost_with_escalation_usd:.4f}"
                       + (f" ({rep.assumed} unjudged answers assumed adequate)" if rep.assumed else ""))
            out.append(f"  {'tier':<10}{'task type':<20}{'routed':>8}{'judged':>8}{'adequate':>10}  95% CI")
            for (t, k), c in sorted(rep.cells.items(), key=lambda kv: (_rank(kv[0][0]), kv[0][1])):
                rate = f"{c.rate:.1%}" if c.rate is not None else "-"
                ci = f"[{c.ci[0]:.2f}, {c.ci[1]:.2f}]" if c.ci else ""
                out.append(f"  {t:<10}{k or '(none)':<20}{c.routed:>8}{c.judged:>8}{rate:>10}  {ci}")
        out.append(f"\nmoved to a cheaper tier by the candidate: {len(self.moved)} requests "
                   f"({self.moved_up} moved to a dearer one)")
        pairs: dict[tuple[str, str], int] = {}
        for m in self.moved:
            pairs[(m.from_tier, m.to_tier)] = pairs.get((m.from_tier, m.to_tier), 0) + 1
        for (a, b), n in sorted(pairs.items(), key=lambda kv: (_rank(kv[0][1]), _rank(kv[0][0]))):
            out.append(f"  {a} -> {b}: {n}")
        for m in self.moved[:moved_examples]:
            verdict = {True: "adequate", False: "NOT adequate", None: "unjudged"}[m.adequate]
            out.append(f"    {m.request_id} [{m.task_type}] {m.from_tier}->{m.to_tier} {verdict}"
                       f"{f' (by {m.by})' if m.by else ''}: {m.query[:70]!r}")
        if self.judge_cost_usd:
            out.append(f"  judging the moved requests cost ${self.judge_cost_usd:.4f}")
        out.append(f"\ngate: a cheaper tier may take moved requests when the 95% Wilson lower bound of their "
                   f"adequacy is at least {self.gate:.0%} (their adequacy itself when they are few)")
        for t in self.tiers:
            rate = f"{t.rate:.1%}" if t.rate is not None else "-"
            ci = f" [{t.ci_low:.2f}, {t.ci_high:.2f}]" if t.ci_low is not None else ""
            out.append(f"  {t.tier:<10} moved {t.moved:>5}, judged {t.judged:>5}, adequate {rate}{ci}: "
                       f"{'passed' if t.passed else 'FAILED'} ({t.reason})")
        if not self.tiers:
            out.append("  the candidate widens no cheap tier: nothing to gate")
        dearer = self.dearer_text()
        if dearer:
            out.append(f"  NOTE: the candidate moves {dearer}; the gate judges quality only")
        return "\n".join(out)


#: ``judge(items) -> {request_id: adequate}`` for ``items = [(label, cheap_tier, reference_tier)]``;
#: returns the judge's verdicts and what judging cost.
Judge = Callable[[Sequence[tuple[LakeLabel, str, str]]], tuple[dict[str, bool], float]]


def _replay(name: str, rows: Sequence[LakeLabel], decisions: Sequence[Decision], registry: ModelRegistry,
            max_escalations: int, verdicts: Mapping[tuple[str, str], bool]) -> PolicyReplay:
    rep = PolicyReplay(name)

    def adequate(row: LakeLabel, tier: str) -> bool | None:
        ok = row.adequate(tier)
        if ok is None:
            ok = verdicts.get((row.request_id, contract.TIER_BUDGET if tier == contract.TIER_STUDENT else tier))
        return ok

    for row, d in zip(rows, decisions):
        ok = adequate(row, d.tier)
        rep.cells.setdefault((d.tier, row.task_type), Cell()).add(ok)

        def cost(tier: str) -> float:
            return registry.estimate_cost(tier, input_tokens=row.input_tokens, output_tokens=row.output_tokens)

        first = cost(d.tier)
        rep.cost_first_usd += first
        spent = 0.0
        for tier in registry.ladder(d.tier, max_escalations):
            spent += cost(tier)
            step = adequate(row, tier)
            if step is None:
                rep.assumed += 1
                break
            if step:
                break
        rep.cost_with_escalation_usd += spent
    return rep


def compare(
    candidate: RoutingPolicy,
    incumbent: RoutingPolicy,
    rows: Sequence[LakeLabel],
    registry: ModelRegistry,
    *,
    gate: float = 0.9,
    min_moved: int = 20,
    judge: Judge | None = None,
    judge_limit: int = 400,
    max_escalations: int = 2,
    names: tuple[str, str] = ("candidate", "incumbent"),
    window: tuple[str, str] | None = None,
) -> GateReport:
    """Replay ``rows`` through both policies; gate the requests the candidate moves to cheaper tiers."""
    if not rows:
        raise RoutingError("no held-out requests with captured content to evaluate on: widen the window "
                           "or turn on content capture ([capture] message_content)")
    cand = _route_all(candidate, rows)
    inc = _route_all(incumbent, rows)
    down = [(r, c.tier, i.tier) for r, c, i in zip(rows, cand, inc) if _rank(c.tier) < _rank(i.tier)]
    moved_up = sum(_rank(c.tier) > _rank(i.tier) for c, i in zip(cand, inc))

    def judged_as(tier: str) -> str:
        return contract.TIER_BUDGET if tier == contract.TIER_STUDENT else tier

    need = [(r, judged_as(to), r.hi or r.served_tier or frm) for r, to, frm in down if r.adequate(to) is None]
    need = [(r, to, ref) for r, to, ref in need if ref in contract.API_TIERS and _rank(ref) > _rank(to)]
    verdicts: dict[tuple[str, str], bool] = {}
    judge_cost = 0.0
    if judge is not None and need and judge_limit > 0:
        # Judge an even spread over the (cheap tier, task type) groups when over the limit.
        need = sorted(need, key=lambda x: hashlib.blake2b(x[0].request_id.encode(), digest_size=8).digest())
        picked = need[:judge_limit]
        found, judge_cost = judge(picked)
        verdicts = {(r.request_id, to): found[r.request_id] for r, to, _ in picked if r.request_id in found}

    moved = []
    for r, to, frm in down:
        ok, by = r.adequate(to), "label"
        if ok is None:
            ok = verdicts.get((r.request_id, judged_as(to)))
            by = "judge" if ok is not None else ""
        moved.append(Moved(r.request_id, r.task_type, r.query, frm, to, ok, by))

    tiers = []
    for tier in sorted({m.to_tier for m in moved}, key=_rank):
        ms = [m for m in moved if m.to_tier == tier]
        judged = [m for m in ms if m.adequate is not None]
        good = sum(bool(m.adequate) for m in judged)
        if not judged:
            tiers.append(TierGate(tier, len(ms), 0, 0, None, None, False,
                                  "no moved request could be judged: no evidence the widening is safe"))
            continue
        lo, hi = wilson_ci(good, len(judged))
        unjudged = len(ms) - len(judged)
        if len(ms) >= min_moved:
            passed = lo >= gate - 1e-12
            reason = f"lower bound {lo:.1%} {'>=' if passed else '<'} {gate:.0%}"
        else:  # too few to bound: all of them judged, and adequate as often as the gate asks
            rate = good / len(judged)
            passed = unjudged == 0 and rate >= gate - 1e-12
            reason = (f"only {len(ms)} moved (under min_moved {min_moved}): adequacy {rate:.1%} "
                      f"{'>=' if rate >= gate - 1e-12 else '<'} {gate:.0%}")
        reason += f"; {unjudged} unjudged" if unjudged else ""
        tiers.append(TierGate(tier, len(ms), len(judged), good, lo, hi, passed, reason))

    return GateReport(
        rows=len(rows), labelled=sum(r.labelled for r in rows), gate=gate,
        candidate=_replay(names[0], rows, cand, registry, max_escalations, verdicts),
        incumbent=_replay(names[1], rows, inc, registry, max_escalations, verdicts),
        moved=moved, tiers=tiers, moved_up=moved_up, judge_cost_usd=judge_cost, window=window)


def _to_anthropic(doc: str | None, query: str) -> tuple[tuple[dict[str, Any], ...], str | None]:
    """The request's conversation as the drift job sends it to a teacher (tool calls and results as text, no empty
    turn before the last: the Messages API refuses one), or the query alone when nothing of it is left to answer."""
    from costline.jobs.sampling import anthropic_messages, parse_messages

    msgs, system = anthropic_messages(parse_messages(doc, tools=True))
    if not msgs or not str(msgs[-1].get("content") or "").strip():
        msgs = ({"role": "user", "content": query},)
    return tuple(dict(m) for m in msgs), system


class LakeJudge:
    """Judges moved requests as the shadow job does: the cheap tier's answer against the reference tier's.

    ``client``: an ``anthropic.Anthropic`` (default: the jobs' client, ``[jobs.teacher]``).
    Answers go through a checkpoint under ``<lake>/jobs/checkpoints/`` keyed by the requests,
    so evaluating the same candidate twice pays nothing the second time.
    """

    def __init__(self, config: "Config", *, client: Any = None, embedder: Any = None) -> None:
        self.config = config
        self.client = client
        self.embedder = embedder

    def __call__(self, items: Sequence[tuple[LakeLabel, str, str]]) -> tuple[dict[str, bool], float]:
        from costline.jobs.drift import teacher_model
        from costline.jobs.scoring import ScoreRequest, Scorer, metric_for
        from costline.jobs.store import job_store
        from costline.jobs.teacher import AnswerRequest, Checkpoint, Regenerator, anthropic_client
        from costline.pricing import PricingTable

        cfg, dcfg, tcfg = self.config, self.config.jobs.drift, self.config.jobs.teacher
        store = job_store(cfg).init()
        pairs, reqs = [], []
        for row, tier, ref_tier in items:
            messages, system = _to_anthropic(row.messages_doc, row.query)
            own = AnswerRequest(row.request_id, teacher_model(cfg, tier), messages, system=system,
                                max_tokens=tcfg.max_tokens, purpose=f"route-gate-{tier}")
            ref = AnswerRequest(row.request_id, teacher_model(cfg, ref_tier), messages, system=system,
                                max_tokens=tcfg.max_tokens, purpose=f"route-gate-{ref_tier}")
            pairs.append((row, own, ref))
            reqs += [own, ref]
        digest = hashlib.blake2b(json.dumps(sorted(r.key for r in reqs)).encode(), digest_size=6).hexdigest()
        with Checkpoint(store.checkpoints / f"route-gate-{digest}.sqlite") as ckpt:
            client = self.client if self.client is not None else anthropic_client(cfg)
            regen = Regenerator(client, ckpt, pricing=PricingTable(cfg.pricing), concurrency=tcfg.concurrency,
                                max_error_rate=tcfg.max_error_rate)
            res = regen.run(reqs)
            cost = sum(a.cost_usd for a in ckpt.answers().values())
        items_, keys = [], []
        for row, own, ref in pairs:
            if own.key not in res.answers or ref.key not in res.answers:
                continue
            metric = metric_for(row.subtype, row.task_type, dcfg.metrics, dcfg.default_metric)
            if metric == "judge":
                metric = "cosine"  # agreement of free text, not quality: as the shadow job scores (jobs/shadow.py)
            items_.append(ScoreRequest(row.request_id, metric, row.query, res.answers[own.key].text,
                                       res.answers[ref.key].text, subtype=row.subtype, task_type=row.task_type))
            keys.append(row.request_id)
        scores = Scorer(answer_pattern=dcfg.answer_pattern, answer_patterns=dcfg.answer_patterns,
                        cosine_checks=dcfg.cosine_checks, embedder=self.embedder).score(items_)
        threshold = cfg.jobs.shadow.match_threshold
        return {k: bool(s >= threshold) for k, (s, _) in zip(keys, scores)}, cost

