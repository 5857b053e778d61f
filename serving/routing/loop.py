"""The nightly retraining step of the routing loop (opt-in: ``[serving.router.loop] nightly``).

When the ``routing_tier_match_drop`` alert condition holds on some tier after the shadow job,
:func:`retrain_candidate` trains a candidate on the latest labels (``train_days`` before the
held-out slice), evaluates it against the policy in service on the last ``eval_days``
(:func:`costline.serving.routing.gate.compare`, moved requests judged), writes the candidate and its
manifest next to ``policy_path`` and, only with ``auto_promote``, promotes it when it passed.
The nightly run records it as the job ``route-retrain`` in ``job_runs`` (skipped when the
condition does not hold or there are too few labels), with the verdict as its result.

The hand-off to the alerts goes through the lake: every retrain (and every one skipped for too few
labels) writes its verdict to ``<lake>/jobs/route_retrains/`` (:func:`record_retrain`, one row per
tier the gate judged). The ``routing_tier_match_drop`` rule reads it and puts the verdict — passed or
refused, the requests moved to cheaper tiers, their adequacy with its 95 % CI, where the candidate
file is and the command to promote it — in the alert's text (console and Slack). The nightly run
evaluates the alert rules after this step, so the firing message already carries the verdict.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from costline.errors import CostlineError

if TYPE_CHECKING:  # pragma: no cover
    from costline.config import Config
    from costline.serving.routing.gate import GateReport

__all__ = ["RetrainResult", "tier_match_breaches", "retrain_candidate", "record_retrain", "record_skipped"]

log = logging.getLogger(__name__)


@dataclass
class RetrainResult:
    candidate: Path
    breaches: list[str]
    labels: int
    report: "GateReport"
    promoted: bool
    cost_usd: float
    incumbent: str = "rules"
    #: The held-out slice the gate judged: (since, until), naive UTC.
    window: tuple[datetime, datetime] | None = None

    def summary(self) -> str:
        verdict = "gate passed" if self.report.passed else f"gate FAILED on {', '.join(self.report.failing)}"
        then = ("promoted" if self.promoted else
                "not promoted: run `costline route promote` to put it in service" if self.report.passed else
                "not promoted")
        dearer = self.report.dearer_text()
        return (f"tier-match drop on {', '.join(self.breaches)}: candidate {self.candidate} trained on "
                f"{self.labels} labels moves {len(self.report.moved)} requests to cheaper tiers"
                f"{f' and {dearer}' if dearer else ''}; {verdict}; {then}")


def _retrain_id(until: datetime, at: datetime) -> str:
    return f"route-retrain@{until:%Y%m%dT%H%M}.{at:%Y%m%dT%H%M%S%f}"


def record_retrain(config: "Config", result: RetrainResult, *, until: datetime,
                   now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> str:
    """Write the verdict of a retrain to ``route_retrains`` (one row per gated tier); its id."""
    from costline.jobs.store import job_store, utc_naive
    from costline.serving.routing.promote import file_sha256

    at = utc_naive(now())
    rid = _retrain_id(utc_naive(until), at)
    rep = result.report
    since = result.window[0] if result.window else None
    base = {"retrain_id": rid, "evaluated_at": at, "window_since": since, "window_until": utc_naive(until),
            "status": "evaluated", "trigger": ",".join(result.breaches), "candidate": str(result.candidate),
            "candidate_sha256": file_sha256(result.candidate) if Path(result.candidate).exists() else None,
            "incumbent": result.incumbent, "labels": result.labels, "passed": rep.passed,
            "failing": ",".join(rep.failing), "promoted": result.promoted, "moved_down": len(rep.moved),
            "moved_up": rep.moved_up, "gate": rep.gate, "judge_cost_usd": rep.judge_cost_usd}
    rows = [{**base, "tier": t.tier, "tier_moved": t.moved, "tier_judged": t.judged, "tier_adequate": t.adequate,
             "ci_low": t.ci_low, "ci_high": t.ci_high, "tier_passed": t.passed, "reason": t.reason}
            for t in rep.tiers] or [base]
    job_store(config).init().write("route_retrains", rid, rows)
    return rid


def record_skipped(config: "Config", *, until: datetime, breaches: list[str], reason: str,
                   now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> str:
    """Write a retrain that could not train (too few labels) to ``route_retrains``; its id."""
    from costline.jobs.store import job_store, utc_naive

    at = utc_naive(now())
    rid = _retrain_id(utc_naive(until), at)
    job_store(config).init().write("route_retrains", rid, [{
        "retrain_id": rid, "evaluated_at": at, "window_until": utc_naive(until), "status": "skipped",
        "trigger": ",".join(breaches), "reason": reason}])
    return rid


def tier_match_breaches(config: "Config", now: datetime) -> list[str]:
    """Tiers on which the ``routing_tier_match_drop`` alert condition holds now (no alert is sent)."""
    from costline.alerts import Condition, evaluate, rules_from_config
    from costline.alerts.source import AlertSource

    rules = rules_from_config(config.alerts, ["routing_tier_match_drop"])
    if not rules:
        return []
    snap = AlertSource(config).snapshot(now, ["routing_tier_match_drop"])
    obs = evaluate(rules[0], snap, now) or []
    return sorted(o.labels.get("tier", "?") for o in obs if o.condition == Condition.BREACH)


def retrain_candidate(
    config: "Config",
    *,
    until: datetime,
    client: Any = None,
    embedder: Any = None,
    featurizer: Any = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    breaches: list[str] | None = None,
) -> RetrainResult:
    """Train, evaluate and (with ``auto_promote``) promote; raises :class:`NotEnoughLabelsError` when
    the lake holds too few labels. ``breaches`` defaults to :func:`tier_match_breaches`. Either way
    the outcome is written to ``route_retrains`` for the alert (:func:`record_retrain`)."""
    from costline.timeutil import utc_naive
    from costline.serving.routing.learned import train_policy
    from costline.serving.registry import ModelRegistry
    from costline.serving.routing.gate import LakeJudge, compare, load_policy, validate_loop_config
    from costline.serving.routing.labels import NotEnoughLabelsError, labels_from_lake, shadow_per_night
    from costline.serving.routing.promote import (candidate_path, file_sha256, in_service, promote, read_manifest,
                                                write_manifest)

    validate_loop_config(config)
    router = config.serving.router
    loop = router.loop
    until = utc_naive(until)
    if breaches is None:
        breaches = tier_match_breaches(config, until)
    held_since = until - timedelta(days=loop.eval_days)
    labels = labels_from_lake(config, since=held_since - timedelta(days=loop.train_days), until=held_since)
    try:
        labels.check(min_labels=loop.min_labels, min_per_tier=loop.min_per_tier,
                     per_night=shadow_per_night(config))
    except NotEnoughLabelsError as exc:
        try:
            record_skipped(config, until=until, breaches=breaches, reason=str(exc), now=now)
        except CostlineError as err:
            log.warning("routing: could not record the skipped retrain for the alerts: %s", err)
        raise
    policy = train_policy(labels.rows(), featurizer_name=router.featurizer, featurizer=featurizer,
                          min_adequacy=router.min_adequacy, serving=config.serving)
    path = policy.save(candidate_path(config))
    write_manifest(path, {
        "created_at": utc_naive(now()).isoformat(), "policy_sha256": file_sha256(path),
        "featurizer": policy.featurizer_name, "min_adequacy": policy.min_adequacy, "trigger": breaches,
        "training": {**labels.summary(), "window": [labels.since.isoformat(), labels.until.isoformat()],
                     "request_ids": labels.request_ids},
    })
    incumbent = in_service(config)
    trained = set(labels.request_ids) | set(
        (read_manifest(incumbent).get("training") or {}).get("request_ids") or [] if incumbent != "rules" else [])
    held = labels_from_lake(config, since=held_since, until=until, exclude=trained, include_unlabelled=True)
    judge = LakeJudge(config, client=client, embedder=embedder)
    report = compare(load_policy(path, config), load_policy(incumbent, config), held.labels,
                     ModelRegistry.from_config(config), gate=loop.gate, min_moved=loop.min_moved, judge=judge,
                     judge_limit=loop.judge_limit, max_escalations=config.serving.escalation.max_escalations,
                     names=(f"candidate {path}", f"incumbent {incumbent}"),
                     window=(f"{held_since:%Y-%m-%d %H:%M}", f"{until:%Y-%m-%d %H:%M} UTC"))
    doc = report.as_dict()
    doc.update({"excluded_training_requests": held.excluded, "candidate": str(path), "incumbent": incumbent,
                "candidate_sha256": file_sha256(path),
                "incumbent_sha256": "rules" if incumbent == "rules" else file_sha256(incumbent),
                "evaluated_at": utc_naive(now()).isoformat(), "candidate_figures": doc.pop("candidate"),
                "incumbent_figures": doc.pop("incumbent")})
    manifest = read_manifest(path)
    manifest["eval"] = doc
    write_manifest(path, manifest)
    promoted = False
    if loop.auto_promote and report.passed:
        promote(config, path, now=now)
        promoted = True
    result = RetrainResult(path, breaches, len(labels.labels), report, promoted, report.judge_cost_usd,
                           incumbent=str(incumbent), window=(held_since, until))
    try:  # the verdict is in the manifest and the job's result either way; the alert just lacks it
        record_retrain(config, result, until=until, now=now)
    except CostlineError as exc:
        log.warning("routing: could not record the retrain's verdict for the alerts: %s", exc)
    return result
