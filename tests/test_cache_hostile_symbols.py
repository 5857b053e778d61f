"""Two questions that differ only in an emoji or another symbol: the embedding model reads most as one unknown word
piece ([UNK]), so their cosine is 1.0, the pair model reads them the same way and the guards read words. A user who
asks "is the 🍕 vegan?" does not want the answer about the 🍔."""

from __future__ import annotations

import pytest

from costline.serving.cache import verify

DIFFERENT = [
    ("Is the 🍕 vegan?", "Is the 🍔 vegan?"),
    ("Can I bring my 🐕 to the hotel?", "Can I bring my 🐈 to the hotel?"),
    ("What does ☂ mean on the label?", "What does ☀ mean on the label?"),
    ("What does ❤️ mean in your app?", "What does 💔 mean in your app?"),
]
SAME = [
    ("What does ❤️ mean in your app?", "What does ❤ mean in your app?"),  # a variation selector only
    ("Can I cancel my order?", "Can I\u200b cancel my order?"),  # a zero-width space
    ("Can I cancel my order?", "Can I cancel my order?\x00"),  # a control character
    ("Is it 30°C inside?", "Is it 30°C inside the venue?"),  # Latin-1 symbols are the model's words
]


@pytest.fixture(scope="module")
def verifier() -> verify.Verifier:
    return verify.Verifier()


@pytest.mark.parametrize("stored, asked", DIFFERENT)
def test_another_symbol_is_another_question(verifier, stored, asked) -> None:
    assert verifier.check(asked, stored, 1.0) == "entity"


@pytest.mark.parametrize("stored, asked", SAME)
def test_invisible_characters_and_latin1_symbols_change_nothing(verifier, stored, asked) -> None:
    assert verifier.check(asked, stored, 0.99) != "entity"


def test_the_cache_does_not_serve_another_emoji(tmp_path) -> None:
    pytest.importorskip("faiss")
    pytest.importorskip("sentence_transformers")
    from costline.serving.cache.semantic import SemanticCache
    from costline.serving.embedding import Embedder
    from costline.serving.settings import CacheConfig

    cache = SemanticCache(Embedder(threads=1).load(), CacheConfig(path=tmp_path))
    cache.store("Is the 🍕 vegan?", "Yes, the pizza is vegan.", tenant="acme")
    found = cache.lookup_detail("Is the 🍔 vegan?", tenant="acme")
    assert found.similarity is not None and found.similarity > 0.999  # the model cannot tell them apart
    assert found.hit is None and found.reject_reasons == ("entity",)
    assert cache.lookup("is the 🍕 vegan", tenant="acme") is not None  # the same question is still served
