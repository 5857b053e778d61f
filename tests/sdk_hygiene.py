"""Keep instrumentors from leaking between tests (import the fixtures into a test module to use them).

Some instrumentors' ``uninstrument()`` leaves a wrapper behind (OpenLIT's does nothing; OpenLLMetry's
-openai beside -openai-v2 leaves one on ``Completions.create``, and ``Responses.create`` wrapped: its unwrap
list stops at the first ImportError of a beta module), whose spans would become the parents of a later
test's spans; OpenLLMetry's -openai (0.62.4) also keeps each Responses call in a process-global dict keyed
by the response id, and a later response with the same id (the stand-ins count from 1 per server) gets the
earlier one's trace context and start time.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

__all__ = ["sdk_class_attributes", "restore_sdk_classes", "pristine_sdks", "openllmetry_forgets_responses"]


def sdk_class_attributes(prefixes: tuple[str, ...] = ("anthropic.", "openai.")) -> dict:
    """Every attribute of the loaded SDK modules' own classes, to put back what an instrumentor patched."""
    out = {}
    for name, module in list(sys.modules.items()):
        if name.startswith(prefixes):
            for cls in list(vars(module).values()):
                if isinstance(cls, type) and cls.__module__ == name:
                    for key, value in list(vars(cls).items()):
                        out[(cls, key)] = value
    return out


def restore_sdk_classes(before: dict) -> None:
    for (cls, key), value in before.items():
        if vars(cls).get(key) is not value:
            setattr(cls, key, value)


@pytest.fixture(autouse=True)
def pristine_sdks() -> Iterator[None]:
    """Each test starts from the SDKs' own methods (autouse where imported)."""
    before = sdk_class_attributes()
    yield
    restore_sdk_classes(before)


@pytest.fixture(autouse=True)
def openllmetry_forgets_responses() -> Iterator[None]:
    """OpenLLMetry's Responses dict is empty when each test starts and ends (autouse where imported)."""
    try:
        from opentelemetry.instrumentation.openai.v1 import responses_wrappers
    except ImportError:
        yield
        return
    responses_wrappers.responses.clear()
    yield
    responses_wrappers.responses.clear()
