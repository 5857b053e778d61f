"""``costline route ...``: train the learned routing policy, replay a held-out set, route one query."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import click

from costline.cli import pass_config
from costline.config import Config

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
@click.option("--data", "data_path", type=click.Path(path_type=Path, dir_okay=False),
              default=_DATA / "route_train.jsonl", show_default="the shipped sample",
              help='JSON lines {"query", "task_type", "tier": cheapest adequate tier}.')
@click.option("--out", "out_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Where to write the policy (default [serving.router] policy_path).")
@click.option("--featurizer", type=click.Choice(["minilm", "hashing"]), default=None,
              help="Query features (default [serving.router] featurizer).")
@click.option("--c", "c", type=float, default=4.0, show_default=True, help="Inverse regularisation strength.")
@pass_config
def train(config: Config, data_path: Path, out_path: Path | None, featurizer: str | None, c: float) -> None:
    """Fit a classifier (logistic regression on query embeddings) from labelled rows.

    \b
    Example:
        costline route train --data labelled.jsonl --out route-policy.npz
    """
    from costline.serving.policy_learned import read_rows, train_policy

    router = config.serving.router
    rows = read_rows(data_path)
    policy = train_policy(rows, featurizer_name=featurizer or router.featurizer, c=c,
                          min_adequacy=router.min_adequacy, serving=config.serving)
    predicted = [d.tier for d in policy.route_many([r.query for r in rows], [r.task_type for r in rows])]
    order = ("budget", "mid", "upper", "frontier")
    ok = sum(order.index(p) >= order.index(r.tier) for p, r in zip(predicted, rows))
    path = policy.save(out_path or router.policy_path)
    click.echo(f"trained on {len(rows)} rows ({', '.join(policy.classes)}; featurizer {policy.featurizer_name}); "
               f"adequate on its own rows at min_adequacy {policy.min_adequacy}: {ok / len(rows):.1%}")
    click.echo(f"wrote {path}; route with it: [serving.router] policy = \"learned\"")


@route.command("eval")
@click.option("--data", "data_path", type=click.Path(path_type=Path, dir_okay=False),
              default=_DATA / "route_eval_judged.jsonl", show_default="the shipped held-out sample, judged",
              help="Held-out labelled rows (same format as for train).")
@click.option("--policy", "policy_name", default=None, help="rules or learned (default [serving.router] policy).")
@click.option("--policy-path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="The learned policy file (default [serving.router] policy_path).")
@click.option("--min-adequacy", type=float, default=None,
              help="Learned policy: cheapest tier with P(adequate) >= this (default [serving.router]).")
@click.option("--gate", type=float, default=None,
              help="Exit with status 1 when any tier's adequacy is under this (e.g. 0.95).")
@pass_config
def eval_(config: Config, data_path: Path, policy_name: str | None, policy_path: Path | None,
          min_adequacy: float | None, gate: float | None) -> None:
    """Replay a held-out set: per tier, how often the choice was adequate and what it cost.

    \b
    Example:
        costline route eval --policy learned --gate 0.95
    """
    from costline.serving.policy_learned import read_rows
    from costline.serving.registry import ModelRegistry
    from costline.serving.route_eval import evaluate
    from costline.serving.router import build_policy

    router = config.serving.router
    changes = {k: v for k, v in (("policy_path", policy_path), ("min_adequacy", min_adequacy)) if v is not None}
    serving = dataclasses.replace(config.serving, router=dataclasses.replace(router, **changes))
    policy = build_policy(serving, policy_name)
    registry = ModelRegistry.from_config(config)
    report = evaluate(policy, read_rows(data_path), registry,
                      max_escalations=config.serving.escalation.max_escalations)
    click.echo(f"{data_path}: {report.rows} rows, policy {policy_name or router.policy}")
    click.echo(_provenance(data_path))
    click.echo(report.format())
    if gate is not None:
        failing = report.failing_tiers(gate)
        if failing:
            click.echo(f"quality gate FAILED: adequacy under {gate:.0%} on {', '.join(failing)}", err=True)
            sys.exit(1)
        click.echo(f"quality gate passed: every tier at least {gate:.0%} adequate")


def _provenance(path: Path) -> str:
    """Say how the rows' labels were made: a shipped file's sidecar ``<name>.about`` tells."""
    about = path.with_name(path.stem + ".about")
    if about.exists():
        return "labels: " + about.read_text(encoding="utf-8").strip()
    return "labels: as given in the file (their provenance is unknown to costline)"


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
    from costline.serving.router import Router, build_policy

    registry = ModelRegistry.from_config(config)
    decision = Router(build_policy(config.serving, policy_name), registry).route(query, task_type)
    spec = registry.tier(decision.tier)
    click.echo(f"{decision.tier} ({spec.model}): {decision.reason} [confidence {decision.confidence:.2f}]")
