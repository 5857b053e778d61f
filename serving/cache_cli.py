"""``costline cache ...``: tune the similarity threshold, inspect and invalidate a saved cache."""

from __future__ import annotations

from pathlib import Path

import click

from costline.cli import pass_config
from costline.config import Config

__all__ = ["cache"]


@click.group()
def cache() -> None:
    """The semantic cache: tune its threshold, inspect or invalidate a saved cache.

    \b
    Example:
        costline cache tune --pairs my-pairs.jsonl --target 0.01
    """


@cache.command("tune")
@click.option("--pairs", "pairs_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="JSON lines {\"a\":..., \"b\":..., \"same_answer\": bool} (default: the shipped sample).")
@click.option("--target", type=float, default=None,
              help="Highest acceptable false-hit rate (default [serving.cache] tune_max_false_hit_rate, 0.01).")
@click.option("--show", type=int, default=5, show_default=True,
              help="How many of the most similar false pairs to list.")
@pass_config
def tune(config: Config, pairs_path: Path | None, target: float | None, show: int) -> None:
    """Hit rate on true pairs and false-hit rate on false pairs for thresholds 0.85-0.99,
    and the lowest threshold whose false-hit rate stays under the target.

    \b
    Example:
        costline cache tune --pairs support-pairs.jsonl --target 0.005
    """
    from costline.serving.cache_tune import default_pairs_path, pair_similarities, read_pairs, tune_thresholds
    from costline.serving.embedding_onnx import make_embedder

    cfg = config.serving.cache
    target = cfg.tune_max_false_hit_rate if target is None else target
    if not 0.0 < target < 1.0:
        raise click.BadParameter("must be above 0 and below 1", param_hint="--target")
    path = pairs_path or default_pairs_path()
    pairs, problems = read_pairs(path)
    for p in problems[:10]:
        click.echo(f"warning: {path}: {p} (skipped)", err=True)
    if len(problems) > 10:
        click.echo(f"warning: {path}: {len(problems) - 10} more bad lines skipped", err=True)
    embedder = make_embedder(cfg)  # tune with the runtime that serves ([serving.cache] embedder)
    sims = pair_similarities(embedder, pairs)
    report = tune_thresholds(sims, [p.same_answer for p in pairs], max_false_hit_rate=target)
    click.echo(f"{path}: {report.true_pairs} true pairs, {report.false_pairs} false pairs "
               f"(model {embedder.model_name})")
    click.echo(f"{'threshold':>9}  {'hit rate':>8}  {'false-hit rate':>14}")
    for r in report.rows:
        mark = "  <- recommended" if r.threshold == report.recommended else ""
        click.echo(f"{r.threshold:>9.2f}  {r.hit_rate:>8.1%}  {r.false_hit_rate:>14.1%}{mark}")
    if report.recommended is None:
        click.echo(f"no threshold up to 0.99 keeps the false-hit rate under {target:.1%}: "
                   "keep the cache off for this traffic, or split it into namespaces")
    else:
        click.echo(f"recommended threshold: {report.recommended:.2f} (false-hit rate under {target:.1%}); "
                   f"configured: {cfg.threshold:.2f}")
    false_pairs = sorted(((float(s), p) for s, p in zip(sims, pairs) if not p.same_answer),
                         key=lambda x: -x[0])[:max(show, 0)]
    if false_pairs:
        click.echo("most similar false pairs:")
        for s, p in false_pairs:
            click.echo(f"  {s:.3f}  {p.a!r} / {p.b!r}")


@cache.command("stats")
@click.option("--path", "cache_path", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Saved cache folder (default [serving.cache] path).")
@pass_config
def stats(config: Config, cache_path: Path | None) -> None:
    """Entries, tenants and indexes of a saved cache.

    \b
    Example:
        costline cache stats --path /var/lib/costline/cache
    """
    cache_obj = _load(config, cache_path)
    s = cache_obj.stats()
    click.echo(f"entries={s.entries} tenants={s.tenants} indexes={s.partitions} tombstones={s.tombstones} "
               f"index={cache_obj.config.index}")


@cache.command("invalidate")
@click.option("--path", "cache_path", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Saved cache folder (default [serving.cache] path).")
@click.option("--doc", "docs", multiple=True, help="Remove every entry built from this document hash.")
@click.option("--tenant", "tenants", multiple=True, help="Remove every entry of this tenant.")
@pass_config
def invalidate(config: Config, cache_path: Path | None, docs: tuple[str, ...], tenants: tuple[str, ...]) -> None:
    """Remove entries built from documents, or a tenant's entries, from a saved cache.

    \b
    Example:
        costline cache invalidate --path /var/lib/costline/cache --doc 9f2c1e
    """
    if not docs and not tenants:
        raise click.UsageError("give --doc HASH or --tenant NAME (each may repeat)")
    cache_obj = _load(config, cache_path)
    removed = sum(cache_obj.invalidate_by_doc(d) for d in docs)
    removed += sum(cache_obj.invalidate_tenant(t) for t in tenants)
    cache_obj.save(_path(config, cache_path))
    click.echo(f"removed {removed} entries; {len(cache_obj)} left")


def _path(config: Config, cache_path: Path | None) -> Path:
    path = cache_path or config.serving.cache.path
    if path is None:
        raise click.UsageError("give --path, or set [serving.cache] path")
    return path


def _load(config: Config, cache_path: Path | None):  # type: ignore[no-untyped-def]
    from costline.serving.cache import SemanticCache
    from costline.serving.embedding import Embedder

    cfg = config.serving.cache
    # The embedder only names the model here; nothing is embedded, so it never loads.
    return SemanticCache.load(_path(config, cache_path), Embedder(cfg.model_path), cfg)
