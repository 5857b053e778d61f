"""Re-distillation: when the drift job flags subtypes, export fresh traffic of those subtypes.

Opt-in (``[distill] redistill_on_drift``); called by the nightly drift runner
(:func:`costline.jobs.scheduler.default_runners`). Only the export runs unattended — the teacher
costs money and training needs a GPU, so those stay an operator's decision (``costline distill
teacher --run ID`` and the steps after it). Each export is recorded in the lake's
``distill_exports`` view with the drift run that flagged it, so the ``student_drift`` alert for
that run says that fresh traffic was exported, and as which run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

__all__ = ["on_drift", "TRIGGER_DRIFT"]

log = logging.getLogger(__name__)

#: ``distill_exports.trigger`` of an export the drift job started.
TRIGGER_DRIFT = "drift"


def on_drift(config: Any, flagged: Sequence[str], until: datetime, *, drift_run_id: str | None = None,
             now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> str | None:
    """Export the flagged subtypes' traffic of the ``[distill] window_days`` up to ``until``; the new
    run id, or None (off, nothing flagged, nothing to export). Exports only: no teacher call, no
    training, no promotion. Never raises: the drift job's result stands either way."""
    if not config.distill.redistill_on_drift or not flagged:
        return None
    from costline.distill.dataset import export_dataset
    from costline.distill.store import write_rows
    from costline.timeutil import utc_naive

    try:
        r = export_dataset(config, until=until, subtypes=list(flagged), now=now)
        at = utc_naive(now())
        write_rows(config, "distill_exports", r.run.run_id, [  # one row per (task type, subtype)
            {"run_id": r.run.run_id, "exported_at": at, "trigger": TRIGGER_DRIFT, "drift_run_id": drift_run_id,
             "task_type": tt, "subtype": sub, "train": c["train"], "eval": c["eval"],
             "window_since": datetime.fromisoformat(r.manifest["since"]), "window_until": utc_naive(until)}
            for (tt, sub), c in sorted(r.pairs.items())])
    except Exception as exc:  # noqa: BLE001 - the drift result is stored already; this is best effort
        log.warning("re-distillation export for drifted subtypes %s failed: %s", ", ".join(flagged), exc)
        return None
    log.warning("student drift in %s: exported fresh traffic as distillation run %s (%d train, %d eval); "
                "continue with `costline distill teacher --run %s` (then train, eval, gate, promote)",
                ", ".join(flagged), r.run.run_id, r.train, r.eval, r.run.run_id)
    return r.run.run_id
