"""Policy files with a manifest; promotion behind the gate; rollback; promotion events in the lake.

Next to every learned policy file ``p.npz`` lies ``p.npz.manifest.json``: what it was trained
on (window, label counts, the training request ids the evaluation must leave out), the
featurizer, and once evaluated the candidate-vs-incumbent figures (:mod:`~costline.serving.routing.gate`).
:func:`promote` installs a candidate at ``[serving.router] policy_path`` only when its last
evaluation passed the gate against the policy now in service, keeps the one it replaces under
``<policy_path>.history/`` (``[serving.router.loop] keep`` of them) and records the event in the
lake (``route_promotions``, marked on the dashboard's cost and tier-match charts);
:func:`rollback` puts the parent back and records that too.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from costline.fsutil import atomic_path, atomic_write
from costline.serving.errors import RoutingError
from costline.timeutil import utc_naive as _naive

if TYPE_CHECKING:  # pragma: no cover
    from costline.config import Config

__all__ = ["MANIFEST_FORMAT", "manifest_path", "read_manifest", "write_manifest", "file_sha256", "history_dir",
           "candidate_path", "PromotionEvent", "promote", "rollback", "record_event", "in_service"]

MANIFEST_FORMAT = "costline-route-manifest/1"


def manifest_path(policy: Path | str) -> Path:
    policy = Path(policy)
    return policy.with_name(policy.name + ".manifest.json")


def candidate_path(config: "Config") -> Path:
    """Where `costline route train --from-lake` writes a candidate by default."""
    target = Path(config.serving.router.policy_path)
    return target.with_name(f"{target.stem}.candidate{target.suffix or '.npz'}")


def history_dir(policy: Path | str) -> Path:
    policy = Path(policy)
    return policy.with_name(policy.name + ".history")


def file_sha256(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(policy: Path | str) -> dict[str, Any]:
    """The manifest of ``policy`` ({} when it has none, e.g. a policy trained from a JSONL file)."""
    path = manifest_path(policy)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise RoutingError(f"{path} is not a readable policy manifest ({exc}): retrain the policy") from None
    if doc.get("format") != MANIFEST_FORMAT:
        raise RoutingError(f"{path}: format {doc.get('format')!r} is not {MANIFEST_FORMAT!r}")
    return doc


def _atomic_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _atomic_text(dst: Path, text: str) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(dst, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_manifest(policy: Path | str, doc: dict[str, Any]) -> Path:
    doc = {"format": MANIFEST_FORMAT, **{k: v for k, v in doc.items() if k != "format"}}
    path = manifest_path(policy)
    _atomic_text(path, json.dumps(doc, indent=1, sort_keys=True, default=str) + "\n")
    return path


def in_service(config: "Config") -> str:
    """The policy serving now, as `costline route eval` names it: "rules" or the learned policy's path."""
    router = config.serving.router
    return str(router.policy_path) if router.policy == "learned" else "rules"


def _sha_of(spec: str) -> str:
    return "rules" if spec == "rules" else file_sha256(spec)


@dataclass(frozen=True)
class PromotionEvent:
    event_id: str
    at: datetime
    action: str  # promote | rollback
    policy_path: str
    policy_sha256: str
    parent_sha256: str | None
    passed: bool | None
    note: str

    def row(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "ts": self.at, "action": self.action, "policy_path": self.policy_path,
                "policy_sha256": self.policy_sha256, "parent_sha256": self.parent_sha256, "passed": self.passed,
                "note": self.note}


def record_event(config: "Config", event: PromotionEvent) -> Path:
    """Write the event to ``<lake>/jobs/route_promotions/`` (the ``route_promotions`` view)."""
    from costline.jobs.store import job_store

    return job_store(config).init().write("route_promotions", event.event_id, [event.row()])


def _archive(target: Path, keep: int, at: datetime) -> Path | None:
    """Copy the policy in service (and its manifest) into the history; keep the newest ``keep``."""
    if not target.exists():
        return None
    hist = history_dir(target)
    dst = hist / f"{at:%Y%m%dT%H%M%S}-{file_sha256(target)[:12]}{target.suffix}"
    _atomic_copy(target, dst)
    if manifest_path(target).exists():
        _atomic_copy(manifest_path(target), manifest_path(dst))
    olds = sorted(p for p in hist.glob(f"*{target.suffix}") if not p.name.startswith("."))
    for p in olds[:-keep]:
        p.unlink(missing_ok=True)
        manifest_path(p).unlink(missing_ok=True)
    return dst


