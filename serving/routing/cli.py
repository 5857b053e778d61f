"""``costline route ...``: train the learned policy (from files or the lake), gate a candidate, promote, roll back."""

from __future__ import annotations

import dataclasses
import sys
from datetime import datetime, timedelta
from pathlib import Path

import click

from costline.cli import pass_config
from costline.config import Config
from costline.timeutil import utc_now_naive as _utcnow

__all__ = ["route"]

_DATA = Path(__file__).parent / "data"


@click.group()
def route() -> None:
    """The router: train the learned policy, evaluate a policy on held-out queries.

    \b
    Example:
        costline route train && costline route eval --policy learned
    """


@route.command("train")
@click.option("--data", "data_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              show_default="the shipped sample",
              help='JSON lines {"query", "task_type", "tier": cheapest adequate tier}.')
@click.option("--from-lake", is_flag=True,
              help="Train on the lake's labels: the nightly shadow job's verdicts and the escalations.")
@click.option("--since", type=click.DateTime(), default=None, help="--from-lake: first request time (UTC).")
@click.option("--until", type=click.DateTime(), default=None, help="--from-lake: end of the window (default now).")
@click.option("--out", "out_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Where to write the policy (default [serving.router] policy_path; with --from-lake a "
                   "candidate next to it, for `costline route eval --candidate`).")
@click.option("--featurizer", type=click.Choice(["minilm", "hashing"]), default=None,
              help="Query features (default [serving.router] featurizer).")
@click.option("--c", "c", type=float, default=4.0, show_default=True, help="Inverse regularisation strength.")
@pass_config
def train(config: Config, data_path: Path | None, from_lake: bool, since: datetime | None, until: datetime | None,
          out_path: Path | None, featurizer: str | None, c: float) -> None:
    """Fit a classifier (logistic regression on query embeddings) from labelled rows.

    With --from-lake the rows are production requests labelled by the nightly shadow job and
    by escalations (docs/serving.md, "The routing loop"); the policy gets a manifest with the
    training window, the label counts and the request ids an evaluation must leave out.

    \b
    Example:
        costline route train --data labelled.jsonl --out route-policy.npz
        costline route train --from-lake --since 2026-11-01
    """
    from costline.serving.routing.learned import read_rows, train_policy

    router = config.serving.router
    labels = None
    if from_lake:
        if data_path is not None:
            raise click.UsageError("give --data or --from-lake, not both")
        if since is None:
            raise click.UsageError("--from-lake needs --since (the first day of labels to learn from)")
        from costline.serving.routing.gate import validate_loop_config
        from costline.serving.routing.labels import labels_from_lake, shadow_per_night
        from costline.serving.routing.promote import candidate_path

        validate_loop_config(config)
        labels = labels_from_lake(config, since=since, until=until or _utcnow())
        click.echo(labels.format())
        labels.check(min_labels=router.loop.min_labels, min_per_tier=router.loop.min_per_tier,
                     per_night=shadow_per_night(config))
        rows = labels.rows()
        out_path = out_path or candidate_path(config)
    else:
        rows = read_rows(data_path or _DATA / "route_train.jsonl")
    policy = train_policy(rows, featurizer_name=featurizer or router.featurizer, c=c,
                          min_adequacy=router.min_adequacy, serving=config.serving)
    predicted = [d.tier for d in policy.route_many([r.query for r in rows], [r.task_type for r in rows])]
    order = ("budget", "mid", "upper", "frontier")
    ok = sum(order.index(p) >= order.index(r.tier) for p, r in zip(predicted, rows))
    path = policy.save(out_path or router.policy_path)
    click.echo(f"trained on {len(rows)} rows ({', '.join(policy.classes)}; featurizer {policy.featurizer_name}); "
               f"adequate on its own rows at min_adequacy {policy.min_adequacy}: {ok / len(rows):.1%}")
    if labels is not None:
        from costline.serving.routing.promote import file_sha256, write_manifest

        write_manifest(path, {
            "created_at": _utcnow().isoformat(), "policy_sha256": file_sha256(path),
            "featurizer": policy.featurizer_name, "min_adequacy": policy.min_adequacy, "c": c,
            "training": {**labels.summary(), "window": [labels.since.isoformat(), labels.until.isoformat()],
                         "request_ids": labels.request_ids},
        })
        click.echo(f"wrote candidate {path} (+ manifest); gate it with: costline route eval --candidate {path}")
    else:
        click.echo(f"wrote {path}; route with it: [serving.router] policy = \"learned\"")


