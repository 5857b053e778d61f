"""``costline cache ...``: train and tune the verified cache, inspect and invalidate a saved cache."""

from __future__ import annotations

from pathlib import Path

import click

from costline.cli import pass_config
from costline.config import Config

__all__ = ["cache"]


@click.group()
def cache() -> None:
    """The semantic cache: train its admission model, tune it, inspect or invalidate a saved cache.

    \b
    Example:
        costline cache tune --pairs my-pairs.jsonl --target 0.01
    """


@cache.command("train")
@click.option("--pairs", "pairs_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Labelled pairs, JSON lines {q1, q2, same_answer, category, domain, split} "
                   "(default: costline's own pair set).")
@click.option("--split", default="train", show_default=True,
              help="Train on the pairs of this split ('all': every pair; a file without splits: every pair).")
@click.option("--out", "out_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Model file to write (default [serving.cache] admission_model).")
@click.option("--namespace", default=None,
              help="Say which namespace the model is for (recorded in the file; point "
                   "[serving.cache.namespace_admission_models] at it).")
@pass_config
def train(config: Config, pairs_path: Path | None, split: str, out_path: Path | None, namespace: str | None) -> None:
    """Fit the verified cache's admission model (logistic regression) on labelled question pairs.

    The model is plain JSON (weights and an operating-point table), never a pickle.

    \b
    Example:
        costline cache train --pairs support-pairs.jsonl --out billing-admission.json --namespace billing
    """
    from costline.serving.cache.admission import score_pairs, train_admission
    from costline.serving.embedding import Embedder

    cfg = config.serving.cache
    out = out_path or cfg.admission_model
    if out is None:
        raise click.UsageError("give --out FILE, or set [serving.cache] admission_model")
    path, pairs = _pairs(pairs_path, split)
    embedder = Embedder(cfg.model_path, threads=cfg.embed_threads or None)
    scores = score_pairs(embedder, pairs)
    model = train_admission(scores, min_similarity=cfg.verify_min_similarity, trained_on={
        "pairs": path.name, "split": split, "count": len(pairs), "namespace": namespace or "*",
        "embedding_model": embedder.model_name})
    model.save(out)
    point = model.point_for(cfg.target_false_hit_rate)
    click.echo(f"trained on {len(pairs)} pairs of {path} (split {split}) -> {out}")
    if point is None:
        click.echo(f"no operating point keeps the false-hit rate under {cfg.target_false_hit_rate:.1%}: "
                   "the cache will use the strictest one; label more pairs")
    else:
        click.echo(f"at target {cfg.target_false_hit_rate:.1%}: threshold {point.threshold:.2f}, recall "
                   f"{point.recall:.1%}, false-hit rate {point.false_hit_rate:.1%} (cross-validated)")


@cache.command("train-pair-model")
@click.option("--pairs", "pairs_paths", type=click.Path(path_type=Path, dir_okay=False), multiple=True,
              required=True, help="Labelled pairs, JSON lines {q1, q2, same_answer, ...}; repeat for more files.")
@click.option("--split", "splits", multiple=True, default=("train", "dev"), show_default=True,
              help="Train on the pairs of these splits (repeat; 'all': every pair). Pairs with no split "
                   "are always used; keep a split out to measure on.")
@click.option("--out", "out_path", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="Model file to write (safetensors); point [serving.cache] pair_model at it.")
@click.option("--layers", type=click.IntRange(1, 6), default=6, show_default=True,
              help="MiniLM layers the cross-encoder keeps (the shipped model: 6; fewer is faster per lookup "
                   "but, trained on our pairs, two were much weaker: docs/cache.md).")
@click.option("--epochs", type=click.IntRange(1, 20), default=2, show_default=True)
@click.option("--threshold", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.05, show_default=True,
              help="Probability of one shared answer a candidate needs (recorded in the file).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--learning-rate", type=click.FloatRange(0.0, 1.0, min_open=True), default=4e-5, show_default=True)
@click.option("--init", "init_path", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="Fine-tune this pair model further instead of starting from MiniLM (its layers).")
@click.option("--sample", type=click.IntRange(1), default=None,
              help="Train on this many of the labelled pairs, drawn at random (with --init: what it relearns "
                   "beside the new negatives).")
