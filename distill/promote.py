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
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from costline.distill.errors import GateFailedError
from costline.distill.runs import DistillRun, write_json
from costline.fsutil import atomic_write

__all__ = ["Promotion", "promote_run", "vllm_command"]


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
    write_json(run.path("promoted.json"), {"run_id": run.run_id, "at": now().isoformat(), "config": str(path),
                                           "adapter_name": name, "adapter_path": str(run.adapter.resolve()),
                                           "task_types": gate.task_types, "subtypes": merged, "dropped": dropped,
                                           "vllm": cmd})
    return Promotion(run.run_id, path, name, run.adapter, gate.task_types, merged, cmd, dropped, whole)
