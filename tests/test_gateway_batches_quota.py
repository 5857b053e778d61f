"""One per-tenant quota for a tenant's batches, their results and its uploads together
(serving/gateway/batches.py: ``batches_max`` and ``batches_tenant_max_mib``), with byte figures worked out by hand:
a stored request is its params as compact JSON, a result its compact JSON, an upload its bytes."""

from __future__ import annotations

import io
import json

import anthropic
import openai
import pytest
from gateways import ROUTES, routed_gateway

from costline.serving.gateway.batches import BatchesFull, BatchStore
from costline.serving.settings import StandInConfig
from costline.sim.standin import StandInServer

CAP = 1_000  # bytes, the tenant's batches_tenant_max_mib in these store tests


def _params(n: int) -> dict:
    """Params whose compact JSON is ``{"p":"xx…x"}``: 8 characters around ``n`` x's, so 8 + n bytes."""
    return {"p": "x" * n}


def _batch(store: BatchStore, tenant: str, sizes: list[int], now: float, **bounds):
    bounds.setdefault("max_bytes", CAP)
    return store.create(tenant, [(f"r{i}", _params(n - 8)) for i, n in enumerate(sizes)], task_type="t", beta=None,
                        now=now, max_open=5, **bounds)


def _file(store: BatchStore, tenant: str, size: int, now: float, **bounds):
    bounds.setdefault("max_bytes", CAP)
    bounds.setdefault("max_files", 1_000)
    return store.add_file(tenant, "in.jsonl", "batch", b"y" * size, now=now, **bounds)


def _end(store: BatchStore, batch_id: str, result: dict | None = None) -> None:
    """Settle every request of the batch (with ``result``, counted as the runner's are), then end it."""
    for row in store.rows(batch_id, "new", limit=100):
        assert store.save(row, kind="errored", result=result or {"type": "errored"})
    store.end_finished(1e9)


def test_a_batch_is_refused_when_the_tenants_uploads_fill_the_quota() -> None:
    store = BatchStore()
    _file(store, "acme", 600, 1.0)
    assert _batch(store, "acme", [250, 150], 2.0).size == 400  # 600 + 400 = 1000: exactly the cap
    with pytest.raises(BatchesFull, match="batches_tenant_max_mib"):
        _batch(store, "acme", [1], 3.0)  # 1001 > 1000 (before: batches were summed alone, 400 + 1)
    _batch(store, "globex", [1_000], 3.0)  # another tenant's room is its own


def test_an_upload_is_refused_when_the_tenants_batches_fill_the_quota() -> None:
    store = BatchStore()
    _batch(store, "acme", [300, 300], 1.0)  # 600 bytes
    with pytest.raises(BatchesFull, match="batches_tenant_max_mib"):
        _file(store, "acme", 401, 2.0)  # 600 + 401 = 1001 (before: uploads were summed alone, 401)
    assert store.files("acme") == []
    _file(store, "acme", 400, 2.0)  # 600 + 400 = 1000


def test_uploads_and_batches_share_batches_max() -> None:
    store = BatchStore()
    _file(store, "acme", 10, 1.0, max_files=2)
    _batch(store, "acme", [10], 2.0, max_kept=2)  # 2 kept: one upload, one batch
    with pytest.raises(BatchesFull):
        _file(store, "acme", 10, 3.0, max_files=2)
    with pytest.raises(BatchesFull):
        _batch(store, "acme", [10], 3.0, max_kept=2)


def test_results_count_the_batch_finishes_past_the_cap_and_new_work_waits_until_under_it() -> None:
    """A 900-byte batch whose two results take 2 x 75 bytes: 1050 kept, past the 1000 cap. The batch still ends
    with both results; the tenant's next upload or batch is refused until it deletes the ended batch."""
    store = BatchStore()
    made = _batch(store, "acme", [450, 450], 1.0)
    result = {"type": "errored", "e": "z" * 50}  # {"type":"errored","e":""} is 25 characters: 25 + 50 = 75 bytes
    _end(store, made.id, result)
    assert store.batch(made.id).size == 900 + 2 * 75 == 1_050
    assert store.counts(made.id)["errored"] == 2 and store.batch(made.id).ended is not None
    assert [json.loads(r) for _, r in store.results(made.id)] == [result, result]  # finished whole
    with pytest.raises(BatchesFull):
        _file(store, "acme", 1, 2.0)  # 1050 + 1 (before: uploads summed alone, 1)
    assert store.delete(made.id)
    _file(store, "acme", 1_000, 3.0)  # back to 0: the whole cap again


def test_an_ended_batch_with_its_results_is_forgotten_to_make_room_never_an_upload() -> None:
    store = BatchStore()
    _file(store, "acme", 300, 1.0)
    old = _batch(store, "acme", [200], 2.0)
    _end(store, old.id, {"type": "errored", "e": "z" * 175})  # 25 + 175 = 200: the batch keeps 400 bytes
    assert store.batch(old.id).size == 400
    with pytest.raises(BatchesFull):  # 300 + 701 = 1001 even with the ended batch forgotten: nothing changes
        _batch(store, "acme", [701], 3.0)
    assert store.batch(old.id) is not None and len(store.files("acme")) == 1
    new = _batch(store, "acme", [700], 3.0)  # 300 + 400 + 700 > 1000: the ended batch goes, 300 + 700 = 1000
    assert store.batch(old.id) is None and store.batch(new.id) is not None and len(store.files("acme")) == 1


@pytest.fixture
def standin():
    server = StandInServer(StandInConfig(latency_scale=0.0, batch_delay_s=0.2), port=0)
    server.start()
    yield server
    server.shutdown()


def test_through_the_sdks_one_tenant_keeps_at_most_its_quota(standin, tmp_path) -> None:
    """With a 4 KiB quota: a 3,000-byte upload leaves 1,096 bytes, so a Message Batch of a ~2,000-byte request is a
    429; once the upload is deleted the batch is taken, and then a 3,000-byte upload is the 429."""
    with routed_gateway(standin, tmp_path / "keys.json", batches_tenant_max_mib=4096 / 2 ** 20) as gw:
        headers = {**ROUTES["anthropic"], "x-costline-tenant": "acme"}
        oa = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0, default_headers=headers)
        an = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0, default_headers=headers)
        up = oa.files.create(file=("a.jsonl", io.BytesIO(b"z" * 3_000)), purpose="batch")
        request = {"custom_id": "a", "params": {"model": "claude-haiku-4-5", "max_tokens": 5,
                                                "messages": [{"role": "user", "content": "q" * 2_000}]}}
        with pytest.raises(anthropic.RateLimitError):
            an.messages.batches.create(requests=[request])
        oa.files.delete(up.id)
        assert an.messages.batches.create(requests=[request]).id  # ~2,100 bytes kept now
        with pytest.raises(openai.RateLimitError):  # 3,000 more would pass 4,096
            oa.files.create(file=("b.jsonl", io.BytesIO(b"z" * 3_000)), purpose="batch")
        assert oa.files.create(file=("c.jsonl", io.BytesIO(b"z" * 100)), purpose="batch").id