@click.option("--cross-negatives-from", "cross_paths", type=click.Path(path_type=Path, dir_okay=False),
              multiple=True, help="Also train on different-answer pairs mined from this file (repeat): two "
                                  "questions of different pairs of one domain, the kind a populated cache meets "
                                  "(pairs of the --split splits only).")
@click.option("--cross-negatives", "cross_count", type=click.IntRange(0), default=250, show_default=True,
              help="How many to mine per --cross-negatives-from file.")
@click.option("--cross-max-cosine", type=click.FloatRange(0.0, 1.0), default=0.8, show_default=True,
              help="Mine no two questions more similar than this (above it two pairs may ask the same thing).")
@click.option("--cross-per-question", type=click.IntRange(1), default=2, show_default=True,
              help="Each question's nearest questions of other pairs that are candidates.")
@click.option("--cross-pick", type=click.Choice(["similar", "random"]), default="similar", show_default=True,
              help="Keep the most similar candidates, or draw them at random (every cosine band: docs/cache.md).")
@pass_config
def train_pair_model_cmd(config: Config, pairs_paths: tuple[Path, ...], splits: tuple[str, ...], out_path: Path,
                         layers: int, epochs: int, threshold: float, seed: int, learning_rate: float,
                         init_path: Path | None, sample: int | None, cross_paths: tuple[Path, ...],
                         cross_count: int, cross_max_cosine: float, cross_per_question: int,
                         cross_pick: str) -> None:
    """Fine-tune the verified cache's pair model: a small cross-encoder (the packaged MiniLM's first
    layers) that reads both questions together and has the last word on a candidate hit.

    Minutes on a CPU (the shipped model, 8,088 pairs at six layers and two epochs: about 15 on two cores).
    The file is safetensors (never a pickle) holding only the fine-tuned layers; the word embeddings stay
    MiniLM's.

    \b
    Example:
        costline cache train-pair-model --pairs support-pairs.jsonl --split train --out pair-model.safetensors
        costline cache train-pair-model --init pair-model.safetensors --pairs support-pairs.jsonl \\
            --cross-negatives-from support-pairs.jsonl --sample 2000 --epochs 1 --learning-rate 2e-5 \\
            --out v2.safetensors
        costline cache train-pair-model --init pair-model.safetensors --pairs support-pairs.jsonl \\
            --cross-negatives-from support-pairs.jsonl --cross-pick random --cross-per-question 4 \\
            --cross-max-cosine 0.85 --epochs 1 --learning-rate 2e-5 --out v3.safetensors
    """
    import random

    from costline.serving.cache.admission import read_pairs
    from costline.serving.cache.pair_model import PairModel, mine_cross_negatives, train_pair_model

    def labelled(path: Path) -> list:  # type: ignore[type-arg]
        found, problems = read_pairs(path)
        for p in problems[:10]:
            click.echo(f"warning: {path}: {p} (skipped)", err=True)
        return found

    def trained(found: list) -> list:  # type: ignore[type-arg]
        return [p for p in found if "all" in splits or not p.split or p.split in splits]

    pairs = []
    for path in pairs_paths:
        pairs += trained(labelled(path))
    if not pairs:
        raise click.UsageError(f"no valid pairs of split {', '.join(splits)} in {', '.join(map(str, pairs_paths))}")
    negatives = []
    if cross_paths and cross_count:
        from costline.serving.embedding import Embedder

        embedder = Embedder().load()
        for path in cross_paths:
            # only questions of the training splits: a kept-out split stays unseen
            negatives += mine_cross_negatives(trained(labelled(path)), embedder, count=cross_count,
                                              max_cosine=cross_max_cosine, per_question=cross_per_question,
                                              pick=cross_pick, seed=seed)
    if sample is not None and sample < len(pairs):
        pairs = random.Random(seed).sample(pairs, sample)
    init = PairModel.load(init_path) if init_path is not None else None
    data = negatives + pairs
    with click.progressbar(length=1, label=f"training on {len(data)} pairs", show_pos=True) as bar:
        def progress(step: int, steps: int, loss: float) -> None:
            bar.length = steps
            bar.update(1)

        trained_on = {"pairs": [p.name for p in pairs_paths], "splits": list(splits), "count": len(pairs),
                      "layers": init.layers if init else layers, "epochs": epochs, "seed": seed,
                      "learning_rate": learning_rate}
        if init is not None:
            trained_on["init"] = {"file": init_path.name, "trained_on": init.trained_on}
        if negatives:
            trained_on["cross_negatives"] = {"from": [p.name for p in cross_paths], "count": len(negatives),
                                             "max_cosine": cross_max_cosine, "per_question": cross_per_question,
                                             "pick": cross_pick}
        model = train_pair_model(data, layers=layers, epochs=epochs, threshold=threshold, seed=seed,
                                 learning_rate=learning_rate, progress=progress, trained_on=trained_on, init=init)
    model.save(out_path)
    click.echo(f"trained on {len(data)} pairs ({len(negatives)} mined) -> {out_path} ({model.layers} layers, "
               f"threshold {threshold})")


