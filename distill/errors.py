"""Exceptions of costline.distill::

    CostlineError
     └── DistillError            root of the distillation pipeline's errors
          ├── ExportError        nothing (or too little) to export; the message says what was skipped
          ├── RunStateError      a step needs an earlier step's output (run it first)
          └── GateFailedError    promote refused: the run did not pass its gate (names the subtypes)

MissingExtraError (training / serving needs the distill extra) is :class:`costline.errors.MissingExtraError`.
"""

from __future__ import annotations

from costline.errors import CostlineError, MissingExtraError

__all__ = ["DistillError", "ExportError", "RunStateError", "GateFailedError", "MissingExtraError", "INSTALL_HINT"]

INSTALL_HINT = "pip install 'costline[distill]'"


class DistillError(CostlineError):
    """Root of costline.distill's errors."""


class ExportError(DistillError):
    """The lake holds nothing exportable for the chosen task types."""


class RunStateError(DistillError):
    """A step needs the output of an earlier one (or the run does not exist)."""


class GateFailedError(DistillError):
    """Promotion refused: the run did not pass its quality gate."""
