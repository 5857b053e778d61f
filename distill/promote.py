"""`costline distill promote`: a passed run becomes the served student.

Refuses a run whose gate did not pass (naming the failing subtypes). On a pass it edits the
config file with ``tomlkit`` (comments and layout kept): ``[serving.backends] student_model`` =
the adapter name, and ``[serving.router.rules.student_subtypes]`` (the router's student gating —
config, not router code) becomes **exactly** the run's passed (task type, subtype) pairs, each subtype under
its own task type (a subtype name two task types share is gated in each whose own verdict passed). The adapter
served under that one name is replaced by this run's, so a subtype an earlier run passed but this
run did not train and evaluate is dropped from the student (back to the API tiers): the promotion
says which, and a run whose export covers them (``costline distill export --subtype ...`` naming
them all, or no ``--subtype``) keeps them. ``[serving.router.rules] student_task_types`` (a whole
task type) is left to the operator; promote warns when it names a task type.
Prints the ``vllm serve`` line that serves the adapter under that name.

Every promotion is appended to ``promotions.jsonl`` in the runs folder with the two keys as they were before and
after it (set or not, and their values). `costline distill rollback` (:func:`rollback`) undoes the newest promotion
of a config file not yet rolled back: it puts both keys back **exactly** as they were (a key the file did not set is
removed again), and prints the ``vllm serve`` line of the promotion before it, whose adapter is still in its run
folder. It refuses when the file's keys are no longer what that promotion wrote (edited since: ``force`` restores
anyway).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from costline.distill.errors import DistillError, GateFailedError
from costline.distill.runs import DistillRun, write_json
from costline.fsutil import atomic_write

__all__ = ["Promotion", "Rollback", "promote_run", "rollback", "vllm_command", "PROMOTIONS_FILE"]

#: The promotions and rollbacks of a runs folder, one JSON object a line (:func:`promote_run`, :func:`rollback`).
PROMOTIONS_FILE = "promotions.jsonl"


@dataclass
class Promotion:
    run_id: str
    config_path: Path
    adapter_name: str
    adapter_path: Path
    task_types: list[str]
    #: Per task type, the subtypes now gated to the student: exactly the run's passed subtypes.
    subtypes: dict[str, list[str]]
    vllm_command: str
    #: Per task type, the subtypes gated to the student before and no more (the new adapter never saw them).
    dropped: dict[str, list[str]] = field(default_factory=dict)
    #: ``student_task_types`` the config still sends wholly to the student (the operator's gating).
    whole_task_types: list[str] = field(default_factory=list)

    def describe(self) -> str:
        gated = "; ".join(f"{t}: {', '.join(subs)}" for t, subs in self.subtypes.items()) or "none"
        out = [f"run {self.run_id} promoted in {self.config_path}: student_model = {self.adapter_name}, "
               f"student subtypes = {gated}"]
        if self.dropped:
            shown = "; ".join(f"{t}: {', '.join(subs)}" for t, subs in self.dropped.items())
            subs = sorted({s for v in self.dropped.values() for s in v} | {s for v in self.subtypes.values() for s in v})
            out.append(f"dropped from the student (this run's adapter was neither trained nor evaluated on them; "
                       f"they go to the API tiers now): {shown}. To keep them, distil a run that covers them, e.g. "
                       f"`costline distill export {' '.join('--subtype ' + shlex.quote(x) for x in subs)}`, "
                       "and promote it")
        if self.whole_task_types:
            out.append(f"note: [serving.router.rules] student_task_types still sends every request of "
                       f"{', '.join(self.whole_task_types)} to the student, whatever this run evaluated")
        return "\n".join(out)


#: The ``--max-lora-rank`` values vLLM accepts (``LoRAConfig``'s possible_max_ranks).
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def vllm_command(base_model: str, name: str, adapter: Path, lora_r: int) -> str:
    """The ``vllm serve`` line; ``--max-lora-rank`` is the smallest rank vLLM accepts that holds ``lora_r``."""
    rank = next((r for r in VLLM_LORA_RANKS if r >= lora_r), None)
    if rank is None:
        raise ValueError(f"lora_r {lora_r} is over vLLM's largest --max-lora-rank {VLLM_LORA_RANKS[-1]}")
    return (f"vllm serve {shlex.quote(base_model)} --enable-lora --lora-modules "
            f"{name}={shlex.quote(str(adapter.resolve()))} --max-lora-rank {rank}")


def promote_run(config: Any, run: DistillRun, config_path: Path | str,
                *, now: Any = lambda: datetime.now(UTC)) -> Promotion:
    """Register the run's adapter as the student and gate its task types to it; see the module docstring."""
    import tomlkit

    from costline.distill.evaluate import gate_run

    gate = gate_run(run)
    if not gate.passed:
        failing: dict[str, list[str]] = {}
        for t, s in gate.failing_pairs:
            failing.setdefault(t or "(unknown task type)", []).append(s)
        raise GateFailedError(f"refusing to promote run {run.run_id}: it did not pass the gate; failing subtypes: "
                              + "; ".join(f"{t}: {', '.join(sorted(subs))}" for t, subs in sorted(failing.items()))
                              + f" (see `costline distill gate --run {run.run_id}`)")
    tm = run.read("adapter/training_manifest.json", "train")
    name = config.distill.adapter_name
    path = Path(config_path)
    doc = tomlkit.parse(path.read_text()) if path.exists() else tomlkit.document()
    serving = doc.setdefault("serving", tomlkit.table())
    keys_before = _student_keys(doc)
    backends = serving.setdefault("backends", tomlkit.table())
    backends["student_model"] = name
    router = serving.setdefault("router", tomlkit.table())
    rules = router.setdefault("rules", tomlkit.table())
    gated = rules.setdefault("student_subtypes", tomlkit.table())
    configured = config.serving.router.rules.student_subtypes
    before = {str(t): [str(x) for x in v] for t, v in gated.items()} if len(gated) else \
        {t: list(v) for t, v in configured.items()}
    merged: dict[str, list[str]] = {t: list(subs) for t, subs in gate.passed_subtypes.items()}
    dropped = {t: sorted(set(old) - set(merged.get(t, ()))) for t, old in sorted(before.items())}
    dropped = {t: subs for t, subs in dropped.items() if subs}
    for task_type in [t for t in gated if t not in merged]:
        del gated[task_type]
    for task_type, subs in merged.items():
        gated[task_type] = subs
    whole = sorted(str(t) for t in rules.get("student_task_types", config.serving.router.rules.student_task_types))
    with atomic_write(path, "w", encoding="utf-8") as fh:
        fh.write(tomlkit.dumps(doc))
    cmd = vllm_command(tm["base_model"], name, run.adapter, config.distill.lora_r)
    at = now().isoformat()
    write_json(run.path("promoted.json"), {"run_id": run.run_id, "at": at, "config": str(path),
                                           "adapter_name": name, "adapter_path": str(run.adapter.resolve()),
                                           "task_types": gate.task_types, "subtypes": merged, "dropped": dropped,
                                           "vllm": cmd})
    _append(run.root / PROMOTIONS_FILE, {"kind": "promote", "run_id": run.run_id, "at": at,
                                         "config": str(path.resolve()), "before": keys_before,
                                         "after": _student_keys(doc), "vllm": cmd})
    return Promotion(run.run_id, path, name, run.adapter, gate.task_types, merged, cmd, dropped, whole)


