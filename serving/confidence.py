"""The confidence a model states at the end of its answer: the ``(confidence: 0.87)`` marker.

The pipeline's default confidence function (:func:`costline.serving.pipeline.marker_confidence`)
reads it to escalate an unsure answer; the local stand-in
(:mod:`costline.sim.standin_model`) ends every answer with the marker.
"""

from __future__ import annotations

import re

__all__ = ["parse_confidence"]

_CONFIDENCE = re.compile(r"\(confidence: ([01](?:\.\d+)?)\)\s*$")


def parse_confidence(text: str) -> float | None:
    """The ``(confidence: 0.87)`` marker at the end of an answer, if any."""
    found = _CONFIDENCE.search(text or "")
    return float(found.group(1)) if found else None
