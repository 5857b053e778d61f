"""costline's areas: the packages that bring their own config section and ``costline`` commands.

An area is a package named in :data:`AREAS` (a top-level folder, mapped in pyproject.toml's
``package-dir``). It registers what it adds by declaring it in its own folder; nothing else in
costline names its settings or its commands:

* ``<area>/settings.py`` declares ``SECTION = "name"`` and ``SETTINGS = NameConfig``, a frozen
  dataclass whose defaults work. :func:`costline.config.load_config` fills it from ``[name]`` in
  costline.toml and ``COSTLINE_NAME_KEY`` variables (the same types, unknown-key errors and
  environment overrides as the core sections), and ``config.name`` reads it. Every config load
  imports this module, so it stays import-light. A type checker learns the section's type from
  :class:`costline.config.Config`'s ``TYPE_CHECKING`` list.
* ``<area>/cli.py`` has ``commands``: the click commands ``costline`` gets when ``main()`` runs.

Either module may be missing (an area can land one part at a time). The simulation
(:data:`SIMULATION`) adds commands only: loading the config never imports it.
"""

from __future__ import annotations

import dataclasses
import functools
from types import ModuleType
from typing import Any

from costline.lazy import import_optional

__all__ = ["AREAS", "SIMULATION", "area_sections", "area_cli_modules"]

#: The area packages, in the order their sections and commands are listed.
AREAS: tuple[str, ...] = (
    "costline.collectors",
    "costline.processors",
    "costline.serving",
    "costline.jobs",
    "costline.alerts",
    "costline.dashboards",
    "costline.distill",
)

#: The simulation's package: its ``cli`` module's commands come last (``costline demo``, ...).
SIMULATION = "costline.sim"


def area_sections() -> dict[str, type[Any]]:
    """``section name -> settings dataclass`` of every area that declares one, in :data:`AREAS` order."""
    return dict(_sections(AREAS))


@functools.cache
def _sections(areas: tuple[str, ...]) -> tuple[tuple[str, type[Any]], ...]:
    found: dict[str, tuple[str, type[Any]]] = {}
    for package in areas:
        module = import_optional(f"{package}.settings")
        if module is None or not hasattr(module, "SECTION"):
            continue
        section, settings = module.SECTION, getattr(module, "SETTINGS", None)
        if not (isinstance(settings, type) and dataclasses.is_dataclass(settings)):
            raise TypeError(f"{package}.settings declares SECTION = {section!r} but no SETTINGS dataclass")
        if section in found:
            raise TypeError(f"{package}.settings: section [{section}] is already declared by {found[section][0]}")
        found[section] = (package, settings)
    return tuple((section, settings) for section, (_, settings) in found.items())


def area_cli_modules() -> list[ModuleType]:
    """The ``cli`` module of every area that has one, in :data:`AREAS` order, then the simulation's."""
    return [m for m in (import_optional(f"{package}.cli") for package in (*AREAS, SIMULATION)) if m is not None]
