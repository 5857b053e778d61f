"""What one tenant does never reaches another, through the real SDKs and raw HTTP against a real Gateway ->
Pipeline -> stand-in:

* a tenant's Message Batch results are kept only within its own ``batches_tenant_max_mib`` (past it the request
  ends ``errored``, nothing of the answer stored), so they never fill ``batches_total_max_mib`` for the others;
* with ``trusted_tenant_header`` and the proxy's one key, each tenant has its own rate-limit bucket;
* open (no keys), a request addressed to a DNS name the gateway is not known by is a 421 (DNS rebinding).

Byte figures are worked out by hand (a stored request is its params as compact JSON, a result its compact JSON);
stored bytes are read back with SQLite's own ``length()``, not costline's accounting."""

from __future__ import annotations

import http.client
import io
import json
import sqlite3
import time

import anthropic
import openai
import pytest
from gateways import ROUTES, routed_gateway, standin_pipeline
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costline import contract as c
from costline.collectors import Recorder
from costline.errors import ConfigError
from costline.serving.gateway.app import Gateway
from costline.serving.gateway.auth import KeyStore
from costline.serving.gateway.batches import BatchStore
from costline.serving.settings import GatewayConfig

MIB = 2 ** 20


# -- batch results within the tenant's own bound -------------------------------------------------------------------
def _params(n: int) -> dict:
    """Params whose compact JSON is ``{"p":"xx…x"}``: 8 characters around the x's, so ``n`` bytes in all."""
    return {"p": "x" * (n - 8)}


def test_a_result_past_the_tenants_bound_is_not_kept_and_takes_no_room() -> None:
    """Cap 1,000 bytes; a batch of three 300-byte requests (900). A succeeded result {"type":"succeeded","m":"z"*60}
    is 27 + 60 = 87 bytes: the first fits (987), the second would make 1,074 and is not kept (errored, 0 bytes), a
    canceled one ({"type":"canceled"}, 19 bytes) would make 1,006: it stays canceled with nothing stored."""
    store = BatchStore(tenant_max_bytes=1_000)
    made = store.create("globex", [(f"r{i}", _params(300)) for i in range(3)], task_type="t", beta=None, now=1.0,
                        max_open=5, max_bytes=1_000)
    assert made.size == 900
    answer = {"type": "succeeded", "m": "z" * 60}
    rows = store.rows(made.id, "new", limit=10)
    assert store.save(rows[0], kind="succeeded", result=answer) and not rows[0].not_kept
    assert store.save(rows[1], kind="succeeded", result=answer) and rows[1].not_kept
    assert store.save(rows[2], kind="canceled", result={"type": "canceled"}) and not rows[2].not_kept
    assert store.batch(made.id).size == 987  # before: 900 + 87 + 87 + 19 = 1,093, past the cap
    assert store.counts(made.id) == {"processing": 0, "succeeded": 1, "errored": 1, "canceled": 1, "expired": 0}
    got = [json.loads(r) for _, r in store.results(made.id)]
    assert got[0] == answer and got[2] == {"type": "canceled"}
    assert got[1]["type"] == "errored" and got[1]["error"]["error"]["type"] == "rate_limit_error"
    assert "batches_tenant_max_mib" in got[1]["error"]["error"]["message"]
    with store._tx() as db:  # what the file holds: the requests and the one result kept
        stored = db.execute("SELECT sum(length(params)) + sum(coalesce(length(result), 0)) + "
                            "sum(coalesce(length(last), 0)) FROM batch_requests").fetchone()[0]
    assert stored == 987


def _stored(path) -> dict[str, int]:
    """Bytes each tenant's batches hold in the store file (requests, results, answers kept for escalation) and its
    uploads, summed by SQLite from the columns themselves."""
    db = sqlite3.connect(path)
    try:
        rows = db.execute(
            "SELECT b.tenant, sum(length(r.params) + coalesce(length(r.result), 0) + coalesce(length(r.last), 0)) "
            "FROM batch_requests r JOIN message_batches b ON b.id = r.batch GROUP BY b.tenant").fetchall()
        files = db.execute("SELECT tenant, sum(length(content)) FROM batch_files GROUP BY tenant").fetchall()
    finally:
        db.close()
    out: dict[str, int] = {}
    for tenant, n in [*rows, *files]:
        out[tenant] = out.get(tenant, 0) + int(n)
    return out


