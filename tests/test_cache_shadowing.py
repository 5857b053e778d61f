"""Shadowing: once the verifier has rejected a candidate, the candidates more than ``verify_shadow_margin`` under
its cosine are rejected too (reason ``shadowed``). Real FAISS; the cosines are set exactly by a scripted embedder
and the verdicts by a scripted verifier, so each row says what one lookup must do."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("faiss")

from costline.errors import ConfigError  # noqa: E402
from costline.serving.cache.semantic import REASON_SHADOWED, REASON_SIMILARITY, SemanticCache  # noqa: E402
from costline.serving.settings import CacheConfig  # noqa: E402

DIM = 16
QUERY = "the question asked"


class ScriptedEmbedder:
    """Embeds the query as one unit vector and each stored text at the cosine with it its name says."""

    model_name = "scripted"
    dim = DIM

    def __init__(self, cosines: dict[str, float]) -> None:
        rng = np.random.default_rng(7)
        self.base = np.zeros(DIM, dtype=np.float64)
        self.base[0] = 1.0
        self.vectors = {QUERY: self.base.astype(np.float32)}
        for i, (text, cos) in enumerate(cosines.items()):
            r = rng.normal(size=DIM)
            r[0] = 0.0
            r /= np.linalg.norm(r)
            self.vectors[text] = (cos * self.base + np.sqrt(max(0.0, 1 - cos * cos)) * r).astype(np.float32)

    def encode(self, texts):
        return np.stack([self.vectors[t] for t in texts])


class ScriptedVerifier:
    """Rejects the stored questions it is told to (reason "guard"), passes the rest; records what it was asked."""

    pair_model = None

    def __init__(self, rejects: set[str]) -> None:
        self.rejects = rejects
        self.asked: list[str] = []

    def check(self, query, candidate, cosine, namespace="*"):
        self.asked.append(candidate)
        return "guard" if candidate in self.rejects else None


# (margin, stored questions with their cosine to the query and whether the verifier rejects them,
#  the one served or None, the lookup's reject reasons)
CASES = [
    pytest.param(0.0, [("near miss", 0.95, True), ("another question", 0.80, False)], None,
                 ("guard", REASON_SHADOWED), id="a farther candidate after a rejected one is shadowed"),
    pytest.param(0.0, [("same question", 0.95, False), ("another question", 0.80, False)], "same question", (),
                 id="nothing rejected: the best candidate is served"),
    pytest.param(0.0, [("near miss", 0.95, True), ("a tie", 0.95, False)], "a tie", None,
                 id="an exact tie is not under the rejected one (either may come first)"),
    pytest.param(0.1, [("near miss", 0.95, True), ("close behind", 0.90, False)], "close behind", ("guard",),
                 id="within the margin a candidate is still verified"),
    pytest.param(0.1, [("near miss", 0.95, True), ("far behind", 0.80, False)], None, ("guard", REASON_SHADOWED),
                 id="past the margin it is not"),
    pytest.param(1.0, [("near miss", 0.95, True), ("another question", 0.60, False)], "another question",
                 ("guard",), id="margin 1: every candidate verified on its own"),
    pytest.param(0.0, [("near miss", 0.95, True), ("under the floor", 0.40, False)], None,
                 ("guard", REASON_SIMILARITY), id="the floor still comes first"),
    pytest.param(0.0, [("near miss", 0.95, True), ("another near miss", 0.95, True), ("third", 0.85, False)], None,
                 ("guard", "guard", REASON_SHADOWED), id="ties are verified, the rest shadowed"),
]


@pytest.mark.parametrize(("margin", "stored", "served", "reasons"), CASES)
def test_shadowing(tmp_path, margin, stored, served, reasons) -> None:
    embedder = ScriptedEmbedder({text: cos for text, cos, _ in stored})
    cache = SemanticCache(embedder, CacheConfig(path=tmp_path, verify_shadow_margin=margin, verify_pair_model=False))
    verifier = ScriptedVerifier({text for text, _, rejected in stored if rejected})
    cache.verifier = verifier
    for text, _, _ in stored:
        cache.store(text, f"answer to {text}", tenant="t")
    found = cache.lookup_detail(QUERY, tenant="t")
    assert (found.hit.query if found.hit else None) == served
    if reasons is not None:
        assert found.reject_reasons == reasons
    if reasons and REASON_SHADOWED in reasons:  # a shadowed candidate never reaches the verifier
        assert len(verifier.asked) == len(reasons) - 1


@pytest.mark.parametrize("margin", [-0.1, 1.5, True, "0.1"])
def test_a_bad_shadow_margin_is_refused_naming_the_key(tmp_path, margin) -> None:
    with pytest.raises(ConfigError, match="verify_shadow_margin"):
        SemanticCache(ScriptedEmbedder({}), CacheConfig(path=tmp_path, verify_shadow_margin=margin))