@cache.command("tune")
@click.option("--pairs", "pairs_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Labelled pairs, JSON lines {q1, q2, same_answer, category, ...} or {a, b, same_answer} "
                   "(default: costline's own pair set).")
@click.option("--split", default="test", show_default=True,
              help="Evaluate the pairs of this split ('all': every pair; a file without splits: every pair).")
@click.option("--target", type=float, default=None,
              help="Highest acceptable false-hit rate (default [serving.cache] target_false_hit_rate, 0.01).")
@click.option("--show", type=int, default=5, show_default=True,
              help="How many of the most similar false pairs to list.")
@pass_config
def tune(config: Config, pairs_path: Path | None, split: str, target: float | None, show: int) -> None:
    """Recall on same-answer pairs and false-hit rate per trap category: the threshold-only cache per
    cosine threshold (0.85-0.99), then the verified cache per operating point of its admission model, then
    (with [serving.cache] verify_pair_model) at the chosen point with the pair model, per its threshold.

    \b
    Example:
        costline cache tune --pairs support-pairs.jsonl --target 0.005
    """
    import numpy as np

    from costline.serving.cache.admission import AdmissionModel, default_model_path, score_pairs
    from costline.serving.cache.tune import tune_thresholds
    from costline.serving.cache.verify import Verifier
    from costline.serving.embedding_onnx import make_embedder

    cfg = config.serving.cache
    target = cfg.target_false_hit_rate if target is None else target
    if not 0.0 < target < 1.0:
        raise click.BadParameter("must be above 0 and below 1", param_hint="--target")
    path, pairs = _pairs(pairs_path, split)
    model_path = cfg.admission_model or default_model_path()
    model = AdmissionModel.load(model_path)
    embedder = make_embedder(cfg)  # tune with the runtime that serves ([serving.cache] embedder)
    scores = score_pairs(embedder, pairs, Verifier())
    labels = scores.labels
    traps = [p.trap for p in pairs]
    cats = sorted({t for t, same in zip(traps, labels) if not same})
    report = tune_thresholds(scores.cosine, labels, max_false_hit_rate=target)
    click.echo(f"{path} (split {split}): {report.true_pairs} true pairs, {report.false_pairs} false pairs "
               f"(model {embedder.model_name})")
    click.echo("threshold-only cache (a cosine threshold alone):")
    click.echo(_header("threshold", cats))
    for r in report.rows:
        served = scores.cosine >= r.threshold
        mark = "  <- recommended" if r.threshold == report.recommended else ""
        click.echo(_row(f"{r.threshold:.2f}", served, labels, traps, cats) + mark)
    if report.recommended is None:
        click.echo(f"no threshold up to 0.99 keeps the false-hit rate under {target:.1%}")
    else:
        click.echo(f"recommended threshold: {report.recommended:.2f} (false-hit rate under {target:.1%}); "
                   f"configured: {cfg.threshold:.2f}")
    guarded = np.array([r is None for r in scores.reasons]) & (scores.cosine >= model.min_similarity)
    prob = model.probabilities(scores.features)
    chosen = model.at(target).threshold
    click.echo(f"verified cache (guards, then the admission model {model_path}; mode {cfg.mode}):")
    click.echo(_header("point", cats))
    for p in model.points:
        mark = f"  <- operating point for target {target:.1%}" if p.threshold == chosen else ""
        click.echo(_row(f"{p.threshold:.2f}", guarded & (prob >= p.threshold), labels, traps, cats) + mark)
    click.echo(_row("guards", guarded, labels, traps, cats) + "  (guards alone, no admission model)")
    if cfg.mode == "verified" and cfg.verify_pair_model:
        _pair_model_rows(cfg, model.at(target), pairs, scores.cosine, labels, traps, cats)
    rejected: dict[str, int] = {}
    for r, same in zip(scores.reasons, labels):
        if r is not None and not same:
            rejected[r] = rejected.get(r, 0) + 1
    click.echo("traps rejected by guard: " + ", ".join(f"{k} {v}" for k, v in sorted(rejected.items(),
                                                                                    key=lambda kv: -kv[1])))
    false_pairs = sorted(((float(s), p) for s, p in zip(scores.cosine, pairs) if not p.same_answer),
                         key=lambda x: -x[0])[:max(show, 0)]
    if false_pairs:
        click.echo("most similar false pairs:")
        for s, p in false_pairs:
            click.echo(f"  {s:.3f}  {p.q1!r} / {p.q2!r}")


