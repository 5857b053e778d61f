"""answer(): routing, the cache protocol, escalation and its spans, and the gateway driven by the anthropic SDK."""

from __future__ import annotations

import dataclasses
import threading

import anthropic
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costline import contract as c
from costline.collectors import Recorder
from costline.config import Config
from costline.pricing import PricingTable
from costline.serving.gateway.app import CACHE_MODEL, Gateway
from costline.serving.pipeline import AnswerCache, Pipeline
from costline.serving.settings import (BackendsConfig, EscalationConfig, RouteRulesConfig, RouterConfig,
                                       StandInConfig)
from costline.sim.standin import StandInServer
from costline.sim.standin_model import reference_validator

EASY = "How do I reset my password?"  # budget answers it
HARD = "Reason step by step about the legal risks of these renewal terms."  # short: routed to budget
HARDEST = "Design a novel multi-step agent for our churn interviews."  # only frontier


class FakeCache:
    """The cache protocol in a dict: exact-match lookups."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str | None, str], tuple[str, tuple[str, ...]]] = {}
        self.lock = threading.Lock()

    def lookup(self, query, *, tenant, namespace=None):
        with self.lock:
            found = self.entries.get((tenant, namespace, query))
        if found is None:
            return None
        return type("Hit", (), {"answer": found[0], "similarity": 0.99})()

    def store(self, query, answer, *, tenant, namespace=None, doc_hashes=()):
        with self.lock:
            self.entries[(tenant, namespace, query)] = (answer, tuple(doc_hashes))


@pytest.fixture
def standin():
    server = StandInServer(StandInConfig(latency_scale=0.0, retry_after_ms=1, degrade_keywords=("sarcasm",)), port=0)
    server.start()
    yield server
    server.shutdown()


@pytest.fixture
def exporter():
    return InMemorySpanExporter()


def make_pipeline(standin, exporter, *, cache=None, validator=reference_validator, max_escalations=2,
                  student_task_types=(), max_retries=0, on_error=True):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    cfg = Config()
    serving = dataclasses.replace(
        cfg.serving,
        backends=BackendsConfig(anthropic_base_url=standin.url, student_base_url=standin.openai_url,
                                max_retries=max_retries),
        router=RouterConfig(rules=RouteRulesConfig(student_task_types=student_task_types)),
        escalation=EscalationConfig(max_escalations=max_escalations, on_error=on_error),
    )
    return Pipeline.from_config(cfg.replace(serving=serving), recorder=Recorder(provider), cache=cache,
                                validator=validator, env={})


def request_span(exporter):
    (span,) = [s for s in exporter.get_finished_spans() if s.name == c.SPAN_REQUEST]
    return dict(span.attributes)


def call_spans(exporter):
    return [s for s in exporter.get_finished_spans() if s.kind.name == "CLIENT"]


def test_easy_query_is_answered_by_the_budget_tier_in_one_attempt(standin, exporter) -> None:
    p = make_pipeline(standin, exporter)
    result = p.answer(EASY, task_type="faq", tenant="acme")
    assert (result.tier, result.model, result.success, result.escalations) == ("budget", "claude-haiku-4-5", True, 0)
    req = request_span(exporter)
    assert req[c.COSTLINE_ROUTED_TIER] == "budget" and req[c.COSTLINE_TIER] == "budget"
    assert (req[c.COSTLINE_ATTEMPTS], req[c.COSTLINE_ESCALATIONS], req[c.COSTLINE_SUCCESS]) == (1, 0, True)


def test_a_rejected_answer_escalates_tier_by_tier_and_every_attempt_is_a_priced_call(standin, exporter) -> None:
    p = make_pipeline(standin, exporter, max_escalations=3)
    result = p.answer(HARDEST, task_type="faq", tenant="acme")
    assert [a.tier for a in result.attempts] == ["budget", "mid", "upper", "frontier"]
    assert [a.problem for a in result.attempts][:3] == ["validator"] * 3
    assert result.success and result.tier == "frontier" and result.escalations == 3
    req = request_span(exporter)
    assert (req[c.COSTLINE_ATTEMPTS], req[c.COSTLINE_ESCALATIONS]) == (4, 3)
    assert (req[c.COSTLINE_TIER], req[c.COSTLINE_SUCCESS]) == ("frontier", True)
    calls = call_spans(exporter)
    assert [s.attributes[c.COSTLINE_TIER] for s in calls] == ["budget", "mid", "upper", "frontier"]
    # Escalation cost: the failed cheap attempts are paid for on top of the frontier answer.
    table = PricingTable()
    costs = [table.price_call(model=s.attributes[c.GEN_AI_REQUEST_MODEL],
                              input_tokens=s.attributes[c.GEN_AI_USAGE_INPUT_TOKENS],
                              output_tokens=s.attributes[c.GEN_AI_USAGE_OUTPUT_TOKENS]).cost_usd for s in calls]
    assert sum(costs) > costs[-1] and all(x > 0 for x in costs)
    assert [e.model for e in standin.log.paid()] == ["claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-8",
                                                     "claude-fable-5"]


def test_escalation_stops_after_max_escalations_and_the_request_fails(standin, exporter) -> None:
    p = make_pipeline(standin, exporter, max_escalations=1)
    result = p.answer(HARDEST, task_type="faq", tenant="acme")
    assert [a.tier for a in result.attempts] == ["budget", "mid"] and not result.success
    req = request_span(exporter)
    assert (req[c.COSTLINE_ATTEMPTS], req[c.COSTLINE_ESCALATIONS], req[c.COSTLINE_SUCCESS]) == (2, 1, False)
    assert req[c.COSTLINE_TIER] == "mid"


def test_low_confidence_alone_escalates_without_a_validator(standin, exporter) -> None:
    p = make_pipeline(standin, exporter, validator=None, max_escalations=3)
    result = p.answer(HARD, task_type="faq", tenant="acme")
    problems = [a.problem for a in result.attempts]
    assert set(problems[:-1]) <= {"low_confidence"} and problems[-1] is None
    assert all(a.confidence is not None for a in result.attempts)
    assert all(a.confidence < 0.5 for a in result.attempts[:-1])


def test_a_tier_failing_after_sdk_retries_escalates_and_the_call_span_has_error_type(standin, exporter) -> None:
    p = make_pipeline(standin, exporter, max_retries=1)
    standin.inject_errors(529, 2)  # the first try and the SDK's one retry
    result = p.answer(EASY, task_type="faq", tenant="acme")
    assert [(a.tier, a.problem) for a in result.attempts] == [("budget", "OverloadedError"), ("mid", None)]
    assert result.success and result.tier == "mid"
    calls = call_spans(exporter)
    assert calls[0].attributes[c.ERROR_TYPE] == "OverloadedError" and c.ERROR_TYPE not in calls[1].attributes
    req = request_span(exporter)
    assert (req[c.COSTLINE_ATTEMPTS], req[c.COSTLINE_ESCALATIONS], req[c.COSTLINE_TIER]) == (2, 1, "mid")


def test_without_on_error_a_failed_tier_ends_the_request(standin, exporter) -> None:
    p = make_pipeline(standin, exporter, on_error=False)
    standin.inject_errors(500, 1)
    result = p.answer(EASY, task_type="faq", tenant="acme")
    assert not result.success and len(result.attempts) == 1 and result.reply is None


def test_a_paused_server_tool_turn_goes_back_to_the_client_not_up_a_tier(standin, exporter) -> None:
    """A long web-search turn that Anthropic paused (``stop_reason`` "pause_turn": searches and no text yet) is not
    a final answer the validator could judge: it goes back to the client, which sends it back to go on. Escalated,
    the next tier would run (and bill) the searches again. Served, but no success: the continuation is."""
    from costline.serving.backends import Prompt, Reply

    p = make_pipeline(standin, exporter, max_escalations=2)  # the reference validator refuses an empty text
    calls = []

    class Paused:  # every tier pauses its turn after a search
        def __init__(self, backend):
            self.spec = backend.spec

        def complete(self, prompt):
            calls.append(self.spec.name)
            return Reply("", self.spec.name, "claude-haiku-4-5", "pause_turn", 900, 40, content=(
                {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "refunds"}},))

    p.backends = {tier: Paused(backend) for tier, backend in p.backends.items()}
    prompt = Prompt(({"role": "user", "content": "What changed in the refund policy?"},),
                    tools=({"type": "web_search_20250305", "name": "web_search"},))
    answer = p.answer("What changed in the refund policy?", task_type="support", tenant="acme", prompt=prompt)
    assert (answer.success, answer.tier, len(answer.attempts)) == (False, answer.routed_tier, 1)
    assert answer.reply.stop_reason == "pause_turn" and calls == [answer.routed_tier]


def test_cache_hit_skips_the_models_and_accepted_answers_are_stored_with_doc_hashes(standin, exporter) -> None:
    cache = FakeCache()
    assert isinstance(cache, AnswerCache)
    p = make_pipeline(standin, exporter, cache=cache)
    first = p.answer(EASY, task_type="faq", tenant="acme", doc_hashes=("policy-v3",))
    assert not first.cached and cache.entries[("acme", None, EASY)] == (first.text, ("policy-v3",))
    exporter.clear()
    second = p.answer(EASY, task_type="faq", tenant="acme")
    assert second.cached and second.tier == "cache" and second.text == first.text and second.similarity == 0.99
    req = request_span(exporter)
    assert (req[c.COSTLINE_TIER], req[c.COSTLINE_CACHE_HIT], req[c.COSTLINE_ATTEMPTS]) == ("cache", True, 0)
    (lookup,) = [s for s in exporter.get_finished_spans() if s.name == c.SPAN_CACHE_LOOKUP]
    assert lookup.attributes[c.COSTLINE_CACHE_HIT] is True
    assert not call_spans(exporter)
    assert p.answer(EASY, task_type="faq", tenant="globex").cached is False  # tenants do not share answers
    failed = p.answer(HARDEST, task_type="faq", tenant="acme")
    assert not failed.success and ("acme", None, HARDEST) not in cache.entries  # rejected answers are not cached


def test_gated_student_answers_and_its_degraded_slice_escalates_to_mid(standin, exporter) -> None:
    p = make_pipeline(standin, exporter, student_task_types=("classification",))
    ok = p.answer("Classify the intent of: 'where is my parcel?'", task_type="classification", tenant="acme")
    assert (ok.tier, ok.model, ok.success) == ("student", "costline-student-lora", True)
    shifted = p.answer("Classify the sarcasm of: 'great, late again'", task_type="classification", tenant="acme")
    assert [a.tier for a in shifted.attempts] == ["student", "mid"] and shifted.success
    providers = [s.attributes[c.GEN_AI_PROVIDER_NAME] for s in call_spans(exporter)]
    assert providers == ["vllm", "vllm", "anthropic"]


# -- the gateway -------------------------------------------------------------------------------------
@pytest.fixture
def gateway(standin, exporter):
    pipeline = make_pipeline(standin, exporter, cache=FakeCache(), max_escalations=3)
    gw = Gateway(pipeline, port=0)
    gw.start()
    yield gw
    gw.shutdown()
    pipeline.close()


def test_gateway_speaks_the_messages_api_to_the_anthropic_sdk(gateway, exporter) -> None:
    app = anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0,
                              default_headers={"x-costline-tenant": "acme", "x-costline-task-type": "faq"})
    raw = app.messages.with_raw_response.create(model="claude-fable-5", max_tokens=300,
                                                messages=[{"role": "user", "content": HARDEST}])
    message = raw.parse()
    assert message.model == "claude-fable-5" and message.role == "assistant" and message.stop_reason == "end_turn"
    assert reference_validator(HARDEST, message.content[0].text)
    assert message.usage.output_tokens > 0 and message.usage.input_tokens > 0
    assert raw.headers["x-costline-tier"] == "frontier" and raw.headers["x-costline-routed-tier"] == "budget"
    assert raw.headers["x-costline-attempts"] == "4"
    req = request_span(exporter)
    assert (req[c.COSTLINE_TENANT], req[c.COSTLINE_TASK_TYPE], req[c.COSTLINE_ESCALATIONS]) == ("acme", "faq", 3)
    easy = app.messages.create(model="claude-fable-5", max_tokens=300,
                               messages=[{"role": "user", "content": EASY}])
    assert easy.model == "claude-haiku-4-5"
    again = app.messages.with_raw_response.create(model="claude-fable-5", max_tokens=300,
                                                  messages=[{"role": "user", "content": EASY}])
    assert again.parse().model == CACHE_MODEL and again.headers["x-costline-cache-hit"] == "true"
    assert again.parse().content[0].text == easy.content[0].text


def test_gateway_errors_are_in_anthropics_format(gateway, standin) -> None:
    app = anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0)
    with pytest.raises(anthropic.BadRequestError, match="messages"):
        app.messages.create(model="m", max_tokens=10, messages=[])
    standin.inject_errors(529, 4)  # every tier of the ladder is overloaded
    with pytest.raises(anthropic.OverloadedError) as err:
        app.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "a new question"}])
    assert err.value.body["error"]["type"] == "overloaded_error"
    assert err.value.response.headers["x-should-retry"] == "false"


def test_gateway_streams_to_clients_that_ask_for_it(gateway) -> None:
    app = anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0,
                              default_headers={"x-costline-tenant": "acme", "x-costline-task-type": "faq"})
    plain = app.messages.create(model="m", max_tokens=300, messages=[{"role": "user", "content": HARDEST}])
    query = HARDEST + " (streamed)"  # not the same question, so not a cache hit
    with app.messages.stream(model="m", max_tokens=300, messages=[{"role": "user", "content": query}]) as stream:
        deltas = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(deltas) > 1  # several text deltas, as a streaming client expects
    assert "".join(deltas) == final.content[0].text
    assert reference_validator(query, final.content[0].text)
    assert final.model == plain.model == "claude-fable-5"  # escalated before the first event
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0


# -- the real cache: FAISS + the packaged MiniLM, not the dict above ----------------------------------
@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("faiss")  # COSTLINE_REQUIRE_EXTRAS=1 (CI) turns a skip here into a failure
    from costline.serving.embedding import Embedder

    return Embedder()  # the packaged all-MiniLM-L6-v2, offline


def test_the_real_faiss_minilm_cache_serves_a_rewording_and_nothing_unrelated(standin, exporter, minilm) -> None:
    from costline.serving.cache.semantic import SemanticCache

    cache = SemanticCache(minilm, Config().serving.cache)
    p = make_pipeline(standin, exporter, cache=cache)
    first = p.answer(EASY, task_type="faq", tenant="acme", doc_hashes=("policy-v3",))
    assert not first.cached and first.success and len(cache) == 1
    exporter.clear()
    reworded = p.answer("how do i reset my password", task_type="faq", tenant="acme")  # case and punctuation
    assert reworded.cached and reworded.text == first.text and 0.9 < reworded.similarity <= 1.0 + 1e-6
    assert not call_spans(exporter)  # no model was called
    assert not p.answer("What is your refund policy for damaged items?", task_type="faq", tenant="acme").cached
    assert not p.answer(EASY, task_type="faq", tenant="globex").cached  # tenants do not share answers
    assert cache.invalidate_by_doc("policy-v3") == 1
    assert not p.answer(EASY, task_type="faq", tenant="acme").cached  # the document changed: asked again


def test_a_query_with_a_lone_surrogate_is_looked_up_and_stored_like_any_other(standin, exporter, minilm,
                                                                               caplog) -> None:
    """JSON's "\\ud800" escape decodes to a lone surrogate, which no tokenizer takes: the embedder raised on it, so
    every such request logged a failed lookup with its traceback and was never cached. The query is read with
    U+FFFD in its place; the cache then works for it as for any question."""
    from costline.serving.cache.semantic import SemanticCache

    cache = SemanticCache(minilm, Config().serving.cache)
    p = make_pipeline(standin, exporter, cache=cache)
    odd = "How do I reset my password \ud800?"
    with caplog.at_level("WARNING"):
        first = p.answer(odd, task_type="faq", tenant="acme")
        again = p.answer(odd, task_type="faq", tenant="acme")
    assert first.success and not first.cached and again.cached and again.text == first.text
    assert "lookup failed" not in caplog.text


@pytest.mark.parametrize("text, expected", [
    ("plain ascii", "plain ascii"),
    ("emoji 😀 and é", "emoji 😀 and é"),
    ("lone \ud800 high", "lone \ufffd high"),
    ("lone \udc00 low", "lone \ufffd low"),
    ("a split pair \ud83d\ude00", "a split pair 😀"),  # two surrogates that make one character, joined
])
def test_well_formed(text, expected) -> None:
    from costline.serving.pipeline import well_formed

    assert well_formed(text) == expected
