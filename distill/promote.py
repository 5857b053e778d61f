"""`costline distill promote`: a passed run becomes the served student.

Refuses a run whose gate did not pass (naming the failing subtypes). On a pass it edits the
config file with ``tomlkit`` (comments and layout kept): ``[serving.backends] student_model`` =
the adapter name, and the run's passed subtypes added, per task type, to
``[serving.router.rules.student_subtypes]`` (the router's student gating — config, not router
code). The router then sends a request to the student only when its task type *and* subtype
passed: a subtype the run did not evaluate (or that failed an earlier run) stays on the API tiers.
``[serving.router.rules] student_task_types`` (a whole task type) is left to the operator.
Prints the ``vllm serve`` line that serves the adapter under that name.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
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
    #: Per task type, the subtypes now gated to the student (after this promotion, all runs).
    subtypes: dict[str, list[str]]
    vllm_command: str


def vllm_command(base_model: str, name: str, adapter: Path, lora_r: int) -> str:
    return (f"vllm serve {shlex.quote(base_model)} --enable-lora --lora-modules "
            f"{name}={shlex.quote(str(adapter.resolve()))} --max-lora-rank {max(lora_r, 8)}")


def promote_run(config: Any, run: DistillRun, config_path: Path | str,
                *, now: Any = lambda: datetime.now(UTC)) -> Promotion:
    """Register the run's adapter as the student and gate its task types to it; see the module docstring."""
    import tomlkit

    from costline.distill.evaluate import gate_run

    gate = gate_run(run)
    if not gate.passed:
        raise GateFailedError(f"refusing to promote run {run.run_id}: it did not pass the gate; failing subtypes: "
                              f"{', '.join(gate.failing)} (see `costline distill gate --run {run.run_id}`)")
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
    merged: dict[str, list[str]] = {}
    for task_type, subs in gate.passed_subtypes.items():
        current = list(gated.get(task_type, configured.get(task_type, ())))
        merged[task_type] = sorted(set(current) | set(subs))
        gated[task_type] = merged[task_type]
    with atomic_write(path, "w", encoding="utf-8") as fh:
        fh.write(tomlkit.dumps(doc))
    cmd = vllm_command(tm["base_model"], name, run.adapter, config.distill.lora_r)
    write_json(run.path("promoted.json"), {"run_id": run.run_id, "at": now().isoformat(), "config": str(path),
                                           "adapter_name": name, "adapter_path": str(run.adapter.resolve()),
                                           "task_types": gate.task_types, "subtypes": merged, "vllm": cmd})
    return Promotion(run.run_id, path, name, run.adapter, gate.task_types, merged, cmd)
