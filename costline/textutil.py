"""Text helpers shared by the areas that read text from outside (the receivers, the gateway, the pipeline).

* :func:`well_formed` — a string with each lone UTF-16 surrogate as U+FFFD. JSON's ``"\\ud83d"`` escape decodes
  to one (OpenTelemetry JS cuts attributes by UTF-16 units and writes half an emoji so; a raw client can send
  one on purpose), and nothing downstream takes it: protobuf refuses the string, a tokenizer raises on it, and
  UTF-8 cannot encode it. U+FFFD is what a UTF-8 decoder reads for a byte it cannot.
"""

from __future__ import annotations

__all__ = ["well_formed"]


def well_formed(text: str) -> str:
    """``text`` with each lone surrogate as U+FFFD (``text`` itself, at the cost of one encode, when it has none)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text