class _Asked:
    """A pair model that records its probability for every candidate it is asked about and serves it, so the
    rows below can apply each threshold to the same run."""

    def __init__(self, model) -> None:  # type: ignore[no-untyped-def]
        self.model = model
        self.seen: dict[tuple[str, str], float] = {}

    def same_answer(self, stored: str, asked: str, threshold: float | None = None) -> bool:
        self.seen[(stored, asked)] = self.model.probability(stored, asked)
        return True


def _pair_model_rows(cfg, admission, pairs, cosine, labels, traps, cats) -> None:  # type: ignore[no-untyped-def]
    """The verified cache at the chosen operating point with the pair model, per pair-model threshold: each
    pair goes through the stage as a lookup would (guards, admission, then the pair model where the stage
    asks it)."""
    import numpy as np

    from costline.serving.cache.semantic import build_pair_model
    from costline.serving.cache.verify import Verifier

    lazy = build_pair_model(cfg)
    path = lazy.path
    asked = _Asked(lazy.get())
    verifier = Verifier({"*": admission}, pair_model=asked, strict_below=cfg.pair_model_strict_below,
                        strict_threshold=cfg.pair_model_strict_threshold, time_threshold=cfg.pair_model_time_threshold)
    passed = np.array([verifier.check(p.q2, p.q1, float(c)) is None for p, c in zip(pairs, cosine)])
    prob = np.array([asked.seen.get((p.q1, p.q2), 1.0) for p in pairs])  # 1.0: served without asking it
    runtime = lazy.runtime + (" int8" if lazy.int8 else "")
    below, strict = verifier.strict_below, verifier.strict_threshold
    band = f"; under cosine {below:g} at least {strict:g}, the strict band" if strict > 0 else ""
    click.echo(f"verified cache + pair model ({path}, {runtime}; {len(asked.seen)} pairs reach it), per pair-model "
               f"threshold{band}:")
    click.echo(_header("pm thr", cats))
    band_need = np.array([verifier.pair_threshold(float(c), verifier.features(p.q2), verifier.features(p.q1)) or 0.0
                          for p, c in zip(pairs, cosine)])
    for t in sorted({0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, round(lazy.threshold, 4)}):
        mark = "  <- configured" if abs(t - lazy.threshold) < 1e-9 else ""
        need = np.maximum(band_need, t)  # as the model's same_answer: never under its own threshold
        click.echo(_row(f"{t:.2f}", passed & (prob >= need), labels, traps, cats) + mark)


def _pairs(pairs_path: Path | None, split: str):  # type: ignore[no-untyped-def]
    from costline.serving.cache.admission import default_pair_set_path, read_pairs

    path = pairs_path or default_pair_set_path()
    pairs, problems = read_pairs(path)
    for p in problems[:10]:
        click.echo(f"warning: {path}: {p} (skipped)", err=True)
    if len(problems) > 10:
        click.echo(f"warning: {path}: {len(problems) - 10} more bad lines skipped", err=True)
    if split != "all" and any(p.split for p in pairs):
        pairs = [p for p in pairs if p.split == split]
    if not pairs:
        raise click.UsageError(f"{path}: no valid pairs (split {split})")
    return path, pairs


