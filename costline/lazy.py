"""The one lazy-import loader behind the packages' ``__init__`` (PEP 562 module ``__getattr__``).

A package lists ``public name -> submodule`` and gets a ``__getattr__`` that imports the
submodule on first use, so ``import costline.serving`` stays light::

    __getattr__, __dir__ = lazy_loader(__name__, {"Pipeline": "pipeline"})

And :func:`import_optional`, for the core reaching an area's module that may not be there.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

__all__ = ["lazy_loader", "import_optional"]


def lazy_loader(package: str, where: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: each name of ``where`` is read from
    ``package.<where[name]>`` on first access; any other name raises :class:`AttributeError`."""
    table = dict(where)

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *table})

    return __getattr__, __dir__


def import_optional(name: str) -> ModuleType | None:
    """The module ``name``, or None when it (or a package above it) does not exist; an import
    error from inside an existing module (a missing dependency, a bug) still raises."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            return None
        raise
