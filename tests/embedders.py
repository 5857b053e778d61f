"""The PyTorch embedder for test files whose cases each embed a pair or two: every text of the file's
parametrized cases embedded into the memo at once, when the module's fixture is first asked for.

Batched, a file's few hundred texts take a few seconds; one text at a time, case by case, PyTorch was ~85 % of
such a file's CPU (tests/test_cache_verify_families.py: 78 s of CPU in the suite, 2026-12-03). A case's vectors
are the same either way (to ~1e-6 of cosine: padding is masked)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest


def primed_embedder(request: pytest.FixtureRequest, *, params: Iterable[str] = ("stored", "new"),
                    extra: Iterable[str] = ()) -> Any:
    """A loaded :class:`~costline.serving.embedding.Embedder` holding in its memo the vectors of ``params`` (the
    string arguments of that name) of every collected case of the requesting module, and of ``extra``."""
    from costline.serving.embedding import Embedder

    names = set(params)
    texts = {v for item in request.session.items
             if getattr(item, "module", None) is request.module and hasattr(item, "callspec")
             for k, v in item.callspec.params.items() if k in names and isinstance(v, str)}
    texts |= set(extra)
    embedder = Embedder(memo_size=len(texts) + 1024).load()
    if texts:
        embedder.encode(sorted(texts))
    return embedder
