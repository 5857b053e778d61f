"""The OpenAI Batch API (and the Files API part it needs) on the gateway, driven by the real ``openai`` SDK
(``client.files``, ``client.batches``) against Gateway → Pipeline → the local stand-in: a JSONL of chat completion
requests answered through the same runner as Message Batches (cache, routing, upstream batches at the batch price),
the answers as chat completions in the batch's output file, the failures in its error file."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from gateways import DictCache, routed_gateway

from costline import contract as c
from costline.collectors import Recorder
from costline.serving.gateway.auth import KeyStore
from costline.serving.settings import StandInConfig
from costline.sim.standin import StandInServer

EASY = "How do I reset my password?"
ENDED = ("completed", "failed", "expired", "cancelled")


@pytest.fixture
def standin():
    server = StandInServer(StandInConfig(latency_scale=0.0, batch_delay_s=0.2), port=0)
    server.start()
    yield server
    server.shutdown()


def client(gw, *, key: str | None = None, tenant: str = "acme") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key or "unused", max_retries=0,
                         default_headers={"x-costline-task-type": "support",
                                          **({} if key else {"x-costline-tenant": tenant})})


def line(custom_id: str, text: str | None, **body) -> dict:
    messages = [] if text is None else [{"role": "user", "content": text}]
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "messages": messages, **body}}


def upload(cl: openai.OpenAI, lines) -> str:
    text = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines)
    return cl.files.create(file=("requests.jsonl", text.encode()), purpose="batch").id


def finished(cl: openai.OpenAI, batch_id: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while (got := cl.batches.retrieve(batch_id)).status not in ENDED and time.monotonic() < deadline:
        time.sleep(0.05)
    return got


def jsonl(cl: openai.OpenAI, file_id: str | None) -> dict:
    if file_id is None:
        return {}
    return {d["custom_id"]: d for d in map(json.loads, cl.files.content(file_id).text.splitlines())}


def test_a_batch_of_chat_completions_comes_back_in_its_output_and_error_files(standin, tmp_path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with routed_gateway(standin, tmp_path / "keys.json", cache=DictCache(), recorder=Recorder(provider),
                        batches_poll_s=0.1) as gw:
        gw.batch_runner.idle_s = 0.05
        cl = client(gw)
        file_id = upload(cl, [line("c1", EASY), line("c2", "What is the capital of France?", max_tokens=64),
                              line("bad", None)])
        made = cl.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h",
                                 metadata={"job": "nightly"})
        assert (made.status, made.request_counts.total, made.metadata) == ("in_progress", 3, {"job": "nightly"})
        done = finished(cl, made.id)
        assert done.status == "completed" and (done.request_counts.completed, done.request_counts.failed) == (2, 1)
        out, errors = jsonl(cl, done.output_file_id), jsonl(cl, done.error_file_id)
        assert sorted(out) == ["c1", "c2"] and sorted(errors) == ["bad"]
        body = out["c1"]["response"]["body"]
        assert out["c1"]["response"]["status_code"] == 200 and body["object"] == "chat.completion"
        assert body["choices"][0]["message"]["content"] and body["usage"]["prompt_tokens"] > 0
        assert errors["bad"]["response"]["status_code"] == 400
        assert "messages" in errors["bad"]["response"]["body"]["error"]["message"]
        assert cl.files.retrieve(done.output_file_id).purpose == "batch_output"
        # the same question again: the cache answers
        again = finished(cl, cl.batches.create(input_file_id=upload(cl, [line("r", EASY)]),
                                               endpoint="/v1/chat/completions", completion_window="24h").id)
        assert jsonl(cl, again.output_file_id)["r"]["response"]["body"]["model"] == "costline-cache"
        assert [b.id for b in cl.batches.list()] == [again.id, made.id]
        assert cl.files.delete(file_id).deleted and file_id not in [f.id for f in cl.files.list()]
    calls = [s for s in exporter.get_finished_spans() if s.name.startswith("chat ")]
    assert len(calls) == 2 and all(s.attributes[c.COSTLINE_BATCH] for s in calls)


def test_cancel_ends_the_batch_with_its_requests_in_the_error_file(tmp_path) -> None:
    slow = StandInServer(StandInConfig(latency_scale=0.0, batch_delay_s=3600.0), port=0)
    slow.start()
    try:
        with routed_gateway(slow, tmp_path / "keys.json", batches_poll_s=0.1) as gw:
            gw.batch_runner.idle_s = 0.05
            cl = client(gw)
            made = cl.batches.create(input_file_id=upload(cl, [line("a", EASY)]), endpoint="/v1/chat/completions",
                                     completion_window="24h")
            deadline = time.monotonic() + 10
            while not slow._batches and time.monotonic() < deadline:
                time.sleep(0.05)
            assert cl.batches.cancel(made.id).status in ("cancelling", "cancelled")
            done = finished(cl, made.id)
            assert done.status == "cancelled" and done.output_file_id is None
            assert jsonl(cl, done.error_file_id)["a"]["error"]["code"] == "batch_cancelled"
    finally:
        slow.shutdown()


@pytest.mark.parametrize("lines, problem", [
    (["not json"], "line 1 is not JSON"),
    ([json.dumps({**line("a", EASY), "body": {"deep": json.loads("[" * 150 + "]" * 150)}})], "line 1 nests"),
    ([line("a", EASY), line("a", EASY)], "line 2: custom_id 'a' is used more than once"),
    ([{**line("a", EASY), "url": "/v1/embeddings"}], "line 1: method"),
    ([line("a", EASY, stream=True)], "line 1: body.stream"),
    ([""], "the file holds no request"),
    ([line(f"r{i}", EASY) for i in range(4)], "more than 3 requests"),
])
def test_a_bad_input_file_is_refused_naming_its_line(standin, tmp_path, lines, problem) -> None:
    with routed_gateway(standin, tmp_path / "keys.json", batches_max_requests=3) as gw:
        cl = client(gw)
        with pytest.raises(openai.BadRequestError) as err:
            cl.batches.create(input_file_id=upload(cl, lines), endpoint="/v1/chat/completions",
                              completion_window="24h")
        assert problem in err.value.body["message"] and err.value.body["param"] == "input_file_id"


def test_only_chat_completion_batches_of_batch_files_are_taken(standin, tmp_path) -> None:
    with routed_gateway(standin, tmp_path / "keys.json") as gw:
        cl = client(gw)
        file_id = upload(cl, [line("a", EASY)])
        with pytest.raises(openai.BadRequestError) as err:
            cl.batches.create(input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h")
        assert err.value.body["param"] == "endpoint"
        with pytest.raises(openai.BadRequestError) as err:
            cl.files.create(file=("x.jsonl", b"{}"), purpose="fine-tune")
        assert err.value.body["param"] == "purpose"
        with pytest.raises(openai.NotFoundError):
            cl.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")
        # a web page's plain form (no Authorization / x-api-key header) cannot upload to an open gateway
        form = httpx.post(f"{gw.url}/v1/files", files={"file": ("x.jsonl", b"{}")}, data={"purpose": "batch"})
        assert form.status_code == 415


def test_a_tenant_sees_only_its_own_files_and_batches(standin, tmp_path) -> None:
    keys = KeyStore(tmp_path / "keys.json")
    _, acme = keys.add("acme")
    _, globex = keys.add("globex")
    with routed_gateway(standin, tmp_path / "keys.json", batches_poll_s=0.1) as gw:
        gw.batch_runner.idle_s = 0.05
        mine, theirs = client(gw, key=acme), client(gw, key=globex)
        file_id = upload(mine, [line("a", EASY)])
        made = mine.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
        done = finished(mine, made.id)
        for call in (lambda: theirs.files.retrieve(file_id), lambda: theirs.files.content(file_id),
                     lambda: theirs.files.delete(file_id), lambda: theirs.batches.retrieve(made.id),
                     lambda: theirs.batches.cancel(made.id), lambda: theirs.files.content(done.output_file_id),
                     lambda: theirs.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                                   completion_window="24h")):
            with pytest.raises(openai.NotFoundError):
                call()
        assert theirs.files.list().data == [] and theirs.batches.list().data == []


def test_lines_a_json_writer_may_write_are_answered(standin, tmp_path) -> None:
    """A truncated emoji's lone surrogate escape (made well formed, as a request body is) and U+2028 left unescaped
    inside a string (``ensure_ascii=False``) are a request like any other, not a stuck batch or a 'not JSON'."""
    with routed_gateway(standin, tmp_path / "keys.json", batches_poll_s=0.1) as gw:
        gw.batch_runner.idle_s = 0.05
        cl = client(gw)
        lone = json.dumps(line("lone", "Where is my order? \ud83d"))  # written as the escape \\ud83d, alone
        sep = json.dumps(line("sep", "Where is my order?\u2028Thanks"), ensure_ascii=False)
        assert "\u2028" in sep
        done = finished(cl, cl.batches.create(input_file_id=upload(cl, [lone, sep]),
                                              endpoint="/v1/chat/completions", completion_window="24h").id)
        assert done.status == "completed" and sorted(jsonl(cl, done.output_file_id)) == ["lone", "sep"]


def test_a_malformed_upload_is_a_400(standin, tmp_path) -> None:
    with routed_gateway(standin, tmp_path / "keys.json") as gw:
        bad = httpx.post(f"{gw.url}/v1/files", content=b"--x\r\n", headers={
            "authorization": "Bearer unused", "content-type": "multipart/form-data; boundary=" + "b" * 300})
        assert bad.status_code == 400 and "multipart" in bad.json()["error"]["message"]


def test_a_store_file_of_an_earlier_costline_gets_the_new_columns(tmp_path) -> None:
    import sqlite3

    from costline.serving.gateway.batches import BatchStore

    path = tmp_path / "store.sqlite3"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE message_batches (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, created REAL NOT NULL, "
                "task_type TEXT NOT NULL, beta TEXT, cancel_at REAL, ended REAL, size INTEGER NOT NULL)")
    old.execute("INSERT INTO message_batches VALUES ('msgbatch_old', 'acme', 1.0, '', NULL, NULL, 2.0, 10)")
    old.execute("CREATE TABLE upstream_batches (id TEXT PRIMARY KEY, batch TEXT NOT NULL, tier TEXT NOT NULL, "
                "next_poll REAL NOT NULL, state TEXT NOT NULL)")
    old.commit()
    old.close()
    store = BatchStore(path)
    assert store.batch("msgbatch_old").api == "anthropic"
    assert [b.id for b in store.batches("acme", limit=5)[0]] == ["msgbatch_old"]
    assert store.due_upstreams(0.0) == []


def test_a_full_batch_store_is_a_503_to_openai_clients(standin, tmp_path) -> None:
    """Every tenant's batches and uploads past ``batches_total_max_mib``: the upload is refused with OpenAI's 503
    (the SDK's InternalServerError, retried after ``retry-after``), not a 429 that blames the caller."""
    with routed_gateway(standin, tmp_path / "keys.json", batches_total_max_mib=100 / 2 ** 20) as gw:
        cl = client(gw)
        with pytest.raises(openai.InternalServerError) as err:
            upload(cl, [line(f"r{i}", "How do I reset my password?") for i in range(3)])
        assert err.value.status_code == 503 and err.value.response.headers["retry-after"] == "60"
        assert "batch storage is full" in err.value.body["message"]
        assert cl.files.list().data == []