def _student_keys(doc: Any) -> dict[str, Any]:
    """The two keys promote writes, as ``doc`` holds them: ``{key: {"set": bool, "value": ...}}``."""
    serving = doc.get("serving") or {}
    backends = serving.get("backends") or {}
    rules = (serving.get("router") or {}).get("rules") or {}
    gated = rules.get("student_subtypes")
    return {"student_model": {"set": "student_model" in backends, "value": _plain(backends.get("student_model"))},
            "student_subtypes": {"set": gated is not None, "value": _plain(gated) if gated is not None else None}}


def _plain(value: Any) -> Any:
    """A tomlkit value as plain JSON-able Python."""
    unwrap = getattr(value, "unwrap", None)
    return unwrap() if callable(unwrap) else value


def _append(path: Path, record: dict[str, Any]) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")


def _history(path: Path) -> list[dict[str, Any]]:
    import json

    if not path.exists():
        return []
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise DistillError(f"{path} line {n} is not JSON ({exc}): fix or remove that line") from None
        if isinstance(record, dict):
            out.append(record)
    return out


@dataclass
class Rollback:
    config_path: Path
    #: The promotion undone (its run), and the one now in force again (None: no promotion before it).
    undone_run: str
    restored_run: str | None
    student_model: str | None
    subtypes: dict[str, list[str]] | None
    vllm_command: str | None

    def describe(self) -> str:
        gated = "; ".join(f"{t}: {', '.join(s)}" for t, s in (self.subtypes or {}).items()) or "none"
        model = self.student_model if self.student_model is not None else "(not set: the default)"
        head = (f"rolled back run {self.undone_run}'s promotion in {self.config_path}: student_model = {model}, "
                f"student subtypes = {gated}")
        if self.restored_run is None:
            return head + "\nno promotion before it: stop serving the adapter, or serve the student you had before"
        return head + f"\nrun {self.restored_run}'s adapter is the student again; serve it with:"


