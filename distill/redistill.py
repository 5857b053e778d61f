"""Re-distillation: when the drift job flags subtypes, export fresh traffic of those subtypes.

Opt-in (``[distill] redistill_on_drift``); called by the nightly drift runner
(:func:`costline.jobs.scheduler.default_runners`). Only the export runs unattended — the teacher
costs money and training needs a GPU, so those stay an operator's `costline distill run`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

__all__ = ["on_drift"]

log = logging.getLogger(__name__)


def on_drift(config: Any, flagged: Sequence[str], until: datetime) -> str | None:
    """Export the flagged subtypes' traffic up to ``until``; the new run id, or None (off, nothing flagged,
    nothing to export). Never raises: the drift job's result stands either way."""
    if not config.distill.redistill_on_drift or not flagged:
        return None
    from costline.distill.dataset import export_dataset

    try:
        r = export_dataset(config, until=until, subtypes=list(flagged), now=lambda: until)
    except Exception as exc:  # noqa: BLE001 - the drift result is stored already; this is best effort
        log.warning("re-distillation export for drifted subtypes %s failed: %s", ", ".join(flagged), exc)
        return None
    log.warning("student drift in %s: exported fresh traffic as distillation run %s (%d train, %d eval); "
                "run `costline distill run` on it to re-distil", ", ".join(flagged), r.run.run_id, r.train, r.eval)
    return r.run.run_id