def _header(first: str, cats: list[str]) -> str:
    return f"{first:>9}  {'recall':>7}  {'false-hit':>9}  " + "  ".join(f"{c[:11]:>11}" for c in cats)


def _row(first: str, served, labels, traps, cats) -> str:  # type: ignore[no-untyped-def]
    import numpy as np

    labels = np.asarray(labels, dtype=bool)
    traps = np.asarray(traps)
    recall = served[labels].mean() if labels.any() else 0.0
    fhr = served[~labels].mean() if (~labels).any() else 0.0
    per = [served[~labels & (traps == c)].mean() for c in cats]
    return f"{first:>9}  {recall:>7.1%}  {fhr:>9.1%}  " + "  ".join(f"{v:>11.1%}" for v in per)


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

    With [serving.cache] replication_topic the invalidations are published too, so every replica
    (every worker of `costline serve --workers N`, or its one process) drops the entries; a path holding
    no saved cache (the workers keep theirs in PATH/worker-K) then only publishes. Without it, a running
    gateway's cache is in its memory and this cannot reach it: set replication_topic, or restart it.

    \b
    Example:
        costline cache invalidate --path /var/lib/costline/cache --doc 9f2c1e
        COSTLINE_SERVING_CACHE_REPLICATION_TOPIC=costline_cache costline cache invalidate --doc 9f2c1e
    """
    if not docs and not tenants:
        raise click.UsageError("give --doc HASH or --tenant NAME (each may repeat)")
    from costline.serving.cache.store import MANIFEST

    path = _path(config, cache_path)
    saved = (path / MANIFEST).is_file()
    if not saved and not config.serving.cache.replication_topic:
        # a running `costline serve` without replication keeps its cache in memory: nothing here reaches it
        raise click.ClickException(
            f"no saved cache at {path}, and no [serving.cache] replication_topic: a running `costline serve` keeps "
            "its cache in memory only, where this command cannot reach it. To invalidate while it runs, set "
            "[serving.cache] replication_topic (one worker too: it applies the topic's invalidations within about a "
            "second) and run this again; otherwise restart the gateway (it starts with an empty cache)")
    if saved or not config.serving.cache.replication_topic:
        cache_obj = _load(config, cache_path, kafka=config.kafka)
    else:  # nothing saved here: publish the invalidations for the replicas, keep nothing locally
        from costline.serving.cache.semantic import SemanticCache
        from costline.serving.embedding import Embedder

        cache_obj = SemanticCache(Embedder(config.serving.cache.model_path), config.serving.cache, kafka=config.kafka)
        click.echo(f"no saved cache at {path}: publishing the invalidations only")
    removed = sum(cache_obj.invalidate_by_doc(d) for d in docs)
    removed += sum(cache_obj.invalidate_tenant(t) for t in tenants)
    if saved or not config.serving.cache.replication_topic:
        cache_obj.save(path)
        click.echo(f"removed {removed} entries; {len(cache_obj)} left")
    if cache_obj.replication is not None:  # replicas drop them too, once the topic has the invalidations
        sent = cache_obj.force_flush(10.0)
        click.echo(f"invalidations {'published to' if sent else 'NOT all published to'} "
                   f"{config.serving.cache.replication_topic}")
        cache_obj.shutdown()
        if not sent:
            raise SystemExit(1)


def _path(config: Config, cache_path: Path | None) -> Path:
    path = cache_path or config.serving.cache.path
    if path is None:
        raise click.UsageError("give --path, or set [serving.cache] path")
    return path


def _load(config: Config, cache_path: Path | None, kafka=None):  # type: ignore[no-untyped-def]
    from costline.serving.cache.semantic import SemanticCache
    from costline.serving.embedding import Embedder

    cfg = config.serving.cache
    # The embedder only names the model here; nothing is embedded, so it never loads.
    return SemanticCache.load(_path(config, cache_path), Embedder(cfg.model_path), cfg, kafka=kafka)
