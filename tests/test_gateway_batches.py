"""The Message Batches API on the gateway, driven by the real ``anthropic`` SDK (``client.messages.batches``) against
Gateway → Pipeline → the local stand-in, whose own Message Batches API answers the Anthropic tiers' rounds.

What an app on the batch API expects: its results by ``custom_id``, a bad request as an ``errored`` result (the rest
answered), cancel and delete, its batches only; what costline adds: a cache hit answered for nothing, a miss routed
and sent upstream as a batch (the calls recorded at the batch price, linked to their requests in the lake), a refused
answer sent up the ladder, the student asked directly, a batch that survives a gateway restart."""

from __future__ import annotations

import json
import threading
import time

import anthropic
import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from figures_lake import lake_from_sdk_spans, query_lake
from gateways import ROUTES, DictCache, routed_gateway

from costline import contract as c
from costline.collectors import Recorder
from costline.config import Config, LakeConfig
from costline.serving.gateway.auth import KeyStore
from costline.serving.settings import StandInConfig
from costline.sim.standin import StandInServer

EASY = "How do I reset my password?"
#: Claude Haiku 4.5's prices in USD per million tokens as the article's table gives them (costline's defaults), halved
#: for the Batches API (Anthropic's pricing: batch requests cost 50 % of the standard prices).
HAIKU_BATCH_IN, HAIKU_BATCH_OUT = 0.80 / 2, 4.0 / 2


@pytest.fixture
def standin():
    server = StandInServer(StandInConfig(latency_scale=0.0, batch_delay_s=0.3), port=0)
    server.start()
    yield server
    server.shutdown()


@pytest.fixture
def exporter():
    return InMemorySpanExporter()


@pytest.fixture
def recorder(exporter):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Recorder(provider)


def _fast(gw):
    gw.batch_runner.idle_s = 0.05
    return gw


def client(gw, route: str = "anthropic", tenant: str = "acme", key: str | None = None) -> anthropic.Anthropic:
    """The SDK pointed at ``gw``: as ``tenant`` (no keys), or with ``key`` (whose tenant it is)."""
    return anthropic.Anthropic(base_url=gw.url, api_key=key or "unused", max_retries=0,
                               default_headers={**ROUTES[route], **({} if key else {"x-costline-tenant": tenant})})


def ask(custom_id: str, text: str, **params) -> dict:
    return {"custom_id": custom_id, "params": {"model": "claude-sonnet-4-6", "max_tokens": 256,
                                               "messages": [{"role": "user", "content": text}], **params}}


