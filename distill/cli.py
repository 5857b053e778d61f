"""``costline distill ...``: the distillation pipeline from the command line."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from costline.cli import pass_config
from costline.config import Config
from costline.jobs.cli import WHEN

__all__ = ["commands", "distill"]

log = logging.getLogger(__name__)

_RUN = click.option("--run", "run_id", default=None, help="Run id (default: the latest run).")


@click.group("distill")
def distill() -> None:
    """Distil a student from production traffic: export, teacher, train, eval, gate, promote.

    \b
    Example:
        costline distill run --base-model /models/qwen2.5-1.5b-instruct --promote
    """


@contextmanager
def _recorder(config: Config, enabled: bool) -> Iterator[Any]:
    """A Recorder whose spans go to Kafka like the app's (so the teacher's cost lands in the lake)."""
    if not enabled:
        yield None
        return
    try:
        from costline.collectors import Recorder
        from costline.collectors.tracing import setup_tracing

        provider = setup_tracing("costline-distill", config=config, set_global=False)
    except Exception as exc:  # noqa: BLE001 - telemetry never stops the pipeline
        click.echo(f"warning: teacher calls are not recorded as spans ({exc}); start Kafka with "
                   "`costline kafka up`", err=True)
        yield None
        return
    try:
        yield Recorder(provider, capture=config.capture)
    finally:
        provider.shutdown()


def _print_export(r: Any) -> None:
    click.echo(f"run {r.run.run_id}: {r.train} train, {r.eval} eval from {r.eligible} eligible requests "
               f"-> {r.run.dataset}")
    from costline.distill.dataset import pair_label

    split = {(p["task_type"], p["subtype"]): p.get("split") or {} for p in r.manifest.get("pairs", [])}
    for (tt, sub), c in sorted(r.pairs.items()):
        sp = split.get((tt, sub), {})
        line = f"  {pair_label(tt, sub):32s} train {c['train']:6d}  eval {c['eval']:5d}"
        if sp:
            line += f"  ({sp['eval_share']:.1%} held out, {sp['clusters']} clusters"
            if sp.get("split_again_up_to") is not None:
                line += f", split again up to cosine {sp['split_again_up_to']:.3f}"
            if sp.get("eval_items_near_train"):
                line += (f"; {sp['eval_items_near_train']} eval items have a train item at cosine >= "
                         f"{sp['cluster_threshold']:.2f}")
            line += ")"
        click.echo(line)
    tenants = r.manifest.get("tenants", {})
    if tenants:
        click.echo("  tenants: " + ", ".join(f"{t} {c['train'] + c['eval']}" for t, c in tenants.items()))
    for why, n in sorted(r.skipped.items()):
        click.echo(f"  skipped {n:6d}: {why}")


@distill.command("export")
@click.option("--since", type=WHEN, default=None, help="Start (default: until - [distill] window_days).")
@click.option("--until", type=WHEN, default=None, help="End (UTC; default: now).")
@click.option("--size", type=int, default=None, help="Requests to export (default: [distill] sample_size).")
@click.option("--subtype", "subtypes", multiple=True, help="Only these subtypes (default: [distill] subtypes / all).")
@click.option("--run", "run_id", default=None, help="Run id (default: derived from the window and parameters).")
@pass_config
def export_cmd(config: Config, since: datetime | None, until: datetime | None, size: int | None,
               subtypes: tuple[str, ...], run_id: str | None) -> None:
    """Sample, clean, deduplicate and split production requests into a dataset + manifest.

    \b
    Example:
        costline distill export --since -30d --size 20000
    """
    from costline.distill.dataset import export_dataset

    _print_export(export_dataset(config, since=since, until=until, sample_size=size,
                                 subtypes=subtypes or None, run_id=run_id))


@distill.command("teacher")
@_RUN
@click.option("--sync", is_flag=True, help="Synchronous calls instead of the Message Batches API.")
@click.option("--no-spans", is_flag=True, help="Do not record the teacher calls as spans.")
@pass_config
def teacher_cmd(config: Config, run_id: str | None, sync: bool, no_spans: bool) -> None:
    """Answer the run's items with the teacher tier (batches at half price; resumable, never paid twice).

    \b
    Example:
        costline distill teacher --run distill-20261108T0200-1a2b3c4d
    """
    from costline.distill.runs import DistillRun
    from costline.distill.teacher import run_teacher

    run = DistillRun.of(config, run_id)
    with _recorder(config, not no_spans) as rec:
        t = run_teacher(config, run, recorder=rec, batch=False if sync else None, show_progress=True)
    click.echo(f"run {run.run_id}: {t.answered} answers ({t.sent} paid now, {t.resumed} resumed, "
               f"{'batch' if t.batch else 'sync'}), teacher cost ${t.cost_usd:.4f}")
    _print_unusable(t)


def _print_unusable(t: Any) -> None:
    if any(t.unusable.values()):
        from costline.jobs.teacher import describe_unusable

        click.echo("  left out of training and eval: " + describe_unusable(t.unusable, max_tokens="[distill] max_tokens"))


@distill.command("train")
@_RUN
@click.option("--base-model", default=None, help="Local model folder or hub id (default: [distill] base_model).")
@click.option("--max-steps", type=int, default=None, help="Stop after this many optimiser steps.")
@pass_config
def train_cmd(config: Config, run_id: str | None, base_model: str | None, max_steps: int | None) -> None:
    """Fine-tune a LoRA adapter on the teacher's answers (loss on the answer only); resumes from checkpoints.

    \b
    Example:
        costline distill train --base-model /models/qwen2.5-1.5b-instruct
    """
    from costline.distill.runs import DistillRun
    from costline.distill.train import train_student

    t = train_student(config, DistillRun.of(config, run_id), base_model=base_model, max_steps=max_steps,
                      show_progress=True)
    loss = "n/a" if t.final_loss is None else f"{t.final_loss:.4f}"
    click.echo(f"run {t.run.run_id}: {t.examples} examples, {t.steps} steps, final loss {loss}, "
               f"{t.train_seconds:.1f}s -> {t.adapter}")


def _print_gate(g: Any) -> None:
    from costline.processors.cli import format_result

    click.echo(format_result(["subtype", "task_type", "n", "student", "teacher", "gap", "threshold", "passed",
                              "reason"],
                             [(v.subtype, v.task_type, v.n, round(v.student_score, 3), round(v.teacher_score, 3),
                               round(v.gap, 3), v.threshold, v.passed, v.reason) for v in g.subtypes]))
    click.echo(g.describe())


@distill.command("eval")
@_RUN
@pass_config
def eval_cmd(config: Config, run_id: str | None) -> None:
    """The student answers the held-out set; scored per subtype with the drift job's metrics.

    \b
    Example:
        costline distill eval --run distill-20261108T0200-1a2b3c4d
    """
    from costline.distill.evaluate import evaluate_student
    from costline.distill.runs import DistillRun

    _print_gate(evaluate_student(config, DistillRun.of(config, run_id)))


@distill.command("gate")
@_RUN
@pass_config
def gate_cmd(config: Config, run_id: str | None) -> int:
    """Pass only when every subtype passes; names the failing ones. Exits 1 on a failure.

    \b
    Example:
        costline distill gate && costline distill promote
    """
    from costline.distill.evaluate import gate_run
    from costline.distill.runs import DistillRun

    g = gate_run(DistillRun.of(config, run_id))
    _print_gate(g)
    return 0 if g.passed else 1


def _config_file(config: Config, path: Path | None) -> Path:
    return path or config.source or Path("costline.toml")


@distill.command("promote")
@_RUN
@click.option("--config-file", type=click.Path(path_type=Path), default=None,
              help="TOML file to update (default: the loaded config file, else ./costline.toml).")
@pass_config
def promote_cmd(config: Config, run_id: str | None, config_file: Path | None) -> None:
    """Make a passed run the student: set its adapter name, gate its passed subtypes to it, print the vllm line.

    \b
    Example:
        costline distill promote --run distill-20261108T0200-1a2b3c4d --config-file costline.toml
    """
    from costline.distill.promote import promote_run
    from costline.distill.runs import DistillRun

    p = promote_run(config, DistillRun.of(config, run_id), _config_file(config, config_file))
    click.echo(p.describe())
    click.echo(p.vllm_command)


@distill.command("rollback")
@click.option("--config-file", type=click.Path(path_type=Path), default=None,
              help="TOML file to restore (default: the loaded config file, else ./costline.toml).")
@click.option("--force", is_flag=True, help="Restore even when the two keys were edited since the promotion.")
@pass_config
def rollback_cmd(config: Config, config_file: Path | None, force: bool) -> None:
    """Undo the newest promotion: put student_model and student_subtypes back exactly, print the vllm line.

    The adapter of the promotion before it is still in its run folder; serve it with the printed line.

    \b
    Example:
        costline distill rollback --config-file costline.toml
    """
    from costline.distill.promote import rollback

    r = rollback(config, _config_file(config, config_file), force=force)
    click.echo(r.describe())
    if r.vllm_command:
        click.echo(r.vllm_command)


@distill.command("run")
@click.option("--since", type=WHEN, default=None, help="Start of the export window.")
@click.option("--until", type=WHEN, default=None, help="End of the export window (default: now).")
@click.option("--size", type=int, default=None, help="Requests to export.")
@click.option("--base-model", default=None, help="Local model folder or hub id.")
@click.option("--sync", is_flag=True, help="Teacher: synchronous calls instead of batches.")
@click.option("--promote", "do_promote", is_flag=True, help="Promote when the gate passes.")
@click.option("--config-file", type=click.Path(path_type=Path), default=None, help="TOML file promote updates.")
@click.option("--no-spans", is_flag=True, help="Do not record the teacher calls as spans.")
@click.option("--run", "run_id", default=None,
              help="Resume this exported run (its dataset as exported; the teacher's paid answers are reused).")
@pass_config
def run_cmd(config: Config, since: datetime | None, until: datetime | None, size: int | None,
            base_model: str | None, sync: bool, do_promote: bool, config_file: Path | None, no_spans: bool,
            run_id: str | None) -> int:
    """export → teacher → train → eval → gate (→ promote); each step resumes where it stopped.

    A window given with a fixed --until is the same run when run again; without one (--until is now) each
    start exports a new run, so resume a stopped one with --run ID (the id it printed): its teacher answers,
    already paid, are not paid again.

    \b
    Example:
        costline distill run --since -30d --base-model /models/qwen2.5-1.5b-instruct --promote
        costline distill run --run distill-20261201T0000-3f2a1b9c --base-model /models/qwen2.5-1.5b-instruct
    """
    from costline.distill.dataset import export_dataset
    from costline.distill.evaluate import evaluate_student, gate_run
    from costline.distill.promote import promote_run
    from costline.distill.runs import DistillRun
    from costline.distill.teacher import run_teacher
    from costline.distill.train import train_student

    if run_id is not None:
        if since is not None or until is not None or size is not None:
            raise click.UsageError("--run resumes an exported run as it was exported: drop --since / --until / --size")
        run = DistillRun.of(config, run_id)
        run.need("dataset/manifest.json", "export")
        click.echo(f"run {run.run_id}: resuming (dataset {run.dataset})")
    else:
        ex = export_dataset(config, since=since, until=until, sample_size=size)
        _print_export(ex)
        run = ex.run
        click.echo(f"(stopped before the end? resume it with `costline distill run --run {run.run_id}`)")
    with _recorder(config, not no_spans) as rec:
        t = run_teacher(config, run, recorder=rec, batch=False if sync else None, show_progress=True)
    click.echo(f"teacher: {t.answered} answers, ${t.cost_usd:.4f}")
    _print_unusable(t)
    tr = train_student(config, run, base_model=base_model, show_progress=True)
    click.echo(f"train: {tr.steps} steps, final loss {tr.final_loss}")
    evaluate_student(config, run)
    g = gate_run(run)
    _print_gate(g)
    if g.passed and do_promote:
        p = promote_run(config, run, _config_file(config, config_file))
        click.echo(p.describe())
        click.echo(p.vllm_command)
    return 0 if g.passed else 1


@distill.command("roi")
@click.option("--since", type=WHEN, default=None, help="Start (default: until - [distill] window_days).")
@click.option("--until", type=WHEN, default=None, help="End (default: now).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--run", "run_id", default=None, help="Price a finished run's actual teacher cost and training time.")
@pass_config
def roi_cmd(config: Config, since: datetime | None, until: datetime | None, as_json: bool,
            run_id: str | None) -> None:
    """Break-even requests/day and payback of a student for [distill] task_types, GPU cost included.

    \b
    Example:
        costline distill roi --since -30d
    """
    import dataclasses

    from costline.distill.roi import compute_roi

    teacher = hours = None
    if run_id:
        from costline.distill.runs import DistillRun

        run = DistillRun.of(config, run_id)
        teacher = float(run.read("teacher_manifest.json", "teacher")["cost_usd"])
        if run.path("adapter/training_manifest.json").exists():
            hours = float(run.read("adapter/training_manifest.json", "train")["train_seconds"]) / 3600.0
    r = compute_roi(config, since=since, until=until, teacher_cost_usd=teacher, train_gpu_hours=hours)
    click.echo(json.dumps(dataclasses.asdict(r), default=str) if as_json else r.describe())


@distill.command("runs")
@pass_config
def runs_cmd(config: Config) -> None:
    """List the distillation runs and how far each got.

    \b
    Example:
        costline distill runs
    """
    from costline.distill.runs import distill_root

    root = distill_root(config)
    steps = [("dataset/manifest.json", "exported"), ("teacher.jsonl", "teacher"),
             ("adapter/training_manifest.json", "trained"), ("eval.json", "evaluated"), ("gate.json", "gated"),
             ("promoted.json", "promoted")]
    for d in sorted(p for p in root.glob("*") if (p / "dataset").is_dir()):
        done = [name for f, name in steps if (d / f).exists()]
        gate = json.loads((d / "gate.json").read_text())["passed"] if (d / "gate.json").exists() else None
        click.echo(f"{d.name}  {' > '.join(done)}" + ("" if gate is None else f"  gate={'pass' if gate else 'FAIL'}"))


@distill.command("serve")
@_RUN
@click.option("--base-model", default=None, help="Base model (default: the run's training manifest).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@pass_config
def serve_cmd(config: Config, run_id: str | None, base_model: str | None, host: str, port: int) -> None:
    """Serve a run's adapter on its base model as an OpenAI-compatible API (development; vLLM in production).

    \b
    Example:
        costline distill serve --port 8000 &
        COSTLINE_SERVING_BACKENDS_STUDENT_BASE_URL=http://127.0.0.1:8000/v1 costline serve
    """
    import signal
    import threading

    from costline.distill.runs import DistillRun
    from costline.distill.serve import StudentServer

    run = DistillRun.of(config, run_id)
    tm = run.read("adapter/training_manifest.json", "train")
    server = StudentServer(base_model or tm["base_model"], run.adapter, config.distill.adapter_name, host=host,
                           port=port, max_new_tokens=config.distill.max_new_tokens,
                           threads=config.distill.torch_threads, device=config.distill.device)
    server.start()
    click.echo(f"serving {config.distill.adapter_name} (run {run.run_id}) at {server.openai_url}")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.shutdown()


commands = [distill]
