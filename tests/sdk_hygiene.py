"""Keep instrumentors from leaking between tests (import the fixtures into a test module to use them).

Some instrumentors' ``uninstrument()`` leaves a wrapper behind (OpenLIT's does nothing; OpenLLMetry's
-openai beside -openai-v2 leaves one on ``Completions.create``, and ``Responses.create`` wrapped: its unwrap
list stops at the first ImportError of a beta module), whose spans would become the parents of a later
test's spans; OpenLLMetry's -openai (0.62.4) also keeps each Responses call in a process-global dict keyed
by the response id, and a later response with the same id (the stand-ins count from 1 per server) gets the
earlier one's trace context and start time.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator

import pytest

__all__ = ["sdk_class_attributes", "restore_sdk_classes", "pristine_sdks", "openllmetry_forgets_responses",
           "langfuse_openai"]


#: The SDKs whose classes instrumentors patch.
SDK_PREFIXES = ("anthropic.", "openai.")


def _loaded(prefixes: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(name for name in list(sys.modules) if name.startswith(prefixes))


def sdk_class_attributes(prefixes: tuple[str, ...] = SDK_PREFIXES) -> dict:
    """Every attribute of the loaded SDK modules' own classes, to put back what an instrumentor patched.

    pydantic's own (``__pydantic_*``: a model's validator, built on first use) are left out: no instrumentor
    patches them, and putting back the placeholder of a model not yet used made pydantic rebuild it."""
    return _class_attributes(_loaded(prefixes))


def _class_attributes(names: tuple[str, ...]) -> dict:
    out = {}
    for name in names:
        module = sys.modules.get(name)
        for cls in list(vars(module).values()) if module is not None else ():
            if isinstance(cls, type) and cls.__module__ == name:
                for key, value in list(vars(cls).items()):
                    if not key.startswith("__pydantic"):
                        out[(cls, key)] = value
    return out


@functools.lru_cache(maxsize=1)
def _snapshot(names: tuple[str, ...]) -> dict:
    """The snapshot of these SDK modules, taken once: ~1.3 s for the ~5,300 modules of both SDKs (their types
    re-export thousands of names), and a test's teardown puts every class back as it was, so the next test
    with the same modules loaded starts from it again."""
    return _class_attributes(names)


def restore_sdk_classes(before: dict) -> None:
    for (cls, key), value in before.items():
        if vars(cls).get(key) is not value:
            setattr(cls, key, value)


@pytest.fixture(autouse=True)
def pristine_sdks() -> Iterator[None]:
    """Each test starts from the SDKs' own methods (autouse where imported)."""
    before = _snapshot(_loaded(SDK_PREFIXES))
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


def langfuse_openai() -> type:
    """Langfuse's drop-in ``OpenAI`` class, its tracing wrappers on the openai SDK's classes. Langfuse wraps them when
    ``langfuse.openai`` is first imported; the teardown above puts the classes back after that test, so a later
    test in the same process wraps them again here (once: wrapped twice, each call would be two generations)."""
    import langfuse.openai
    import openai
    import wrapt

    # (the SDK's own create has a __wrapped__ too: functools.wraps of its required_args decorator)
    if not isinstance(vars(openai.resources.chat.completions.Completions)["create"], wrapt.FunctionWrapper):
        langfuse.openai.register_tracing()
    return langfuse.openai.OpenAI