def _ended(cl: anthropic.Anthropic, batch_id: str, wait_s: float = 60.0):
    deadline = time.monotonic() + wait_s
    while True:
        got = cl.messages.batches.retrieve(batch_id)
        if got.processing_status == "ended" or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def test_one_tenants_batch_results_never_lock_the_others_out(standin, tmp_path) -> None:
    """Tenant bound 8 KiB, all tenants 16 KiB. globex sends two batches of 20 requests (about 2.2 KB each): their
    answers (about 600 bytes each, 24 KB in all) would take globex past both bounds — before, every tenant's next
    batch was a 529 and its next upload a 503. Now globex keeps at most its 8 KiB (the answers past it errored, each
    request's span not a success), acme creates and uploads as before, and globex's next batch makes room by
    forgetting one of globex's own ended batches."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    path = tmp_path / "store.sqlite3"
    with routed_gateway(standin, tmp_path / "keys.json", recorder=Recorder(provider), responses_store_path=path,
                        batches_tenant_max_mib=8192 / MIB, batches_total_max_mib=16384 / MIB,
                        batches_poll_s=0.1) as gw:
        def sdk(tenant: str) -> anthropic.Anthropic:
            return anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0,
                                       default_headers={**ROUTES["student"], "x-costline-tenant": tenant})

        globex, acme = sdk("globex"), sdk("acme")
        requests = [{"custom_id": f"r{i}", "params": {"model": "m", "max_tokens": 512, "messages": [
            {"role": "user", "content": f"Write a long essay, number {i}"}]}} for i in range(20)]
        made = [globex.messages.batches.create(requests=requests).id for _ in range(2)]
        done = [_ended(globex, b) for b in made]
        assert all(d.processing_status == "ended" for d in done)
        succeeded = sum(d.request_counts.succeeded for d in done)
        errored = sum(d.request_counts.errored for d in done)
        assert succeeded + errored == 40 and errored > 0 and succeeded > 0
        not_kept = [r.result for b in made for r in globex.messages.batches.results(b) if r.result.type == "errored"]
        assert len(not_kept) == errored
        assert all("batches_tenant_max_mib" in r.error.error.message for r in not_kept)
        assert 0 < _stored(path)["globex"] <= 8192  # before: about 26,000 bytes, past both bounds

        small = [{"custom_id": "a1", "params": {"model": "m", "max_tokens": 20,
                                                "messages": [{"role": "user", "content": "hi"}]}}]
        assert acme.messages.batches.create(requests=small).id  # before: 529 overloaded_error
        oa = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0,
                           default_headers={"x-costline-tenant": "acme"})
        line = {"custom_id": "c", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}
        assert oa.files.create(file=("in.jsonl", io.BytesIO(json.dumps(line).encode() + b"\n")),
                               purpose="batch").id  # before: 503
        mine = acme.messages.batches.list().data[0].id
        # globex's next batch (2.2 KB: more than the room an answer not kept leaves) makes room in its own bound:
        # one of its ended batches is forgotten (that is enough), never acme's
        assert globex.messages.batches.create(requests=requests).id
        assert len([b for b in globex.messages.batches.list().data if b.id in made]) == 1
        assert acme.messages.batches.retrieve(mine).id == mine
    spans = [s for s in exporter.get_finished_spans()
             if s.name == c.SPAN_REQUEST and s.attributes.get(c.COSTLINE_TENANT) == "globex"]
    failed = [s for s in spans if s.attributes.get(c.COSTLINE_SUCCESS) is False]
    assert len(spans) == 40 and len(failed) == errored
    assert all(any(e.attributes.get("reason") == "result not kept: batches_tenant_max_mib" for e in s.events)
               for s in failed)


# -- a proxy's one key: a bucket per tenant -------------------------------------------------------------------------
@pytest.fixture
def pipeline(standin):
    p = standin_pipeline(standin)
    yield p
    p.close()


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_behind_a_trusted_proxy_each_tenant_has_its_own_rate_limit_bucket(pipeline, tmp_path) -> None:
    """Burst 2 at 60 a minute, the clock stopped: globex's two requests empty its bucket and its third is a 429;
    acme's, with the same proxy key, still gets 200 (before: the 429, one bucket per key); the key's own tenant
    (no header) is a bucket of its own too."""
    keyfile = tmp_path / "keys.json"
    _, proxy_key = KeyStore(keyfile).add("proxy")
    gw = Gateway(pipeline, GatewayConfig(keys_file=keyfile, trusted_tenant_header=True, rate_limit_per_minute=60,
                                         rate_limit_burst=2), port=0, now=Clock())
    with gw:
        def as_tenant(tenant: str | None) -> anthropic.Anthropic:
            return anthropic.Anthropic(base_url=gw.url, api_key=proxy_key, max_retries=0,
                                       default_headers={"x-costline-tenant": tenant} if tenant else {})

        ask = dict(model="m", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
        as_tenant("globex").messages.create(**ask)
        as_tenant("globex").messages.create(**ask)
        with pytest.raises(anthropic.RateLimitError):
            as_tenant("globex").messages.create(**ask)
        assert as_tenant("acme").messages.create(**ask).content  # before: RateLimitError
        assert as_tenant("acme").messages.create(**ask).content
        with pytest.raises(anthropic.RateLimitError):
            as_tenant("acme").messages.create(**ask)
        assert as_tenant(None).messages.create(**ask).content  # the key's own tenant


# -- open mode: the Host header (DNS rebinding) ---------------------------------------------------------------------
def _get(port: int, path: str, host: str, method: str = "GET", headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest(method, path, skip_host=True)
    conn.putheader("Host", host)
    for k, v in (headers or {}).items():
        conn.putheader(k, v)
    conn.endheaders()
    resp = conn.getresponse()
    out = resp.status, resp.read()
    conn.close()
    return out


def test_open_gateway_answers_a_foreign_host_421_and_hides_every_batch_and_file(pipeline, tmp_path) -> None:
    """What a page on evil.example (resolving to 127.0.0.1) gets with same-origin GETs, which carry no Origin:
    421 in each API's error format, and none of acme's data (before: 200 with the batch's prompt and the file)."""
    with Gateway(pipeline, GatewayConfig(keys_file=tmp_path / "keys.json", rate_limit_per_minute=0,
                                         batches_poll_s=0.1), port=0) as gw:
        tenant = {"x-costline-tenant": "acme"}
        an = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0, default_headers=tenant)
        oa = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0, default_headers=tenant)
        batch = an.messages.batches.create(requests=[{"custom_id": "r1", "params": {
            "model": "m", "max_tokens": 20, "messages": [{"role": "user", "content": "acme confidential Q3"}]}}])
        line = {"custom_id": "c", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": "m", "messages": [{"role": "user", "content": "acme secret"}]}}
        upload = oa.files.create(file=("in.jsonl", io.BytesIO(json.dumps(line).encode() + b"\n")), purpose="batch")
        assert _ended(an, batch.id).processing_status == "ended"
        port = gw.port
        paths = {"/v1/messages/batches": "anthropic", f"/v1/messages/batches/{batch.id}": "anthropic",
                 f"/v1/messages/batches/{batch.id}/results": "anthropic", "/v1/files": "openai",
                 f"/v1/files/{upload.id}": "openai", f"/v1/files/{upload.id}/content": "openai",
                 "/v1/batches": "openai"}
        for host in (f"evil.example:{port}", "EVIL.example.", f"127.0.0.1.nip.io:{port}"):
            for path, api in paths.items():
                status, body = _get(port, path, host, headers=tenant)
                assert status == 421, (host, path)
                assert b"acme" not in body and b"secret" not in body
                doc = json.loads(body)
                if api == "anthropic":
                    assert doc["type"] == "error" and "allowed_hosts" in doc["error"]["message"]
                else:
                    assert "allowed_hosts" in doc["error"]["message"]
                assert doc["error"]["type"] == "invalid_request_error"  # the caller's to fix, not a server error
        # a preflight and a POST from that page are refused too
        assert _get(port, "/v1/messages", f"evil.example:{port}", "OPTIONS",
                    {"Origin": f"http://evil.example:{port}", "Access-Control-Request-Method": "POST"})[0] == 421
        # the names the gateway is reached by still work: loopback names and addresses, a short name
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "LOCALHOST", f"127.0.0.2:{port}"):
            status, body = _get(port, f"/v1/files/{upload.id}/content", host, headers=tenant)
            assert status == 200 and b"acme secret" in body, host
        # health checks answer any Host
        assert _get(port, "/healthz", f"evil.example:{port}")[0] == 200