def ended(cl: anthropic.Anthropic, batch_id: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        got = cl.messages.batches.retrieve(batch_id)
        if got.processing_status == "ended" or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def results(cl: anthropic.Anthropic, batch_id: str) -> dict:
    return {r.custom_id: r.result for r in cl.messages.batches.results(batch_id)}


class TaggedCache(DictCache):
    """Remembers the document hashes each answer was stored with (what invalidation by document reads)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[str, tuple] = {}

    def store(self, query, answer, *, tenant, namespace=None, doc_hashes=()):
        super().store(query, answer, tenant=tenant, namespace=namespace)
        self.tags[query] = tuple(doc_hashes)


def test_a_batch_is_answered_upstream_at_the_batch_price_and_a_repeat_from_the_cache(standin, recorder, exporter,
                                                                                      tmp_path) -> None:
    cache = TaggedCache()
    with routed_gateway(standin, tmp_path / "keys.json", cache=cache, recorder=recorder,
                        batches_poll_s=0.1) as gw:
        cl = client(_fast(gw)).with_options(default_headers={"x-costline-doc-hashes": "kb-7"})
        made = cl.messages.batches.create(requests=[ask("q1", EASY), ask("bad", "x", max_tokens=0),
                                                    ask("q2", "What is the capital of France?")])
        assert made.processing_status == "in_progress" and made.request_counts.processing == 3
        assert made.results_url is None
        done = ended(cl, made.id)
        assert done.processing_status == "ended" and done.results_url.endswith(f"/v1/messages/batches/{made.id}/results")
        assert (done.request_counts.succeeded, done.request_counts.errored, done.request_counts.processing) == (2, 1, 0)
        got = results(cl, made.id)
        assert got["bad"].type == "errored" and got["bad"].error.error.type == "invalid_request_error"
        assert "max_tokens" in got["bad"].error.error.message
        first = got["q1"].message
        assert got["q1"].type == "succeeded" and first.model.startswith("claude-") and first.content[0].text
        assert first.usage.input_tokens > 0 and first.usage.output_tokens > 0

        assert cache.tags[EASY] == ("kb-7",)  # stored tagged with the create's documents
        # asked again in a second batch: the cache answers, nothing goes upstream
        upstream_before = len(standin._batches)
        again = cl.messages.batches.create(requests=[ask("again", EASY)])
        assert results(cl, ended(cl, again.id).id)["again"].message.model == "costline-cache"
        assert len(standin._batches) == upstream_before

    spans = exporter.get_finished_spans()
    calls = [s for s in spans if s.name.startswith("chat ")]
    assert len(calls) == 2 and all(s.attributes[c.COSTLINE_BATCH] for s in calls)
    requests = [s for s in spans if s.name == c.SPAN_REQUEST]
    assert sorted(s.attributes[c.COSTLINE_REQUEST_ID] for s in requests) == sorted(
        [f"{made.id}-0", f"{made.id}-2", f"{again.id}-0"])  # the errored one never reached a model: no span
    for call in calls:  # each call in its request's trace, with its request id
        mine = [r for r in requests if r.attributes[c.COSTLINE_REQUEST_ID] == call.attributes[c.COSTLINE_REQUEST_ID]]
        assert len(mine) == 1 and mine[0].context.trace_id == call.context.trace_id

    # in the lake: three requests (one from the cache), the two calls at Haiku's batch price (computed here
    # from Anthropic's list prices and the usage the results said)
    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"))
    lake_from_sdk_spans(spans, cfg)
    rows = {r[0]: r[1:] for r in query_lake(cfg, "SELECT request_id, tier, cache_hit, calls, cost_usd, tenant, "
                                                 "success FROM requests")}
    assert rows[f"{again.id}-0"][:3] == ("cache", True, 0)
    usage = {f"{made.id}-0": first.usage, f"{made.id}-2": got["q2"].message.usage}
    for rid, u in usage.items():
        tier, hit, n, cost, tenant, success = rows[rid]
        assert (tier, hit, n, tenant, success) == ("budget", False, 1, "acme", True)
        want = (u.input_tokens * HAIKU_BATCH_IN + u.output_tokens * HAIKU_BATCH_OUT) / 1e6
        assert cost == pytest.approx(want, rel=1e-9)


def test_a_refused_answer_goes_up_the_ladder_in_the_next_round(standin, recorder, exporter, tmp_path) -> None:
    """The quality gate refuses the budget tier's answers: each request is sent again, to mid, in a second upstream
    batch, and its request span counts both attempts."""
    gate = lambda reply: 0.1 if reply.tier == "budget" else 0.9  # noqa: E731
    with routed_gateway(standin, tmp_path / "keys.json", recorder=recorder, confidence=gate,
                        batches_poll_s=0.1) as gw:
        cl = client(_fast(gw))
        made = cl.messages.batches.create(requests=[ask("a", EASY), ask("b", "What is the capital of France?")])
        got = results(cl, ended(cl, made.id).id)
    assert {k: v.message.model for k, v in got.items()} == {"a": "claude-sonnet-4-6", "b": "claude-sonnet-4-6"}
    spans = exporter.get_finished_spans()
    assert sorted(s.name for s in spans if s.name.startswith("chat ")) == [
        "chat claude-haiku-4-5", "chat claude-haiku-4-5", "chat claude-sonnet-4-6", "chat claude-sonnet-4-6"]
    requests = [s for s in spans if s.name == c.SPAN_REQUEST]
    assert [(s.attributes[c.COSTLINE_TIER], s.attributes[c.COSTLINE_ATTEMPTS], s.attributes[c.COSTLINE_ESCALATIONS],
             s.attributes[c.COSTLINE_REJECTED_ATTEMPTS]) for s in requests] == [
        ("mid", 2, 1, "budget:low_confidence")] * 2


def test_the_student_is_asked_directly(standin, recorder, exporter, tmp_path) -> None:
    with routed_gateway(standin, tmp_path / "keys.json", recorder=recorder, batches_poll_s=0.1) as gw:
        cl = client(_fast(gw), route="student")
        made = cl.messages.batches.create(requests=[ask("s1", "Is this message spam: WIN A PRIZE NOW")])
        got = results(cl, ended(cl, made.id).id)
    assert got["s1"].type == "succeeded"
    assert not standin._batches  # nothing went to an upstream batch
    calls = [s for s in exporter.get_finished_spans() if s.name.startswith("chat ")]
    assert len(calls) == 1 and calls[0].attributes[c.COSTLINE_TIER] == "student"
    assert not calls[0].attributes.get(c.COSTLINE_BATCH)


def test_cancel_ends_what_was_not_answered_and_delete_forgets_it(tmp_path, recorder) -> None:
    slow = StandInServer(StandInConfig(latency_scale=0.0, batch_delay_s=3600.0), port=0)
    slow.start()
    try:
        with routed_gateway(slow, tmp_path / "keys.json", recorder=recorder, batches_poll_s=0.1) as gw:
            cl = client(_fast(gw))
            made = cl.messages.batches.create(requests=[ask("a", EASY), ask("b", "Where is my order?")])
            deadline = time.monotonic() + 10
            while not slow._batches and time.monotonic() < deadline:  # sent upstream, where it waits an hour
                time.sleep(0.05)
            with pytest.raises(anthropic.BadRequestError):
                cl.messages.batches.delete(made.id)  # still in progress
            with pytest.raises(anthropic.AnthropicError):  # the SDK asks for results only once there is a URL
                list(cl.messages.batches.results(made.id))
            early = httpx.get(f"{gw.url}/v1/messages/batches/{made.id}/results", headers={"x-costline-tenant": "acme"})
            assert early.status_code == 400 and "still in progress" in early.json()["error"]["message"]
            canceling = cl.messages.batches.cancel(made.id)
            assert canceling.processing_status in ("canceling", "ended") and canceling.cancel_initiated_at
            done = ended(cl, made.id)
            assert done.request_counts.canceled == 2 and done.processing_status == "ended"
            assert {r.type for r in results(cl, made.id).values()} == {"canceled"}
            assert all(b.canceled for b in slow._batches.values())  # the upstream batch was canceled too
            assert cl.messages.batches.delete(made.id).type == "message_batch_deleted"
            with pytest.raises(anthropic.NotFoundError):
                cl.messages.batches.retrieve(made.id)
    finally:
        slow.shutdown()


def test_a_tenant_sees_only_its_own_batches(standin, tmp_path) -> None:
    keys = KeyStore(tmp_path / "keys.json")
    _, acme = keys.add("acme")
    _, globex = keys.add("globex")
    with routed_gateway(standin, tmp_path / "keys.json", batches_poll_s=0.1) as gw:
        mine, theirs = client(_fast(gw), key=acme), client(gw, key=globex)
        made = mine.messages.batches.create(requests=[ask("a", EASY)])
        ended(mine, made.id)
        for call in (lambda: theirs.messages.batches.retrieve(made.id),
                     lambda: list(theirs.messages.batches.results(made.id)),
                     lambda: theirs.messages.batches.cancel(made.id),
                     lambda: theirs.messages.batches.delete(made.id)):
            with pytest.raises(anthropic.NotFoundError):
                call()
        assert [b.id for b in theirs.messages.batches.list()] == []
        assert [b.id for b in mine.messages.batches.list()] == [made.id]
        with pytest.raises(anthropic.AuthenticationError):
            client(gw, key="wrong").messages.batches.list()


@pytest.mark.parametrize("requests, problem", [
    ([], "at least one request"),
    ([{"custom_id": "a b", "params": {}}], "custom_id"),
    ([{"custom_id": "a", "params": {}}, {"custom_id": "a", "params": {}}], "more than once"),
    ([{"custom_id": "a", "params": "hello"}], "params"),
    ([{"custom_id": "a", "params": {"stream": True}}], "stream"),
    ([{"custom_id": f"r{i}", "params": {}} for i in range(4)], "at most 3"),
])
def test_a_malformed_batch_is_refused_whole(standin, tmp_path, requests, problem) -> None:
    with routed_gateway(standin, tmp_path / "keys.json", batches_max_requests=3) as gw:
        with pytest.raises(anthropic.BadRequestError) as err:
            client(gw).messages.batches.create(requests=requests)
        assert problem in err.value.body["error"]["message"]
        assert client(gw).messages.batches.list().data == []


def test_batches_in_progress_are_bounded_per_tenant(tmp_path) -> None:
    slow = StandInServer(StandInConfig(latency_scale=0.0, batch_delay_s=3600.0), port=0)
    slow.start()
    try:
        with routed_gateway(slow, tmp_path / "keys.json", batches_max_open=2) as gw:
            cl = client(gw)
            for _ in range(2):
                cl.messages.batches.create(requests=[ask("a", EASY)])
            with pytest.raises(anthropic.RateLimitError) as err:
                cl.messages.batches.create(requests=[ask("a", EASY)])
            assert "batches_max_open" in err.value.body["error"]["message"]
            client(gw, tenant="globex").messages.batches.create(requests=[ask("a", EASY)])  # another tenant's own
    finally:
        slow.shutdown()


def test_a_batch_outlives_a_gateway_restart(standin, recorder, tmp_path) -> None:
    """Kept in the store's file, a batch sent upstream by one gateway process is collected by the next."""
    store = tmp_path / "store.sqlite3"
    standin.config = standin.config.__class__(**{**standin.config.__dict__, "batch_delay_s": 1.5})
    with routed_gateway(standin, tmp_path / "keys.json", recorder=recorder, batches_poll_s=0.1,
                        responses_store_path=store) as gw:
        cl = client(_fast(gw))
        made = cl.messages.batches.create(requests=[ask("a", EASY)])
        deadline = time.monotonic() + 10
        while not standin._batches and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cl.messages.batches.retrieve(made.id).processing_status == "in_progress"
    with routed_gateway(standin, tmp_path / "keys.json", recorder=recorder, batches_poll_s=0.1,
                        responses_store_path=store) as gw:
        cl = client(_fast(gw))
        assert results(cl, ended(cl, made.id).id)["a"].type == "succeeded"
    assert len(standin._batches) == 1  # collected, not sent again


def test_a_batch_not_ended_in_24_hours_expires(tmp_path) -> None:
    """The runner driven by hand with an injected clock: a day later, what was never answered is ``expired``."""
    from costline.serving.gateway.app import _message, read_messages_request
    from costline.serving.gateway.batches import BatchRunner, BatchStore

    slow = StandInServer(StandInConfig(latency_scale=0.0, batch_delay_s=10 * 86_400.0), port=0)
    slow.start()
    clock = [1_790_000_000.0]
    try:
        with routed_gateway(slow, tmp_path / "keys.json") as gw:
            gw.batch_runner.shutdown()  # driven here instead
            store = BatchStore()
            runner = BatchRunner(gw.pipeline, store, message=_message, read=read_messages_request, poll_s=60.0,
                                 now=lambda: clock[0])
            made = store.create("acme", [("a", ask("a", EASY)["params"]), ("b", ask("b", "Hello?")["params"])],
                                task_type="support", beta=None, now=clock[0], max_open=5)
            assert made is not None
            runner.step()  # looked up, routed
            runner.step()  # sent upstream
            assert store.counts(made.id)["processing"] == 2 and len(slow._batches) == 1
            clock[0] += 86_400.0 + 1
            for _ in range(3):
                runner.step()
            assert store.counts(made.id) == {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0,
                                             "expired": 2}
            assert store.batch(made.id).ended == clock[0]
            clock[0] += 29 * 86_400.0 + 1  # its results kept 29 days, then forgotten
            runner.step()
            assert store.batch(made.id) is None
    finally:
        slow.shutdown()


def test_a_tenants_kept_batches_are_bounded_its_oldest_ended_forgotten_first() -> None:
    from costline.serving.gateway.batches import BatchesFull, BatchStore

    store = BatchStore()
    params = ask("a", EASY)["params"]
    made = [store.create("acme", [("a", params)], task_type="t", beta=None, now=float(i), max_open=5, max_kept=2)
            for i in range(2)]
    with pytest.raises(BatchesFull):  # both in progress: nothing to forget
        store.create("acme", [("a", params)], task_type="t", beta=None, now=3.0, max_open=5, max_kept=2)
    store.create("globex", [("a", params)], task_type="t", beta=None, now=3.0, max_open=5, max_kept=2)  # its own room
    for b in made:
        store.cancel(b.id, 4.0)
    store._db.execute("UPDATE batch_requests SET state = 'done', kind = 'canceled'")
    assert store.end_finished(5.0) == 3
    store.create("acme", [("a", params)], task_type="t", beta=None, now=6.0, max_open=5, max_kept=2)
    assert store.batch(made[0].id) is None and store.batch(made[1].id) is not None  # the oldest ended went
    with pytest.raises(BatchesFull):  # bytes: the new batch alone is over
        store.create("initech", [("a", params)], task_type="t", beta=None, now=7.0, max_open=5, max_bytes=10)


def test_all_tenants_batches_and_uploads_are_bounded_together_nothing_of_anothers_forgotten() -> None:
    """``total_max_bytes`` bounds every tenant's batches and uploads together: past it a new one is refused (the
    store full: BatchStoreFull), no other tenant's batch is forgotten to make room; a tenant's own ended batch is."""
    from costline.serving.gateway.batches import BatchesFull, BatchStore, BatchStoreFull

    store = BatchStore()
    params = ask("a", EASY)["params"]
    one = len(json.dumps(params, separators=(",", ":")))  # a one-request batch's size, as the store counts it
    room = 2 * one + 10
    acme = store.create("acme", [("a", params)], task_type="t", beta=None, now=1.0, max_open=5, total_max_bytes=room)
    store.create("globex", [("a", params)], task_type="t", beta=None, now=2.0, max_open=5, total_max_bytes=room)
    with pytest.raises(BatchStoreFull) as err:
        store.create("initech", [("a", params)], task_type="t", beta=None, now=3.0, max_open=5, total_max_bytes=room)
    assert isinstance(err.value, BatchesFull) and "try again later" in str(err.value)
    with pytest.raises(BatchStoreFull):  # an upload counts toward the same bytes
        store.add_file("initech", "b.jsonl", "batch", b"x" * 11, now=3.0, max_files=5, max_bytes=10_000,
                       total_max_bytes=room)
    store.add_file("initech", "b.jsonl", "batch", b"x" * 10, now=3.0, max_files=5, max_bytes=10_000,
                   total_max_bytes=room)  # exactly the room left
    assert store.batch(acme.id) is not None  # nothing of another tenant's forgotten
    store.cancel(acme.id, 4.0)
    store._db.execute("UPDATE batch_requests SET state = 'done', kind = 'canceled' WHERE batch = ?", (acme.id,))
    assert store.end_finished(5.0) == 1
    store.create("acme", [("a", params)], task_type="t", beta=None, now=6.0, max_open=5,
                 total_max_bytes=room)  # its own ended batch makes the room
    assert store.batch(acme.id) is None


def test_a_full_batch_store_is_a_529_the_sdk_retries_after_its_retry_after(standin, tmp_path) -> None:
    with routed_gateway(standin, tmp_path / "keys.json", batches_total_max_mib=100 / 2 ** 20) as gw:
        with pytest.raises(anthropic.InternalServerError) as err:
            client(gw).messages.batches.create(requests=[ask("a", EASY)])
        assert err.value.status_code == 529 and err.value.response.headers["retry-after"] == "60"
        assert err.value.body["error"]["type"] == "overloaded_error"
        assert "batch storage is full" in err.value.body["error"]["message"]


def test_the_sdks_list_pages_through_every_batch_newest_first(standin, tmp_path) -> None:
    with routed_gateway(standin, tmp_path / "keys.json", batches_max_open=10) as gw:
        cl = client(gw)
        made = []
        for _ in range(5):
            made.append(cl.messages.batches.create(requests=[ask("a", EASY)]).id)
            time.sleep(0.002)  # distinct creation times
        assert [b.id for b in cl.messages.batches.list(limit=2)] == made[::-1]  # auto-paging on after_id
        page = cl.messages.batches.list(limit=2, before_id=made[2])
        assert [b.id for b in page.data] == [made[4], made[3]] and not page.has_more


def _hand_runner(gw, store, clock, **kw):
    from costline.serving.gateway.app import _message, read_messages_request
    from costline.serving.gateway.batches import BatchRunner

    gw.batch_runner.shutdown()  # driven here instead
    return BatchRunner(gw.pipeline, store, message=kw.pop("message", _message), read=read_messages_request,
                       poll_s=0.0, now=lambda: clock[0], **kw)


def test_a_shutdown_while_the_runners_thread_is_still_starting_never_raises(standin, tmp_path) -> None:
    """SIGTERM may land inside ``Thread.start()`` (costline serve's handler raises SystemExit while start() waits for
    the new thread): shutdown then finds a thread made but not started. It waits for it within its timeout and never
    raises RuntimeError ("cannot join thread before it is started": exit 1 instead of a clean exit)."""
    with routed_gateway(standin, tmp_path / "keys.json") as gw:
        runner = _hand_runner(gw, gw.batch_runner.store, [0.0])
        runner._thread = threading.Thread(target=lambda: None)  # made, never started
        assert runner.shutdown(timeout=0.2) is False
        late = threading.Thread(target=lambda: None)  # one that starts meanwhile is joined
        runner._thread = late
        starter = threading.Timer(0.05, late.start)
        starter.start()
        assert runner.shutdown(timeout=5) is True
        starter.join()


def test_one_result_that_fails_in_the_gateway_ends_as_errored_and_is_counted_once(standin, recorder, exporter,
                                                                                  tmp_path) -> None:
    """A result the gateway cannot handle (here: rendering its message raises) ends that request as ``errored``;
    the rest of the upstream batch is answered, the batch ends, and the paid call is recorded once."""
    from costline.serving.gateway.app import _message
    from costline.serving.gateway.batches import BatchStore

    def fragile(answer):
        if answer.request_id.endswith("-0") and not answer.cached:
            raise RuntimeError("cannot render")
        return _message(answer)

    clock = [time.time()]
    with routed_gateway(standin, tmp_path / "keys.json", recorder=recorder) as gw:
        store = BatchStore()
        runner = _hand_runner(gw, store, clock, message=fragile)
        made = store.create("acme", [("a", ask("a", EASY)["params"]), ("b", ask("b", "Hello there?")["params"])],
                            task_type="support", beta=None, now=clock[0], max_open=5)
        deadline = time.monotonic() + 20
        while store.batch(made.id).ended is None and time.monotonic() < deadline:
            runner.step()
            time.sleep(0.05)
            clock[0] = time.time()
        assert store.counts(made.id) == {"processing": 0, "succeeded": 1, "errored": 1, "canceled": 0, "expired": 0}
        for _ in range(3):
            runner.step()
    calls = [s for s in exporter.get_finished_spans() if s.name.startswith("chat ")]
    assert sorted(s.attributes[c.COSTLINE_REQUEST_ID] for s in calls) == [f"{made.id}-0", f"{made.id}-1"]


def test_an_upstream_create_whose_outcome_was_lost_is_found_not_paid_twice(standin, recorder, tmp_path) -> None:
    """The process stopped between the upstream create and its record: the next pass finds the batch it made in
    the upstream list and collects it, instead of sending the requests again."""
    from costline.serving.gateway.batches import BatchStore, tag_of

    clock = [time.time()]
    with routed_gateway(standin, tmp_path / "keys.json", recorder=recorder) as gw:
        store = BatchStore()
        runner = _hand_runner(gw, store, clock)
        made = store.create("acme", [("a", ask("a", EASY)["params"])], task_type="support", beta=None,
                            now=clock[0], max_open=5)
        (new,) = store.rows(made.id, "new", limit=5)
        runner._intake(store.batch(made.id), new)  # looked up and routed: ready for its tier
        (row,) = store.rows(made.id, "ready", limit=5)
        backend = gw.pipeline.backends[row.tier]
        prompt = runner._read_ok(row, store.batch(made.id))[1]
        store.intend("intent-lost", made.id, row.tier, [row], clock[0])  # the intent, then the create...
        backend.client.messages.batches.create(requests=[{"custom_id": f"{tag_of('intent-lost')}-{row.seq}",
                                                          "params": backend._kwargs(prompt)}])
        # ... and the process died before recording it
        deadline = time.monotonic() + 20
        while store.batch(made.id).ended is None and time.monotonic() < deadline:
            runner.step()
            time.sleep(0.05)
            clock[0] = time.time()
        assert store.counts(made.id)["succeeded"] == 1
    assert len(standin._batches) == 1


def test_two_runners_on_one_store_never_work_at_once(standin, tmp_path) -> None:
    """Workers share the store's file: the runner holding the lease works, the other's passes do nothing, and a
    row saved from a stale read changes nothing."""
    from costline.serving.gateway.batches import BatchStore

    clock = [time.time()]
    with routed_gateway(standin, tmp_path / "keys.json") as gw:
        first, second = BatchStore(tmp_path / "b.sqlite3"), BatchStore(tmp_path / "b.sqlite3")
        one, two = _hand_runner(gw, first, clock), _hand_runner(gw, second, clock)
        made = first.create("acme", [("a", ask("a", EASY)["params"])], task_type="support", beta=None,
                            now=clock[0], max_open=5)
        stale = second.rows(made.id, "new", limit=5)[0]
        assert one.step() is True  # looked up, routed, sent upstream
        before = len(standin._batches)
        assert two.step() is False and len(standin._batches) == before  # the lease is the other's: nothing done
        stale.state, stale.tier = "ready", "frontier"
        assert second.save(stale) is False  # read as new, since moved on: not saved
        (sent,) = first.rows(made.id, "submitted", limit=5)
        assert sent.tier != "frontier"


def test_an_upstream_batch_found_again_that_is_not_ours_gives_no_answers(standin, recorder, tmp_path) -> None:
    """A create whose outcome was lost matches someone else's upstream batch of the same size (upstream batches
    carry no client metadata): its results are not taken for our requests, which are sent again."""
    from costline.serving.gateway.batches import BatchStore

    clock = [time.time()]
    with routed_gateway(standin, tmp_path / "keys.json", recorder=recorder) as gw:
        store = BatchStore()
        runner = _hand_runner(gw, store, clock)
        made = store.create("acme", [("a", ask("a", EASY)["params"])], task_type="support", beta=None,
                            now=clock[0], max_open=5)
        (new,) = store.rows(made.id, "new", limit=5)
        runner._intake(store.batch(made.id), new)
        (row,) = store.rows(made.id, "ready", limit=5)
        backend = gw.pipeline.backends[row.tier]
        store.intend("intent-lost", made.id, row.tier, [row], clock[0])  # ours was never made; another's was
        backend.client.messages.batches.create(requests=[{"custom_id": "r0", "params": {
            "model": backend.spec.model, "max_tokens": 64, "messages": [{"role": "user", "content": "Other text"}]}}])
        deadline = time.monotonic() + 20
        while store.batch(made.id).ended is None and time.monotonic() < deadline:
            runner.step()
            time.sleep(0.05)
            clock[0] = time.time()
        (line,) = [json.loads(r) for _, r in store.results(made.id)]
        mine = backend.client.messages.create(model=backend.spec.model, max_tokens=256,
                                              messages=[{"role": "user", "content": EASY}])
    assert line["type"] == "succeeded" and line["message"]["content"][0]["text"] == mine.content[0].text
    assert len(standin._batches) == 2  # the other one, and ours sent again


def test_a_create_that_fails_with_a_5xx_is_looked_for_before_it_is_sent_again(standin, recorder, tmp_path) -> None:
    """A 500 on the upstream create says nothing about whether it was made: the SDK does not retry it, the runner
    looks for it in the list, and only once a grace period has passed without it does it send the rows again."""
    from costline.serving.gateway.batches import INTENT_GRACE_S, BatchStore

    clock = [time.time()]
    with routed_gateway(standin, tmp_path / "keys.json", recorder=recorder) as gw:
        store = BatchStore()
        runner = _hand_runner(gw, store, clock)
        made = store.create("acme", [("a", ask("a", EASY)["params"])], task_type="support", beta=None,
                            now=clock[0], max_open=5)
        standin.inject_errors(500, 1)
        runner.step()  # looked up, routed; the create fails
        assert store.rows(made.id, "sending", limit=5) and not standin._batches
        runner.step()  # within the grace period: still looked for, not sent
        assert store.rows(made.id, "sending", limit=5) and not standin._batches
        clock[0] += INTENT_GRACE_S + 1
        deadline = time.monotonic() + 20
        while store.batch(made.id).ended is None and time.monotonic() < deadline:
            runner.step()
            time.sleep(0.05)
            clock[0] += 1
        assert store.counts(made.id)["succeeded"] == 1 and len(standin._batches) == 1


def test_a_batch_asks_the_student_several_requests_at_once(standin, recorder, tmp_path) -> None:
    """Requests routed to a tier not on the Anthropic API are asked up to batches_direct_concurrency at a time: two
    calls meet at a barrier (asked one after another, the first would wait there alone and fail)."""
    import threading

    meet = threading.Barrier(2, timeout=10)
    with routed_gateway(standin, tmp_path / "keys.json", recorder=recorder, batches_poll_s=0.1,
                        batches_direct_concurrency=2) as gw:
        student = gw.pipeline.backends["student"]
        answer = student.complete

        def complete(prompt):
            meet.wait()
            return answer(prompt)

        student.complete = complete
        cl = client(_fast(gw), route="student")
        made = cl.messages.batches.create(requests=[ask(f"s{i}", f"Is message {i} spam: WIN A PRIZE NOW")
                                                    for i in range(4)])
        got = results(cl, ended(cl, made.id).id)
    assert {r.type for r in got.values()} == {"succeeded"} and len(got) == 4


def test_a_cancel_stops_a_round_of_student_requests_between_calls(standin, tmp_path) -> None:
    """A batch canceled while its student requests are being asked: the call in flight finishes (its answer is
    kept, it was paid for), the requests not yet asked are ``canceled`` without a call."""
    import threading

    started, release, calls = threading.Event(), threading.Event(), []
    with routed_gateway(standin, tmp_path / "keys.json", batches_poll_s=0.1, batches_direct_concurrency=1) as gw:
        student = gw.pipeline.backends["student"]
        answer = student.complete

        def complete(prompt):
            calls.append(prompt)
            started.set()
            release.wait(10)
            return answer(prompt)

        student.complete = complete
        cl = client(_fast(gw), route="student")
        made = cl.messages.batches.create(requests=[ask(f"s{i}", f"Is message {i} spam: WIN A PRIZE NOW")
                                                    for i in range(4)])
        assert started.wait(10)
        cl.messages.batches.cancel(made.id)
        release.set()
        got = results(cl, ended(cl, made.id).id)
    assert len(calls) == 1
    assert sorted(r.type for r in got.values()) == ["canceled", "canceled", "canceled", "succeeded"]


def test_a_gateway_stopping_under_its_student_calls_leaves_them_to_ask_again(standin, tmp_path) -> None:
    """The runner told to stop while its student calls are in flight (their client then closed under them, as
    `costline serve` does after the runner's grace): the calls run on daemon threads (never holding the process
    open at exit), and a call that fails then leaves its request ``ready`` — asked again after a restart — instead
    of ending it ``errored`` for good."""
    import threading

    inside, release = threading.Barrier(3, timeout=10), threading.Event()
    with routed_gateway(standin, tmp_path / "keys.json", batches_poll_s=0.1, batches_direct_concurrency=2) as gw:
        student = gw.pipeline.backends["student"]

        def complete(prompt):
            inside.wait()
            release.wait(10)
            raise RuntimeError("the client was closed")  # what a call finds once the pipeline is closed

        student.complete = complete
        cl = client(_fast(gw), route="student")
        made = cl.messages.batches.create(requests=[ask(f"s{i}", f"Is message {i} spam: WIN A PRIZE NOW")
                                                    for i in range(3)])
        inside.wait()  # two calls in flight at once
        workers = [t for t in threading.enumerate() if t.name.startswith("costline-batch-direct")]
        assert len(workers) == 2 and all(t.daemon for t in workers)
        assert gw.batch_runner.shutdown(timeout=0.2) is False  # still in its calls
        release.set()
        for t in workers:
            t.join(10)
        store = gw.batch_runner.store
        states = dict(store._db.execute("SELECT custom_id, state FROM batch_requests WHERE batch = ?",
                                        (made.id,)).fetchall())
    assert states == {"s0": "ready", "s1": "ready", "s2": "ready"}  # none errored, the third never started


class RefusingStandIn(StandInServer):
    """The stand-in, except that it declines (``stop_reason`` "refusal", no text) any question holding ``[refuse]``."""

    def _message(self, body, *, key, api="anthropic", betas=()):
        message = super()._message(body, key=key, api=api, betas=betas)
        if "[refuse]" in json.dumps(body.get("messages")):
            message = {**message, "content": [], "stop_reason": "refusal"}
        return message


def test_a_refused_batch_request_is_its_answer_but_no_successful_request(recorder, exporter, tmp_path) -> None:
    """A batch request the model declined ends ``succeeded`` with the refusal (as Anthropic's Batches API gives it),
    is not sent up a tier, and its request span says no success, naming the refusal; its neighbour succeeds."""
    refusing = RefusingStandIn(StandInConfig(latency_scale=0.0, batch_delay_s=0.3), port=0)
    refusing.start()
    try:
        with routed_gateway(refusing, tmp_path / "keys.json", recorder=recorder, batches_poll_s=0.1) as gw:
            cl = client(_fast(gw))
            made = cl.messages.batches.create(requests=[ask("ok", EASY), ask("no", "How do I pick a lock? [refuse]")])
            got = results(cl, ended(cl, made.id).id)
    finally:
        refusing.shutdown()
    no = got["no"]
    assert (no.type, no.message.stop_reason, "".join(b.text for b in no.message.content)) == ("succeeded", "refusal", "")
    assert (got["ok"].type, got["ok"].message.stop_reason) == ("succeeded", "end_turn")
    outcome = sorted((s.attributes[c.COSTLINE_SUCCESS], s.attributes.get(c.COSTLINE_REJECTED_ATTEMPTS))
                     for s in exporter.get_finished_spans() if s.name == c.SPAN_REQUEST)
    assert outcome == [(False, "budget:refusal"), (True, None)]
