"""Exceptions of costline.jobs::

    CostlineError
     └── JobsError              root of the nightly jobs' errors
          ├── JobBusyError      another run of the same job holds its lock
          ├── NoDataError       nothing to evaluate in the window (no captured content, no traffic)
          └── TeacherError      regenerating answers failed (too many errors, batch expired, timeout)

MissingExtraError (embedding scoring needs the serving extra) is :class:`costline.errors.MissingExtraError`.
"""

from __future__ import annotations

from costline.errors import CostlineError, MissingExtraError

__all__ = ["JobsError", "JobBusyError", "NoDataError", "TeacherError", "MissingExtraError", "INSTALL_HINT"]

#: What to run when embedding-based scoring is asked for without the serving extra.
INSTALL_HINT = "pip install 'costline[serving]'"


class JobsError(CostlineError):
    """Root of costline.jobs' errors."""


class JobBusyError(JobsError):
    """Another run of this job is in progress (two runs of one job never overlap)."""


class NoDataError(JobsError):
    """The window holds nothing the job can evaluate; the message says what is missing."""


class TeacherError(JobsError):
    """Regenerating answers failed; what was answered is kept and the next run resumes."""