def test_allowed_hosts_lets_a_name_in_and_keys_make_the_host_check_moot(pipeline, tmp_path) -> None:
    with Gateway(pipeline, GatewayConfig(keys_file=tmp_path / "keys.json", rate_limit_per_minute=0,
                                         allowed_hosts=("costline.internal", "[fd00::1]")), port=0) as gw:
        assert _get(gw.port, "/v1/files", f"costline.internal:{gw.port}")[0] == 200
        assert _get(gw.port, "/v1/files", "[FD00::1]:443")[0] == 200
        assert _get(gw.port, "/v1/files", f"other.internal:{gw.port}")[0] == 421
    keyfile = tmp_path / "keyed.json"
    _, key = KeyStore(keyfile).add("acme")
    with Gateway(pipeline, GatewayConfig(keys_file=keyfile, rate_limit_per_minute=0), port=0) as gw:
        # with keys the key is the defence: a foreign Host with the key is served, without it a 401
        assert _get(gw.port, "/v1/files", f"evil.example:{gw.port}", headers={"x-api-key": key})[0] == 200
        assert _get(gw.port, "/v1/files", f"evil.example:{gw.port}")[0] == 401


@pytest.mark.parametrize(("hosts", "problem"), [
    (("https://costline.internal",), "without a scheme"),
    (("costline.internal:8787",), "without a scheme, port or path"),
    (("costline.internal/v1",), "not a host name"),
    (("",), "not a host name"),
    (("ok.internal", "two words"), "item 2"),
    ((7,), "not a string"),
])
def test_a_bad_allowed_hosts_entry_is_refused_naming_the_key(hosts, problem) -> None:
    with pytest.raises(ConfigError, match="allowed_hosts") as err:
        GatewayConfig(allowed_hosts=hosts)
    assert problem in str(err.value)


@pytest.mark.parametrize("hosts", [("costline.internal",), ("[fd00::1]", "fd00::1", "10.0.0.5"), ("Gw.Example.",)])
def test_good_allowed_hosts_entries_load(hosts) -> None:
    assert GatewayConfig(allowed_hosts=hosts).allowed_hosts == hosts
