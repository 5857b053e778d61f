"""A distillation run's folder: ``<root>/<run_id>/`` with one manifest per step.

::

    dataset/train.jsonl, dataset/eval.jsonl, dataset/manifest.json   (export)
    teacher.sqlite, teacher.jsonl, teacher_manifest.json              (teacher)
    checkpoints/, adapter/, adapter/training_manifest.json            (train)
    eval.json, gate.json, promoted.json                               (eval, gate, promote)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from costline.distill.errors import RunStateError
from costline.fsutil import atomic_write

__all__ = ["DistillRun", "distill_root", "write_json", "write_jsonl", "read_jsonl", "sha256_file", "latest_run"]


def distill_root(config: Any) -> Path:
    return Path(config.distill.root) if config.distill.root else Path(config.lake.path) / "distill"


def _atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as fh:
        fh.write(data)


def write_json(path: Path, doc: Mapping[str, Any]) -> None:
    _atomic(path, (json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n").encode())


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    _atomic(path, "".join(json.dumps(r, sort_keys=True, ensure_ascii=False, default=str) + "\n"
                          for r in rows).encode())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class DistillRun:
    """Paths of one run."""

    root: Path
    run_id: str

    @property
    def dir(self) -> Path:
        return self.root / self.run_id

    @property
    def dataset(self) -> Path:
        return self.dir / "dataset"

    @property
    def adapter(self) -> Path:
        return self.dir / "adapter"

    @property
    def checkpoints(self) -> Path:
        return self.dir / "checkpoints"

    def path(self, name: str) -> Path:
        return self.dir / name

    def need(self, name: str, step: str) -> Path:
        p = self.dir / name
        if not p.exists():
            raise RunStateError(f"run {self.run_id} has no {name}: run `costline distill {step} --run "
                                f"{self.run_id}` first")
        return p

    def read(self, name: str, step: str) -> dict[str, Any]:
        return json.loads(self.need(name, step).read_text())

    @classmethod
    def of(cls, config: Any, run_id: str | None) -> "DistillRun":
        root = distill_root(config)
        rid = run_id or latest_run(root)
        if not (root / rid).is_dir():
            raise RunStateError(f"no distillation run {rid!r} under {root}: see `costline distill runs`")
        return cls(root, rid)


def latest_run(root: Path) -> str:
    runs = sorted((p for p in root.glob("*/dataset/manifest.json")), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise RunStateError(f"no distillation run under {root}: start one with `costline distill export`")
    return runs[-1].parent.parent.name