def promote(config: "Config", candidate: Path | str, *, force: bool = False,
            now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> PromotionEvent:
    """Install ``candidate`` at ``[serving.router] policy_path``; see the module docstring.

    Refuses unless the candidate's manifest holds an evaluation that passed the gate against the
    policy now in service (``force`` skips that check and says so in the event).
    """
    candidate = Path(candidate)
    router = config.serving.router
    target = Path(router.policy_path)
    if not candidate.exists():
        raise RoutingError(f"no candidate policy at {candidate}: train one with `costline route train --from-lake`")
    doc = read_manifest(candidate)
    ev = doc.get("eval") or {}
    serving_now = in_service(config)
    serving_sha = _sha_of(serving_now) if serving_now == "rules" or Path(serving_now).exists() else None
    problems = []
    if not ev:
        problems.append("it was never evaluated: run `costline route eval --candidate "
                        f"{candidate}` first")
    else:
        if not ev.get("passed"):
            problems.append(f"its evaluation FAILED the gate on {', '.join(ev.get('failing') or []) or '?'}")
        if ev.get("candidate_sha256") != file_sha256(candidate):
            problems.append("the file changed after its evaluation: evaluate it again")
        if ev.get("incumbent_sha256") != serving_sha:
            problems.append(f"it was evaluated against {ev.get('incumbent')!r}, not the policy in service "
                            f"({serving_now}): evaluate it again")
    if problems and not force:
        raise RoutingError(f"not promoting {candidate}: " + "; ".join(problems))
    at = _naive(now())
    parent_doc = read_manifest(target) if target.exists() else {}
    archived = _archive(target, config.serving.router.loop.keep, at)
    parent_sha = file_sha256(archived) if archived else ("rules" if serving_now == "rules" else None)
    sha = file_sha256(candidate)
    _atomic_copy(candidate, target)
    doc["parent"] = {"sha256": parent_sha, "archived_as": str(archived) if archived else None,
                     "was": serving_now, "trained": (parent_doc.get("training") or {}).get("window")}
    doc["promoted_at"] = at.isoformat()
    doc["forced"] = bool(problems)
    write_manifest(target, doc)
    note = ("forced past: " + "; ".join(problems)) if problems else (
        f"gate passed: {ev.get('moved_down', 0)} requests moved to cheaper tiers")
    event = PromotionEvent(f"promote-{at:%Y%m%dT%H%M%S}-{sha[:12]}", at, "promote", str(target), sha, parent_sha,
                           bool(ev.get("passed")) if ev else None, note)
    record_event(config, event)
    return event


def rollback(config: "Config", *, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> PromotionEvent:
    """Put back the policy the current one replaced (from ``<policy_path>.history/``)."""
    target = Path(config.serving.router.policy_path)
    doc = read_manifest(target) if target.exists() else {}
    parent = doc.get("parent") or {}
    archived = parent.get("archived_as")
    if not archived:
        was = parent.get("was")
        raise RoutingError(f"nothing to roll back to at {target}: "
                           + (f"it replaced the {was!r} policy; set [serving.router] policy = \"rules\""
                              if was == "rules" else "it was not installed by `costline route promote`"))
    src = Path(archived)
    if not src.exists():
        raise RoutingError(f"the previous policy {src} is gone (history keeps [serving.router.loop] keep files)")
    at = _naive(now())
    current_sha = file_sha256(target)
    _archive(target, config.serving.router.loop.keep, at)
    _atomic_copy(src, target)
    if manifest_path(src).exists():
        _atomic_copy(manifest_path(src), manifest_path(target))
    else:
        manifest_path(target).unlink(missing_ok=True)
    sha = file_sha256(target)
    event = PromotionEvent(f"rollback-{at:%Y%m%dT%H%M%S}-{sha[:12]}", at, "rollback", str(target), sha,
                           current_sha, None, f"rolled back from {current_sha[:12]}")
    record_event(config, event)
    return event