def rollback(config: Any, config_path: Path | str, *, force: bool = False,
             now: Any = lambda: datetime.now(UTC)) -> Rollback:
    """Undo the newest promotion of ``config_path`` not yet rolled back (see the module docstring)."""
    import tomlkit

    from costline.distill.runs import distill_root

    path = Path(config_path)
    log_path = distill_root(config) / PROMOTIONS_FILE
    history = _history(log_path)
    target = str(path.resolve())
    live: list[dict[str, Any]] = []  # promotions of this file in force, oldest first
    for record in history:
        if record.get("config") != target:
            continue
        if record.get("kind") == "promote":
            live.append(record)
        elif record.get("kind") == "rollback" and live:
            live.pop()
    if not live:
        raise DistillError(f"no promotion of {path} to roll back (none in {log_path}, or all rolled back)")
    last = live[-1]
    doc = tomlkit.parse(path.read_text(encoding="utf-8")) if path.exists() else tomlkit.document()
    if _student_keys(doc) != last.get("after") and not force:
        raise DistillError(f"{path}'s [serving.backends] student_model or [serving.router.rules.student_subtypes] "
                           f"changed since run {last.get('run_id')} was promoted: check them, then roll back with "
                           "--force to restore what they were before that promotion")
    before = last.get("before") or {}
    serving = doc.setdefault("serving", tomlkit.table())
    backends = serving.setdefault("backends", tomlkit.table())
    model = before.get("student_model") or {}
    if model.get("set"):
        backends["student_model"] = model.get("value")
    elif "student_model" in backends:
        del backends["student_model"]
    rules = serving.setdefault("router", tomlkit.table()).setdefault("rules", tomlkit.table())
    gated = before.get("student_subtypes") or {}
    if "student_subtypes" in rules:
        del rules["student_subtypes"]
    if gated.get("set"):
        table = tomlkit.table()
        for task_type, subs in (gated.get("value") or {}).items():
            table[task_type] = list(subs)
        rules["student_subtypes"] = table
    with atomic_write(path, "w", encoding="utf-8") as fh:
        fh.write(tomlkit.dumps(doc))
    _append(log_path, {"kind": "rollback", "run_id": last.get("run_id"), "at": now().isoformat(), "config": target})
    previous = live[-2] if len(live) > 1 else None
    return Rollback(path, str(last.get("run_id")), str(previous.get("run_id")) if previous else None,
                    model.get("value") if model.get("set") else None,
                    gated.get("value") if gated.get("set") else None,
                    previous.get("vllm") if previous else None)