@route.command("eval")
@click.option("--data", "data_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              show_default="the shipped held-out sample",
              help="Held-out labelled rows (same format as for train).")
@click.option("--policy", "policy_name", default=None, help="rules or learned (default [serving.router] policy).")
@click.option("--policy-path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="The learned policy file (default [serving.router] policy_path).")
@click.option("--min-adequacy", type=click.FloatRange(0, 1), default=None,
              help="Learned policy: cheapest tier with P(adequate) >= this (default [serving.router]).")
@click.option("--gate", type=click.FloatRange(0, 1), default=None,
              help="Exit with status 1 when any tier's adequacy is under this (e.g. 0.95); with --candidate, "
                   "the moved requests' lower bound (default [serving.router.loop] gate).")
@click.option("--candidate", default=None,
              help="Compare this policy (a policy file, or 'rules') with the incumbent on held-out production.")
@click.option("--incumbent", default=None, help="--candidate: the policy to compare with (default: the one in service).")
@click.option("--since", type=click.DateTime(), default=None,
              help="--candidate: start of the held-out slice (default --until minus [serving.router.loop] eval_days).")
@click.option("--until", type=click.DateTime(), default=None, help="--candidate: end of the held-out slice (default now).")
@click.option("--no-judge", is_flag=True, help="--candidate: never call a model; unlabelled moved requests stay unjudged.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_config
def eval_(config: Config, data_path: Path | None, policy_name: str | None, policy_path: Path | None,
          min_adequacy: float | None, gate: float | None, candidate: str | None, incumbent: str | None,
          since: datetime | None, until: datetime | None, no_judge: bool, fmt: str) -> None:
    """Replay held-out requests: per tier, how often the choice was adequate and what it cost.

    With --candidate: a slice of recent production the candidate never trained on, through the
    candidate and the incumbent; the gate applies to the requests the candidate moves to a
    cheaper tier (exit status 1 when a cheap tier widens past it), and the result is written
    into the candidate's manifest for `costline route promote`.

    \b
    Example:
        costline route eval --policy learned --gate 0.95
        costline route eval --candidate costline-route-policy.candidate.npz
    """
    router = config.serving.router
    changes = {k: v for k, v in (("policy_path", policy_path), ("min_adequacy", min_adequacy)) if v is not None}
    config = config.replace(serving=dataclasses.replace(config.serving, router=dataclasses.replace(router, **changes)))
    if candidate is not None:
        if data_path is not None or policy_name is not None:
            raise click.UsageError("--candidate replays the lake's held-out production: drop --data / --policy")
        _eval_candidate(config, candidate, incumbent, since, until, gate, no_judge, fmt)
        return
    from costline.serving.routing.learned import read_rows
    from costline.serving.registry import ModelRegistry
    from costline.serving.routing.evaluation import evaluate
    from costline.serving.routing.router import build_policy

    path = data_path or _DATA / "route_eval_judged.jsonl"
    policy = build_policy(config.serving, policy_name)
    registry = ModelRegistry.from_config(config)
    rows = read_rows(path)
    report = evaluate(policy, rows, registry, max_escalations=config.serving.escalation.max_escalations)
    click.echo(f"{path}: {report.rows} rows, policy {policy_name or router.policy}")
    click.echo(_provenance(path, rows))
    click.echo(report.format())
    if gate is not None:
        failing = report.failing_tiers(gate)
        if failing:
            click.echo(f"quality gate FAILED: adequacy under {gate:.0%} on {', '.join(failing)}", err=True)
            sys.exit(1)
        click.echo(f"quality gate passed: every tier at least {gate:.0%} adequate")


def _provenance(path: Path, rows: list) -> str:  # type: ignore[type-arg]
    """Say how the rows' labels were made: a shipped file's sidecar ``<name>.about``, else the rows."""
    from costline.serving.routing.evaluation import label_provenance

    about = path.with_name(path.stem + ".about")
    return label_provenance(about.read_text(encoding="utf-8") if about.exists() else None, rows)


def _eval_candidate(config: Config, candidate: str, incumbent: str | None, since: datetime | None,
                    until: datetime | None, gate: float | None, no_judge: bool, fmt: str) -> None:
    import json

    from costline.serving.registry import ModelRegistry
    from costline.serving.routing.gate import LakeJudge, compare, load_policy, validate_loop_config
    from costline.serving.routing.labels import labels_from_lake
    from costline.serving.routing.promote import file_sha256, in_service, read_manifest, write_manifest

    validate_loop_config(config)
    loop = config.serving.router.loop
    incumbent = incumbent or in_service(config)
    until = until or _utcnow()
    since = since or until - timedelta(days=loop.eval_days)
    trained: set[str] = set()
    for spec in (candidate, incumbent):
        if spec != "rules":
            trained |= set((read_manifest(spec).get("training") or {}).get("request_ids") or [])
    rows = labels_from_lake(config, since=since, until=until, exclude=trained, include_unlabelled=True)
    gate = loop.gate if gate is None else gate
    report = compare(load_policy(candidate, config), load_policy(incumbent, config), rows.labels,
                     ModelRegistry.from_config(config), gate=gate, min_moved=loop.min_moved,
                     judge=None if no_judge else LakeJudge(config), judge_limit=loop.judge_limit,
                     max_escalations=config.serving.escalation.max_escalations,
                     names=(f"candidate {candidate}", f"incumbent {incumbent}"),
                     window=(f"{since:%Y-%m-%d %H:%M}", f"{until:%Y-%m-%d %H:%M} UTC"))
    doc = report.as_dict()
    doc.update({"excluded_training_requests": rows.excluded, "candidate": candidate, "incumbent": incumbent,
                "candidate_sha256": file_sha256(candidate) if candidate != "rules" else "rules",
                "incumbent_sha256": file_sha256(incumbent) if incumbent != "rules" else "rules",
                "evaluated_at": _utcnow().isoformat(), "candidate_figures": doc.pop("candidate"),
                "incumbent_figures": doc.pop("incumbent")})
    if candidate != "rules":
        manifest = read_manifest(candidate)
        manifest["eval"] = doc
        write_manifest(candidate, manifest)
    if fmt == "json":
        click.echo(json.dumps(doc, indent=1, default=str))
    else:
        click.echo(report.format())
        click.echo(f"({rows.excluded} requests of the window left out: the policies trained on them)")
    if not report.passed:
        click.echo(f"quality gate FAILED: the candidate widens {', '.join(report.failing)} past the gate", err=True)
        sys.exit(1)
    click.echo("quality gate passed" + (f": promote it with `costline route promote {candidate}`"
                                         if candidate != "rules" else ""))


@route.command("promote")
@click.argument("candidate", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--force", is_flag=True, help="Promote even without a passing evaluation against the policy in service.")
@pass_config
def promote_cmd(config: Config, candidate: Path, force: bool) -> None:
    """Put a candidate that passed `costline route eval --candidate` into service.

    The policy it replaces is kept for `costline route rollback`; the event is recorded in the
    lake (route_promotions) and marked on the dashboard. Routing uses it once
    [serving.router] policy = "learned".

    \b
    Example:
        costline route promote costline-route-policy.candidate.npz
    """
    from costline.serving.routing.promote import promote

    event = promote(config, candidate, force=force)
    click.echo(f"promoted {candidate} -> {event.policy_path} (sha256 {event.policy_sha256[:12]}; "
               f"parent {str(event.parent_sha256)[:12]}): {event.note}")
    if config.serving.router.policy != "learned":
        click.echo('note: [serving.router] policy is "rules": set it to "learned" to route with it')


@route.command("rollback")
@pass_config
def rollback_cmd(config: Config) -> None:
    """Put back the policy the last promotion replaced.

    \b
    Example:
        costline route rollback
    """
    from costline.serving.routing.promote import rollback

    event = rollback(config)
    click.echo(f"rolled back {event.policy_path} to sha256 {event.policy_sha256[:12]} ({event.note})")


@route.command("show")
@click.argument("query")
@click.option("--task-type", default="chat", show_default=True)
@click.option("--policy", "policy_name", default=None, help="rules or learned (default [serving.router] policy).")
@pass_config
def show(config: Config, query: str, task_type: str, policy_name: str | None) -> None:
    """Print the tier a query would be routed to, and why.

    \b
    Example:
        costline route show "Explain the difference between net and gross revenue" --task-type faq
    """
    from costline.serving.registry import ModelRegistry
    from costline.serving.routing.router import Router, build_policy

    registry = ModelRegistry.from_config(config)
    decision = Router(build_policy(config.serving, policy_name), registry).route(query, task_type)
    spec = registry.tier(decision.tier)
    click.echo(f"{decision.tier} ({spec.model}): {decision.reason} [confidence {decision.confidence:.2f}]")
