"""A question of a request body's size (8 MB at the gateway's default): what the embedder's tokenizer reads of it,
the ONNX embedder's window check on a long question, a lone surrogate."""

from __future__ import annotations

import random

import pytest

pytest.importorskip("faiss")
pytest.importorskip("sentence_transformers")

from costline.serving.cache.semantic import SemanticCache  # noqa: E402
from costline.serving.embedding import Embedder  # noqa: E402
from costline.serving.settings import CacheConfig  # noqa: E402

MB = 1_000_000


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(threads=1).load()


def words(n: int, seed: int = 1) -> str:
    rnd = random.Random(seed)
    vocab = "the quick brown fox jumps over a lazy dog and then asks how to reset the password".split()
    return " ".join(rnd.choice(vocab) for _ in range(n // 4))[:n]


class Model:
    """The embedder's model, recording the longest text its tokenizer or its encode was given."""

    def __init__(self, inner) -> None:
        self.inner, self.longest = inner, 0
        model = self

        class Tokenizer:
            def __call__(self, text, *args, **kwargs):
                model.saw([text] if isinstance(text, str) else text)
                return inner.tokenizer(text, *args, **kwargs)

            def __getattr__(self, name):
                return getattr(inner.tokenizer, name)

        self.tokenizer = Tokenizer()

    def saw(self, texts) -> None:
        self.longest = max(self.longest, max(map(len, texts), default=0))

    def encode(self, texts, *args, **kwargs):
        self.saw(texts)
        return self.inner.encode(texts, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.mark.parametrize("query", [words(MB), " " * MB + "how do I reset my password?", "a" * MB,
                                   "How do I reset my password?" + "\u200b" * (MB // 3)],
                         ids=["words", "spaces", "one-word", "zero-width"])
def test_the_tokenizer_reads_a_bounded_part_of_a_huge_question(embedder, tmp_path, monkeypatch, query) -> None:
    """It read all of it, several times a lookup: ~1.2 s of CPU a megabyte for the lookup, ~0.8 s for each later
    lookup it was a candidate of (the window check tokenized the stored question again)."""
    spy = Model(embedder._get_model())
    monkeypatch.setattr(embedder, "_get_model", lambda: spy)
    cache = SemanticCache(embedder, CacheConfig(path=tmp_path))
    cache.store("How do I reset my password?", "Use the reset link.", tenant="acme")
    cache.lookup_detail(query, tenant="acme")
    cache.store(query, "answer", tenant="acme")
    assert cache.lookup(query, tenant="acme") is not None  # an exact repeat is served
    assert cache.lookup(query + " x", tenant="acme") is None  # anything else is not (long_query)
    assert spy.longest <= 64_000


def test_a_long_text_embeds_as_before(embedder) -> None:
    """A text over MAX_TEXT_CHARS is embedded from its head and tail slices: the same windows as from all of it."""
    from costline.serving.embedding import MAX_TEXT_CHARS

    text = words(3 * MAX_TEXT_CHARS, seed=3)
    tok = embedder._get_model().tokenizer
    ids = tok(text, add_special_tokens=False)["input_ids"]
    room = embedder.window - 2
    assert embedder._head_tail(embedder._get_model(), text) == [tok.decode(ids[:room]), tok.decode(ids[-room:])]


def test_a_lone_surrogate_is_read(embedder, tmp_path) -> None:
    """JSON's "\\ud800" decodes to one; the tokenizer raised TypeError on it (the gateway replaces it before, the
    cache's own callers did not)."""
    cache = SemanticCache(embedder, CacheConfig(path=tmp_path))
    cache.store("How do I reset my password?", "Use the reset link.", tenant="acme")
    assert cache.lookup("How do I reset my password?\ud800", tenant="acme") is not None
    assert embedder.fits("a\ud800 " * 200)


def test_the_onnx_embedder_checks_a_long_question(tmp_path) -> None:
    """OnnxEmbedder (the gateway's default runtime) inherited fits() calling its tokenizer as the torch one's: a
    tokenizers.Tokenizer is not callable, so every lookup with a candidate where either question was over 254
    characters raised TypeError (the pipeline then answered without the cache), and its window read 512."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tokenizers")
    from costline.serving.embedding_onnx import OnnxEmbedder

    emb = OnnxEmbedder(threads=1, batch_wait_ms=None)
    try:
        assert emb.window == 256
        assert emb.fits("word " * 100) and not emb.fits("word " * 300)
        prefix = "Here is our full account history and the terms we agreed to. " * 40
        cache = SemanticCache(emb, CacheConfig(path=tmp_path))
        cache.store(prefix + "How do I cancel my subscription?", "Cancel in settings.", tenant="acme")
        found = cache.lookup_detail(prefix + "How do I add a user?", tenant="acme")
        assert found.hit is None and "long_query" in found.reject_reasons
        assert cache.lookup(prefix + "How do I cancel my subscription?", tenant="acme") is not None
    finally:
        emb.shutdown()
