"""`costline serve --standin` end to end, with its real semantic cache (MiniLM + FAISS): an app on
the ``openai`` SDK and one on the ``anthropic`` SDK switch by changing only their base_url."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request

import anthropic
import openai
import pytest

QUESTION = "How do I reset my password?"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    config = tmp / "costline.toml"
    config.write_text(f"""
[serving.gateway]
keys_file = "{tmp / 'keys.json'}"

[serving.cache]
path = "{tmp / 'cache'}"

[collector]
metrics_prometheus = true
metrics_prometheus_port = 0
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COSTLINE_")}
    err = open(tmp / "stderr", "w")  # a file, not a pipe nobody reads: a chatty process never blocks on it
    proc = subprocess.Popen([sys.executable, "-m", "costline", "--config", str(config), "serve", "--standin",
                             "--port", "0", "--no-telemetry", "--metrics"], stdout=subprocess.PIPE, stderr=err,
                            text=True, env={**env, "PYTHONFAULTHANDLER": "1"})
    url = metrics = None
    for line in proc.stdout:
        if line.startswith("metrics on "):
            metrics = line.split()[2]
        if line.startswith("costline gateway on "):
            url = line.split()[3]
            break
    if url is None or metrics is None:
        proc.kill()
        proc.wait()
        err.close()
        pytest.fail((tmp / "stderr").read_text())
    yield url, metrics
    proc.terminate()
    rc = proc.wait(60)
    err.close()
    said = (tmp / "stderr").read_text()
    assert rc == 0, said[-4000:]
    # on the way out it says how the embedder's micro-batches filled (what embed_max_batch / embed_batch_wait_ms tune)
    assert re.search(r"^embedder: \d+ queries in \d+ batches \(mean \d+\.\d a batch\)$", said, re.M), said[-4000:]


def scrape(url: str) -> dict[str, float]:
    """name{labels} -> value of the Prometheus text format, summed over the labels."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name.split("{")[0]] = out.get(name.split("{")[0], 0.0) + float(value)
    return out


def test_both_sdks_against_costline_serve(served) -> None:
    served, metrics_url = served
    oa = openai.OpenAI(base_url=f"{served}/v1", api_key="unused", max_retries=0,
                       default_headers={"x-costline-tenant": "acme"})
    ask = dict(model="gpt-4o-mini", max_tokens=256, messages=[{"role": "user", "content": QUESTION}])
    chunks = list(oa.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True}))
    streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    usage = chunks[-1].usage
    assert streamed and usage.completion_tokens > 0 and usage.total_tokens == usage.prompt_tokens + \
        usage.completion_tokens
    # the answer is in the semantic cache now: both APIs get it from there
    raw = oa.chat.completions.with_raw_response.create(**ask)
    assert raw.headers["x-costline-cache-hit"] == "true" and raw.parse().choices[0].message.content == streamed
    an = anthropic.Anthropic(base_url=served, api_key="unused", max_retries=0,
                             default_headers={"x-costline-tenant": "acme"})
    with an.messages.stream(model="gpt-4o-mini", max_tokens=256,
                            messages=[{"role": "user", "content": QUESTION}]) as stream:
        message = stream.get_final_message()
    assert stream.response.headers["x-costline-cache-hit"] == "true"
    assert message.content[0].text == streamed and message.model == "costline-cache"
    # another tenant shares nothing
    other = anthropic.Anthropic(base_url=served, api_key="unused", max_retries=0,
                                default_headers={"x-costline-tenant": "globex"})
    raw = other.messages.with_raw_response.create(model="gpt-4o-mini", max_tokens=256,
                                                  messages=[{"role": "user", "content": QUESTION}])
    assert raw.headers["x-costline-cache-hit"] == "false"
    # --metrics: the GenAI client metrics and costline's cache counters, scraped by Prometheus
    seen = scrape(metrics_url)
    assert seen["costline_cache_lookups_total"] == 4 and seen["costline_cache_hits_total"] == 2
    # what the cache holds: acme's answer and globex's; nothing removed or refused
    assert seen["costline_cache_entries"] == 2 and seen["costline_cache_removals_total"] == 0
    assert seen["costline_cache_stores_refused_total"] == 0
    assert seen["gen_ai_client_token_usage_count"] == 4  # two model calls, input and output each
