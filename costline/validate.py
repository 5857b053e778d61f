"""The checks every settings section repeats, each raising :class:`~costline.errors.ConfigError` naming its key.

One :class:`Section` per ``[section]``; its checks take the key (without the section) and the value::

    s = Section("jobs.drift")
    s.at_least("sample_size", d.sample_size, 1)           # [jobs.drift] sample_size: must be at least 1
    s.fraction("alpha", d.alpha, open_low=True, open_high=True, what="must be between 0 and 1")
    s.one_of("default_metric", d.default_metric, ("exact", "cosine", "judge"))

Each check has the message the areas have always written for it (``what=`` overrides it where an
area says more, e.g. what 0 means); :meth:`Section.need` is the general case.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from costline.errors import ConfigError

__all__ = ["Section", "is_http_url"]


class Section:
    """Checks of one settings section: ``[section] key: problem`` (``section=""``: the key alone)."""

    def __init__(self, section: str, *, source: str = "config") -> None:
        self.section = section
        self.source = source

    def key(self, key: str) -> str:
        """The key as the error names it: ``[section] key``."""
        return f"[{self.section}] {key}" if self.section else key

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.key(key), problem, source=self.source)

    def need(self, ok: bool, key: str, what: str) -> None:
        """Raise ``what`` about ``key`` unless ``ok``."""
        if not ok:
            raise self.error(key, what)

    def at_least(self, key: str, value: float, minimum: float, what: str | None = None) -> None:
        """``value >= minimum`` (counts, sizes): "must be at least N" (NaN and infinity fail)."""
        text = what or f"must be at least {minimum}"
        self.need(value >= minimum, key, text)
        self._finite(key, value, text, False)

    def above_zero(self, key: str, value: float, *, unit: str = "", what: str | None = None,
                   allow_inf: bool = False) -> None:
        """``value > 0`` and finite: "must be above 0" (+ `` seconds`` etc. with ``unit``).

        NaN fails, and so does infinity unless ``allow_inf`` (a key where ``inf`` is documented to mean "no bound")."""
        text = what or f"must be above 0{' ' + unit if unit else ''}"
        self.need(value > 0, key, text)
        self._finite(key, value, text, allow_inf)

    def not_negative(self, key: str, value: float, what: str = "must not be negative", *,
                     allow_inf: bool = False) -> None:
        """``value >= 0`` and finite (NaN fails; infinity too unless ``allow_inf``)."""
        self.need(value >= 0, key, what)
        self._finite(key, value, what, allow_inf)

    def _finite(self, key: str, value: float, text: str, allow_inf: bool) -> None:
        if not allow_inf and isinstance(value, float) and math.isinf(value):
            # a message that already asks for a finite number (and says what it got) is said as it is
            raise self.error(key, text if "finite" in text else f"{text}, and a finite number; got {value}")

    def fraction(self, key: str, value: float, *, open_low: bool = False, open_high: bool = False,
                 what: str | None = None) -> None:
        """``value`` in [0, 1], ends excluded with ``open_low`` / ``open_high``: "must be in (0, 1]" etc."""
        ok = (0 < value if open_low else 0 <= value) and (value < 1 if open_high else value <= 1)
        interval = f"{'(' if open_low else '['}0, 1{')' if open_high else ']'}"
        self.need(ok, key, what or f"must be in {interval}")

    def one_of(self, key: str, value: Any, choices: Iterable[Any], what: str | None = None) -> None:
        """``value`` is one of ``choices``: "must be one of a, b, c; got 'x'"."""
        choices = tuple(choices)
        self.need(value in choices, key, what or f"must be one of {', '.join(map(str, choices))}; got {value!r}")

    def port(self, key: str, value: int) -> None:
        """A TCP port: "must be a TCP port (1-65535); got N"."""
        self.need(1 <= value <= 65535, key, f"must be a TCP port (1-65535); got {value}")


def is_http_url(url: object) -> bool:
    """``url`` is ``http(s)://host[:port][/path]``: a scheme, a host and, if given, a valid port — what every URL key
    of the config asks (``https:///v1``, ``127.0.0.1:8000/v1`` or ``http://host:80a`` loaded, then failed each call
    made to it)."""
    from urllib.parse import urlsplit

    if not (isinstance(url, str) and url.startswith(("http://", "https://"))):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # a bad port ("host:80a") raises ValueError
    except ValueError:
        return False
    return bool(parts.hostname) and not any(c.isspace() for c in url)
