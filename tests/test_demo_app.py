"""The demo's app: requests through Pipeline + a real SemanticCache (FAISS) + SDK calls to the stand-in,
spans on the simulated clock per the contract, stale answers served until the late invalidation.

Most tests embed with a fast bag-of-words stand-in for MiniLM (``WordsEmbedder``);
``test_with_the_real_minilm_...`` runs the demo app with the packaged all-MiniLM-L6-v2 itself."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

pytest.importorskip("faiss")

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from costline import contract as c  # noqa: E402
from costline.collectors import Recorder  # noqa: E402
from costline.config import Config  # noqa: E402
from costline.sim.demo_app import DemoApp, DemoValidator, SimClock, faq_prompt, start_standin  # noqa: E402
from costline.serving.embedding import Embedder  # noqa: E402
from costline.sim.standin_model import reference_tag  # noqa: E402
from costline.sim.traffic import DocEvent, ServingRequest  # noqa: E402

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
QUESTION = "How do I get a return shipping label?"  # easy: the budget tier answers it


class WordsEmbedder:
    """A fast stand-in for MiniLM: bag of hashed lower-case words (same words, same vector)."""

    dim = 64
    model_name = "bag-of-words"

    def encode(self, texts):  # type: ignore[no-untyped-def]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


@pytest.fixture
def world():  # type: ignore[no-untyped-def]
    clock = SimClock()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    config = Config()
    standin = start_standin(config, clock)
    app = DemoApp(config, recorders={"app": Recorder(provider, now=clock)}, clock=clock, standin=standin,
                  embedder=WordsEmbedder())
    yield app, exporter, standin
    app.close()
    standin.shutdown()


def faq(i: int, at: datetime, *, version: int = 1, tenant: str = "acme", query: str = QUESTION) -> ServingRequest:
    return ServingRequest(f"r{i}", at, tenant, "faq", "return-label", query, "return-label",
                          f"{tenant}-policy", version)


def ns(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000) * 1000


def test_a_miss_is_answered_by_a_tier_and_its_spans_follow_the_contract_on_the_simulated_clock(world) -> None:  # type: ignore[no-untyped-def]
    app, exporter, standin = world
    answer = app.answer(faq(1, T0))
    assert not answer.cached and answer.success and answer.tier == "budget"
    spans = exporter.get_finished_spans()
    (req,) = [s for s in spans if s.name == c.SPAN_REQUEST]
    (lookup,) = [s for s in spans if s.name == c.SPAN_CACHE_LOOKUP]
    calls = [s for s in spans if s.kind.name == "CLIENT"]
    assert len(calls) == 1 and standin.log.models() == {"claude-haiku-4-5": 1}
    a = req.attributes
    assert (a[c.COSTLINE_TENANT], a[c.COSTLINE_TASK_TYPE], a[c.COSTLINE_SUBTYPE]) == ("acme", "faq", "return-label")
    assert (a[c.COSTLINE_ROUTED_TIER], a[c.COSTLINE_TIER], a[c.COSTLINE_SUCCESS]) == ("budget", "budget", True)
    assert a[c.COSTLINE_REQUEST_ID] == "r1" and a[c.COSTLINE_CACHE_HIT] is False
    assert lookup.attributes[c.COSTLINE_CACHE_NAMESPACE] == "faq" and lookup.attributes[c.COSTLINE_CACHE_HIT] is False
    # The prompt carries the document in a prompt-cached system block: the call is priced with it.
    assert calls[0].attributes[c.GEN_AI_USAGE_INPUT_TOKENS] > 1000
    # Times: the request starts at its simulated time; every span inside it, each start <= end.
    assert ns(T0) <= req.start_time < ns(T0) + 1_000_000_000
    for s in (lookup, *calls):
        assert s.parent.span_id == req.context.span_id
        assert req.start_time <= s.start_time <= s.end_time <= req.end_time
    assert lookup.end_time <= calls[0].start_time
    # The stand-in's simulated latency advanced the clock, not the wall: the budget tier's 20 ms.
    assert calls[0].end_time - calls[0].start_time >= 20_000_000
    assert req.end_time - req.start_time < 5_000_000_000


def test_stale_answers_are_served_until_the_late_invalidation_and_not_after(world) -> None:  # type: ignore[no-untyped-def]
    app, exporter, _ = world
    first = app.answer(faq(1, T0))
    assert reference_tag(faq_prompt(faq(1, T0))) in first.text  # grounded in version 1
    assert app.answer(faq(2, T0 + timedelta(minutes=5))).cached  # a fresh hit
    assert app.stats.stale == 0
    changed = T0 + timedelta(hours=1)
    app.handle(DocEvent(changed, "acme", "acme-policy", "update", 2))
    stale = app.answer(faq(3, changed + timedelta(minutes=5), version=2))
    assert stale.cached and stale.text == first.text  # the app still serves the version-1 answer
    assert app.stats.stale == 1 and app.stats.stale_by_doc["acme-policy"] == 1
    removed = app.handle(DocEvent(changed + timedelta(hours=2), "acme", "acme-policy", "invalidate", 1))
    assert removed == 1
    fresh = app.answer(faq(4, changed + timedelta(hours=2, minutes=5), version=2))
    assert not fresh.cached and fresh.text != first.text
    assert reference_tag(faq_prompt(faq(4, T0, version=2))) in fresh.text  # grounded in version 2
    again = app.answer(faq(5, changed + timedelta(hours=2, minutes=10), version=2))
    assert again.cached and again.text == fresh.text
    assert (app.stats.stale, app.stats.stale_after_invalidation) == (1, 0)
    assert app.stats.lookups == 5 and app.stats.hits == 3
    assert any("invalidated: 1 cached answers dropped, after 1 stale answers" in e for e in app.stats.events)
    hits = [s.attributes[c.COSTLINE_CACHE_HIT] for s in exporter.get_finished_spans()
            if s.name == c.SPAN_CACHE_LOOKUP]
    assert hits == [False, True, True, False, True]


def test_tenants_are_isolated_and_entries_expire_on_the_simulated_clock(world) -> None:  # type: ignore[no-untyped-def]
    app, _, _ = world
    app.answer(faq(1, T0))
    assert not app.answer(faq(2, T0 + timedelta(minutes=1), tenant="globex")).cached
    assert app.answer(faq(3, T0 + timedelta(minutes=2))).cached
    ttl = app.config.serving.cache.ttl_s
    assert not app.answer(faq(4, T0 + timedelta(seconds=ttl + 1))).cached


def test_a_paraphrase_with_the_same_words_hits_and_counts_as_a_semantic_hit(world) -> None:  # type: ignore[no-untyped-def]
    app, _, _ = world
    app.answer(faq(1, T0))
    assert app.answer(faq(2, T0 + timedelta(minutes=1), query="how do i get a return shipping label")).cached
    assert app.stats.semantic_hits == 1


def test_the_student_shift_escalates_what_the_validator_catches_and_serves_the_rest(world) -> None:  # type: ignore[no-untyped-def]
    app, exporter, _ = world
    sarcasm = ServingRequest("s1", T0, "acme", "classification", "sarcasm",
                             "Classify the sentiment of this review; mind the sarcasm: \"Great, it broke again\"")
    plain = ServingRequest("s2", T0 + timedelta(seconds=1), "acme", "classification", "sentiment",
                           "Classify the sentiment of this review: \"It works\"")
    ok = app.answer(plain)
    assert (ok.routed_tier, ok.tier, ok.escalations) == ("student", "student", 0)
    app.check = DemoValidator(catch_rate=1.0)  # catches every wrong answer
    caught = app.answer(sarcasm)
    assert [a.tier for a in caught.attempts] == ["student", "mid"] and caught.success
    app.check = DemoValidator(catch_rate=0.0)  # catches none: the wrong answer is served
    missed = app.answer(dataclasses_replace(sarcasm, request_id="s3"))
    assert [a.tier for a in missed.attempts] == ["student"]
    assert not any(s.name == c.SPAN_CACHE_LOOKUP for s in exporter.get_finished_spans())  # not cached traffic
    assert app.stats.escalated == 1 and app.stats.lookups == 0


def dataclasses_replace(obj, **kw):  # type: ignore[no-untyped-def]
    import dataclasses

    return dataclasses.replace(obj, **kw)


def test_priming_fills_the_cache_without_recording_or_counting(world) -> None:  # type: ignore[no-untyped-def]
    app, exporter, _ = world
    entries = app.prime([faq(1, T0 - timedelta(hours=3)), faq(2, T0 - timedelta(hours=2))])
    assert entries == 1 and exporter.get_finished_spans() == () and app.stats.requests == 0
    assert app.answer(faq(3, T0)).cached


def test_the_validator_accepts_correct_answers_and_catches_its_share_of_wrong_ones() -> None:
    prompt = "What is the refund window?"
    right = f"Thirty days. [ref:{reference_tag(prompt)}] (confidence: 0.9)"
    assert DemoValidator(1.0)(prompt, right) and DemoValidator(0.0)(prompt, right)
    wrong = [f"Answer {i}. [ref:00000000] (confidence: 0.9)" for i in range(400)]
    caught = sum(not DemoValidator(0.5)(prompt, w) for w in wrong)
    assert 150 < caught < 250
    assert not any(DemoValidator(1.0)(prompt, w) for w in wrong)
    with pytest.raises(ValueError):
        DemoValidator(1.5)


def test_the_sim_clock_pins_runs_and_advances_without_going_back() -> None:
    real = iter(range(0, 10_000_000, 1000))
    clock = SimClock(real=lambda: next(real))
    clock.set(T0)
    assert clock() == clock() == ns(T0)
    clock.start(T0)
    a, b = clock(), clock()
    assert ns(T0) <= a < b
    clock.advance(0.02)
    assert clock() >= b + 20_000_000
    assert clock.seconds() == pytest.approx(T0.timestamp(), abs=1.0)


def test_the_embedder_memo_embeds_each_text_once_and_evicts_the_least_recently_used() -> None:
    class Model:
        def __init__(self) -> None:
            self.seen: list[str] = []

        def encode(self, items, **_kw):  # type: ignore[no-untyped-def]
            self.seen += list(items)
            return np.array([[len(t), 1.0, 0.0] for t in items], dtype=np.float32)

    e = Embedder(memo_size=2)
    model = Model()
    e._model, e._dim = model, 3  # no real model needed to test the memo
    first = e.encode(["a", "bb", "a"])
    assert model.seen == ["a", "bb"] and first.shape == (3, 3) and first[0].tolist() == first[2].tolist()
    first[0, 0] = 99.0  # the caller's copy: the memo is not changed
    assert e.encode(["a"])[0, 0] == 1.0 and model.seen == ["a", "bb"]
    e.encode(["ccc"])  # evicts "bb", the least recently used
    e.encode(["bb"])
    assert model.seen == ["a", "bb", "ccc", "bb"]
    assert (e.memo_hits, e.memo_misses) == (1, 4)  # a text twice in one batch is embedded once
    assert e.warm(["bb", "dddd", "dddd"]) == 1 and model.seen[-1] == "dddd"  # "bb" is remembered
    off = Embedder(memo_size=0)
    off._model, off._dim = Model(), 3
    off.encode(["a"]), off.encode(["a"])
    assert off._model.seen == ["a", "a"] and off.warm(["a"]) == 0
    with pytest.raises(ValueError):
        Embedder(memo_size=-1)


def test_an_overload_burst_exhausts_the_sdk_retries_on_every_tier_and_the_request_fails(world) -> None:  # type: ignore[no-untyped-def]
    from costline.sim.traffic import ErrorBurst

    app, exporter, standin = world
    retries = app.config.serving.backends.max_retries
    ladder = app.config.serving.escalation.max_escalations + 1
    app.handle(ErrorBurst(T0, status=529, count=ladder * (retries + 1)))
    failed = app.answer(faq(1, T0))
    assert not failed.success and [a.problem for a in failed.attempts] == ["OverloadedError"] * ladder
    calls = [s for s in exporter.get_finished_spans() if s.kind.name == "CLIENT"]
    assert [s.attributes[c.ERROR_TYPE] for s in calls] == ["OverloadedError"] * ladder
    (req,) = [s for s in exporter.get_finished_spans() if s.name == c.SPAN_REQUEST]
    assert req.attributes[c.COSTLINE_SUCCESS] is False
    assert app.answer(faq(2, T0 + timedelta(minutes=1))).success  # the burst is over
    assert (app.stats.error_bursts, app.stats.call_errors, app.stats.failed) == (1, ladder, 1)


@pytest.fixture(scope="module")
def minilm():  # type: ignore[no-untyped-def]
    return Embedder()  # the packaged all-MiniLM-L6-v2, offline


def test_with_the_real_minilm_a_rewording_hits_another_question_misses_and_invalidation_holds(minilm) -> None:  # type: ignore[no-untyped-def]
    clock = SimClock()
    config = Config()
    standin = start_standin(config, clock)
    app = DemoApp(config, recorders={"app": Recorder(TracerProvider(), now=clock)}, clock=clock, standin=standin,
                  embedder=minilm)
    try:
        first = app.answer(faq(1, T0))
        assert not first.cached and reference_tag(faq_prompt(faq(1, T0))) in first.text
        reworded = app.answer(faq(2, T0 + timedelta(minutes=1), query="how do i get a return shipping label"))
        assert reworded.cached and reworded.text == first.text and app.stats.semantic_hits == 1
        other = app.answer(faq(3, T0 + timedelta(minutes=2), query="How long does a refund take to arrive?"))
        assert not other.cached
        app.handle(DocEvent(T0 + timedelta(hours=1), "acme", "acme-policy", "invalidate", 1))
        assert not app.answer(faq(4, T0 + timedelta(hours=1, minutes=5), version=2)).cached
        assert app.stats.stale_after_invalidation == 0
    finally:
        app.close()
        standin.shutdown()


def test_a_hit_on_another_question_of_the_traffic_counts_as_a_wrong_answer(world) -> None:  # type: ignore[no-untyped-def]
    app, _, _ = world
    app.answer(faq(1, T0))
    # the same words, so the bag-of-words embedder matches it at cosine 1.0; by the traffic's labels (not a
    # paraphrase of any FAQ family) another question
    asked = "How do I get a shipping label return?"
    assert app.answer(faq(2, T0 + timedelta(minutes=1), query=asked)).cached
    assert (app.stats.semantic_hits, app.stats.other_question_hits) == (1, 1)
    assert app.answer(faq(3, T0 + timedelta(minutes=2), query="How can I get a return shipping label?")).cached
    assert (app.stats.semantic_hits, app.stats.other_question_hits) == (2, 1)  # a family paraphrase: right


def test_the_demos_simulated_cache_never_joins_a_replication_topic_the_config_names() -> None:
    """A user's config that replicates the gateway's cache: the demo's cache (simulated days, the stand-in's
    answers) must not publish into that topic, nor read the production cache from it."""
    import dataclasses

    from costline.sim.demo_app import demo_serving_config

    base = Config()
    config = base.replace(serving=dataclasses.replace(
        base.serving, cache=dataclasses.replace(base.serving.cache, replication_topic="costline_cache")))
    standin = type("StandIn", (), {"url": "http://127.0.0.1:1", "openai_url": "http://127.0.0.1:1/v1"})()
    assert demo_serving_config(config, standin).serving.cache.replication_topic is None
    assert config.serving.cache.replication_topic == "costline_cache"  # the user's config itself untouched
