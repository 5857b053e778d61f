"""`costline distill promote`: a passed run becomes the served student.

Refuses a run whose gate did not pass (naming the failing subtypes). On a pass it edits the
config file with ``tomlkit`` (comments and layout kept): ``[serving.backends] student_model`` =
the adapter name, and the run's passed task types added to ``[serving.router.rules]
student_task_types`` (the router's student gating — config, not router code). The router gates
per task type, so a task type is added only when every one of its evaluated subtypes passed.
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

__all__ = ["Promotion", "promote_run", "vllm_command"]


@dataclass
class Promotion:
    run_id: str
    config_path: Path
    adapter_name: str
    adapter_path: Path
    task_types: list[str]
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
    current = list(rules.get("student_task_types", config.serving.router.rules.student_task_types))
    rules["student_task_types"] = sorted(set(current) | set(gate.task_types))
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(tomlkit.dumps(doc))
    tmp.replace(path)
    cmd = vllm_command(tm["base_model"], name, run.adapter, config.distill.lora_r)
    write_json(run.path("promoted.json"), {"run_id": run.run_id, "at": now().isoformat(), "config": str(path),
                                           "adapter_name": name, "adapter_path": str(run.adapter.resolve()),
                                           "task_types": gate.task_types, "vllm": cmd})
    return Promotion(run.run_id, path, name, run.adapter, gate.task_types, cmd)
